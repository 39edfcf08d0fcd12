//! Xiaohongshu Ark: one JSON gateway, `POST /ark/open_api/v3/common_controller`, public and
//! business params flat in the body, MD5 signature over method/appId/timestamp/version only.
//! Answers `{success, error_code, error_msg, data}` on HTTP 200, errors included.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use uphub_channels::sign::{same_signature, xhs_sign};

use crate::MockPlatforms;
use crate::faults::Fault;
use crate::state::{Order, State, TokenProblem};
use crate::types::{MockConfig, MockError, OrderEvent, Platform};
use crate::wire::{int, json_text, mask_address, mask_name, mask_phone, now_ms, text, to_json};

const P: Platform = Platform::Xiaohongshu;

const METHODS: &[&str] = &[
    "order.getOrderList",
    "order.getOrderDetail",
    "order.getOrderReceiverInfo",
    "order.orderDeliver",
    "inventory.syncSkuStock",
    "oauth.refreshToken",
];

/// `[ours]` codes beside the documented throttle (-9013): see WIRE.md and the crate report.
const PARAM: i64 = 1001;
const NO_METHOD: i64 = 1002;
const BAD_SIGN: i64 = 1003;
const TOKEN_EXPIRED: i64 = 1004;
const TOKEN_INVALID: i64 = 1005;
const BUSINESS: i64 = 2001;

pub(crate) async fn handle(AxState(m): AxState<MockPlatforms>, body: Bytes) -> Response {
    let parsed: Option<Map<String, Value>> = match serde_json::from_slice(&body) {
        Ok(Value::Object(o)) => Some(o),
        _ => None,
    };
    let app_id = parsed
        .as_ref()
        .and_then(|b| text(b.get("appId")))
        .unwrap_or_default();
    match m.fault(P, &app_id) {
        Fault::Http(status) => return crate::plain_http_error(status),
        Fault::Throttle { .. } => {
            return Json(err_body(-9013, "触发Method维度的限流")).into_response();
        }
        Fault::Delay(d) => tokio::time::sleep(d).await,
        Fault::None => {}
    }
    let answer = match parsed {
        None => err_body(PARAM, "请求体须为 JSON 对象").to_string(),
        Some(b) => {
            let mut st = m.state();
            match call(&mut st, m.config(), &b, now_ms()) {
                Ok(data) => {
                    format!(r#"{{"success":true,"error_code":0,"error_msg":"","data":{data}}}"#)
                }
                Err((code, msg)) => err_body(code, &msg).to_string(),
            }
        }
    };
    json_text(answer)
}

fn err_body(code: i64, msg: &str) -> Value {
    json!({ "success": false, "error_code": code, "error_msg": msg, "data": null })
}

type XhsErr = (i64, String);

fn param_err(msg: impl Into<String>) -> XhsErr {
    (PARAM, msg.into())
}

fn required(b: &Map<String, Value>, name: &str) -> Result<String, XhsErr> {
    text(b.get(name))
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| param_err(format!("{name} 不能为空")))
}

fn number(b: &Map<String, Value>, name: &str, default: Option<i64>) -> Result<i64, XhsErr> {
    match b.get(name) {
        None | Some(Value::Null) => default.ok_or_else(|| param_err(format!("{name} 不能为空"))),
        v => int(v).ok_or_else(|| param_err(format!("{name} 须为整数"))),
    }
}

