//! `uphub seckill`: the flash-sale edge, deployable on its own. It serves buyers only and never
//! touches Postgres on the buy path: a stateless JWT check, ONE Redis `EVALSHA` (token buckets +
//! admission) and, for an admitted ticket, one RabbitMQ publish.
//!
//! Two doors to the same service calls:
//! - a lean JSON API for the peak (`POST /seckill/buy`, `GET /seckill/tickets/{id}`, long-poll
//!   `GET /seckill/tickets/{id}/wait?timeoutMs=`) — async-graphql costs ~0.3 ms a request here,
//!   more than the whole admission;
//! - a GraphQL schema of the buyer fields only (`POST /graphql`: `seckillBuy`, `seckillTicket`;
//!   `/graphql/ws`: `seckillTicketChanged`), with the gateway's protection limits.
//!
//! Errors have the gateway's pre-execution shape, `{"errors":[{message, extensions:{code, …}}]}`,
//! with the status of the code (429 + `Retry-After` for RATE_LIMITED). A decided buy is HTTP 200
//! whatever the ticket says: SOLD_OUT is an answer, not a failure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::{Data, MergedObject, Schema};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use uphub_domain::error::ErrorCode;
use uphub_resolvers::Caller;
use uphub_resolvers::seckill::{SeckillBuyerMutation, SeckillBuyerQuery, SeckillSubscription};
use uphub_services::Core;
use uphub_services::seckill::{self, SeckillConfig, SeckillError, Source, TicketRef};
use uphub_tenants::RequestCtx;

use crate::metrics::Metrics;

#[derive(MergedObject, Default)]
pub struct EdgeQuery(SeckillBuyerQuery);

#[derive(MergedObject, Default)]
pub struct EdgeMutation(SeckillBuyerMutation);

pub type EdgeSchema = Schema<EdgeQuery, EdgeMutation, SeckillSubscription>;

/// Bodies here are a few hundred bytes.
const MAX_BODY: usize = 16 * 1024;
const MAX_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Edge {
    pub core: Core,
    pub cfg: Arc<SeckillConfig>,
    pub schema: EdgeSchema,
    pub metrics: Arc<Metrics>,
}

impl Edge {
    pub fn new(core: Core, cfg: SeckillConfig) -> Edge {
        let mut b = Schema::build(
            EdgeQuery::default(),
            EdgeMutation::default(),
            SeckillSubscription,
        )
        .extension(uphub_schema::Protection::new(core.clone()))
        .limit_recursive_depth(64)
        .limit_directives(20)
        .data(core.clone())
        .data(cfg.clone());
        if core.cfg.env == uphub_services::config::Env::Prod {
            b = b.disable_introspection().disable_suggestions();
        }
        Edge {
            schema: b.finish(),
            core,
            cfg: Arc::new(cfg),
            metrics: Arc::new(Metrics::default()),
        }
    }
}

/// The state is shared behind an Arc: cloning a Core per request would copy its Redis client's
/// connection info.
pub fn router(edge: Edge) -> Router {
    Router::new()
        .route("/seckill/buy", post(buy))
        .route("/seckill/tickets/{id}", get(ticket))
        .route("/seckill/tickets/{id}/wait", get(ticket_wait))
        .route("/graphql", post(graphql))
        .route("/graphql/ws", get(graphql_ws))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Arc::new(edge))
}

/// Opens the ticket channel and loads the scripts, then serves until `shutdown` resolves
/// (in-flight requests drain).
pub async fn serve(
    edge: Edge,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    seckill::prepare_edge(&edge.core).await?;
    axum::serve(
        listener,
        router(edge).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    Ok(())
}

fn error_body(code: ErrorCode, message: &str, extra: Value, rid: &str) -> Response {
    let mut ext = json!({"code": code.as_str()});
    if let (Some(e), Value::Object(x)) = (ext.as_object_mut(), extra) {
        e.extend(x);
    }
    if !rid.is_empty() {
        ext["requestId"] = json!(rid);
    }
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        axum::Json(json!({"errors": [{"message": message, "extensions": ext}]})),
    )
        .into_response()
}

fn service_error(e: SeckillError, rid: &str) -> Response {
    let code = e.code();
    match &e {
        SeckillError::Service(uphub_services::ServiceError::Internal(inner)) => {
            // Only now is a request id worth minting: the cause is logged under it.
            let rid = if rid.is_empty() {
                uuid::Uuid::new_v4().to_string()
            } else {
                rid.to_string()
            };
            tracing::error!(request_id = rid, error = %format!("{inner:#}"), "flash-sale edge failed");
            error_body(code, "internal error", json!({}), &rid)
        }
        SeckillError::Service(uphub_services::ServiceError::RateLimited { retry_after_ms }) => {
            let ms = *retry_after_ms;
            let mut r = error_body(code, &e.to_string(), json!({"retryAfterMs": ms}), rid);
            if let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        SeckillError::NotStarted { starts_in_ms } => error_body(
            code,
            &e.to_string(),
            json!({"startsInMs": starts_in_ms, "field": "campaignId"}),
            rid,
        ),
        _ => error_body(code, &e.to_string(), json!({"field": e.field()}), rid),
    }
}

/// The request id of the header when it is a sane one; empty otherwise (minted on failure).
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
        .unwrap_or_default()
}

