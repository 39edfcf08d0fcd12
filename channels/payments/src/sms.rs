//! An SMS provider adapter for one-time login codes, speaking a small generic signed HTTP API
//! (ours: real providers differ in names, not in shape; an adapter for a specific one replaces
//! only [`SmsClient::send`]).
//!
//! # Protocol
//!
//! ```text
//! POST {base_url}/v1/sms/send
//! Content-Type: application/json
//! X-Sms-Key:       <access key id>
//! X-Sms-Timestamp: <unix seconds>
//! X-Sms-Nonce:     <16–64 characters of [A-Za-z0-9], never reused>
//! X-Sms-Signature: base64(HMAC-SHA256(access key secret, string_to_sign))
//!
//! string_to_sign = "POST\n" + <request path, e.g. /v1/sms/send> + "\n" + timestamp + "\n"
//!                + nonce + "\n" + lowercase hex SHA-256 of the exact body bytes
//!
//! {"phone":"13800138000","sign_name":"UpHub","template":"LOGIN_CODE",
//!  "params":{"code":"123456","ttl_minutes":"5"},"out_id":"<caller's id, for support>"}
//! ```
//!
//! - `200 {"message_id":"…","status":"ACCEPTED"}`: queued for delivery.
//! - Errors: `{"code":…,"message":…}` with HTTP 400 (`INVALID_PHONE`, `INVALID_TEMPLATE`,
//!   `INVALID_REQUEST`), 401 (`UNKNOWN_KEY`, `SIGNATURE_INVALID`, `TIMESTAMP_SKEW` — more than
//!   300 s away —, `NONCE_REUSED`), 429 (`RATE_LIMITED`), 5xx (`SYSTEM_ERROR`, retry).
//! - `phone`: mainland numbers as 11 digits, others as `+` country code and number.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity_error::{IdentityError, IdentityPlatform};
use crate::keys::{Clock, system_clock};
use crate::miniprogram::Secret;

pub const SEND_PATH: &str = "/v1/sms/send";
/// The template a login code goes out with; params `code` and `ttl_minutes`.
pub const LOGIN_CODE_TEMPLATE: &str = "LOGIN_CODE";
/// Signed timestamps further than this from the receiver's clock are refused.
pub const MAX_SKEW_SECS: i64 = 300;

pub const HEADER_KEY: &str = "X-Sms-Key";
pub const HEADER_TIMESTAMP: &str = "X-Sms-Timestamp";
pub const HEADER_NONCE: &str = "X-Sms-Nonce";
pub const HEADER_SIGNATURE: &str = "X-Sms-Signature";

const PLATFORM: IdentityPlatform = IdentityPlatform::Sms;

#[derive(Debug, Clone)]
pub struct SmsConfig {
    /// The provider's base URL (`http://127.0.0.1:PORT` for the mock); paths are appended.
    pub base_url: String,
    pub access_key_id: String,
    pub access_key_secret: Secret,
    /// The registered sender signature shown in the message (e.g. the shop's name).
    pub sign_name: String,
}

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsMessage {
    pub phone: String,
    pub sign_name: String,
    pub template: String,
    pub params: std::collections::BTreeMap<String, String>,
    pub out_id: String,
}

/// The provider's receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsReceipt {
    pub message_id: String,
}

/// `string_to_sign` of the protocol.
pub fn string_to_sign(path: &str, timestamp: i64, nonce: &str, body: &[u8]) -> String {
    let body_hash: String = Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("POST\n{path}\n{timestamp}\n{nonce}\n{body_hash}")
}

/// `X-Sms-Signature` for a request.
pub fn sign(secret: &str, path: &str, timestamp: i64, nonce: &str, body: &[u8]) -> String {
    B64.encode(
        mac(secret, path, timestamp, nonce, body)
            .finalize()
            .into_bytes(),
    )
}

/// Checks a signature in constant time.
pub fn verify(
    secret: &str,
    path: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
    signature_b64: &str,
) -> bool {
    let Ok(sig) = B64.decode(signature_b64.trim()) else {
        return false;
    };
    mac(secret, path, timestamp, nonce, body)
        .verify_slice(&sig)
        .is_ok()
}

fn mac(secret: &str, path: &str, timestamp: i64, nonce: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    m.update(string_to_sign(path, timestamp, nonce, body).as_bytes());
    m
}

