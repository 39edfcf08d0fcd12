//! Doudian: `POST /<method with dots as slashes>?app_key&method&access_token&timestamp&v&
//! sign_method&sign`, body = `param_json`, HMAC-SHA256 over the body exactly as received.
//! Answers `{code, msg, sub_code, sub_msg, log_id, data}`, success `code=10000`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDateTime;
use serde::Serialize;
use serde_json::{Map, Value, json};
use uphub_channels::sign::{doudian_sign, same_signature};

use crate::MockPlatforms;
use crate::faults::Fault;
use crate::state::{Order, PushJob, Stage, State, TokenProblem, doudian_cipher};
use crate::types::{MockConfig, MockError, OrderEvent, Platform};
use crate::wire::{
    CST, Id, Params, boolean, id_value, int, json_text, mask_address, mask_name, mask_phone,
    now_ms, parse_urlencoded, text, to_json,
};

const P: Platform = Platform::Douyin;

const METHODS: &[&str] = &[
    "order.searchList",
    "order.orderDetail",
    "order.batchDecrypt",
    "order.logisticsAdd",
    "sku.syncStock",
    "token.refresh",
    "token.create",
];

pub(crate) async fn handle(
    AxState(m): AxState<MockPlatforms>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if path.starts_with("/_mock") {
        return (StatusCode::NOT_FOUND, "no such admin endpoint").into_response();
    }
    if method != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, "POST only").into_response();
    }
    let api = path.trim_matches('/').replace('/', ".");
    let q = Params(parse_urlencoded(uri.query().unwrap_or_default()));
    match m.fault(P, q.get("app_key").unwrap_or_default()) {
        Fault::Http(status) => return crate::plain_http_error(status),
        Fault::Throttle { .. } => {
            let log_id = m.state().request_id();
            let e = DdErr::new(
                60000,
                "请求过于频繁，请稍后重试",
                "isv.access-limited",
                "触发限流，请稍后重试",
            );
            return Json(e.body(&log_id)).into_response();
        }
        Fault::Delay(d) => tokio::time::sleep(d).await,
        Fault::None => {}
    }
    let raw = String::from_utf8_lossy(&body);
    let (answer, jobs) = {
        let mut st = m.state();
        let log_id = st.request_id();
        match call(&mut st, m.config(), &api, &q, &raw, now_ms()) {
            Ok((data, jobs)) => (
                format!(
                    r#"{{"code":10000,"msg":"success","sub_code":"","sub_msg":"","log_id":"{log_id}","data":{data}}}"#
                ),
                jobs,
            ),
            Err(e) => (e.body(&log_id).to_string(), Vec::new()),
        }
    };
    m.dispatch(jobs);
    json_text(answer)
}

#[derive(Debug)]
struct DdErr {
    code: i64,
    msg: &'static str,
    sub_code: String,
    sub_msg: String,
}

impl DdErr {
    fn new(code: i64, msg: &'static str, sub_code: &str, sub_msg: impl Into<String>) -> Self {
        DdErr {
            code,
            msg,
            sub_code: sub_code.to_string(),
            sub_msg: sub_msg.into(),
        }
    }

    /// 40001: a platform (query) parameter is missing.
    fn missing_sys(sub_code: &str, name: &str) -> Self {
        DdErr::new(40001, "缺少平台参数", sub_code, format!("缺少{name}"))
    }

    /// 40003: a platform parameter is wrong (signature, token, timestamp…).
    fn invalid_sys(sub_code: &str, why: impl Into<String>) -> Self {
        DdErr::new(40003, "平台参数不合法", sub_code, why)
    }

    fn missing(name: &str) -> Self {
        DdErr::new(
            40002,
            "缺少业务参数",
            "isv.business-parameter-missing",
            format!("缺少参数 {name}"),
        )
    }

