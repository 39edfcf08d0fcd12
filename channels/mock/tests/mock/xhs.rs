use chrono::Utc;
use serde_json::{Value, json};
use uphub_channels_mock::{OrderEvent, Platform};

use crate::helpers::*;

fn list(start: i64, end: i64, page_no: i64, page_size: i64) -> Value {
    json!({"timeType": 2, "startTime": start, "endTime": end, "pageNo": page_no, "pageSize": page_size})
}

#[tokio::test]
async fn xhs_good_signature_passes_and_tampered_gets_1003() {
    let mock = spawn().await;
    let now = Utc::now().timestamp();
    let v = xhs(&mock, "order.getOrderList", list(now - 60, now + 60, 1, 10)).await;
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["error_code"], 0);

    let bad = xhs_body(
        "order.getOrderList",
        Some("xhs-at"),
        list(now - 60, now + 60, 1, 10),
        "wrong-secret",
    );
    let v = xhs_post(&mock, &bad).await;
    assert_eq!(v["success"], false);
    assert_eq!(v["error_code"], 1003, "{v}");

    let mut tampered = xhs_body(
        "order.getOrderList",
        Some("xhs-at"),
        list(now - 60, now + 60, 1, 10),
        "xhs-secret",
    );
    tampered["method"] = "order.getOrderDetail".into();
    assert_eq!(xhs_post(&mock, &tampered).await["error_code"], 1003);

    let v = xhs(&mock, "order.noSuchMethod", json!({})).await;
    assert_eq!(v["error_code"], 1002, "{v}");

    let r = mock
        .http
        .post(format!("{}/ark/open_api/v3/common_controller", mock.base))
        .body("[not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["success"], false);
}

