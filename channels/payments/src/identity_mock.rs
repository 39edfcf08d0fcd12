//! Local stand-ins for the buyer-identity platforms on one axum router: WeChat mini-program
//! login and phone number, Alipay `alipay.system.oauth.token`, and the SMS provider of
//! [`crate::sms`]. Tests mint login codes through the control calls, as the mini-program would
//! get them from `wx.login`, the phone button or `my.getAuthCode`, and read the SMS sent.
//!
//! HTTP surface (serve it on its own port: its `/gateway.do` is also a path of [`crate::mock`]):
//! - WeChat: `GET /sns/jscode2session?appid&secret&js_code&grant_type=authorization_code`,
//!   `GET /cgi-bin/token?grant_type=client_credential&appid&secret`,
//!   `POST /wxa/business/getuserphonenumber?access_token=` `{code}`.
//! - Alipay: `POST /gateway.do` (form; query parameters merged in): `alipay.system.oauth.token`,
//!   RSA2-verified against the registered app key, answers signed with the platform key.
//! - SMS: `POST /v1/sms/send`, verified as [`crate::sms`] documents (key, ±300 s, nonce, HMAC).
//! - Control: `POST /_mock/identity/wechat_code {openid, unionid?}` → `{code}`,
//!   `POST /_mock/identity/phone_code {phone, country_code?}` → `{code}`,
//!   `POST /_mock/identity/alipay_code {user_id}` → `{code}`, `GET /_mock/identity/sms`,
//!   `POST /_mock/identity/faults {wechat_busy_next, alipay_unavailable_next,
//!   sms_unavailable_next, wechat_calls_per_minute}`.
//!
//! Platform behaviour kept: codes are single-use and expire after `code_ttl_secs` (300 s): an
//! unknown or expired WeChat code is 40029, a used one 40163; more than `wechat_calls_per_minute`
//! code2Session calls for one openid within 60 s is 45011 (WeChat documents 100/min per user);
//! `-1` is "system busy"; access tokens live `access_token_ttl_secs` (7200 s), an unknown one is
//! 40001, an expired one 42001; bad appid 40013, bad secret 40125; Alipay refuses unknown or used
//! codes with `40002`/`isv.code-invalid` under `error_response`, signed.
//! **Ours, not platform facts**: the code, token and id formats; a refused call (45011) still
//! counts towards the per-openid minute; `-1`, 45011 and 40029 leave the code unused; the
//! Alipay `open_id` is derived from app and user.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::alipay::{TIME_FORMAT, format_time, parse_form, response_key, sign_content};
use crate::keys::{Clock, PrivateKey, system_clock};
use crate::mock::{AlipayApp, lock};
use crate::sms::{
    HEADER_KEY, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, LOGIN_CODE_TEMPLATE,
    MAX_SKEW_SECS, SmsMessage,
};

/// A mini-program registered with the WeChat mock.
#[derive(Debug, Clone)]
pub struct MiniApp {
    pub appid: String,
    pub secret: String,
}

/// An account of the SMS provider mock.
#[derive(Debug, Clone)]
pub struct SmsAccount {
    pub access_key_id: String,
    pub access_key_secret: String,
}

/// Injected failures, each for the next N calls of one platform.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityFaults {
    /// WeChat answers errcode -1 (system busy) without looking at the code.
    #[serde(default)]
    pub wechat_busy_next: u32,
    /// Alipay answers 20000 (service unavailable).
    #[serde(default)]
    pub alipay_unavailable_next: u32,
    /// The SMS provider answers HTTP 503 `SYSTEM_ERROR`.
    #[serde(default)]
    pub sms_unavailable_next: u32,
}

#[derive(Debug, Clone)]
pub struct IdentityMockConfig {
    pub wechat_apps: Vec<MiniApp>,
    /// Signs Alipay answers; the app trusts its public half.
    pub alipay_platform_key: PrivateKey,
    pub alipay_apps: Vec<AlipayApp>,
    pub sms_accounts: Vec<SmsAccount>,
    /// code2Session calls for one openid allowed within 60 s; the next is 45011.
    pub wechat_calls_per_minute: u32,
    pub code_ttl_secs: i64,
    pub access_token_ttl_secs: i64,
    pub clock: Arc<dyn Clock>,
}

impl IdentityMockConfig {
    /// No apps or accounts, WeChat's documented 100 calls/min, 5-minute codes, 2-hour tokens,
    /// the system clock.
    pub fn new(alipay_platform_key: PrivateKey) -> Self {
        Self {
            wechat_apps: Vec::new(),
            alipay_platform_key,
            alipay_apps: Vec::new(),
            sms_accounts: Vec::new(),
            wechat_calls_per_minute: 100,
            code_ttl_secs: 300,
            access_token_ttl_secs: 7200,
            clock: system_clock(),
        }
    }
}

/// One SMS the provider accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentSms {
    pub message_id: String,
    pub access_key_id: String,
    pub phone: String,
    pub sign_name: String,
    pub template: String,
    pub params: BTreeMap<String, String>,
    pub out_id: String,
    /// Unix seconds.
    pub sent_at: i64,
}

#[derive(Debug, Clone)]
struct WxCode {
    openid: String,
    unionid: Option<String>,
    issued_at: i64,
    used: bool,
}

