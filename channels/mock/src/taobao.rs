//! Taobao TOP: `POST /router/rest`, form-urlencoded, signed with `top_sign`, answers
//! `<api>_response{…}` or `error_response{code,msg,sub_code,sub_msg,request_id}`.

use std::collections::HashSet;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value, json};
use uphub_channels::sign::{TopSignMethod, same_signature, top_sign};

use crate::MockPlatforms;
use crate::faults::Fault;
use crate::state::{Order, Stage, State, TokenProblem};
use crate::types::{MockConfig, MockError, OrderEvent, Platform};
use crate::wire::{
    Id, Params, id_value, json_text, mask_address, mask_name, mask_phone, now_ms, parse_top_time,
    parse_urlencoded, to_json, top_time, with_field, yuan,
};

const P: Platform = Platform::Taobao;
const DAY_MS: i64 = 86_400_000;

/// (method, needs a session)
const METHODS: &[(&str, bool)] = &[
    ("taobao.trades.sold.increment.get", true),
    ("taobao.trade.fullinfo.get", true),
    ("taobao.top.oaid.decrypt", true),
    ("taobao.logistics.offline.send", true),
    ("taobao.item.quantity.update", true),
    ("taobao.tmc.messages.consume", false),
    ("taobao.tmc.messages.confirm", false),
];

pub(crate) async fn handle(AxState(m): AxState<MockPlatforms>, uri: Uri, body: Bytes) -> Response {
    let mut pairs = parse_urlencoded(uri.query().unwrap_or_default());
    pairs.extend(parse_urlencoded(&String::from_utf8_lossy(&body)));
    let p = Params(pairs);
    match m.fault(P, p.get("app_key").unwrap_or_default()) {
        Fault::Http(status) => return crate::plain_http_error(status),
        Fault::Throttle { ban_left_secs } => {
            let rid = m.state().request_id();
            return Json(TopErr::throttle(ban_left_secs).body(&rid)).into_response();
        }
        Fault::Delay(d) => tokio::time::sleep(d).await,
        Fault::None => {}
    }
    let body = {
        let mut st = m.state();
        let rid = st.request_id();
        match call(&mut st, m.config(), &p, now_ms()) {
            Ok((key, object)) => {
                format!("{{\"{key}\":{}}}", with_field(object, "request_id", &rid))
            }
            Err(e) => e.body(&rid).to_string(),
        }
    };
    json_text(body)
}

#[derive(Debug)]
struct TopErr {
    code: i64,
    msg: &'static str,
    sub_code: String,
    sub_msg: String,
}

impl TopErr {
    fn new(code: i64, msg: &'static str) -> Self {
        TopErr {
            code,
            msg,
            sub_code: String::new(),
            sub_msg: String::new(),
        }
    }

    fn sub(mut self, code: impl Into<String>, msg: impl Into<String>) -> Self {
        self.sub_code = code.into();
        self.sub_msg = msg.into();
        self
    }

    fn missing(name: &str) -> Self {
        TopErr::new(40, "Missing required arguments").sub(
            format!("isv.missing-parameter:{name}"),
            format!("{name} is required"),
        )
    }

    fn invalid(name: &str, why: impl Into<String>) -> Self {
        TopErr::new(41, "Invalid arguments").sub(format!("isv.invalid-parameter:{name}"), why)
    }

    fn business(sub_code: &str, sub_msg: &str) -> Self {
        TopErr::new(15, "Remote service error").sub(sub_code, sub_msg)
    }

    fn throttle(secs: u64) -> Self {
        TopErr::new(7, "App Call Limited").sub(
            "accesscontrol.limited-by-api-access-count",
            format!("This ban will last for {secs} more seconds"),
        )
    }

    fn body(&self, request_id: &str) -> Value {
        let mut e = Map::new();
        e.insert("code".into(), self.code.into());
        e.insert("msg".into(), self.msg.into());
        if !self.sub_code.is_empty() {
            e.insert("sub_code".into(), self.sub_code.clone().into());
            e.insert("sub_msg".into(), self.sub_msg.clone().into());
        }
        e.insert("request_id".into(), request_id.into());
        json!({ "error_response": e })
    }
}