#[derive(Debug, Clone)]
pub struct SmsClient {
    cfg: SmsConfig,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl SmsClient {
    pub fn new(cfg: SmsConfig) -> Result<Self, IdentityError> {
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

    pub fn config(&self) -> &SmsConfig {
        &self.cfg
    }

    /// Sends a login code with the [`LOGIN_CODE_TEMPLATE`].
    pub async fn send_login_code(
        &self,
        phone: &str,
        code: &str,
        ttl_minutes: u32,
        out_id: &str,
    ) -> Result<SmsReceipt, IdentityError> {
        let mut params = std::collections::BTreeMap::new();
        params.insert("code".to_owned(), code.to_owned());
        params.insert("ttl_minutes".to_owned(), ttl_minutes.to_string());
        self.send(&SmsMessage {
            phone: phone.to_owned(),
            sign_name: self.cfg.sign_name.clone(),
            template: LOGIN_CODE_TEMPLATE.to_owned(),
            params,
            out_id: out_id.to_owned(),
        })
        .await
    }

    pub async fn send(&self, msg: &SmsMessage) -> Result<SmsReceipt, IdentityError> {
        let body = serde_json::to_vec(msg).map_err(|e| IdentityError::malformed("SMS body", e))?;
        let base = self.cfg.base_url.trim_end_matches('/');
        let url = format!("{base}{SEND_PATH}");
        let path = reqwest::Url::parse(&url)
            .map_err(|e| IdentityError::malformed("SMS base URL", e))?
            .path()
            .to_owned();
        let timestamp = self.clock.now_unix();
        let nonce = crate::wechatpay::nonce();
        let signature = sign(
            self.cfg.access_key_secret.expose(),
            &path,
            timestamp,
            &nonce,
            &body,
        );
        let resp = self
            .http
            .post(&url)
            .header("Content-Type", "application/json")
            .header(HEADER_KEY, &self.cfg.access_key_id)
            .header(HEADER_TIMESTAMP, timestamp.to_string())
            .header(HEADER_NONCE, &nonce)
            .header(HEADER_SIGNATURE, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| IdentityError::transport(PLATFORM, e))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| IdentityError::transport(PLATFORM, e))?;
        if status == 200 {
            #[derive(Deserialize)]
            struct Accepted {
                #[serde(default)]
                message_id: String,
            }
            let a: Accepted = serde_json::from_str(&text)
                .map_err(|e| IdentityError::malformed("SMS answer", e))?;
            if a.message_id.is_empty() {
                return Err(IdentityError::malformed("SMS answer", "no message_id"));
            }
            return Ok(SmsReceipt {
                message_id: a.message_id,
            });
        }
        Err(map_error(status, &text))
    }
}

fn map_error(status: u16, text: &str) -> IdentityError {
    #[derive(Deserialize, Default)]
    struct Body {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let b: Body = serde_json::from_str(text).unwrap_or_default();
    let platform = PLATFORM;
    let code = if b.code.is_empty() {
        format!("HTTP_{status}")
    } else {
        b.code
    };
    let message = b.message;
    match status {
        401 | 403 => IdentityError::Auth {
            platform,
            code,
            message,
        },
        429 => IdentityError::RateLimited {
            platform,
            code,
            message,
        },
        500..=599 => IdentityError::Unavailable {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_covers_path_time_nonce_and_body() {
        let s = sign("k", SEND_PATH, 100, "n1", b"{}");
        assert!(verify("k", SEND_PATH, 100, "n1", b"{}", &s));
        assert!(!verify("k2", SEND_PATH, 100, "n1", b"{}", &s));
        assert!(!verify("k", "/other", 100, "n1", b"{}", &s));
        assert!(!verify("k", SEND_PATH, 101, "n1", b"{}", &s));
        assert!(!verify("k", SEND_PATH, 100, "n2", b"{}", &s));
        assert!(!verify("k", SEND_PATH, 100, "n1", b"{ }", &s));
        assert!(!verify("k", SEND_PATH, 100, "n1", b"{}", "%%%"));
        assert_eq!(
            string_to_sign("/p", 1, "n", b""),
            "POST\n/p\n1\nn\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn statuses_map_to_typed_errors() {
        let got: Vec<&str> = [
            (401, ""),
            (429, "{}"),
            (503, "x"),
            (400, r#"{"code":"INVALID_PHONE"}"#),
        ]
        .into_iter()
        .map(|(s, t)| map_error(s, t).code())
        .collect();
        assert_eq!(
            got,
            [
                "IDENTITY_AUTH",
                "IDENTITY_RATE_LIMITED",
                "IDENTITY_UNAVAILABLE",
                "IDENTITY_REJECTED"
            ]
        );
    }
}
