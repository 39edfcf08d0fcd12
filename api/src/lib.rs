//! The HTTP edge and the process roles: `serve` (gateway) and `worker` (relay + consumers).

pub mod cli;
pub mod metrics;
pub mod payhooks;
pub mod pushhooks;
pub mod seckill;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql::{BatchRequest, BatchResponse, Data};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use sea_orm::ConnectionTrait;
use serde_json::json;
use uphub_domain::error::ErrorCode;
use uphub_resolvers::Caller;
use uphub_schema::Schemas;
use uphub_services::Core;
use uphub_services::config::Env;
use uphub_services::consumer::{self, Handler};
use uphub_services::notifications::{InvitationMailer, TenantProvisioner};
use uphub_services::outbox::{self, RelayFaults};

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct App {
    pub core: Core,
    pub schemas: Arc<Schemas>,
    pub metrics: Arc<Metrics>,
    pub doc_cache: Arc<uphub_schema::DocCache>,
}

impl App {
    pub fn new(core: Core) -> App {
        App {
            schemas: Arc::new(Schemas::new(core.clone())),
            core,
            metrics: Arc::new(Metrics::default()),
            doc_cache: Arc::new(uphub_schema::DocCache::new(1000)),
        }
    }
}

pub fn router(app: App) -> Router {
    let body_limit = app.core.cfg.limits.max_body_bytes;
    Router::new()
        .route("/graphql", get(graphiql).post(graphql_post))
        .route("/graphql/ws", get(graphql_ws))
        .route("/media/{tenant}/{id}", get(media_file))
        .route("/media/{tenant}/{id}/thumb", get(media_thumb))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(payhooks::routes())
        .merge(pushhooks::routes())
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(app)
}

