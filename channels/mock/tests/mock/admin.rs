use serde_json::{Value, json};
use uphub_channels_mock::{MockConfig, MockPlatforms};

use crate::helpers::*;

#[tokio::test]
async fn the_admin_api_drives_a_mock_over_http() {
    let m = MockPlatforms::new(MockConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/_mock", listener.local_addr().unwrap());
    tokio::spawn(m.serve(listener));
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let r = http.post(format!("{base}{path}")).json(&body).send();
        async move {
            let r = r.await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let get = |path: &str| {
        let r = http.get(format!("{base}{path}")).send();
        async move { r.await.unwrap().json::<Value>().await.unwrap() }
    };

    let (s, v) = post("/shops", serde_json::to_value(shops(None)).unwrap()).await;
    assert_eq!((s, v["shops"].clone()), (200, json!(3)));

    let (s, v) = post(
        "/orders",
        serde_json::to_value(order_spec(
            uphub_channels_mock::Platform::Douyin,
            DY_SHOP,
            true,
        ))
        .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let id = v["platform_order_id"].as_str().unwrap().to_string();

    let ship = json!({"platform": "douyin", "order_id": id, "event": {"type": "ship", "company_code": "yunda", "tracking_no": "YD1"}});
    let (s, v) = post("/orders/event", ship.clone()).await;
    assert_eq!((s, v["status"].clone()), (200, json!("3")), "{v}");
    let (s, _) = post("/orders/event", ship).await;
    assert_eq!(s, 409, "shipping twice is an illegal transition");

    let (s, v) = post(
        "/sell",
        json!({"platform": "xhs", "shop_id": XHS_SHOP, "sku_id": "S1", "quantity": 2}),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    let truth = get("/truth").await;
    assert_eq!(truth.as_array().unwrap().len(), 2);

    let (s, v) = post(
        "/faults",
        json!({"platform": "taobao", "error_5xx_rate": 0.5, "ban_seconds": 3}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["taobao"]["error_5xx_rate"], 0.5);
    assert_eq!(v["douyin"]["error_5xx_rate"], 0.0);

    let (s, v) = post("/scenario", json!({"seed": 3, "orders_per_platform": {"taobao": 3, "douyin": 3, "xhs": 3}, "buyers": 4, "duration_ms": 100})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["planned_orders"], 9);
    let mut p = get("/scenario").await;
    for _ in 0..100 {
        if p["done"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        p = get("/scenario").await;
    }
    assert_eq!(p["placed"], 9, "{p}");
    assert_eq!(get("/truth").await.as_array().unwrap().len(), 11);

    let (s, _) = post(
        "/tokens/expire",
        json!({"platform": "douyin", "shop_id": DY_SHOP}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = post("/orders", json!({"platform": "douyin"})).await;
    assert_eq!(s, 400, "{v}");
    assert!(get("/stock").await.as_array().unwrap().is_empty());
}
