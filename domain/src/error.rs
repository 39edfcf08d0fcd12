//! The one table of stable error codes every layer maps its errors onto.

/// A stable, client-visible error code. Clients switch on these strings, so a code is never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    Validation,
    Conflict,
    RateLimited,
    QueryTooComplex,
    QueryTooDeep,
    TooManyAliases,
    BatchTooLarge,
    PayloadTooLarge,
    UnsupportedMediaType,
    GraphqlParseFailed,
    GraphqlValidationFailed,
    Timeout,
    InvalidCredentials,
    SoldOut,
    CampaignNotStarted,
    CampaignEnded,
    /// A provider we depend on (payment platform) timed out or failed; retry with the same key.
    UpstreamUnavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, in table order; a test pins the strings.
    pub const ALL: [ErrorCode; 22] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::Validation,
        ErrorCode::Conflict,
        ErrorCode::RateLimited,
        ErrorCode::QueryTooComplex,
        ErrorCode::QueryTooDeep,
        ErrorCode::TooManyAliases,
        ErrorCode::BatchTooLarge,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::GraphqlParseFailed,
        ErrorCode::GraphqlValidationFailed,
        ErrorCode::Timeout,
        ErrorCode::InvalidCredentials,
        ErrorCode::SoldOut,
        ErrorCode::CampaignNotStarted,
        ErrorCode::CampaignEnded,
        ErrorCode::UpstreamUnavailable,
        ErrorCode::Internal,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Validation => "VALIDATION",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::QueryTooComplex => "QUERY_TOO_COMPLEX",
            ErrorCode::QueryTooDeep => "QUERY_TOO_DEEP",
            ErrorCode::TooManyAliases => "TOO_MANY_ALIASES",
            ErrorCode::BatchTooLarge => "BATCH_TOO_LARGE",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::GraphqlParseFailed => "GRAPHQL_PARSE_FAILED",
            ErrorCode::GraphqlValidationFailed => "GRAPHQL_VALIDATION_FAILED",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::InvalidCredentials => "INVALID_CREDENTIALS",
            ErrorCode::SoldOut => "SOLD_OUT",
            ErrorCode::CampaignNotStarted => "CAMPAIGN_NOT_STARTED",
            ErrorCode::CampaignEnded => "CAMPAIGN_ENDED",
            ErrorCode::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// The HTTP status used when the error ends a request before GraphQL execution.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::GraphqlParseFailed
            | ErrorCode::GraphqlValidationFailed
            | ErrorCode::BatchTooLarge
            | ErrorCode::Validation => 400,
            ErrorCode::Unauthenticated | ErrorCode::InvalidCredentials => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict
            | ErrorCode::SoldOut
            | ErrorCode::CampaignNotStarted
            | ErrorCode::CampaignEnded => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::RateLimited => 429,
            ErrorCode::QueryTooComplex | ErrorCode::QueryTooDeep | ErrorCode::TooManyAliases => 400,
            ErrorCode::Timeout => 504,
            ErrorCode::UpstreamUnavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_screaming_snake_strings() {
        let strings: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            strings,
            [
                "BAD_REQUEST",
                "UNAUTHENTICATED",
                "FORBIDDEN",
                "NOT_FOUND",
                "VALIDATION",
                "CONFLICT",
                "RATE_LIMITED",
                "QUERY_TOO_COMPLEX",
                "QUERY_TOO_DEEP",
                "TOO_MANY_ALIASES",
                "BATCH_TOO_LARGE",
                "PAYLOAD_TOO_LARGE",
                "UNSUPPORTED_MEDIA_TYPE",
                "GRAPHQL_PARSE_FAILED",
                "GRAPHQL_VALIDATION_FAILED",
                "TIMEOUT",
                "INVALID_CREDENTIALS",
                "SOLD_OUT",
                "CAMPAIGN_NOT_STARTED",
                "CAMPAIGN_ENDED",
                "UPSTREAM_UNAVAILABLE",
                "INTERNAL",
            ]
        );
    }
}
