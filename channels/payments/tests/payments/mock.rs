use serde_json::json;
use uphub_payments::alipay::{AlipayClient, AlipayConfig};
use uphub_payments::mock::{
    AlipayApp, DeliveryReport, DevKeys, MockError, MockTransaction, PayMock, PayMockConfig,
    WechatMerchant,
};
use uphub_payments::wechatpay::{
    ApiV3Key, JsapiPrepayRequest, MerchantCredentials, PlatformKeys, WechatPayClient,
    WechatPayConfig,
};
use uphub_payments::{Platform, PrivateKey};

use crate::common::*;

fn prepay(out_trade_no: &str, notify_url: &str) -> JsapiPrepayRequest {
    JsapiPrepayRequest {
        description: "d".into(),
        out_trade_no: out_trade_no.into(),
        notify_url: notify_url.into(),
        amount_total_fen: 100,
        payer_openid: "openid-1".into(),
        attach: None,
        time_expire: None,
        profit_sharing: false,
    }
}

#[tokio::test]
async fn pay_over_the_http_control_endpoint_delivers_the_callback() {
    let env = Env::start().await;
    let notify = format!("{}/wx/notify", env.notify_base);
    env.wechat()
        .jsapi_prepay(&prepay("CTLPAY0001", &notify))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let report: DeliveryReport = http
        .post(format!("{}/_mock/pay", env.base_url))
        .json(&json!({"out_trade_no": "CTLPAY0001"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(report.delivered);
    assert_eq!(env.wx_events().len(), 1);

    let listed: Vec<MockTransaction> = http
        .get(format!("{}/_mock/transactions", env.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, env.mock.transactions());
    assert_eq!(listed[0].state, "SUCCESS");

    let again = http
        .post(format!("{}/_mock/pay", env.base_url))
        .json(&json!({"out_trade_no": "CTLPAY0001"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let missing = http
        .post(format!("{}/_mock/pay", env.base_url))
        .json(&json!({"out_trade_no": "NOSUCH"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let faults = http
        .post(format!("{}/_mock/faults", env.base_url))
        .json(&json!({"server_error_rate": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(faults.status(), 200);
    assert!(
        env.wechat()
            .query_by_out_trade_no("CTLPAY0001")
            .await
            .unwrap_err()
            .is_retryable()
    );
}

#[tokio::test]
async fn the_same_out_trade_no_on_both_platforms_is_ambiguous_for_pay() {
    let env = Env::start().await;
    let wx_notify = format!("{}/wx/notify", env.notify_base);
    env.wechat()
        .jsapi_prepay(&prepay("BOTH000001", &wx_notify))
        .await
        .unwrap();
    let req = uphub_payments::alipay::TradeCreateRequest {
        out_trade_no: "BOTH000001".into(),
        total_amount_fen: 100,
        subject: "s".into(),
        buyer_id: Some("2088".into()),
        notify_url: Some(format!("{}/ali/notify", env.notify_base)),
        timeout_express: None,
    };
    env.alipay().trade_create(&req).await.unwrap();
    let platforms: Vec<Platform> = env.mock.transactions().iter().map(|t| t.platform).collect();
    assert_eq!(platforms, [Platform::WechatPay, Platform::Alipay]);
    assert!(matches!(
        env.mock.pay("BOTH000001").await,
        Err(MockError::Ambiguous(_))
    ));
    assert!(matches!(
        env.mock.pay("NONE000001").await,
        Err(MockError::NotFound(_))
    ));
    assert!(matches!(
        env.mock.refund_notice("NONE000001").await,
        Err(MockError::NotFound(_))
    ));
}

#[tokio::test]
async fn mock_rejects_a_replayed_request_from_six_minutes_ago() {
    let env = Env::start().await;
    let cred = MerchantCredentials {
        mchid: MCHID.into(),
        serial_no: MERCHANT_SERIAL.into(),
        private_key: key(WX_MERCHANT_KEY),
    };
    let path = format!("/v3/pay/transactions/out-trade-no/OLD0000001?mchid={MCHID}");
    let old = chrono::Utc::now().timestamp() - 360;
    let auth = cred.authorization("GET", &path, old, "NONCE", "").unwrap();
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", env.base_url))
        .header("Authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "SIGN_ERROR");
}

#[tokio::test]
async fn mock_rejects_an_alipay_request_whose_parameters_changed_after_signing() {
    let env = Env::start().await;
    let mut params = env
        .alipay()
        .signed_params(
            "alipay.trade.query",
            &json!({"out_trade_no": "X0001"}),
            None,
        )
        .unwrap();
    for (k, v) in &mut params {
        if k == "biz_content" {
            *v = r#"{"out_trade_no":"X0002"}"#.into();
        }
    }
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let text = reqwest::Client::new()
        .post(format!("{}/gateway.do", env.base_url))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("isv.invalid-signature"), "{text}");
}

#[test]
fn generated_key_pairs_sign_and_verify() {
    // 1024 bits keeps the debug-build test fast; production keys are 2048.
    let k = PrivateKey::generate(1024).unwrap();
    let pem = k.to_pkcs8_pem().unwrap();
    let again = PrivateKey::from_pem(&pem).unwrap();
    let sig = again.sign_sha256_base64(b"m").unwrap();
    k.public_key().verify_sha256_base64(b"m", &sig).unwrap();
    assert!(
        PrivateKey::from_pem(INTRUDER_KEY)
            .unwrap()
            .public_key()
            .verify_sha256_base64(b"m", &sig)
            .is_err()
    );
}

#[tokio::test]
async fn shared_dev_keys_are_generated_once_and_drive_a_working_mock() {
    let keys = DevKeys::shared().unwrap();
    assert!(std::ptr::eq(keys, DevKeys::shared().unwrap()));
    let mut cfg = PayMockConfig::new(
        keys.wechat_platform.clone(),
        "DEV_SERIAL",
        keys.alipay_platform.clone(),
    );
    cfg.wechat_merchants.push(WechatMerchant {
        mchid: "1230000109".into(),
        serial_no: "DEV_MERCHANT".into(),
        public_key: keys.wechat_merchant.public_key(),
        apiv3_key: ApiV3Key::new(APIV3_KEY).unwrap(),
    });
    cfg.alipay_apps.push(AlipayApp {
        app_id: "2021000000000001".into(),
        public_key: keys.alipay_app.public_key(),
    });
    let mock = PayMock::new(cfg);
    let addr = mock.spawn().await.unwrap();

    let wechat = WechatPayClient::new(WechatPayConfig {
        base_url: format!("http://{addr}"),
        appid: APPID.into(),
        merchant: MerchantCredentials {
            mchid: "1230000109".into(),
            serial_no: "DEV_MERCHANT".into(),
            private_key: keys.wechat_merchant.clone(),
        },
        apiv3_key: ApiV3Key::new(APIV3_KEY).unwrap(),
        platform_keys: PlatformKeys::new().with("DEV_SERIAL", keys.wechat_platform.public_key()),
    })
    .unwrap();
    wechat
        .jsapi_prepay(&prepay("DEVKEYS001", "http://127.0.0.1:9/notify"))
        .await
        .unwrap();

    let alipay = AlipayClient::new(AlipayConfig {
        gateway_url: format!("http://{addr}/gateway.do"),
        app_id: "2021000000000001".into(),
        app_private_key: keys.alipay_app.clone(),
        alipay_public_key: keys.alipay_platform.public_key(),
    })
    .unwrap();
    assert!(matches!(
        alipay.trade_query("DEVKEYS001").await,
        Err(uphub_payments::PayError::Rejected { .. })
    ));
}

#[tokio::test]
async fn an_outage_fails_calls_after_the_signature_check_and_closes_go_through_once_lifted() {
    use uphub_payments::PayError;
    use uphub_payments::alipay::TradeCreateRequest;
    use uphub_payments::mock::Faults;
    let env = Env::start().await;
    let notify = format!("{}/wx/notify", env.notify_base);
    env.wechat()
        .jsapi_prepay(&prepay("WXOUTAGE01", &notify))
        .await
        .unwrap();
    env.alipay()
        .trade_create(&TradeCreateRequest {
            out_trade_no: "ALIOUTAGE01".into(),
            total_amount_fen: 100,
            subject: "s".into(),
            buyer_id: Some("2088000000000001".into()),
            notify_url: Some(format!("{}/ali/notify", env.notify_base)),
            timeout_express: None,
        })
        .await
        .unwrap();
    let mut forger_wx = wechat_config(&env.base_url);
    forger_wx.merchant.private_key = key(INTRUDER_KEY);
    let forger_wx = WechatPayClient::new(forger_wx).unwrap();
    let mut forger_ali = alipay_config(&format!("{}/gateway.do", env.base_url));
    forger_ali.app_private_key = key(INTRUDER_KEY);
    let forger_ali = AlipayClient::new(forger_ali).unwrap();

    env.mock.set_faults(Faults {
        outage: true,
        ..Faults::default()
    });
    let e = env.wechat().close("WXOUTAGE01").await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    let e = env.alipay().trade_close("ALIOUTAGE01").await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    // A forged close is refused for its signature, outage or not.
    for e in [
        forger_wx.close("WXOUTAGE01").await.unwrap_err(),
        forger_ali.trade_close("ALIOUTAGE01").await.unwrap_err(),
    ] {
        assert!(
            matches!(e, PayError::Auth { .. } | PayError::Rejected { .. }),
            "{e:?}"
        );
        assert!(!e.is_retryable(), "{e:?}");
    }
    let states: Vec<String> = env
        .mock
        .transactions()
        .into_iter()
        .map(|t| t.state)
        .collect();
    assert_eq!(states, ["NOTPAY", "WAIT_BUYER_PAY"]);

    // `fail_next` fails exactly that many calls.
    env.mock.set_faults(Faults {
        fail_next: 1,
        ..Faults::default()
    });
    assert!(
        env.wechat()
            .close("WXOUTAGE01")
            .await
            .unwrap_err()
            .is_retryable()
    );
    assert_eq!(env.mock.faults().fail_next, 0);
    env.wechat().close("WXOUTAGE01").await.unwrap();
    env.alipay().trade_close("ALIOUTAGE01").await.unwrap();
    let states: Vec<String> = env
        .mock
        .transactions()
        .into_iter()
        .map(|t| t.state)
        .collect();
    assert_eq!(states, ["CLOSED", "TRADE_CLOSED"]);
    assert!(matches!(
        env.mock.pay("WXOUTAGE01").await,
        Err(MockError::InvalidState { .. })
    ));
    assert!(matches!(
        env.mock.pay("ALIOUTAGE01").await,
        Err(MockError::InvalidState { .. })
    ));
}