    fn invalid(name: &str, why: impl Into<String>) -> Self {
        DdErr::new(
            40004,
            "业务参数不合法",
            "isv.business-parameter-invalid",
            format!("{name}: {}", why.into()),
        )
    }

    fn business(sub_code: &str, why: &str) -> Self {
        DdErr::new(50002, "业务处理失败", sub_code, why)
    }

    fn body(&self, log_id: &str) -> Value {
        json!({
            "code": self.code, "msg": self.msg, "sub_code": self.sub_code, "sub_msg": self.sub_msg,
            "log_id": log_id, "data": {},
        })
    }
}

/// The answer's `data` as JSON text, and the pushes the call caused.
type Outcome = Result<(String, Vec<PushJob>), DdErr>;

/// Unix seconds (official SDK) or `yyyy-MM-dd HH:mm:ss` GMT+8 (older SDKs), in ms.
fn parse_timestamp(ts: &str) -> Option<i64> {
    if let Ok(s) = ts.parse::<i64>() {
        return s.checked_mul(1000);
    }
    let naive = NaiveDateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%S").ok()?;
    naive
        .and_local_timezone(CST)
        .single()
        .map(|d| d.timestamp_millis())
}

fn call(st: &mut State, cfg: &MockConfig, api: &str, q: &Params, raw: &str, now: i64) -> Outcome {
    let app_key = q
        .non_empty("app_key")
        .ok_or_else(|| DdErr::missing_sys("isv.app-key-missing", "app_key"))?;
    let method = q
        .non_empty("method")
        .ok_or_else(|| DdErr::missing_sys("isv.method-missing", "method"))?;
    if method != api {
        return Err(DdErr::invalid_sys(
            "isv.method-invalid",
            "method 与请求路径不一致",
        ));
    }
    let secret = st
        .app_secret(P, app_key)
        .ok_or_else(|| DdErr::invalid_sys("isv.app-key-invalid", "app_key 不存在"))?;
    let ts = q
        .non_empty("timestamp")
        .ok_or_else(|| DdErr::missing_sys("isv.timestamp-missing", "timestamp"))?;
    let tolerance = u64::try_from(cfg.timestamp_tolerance.as_millis()).unwrap_or(u64::MAX);
    match parse_timestamp(ts) {
        Some(t) if t.abs_diff(now) <= tolerance => {}
        Some(_) => {
            return Err(DdErr::invalid_sys(
                "isv.timestamp-invalid",
                "timestamp 已过期",
            ));
        }
        None => {
            return Err(DdErr::invalid_sys(
                "isv.timestamp-format-error",
                "timestamp 格式错误",
            ));
        }
    }
    if q.non_empty("v") != Some("2") {
        return Err(DdErr::invalid_sys("isv.version-invalid", "v 必须为 2"));
    }
    let sign = q
        .non_empty("sign")
        .ok_or_else(|| DdErr::missing_sys("isv.signature-missing", "sign"))?;
    if q.non_empty("sign_method") != Some("hmac-sha256") {
        return Err(DdErr::invalid_sys(
            "isv.signature-invalid",
            "仅支持 sign_method=hmac-sha256",
        ));
    }
    let expected = doudian_sign(app_key, &secret, method, raw, ts);
    if !same_signature(&expected, sign) {
        return Err(DdErr::invalid_sys("isv.signature-invalid", "签名校验失败"));
    }
    if !METHODS.contains(&method) {
        return Err(DdErr::new(
            70000,
            "API 不存在或已下线",
            "isv.method-not-exist",
            format!("{method} 不存在"),
        ));
    }
    let param: Map<String, Value> = if raw.trim().is_empty() {
        Map::new()
    } else {
        match serde_json::from_str(raw) {
            Ok(Value::Object(m)) => m,
            _ => return Err(DdErr::invalid("param_json", "不是合法的 JSON 对象")),
        }
    };
    match method {
        "token.refresh" => {
            return token_refresh(st, app_key, &param).map(|d| (d.to_string(), Vec::new()));
        }
        "token.create" => {
            return token_create(st, app_key, &param).map(|d| (d.to_string(), Vec::new()));
        }
        _ => {}
    }
    let shop = match st.shop_by_token(P, app_key, q.get("access_token")) {
        Ok(s) => s.spec.shop_id.clone(),
        Err(TokenProblem::Missing) => {
            return Err(DdErr::missing_sys(
                "isv.access-token-missing",
                "access_token",
            ));
        }
        Err(TokenProblem::Expired) => {
            return Err(DdErr::invalid_sys(
                "isv.access-token-expired",
                "access_token 已过期",
            ));
        }
        Err(TokenProblem::Unknown) => {
            return Err(DdErr::invalid_sys(
                "isv.access-token-no-existed",
                "access_token 不存在",
            ));
        }
    };
    let none = |v: Value| Ok((v.to_string(), Vec::new()));
    match method {
        "order.searchList" => Ok((search_list(st, &shop, &param)?, Vec::new())),
        "order.orderDetail" => {
            let id =
                text(param.get("shop_order_id")).ok_or_else(|| DdErr::missing("shop_order_id"))?;
            let o = st
                .shop_order(P, &shop, &id)
                .ok_or_else(|| DdErr::business("isv.order-not-exist", "订单不存在"))?;
            #[derive(Serialize)]
            struct Detail<'a> {
                shop_order_detail: ShopOrderView<'a>,
            }
            let detail = Detail {
                shop_order_detail: ShopOrderView::of(o),
            };
            Ok((to_json(&detail), Vec::new()))
        }
        "order.batchDecrypt" => none(batch_decrypt(st, &shop, &param)?),
        "order.logisticsAdd" => logistics_add(st, &shop, &param, now),
        "sku.syncStock" => none(sync_stock(st, &shop, &param, now)?),
        _ => Err(DdErr::new(
            70000,
            "API 不存在或已下线",
            "isv.method-not-exist",
            method.to_string(),
        )),
    }
}