type Answer = Result<Map<String, Value>, TopErr>;

/// The answer's key (`<api>_response`) and its object as JSON text.
fn call(
    st: &mut State,
    cfg: &MockConfig,
    p: &Params,
    now: i64,
) -> Result<(String, String), TopErr> {
    let method = p
        .non_empty("method")
        .ok_or(TopErr::new(21, "Missing method"))?;
    let app_key = p
        .non_empty("app_key")
        .ok_or(TopErr::new(28, "Missing app key"))?;
    let secret = st
        .app_secret(P, app_key)
        .ok_or(TopErr::new(29, "Invalid app key"))?;
    let ts = p
        .non_empty("timestamp")
        .ok_or(TopErr::new(30, "Missing timestamp"))?;
    let tolerance = u64::try_from(cfg.timestamp_tolerance.as_millis()).unwrap_or(u64::MAX);
    match parse_top_time(ts) {
        Some(t) if t.abs_diff(now) <= tolerance => {}
        _ => {
            return Err(TopErr::new(31, "Invalid timestamp").sub(
                "isv.invalid-timestamp",
                "timestamp must be yyyy-MM-dd HH:mm:ss GMT+8 within 10 minutes of the server time",
            ));
        }
    }
    if p.non_empty("format") != Some("json") {
        return Err(TopErr::new(23, "Invalid format")
            .sub("isv.invalid-format", "only format=json is served"));
    }
    match p.non_empty("v") {
        None => return Err(TopErr::new(32, "Missing version")),
        Some("2.0" | "2") => {}
        Some(_) => return Err(TopErr::new(33, "Unsupported version")),
    }
    let sign = p
        .non_empty("sign")
        .ok_or(TopErr::new(24, "Missing signature"))?;
    let sign_method = TopSignMethod::parse(p.non_empty("sign_method").unwrap_or("md5")).ok_or(
        TopErr::new(25, "Invalid signature").sub(
            "isv.invalid-sign-method",
            "sign_method must be md5, hmac or hmac-sha256",
        ),
    )?;
    let expected = top_sign(
        &secret,
        sign_method,
        p.0.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    if !same_signature(&expected, sign) {
        return Err(TopErr::new(25, "Invalid signature"));
    }
    let &(_, needs_session) = METHODS
        .iter()
        .find(|(m, _)| *m == method)
        .ok_or(TopErr::new(22, "Invalid method"))?;
    let shop_id = if needs_session {
        match st.shop_by_token(P, app_key, p.get("session")) {
            Ok(s) => Some(s.spec.shop_id.clone()),
            Err(TokenProblem::Missing) => return Err(TopErr::new(26, "Missing session")),
            Err(TokenProblem::Expired) => {
                return Err(TopErr::new(27, "Invalid session")
                    .sub("invalid-sessionkey", "SessionKey已过期"));
            }
            Err(TokenProblem::Unknown) => {
                return Err(
                    TopErr::new(27, "Invalid session").sub("invalid-sessionkey", "SessionKey非法")
                );
            }
        }
    } else {
        // TMC is per app; a session, when sent, narrows it to that seller's messages.
        p.non_empty("session").and_then(|s| {
            st.tokens
                .get(&(P, s.to_string()))
                .map(|e| e.shop_id.clone())
        })
    };
    let shop = shop_id.as_deref().unwrap_or_default();
    let single = cfg.top_single_as_object;
    let text = |m: Map<String, Value>| Value::Object(m).to_string();
    let out = match method {
        "taobao.trades.sold.increment.get" => increment_get(st, shop, p, single)?,
        "taobao.trade.fullinfo.get" => fullinfo_get(st, shop, p, single)?,
        "taobao.top.oaid.decrypt" => text(oaid_decrypt(st, shop, p, single)?),
        "taobao.logistics.offline.send" => text(offline_send(st, shop, p, now)?),
        "taobao.item.quantity.update" => text(quantity_update(st, shop, p, now)?),
        "taobao.tmc.messages.consume" => text(tmc_consume(
            st,
            cfg,
            app_key,
            shop_id.as_deref(),
            p,
            single,
        )?),
        "taobao.tmc.messages.confirm" => text(tmc_confirm(st, app_key, p)?),
        _ => return Err(TopErr::new(22, "Invalid method")),
    };
    let key = format!(
        "{}_response",
        method.trim_start_matches("taobao.").replace('.', "_")
    );
    Ok((key, out))
}

/// A double-wrapped list: `{"<inner>": [...]}`, one element as an object when configured.
fn wrapped(inner: &str, mut items: Vec<Value>, single_as_object: bool) -> Value {
    let list = if single_as_object && items.len() == 1 {
        items.pop().unwrap_or(Value::Null)
    } else {
        Value::Array(items)
    };
    let mut m = Map::new();
    m.insert(inner.into(), list);
    Value::Object(m)
}

fn int_param(p: &Params, name: &str, default: i64) -> Result<i64, TopErr> {
    match p.non_empty(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| TopErr::invalid(name, format!("{name} must be a number"))),
    }
}

