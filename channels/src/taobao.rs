//! Taobao Open Platform (TOP): signed form POSTs to `/router/rest`, non-simplified JSON,
//! increment paging from the last page backwards, OAID decryption and TMC pull messages.

use std::collections::HashMap;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use serde_json::Value;
use uphub_domain::catalog::ChannelType;
use uphub_domain::money::Money;
use uphub_domain::order::{
    ChannelOrder, ChannelOrderLine, ChannelTypeCode, Receiver, SealedReceiver, from_taobao,
    from_taobao_refund,
};

use crate::http::{
    Http, HttpConfig, dedupe_newest, field, int, missing, non_empty, parse_ban_seconds, parse_json,
    quantity, req_text, split_window, text, whole_seconds,
};
use crate::sign::{TopSignMethod, top_sign};
use crate::{ChannelError, Credentials, Marketplace, OrderHint, Window};

/// The trade fields the adapter asks for (WIRE.md); receiver fields make TOP generate the `oaid`.
pub const TRADE_FIELDS: &str = "tid,status,created,modified,pay_time,buyer_open_uid,payment,post_fee,\
receiver_name,receiver_state,receiver_city,receiver_district,receiver_address,receiver_mobile,oaid,orders";

const PAGE_SIZE: i64 = 100;
/// TOP recommends increment windows of at most 30 minutes.
const MAX_WINDOW_MINUTES: i64 = 30;
const DECRYPT_BATCH: usize = 20;
/// `taobao.top.oaid.decrypt` scene: "other waybill".
const DECRYPT_SCENE: &str = "1004";
const TMC_QUANTITY: &str = "100";
const TMC_CONFIRM_BATCH: usize = 200;

fn gmt8() -> FixedOffset {
    // 8 h is a valid offset; the fallback is never taken.
    FixedOffset::east_opt(8 * 3600).unwrap_or(Utc.fix())
}

/// `yyyy-MM-dd HH:mm:ss` in GMT+8.
pub(crate) fn format_gmt8(t: DateTime<Utc>) -> String {
    t.with_timezone(&gmt8())
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

pub(crate) fn parse_gmt8(s: &str, what: &str) -> Result<DateTime<Utc>, ChannelError> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .ok()
        .and_then(|n| gmt8().from_local_datetime(&n).single())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| ChannelError::Protocol(format!("{what}: bad time {s:?}")))
}

/// `taobao.trades.sold.increment.get` → `trades_sold_increment_get_response`.
fn response_key(method: &str) -> String {
    let m = method.strip_prefix("taobao.").unwrap_or(method);
    format!("{}_response", m.replace('.', "_"))
}

/// A non-simplified list `{outer: {inner: [..]}}`; a single element may come as an object, and a
/// simplified answer as a bare array.
fn top_list<'a>(v: &'a Value, outer: &str, inner: &str) -> Vec<&'a Value> {
    let wrapped = match field(v, outer) {
        Some(Value::Array(a)) => return a.iter().collect(),
        Some(w) => field(w, inner),
        None => None,
    };
    match wrapped {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(one) => vec![one],
        None => Vec::new(),
    }
}

