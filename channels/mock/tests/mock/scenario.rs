use std::collections::{HashMap, HashSet};

use serde_json::Value;
use uphub_channels_mock::{PerPlatform, Platform, Receiver, Scenario, ScenarioSku, TruthOrder};

use crate::helpers::*;

fn scenario(seed: u64) -> Scenario {
    Scenario {
        seed,
        orders_per_platform: PerPlatform {
            taobao: 40,
            douyin: 30,
            xiaohongshu: 20,
        },
        buyers: 30,
        duration_ms: 1_200,
        skus: PerPlatform {
            taobao: vec![ScenarioSku {
                item_id: "600001".into(),
                sku_id: "500001".into(),
                outer_sku_code: "SKU-001".into(),
                price_fen: 1990,
            }],
            ..PerPlatform::default()
        },
        shared_buyer_fraction: 0.3,
    }
}

#[tokio::test]
async fn scenario_places_the_requested_orders_and_the_truth_matches_the_platforms() {
    let mock = spawn().await;
    let started = mock.m.start_scenario(scenario(11)).unwrap();
    assert_eq!(started.planned_orders, 90);
    assert!(
        mock.m.start_scenario(scenario(11)).is_err(),
        "one at a time"
    );
    let p = mock.m.wait_scenario().await;
    assert!(p.done);
    assert_eq!(p.placed, 90);
    assert_eq!(p.changed + p.skipped, p.planned_changes);
    assert_eq!(p.skipped, 0, "{p:?}");

    let truth = mock.m.truth();
    let on = |pl: Platform| {
        truth
            .iter()
            .filter(|t| t.platform == pl)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        (
            on(Platform::Taobao).len(),
            on(Platform::Douyin).len(),
            on(Platform::Xiaohongshu).len()
        ),
        (40, 30, 20)
    );
    let statuses: HashSet<&str> = on(Platform::Taobao)
        .iter()
        .map(|t| t.status.as_str())
        .collect();
    assert!(statuses.len() >= 3, "{statuses:?}");
    assert!(
        on(Platform::Taobao)
            .iter()
            .all(|t| t.lines[0].sku_id == "500001")
    );
    for t in truth.iter().filter(|t| t.status == "TRADE_CLOSED") {
        assert!(t.lines.iter().all(|l| l.after_sale == "SUCCESS"));
    }

    // Some people bought on more than one platform, to the same receiver.
    let mut platforms_of: HashMap<&Receiver, HashSet<Platform>> = HashMap::new();
    for t in &truth {
        platforms_of
            .entry(&t.receiver)
            .or_default()
            .insert(t.platform);
    }
    assert!(platforms_of.values().any(|s| s.len() >= 2));

    // The platforms answer what the truth says.
    for t in on(Platform::Taobao).iter().take(10) {
        let v = top(
            &mock,
            "taobao.trade.fullinfo.get",
            &[
                ("fields", "tid,status,modified"),
                ("tid", &t.platform_order_id),
            ],
        )
        .await;
        let tr = &v["trade_fullinfo_get_response"]["trade"];
        assert_eq!(tr["status"], t.status.as_str(), "{v}");
        assert_eq!(tr["modified"], top_time(t.modified).as_str());
    }
    for t in on(Platform::Douyin).iter().take(10) {
        let v = dd(
            &mock,
            "order.orderDetail",
            serde_json::json!({"shop_order_id": t.platform_order_id}),
        )
        .await;
        assert_eq!(
            v["data"]["shop_order_detail"]["order_status"].to_string(),
            t.status,
            "{v}"
        );
    }
    for t in on(Platform::Xiaohongshu).iter().take(10) {
        let v = xhs(
            &mock,
            "order.getOrderDetail",
            serde_json::json!({"orderId": t.platform_order_id}),
        )
        .await;
        assert_eq!(v["data"]["orderStatus"].to_string(), t.status, "{v}");
        assert_eq!(
            v["data"]["updateTime"],
            Value::from(t.modified.timestamp_millis())
        );
    }
}

/// The truth without wall-clock times.
fn timeless(t: &[TruthOrder]) -> Vec<(String, String, String, Receiver, usize)> {
    t.iter()
        .map(|o| {
            (
                o.platform_order_id.clone(),
                o.status.clone(),
                o.buyer_id.clone(),
                o.receiver.clone(),
                o.lines.len(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_scenario_is_deterministic_for_its_seed() {
    let short = |seed| Scenario {
        duration_ms: 300,
        ..scenario(seed)
    };
    let a = spawn().await;
    a.m.start_scenario(short(5)).unwrap();
    a.m.wait_scenario().await;
    let b = spawn().await;
    b.m.start_scenario(short(5)).unwrap();
    b.m.wait_scenario().await;
    assert_eq!(timeless(&a.m.truth()), timeless(&b.m.truth()));
    let c = spawn().await;
    c.m.start_scenario(short(6)).unwrap();
    c.m.wait_scenario().await;
    assert_ne!(timeless(&a.m.truth()), timeless(&c.m.truth()));
}