fn token_data(spec: &crate::types::ShopSpec) -> Value {
    json!({
        "access_token": spec.access_token,
        "refresh_token": spec.refresh_token,
        "expires_in": 604_800,
        "scope": "SCOPE",
        "shop_id": id_value(&spec.shop_id),
        "shop_name": format!("抖店 {}", spec.shop_id),
        "authority_id": spec.shop_id,
    })
}

fn token_refresh(
    st: &mut State,
    app_key: &str,
    param: &Map<String, Value>,
) -> Result<Value, DdErr> {
    if text(param.get("grant_type")).as_deref() != Some("refresh_token") {
        return Err(DdErr::invalid("grant_type", "必须为 refresh_token"));
    }
    let rt = text(param.get("refresh_token")).ok_or_else(|| DdErr::missing("refresh_token"))?;
    let spec = st.refresh_tokens(P, app_key, &rt).ok_or_else(|| {
        DdErr::new(
            40004,
            "业务参数不合法",
            "isv.refresh-token-invalid",
            "refresh_token 无效或已过期",
        )
    })?;
    Ok(token_data(&spec))
}

fn token_create(st: &State, app_key: &str, param: &Map<String, Value>) -> Result<Value, DdErr> {
    if text(param.get("grant_type")).as_deref() != Some("authorization_self") {
        return Err(DdErr::invalid(
            "grant_type",
            "mock 仅支持 authorization_self",
        ));
    }
    let shop_id = text(param.get("shop_id")).ok_or_else(|| DdErr::missing("shop_id"))?;
    let shop = st
        .shops
        .get(&(P, shop_id))
        .filter(|s| s.spec.app_key == app_key)
        .ok_or_else(|| {
            DdErr::new(
                30001,
                "没有权限",
                "dop.authorization-no-existed",
                "店铺未授权该应用",
            )
        })?;
    Ok(token_data(&shop.spec))
}

