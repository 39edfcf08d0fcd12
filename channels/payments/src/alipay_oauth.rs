//! Alipay mini-program login: `alipay.system.oauth.token` exchanges the `my.getAuthCode` code for
//! the buyer's `user_id` (or `open_id` for apps in OpenID mode).
//!
//! Signing, answer cutting and verification are those of [`crate::alipay`] (RSA2 over the sorted
//! parameters; the signature covers the raw `<method>_response` text). Unlike the trade APIs this
//! method takes `grant_type` and `code` as public parameters, not in `biz_content`, and its
//! success answer carries no `code`: a signed `_response` with a `user_id`/`open_id` is success.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;

use crate::alipay::{AlipayConfig, format_time, response_parts, sign_params};
use crate::identity_error::{IdentityError, IdentityPlatform};
use crate::keys::{Clock, system_clock};

pub const METHOD: &str = "alipay.system.oauth.token";

const PLATFORM: IdentityPlatform = IdentityPlatform::AlipayMiniProgram;

/// The buyer behind an auth code. At least one id is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlipayUser {
    /// `2088…`, for apps not in OpenID mode.
    pub user_id: Option<String>,
    /// Per-app id, for apps in OpenID mode.
    pub open_id: Option<String>,
}

impl AlipayUser {
    /// The stable id to key the buyer on: `user_id` when Alipay gives one, else `open_id`. One
    /// app is in one mode, so a tenant always gets the same kind.
    pub fn id(&self) -> &str {
        self.user_id
            .as_deref()
            .or(self.open_id.as_deref())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct AlipayOauthClient {
    cfg: AlipayConfig,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, Deserialize, Default)]
struct Answer {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    sub_code: Option<String>,
    #[serde(default)]
    sub_msg: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    open_id: Option<String>,
}

impl AlipayOauthClient {
    pub fn new(cfg: AlipayConfig) -> Result<Self, IdentityError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| IdentityError::transport(PLATFORM, e))?;
        Ok(Self {
            cfg,
            http,
            clock: system_clock(),
        })
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn config(&self) -> &AlipayConfig {
        &self.cfg
    }

    /// The signed form of one `alipay.system.oauth.token` call.
    pub fn signed_params(&self, auth_code: &str) -> Result<Vec<(String, String)>, IdentityError> {
        let mut params: Vec<(String, String)> = vec![
            ("app_id".into(), self.cfg.app_id.clone()),
            ("method".into(), METHOD.into()),
            ("format".into(), "JSON".into()),
            ("charset".into(), "utf-8".into()),
            ("sign_type".into(), "RSA2".into()),
            ("timestamp".into(), format_time(self.clock.now_unix())),
            ("version".into(), "1.0".into()),
            ("grant_type".into(), "authorization_code".into()),
            ("code".into(), auth_code.to_owned()),
        ];
        let sign = sign_params(
            &self.cfg.app_private_key,
            params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )?;
        params.push(("sign".into(), sign));
        Ok(params)
    }

    /// Exchanges an auth code for the buyer's id. The code is single-use.
    pub async fn exchange_code(&self, auth_code: &str) -> Result<AlipayUser, IdentityError> {
        let params = self.signed_params(auth_code)?;
        let form = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        let resp = self
            .http
            .post(&self.cfg.gateway_url)
            .header(
                CONTENT_TYPE,
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .body(form)
            .send()
            .await
            .map_err(|e| IdentityError::transport(PLATFORM, e))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| IdentityError::transport(PLATFORM, e))?;
        if status.is_server_error() {
            return Err(IdentityError::Unavailable {
                platform: PLATFORM,
                code: format!("HTTP_{}", status.as_u16()),
                message: String::new(),
            });
        }
        let parts = response_parts(&body, METHOD)?;
        let signed = match &parts.sign {
            Some(sign) => {
                self.cfg
                    .alipay_public_key
                    .verify_sha256_base64(parts.content.as_bytes(), sign)?;
                true
            }
            None => false,
        };
        let a: Answer = serde_json::from_str(parts.content)
            .map_err(|e| IdentityError::malformed("oauth.token answer", e))?;
        let is_success = !parts.is_error_response
            && a.code.as_deref().is_none_or(|c| c == "10000")
            && (a.user_id.is_some() || a.open_id.is_some());
        if is_success {
            // A success we cannot authenticate is not a success.
            if !signed {
                return Err(IdentityError::SignatureInvalid);
            }
            let user = AlipayUser {
                user_id: a.user_id.filter(|s| !s.is_empty()),
                open_id: a.open_id.filter(|s| !s.is_empty()),
            };
            if user.id().is_empty() {
                return Err(IdentityError::malformed("oauth.token answer", "empty ids"));
            }
            return Ok(user);
        }
        Err(map_error(a, signed))
    }
}

