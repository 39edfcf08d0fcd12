//! The Alipay half of the mock: `/gateway.do` and the async notifies.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDateTime;
use serde_json::Value;

use super::{AliRefund, AliTrade, DeliveryReport, Fault, MockError, PayMock, digits};
use crate::alipay::{NOTIFY_ACK, TIME_FORMAT, format_time, parse_form, response_key, sign_params};
use crate::error::{PayError, Platform};
use crate::money::{fen_to_yuan, yuan_to_fen};

/// Fields in the order given, the way Alipay writes them (not alphabetical), so a client that
/// re-serialises instead of taking the raw text fails verification.
fn ordered_json(fields: &[(&str, Value)]) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&Value::from(*k).to_string());
        s.push(':');
        s.push_str(&v.to_string());
    }
    s.push('}');
    s
}

struct Answer {
    fields: Vec<(&'static str, Value)>,
    signed: bool,
    /// Put under `error_response` instead of `<method>_response`.
    error_response: bool,
}

fn ok(mut fields: Vec<(&'static str, Value)>) -> Answer {
    fields.splice(
        0..0,
        [
            ("code", Value::from("10000")),
            ("msg", Value::from("Success")),
        ],
    );
    Answer {
        fields,
        signed: true,
        error_response: false,
    }
}

fn fail(code: &str, msg: &str, sub_code: Option<&str>, sub_msg: &str) -> Answer {
    let mut fields = vec![("code", Value::from(code)), ("msg", Value::from(msg))];
    if let Some(sc) = sub_code {
        fields.push(("sub_code", Value::from(sc)));
        fields.push(("sub_msg", Value::from(sub_msg)));
    }
    Answer {
        fields,
        signed: true,
        error_response: false,
    }
}

fn business(sub_code: &str, sub_msg: &str) -> Answer {
    fail("40004", "Business Failed", Some(sub_code), sub_msg)
}

fn invalid(sub_code: &str, sub_msg: &str) -> Answer {
    fail("40002", "Invalid Arguments", Some(sub_code), sub_msg)
}

fn missing(field: &str) -> Answer {
    fail(
        "40001",
        "Missing Required Arguments",
        Some(&format!("isv.missing-{field}")),
        &format!("缺少{field}参数"),
    )
}

fn render(mock: &PayMock, method: &str, a: Answer) -> Response {
    let key = if a.error_response {
        "error_response".to_owned()
    } else {
        response_key(method)
    };
    let content = ordered_json(&a.fields);
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

pub(super) async fn gateway(State(mock): State<PayMock>, uri: Uri, body: Bytes) -> Response {
    let mut params = match parse_form(uri.query().unwrap_or("").as_bytes()) {
        Ok(p) => p,
        Err(_) => return render(&mock, "", invalid("isv.invalid-parameter", "重复的参数")),
    };
    match parse_form(&body) {
        Ok(p) => params.extend(p),
        Err(_) => return render(&mock, "", invalid("isv.invalid-parameter", "重复的参数")),
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let method = get("method").unwrap_or_default().to_owned();
    let answer = match admit(&mock, &params) {
        Ok(app_id) => dispatch(&mock, &app_id, &method, &params),
        Err(a) => a,
    };
    render(&mock, &method, answer)
}

/// App known, RSA2 signature valid, timestamp well-formed, then fault injection.
fn admit(mock: &PayMock, params: &[(String, String)]) -> Result<String, Answer> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if get("method").is_none_or(str::is_empty) {
        let mut a = missing("method");
        a.error_response = true;
        return Err(a);
    }
    let app_id = get("app_id").unwrap_or_default();
    let Some(app) = mock
        .inner
        .cfg
        .alipay_apps
        .iter()
        .find(|a| a.app_id == app_id)
    else {
        // Alipay cannot pick a key to sign with for an app it does not know.
        let mut a = invalid("isv.invalid-app-id", "无效的AppID参数");
        a.signed = false;
        return Err(a);
    };
    if get("sign_type") != Some("RSA2") {
        return Err(invalid("isv.invalid-signature-type", "无效的签名类型"));
    }
    let Some(sign) = get("sign") else {
        return Err(missing("signature"));
    };
    let verified = sign_params_check(&app.public_key, params, sign);
    if !verified {
        return Err(invalid(
            "isv.invalid-signature",
            "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配",
        ));
    }
    if get("timestamp").is_none_or(|t| NaiveDateTime::parse_from_str(t, TIME_FORMAT).is_err()) {
        return Err(invalid("isv.invalid-timestamp", "非法的时间戳参数"));
    }
    match mock.draw_fault() {
        Some(Fault::ServerError) => Err(fail(
            "20000",
            "Service Currently Unavailable",
            Some("isp.unknow-error"),
            "系统繁忙",
        )),
        Some(Fault::RateLimited) => Err(fail(
            "40005",
            "Call Limited",
            Some("isv.call-limited"),
            "调用频率超限",
        )),
        None => Ok(app.app_id.clone()),
    }
}

/// Request signature: every non-empty parameter but `sign` (sign_type included).
fn sign_params_check(
    key: &crate::keys::PublicKey,
    params: &[(String, String)],
    sign: &str,
) -> bool {
    let content = crate::alipay::sign_content(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    key.verify_sha256_base64(content.as_bytes(), sign).is_ok()
}

fn dispatch(mock: &PayMock, app_id: &str, method: &str, params: &[(String, String)]) -> Answer {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let biz: Value = match serde_json::from_str(get("biz_content").unwrap_or("{}")) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return invalid(
                "isv.invalid-biz-content",
                "biz_content 不是合法的 JSON 对象",
            );
        }
    };
    let notify_url = get("notify_url")
        .filter(|u| !u.is_empty())
        .map(str::to_owned);
    match method {
        "alipay.trade.create" => trade_create(mock, app_id, &biz, notify_url),
        "alipay.trade.query" => trade_query(mock, app_id, &biz),
        "alipay.trade.refund" => trade_refund(mock, app_id, &biz),
        "alipay.trade.close" => trade_close(mock, app_id, &biz),
        _ => {
            let mut a = invalid("isv.invalid-method", "不存在的方法名");
            a.error_response = true;
            a
        }
    }
}

fn text<'a>(biz: &'a Value, k: &str) -> Option<&'a str> {
    biz.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn find_trade_key(mock: &PayMock, app_id: &str, biz: &Value) -> Option<(String, String)> {
    let out_trade_no = text(biz, "out_trade_no");
    let trade_no = text(biz, "trade_no");
    mock.with_store(|s| {
        s.ali
            .values()
            .find(|t| {
                t.app_id == app_id
                    && (Some(t.out_trade_no.as_str()) == out_trade_no
                        || Some(t.trade_no.as_str()) == trade_no)
            })
            .map(|t| (t.app_id.clone(), t.out_trade_no.clone()))
    })
}

fn trade_create(mock: &PayMock, app_id: &str, biz: &Value, notify_url: Option<String>) -> Answer {
    let Some(out_trade_no) = text(biz, "out_trade_no") else {
        return missing("out_trade_no");
    };
    let Some(amount) = text(biz, "total_amount") else {
        return missing("total_amount");
    };
    let Some(subject) = text(biz, "subject") else {
        return missing("subject");
    };
    let Some(buyer_id) = text(biz, "buyer_id").or_else(|| text(biz, "buyer_open_id")) else {
        return business("ACQ.BUYER_NOT_EXIST", "买家不存在");
    };
    let total_fen = match yuan_to_fen(amount) {
        Ok(f) if (1..=10_000_000_000).contains(&f) => f,
        _ => {
            return invalid(
                "isv.invalid-parameter",
                "total_amount 取值范围 [0.01,100000000]",
            );
        }
    };
    let now = mock.now();
    let key = (app_id.to_owned(), out_trade_no.to_owned());
    mock.with_store(|s| {
        if let Some(t) = s.ali.get(&key) {
            return match t.trade_status.as_str() {
                "TRADE_SUCCESS" | "TRADE_FINISHED" => {
                    business("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
                }
                "TRADE_CLOSED" => business("ACQ.TRADE_HAS_CLOSE", "交易已经关闭"),
                _ if t.total_fen != total_fen || t.buyer_id != buyer_id => {
                    business("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
                }
                _ => ok(vec![
                    ("out_trade_no", Value::from(t.out_trade_no.clone())),
                    ("trade_no", Value::from(t.trade_no.clone())),
                ]),
            };
        }
        let seq = s.next_seq();
        let date = format_time(now)
            .get(0..10)
            .unwrap_or_default()
            .replace('-', "");
        let trade_no = format!("{date}2200{seq:06}{}", digits(10));
        s.ali_by_no
            .entry(out_trade_no.to_owned())
            .or_default()
            .push(app_id.to_owned());
        s.ali.insert(
            key.clone(),
            AliTrade {
                app_id: app_id.to_owned(),
                out_trade_no: out_trade_no.to_owned(),
                trade_no: trade_no.clone(),
                subject: subject.to_owned(),
                total_fen,
                buyer_id: buyer_id.to_owned(),
                notify_url,
                trade_status: "WAIT_BUYER_PAY".to_owned(),
                gmt_create: format_time(now),
                gmt_payment: None,
                refunded_fen: 0,
            },
        );
        ok(vec![
            ("out_trade_no", Value::from(out_trade_no)),
            ("trade_no", Value::from(trade_no)),
        ])
    })
}

fn trade_query(mock: &PayMock, app_id: &str, biz: &Value) -> Answer {
    if text(biz, "out_trade_no").is_none() && text(biz, "trade_no").is_none() {
        return missing("out_trade_no");
    }
    let Some(key) = find_trade_key(mock, app_id, biz) else {
        return business("ACQ.TRADE_NOT_EXIST", "交易不存在");
    };
    mock.with_store(|s| {
        let Some(t) = s.ali.get(&key) else {
            return business("ACQ.TRADE_NOT_EXIST", "交易不存在");
        };
        let mut fields = vec![
            ("trade_no", Value::from(t.trade_no.clone())),
            ("out_trade_no", Value::from(t.out_trade_no.clone())),
            ("buyer_logon_id", Value::from("159****5620")),
            ("trade_status", Value::from(t.trade_status.clone())),
            ("total_amount", Value::from(fen_to_yuan(t.total_fen))),
        ];
        if let Some(paid) = &t.gmt_payment {
            fields.push(("buyer_pay_amount", Value::from(fen_to_yuan(t.total_fen))));
            fields.push(("send_pay_date", Value::from(paid.clone())));
        }
        fields.push(("buyer_user_id", Value::from(t.buyer_id.clone())));
        fields.push(("subject", Value::from(t.subject.clone())));
        ok(fields)
    })
}

fn trade_refund(mock: &PayMock, app_id: &str, biz: &Value) -> Answer {
    let Some(amount) = text(biz, "refund_amount") else {
        return missing("refund_amount");
    };
    let Ok(refund_fen) = yuan_to_fen(amount) else {
        return invalid("isv.invalid-parameter", "refund_amount 格式错误");
    };
    if refund_fen < 1 {
        return invalid(
            "isv.invalid-parameter",
            "refund_amount 取值范围 [0.01,100000000]",
        );
    }
    let Some(key) = find_trade_key(mock, app_id, biz) else {
        return business("ACQ.TRADE_NOT_EXIST", "交易不存在");
    };
    let now = mock.now();
    mock.with_store(|s| {
        let Some(t) = s.ali.get(&key).cloned() else {
            return business("ACQ.TRADE_NOT_EXIST", "交易不存在");
        };
        // Without out_request_no Alipay treats the call as a full refund keyed by the trade.
        let out_request_no = text(biz, "out_request_no")
            .unwrap_or(&t.out_trade_no)
            .to_owned();
        let refund_key = (key.0.clone(), key.1.clone(), out_request_no.clone());
        let answer = |t: &AliTrade, fund_change: &str, gmt: &str| {
            ok(vec![
                ("trade_no", Value::from(t.trade_no.clone())),
                ("out_trade_no", Value::from(t.out_trade_no.clone())),
                ("buyer_logon_id", Value::from("159****5620")),
                ("fund_change", Value::from(fund_change)),
                ("refund_fee", Value::from(fen_to_yuan(t.refunded_fen))),
                ("gmt_refund_pay", Value::from(gmt)),
                ("buyer_user_id", Value::from(t.buyer_id.clone())),
            ])
        };
        if let Some(existing) = s.ali_refunds.get(&refund_key) {
            // Idempotent by out_request_no: a retry moves no money and says so.
            return if existing.refund_fen == refund_fen {
                answer(&t, "N", &existing.gmt_refund)
            } else {
                business(
                    "ACQ.INVALID_PARAMETER",
                    "退款请求号对应的退款金额与之前不一致",
                )
            };
        }
        if t.trade_status != "TRADE_SUCCESS" {
            return business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法");
        }
        if t.refunded_fen + refund_fen > t.total_fen {
            return business("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限");
        }
        let gmt = format!("{}.000", format_time(now));
        let Some(trade) = s.ali.get_mut(&key) else {
            return business("ACQ.TRADE_NOT_EXIST", "交易不存在");
        };
        trade.refunded_fen += refund_fen;
        if trade.refunded_fen == trade.total_fen {
            trade.trade_status = "TRADE_CLOSED".to_owned();
        }
        let t = trade.clone();
        s.ali_refunds.insert(
            refund_key,
            AliRefund {
                app_id: t.app_id.clone(),
                out_trade_no: t.out_trade_no.clone(),
                out_request_no,
                refund_fen,
                gmt_refund: gmt.clone(),
            },
        );
        answer(&t, "Y", &gmt)
    })
}

fn trade_close(mock: &PayMock, app_id: &str, biz: &Value) -> Answer {
    let Some(key) = find_trade_key(mock, app_id, biz) else {
        return business("ACQ.TRADE_NOT_EXIST", "交易不存在");
    };
    mock.with_store(|s| {
        let Some(t) = s.ali.get_mut(&key) else {
            return business("ACQ.TRADE_NOT_EXIST", "交易不存在");
        };
        match t.trade_status.as_str() {
            "WAIT_BUYER_PAY" | "TRADE_CLOSED" if t.refunded_fen == 0 => {
                t.trade_status = "TRADE_CLOSED".to_owned();
                ok(vec![
                    ("trade_no", Value::from(t.trade_no.clone())),
                    ("out_trade_no", Value::from(t.out_trade_no.clone())),
                ])
            }
            _ => business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法"),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Notifies

/// Signs a notify the way Alipay does: `sign_type` is not covered, then added with `sign`.
fn signed_notify(
    mock: &PayMock,
    mut fields: Vec<(&'static str, String)>,
) -> Result<String, PayError> {
    fields.retain(|(_, v)| !v.is_empty());
    let sign = sign_params(
        &mock.inner.cfg.alipay_platform_key,
        fields.iter().map(|(k, v)| (*k, v.as_str())),
    )?;
    fields.push(("sign_type", "RSA2".to_owned()));
    fields.push(("sign", sign));
    Ok(form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields.iter().map(|(k, v)| (*k, v.as_str())))
        .finish())
}

fn base_fields(mock: &PayMock, t: &AliTrade) -> Vec<(&'static str, String)> {
    vec![
        ("notify_time", format_time(mock.now())),
        ("notify_type", "trade_status_sync".to_owned()),
        ("notify_id", format!("2024{}", digits(30))),
        ("charset", "utf-8".to_owned()),
        ("version", "1.0".to_owned()),
        ("app_id", t.app_id.clone()),
        ("auth_app_id", t.app_id.clone()),
        ("trade_no", t.trade_no.clone()),
        ("out_trade_no", t.out_trade_no.clone()),
        ("buyer_id", t.buyer_id.clone()),
        ("seller_id", "2088101117955611".to_owned()),
        ("trade_status", t.trade_status.clone()),
        ("total_amount", fen_to_yuan(t.total_fen)),
        ("subject", t.subject.clone()),
        ("gmt_create", t.gmt_create.clone()),
        ("gmt_payment", t.gmt_payment.clone().unwrap_or_default()),
    ]
}

async fn send_notify(
    mock: &PayMock,
    t: &AliTrade,
    fields: Vec<(&'static str, String)>,
) -> Result<DeliveryReport, MockError> {
    let Some(url) = t.notify_url.clone() else {
        return Err(MockError::InvalidState {
            what: format!("Alipay trade {}", t.out_trade_no),
            state: "created without notify_url".to_owned(),
            action: "notify",
        });
    };
    let body = signed_notify(mock, fields)?;
    let request = || {
        Ok(mock
            .inner
            .http
            .post(&url)
            .header(
                "Content-Type",
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .body(body.clone()))
    };
    mock.deliver(
        Platform::Alipay,
        "trade_status_sync",
        &t.out_trade_no,
        &url,
        request,
        |status, text| status == 200 && text.trim() == NOTIFY_ACK,
    )
    .await
}

pub(super) async fn pay(mock: &PayMock, out_trade_no: &str) -> Result<DeliveryReport, MockError> {
    let now = format_time(mock.now());
    let t = mock.with_store(|s| {
        let t = s
            .ali_key(out_trade_no)
            .and_then(|k| s.ali.get_mut(&k))
            .ok_or_else(|| MockError::NotFound(format!("out_trade_no {out_trade_no}")))?;
        if t.trade_status != "WAIT_BUYER_PAY" {
            return Err(MockError::InvalidState {
                what: format!("Alipay trade {out_trade_no}"),
                state: t.trade_status.clone(),
                action: "pay",
            });
        }
        t.trade_status = "TRADE_SUCCESS".to_owned();
        t.gmt_payment = Some(now.clone());
        Ok(t.clone())
    })?;
    let mut fields = base_fields(mock, &t);
    fields.push(("receipt_amount", fen_to_yuan(t.total_fen)));
    fields.push(("buyer_pay_amount", fen_to_yuan(t.total_fen)));
    send_notify(mock, &t, fields).await
}

pub(super) async fn refund_notice(
    mock: &PayMock,
    out_request_no: &str,
) -> Result<DeliveryReport, MockError> {
    let (r, t) = mock.with_store(|s| {
        let r = s
            .ali_refunds
            .values()
            .find(|r| r.out_request_no == out_request_no)
            .cloned()
            .ok_or_else(|| MockError::NotFound(format!("out_request_no {out_request_no}")))?;
        let t = s
            .ali
            .get(&(r.app_id.clone(), r.out_trade_no.clone()))
            .cloned()
            .ok_or_else(|| MockError::NotFound(format!("out_trade_no {}", r.out_trade_no)))?;
        Ok::<_, MockError>((r, t))
    })?;
    let mut fields = base_fields(mock, &t);
    fields.push(("out_biz_no", r.out_request_no.clone()));
    fields.push(("refund_fee", fen_to_yuan(t.refunded_fen)));
    fields.push(("gmt_refund", r.gmt_refund.clone()));
    send_notify(mock, &t, fields).await
}
