//! Local stand-ins for WeChat Pay v3 and the Alipay gateway, on one axum router.
//!
//! They check the merchant's request signatures exactly as the platforms do, keep trades in
//! memory, sign every answer with a platform key, and send the signed (and for WeChat Pay,
//! encrypted) callbacks when told a buyer paid or a refund settled, retrying until the receiver
//! acknowledges. Faults (5xx, rate limits) are injected at configurable rates.
//!
//! HTTP surface (paths do not collide, so one port serves both platforms):
//! - WeChat Pay: `POST /v3/pay/transactions/jsapi`, `GET /v3/pay/transactions/out-trade-no/{no}?mchid=`,
//!   `GET /v3/pay/transactions/id/{transaction_id}?mchid=`,
//!   `POST /v3/pay/transactions/out-trade-no/{no}/close`, `POST /v3/refund/domestic/refunds`,
//!   `GET /v3/refund/domestic/refunds/{out_refund_no}`.
//! - Alipay: `POST /gateway.do` (form; query-string parameters are merged in, so GET works too):
//!   `alipay.trade.create`, `.query`, `.refund`, `.close`.
//! - Control: `POST /_mock/pay {"out_trade_no"}`, `POST /_mock/refund_notice {"out_refund_no"}`,
//!   `GET /_mock/transactions`, `GET /_mock/refunds`, `GET /_mock/deliveries`,
//!   `POST /_mock/faults {"server_error_rate","rate_limit_rate","outage","fail_next"}`.
//!
//! **Ours, not platform facts**: error codes for state conflicts (WeChat `INVALID_REQUEST` for a
//! reused out_trade_no/out_refund_no with other parameters, closing a paid order, over-refunds;
//! Alipay `ACQ.TRADE_STATUS_ERROR`, `ACQ.REFUND_AMT_NOT_EQUAL_TOTAL` for over-refunds,
//! `ACQ.INVALID_PARAMETER` for a reused out_request_no with another amount), the id formats,
//! the refund notice going to the order's notify_url when the refund names none, and the short
//! default retry schedule (the real ones span 24 h).

mod alipay;
mod wechat;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{PayError, Platform};
use crate::keys::{Clock, PrivateKey, PublicKey, system_clock};
use crate::wechatpay::ApiV3Key;

/// Throwaway key pairs for a mock and the clients that talk to it (tests, local development).
#[derive(Debug, Clone)]
pub struct DevKeys {
    pub wechat_merchant: PrivateKey,
    pub wechat_platform: PrivateKey,
    pub alipay_app: PrivateKey,
    pub alipay_platform: PrivateKey,
}

impl DevKeys {
    /// Four fresh 2048-bit keys.
    pub fn generate() -> Result<Self, PayError> {
        Ok(Self {
            wechat_merchant: PrivateKey::generate(2048)?,
            wechat_platform: PrivateKey::generate(2048)?,
            alipay_app: PrivateKey::generate(2048)?,
            alipay_platform: PrivateKey::generate(2048)?,
        })
    }

    /// Generated on first use and shared for the life of the process: generation takes a
    /// noticeable fraction of a second per key in a debug build.
    pub fn shared() -> Result<&'static Self, PayError> {
        static KEYS: OnceLock<Result<DevKeys, String>> = OnceLock::new();
        KEYS.get_or_init(|| Self::generate().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| PayError::InvalidKey(e.clone()))
    }
}

/// A merchant registered with the WeChat Pay mock.
#[derive(Debug, Clone)]
pub struct WechatMerchant {
    pub mchid: String,
    /// Serial of the merchant API certificate, as sent in `Authorization`.
    pub serial_no: String,
    pub public_key: PublicKey,
    pub apiv3_key: ApiV3Key,
}

/// An app registered with the Alipay mock.
#[derive(Debug, Clone)]
pub struct AlipayApp {
    pub app_id: String,
    pub public_key: PublicKey,
}

/// Fault injection: each platform API request fails with a 5xx-class error with probability
/// `server_error_rate`, else is rate limited with probability `rate_limit_rate`. The switches
/// are deterministic: `outage` fails every request with a 5xx-class error (WeChat Pay
/// `SYSTEM_ERROR`, Alipay 20000) until turned off, `fail_next` fails that many requests.
/// Faults are drawn after the request signature is checked, so an outage never hides a bad
/// signature, and a failed request changes nothing at the platform.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    #[serde(default)]
    pub server_error_rate: f64,
    #[serde(default)]
    pub rate_limit_rate: f64,
    #[serde(default)]
    pub outage: bool,
    #[serde(default)]
    pub fail_next: u32,
}