/// A JSON error response in GraphQL shape, for failures before execution.
fn error_response(status_code: ErrorCode, message: &str, request_id: &str) -> Response {
    let body = json!({"errors": [{"message": message, "extensions": {"code": status_code.as_str(), "requestId": request_id}}]});
    let status = StatusCode::from_u16(status_code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn bearer(headers: &HeaderMap) -> Result<Option<String>, ()> {
    match headers.get(header::AUTHORIZATION) {
        None => Ok(None),
        Some(v) => {
            let v = v.to_str().map_err(|_| ())?;
            let token = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .ok_or(())?;
            Ok(Some(token.trim().to_string()))
        }
    }
}

/// A POST body: JSON is buffered under the body limit; a multipart upload is streamed to the
/// parser, which spools files to temporary files under the upload limits.
enum GraphqlBody {
    Json(Result<Bytes, axum::extract::rejection::BytesRejection>),
    Multipart(axum::body::Body),
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

async fn graphql_post(
    State(app): State<App>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> Response {
    let started = Instant::now();
    let headers = request.headers().clone();
    let rid = request_id(&headers);
    let body = if media_type(&headers) == "multipart/form-data" {
        GraphqlBody::Multipart(request.into_body())
    } else {
        GraphqlBody::Json(Bytes::from_request(request, &()).await)
    };
    let resp = graphql_inner(&app, addr, &headers, body, &rid).await;
    app.metrics
        .observe_request("/graphql", resp.status().as_u16(), started.elapsed());
    resp
}

async fn graphql_inner(
    app: &App,
    addr: SocketAddr,
    headers: &HeaderMap,
    body: GraphqlBody,
    rid: &str,
) -> Response {
    let fail = |code: ErrorCode, msg: &str| {
        app.metrics.observe_error(code.as_str());
        error_response(code, msg, rid)
    };
    let multipart = matches!(body, GraphqlBody::Multipart(_));
    let parsed = match body {
        GraphqlBody::Json(body) => parse_json(body, headers),
        GraphqlBody::Multipart(body) => parse_multipart(app, headers, body).await,
    };
    let batch = match parsed {
        Ok(b) => b,
        Err((code, msg)) => return fail(code, &msg),
    };
    let max_batch = app.core.cfg.limits.max_batch;
    let size = match &batch {
        BatchRequest::Single(_) => 1,
        BatchRequest::Batch(v) => v.len(),
    };
    if size == 0 || batch.iter().any(|r| r.query.trim().is_empty()) {
        return fail(ErrorCode::BadRequest, "the request has no query");
    }
    if size > max_batch {
        return fail(
            ErrorCode::BatchTooLarge,
            &format!("at most {max_batch} operations per batch"),
        );
    }
    let ip = addr.ip().to_string();
    let rctx = match bearer(headers) {
        Err(()) => {
            return fail(
                ErrorCode::Unauthenticated,
                "Authorization must be 'Bearer <token>'",
            );
        }
        Ok(None) => None,
        Ok(Some(token)) => match uphub_services::auth::authenticate(&app.core, &token).await {
            Ok(c) => Some(c.with_request(rid, Some(ip.clone()))),
            Err(e) => {
                let code = e.code();
                let msg = if code == ErrorCode::Internal {
                    "internal error".to_string()
                } else {
                    e.to_string()
                };
                if code == ErrorCode::Internal {
                    tracing::error!(request_id = rid, error = ?e, "authentication failed");
                }
                return fail(code, &msg);
            }
        },
    };
    for req in batch.iter() {
        app.metrics
            .observe_operation(req.operation_name.as_deref().unwrap_or("anonymous"));
    }
    let caller = Caller {
        ctx: rctx,
        request_id: rid.to_string(),
        ip,
    };
    // Per-request catalog dataloaders, built on first use from the caller above.
    let batch = app
        .doc_cache
        .prime(batch)
        .data(caller.clone())
        .data(uphub_resolvers::catalog::Loaders::default());
    let mut timeout = app.core.cfg.limits.request_timeout;
    if multipart {
        // Storing a large video takes longer than a query may.
        timeout = timeout.max(app.core.cfg.media.upload_timeout);
    }
    let resp =
        match tokio::time::timeout(timeout, app.schemas.execute(&app.core, &caller, batch)).await {
            Ok(r) => r,
            Err(_) => {
                return fail(
                    ErrorCode::Timeout,
                    "the request took too long and was cancelled",
                );
            }
        };
    let mut retry_after: Option<u64> = None;
    let mut only_rate_limited = true;
    let mut any_error = false;
    for r in batch_responses(&resp) {
        for e in &r.errors {
            any_error = true;
            let code = e
                .extensions
                .as_ref()
                .and_then(|x| x.get("code"))
                .and_then(|v| match v {
                    async_graphql::Value::String(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "INTERNAL".into());
            if code == "RATE_LIMITED" {
                if let Some(async_graphql::Value::Number(n)) =
                    e.extensions.as_ref().and_then(|x| x.get("retryAfterMs"))
                {
                    retry_after = n.as_u64();
                }
            } else {
                only_rate_limited = false;
            }
            app.metrics.observe_error(&code);
        }
    }
    let mut out = axum::Json(&resp).into_response();
    if any_error && only_rate_limited && retry_after.is_some() {
        *out.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        if let Some(ms) = retry_after
            && let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string())
        {
            out.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(rid) {
        out.headers_mut().insert("x-request-id", v);
    }
    out
}

type BodyResult = Result<BatchRequest, (ErrorCode, String)>;

fn parse_json(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    headers: &HeaderMap,
) -> BodyResult {
    let body = match body {
        Ok(b) => b,
        Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err((
                ErrorCode::PayloadTooLarge,
                "request body is too large".into(),
            ));
        }
        Err(_) => {
            return Err((
                ErrorCode::BadRequest,
                "could not read the request body".into(),
            ));
        }
    };
    let media = media_type(headers);
    if media != "application/json" && media != "application/graphql-response+json" {
        return Err((
            ErrorCode::UnsupportedMediaType,
            "POST /graphql takes Content-Type: application/json (or multipart/form-data for uploads)"
                .into(),
        ));
    }
    serde_json::from_slice(&body).map_err(|e| {
        (
            ErrorCode::BadRequest,
            format!("malformed GraphQL request JSON: {e}"),
        )
    })
}

/// Slack over the largest file for the `operations` and `map` parts of an upload request.
const MULTIPART_OVERHEAD: usize = 64 * 1024;

/// A GraphQL multipart request (operations, map, files). The transport limit is the largest
/// file any kind may have plus some slack, for all parts together; the per-kind limits are the
/// service's (VALIDATION on `file`). Anonymous uploads are refused before a byte is spooled.
async fn parse_multipart(app: &App, headers: &HeaderMap, body: axum::body::Body) -> BodyResult {
    use futures_util::TryStreamExt;
    if !matches!(bearer(headers), Ok(Some(_))) {
        return Err((
            ErrorCode::Unauthenticated,
            "uploads require 'Authorization: Bearer <token>'".into(),
        ));
    }
    let media = &app.core.cfg.media;
    let max_file = usize::try_from(media.limits.max_upload_bytes())
        .unwrap_or(usize::MAX)
        .saturating_add(MULTIPART_OVERHEAD);
    // With one "file" allowed, the parser caps the whole stream at `max_file` as well.
    let opts = async_graphql::http::MultipartOptions::default()
        .max_file_size(max_file)
        .max_num_files(1);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let reader = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .into_async_read();
    let received = tokio::time::timeout(
        media.upload_timeout,
        async_graphql::http::receive_batch_body(content_type, reader, opts),
    )
    .await;
    match received {
        Ok(Ok(batch)) => Ok(batch),
        Ok(Err(async_graphql::ParseRequestError::PayloadTooLarge)) => Err((
            ErrorCode::PayloadTooLarge,
            format!(
                "an upload may be at most {} bytes",
                media.limits.max_upload_bytes()
            ),
        )),
        Ok(Err(e)) => Err((
            ErrorCode::BadRequest,
            format!("malformed GraphQL multipart request: {e}"),
        )),
        Err(_) => Err((
            ErrorCode::Timeout,
            "the upload took too long and was cancelled".into(),
        )),
    }
}

fn batch_responses(resp: &BatchResponse) -> Vec<&async_graphql::Response> {
    match resp {
        BatchResponse::Single(r) => vec![r],
        BatchResponse::Batch(v) => v.iter().collect(),
    }
}

async fn graphiql(State(app): State<App>) -> Response {
    if app.core.cfg.env == Env::Prod {
        return (StatusCode::NOT_FOUND, "GraphiQL is disabled in production").into_response();
    }
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .finish(),
    )
    .into_response()
}

/// graphql-ws (and legacy graphql-transport-ws) subscriptions. The token comes in the
/// connection_init payload as `Authorization: Bearer …` (or `authorization`/`token`).
async fn graphql_ws(
    State(app): State<App>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let core = app.core.clone();
    let schema = app.schemas.protected.clone();
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            GraphQLWebSocket::new(stream, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let rid = uuid::Uuid::new_v4().to_string();
                    let ip = addr.ip().to_string();
                    let raw = ["Authorization", "authorization", "token"]
                        .iter()
                        .find_map(|k| payload.get(*k).and_then(|v| v.as_str()).map(str::to_string));
                    let ctx = match raw {
                        None => None,
                        Some(raw) => {
                            let token = raw
                                .strip_prefix("Bearer ")
                                .unwrap_or(&raw)
                                .trim()
                                .to_string();
                            let c = uphub_services::auth::authenticate(&core, &token)
                                .await
                                .map_err(|e| async_graphql::Error::new(e.to_string()))?;
                            Some(c.with_request(rid.clone(), Some(ip.clone())))
                        }
                    };
                    let mut data = Data::default();
                    data.insert(Caller {
                        ctx,
                        request_id: rid,
                        ip,
                    });
                    data.insert(uphub_resolvers::catalog::Loaders::default());
                    Ok(data)
                })
                .serve()
        })
}

async fn media_file(
    State(app): State<App>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    serve_media(&app, addr, &tenant, &id, false, &headers).await
}

async fn media_thumb(
    State(app): State<App>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    serve_media(&app, addr, &tenant, &id, true, &headers).await
}

/// `GET /media/<tenant>/<id>[/thumb]`: public (storefronts embed these URLs), immutable, and
/// 404 for anything unknown, including an id under another tenant's path.
async fn serve_media(
    app: &App,
    addr: SocketAddr,
    tenant: &str,
    id: &str,
    thumbnail: bool,
    headers: &HeaderMap,
) -> Response {
    let started = Instant::now();
    let rid = request_id(headers);
    let resp = match (uuid::Uuid::try_parse(tenant), uuid::Uuid::try_parse(id)) {
        (Ok(tenant), Ok(id)) => {
            let ctx = uphub_tenants::RequestCtx {
                tenant: uphub_tenants::TenantId(tenant),
                principal: uphub_tenants::Principal::Anonymous,
                permissions: Default::default(),
                request_id: rid.clone(),
                ip: Some(addr.ip().to_string()),
            };
            let text = |h| headers.get(h).and_then(|v: &HeaderValue| v.to_str().ok());
            let range = uphub_services::media::RangeAsk {
                range: text(header::RANGE),
                if_range: text(header::IF_RANGE),
            };
            match uphub_services::media::media_open(&app.core, &ctx, id, thumbnail, range).await {
                Ok(obj) => media_response(obj, headers),
                Err(uphub_services::ServiceError::NotFound) => media_not_found(),
                Err(e) => {
                    tracing::error!(request_id = rid, error = %format!("{e:#}"), "serving media failed");
                    (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
                }
            }
        }
        _ => media_not_found(),
    };
    app.metrics
        .observe_request("/media", resp.status().as_u16(), started.elapsed());
    resp
}

fn media_not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

fn media_response(obj: uphub_services::media::MediaObject, headers: &HeaderMap) -> Response {
    let etag_matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == obj.etag || t.trim() == "*")
        });
    use uphub_domain::media::ByteRange;
    let mut resp = if etag_matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let (status, length, content_range) = match obj.range {
            ByteRange::Whole => (StatusCode::OK, obj.size, None),
            ByteRange::Part { start, end } => (
                StatusCode::PARTIAL_CONTENT,
                end - start + 1,
                Some(format!("bytes {start}-{end}/{}", obj.size)),
            ),
            ByteRange::Unsatisfiable => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                0,
                Some(format!("bytes */{}", obj.size)),
            ),
        };
        let mut r = axum::body::Body::from_stream(obj.body).into_response();
        *r.status_mut() = status;
        if status != StatusCode::RANGE_NOT_SATISFIABLE
            && let Ok(v) = HeaderValue::from_str(&obj.content_type)
        {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        if let Some(v) = content_range.and_then(|c| HeaderValue::from_str(&c).ok()) {
            r.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        r
    };
    let h = resp.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Content under a key never changes: new uploads get new ids.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    if let Ok(v) = HeaderValue::from_str(&obj.etag) {
        h.insert(header::ETAG, v);
    }
    // Uploaded bytes are served as exactly the sniffed type, and never as a document.
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    resp
}

