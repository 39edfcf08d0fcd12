#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::time::Instant;
use uphub_channels_mock::*;

#[tokio::main]
async fn main() {
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
    m.add_shop(ShopSpec {
        platform: Platform::Taobao,
        shop_id: "tb".into(),
        app_key: "k".into(),
        app_secret: "s".into(),
        access_token: "t".into(),
        refresh_token: "r".into(),
        webhook_url: None,
    });
    for i in 0..5000 {
        m.sell(
            if i % 2 == 0 {
                Platform::Douyin
            } else {
                Platform::Taobao
            },
            if i % 2 == 0 { "1" } else { "tb" },
            "sku",
            1,
        )
        .unwrap();
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(m.clone().serve(l));
    let client = reqwest::Client::new();
    let n = 8000;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..32 {
        let client = client.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..n / 32 {
                let now = chrono::Utc::now().timestamp();
                let body = uphub_channels::sign::doudian_param_json(&serde_json::json!({"update_time_start": now - 60, "update_time_end": now + 60, "page": (i + w) % 20, "size": 100, "order_by": "update_time", "order_asc": false}));
                let ts = now.to_string();
                let sign = uphub_channels::sign::doudian_sign("k", "s", "order.searchList", &body, &ts);
                let r = client.post(format!("{base}/order/searchList")).query(&[("app_key", "k"), ("method", "order.searchList"), ("access_token", "t"), ("timestamp", &ts), ("v", "2"), ("sign_method", "hmac-sha256"), ("sign", &sign)]).body(body).send().await.unwrap();
                let v: serde_json::Value = r.json().await.unwrap();
                assert_eq!(v["code"], 10000);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "{} req in {:?} = {:.0}/s",
        n,
        t.elapsed(),
        n as f64 / t.elapsed().as_secs_f64()
    );
}