fn call(
    st: &mut State,
    cfg: &MockConfig,
    b: &Map<String, Value>,
    now: i64,
) -> Result<String, XhsErr> {
    let method = required(b, "method")?;
    let app_id = required(b, "appId")?;
    let ts = required(b, "timestamp")?;
    let version = required(b, "version")?;
    let sign = text(b.get("sign")).ok_or((BAD_SIGN, "sign 不能为空".to_string()))?;
    let ts_ms = match ts.trim().parse::<i64>() {
        // Some clients send milliseconds.
        Ok(t) if t > 100_000_000_000 => t,
        Ok(t) => t.saturating_mul(1000),
        Err(_) => return Err(param_err("timestamp 须为 unix 秒")),
    };
    let tolerance = u64::try_from(cfg.timestamp_tolerance.as_millis()).unwrap_or(u64::MAX);
    if ts_ms.abs_diff(now) > tolerance {
        return Err(param_err("timestamp 已过期"));
    }
    let secret = st
        .app_secret(P, &app_id)
        .ok_or((BAD_SIGN, "appId 不存在".to_string()))?;
    if !same_signature(&xhs_sign(&method, &app_id, &ts, &version, &secret), &sign) {
        return Err((BAD_SIGN, "签名错误".into()));
    }
    if !METHODS.contains(&method.as_str()) {
        return Err((NO_METHOD, format!("method {method} 不存在")));
    }
    if method == "oauth.refreshToken" {
        let rt = required(b, "refreshToken")?;
        let spec = st
            .refresh_tokens(P, &app_id, &rt)
            .ok_or((TOKEN_INVALID, "refreshToken invalid".to_string()))?;
        return Ok(json!({
            "accessToken": spec.access_token,
            "accessTokenExpiresAt": now + 7 * 86_400_000,
            "refreshToken": spec.refresh_token,
            "refreshTokenExpiresAt": now + 14 * 86_400_000,
            "sellerId": spec.shop_id,
            "sellerName": format!("小红书店铺 {}", spec.shop_id),
        })
        .to_string());
    }
    let shop = match st.shop_by_token(P, &app_id, b.get("accessToken").and_then(Value::as_str)) {
        Ok(s) => s.spec.shop_id.clone(),
        Err(TokenProblem::Missing) => return Err(param_err("accessToken 不能为空")),
        Err(TokenProblem::Expired) => return Err((TOKEN_EXPIRED, "accessToken expired".into())),
        Err(TokenProblem::Unknown) => return Err((TOKEN_INVALID, "accessToken invalid".into())),
    };
    match method.as_str() {
        "order.getOrderList" => order_list(st, &shop, b),
        "order.getOrderDetail" => {
            let id = required(b, "orderId")?;
            let o = st
                .shop_order(P, &shop, &id)
                .ok_or((BUSINESS, "订单不存在".to_string()))?;
            Ok(to_json(&DetailView::of(o)))
        }
        "order.getOrderReceiverInfo" => receiver_info(st, &shop, b).map(|v| v.to_string()),
        "order.orderDeliver" => deliver(st, &shop, b, now).map(|v| v.to_string()),
        "inventory.syncSkuStock" => {
            let sku = required(b, "skuId")?;
            let qty = number(b, "qty", None)?;
            if qty < 0 {
                return Err(param_err("qty 不能小于 0"));
            }
            let item = st
                .catalog
                .get(&(P, shop.clone(), sku.clone()))
                .map(|c| c.item_id.clone())
                .unwrap_or_default();
            st.record_stock(P, &shop, &item, &sku, qty, now);
            Ok("{}".into())
        }
        _ => Err((NO_METHOD, format!("method {method} 不存在"))),
    }
}

