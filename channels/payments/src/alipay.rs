//! Alipay open API (RSA2, public-key mode): request signing, response and notify verification,
//! and a client for mini-program trades and refunds.
//!
//! Facts: shared/docs/channel-protocols.md §5 (from smartwalle/alipay).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone};
use reqwest::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{PayError, Platform};
use crate::keys::{Clock, PrivateKey, PublicKey, system_clock};
use crate::money::{fen_to_yuan, yuan_to_fen};

pub const DEFAULT_GATEWAY: &str = "https://openapi.alipay.com/gateway.do";
/// Alipay's timestamps are Beijing time without an offset.
pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";
/// What a notify receiver answers, as plain text, once it has stored the event.
pub const NOTIFY_ACK: &str = "success";

/// UTC+8. Checked at compile time: `east_opt` only fails beyond ±24 h.
pub const BEIJING: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(offset) => offset,
    None => panic!("UTC+8 is a valid offset"),
};

/// Unix seconds → `yyyy-MM-dd HH:mm:ss` in Beijing time.
pub fn format_time(unix: i64) -> String {
    BEIJING
        .timestamp_opt(unix, 0)
        .single()
        .map(|t| t.format(TIME_FORMAT).to_string())
        .unwrap_or_default()
}

/// `yyyy-MM-dd HH:mm:ss[.SSS]` in Beijing time (`gmt_refund` carries milliseconds).
pub fn parse_time(what: &'static str, s: &str) -> Result<DateTime<FixedOffset>, PayError> {
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .map_err(|e| PayError::malformed(what, format!("{s:?}: {e}")))?;
    BEIJING
        .from_local_datetime(&naive)
        .single()
        .ok_or_else(|| PayError::malformed(what, s))
}

// ---------------------------------------------------------------------------------------------
// Signing and verification

/// The RSA2 string to sign: every non-empty parameter except `sign`, sorted by name, `k=v`
/// joined by `&`, values as they are (not URL-encoded).
pub fn sign_content<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(&str, &str)> = params
        .into_iter()
        .filter(|(k, v)| *k != "sign" && !v.is_empty())
        .collect();
    pairs.sort_unstable();
    join_pairs(&pairs)
}

fn join_pairs(pairs: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push('&');
        }
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    s
}

/// RSA2 (SHA256withRSA) `sign` for a request's parameters.
pub fn sign_params<'a>(
    key: &PrivateKey,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<String, PayError> {
    key.sign_sha256_base64(sign_content(params).as_bytes())
}

/// Verifies an async notify (or any signed parameter set Alipay sends): `sign` and `sign_type`
/// are dropped, as is `alipay_cert_sn`; the rest, URL-decoded and non-empty, sorted and joined.
pub fn verify_params(key: &PublicKey, params: &[(String, String)]) -> Result<(), PayError> {
    let sign = params
        .iter()
        .find(|(k, _)| k == "sign")
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| PayError::malformed("notify", "missing sign"))?;
    if let Some((_, t)) = params.iter().find(|(k, _)| k == "sign_type")
        && t != "RSA2"
    {
        return Err(PayError::malformed("notify sign_type", t));
    }
    let content = sign_content(
        params
            .iter()
            .filter(|(k, _)| k != "sign_type" && k != "alipay_cert_sn")
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    key.verify_sha256_base64(content.as_bytes(), sign)
}

/// `alipay.trade.create` → `alipay_trade_create_response`.
pub fn response_key(method: &str) -> String {
    format!("{}_response", method.replace('.', "_"))
}

/// The pieces of a gateway answer: the exact text of the `<method>_response` (or
/// `error_response`) value as it appears in the body, and the `sign` beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseParts<'a> {
    pub content: &'a str,
    pub sign: Option<String>,
    pub is_error_response: bool,
}

