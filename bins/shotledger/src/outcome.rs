//! What a command answers ([`Report`]) or why it could not ([`Failure`]), and the one
//! place that decides which errors exit 1 and which exit 2.

use actix_web::ResponseError;
use api_server::error::ApiError;
use ledger_store::StoreError;
use payments::PaymentsError;
use webhook_receiver::ReceiverError;

/// The command ran and found a failure (`verify` with violations, `migrate --check` with
/// pending migrations, a refused grant, an unknown account or key).
pub const FAILED: u8 = 1;
/// Usage, configuration or database errors.
pub const USAGE: u8 = 2;

/// What a command printed: `json` with `--json`, `human` otherwise; its exit code.
#[derive(Debug)]
pub struct Report {
    pub json: serde_json::Value,
    pub human: String,
    pub code: u8,
}

impl Report {
    /// A report of a command that succeeded (exit 0).
    pub fn ok(json: serde_json::Value, human: String) -> Report {
        Report {
            json,
            human,
            code: 0,
        }
    }

    /// The same report, exiting 1.
    pub fn failed(self) -> Report {
        Report {
            code: FAILED,
            ..self
        }
    }
}

/// Why a command could not answer: the message for stderr, and its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// Exit 2: usage, configuration or database.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: USAGE,
            message: message.into(),
        }
    }

    /// Exit 1: the command ran and found a failure.
    pub fn failed(message: impl Into<String>) -> Failure {
        Failure {
            code: FAILED,
            message: message.into(),
        }
    }
}

/// A store error: a refusal about the data asked for (unknown account, conflicting
/// idempotency key, taken email, a ledger rule) exits 1; anything about reaching or
/// reading the database exits 2.
impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        match e {
            StoreError::AccountNotFound { .. }
            | StoreError::HoldNotFound { .. }
            | StoreError::EntryNotFound { .. }
            | StoreError::EmailTaken { .. }
            | StoreError::IdempotencyConflict { .. }
            | StoreError::Refused(_) => Failure::failed(e.to_string()),
            other => Failure::usage(other.to_string()),
        }
    }
}

/// An error of the api-server's service code, by the status the API would answer: a
/// 400 names the flag to fix (exit 2); another 4xx is a refusal (exit 1); a 5xx is the
/// database or the configuration (exit 2).
impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Failure {
        let status = e.status_code().as_u16();
        if let ApiError::Invalid {
            field: Some(field),
            message,
        } = &e
        {
            return Failure::usage(format!("{}: {message}", flag_of(field)));
        }
        match status {
            400 => Failure::usage(e.to_string()),
            401..=499 => Failure::failed(e.to_string()),
            _ => Failure::usage(match e {
                ApiError::Internal { message, .. } => format!("internal error: {message}"),
                other => other.to_string(),
            }),
        }
    }
}

/// The command-line name of a field the api-server's service code names.
fn flag_of(field: &str) -> &str {
    match field {
        "email" => "--email",
        "password" => "--password",
        "description" => "--reason",
        "amount" => "AMOUNT",
        "Idempotency-Key" => "--idempotency-key",
        other => other,
    }
}

/// A failure of `reconcile`: Polar not answering as it should exits 1; the
/// configuration or the database exits 2.
impl From<ReceiverError> for Failure {
    fn from(e: ReceiverError) -> Failure {
        match e {
            ReceiverError::Store(s) => s.into(),
            ReceiverError::Payments(p) => p.into(),
            other => Failure::usage(other.to_string()),
        }
    }
}

impl From<PaymentsError> for Failure {
    fn from(e: PaymentsError) -> Failure {
        match e {
            PaymentsError::Store(s) => s.into(),
            PaymentsError::Provider { .. } => Failure::failed(e.to_string()),
            other => Failure::usage(other.to_string()),
        }
    }
}
