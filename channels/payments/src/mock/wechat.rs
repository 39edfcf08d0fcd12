//! The WeChat Pay v3 half of the mock.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, TimeZone};
use serde::Deserialize;

use super::{DeliveryReport, Fault, MockError, PayMock, WechatMerchant, WxRefund, WxTxn, digits};
use crate::alipay::BEIJING;
use crate::error::{PayError, Platform};
use crate::wechatpay::{
    AuthorizationHeader, EncryptedResource, NotifyEnvelope, PayerWire, RefundAmountWire,
    RefundNoticeWire, RefundWire, SignedHeaders, TransactionAmountWire, TransactionWire, nonce,
};

fn rfc3339(unix: i64) -> String {
    BEIJING
        .timestamp_opt(unix, 0)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, false))
        .unwrap_or_default()
}

/// A signed answer: `Wechatpay-*` headers over the exact body bytes sent.
fn reply(mock: &PayMock, status: StatusCode, body: Option<serde_json::Value>) -> Response {
    let text = body.map(|b| b.to_string()).unwrap_or_default();
    let cfg = &mock.inner.cfg;
    let signed = match SignedHeaders::sign(
        &cfg.wechat_platform_key,
        &cfg.wechat_platform_serial,
        mock.now(),
        &nonce(),
        text.as_bytes(),
    ) {
        Ok(s) => s,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("mock cannot sign: {e}"),
            )
                .into_response();
        }
    };
    let mut resp = (status, text.clone()).into_response();
    let h = resp.headers_mut();
    for (name, value) in signed.pairs() {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&format!("08{}", digits(28))) {
        h.insert("Request-Id", v);
    }
    if !text.is_empty() {
        h.insert("Content-Type", HeaderValue::from_static("application/json"));
    }
    resp
}