/// Cuts the signed value out of the body without re-serialising it: key order, spacing and
/// escapes stay exactly as Alipay signed them.
pub fn response_parts<'a>(body: &'a str, method: &str) -> Result<ResponseParts<'a>, PayError> {
    let top: HashMap<String, &'a RawValue> =
        serde_json::from_str(body).map_err(|e| PayError::malformed("Alipay response", e))?;
    let key = response_key(method);
    let (content, is_error_response) = match (top.get(&key), top.get("error_response")) {
        (Some(v), _) => (v.get(), false),
        (None, Some(v)) => (v.get(), true),
        (None, None) => return Err(PayError::malformed("Alipay response", format!("no {key}"))),
    };
    let sign = match top.get("sign") {
        Some(raw) => Some(
            serde_json::from_str::<String>(raw.get())
                .map_err(|e| PayError::malformed("Alipay response sign", e))?,
        ),
        None => None,
    }
    .filter(|s| !s.is_empty());
    Ok(ResponseParts {
        content,
        sign,
        is_error_response,
    })
}

/// Verifies the `sign` of a gateway answer over the raw `<method>_response` text and returns
/// that text. An answer without a signature fails.
pub fn verify_response<'a>(
    key: &PublicKey,
    body: &'a str,
    method: &str,
) -> Result<&'a str, PayError> {
    let parts = response_parts(body, method)?;
    let sign = parts.sign.ok_or(PayError::SignatureInvalid)?;
    key.verify_sha256_base64(parts.content.as_bytes(), &sign)?;
    Ok(parts.content)
}

// ---------------------------------------------------------------------------------------------
// Notify

/// `trade_status`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TradeStatus {
    WaitBuyerPay,
    TradeClosed,
    TradeSuccess,
    TradeFinished,
    Other(String),
}

