//! One error type for both payment platforms, with stable codes (`PayError::code`).

use std::fmt;

/// Which payment platform an error (or a mock record) belongs to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    WechatPay,
    Alipay,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::WechatPay => "wechat_pay",
            Self::Alipay => "alipay",
        })
    }
}

/// Everything a payment call, a response check or a callback check can fail with. Malformed
/// input from the network is always one of these, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum PayError {
    /// WeChat `RATELIMIT_EXCEED`/`FREQUENCY_LIMITED`/HTTP 429, Alipay 40005. Retry later.
    #[error("{platform} rate limited the call: {code} {message}")]
    RateLimited {
        platform: Platform,
        code: String,
        message: String,
    },
    /// WeChat `SYSTEM_ERROR`/5xx, Alipay 20000 or `ACQ.SYSTEM_ERROR`. Retry with the same parameters.
    #[error("{platform} is unavailable: {code} {message}")]
    Unavailable {
        platform: Platform,
        code: String,
        message: String,
    },
    /// The platform refused our credentials or request signature (WeChat `SIGN_ERROR`, Alipay
    /// 20001/40006 or `isv.invalid-signature`): a configuration problem, not worth retrying.
    #[error("{platform} refused our credentials: {code} {message}")]
    Auth {
        platform: Platform,
        code: String,
        message: String,
    },
    /// A business rejection (order not found, already paid, refund too large, bad parameter).
    #[error("{platform} rejected the request: {code}{} {message}", sub_code.as_deref().map(|s| format!("/{s}")).unwrap_or_default())]
    Rejected {
        platform: Platform,
        code: String,
        sub_code: Option<String>,
        message: String,
    },
    /// The request never got a usable HTTP answer (connect, timeout, body read).
    #[error("transport to {platform} failed: {message}")]
    Transport { platform: Platform, message: String },
    /// A response or callback signature does not verify.
    #[error("signature does not verify")]
    SignatureInvalid,
    /// A WeChat response or callback names a platform key serial we do not hold.
    #[error("no platform key with serial {0:?}")]
    UnknownSerial(String),
    /// A signed timestamp five minutes or more away from now (replay protection).
    #[error("timestamp {timestamp} is {skew_secs}s away from now; the limit is under 300s")]
    TimestampSkew { timestamp: i64, skew_secs: i64 },
    /// AEAD_AES_256_GCM decryption failed: wrong APIv3 key, or the resource was altered.
    #[error("callback resource does not decrypt")]
    DecryptFailed,
    /// A field or header is missing or has the wrong shape.
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// A yuan amount that is not a non-negative decimal with at most two places.
    #[error("invalid amount {0:?}")]
    InvalidAmount(String),
    /// A correctly signed notification addressed to another merchant or app.
    #[error("notification is for {got:?}, not {expected:?}")]
    MerchantMismatch { expected: String, got: String },
    /// A key that does not load, or a signing failure.
    #[error("invalid key: {0}")]
    InvalidKey(String),
}

/// Every code `PayError::code` returns. Stable: callers store and match on them.
pub const ERROR_CODES: &[&str] = &[
    "PAY_RATE_LIMITED",
    "PAY_UNAVAILABLE",
    "PAY_AUTH",
    "PAY_REJECTED",
    "PAY_TRANSPORT",
    "PAY_SIGNATURE_INVALID",
    "PAY_UNKNOWN_SERIAL",
    "PAY_TIMESTAMP_SKEW",
    "PAY_DECRYPT_FAILED",
    "PAY_MALFORMED",
    "PAY_INVALID_AMOUNT",
    "PAY_MERCHANT_MISMATCH",
    "PAY_INVALID_KEY",
];

impl PayError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "PAY_RATE_LIMITED",
            Self::Unavailable { .. } => "PAY_UNAVAILABLE",
            Self::Auth { .. } => "PAY_AUTH",
            Self::Rejected { .. } => "PAY_REJECTED",
            Self::Transport { .. } => "PAY_TRANSPORT",
            Self::SignatureInvalid => "PAY_SIGNATURE_INVALID",
            Self::UnknownSerial(_) => "PAY_UNKNOWN_SERIAL",
            Self::TimestampSkew { .. } => "PAY_TIMESTAMP_SKEW",
            Self::DecryptFailed => "PAY_DECRYPT_FAILED",
            Self::Malformed { .. } => "PAY_MALFORMED",
            Self::InvalidAmount(_) => "PAY_INVALID_AMOUNT",
            Self::MerchantMismatch { .. } => "PAY_MERCHANT_MISMATCH",
            Self::InvalidKey(_) => "PAY_INVALID_KEY",
        }
    }

    /// Worth trying again later with the same parameters (same out_trade_no / out_refund_no).
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_of_each() -> Vec<PayError> {
        let p = Platform::WechatPay;
        let s = String::new;
        vec![
            PayError::RateLimited {
                platform: p,
                code: s(),
                message: s(),
            },
            PayError::Unavailable {
                platform: p,
                code: s(),
                message: s(),
            },
            PayError::Auth {
                platform: p,
                code: s(),
                message: s(),
            },
            PayError::Rejected {
                platform: p,
                code: s(),
                sub_code: None,
                message: s(),
            },
            PayError::Transport {
                platform: p,
                message: s(),
            },
            PayError::SignatureInvalid,
            PayError::UnknownSerial(s()),
            PayError::TimestampSkew {
                timestamp: 0,
                skew_secs: 0,
            },
            PayError::DecryptFailed,
            PayError::malformed("x", ""),
            PayError::InvalidAmount(s()),
            PayError::MerchantMismatch {
                expected: s(),
                got: s(),
            },
            PayError::InvalidKey(s()),
        ]
    }

    #[test]
    fn every_error_code_is_in_the_table_once_and_used() {
        let codes: Vec<&str> = one_of_each().iter().map(PayError::code).collect();
        assert_eq!(codes, ERROR_CODES);
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ERROR_CODES.len());
    }

    #[test]
    fn only_rate_limits_outages_and_transport_are_retryable() {
        let retryable: Vec<&str> = one_of_each()
            .iter()
            .filter(|e| e.is_retryable())
            .map(PayError::code)
            .collect();
        assert_eq!(
            retryable,
            ["PAY_RATE_LIMITED", "PAY_UNAVAILABLE", "PAY_TRANSPORT"]
        );
    }
}
