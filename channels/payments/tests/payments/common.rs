//! Fixtures, a running mock, clients pointed at it, and a notify receiver.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use uphub_payments::alipay::{AlipayClient, AlipayConfig, Notify};
use uphub_payments::mock::{AlipayApp, NotifyRetry, PayMock, PayMockConfig, WechatMerchant};
use uphub_payments::wechatpay::{
    ApiV3Key, MerchantCredentials, Notification, PlatformKeys, WechatPayClient, WechatPayConfig,
};
use uphub_payments::{PrivateKey, PublicKey};

pub const WX_MERCHANT_KEY: &str = include_str!("../fixtures/wechat_merchant.key.pem");
pub const WX_MERCHANT_PUB: &str = include_str!("../fixtures/wechat_merchant.pub.pem");
pub const WX_PLATFORM_KEY: &str = include_str!("../fixtures/wechat_platform.key.pem");
pub const WX_PLATFORM_PUB: &str = include_str!("../fixtures/wechat_platform.pub.pem");
pub const ALI_APP_KEY: &str = include_str!("../fixtures/alipay_app.key.pem");
pub const ALI_APP_PUB: &str = include_str!("../fixtures/alipay_app.pub.pem");
pub const ALI_PLATFORM_KEY: &str = include_str!("../fixtures/alipay_platform.key.pem");
pub const ALI_PLATFORM_PUB: &str = include_str!("../fixtures/alipay_platform.pub.pem");
pub const INTRUDER_KEY: &str = include_str!("../fixtures/intruder.key.pem");
pub const INTRUDER_PUB: &str = include_str!("../fixtures/intruder.pub.pem");

pub const MCHID: &str = "1900000109";
pub const APPID: &str = "wxd678efh567hg6787";
pub const MERCHANT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
pub const PLATFORM_SERIAL: &str = "PUB_KEY_ID_0114232134912410000000000000";
pub const APIV3_KEY: &str = "a7cde1ef5a0b4c2d8e9f0a1b2c3d4e5f";
pub const ALI_APP_ID: &str = "2021004100000001";

pub fn key(pem: &str) -> PrivateKey {
    PrivateKey::from_pem(pem).expect("fixture private key")
}

pub fn public(pem: &str) -> PublicKey {
    PublicKey::from_pem(pem).expect("fixture public key")
}

pub fn platform_keys() -> PlatformKeys {
    PlatformKeys::new().with(PLATFORM_SERIAL, public(WX_PLATFORM_PUB))
}

pub fn apiv3_key() -> ApiV3Key {
    ApiV3Key::new(APIV3_KEY).expect("32-byte key")
}

pub fn mock_config() -> PayMockConfig {
    let mut cfg = PayMockConfig::new(key(WX_PLATFORM_KEY), PLATFORM_SERIAL, key(ALI_PLATFORM_KEY));
    cfg.wechat_merchants.push(WechatMerchant {
        mchid: MCHID.into(),
        serial_no: MERCHANT_SERIAL.into(),
        public_key: public(WX_MERCHANT_PUB),
        apiv3_key: apiv3_key(),
    });
    cfg.alipay_apps.push(AlipayApp {
        app_id: ALI_APP_ID.into(),
        public_key: public(ALI_APP_PUB),
    });
    cfg.notify_retry = NotifyRetry {
        max_attempts: 4,
        interval: std::time::Duration::from_millis(20),
    };
    cfg
}

pub fn wechat_config(base_url: &str) -> WechatPayConfig {
    WechatPayConfig {
        base_url: base_url.to_owned(),
        appid: APPID.into(),
        merchant: MerchantCredentials {
            mchid: MCHID.into(),
            serial_no: MERCHANT_SERIAL.into(),
            private_key: key(WX_MERCHANT_KEY),
        },
        apiv3_key: apiv3_key(),
        platform_keys: platform_keys(),
    }
}

pub fn alipay_config(gateway_url: &str) -> AlipayConfig {
    AlipayConfig {
        gateway_url: gateway_url.to_owned(),
        app_id: ALI_APP_ID.into(),
        app_private_key: key(ALI_APP_KEY),
        alipay_public_key: public(ALI_PLATFORM_PUB),
    }
}

