//! `spawn()` a mock on a loopback port with one shop per platform, and signed callers.

use std::time::Duration;

use chrono::{FixedOffset, Utc};
use serde_json::Value;
use uphub_channels::sign::{TopSignMethod, doudian_param_json, doudian_sign, top_sign, xhs_sign};
use uphub_channels_mock::{
    LineSpec, MockConfig, MockPlatforms, OrderSpec, Platform, Receiver, ShopSpec,
};

pub const TB_SHOP: &str = "tb-seller-1";
pub const DY_SHOP: &str = "770001";
pub const XHS_SHOP: &str = "xhs-seller-1";

pub struct Mock {
    pub m: MockPlatforms,
    pub base: String,
    pub http: reqwest::Client,
}

pub fn test_config() -> MockConfig {
    MockConfig {
        seed: 7,
        tmc_redeliver_after: Duration::from_millis(400),
        push_retry_base: Duration::from_millis(50),
        ..MockConfig::default()
    }
}

pub async fn spawn() -> Mock {
    spawn_with(test_config(), None).await
}

/// A mock with the three standard shops (the Doudian one pushing to `webhook`, if given).
pub async fn spawn_with(cfg: MockConfig, webhook: Option<String>) -> Mock {
    let m = MockPlatforms::new(cfg);
    for s in shops(webhook) {
        m.add_shop(s);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(m.clone().serve(listener));
    Mock {
        m,
        base,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
    }
}

pub fn shops(webhook: Option<String>) -> Vec<ShopSpec> {
    vec![
        ShopSpec {
            platform: Platform::Taobao,
            shop_id: TB_SHOP.into(),
            app_key: "12345678".into(),
            app_secret: "tb-secret".into(),
            access_token: "tb-session".into(),
            refresh_token: String::new(),
            webhook_url: None,
        },
        ShopSpec {
            platform: Platform::Douyin,
            shop_id: DY_SHOP.into(),
            app_key: "dy-app".into(),
            app_secret: "dy-secret".into(),
            access_token: "dy-at".into(),
            refresh_token: "dy-rt".into(),
            webhook_url: webhook,
        },
        ShopSpec {
            platform: Platform::Xiaohongshu,
            shop_id: XHS_SHOP.into(),
            app_key: "xhs-app".into(),
            app_secret: "xhs-secret".into(),
            access_token: "xhs-at".into(),
            refresh_token: "xhs-rt".into(),
            webhook_url: None,
        },
    ]
}

pub fn zhang_san() -> Receiver {
    Receiver {
        name: "张三".into(),
        phone: "13812345678".into(),
        province: "浙江省".into(),
        city: "杭州市".into(),
        district: "西湖区".into(),
        address: "文一西路969号3栋201室".into(),
    }
}

pub fn order_spec(platform: Platform, shop: &str, paid: bool) -> OrderSpec {
    OrderSpec {
        platform,
        shop_id: shop.into(),
        buyer_id: "buyer-1".into(),
        receiver: zhang_san(),
        lines: vec![
            LineSpec {
                item_id: "600001".into(),
                sku_id: "500001".into(),
                outer_sku_code: "SKU-001".into(),
                title: "T恤 黑 M".into(),
                quantity: 2,
                price_fen: 1230,
            },
            LineSpec {
                item_id: "600002".into(),
                sku_id: "500002".into(),
                outer_sku_code: "SKU-002".into(),
                title: "袜子".into(),
                quantity: 1,
                price_fen: 500,
            },
        ],
        post_fee_fen: 800,
        paid,
    }
}

/// A TOP list that may come as an object when it has one element.
pub fn top_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

// ---- Taobao ----------------------------------------------------------------------------------

pub fn top_time(t: chrono::DateTime<Utc>) -> String {
    let cst = FixedOffset::east_opt(8 * 3600).unwrap();
    t.with_timezone(&cst)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// System params for a TOP call (unsigned).
pub fn top_params(
    method: &str,
    sign_method: TopSignMethod,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = [
        ("method", method),
        ("app_key", "12345678"),
        ("session", "tb-session"),
        ("format", "json"),
        ("v", "2.0"),
        ("sign_method", sign_method.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    p.push(("timestamp".into(), top_time(Utc::now())));
    for (k, v) in extra {
        p.push((k.to_string(), v.to_string()));
    }
    p
}

pub fn top_signed(
    mut p: Vec<(String, String)>,
    sign_method: TopSignMethod,
) -> Vec<(String, String)> {
    let sign = top_sign(
        "tb-secret",
        sign_method,
        p.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    p.push(("sign".into(), sign));
    p
}

pub async fn top_post(mock: &Mock, form: &[(String, String)]) -> reqwest::Response {
    mock.http
        .post(format!("{}/router/rest", mock.base))
        .form(form)
        .send()
        .await
        .unwrap()
}

pub async fn top(mock: &Mock, method: &str, extra: &[(&str, &str)]) -> Value {
    let form = top_signed(
        top_params(method, TopSignMethod::Md5, extra),
        TopSignMethod::Md5,
    );
    let r = top_post(mock, &form).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

// ---- Doudian ---------------------------------------------------------------------------------

/// Posts `body` as param_json, signed over exactly that string (`sign_over` to sign another).
pub async fn dd_raw(
    mock: &Mock,
    method: &str,
    body: &str,
    sign_over: Option<&str>,
    access_token: Option<&str>,
) -> reqwest::Response {
    let ts = Utc::now().timestamp().to_string();
    let sign = doudian_sign(
        "dy-app",
        "dy-secret",
        method,
        sign_over.unwrap_or(body),
        &ts,
    );
    let mut query = vec![
        ("app_key", "dy-app".to_string()),
        ("method", method.to_string()),
        ("timestamp", ts),
        ("v", "2".to_string()),
        ("sign_method", "hmac-sha256".to_string()),
        ("sign", sign),
    ];
    if let Some(t) = access_token {
        query.push(("access_token", t.to_string()));
    }
    mock.http
        .post(format!("{}/{}", mock.base, method.replace('.', "/")))
        .query(&query)
        .header("content-type", "application/json")
        .header("x-open-no-old-err-code", "1")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

pub async fn dd_with(mock: &Mock, method: &str, param: &Value, token: &str) -> Value {
    let r = dd_raw(mock, method, &doudian_param_json(param), None, Some(token)).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

pub async fn dd(mock: &Mock, method: &str, param: Value) -> Value {
    dd_with(mock, method, &param, "dy-at").await
}

// ---- Xiaohongshu -----------------------------------------------------------------------------

pub fn xhs_body(method: &str, token: Option<&str>, business: Value, secret: &str) -> Value {
    let ts = Utc::now().timestamp().to_string();
    let mut b = serde_json::json!({
        "method": method,
        "appId": "xhs-app",
        "timestamp": ts,
        "version": "2.0",
        "sign": xhs_sign(method, "xhs-app", &ts, "2.0", secret),
    });
    let o = b.as_object_mut().unwrap();
    if let Some(t) = token {
        o.insert("accessToken".into(), t.into());
    }
    if let Value::Object(extra) = business {
        o.extend(extra);
    }
    b
}

pub async fn xhs_post(mock: &Mock, body: &Value) -> Value {
    let r = mock
        .http
        .post(format!("{}/ark/open_api/v3/common_controller", mock.base))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

pub async fn xhs_with(mock: &Mock, method: &str, business: Value, token: &str) -> Value {
    xhs_post(mock, &xhs_body(method, Some(token), business, "xhs-secret")).await
}

pub async fn xhs(mock: &Mock, method: &str, business: Value) -> Value {
    xhs_with(mock, method, business, "xhs-at").await
}

/// Sleeps into the next wall-clock second, so the next change lands in a later second.
pub async fn next_second() {
    let ms = Utc::now().timestamp_subsec_millis();
    tokio::time::sleep(Duration::from_millis(u64::from(1_000 - ms) + 20)).await;
}