fn time_param(p: &Params, name: &str) -> Result<i64, TopErr> {
    let v = p.non_empty(name).ok_or_else(|| TopErr::missing(name))?;
    parse_top_time(v)
        .ok_or_else(|| TopErr::invalid(name, format!("{name} must be yyyy-MM-dd HH:mm:ss")))
}

fn fields(p: &Params) -> Result<HashSet<String>, TopErr> {
    let f = p
        .non_empty("fields")
        .ok_or_else(|| TopErr::missing("fields"))?;
    Ok(f.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}

fn status_matches(filter: Option<&str>, o: &Order) -> bool {
    let s = o.stage.taobao();
    match filter {
        None => true,
        Some("ALL_WAIT_PAY") => matches!(s, "WAIT_BUYER_PAY" | "TRADE_NO_CREATE_PAY"),
        Some("ALL_CLOSED") => matches!(s, "TRADE_CLOSED" | "TRADE_CLOSED_BY_TAOBAO"),
        Some(f) => f == s,
    }
}

fn increment_get(st: &State, shop: &str, p: &Params, single: bool) -> Result<String, TopErr> {
    let fields = fields(p)?;
    let start = time_param(p, "start_modified")?;
    let end = time_param(p, "end_modified")?;
    if end < start {
        return Err(TopErr::invalid(
            "end_modified",
            "end_modified must not be before start_modified",
        ));
    }
    if end - start > DAY_MS {
        return Err(TopErr::invalid(
            "end_modified",
            "start_modified and end_modified must be at most one day apart",
        ));
    }
    let page_no = int_param(p, "page_no", 1)?;
    if page_no < 1 {
        return Err(TopErr::invalid("page_no", "page_no must be ≥ 1"));
    }
    let page_size = int_param(p, "page_size", 40)?;
    if !(1..=100).contains(&page_size) {
        return Err(TopErr::invalid("page_size", "page_size must be 1-100"));
    }
    let (page_no, page_size) = (page_no as usize, page_size as usize);
    let skip = (page_no - 1).saturating_mul(page_size);
    let (total, page) = match p.non_empty("status") {
        None => st.window_page(P, shop, (start, end), skip, page_size),
        Some(status) => {
            let all: Vec<&Order> = st
                .window_desc(P, shop, start, end)
                .into_iter()
                .filter(|o| status_matches(Some(status), o))
                .collect();
            (
                all.len(),
                all.into_iter().skip(skip).take(page_size).collect(),
            )
        }
    };
    #[derive(Serialize)]
    struct Out<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        total_results: Option<usize>,
        has_next: bool,
        trades: Wrapped<TradeView<'a>>,
    }
    let fields = &fields;
    Ok(to_json(&Out {
        total_results: (p.non_empty("use_has_next") != Some("true")).then_some(total),
        has_next: total > page_no.saturating_mul(page_size),
        trades: Wrapped {
            name: "trade",
            items: page
                .into_iter()
                .map(|o| TradeView { o, fields, single })
                .collect(),
            single,
        },
    }))
}