async fn healthz(State(app): State<App>) -> Response {
    app.metrics.observe_request("/healthz", 200, Duration::ZERO);
    (StatusCode::OK, "ok").into_response()
}

/// Ready when Postgres, Redis and RabbitMQ all answer.
pub async fn readiness(core: &Core) -> Vec<(&'static str, Result<(), String>)> {
    let pg = core
        .db
        .execute_unprepared("SELECT 1")
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let mut conn = core.redis.clone();
    let redis = redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let amqp = if core.amqp.status().connected() {
        Ok(())
    } else {
        Err("not connected".to_string())
    };
    vec![("postgres", pg), ("redis", redis), ("rabbitmq", amqp)]
}

async fn readyz(State(app): State<App>) -> Response {
    let checks = tokio::time::timeout(Duration::from_secs(3), readiness(&app.core))
        .await
        .unwrap_or_else(|_| vec![("timeout", Err("checks timed out".into()))]);
    let ok = checks.iter().all(|(_, r)| r.is_ok());
    let body: serde_json::Map<String, serde_json::Value> = checks
        .into_iter()
        .map(|(k, r)| {
            (
                k.to_string(),
                json!(match r {
                    Ok(()) => "ok".to_string(),
                    Err(e) => e,
                }),
            )
        })
        .collect();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics_text(State(app): State<App>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], {
        let (hits, misses) = app.core.catalog_cache.counts();
        app.metrics.render(&[
            (
                "uphub_stock_cache_drift_units",
                "gauge",
                uphub_services::stock_cache::LAST_DRIFT.load(std::sync::atomic::Ordering::Relaxed)
                    as f64,
            ),
            ("uphub_catalog_cache_hits_total", "counter", hits as f64),
            ("uphub_catalog_cache_misses_total", "counter", misses as f64),
            (
                "uphub_graphql_memoized_requests_total",
                "counter",
                app.schemas.memoized() as f64,
            ),
        ])
    })
        .into_response()
}