impl TradeStatus {
    pub fn as_str(&self) -> &str {
        match self {
            Self::WaitBuyerPay => "WAIT_BUYER_PAY",
            Self::TradeClosed => "TRADE_CLOSED",
            Self::TradeSuccess => "TRADE_SUCCESS",
            Self::TradeFinished => "TRADE_FINISHED",
            Self::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "WAIT_BUYER_PAY" => Self::WaitBuyerPay,
            "TRADE_CLOSED" => Self::TradeClosed,
            "TRADE_SUCCESS" => Self::TradeSuccess,
            "TRADE_FINISHED" => Self::TradeFinished,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// A verified asynchronous notify (`trade_status_sync`): payment, close or refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub notify_id: String,
    pub notify_time: DateTime<FixedOffset>,
    pub notify_type: String,
    pub app_id: String,
    pub out_trade_no: String,
    pub trade_no: String,
    pub trade_status: TradeStatus,
    pub total_amount_fen: i64,
    pub receipt_amount_fen: Option<i64>,
    pub buyer_pay_amount_fen: Option<i64>,
    /// Total refunded so far, on refund notifies.
    pub refund_fee_fen: Option<i64>,
    /// The refund's `out_request_no`, on refund notifies.
    pub out_biz_no: Option<String>,
    pub buyer_id: Option<String>,
    pub seller_id: Option<String>,
    pub gmt_create: Option<DateTime<FixedOffset>>,
    pub gmt_payment: Option<DateTime<FixedOffset>>,
    pub gmt_refund: Option<DateTime<FixedOffset>>,
    pub gmt_close: Option<DateTime<FixedOffset>>,
}

/// Decodes an `application/x-www-form-urlencoded` body into pairs, refusing repeated names (an
/// ambiguity a signature check must not have to guess about).
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, PayError> {
    let mut seen = std::collections::HashSet::new();
    let mut pairs = Vec::new();
    for (k, v) in form_urlencoded::parse(body) {
        if !seen.insert(k.clone()) {
            return Err(PayError::malformed("form", format!("repeated field {k}")));
        }
        pairs.push((k.into_owned(), v.into_owned()));
    }
    Ok(pairs)
}

/// Verifies a notify form body with the Alipay public key and types it.
pub fn parse_notify(alipay_public_key: &PublicKey, body: &[u8]) -> Result<Notify, PayError> {
    let pairs = parse_form(body)?;
    verify_params(alipay_public_key, &pairs)?;
    let map: HashMap<&str, &str> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let req = |k: &'static str| {
        map.get(k)
            .map(|v| (*v).to_owned())
            .ok_or_else(|| PayError::malformed("notify", format!("missing {k}")))
    };
    let opt_fen = |k: &'static str| map.get(k).map(|v| yuan_to_fen(v)).transpose();
    let opt_time = |k: &'static str| map.get(k).map(|v| parse_time(k, v)).transpose();
    Ok(Notify {
        notify_id: req("notify_id")?,
        notify_time: parse_time("notify_time", &req("notify_time")?)?,
        notify_type: req("notify_type")?,
        app_id: req("app_id")?,
        out_trade_no: req("out_trade_no")?,
        trade_no: req("trade_no")?,
        trade_status: TradeStatus::parse(&req("trade_status")?),
        total_amount_fen: yuan_to_fen(&req("total_amount")?)?,
        receipt_amount_fen: opt_fen("receipt_amount")?,
        buyer_pay_amount_fen: opt_fen("buyer_pay_amount")?,
        refund_fee_fen: opt_fen("refund_fee")?,
        out_biz_no: map.get("out_biz_no").map(|v| (*v).to_owned()),
        buyer_id: map.get("buyer_id").map(|v| (*v).to_owned()),
        seller_id: map.get("seller_id").map(|v| (*v).to_owned()),
        gmt_create: opt_time("gmt_create")?,
        gmt_payment: opt_time("gmt_payment")?,
        gmt_refund: opt_time("gmt_refund")?,
        gmt_close: opt_time("gmt_close")?,
    })
}

// ---------------------------------------------------------------------------------------------
// Client

#[derive(Debug, Clone)]
pub struct AlipayConfig {
    /// `https://openapi.alipay.com/gateway.do`, or `http://127.0.0.1:PORT/gateway.do` for the mock.
    pub gateway_url: String,
    pub app_id: String,
    pub app_private_key: PrivateKey,
    pub alipay_public_key: PublicKey,
}

/// `alipay.trade.create`: a trade the mini-program then pays with `my.tradePay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeCreateRequest {
    pub out_trade_no: String,
    pub total_amount_fen: i64,
    pub subject: String,
    /// The payer's Alipay user id, required for mini-program trades.
    pub buyer_id: Option<String>,
    pub notify_url: Option<String>,
    /// e.g. `30m`.
    pub timeout_express: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeCreated {
    pub out_trade_no: String,
    pub trade_no: String,
}

/// `alipay.trade.query` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trade {
    pub trade_no: String,
    pub out_trade_no: String,
    pub trade_status: TradeStatus,
    pub total_amount_fen: i64,
    pub buyer_pay_amount_fen: Option<i64>,
    pub buyer_user_id: Option<String>,
    pub send_pay_date: Option<DateTime<FixedOffset>>,
}

/// `alipay.trade.refund`. Idempotent by `out_request_no`: repeat it to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeRefundRequest {
    pub out_trade_no: String,
    pub out_request_no: String,
    pub refund_amount_fen: i64,
    pub refund_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeRefunded {
    pub trade_no: String,
    pub out_trade_no: String,
    /// Total refunded on the trade so far (Alipay's `refund_fee`).
    pub refund_fee_fen: i64,
    /// `false` when this `out_request_no` had already been refunded (a retry moved no money).
    pub fund_change: bool,
    pub gmt_refund_pay: Option<DateTime<FixedOffset>>,
}

#[derive(Debug, Clone)]
pub struct AlipayClient {
    cfg: AlipayConfig,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, Deserialize, Default)]
struct Common {
    #[serde(default)]
    code: String,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    sub_code: Option<String>,
    #[serde(default)]
    sub_msg: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, Default)]