fn search_list(st: &State, shop: &str, param: &Map<String, Value>) -> Result<String, DdErr> {
    let num = |name: &str| -> Result<Option<i64>, DdErr> {
        match param.get(name) {
            None | Some(Value::Null) => Ok(None),
            v => int(v)
                .map(Some)
                .ok_or_else(|| DdErr::invalid(name, "须为整数")),
        }
    };
    let size = num("size")?.unwrap_or(10);
    if !(1..=100).contains(&size) {
        return Err(DdErr::invalid("size", "须在 1-100 之间"));
    }
    let page = num("page")?.unwrap_or(0);
    if page < 0 {
        return Err(DdErr::invalid("page", "从 0 开始"));
    }
    let order_by = text(param.get("order_by")).unwrap_or_else(|| "create_time".into());
    if order_by != "create_time" && order_by != "update_time" {
        return Err(DdErr::invalid(
            "order_by",
            "须为 create_time 或 update_time",
        ));
    }
    let asc = boolean(param.get("order_asc")).unwrap_or(false);
    let (us, ue) = (num("update_time_start")?, num("update_time_end")?);
    let (cs, ce) = (num("create_time_start")?, num("create_time_end")?);
    let within = |t_ms: i64, s: Option<i64>, e: Option<i64>| {
        let t = t_ms / 1000;
        s.is_none_or(|s| t >= s) && e.is_none_or(|e| t < e)
    };
    let (page_u, size_u) = (page as usize, size as usize);
    let skip = page_u.saturating_mul(size_u);
    let by_update = order_by == "update_time";
    let (total, orders) = match (us, ue) {
        // The adapter's query: the window index already holds the answer's order.
        (Some(s), Some(e)) if by_update && !asc && cs.is_none() && ce.is_none() => st.window_page(
            P,
            shop,
            (s.saturating_mul(1000), e.saturating_mul(1000)),
            skip,
            size_u,
        ),
        _ => {
            let mut list: Vec<&Order> = st
                .shop_orders(P, shop)
                .into_iter()
                .filter(|o| within(o.modified_ms, us, ue) && within(o.created_ms, cs, ce))
                .collect();
            let key = |o: &Order| {
                let t = if by_update {
                    o.modified_ms
                } else {
                    o.created_ms
                };
                t / 1000
            };
            list.sort_by(|a, b| (key(a), a.id.as_str()).cmp(&(key(b), b.id.as_str())));
            if !asc {
                list.reverse();
            }
            let total = list.len();
            (total, list.into_iter().skip(skip).take(size_u).collect())
        }
    };
    #[derive(Serialize)]
    struct Page<'a> {
        page: i64,
        size: i64,
        total: usize,
        shop_order_list: Vec<ShopOrderView<'a>>,
    }
    Ok(to_json(&Page {
        page,
        size,
        total,
        shop_order_list: orders.into_iter().map(ShopOrderView::of).collect(),
    }))
}

#[derive(Serialize)]
struct Named<'a> {
    id: &'static str,
    name: &'a str,
}

fn named(name: &str) -> Named<'_> {
    Named { id: "", name }
}

#[derive(Serialize)]
struct PostAddr<'a> {
    province: Named<'a>,
    city: Named<'a>,
    town: Named<'a>,
    street: Named<'a>,
    encrypt_detail: String,
}

#[derive(Serialize)]
struct MaskAddr<'a> {
    province: Named<'a>,
    city: Named<'a>,
    town: Named<'a>,
    street: Named<'a>,
    detail: String,
}

#[derive(Serialize)]
struct AfterSaleInfo {
    after_sale_status: i64,
    refund_status: i64,
}

