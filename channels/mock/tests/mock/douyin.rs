use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use chrono::Utc;
use serde_json::{Value, json};
use uphub_channels::sign::doudian_event_sign;
use uphub_channels_mock::{OrderEvent, Platform};

use crate::helpers::*;

fn search(start: i64, end: i64, page: i64, size: i64) -> Value {
    json!({
        "update_time_start": start, "update_time_end": end, "page": page, "size": size,
        "order_by": "update_time", "order_asc": false,
    })
}

#[tokio::test]
async fn doudian_good_signature_passes_and_tampered_body_gets_40003() {
    let mock = spawn().await;
    let now = Utc::now().timestamp();
    let v = dd(&mock, "order.searchList", search(now - 60, now + 60, 0, 10)).await;
    assert_eq!(v["code"], 10000, "{v}");
    assert_eq!(v["data"]["total"], 0);
    assert!(v["log_id"].is_string());

    let signed = r#"{"page":0,"size":10}"#;
    let r = dd_raw(
        &mock,
        "order.searchList",
        r#"{"page":1,"size":10}"#,
        Some(signed),
        Some("dy-at"),
    )
    .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], 40003, "{v}");
    assert_eq!(v["sub_code"], "isv.signature-invalid");

    // The sign is over the body exactly as sent, even when its keys are not sorted.
    let unsorted = r#"{"size":10, "page":0}"#;
    let v: Value = dd_raw(&mock, "order.searchList", unsorted, None, Some("dy-at"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["code"], 10000, "{v}");

    let v: Value = dd_raw(&mock, "order.noSuchThing", "{}", None, Some("dy-at"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["code"], 70000, "{v}");

    let v: Value = dd_raw(&mock, "order.searchList", "{not json", None, Some("dy-at"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["code"], 40004, "{v}");
}

#[tokio::test]
async fn doudian_search_list_pages_from_zero_newest_first_in_its_window() {
    let mock = spawn().await;
    let mut ids = Vec::new();
    for _ in 0..15 {
        ids.push(
            mock.m
                .place_order(order_spec(Platform::Douyin, DY_SHOP, false))
                .unwrap(),
        );
    }
    next_second().await;
    mock.m
        .set_status(Platform::Douyin, &ids[3], OrderEvent::Pay)
        .unwrap();
    let t_paid = mock
        .m
        .order_truth(Platform::Douyin, &ids[3])
        .unwrap()
        .modified
        .timestamp();
    let now = Utc::now().timestamp();

    let p0 = dd(&mock, "order.searchList", search(now - 60, now + 60, 0, 10)).await;
    let p1 = dd(&mock, "order.searchList", search(now - 60, now + 60, 1, 10)).await;
    assert_eq!(p0["data"]["total"], 15, "{p0}");
    assert_eq!(p0["data"]["page"], 0);
    let l0 = p0["data"]["shop_order_list"].as_array().unwrap();
    let l1 = p1["data"]["shop_order_list"].as_array().unwrap();
    assert_eq!((l0.len(), l1.len()), (10, 5));
    assert_eq!(l0[0]["order_id"], ids[3].as_str());
    assert_eq!(l0[0]["order_status"], 105);
    let times: Vec<i64> = l0
        .iter()
        .chain(l1)
        .map(|o| o["update_time"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    // [start, end): the paid order alone sits at t_paid.
    let v = dd(
        &mock,
        "order.searchList",
        search(t_paid, t_paid + 1, 0, 100),
    )
    .await;
    assert_eq!(v["data"]["total"], 1, "{v}");
    let v = dd(
        &mock,
        "order.searchList",
        search(t_paid - 3600, t_paid, 0, 100),
    )
    .await;
    assert_eq!(v["data"]["total"], 14, "{v}");

    let o = &l0[0];
    assert_eq!(o["pay_amount"], 3760);
    assert_eq!(o["post_amount"], 800);
    assert_eq!(o["mask_post_receiver"], "张*");
    assert_eq!(o["mask_post_tel"], "138****5678");
    assert!(
        o["encrypt_post_receiver"]
            .as_str()
            .unwrap()
            .starts_with('#')
    );
    assert_eq!(o["post_addr"]["province"]["name"], "浙江省");
    assert_eq!(
        o["sku_order_list"][0]["after_sale_info"]["after_sale_status"],
        0
    );

    let v = dd(
        &mock,
        "order.searchList",
        search(now - 60, now + 60, 0, 101),
    )
    .await;
    assert_eq!(v["code"], 40004, "{v}");
}

#[tokio::test]
async fn doudian_batch_decrypt_returns_the_clear_receiver_for_up_to_50_ciphers() {
    let mock = spawn().await;
    let id = mock
        .m
        .place_order(order_spec(Platform::Douyin, DY_SHOP, true))
        .unwrap();
    let v = dd(&mock, "order.orderDetail", json!({ "shop_order_id": id })).await;
    let o = &v["data"]["shop_order_detail"];
    let ciphers = [
        o["encrypt_post_receiver"].as_str().unwrap(),
        o["encrypt_post_tel"].as_str().unwrap(),
        o["post_addr"]["encrypt_detail"].as_str().unwrap(),
    ];
    let infos: Vec<Value> = ciphers
        .iter()
        .map(|c| json!({"auth_id": id, "cipher_text": c}))
        .collect();
    let v = dd(
        &mock,
        "order.batchDecrypt",
        json!({ "cipher_infos": infos }),
    )
    .await;
    let out = v["data"]["decrypt_infos"].as_array().unwrap();
    let clear: Vec<&str> = out
        .iter()
        .map(|d| d["decrypt_text"].as_str().unwrap())
        .collect();
    assert_eq!(
        clear,
        ["张三", "13812345678", "文一西路969号3栋201室"],
        "{v}"
    );
    assert!(out.iter().all(|d| d["err_no"] == 0));

    let v = dd(
        &mock,
        "order.batchDecrypt",
        json!({ "cipher_infos": [{"auth_id": id, "cipher_text": "#bogus#"}] }),
    )
    .await;
    assert_ne!(v["data"]["decrypt_infos"][0]["err_no"], 0, "{v}");

    let many: Vec<Value> = (0..51)
        .map(|_| json!({"auth_id": id, "cipher_text": ciphers[0]}))
        .collect();
    let v = dd(&mock, "order.batchDecrypt", json!({ "cipher_infos": many })).await;
    assert_eq!(v["code"], 40004, "{v}");
}

#[tokio::test]
async fn doudian_token_refresh_expires_the_old_access_token() {
    let mock = spawn().await;
    let now = Utc::now().timestamp();
    let body =
        doudian_param_json_of(json!({"grant_type": "refresh_token", "refresh_token": "dy-rt"}));
    let v: Value = dd_raw(&mock, "token.refresh", &body, None, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["code"], 10000, "{v}");
    let new_at = v["data"]["access_token"].as_str().unwrap().to_string();
    assert_ne!(new_at, "dy-at");
    assert!(v["data"]["expires_in"].as_i64().unwrap() > 0);

    let old = dd(&mock, "order.searchList", search(now - 60, now + 60, 0, 10)).await;
    assert_eq!(old["code"], 40003, "{old}");
    assert_eq!(old["sub_code"], "isv.access-token-expired");
    let new = dd_with(
        &mock,
        "order.searchList",
        &search(now - 60, now + 60, 0, 10),
        &new_at,
    )
    .await;
    assert_eq!(new["code"], 10000, "{new}");

    // Forced expiry, as a test needs it.
    mock.m.expire_token(Platform::Douyin, DY_SHOP).unwrap();
    let v = dd_with(
        &mock,
        "order.searchList",
        &search(now - 60, now + 60, 0, 10),
        &new_at,
    )
    .await;
    assert_eq!(v["sub_code"], "isv.access-token-expired", "{v}");
}

fn doudian_param_json_of(v: Value) -> String {
    uphub_channels::sign::doudian_param_json(&v)
}

#[tokio::test]
async fn doudian_logistics_add_ships_and_sync_stock_is_recorded() {
    let mock = spawn().await;
    let id = mock
        .m
        .place_order(order_spec(Platform::Douyin, DY_SHOP, true))
        .unwrap();
    let ship = json!({"order_id": id, "company_code": "yuantong", "logistics_code": "YT1"});
    let v = dd(&mock, "order.logisticsAdd", ship.clone()).await;
    assert_eq!(v["code"], 10000, "{v}");
    assert_eq!(
        mock.m.order_truth(Platform::Douyin, &id).unwrap().status,
        "3"
    );
    let v = dd(&mock, "order.logisticsAdd", ship).await;
    assert_eq!(v["code"], 50002, "{v}");

    let v = dd(
        &mock,
        "sku.syncStock",
        json!({"product_id": "600001", "sku_id": "500001", "stock_num": 7, "incremental": false}),
    )
    .await;
    assert_eq!(v["code"], 10000, "{v}");
    let s = mock.m.pushed_stock();
    assert_eq!(
        (s[0].platform, s[0].sku_id.as_str(), s[0].quantity),
        (Platform::Douyin, "500001", 7)
    );
}

type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A webhook that refuses the first delivery and accepts the rest.
async fn webhook() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/push",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            async move {
                let mut v = s.lock().unwrap();
                v.push((headers, body));
                if v.len() == 1 {
                    axum::Json(json!({"code": 500, "msg": "busy"}))
                } else {
                    axum::Json(json!({"code": 0, "msg": "success"}))
                }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/push", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, seen)
}

#[tokio::test]
async fn doudian_push_carries_a_valid_event_sign_and_is_retried_until_accepted() {
    let (url, seen) = webhook().await;
    let mock = spawn_with(test_config(), Some(url)).await;
    let id = mock
        .m
        .place_order(order_spec(Platform::Douyin, DY_SHOP, false))
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while mock.m.push_stats().delivered < 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = mock.m.push_stats();
    assert_eq!(stats.delivered, 1, "{stats:?}");
    assert!(
        stats.attempts >= 2,
        "the refused first delivery was retried: {stats:?}"
    );

    let seen = seen.lock().unwrap();
    let (headers, body) = seen.last().unwrap();
    assert_eq!(headers["app-id"], "dy-app");
    let expected = doudian_event_sign("dy-app", "dy-secret", body);
    assert_eq!(headers["event-sign"].to_str().unwrap(), expected);
    let msgs: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(msgs[0]["tag"], "100");
    assert!(msgs[0]["msg_id"].is_string());
    let data: Value = serde_json::from_str(msgs[0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["p_id"].to_string(), id);
    assert_eq!(data["order_status"], 1);
    assert_eq!(data["shop_id"], 770001);
    assert_eq!(seen[0].1, *body, "the retry re-sends the same message");
}