fn fullinfo_get(st: &State, shop: &str, p: &Params, single: bool) -> Result<String, TopErr> {
    let fields = fields(p)?;
    let tid = p.non_empty("tid").ok_or_else(|| TopErr::missing("tid"))?;
    if tid.parse::<i64>().is_err() {
        return Err(TopErr::invalid("tid", "tid must be a number"));
    }
    let o = st
        .shop_order(P, shop, tid)
        .ok_or_else(|| TopErr::business("isv.trade-not-exist", "交易不存在"))?;
    #[derive(Serialize)]
    struct Out<'a> {
        trade: TradeView<'a>,
    }
    Ok(to_json(&Out {
        trade: TradeView {
            o,
            fields: &fields,
            single,
        },
    }))
}

/// A double-wrapped list: `{"<name>": [...]}`, one element as an object when configured.
struct Wrapped<T> {
    name: &'static str,
    items: Vec<T>,
    single: bool,
}

impl<T: Serialize> Serialize for Wrapped<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        match self.items.as_slice() {
            [one] if self.single => m.serialize_entry(self.name, one)?,
            all => m.serialize_entry(self.name, all)?,
        }
        m.end()
    }
}

#[derive(Serialize)]
struct OrderLineView<'a> {
    oid: Id<'a>,
    oid_str: &'a str,
    num_iid: Id<'a>,
    sku_id: &'a str,
    outer_iid: &'static str,
    outer_sku_id: &'a str,
    title: &'a str,
    num: i64,
    price: String,
    total_fee: String,
    payment: String,
    status: &'static str,
    refund_status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    consign_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logistics_company: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    invoice_no: Option<&'a str>,
}

/// A trade with the requested top-level fields (`tid_str` rides along with `tid`). The
/// `orders` list goes out in full when `orders` (or any `orders.x`) is asked for.
struct TradeView<'a> {
    o: &'a Order,
    fields: &'a HashSet<String>,
    single: bool,
}

impl Serialize for TradeView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (o, r) = (self.o, &self.o.receiver);
        let want = |k: &str| self.fields.contains(k);
        let mut m = s.serialize_map(None)?;
        // Values are only computed for the fields asked for.
        macro_rules! put {
            ($k:literal, $v:expr) => {
                if want($k) {
                    m.serialize_entry($k, &$v)?;
                }
            };
        }
        if want("tid") {
            m.serialize_entry("tid", &Id(&o.id))?;
            m.serialize_entry("tid_str", &o.id)?;
        }
        put!("status", o.stage.taobao());
        put!("type", "fixed");
        put!("created", top_time(o.created_ms));
        put!("modified", top_time(o.modified_ms));
        if let Some(paid) = o.paid_ms {
            put!("pay_time", top_time(paid));
        }
        if let Some(sh) = o.shipments.first() {
            put!("consign_time", top_time(sh.at_ms));
        }
        if let Some(end) = o.finished_ms {
            put!("end_time", top_time(end));
        }
        put!("buyer_open_uid", o.buyer_id);
        put!("payment", yuan(o.total_fen()));
        put!("total_fee", yuan(o.goods_fen()));
        put!("post_fee", yuan(o.post_fee_fen));
        put!("receiver_name", mask_name(&r.name));
        put!("receiver_mobile", mask_phone(&r.phone));
        put!("receiver_phone", "");
        put!("receiver_country", "");
        put!("receiver_state", r.province);
        put!("receiver_city", r.city);
        put!("receiver_district", r.district);
        put!("receiver_town", "");
        put!("receiver_address", mask_address(&r.address));
        put!("receiver_zip", "000000");
        put!("oaid", o.oaid());
        if self
            .fields
            .iter()
            .any(|f| f == "orders" || f.starts_with("orders."))
        {
            let orders = Wrapped {
                name: "order",
                items: order_lines(o),
                single: self.single,
            };
            m.serialize_entry("orders", &orders)?;
        }
        m.end()
    }
}

