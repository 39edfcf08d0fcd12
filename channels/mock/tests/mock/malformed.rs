use chrono::Utc;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn malformed_requests_get_the_platforms_error_answers_and_never_kill_the_server() {
    let mock = spawn().await;
    for extra in [
        vec![
            ("fields", "tid"),
            ("start_modified", "yesterday"),
            ("end_modified", "now"),
        ],
        vec![
            ("fields", "tid"),
            ("start_modified", "2024-01-01 00:00:00"),
            ("end_modified", "2024-01-01 00:10:00"),
            ("page_no", "99999999999999999"),
            ("page_size", "x"),
        ],
        vec![
            ("fields", "tid"),
            ("start_modified", "2024-01-01 00:00:00"),
            ("end_modified", "2024-01-01 00:10:00"),
            ("page_no", "9223372036854775807"),
            ("page_size", "100"),
        ],
    ] {
        let v = top(&mock, "taobao.trades.sold.increment.get", &extra).await;
        assert!(
            v.get("error_response").is_some()
                || v.get("trades_sold_increment_get_response").is_some(),
            "{v}"
        );
    }
    let v = top(
        &mock,
        "taobao.top.oaid.decrypt",
        &[("query_list", "{\"not\":\"a list\"}")],
    )
    .await;
    assert_eq!(v["error_response"]["code"], 41, "{v}");
    let v = top(
        &mock,
        "taobao.tmc.messages.confirm",
        &[("s_message_ids", "1,x,3")],
    )
    .await;
    assert_eq!(v["error_response"]["code"], 41, "{v}");

    for body in [
        json!({"page": 1e30, "size": 10}),
        json!({"page": 0, "size": "abc"}),
        json!({"update_time_start": i64::MIN, "update_time_end": i64::MAX, "page": i64::MAX, "size": 100}),
        json!({"order_asc": "maybe", "order_by": 7}),
        json!([1, 2, 3]),
    ] {
        let v = dd(&mock, "order.searchList", body).await;
        assert!(v["code"].is_i64(), "{v}");
    }
    let v = dd(&mock, "order.batchDecrypt", json!({"cipher_infos": "nope"})).await;
    assert_eq!(v["code"], 40004, "{v}");
    let v = dd(
        &mock,
        "sku.syncStock",
        json!({"sku_id": "1", "stock_num": 1, "incremental": true}),
    )
    .await;
    assert_eq!(v["code"], 10000, "{v}");

    let now = Utc::now().timestamp();
    for business in [
        json!({"timeType": 2, "startTime": i64::MIN, "endTime": i64::MAX}),
        json!({"timeType": 2, "startTime": now - 60, "endTime": now, "pageNo": i64::MAX, "pageSize": 100}),
        json!({"timeType": "two", "startTime": now, "endTime": now}),
        json!({"receiverQueries": [{"orderId": 5}], "timeType": 2, "startTime": now, "endTime": now}),
    ] {
        let v = xhs(&mock, "order.getOrderList", business).await;
        assert!(v["success"].is_boolean(), "{v}");
    }
    let v = xhs(
        &mock,
        "order.getOrderReceiverInfo",
        json!({"receiverQueries": "x"}),
    )
    .await;
    assert_eq!(v["error_code"], 1001, "{v}");
    let mut body = xhs_body(
        "order.getOrderList",
        Some("xhs-at"),
        json!({}),
        "xhs-secret",
    );
    body["timestamp"] = Value::from(i64::MIN);
    assert_eq!(xhs_post(&mock, &body).await["success"], false);

    // Still serving.
    let v = dd(&mock, "order.searchList", json!({"page": 0, "size": 10})).await;
    assert_eq!(v["code"], 10000, "{v}");
}
