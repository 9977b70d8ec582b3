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
use capture::CaptureError;
use ledger_core::{Credits, LedgerError, QueryError};
use ledger_store::StoreError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Unauthorized - Invalid or missing API key")]
    Unauthorized,
    #[error("Invalid email or password")]
    BadLogin,
    /// A session cookie without the proof of intent the call needs (ADR 5): 401
    /// `CSRF_TOKEN_REQUIRED`, the message saying what to send instead.
    #[error("{0}")]
    Unproven(String),
    /// A signed URL that does not prove its key (ADR 11): 401 with `code`
    /// (`INVALID_SIGNATURE`, `SIGNATURE_EXPIRED`), the message saying what to fix.
    #[error("{message}")]
    BadSignature { code: &'static str, message: String },
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
    /// A plan that charges extra is at its hard limit (seed 002).
    #[error("Hard limit reached")]
    HardLimitReached { required: Credits, balance: Credits },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    Forbidden(String),
    /// Only an owner of the account may do this (purchases, the plan, the hard limit,
    /// auto top-up, members): 403 `OWNER_ONLY`.
    #[error("Only an owner of the account can do this; ask an owner (see GET /api/v1/members)")]
    OwnerOnly,
    /// A signup's invitation token that is unknown, used or expired: 400 `INVALID_INVITE`.
    #[error("{0}")]
    BadInvite(String),
    /// A known path without this method: 405 with `Allow` (the methods it has).
    #[error("{method} is not allowed on {path}; use {allow} (see /openapi.json)")]
    MethodNotAllowed {
        method: String,
        path: String,
        allow: String,
    },
    #[error("Request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("Too many failed logins; try again in {retry_after_secs} seconds")]
    TooManyAttempts { retry_after_secs: u64 },
    /// A credential or a client address over its rate (`[ratelimit]`, ADR 15): 429
    /// `RATE_LIMITED` with `Retry-After`.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    /// Every capture slot of the account is taken (`ratelimit.captures_per_account`): 429
    /// `CONCURRENCY_LIMITED` with `Retry-After`; nothing was charged.
    #[error(
        "This account already has {limit} captures running, the most it may run at once; \
         retry when one has finished (Retry-After). Nothing was charged"
    )]
    ConcurrencyLimited { limit: u32, retry_after_secs: u64 },
    #[error("{0}")]
    BadGateway(String),
    /// A dependency is down or not configured: 503 with `Retry-After` (seconds).
    #[error("{message}")]
    Unavailable {
        code: &'static str,
        message: String,
        retry_after_secs: u64,
    },
    /// `/healthz` while the database does not answer: 503 with the failing check.
    #[error(
        "Not ready: the database does not answer; try again in {DATABASE_RETRY_AFTER_SECS} seconds"
    )]
    NotReady,
    /// A capture that failed (or was refused) in the browser pool; nothing was charged.
    #[error("{}", capture_message(.0))]
    Capture(#[source] CaptureError),
    /// An answer stored for an `Idempotency-Key`, sent again as it was first sent.
    #[error("a stored answer (HTTP {status})")]
    Stored { status: u16, body: String },
    /// A 500 whose message is part of the contract (e.g. an unconfigured pack).
    #[error("{0}")]
    Misconfigured(String),
    /// Anything unexpected; the cause is logged (with its chain), never shown.
    #[error("internal: {message}")]
    Internal {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// What a client is told about a failed capture.
fn capture_message(e: &CaptureError) -> String {
    if e.is_safe_to_show() {
        format!("{e}; nothing was charged")
    } else {
        "The capture failed unexpectedly; nothing was charged. The x-request-id header identifies it in our logs".into()
    }
}

impl ApiError {
    /// 403 `OWNER_ONLY`: the caller is a member, not an owner, of the account.
    pub fn owner_only() -> ApiError {
        ApiError::OwnerOnly
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// A `409` with its `code`: the request conflicts with the state it met.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Conflict {
            code,
            message: message.into(),
        }
    }

    /// An unexpected failure described by `cause` (a message, no error to chain).
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        ApiError::Internal {
            message: cause.to_string(),
            source: None,
        }
    }

    /// An unexpected failure caused by `e`, kept as the source so the log shows its chain.
    pub fn internal_from(e: impl std::error::Error + Send + Sync + 'static) -> ApiError {
        ApiError::Internal {
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }

    /// True for failures of something we call (a capture target, the browser, the payment
    /// provider), or a stored answer sent again: logged as warnings, not as our errors.
    pub fn is_upstream(&self) -> bool {
        matches!(
            self,
            ApiError::Capture(_) | ApiError::BadGateway(_) | ApiError::Stored { .. }
        )
    }

    /// The error and every cause under it, `outer: inner: ...`, for the log.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            let shown = e.to_string();
            if !text.ends_with(&shown) {
                text.push_str(": ");
                text.push_str(&shown);
            }
            cause = e.source();
        }
        text
    }

    /// The machine-readable code of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized | ApiError::BadLogin => "UNAUTHORIZED",
            ApiError::Unproven(_) => "CSRF_TOKEN_REQUIRED",
            ApiError::BadSignature { code, .. } => code,
            ApiError::UserNotFound | ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Invalid { .. } => "INVALID_REQUEST",
            ApiError::InsufficientCredits { .. } => "INSUFFICIENT_CREDITS",
            ApiError::HardLimitReached { .. } => "HARD_LIMIT_REACHED",
            ApiError::Conflict { code, .. } => code,
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::OwnerOnly => "OWNER_ONLY",
            ApiError::BadInvite(_) => "INVALID_INVITE",
            ApiError::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            ApiError::TooLarge { .. } => "PAYLOAD_TOO_LARGE",
            ApiError::TooManyAttempts { .. } => "TOO_MANY_ATTEMPTS",
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::ConcurrencyLimited { .. } => "CONCURRENCY_LIMITED",
            ApiError::BadGateway(_) => "PAYMENT_PROVIDER_ERROR",
            ApiError::Unavailable { code, .. } => code,
            ApiError::NotReady => "DATABASE_UNAVAILABLE",
            ApiError::Capture(e) => e.code(),
            ApiError::Stored { .. } => "STORED",
            ApiError::Misconfigured(_) | ApiError::Internal { .. } => "INTERNAL",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized
            | ApiError::BadLogin
            | ApiError::Unproven(_)
            | ApiError::BadSignature { .. } => StatusCode::UNAUTHORIZED,
            ApiError::UserNotFound | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Invalid { .. } | ApiError::BadInvite(_) => StatusCode::BAD_REQUEST,
            ApiError::InsufficientCredits { .. } | ApiError::HardLimitReached { .. } => {
                StatusCode::PAYMENT_REQUIRED
            }
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Forbidden(_) | ApiError::OwnerOnly => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyAttempts { .. }
            | ApiError::RateLimited { .. }
            | ApiError::ConcurrencyLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable { .. } | ApiError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Capture(e) => {
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            ApiError::Stored { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            ApiError::Misconfigured(_) | ApiError::Internal { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after_secs() {
            res.insert_header(("retry-after", secs.to_string()));
        }
        if let ApiError::MethodNotAllowed { allow, .. } = self {
            res.insert_header((actix_web::http::header::ALLOW, allow.clone()));
        }
        match self {
            ApiError::Stored { body, .. } => {
                res.content_type("application/json").body(body.clone())
            }
            other => res.json(other.body()),
        }
    }
}

impl ApiError {
    /// Seconds the client is asked to wait before trying again (`Retry-After`).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::TooManyAttempts { retry_after_secs }
            | ApiError::RateLimited {
                retry_after_secs, ..
            }
            | ApiError::ConcurrencyLimited {
                retry_after_secs, ..
            }
            | ApiError::Unavailable {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            ApiError::Capture(e) => e.retry_after_secs(),
            ApiError::NotReady => Some(DATABASE_RETRY_AFTER_SECS),
            _ => None,
        }
    }

    /// The JSON body of the answer (also what is stored for an idempotent replay).
    pub fn body(&self) -> serde_json::Value {
        match self {
            ApiError::InsufficientCredits { required, balance } => json!({
                "error": "Insufficient credits",
                "code": self.code(),
                "required": required,
                "balance": balance,
            }),
            ApiError::HardLimitReached { required, balance } => json!({
                "error": "Hard limit reached",
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
            ApiError::NotReady => json!({
                "status": "unavailable",
                "error": self.to_string(),
                "code": self.code(),
                "checks": { "database": { "ok": false, "error": "does not answer" } },
            }),
            ApiError::Stored { body, .. } => {
                serde_json::from_str(body).unwrap_or_else(|_| json!({ "error": body }))
            }
            ApiError::Internal { .. } => json!({
                "error": "Internal server error; the x-request-id header identifies this failure in our logs",
                "code": self.code(),
            }),
            // The contract's exact bodies.
            ApiError::Unauthorized | ApiError::UserNotFound | ApiError::Misconfigured(_) => {
                json!({ "error": self.to_string() })
            }
            other => json!({ "error": other.to_string(), "code": other.code() }),
        }
    }
}

/// A query parameter or capture option that failed validation (`ledger_core::QueryError`
/// and `capture::OptionError` are both this type): the usual 400 naming the field.
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
            StoreError::EmailTaken { .. } => ApiError::conflict(
                "EMAIL_TAKEN",
                "An account with this email already exists; log in instead",
            ),
            StoreError::IdempotencyConflict { key } => ApiError::conflict(
                "IDEMPOTENCY_CONFLICT",
                format!(
                    "Idempotency-Key `{key}` was already used with a different request; use a new key for a new request"
                ),
            ),
            StoreError::Refused(rule) => ApiError::from(rule),
            other => ApiError::internal_from(other),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> ApiError {
        let message = e.to_string();
        match e {
            LedgerError::InsufficientCredits {
                required,
                available,
            } => ApiError::InsufficientCredits {
                required,
                balance: available,
            },
            LedgerError::HardLimitReached {
                required,
                available,
            } => ApiError::HardLimitReached {
                required,
                balance: available,
            },
            LedgerError::InvalidAmount { reason } => ApiError::invalid("amount", reason),
            LedgerError::BalanceLimit { .. } | LedgerError::CaptureExceedsHold { .. } => {
                ApiError::invalid("amount", message)
            }
            LedgerError::HoldNotFound { hold_id } => {
                ApiError::NotFound(format!("Hold {hold_id} not found"))
            }
            LedgerError::EntryNotFound { entry_id } => {
                ApiError::NotFound(format!("Transaction {entry_id} not found"))
            }
            LedgerError::HoldSettled { .. } => ApiError::conflict("HOLD_SETTLED", message),
            LedgerError::NotRefundable { .. } => ApiError::conflict("NOT_REFUNDABLE", message),
            LedgerError::RefundExceedsCharge { .. } => {
                ApiError::conflict("REFUND_EXCEEDS_CHARGE", message)
            }
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> ApiError {
        ApiError::internal_from(e)
    }
}

impl From<CaptureError> for ApiError {
    fn from(e: CaptureError) -> ApiError {
        ApiError::Capture(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the query failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_500_keeps_its_cause_chain_and_shows_none_of_it() {
        let e = ApiError::internal_from(Outer(std::io::Error::other("disk full")));
        assert_eq!(e.chain(), "internal: the query failed: disk full");
        assert_eq!(e.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = e.body().to_string();
        assert!(!body.contains("disk") && !body.contains("query"), "{body}");
    }

    #[test]
    fn a_capture_failure_says_nothing_was_charged() {
        let e = ApiError::from(CaptureError::Busy {
            retry_after_secs: 3,
        });
        assert_eq!(e.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.retry_after_secs(), Some(3));
        assert_eq!(e.body()["code"], "BUSY");
        assert!(e.body()["error"]
            .as_str()
            .unwrap()
            .ends_with("; nothing was charged"));
    }
}
