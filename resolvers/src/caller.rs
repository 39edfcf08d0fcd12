//! The per-request caller and the mapping of service errors onto GraphQL errors.

use async_graphql::{Context, ErrorExtensions, SimpleObject};
use uphub_services::{Core, ServiceError};
use uphub_tenants::RequestCtx;

/// Put into every request's data by the HTTP layer.
#[derive(Debug, Clone)]
pub struct Caller {
    pub ctx: Option<RequestCtx>,
    pub request_id: String,
    pub ip: String,
}

/// A problem the client can fix, returned in a mutation payload.
#[derive(Debug, Clone, SimpleObject)]
pub struct UserError {
    /// The input field at fault, when there is one.
    pub field: Option<String>,
    /// A stable code from the error-code table.
    pub code: String,
    pub message: String,
}

pub fn caller<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Caller> {
    ctx.data::<Caller>().map_err(|_| {
        gql_error(
            ServiceError::Internal(anyhow::anyhow!("caller missing")),
            "-",
        )
    })
}

pub fn core<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Core> {
    ctx.data::<Core>()
        .map_err(|_| gql_error(ServiceError::Internal(anyhow::anyhow!("core missing")), "-"))
}

/// The authenticated request context, or UNAUTHENTICATED.
pub fn authed<'a>(ctx: &Context<'a>) -> async_graphql::Result<(&'a Core, &'a RequestCtx)> {
    let c = caller(ctx)?;
    match &c.ctx {
        Some(r) => Ok((core(ctx)?, r)),
        None => Err(gql_error(
            ServiceError::Unauthenticated("authentication required".into()),
            &c.request_id,
        )),
    }
}

/// A top-level GraphQL error with `extensions.code`. INTERNAL hides its cause (logged here) and
/// carries the request id.
pub fn gql_error(e: ServiceError, request_id: &str) -> async_graphql::Error {
    let code = e.code();
    match &e {
        ServiceError::Internal(inner) => {
            tracing::error!(request_id, error = %format!("{inner:#}"), "internal error");
            async_graphql::Error::new("internal error").extend_with(|_, ext| {
                ext.set("code", code.as_str());
                ext.set("requestId", request_id);
            })
        }
        ServiceError::RateLimited { retry_after_ms } => {
            let ms = *retry_after_ms;
            async_graphql::Error::new(e.to_string()).extend_with(move |_, ext| {
                ext.set("code", code.as_str());
                ext.set("retryAfterMs", ms);
            })
        }
        ServiceError::UpstreamUnavailable { provider } => {
            let provider = *provider;
            async_graphql::Error::new(e.to_string()).extend_with(move |_, ext| {
                ext.set("code", code.as_str());
                ext.set("retryable", true);
                ext.set("provider", provider);
            })
        }
        _ => async_graphql::Error::new(e.to_string()).extend_with(|_, ext| {
            ext.set("code", code.as_str());
        }),
    }
}

/// Maps a service result for a query field.
pub fn field<T>(ctx: &Context<'_>, r: Result<T, ServiceError>) -> async_graphql::Result<T> {
    r.map_err(|e| gql_error(e, &request_id(ctx)))
}

pub fn request_id(ctx: &Context<'_>) -> String {
    ctx.data::<Caller>()
        .map(|c| c.request_id.clone())
        .unwrap_or_default()
}

/// Splits a mutation's outcome: user errors go into the payload, the rest become top-level errors.
pub fn user_errors<T>(
    ctx: &Context<'_>,
    r: Result<T, ServiceError>,
) -> async_graphql::Result<(Option<T>, Vec<UserError>)> {
    match r {
        Ok(v) => Ok((Some(v), vec![])),
        Err(e) if e.is_user_error() => Ok((
            None,
            vec![UserError {
                field: e.field().map(str::to_string),
                code: e.code().as_str().to_string(),
                message: e.to_string(),
            }],
        )),
        Err(e) => Err(gql_error(e, &request_id(ctx))),
    }
}

/// Decodes a global ID of `kind`; a malformed or mistyped ID is NOT_FOUND like a missing one.
pub fn decode_id(kind: &str, id: &async_graphql::ID) -> Result<uuid::Uuid, ServiceError> {
    uphub_domain::gid::decode(kind, id.as_str())
        .and_then(|s| uuid::Uuid::try_parse(&s).ok())
        .ok_or(ServiceError::NotFound)
}

pub fn encode_id(kind: &str, id: uuid::Uuid) -> async_graphql::ID {
    async_graphql::ID(uphub_domain::gid::encode(kind, id))
}

pub fn page_args(
    first: Option<i32>,
    after: Option<String>,
) -> Result<uphub_services::page::PageArgs, ServiceError> {
    Ok(uphub_services::page::PageArgs::parse(
        first,
        after.as_deref(),
    )?)
}