fn order_lines(o: &Order) -> Vec<OrderLineView<'_>> {
    let single_line = o.lines.len() == 1;
    let shipment = o.shipments.last();
    o.lines
        .iter()
        .map(|l| {
            let status = if l.refunded {
                "TRADE_CLOSED"
            } else if o.stage == Stage::PartShipped {
                if l.shipped {
                    "WAIT_BUYER_CONFIRM_GOODS"
                } else {
                    "WAIT_SELLER_SEND_GOODS"
                }
            } else {
                o.stage.taobao()
            };
            // TOP: a single-order trade's order.payment includes the post fee.
            let payment =
                l.amount_fen()
                    .saturating_add(if single_line { o.post_fee_fen } else { 0 });
            let shipped = shipment.filter(|_| l.shipped);
            OrderLineView {
                oid: Id(&l.line_id),
                oid_str: &l.line_id,
                num_iid: Id(&l.item_id),
                sku_id: &l.sku_id,
                outer_iid: "",
                outer_sku_id: &l.outer_sku_code,
                title: &l.title,
                num: l.qty,
                price: yuan(l.price_fen),
                total_fee: yuan(l.amount_fen()),
                payment: yuan(payment),
                status,
                refund_status: if l.refunded { "SUCCESS" } else { "NO_REFUND" },
                consign_time: shipped.map(|s| top_time(s.at_ms)),
                logistics_company: shipped.map(|s| s.company_code.as_str()),
                invoice_no: shipped.map(|s| s.tracking_no.as_str()),
            }
        })
        .collect()
}

