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
    Database(DatabaseError),
    #[error("database connection error: {0}")]
    Connection(ConnectionError),
    #[error("connection pool error: {0}")]
    Pool(PoolError),
    /// The database cannot be reached or does not answer; the reason names it.
    #[error("database unavailable: {reason}")]
    Unavailable { reason: String },
    /// An SQLite file this process cannot write.
    #[error(
        "cannot write the SQLite database {path}: {reason}; check that this user may write the file and its folder, that the file is not immutable (lsattr) and not on a read-only mount"
    )]
    Unwritable { path: String, reason: String },
    /// A rule of the ledger refused an operation the store was carrying out for a caller
    /// that is not an operation of its own (a paid order). Nothing was changed.
    #[error("the ledger refused it: {0}")]
    Refused(ledger_core::LedgerError),
    #[error("migration error: {reason}")]
    Migration { reason: String },
    /// A stored row does not decode: the database was changed behind the store's back.
    #[error("corrupt row: {reason}")]
    Corrupt { reason: String },
    /// A backup that could not be made; the reason says what to fix. Nothing was left
    /// behind at the destination.
    #[error("backup: {reason}")]
    Backup { reason: String },
}

/// Wraps an error of the database driver, so that no driver type is part of the store's
/// API (callers see its message, and `std::error::Error::source`).
macro_rules! opaque_error {
    ($(#[$doc:meta])* $variant:ident: $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name(pub(crate) $inner);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::error::Error for $name {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }

        impl From<$inner> for StoreError {
            fn from(e: $inner) -> StoreError {
                StoreError::$variant(e.into())
            }
        }

        impl From<$inner> for $name {
            fn from(e: $inner) -> $name {
                $name(e)
            }
        }
    };
}

opaque_error!(
    /// A query or transaction failed.
    Database: DatabaseError(diesel::result::Error)
);
opaque_error!(
    /// A connection could not be established.
    Connection: ConnectionError(diesel::ConnectionError)
);
opaque_error!(
    /// The pool gave no connection.
    Pool: PoolError(r2d2::Error)
);

impl StoreError {
    /// Whether a unique index refused the write (a concurrent insert of the same key).
    pub(crate) fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            StoreError::Database(DatabaseError(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _
            )))
        )
    }

    /// Whether the failure is the database's being unreachable, down or unable to write
    /// for now (a retry later may succeed), rather than a fault of the request or a bug.
    pub fn is_unavailable(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            StoreError::Pool(_)
            | StoreError::Unavailable { .. }
            | StoreError::Unwritable { .. }
            | StoreError::Connection(_) => true,
            StoreError::Database(DatabaseError(Error::DatabaseError(kind, info))) => {
                matches!(
                    kind,
                    DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand
                ) || storage_fault(info.message())
            }
            StoreError::Database(DatabaseError(Error::BrokenTransactionManager)) => true,
            _ => false,
        }
    }

    /// Errors the write path returns before it writes anything of the operation (an
    /// unknown account, hold or entry; an idempotency conflict): the caller's answer, not
    /// a reason to roll back the other operations of its transaction.
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(
            self,
            StoreError::AccountNotFound { .. }
                | StoreError::HoldNotFound { .. }
                | StoreError::EntryNotFound { .. }
                | StoreError::IdempotencyConflict { .. }
        )
    }

    pub(crate) fn corrupt(reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            reason: reason.into(),
        }
    }
}

/// SQLite's (and PostgreSQL's) messages for a database that cannot take writes right now.
fn storage_fault(message: &str) -> bool {
    const FAULTS: [&str; 8] = [
        "attempt to write a readonly database",
        "disk I/O error",
        "database or disk is full",
        "database is locked",
        "unable to open database file",
        "read-only transaction",
        "server closed the connection",
        "terminating connection",
    ];
    FAULTS.iter().any(|f| message.contains(f))
}
