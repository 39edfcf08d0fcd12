//! The service-layer error: everything a use case can fail with, each mapped to a stable code.

use uphub_domain::error::ErrorCode;
use uphub_domain::identity::{InvalidInput, RoleChangeError};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(#[from] InvalidInput),
    #[error("not found")]
    NotFound,
    #[error("{message}")]
    Conflict {
        field: Option<&'static str>,
        message: String,
    },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("sold out: not enough stock of SKU {sku}")]
    SoldOut { sku: uuid::Uuid },
    #[error("rate limited; retry after {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    /// A payment provider timed out, failed (5xx) or rate limited us. Nothing half-written: a
    /// retry with the same idempotency key resumes.
    #[error("{provider} is unavailable right now; retry with the same idempotency key")]
    UpstreamUnavailable { provider: &'static str },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::Invalid(_) => ErrorCode::Validation,
            ServiceError::NotFound => ErrorCode::NotFound,
            ServiceError::Conflict { .. } => ErrorCode::Conflict,
            ServiceError::Forbidden(_) => ErrorCode::Forbidden,
            ServiceError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            ServiceError::InvalidCredentials => ErrorCode::InvalidCredentials,
            ServiceError::SoldOut { .. } => ErrorCode::SoldOut,
            ServiceError::RateLimited { .. } => ErrorCode::RateLimited,
            ServiceError::UpstreamUnavailable { .. } => ErrorCode::UpstreamUnavailable,
            ServiceError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The input field the error is about, for `userErrors.field`.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ServiceError::Invalid(i) => Some(i.field),
            ServiceError::Conflict { field, .. } => *field,
            _ => None,
        }
    }

    /// Errors a client can fix by changing its input; mutations return these as `userErrors`.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            ServiceError::Invalid(_)
                | ServiceError::NotFound
                | ServiceError::Conflict { .. }
                | ServiceError::InvalidCredentials
                | ServiceError::SoldOut { .. }
        )
    }

    pub fn conflict(field: &'static str, message: impl Into<String>) -> Self {
        ServiceError::Conflict {
            field: Some(field),
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ServiceError::Forbidden(message.into())
    }
}

impl From<sea_orm::DbErr> for ServiceError {
    fn from(e: sea_orm::DbErr) -> Self {
        ServiceError::Internal(anyhow::Error::new(e).context("database"))
    }
}

impl From<redis::RedisError> for ServiceError {
    fn from(e: redis::RedisError) -> Self {
        ServiceError::Internal(anyhow::Error::new(e).context("redis"))
    }
}

impl From<RoleChangeError> for ServiceError {
    fn from(e: RoleChangeError) -> Self {
        match e {
            RoleChangeError::NeedsOwner | RoleChangeError::SelfChange => {
                ServiceError::Forbidden(e.to_string())
            }
            RoleChangeError::Empty | RoleChangeError::LastOwner => ServiceError::Conflict {
                field: Some("roles"),
                message: e.to_string(),
            },
        }
    }
}
