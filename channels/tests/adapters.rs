//! The adapters against tiny in-process platforms that check every signature with `sign` and
//! answer canned JSON, with throttles, 5xx and expired tokens injected in front of the answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uphub_channels::sign::{TopSignMethod, doudian_sign, top_sign, xhs_sign};
use uphub_channels::{
    ChannelError, Credentials, DouyinShop, HttpConfig, Marketplace, TaobaoShop, Window,
    XiaohongshuShop, connect,
};
use uphub_domain::catalog::ChannelType;
use uphub_domain::order::{OrderStatus, SealedReceiver};

const SECRET: &str = "test-secret";

/// One call the platform received (signature already checked).
#[derive(Debug, Clone)]
struct Call {
    method: String,
    params: Value,
    token: Option<String>,
    at: Instant,
}

/// An answer put in front of the canned ones.
enum Fault {
    Http502,
    Answer(Value),
}

type Responder = Box<dyn Fn(&Call) -> Value + Send + Sync>;

struct Platform {
    faults: Mutex<VecDeque<Fault>>,
    calls: Mutex<Vec<Call>>,
    respond: Responder,
}

impl Platform {
    fn calls(&self, method: &str) -> Vec<Call> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    fn fault(&self, f: Fault) {
        self.faults.lock().unwrap().push_back(f);
    }

    fn answer(&self, call: Call) -> Response {
        let fault = self.faults.lock().unwrap().pop_front();
        let reply = match fault {
            Some(Fault::Http502) => {
                self.calls.lock().unwrap().push(call);
                return (StatusCode::BAD_GATEWAY, "502 Bad Gateway").into_response();
            }
            Some(Fault::Answer(v)) => v,
            None => (self.respond)(&call),
        };
        self.calls.lock().unwrap().push(call);
        axum::Json(reply).into_response()
    }
}