pub(crate) struct TradeWire {
    #[serde(default)]
    pub trade_no: String,
    #[serde(default)]
    pub out_trade_no: String,
    #[serde(default)]
    pub trade_status: String,
    #[serde(default)]
    pub total_amount: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_pay_amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_pay_date: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, Default)]
pub(crate) struct RefundWire {
    #[serde(default)]
    pub trade_no: String,
    #[serde(default)]
    pub out_trade_no: String,
    #[serde(default)]
    pub refund_fee: String,
    #[serde(default)]
    pub fund_change: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gmt_refund_pay: Option<String>,
}

impl AlipayClient {
    pub fn new(cfg: AlipayConfig) -> Result<Self, PayError> {
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

    pub fn config(&self) -> &AlipayConfig {
        &self.cfg
    }

    pub async fn trade_create(&self, req: &TradeCreateRequest) -> Result<TradeCreated, PayError> {
        if req.total_amount_fen <= 0 {
            return Err(PayError::InvalidAmount(fen_to_yuan(req.total_amount_fen)));
        }
        let mut biz = serde_json::json!({
            "out_trade_no": req.out_trade_no,
            "total_amount": fen_to_yuan(req.total_amount_fen),
            "subject": req.subject,
            "product_code": "JSAPI_PAY",
        });
        if let Some(b) = &req.buyer_id {
            biz["buyer_id"] = b.clone().into();
        }
        if let Some(t) = &req.timeout_express {
            biz["timeout_express"] = t.clone().into();
        }
        let content = self
            .call("alipay.trade.create", &biz, req.notify_url.as_deref())
            .await?;
        #[derive(Deserialize)]
        struct Created {
            out_trade_no: String,
            trade_no: String,
        }
        let c: Created = parse_json("alipay.trade.create answer", &content)?;
        Ok(TradeCreated {
            out_trade_no: c.out_trade_no,
            trade_no: c.trade_no,
        })
    }

    pub async fn trade_query(&self, out_trade_no: &str) -> Result<Trade, PayError> {
        let biz = serde_json::json!({"out_trade_no": out_trade_no});
        let content = self.call("alipay.trade.query", &biz, None).await?;
        let w: TradeWire = parse_json("alipay.trade.query answer", &content)?;
        Ok(Trade {
            trade_no: w.trade_no,
            out_trade_no: w.out_trade_no,
            trade_status: TradeStatus::parse(&w.trade_status),
            total_amount_fen: yuan_to_fen(&w.total_amount)?,
            buyer_pay_amount_fen: w.buyer_pay_amount.as_deref().map(yuan_to_fen).transpose()?,
            buyer_user_id: w.buyer_user_id,
            send_pay_date: w
                .send_pay_date
                .as_deref()
                .map(|s| parse_time("send_pay_date", s))
                .transpose()?,
        })
    }

    pub async fn trade_refund(&self, req: &TradeRefundRequest) -> Result<TradeRefunded, PayError> {
        if req.refund_amount_fen <= 0 {
            return Err(PayError::InvalidAmount(fen_to_yuan(req.refund_amount_fen)));
        }
        let mut biz = serde_json::json!({
            "out_trade_no": req.out_trade_no,
            "out_request_no": req.out_request_no,
            "refund_amount": fen_to_yuan(req.refund_amount_fen),
        });
        if let Some(r) = &req.refund_reason {
            biz["refund_reason"] = r.clone().into();
        }
        let content = self.call("alipay.trade.refund", &biz, None).await?;
        let w: RefundWire = parse_json("alipay.trade.refund answer", &content)?;
        Ok(TradeRefunded {
            trade_no: w.trade_no,
            out_trade_no: w.out_trade_no,
            refund_fee_fen: yuan_to_fen(&w.refund_fee)?,
            fund_change: w.fund_change == "Y",
            gmt_refund_pay: w
                .gmt_refund_pay
                .as_deref()
                .map(|s| parse_time("gmt_refund_pay", s))
                .transpose()?,
        })
    }

    pub async fn trade_close(&self, out_trade_no: &str) -> Result<(), PayError> {
        let biz = serde_json::json!({"out_trade_no": out_trade_no});
        self.call("alipay.trade.close", &biz, None).await?;
        Ok(())
    }

    /// Verifies and types a notify form body, and checks it is for this app. Answer the plain
    /// text `success` when this is `Ok` and the event is stored.
    pub fn parse_notify(&self, body: &[u8]) -> Result<Notify, PayError> {
        let n = parse_notify(&self.cfg.alipay_public_key, body)?;
        if n.app_id != self.cfg.app_id {
            return Err(PayError::MerchantMismatch {
                expected: self.cfg.app_id.clone(),
                got: n.app_id,
            });
        }
        Ok(n)
    }

    /// The signed form for one call (public parameters, `biz_content`, `sign`).
    pub fn signed_params(
        &self,
        method: &str,
        biz: &serde_json::Value,
        notify_url: Option<&str>,
    ) -> Result<Vec<(String, String)>, PayError> {
        let mut params: Vec<(String, String)> = vec![
            ("app_id".into(), self.cfg.app_id.clone()),
            ("method".into(), method.to_owned()),
            ("format".into(), "JSON".into()),
            ("charset".into(), "utf-8".into()),
            ("sign_type".into(), "RSA2".into()),
            ("timestamp".into(), format_time(self.clock.now_unix())),
            ("version".into(), "1.0".into()),
            ("biz_content".into(), biz.to_string()),
        ];
        if let Some(u) = notify_url {
            params.push(("notify_url".into(), u.to_owned()));
        }
        let sign = sign_params(
            &self.cfg.app_private_key,
            params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )?;
        params.push(("sign".into(), sign));
        Ok(params)
    }

    /// One gateway call → the verified raw `<method>_response` text of a `10000` answer.
    async fn call(
        &self,
        method: &str,
        biz: &serde_json::Value,
        notify_url: Option<&str>,
    ) -> Result<String, PayError> {
        let params = self.signed_params(method, biz, notify_url)?;
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
            .map_err(|e| transport(&e))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| transport(&e))?;
        if status.is_server_error() {
            return Err(PayError::Unavailable {
                platform: Platform::Alipay,
                code: format!("HTTP_{}", status.as_u16()),
                message: String::new(),
            });
        }
        let parts = response_parts(&body, method)?;
        let signed = match &parts.sign {
            Some(sign) => {
                self.cfg
                    .alipay_public_key
                    .verify_sha256_base64(parts.content.as_bytes(), sign)?;
                true
            }
            None => false,
        };
        let common: Common = parse_json("Alipay answer", parts.content)?;
        if common.code == "10000" && !parts.is_error_response {
            if !signed {
                return Err(PayError::SignatureInvalid);
            }
            return Ok(parts.content.to_owned());
        }
        Err(map_error(common, signed))
    }
}