/// The client's address: the socket peer, or behind a trusted balancer the last
/// `X-Forwarded-For` entry (the one the balancer appended; earlier ones are client-supplied).
fn client_ip(cfg: &SeckillConfig, addr: SocketAddr, headers: &HeaderMap) -> String {
    if cfg.trust_forwarded_for
        && let Some(ip) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim)
            .and_then(|s| s.parse::<std::net::IpAddr>().ok())
    {
        return ip.to_string();
    }
    addr.ip().to_string()
}

/// A buyer's request context from the bearer token: stateless (JWT), no database.
async fn buyer_ctx(
    edge: &Edge,
    addr: SocketAddr,
    headers: &HeaderMap,
    rid: &str,
) -> Result<RequestCtx, Response> {
    let unauth = |m: &str| error_body(ErrorCode::Unauthenticated, m, json!({}), rid);
    let raw = match headers.get(header::AUTHORIZATION) {
        None => {
            return Err(unauth(
                "a buyer token is required (Authorization: Bearer …)",
            ));
        }
        Some(v) => v.to_str().unwrap_or(""),
    };
    let Some(token) = raw
        .strip_prefix("Bearer ")
        .or_else(|| raw.strip_prefix("bearer "))
        .map(str::trim)
    else {
        return Err(unauth("Authorization must be 'Bearer <token>'"));
    };
    let forbidden = || {
        error_body(
            ErrorCode::Forbidden,
            "the flash-sale edge serves buyers; use a buyer token",
            json!({}),
            rid,
        )
    };
    // API keys are looked up in Postgres: not here.
    if token.starts_with("uhk_") {
        return Err(forbidden());
    }
    let ctx = match uphub_services::auth::authenticate(&edge.core, token).await {
        Ok(c) => c,
        Err(e) => return Err(service_error(e.into(), rid)),
    };
    if ctx.buyer_id().is_none() {
        return Err(forbidden());
    }
    Ok(ctx.with_request(rid, Some(client_ip(&edge.cfg, addr, headers))))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BuyBody {
    campaign_id: String,
    quantity: i64,
    request_id: String,
}

async fn buy(
    State(edge): State<Arc<Edge>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let started = Instant::now();
    let resp = buy_inner(&edge, addr, &headers, body).await;
    edge.metrics
        .observe_request("/seckill/buy", resp.status().as_u16(), started.elapsed());
    resp
}

async fn buy_inner(
    edge: &Edge,
    addr: SocketAddr,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let rid = request_id(headers);
    let ctx = match buyer_ctx(edge, addr, headers, &rid).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let body = match body {
        Ok(b) => b,
        Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error_body(
                ErrorCode::PayloadTooLarge,
                "request body is too large",
                json!({}),
                &rid,
            );
        }
        Err(_) => {
            return error_body(
                ErrorCode::BadRequest,
                "could not read the request body",
                json!({}),
                &rid,
            );
        }
    };
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json_type {
        return error_body(
            ErrorCode::UnsupportedMediaType,
            "POST /seckill/buy takes Content-Type: application/json",
            json!({}),
            &rid,
        );
    }
    let req: BuyBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_body(
                ErrorCode::BadRequest,
                &format!("expected {{campaignId, quantity, requestId}}: {e}"),
                json!({}),
                &rid,
            );
        }
    };
    let Some(campaign) = uphub_domain::gid::decode("SeckillCampaign", &req.campaign_id)
        .and_then(|s| uuid::Uuid::try_parse(&s).ok())
    else {
        return service_error(uphub_services::ServiceError::NotFound.into(), &rid);
    };
    match seckill::buy(
        &edge.core,
        &ctx,
        &edge.cfg,
        campaign,
        req.quantity,
        &req.request_id,
    )
    .await
    {
        Ok(t) => axum::Json(json!({"ticket": seckill::ticket_json(&t)})).into_response(),
        Err(e) => service_error(e, &rid),
    }
}