async fn taobao(
    State(p): State<Arc<Platform>>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let method = TopSignMethod::parse(&get("sign_method").unwrap_or_default()).unwrap();
    let want = top_sign(
        SECRET,
        method,
        form.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    if get("sign").as_deref() != Some(want.as_str()) {
        return axum::Json(json!({"error_response": {"code": 25, "msg": "Invalid signature"}}))
            .into_response();
    }
    let ts = get("timestamp").unwrap_or_default();
    let ts = chrono::NaiveDateTime::parse_from_str(&ts, "%Y-%m-%d %H:%M:%S").unwrap();
    let now_gmt8 = (Utc::now() + chrono::TimeDelta::hours(8)).naive_utc();
    assert!(
        (now_gmt8 - ts).num_seconds().abs() < 600,
        "timestamp not GMT+8: {ts}"
    );
    assert_eq!(get("format").as_deref(), Some("json"));
    let params: serde_json::Map<String, Value> = form
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    p.answer(Call {
        method: get("method").unwrap_or_default(),
        token: get("session"),
        params: Value::Object(params),
        at: Instant::now(),
    })
}

async fn doudian(
    State(p): State<Arc<Platform>>,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let method = uri.path().trim_start_matches('/').replace('/', ".");
    assert_eq!(q.get("method"), Some(&method));
    assert_eq!(q.get("v").map(String::as_str), Some("2"));
    assert_eq!(
        q.get("sign_method").map(String::as_str),
        Some("hmac-sha256")
    );
    assert_eq!(headers.get("x-open-no-old-err-code").unwrap(), "1");
    let ts = q.get("timestamp").cloned().unwrap_or_default();
    assert!((Utc::now().timestamp() - ts.parse::<i64>().unwrap()).abs() < 600);
    let want = doudian_sign(&q["app_key"], SECRET, &method, &body, &ts);
    if q.get("sign") != Some(&want) {
        return axum::Json(
            json!({"code": 40003, "sub_code": "isv.signature-invalid", "msg": "bad sign"}),
        )
        .into_response();
    }
    p.answer(Call {
        method,
        token: q.get("access_token").cloned(),
        params: serde_json::from_str(&body).unwrap(),
        at: Instant::now(),
    })
}

async fn xhs(State(p): State<Arc<Platform>>, axum::Json(body): axum::Json<Value>) -> Response {
    let s = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
    assert_eq!(s("version"), "2.0");
    let want = xhs_sign(&s("method"), &s("appId"), &s("timestamp"), "2.0", SECRET);
    if s("sign") != want {
        return axum::Json(json!({"success": false, "error_code": 1003, "error_msg": "bad sign"}))
            .into_response();
    }
    p.answer(Call {
        method: s("method"),
        token: body
            .get("accessToken")
            .and_then(Value::as_str)
            .map(str::to_owned),
        params: body.clone(),
        at: Instant::now(),
    })
}

async fn platform(
    respond: impl Fn(&Call) -> Value + Send + Sync + 'static,
) -> (Arc<Platform>, String) {
    let p = Arc::new(Platform {
        faults: Mutex::new(VecDeque::new()),
        calls: Mutex::new(Vec::new()),
        respond: Box::new(respond),
    });
    let app = Router::new()
        .route("/router/rest", post(taobao))
        .route("/ark/open_api/v3/common_controller", post(xhs))
        .fallback(doudian)
        .with_state(p.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (p, base)
}

fn creds(base: &str) -> Credentials {
    Credentials {
        base_url: base.to_owned(),
        app_key: "app-1".into(),
        app_secret: SECRET.into(),
        access_token: "token-1".into(),
        refresh_token: Some("refresh-1".into()),
        shop_id: "shop-1".into(),
    }
}

fn config() -> HttpConfig {
    HttpConfig {
        timeout: Duration::from_secs(2),
        ..HttpConfig::default()
    }
}

fn window(minutes: i64) -> Window {
    let start = DateTime::from_timestamp(1_709_258_400, 0).unwrap();
    Window {
        start,
        end: start + chrono::TimeDelta::minutes(minutes),
    }
}

fn int_param(c: &Call, k: &str) -> i64 {
    match &c.params[k] {
        Value::Number(n) => n.as_i64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        other => panic!("{k} = {other}"),
    }
}

// ---- Taobao -------------------------------------------------------------------------------------

fn top_trade(n: i64) -> Value {
    json!({
        "tid": 4_000_000_000 + n, "tid_str": (4_000_000_000 + n).to_string(), "status": "WAIT_SELLER_SEND_GOODS",
        "created": "2024-03-01 10:00:00", "modified": "2024-03-01 10:05:00", "pay_time": "2024-03-01 10:01:00",
        "buyer_open_uid": "buyer", "payment": "10.50", "post_fee": "0.00",
        "receiver_name": "张*", "receiver_state": "浙江省", "receiver_city": "杭州市", "receiver_district": "西湖区",
        "receiver_address": "***", "receiver_mobile": "138****0000", "oaid": format!("oaid-{n}"),
        "orders": {"order": {"oid": n * 10, "num_iid": 1, "sku_id": "2", "outer_sku_id": "SKU", "title": "t",
                              "num": 1, "price": "10.50", "payment": "10.50", "status": "WAIT_SELLER_SEND_GOODS"}}
    })
}

fn top_trades_page(c: &Call, total: i64) -> Value {
    let page = int_param(c, "page_no");
    let size = int_param(c, "page_size");
    let trades: Vec<Value> = ((page - 1) * size..(page * size).min(total))
        .map(top_trade)
        .collect();
    json!({"trades_sold_increment_get_response": {"total_results": total, "trades": {"trade": trades}}})
}

#[tokio::test]
async fn taobao_pages_from_the_last_page_back_to_the_first_after_learning_the_total() {
    let (p, base) = platform(|c| top_trades_page(c, 250)).await;
    let shop = TaobaoShop::new(creds(&base), config()).unwrap();
    let orders = shop.orders_modified(window(20)).await.unwrap();
    let pages: Vec<i64> = p
        .calls("taobao.trades.sold.increment.get")
        .iter()
        .map(|c| int_param(c, "page_no"))
        .collect();
    assert_eq!(pages, [1, 3, 2, 1]);
    assert_eq!(orders.len(), 250);
    assert_eq!(
        orders[0].platform_order_id, "4000000200",
        "the last page comes first"
    );
    assert_eq!(orders[0].total_fen, 1050);
    let c = &p.calls("taobao.trades.sold.increment.get")[0];
    assert_eq!(c.params["page_size"], "100");
    assert_eq!(c.params["start_modified"], "2024-03-01 10:00:00");
    assert_eq!(c.params["end_modified"], "2024-03-01 10:20:00");
    assert_eq!(c.params["sign_method"], "hmac-sha256");
    assert_eq!(c.token.as_deref(), Some("token-1"));
}

#[tokio::test]
async fn taobao_splits_windows_longer_than_30_minutes() {
    let (p, base) = platform(|c| top_trades_page(c, 1)).await;
    let shop = TaobaoShop::new(creds(&base), config())
        .unwrap()
        .with_sign_method(TopSignMethod::Md5);
    let orders = shop.orders_modified(window(70)).await.unwrap();
    let spans: Vec<(String, String)> = p
        .calls("taobao.trades.sold.increment.get")
        .iter()
        .map(|c| {
            assert_eq!(c.params["sign_method"], "md5");
            (
                c.params["start_modified"].as_str().unwrap().to_owned(),
                c.params["end_modified"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        spans,
        [
            (
                "2024-03-01 10:00:00".to_owned(),
                "2024-03-01 10:30:00".to_owned()
            ),
            (
                "2024-03-01 10:30:00".to_owned(),
                "2024-03-01 11:00:00".to_owned()
            ),
            (
                "2024-03-01 11:00:00".to_owned(),
                "2024-03-01 11:10:00".to_owned()
            ),
        ]
    );
    assert_eq!(
        orders.len(),
        1,
        "the same trade in every piece is returned once"
    );
}

#[tokio::test]
async fn taobao_waits_out_the_announced_ban_then_succeeds() {
    let (p, base) = platform(|c| top_trades_page(c, 1)).await;
    p.fault(Fault::Answer(json!({"error_response": {
        "code": 7, "msg": "App Call Limited", "sub_code": "accesscontrol.limited-by-api-access-count",
        "sub_msg": "This ban will last for 1 more seconds"}})));
    let shop = TaobaoShop::new(creds(&base), config()).unwrap();
    let orders = shop.orders_modified(window(10)).await.unwrap();
    assert_eq!(orders.len(), 1);
    let calls = p.calls("taobao.trades.sold.increment.get");
    assert_eq!(calls.len(), 2);
    let waited = calls[1].at - calls[0].at;
    assert!(
        waited >= Duration::from_secs(2),
        "ban of 1 s + 1 s margin, waited {waited:?}"
    );
}

#[tokio::test]
async fn taobao_retries_a_502_then_succeeds_and_gives_up_after_the_attempts() {
    let (p, base) = platform(|c| top_trades_page(c, 1)).await;
    p.fault(Fault::Http502);
    let shop = TaobaoShop::new(creds(&base), config()).unwrap();
    assert_eq!(shop.orders_modified(window(10)).await.unwrap().len(), 1);
    assert_eq!(p.calls("taobao.trades.sold.increment.get").len(), 2);

    for _ in 0..3 {
        p.fault(Fault::Http502);
    }
    let cfg = HttpConfig {
        max_attempts: 3,
        ..config()
    };
    let shop = TaobaoShop::new(creds(&base), cfg).unwrap();
    let e = shop.orders_modified(window(10)).await.unwrap_err();
    assert!(
        matches!(&e, ChannelError::Unavailable(m) if m.contains("502")),
        "{e}"
    );
    assert_eq!(p.calls("taobao.trades.sold.increment.get").len(), 5);
}

#[tokio::test]
async fn taobao_bad_credentials_are_auth_errors_and_not_retried() {
    let (p, base) = platform(|c| top_trades_page(c, 1)).await;
    let mut bad = creds(&base);
    bad.app_secret = "wrong".into();
    let shop = TaobaoShop::new(bad, config()).unwrap();
    assert!(matches!(shop.order("1").await, Err(ChannelError::Auth(_))));
    p.fault(Fault::Answer(json!({"error_response": {"code": 27, "msg": "Invalid session", "sub_code": "invalid-sessionkey"}})));
    let shop = TaobaoShop::new(creds(&base), config()).unwrap();
    assert!(matches!(shop.order("1").await, Err(ChannelError::Auth(_))));
    assert_eq!(
        p.calls("taobao.trade.fullinfo.get").len(),
        1,
        "the bad signature was refused before"
    );
}

#[tokio::test]
async fn taobao_decrypts_ships_pushes_stock_and_pulls_tmc_messages() {
    let (p, base) = platform(|c| match c.method.as_str() {
        "taobao.trade.fullinfo.get" => json!({"trade_fullinfo_get_response": {"trade": top_trade(int_param(c, "tid") - 4_000_000_000)}}),
        "taobao.top.oaid.decrypt" => {
            let q: Vec<Value> = serde_json::from_str(c.params["query_list"].as_str().unwrap()).unwrap();
            let rs: Vec<Value> = q
                .iter()
                .map(|q| {
                    assert_eq!(q["scene"], "1004");
                    json!({"tid": q["tid"], "oaid": q["oaid"], "name": "张三", "mobile": "13800000000",
                           "state": "浙江省", "city": "杭州市", "district": "西湖区", "address_detail": "文三路 1 号",
                           "matched": q["oaid"] != "oaid-unmatched"})
                })
                .collect();
            json!({"top_oaid_decrypt_response": {"receiver_list": {"receiver": rs}}})
        }
        "taobao.logistics.offline.send" => json!({"logistics_offline_send_response": {"shipping": {"is_success": true}}}),
        "taobao.item.quantity.update" => json!({"item_quantity_update_response": {"item": {"num_iid": 1, "num": 5}}}),
        "taobao.tmc.messages.consume" => json!({"tmc_messages_consume_response": {"messages": {"tmc_message": [
            {"id": 11, "topic": "taobao_trade_TradeBuyerPay", "content": "{\"tid\":4000000001,\"status\":\"WAIT_SELLER_SEND_GOODS\"}"},
            {"id": 12, "topic": "taobao_trade_TradeChanged", "content": "not json"}
        ]}}}),
        "taobao.tmc.messages.confirm" => json!({"tmc_messages_confirm_response": {"is_success": true}}),
        m => json!({"error_response": {"code": 22, "msg": format!("Invalid method {m}")}}),
    })
    .await;
    let shop = connect(ChannelType::Taobao, creds(&base)).unwrap();
    assert_eq!(shop.channel(), ChannelType::Taobao);

    let o = shop.order("4000000007").await.unwrap();
    assert_eq!(
        (o.platform_order_id.as_str(), o.status),
        ("4000000007", OrderStatus::Paid)
    );

    let mut sealed: Vec<(String, SealedReceiver)> = (0..25)
        .map(|n| {
            let s = SealedReceiver {
                decrypt_ref: format!("oaid-{n}"),
                ..SealedReceiver::default()
            };
            ((4_000_000_000_i64 + n).to_string(), s)
        })
        .collect();
    sealed[3].1.decrypt_ref = "oaid-unmatched".into();
    sealed[4].1.decrypt_ref = String::new();
    let rs = shop.decrypt_receivers(&sealed).await.unwrap();
    assert_eq!(rs.len(), 25);
    assert_eq!(rs[0].as_ref().unwrap().name, "张三");
    assert_eq!(rs[0].as_ref().unwrap().address, "文三路 1 号");
    assert!(rs[3].is_none() && rs[4].is_none());
    assert_eq!(rs.iter().filter(|r| r.is_some()).count(), 23);
    let batches: Vec<usize> = p
        .calls("taobao.top.oaid.decrypt")
        .iter()
        .map(|c| {
            serde_json::from_str::<Vec<Value>>(c.params["query_list"].as_str().unwrap())
                .unwrap()
                .len()
        })
        .collect();
    assert_eq!(
        batches,
        [19, 5],
        "batches of 20 orders, those without an oaid not sent"
    );

    shop.ship("4000000001", &["10".into(), "20".into()], "YTO", "YT123")
        .await
        .unwrap();
    shop.ship("4000000002", &[], "SF", "SF9").await.unwrap();
    let ships = p.calls("taobao.logistics.offline.send");
    assert_eq!(ships[0].params["sub_tid"], "10,20");
    assert_eq!(ships[0].params["is_split"], "1");
    assert_eq!(ships[0].params["out_sid"], "YT123");
    assert_eq!(ships[0].params["company_code"], "YTO");
    assert!(ships[1].params.get("sub_tid").is_none());

    shop.push_stock("1", "2", 5).await.unwrap();
    let stock = &p.calls("taobao.item.quantity.update")[0];
    assert_eq!(
        (
            stock.params["quantity"].as_str(),
            stock.params["type"].as_str()
        ),
        (Some("5"), Some("1"))
    );

    let hints = shop.poll_hints().await.unwrap();
    assert_eq!(hints.len(), 1);
    assert_eq!(
        (
            hints[0].message_id.as_str(),
            hints[0].platform_order_id.as_str()
        ),
        ("11", "4000000001")
    );
    let consume = &p.calls("taobao.tmc.messages.consume")[0];
    assert_eq!(consume.params["group_name"], "default");
    shop.confirm_hints(&["11".into()]).await.unwrap();
    let confirms: Vec<String> = p
        .calls("taobao.tmc.messages.confirm")
        .iter()
        .map(|c| c.params["s_message_ids"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        confirms,
        ["12", "11"],
        "the message naming no trade is acknowledged at once"
    );
}

// ---- Doudian ------------------------------------------------------------------------------------

fn dd_order(n: i64) -> Value {
    json!({
        "order_id": (6_900_000_000_i64 + n).to_string(), "order_status": 2, "create_time": 1_709_258_400,
        "update_time": 1_709_258_500, "pay_time": 1_709_258_460, "pay_amount": 1050, "post_amount": 0,
        "doudian_open_id": "open", "encrypt_post_receiver": format!("#n{n}#"), "encrypt_post_tel": format!("$t{n}$"),
        "mask_post_receiver": "张*", "mask_post_tel": "138****0000",
        "post_addr": {"province": {"name": "浙江省"}, "city": {"name": "杭州市"}, "town": {"name": "西湖区"},
                      "street": {"name": "街道"}, "encrypt_detail": format!("#d{n}#")},
        "mask_post_addr": {"detail": "***"},
        "sku_order_list": [{"order_id": (7_000_000_000_i64 + n).to_string(), "parent_order_id": "x", "product_id": 36, "sku_id": 17,
                            "out_sku_id": "SKU", "product_name": "t", "item_num": 1, "origin_amount": 1050, "pay_amount": 1050,
                            "order_status": 2, "after_sale_info": {"after_sale_status": 0}}]
    })
}

fn dd_ok(data: Value) -> Value {
    json!({"code": 10000, "msg": "success", "log_id": "l", "data": data})
}

fn dd_search(c: &Call, total: i64) -> Value {
    let page = int_param(c, "page");
    let size = int_param(c, "size");
    let list: Vec<Value> = (page * size..((page + 1) * size).min(total))
        .map(dd_order)
        .collect();
    dd_ok(json!({"page": page, "size": size, "total": total, "shop_order_list": list}))
}

#[tokio::test]
async fn doudian_pages_from_zero_until_the_total_is_covered() {
    let (p, base) = platform(|c| dd_search(c, 250)).await;
    let shop = DouyinShop::new(creds(&base), config()).unwrap();
    let orders = shop.orders_modified(window(90)).await.unwrap();
    assert_eq!(orders.len(), 250);
    let calls = p.calls("order.searchList");
    let pages: Vec<i64> = calls.iter().map(|c| int_param(c, "page")).collect();
    assert_eq!(pages, [0, 1, 2]);
    let c = &calls[0];
    assert_eq!(c.params["update_time_start"], 1_709_258_400);
    assert_eq!(
        c.params["update_time_end"],
        1_709_258_400 + 90 * 60,
        "no 30-minute split for Doudian"
    );
    assert_eq!(
        (c.params["size"].as_i64(), c.params["order_by"].as_str()),
        (Some(100), Some("update_time"))
    );
    assert_eq!(c.token.as_deref(), Some("token-1"));
    assert_eq!(orders[0].status, OrderStatus::Processing);
    assert_eq!(orders[0].lines[0].platform_item_id, "36");
}

#[tokio::test]
async fn doudian_backs_off_after_a_throttle_and_a_502_then_succeeds() {
    let (p, base) = platform(|c| dd_search(c, 3)).await;
    p.fault(Fault::Answer(json!({"code": 60000, "msg": "请求太频繁"})));
    p.fault(Fault::Http502);
    let shop = DouyinShop::new(creds(&base), config()).unwrap();
    let orders = shop.orders_modified(window(10)).await.unwrap();
    assert_eq!(orders.len(), 3);
    let calls = p.calls("order.searchList");
    assert_eq!(calls.len(), 3);
    assert!(
        calls[1].at - calls[0].at >= Duration::from_millis(500),
        "a throttle without a ban time backs off from 1 s (0.5 s with jitter)"
    );
    assert!(
        calls[2].at - calls[1].at >= Duration::from_millis(100),
        "longer back-off after the 502"
    );
}

#[tokio::test]
async fn doudian_refreshes_an_expired_token_once_and_repeats_the_call() {
    let (p, base) = platform(|c| match c.method.as_str() {
        "token.refresh" => {
            assert_eq!(c.token, None, "no access_token on token calls");
            assert_eq!(c.params, json!({"grant_type": "refresh_token", "refresh_token": "refresh-1"}));
            dd_ok(json!({"access_token": "token-2", "refresh_token": "refresh-2", "expires_in": 604800}))
        }
        _ if c.token.as_deref() != Some("token-2") => {
            json!({"code": 40003, "msg": "invalid param", "sub_code": "isv.access-token-expired", "sub_msg": "expired"})
        }
        _ => dd_ok(json!({})),
    })
    .await;
    let shop = DouyinShop::new(creds(&base), config()).unwrap();
    shop.push_stock("36", "17", 9).await.unwrap();
    let stock = p.calls("sku.syncStock");
    assert_eq!(stock.len(), 2);
    assert_eq!(stock[1].params["stock_num"], 9);
    assert_eq!(stock[1].params["incremental"], false);
    assert_eq!(p.calls("token.refresh").len(), 1);
    let now = shop.credentials();
    assert_eq!(
        (now.access_token.as_str(), now.refresh_token.as_deref()),
        ("token-2", Some("refresh-2"))
    );

    // A refresh that does not help is an auth error, not a loop.
    let (p, base) = platform(|c| match c.method.as_str() {
        "token.refresh" => dd_ok(json!({"access_token": "token-3"})),
        _ => json!({"code": 40003, "sub_code": "isv.access-token-expired"}),
    })
    .await;
    let shop = DouyinShop::new(creds(&base), config()).unwrap();
    assert!(matches!(
        shop.ship("1", &[], "yuantong", "YT1").await,
        Err(ChannelError::Auth(_))
    ));
    assert_eq!(p.calls("order.logisticsAdd").len(), 2);
}

#[tokio::test]
async fn doudian_decrypts_at_most_50_cipher_texts_per_call_and_ships_whole_orders() {
    let (p, base) = platform(|c| match c.method.as_str() {
        "order.batchDecrypt" => {
            let infos: Vec<Value> = c.params["cipher_infos"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    let cipher = i["cipher_text"].as_str().unwrap();
                    let fail = cipher == "$t5$";
                    json!({"auth_id": i["auth_id"], "cipher_text": cipher, "err_no": i64::from(fail),
                           "decrypt_text": format!("plain{}", cipher.trim_matches(|ch| ch == '#' || ch == '$'))})
                })
                .collect();
            dd_ok(json!({"decrypt_infos": infos}))
        }
        "order.orderDetail" => dd_ok(json!({"shop_order_detail": dd_order(int_param(c, "shop_order_id") - 6_900_000_000)})),
        _ => dd_ok(json!({})),
    })
    .await;
    let shop = DouyinShop::new(creds(&base), config()).unwrap();
    let mut sealed = Vec::new();
    for n in 0..20 {
        let o = shop
            .order(&(6_900_000_000_i64 + n).to_string())
            .await
            .unwrap();
        sealed.push((o.platform_order_id.clone(), o.receiver));
    }
    let rs = shop.decrypt_receivers(&sealed).await.unwrap();
    let sizes: Vec<usize> = p
        .calls("order.batchDecrypt")
        .iter()
        .map(|c| c.params["cipher_infos"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [48, 12]);
    let r = rs[0].as_ref().unwrap();
    assert_eq!(
        (r.name.as_str(), r.phone.as_str(), r.address.as_str()),
        ("plainn0", "plaint0", "plaind0")
    );
    assert_eq!(r.province, "浙江省");
    assert!(rs[5].is_none(), "a cipher the platform would not decrypt");
    assert_eq!(rs.iter().filter(|r| r.is_some()).count(), 19);
    let first = &p.calls("order.batchDecrypt")[0].params["cipher_infos"][0];
    assert_eq!(first["auth_id"], "6900000000");

    shop.ship("6900000001", &[], "yuantong", "YT1")
        .await
        .unwrap();
    let ship = &p.calls("order.logisticsAdd")[0];
    assert_eq!(
        ship.params,
        json!({"order_id": "6900000001", "company_code": "yuantong", "logistics_code": "YT1"})
    );
    assert!(matches!(
        shop.ship("6900000001", &["7000000001".into()], "yuantong", "YT1")
            .await,
        Err(ChannelError::Rejected { .. })
    ));
}

// ---- Xiaohongshu --------------------------------------------------------------------------------

fn xhs_ok(data: Value) -> Value {
    json!({"success": true, "error_code": 0, "data": data})
}

fn xhs_detail(id: &str) -> Value {
    json!({
        "orderId": id, "orderStatus": 6, "orderAfterSalesStatus": 1, "createdTime": 1_709_258_400_000_i64,
        "paidTime": 1_709_258_460_000_i64, "updateTime": 1_709_258_500_000_i64, "userId": "u1",
        "totalPayAmount": 1050, "totalShippingFree": 0, "openAddressId": format!("oa-{id}"),
        "receiverName": "张*", "receiverPhone": "138****0000", "receiverAddress": "***",
        "receiverProvinceName": "浙江省", "receiverCityName": "杭州市", "receiverDistrictName": "西湖区",
        "skuList": [{"skuId": "sku-1", "itemId": "item-1", "skuName": "t", "erpcode": "SKU", "skuQuantity": 1,
                     "totalPaidAmount": 1050, "skuAfterSaleStatus": 1}]
    })
}

fn xhs_list(c: &Call, total: i64) -> Value {
    let page = int_param(c, "pageNo");
    let size = int_param(c, "pageSize");
    let list: Vec<Value> = ((page - 1) * size..(page * size).min(total))
        .map(|n| json!({"orderId": format!("P{n}"), "orderStatus": 6, "updateTime": 1_709_258_500_000_i64}))
        .collect();
    xhs_ok(
        json!({"total": total, "pageNo": page, "pageSize": size, "maxPageNo": (total + size - 1) / size, "orderList": list}),
    )
}

fn xhs_platform(total: i64) -> impl Fn(&Call) -> Value + Send + Sync + 'static {
    move |c| match c.method.as_str() {
        "order.getOrderList" => xhs_list(c, total),
        "order.getOrderDetail" => xhs_ok(xhs_detail(c.params["orderId"].as_str().unwrap())),
        _ => xhs_ok(json!({})),
    }
}

#[tokio::test]
async fn xiaohongshu_pages_from_the_last_page_back_and_fetches_every_detail() {
    let (p, base) = platform(xhs_platform(250)).await;
    let shop = XiaohongshuShop::new(creds(&base), config()).unwrap();
    let orders = shop.orders_modified(window(20)).await.unwrap();
    let lists = p.calls("order.getOrderList");
    let pages: Vec<i64> = lists.iter().map(|c| int_param(c, "pageNo")).collect();
    assert_eq!(pages, [1, 3, 2, 1]);
    assert_eq!(lists[0].params["timeType"], 2);
    assert_eq!(lists[0].params["startTime"], 1_709_258_400);
    assert_eq!(lists[0].params["endTime"], 1_709_258_400 + 20 * 60);
    assert_eq!(lists[0].params["appId"], "app-1");
    assert!(lists[0].params["timestamp"].is_string());
    assert_eq!(lists[0].token.as_deref(), Some("token-1"));
    assert_eq!(p.calls("order.getOrderDetail").len(), 250);
    assert_eq!(orders.len(), 250);
    assert_eq!(
        orders[0].platform_order_id, "P200",
        "the last page comes first"
    );
    assert_eq!(orders[0].status, OrderStatus::Shipped);
    assert_eq!(orders[0].receiver.decrypt_ref, "oa-P200");
}

#[tokio::test]
async fn xiaohongshu_works_off_a_busy_window_in_pieces_and_lists_it_once() {
    let (p, base) = platform(xhs_platform(450)).await;
    let shop = XiaohongshuShop::new(creds(&base), config()).unwrap();
    let w = window(20);
    let mut known = HashMap::new();
    let mut pieces = Vec::new();
    loop {
        let got = shop.fetch_window(w, &known).await.unwrap();
        assert!(got.error.is_none());
        pieces.push(got.orders.len());
        for o in &got.orders {
            known.insert(o.platform_order_id.clone(), o.modified_at);
        }
        if got.complete {
            break;
        }
    }
    assert_eq!(pieces, [200, 200, 50]);
    assert_eq!(known.len(), 450);
    // One listing (1 + 5 pages) for the three pieces; each detail fetched once.
    assert_eq!(p.calls("order.getOrderList").len(), 6);
    assert_eq!(p.calls("order.getOrderDetail").len(), 450);
    // Another window is listed afresh.
    let later = Window {
        start: w.end,
        end: w.end + chrono::TimeDelta::minutes(5),
    };
    shop.fetch_window(later, &known).await.unwrap();
    assert_eq!(p.calls("order.getOrderList").len(), 12);
}

#[tokio::test]
async fn xiaohongshu_splits_windows_and_backs_off_after_a_throttle_and_a_502() {
    let (p, base) = platform(xhs_platform(2)).await;
    p.fault(Fault::Answer(
        json!({"success": false, "error_code": -9013, "error_msg": "触发Method维度的限流"}),
    ));
    p.fault(Fault::Http502);
    let shop = XiaohongshuShop::new(creds(&base), config()).unwrap();
    let orders = shop.orders_modified(window(45)).await.unwrap();
    assert_eq!(
        orders.len(),
        2,
        "the same orders in both pieces are fetched once"
    );
    let lists = p.calls("order.getOrderList");
    let spans: Vec<(i64, i64)> = lists
        .iter()
        .map(|c| (int_param(c, "startTime"), int_param(c, "endTime")))
        .collect();
    let t0 = 1_709_258_400;
    assert_eq!(
        spans,
        [
            (t0, t0 + 1800),
            (t0, t0 + 1800),
            (t0, t0 + 1800),
            (t0 + 1800, t0 + 2700)
        ]
    );
    assert!(lists[1].at - lists[0].at >= Duration::from_millis(500));
    assert!(lists[2].at - lists[1].at >= Duration::from_millis(100));
    assert_eq!(p.calls("order.getOrderDetail").len(), 2);
}

#[tokio::test]
async fn xiaohongshu_refreshes_the_token_on_1004_and_bad_signatures_are_auth_errors() {
    let (p, base) = platform(|c| match c.method.as_str() {
        "oauth.refreshToken" => {
            assert_eq!(c.params["refreshToken"], "refresh-1");
            xhs_ok(json!({"accessToken": "token-2", "accessTokenExpiresAt": 1, "refreshToken": "refresh-2", "refreshTokenExpiresAt": 2}))
        }
        _ if c.token.as_deref() != Some("token-2") => {
            json!({"success": false, "error_code": 1004, "error_msg": "accessToken expired"})
        }
        _ => xhs_ok(json!({})),
    })
    .await;
    let shop = XiaohongshuShop::new(creds(&base), config()).unwrap();
    shop.ship("P1", &["sku-1".into()], "shunfeng", "SF1")
        .await
        .unwrap();
    let deliver = p.calls("order.orderDeliver");
    assert_eq!(deliver.len(), 2);
    assert_eq!(deliver[1].params["skuIdList"], json!(["sku-1"]));
    assert_eq!(deliver[1].params["expressNo"], "SF1");
    assert_eq!(deliver[1].params["expressCompanyCode"], "shunfeng");
    assert_eq!(shop.credentials().access_token, "token-2");
    shop.push_stock("item-1", "sku-1", 4).await.unwrap();
    let stock = &p.calls("inventory.syncSkuStock")[0];
    assert_eq!(
        (stock.params["skuId"].as_str(), stock.params["qty"].as_i64()),
        (Some("sku-1"), Some(4))
    );

    let mut bad = creds(&base);
    bad.app_secret = "wrong".into();
    let shop = XiaohongshuShop::new(bad, config()).unwrap();
    assert!(matches!(shop.order("P1").await, Err(ChannelError::Auth(_))));
}

#[tokio::test]
async fn xiaohongshu_decrypts_receivers_in_batches_of_20() {
    let (p, base) = platform(|c| {
        let infos: Vec<Value> = c.params["receiverQueries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| json!({"orderId": q["orderId"], "matched": q["openAddressId"] != "oa-bad",
                            "receiverName": "李四", "receiverPhone": "13900000000", "receiverProvinceName": "浙江省",
                            "receiverCityName": "杭州市", "receiverDistrictName": "西湖区", "receiverAddress": "文三路 2 号"}))
            .collect();
        assert_eq!(c.params["isReturn"], false);
        xhs_ok(json!({"receiverInfos": infos}))
    })
    .await;
    let shop = XiaohongshuShop::new(creds(&base), config()).unwrap();
    let mut sealed: Vec<(String, SealedReceiver)> = (0..21)
        .map(|n| {
            let s = SealedReceiver {
                decrypt_ref: format!("oa-{n}"),
                ..SealedReceiver::default()
            };
            (format!("P{n}"), s)
        })
        .collect();
    sealed[20].1.decrypt_ref = "oa-bad".into();
    let rs = shop.decrypt_receivers(&sealed).await.unwrap();
    assert_eq!(rs[0].as_ref().unwrap().address, "文三路 2 号");
    assert!(rs[20].is_none());
    let sizes: Vec<usize> = p
        .calls("order.getOrderReceiverInfo")
        .iter()
        .map(|c| c.params["receiverQueries"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [20, 1]);
}

#[test]
fn connect_builds_marketplaces_only() {
    let c = creds("http://127.0.0.1:9");
    for (ch, want) in [
        (ChannelType::Taobao, true),
        (ChannelType::Douyin, true),
        (ChannelType::Xiaohongshu, true),
        (ChannelType::WechatMini, false),
        (ChannelType::AlipayMini, false),
        (ChannelType::H5, false),
    ] {
        let m = connect(ch, c.clone());
        assert_eq!(m.is_some(), want, "{ch:?}");
        if let Some(m) = m {
            assert_eq!(m.channel(), ch);
        }
    }
}

// ------------------------------------------------------------------ HTTPS ---

const TEST_CERT: &str = include_str!("fixtures/tls-test-cert.pem");
const TEST_KEY: &str = include_str!("fixtures/tls-test-key.pem");

/// The same platform behind TLS (a self-signed end-entity certificate for localhost, made with
/// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 36500
/// -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1
/// -addext basicConstraints=critical,CA:FALSE -addext extendedKeyUsage=serverAuth`; webpki
/// refuses a CA certificate as the server's own).
async fn tls_platform(respond: impl Fn(&Call) -> Value + Send + Sync + 'static) -> String {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (_p, plain) = platform(respond).await;
    let upstream = plain.trim_start_matches("http://").to_owned();
    let certs = vec![CertificateDer::from_pem_slice(TEST_CERT.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(TEST_KEY.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // TLS terminates here; the bytes go on to the plain platform.
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await
                    && let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                }
            });
        }
    });
    format!("https://localhost:{port}")
}

#[tokio::test]
async fn adapters_speak_https_and_refuse_a_certificate_they_do_not_trust() {
    let base = tls_platform(|c| match c.method.as_str() {
        "taobao.trade.fullinfo.get" => {
            json!({"trade_fullinfo_get_response": {"trade": top_trade(7)}})
        }
        _ => json!({}),
    })
    .await;
    let trusted = HttpConfig {
        extra_root_pem: Some(TEST_CERT),
        ..config()
    };
    let shop = TaobaoShop::new(creds(&base), trusted).unwrap();
    let o = shop.order("7").await.unwrap();
    assert_eq!(o.platform_order_id, "4000000007");

    // The public roots do not include the test certificate: the handshake fails, as an outage
    // the caller may retry, never a panic.
    let strict = HttpConfig {
        max_attempts: 1,
        ..config()
    };
    let shop = TaobaoShop::new(creds(&base), strict).unwrap();
    match shop.order("7").await {
        Err(ChannelError::Unavailable(m)) => assert!(!m.is_empty()),
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}