/// How callbacks are retried until acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyRetry {
    pub max_attempts: u32,
    pub interval: Duration,
}

impl Default for NotifyRetry {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            interval: Duration::from_millis(100),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PayMockConfig {
    /// Signs WeChat Pay answers and callbacks; the merchant trusts its public half.
    pub wechat_platform_key: PrivateKey,
    /// `Wechatpay-Serial` of that key (a certificate serial or a `PUB_KEY_ID_…`).
    pub wechat_platform_serial: String,
    pub wechat_merchants: Vec<WechatMerchant>,
    /// Signs Alipay answers and notifies (the "Alipay public key" pair).
    pub alipay_platform_key: PrivateKey,
    pub alipay_apps: Vec<AlipayApp>,
    pub faults: Faults,
    pub notify_retry: NotifyRetry,
    pub clock: Arc<dyn Clock>,
}

impl PayMockConfig {
    /// A config with no merchants or apps, no faults, the default retry and the system clock.
    pub fn new(
        wechat_platform_key: PrivateKey,
        wechat_platform_serial: impl Into<String>,
        alipay_platform_key: PrivateKey,
    ) -> Self {
        Self {
            wechat_platform_key,
            wechat_platform_serial: wechat_platform_serial.into(),
            wechat_merchants: Vec::new(),
            alipay_platform_key,
            alipay_apps: Vec::new(),
            faults: Faults::default(),
            notify_retry: NotifyRetry::default(),
            clock: system_clock(),
        }
    }
}

/// The control API's errors.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    #[error("no {0} known to the mock")]
    NotFound(String),
    #[error("{0} exists on more than one platform or merchant")]
    Ambiguous(String),
    #[error("{what} is {state}, cannot {action}")]
    InvalidState {
        what: String,
        state: String,
        action: &'static str,
    },
    #[error(transparent)]
    Crypto(#[from] PayError),
}

/// One trade as the mock holds it, either platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockTransaction {
    pub platform: Platform,
    /// mchid (WeChat Pay) or app_id (Alipay).
    pub merchant: String,
    pub out_trade_no: String,
    /// transaction_id / trade_no; WeChat Pay assigns it only on payment.
    pub platform_trade_no: Option<String>,
    /// trade_state / trade_status, in the platform's words.
    pub state: String,
    pub total_fen: i64,
    pub refunded_fen: i64,
    pub notify_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockRefund {
    pub platform: Platform,
    pub merchant: String,
    pub out_trade_no: String,
    /// out_refund_no (WeChat Pay) or out_request_no (Alipay).
    pub out_refund_no: String,
    pub refund_fen: i64,
    /// WeChat: PROCESSING until `refund_notice`, then SUCCESS. Alipay refunds are immediate:
    /// SUCCESS.
    pub status: String,
}

/// What happened to one callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReport {
    pub platform: Platform,
    /// `TRANSACTION.SUCCESS`, `REFUND.SUCCESS` (WeChat Pay) or `trade_status_sync` (Alipay).
    pub event: String,
    pub out_trade_no: String,
    pub url: String,
    pub attempts: u32,
    pub delivered: bool,
    /// HTTP status of the last attempt; `None` when it got no answer.
    pub last_status: Option<u16>,
}

