//! Shipping: the operator hands a fulfilment to a carrier, the orders ship, the stock leaves the
//! shelf and every platform hears of the parcel; a line refunded before shipping gives its
//! units back on its own. The other tenant can neither see nor ship any of it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uphub_channels_mock::{OrderEvent, OrderSpec, Platform, Receiver};
use uphub_services::outbox::RelayFaults;

use crate::helpers::{TestApp, code, spawn_app_with};
use crate::orders::{
    Market, buyer, connect, fast_sync, inventory, line, start_mock, stocked_sku, wait_orders,
};

const SHIP: &str = "mutation($i: FulfillmentShipInput!) { fulfillmentShip(input: $i) {
    fulfillment { id status carrier trackingNumber shippedAt orderIds
                  shipBacks { orderId channelType state attempts lastError } }
    userErrors { code field message } } }";

async fn ship(app: &TestApp, token: &str, f: &Value, carrier: &str, tracking: &str) -> Value {
    app.gql(
        Some(token),
        SHIP,
        json!({"i": {"fulfillmentId": f, "carrier": carrier, "trackingNumber": tracking}}),
    )
    .await
}

/// Polls `fulfillments(ids: [f])` until `pred` holds.
async fn wait_fulfillment(
    app: &TestApp,
    token: &str,
    f: &Value,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = app
            .gql(
                Some(token),
                "query($ids: [ID!]!) { fulfillments(ids: $ids) { id status carrier trackingNumber
                    shipBacks { orderId channelType state attempts lastError } } }",
                json!({"ids": [f]}),
            )
            .await;
        let got = r["data"]["fulfillments"][0].clone();
        if pred(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "timed out: {r}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_inventory(app: &TestApp, token: &str, sku: &str, want: Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = inventory(app, token, sku).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "inventory {got}, want {want}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn order_of<'a>(list: &'a [Value], pid: &str) -> &'a Value {
    list.iter()
        .find(|o| o["platformOrderId"] == pid)
        .unwrap_or_else(|| panic!("no order {pid} in {list:?}"))
}

fn paid(
    platform: Platform,
    shop: &str,
    who: &str,
    lines: Vec<uphub_channels_mock::LineSpec>,
) -> OrderSpec {
    OrderSpec {
        platform,
        shop_id: shop.into(),
        buyer_id: format!("{who}-{shop}"),
        receiver: buyer(who),
        lines,
        post_fee_fen: 0,
        paid: true,
    }
}

async fn setup() -> (TestApp, Market, String) {
    let mut app = spawn_app_with(fast_sync()).await;
    app.start_worker(RelayFaults::default()).await;
    let m = start_mock(23).await;
    let token = app.a.token.clone();
    (app, m, token)
}

