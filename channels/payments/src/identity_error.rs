//! One error type for the buyer-identity platforms (WeChat mini-program login, Alipay
//! mini-program login, the SMS provider), with stable codes (`IdentityError::code`).
//!
//! Kept apart from [`crate::PayError`]: a login code that is invalid or already used is a normal
//! outcome the caller must tell apart, not a payment failure.

use std::fmt;

/// Which identity platform an error belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityPlatform {
    WechatMiniProgram,
    AlipayMiniProgram,
    Sms,
}

impl fmt::Display for IdentityPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::WechatMiniProgram => "wechat_mini_program",
            Self::AlipayMiniProgram => "alipay_mini_program",
            Self::Sms => "sms",
        })
    }
}

/// Everything a login, phone or SMS call can fail with. Malformed answers from the network are
/// always one of these, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// WeChat 40029 (invalid or expired code), Alipay `isv.code-invalid`: get a new code.
    #[error("{platform} refused the login code: {code} {message}")]
    CodeInvalid {
        platform: IdentityPlatform,
        code: String,
        message: String,
    },
    /// WeChat 40163: the code was already exchanged once.
    #[error("{platform} says the login code was already used: {code} {message}")]
    CodeUsed {
        platform: IdentityPlatform,
        code: String,
        message: String,
    },
    /// WeChat 45011, Alipay 40005, SMS provider 429. Retry later.
    #[error("{platform} rate limited the call: {code} {message}")]
    RateLimited {
        platform: IdentityPlatform,
        code: String,
        message: String,
    },
    /// WeChat -1 (system busy), Alipay 20000, HTTP 5xx. Retry with the same parameters.
    #[error("{platform} is unavailable: {code} {message}")]
    Unavailable {
        platform: IdentityPlatform,
        code: String,
        message: String,
    },
    /// Our credentials were refused (WeChat 40013/40125/40001 after a fresh token, Alipay
    /// `isv.invalid-app-id`/`isv.invalid-signature`, SMS 401): a configuration problem.
    #[error("{platform} refused our credentials: {code} {message}")]
    Auth {
        platform: IdentityPlatform,
        code: String,
        message: String,
    },
    /// WeChat 40226: the user is blocked by the platform's risk control.
    #[error("{platform} blocked the user: {code} {message}")]
    Blocked {
        platform: IdentityPlatform,
        code: String,
        message: String,
    },
    /// Any other refusal (bad parameter, unknown phone format, ...).
    #[error("{platform} rejected the request: {code} {message}")]
    Rejected {
        platform: IdentityPlatform,
        code: String,
        message: String,
    },
    /// No usable HTTP answer (connect, timeout, body read).
    #[error("transport to {platform} failed: {message}")]
    Transport {
        platform: IdentityPlatform,
        message: String,
    },
    /// An answer's signature does not verify (Alipay).
    #[error("signature does not verify")]
    SignatureInvalid,
    /// A field is missing or has the wrong shape, or an answer is for another app.
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// A key that does not load, or a signing failure.
    #[error("invalid key: {0}")]
    InvalidKey(String),
}

/// Every code `IdentityError::code` returns. Stable: callers match on them.
pub const IDENTITY_ERROR_CODES: &[&str] = &[
    "IDENTITY_CODE_INVALID",
    "IDENTITY_CODE_USED",
    "IDENTITY_RATE_LIMITED",
    "IDENTITY_UNAVAILABLE",
    "IDENTITY_AUTH",
    "IDENTITY_BLOCKED",
    "IDENTITY_REJECTED",
    "IDENTITY_TRANSPORT",
    "IDENTITY_SIGNATURE_INVALID",
    "IDENTITY_MALFORMED",
    "IDENTITY_INVALID_KEY",
];

impl IdentityError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::CodeInvalid { .. } => "IDENTITY_CODE_INVALID",
            Self::CodeUsed { .. } => "IDENTITY_CODE_USED",
            Self::RateLimited { .. } => "IDENTITY_RATE_LIMITED",
            Self::Unavailable { .. } => "IDENTITY_UNAVAILABLE",
            Self::Auth { .. } => "IDENTITY_AUTH",
            Self::Blocked { .. } => "IDENTITY_BLOCKED",
            Self::Rejected { .. } => "IDENTITY_REJECTED",
            Self::Transport { .. } => "IDENTITY_TRANSPORT",
            Self::SignatureInvalid => "IDENTITY_SIGNATURE_INVALID",
            Self::Malformed { .. } => "IDENTITY_MALFORMED",
            Self::InvalidKey(_) => "IDENTITY_INVALID_KEY",
        }
    }

    /// Worth trying again later with the same parameters.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Unavailable { .. } | Self::Transport { .. }
        )
    }

    pub(crate) fn malformed(what: &'static str, detail: impl fmt::Display) -> Self {
        Self::Malformed {
            what,
            detail: detail.to_string(),
        }
    }

    pub(crate) fn transport(platform: IdentityPlatform, e: reqwest::Error) -> Self {
        Self::Transport {
            platform,
            // Without the URL: WeChat's carries the app secret in its query string.
            message: e.without_url().to_string(),
        }
    }
}

impl From<crate::PayError> for IdentityError {
    /// Only key loading and signature checks of the shared RSA code end up here.
    fn from(e: crate::PayError) -> Self {
        match e {
            crate::PayError::SignatureInvalid => Self::SignatureInvalid,
            crate::PayError::Malformed { what, detail } => Self::Malformed { what, detail },
            other => Self::InvalidKey(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_identity_error_code_is_in_the_table_once_and_used() {
        let p = IdentityPlatform::Sms;
        let s = String::new;
        let all = vec![
            IdentityError::CodeInvalid {
                platform: p,
                code: s(),
                message: s(),
            },
            IdentityError::CodeUsed {
                platform: p,
                code: s(),
                message: s(),
            },
            IdentityError::RateLimited {
                platform: p,
                code: s(),
                message: s(),
            },
            IdentityError::Unavailable {
                platform: p,
                code: s(),
                message: s(),
            },
            IdentityError::Auth {
                platform: p,
                code: s(),
                message: s(),
            },
            IdentityError::Blocked {
                platform: p,
                code: s(),
                message: s(),
            },
            IdentityError::Rejected {
                platform: p,
                code: s(),
                message: s(),
            },
            IdentityError::Transport {
                platform: p,
                message: s(),
            },
            IdentityError::SignatureInvalid,
            IdentityError::malformed("x", ""),
            IdentityError::InvalidKey(s()),
        ];
        let codes: Vec<&str> = all.iter().map(IdentityError::code).collect();
        assert_eq!(codes, IDENTITY_ERROR_CODES);
        let retryable: Vec<&str> = all
            .iter()
            .filter(|e| e.is_retryable())
            .map(IdentityError::code)
            .collect();
        assert_eq!(
            retryable,
            [
                "IDENTITY_RATE_LIMITED",
                "IDENTITY_UNAVAILABLE",
                "IDENTITY_TRANSPORT"
            ]
        );
    }
}
