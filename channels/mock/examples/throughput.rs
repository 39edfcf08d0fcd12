//! How many signed `order.searchList` calls per second the mock answers (client in the same
//! process, so a lower bound): `SIZE=100 cargo run --release -p uphub-channels-mock --example
//! throughput`. SIZE is the page size (default 100), REQUESTS the call count (default 8000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use uphub_channels::sign::{doudian_param_json, doudian_sign};
use uphub_channels_mock::{MockConfig, MockPlatforms, Platform, ShopSpec};

const WORKERS: usize = 32;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let size = env("SIZE", 100);
    let requests = env("REQUESTS", 8000);
    let m = MockPlatforms::new(MockConfig::default());
    m.add_shop(ShopSpec {
        platform: Platform::Douyin,
        shop_id: "1".into(),
        app_key: "k".into(),
        app_secret: "s".into(),
        access_token: "t".into(),
        refresh_token: "r".into(),
        webhook_url: None,
    });
    for _ in 0..2500 {
        m.sell(Platform::Douyin, "1", "sku", 1).unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(m.clone().serve(listener));

    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let (client, base) = (client.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..requests / WORKERS {
                let now = chrono::Utc::now().timestamp();
                let body = doudian_param_json(&serde_json::json!({
                    "update_time_start": now - 600, "update_time_end": now + 60,
                    "page": (i + w) % 20, "size": size,
                    "order_by": "update_time", "order_asc": false,
                }));
                let ts = now.to_string();
                let sign = doudian_sign("k", "s", "order.searchList", &body, &ts);
                let query = [
                    ("app_key", "k"),
                    ("method", "order.searchList"),
                    ("access_token", "t"),
                    ("timestamp", &ts),
                    ("v", "2"),
                    ("sign_method", "hmac-sha256"),
                    ("sign", &sign),
                ];
                let r = client
                    .post(format!("{base}/order/searchList"))
                    .query(&query)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let v: serde_json::Value = r.json().await.unwrap();
                assert_eq!(v["code"], 10000, "{v}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = requests / WORKERS * WORKERS;
    let secs = started.elapsed().as_secs_f64();
    println!("{n} calls, page size {size}: {:.0}/s", n as f64 / secs);
}
