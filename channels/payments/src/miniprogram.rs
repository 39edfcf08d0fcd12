//! WeChat mini-program server APIs for buyer identity: `code2Session` (login), `getPhoneNumber`
//! and the access token the latter needs, cached in the client until shortly before it expires.
//!
//! Facts: shared/docs/channel-protocols.md §6. WeChat answers HTTP 200 with `errcode`/`errmsg`
//! in the body; a missing or zero `errcode` is success. Codes from `wx.login` and from the
//! phone-number button are single-use and live about five minutes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::identity_error::{IdentityError, IdentityPlatform};
use crate::keys::{Clock, system_clock};

pub const DEFAULT_BASE_URL: &str = "https://api.weixin.qq.com";
/// A cached access token is replaced this long before WeChat's `expires_in` runs out, so a call
/// never starts with a token that expires on the way.
pub const TOKEN_REFRESH_MARGIN_SECS: i64 = 300;

const PLATFORM: IdentityPlatform = IdentityPlatform::WechatMiniProgram;

/// A secret that never prints (app secret, session key).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One mini-program's credentials.
#[derive(Debug, Clone)]
pub struct MiniProgramConfig {
    /// [`DEFAULT_BASE_URL`] in production; `http://127.0.0.1:PORT` for the mock.
    pub base_url: String,
    pub appid: String,
    pub secret: Secret,
}

/// What `code2Session` returns for a valid login code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WechatSession {
    pub openid: String,
    /// Only when the mini-program is bound to an open-platform account.
    pub unionid: Option<String>,
    /// Decrypts `wx.getUserInfo` data; never stored or logged by us.
    pub session_key: Secret,
}

/// `phone_info` of `getPhoneNumber`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneInfo {
    /// With the country code for numbers outside mainland China.
    pub phone_number: String,
    pub pure_phone_number: String,
    pub country_code: String,
}

#[derive(Debug, Clone)]
struct CachedToken {
    token: String,
    /// Unix seconds after which the token is not used any more (already minus the margin).
    use_until: i64,
}

/// A client per mini-program. Cheap to clone; clones share the access-token cache, so keep one
/// per appid for the life of the process.
#[derive(Debug, Clone)]
pub struct MiniProgramClient {
    cfg: MiniProgramConfig,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    /// Also serialises refreshes: concurrent callers wait for one `/cgi-bin/token` call.
    token: Arc<tokio::sync::Mutex<Option<CachedToken>>>,
}