#[derive(Serialize)]
struct SkuOrderView<'a> {
    order_id: &'a str,
    parent_order_id: &'a str,
    product_id: Id<'a>,
    product_id_str: &'a str,
    sku_id: Id<'a>,
    out_sku_id: &'a str,
    code: &'a str,
    product_name: &'a str,
    item_num: i64,
    origin_amount: i64,
    pay_amount: i64,
    order_status: i64,
    after_sale_info: AfterSaleInfo,
}

#[derive(Serialize)]
struct LogisticsView<'a> {
    tracking_no: &'a str,
    company: &'a str,
    company_name: &'a str,
    ship_time: i64,
}

/// A shop order as `order.searchList` / `order.orderDetail` return it.
#[derive(Serialize)]
struct ShopOrderView<'a> {
    order_id: &'a str,
    order_level: i64,
    order_status: i64,
    order_status_desc: &'static str,
    shop_id: Id<'a>,
    create_time: i64,
    update_time: i64,
    pay_time: i64,
    finish_time: i64,
    order_amount: i64,
    pay_amount: i64,
    post_amount: i64,
    doudian_open_id: &'a str,
    encrypt_post_receiver: String,
    encrypt_post_tel: String,
    mask_post_receiver: String,
    mask_post_tel: String,
    post_addr: PostAddr<'a>,
    mask_post_addr: MaskAddr<'a>,
    logistics_info: Vec<LogisticsView<'a>>,
    sku_order_list: Vec<SkuOrderView<'a>>,
}

impl<'a> ShopOrderView<'a> {
    fn of(o: &'a Order) -> Self {
        let r = &o.receiver;
        let secs = |ms: i64| ms / 1000;
        let sku_order_list = o
            .lines
            .iter()
            .map(|l| SkuOrderView {
                order_id: &l.line_id,
                parent_order_id: &o.id,
                product_id: Id(&l.item_id),
                product_id_str: &l.item_id,
                sku_id: Id(&l.sku_id),
                out_sku_id: &l.outer_sku_code,
                code: &l.outer_sku_code,
                product_name: &l.title,
                item_num: l.qty,
                origin_amount: l.amount_fen(),
                pay_amount: l.amount_fen(),
                order_status: if l.refunded {
                    4
                } else if o.stage == Stage::PartShipped {
                    if l.shipped { 3 } else { 105 }
                } else {
                    o.stage.doudian()
                },
                after_sale_info: AfterSaleInfo {
                    after_sale_status: if l.refunded { 12 } else { 0 },
                    refund_status: if l.refunded { 3 } else { 0 },
                },
            })
            .collect();
        ShopOrderView {
            order_id: &o.id,
            order_level: 2,
            order_status: o.stage.doudian(),
            order_status_desc: o.stage.doudian_desc(),
            shop_id: Id(&o.shop_id),
            create_time: secs(o.created_ms),
            update_time: secs(o.modified_ms),
            pay_time: o.paid_ms.map_or(0, secs),
            finish_time: o.finished_ms.map_or(0, secs),
            order_amount: o.total_fen(),
            pay_amount: o.total_fen(),
            post_amount: o.post_fee_fen,
            doudian_open_id: &o.buyer_id,
            encrypt_post_receiver: doudian_cipher(&o.shop_id, "name", &r.name),
            encrypt_post_tel: doudian_cipher(&o.shop_id, "tel", &r.phone),
            mask_post_receiver: mask_name(&r.name),
            mask_post_tel: mask_phone(&r.phone),
            post_addr: PostAddr {
                province: named(&r.province),
                city: named(&r.city),
                town: named(&r.district),
                street: named(""),
                encrypt_detail: doudian_cipher(&o.shop_id, "detail", &r.address),
            },
            mask_post_addr: MaskAddr {
                province: named(&r.province),
                city: named(&r.city),
                town: named(&r.district),
                street: named(""),
                detail: mask_address(&r.address),
            },
            logistics_info: o
                .shipments
                .iter()
                .map(|s| LogisticsView {
                    tracking_no: &s.tracking_no,
                    company: &s.company_code,
                    company_name: &s.company_code,
                    ship_time: secs(s.at_ms),
                })
                .collect(),
            sku_order_list,
        }
    }
}