#[derive(Debug, Clone)]
struct PhoneCode {
    pure: String,
    country_code: String,
    issued_at: i64,
    used: bool,
}

#[derive(Debug, Clone)]
struct AliCode {
    user_id: String,
    issued_at: i64,
    used: bool,
}

#[derive(Debug, Default)]
struct Store {
    wx_codes: HashMap<String, WxCode>,
    phone_codes: HashMap<String, PhoneCode>,
    ali_codes: HashMap<String, AliCode>,
    /// access_token → (appid, expires_at).
    tokens: HashMap<String, (String, i64)>,
    tokens_issued: u32,
    /// code2Session call times per openid, oldest first.
    calls: HashMap<String, VecDeque<i64>>,
    sms: Vec<SentSms>,
    sms_nonces: HashSet<String>,
    faults: IdentityFaults,
    calls_per_minute: u32,
}

struct Inner {
    cfg: IdentityMockConfig,
    store: Mutex<Store>,
}

/// The identity platforms mock. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct IdentityMock {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for IdentityMock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityMock").finish_non_exhaustive()
    }
}

fn random_alnum(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

impl IdentityMock {
    pub fn new(cfg: IdentityMockConfig) -> Self {
        let store = Store {
            calls_per_minute: cfg.wechat_calls_per_minute,
            ..Store::default()
        };
        Self {
            inner: Arc::new(Inner {
                cfg,
                store: Mutex::new(store),
            }),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/sns/jscode2session", get(wx_code2session))
            .route("/cgi-bin/token", get(wx_token))
            .route("/wxa/business/getuserphonenumber", post(wx_phone))
            .route("/gateway.do", get(ali_gateway).post(ali_gateway))
            .route(crate::sms::SEND_PATH, post(sms_send))
            .route("/_mock/identity/wechat_code", post(ctl_wechat_code))
            .route("/_mock/identity/phone_code", post(ctl_phone_code))
            .route("/_mock/identity/alipay_code", post(ctl_alipay_code))
            .route("/_mock/identity/sms", get(ctl_sms))
            .route("/_mock/identity/faults", post(ctl_faults))
            .with_state(self.clone())
    }

    pub async fn serve(&self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// Binds 127.0.0.1 on a free port and serves in a background task. WeChat base URL and SMS
    /// base URL = `http://{addr}`, Alipay gateway = `http://{addr}/gateway.do`.
    pub async fn spawn(&self) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.serve(listener).await {
                tracing::error!(error = %e, "identity mock stopped");
            }
        });
        Ok(addr)
    }

    fn now(&self) -> i64 {
        self.inner.cfg.clock.now_unix()
    }

    fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut lock(&self.inner.store))
    }

    /// A `wx.login` code for `openid` (any registered mini-program may exchange it).
    pub fn issue_wechat_code(&self, openid: &str, unionid: Option<&str>) -> String {
        let code = random_alnum(32);
        let now = self.now();
        self.with_store(|s| {
            s.wx_codes.insert(
                code.clone(),
                WxCode {
                    openid: openid.to_owned(),
                    unionid: unionid.map(str::to_owned),
                    issued_at: now,
                    used: false,
                },
            )
        });
        code
    }

    /// A phone-number button code for a mainland number (`purePhoneNumber`, country code 86).
    pub fn issue_phone_code(&self, phone: &str) -> String {
        self.issue_phone_code_in(phone, "86")
    }

    /// A phone-number button code for a number of any country.
    pub fn issue_phone_code_in(&self, pure_phone: &str, country_code: &str) -> String {
        let code = random_alnum(64);
        let now = self.now();
        self.with_store(|s| {
            s.phone_codes.insert(
                code.clone(),
                PhoneCode {
                    pure: pure_phone.to_owned(),
                    country_code: country_code.to_owned(),
                    issued_at: now,
                    used: false,
                },
            )
        });
        code
    }

    /// A `my.getAuthCode` code for an Alipay user id (`2088…`).
    pub fn issue_alipay_code(&self, user_id: &str) -> String {
        let code = random_alnum(32);
        let now = self.now();
        self.with_store(|s| {
            s.ali_codes.insert(
                code.clone(),
                AliCode {
                    user_id: user_id.to_owned(),
                    issued_at: now,
                    used: false,
                },
            )
        });
        code
    }

    /// Every SMS accepted so far, oldest first.
    pub fn sms_sent(&self) -> Vec<SentSms> {
        self.with_store(|s| s.sms.clone())
    }

    /// The `code` parameter of the latest SMS to `phone`.
    pub fn last_sms_code(&self, phone: &str) -> Option<String> {
        self.with_store(|s| {
            s.sms
                .iter()
                .rev()
                .find(|m| m.phone == phone)
                .and_then(|m| m.params.get("code").cloned())
        })
    }

    pub fn set_faults(&self, faults: IdentityFaults) {
        self.with_store(|s| s.faults = faults);
    }

    pub fn faults(&self) -> IdentityFaults {
        self.with_store(|s| s.faults)
    }

    pub fn set_wechat_calls_per_minute(&self, n: u32) {
        self.with_store(|s| s.calls_per_minute = n);
    }

    /// How many access tokens `/cgi-bin/token` handed out (a caching client asks once).
    pub fn access_tokens_issued(&self) -> u32 {
        self.with_store(|s| s.tokens_issued)
    }

    /// Makes every access token handed out so far expired (42001 from now on).
    pub fn expire_access_tokens(&self) {
        self.with_store(|s| {
            for (_, exp) in s.tokens.values_mut() {
                *exp = i64::MIN;
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// WeChat

fn wx_error(errcode: i64, errmsg: &str) -> Response {
    wx_json(json!({"errcode": errcode, "errmsg": errmsg}))
}

/// WeChat answers everything with HTTP 200.
fn wx_json(v: Value) -> Response {
    let mut resp = (StatusCode::OK, v.to_string()).into_response();
    resp.headers_mut().insert(
        "Content-Type",
        HeaderValue::from_static("application/json; encoding=utf-8"),
    );
    resp
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Appid and secret check shared by code2Session and the token call: the refusal's errcode.
fn wx_app_check(
    mock: &IdentityMock,
    q: &HashMap<String, String>,
) -> Result<(), (i64, &'static str)> {
    let appid = q.get("appid").map(String::as_str).unwrap_or_default();
    let secret = q.get("secret").map(String::as_str).unwrap_or_default();
    if appid.is_empty() {
        return Err((41002, "appid missing"));
    }
    if secret.is_empty() {
        return Err((41004, "appsecret missing"));
    }
    let Some(app) = mock.inner.cfg.wechat_apps.iter().find(|a| a.appid == appid) else {
        return Err((40013, "invalid appid"));
    };
    if app.secret != secret {
        return Err((40125, "invalid appsecret"));
    }
    Ok(())
}

/// Takes one from a "next N calls fail" counter.
fn take(counter: &mut u32) -> bool {
    if *counter > 0 {
        *counter -= 1;
        true
    } else {
        false
    }
}

async fn wx_code2session(State(mock): State<IdentityMock>, uri: Uri) -> Response {
    let q = query_map(&uri);
    if let Err((errcode, errmsg)) = wx_app_check(&mock, &q) {
        return wx_error(errcode, errmsg);
    }
    if q.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return wx_error(40002, "invalid grant_type");
    }
    let js_code = q.get("js_code").cloned().unwrap_or_default();
    if js_code.is_empty() {
        return wx_error(41008, "missing code");
    }
    let now = mock.now();
    let ttl = mock.inner.cfg.code_ttl_secs;
    mock.with_store(|s| {
        if take(&mut s.faults.wechat_busy_next) {
            return wx_error(-1, "system error");
        }
        let Some(c) = s.wx_codes.get(&js_code).cloned() else {
            return wx_error(40029, "invalid code");
        };
        if c.used {
            return wx_error(40163, "code been used");
        }
        if now - c.issued_at >= ttl {
            return wx_error(40029, "invalid code");
        }
        let limit = s.calls_per_minute;
        let calls = s.calls.entry(c.openid.clone()).or_default();
        while calls.front().is_some_and(|t| now - t >= 60) {
            calls.pop_front();
        }
        let over = calls.len() >= limit as usize;
        calls.push_back(now);
        if over {
            return wx_error(
                45011,
                "api minute-quota reach limit  mustslower  retry next minute",
            );
        }
        if let Some(code) = s.wx_codes.get_mut(&js_code) {
            code.used = true;
        }
        let mut body = json!({
            "session_key": random_alnum(24),
            "openid": c.openid,
        });
        if let Some(u) = c.unionid {
            body["unionid"] = Value::from(u);
        }
        wx_json(body)
    })
}

async fn wx_token(State(mock): State<IdentityMock>, uri: Uri) -> Response {
    let q = query_map(&uri);
    if q.get("grant_type").map(String::as_str) != Some("client_credential") {
        return wx_error(40002, "invalid grant_type");
    }
    if let Err((errcode, errmsg)) = wx_app_check(&mock, &q) {
        return wx_error(errcode, errmsg);
    }
    let appid = q.get("appid").cloned().unwrap_or_default();
    let now = mock.now();
    let ttl = mock.inner.cfg.access_token_ttl_secs;
    mock.with_store(|s| {
        if take(&mut s.faults.wechat_busy_next) {
            return wx_error(-1, "system error");
        }
        let token = random_alnum(96);
        s.tokens.insert(token.clone(), (appid, now + ttl));
        s.tokens_issued += 1;
        wx_json(json!({"access_token": token, "expires_in": ttl}))
    })
}

async fn wx_phone(State(mock): State<IdentityMock>, uri: Uri, body: Bytes) -> Response {
    let q = query_map(&uri);
    let token = q.get("access_token").cloned().unwrap_or_default();
    let now = mock.now();
    let ttl = mock.inner.cfg.code_ttl_secs;
    #[derive(Deserialize)]
    struct Req {
        #[serde(default)]
        code: String,
    }
    let req: Option<Req> = serde_json::from_slice(&body).ok();
    mock.with_store(|s| {
        let Some((appid, exp)) = s.tokens.get(&token).cloned() else {
            return wx_error(
                40001,
                "invalid credential, access_token is invalid or not latest",
            );
        };
        if now >= exp {
            return wx_error(42001, "access_token expired");
        }
        if take(&mut s.faults.wechat_busy_next) {
            return wx_error(-1, "system error");
        }
        let Some(req) = req else {
            return wx_error(47001, "data format error");
        };
        let Some(c) = s.phone_codes.get_mut(&req.code) else {
            return wx_error(40029, "invalid code");
        };
        if c.used {
            return wx_error(40163, "code been used");
        }
        if now - c.issued_at >= ttl {
            return wx_error(40029, "invalid code");
        }
        c.used = true;
        let phone_number = if c.country_code == "86" {
            c.pure.clone()
        } else {
            format!("+{}{}", c.country_code, c.pure)
        };
        wx_json(json!({
            "errcode": 0,
            "errmsg": "ok",
            "phone_info": {
                "phoneNumber": phone_number,
                "purePhoneNumber": c.pure,
                "countryCode": c.country_code,
                "watermark": {"timestamp": now, "appid": appid},
            }
        }))
    })
}

// ---------------------------------------------------------------------------------------------
// Alipay

struct AliAnswer {
    /// Fields in the order written (Alipay does not sort them).
    fields: Vec<(&'static str, Value)>,
    signed: bool,
    error_response: bool,
}

fn ali_error(code: &str, msg: &str, sub_code: &str, sub_msg: &str) -> AliAnswer {
    AliAnswer {
        fields: vec![
            ("code", Value::from(code)),
            ("msg", Value::from(msg)),
            ("sub_code", Value::from(sub_code)),
            ("sub_msg", Value::from(sub_msg)),
        ],
        signed: true,
        error_response: true,
    }
}

fn ali_render(mock: &IdentityMock, method: &str, a: AliAnswer) -> Response {
    let key = if a.error_response || method.is_empty() {
        "error_response".to_owned()
    } else {
        response_key(method)
    };
    let mut content = String::from("{");
    for (i, (k, v)) in a.fields.iter().enumerate() {
        if i > 0 {
            content.push(',');
        }
        content.push_str(&Value::from(*k).to_string());
        content.push(':');
        content.push_str(&v.to_string());
    }
    content.push('}');
    let body = if a.signed {
        match mock
            .inner
            .cfg
            .alipay_platform_key
            .sign_sha256_base64(content.as_bytes())
        {
            Ok(sign) => format!(r#"{{"{key}":{content},"sign":"{sign}"}}"#),
            Err(e) => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("mock cannot sign: {e}"),
                )
                    .into_response();
            }
        }
    } else {
        format!(r#"{{"{key}":{content}}}"#)
    };
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        "Content-Type",
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    resp
}

/// An `open_id` stable per app and user, as OpenID-mode apps see it.
fn alipay_open_id(app_id: &str, user_id: &str) -> String {
    let h = Sha256::digest(format!("{app_id}\0{user_id}").as_bytes());
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("0{hex}")
}

async fn ali_gateway(State(mock): State<IdentityMock>, uri: Uri, body: Bytes) -> Response {
    let invalid_params = || {
        ali_error(
            "40002",
            "Invalid Arguments",
            "isv.invalid-parameter",
            "重复的参数",
        )
    };
    let mut params = match parse_form(uri.query().unwrap_or("").as_bytes()) {
        Ok(p) => p,
        Err(_) => return ali_render(&mock, "", invalid_params()),
    };
    match parse_form(&body) {
        Ok(p) => params.extend(p),
        Err(_) => return ali_render(&mock, "", invalid_params()),
    }
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    let method = get("method").to_owned();
    let answer = ali_answer(&mock, &params, &method);
    ali_render(&mock, &method, answer)
}

fn ali_answer(mock: &IdentityMock, params: &[(String, String)], method: &str) -> AliAnswer {
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    if method.is_empty() {
        return ali_error(
            "40001",
            "Missing Required Arguments",
            "isv.missing-method",
            "缺少方法名参数",
        );
    }
    let app_id = get("app_id");
    let Some(app) = mock
        .inner
        .cfg
        .alipay_apps
        .iter()
        .find(|a| a.app_id == app_id)
    else {
        // Alipay cannot pick a key to sign with for an app it does not know.
        let mut a = ali_error(
            "40002",
            "Invalid Arguments",
            "isv.invalid-app-id",
            "无效的AppID参数",
        );
        a.signed = false;
        return a;
    };
    if get("sign_type") != "RSA2" {
        return ali_error(
            "40002",
            "Invalid Arguments",
            "isv.invalid-signature-type",
            "无效的签名类型",
        );
    }
    let content = sign_content(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if app
        .public_key
        .verify_sha256_base64(content.as_bytes(), get("sign"))
        .is_err()
    {
        return ali_error(
            "40002",
            "Invalid Arguments",
            "isv.invalid-signature",
            "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配",
        );
    }
    if chrono::NaiveDateTime::parse_from_str(get("timestamp"), TIME_FORMAT).is_err() {
        return ali_error(
            "40002",
            "Invalid Arguments",
            "isv.invalid-timestamp",
            "非法的时间戳参数",
        );
    }
    if method != crate::alipay_oauth::METHOD {
        return ali_error(
            "40002",
            "Invalid Arguments",
            "isv.invalid-method",
            "不存在的方法名",
        );
    }
    if get("grant_type") != "authorization_code" {
        return ali_error(
            "40002",
            "Invalid Arguments",
            "isv.grant-type-invalid",
            "grant_type参数不正确",
        );
    }
    let now = mock.now();
    let ttl = mock.inner.cfg.code_ttl_secs;
    let code = get("code").to_owned();
    mock.with_store(|s| {
        if take(&mut s.faults.alipay_unavailable_next) {
            return ali_error(
                "20000",
                "Service Currently Unavailable",
                "isp.unknow-error",
                "系统繁忙",
            );
        }
        let usable = s
            .ali_codes
            .get(&code)
            .filter(|c| !c.used && now - c.issued_at < ttl)
            .cloned();
        let Some(c) = usable else {
            return ali_error(
                "40002",
                "Invalid Arguments",
                "isv.code-invalid",
                "授权码code无效",
            );
        };
        if let Some(stored) = s.ali_codes.get_mut(&code) {
            stored.used = true;
        }
        AliAnswer {
            fields: vec![
                (
                    "access_token",
                    Value::from(format!("authusrB{}", random_alnum(32))),
                ),
                ("alipay_user_id", Value::from(c.user_id.clone())),
                ("auth_start", Value::from(format_time(now))),
                ("expires_in", Value::from(1_296_000)),
                ("re_expires_in", Value::from(2_592_000)),
                (
                    "refresh_token",
                    Value::from(format!("authusrB{}", random_alnum(32))),
                ),
                ("user_id", Value::from(c.user_id.clone())),
                ("open_id", Value::from(alipay_open_id(app_id, &c.user_id))),
            ],
            signed: true,
            error_response: false,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// SMS

fn sms_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

fn is_sendable_phone(p: &str) -> bool {
    match p.strip_prefix('+') {
        Some(rest) => (6..=15).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_digit()),
        None => p.len() == 11 && p.starts_with('1') && p.bytes().all(|b| b.is_ascii_digit()),
    }
}

async fn sms_send(
    State(mock): State<IdentityMock>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (key_id, ts, nonce, sig) = (
        h(HEADER_KEY),
        h(HEADER_TIMESTAMP),
        h(HEADER_NONCE),
        h(HEADER_SIGNATURE),
    );
    let Some(account) = mock
        .inner
        .cfg
        .sms_accounts
        .iter()
        .find(|a| a.access_key_id == key_id)
    else {
        return sms_error(
            StatusCode::UNAUTHORIZED,
            "UNKNOWN_KEY",
            "unknown access key",
        );
    };
    let Ok(ts) = ts.parse::<i64>() else {
        return sms_error(
            StatusCode::UNAUTHORIZED,
            "TIMESTAMP_SKEW",
            "missing or malformed timestamp",
        );
    };
    let now = mock.now();
    if (now - ts).abs() > MAX_SKEW_SECS {
        return sms_error(
            StatusCode::UNAUTHORIZED,
            "TIMESTAMP_SKEW",
            "timestamp too far from now",
        );
    }
    if !(16..=64).contains(&nonce.len()) || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return sms_error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "bad nonce");
    }
    if !crate::sms::verify(
        &account.access_key_secret,
        uri.path(),
        ts,
        &nonce,
        &body,
        &sig,
    ) {
        return sms_error(
            StatusCode::UNAUTHORIZED,
            "SIGNATURE_INVALID",
            "signature does not verify",
        );
    }
    let msg: SmsMessage = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => return sms_error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", &e.to_string()),
    };
    let key_id = account.access_key_id.clone();
    mock.with_store(|s| {
        if !s.sms_nonces.insert(format!("{key_id}:{nonce}")) {
            return sms_error(
                StatusCode::UNAUTHORIZED,
                "NONCE_REUSED",
                "nonce already used",
            );
        }
        if take(&mut s.faults.sms_unavailable_next) {
            return sms_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "SYSTEM_ERROR",
                "try again later",
            );
        }
        if !is_sendable_phone(&msg.phone) {
            return sms_error(StatusCode::BAD_REQUEST, "INVALID_PHONE", "invalid phone");
        }
        if msg.template != LOGIN_CODE_TEMPLATE || msg.sign_name.trim().is_empty() {
            return sms_error(
                StatusCode::BAD_REQUEST,
                "INVALID_TEMPLATE",
                "unknown template or empty sign name",
            );
        }
        let message_id = format!("sms{}", crate::mock::digits(20));
        s.sms.push(SentSms {
            message_id: message_id.clone(),
            access_key_id: key_id.clone(),
            phone: msg.phone,
            sign_name: msg.sign_name,
            template: msg.template,
            params: msg.params,
            out_id: msg.out_id,
            sent_at: now,
        });
        axum::Json(json!({"message_id": message_id, "status": "ACCEPTED"})).into_response()
    })
}

// ---------------------------------------------------------------------------------------------
// Control endpoints

#[derive(Deserialize)]
struct WechatCodeCommand {
    openid: String,
    #[serde(default)]
    unionid: Option<String>,
}

#[derive(Deserialize)]
struct PhoneCodeCommand {
    phone: String,
    #[serde(default)]
    country_code: Option<String>,
}

#[derive(Deserialize)]
struct AlipayCodeCommand {
    user_id: String,
}

#[derive(Deserialize)]
struct FaultsCommand {
    #[serde(flatten)]
    faults: IdentityFaults,
    #[serde(default)]
    wechat_calls_per_minute: Option<u32>,
}

async fn ctl_wechat_code(
    State(mock): State<IdentityMock>,
    axum::Json(c): axum::Json<WechatCodeCommand>,
) -> axum::Json<Value> {
    axum::Json(json!({"code": mock.issue_wechat_code(&c.openid, c.unionid.as_deref())}))
}

async fn ctl_phone_code(
    State(mock): State<IdentityMock>,
    axum::Json(c): axum::Json<PhoneCodeCommand>,
) -> axum::Json<Value> {
    let cc = c.country_code.unwrap_or_else(|| "86".to_owned());
    axum::Json(json!({"code": mock.issue_phone_code_in(&c.phone, &cc)}))
}

async fn ctl_alipay_code(
    State(mock): State<IdentityMock>,
    axum::Json(c): axum::Json<AlipayCodeCommand>,
) -> axum::Json<Value> {
    axum::Json(json!({"code": mock.issue_alipay_code(&c.user_id)}))
}

async fn ctl_sms(State(mock): State<IdentityMock>) -> axum::Json<Vec<SentSms>> {
    axum::Json(mock.sms_sent())
}

async fn ctl_faults(
    State(mock): State<IdentityMock>,
    axum::Json(c): axum::Json<FaultsCommand>,
) -> axum::Json<IdentityFaults> {
    mock.set_faults(c.faults);
    if let Some(n) = c.wechat_calls_per_minute {
        mock.set_wechat_calls_per_minute(n);
    }
    axum::Json(c.faults)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::alipay::AlipayConfig;
    use crate::alipay_oauth::AlipayOauthClient;
    use crate::identity_error::IdentityError;
    use crate::keys::{FixedClock, PublicKey};
    use crate::miniprogram::{MiniProgramClient, MiniProgramConfig, Secret};
    use crate::sms::{SmsClient, SmsConfig};

    const ALI_APP_KEY: &str = include_str!("../tests/fixtures/alipay_app.key.pem");
    const ALI_APP_PUB: &str = include_str!("../tests/fixtures/alipay_app.pub.pem");
    const ALI_PLATFORM_KEY: &str = include_str!("../tests/fixtures/alipay_platform.key.pem");
    const ALI_PLATFORM_PUB: &str = include_str!("../tests/fixtures/alipay_platform.pub.pem");
    const INTRUDER_KEY: &str = include_str!("../tests/fixtures/intruder.key.pem");
    const T0: i64 = 1_700_000_000;

    struct Env {
        mock: IdentityMock,
        base: String,
        clock: Arc<FixedClock>,
    }

    async fn env(calls_per_minute: u32) -> Env {
        let clock = FixedClock::new(T0);
        let mut cfg = IdentityMockConfig::new(PrivateKey::from_pem(ALI_PLATFORM_KEY).unwrap());
        cfg.wechat_apps.push(MiniApp {
            appid: "wxapp1".into(),
            secret: "wxsecret1".into(),
        });
        cfg.alipay_apps.push(AlipayApp {
            app_id: "2021000000000001".into(),
            public_key: PublicKey::from_pem(ALI_APP_PUB).unwrap(),
        });
        cfg.sms_accounts.push(SmsAccount {
            access_key_id: "ak1".into(),
            access_key_secret: "sk1".into(),
        });
        cfg.wechat_calls_per_minute = calls_per_minute;
        cfg.clock = clock.clone();
        let mock = IdentityMock::new(cfg);
        let addr = mock.spawn().await.unwrap();
        Env {
            mock,
            base: format!("http://{addr}"),
            clock,
        }
    }

    impl Env {
        fn wechat(&self, secret: &str) -> MiniProgramClient {
            MiniProgramClient::new(MiniProgramConfig {
                base_url: self.base.clone(),
                appid: "wxapp1".into(),
                secret: Secret::new(secret),
            })
            .unwrap()
            .with_clock(self.clock.clone())
        }

        fn alipay(&self, app_key: &str) -> AlipayOauthClient {
            AlipayOauthClient::new(AlipayConfig {
                gateway_url: format!("{}/gateway.do", self.base),
                app_id: "2021000000000001".into(),
                app_private_key: PrivateKey::from_pem(app_key).unwrap(),
                alipay_public_key: PublicKey::from_pem(ALI_PLATFORM_PUB).unwrap(),
            })
            .unwrap()
            .with_clock(self.clock.clone())
        }

        fn sms(&self, secret: &str) -> SmsClient {
            SmsClient::new(SmsConfig {
                base_url: self.base.clone(),
                access_key_id: "ak1".into(),
                access_key_secret: Secret::new(secret),
                sign_name: "UpHub".into(),
            })
            .unwrap()
            .with_clock(self.clock.clone())
        }
    }

    fn code_of<T: std::fmt::Debug>(r: Result<T, IdentityError>) -> &'static str {
        r.unwrap_err().code()
    }

    #[tokio::test]
    async fn wechat_login_codes_are_single_use_and_expire_after_five_minutes() {
        let e = env(100).await;
        let wx = e.wechat("wxsecret1");
        let code = e.mock.issue_wechat_code("o-1", Some("u-1"));
        let s = wx.code_to_session(&code).await.unwrap();
        assert_eq!(
            (s.openid.as_str(), s.unionid.as_deref()),
            ("o-1", Some("u-1"))
        );
        assert_eq!(
            code_of(wx.code_to_session(&code).await),
            "IDENTITY_CODE_USED"
        );
        assert_eq!(
            code_of(wx.code_to_session("never-issued").await),
            "IDENTITY_CODE_INVALID"
        );
        let late = e.mock.issue_wechat_code("o-1", None);
        e.clock.set(T0 + 300);
        assert_eq!(
            code_of(wx.code_to_session(&late).await),
            "IDENTITY_CODE_INVALID"
        );
        let s = wx
            .code_to_session(&e.mock.issue_wechat_code("o-2", None))
            .await
            .unwrap();
        assert_eq!((s.openid.as_str(), s.unionid), ("o-2", None));
    }

    #[tokio::test]
    async fn wechat_frequency_limit_per_openid_answers_45011_and_clears_after_a_minute() {
        let e = env(2).await;
        let wx = e.wechat("wxsecret1");
        for _ in 0..2 {
            wx.code_to_session(&e.mock.issue_wechat_code("busy", None))
                .await
                .unwrap();
        }
        let third = e.mock.issue_wechat_code("busy", None);
        let err = wx.code_to_session(&third).await.unwrap_err();
        assert_eq!(err.code(), "IDENTITY_RATE_LIMITED");
        assert!(err.to_string().contains("45011"), "{err}");
        // Another user is not affected.
        wx.code_to_session(&e.mock.issue_wechat_code("calm", None))
            .await
            .unwrap();
        e.clock.set(T0 + 60);
        // The refused code was not consumed.
        wx.code_to_session(&third).await.unwrap();
    }

    #[tokio::test]
    async fn wechat_system_busy_is_injected_and_leaves_the_code_usable() {
        let e = env(100).await;
        let wx = e.wechat("wxsecret1");
        let code = e.mock.issue_wechat_code("o-1", None);
        e.mock.set_faults(IdentityFaults {
            wechat_busy_next: 1,
            ..IdentityFaults::default()
        });
        let err = wx.code_to_session(&code).await.unwrap_err();
        assert_eq!(err.code(), "IDENTITY_UNAVAILABLE");
        assert!(err.is_retryable());
        wx.code_to_session(&code).await.unwrap();
    }

    #[tokio::test]
    async fn wechat_wrong_secret_is_an_auth_error_that_does_not_leak_the_secret() {
        let e = env(100).await;
        let err = e
            .wechat("wrong-secret")
            .code_to_session(&e.mock.issue_wechat_code("o", None))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "IDENTITY_AUTH");
        assert!(!err.to_string().contains("wrong-secret"));
        let down = MiniProgramClient::new(MiniProgramConfig {
            base_url: "http://127.0.0.1:9".into(),
            appid: "wxapp1".into(),
            secret: Secret::new("wrong-secret"),
        })
        .unwrap();
        let err = down.code_to_session("c").await.unwrap_err();
        assert_eq!(err.code(), "IDENTITY_TRANSPORT");
        assert!(!err.to_string().contains("wrong-secret"), "{err}");
    }

    #[tokio::test]
    async fn phone_numbers_use_one_cached_access_token_until_it_expires_or_is_refused() {
        let e = env(100).await;
        let wx = e.wechat("wxsecret1");
        let p = wx
            .phone_number(&e.mock.issue_phone_code("13800138000"))
            .await
            .unwrap();
        assert_eq!(p.pure_phone_number, "13800138000");
        assert_eq!(p.country_code, "86");
        let p = wx
            .phone_number(&e.mock.issue_phone_code_in("4155550100", "1"))
            .await
            .unwrap();
        assert_eq!(p.phone_number, "+14155550100");
        assert_eq!(e.mock.access_tokens_issued(), 1);
        let used = e.mock.issue_phone_code("13900139000");
        wx.phone_number(&used).await.unwrap();
        assert_eq!(code_of(wx.phone_number(&used).await), "IDENTITY_CODE_USED");
        // WeChat refuses the token (42001): dropped and fetched again, the call succeeds.
        e.mock.expire_access_tokens();
        wx.phone_number(&e.mock.issue_phone_code("13700137000"))
            .await
            .unwrap();
        assert_eq!(e.mock.access_tokens_issued(), 2);
        // Near expiry the client renews before calling.
        e.clock.set(T0 + 7200 - 299);
        wx.access_token().await.unwrap();
        assert_eq!(e.mock.access_tokens_issued(), 3);
    }

    #[tokio::test]
    async fn alipay_auth_codes_give_the_user_id_once_with_signed_answers() {
        let e = env(100).await;
        let ali = e.alipay(ALI_APP_KEY);
        let code = e.mock.issue_alipay_code("2088000000000001");
        let u = ali.exchange_code(&code).await.unwrap();
        assert_eq!(u.id(), "2088000000000001");
        assert!(u.open_id.is_some());
        assert_eq!(
            code_of(ali.exchange_code(&code).await),
            "IDENTITY_CODE_INVALID"
        );
        let late = e.mock.issue_alipay_code("2088000000000002");
        e.clock.set(T0 + 301);
        assert_eq!(
            code_of(ali.exchange_code(&late).await),
            "IDENTITY_CODE_INVALID"
        );
        // Signed with a key Alipay does not know for the app.
        let intruder = e.alipay(INTRUDER_KEY);
        assert_eq!(
            code_of(
                intruder
                    .exchange_code(&e.mock.issue_alipay_code("2088"))
                    .await
            ),
            "IDENTITY_AUTH"
        );
        e.mock.set_faults(IdentityFaults {
            alipay_unavailable_next: 1,
            ..IdentityFaults::default()
        });
        let code = e.mock.issue_alipay_code("2088000000000003");
        assert_eq!(
            code_of(ali.exchange_code(&code).await),
            "IDENTITY_UNAVAILABLE"
        );
        assert_eq!(
            ali.exchange_code(&code).await.unwrap().id(),
            "2088000000000003"
        );
    }

    #[tokio::test]
    async fn alipay_answer_signed_by_someone_else_is_refused() {
        let e = env(100).await;
        let forged = AlipayOauthClient::new(AlipayConfig {
            gateway_url: format!("{}/gateway.do", e.base),
            app_id: "2021000000000001".into(),
            app_private_key: PrivateKey::from_pem(ALI_APP_KEY).unwrap(),
            // Trusts the wrong platform key: the mock's answers must not verify.
            alipay_public_key: PublicKey::from_pem(ALI_APP_PUB).unwrap(),
        })
        .unwrap()
        .with_clock(e.clock.clone());
        assert_eq!(
            code_of(
                forged
                    .exchange_code(&e.mock.issue_alipay_code("2088"))
                    .await
            ),
            "IDENTITY_SIGNATURE_INVALID"
        );
    }

    #[tokio::test]
    async fn sms_mock_records_signed_messages_and_refuses_bad_ones() {
        let e = env(100).await;
        let sms = e.sms("sk1");
        sms.send_login_code("13800138000", "123456", 5, "out-1")
            .await
            .unwrap();
        assert_eq!(
            e.mock.last_sms_code("13800138000").as_deref(),
            Some("123456")
        );
        let sent = e.mock.sms_sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].sign_name, "UpHub");
        assert_eq!(sent[0].out_id, "out-1");
        assert_eq!(
            code_of(
                e.sms("wrong")
                    .send_login_code("13800138000", "1", 5, "x")
                    .await
            ),
            "IDENTITY_AUTH"
        );
        assert_eq!(
            code_of(sms.send_login_code("12345", "1", 5, "x").await),
            "IDENTITY_REJECTED"
        );
        e.mock.set_faults(IdentityFaults {
            sms_unavailable_next: 1,
            ..IdentityFaults::default()
        });
        assert_eq!(
            code_of(sms.send_login_code("13800138000", "1", 5, "x").await),
            "IDENTITY_UNAVAILABLE"
        );
        e.clock.set(T0 + 1000);
        let skewed = sms.clone().with_clock(FixedClock::new(T0));
        assert_eq!(
            code_of(skewed.send_login_code("13800138000", "1", 5, "x").await),
            "IDENTITY_AUTH"
        );
        assert_eq!(e.mock.sms_sent().len(), 1);
    }

    #[tokio::test]
    async fn sms_mock_refuses_a_replayed_request() {
        let e = env(100).await;
        let body = br#"{"phone":"13800138000","sign_name":"S","template":"LOGIN_CODE","params":{"code":"1"},"out_id":"o"}"#;
        let nonce = "ABCDEFGHIJKLMNOP";
        let sig = crate::sms::sign("sk1", crate::sms::SEND_PATH, T0, nonce, body);
        let send = || {
            reqwest::Client::new()
                .post(format!("{}{}", e.base, crate::sms::SEND_PATH))
                .header(HEADER_KEY, "ak1")
                .header(HEADER_TIMESTAMP, T0.to_string())
                .header(HEADER_NONCE, nonce)
                .header(HEADER_SIGNATURE, sig.clone())
                .body(body.to_vec())
                .send()
        };
        assert_eq!(send().await.unwrap().status(), 200);
        let again = send().await.unwrap();
        assert_eq!(again.status(), 401);
        assert!(again.text().await.unwrap().contains("NONCE_REUSED"));
    }

    #[tokio::test]
    async fn control_endpoints_mint_codes_and_list_sms() {
        let e = env(100).await;
        let http = reqwest::Client::new();
        let r: Value = http
            .post(format!("{}/_mock/identity/wechat_code", e.base))
            .json(&json!({"openid": "o-http"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let code = r["code"].as_str().unwrap();
        let s = e.wechat("wxsecret1").code_to_session(code).await.unwrap();
        assert_eq!(s.openid, "o-http");
        let r: Value = http
            .post(format!("{}/_mock/identity/faults", e.base))
            .json(&json!({"wechat_busy_next": 2, "wechat_calls_per_minute": 7}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["wechat_busy_next"], 2);
        assert_eq!(e.mock.faults().wechat_busy_next, 2);
        let list: Vec<SentSms> = http
            .get(format!("{}/_mock/identity/sms", e.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(list.is_empty());
    }
}