#[derive(Debug, Clone)]
pub(crate) struct WxTxn {
    pub appid: String,
    pub mchid: String,
    pub out_trade_no: String,
    pub notify_url: String,
    pub total_fen: i64,
    pub openid: String,
    pub attach: Option<String>,
    pub prepay_id: String,
    /// The prepay body, to tell an identical retry from a conflicting reuse.
    pub request_fingerprint: String,
    pub transaction_id: Option<String>,
    pub trade_state: String,
    pub success_time: Option<String>,
    pub refunded_fen: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct WxRefund {
    pub mchid: String,
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub refund_id: String,
    pub refund_fen: i64,
    pub total_fen: i64,
    pub notify_url: Option<String>,
    pub status: String,
    pub create_time: String,
    pub success_time: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct AliTrade {
    pub app_id: String,
    pub out_trade_no: String,
    pub trade_no: String,
    pub subject: String,
    pub total_fen: i64,
    pub buyer_id: String,
    pub notify_url: Option<String>,
    pub trade_status: String,
    pub gmt_create: String,
    pub gmt_payment: Option<String>,
    pub refunded_fen: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct AliRefund {
    pub app_id: String,
    pub out_trade_no: String,
    pub out_request_no: String,
    pub refund_fen: i64,
    pub gmt_refund: String,
}

#[derive(Debug, Default)]
pub(crate) struct Store {
    /// Keyed by (mchid, out_trade_no).
    pub wx: HashMap<(String, String), WxTxn>,
    /// Keyed by (mchid, out_refund_no).
    pub wx_refunds: HashMap<(String, String), WxRefund>,
    /// Keyed by (app_id, out_trade_no).
    pub ali: HashMap<(String, String), AliTrade>,
    /// Keyed by (app_id, out_trade_no, out_request_no).
    pub ali_refunds: HashMap<(String, String, String), AliRefund>,
    pub deliveries: Vec<DeliveryReport>,
    pub seq: u64,
    /// out_trade_no → the merchants (WeChat mchid / Alipay app_id) holding a trade under it, so
    /// `pay` finds a trade without scanning every trade (a benchmark creates thousands).
    pub wx_by_no: HashMap<String, Vec<String>>,
    pub ali_by_no: HashMap<String, Vec<String>>,
}

impl Store {
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The one key of a WeChat Pay trade numbered `out_trade_no`, if exactly one merchant has it.
    pub fn wx_key(&self, out_trade_no: &str) -> Option<(String, String)> {
        match self.wx_by_no.get(out_trade_no).map(Vec::as_slice) {
            Some([mchid]) => Some((mchid.clone(), out_trade_no.to_owned())),
            _ => None,
        }
    }

    /// The one key of an Alipay trade numbered `out_trade_no`, if exactly one app has it.
    pub fn ali_key(&self, out_trade_no: &str) -> Option<(String, String)> {
        match self.ali_by_no.get(out_trade_no).map(Vec::as_slice) {
            Some([app_id]) => Some((app_id.clone(), out_trade_no.to_owned())),
            _ => None,
        }
    }
}

pub(crate) struct Inner {
    pub cfg: PayMockConfig,
    pub store: Mutex<Store>,
    pub faults: Mutex<Faults>,
    pub http: reqwest::Client,
}

/// The mock platforms. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct PayMock {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for PayMock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayMock").finish_non_exhaustive()
    }
}

/// A fault drawn for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    ServerError,
    RateLimited,
}

