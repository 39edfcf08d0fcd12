//! WeChat Pay API v3: request signing, response and callback verification, callback decryption,
//! and a client for JSAPI (mini-program) payments and refunds.
//!
//! Facts: shared/docs/channel-protocols.md §4 (from wechatpay-apiv3/wechatpay-go).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, FixedOffset};
use rand::Rng;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::error::{PayError, Platform};
use crate::keys::{Clock, PrivateKey, PublicKey, system_clock};

/// The only signature scheme v3 has; also the value of `Wechatpay-Signature-Type`.
pub const AUTH_SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";
/// A signed timestamp this far from now or further is refused (the SDKs' replay window).
pub const TIMESTAMP_WINDOW_SECS: i64 = 300;
pub const DEFAULT_BASE_URL: &str = "https://api.mch.weixin.qq.com";

pub const HEADER_TIMESTAMP: &str = "Wechatpay-Timestamp";
pub const HEADER_NONCE: &str = "Wechatpay-Nonce";
pub const HEADER_SIGNATURE: &str = "Wechatpay-Signature";
pub const HEADER_SERIAL: &str = "Wechatpay-Serial";
pub const HEADER_SIGNATURE_TYPE: &str = "Wechatpay-Signature-Type";

// ---------------------------------------------------------------------------------------------
// Request signing (merchant → WeChat Pay)

/// `METHOD\nURL\ntimestamp\nnonce\nbody\n`, URL being path plus query as sent; empty body for GET.
pub fn request_message(
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &str,
) -> String {
    format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{body}\n")
}

/// The merchant's signing identity: mchid, the serial of its API certificate, its private key.
#[derive(Debug, Clone)]
pub struct MerchantCredentials {
    pub mchid: String,
    pub serial_no: String,
    pub private_key: PrivateKey,
}

impl MerchantCredentials {
    /// The `Authorization` header value for one request.
    pub fn authorization(
        &self,
        method: &str,
        path_and_query: &str,
        timestamp: i64,
        nonce: &str,
        body: &str,
    ) -> Result<String, PayError> {
        let message = request_message(method, path_and_query, timestamp, nonce, body);
        let signature = self.private_key.sign_sha256_base64(message.as_bytes())?;
        Ok(AuthorizationHeader {
            mchid: self.mchid.clone(),
            nonce_str: nonce.to_owned(),
            timestamp,
            serial_no: self.serial_no.clone(),
            signature,
        }
        .to_string())
    }
}

/// A parsed `Authorization: WECHATPAY2-SHA256-RSA2048 k="v",…` header (what the platform, and our
/// mock, check on every request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationHeader {
    pub mchid: String,
    pub nonce_str: String,
    pub timestamp: i64,
    pub serial_no: String,
    pub signature: String,
}

impl fmt::Display for AuthorizationHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            r#"{AUTH_SCHEME} mchid="{}",nonce_str="{}",timestamp="{}",serial_no="{}",signature="{}""#,
            self.mchid, self.nonce_str, self.timestamp, self.serial_no, self.signature
        )
    }
}

impl AuthorizationHeader {
    /// Parameters may come in any order (the Python SDK puts `signature` third).
    pub fn parse(value: &str) -> Result<Self, PayError> {
        let bad = |d: &str| PayError::malformed("Authorization header", d);
        let rest = value
            .trim()
            .strip_prefix(AUTH_SCHEME)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or_else(|| bad("scheme is not WECHATPAY2-SHA256-RSA2048"))?;
        let mut fields: HashMap<&str, &str> = HashMap::new();
        for part in rest.split(',') {
            let (k, v) = part
                .trim()
                .split_once('=')
                .ok_or_else(|| bad("parameter without ="))?;
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or_else(|| bad("parameter value not quoted"))?;
            if fields.insert(k, v).is_some() {
                return Err(bad("repeated parameter"));
            }
        }
        let mut take = |k: &'static str| {
            fields
                .remove(k)
                .map(str::to_owned)
                .ok_or_else(|| PayError::malformed("Authorization header", format!("missing {k}")))
        };
        let mchid = take("mchid")?;
        let nonce_str = take("nonce_str")?;
        let timestamp = take("timestamp")?;
        let serial_no = take("serial_no")?;
        let signature = take("signature")?;
        let timestamp = timestamp
            .parse()
            .map_err(|_| bad("timestamp is not an integer"))?;
        Ok(Self {
            mchid,
            nonce_str,
            timestamp,
            serial_no,
            signature,
        })
    }

    /// Checks the signature over the request as received, and the replay window.
    pub fn verify(
        &self,
        merchant_key: &PublicKey,
        method: &str,
        path_and_query: &str,
        body: &str,
        now_unix: i64,
    ) -> Result<(), PayError> {
        check_window(self.timestamp, now_unix)?;
        let message = request_message(
            method,
            path_and_query,
            self.timestamp,
            &self.nonce_str,
            body,
        );
        merchant_key.verify_sha256_base64(message.as_bytes(), &self.signature)
    }
}