#[tokio::test]
async fn xhs_order_list_pages_newest_first_in_milliseconds_with_max_page_no() {
    let mock = spawn().await;
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(
            mock.m
                .place_order(order_spec(Platform::Xiaohongshu, XHS_SHOP, false))
                .unwrap(),
        );
    }
    // Times are in milliseconds: make the payment strictly later than the last placement.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    mock.m
        .set_status(Platform::Xiaohongshu, &ids[0], OrderEvent::Pay)
        .unwrap();
    let now = Utc::now().timestamp();
    let mut all = Vec::new();
    for page in 1..=3 {
        let v = xhs(
            &mock,
            "order.getOrderList",
            list(now - 60, now + 60, page, 5),
        )
        .await;
        let d = &v["data"];
        assert_eq!(d["total"], 12, "{v}");
        assert_eq!(d["maxPageNo"], 3);
        assert_eq!(d["pageNo"], page);
        all.extend(d["orderList"].as_array().unwrap().clone());
    }
    assert_eq!(all.len(), 12);
    assert_eq!(
        all[0]["orderId"],
        ids[0].as_str(),
        "the latest change comes first"
    );
    assert_eq!(all[0]["orderStatus"], 4);
    let times: Vec<i64> = all
        .iter()
        .map(|o| o["updateTime"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert!(times[0] > 1_000_000_000_000, "milliseconds");

    let v = xhs(&mock, "order.getOrderList", list(now - 1801, now, 1, 10)).await;
    assert_eq!(v["success"], false);
    assert_eq!(
        v["error_code"], 1001,
        "a window over 30 minutes is a parameter error: {v}"
    );
    // End is exclusive: a window ending before the orders holds none of them.
    let first = all.last().unwrap()["updateTime"].as_i64().unwrap() / 1000;
    let v = xhs(&mock, "order.getOrderList", list(first - 60, first, 1, 10)).await;
    assert_eq!(v["data"]["total"], 0, "{v}");
}

#[tokio::test]
async fn xhs_receiver_info_returns_the_clear_receiver_for_the_current_address() {
    let mock = spawn().await;
    let id = mock
        .m
        .place_order(order_spec(Platform::Xiaohongshu, XHS_SHOP, true))
        .unwrap();
    let v = xhs(&mock, "order.getOrderDetail", json!({"orderId": id})).await;
    let d = &v["data"];
    assert_eq!(d["receiverName"], "张*", "{v}");
    assert_eq!(d["receiverPhone"], "138****5678");
    assert_eq!(d["totalPayAmount"], 3760);
    assert_eq!(d["totalShippingFree"], 800);
    assert_eq!(d["skuList"][0]["erpcode"], "SKU-001");
    let open = d["openAddressId"].as_str().unwrap().to_string();

    let q = json!({"receiverQueries": [{"orderId": id, "openAddressId": open}], "isReturn": false});
    let v = xhs(&mock, "order.getOrderReceiverInfo", q.clone()).await;
    let r = &v["data"]["receiverInfos"][0];
    assert_eq!(r["matched"], true, "{v}");
    assert_eq!(r["receiverName"], "张三");
    assert_eq!(r["receiverPhone"], "13812345678");
    assert_eq!(r["receiverAddress"], "文一西路969号3栋201室");

    let mut moved = zhang_san();
    moved.address = "学院路1号".into();
    mock.m
        .set_status(
            Platform::Xiaohongshu,
            &id,
            OrderEvent::ChangeAddress { receiver: moved },
        )
        .unwrap();
    let v = xhs(&mock, "order.getOrderReceiverInfo", q).await;
    assert_eq!(v["data"]["receiverInfos"][0]["matched"], false, "{v}");
}

#[tokio::test]
async fn xhs_refresh_token_expires_the_old_one_with_1004() {
    let mock = spawn().await;
    let body = xhs_body(
        "oauth.refreshToken",
        None,
        json!({"refreshToken": "xhs-rt"}),
        "xhs-secret",
    );
    let v = xhs_post(&mock, &body).await;
    assert_eq!(v["success"], true, "{v}");
    let new_at = v["data"]["accessToken"].as_str().unwrap().to_string();
    assert!(v["data"]["accessTokenExpiresAt"].as_i64().unwrap() > Utc::now().timestamp_millis());

    let now = Utc::now().timestamp();
    let v = xhs(&mock, "order.getOrderList", list(now - 60, now, 1, 10)).await;
    assert_eq!(v["error_code"], 1004, "{v}");
    assert_eq!(v["error_msg"], "accessToken expired");
    let v = xhs_with(
        &mock,
        "order.getOrderList",
        list(now - 60, now, 1, 10),
        &new_at,
    )
    .await;
    assert_eq!(v["success"], true, "{v}");

    // The replaced refresh token, presented again, returns the same pair.
    let v = xhs_post(&mock, &body).await;
    assert_eq!(v["data"]["accessToken"], new_at.as_str(), "{v}");
}

#[tokio::test]
async fn xhs_deliver_ships_and_stock_sync_is_recorded() {
    let mock = spawn().await;
    let id = mock
        .m
        .place_order(order_spec(Platform::Xiaohongshu, XHS_SHOP, true))
        .unwrap();
    let v = xhs(
        &mock,
        "order.orderDeliver",
        json!({"orderId": id, "expressNo": "SF1", "expressCompanyCode": "shunfeng", "skuIdList": ["500001"]}),
    )
    .await;
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(
        mock.m
            .order_truth(Platform::Xiaohongshu, &id)
            .unwrap()
            .status,
        "5",
        "partly shipped"
    );
    xhs(
        &mock,
        "order.orderDeliver",
        json!({"orderId": id, "expressNo": "SF2", "expressCompanyCode": "shunfeng"}),
    )
    .await;
    assert_eq!(
        mock.m
            .order_truth(Platform::Xiaohongshu, &id)
            .unwrap()
            .status,
        "6"
    );

    let v = xhs(
        &mock,
        "inventory.syncSkuStock",
        json!({"skuId": "500002", "qty": 3}),
    )
    .await;
    assert_eq!(v["success"], true, "{v}");
    let s = mock.m.pushed_stock();
    assert_eq!(
        (s[0].item_id.as_str(), s[0].sku_id.as_str(), s[0].quantity),
        ("600002", "500002", 3)
    );
}