impl PayMock {
    pub fn new(cfg: PayMockConfig) -> Self {
        let faults = cfg.faults;
        // Callbacks go to local receivers; a short timeout keeps a stuck one from stalling pay().
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                cfg,
                store: Mutex::new(Store::default()),
                faults: Mutex::new(faults),
                http,
            }),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v3/pay/transactions/jsapi", post(wechat::jsapi_prepay))
            .route(
                "/v3/pay/transactions/out-trade-no/{out_trade_no}",
                get(wechat::query_by_out_trade_no),
            )
            .route(
                "/v3/pay/transactions/id/{transaction_id}",
                get(wechat::query_by_id),
            )
            .route(
                "/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
                post(wechat::close),
            )
            .route("/v3/refund/domestic/refunds", post(wechat::refund))
            .route(
                "/v3/refund/domestic/refunds/{out_refund_no}",
                get(wechat::refund_query),
            )
            .route("/gateway.do", get(alipay::gateway).post(alipay::gateway))
            .route("/_mock/pay", post(ctl_pay))
            .route("/_mock/refund_notice", post(ctl_refund_notice))
            .route("/_mock/transactions", get(ctl_transactions))
            .route("/_mock/refunds", get(ctl_refunds))
            .route("/_mock/deliveries", get(ctl_deliveries))
            .route("/_mock/faults", post(ctl_faults))
            .with_state(self.clone())
    }

    /// Serves the router on `listener` until the task is dropped.
    pub async fn serve(&self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// Binds 127.0.0.1 on a free port, serves in a background task, returns the address.
    /// WeChat base URL = `http://{addr}`, Alipay gateway = `http://{addr}/gateway.do`.
    pub async fn spawn(&self) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.serve(listener).await {
                tracing::error!(error = %e, "payment mock stopped");
            }
        });
        Ok(addr)
    }

    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.inner.faults) = faults;
    }

    /// The buyer pays `out_trade_no` (WeChat Pay or Alipay, whichever holds it); the payment
    /// callback is sent and retried until acknowledged or attempts run out.
    pub async fn pay(&self, out_trade_no: &str) -> Result<DeliveryReport, MockError> {
        let (wx_hits, ali_hits) = self.with_store(|s| {
            (
                s.wx_by_no.get(out_trade_no).map_or(0, Vec::len),
                s.ali_by_no.get(out_trade_no).map_or(0, Vec::len),
            )
        });
        match (wx_hits, ali_hits) {
            (1, 0) => wechat::pay(self, out_trade_no).await,
            (0, 1) => alipay::pay(self, out_trade_no).await,
            (0, 0) => Err(MockError::NotFound(format!("out_trade_no {out_trade_no}"))),
            _ => Err(MockError::Ambiguous(format!("out_trade_no {out_trade_no}"))),
        }
    }

    /// A refund settles: WeChat Pay `out_refund_no` → `REFUND.SUCCESS` callback; Alipay
    /// `out_request_no` → refund notify. Retried like payment callbacks.
    pub async fn refund_notice(&self, out_refund_no: &str) -> Result<DeliveryReport, MockError> {
        let wx_hits = self.with_store(|s| {
            s.wx_refunds
                .values()
                .filter(|r| r.out_refund_no == out_refund_no)
                .count()
        });
        let ali_hits = self.with_store(|s| {
            s.ali_refunds
                .values()
                .filter(|r| r.out_request_no == out_refund_no)
                .count()
        });
        match (wx_hits, ali_hits) {
            (1, 0) => wechat::refund_notice(self, out_refund_no).await,
            (0, 1) => alipay::refund_notice(self, out_refund_no).await,
            (0, 0) => Err(MockError::NotFound(format!("refund {out_refund_no}"))),
            _ => Err(MockError::Ambiguous(format!("refund {out_refund_no}"))),
        }
    }

    /// Every trade on both platforms, WeChat Pay first, each sorted by out_trade_no.
    pub fn transactions(&self) -> Vec<MockTransaction> {
        self.with_store(|s| {
            let mut wx: Vec<MockTransaction> =
                s.wx.values()
                    .map(|t| MockTransaction {
                        platform: Platform::WechatPay,
                        merchant: t.mchid.clone(),
                        out_trade_no: t.out_trade_no.clone(),
                        platform_trade_no: t.transaction_id.clone(),
                        state: t.trade_state.clone(),
                        total_fen: t.total_fen,
                        refunded_fen: t.refunded_fen,
                        notify_url: Some(t.notify_url.clone()),
                    })
                    .collect();
            let ali: Vec<MockTransaction> = s
                .ali
                .values()
                .map(|t| MockTransaction {
                    platform: Platform::Alipay,
                    merchant: t.app_id.clone(),
                    out_trade_no: t.out_trade_no.clone(),
                    platform_trade_no: Some(t.trade_no.clone()),
                    state: t.trade_status.clone(),
                    total_fen: t.total_fen,
                    refunded_fen: t.refunded_fen,
                    notify_url: t.notify_url.clone(),
                })
                .collect();
            wx.extend(ali);
            wx.sort_by(|a, b| (a.platform, &a.out_trade_no).cmp(&(b.platform, &b.out_trade_no)));
            wx
        })
    }

    /// Every refund on both platforms, WeChat Pay first, each sorted by refund number.
    pub fn refunds(&self) -> Vec<MockRefund> {
        self.with_store(|s| {
            let mut out: Vec<MockRefund> = s
                .wx_refunds
                .values()
                .map(|r| MockRefund {
                    platform: Platform::WechatPay,
                    merchant: r.mchid.clone(),
                    out_trade_no: r.out_trade_no.clone(),
                    out_refund_no: r.out_refund_no.clone(),
                    refund_fen: r.refund_fen,
                    status: r.status.clone(),
                })
                .chain(s.ali_refunds.values().map(|r| MockRefund {
                    platform: Platform::Alipay,
                    merchant: r.app_id.clone(),
                    out_trade_no: r.out_trade_no.clone(),
                    out_refund_no: r.out_request_no.clone(),
                    refund_fen: r.refund_fen,
                    status: "SUCCESS".to_owned(),
                }))
                .collect();
            out.sort_by(|a, b| (a.platform, &a.out_refund_no).cmp(&(b.platform, &b.out_refund_no)));
            out
        })
    }

    /// Every callback sent so far, oldest first.
    pub fn deliveries(&self) -> Vec<DeliveryReport> {
        self.with_store(|s| s.deliveries.clone())
    }

    pub(crate) fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut lock(&self.inner.store))
    }

    pub(crate) fn now(&self) -> i64 {
        self.inner.cfg.clock.now_unix()
    }

    /// The faults in force now (`fail_next` counts down as requests fail).
    pub fn faults(&self) -> Faults {
        *lock(&self.inner.faults)
    }

    pub(crate) fn draw_fault(&self) -> Option<Fault> {
        let f = {
            let mut f = lock(&self.inner.faults);
            if f.outage {
                return Some(Fault::ServerError);
            }
            if f.fail_next > 0 {
                f.fail_next -= 1;
                return Some(Fault::ServerError);
            }
            *f
        };
        if f.server_error_rate <= 0.0 && f.rate_limit_rate <= 0.0 {
            return None;
        }
        let r: f64 = rand::thread_rng().r#gen();
        if r < f.server_error_rate {
            Some(Fault::ServerError)
        } else if r < f.server_error_rate + f.rate_limit_rate {
            Some(Fault::RateLimited)
        } else {
            None
        }
    }

    /// POSTs a callback until `acked` says the answer is an acknowledgement.
    pub(crate) async fn deliver(
        &self,
        platform: Platform,
        event: &str,
        out_trade_no: &str,
        url: &str,
        request: impl Fn() -> Result<reqwest::RequestBuilder, PayError>,
        acked: impl Fn(u16, &str) -> bool,
    ) -> Result<DeliveryReport, MockError> {
        let retry = self.inner.cfg.notify_retry;
        let mut report = DeliveryReport {
            platform,
            event: event.to_owned(),
            out_trade_no: out_trade_no.to_owned(),
            url: url.to_owned(),
            attempts: 0,
            delivered: false,
            last_status: None,
        };
        while report.attempts < retry.max_attempts.max(1) {
            if report.attempts > 0 {
                tokio::time::sleep(retry.interval).await;
            }
            report.attempts += 1;
            // Re-signed per attempt: a retry carries a fresh timestamp, as the platforms do.
            match request()?.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await.unwrap_or_default();
                    report.last_status = Some(status);
                    if acked(status, &text) {
                        report.delivered = true;
                        break;
                    }
                }
                Err(e) => {
                    report.last_status = None;
                    tracing::debug!(error = %e, url, "payment mock callback got no answer");
                }
            }
        }
        self.with_store(|s| s.deliveries.push(report.clone()));
        Ok(report)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Random decimal digits (ids).