/// Serves until `shutdown` resolves; in-flight requests are drained before returning.
pub async fn serve(
    app: App,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    Ok(())
}

/// The consumers this build runs.
pub fn handlers(core: &Core) -> anyhow::Result<Vec<Arc<dyn Handler>>> {
    let mailer = uphub_services::mailer::Mailer::from_config(&core.cfg)?;
    Ok(vec![
        Arc::new(InvitationMailer { mailer }),
        Arc::new(TenantProvisioner),
        Arc::new(uphub_services::notifications::OrderIngest::default()),
        Arc::new(uphub_services::notifications::ChannelStockPush),
        Arc::new(uphub_services::seckill::OrderWriter),
    ])
}

/// The worker role: the outbox relay plus every consumer, each restarted after a failure.
pub async fn run_worker(
    core: Core,
    faults: RelayFaults,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let handlers = handlers(&core)?;
    // Queues and bindings exist before the relay publishes, so no event is unroutable.
    declare_topology(&core, &handlers).await?;
    let mut tasks = tokio::task::JoinSet::new();
    {
        let core = core.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(supervise("outbox-relay", shutdown.clone(), move || {
            outbox::run_relay(core.clone(), faults, shutdown.clone())
        }));
    }
    {
        let core = core.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(supervise("stock-jobs", shutdown.clone(), move || {
            run_stock_jobs(core.clone(), shutdown.clone())
        }));
    }
    {
        let core = core.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(supervise("channel-sync", shutdown.clone(), move || {
            run_channel_sync(core.clone(), shutdown.clone())
        }));
    }
    {
        let core = core.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(supervise("ship-back", shutdown.clone(), move || {
            run_ship_backs(core.clone(), shutdown.clone())
        }));
    }
    // Flash sale: batch order writers (the framework's `seckill-order-writer` is their
    // fallback) and the upkeep that re-warms campaigns and re-publishes stuck tickets.
    {
        use uphub_services::seckill;
        let (c1, s1) = (core.clone(), shutdown.clone());
        tasks.spawn(supervise("seckill-writer", shutdown.clone(), move || {
            seckill::run_order_writer(c1.clone(), s1.clone())
        }));
        let (c2, s2) = (core.clone(), shutdown.clone());
        tasks.spawn(supervise("seckill-upkeep", shutdown.clone(), move || {
            seckill::run_upkeep(c2.clone(), s2.clone())
        }));
    }
    for h in handlers {
        let core = core.clone();
        let shutdown = shutdown.clone();
        let name = h.name();
        tasks.spawn(supervise(name, shutdown.clone(), move || {
            consumer::run(core.clone(), h.clone(), shutdown.clone())
        }));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Stock upkeep: expire reservations and holds, emit debounced availability events, and
/// rebuild the Redis stock cache from Postgres at start and every 30 s (exporting the drift).
pub async fn run_stock_jobs(
    core: Core,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use uphub_services::{holds, reservation, stock_cache};
    let drift = stock_cache::reconcile_all(&core)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(drift, "stock cache reconciled at start");
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_reconcile = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return Ok(()),
        }
        reservation::sweep_expired(&core, 200)
            .await
            .map_err(|e| anyhow::anyhow!("reservation sweep: {e}"))?;
        holds::sweep_expired(&core, 200)
            .await
            .map_err(|e| anyhow::anyhow!("hold sweep: {e}"))?;
        holds::drain_dirty(&core, Duration::from_millis(500))
            .await
            .map_err(|e| anyhow::anyhow!("dirty drain: {e}"))?;
        // Before the settle, so a timed-out order's stock is released in the same tick.
        uphub_services::checkout::upkeep(&core)
            .await
            .map_err(|e| anyhow::anyhow!("checkout upkeep: {e}"))?;
        // A backlog (an ingestion burst) is worked off batch after batch, not one per tick.
        const SETTLE_BATCH: u64 = 400;
        for _ in 0..20 {
            let found = uphub_services::orders::settle_dirty(&core, SETTLE_BATCH)
                .await
                .map_err(|e| anyhow::anyhow!("order stock settle: {e}"))?;
            if found < SETTLE_BATCH as usize || *shutdown.borrow() {
                break;
            }
        }
        if last_reconcile.elapsed() > Duration::from_secs(30) {
            last_reconcile = Instant::now();
            let drift = stock_cache::reconcile_all(&core)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if drift != 0 {
                tracing::warn!(drift, "stock cache drift repaired");
            }
        }
    }
}