// ---------------------------------------------------------------------------------------------
// Response and callback verification (WeChat Pay → merchant)

/// Platform public keys by serial (platform certificate serial or `PUB_KEY_ID_…`). During a key
/// rotation WeChat Pay signs with either, so more than one may be held.
#[derive(Debug, Clone, Default)]
pub struct PlatformKeys(HashMap<String, PublicKey>);

impl PlatformKeys {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, serial: impl Into<String>, key: PublicKey) -> Self {
        self.insert(serial, key);
        self
    }

    pub fn insert(&mut self, serial: impl Into<String>, key: PublicKey) {
        self.0.insert(serial.into(), key);
    }

    pub fn get(&self, serial: &str) -> Option<&PublicKey> {
        self.0.get(serial)
    }
}

/// The four `Wechatpay-*` headers that sign a response or a callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
    pub serial: String,
}

impl SignedHeaders {
    /// Reads the headers (names are case-insensitive). A `Wechatpay-Signature-Type` other than
    /// RSA2048 (e.g. the SM2 of national-crypto merchants) is refused rather than misverified.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, PayError> {
        let get = |name: &'static str| -> Result<String, PayError> {
            headers
                .get(name)
                .ok_or_else(|| {
                    PayError::malformed("WeChat Pay signature headers", format!("missing {name}"))
                })?
                .to_str()
                .map(str::to_owned)
                .map_err(|_| {
                    PayError::malformed(
                        "WeChat Pay signature headers",
                        format!("{name} is not text"),
                    )
                })
        };
        if let Some(kind) = headers.get(HEADER_SIGNATURE_TYPE)
            && kind.as_bytes() != AUTH_SCHEME.as_bytes()
        {
            return Err(PayError::malformed(
                "WeChat Pay signature headers",
                format!("unsupported {HEADER_SIGNATURE_TYPE} {kind:?}"),
            ));
        }
        Ok(Self {
            timestamp: get(HEADER_TIMESTAMP)?,
            nonce: get(HEADER_NONCE)?,
            signature: get(HEADER_SIGNATURE)?,
            serial: get(HEADER_SERIAL)?,
        })
    }

    /// Whether a response carries signature headers at all (gateway errors may not).
    pub fn present(headers: &HeaderMap) -> bool {
        headers.contains_key(HEADER_SIGNATURE)
    }

    /// Signs `timestamp\nnonce\nbody\n` with a platform key (the mock's side).
    pub fn sign(
        key: &PrivateKey,
        serial: &str,
        timestamp: i64,
        nonce: &str,
        body: &[u8],
    ) -> Result<Self, PayError> {
        let signature =
            key.sign_sha256_base64(&signed_message(&timestamp.to_string(), nonce, body))?;
        Ok(Self {
            timestamp: timestamp.to_string(),
            nonce: nonce.to_owned(),
            signature,
            serial: serial.to_owned(),
        })
    }

    /// The header pairs to send, `Wechatpay-Signature-Type` included.
    pub fn pairs(&self) -> [(&'static str, &str); 5] {
        [
            (HEADER_TIMESTAMP, &self.timestamp),
            (HEADER_NONCE, &self.nonce),
            (HEADER_SIGNATURE, &self.signature),
            (HEADER_SERIAL, &self.serial),
            (HEADER_SIGNATURE_TYPE, AUTH_SCHEME),
        ]
    }
}