fn oaid_decrypt(st: &State, shop: &str, p: &Params, single: bool) -> Answer {
    let raw = p
        .non_empty("query_list")
        .ok_or_else(|| TopErr::missing("query_list"))?;
    let list: Vec<Value> = serde_json::from_str(raw)
        .map_err(|_| TopErr::invalid("query_list", "query_list must be a JSON array"))?;
    if list.is_empty() || list.len() > 20 {
        return Err(TopErr::invalid(
            "query_list",
            "query_list must hold 1-20 entries",
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for q in &list {
        let tid =
            crate::wire::text(q.get("tid")).ok_or_else(|| TopErr::missing("query_list.tid"))?;
        let oaid =
            crate::wire::text(q.get("oaid")).ok_or_else(|| TopErr::missing("query_list.oaid"))?;
        if crate::wire::text(q.get("scene")).is_none() {
            return Err(TopErr::missing("query_list.scene"));
        }
        let found = st.shop_order(P, shop, &tid).filter(|o| o.oaid() == oaid);
        let r = found.map(|o| o.receiver.clone()).unwrap_or_default();
        out.push(json!({
            "tid": id_value(&tid),
            "oaid": oaid,
            "matched": found.is_some(),
            "name": r.name,
            "mobile": r.phone,
            "phone": "",
            "state": r.province,
            "city": r.city,
            "district": r.district,
            "town": "",
            "address_detail": r.address,
            "privacy_protection": false,
        }));
    }
    let mut m = Map::new();
    m.insert("receiver_list".into(), wrapped("receiver", out, single));
    Ok(m)
}

fn offline_send(st: &mut State, shop: &str, p: &Params, now: i64) -> Answer {
    let tid = p.non_empty("tid").ok_or_else(|| TopErr::missing("tid"))?;
    let out_sid = p
        .non_empty("out_sid")
        .ok_or_else(|| TopErr::missing("out_sid"))?;
    let company = p
        .non_empty("company_code")
        .ok_or_else(|| TopErr::missing("company_code"))?;
    if st.shop_order(P, shop, tid).is_none() {
        return Err(TopErr::business(
            "isv.logistics-offline-service-error:B01",
            "交易不存在",
        ));
    }
    let line_ids: Vec<String> = p
        .non_empty("sub_tid")
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let event = OrderEvent::Ship {
        company_code: company.to_string(),
        tracking_no: out_sid.to_string(),
        line_ids,
    };
    match st.apply(P, tid, &event, now) {
        Ok(_) => {}
        Err(MockError::Invalid(why)) => return Err(TopErr::invalid("sub_tid", why)),
        Err(_) => {
            return Err(TopErr::business(
                "isv.logistics-offline-service-error:B04",
                "订单当前状态不允许发货",
            ));
        }
    }
    let mut m = Map::new();
    m.insert("shipping".into(), json!({ "is_success": true }));
    Ok(m)
}

fn quantity_update(st: &mut State, shop: &str, p: &Params, now: i64) -> Answer {
    let num_iid = p
        .non_empty("num_iid")
        .ok_or_else(|| TopErr::missing("num_iid"))?;
    let quantity = p
        .non_empty("quantity")
        .ok_or_else(|| TopErr::missing("quantity"))?
        .parse::<i64>()
        .map_err(|_| TopErr::invalid("quantity", "quantity must be a number"))?;
    let sku_id = p.non_empty("sku_id").unwrap_or_default();
    let kind = int_param(p, "type", 1)?;
    let set = match kind {
        1 => quantity,
        2 => st
            .last_stock(P, shop, num_iid, sku_id)
            .saturating_add(quantity),
        _ => {
            return Err(TopErr::invalid(
                "type",
                "type must be 1 (full) or 2 (incremental)",
            ));
        }
    };
    if set < 0 {
        return Err(TopErr::invalid("quantity", "quantity must not go below 0"));
    }
    st.record_stock(P, shop, num_iid, sku_id, set, now);
    // `num` is the item's total over its SKUs' latest quantities.
    let mut seen = HashSet::new();
    let num: i64 = st
        .stock
        .iter()
        .rev()
        .filter(|s| s.platform == P && s.shop_id == shop && s.item_id == num_iid)
        .filter(|s| seen.insert(s.sku_id.clone()))
        .map(|s| s.quantity)
        .fold(0i64, i64::saturating_add);
    let mut m = Map::new();
    m.insert(
        "item".into(),
        json!({ "num_iid": id_value(num_iid), "num": num, "modified": top_time(now) }),
    );
    Ok(m)
}

fn tmc_consume(
    st: &mut State,
    cfg: &MockConfig,
    app_key: &str,
    shop: Option<&str>,
    p: &Params,
    single: bool,
) -> Answer {
    let quantity = int_param(p, "quantity", 100)?;
    if !(10..=200).contains(&quantity) {
        return Err(TopErr::invalid("quantity", "quantity must be 10-200"));
    }
    let msgs = st.tmc_consume(
        app_key,
        shop,
        quantity as usize,
        Instant::now(),
        cfg.tmc_redeliver_after,
    );
    let items: Vec<Value> = msgs
        .into_iter()
        .map(|m| {
            json!({
                "id": m.id,
                "topic": m.topic,
                "pub_time": top_time(m.pub_ms),
                "pub_app_key": m.app_key,
                "user_id": id_value(&m.shop_id),
                "user_nick": m.shop_id,
                "content": m.content,
            })
        })
        .collect();
    let mut out = Map::new();
    out.insert("messages".into(), wrapped("tmc_message", items, single));
    Ok(out)
}

fn tmc_confirm(st: &mut State, app_key: &str, p: &Params) -> Answer {
    let raw = p
        .non_empty("s_message_ids")
        .ok_or_else(|| TopErr::missing("s_message_ids"))?;
    let ids: Vec<u64> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| {
            TopErr::invalid("s_message_ids", "s_message_ids must be a comma list of ids")
        })?;
    if ids.len() > 200 {
        return Err(TopErr::invalid("s_message_ids", "at most 200 ids"));
    }
    st.tmc_confirm(app_key, &ids);
    let mut out = Map::new();
    out.insert("is_success".into(), true.into());
    Ok(out)
}
