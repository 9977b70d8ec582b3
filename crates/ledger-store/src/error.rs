//! The store's one error type.

use ledger_core::{AccountId, EntryId, HoldId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `database.url` is unusable; the message says how to fix it.
    #[error("database.url: {reason}")]
    BadUrl { reason: String },
    #[error("account {account_id} not found")]
    AccountNotFound { account_id: AccountId },
    #[error("hold {hold_id} not found")]
    HoldNotFound { hold_id: HoldId },
    #[error("transaction {entry_id} not found")]
    EntryNotFound { entry_id: EntryId },
    #[error("an account with email {email} already exists")]
    EmailTaken { email: String },
    /// The same idempotency key was used with a different request.
    #[error("Idempotency-Key `{key}` was already used with a different request")]
    IdempotencyConflict { key: String },
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("database connection error: {0}")]
    Connection(#[from] diesel::ConnectionError),
    #[error("connection pool error: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("migration error: {reason}")]
    Migration { reason: String },
    /// A stored row does not decode: the database was changed behind the store's back.
    #[error("corrupt row: {reason}")]
    Corrupt { reason: String },
}

impl StoreError {
    pub(crate) fn corrupt(reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            reason: reason.into(),
        }
    }
}