/// A callback as received: its `wechatpay-*` headers (lowercase names) and body.
pub type RawCallback = (Vec<(String, String)>, String);

/// The merchant side: our clients, and an HTTP receiver for callbacks that verifies them with
/// those clients before acknowledging.
pub struct Receiver {
    pub wechat: WechatPayClient,
    pub alipay: AlipayClient,
    pub wx_events: Mutex<Vec<Notification>>,
    pub ali_events: Mutex<Vec<Notify>>,
    /// Callbacks that failed verification, with the error code.
    pub rejected: Mutex<Vec<&'static str>>,
    /// Answer this many callbacks with an error first, to exercise retries.
    pub fail_first: AtomicU32,
    /// Every WeChat Pay callback as received: `Wechatpay-*` headers and body.
    pub raw_wx: Mutex<Vec<RawCallback>>,
    /// Every Alipay notify form body as received.
    pub raw_ali: Mutex<Vec<String>>,
}

pub struct Env {
    pub mock: PayMock,
    pub base_url: String,
    pub receiver: Arc<Receiver>,
    pub notify_base: String,
}

impl Env {
    pub async fn start() -> Self {
        Self::start_with(mock_config()).await
    }

    pub async fn start_with(cfg: PayMockConfig) -> Self {
        let mock = PayMock::new(cfg);
        let addr = mock.spawn().await.expect("mock binds");
        let base_url = format!("http://{addr}");
        let receiver = Arc::new(Receiver {
            wechat: WechatPayClient::new(wechat_config(&base_url)).expect("client"),
            alipay: AlipayClient::new(alipay_config(&format!("{base_url}/gateway.do")))
                .expect("client"),
            wx_events: Mutex::new(Vec::new()),
            ali_events: Mutex::new(Vec::new()),
            rejected: Mutex::new(Vec::new()),
            fail_first: AtomicU32::new(0),
            raw_wx: Mutex::new(Vec::new()),
            raw_ali: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/wx/notify", post(wx_notify))
            .route("/ali/notify", post(ali_notify))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let notify_addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            mock,
            base_url,
            receiver,
            notify_base: format!("http://{notify_addr}"),
        }
    }

    pub fn wechat(&self) -> &WechatPayClient {
        &self.receiver.wechat
    }

    pub fn alipay(&self) -> &AlipayClient {
        &self.receiver.alipay
    }

    pub fn wx_events(&self) -> Vec<Notification> {
        self.receiver.wx_events.lock().unwrap().clone()
    }

    pub fn ali_events(&self) -> Vec<Notify> {
        self.receiver.ali_events.lock().unwrap().clone()
    }
}

fn should_fail(r: &Receiver) -> bool {
    r.fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

async fn wx_notify(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> Response {
    let wechatpay_headers = headers
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("wechatpay-"))
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    r.raw_wx.lock().unwrap().push((
        wechatpay_headers,
        String::from_utf8_lossy(&body).into_owned(),
    ));
    if should_fail(&r) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"code":"FAIL","message":"busy"}"#,
        )
            .into_response();
    }
    match r.wechat.parse_notification(&headers, &body) {
        Ok(n) => {
            r.wx_events.lock().unwrap().push(n);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            r.rejected.lock().unwrap().push(e.code());
            (
                StatusCode::BAD_REQUEST,
                format!(r#"{{"code":"FAIL","message":"{}"}}"#, e.code()),
            )
                .into_response()
        }
    }
}

async fn ali_notify(State(r): State<Arc<Receiver>>, body: Bytes) -> Response {
    r.raw_ali
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&body).into_owned());
    if should_fail(&r) {
        return "fail".into_response();
    }
    match r.alipay.parse_notify(&body) {
        Ok(n) => {
            r.ali_events.lock().unwrap().push(n);
            "success".into_response()
        }
        Err(e) => {
            r.rejected.lock().unwrap().push(e.code());
            "fail".into_response()
        }
    }
}
