//! Marketplace orders and the other tenant: it hears nothing of this tenant's orders, and this
//! tenant's connection, order, line and fulfilment ids answer it exactly like unknown ids.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uphub_channels_mock::{OrderSpec, Platform};
use uphub_domain::gid;
use uphub_services::outbox::RelayFaults;
use uuid::Uuid;

use crate::helpers::{Options, TestApp, spawn_app_with};
use crate::orders::{buyer, connect, fast_sync, line, start_mock, stocked_sku, wait_orders};
use crate::push::{connection_rows, sql_rows, tenant_id, wait_first_rounds};

async fn subscribe_order_events(
    app: &TestApp,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/graphql/ws", app.addr.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text(
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}})
            .to_string(),
    ))
    .await
    .unwrap();
    let ack = ws.next().await.unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains("connection_ack"), "{ack:?}");
    ws.send(Message::text(
        json!({"id": "1", "type": "subscribe",
               "payload": {"query": "subscription { orderEvents { orderId kind status } }"}})
        .to_string(),
    ))
    .await
    .unwrap();
    ws
}

#[tokio::test]
async fn the_other_tenant_hears_nothing_on_order_events_when_this_tenants_orders_change() {
    use futures_util::StreamExt;
    let mut app = spawn_app_with(fast_sync()).await;
    app.start_worker(RelayFaults::default()).await;
    let m = start_mock(61).await;
    let mut ws_a = subscribe_order_events(&app, &app.a.token).await;
    let mut ws_b = subscribe_order_events(&app, &app.b.token).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    connect(&app, &app.a.token, &m, Platform::Taobao, "tb-live").await;
    let pid = m
        .mock
        .place_order(OrderSpec {
            platform: Platform::Taobao,
            shop_id: "tb-live".into(),
            buyer_id: "live-buyer".into(),
            receiver: buyer("张三"),
            lines: vec![line("LIVE-1", 1)],
            post_fee_fen: 0,
            paid: true,
        })
        .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(30), ws_a.next())
        .await
        .expect("tenant A hears of its order")
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
    assert_eq!(
        v["payload"]["data"]["orderEvents"]["kind"], "CREATED",
        "{v}"
    );
    // Then the order changes status on the platform: A hears that too, B hears nothing at all.
    m.mock
        .set_status(
            Platform::Taobao,
            &pid,
            uphub_channels_mock::OrderEvent::Ship {
                company_code: "SF".into(),
                tracking_no: "SF1".into(),
                line_ids: vec![],
            },
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws_a.next())
            .await
            .expect("tenant A hears of the shipment")
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        if v["payload"]["data"]["orderEvents"]["status"] == "SHIPPED" {
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
    }
    let nothing = tokio::time::timeout(Duration::from_millis(1000), ws_b.next()).await;
    assert!(
        nothing.is_err(),
        "tenant B must hear nothing of A's orders: {nothing:?}"
    );
}

/// A GraphQL answer without its cost extension (the budget drains between two calls).
fn answer(v: &Value) -> (Value, Value) {
    (v["data"].clone(), v["errors"].clone())
}

fn hourly_sync() -> Options {
    Options {
        tweak: |c| c.channel_sync_every_ms = 3_600_000,
        ..Options::default()
    }
}

async fn merge_mode(app: &TestApp, tenant: Uuid) -> Option<String> {
    sql_rows(
        app,
        &format!("SELECT merge_mode FROM tenant_settings WHERE tenant_id = '{tenant}'"),
    )
    .await
    .first()
    .map(|r| r.try_get::<String>("", "merge_mode").unwrap())
}