/// Maps a TOP `error_response`.
pub(crate) fn top_error(e: &Value) -> ChannelError {
    let code = int(e, "code").unwrap_or(-1);
    let sub_code = non_empty(e, "sub_code").unwrap_or_default();
    let msg = non_empty(e, "msg").unwrap_or_default();
    let sub_msg = non_empty(e, "sub_msg").unwrap_or_default();
    let detail = [msg.as_str(), sub_msg.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(": ");
    match code {
        // 4 user, 5 session, 6 partner, 7 app, 8 app frequency: all call limits.
        4..=8 => {
            let secs = parse_ban_seconds(&sub_msg).or_else(|| parse_ban_seconds(&msg));
            ChannelError::RateLimited {
                retry_after: std::time::Duration::from_secs(secs.unwrap_or(0)),
            }
        }
        // Missing/invalid signature, session, app key.
        24..=29 => ChannelError::Auth(format!("TOP {code} {sub_code}: {detail}")),
        10 => ChannelError::Unavailable(format!("TOP {code} {sub_code}: {detail}")),
        15 | 50 if sub_code.starts_with("isp.") => {
            ChannelError::Unavailable(format!("TOP {code} {sub_code}: {detail}"))
        }
        _ => ChannelError::Rejected {
            code: if sub_code.is_empty() {
                code.to_string()
            } else {
                format!("{code}:{sub_code}")
            },
            message: detail,
        },
    }
}

/// The `<api>_response` object of an answer, or its mapped error.
pub(crate) fn parse_answer(
    method: &str,
    status: reqwest::StatusCode,
    body: &str,
) -> Result<Value, ChannelError> {
    let v = parse_json(status, body)?;
    if let Some(e) = field(&v, "error_response") {
        return Err(top_error(e));
    }
    let key = response_key(method);
    match v {
        Value::Object(mut m) => m.remove(&key).ok_or_else(|| missing(method, &key)),
        _ => Err(ChannelError::Protocol(format!(
            "{method}: answer is not an object"
        ))),
    }
}

fn yuan(v: &Value, key: &str, what: &str) -> Result<i64, ChannelError> {
    let s = req_text(v, key, what)?;
    Money::parse("amount", &s, "CNY")
        .map(|m| m.fen)
        .map_err(|e| ChannelError::Protocol(format!("{what}: {key}: {}", e.message)))
}

fn yuan_or_zero(v: &Value, key: &str, what: &str) -> Result<i64, ChannelError> {
    if non_empty(v, key).is_some() {
        yuan(v, key, what)
    } else {
        Ok(0)
    }
}

fn line_from_top(o: &Value, tid: &str) -> Result<ChannelOrderLine, ChannelError> {
    let what = format!("trade {tid} order");
    let oid = req_text(o, "oid", &what)?;
    let what = format!("trade {tid} order {oid}");
    let refund = non_empty(o, "refund_status").unwrap_or_default();
    let after_sales =
        from_taobao_refund(&refund).map_err(|e| ChannelError::Protocol(format!("{what}: {e}")))?;
    Ok(ChannelOrderLine {
        platform_item_id: req_text(o, "num_iid", &what)?,
        platform_sku_id: non_empty(o, "sku_id").unwrap_or_default(),
        outer_sku_code: non_empty(o, "outer_sku_id"),
        title: text(o, "title").unwrap_or_default(),
        quantity: quantity(o, "num", &what)?,
        unit_price_fen: yuan(o, "price", &what)?,
        paid_fen: yuan(o, "payment", &what)?,
        after_sales,
        platform_line_id: oid,
    })
}

/// One TOP trade as our order.
pub(crate) fn trade_to_order(shop_id: &str, t: &Value) -> Result<ChannelOrder, ChannelError> {
    let tid = non_empty(t, "tid_str")
        .or_else(|| non_empty(t, "tid"))
        .ok_or_else(|| missing("trade", "tid"))?;
    let what = format!("trade {tid}");
    let raw_status = req_text(t, "status", &what)?;
    let status =
        from_taobao(&raw_status).map_err(|e| ChannelError::Protocol(format!("{what}: {e}")))?;
    let paid_at = match non_empty(t, "pay_time") {
        Some(s) => Some(parse_gmt8(&s, &what)?),
        None => None,
    };
    let lines = top_list(t, "orders", "order")
        .into_iter()
        .map(|o| line_from_top(o, &tid))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ChannelOrder {
        channel: ChannelTypeCode(ChannelType::Taobao),
        shop_id: shop_id.to_owned(),
        status,
        platform_status: raw_status,
        created_at: parse_gmt8(&req_text(t, "created", &what)?, &what)?,
        modified_at: parse_gmt8(&req_text(t, "modified", &what)?, &what)?,
        paid_at,
        buyer_open_id: non_empty(t, "buyer_open_uid"),
        receiver: SealedReceiver {
            masked_name: text(t, "receiver_name").unwrap_or_default(),
            masked_phone: non_empty(t, "receiver_mobile")
                .or_else(|| non_empty(t, "receiver_phone"))
                .unwrap_or_default(),
            province: text(t, "receiver_state").unwrap_or_default(),
            city: text(t, "receiver_city").unwrap_or_default(),
            district: text(t, "receiver_district").unwrap_or_default(),
            masked_address: text(t, "receiver_address").unwrap_or_default(),
            decrypt_ref: text(t, "oaid").unwrap_or_default(),
        },
        total_fen: yuan(t, "payment", &what)?,
        post_fee_fen: yuan_or_zero(t, "post_fee", &what)?,
        lines,
        platform_order_id: tid,
    })
}

