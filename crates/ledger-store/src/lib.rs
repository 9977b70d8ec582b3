//! # ledger-store
//!
//! The rules of `ledger-core`, made durable with Diesel over an embedded SQLite file
//! (the default) or PostgreSQL (for many api-server processes).
//!
//! Every ledger operation is one database transaction that:
//! 1. locks the account row (`UPDATE accounts SET version = version + 1`), which orders
//!    every writer of that account, across threads and processes, on both backends;
//! 2. answers from the idempotency table when the key was seen before;
//! 3. loads the account's open grants and active holds into a [`ledger_core::Book`],
//!    settles expiries, applies the operation, and writes the resulting changeset
//!    (entries are only ever inserted).
//!
//! Step 3 works on a connection that is already inside a transaction, so many callers'
//! operations can share one transaction ([`Store::apply_batch`]).

mod access;
mod db;
mod error;
mod ids;
mod ledger;
mod maintenance;
pub mod payments;
mod rows;
mod schema;
mod screenshots;

pub use access::{ApiKey, Subscription, SUBSCRIPTION_STATUSES};
pub use db::{
    revert_all_migrations, run_migrations, Backend, DatabaseUrl, DbConnection, PoolOptions,
    POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS,
};
pub use error::StoreError;
pub use ids::{new_id, RandomIds};
pub use ledger::{
    Account, Applied, Balance, BatchItem, Idempotency, NewAccount, Operation, Outcome, Spend,
};
pub use maintenance::{CompactReport, VerifyReport, Violation};
pub use payments::after_charge;
pub use screenshots::{Claim, ScreenshotAnswer};

use std::sync::{Arc, Mutex, MutexGuard};

/// The ledger on a database. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Store {
    pool: db::Pool,
    backend: Backend,
    /// SQLite has one writer at a time; writers of this process queue here instead of
    /// spinning on the file lock (other processes still wait on `busy_timeout`).
    write_gate: Option<Arc<Mutex<()>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Store {
    /// Opens (and migrates) the database `url` names.
    pub fn open(url: &str, options: &PoolOptions) -> Result<Store, StoreError> {
        let url = DatabaseUrl::parse(url)?;
        let pool = db::connect(&url, options)?;
        Ok(Store {
            pool,
            backend: url.backend(),
            write_gate: (url.backend() == Backend::Sqlite).then(|| Arc::new(Mutex::new(()))),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A pooled connection, for callers that run their own queries (tests, tools).
    pub fn connection(&self) -> Result<db::PooledConnection, StoreError> {
        Ok(self.pool.get()?)
    }

    fn write_gate(&self) -> Option<MutexGuard<'_, ()>> {
        self.write_gate
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// The write gate if it is free now (`Some(None)`: there is no gate, PostgreSQL);
    /// `None` when another writer of this process holds it.
    fn try_write_gate(&self) -> Option<Option<MutexGuard<'_, ()>>> {
        match &self.write_gate {
            None => Some(None),
            Some(m) => match m.try_lock() {
                Ok(g) => Some(Some(g)),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(Some(p.into_inner())),
                Err(std::sync::TryLockError::WouldBlock) => None,
            },
        }
    }

    /// Runs raw SQL statements (tests that need to change the database behind the
    /// store's back, e.g. to make a table refuse writes).
    #[cfg(feature = "test-support")]
    pub fn execute_batch(&self, sql: &str) -> Result<(), StoreError> {
        use diesel::connection::SimpleConnection;
        (*self.connection()?).batch_execute(sql)?;
        Ok(())
    }

    /// Whether the database answers.
    pub fn ping(&self) -> Result<(), StoreError> {
        use diesel::connection::SimpleConnection;
        (*self.connection()?).batch_execute("SELECT 1")?;
        Ok(())
    }
}
