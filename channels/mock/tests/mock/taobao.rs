use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use uphub_channels::sign::TopSignMethod;
use uphub_channels_mock::{OrderEvent, Platform};

use crate::helpers::*;

const TRADE_FIELDS: &str = "tid,status,created,modified,pay_time,buyer_open_uid,payment,post_fee,receiver_name,receiver_state,receiver_city,receiver_district,receiver_address,receiver_mobile,oaid,orders";

fn window(from: chrono::DateTime<Utc>, to: chrono::DateTime<Utc>) -> (String, String) {
    (top_time(from), top_time(to))
}

async fn increment(mock: &Mock, start: &str, end: &str, page_no: u32, page_size: u32) -> Value {
    top(
        mock,
        "taobao.trades.sold.increment.get",
        &[
            ("fields", TRADE_FIELDS),
            ("start_modified", start),
            ("end_modified", end),
            ("page_no", &page_no.to_string()),
            ("page_size", &page_size.to_string()),
            ("use_has_next", "false"),
        ],
    )
    .await
}

fn error_code(v: &Value) -> i64 {
    v["error_response"]["code"].as_i64().unwrap_or(-1)
}

#[tokio::test]
async fn top_good_signature_passes_with_every_sign_method() {
    let mock = spawn().await;
    let now = Utc::now();
    let (s, e) = window(now - chrono::Duration::minutes(5), now);
    for sm in [
        TopSignMethod::Md5,
        TopSignMethod::HmacMd5,
        TopSignMethod::HmacSha256,
    ] {
        let p = top_params(
            "taobao.trades.sold.increment.get",
            sm,
            &[
                ("fields", "tid"),
                ("start_modified", &s),
                ("end_modified", &e),
            ],
        );
        let v: Value = top_post(&mock, &top_signed(p, sm))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            v["trades_sold_increment_get_response"]["total_results"], 0,
            "{sm:?}: {v}"
        );
        assert!(v["trades_sold_increment_get_response"]["request_id"].is_string());
    }
}

#[tokio::test]
async fn top_tampered_signature_gets_code_25() {
    let mock = spawn().await;
    let p = top_params(
        "taobao.trade.fullinfo.get",
        TopSignMethod::HmacSha256,
        &[("fields", "tid"), ("tid", "1")],
    );
    let mut form = top_signed(p, TopSignMethod::HmacSha256);
    for (k, v) in &mut form {
        if k == "tid" {
            *v = "2".into();
        }
    }
    let v: Value = top_post(&mock, &form).await.json().await.unwrap();
    assert_eq!(error_code(&v), 25, "{v}");
    assert!(v["error_response"]["request_id"].is_string());
}

#[tokio::test]
async fn top_rejects_stale_timestamps_unknown_methods_missing_arguments_and_bad_sessions() {
    let mock = spawn().await;

    let mut p = top_params(
        "taobao.trade.fullinfo.get",
        TopSignMethod::Md5,
        &[("fields", "tid"), ("tid", "1")],
    );
    for (k, v) in &mut p {
        if k == "timestamp" {
            *v = top_time(Utc::now() - chrono::Duration::minutes(11));
        }
    }
    let v: Value = top_post(&mock, &top_signed(p, TopSignMethod::Md5))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(error_code(&v), 31, "{v}");

    let v = top(&mock, "taobao.no.such.api", &[]).await;
    assert_eq!(error_code(&v), 22, "{v}");

    let v = top(&mock, "taobao.trade.fullinfo.get", &[("fields", "tid")]).await;
    assert_eq!(error_code(&v), 40, "{v}");
    assert_eq!(v["error_response"]["sub_code"], "isv.missing-parameter:tid");

    let mut p = top_params(
        "taobao.trade.fullinfo.get",
        TopSignMethod::Md5,
        &[("fields", "tid"), ("tid", "1")],
    );
    for (k, v) in &mut p {
        if k == "session" {
            *v = "not-a-session".into();
        }
    }
    let v: Value = top_post(&mock, &top_signed(p, TopSignMethod::Md5))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(error_code(&v), 27, "{v}");
    assert_eq!(v["error_response"]["sub_code"], "invalid-sessionkey");

    // Garbage never panics: it gets a TOP error.
    let r = mock
        .http
        .post(format!("{}/router/rest", mock.base))
        .body("%%%&&=\u{0}")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(error_code(&v), 21);
}

#[tokio::test]
async fn top_expired_session_gets_code_27() {
    let mock = spawn().await;
    mock.m.expire_token(Platform::Taobao, TB_SHOP).unwrap();
    let v = top(
        &mock,
        "taobao.trade.fullinfo.get",
        &[("fields", "tid"), ("tid", "1")],
    )
    .await;
    assert_eq!(error_code(&v), 27, "{v}");
    assert_eq!(v["error_response"]["sub_code"], "invalid-sessionkey");
}