/// The pages to fetch after page 1 told the total: from the last back to the first (TOP's advice,
/// so orders modified while we page are not skipped); page 1 alone when it holds everything.
pub(crate) fn pages_backwards(total: i64, page_size: i64) -> Vec<i64> {
    let pages = (total.max(0) + page_size - 1) / page_size;
    if pages <= 1 {
        Vec::new()
    } else {
        (1..=pages).rev().collect()
    }
}

/// A Taobao shop over TOP.
pub struct TaobaoShop {
    http: Http,
    creds: Credentials,
    sign_method: TopSignMethod,
    tmc_group: String,
}

impl TaobaoShop {
    pub fn new(creds: Credentials, config: HttpConfig) -> Result<Self, ChannelError> {
        Ok(Self {
            http: Http::new(config)?,
            creds,
            sign_method: TopSignMethod::HmacSha256,
            tmc_group: "default".to_owned(),
        })
    }

    pub fn with_sign_method(mut self, method: TopSignMethod) -> Self {
        self.sign_method = method;
        self
    }

    /// The TMC group messages are consumed from (default "default").
    pub fn with_tmc_group(mut self, group: impl Into<String>) -> Self {
        self.tmc_group = group.into();
        self
    }

    async fn call(&self, method: &str, params: &[(&str, String)]) -> Result<Value, ChannelError> {
        self.http
            .retrying(method, || self.call_once(method, params))
            .await
    }

    async fn call_once(
        &self,
        method: &str,
        params: &[(&str, String)],
    ) -> Result<Value, ChannelError> {
        let timestamp = format_gmt8(Utc::now());
        let c = &self.creds;
        let mut form: Vec<(&str, &str)> = vec![
            ("method", method),
            ("app_key", &c.app_key),
            ("session", &c.access_token),
            ("timestamp", &timestamp),
            ("format", "json"),
            ("v", "2.0"),
            ("sign_method", self.sign_method.as_str()),
        ];
        form.extend(params.iter().map(|(k, v)| (*k, v.as_str())));
        // TOP signs non-empty values only; an empty one is not sent at all.
        form.retain(|(_, v)| !v.is_empty());
        let sign = top_sign(&c.app_secret, self.sign_method, form.iter().copied());
        form.push(("sign", &sign));
        let url = format!("{}/router/rest", c.base_url.trim_end_matches('/'));
        let (status, body) = self
            .http
            .send(self.http.client.post(url).form(&form))
            .await?;
        parse_answer(method, status, &body)
    }

    async fn trades_page(&self, w: Window, page: i64) -> Result<(i64, Vec<Value>), ChannelError> {
        let (start, end) = whole_seconds(w);
        let t = |s| {
            DateTime::from_timestamp(s, 0)
                .map(format_gmt8)
                .unwrap_or_default()
        };
        let r = self
            .call(
                "taobao.trades.sold.increment.get",
                &[
                    ("fields", TRADE_FIELDS.to_owned()),
                    ("start_modified", t(start)),
                    ("end_modified", t(end)),
                    ("page_no", page.to_string()),
                    ("page_size", PAGE_SIZE.to_string()),
                    ("use_has_next", "false".to_owned()),
                ],
            )
            .await?;
        let total = int(&r, "total_results").unwrap_or(0);
        let trades = top_list(&r, "trades", "trade")
            .into_iter()
            .cloned()
            .collect();
        Ok((total, trades))
    }
}

#[async_trait::async_trait]
impl Marketplace for TaobaoShop {
    fn channel(&self) -> ChannelType {
        ChannelType::Taobao
    }