/// Gateway codes → errors. Unsigned answers are believed only where Alipay cannot sign
/// (unknown app, bad signature) or where believing costs nothing but a retry.
fn map_error(c: Common, signed: bool) -> PayError {
    let platform = Platform::Alipay;
    let sub = c.sub_code.clone().unwrap_or_default();
    let message = match &c.sub_msg {
        Some(s) if !s.is_empty() => format!("{}: {s}", c.msg),
        _ => c.msg.clone(),
    };
    let auth_sub = matches!(
        sub.as_str(),
        "isv.invalid-signature" | "isv.invalid-app-id" | "isv.invalid-sign-type"
    );
    match c.code.as_str() {
        "20000" => PayError::Unavailable {
            platform,
            code: c.code,
            message,
        },
        "40004" if sub == "ACQ.SYSTEM_ERROR" => PayError::Unavailable {
            platform,
            code: c.code,
            message,
        },
        "40005" => PayError::RateLimited {
            platform,
            code: c.code,
            message,
        },
        "20001" | "40006" => PayError::Auth {
            platform,
            code: c.code,
            message,
        },
        _ if auth_sub => PayError::Auth {
            platform,
            code: c.code,
            message,
        },
        _ if !signed => PayError::SignatureInvalid,
        _ => PayError::Rejected {
            platform,
            code: c.code,
            sub_code: c.sub_code,
            message,
        },
    }
}