fn batch_decrypt(st: &State, shop: &str, param: &Map<String, Value>) -> Result<Value, DdErr> {
    let infos = match param.get("cipher_infos") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => return Err(DdErr::missing("cipher_infos")),
        Some(_) => return Err(DdErr::invalid("cipher_infos", "须为数组")),
    };
    if infos.is_empty() || infos.len() > 50 {
        return Err(DdErr::invalid("cipher_infos", "须为 1-50 条"));
    }
    let mut out = Vec::with_capacity(infos.len());
    for c in infos {
        let auth_id = text(c.get("auth_id")).unwrap_or_default();
        let cipher = text(c.get("cipher_text")).unwrap_or_default();
        let clear = if st.shop_order(P, shop, &auth_id).is_none() {
            Err((300008, "auth_id 无效"))
        } else {
            match st.ciphers.get(&cipher) {
                Some((s, clear)) if s == shop => Ok(clear.clone()),
                _ => Err((300014, "密文无效")),
            }
        };
        out.push(match clear {
            Ok(t) => json!({"auth_id": auth_id, "cipher_text": cipher, "decrypt_text": t, "err_no": 0, "err_msg": ""}),
            Err((no, msg)) => json!({"auth_id": auth_id, "cipher_text": cipher, "decrypt_text": "", "err_no": no, "err_msg": msg}),
        });
    }
    Ok(json!({ "decrypt_infos": out, "custom_err": { "err_code": 0, "err_msg": "" } }))
}

fn logistics_add(st: &mut State, shop: &str, param: &Map<String, Value>, now: i64) -> Outcome {
    let order_id = text(param.get("order_id")).ok_or_else(|| DdErr::missing("order_id"))?;
    let company = text(param.get("company_code")).ok_or_else(|| DdErr::missing("company_code"))?;
    let tracking =
        text(param.get("logistics_code")).ok_or_else(|| DdErr::missing("logistics_code"))?;
    if st.shop_order(P, shop, &order_id).is_none() {
        return Err(DdErr::business("isv.order-not-exist", "订单不存在"));
    }
    let event = OrderEvent::Ship {
        company_code: company,
        tracking_no: tracking,
        line_ids: Vec::new(),
    };
    match st.apply(P, &order_id, &event, now) {
        Ok(jobs) => Ok(("{}".into(), jobs)),
        Err(MockError::Invalid(why)) => Err(DdErr::invalid("order_id", why)),
        Err(_) => Err(DdErr::business(
            "isv.order-status-invalid",
            "当前订单状态不允许发货",
        )),
    }
}

fn sync_stock(
    st: &mut State,
    shop: &str,
    param: &Map<String, Value>,
    now: i64,
) -> Result<Value, DdErr> {
    let sku_id = text(param.get("sku_id")).ok_or_else(|| DdErr::missing("sku_id"))?;
    let stock = match param.get("stock_num") {
        None | Some(Value::Null) => return Err(DdErr::missing("stock_num")),
        v => int(v).ok_or_else(|| DdErr::invalid("stock_num", "须为整数"))?,
    };
    let product_id = text(param.get("product_id")).unwrap_or_else(|| {
        st.catalog
            .get(&(P, shop.to_string(), sku_id.clone()))
            .map(|c| c.item_id.clone())
            .unwrap_or_default()
    });
    let set = if boolean(param.get("incremental")).unwrap_or(false) {
        st.last_stock(P, shop, &product_id, &sku_id)
            .saturating_add(stock)
    } else {
        stock
    };
    if set < 0 {
        return Err(DdErr::invalid("stock_num", "库存不能小于 0"));
    }
    st.record_stock(P, shop, &product_id, &sku_id, set, now);
    Ok(json!({}))
}