/// Gateway codes → errors. Unsigned answers are believed only where Alipay cannot sign
/// (unknown app, bad signature) or where believing costs nothing but a retry.
fn map_error(a: Answer, signed: bool) -> IdentityError {
    let platform = PLATFORM;
    let code = a.code.clone().unwrap_or_default();
    let sub = a.sub_code.clone().unwrap_or_default();
    let message = match &a.sub_msg {
        Some(s) if !s.is_empty() => format!("{}: {s}", a.msg),
        _ => a.msg.clone(),
    };
    let code_and_sub = if sub.is_empty() {
        code.clone()
    } else {
        format!("{code}/{sub}")
    };
    let auth_sub = matches!(
        sub.as_str(),
        "isv.invalid-signature" | "isv.invalid-app-id" | "isv.invalid-sign-type"
    );
    match code.as_str() {
        "20000" => IdentityError::Unavailable {
            platform,
            code: code_and_sub,
            message,
        },
        "40005" => IdentityError::RateLimited {
            platform,
            code: code_and_sub,
            message,
        },
        "20001" | "40006" => IdentityError::Auth {
            platform,
            code: code_and_sub,
            message,
        },
        _ if auth_sub => IdentityError::Auth {
            platform,
            code: code_and_sub,
            message,
        },
        _ if !signed => IdentityError::SignatureInvalid,
        _ if sub == "isv.code-invalid" || sub == "isv.code-expired" => IdentityError::CodeInvalid {
            platform,
            code: code_and_sub,
            message,
        },
        _ if code.is_empty() => IdentityError::malformed("oauth.token answer", "no user id"),
        _ => IdentityError::Rejected {
            platform,
            code: code_and_sub,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: &str, sub: Option<&str>) -> Answer {
        Answer {
            code: Some(code.into()),
            msg: "m".into(),
            sub_code: sub.map(Into::into),
            ..Answer::default()
        }
    }

    #[test]
    fn gateway_codes_map_to_typed_errors() {
        let got: Vec<&str> = [
            (answer("40002", Some("isv.code-invalid")), true),
            (answer("40002", Some("isv.code-invalid")), false),
            (answer("40005", None), false),
            (answer("20000", None), true),
            (answer("40002", Some("isv.invalid-app-id")), false),
            (answer("40004", Some("other")), true),
        ]
        .into_iter()
        .map(|(a, s)| map_error(a, s).code())
        .collect();
        assert_eq!(
            got,
            [
                "IDENTITY_CODE_INVALID",
                "IDENTITY_SIGNATURE_INVALID",
                "IDENTITY_RATE_LIMITED",
                "IDENTITY_UNAVAILABLE",
                "IDENTITY_AUTH",
                "IDENTITY_REJECTED",
            ]
        );
    }

    #[test]
    fn user_id_is_preferred_over_open_id() {
        let u = AlipayUser {
            user_id: Some("2088".into()),
            open_id: Some("o".into()),
        };
        assert_eq!(u.id(), "2088");
        let o = AlipayUser {
            user_id: None,
            open_id: Some("o".into()),
        };
        assert_eq!(o.id(), "o");
    }
}