#[derive(Debug, Deserialize, Default)]
struct Envelope {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

impl MiniProgramClient {
    pub fn new(cfg: MiniProgramConfig) -> Result<Self, IdentityError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| IdentityError::transport(PLATFORM, e))?;
        Ok(Self {
            cfg,
            http,
            clock: system_clock(),
            token: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_http(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    pub fn config(&self) -> &MiniProgramConfig {
        &self.cfg
    }

    /// `GET /sns/jscode2session`: a `wx.login` code → openid (+ unionid).
    pub async fn code_to_session(&self, js_code: &str) -> Result<WechatSession, IdentityError> {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("appid", &self.cfg.appid)
            .append_pair("secret", self.cfg.secret.expose())
            .append_pair("js_code", js_code)
            .append_pair("grant_type", "authorization_code")
            .finish();
        let body = self
            .get(
                &format!("/sns/jscode2session?{query}"),
                "code2Session answer",
            )
            .await?;
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            openid: String,
            #[serde(default)]
            unionid: Option<String>,
            #[serde(default)]
            session_key: String,
        }
        let a: Answer = parse_json("code2Session answer", &body)?;
        if a.openid.is_empty() {
            return Err(IdentityError::malformed("code2Session answer", "no openid"));
        }
        Ok(WechatSession {
            openid: a.openid,
            unionid: a.unionid.filter(|u| !u.is_empty()),
            session_key: Secret(a.session_key),
        })
    }

    /// `POST /wxa/business/getuserphonenumber`: a phone-number button code → the number. A
    /// rejected access token (40001, 42001) is dropped from the cache and the call made once more
    /// with a fresh one.
    pub async fn phone_number(&self, code: &str) -> Result<PhoneInfo, IdentityError> {
        let body = serde_json::json!({ "code": code }).to_string();
        let mut retried = false;
        loop {
            let token = self.access_token().await?;
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("access_token", &token)
                .finish();
            let url = format!("{}/wxa/business/getuserphonenumber?{query}", self.base());
            let resp = self
                .http
                .post(&url)
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
                .await
                .map_err(|e| IdentityError::transport(PLATFORM, e))?;
            let text = read_answer(resp).await?;
            let env: Envelope = parse_json("getPhoneNumber answer", &text)?;
            if matches!(env.errcode, 40001 | 40014 | 42001) && !retried {
                retried = true;
                self.forget_token(&token).await;
                continue;
            }
            if env.errcode != 0 {
                return Err(map_errcode(env.errcode, env.errmsg));
            }
            #[derive(Deserialize)]
            struct Watermark {
                #[serde(default)]
                appid: String,
            }
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Info {
                #[serde(default)]
                phone_number: String,
                #[serde(default)]
                pure_phone_number: String,
                #[serde(default)]
                country_code: String,
                watermark: Option<Watermark>,
            }
            #[derive(Deserialize)]
            struct Answer {
                phone_info: Option<Info>,
            }
            let a: Answer = parse_json("getPhoneNumber answer", &text)?;
            let info = a.phone_info.ok_or_else(|| {
                IdentityError::malformed("getPhoneNumber answer", "no phone_info")
            })?;
            if let Some(w) = &info.watermark
                && !w.appid.is_empty()
                && w.appid != self.cfg.appid
            {
                return Err(IdentityError::malformed(
                    "getPhoneNumber watermark",
                    format!("for appid {}, not {}", w.appid, self.cfg.appid),
                ));
            }
            if info.pure_phone_number.is_empty() {
                return Err(IdentityError::malformed(
                    "getPhoneNumber answer",
                    "no purePhoneNumber",
                ));
            }
            return Ok(PhoneInfo {
                phone_number: info.phone_number,
                pure_phone_number: info.pure_phone_number,
                country_code: info.country_code,
            });
        }
    }

    /// The cached access token, fetched from `/cgi-bin/token` when missing or near expiry.
    pub async fn access_token(&self) -> Result<String, IdentityError> {
        let mut slot = self.token.lock().await;
        let now = self.clock.now_unix();
        if let Some(t) = slot.as_ref()
            && now < t.use_until
        {
            return Ok(t.token.clone());
        }
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credential")
            .append_pair("appid", &self.cfg.appid)
            .append_pair("secret", self.cfg.secret.expose())
            .finish();
        let body = self
            .get(&format!("/cgi-bin/token?{query}"), "access token answer")
            .await?;
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            access_token: String,
            #[serde(default)]
            expires_in: i64,
        }
        let a: Answer = parse_json("access token answer", &body)?;
        if a.access_token.is_empty() || a.expires_in <= 0 {
            return Err(IdentityError::malformed(
                "access token answer",
                "no access_token or expires_in",
            ));
        }
        // A token shorter-lived than the margin is still used, for half its life.
        let margin = TOKEN_REFRESH_MARGIN_SECS.min(a.expires_in / 2);
        *slot = Some(CachedToken {
            token: a.access_token.clone(),
            use_until: now + a.expires_in - margin,
        });
        Ok(a.access_token)
    }

    /// Drops the cached token if it is still `token` (a concurrent caller may have replaced it).
    async fn forget_token(&self, token: &str) {
        let mut slot = self.token.lock().await;
        if slot.as_ref().is_some_and(|t| t.token == token) {
            *slot = None;
        }
    }

    fn base(&self) -> &str {
        self.cfg.base_url.trim_end_matches('/')
    }

    /// GET → the body of an answer whose `errcode` is absent or 0.
    async fn get(&self, path_and_query: &str, what: &'static str) -> Result<String, IdentityError> {
        let resp = self
            .http
            .get(format!("{}{path_and_query}", self.base()))
            .send()
            .await
            .map_err(|e| IdentityError::transport(PLATFORM, e))?;
        let text = read_answer(resp).await?;
        let env: Envelope = parse_json(what, &text)?;
        if env.errcode != 0 {
            return Err(map_errcode(env.errcode, env.errmsg));
        }
        Ok(text)
    }
}

/// The body of an HTTP 200; other statuses are a gateway in between, believed as "try later".
async fn read_answer(resp: reqwest::Response) -> Result<String, IdentityError> {
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| IdentityError::transport(PLATFORM, e))?;
    match status.as_u16() {
        200 => Ok(text),
        429 => Err(IdentityError::RateLimited {
            platform: PLATFORM,
            code: "HTTP_429".into(),
            message: String::new(),
        }),
        s if s >= 500 => Err(IdentityError::Unavailable {
            platform: PLATFORM,
            code: format!("HTTP_{s}"),
            message: String::new(),
        }),
        s => Err(IdentityError::malformed(
            "WeChat answer",
            format!("HTTP {s}"),
        )),
    }
}

/// WeChat `errcode` → error.
pub fn map_errcode(errcode: i64, errmsg: String) -> IdentityError {
    let platform = PLATFORM;
    let code = errcode.to_string();
    let message = errmsg;
    match errcode {
        -1 => IdentityError::Unavailable {
            platform,
            code,
            message,
        },
        40029 => IdentityError::CodeInvalid {
            platform,
            code,
            message,
        },
        40163 => IdentityError::CodeUsed {
            platform,
            code,
            message,
        },
        45011 => IdentityError::RateLimited {
            platform,
            code,
            message,
        },
        40226 => IdentityError::Blocked {
            platform,
            code,
            message,
        },
        // Invalid appid / secret / token / grant type, missing appid or secret.
        40001 | 40002 | 40013 | 40014 | 40125 | 41002 | 41004 | 42001 => IdentityError::Auth {
            platform,
            code,
            message,
        },
        _ => IdentityError::Rejected {
            platform,
            code,
            message,
        },
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    text: &str,
) -> Result<T, IdentityError> {
    serde_json::from_str(text).map_err(|e| IdentityError::malformed(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errcodes_map_to_typed_errors() {
        let got: Vec<&str> = [-1, 40029, 40163, 45011, 40226, 40125, 42001, 47001]
            .into_iter()
            .map(|c| map_errcode(c, String::new()).code())
            .collect();
        assert_eq!(
            got,
            [
                "IDENTITY_UNAVAILABLE",
                "IDENTITY_CODE_INVALID",
                "IDENTITY_CODE_USED",
                "IDENTITY_RATE_LIMITED",
                "IDENTITY_BLOCKED",
                "IDENTITY_AUTH",
                "IDENTITY_AUTH",
                "IDENTITY_REJECTED",
            ]
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let cfg = MiniProgramConfig {
            base_url: DEFAULT_BASE_URL.into(),
            appid: "wx1".into(),
            secret: Secret::new("s3cr3t"),
        };
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
    }
}
