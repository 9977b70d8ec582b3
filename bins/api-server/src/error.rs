//! `ApiError`: the one place where failures become HTTP answers.
//!
//! Policy:
//! - every answer is JSON with at least `{"error": "..."}` saying what went wrong and what
//!   to do, plus a stable `code` where the contract names one;
//! - 4xx answers say exactly what to fix (the field, the allowed range);
//! - a 500 shows nothing of its cause: the cause is logged with the request id by the
//!   request-id middleware, and the client sees the id in `x-request-id`;
//! - a database that cannot be reached, does not answer within
//!   `database.acquire_timeout_secs`, or cannot take writes for now is a 503
//!   `DATABASE_UNAVAILABLE` with `Retry-After` (the cause is logged, never shown);
//! - ledger rules map to: insufficient credits → 402, settled holds and over-refunds →
//!   409, invalid amounts → 400; store "not found"s → 404; idempotency conflicts → 409.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use ledger_core::{Credits, LedgerError, QueryError};
use ledger_store::StoreError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Unauthorized - Invalid or missing API key")]
    Unauthorized,
    #[error("Invalid email or password")]
    BadLogin,
    #[error("User not found")]
    UserNotFound,
    #[error("{0}")]
    NotFound(String),
    /// A malformed request: `field` names what to fix.
    #[error("{message}")]
    Invalid {
        field: Option<String>,
        message: String,
    },
    #[error("Insufficient credits")]
    InsufficientCredits { required: Credits, balance: Credits },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    Forbidden(String),
    #[error("Request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("Too many failed logins; try again in {retry_after_secs} seconds")]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("{0}")]
    BadGateway(String),
    /// A dependency is down or not configured: 503 with `Retry-After` (seconds).
    #[error("{message}")]
    Unavailable {
        code: &'static str,
        message: String,
        retry_after_secs: u64,
    },
    /// A 500 whose message is part of the contract (e.g. an unconfigured pack).
    #[error("{0}")]
    Misconfigured(String),
    /// Anything unexpected; the cause is logged, never shown.
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(cause.to_string())
    }

    /// The machine-readable code of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized | ApiError::BadLogin => "UNAUTHORIZED",
            ApiError::UserNotFound | ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Invalid { .. } => "INVALID_REQUEST",
            ApiError::InsufficientCredits { .. } => "INSUFFICIENT_CREDITS",
            ApiError::Conflict { code, .. } => code,
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::TooLarge { .. } => "PAYLOAD_TOO_LARGE",
            ApiError::TooManyAttempts { .. } => "TOO_MANY_ATTEMPTS",
            ApiError::BadGateway(_) => "PAYMENT_PROVIDER_ERROR",
            ApiError::Unavailable { code, .. } => code,
            ApiError::Misconfigured(_) | ApiError::Internal(_) => "INTERNAL",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized | ApiError::BadLogin => StatusCode::UNAUTHORIZED,
            ApiError::UserNotFound | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::InsufficientCredits { .. } => StatusCode::PAYMENT_REQUIRED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Misconfigured(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let body = match self {
            ApiError::InsufficientCredits { required, balance } => json!({
                "error": "Insufficient credits",
                "code": self.code(),
                "required": required,
                "balance": balance,
            }),
            ApiError::Invalid { field, message } => json!({
                "error": message,
                "message": message,
                "code": self.code(),
                "field": field,
            }),
            ApiError::Internal(_) => json!({
                "error": "Internal server error; the x-request-id header identifies this failure in our logs",
                "code": self.code(),
            }),
            // The contract's exact bodies.
            ApiError::Unauthorized | ApiError::UserNotFound | ApiError::Misconfigured(_) => {
                json!({ "error": self.to_string() })
            }
            other => json!({ "error": other.to_string(), "code": other.code() }),
        };
        let mut res = HttpResponse::build(self.status_code());
        if let ApiError::TooManyAttempts { retry_after_secs }
        | ApiError::Unavailable {
            retry_after_secs, ..
        } = self
        {
            res.insert_header(("retry-after", retry_after_secs.to_string()));
        }
        res.json(body)
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        ApiError::invalid(e.field(), e.message())
    }
}

/// Seconds a client is asked to wait after the database was unavailable.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 5;

impl ApiError {
    /// The 503 for a database that is down or cannot take writes for now.
    pub fn database_unavailable() -> ApiError {
        ApiError::Unavailable {
            code: "DATABASE_UNAVAILABLE",
            message: format!(
                "The database is unavailable; try again in {DATABASE_RETRY_AFTER_SECS} seconds"
            ),
            retry_after_secs: DATABASE_RETRY_AFTER_SECS,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "the database is unavailable; answering 503");
            return ApiError::database_unavailable();
        }
        match e {
            StoreError::AccountNotFound { account_id } => ApiError::NotFound(format!("Account {account_id} not found")),
            StoreError::HoldNotFound { hold_id } => ApiError::NotFound(format!("Hold {hold_id} not found")),
            StoreError::EntryNotFound { entry_id } => ApiError::NotFound(format!("Transaction {entry_id} not found")),
            StoreError::EmailTaken { .. } => ApiError::Conflict {
                code: "EMAIL_TAKEN",
                message: "An account with this email already exists; log in instead".into(),
            },
            StoreError::IdempotencyConflict { key } => ApiError::Conflict {
                code: "IDEMPOTENCY_CONFLICT",
                message: format!(
                    "Idempotency-Key `{key}` was already used with a different request; use a new key for a new request"
                ),
            },
            StoreError::Refused(rule) => ApiError::from(rule),
            other => ApiError::internal(other),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> ApiError {
        match e {
            LedgerError::InsufficientCredits {
                required,
                available,
            } => ApiError::InsufficientCredits {
                required,
                balance: available,
            },
            LedgerError::InvalidAmount { reason } => ApiError::invalid("amount", reason),
            LedgerError::BalanceLimit { .. } => ApiError::invalid("amount", e.to_string()),
            LedgerError::HoldNotFound { hold_id } => {
                ApiError::NotFound(format!("Hold {hold_id} not found"))
            }
            LedgerError::HoldSettled { .. } => ApiError::Conflict {
                code: "HOLD_SETTLED",
                message: e.to_string(),
            },
            LedgerError::CaptureExceedsHold { .. } => ApiError::invalid("amount", e.to_string()),
            LedgerError::EntryNotFound { entry_id } => {
                ApiError::NotFound(format!("Transaction {entry_id} not found"))
            }
            LedgerError::NotRefundable { .. } => ApiError::Conflict {
                code: "NOT_REFUNDABLE",
                message: e.to_string(),
            },
            LedgerError::RefundExceedsCharge { .. } => ApiError::Conflict {
                code: "REFUND_EXCEEDS_CHARGE",
                message: e.to_string(),
            },
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> ApiError {
        ApiError::internal(e)
    }
}
