//! Marketplace push messages: `POST /push/doudian/{tenant}/{connection}` (Doudian order
//! messages). The service verifies `event-sign` and records the hint; this file only speaks
//! Doudian's acknowledgement format: `{"code":0,"msg":"success"}`, anything else is retried.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use uphub_services::channel_push::{self, DoudianPush, PushRejected};
use uphub_tenants::{Principal, RequestCtx, TenantId};
use uuid::Uuid;

use crate::App;

pub fn routes() -> Router<App> {
    Router::new().route("/push/doudian/{tenant}/{connection}", post(doudian))
}

async fn doudian(
    State(app): State<App>,
    Path((tenant, connection)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = std::time::Instant::now();
    let rid = crate::request_id(&headers);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let push = DoudianPush {
        event_sign: header("event-sign"),
        app_id: header("app-id"),
        body: &body,
    };
    let result = match (Uuid::try_parse(&tenant), Uuid::try_parse(&connection)) {
        (Ok(tenant), Ok(connection)) => {
            let ctx = RequestCtx {
                tenant: TenantId(tenant),
                principal: Principal::Anonymous,
                permissions: Default::default(),
                request_id: rid.clone(),
                ip: None,
            };
            channel_push::doudian_push_receive(&app.core, &ctx, connection, push).await
        }
        // A malformed id is just another unknown connection.
        _ => Err(PushRejected::BadSignature),
    };
    let mut resp = match result {
        Ok(_) => (
            StatusCode::OK,
            axum::Json(json!({"code": 0, "msg": "success"})),
        )
            .into_response(),
        Err(e) => {
            let code = e.code();
            if let PushRejected::Internal(inner) = &e {
                tracing::error!(request_id = rid, error = %format!("{inner:#}"), "doudian push failed");
            }
            app.metrics.observe_error(code.as_str());
            let status =
                StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            (
                status,
                axum::Json(json!({
                    "code": e.platform_code(),
                    "msg": e.to_string(),
                    "error": code.as_str(),
                })),
            )
                .into_response()
        }
    };
    if let Ok(v) = axum::http::HeaderValue::from_str(&rid) {
        resp.headers_mut().insert("x-request-id", v);
    }
    app.metrics
        .observe_request("/push", resp.status().as_u16(), started.elapsed());
    resp
}
