//! `/_mock/...`: the same control the in-process API offers, as JSON over HTTP, so the mock
//! can run as its own process. Never subject to fault injection.

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::MockPlatforms;
use crate::types::{Faults, MockError, OrderEvent, OrderSpec, Platform, Scenario, ShopSpec};

pub(crate) fn routes() -> Router<MockPlatforms> {
    Router::new()
        .route("/shops", post(add_shops))
        .route("/tokens/expire", post(expire_token))
        .route("/faults", post(set_faults).get(get_faults))
        .route("/orders", post(place_order))
        .route("/orders/event", post(order_event))
        .route("/sell", post(sell))
        .route("/scenario", post(start_scenario).get(scenario_progress))
        .route("/truth", get(truth))
        .route("/stock", get(stock))
        .route("/stats", get(stats))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such admin endpoint") })
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": msg.to_string() }))).into_response()
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    serde_json::from_slice(body)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, format!("bad body: {e}"))))
}

fn mock_error(e: MockError) -> Response {
    let status = match e {
        MockError::UnknownShop { .. } | MockError::UnknownOrder { .. } => StatusCode::NOT_FOUND,
        MockError::IllegalTransition { .. } | MockError::ScenarioRunning => StatusCode::CONFLICT,
        MockError::Invalid(_) => StatusCode::BAD_REQUEST,
    };
    error(status, e)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    Many(Vec<T>),
    One(T),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::Many(v) => v,
            OneOrMany::One(x) => vec![x],
        }
    }
}

async fn add_shops(AxState(m): AxState<MockPlatforms>, body: Bytes) -> Response {
    let shops: OneOrMany<ShopSpec> = match parse(&body) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let shops = shops.into_vec();
    let n = shops.len();
    for s in shops {
        m.add_shop(s);
    }
    Json(json!({ "ok": true, "shops": n })).into_response()
}

#[derive(Deserialize)]
struct ShopRef {
    platform: Platform,
    shop_id: String,
}

async fn expire_token(AxState(m): AxState<MockPlatforms>, body: Bytes) -> Response {
    let r: ShopRef = match parse(&body) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match m.expire_token(r.platform, &r.shop_id) {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(e) => mock_error(e),
    }
}

#[derive(Deserialize)]
struct FaultsBody {
    /// Absent or null: all platforms.
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(flatten)]
    faults: Faults,
}

async fn set_faults(AxState(m): AxState<MockPlatforms>, body: Bytes) -> Response {
    let f: FaultsBody = match parse(&body) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    m.set_faults(f.platform, f.faults);
    get_faults(AxState(m)).await
}

async fn get_faults(AxState(m): AxState<MockPlatforms>) -> Response {
    Json(json!({
        "taobao": m.faults(Platform::Taobao),
        "douyin": m.faults(Platform::Douyin),
        "xiaohongshu": m.faults(Platform::Xiaohongshu),
    }))
    .into_response()
}

async fn place_order(AxState(m): AxState<MockPlatforms>, body: Bytes) -> Response {
    let specs: OneOrMany<OrderSpec> = match parse(&body) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let mut ids = Vec::new();
    for s in specs.into_vec() {
        match m.place_order(s) {
            Ok(id) => ids.push(id),
            Err(e) => return mock_error(e),
        }
    }
    let first = ids.first().cloned().unwrap_or_default();
    Json(json!({ "platform_order_id": first, "platform_order_ids": ids })).into_response()
}

#[derive(Deserialize)]
struct EventBody {
    platform: Platform,
    order_id: String,
    event: OrderEvent,
}

async fn order_event(AxState(m): AxState<MockPlatforms>, body: Bytes) -> Response {
    let e: EventBody = match parse(&body) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match m.set_status(e.platform, &e.order_id, e.event) {
        Ok(t) => Json(t).into_response(),
        Err(e) => mock_error(e),
    }
}

#[derive(Deserialize)]
struct SellBody {
    platform: Platform,
    shop_id: String,
    sku_id: String,
    #[serde(default = "one")]
    quantity: i64,
}

fn one() -> i64 {
    1
}

async fn sell(AxState(m): AxState<MockPlatforms>, body: Bytes) -> Response {
    let s: SellBody = match parse(&body) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match m.sell(s.platform, &s.shop_id, &s.sku_id, s.quantity) {
        Ok(id) => Json(json!({ "platform_order_id": id })).into_response(),
        Err(e) => mock_error(e),
    }
}

async fn start_scenario(AxState(m): AxState<MockPlatforms>, body: Bytes) -> Response {
    let s: Scenario = match parse(&body) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match m.start_scenario(s) {
        Ok(p) => Json(p).into_response(),
        Err(e) => mock_error(e),
    }
}

async fn scenario_progress(AxState(m): AxState<MockPlatforms>) -> Response {
    Json(m.scenario_progress()).into_response()
}

async fn truth(AxState(m): AxState<MockPlatforms>) -> Response {
    Json(m.truth()).into_response()
}

async fn stock(AxState(m): AxState<MockPlatforms>) -> Response {
    Json(m.pushed_stock()).into_response()
}

async fn stats(AxState(m): AxState<MockPlatforms>) -> Response {
    Json(json!({
        "faults": m.fault_stats(),
        "push": m.push_stats(),
        "tmc_backlog": m.tmc_backlog(),
        "scenario": m.scenario_progress(),
    }))
    .into_response()
}