fn transport(e: &reqwest::Error) -> PayError {
    PayError::Transport {
        platform: Platform::Alipay,
        message: e.to_string(),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    text: &str,
) -> Result<T, PayError> {
    serde_json::from_str(text).map_err(|e| PayError::malformed(what, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn sign_content_skips_sign_and_empty_values_and_sorts() {
        let s = sign_content([
            ("timestamp", "2024-01-01 00:00:00"),
            ("sign", "x"),
            ("app_id", "2021"),
            ("notify_url", ""),
            ("biz_content", r#"{"a":1}"#),
            ("sign_type", "RSA2"),
        ]);
        assert_eq!(
            s,
            r#"app_id=2021&biz_content={"a":1}&sign_type=RSA2&timestamp=2024-01-01 00:00:00"#
        );
    }

    #[test]
    fn response_parts_keeps_the_exact_text_including_braces_in_strings() {
        let body = r#"{ "alipay_trade_query_response" : {"code":"10000", "msg":"Success","subject":"a}b{\"c\u5f20" } ,"sign":"abc"}"#;
        let p = response_parts(body, "alipay.trade.query").unwrap();
        assert_eq!(
            p.content,
            r#"{"code":"10000", "msg":"Success","subject":"a}b{\"c\u5f20" }"#
        );
        assert_eq!(p.sign.as_deref(), Some("abc"));
        assert!(!p.is_error_response);
        let e = response_parts(
            r#"{"error_response":{"code":"40002"},"sign":""}"#,
            "alipay.trade.query",
        )
        .unwrap();
        assert!(e.is_error_response);
        assert_eq!(e.sign, None);
        assert!(response_parts("not json", "alipay.trade.query").is_err());
        assert!(response_parts(r#"{"other_response":{}}"#, "alipay.trade.query").is_err());
    }

    #[test]
    fn alipay_times_are_beijing_time_with_optional_millis() {
        let t = parse_time("t", "2015-04-28 15:45:57.320").unwrap();
        assert_eq!(t.to_rfc3339(), "2015-04-28T15:45:57.320+08:00");
        let t = parse_time("t", "2015-04-28 15:45:57").unwrap();
        assert_eq!(t.timestamp(), 1_430_207_157);
        assert_eq!(format_time(1_430_207_157), "2015-04-28 15:45:57");
        assert!(parse_time("t", "2015-04-28T15:45:57").is_err());
    }

    #[test]
    fn gateway_codes_map_to_typed_errors() {
        let c = |code: &str, sub: Option<&str>| Common {
            code: code.into(),
            msg: "m".into(),
            sub_code: sub.map(Into::into),
            sub_msg: None,
        };
        let got: Vec<&str> = [
            (c("20000", None), true),
            (c("40005", None), true),
            (c("40004", Some("ACQ.TRADE_NOT_EXIST")), true),
            (c("40004", Some("ACQ.SYSTEM_ERROR")), true),
            (c("40002", Some("isv.invalid-signature")), false),
            (c("40004", Some("ACQ.TRADE_NOT_EXIST")), false),
        ]
        .into_iter()
        .map(|(c, s)| map_error(c, s).code())
        .collect();
        assert_eq!(
            got,
            [
                "PAY_UNAVAILABLE",
                "PAY_RATE_LIMITED",
                "PAY_REJECTED",
                "PAY_UNAVAILABLE",
                "PAY_AUTH",
                "PAY_SIGNATURE_INVALID"
            ]
        );
    }

    #[test]
    fn repeated_form_fields_are_refused() {
        assert!(parse_form(b"a=1&a=2").is_err());
        assert_eq!(
            parse_form(b"a=x+y%26&b=").unwrap(),
            [("a".into(), "x y&".into()), ("b".into(), String::new())]
        );
    }
}