    async fn orders_modified(&self, window: Window) -> Result<Vec<ChannelOrder>, ChannelError> {
        let mut trades = Vec::new();
        for w in split_window(window, TimeDelta::minutes(MAX_WINDOW_MINUTES)) {
            let (total, first) = self.trades_page(w, 1).await?;
            let pages = pages_backwards(total, PAGE_SIZE);
            if pages.is_empty() {
                trades.extend(first);
            }
            for page in pages {
                trades.extend(self.trades_page(w, page).await?.1);
            }
        }
        let orders = trades
            .iter()
            .map(|t| trade_to_order(&self.creds.shop_id, t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(dedupe_newest(orders))
    }

    async fn order(&self, platform_order_id: &str) -> Result<ChannelOrder, ChannelError> {
        let r = self
            .call(
                "taobao.trade.fullinfo.get",
                &[
                    ("fields", TRADE_FIELDS.to_owned()),
                    ("tid", platform_order_id.to_owned()),
                ],
            )
            .await?;
        let trade =
            field(&r, "trade").ok_or_else(|| missing("taobao.trade.fullinfo.get", "trade"))?;
        trade_to_order(&self.creds.shop_id, trade)
    }

    async fn decrypt_receivers(
        &self,
        sealed: &[(String, SealedReceiver)],
    ) -> Result<Vec<Option<Receiver>>, ChannelError> {
        let mut out = Vec::with_capacity(sealed.len());
        for batch in sealed.chunks(DECRYPT_BATCH) {
            let queries: Vec<Value> = batch
                .iter()
                .filter(|(_, s)| !s.decrypt_ref.is_empty())
                .map(|(tid, s)| {
                    // TOP's tid is a number; keep a non-numeric id as given.
                    let tid = tid
                        .parse::<i64>()
                        .map_or_else(|_| Value::from(tid.as_str()), Value::from);
                    serde_json::json!({"tid": tid, "oaid": s.decrypt_ref, "scene": DECRYPT_SCENE})
                })
                .collect();
            let mut found: HashMap<(String, String), Receiver> = HashMap::new();
            if !queries.is_empty() {
                let r = self
                    .call(
                        "taobao.top.oaid.decrypt",
                        &[("query_list", Value::Array(queries).to_string())],
                    )
                    .await?;
                for rec in top_list(&r, "receiver_list", "receiver") {
                    if field(rec, "matched").and_then(Value::as_bool) == Some(false) {
                        continue;
                    }
                    let key = (
                        text(rec, "tid").unwrap_or_default(),
                        text(rec, "oaid").unwrap_or_default(),
                    );
                    found.insert(
                        key,
                        Receiver {
                            name: text(rec, "name").unwrap_or_default(),
                            phone: non_empty(rec, "mobile")
                                .or_else(|| non_empty(rec, "phone"))
                                .unwrap_or_default(),
                            province: text(rec, "state").unwrap_or_default(),
                            city: text(rec, "city").unwrap_or_default(),
                            district: text(rec, "district").unwrap_or_default(),
                            address: non_empty(rec, "address_detail")
                                .or_else(|| non_empty(rec, "address"))
                                .unwrap_or_default(),
                        },
                    );
                }
            }
            for (tid, s) in batch {
                let by_tid = found.get(&(tid.clone(), s.decrypt_ref.clone()));
                let by_oaid = || found.get(&(String::new(), s.decrypt_ref.clone()));
                out.push(if s.decrypt_ref.is_empty() {
                    None
                } else {
                    by_tid.or_else(by_oaid).cloned()
                });
            }
        }
        Ok(out)
    }

    async fn ship(
        &self,
        platform_order_id: &str,
        line_ids: &[String],
        carrier_code: &str,
        tracking_no: &str,
    ) -> Result<(), ChannelError> {
        let mut params = vec![
            ("tid", platform_order_id.to_owned()),
            ("out_sid", tracking_no.to_owned()),
            ("company_code", carrier_code.to_owned()),
        ];
        if !line_ids.is_empty() {
            params.push(("sub_tid", line_ids.join(",")));
            params.push(("is_split", "1".to_owned()));
        }
        let r = self.call("taobao.logistics.offline.send", &params).await?;
        let ok = field(&r, "shipping")
            .and_then(|s| field(s, "is_success"))
            .and_then(Value::as_bool);
        match ok {
            Some(true) => Ok(()),
            _ => Err(ChannelError::Rejected {
                code: "is_success:false".into(),
                message: format!("taobao.logistics.offline.send did not ship {platform_order_id}"),
            }),
        }
    }

    async fn push_stock(
        &self,
        platform_item_id: &str,
        platform_sku_id: &str,
        quantity: i64,
    ) -> Result<(), ChannelError> {
        let r = self
            .call(
                "taobao.item.quantity.update",
                &[
                    ("num_iid", platform_item_id.to_owned()),
                    ("sku_id", platform_sku_id.to_owned()),
                    ("quantity", quantity.to_string()),
                    ("type", "1".to_owned()),
                ],
            )
            .await?;
        field(&r, "item")
            .map(|_| ())
            .ok_or_else(|| missing("taobao.item.quantity.update", "item"))
    }

    async fn poll_hints(&self) -> Result<Vec<OrderHint>, ChannelError> {
        let r = self
            .call(
                "taobao.tmc.messages.consume",
                &[
                    ("group_name", self.tmc_group.clone()),
                    ("quantity", TMC_QUANTITY.to_owned()),
                ],
            )
            .await?;
        let mut hints = Vec::new();
        let mut unusable = Vec::new();
        for m in top_list(&r, "messages", "tmc_message") {
            let Some(id) = non_empty(m, "id") else {
                tracing::warn!("TMC message without an id; skipped");
                continue;
            };
            let tid = text(m, "content")
                .and_then(|c| serde_json::from_str::<Value>(&c).ok())
                .and_then(|c| non_empty(&c, "tid"));
            match tid {
                Some(tid) => hints.push(OrderHint {
                    message_id: id,
                    platform_order_id: tid,
                }),
                None => {
                    tracing::warn!(message_id = %id, topic = ?text(m, "topic"), "TMC message names no trade; acknowledged");
                    unusable.push(id);
                }
            }
        }
        // A message naming no trade would come back every 30 s; acknowledge it here. Should that
        // fail it simply comes back and is skipped again.
        if !unusable.is_empty()
            && let Err(e) = self.confirm_hints(&unusable).await
        {
            tracing::warn!(error = %e, "could not acknowledge unusable TMC messages");
        }
        Ok(hints)
    }

    async fn confirm_hints(&self, message_ids: &[String]) -> Result<(), ChannelError> {
        for batch in message_ids.chunks(TMC_CONFIRM_BATCH) {
            let r = self
                .call(
                    "taobao.tmc.messages.confirm",
                    &[
                        ("group_name", self.tmc_group.clone()),
                        ("s_message_ids", batch.join(",")),
                    ],
                )
                .await?;
            if field(&r, "is_success").and_then(Value::as_bool) == Some(false) {
                return Err(ChannelError::Rejected {
                    code: "is_success:false".into(),
                    message: "taobao.tmc.messages.confirm refused".into(),
                });
            }
        }
        Ok(())
    }

    fn credentials(&self) -> Credentials {
        self.creds.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uphub_domain::order::{AfterSales, OrderStatus};

    fn trade(orders: Value) -> Value {
        json!({
            "tid": 4012345678901234567_i64,
            "tid_str": "4012345678901234567",
            "status": "WAIT_SELLER_SEND_GOODS",
            "created": "2024-03-01 10:00:00",
            "modified": "2024-03-01 10:05:30",
            "pay_time": "2024-03-01 10:01:00",
            "buyer_open_uid": "AAHk5d-EAAeGwJedwSHpg8bT",
            "payment": "200.07",
            "post_fee": "10.00",
            "receiver_name": "张*",
            "receiver_mobile": "138****5678",
            "receiver_state": "浙江省",
            "receiver_city": "杭州市",
            "receiver_district": "西湖区",
            "receiver_address": "文**路***号",
            "oaid": "1pSdKbRlLU3DJUJ1CUpYXWfJ1V3hgaM2",
            "orders": orders
        })
    }

    fn line(oid: i64, refund: &str) -> Value {
        json!({
            "oid": oid, "num_iid": 620000001, "sku_id": "4800000001", "outer_sku_id": "TEE-BLK-M",
            "title": "T 恤", "num": 2, "price": "95.04", "payment": "190.07", "status": "WAIT_SELLER_SEND_GOODS",
            "refund_status": refund
        })
    }

    #[test]
    fn a_top_trade_maps_to_our_order_with_fen_utc_times_and_the_oaid() {
        let t = trade(json!({"order": [line(1, "NO_REFUND"), line(2, "WAIT_SELLER_AGREE")]}));
        let o = trade_to_order("shop-1", &t).unwrap();
        assert_eq!(o.platform_order_id, "4012345678901234567");
        assert_eq!(o.channel, ChannelTypeCode(ChannelType::Taobao));
        assert_eq!(o.shop_id, "shop-1");
        assert_eq!(o.status, OrderStatus::Paid);
        assert_eq!(o.platform_status, "WAIT_SELLER_SEND_GOODS");
        assert_eq!(o.created_at.to_rfc3339(), "2024-03-01T02:00:00+00:00");
        assert_eq!(o.modified_at.to_rfc3339(), "2024-03-01T02:05:30+00:00");
        assert_eq!(
            o.paid_at.map(|t| t.to_rfc3339()).as_deref(),
            Some("2024-03-01T02:01:00+00:00")
        );
        assert_eq!(o.buyer_open_id.as_deref(), Some("AAHk5d-EAAeGwJedwSHpg8bT"));
        assert_eq!((o.total_fen, o.post_fee_fen), (20007, 1000));
        assert_eq!(o.receiver.masked_name, "张*");
        assert_eq!(o.receiver.masked_phone, "138****5678");
        assert_eq!(o.receiver.province, "浙江省");
        assert_eq!(o.receiver.district, "西湖区");
        assert_eq!(o.receiver.decrypt_ref, "1pSdKbRlLU3DJUJ1CUpYXWfJ1V3hgaM2");
        assert_eq!(o.lines.len(), 2);
        let l = &o.lines[1];
        assert_eq!(l.platform_line_id, "2");
        assert_eq!(l.platform_item_id, "620000001");
        assert_eq!(l.platform_sku_id, "4800000001");
        assert_eq!(l.outer_sku_code.as_deref(), Some("TEE-BLK-M"));
        assert_eq!((l.quantity, l.unit_price_fen, l.paid_fen), (2, 9504, 19007));
        assert_eq!(l.after_sales, AfterSales::RefundRequested);
        assert_eq!(o.lines[0].after_sales, AfterSales::None);
    }

    #[test]
    fn a_single_order_may_come_as_an_object_instead_of_an_array() {
        let t = trade(json!({"order": line(7, "")}));
        let o = trade_to_order("s", &t).unwrap();
        assert_eq!(o.lines.len(), 1);
        assert_eq!(o.lines[0].platform_line_id, "7");
        assert_eq!(o.lines[0].after_sales, AfterSales::None);
    }

    #[test]
    fn an_unpaid_trade_has_no_pay_time_and_tid_falls_back_to_the_number() {
        let mut t = trade(json!({"order": []}));
        t["status"] = json!("WAIT_BUYER_PAY");
        t["pay_time"] = json!("");
        t.as_object_mut().unwrap().remove("tid_str");
        let o = trade_to_order("s", &t).unwrap();
        assert_eq!(o.paid_at, None);
        assert_eq!(o.status, OrderStatus::PendingPayment);
        assert_eq!(o.platform_order_id, "4012345678901234567");
    }

    #[test]
    fn bad_platform_data_is_a_protocol_error_naming_what_is_wrong() {
        let mut t = trade(json!({"order": []}));
        t["status"] = json!("NEW_THING");
        let e = trade_to_order("s", &t).unwrap_err();
        assert!(
            matches!(&e, ChannelError::Protocol(m) if m.contains("NEW_THING")),
            "{e}"
        );

        let mut t = trade(json!({"order": []}));
        t["payment"] = json!("1.234");
        assert!(matches!(
            trade_to_order("s", &t),
            Err(ChannelError::Protocol(_))
        ));

        let mut t = trade(json!({"order": []}));
        t["modified"] = json!("2024/03/01");
        assert!(matches!(
            trade_to_order("s", &t),
            Err(ChannelError::Protocol(_))
        ));

        let t = trade(json!({"order": line(1, "SOMETHING_NEW")}));
        assert!(
            matches!(trade_to_order("s", &t), Err(ChannelError::Protocol(m)) if m.contains("SOMETHING_NEW"))
        );
    }

    #[test]
    fn top_errors_map_to_throttle_with_the_ban_auth_outage_or_rejection() {
        let e = |v: Value| top_error(&v);
        assert_eq!(
            e(
                json!({"code": 7, "msg": "App Call Limited", "sub_code": "accesscontrol.limited-by-api-access-count",
                "sub_msg": "This ban will last for 2 more seconds"})
            ),
            ChannelError::RateLimited {
                retry_after: std::time::Duration::from_secs(2)
            }
        );
        assert_eq!(
            e(json!({"code": 5, "msg": "Session call limited"})),
            ChannelError::RateLimited {
                retry_after: std::time::Duration::ZERO
            }
        );
        assert!(matches!(
            e(json!({"code": 27, "msg": "Invalid session", "sub_code": "invalid-sessionkey"})),
            ChannelError::Auth(_)
        ));
        assert!(matches!(
            e(json!({"code": 25, "msg": "Invalid signature"})),
            ChannelError::Auth(_)
        ));
        assert!(matches!(
            e(json!({"code": 10, "msg": "Service currently unavailable"})),
            ChannelError::Unavailable(_)
        ));
        assert!(matches!(
            e(json!({"code": 15, "sub_code": "isp.remote-service-timeout"})),
            ChannelError::Unavailable(_)
        ));
        assert_eq!(
            e(
                json!({"code": 15, "msg": "Remote service error", "sub_code": "isv.invalid-parameter", "sub_msg": "bad tid"})
            ),
            ChannelError::Rejected {
                code: "15:isv.invalid-parameter".into(),
                message: "Remote service error: bad tid".into()
            }
        );
        assert_eq!(
            e(json!({"code": 40, "msg": "Missing required arguments:tid"})),
            ChannelError::Rejected {
                code: "40".into(),
                message: "Missing required arguments:tid".into()
            }
        );
    }

    #[test]
    fn answers_unwrap_their_response_object_or_map_the_error() {
        let ok = r#"{"trade_fullinfo_get_response":{"trade":{"tid":1},"request_id":"x"}}"#;
        let v = parse_answer("taobao.trade.fullinfo.get", reqwest::StatusCode::OK, ok).unwrap();
        assert_eq!(v["trade"]["tid"], 1);
        let err = r#"{"error_response":{"code":27,"msg":"Invalid session","sub_code":"invalid-sessionkey"}}"#;
        assert!(matches!(
            parse_answer("taobao.trade.fullinfo.get", reqwest::StatusCode::OK, err),
            Err(ChannelError::Auth(_))
        ));
        assert!(matches!(
            parse_answer(
                "taobao.trade.fullinfo.get",
                reqwest::StatusCode::OK,
                "<html>"
            ),
            Err(ChannelError::Protocol(_))
        ));
        assert!(matches!(
            parse_answer(
                "taobao.trade.fullinfo.get",
                reqwest::StatusCode::OK,
                r#"{"other_response":{}}"#
            ),
            Err(ChannelError::Protocol(_))
        ));
    }

    #[test]
    fn pages_go_from_the_last_back_to_the_first_and_one_page_is_not_fetched_twice() {
        assert_eq!(pages_backwards(0, 100), Vec::<i64>::new());
        assert_eq!(pages_backwards(100, 100), Vec::<i64>::new());
        assert_eq!(pages_backwards(101, 100), vec![2, 1]);
        assert_eq!(pages_backwards(250, 100), vec![3, 2, 1]);
    }

    #[test]
    fn times_are_gmt8_both_ways() {
        let t = DateTime::from_timestamp(1_709_258_400, 0).unwrap(); // 2024-03-01T02:00:00Z
        assert_eq!(format_gmt8(t), "2024-03-01 10:00:00");
        assert_eq!(parse_gmt8("2024-03-01 10:00:00", "t").unwrap(), t);
        assert_eq!(
            response_key("taobao.top.oaid.decrypt"),
            "top_oaid_decrypt_response"
        );
    }
}