fn signed_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(nonce.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

fn check_window(timestamp: i64, now_unix: i64) -> Result<(), PayError> {
    let skew = now_unix.saturating_sub(timestamp).saturating_abs();
    if skew >= TIMESTAMP_WINDOW_SECS {
        return Err(PayError::TimestampSkew {
            timestamp,
            skew_secs: skew,
        });
    }
    Ok(())
}

/// Verifies a response or callback: timestamp within the window, key known by serial, and the
/// RSA signature over `timestamp\nnonce\nbody\n` (body = the raw bytes received).
pub fn verify_signed(
    keys: &PlatformKeys,
    headers: &SignedHeaders,
    body: &[u8],
    now_unix: i64,
) -> Result<(), PayError> {
    let timestamp: i64 = headers
        .timestamp
        .trim()
        .parse()
        .map_err(|_| PayError::malformed("Wechatpay-Timestamp", &headers.timestamp))?;
    check_window(timestamp, now_unix)?;
    let key = keys
        .get(&headers.serial)
        .ok_or_else(|| PayError::UnknownSerial(headers.serial.clone()))?;
    key.verify_sha256_base64(
        &signed_message(&headers.timestamp, &headers.nonce, body),
        &headers.signature,
    )
}

// ---------------------------------------------------------------------------------------------
// Callback decryption

/// The APIv3 key: 32 ASCII bytes set in the merchant platform, the AES-256-GCM key of callbacks.
#[derive(Clone)]
pub struct ApiV3Key([u8; 32]);

impl fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiV3Key(<redacted>)")
    }
}

impl ApiV3Key {
    pub fn new(key: &str) -> Result<Self, PayError> {
        <[u8; 32]>::try_from(key.as_bytes()).map(Self).map_err(|_| {
            PayError::InvalidKey(format!("APIv3 key must be 32 bytes, got {}", key.len()))
        })
    }

    fn cipher(&self) -> Result<Aes256Gcm, PayError> {
        Aes256Gcm::new_from_slice(&self.0).map_err(|e| PayError::InvalidKey(e.to_string()))
    }

    /// AEAD_AES_256_GCM, returning base64 of ciphertext‖tag (the mock's side).
    pub fn encrypt(
        &self,
        nonce: &str,
        associated_data: &str,
        plaintext: &[u8],
    ) -> Result<String, PayError> {
        let nonce = nonce_of(nonce)?;
        self.cipher()?
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: associated_data.as_bytes(),
                },
            )
            .map(|c| B64.encode(c))
            .map_err(|_| PayError::InvalidKey("encryption failed".into()))
    }

    /// Decrypts a callback `resource`. Tag mismatch (altered ciphertext, nonce or AAD, or the
    /// wrong key) is `DecryptFailed`; the tag is checked in constant time by aes-gcm.
    pub fn decrypt(&self, resource: &EncryptedResource) -> Result<Vec<u8>, PayError> {
        if resource.algorithm != "AEAD_AES_256_GCM" {
            return Err(PayError::malformed(
                "resource.algorithm",
                &resource.algorithm,
            ));
        }
        let nonce = nonce_of(&resource.nonce)?;
        let data = B64
            .decode(resource.ciphertext.trim())
            .map_err(|_| PayError::malformed("resource.ciphertext", "not base64"))?;
        self.cipher()?
            .decrypt(
                &nonce,
                Payload {
                    msg: &data,
                    aad: resource.associated_data.as_bytes(),
                },
            )
            .map_err(|_| PayError::DecryptFailed)
    }
}

fn nonce_of(nonce: &str) -> Result<Nonce<aes_gcm::aead::consts::U12>, PayError> {
    let bytes: [u8; 12] = nonce
        .as_bytes()
        .try_into()
        .map_err(|_| PayError::malformed("resource.nonce", "must be 12 bytes"))?;
    Ok(Nonce::from(bytes))
}

/// `resource` of a callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedResource {
    pub algorithm: String,
    pub ciphertext: String,
    #[serde(default)]
    pub associated_data: String,
    pub nonce: String,
    #[serde(default)]
    pub original_type: String,
}

/// The callback envelope, as posted to the notify_url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyEnvelope {
    pub id: String,
    pub create_time: String,
    pub event_type: String,
    pub resource_type: String,
    #[serde(default)]
    pub summary: String,
    pub resource: EncryptedResource,
}

/// A verified, decrypted callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub id: String,
    pub create_time: String,
    /// `TRANSACTION.SUCCESS`, `REFUND.SUCCESS`, `REFUND.ABNORMAL`, `REFUND.CLOSED`.
    pub event_type: String,
    pub summary: String,
    pub payload: NotifyPayload,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyPayload {
    Transaction(Transaction),
    Refund(RefundNotice),
}