/// A refusal: HTTP status plus WeChat's `{code, message}`; rendered signed like any answer.
struct Reject {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn reject(status: StatusCode, code: &'static str, message: impl Into<String>) -> Reject {
    Reject {
        status,
        code,
        message: message.into(),
    }
}

fn param_error(message: impl Into<String>) -> Reject {
    reject(StatusCode::BAD_REQUEST, "PARAM_ERROR", message)
}

type Outcome = Result<(StatusCode, Option<serde_json::Value>), Reject>;

fn finish(mock: &PayMock, outcome: Outcome) -> Response {
    match outcome {
        Ok((status, body)) => reply(mock, status, body),
        Err(r) => reply(
            mock,
            r.status,
            Some(serde_json::json!({"code": r.code, "message": r.message})),
        ),
    }
}

/// What a handler needs of the request, to check its signature.
struct Req {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// Checks `Authorization` against the registered merchant key (401 `SIGN_ERROR` otherwise),
/// then draws an injected fault.
fn admit(mock: &PayMock, req: &Req) -> Result<WechatMerchant, Reject> {
    let sign_error = |m: String| reject(StatusCode::UNAUTHORIZED, "SIGN_ERROR", m);
    let value = req
        .headers
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| sign_error("missing Authorization".into()))?;
    let auth = AuthorizationHeader::parse(value).map_err(|e| sign_error(e.to_string()))?;
    let merchant = mock
        .inner
        .cfg
        .wechat_merchants
        .iter()
        .find(|m| m.mchid == auth.mchid)
        .ok_or_else(|| sign_error(format!("unknown mchid {}", auth.mchid)))?;
    if merchant.serial_no != auth.serial_no {
        return Err(sign_error(format!(
            "serial_no {} is not the merchant's certificate",
            auth.serial_no
        )));
    }
    let body =
        std::str::from_utf8(&req.body).map_err(|_| sign_error("body is not UTF-8".into()))?;
    let path_and_query = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    auth.verify(
        &merchant.public_key,
        req.method.as_str(),
        path_and_query,
        body,
        mock.now(),
    )
    .map_err(|e| sign_error(format!("签名错误: {e}")))?;
    match mock.draw_fault() {
        Some(Fault::ServerError) => Err(reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            "系统错误",
        )),
        Some(Fault::RateLimited) => Err(reject(
            StatusCode::TOO_MANY_REQUESTS,
            "RATELIMIT_EXCEED",
            "商户发起请求的频率过高",
        )),
        None => Ok(merchant.clone()),
    }
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn out_no_ok(no: &str, max: usize) -> bool {
    (6..=max).contains(&no.len())
        && no
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*'))
}

fn txn_wire(t: &WxTxn) -> TransactionWire {
    let paid = t.transaction_id.is_some();
    TransactionWire {
        appid: t.appid.clone(),
        mchid: t.mchid.clone(),
        out_trade_no: t.out_trade_no.clone(),
        transaction_id: t.transaction_id.clone(),
        trade_type: paid.then(|| "JSAPI".to_owned()),
        trade_state_desc: Some(
            match t.trade_state.as_str() {
                "SUCCESS" => "支付成功",
                "REFUND" => "转入退款",
                "CLOSED" => "已关闭",
                _ => "未支付",
            }
            .to_owned(),
        ),
        trade_state: t.trade_state.clone(),
        bank_type: paid.then(|| "OTHERS".to_owned()),
        attach: t.attach.clone(),
        success_time: t.success_time.clone(),
        payer: Some(PayerWire {
            openid: t.openid.clone(),
        }),
        amount: TransactionAmountWire {
            total: t.total_fen,
            payer_total: paid.then_some(t.total_fen),
            currency: "CNY".to_owned(),
            payer_currency: paid.then(|| "CNY".to_owned()),
        },
    }
}

fn refund_wire(r: &WxRefund, transaction_id: &str) -> RefundWire {
    RefundWire {
        refund_id: r.refund_id.clone(),
        out_refund_no: r.out_refund_no.clone(),
        transaction_id: transaction_id.to_owned(),
        out_trade_no: r.out_trade_no.clone(),
        channel: Some("ORIGINAL".to_owned()),
        user_received_account: Some("支付用户零钱".to_owned()),
        success_time: r.success_time.clone(),
        create_time: r.create_time.clone(),
        status: r.status.clone(),
        amount: RefundAmountWire {
            total: r.total_fen,
            refund: r.refund_fen,
            payer_total: Some(r.total_fen),
            payer_refund: Some(r.refund_fen),
            currency: Some("CNY".to_owned()),
        },
    }
}

fn ok_json<T: serde::Serialize>(v: &T) -> Outcome {
    serde_json::to_value(v)
        .map(|v| (StatusCode::OK, Some(v)))
        .map_err(|e| {
            reject(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SYSTEM_ERROR",
                e.to_string(),
            )
        })
}

#[derive(Deserialize)]
struct PrepayBody {
    appid: String,
    mchid: String,
    description: String,
    out_trade_no: String,
    notify_url: String,
    amount: PrepayAmount,
    payer: PayerWire,
    #[serde(default)]
    attach: Option<String>,
}

#[derive(Deserialize)]
struct PrepayAmount {
    total: i64,
    #[serde(default)]
    currency: Option<String>,
}

pub(super) async fn jsapi_prepay(
    State(mock): State<PayMock>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = Req {
        method,
        uri,
        headers,
        body,
    };
    finish(&mock, jsapi_prepay_do(&mock, &req))
}

fn jsapi_prepay_do(mock: &PayMock, http: &Req) -> Outcome {
    let merchant = admit(mock, http)?;
    let req: PrepayBody = serde_json::from_slice(&http.body)
        .map_err(|e| param_error(format!("输入源“/body”映射到值字段失败: {e}")))?;
    if req.mchid != merchant.mchid {
        return Err(param_error("mchid does not match the Authorization mchid"));
    }
    if !out_no_ok(&req.out_trade_no, 32) {
        return Err(param_error("out_trade_no must be 6-32 of [0-9A-Za-z_-|*]"));
    }
    if req.description.is_empty() || req.appid.is_empty() || req.payer.openid.is_empty() {
        return Err(param_error(
            "description, appid and payer.openid are required",
        ));
    }
    if !(req.notify_url.starts_with("http://") || req.notify_url.starts_with("https://")) {
        return Err(param_error("notify_url must be an http(s) URL"));
    }
    if req.amount.total < 1 || req.amount.currency.as_deref().is_some_and(|c| c != "CNY") {
        return Err(param_error("amount.total must be ≥ 1 fen, currency CNY"));
    }
    let fingerprint = format!(
        "{}|{}|{}|{}|{}|{:?}",
        req.appid, req.description, req.notify_url, req.amount.total, req.payer.openid, req.attach
    );
    let now = mock.now();
    let key = (merchant.mchid.clone(), req.out_trade_no.clone());
    let prepay_id = mock.with_store(|s| {
        if let Some(t) = s.wx.get(&key) {
            let conflict = |m: String| reject(StatusCode::BAD_REQUEST, "INVALID_REQUEST", m);
            return if t.trade_state != "NOTPAY" {
                Err(conflict(format!("order is {}", t.trade_state)))
            } else if t.request_fingerprint != fingerprint {
                Err(conflict(
                    "out_trade_no already used with other parameters".to_owned(),
                ))
            } else {
                Ok(t.prepay_id.clone())
            };
        }
        let stamp = BEIJING
            .timestamp_opt(now, 0)
            .single()
            .map(|t| t.format("%Y%m%d%H%M%S").to_string())
            .unwrap_or_default();
        let prepay_id = format!("wx{stamp}{}", digits(20));
        s.wx_by_no
            .entry(req.out_trade_no.clone())
            .or_default()
            .push(merchant.mchid.clone());
        s.wx.insert(
            key.clone(),
            WxTxn {
                appid: req.appid.clone(),
                mchid: merchant.mchid.clone(),
                out_trade_no: req.out_trade_no.clone(),
                notify_url: req.notify_url.clone(),
                total_fen: req.amount.total,
                openid: req.payer.openid.clone(),
                attach: req.attach.clone(),
                prepay_id: prepay_id.clone(),
                request_fingerprint: fingerprint.clone(),
                transaction_id: None,
                trade_state: "NOTPAY".to_owned(),
                success_time: None,
                refunded_fen: 0,
            },
        );
        Ok(prepay_id)
    })?;
    Ok((
        StatusCode::OK,
        Some(serde_json::json!({"prepay_id": prepay_id})),
    ))
}

fn check_mchid_param(uri: &Uri, merchant: &WechatMerchant) -> Result<(), Reject> {
    match query_param(uri, "mchid") {
        Some(m) if m == merchant.mchid => Ok(()),
        Some(_) => Err(param_error("mchid does not match the Authorization mchid")),
        None => Err(param_error("mchid is required")),
    }
}

fn order_not_exist() -> Reject {
    reject(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在")
}

pub(super) async fn query_by_out_trade_no(
    State(mock): State<PayMock>,
    Path(out_trade_no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = Req {
        method,
        uri,
        headers,
        body,
    };
    let outcome = (|| {
        let merchant = admit(&mock, &req)?;
        check_mchid_param(&req.uri, &merchant)?;
        let txn = mock
            .with_store(|s| s.wx.get(&(merchant.mchid.clone(), out_trade_no)).cloned())
            .ok_or_else(order_not_exist)?;
        ok_json(&txn_wire(&txn))
    })();
    finish(&mock, outcome)
}

pub(super) async fn query_by_id(
    State(mock): State<PayMock>,
    Path(transaction_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = Req {
        method,
        uri,
        headers,
        body,
    };
    let outcome = (|| {
        let merchant = admit(&mock, &req)?;
        check_mchid_param(&req.uri, &merchant)?;
        let txn = mock
            .with_store(|s| {
                s.wx.values()
                    .find(|t| {
                        t.mchid == merchant.mchid
                            && t.transaction_id.as_deref() == Some(transaction_id.as_str())
                    })
                    .cloned()
            })
            .ok_or_else(order_not_exist)?;
        ok_json(&txn_wire(&txn))
    })();
    finish(&mock, outcome)
}

pub(super) async fn close(
    State(mock): State<PayMock>,
    Path(out_trade_no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    #[derive(Deserialize)]
    struct CloseBody {
        mchid: String,
    }
    let req = Req {
        method,
        uri,
        headers,
        body,
    };
    let outcome = (|| {
        let merchant = admit(&mock, &req)?;
        let b: CloseBody =
            serde_json::from_slice(&req.body).map_err(|e| param_error(e.to_string()))?;
        if b.mchid != merchant.mchid {
            return Err(param_error("mchid does not match the Authorization mchid"));
        }
        mock.with_store(
            |s| match s.wx.get_mut(&(merchant.mchid.clone(), out_trade_no)) {
                None => Err(order_not_exist()),
                Some(t) if t.trade_state == "NOTPAY" || t.trade_state == "CLOSED" => {
                    t.trade_state = "CLOSED".to_owned();
                    Ok((StatusCode::NO_CONTENT, None))
                }
                Some(t) => Err(reject(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    format!("order is {}, cannot close", t.trade_state),
                )),
            },
        )
    })();
    finish(&mock, outcome)
}

#[derive(Deserialize)]
struct RefundBody {
    #[serde(default)]
    out_trade_no: Option<String>,
    #[serde(default)]
    transaction_id: Option<String>,
    out_refund_no: String,
    #[serde(default)]
    notify_url: Option<String>,
    amount: RefundBodyAmount,
}

#[derive(Deserialize)]
struct RefundBodyAmount {
    refund: i64,
    total: i64,
    currency: String,
}

pub(super) async fn refund(
    State(mock): State<PayMock>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = Req {
        method,
        uri,
        headers,
        body,
    };
    finish(&mock, refund_do(&mock, &req))
}

fn refund_do(mock: &PayMock, http: &Req) -> Outcome {
    let merchant = admit(mock, http)?;
    let req: RefundBody =
        serde_json::from_slice(&http.body).map_err(|e| param_error(e.to_string()))?;
    if !out_no_ok(&req.out_refund_no, 64) {
        return Err(param_error("out_refund_no must be 6-64 of [0-9A-Za-z_-|*]"));
    }
    if req.amount.currency != "CNY" || req.amount.refund < 1 || req.amount.total < 1 {
        return Err(param_error(
            "amount.refund and amount.total must be ≥ 1 fen, currency CNY",
        ));
    }
    let now = mock.now();
    let mchid = merchant.mchid.clone();
    let invalid = |m: String| reject(StatusCode::BAD_REQUEST, "INVALID_REQUEST", m);
    let not_found = || reject(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "订单不存在");
    let wire = mock.with_store(|s| {
        let txn_key = s
            .wx
            .iter()
            .find(|(_, t)| {
                t.mchid == mchid
                    && (req.out_trade_no.as_deref() == Some(t.out_trade_no.as_str())
                        || (req.transaction_id.is_some() && req.transaction_id == t.transaction_id))
            })
            .map(|(k, _)| k.clone())
            .ok_or_else(not_found)?;
        let refund_key = (mchid.clone(), req.out_refund_no.clone());
        if let Some(existing) = s.wx_refunds.get(&refund_key) {
            // Idempotent by out_refund_no: the same refund again is the same refund.
            if existing.out_trade_no != txn_key.1 || existing.refund_fen != req.amount.refund {
                return Err(invalid(
                    "out_refund_no already used with other parameters".to_owned(),
                ));
            }
            let txn_id = s.wx.get(&txn_key).and_then(|t| t.transaction_id.clone());
            return Ok(refund_wire(existing, txn_id.as_deref().unwrap_or_default()));
        }
        let seq = s.next_seq();
        let txn = s.wx.get_mut(&txn_key).ok_or_else(not_found)?;
        if txn.trade_state != "SUCCESS" && txn.trade_state != "REFUND" {
            return Err(invalid(format!(
                "order is {}, cannot refund",
                txn.trade_state
            )));
        }
        if req.amount.total != txn.total_fen {
            return Err(param_error("amount.total is not the order total"));
        }
        if txn.refunded_fen + req.amount.refund > txn.total_fen {
            return Err(invalid("申请退款金额超过订单可退金额".to_owned()));
        }
        txn.refunded_fen += req.amount.refund;
        let r = WxRefund {
            mchid: mchid.clone(),
            out_trade_no: txn.out_trade_no.clone(),
            out_refund_no: req.out_refund_no.clone(),
            refund_id: format!("5030{seq:06}{}", digits(19)),
            refund_fen: req.amount.refund,
            total_fen: txn.total_fen,
            notify_url: req.notify_url.clone(),
            status: "PROCESSING".to_owned(),
            create_time: rfc3339(now),
            success_time: None,
        };
        let wire = refund_wire(&r, txn.transaction_id.as_deref().unwrap_or_default());
        s.wx_refunds.insert(refund_key, r);
        Ok(wire)
    })?;
    ok_json(&wire)
}

pub(super) async fn refund_query(
    State(mock): State<PayMock>,
    Path(out_refund_no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = Req {
        method,
        uri,
        headers,
        body,
    };
    let outcome = (|| {
        let merchant = admit(&mock, &req)?;
        let wire = mock
            .with_store(|s| {
                let r = s.wx_refunds.get(&(merchant.mchid.clone(), out_refund_no))?;
                let txn_id =
                    s.wx.get(&(r.mchid.clone(), r.out_trade_no.clone()))
                        .and_then(|t| t.transaction_id.clone());
                Some(refund_wire(r, txn_id.as_deref().unwrap_or_default()))
            })
            .ok_or_else(|| reject(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "退款单不存在"))?;
        ok_json(&wire)
    })();
    finish(&mock, outcome)
}

// ---------------------------------------------------------------------------------------------
// Callbacks

fn merchant_of(mock: &PayMock, mchid: &str) -> Result<WechatMerchant, MockError> {
    mock.inner
        .cfg
        .wechat_merchants
        .iter()
        .find(|m| m.mchid == mchid)
        .cloned()
        .ok_or_else(|| MockError::NotFound(format!("merchant {mchid}")))
}

/// One callback to send: where, about which order, and the plaintext `resource`.
struct Callback<'a> {
    url: &'a str,
    out_trade_no: &'a str,
    event_type: &'a str,
    summary: &'a str,
    /// `transaction` or `refund`; also the AEAD associated data.
    original_type: &'a str,
    plaintext: &'a [u8],
}

/// Encrypts `plaintext` into a callback envelope and delivers it with fresh signed headers per
/// attempt. 200 or 204 acknowledges.
async fn send_callback(
    mock: &PayMock,
    merchant: &WechatMerchant,
    cb: Callback<'_>,
) -> Result<DeliveryReport, MockError> {
    let Callback {
        url,
        out_trade_no,
        event_type,
        summary,
        original_type,
        plaintext,
    } = cb;
    let resource_nonce: String = nonce().chars().take(12).collect();
    let ciphertext = merchant
        .apiv3_key
        .encrypt(&resource_nonce, original_type, plaintext)?;
    let envelope = NotifyEnvelope {
        id: format!("{}-{}-{}", digits(8), digits(4), digits(12)),
        create_time: rfc3339(mock.now()),
        event_type: event_type.to_owned(),
        resource_type: "encrypt-resource".to_owned(),
        summary: summary.to_owned(),
        resource: EncryptedResource {
            algorithm: "AEAD_AES_256_GCM".to_owned(),
            ciphertext,
            associated_data: original_type.to_owned(),
            nonce: resource_nonce,
            original_type: original_type.to_owned(),
        },
    };
    let body = serde_json::to_string(&envelope).map_err(|e| PayError::malformed("callback", e))?;
    let cfg = &mock.inner.cfg;
    let request = || -> Result<reqwest::RequestBuilder, PayError> {
        let signed = SignedHeaders::sign(
            &cfg.wechat_platform_key,
            &cfg.wechat_platform_serial,
            mock.now(),
            &nonce(),
            body.as_bytes(),
        )?;
        let mut rb = mock
            .inner
            .http
            .post(url)
            .header("Content-Type", "application/json")
            .header("Request-Id", format!("08{}", digits(28)))
            .body(body.clone());
        for (name, value) in signed.pairs() {
            rb = rb.header(name, value);
        }
        Ok(rb)
    };
    mock.deliver(
        Platform::WechatPay,
        event_type,
        out_trade_no,
        url,
        request,
        |status, _| status == 200 || status == 204,
    )
    .await
}

pub(super) async fn pay(mock: &PayMock, out_trade_no: &str) -> Result<DeliveryReport, MockError> {
    let now = mock.now();
    let txn = mock.with_store(|s| {
        let seq = s.next_seq();
        let t = s
            .wx_key(out_trade_no)
            .and_then(|k| s.wx.get_mut(&k))
            .ok_or_else(|| MockError::NotFound(format!("out_trade_no {out_trade_no}")))?;
        if t.trade_state != "NOTPAY" {
            return Err(MockError::InvalidState {
                what: format!("WeChat Pay order {out_trade_no}"),
                state: t.trade_state.clone(),
                action: "pay",
            });
        }
        t.trade_state = "SUCCESS".to_owned();
        t.transaction_id = Some(format!("4200{seq:06}{}", digits(18)));
        t.success_time = Some(rfc3339(now));
        Ok(t.clone())
    })?;
    let merchant = merchant_of(mock, &txn.mchid)?;
    let plain =
        serde_json::to_vec(&txn_wire(&txn)).map_err(|e| PayError::malformed("transaction", e))?;
    let cb = Callback {
        url: &txn.notify_url,
        out_trade_no,
        event_type: "TRANSACTION.SUCCESS",
        summary: "支付成功",
        original_type: "transaction",
        plaintext: &plain,
    };
    send_callback(mock, &merchant, cb).await
}

pub(super) async fn refund_notice(
    mock: &PayMock,
    out_refund_no: &str,
) -> Result<DeliveryReport, MockError> {
    let now = mock.now();
    let (refund, txn) = mock.with_store(|s| {
        let r = s
            .wx_refunds
            .values_mut()
            .find(|r| r.out_refund_no == out_refund_no)
            .ok_or_else(|| MockError::NotFound(format!("out_refund_no {out_refund_no}")))?;
        if r.status == "PROCESSING" {
            r.status = "SUCCESS".to_owned();
            r.success_time = Some(rfc3339(now));
        }
        let r = r.clone();
        let t =
            s.wx.get_mut(&(r.mchid.clone(), r.out_trade_no.clone()))
                .ok_or_else(|| MockError::NotFound(format!("out_trade_no {}", r.out_trade_no)))?;
        t.trade_state = "REFUND".to_owned();
        Ok::<_, MockError>((r, t.clone()))
    })?;
    let merchant = merchant_of(mock, &refund.mchid)?;
    let notice = RefundNoticeWire {
        mchid: refund.mchid.clone(),
        out_trade_no: refund.out_trade_no.clone(),
        transaction_id: txn.transaction_id.clone().unwrap_or_default(),
        out_refund_no: refund.out_refund_no.clone(),
        refund_id: refund.refund_id.clone(),
        refund_status: refund.status.clone(),
        success_time: refund.success_time.clone(),
        user_received_account: Some("支付用户零钱".to_owned()),
        amount: RefundAmountWire {
            total: refund.total_fen,
            refund: refund.refund_fen,
            payer_total: Some(refund.total_fen),
            payer_refund: Some(refund.refund_fen),
            currency: None,
        },
    };
    let plain = serde_json::to_vec(&notice).map_err(|e| PayError::malformed("refund notice", e))?;
    let url = refund
        .notify_url
        .clone()
        .unwrap_or_else(|| txn.notify_url.clone());
    let event_type = format!("REFUND.{}", refund.status);
    let cb = Callback {
        url: &url,
        out_trade_no: &refund.out_trade_no,
        event_type: &event_type,
        summary: "退款成功",
        original_type: "refund",
        plaintext: &plain,
    };
    send_callback(mock, &merchant, cb).await
}