pub(crate) fn digits(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Control endpoints

#[derive(Deserialize)]
struct PayCommand {
    out_trade_no: String,
}

#[derive(Deserialize)]
struct RefundCommand {
    out_refund_no: String,
}

fn ctl_error(e: &MockError) -> Response {
    let status = match e {
        MockError::NotFound(_) => StatusCode::NOT_FOUND,
        MockError::Ambiguous(_) | MockError::InvalidState { .. } => StatusCode::CONFLICT,
        MockError::Crypto(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (
        status,
        axum::Json(serde_json::json!({"error": e.to_string()})),
    )
        .into_response()
}

async fn ctl_pay(State(mock): State<PayMock>, axum::Json(cmd): axum::Json<PayCommand>) -> Response {
    match mock.pay(&cmd.out_trade_no).await {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) => ctl_error(&e),
    }
}

async fn ctl_refund_notice(
    State(mock): State<PayMock>,
    axum::Json(cmd): axum::Json<RefundCommand>,
) -> Response {
    match mock.refund_notice(&cmd.out_refund_no).await {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) => ctl_error(&e),
    }
}

async fn ctl_transactions(State(mock): State<PayMock>) -> axum::Json<Vec<MockTransaction>> {
    axum::Json(mock.transactions())
}

async fn ctl_refunds(State(mock): State<PayMock>) -> axum::Json<Vec<MockRefund>> {
    axum::Json(mock.refunds())
}

async fn ctl_deliveries(State(mock): State<PayMock>) -> axum::Json<Vec<DeliveryReport>> {
    axum::Json(mock.deliveries())
}

async fn ctl_faults(
    State(mock): State<PayMock>,
    axum::Json(f): axum::Json<Faults>,
) -> axum::Json<Faults> {
    mock.set_faults(f);
    axum::Json(f)
}