/// Verifies and decrypts a callback. `now_unix` comes from the caller's clock.
pub fn parse_notification(
    keys: &PlatformKeys,
    apiv3_key: &ApiV3Key,
    headers: &SignedHeaders,
    body: &[u8],
    now_unix: i64,
) -> Result<Notification, PayError> {
    verify_signed(keys, headers, body, now_unix)?;
    let envelope: NotifyEnvelope =
        serde_json::from_slice(body).map_err(|e| PayError::malformed("callback body", e))?;
    if envelope.resource_type != "encrypt-resource" {
        return Err(PayError::malformed(
            "callback resource_type",
            &envelope.resource_type,
        ));
    }
    let plain = apiv3_key.decrypt(&envelope.resource)?;
    let payload = if envelope.event_type.starts_with("TRANSACTION.") {
        let wire: TransactionWire = serde_json::from_slice(&plain)
            .map_err(|e| PayError::malformed("callback transaction", e))?;
        NotifyPayload::Transaction(wire.try_into()?)
    } else if envelope.event_type.starts_with("REFUND.") {
        let wire: RefundNoticeWire = serde_json::from_slice(&plain)
            .map_err(|e| PayError::malformed("callback refund", e))?;
        NotifyPayload::Refund(wire.try_into()?)
    } else {
        return Err(PayError::malformed(
            "callback event_type",
            &envelope.event_type,
        ));
    };
    Ok(Notification {
        id: envelope.id,
        create_time: envelope.create_time,
        event_type: envelope.event_type,
        summary: envelope.summary,
        payload,
    })
}

// ---------------------------------------------------------------------------------------------
// Typed results

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $wire:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)*
            /// A value this code does not know yet, kept verbatim.
            Other(String),
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)*
                    Self::Other(s) => s,
                }
            }

            pub fn parse(s: &str) -> Self {
                match s {
                    $($wire => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }
        }
    };
}

wire_enum!(
    /// `trade_state` of a transaction.
    TradeState {
        Success = "SUCCESS",
        Refund = "REFUND",
        NotPay = "NOTPAY",
        Closed = "CLOSED",
        Revoked = "REVOKED",
        UserPaying = "USERPAYING",
        PayError = "PAYERROR",
    }
);

wire_enum!(
    /// `status` / `refund_status` of a refund.
    RefundStatus {
        Success = "SUCCESS",
        Closed = "CLOSED",
        Processing = "PROCESSING",
        Abnormal = "ABNORMAL",
    }
);

/// A transaction from a payment callback or a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub appid: String,
    pub mchid: String,
    pub out_trade_no: String,
    /// Absent until paid.
    pub transaction_id: Option<String>,
    pub trade_state: TradeState,
    pub success_time: Option<DateTime<FixedOffset>>,
    pub payer_openid: Option<String>,
    pub amount_total_fen: i64,
    pub currency: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefundAmount {
    pub total_fen: i64,
    pub refund_fen: i64,
}

/// The decrypted `resource` of a `REFUND.*` callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundNotice {
    pub mchid: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub out_refund_no: String,
    pub refund_id: String,
    pub refund_status: RefundStatus,
    pub success_time: Option<DateTime<FixedOffset>>,
    pub amount: RefundAmount,
}

/// The answer to a refund request (or a refund query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub refund_id: String,
    pub out_refund_no: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub status: RefundStatus,
    pub amount: RefundAmount,
}

// Wire shapes, shared with the mock so both ends speak the same JSON.

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct TransactionWire {
    pub appid: String,
    pub mchid: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_type: Option<String>,
    pub trade_state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_state_desc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<PayerWire>,
    pub amount: TransactionAmountWire,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct PayerWire {
    #[serde(default)]
    pub openid: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct TransactionAmountWire {
    pub total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default = "cny")]
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_currency: Option<String>,
}