async fn ticket(
    State(edge): State<Arc<Edge>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let started = Instant::now();
    let resp = ticket_inner(&edge, addr, &headers, &id, None).await;
    edge.metrics.observe_request(
        "/seckill/tickets",
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WaitParams {
    timeout_ms: Option<u64>,
}

async fn ticket_wait(
    State(edge): State<Arc<Edge>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(p): Query<WaitParams>,
) -> Response {
    let started = Instant::now();
    let wait = Duration::from_millis(p.timeout_ms.unwrap_or(10_000)).min(MAX_WAIT);
    let resp = ticket_inner(&edge, addr, &headers, &id, Some(wait)).await;
    edge.metrics.observe_request(
        "/seckill/tickets/wait",
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

async fn ticket_inner(
    edge: &Edge,
    addr: SocketAddr,
    headers: &HeaderMap,
    id: &str,
    wait: Option<Duration>,
) -> Response {
    let rid = request_id(headers);
    let ctx = match buyer_ctx(edge, addr, headers, &rid).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(r) = TicketRef::decode(id) else {
        return service_error(uphub_services::ServiceError::NotFound.into(), &rid);
    };
    let t = match wait {
        None => seckill::ticket_from(&edge.core, &ctx, r, Source::Redis).await,
        Some(w) => seckill::ticket_wait(&edge.core, &ctx, r, w, Source::Redis).await,
    };
    match t {
        Ok(t) => axum::Json(json!({"ticket": seckill::ticket_json(&t)})).into_response(),
        Err(e) => service_error(e.into(), &rid),
    }
}

/// The buyer fields over GraphQL (single operations), under the gateway's protection limits.
async fn graphql(
    State(edge): State<Arc<Edge>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let started = Instant::now();
    let rid = request_id(&headers);
    let rid = if rid.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        rid
    };
    let resp = async {
        let ctx = match headers.get(header::AUTHORIZATION) {
            None => None,
            Some(_) => match buyer_ctx(&edge, addr, &headers, &rid).await {
                Ok(c) => Some(c),
                Err(r) => return r,
            },
        };
        let Ok(body) = body else {
            return error_body(
                ErrorCode::PayloadTooLarge,
                "request body is too large or unreadable",
                json!({}),
                &rid,
            );
        };
        let req: async_graphql::Request = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error_body(
                    ErrorCode::BadRequest,
                    &format!("malformed GraphQL request JSON: {e}"),
                    json!({}),
                    &rid,
                );
            }
        };
        let req = req.data(Caller {
            ctx,
            request_id: rid.clone(),
            ip: client_ip(&edge.cfg, addr, &headers),
        });
        match tokio::time::timeout(
            edge.core.cfg.limits.request_timeout,
            edge.schema.execute(req),
        )
        .await
        {
            Ok(r) => axum::Json(&r).into_response(),
            Err(_) => error_body(
                ErrorCode::Timeout,
                "the request took too long and was cancelled",
                json!({}),
                &rid,
            ),
        }
    }
    .await;
    edge.metrics
        .observe_request("/graphql", resp.status().as_u16(), started.elapsed());
    resp
}

/// `seckillTicketChanged` over graphql-transport-ws / graphql-ws; the buyer token comes in the
/// connection_init payload (`Authorization`, `authorization` or `token`).
async fn graphql_ws(
    State(edge): State<Arc<Edge>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let schema = edge.schema.clone();
    let ip = client_ip(&edge.cfg, addr, &headers);
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            GraphQLWebSocket::new(stream, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let rid = uuid::Uuid::new_v4().to_string();
                    let raw = ["Authorization", "authorization", "token"]
                        .iter()
                        .find_map(|k| payload.get(*k).and_then(|v| v.as_str()).map(str::to_string))
                        .ok_or_else(|| async_graphql::Error::new("a buyer token is required"))?;
                    let token = raw.strip_prefix("Bearer ").unwrap_or(&raw).trim();
                    if token.starts_with("uhk_") {
                        return Err(async_graphql::Error::new("buyer token required"));
                    }
                    let ctx = uphub_services::auth::authenticate(&edge.core, token)
                        .await
                        .map_err(|e| async_graphql::Error::new(e.to_string()))?;
                    if ctx.buyer_id().is_none() {
                        return Err(async_graphql::Error::new("buyer token required"));
                    }
                    let mut data = Data::default();
                    data.insert(Caller {
                        ctx: Some(ctx.with_request(rid.clone(), Some(ip.clone()))),
                        request_id: rid,
                        ip,
                    });
                    Ok(data)
                })
                .serve()
        })
}

async fn healthz(State(edge): State<Arc<Edge>>) -> Response {
    edge.metrics
        .observe_request("/healthz", 200, Duration::ZERO);
    (StatusCode::OK, "ok").into_response()
}

/// Ready when Redis and RabbitMQ answer. Postgres is not asked: the edge sells without it (the
/// writers catch up), so a database outage must not take the edge out of the balancer.
async fn readyz(State(edge): State<Arc<Edge>>) -> Response {
    let checks = async {
        let mut conn = edge.core.redis.clone();
        let redis = redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        let amqp = if edge.core.amqp.status().connected() {
            Ok(())
        } else {
            Err("not connected".to_string())
        };
        vec![("redis", redis), ("rabbitmq", amqp)]
    };
    let checks = tokio::time::timeout(Duration::from_secs(3), checks)
        .await
        .unwrap_or_else(|_| vec![("timeout", Err("checks timed out".into()))]);
    let ok = checks.iter().all(|(_, r)| r.is_ok());
    let body: serde_json::Map<String, Value> = checks
        .into_iter()
        .map(|(k, r)| (k.to_string(), json!(r.err().unwrap_or_else(|| "ok".into()))))
        .collect();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics_text(State(edge): State<Arc<Edge>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        edge.metrics.render(&[]),
    )
        .into_response()
}
