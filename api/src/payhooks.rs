//! Payment provider callbacks: `POST /pay/wechat/{tenant}` (WeChat Pay v3 notifications) and
//! `POST /pay/alipay/{tenant}` (Alipay notify). The services verify, dedupe and apply them; this
//! file only speaks each provider's acknowledgement format.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use uphub_services::payments;
use uuid::Uuid;

use crate::App;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/pay/wechat/{tenant}", post(wechat))
        .route("/pay/alipay/{tenant}", post(alipay))
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// WeChat Pay: 204 on success, else 4xx/5xx with `{"code":"FAIL","message":…}` (it retries).
async fn wechat(
    State(app): State<App>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(tenant) = Uuid::try_parse(&tenant) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"code": "FAIL", "message": "unknown store"})),
        )
            .into_response();
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    match payments::wechat_notify(&app.core, tenant, header, &body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (
            status(e.status),
            axum::Json(json!({"code": "FAIL", "message": e.message})),
        )
            .into_response(),
    }
}

/// Alipay: plain text `success` on success; anything else makes it retry.
async fn alipay(State(app): State<App>, Path(tenant): Path<String>, body: Bytes) -> Response {
    let plain = |code: StatusCode, text: &'static str| {
        (
            code,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text,
        )
            .into_response()
    };
    let Ok(tenant) = Uuid::try_parse(&tenant) else {
        return plain(StatusCode::NOT_FOUND, "fail");
    };
    match payments::alipay_notify(&app.core, tenant, &body).await {
        Ok(()) => plain(StatusCode::OK, "success"),
        Err(e) => plain(status(e.status), "fail"),
    }
}