fn cny() -> String {
    "CNY".to_owned()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RefundNoticeWire {
    pub mchid: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub out_refund_no: String,
    pub refund_id: String,
    pub refund_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    pub amount: RefundAmountWire,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RefundAmountWire {
    pub total: i64,
    pub refund: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_refund: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RefundWire {
    pub refund_id: String,
    pub out_refund_no: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default)]
    pub create_time: String,
    pub status: String,
    pub amount: RefundAmountWire,
}

fn fen(what: &'static str, v: i64) -> Result<i64, PayError> {
    if v < 0 {
        return Err(PayError::InvalidAmount(format!("{what} = {v}")));
    }
    Ok(v)
}

fn time(what: &'static str, v: Option<String>) -> Result<Option<DateTime<FixedOffset>>, PayError> {
    v.filter(|s| !s.is_empty())
        .map(|s| {
            DateTime::parse_from_rfc3339(&s)
                .map_err(|e| PayError::malformed(what, format!("{s:?}: {e}")))
        })
        .transpose()
}

impl TryFrom<TransactionWire> for Transaction {
    type Error = PayError;

    fn try_from(w: TransactionWire) -> Result<Self, PayError> {
        Ok(Self {
            appid: w.appid,
            mchid: w.mchid,
            out_trade_no: w.out_trade_no,
            transaction_id: w.transaction_id.filter(|s| !s.is_empty()),
            trade_state: TradeState::parse(&w.trade_state),
            success_time: time("success_time", w.success_time)?,
            payer_openid: w.payer.map(|p| p.openid).filter(|s| !s.is_empty()),
            amount_total_fen: fen("amount.total", w.amount.total)?,
            currency: w.amount.currency,
        })
    }
}

impl TryFrom<RefundAmountWire> for RefundAmount {
    type Error = PayError;

    fn try_from(w: RefundAmountWire) -> Result<Self, PayError> {
        Ok(Self {
            total_fen: fen("amount.total", w.total)?,
            refund_fen: fen("amount.refund", w.refund)?,
        })
    }
}

impl TryFrom<RefundNoticeWire> for RefundNotice {
    type Error = PayError;

    fn try_from(w: RefundNoticeWire) -> Result<Self, PayError> {
        Ok(Self {
            mchid: w.mchid,
            out_trade_no: w.out_trade_no,
            transaction_id: w.transaction_id,
            out_refund_no: w.out_refund_no,
            refund_id: w.refund_id,
            refund_status: RefundStatus::parse(&w.refund_status),
            success_time: time("success_time", w.success_time)?,
            amount: w.amount.try_into()?,
        })
    }
}

impl TryFrom<RefundWire> for Refund {
    type Error = PayError;

    fn try_from(w: RefundWire) -> Result<Self, PayError> {
        Ok(Self {
            refund_id: w.refund_id,
            out_refund_no: w.out_refund_no,
            out_trade_no: w.out_trade_no,
            transaction_id: w.transaction_id,
            status: RefundStatus::parse(&w.status),
            amount: w.amount.try_into()?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Client

/// Everything one merchant needs to talk to WeChat Pay.
#[derive(Debug, Clone)]
pub struct WechatPayConfig {
    /// `https://api.mch.weixin.qq.com` in production; `http://127.0.0.1:PORT` for the mock.
    pub base_url: String,
    /// The mini-program / official-account appid payments are made in.
    pub appid: String,
    pub merchant: MerchantCredentials,
    pub apiv3_key: ApiV3Key,
    pub platform_keys: PlatformKeys,
}

/// A JSAPI (mini-program) prepay order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsapiPrepayRequest {
    pub description: String,
    pub out_trade_no: String,
    pub notify_url: String,
    pub amount_total_fen: i64,
    pub payer_openid: String,
    pub attach: Option<String>,
    /// RFC 3339, e.g. `2018-06-08T10:34:56+08:00`.
    pub time_expire: Option<String>,
    pub profit_sharing: bool,
}

/// What `wx.requestPayment` takes in the mini-program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsapiPayParams {
    #[serde(rename = "appId")]
    pub app_id: String,
    #[serde(rename = "timeStamp")]
    pub time_stamp: String,
    #[serde(rename = "nonceStr")]
    pub nonce_str: String,
    pub package: String,
    #[serde(rename = "signType")]
    pub sign_type: String,
    #[serde(rename = "paySign")]
    pub pay_sign: String,
}

/// A domestic refund. Idempotent by `out_refund_no`: send the same one again to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub reason: Option<String>,
    /// Where the `REFUND.*` callback goes; the merchant platform's setting when absent.
    pub notify_url: Option<String>,
    pub refund_fen: i64,
    pub total_fen: i64,
}

#[derive(Debug, Clone)]
pub struct WechatPayClient {
    cfg: WechatPayConfig,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

/// A verified response.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl WechatPayClient {
    pub fn new(cfg: WechatPayConfig) -> Result<Self, PayError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| transport(&e))?;
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

    pub fn with_http(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    pub fn config(&self) -> &WechatPayConfig {
        &self.cfg
    }

    /// `POST /v3/pay/transactions/jsapi` → `prepay_id`.
    pub async fn jsapi_prepay(&self, req: &JsapiPrepayRequest) -> Result<String, PayError> {
        check_out_no("out_trade_no", &req.out_trade_no)?;
        if req.amount_total_fen <= 0 {
            return Err(PayError::InvalidAmount(format!(
                "amount.total = {}",
                req.amount_total_fen
            )));
        }
        let mut body = serde_json::json!({
            "appid": self.cfg.appid,
            "mchid": self.cfg.merchant.mchid,
            "description": req.description,
            "out_trade_no": req.out_trade_no,
            "notify_url": req.notify_url,
            "amount": {"total": req.amount_total_fen, "currency": "CNY"},
            "payer": {"openid": req.payer_openid},
        });
        if let Some(attach) = &req.attach {
            body["attach"] = attach.clone().into();
        }
        if let Some(t) = &req.time_expire {
            body["time_expire"] = t.clone().into();
        }
        if req.profit_sharing {
            body["settle_info"] = serde_json::json!({"profit_sharing": true});
        }
        let answer = self
            .call("POST", "/v3/pay/transactions/jsapi", Some(body.to_string()))
            .await?;
        #[derive(Deserialize)]
        struct Prepay {
            prepay_id: String,
        }
        let p: Prepay = parse_json("prepay answer", &answer.body)?;
        Ok(p.prepay_id)
    }

    /// The parameters for `wx.requestPayment`, paySign = RSA-SHA256 over
    /// `appId\ntimeStamp\nnonceStr\npackage\n` with the merchant key.
    pub fn jsapi_pay_params(&self, prepay_id: &str) -> Result<JsapiPayParams, PayError> {
        let time_stamp = self.clock.now_unix().to_string();
        let nonce_str = nonce();
        let package = format!("prepay_id={prepay_id}");
        let message = format!("{}\n{time_stamp}\n{nonce_str}\n{package}\n", self.cfg.appid);
        let pay_sign = self
            .cfg
            .merchant
            .private_key
            .sign_sha256_base64(message.as_bytes())?;
        Ok(JsapiPayParams {
            app_id: self.cfg.appid.clone(),
            time_stamp,
            nonce_str,
            package,
            sign_type: "RSA".to_owned(),
            pay_sign,
        })
    }

    /// `GET /v3/pay/transactions/out-trade-no/{no}?mchid=…`.
    pub async fn query_by_out_trade_no(&self, out_trade_no: &str) -> Result<Transaction, PayError> {
        check_out_no("out_trade_no", out_trade_no)?;
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}",
            self.cfg.merchant.mchid
        );
        let answer = self.call("GET", &path, None).await?;
        let wire: TransactionWire = parse_json("transaction", &answer.body)?;
        wire.try_into()
    }

    /// `POST /v3/pay/transactions/out-trade-no/{no}/close` (204 on success).
    pub async fn close(&self, out_trade_no: &str) -> Result<(), PayError> {
        check_out_no("out_trade_no", out_trade_no)?;
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close");
        let body = serde_json::json!({"mchid": self.cfg.merchant.mchid}).to_string();
        self.call("POST", &path, Some(body)).await?;
        Ok(())
    }

    /// `POST /v3/refund/domestic/refunds`. Safe to repeat with the same `out_refund_no`.
    pub async fn refund(&self, req: &RefundRequest) -> Result<Refund, PayError> {
        check_out_no("out_trade_no", &req.out_trade_no)?;
        check_out_no("out_refund_no", &req.out_refund_no)?;
        if req.refund_fen <= 0 || req.total_fen <= 0 || req.refund_fen > req.total_fen {
            return Err(PayError::InvalidAmount(format!(
                "refund {} of total {}",
                req.refund_fen, req.total_fen
            )));
        }
        let mut body = serde_json::json!({
            "out_trade_no": req.out_trade_no,
            "out_refund_no": req.out_refund_no,
            "amount": {"refund": req.refund_fen, "total": req.total_fen, "currency": "CNY"},
        });
        if let Some(r) = &req.reason {
            body["reason"] = r.clone().into();
        }
        if let Some(u) = &req.notify_url {
            body["notify_url"] = u.clone().into();
        }
        let answer = self
            .call(
                "POST",
                "/v3/refund/domestic/refunds",
                Some(body.to_string()),
            )
            .await?;
        let wire: RefundWire = parse_json("refund", &answer.body)?;
        wire.try_into()
    }

    /// `GET /v3/refund/domestic/refunds/{out_refund_no}`.
    pub async fn refund_query(&self, out_refund_no: &str) -> Result<Refund, PayError> {
        check_out_no("out_refund_no", out_refund_no)?;
        let path = format!("/v3/refund/domestic/refunds/{out_refund_no}");
        let answer = self.call("GET", &path, None).await?;
        let wire: RefundWire = parse_json("refund", &answer.body)?;
        wire.try_into()
    }

    /// Verifies, decrypts and types a callback posted to our notify_url, and checks it is for
    /// this merchant. Answer 204 when this is `Ok` and the event is stored; 4xx/5xx otherwise.
    pub fn parse_notification(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Notification, PayError> {
        let signed = SignedHeaders::from_headers(headers)?;
        let n = parse_notification(
            &self.cfg.platform_keys,
            &self.cfg.apiv3_key,
            &signed,
            body,
            self.clock.now_unix(),
        )?;
        let mchid = match &n.payload {
            NotifyPayload::Transaction(t) => &t.mchid,
            NotifyPayload::Refund(r) => &r.mchid,
        };
        if *mchid != self.cfg.merchant.mchid {
            return Err(PayError::MerchantMismatch {
                expected: self.cfg.merchant.mchid.clone(),
                got: mchid.clone(),
            });
        }
        Ok(n)
    }

    async fn call(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<String>,
    ) -> Result<Answer, PayError> {
        let body = body.unwrap_or_default();
        let auth = self.cfg.merchant.authorization(
            method,
            path_and_query,
            self.clock.now_unix(),
            &nonce(),
            &body,
        )?;
        let url = format!(
            "{}{path_and_query}",
            self.cfg.base_url.trim_end_matches('/')
        );
        let builder = match method {
            "GET" => self.http.get(&url),
            _ => self
                .http
                .post(&url)
                .header("Content-Type", "application/json")
                .body(body),
        };
        let resp = builder
            .header("Authorization", auth)
            .header("Accept", "application/json")
            .header("User-Agent", "uphub-payments")
            .send()
            .await
            .map_err(|e| transport(&e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|e| transport(&e))?.to_vec();
        let answer = Answer {
            status,
            body: bytes,
        };
        let signed = SignedHeaders::present(&headers);
        if signed {
            let h = SignedHeaders::from_headers(&headers)?;
            verify_signed(
                &self.cfg.platform_keys,
                &h,
                &answer.body,
                self.clock.now_unix(),
            )?;
        }
        if (200..300).contains(&answer.status) {
            // A success we cannot authenticate is not a success.
            if !signed {
                return Err(PayError::SignatureInvalid);
            }
            return Ok(answer);
        }
        Err(map_error(&answer, signed))
    }
}

/// Non-2xx → error. Unsigned answers (a gateway in between) are only believed as far as their
/// HTTP status says "try later"; anything else unsigned could be forged.
fn map_error(answer: &Answer, signed: bool) -> PayError {
    #[derive(Deserialize, Default)]
    struct ErrorBody {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let parsed: ErrorBody = serde_json::from_slice(&answer.body).unwrap_or_default();
    let (code, message) = if signed {
        (parsed.code, parsed.message)
    } else {
        (format!("HTTP_{}", answer.status), String::new())
    };
    let platform = Platform::WechatPay;
    match (code.as_str(), answer.status) {
        ("RATELIMIT_EXCEED" | "FREQUENCY_LIMITED", _) | (_, 429) => PayError::RateLimited {
            platform,
            code,
            message,
        },
        ("SYSTEM_ERROR", _) | (_, 500..=599) => PayError::Unavailable {
            platform,
            code,
            message,
        },
        _ if !signed => PayError::SignatureInvalid,
        ("SIGN_ERROR", _) => PayError::Auth {
            platform,
            code,
            message,
        },
        _ => PayError::Rejected {
            platform,
            code,
            sub_code: None,
            message,
        },
    }
}

fn transport(e: &reqwest::Error) -> PayError {
    PayError::Transport {
        platform: Platform::WechatPay,
        message: e.to_string(),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    body: &[u8],
) -> Result<T, PayError> {
    serde_json::from_slice(body).map_err(|e| PayError::malformed(what, e))
}

/// Merchant order numbers go into URL paths: only the characters WeChat Pay allows.
fn check_out_no(what: &'static str, no: &str) -> Result<(), PayError> {
    let ok = !no.is_empty()
        && no.len() <= 64
        && no
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*'));
    if ok {
        Ok(())
    } else {
        Err(PayError::malformed(what, format!("{no:?}")))
    }
}

/// 32 random uppercase alphanumerics, like the SDKs' nonce_str.
pub fn nonce() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::thread_rng();
    (0..32)
        .map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const MERCHANT_KEY: &str = include_str!("../tests/fixtures/wechat_merchant.key.pem");

    #[test]
    fn authorization_header_round_trips_and_verifies() {
        let key = PrivateKey::from_pem(MERCHANT_KEY).unwrap();
        let cred = MerchantCredentials {
            mchid: "1900000001".into(),
            serial_no: "SERIAL1".into(),
            private_key: key.clone(),
        };
        let value = cred
            .authorization(
                "POST",
                "/v3/pay/transactions/jsapi",
                1_700_000_000,
                "N1",
                "{}",
            )
            .unwrap();
        let h = AuthorizationHeader::parse(&value).unwrap();
        assert_eq!(h.mchid, "1900000001");
        assert_eq!(h.serial_no, "SERIAL1");
        h.verify(
            &key.public_key(),
            "POST",
            "/v3/pay/transactions/jsapi",
            "{}",
            1_700_000_010,
        )
        .unwrap();
        assert!(matches!(
            h.verify(
                &key.public_key(),
                "POST",
                "/v3/pay/transactions/jsapi",
                "{ }",
                1_700_000_010
            ),
            Err(PayError::SignatureInvalid)
        ));
        assert!(matches!(
            h.verify(
                &key.public_key(),
                "POST",
                "/v3/pay/transactions/jsapi",
                "{}",
                1_700_000_300
            ),
            Err(PayError::TimestampSkew { .. })
        ));
    }

    #[test]
    fn malformed_authorization_headers_are_errors_not_panics() {
        for v in [
            "",
            "Bearer x",
            "WECHATPAY2-SHA256-RSA2048",
            r#"WECHATPAY2-SHA256-RSA2048 mchid="1""#,
            r#"WECHATPAY2-SHA256-RSA2048 mchid=1,nonce_str="a",timestamp="1",serial_no="s",signature="x""#,
            r#"WECHATPAY2-SHA256-RSA2048 mchid="1",nonce_str="a",timestamp="x",serial_no="s",signature="x""#,
            r#"WECHATPAY2-SHA256-RSA2048 mchid="1",mchid="2",nonce_str="a",timestamp="1",serial_no="s",signature="x""#,
        ] {
            assert!(AuthorizationHeader::parse(v).is_err(), "{v}");
        }
    }

    #[test]
    fn apiv3_key_must_be_32_bytes() {
        assert!(ApiV3Key::new("short").is_err());
        assert!(ApiV3Key::new("0123456789abcdef0123456789abcdef").is_ok());
    }

    #[test]
    fn resource_with_a_wrong_length_nonce_is_malformed_not_a_panic() {
        let key = ApiV3Key::new("0123456789abcdef0123456789abcdef").unwrap();
        let r = EncryptedResource {
            algorithm: "AEAD_AES_256_GCM".into(),
            ciphertext: B64.encode([0u8; 20]),
            associated_data: String::new(),
            nonce: "short".into(),
            original_type: "transaction".into(),
        };
        assert!(matches!(key.decrypt(&r), Err(PayError::Malformed { .. })));
        let r = EncryptedResource {
            nonce: "123456789012".into(),
            ciphertext: "!!".into(),
            ..r
        };
        assert!(matches!(key.decrypt(&r), Err(PayError::Malformed { .. })));
        let r = EncryptedResource {
            ciphertext: B64.encode([0u8; 3]),
            ..r
        };
        assert!(matches!(key.decrypt(&r), Err(PayError::DecryptFailed)));
    }

    #[test]
    fn unsigned_errors_are_only_believed_as_try_later() {
        let a = |status, body: &str| Answer {
            status,
            body: body.as_bytes().to_vec(),
        };
        assert!(matches!(
            map_error(&a(503, "oops"), false),
            PayError::Unavailable { .. }
        ));
        assert!(matches!(
            map_error(&a(429, ""), false),
            PayError::RateLimited { .. }
        ));
        assert!(matches!(
            map_error(
                &a(404, r#"{"code":"ORDER_NOT_EXIST","message":"x"}"#),
                false
            ),
            PayError::SignatureInvalid
        ));
        let codes: Vec<&str> = [
            (429, "RATELIMIT_EXCEED"),
            (403, "FREQUENCY_LIMITED"),
            (500, "SYSTEM_ERROR"),
            (502, "BAD_GATEWAY"),
            (401, "SIGN_ERROR"),
            (404, "ORDER_NOT_EXIST"),
            (400, "PARAM_ERROR"),
        ]
        .iter()
        .map(|(s, c)| map_error(&a(*s, &format!(r#"{{"code":"{c}","message":"m"}}"#)), true).code())
        .collect();
        assert_eq!(
            codes,
            [
                "PAY_RATE_LIMITED",
                "PAY_RATE_LIMITED",
                "PAY_UNAVAILABLE",
                "PAY_UNAVAILABLE",
                "PAY_AUTH",
                "PAY_REJECTED",
                "PAY_REJECTED"
            ]
        );
    }

    #[test]
    fn out_trade_numbers_that_would_break_the_url_are_refused() {
        assert!(check_out_no("x", "ORDER_1-2|3*4").is_ok());
        for no in ["", "a/b", "a?b", "a b", "中文", &"x".repeat(65)] {
            assert!(check_out_no("x", no).is_err(), "{no}");
        }
    }
}