#[tokio::test]
async fn a_merged_parcel_ships_once_takes_the_stock_and_every_platform_hears_of_it() {
    let (app, m, token) = setup().await;
    let (sku, _) = stocked_sku(&app, &token, "MUG-1", 10).await;
    connect(&app, &token, &m, Platform::Taobao, "tb-ship").await;
    connect(&app, &token, &m, Platform::Xiaohongshu, "xhs-ship").await;
    let tb = m
        .mock
        .place_order(paid(
            Platform::Taobao,
            "tb-ship",
            "王五",
            vec![line("MUG-1", 2)],
        ))
        .unwrap();
    let xhs = m
        .mock
        .place_order(OrderSpec {
            receiver: Receiver {
                address: "文三路100号".into(),
                ..buyer("王五")
            },
            ..paid(
                Platform::Xiaohongshu,
                "xhs-ship",
                "王五",
                vec![line("MUG-1", 1)],
            )
        })
        .unwrap();
    let list = wait_orders(&app, &token, 60, |l| {
        [&tb, &xhs].iter().all(|p| {
            l.iter().any(|o| {
                o["platformOrderId"] == **p
                    && o["stockState"] == "RESERVED"
                    && o["lines"][0]["fulfillmentId"].is_string()
            })
        })
    })
    .await;
    let (tb_order, xhs_order) = (order_of(&list, &tb).clone(), order_of(&list, &xhs).clone());
    let r = app
        .gql(
            Some(&token),
            "mutation($i: OrdersMergeInput!) { ordersMerge(input: $i) { fulfillment { id } userErrors { code message } } }",
            json!({"i": {"orderIds": [tb_order["id"], xhs_order["id"]]}}),
        )
        .await;
    let f = r["data"]["ordersMerge"]["fulfillment"]["id"].clone();
    assert!(f.is_string(), "{r}");

    // Bad input: a tracking number that is not one, nothing shipped.
    let r = ship(&app, &token, &f, "ZTO", "12").await;
    let errs = &r["data"]["fulfillmentShip"]["userErrors"];
    assert_eq!(errs[0]["code"], "VALIDATION", "{r}");
    assert_eq!(errs[0]["field"], "trackingNumber", "{r}");
    // The other tenant cannot ship it (answered as for an id that does not exist).
    let other = app.b.token.clone();
    let r = ship(&app, &other, &f, "ZTO", "ZT1234567890").await;
    assert_eq!(
        r["data"]["fulfillmentShip"]["userErrors"][0]["code"], "NOT_FOUND",
        "{r}"
    );
    let r = ship(
        &app,
        &other,
        &json!("RnVsZmlsbG1lbnQ6bm9wZQ"),
        "ZTO",
        "ZT1234567890",
    )
    .await;
    assert_eq!(
        r["data"]["fulfillmentShip"]["userErrors"][0]["code"], "NOT_FOUND",
        "{r}"
    );
    assert_eq!(
        inventory(&app, &token, &sku).await,
        json!({"onHand": 10, "reserved": 3, "held": 0, "available": 7})
    );

    // Shipped: the parcel, both orders, and the stock leaves the shelf.
    let r = ship(&app, &token, &f, "ZTO", " zt1234567890 ").await;
    let shipped = &r["data"]["fulfillmentShip"];
    assert_eq!(shipped["userErrors"], json!([]), "{r}");
    assert_eq!(shipped["fulfillment"]["status"], "SHIPPED");
    assert_eq!(shipped["fulfillment"]["carrier"], "ZTO");
    assert_eq!(shipped["fulfillment"]["trackingNumber"], "ZT1234567890");
    assert!(shipped["fulfillment"]["shippedAt"].is_string());
    wait_orders(&app, &token, 60, |l| {
        [&tb, &xhs].iter().all(|p| {
            l.iter().any(|o| {
                o["platformOrderId"] == **p
                    && o["status"] == "SHIPPED"
                    && o["stockState"] == "CONFIRMED"
            })
        })
    })
    .await;
    wait_inventory(
        &app,
        &token,
        &sku,
        json!({"onHand": 7, "reserved": 0, "held": 0, "available": 7}),
    )
    .await;

    // Each platform has the parcel, under its own carrier code.
    let done = wait_fulfillment(&app, &token, &f, |x| {
        x["shipBacks"]
            .as_array()
            .is_some_and(|b| b.len() == 2 && b.iter().all(|s| s["state"] == "DONE"))
    })
    .await;
    assert!(
        done["shipBacks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["lastError"].is_null() && s["attempts"] == 1),
        "{done}"
    );
    let t = m.mock.order_truth(Platform::Taobao, &tb).unwrap();
    assert_eq!(
        t.shipments,
        vec![("ZTO".to_string(), "ZT1234567890".to_string())]
    );
    assert!(t.lines.iter().all(|l| l.shipped));
    let x = m.mock.order_truth(Platform::Xiaohongshu, &xhs).unwrap();
    assert_eq!(
        x.shipments,
        vec![("zhongtong".to_string(), "ZT1234567890".to_string())]
    );

    // The same call again answers the same and ships nothing twice; another number conflicts.
    let r = ship(&app, &token, &f, "ZTO", "ZT1234567890").await;
    assert_eq!(r["data"]["fulfillmentShip"]["userErrors"], json!([]), "{r}");
    assert_eq!(
        r["data"]["fulfillmentShip"]["fulfillment"]["status"],
        "SHIPPED"
    );
    let r = ship(&app, &token, &f, "SF", "SF1234567890").await;
    assert_eq!(
        r["data"]["fulfillmentShip"]["userErrors"][0]["code"], "CONFLICT",
        "{r}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        m.mock
            .order_truth(Platform::Taobao, &tb)
            .unwrap()
            .shipments
            .len(),
        1
    );

    // The platforms' own view comes back through the sync without undoing anything, and the
    // timeline tells the story.
    let r = app
        .gql(
            Some(&token),
            "query($id: ID!) { order(id: $id) { status timeline { kind toStatus actor } } }",
            json!({"id": tb_order["id"]}),
        )
        .await;
    assert_eq!(r["data"]["order"]["status"], "SHIPPED", "{r}");
    let kinds: Vec<&str> = r["data"]["order"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for k in ["SHIPPED", "STATUS_CHANGED", "SHIP_BACK_DONE"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    assert!(!kinds.contains(&"STATUS_REFUSED"), "{kinds:?}");

    // The other tenant sees nothing of the parcel.
    let r = app
        .gql(
            Some(&other),
            "query($ids: [ID!]!) { fulfillments(ids: $ids) { id } }",
            json!({"ids": [f]}),
        )
        .await;
    assert_eq!(r["data"]["fulfillments"], json!([]), "{r}");
    let r = app
        .gql(
            Some(&other),
            "mutation($i: FulfillmentShipBackRetryInput!) { fulfillmentShipBackRetry(input: $i) { requeued userErrors { code } } }",
            json!({"i": {"fulfillmentId": f}}),
        )
        .await;
    assert_eq!(
        r["data"]["fulfillmentShipBackRetry"]["userErrors"][0]["code"], "NOT_FOUND",
        "{r}"
    );
}

#[tokio::test]
async fn a_refunded_line_gives_its_units_back_and_a_refused_ship_back_is_flagged() {
    let (app, m, token) = setup().await;
    let (cup, _) = stocked_sku(&app, &token, "CUP-1", 5).await;
    let (pen, _) = stocked_sku(&app, &token, "PEN-1", 5).await;
    connect(&app, &token, &m, Platform::Taobao, "tb-refund").await;
    connect(&app, &token, &m, Platform::Douyin, "dy-split").await;

    // A Taobao order of two SKUs; the buyer gets the pen refunded before it ships.
    let tb = m
        .mock
        .place_order(paid(
            Platform::Taobao,
            "tb-refund",
            "赵六",
            vec![line("CUP-1", 2), line("PEN-1", 1)],
        ))
        .unwrap();
    wait_orders(&app, &token, 60, |l| {
        l.iter()
            .any(|o| o["platformOrderId"] == tb && o["stockState"] == "RESERVED")
    })
    .await;
    assert_eq!(
        inventory(&app, &token, &pen).await,
        json!({"onHand": 5, "reserved": 1, "held": 0, "available": 4})
    );
    let pen_line = m.mock.order_truth(Platform::Taobao, &tb).unwrap().lines[1]
        .line_id
        .clone();
    m.mock
        .set_status(
            Platform::Taobao,
            &tb,
            OrderEvent::RefundLine { line_id: pen_line },
        )
        .unwrap();
    wait_inventory(
        &app,
        &token,
        &pen,
        json!({"onHand": 5, "reserved": 0, "held": 0, "available": 5}),
    )
    .await;
    assert_eq!(
        inventory(&app, &token, &cup).await,
        json!({"onHand": 5, "reserved": 2, "held": 0, "available": 3})
    );
    let list = wait_orders(&app, &token, 30, |l| {
        l.iter().any(|o| {
            o["platformOrderId"] == tb
                && o["lines"][1]["afterSales"] == "REFUNDED"
                && o["lines"][1]["fulfillmentId"].is_null()
        })
    })
    .await;
    let order = order_of(&list, &tb).clone();
    assert_eq!(order["status"], "PAID");
    assert_eq!(order["stockState"], "RESERVED");

    // The cups ship; the refunded pen does not hold the order back.
    let f = order["lines"][0]["fulfillmentId"].clone();
    let r = ship(&app, &token, &f, "SF", "SF0000000001").await;
    assert_eq!(r["data"]["fulfillmentShip"]["userErrors"], json!([]), "{r}");
    wait_orders(&app, &token, 60, |l| {
        l.iter().any(|o| {
            o["platformOrderId"] == tb && o["status"] == "SHIPPED" && o["stockState"] == "CONFIRMED"
        })
    })
    .await;
    wait_inventory(
        &app,
        &token,
        &cup,
        json!({"onHand": 3, "reserved": 0, "held": 0, "available": 3}),
    )
    .await;
    assert_eq!(
        inventory(&app, &token, &pen).await,
        json!({"onHand": 5, "reserved": 0, "held": 0, "available": 5})
    );
    wait_fulfillment(&app, &token, &f, |x| x["shipBacks"][0]["state"] == "DONE").await;
    assert!(
        m.mock
            .order_truth(Platform::Taobao, &tb)
            .unwrap()
            .lines
            .iter()
            .all(|l| l.shipped || l.after_sale == "SUCCESS")
    );

    // A Douyin order whose lines leave from two warehouses: Doudian's logisticsAdd ships whole
    // orders only, so reporting one parcel is refused for good; the order is flagged.
    let dy = m
        .mock
        .place_order(paid(
            Platform::Douyin,
            "dy-split",
            "钱七",
            vec![line("CUP-1", 1), line("PEN-1", 1)],
        ))
        .unwrap();
    let list = wait_orders(&app, &token, 60, |l| {
        l.iter().any(|o| {
            o["platformOrderId"] == dy
                && o["stockState"] == "RESERVED"
                && o["lines"][1]["fulfillmentId"].is_string()
        })
    })
    .await;
    let order = order_of(&list, &dy).clone();
    assert_ne!(
        order["lines"][0]["fulfillmentId"],
        order["lines"][1]["fulfillmentId"]
    );
    let f = order["lines"][0]["fulfillmentId"].clone();
    let r = ship(&app, &token, &f, "YTO", "YT0000000002").await;
    assert_eq!(r["data"]["fulfillmentShip"]["userErrors"], json!([]), "{r}");
    let failed =
        wait_fulfillment(&app, &token, &f, |x| x["shipBacks"][0]["state"] == "FAILED").await;
    assert!(
        failed["shipBacks"][0]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("partial-shipment-unsupported")),
        "{failed}"
    );
    let list = wait_orders(&app, &token, 30, |l| {
        l.iter().any(|o| {
            o["platformOrderId"] == dy
                && o["status"] == "PARTIALLY_SHIPPED"
                && o["needsAttention"]
                    .as_array()
                    .is_some_and(|a| a.contains(&json!("SHIP_BACK_FAILED")))
        })
    })
    .await;
    assert!(order_of(&list, &dy)["needsAttention"].is_array());
    let r = app
        .gql(
            Some(&token),
            "mutation($i: FulfillmentShipBackRetryInput!) { fulfillmentShipBackRetry(input: $i) { requeued userErrors { code } } }",
            json!({"i": {"fulfillmentId": f}}),
        )
        .await;
    assert_eq!(r["data"]["fulfillmentShipBackRetry"]["requeued"], 1, "{r}");
    assert_eq!(code(&r), "<none>", "{r}");
    assert!(
        m.mock
            .order_truth(Platform::Douyin, &dy)
            .unwrap()
            .shipments
            .is_empty()
    );
}