#[tokio::test]
async fn top_increment_pages_newest_first_with_total_results() {
    let mock = spawn().await;
    let mut ids = Vec::new();
    for _ in 0..25 {
        ids.push(
            mock.m
                .place_order(order_spec(Platform::Taobao, TB_SHOP, false))
                .unwrap(),
        );
    }
    next_second().await;
    let paid: Vec<String> = ids.iter().step_by(5).cloned().collect();
    for id in &paid {
        mock.m
            .set_status(Platform::Taobao, id, OrderEvent::Pay)
            .unwrap();
    }
    let now = Utc::now();
    let (s, e) = window(
        now - chrono::Duration::minutes(5),
        now + chrono::Duration::minutes(1),
    );
    let mut seen = Vec::new();
    for page in 1..=3 {
        let v = increment(&mock, &s, &e, page, 10).await;
        let r = &v["trades_sold_increment_get_response"];
        assert_eq!(r["total_results"], 25, "{v}");
        let trades = top_list(&r["trades"]["trade"]);
        assert_eq!(trades.len(), if page < 3 { 10 } else { 5 });
        seen.extend(trades);
    }
    let modified: Vec<String> = seen
        .iter()
        .map(|t| t["modified"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = modified.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(modified, sorted, "ordered by modified desc");
    let first: Vec<String> = seen[..5]
        .iter()
        .map(|t| t["tid_str"].as_str().unwrap().to_string())
        .collect();
    for id in &paid {
        assert!(first.contains(id), "paid {id} comes first");
    }
    let mut tids: Vec<String> = seen.iter().map(|t| t["tid"].to_string()).collect();
    tids.sort();
    tids.dedup();
    assert_eq!(tids.len(), 25);
    // Money in yuan strings, fields as asked.
    let t = &seen[0];
    assert_eq!(t["payment"], "37.60");
    assert_eq!(t["post_fee"], "8.00");
    assert!(t.get("receiver_zip").is_none(), "only the requested fields");
    assert_eq!(t["status"], "WAIT_SELLER_SEND_GOODS");
}

#[tokio::test]
async fn top_window_is_start_inclusive_end_exclusive_and_at_most_one_day() {
    let mock = spawn().await;
    let a = mock
        .m
        .place_order(order_spec(Platform::Taobao, TB_SHOP, true))
        .unwrap();
    next_second().await;
    let b = mock
        .m
        .place_order(order_spec(Platform::Taobao, TB_SHOP, true))
        .unwrap();
    let ta = mock.m.order_truth(Platform::Taobao, &a).unwrap().modified;
    let tb = mock.m.order_truth(Platform::Taobao, &b).unwrap().modified;
    assert!(tb > ta);

    let v = increment(&mock, &top_time(ta), &top_time(tb), 1, 100).await;
    let r = &v["trades_sold_increment_get_response"];
    assert_eq!(r["total_results"], 1, "{v}");
    // A one-element list comes as an object.
    assert!(r["trades"]["trade"].is_object(), "{v}");
    assert_eq!(r["trades"]["trade"]["tid_str"], a);
    assert!(r["trades"]["trade"]["orders"]["order"].is_array());

    let v = increment(
        &mock,
        &top_time(tb),
        &top_time(tb + chrono::Duration::seconds(1)),
        1,
        100,
    )
    .await;
    assert_eq!(
        v["trades_sold_increment_get_response"]["trades"]["trade"]["tid_str"],
        b
    );

    let v = increment(
        &mock,
        &top_time(ta - chrono::Duration::days(1) - chrono::Duration::seconds(1)),
        &top_time(ta),
        1,
        100,
    )
    .await;
    assert_eq!(error_code(&v), 41, "{v}");
    assert_eq!(
        v["error_response"]["sub_code"],
        "isv.invalid-parameter:end_modified"
    );
}

#[tokio::test]
async fn top_receiver_is_masked_and_oaid_decrypt_returns_it_clear() {
    let mock = spawn().await;
    let tid = mock
        .m
        .place_order(order_spec(Platform::Taobao, TB_SHOP, true))
        .unwrap();
    let v = top(
        &mock,
        "taobao.trade.fullinfo.get",
        &[("fields", TRADE_FIELDS), ("tid", &tid)],
    )
    .await;
    let t = &v["trade_fullinfo_get_response"]["trade"];
    assert_eq!(t["receiver_name"], "张*");
    assert_eq!(t["receiver_mobile"], "138****5678");
    assert_eq!(t["receiver_address"], "文一西路****");
    assert_eq!(t["receiver_state"], "浙江省");
    let oaid = t["oaid"].as_str().unwrap().to_string();

    let q =
        json!([{ "tid": tid.parse::<i64>().unwrap(), "oaid": oaid, "scene": "1004" }]).to_string();
    let v = top(&mock, "taobao.top.oaid.decrypt", &[("query_list", &q)]).await;
    let r = &top_list(&v["top_oaid_decrypt_response"]["receiver_list"]["receiver"])[0];
    assert_eq!(r["matched"], true, "{v}");
    assert_eq!(r["name"], "张三");
    assert_eq!(r["mobile"], "13812345678");
    assert_eq!(r["address_detail"], "文一西路969号3栋201室");
    assert_eq!(r["district"], "西湖区");

    // After an address change the old oaid no longer matches.
    let mut moved = zhang_san();
    moved.address = "学院路1号".into();
    mock.m
        .set_status(
            Platform::Taobao,
            &tid,
            OrderEvent::ChangeAddress { receiver: moved },
        )
        .unwrap();
    let v = top(&mock, "taobao.top.oaid.decrypt", &[("query_list", &q)]).await;
    let r = &top_list(&v["top_oaid_decrypt_response"]["receiver_list"]["receiver"])[0];
    assert_eq!(r["matched"], false);

    let too_many: Vec<Value> = (0..21)
        .map(|_| json!({"tid": 1, "oaid": "x", "scene": "1004"}))
        .collect();
    let v = top(
        &mock,
        "taobao.top.oaid.decrypt",
        &[("query_list", &Value::from(too_many).to_string())],
    )
    .await;
    assert_eq!(error_code(&v), 41, "{v}");
}

#[tokio::test]
async fn top_offline_send_ships_the_trade_and_quantity_update_is_recorded() {
    let mock = spawn().await;
    let tid = mock
        .m
        .place_order(order_spec(Platform::Taobao, TB_SHOP, true))
        .unwrap();
    let send = [
        ("tid", tid.as_str()),
        ("out_sid", "YT100"),
        ("company_code", "YTO"),
    ];
    let v = top(&mock, "taobao.logistics.offline.send", &send).await;
    assert_eq!(
        v["logistics_offline_send_response"]["shipping"]["is_success"], true,
        "{v}"
    );
    assert_eq!(
        mock.m.order_truth(Platform::Taobao, &tid).unwrap().status,
        "WAIT_BUYER_CONFIRM_GOODS"
    );
    let v = top(&mock, "taobao.logistics.offline.send", &send).await;
    assert_eq!(error_code(&v), 15, "shipping twice is refused: {v}");

    let v = top(
        &mock,
        "taobao.item.quantity.update",
        &[
            ("num_iid", "600001"),
            ("sku_id", "500001"),
            ("quantity", "42"),
            ("type", "1"),
        ],
    )
    .await;
    assert_eq!(v["item_quantity_update_response"]["item"]["num"], 42, "{v}");
    let pushed = mock.m.pushed_stock();
    assert_eq!(pushed.len(), 1);
    assert_eq!(
        (
            pushed[0].item_id.as_str(),
            pushed[0].sku_id.as_str(),
            pushed[0].quantity
        ),
        ("600001", "500001", 42)
    );
}

#[tokio::test]
async fn tmc_redelivers_unconfirmed_messages_after_the_delay() {
    let mock = spawn().await;
    let tid = mock
        .m
        .place_order(order_spec(Platform::Taobao, TB_SHOP, false))
        .unwrap();
    mock.m
        .set_status(Platform::Taobao, &tid, OrderEvent::Pay)
        .unwrap();

    let consume = || {
        top(
            &mock,
            "taobao.tmc.messages.consume",
            &[("group_name", "default"), ("quantity", "10")],
        )
    };
    let v = consume().await;
    let msgs = top_list(&v["tmc_messages_consume_response"]["messages"]["tmc_message"]);
    assert_eq!(msgs.len(), 2, "{v}");
    assert_eq!(msgs[0]["topic"], "taobao_trade_TradeCreate");
    assert_eq!(msgs[1]["topic"], "taobao_trade_TradeBuyerPay");
    let content: Value = serde_json::from_str(msgs[1]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["tid"].to_string(), tid);
    assert_eq!(content["status"], "WAIT_SELLER_SEND_GOODS");

    let v = consume().await;
    assert!(
        top_list(&v["tmc_messages_consume_response"]["messages"]["tmc_message"]).is_empty(),
        "{v}"
    );

    let first = msgs[0]["id"].to_string();
    let v = top(
        &mock,
        "taobao.tmc.messages.confirm",
        &[("group_name", "default"), ("s_message_ids", &first)],
    )
    .await;
    assert_eq!(
        v["tmc_messages_confirm_response"]["is_success"], true,
        "{v}"
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    let v = consume().await;
    let again = top_list(&v["tmc_messages_consume_response"]["messages"]["tmc_message"]);
    assert_eq!(again.len(), 1, "{v}");
    assert_eq!(again[0]["id"], msgs[1]["id"]);
    let second = again[0]["id"].to_string();
    top(
        &mock,
        "taobao.tmc.messages.confirm",
        &[("group_name", "default"), ("s_message_ids", &second)],
    )
    .await;
    assert_eq!(mock.m.tmc_backlog(), 0);
}