/// Marketplace ingestion: lease due connections, pull their windows, hand orders to the bus.
pub async fn run_channel_sync(
    core: Core,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let worker = uuid::Uuid::now_v7();
    let every = Duration::from_millis(core.cfg.channel_sync_every_ms);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return Ok(()),
        }
        uphub_services::channel_sync::sync_due(&core, worker, every)
            .await
            .map_err(|e| anyhow::anyhow!("channel sync: {e}"))?;
    }
}

/// Reports shipped parcels to the marketplaces (persisted retry state, see
/// `uphub_services::shipping`).
pub async fn run_ship_backs(
    core: Core,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return Ok(()),
        }
        uphub_services::shipping::run_due(&core, 32)
            .await
            .map_err(|e| anyhow::anyhow!("ship-back: {e}"))?;
    }
}

pub async fn declare_topology(core: &Core, handlers: &[Arc<dyn Handler>]) -> anyhow::Result<()> {
    let channel = core.amqp.create_channel().await?;
    for h in handlers {
        consumer::declare(core, &channel, h.as_ref()).await?;
    }
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

async fn supervise<F, Fut>(
    name: &'static str,
    shutdown: tokio::sync::watch::Receiver<bool>,
    mut f: F,
) where
    F: FnMut() -> Fut + Send,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let mut delay = Duration::from_millis(200);
    loop {
        if *shutdown.borrow() {
            return;
        }
        match f().await {
            Ok(()) if *shutdown.borrow() => return,
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(task = name, error = %format!("{e:#}"), "task failed; restarting")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