#[tokio::test]
async fn this_tenants_connection_order_and_fulfilment_ids_answer_the_other_tenant_like_unknown_ids()
{
    let mut app = spawn_app_with(hourly_sync()).await;
    app.start_worker(RelayFaults::default()).await;
    let m = start_mock(67).await;
    let token = app.a.token.clone();
    let other = app.b.token.clone();
    stocked_sku(&app, &token, "TEN-1", 10).await;
    let channel = connect(&app, &token, &m, Platform::Taobao, "tb-tenancy").await;
    wait_first_rounds(&app, 1).await;
    // One receiver, two orders: two fulfilments that could merge (SUGGEST is the default).
    let mut pids = Vec::new();
    for b in ["t1", "t2"] {
        pids.push(
            m.mock
                .place_order(OrderSpec {
                    platform: Platform::Taobao,
                    shop_id: "tb-tenancy".into(),
                    buyer_id: b.into(),
                    receiver: buyer("王五"),
                    lines: vec![line("TEN-1", 1)],
                    post_fee_fen: 0,
                    paid: true,
                })
                .unwrap(),
        );
    }
    // A round leaves the newest two seconds for later (SETTLE_LAG): let them settle first.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let r = app
        .gql(
            Some(&token),
            "mutation($i: ChannelSyncNowInput!) { channelSyncNow(input: $i) { userErrors { code } } }",
            json!({"i": {"channelId": channel}}),
        )
        .await;
    assert_eq!(r["data"]["channelSyncNow"]["userErrors"], json!([]), "{r}");
    let list = wait_orders(&app, &token, 30, |l| {
        l.len() == 2 && l.iter().all(|o| o["lines"][0]["fulfillmentId"].is_string())
    })
    .await;
    wait_first_rounds(&app, 1).await;
    let order_ids: Vec<Value> = list.iter().map(|o| o["id"].clone()).collect();
    let fulfillment_ids: Vec<Value> = list
        .iter()
        .map(|o| o["lines"][0]["fulfillmentId"].clone())
        .collect();
    let line_id = list[0]["lines"][0]["id"].clone();
    let suggestions = "{ fulfillmentSuggestions { fulfillments { id orderIds merged } } }";
    let a_before = app.gql(Some(&token), suggestions, json!({})).await;
    assert_eq!(
        a_before["data"]["fulfillmentSuggestions"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "{a_before}"
    );
    let rows_before = connection_rows(&app).await;
    let unknown = |kind: &str| gid::encode(kind, Uuid::now_v7());

    // (b) channelSyncNow: A's connection id is an unknown id to B, and A's connection is untouched.
    let sync_now = "mutation($i: ChannelSyncNowInput!) { channelSyncNow(input: $i) {
        connection { status channel { id } } userErrors { code field message } } }";
    let theirs = app
        .gql(Some(&other), sync_now, json!({"i": {"channelId": channel}}))
        .await;
    let random = app
        .gql(
            Some(&other),
            sync_now,
            json!({"i": {"channelId": unknown("SalesChannel")}}),
        )
        .await;
    assert_eq!(
        answer(&theirs),
        answer(&random),
        "A's connection answers B like an unknown id"
    );
    assert_eq!(
        theirs["data"]["channelSyncNow"]["userErrors"][0]["code"], "NOT_FOUND",
        "{theirs}"
    );

    // (c) fulfilments, suggestions, merge and split.
    let by_ids = "query($ids: [ID!]!) { fulfillments(ids: $ids) { id orderIds merged } }";
    let theirs = app
        .gql(Some(&other), by_ids, json!({"ids": fulfillment_ids}))
        .await;
    let random = app
        .gql(
            Some(&other),
            by_ids,
            json!({"ids": [unknown("Fulfillment"), unknown("Fulfillment")]}),
        )
        .await;
    assert_eq!(answer(&theirs), answer(&random));
    assert_eq!(theirs["data"]["fulfillments"], json!([]), "{theirs}");
    let r = app.gql(Some(&other), suggestions, json!({})).await;
    assert_eq!(r["data"]["fulfillmentSuggestions"], json!([]), "{r}");

    let merge = "mutation($i: OrdersMergeInput!) { ordersMerge(input: $i) {
        fulfillment { id merged } userErrors { code field message } } }";
    let theirs = app
        .gql(Some(&other), merge, json!({"i": {"orderIds": order_ids}}))
        .await;
    let random = app
        .gql(
            Some(&other),
            merge,
            json!({"i": {"orderIds": [unknown("Order"), unknown("Order")]}}),
        )
        .await;
    assert_eq!(answer(&theirs), answer(&random));
    assert_eq!(
        theirs["data"]["ordersMerge"]["userErrors"][0]["code"], "NOT_FOUND",
        "{theirs}"
    );

    let split = "mutation($i: OrderSplitInput!) { orderSplit(input: $i) {
        fulfillment { id } userErrors { code field message } } }";
    let theirs = app
        .gql(
            Some(&other),
            split,
            json!({"i": {"orderId": order_ids[0], "lineIds": [line_id]}}),
        )
        .await;
    let random = app
        .gql(
            Some(&other),
            split,
            json!({"i": {"orderId": unknown("Order"), "lineIds": [unknown("OrderLine")]}}),
        )
        .await;
    assert_eq!(answer(&theirs), answer(&random));
    assert_eq!(
        theirs["data"]["orderSplit"]["userErrors"][0]["code"], "NOT_FOUND",
        "{theirs}"
    );

    // Nothing of A's changed: same suggestions (still two unmerged fulfilments), same
    // fulfilments, and the connection was not asked to sync.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        answer(&app.gql(Some(&token), suggestions, json!({})).await),
        answer(&a_before)
    );
    let mine = app
        .gql(Some(&token), by_ids, json!({"ids": fulfillment_ids}))
        .await;
    let mine = mine["data"]["fulfillments"].as_array().unwrap().clone();
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert!(mine.iter().all(|f| f["merged"] == false), "{mine:?}");
    assert_eq!(connection_rows(&app).await, rows_before);

    // (d) The merge mode is the caller's own setting.
    let (ta, tb) = (
        tenant_id(&app, &app.a.slug).await,
        tenant_id(&app, &app.b.slug).await,
    );
    let set_mode = |mode: &'static str| {
        format!(
            "mutation {{ orderMergeModeSet(input: {{mode: {mode}}}) {{ mode userErrors {{ code }} }} }}"
        )
    };
    let a_mode = merge_mode(&app, ta).await;
    let r = app.gql(Some(&other), &set_mode("AUTO"), json!({})).await;
    assert_eq!(r["data"]["orderMergeModeSet"]["mode"], "AUTO", "{r}");
    assert_eq!(merge_mode(&app, tb).await.as_deref(), Some("AUTO"));
    assert_eq!(merge_mode(&app, ta).await, a_mode);
    let r = app.gql(Some(&token), &set_mode("OFF"), json!({})).await;
    assert_eq!(r["data"]["orderMergeModeSet"]["mode"], "OFF", "{r}");
    assert_eq!(merge_mode(&app, ta).await.as_deref(), Some("OFF"));
    assert_eq!(merge_mode(&app, tb).await.as_deref(), Some("AUTO"));
    // B's AUTO merged nothing of A's.
    assert_eq!(
        answer(&app.gql(Some(&token), suggestions, json!({})).await),
        answer(&a_before)
    );
    let mine = app
        .gql(Some(&token), by_ids, json!({"ids": fulfillment_ids}))
        .await;
    assert!(
        mine["data"]["fulfillments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["merged"] == false),
        "{mine}"
    );
}