fn order_list(st: &State, shop: &str, b: &Map<String, Value>) -> Result<String, XhsErr> {
    let time_type = number(b, "timeType", Some(1))?;
    let start = number(b, "startTime", None)?;
    let end = number(b, "endTime", None)?;
    let max_span = match time_type {
        1 => 86_400,
        2 => 1_800,
        _ => return Err(param_err("timeType 须为 1 或 2")),
    };
    if end < start {
        return Err(param_err("endTime 不能早于 startTime"));
    }
    if end.saturating_sub(start) > max_span {
        return Err(param_err(if time_type == 2 {
            "按更新时间查询时间跨度不能超过30分钟"
        } else {
            "按创建时间查询时间跨度不能超过24小时"
        }));
    }
    let page_no = number(b, "pageNo", Some(1))?;
    let page_size = number(b, "pageSize", Some(50))?;
    if page_no < 1 {
        return Err(param_err("pageNo 从 1 开始"));
    }
    if !(1..=100).contains(&page_size) {
        return Err(param_err("pageSize 须在 1-100 之间"));
    }
    let status = match b.get("orderStatus") {
        None | Some(Value::Null) => None,
        v => Some(int(v).ok_or_else(|| param_err("orderStatus 须为整数"))?),
    };
    let (s_ms, e_ms) = (start.saturating_mul(1000), end.saturating_mul(1000));
    let skip = ((page_no - 1) as usize).saturating_mul(page_size as usize);
    let take = page_size as usize;
    let (total, page) = if time_type == 2 && status.is_none() {
        st.window_page(P, shop, (s_ms, e_ms), skip, take)
    } else {
        let mut list: Vec<&Order> = if time_type == 2 {
            st.window_desc(P, shop, s_ms, e_ms)
        } else {
            let mut v: Vec<&Order> = st
                .shop_orders(P, shop)
                .into_iter()
                .filter(|o| o.created_ms >= s_ms && o.created_ms < e_ms)
                .collect();
            v.sort_by(|a, b| (b.created_ms, &b.id).cmp(&(a.created_ms, &a.id)));
            v
        };
        if let Some(s) = status {
            list.retain(|o| o.stage.xhs() == s);
        }
        let total = list.len();
        (total, list.into_iter().skip(skip).take(take).collect())
    };
    let total = total as i64;
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Page<'a> {
        total: i64,
        page_no: i64,
        page_size: i64,
        max_page_no: i64,
        order_list: Vec<ListItem<'a>>,
    }
    Ok(to_json(&Page {
        total,
        page_no,
        page_size,
        max_page_no: (total + page_size - 1) / page_size,
        order_list: page.into_iter().map(ListItem::of).collect(),
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListItem<'a> {
    order_id: &'a str,
    order_type: i64,
    order_status: i64,
    order_after_sales_status: i64,
    cancel_status: i64,
    created_time: i64,
    paid_time: i64,
    update_time: i64,
    delivery_time: i64,
    finish_time: i64,
    receiver_province_name: &'a str,
    receiver_city_name: &'a str,
    receiver_district_name: &'a str,
    user_id: &'a str,
}

impl<'a> ListItem<'a> {
    fn of(o: &'a Order) -> Self {
        ListItem {
            order_id: &o.id,
            order_type: 1,
            order_status: o.stage.xhs(),
            order_after_sales_status: if o.refunded() { 4 } else { 1 },
            cancel_status: 0,
            created_time: o.created_ms,
            paid_time: o.paid_ms.unwrap_or(0),
            update_time: o.modified_ms,
            delivery_time: o.shipments.first().map_or(0, |s| s.at_ms),
            finish_time: o.finished_ms.unwrap_or(0),
            receiver_province_name: &o.receiver.province,
            receiver_city_name: &o.receiver.city,
            receiver_district_name: &o.receiver.district,
            user_id: &o.buyer_id,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SkuView<'a> {
    sku_id: &'a str,
    item_id: &'a str,
    sku_name: &'a str,
    erpcode: &'a str,
    sku_quantity: i64,
    total_paid_amount: i64,
    sku_after_sale_status: i64,
}

/// `order.getOrderDetail`: the list item plus amounts, the masked receiver and the SKUs.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DetailView<'a> {
    #[serde(flatten)]
    item: ListItem<'a>,
    total_pay_amount: i64,
    total_shipping_free: i64,
    open_address_id: String,
    receiver_name: String,
    receiver_phone: String,
    receiver_address: String,
    express_tracking_no: &'a str,
    express_company_code: &'a str,
    sku_list: Vec<SkuView<'a>>,
}

impl<'a> DetailView<'a> {
    fn of(o: &'a Order) -> Self {
        let r = &o.receiver;
        let last = o.shipments.last();
        DetailView {
            item: ListItem::of(o),
            total_pay_amount: o.total_fen(),
            total_shipping_free: o.post_fee_fen,
            open_address_id: o.open_address_id(),
            receiver_name: mask_name(&r.name),
            receiver_phone: mask_phone(&r.phone),
            receiver_address: mask_address(&r.address),
            express_tracking_no: last.map_or("", |s| s.tracking_no.as_str()),
            express_company_code: last.map_or("", |s| s.company_code.as_str()),
            sku_list: o
                .lines
                .iter()
                .map(|l| SkuView {
                    sku_id: &l.sku_id,
                    item_id: &l.item_id,
                    sku_name: &l.title,
                    erpcode: &l.outer_sku_code,
                    sku_quantity: l.qty,
                    total_paid_amount: l.amount_fen(),
                    sku_after_sale_status: if l.refunded { 4 } else { 1 },
                })
                .collect(),
        }
    }
}

fn receiver_info(st: &State, shop: &str, b: &Map<String, Value>) -> Result<Value, XhsErr> {
    let queries = match b.get("receiverQueries") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => return Err(param_err("receiverQueries 不能为空")),
    };
    let infos: Vec<Value> = queries
        .iter()
        .map(|q| {
            let id = text(q.get("orderId")).unwrap_or_default();
            let open = text(q.get("openAddressId")).unwrap_or_default();
            let found = st
                .shop_order(P, shop, &id)
                .filter(|o| o.open_address_id() == open);
            let r = found.map(|o| o.receiver.clone()).unwrap_or_default();
            json!({
                "orderId": id,
                "matched": found.is_some(),
                "receiverName": r.name,
                "receiverPhone": r.phone,
                "receiverProvinceName": r.province,
                "receiverCityName": r.city,
                "receiverDistrictName": r.district,
                "receiverAddress": r.address,
            })
        })
        .collect();
    Ok(json!({ "receiverInfos": infos }))
}

fn deliver(st: &mut State, shop: &str, b: &Map<String, Value>, now: i64) -> Result<Value, XhsErr> {
    let id = required(b, "orderId")?;
    let express_no = required(b, "expressNo")?;
    let company = required(b, "expressCompanyCode")?;
    let line_ids: Vec<String> = match b.get("skuIdList") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().filter_map(|v| text(Some(v))).collect(),
        Some(_) => return Err(param_err("skuIdList 须为数组")),
    };
    if st.shop_order(P, shop, &id).is_none() {
        return Err((BUSINESS, "订单不存在".into()));
    }
    let event = OrderEvent::Ship {
        company_code: company,
        tracking_no: express_no,
        line_ids,
    };
    match st.apply(P, &id, &event, now) {
        Ok(_) => Ok(json!({})),
        Err(MockError::Invalid(why)) => Err(param_err(why)),
        Err(_) => Err((BUSINESS, "当前订单状态不允许发货".into())),
    }
}
