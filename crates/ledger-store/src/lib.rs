//! # ledger-store
//!
//! The rules of `ledger-core`, made durable with Diesel over an embedded SQLite file
//! (the default) or PostgreSQL (for many api-server processes).
//!
//! Every ledger operation runs in a database transaction that:
//! 1. locks the account row (`UPDATE accounts SET version = version + 1`), which orders
//!    every writer of that account, across threads and processes, on both backends;
//! 2. answers from the idempotency table when the key was seen before;
//! 3. loads the account's open grants and active holds into a [`ledger_core::Book`],
//!    settles expiries, applies the operation, and writes the resulting changeset
//!    (entries are only ever inserted).
//!
//! [`Ledger::apply`] group-commits (ADR 10): writer threads put every operation queued at
//! the same moment into one such transaction (each account locked once, its book kept
//! between operations and, while no one else writes the account, between transactions),
//! commit once, and only then answer. [`Ledger::apply_batch`] runs one such transaction on
//! the caller's thread, without kept books.
//!
//! The store is persistence only: the rules are `ledger-core`'s. Its API is one small
//! repository per area, each borrowing the [`Store`]: [`Store::ledger`], [`Store::access`],
//! [`Store::orders`] (payments), [`Store::plans`], [`Store::screenshots`], [`Store::notifications`] (outgoing webhooks)
//! and [`Store::maintenance`]. No
//! Diesel type (row, connection, table) leaves the crate.

mod access;
mod db;
mod engine;
mod error;
mod ids;
mod ledger;
mod maintenance;
mod members;
mod notifications;
mod observe;
mod orders;
mod outcome;
pub mod payments;
mod plans;
mod rows;
mod schema;
mod screenshots;

pub use access::{Access, ApiKey, KeyBy, KeyCaller, NewApiKey, Subscription};
/// A raw connection, for the migration tests only (not API: nothing outside the crate
/// names Diesel).
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub use db::DbConnection;
pub use db::{
    all_migrations, revert_all_migrations, run_migrations, Backend, DatabaseUrl, PoolOptions,
    POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS,
};
pub use engine::WriteStats;
pub use error::{ConnectionError, DatabaseError, PoolError, StoreError};
pub use ids::{new_id, RandomIds};
pub use ledger::{Account, Applied, Balance, BatchItem, Idempotency, Ledger, NewAccount};
/// The operation types are the core's; re-exported under their old names here.
pub use ledger_core::{Operation, Outcome, Spend};
pub use maintenance::{
    BackupReport, CompactReport, Maintenance, PruneReport, VerifyReport, Violation,
};
pub use members::{Holder, Invite, Login, Member, MemberRefusal, Members, MEMBER_PREFIX};
pub use notifications::{Attempt, Claimed, Delivery, DeliveryStatus, Endpoint, Notifications};
pub use observe::{operation_kind, NoObserver, OperationOutcome, PoolStats, StoreObserver};
pub use orders::Orders;
pub use plans::{
    ManagedBy, OverageItem, OverageStatus, PlanRefusal, PlanSubscription, Plans, ProviderApplied,
    ProviderUpdate,
};
pub use screenshots::{Claim, ScreenshotAnswer, Screenshots};

use std::sync::{Arc, Mutex, MutexGuard};

/// The ledger on a database. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Store {
    pool: db::Pool,
    backend: Backend,
    /// SQLite has one writer at a time; writers of this process queue here instead of
    /// spinning on the file lock (other processes still wait on `busy_timeout`).
    write_gate: Option<Arc<Mutex<()>>>,
    /// The group-committing writers of `Ledger::apply` (ADR 10).
    engine: Arc<engine::Engine>,
    /// Told of operations, batches and pool waits (the programs' metrics, ADR 14).
    observer: observe::Observer,
    max_connections: u32,
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
        Store::open_observed(url, options, Arc::new(NoObserver))
    }

    /// [`Store::open`], telling `observer` of every ledger operation, group commit and
    /// wait for a pooled connection from now on.
    pub fn open_observed(
        url: &str,
        options: &PoolOptions,
        observer: Arc<dyn StoreObserver>,
    ) -> Result<Store, StoreError> {
        let url = DatabaseUrl::parse(url)?;
        let pool = db::connect(&url, options, observe::PoolEvents(observer.clone()))?;
        Store::on_pool(&url, pool, options, observer)
    }

    /// Opens the database `url` names without migrating it (the operator CLI, which
    /// refuses to work on a database with [`Store::pending_migrations`] until
    /// [`Store::migrate`] ran). A SQLite file that does not exist is still created.
    pub fn open_without_migrating(url: &str, options: &PoolOptions) -> Result<Store, StoreError> {
        let url = DatabaseUrl::parse(url)?;
        let observer: Arc<dyn StoreObserver> = Arc::new(NoObserver);
        let pool =
            db::connect_without_migrating(&url, options, observe::PoolEvents(observer.clone()))?;
        Store::on_pool(&url, pool, options, observer)
    }

    /// The migrations not applied yet (folder names, oldest first); reads only.
    pub fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        db::pending_migrations(&mut *self.conn()?)
    }

    /// Applies every pending migration (one transaction under a database-wide lock, as
    /// [`Store::open`] does); the names of those it applied, oldest first.
    pub fn migrate(&self) -> Result<Vec<String>, StoreError> {
        let _gate = self.write_gate()?;
        db::run_migrations(&mut *self.conn()?)
    }

    fn on_pool(
        url: &DatabaseUrl,
        pool: db::Pool,
        options: &PoolOptions,
        observer: Arc<dyn StoreObserver>,
    ) -> Result<Store, StoreError> {
        let write_gate = (url.backend() == Backend::Sqlite).then(|| Arc::new(Mutex::new(())));
        let parts = engine::WriterParts {
            pool: pool.clone(),
            write_gate: write_gate.clone(),
            counts: Default::default(),
            observer: observer.clone(),
        };
        Ok(Store {
            pool,
            backend: url.backend(),
            write_gate,
            engine: Arc::new(engine::Engine::start(
                parts,
                url.backend(),
                options.max_connections,
            )?),
            observer,
            max_connections: options.max_connections.max(1),
        })
    }

    /// The connection pool now: its size, open and idle connections.
    pub fn pool_stats(&self) -> PoolStats {
        let state = self.pool.state();
        PoolStats {
            max: self.max_connections,
            open: state.connections,
            idle: state.idle_connections,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What the group-committing writers did so far (batches, operations, reloads).
    pub fn write_stats(&self) -> WriteStats {
        self.engine.stats()
    }

    /// One pooled connection, for the repositories.
    fn conn(&self) -> Result<held::Conn, StoreError> {
        held::checkout(&self.pool)
    }

    /// Runs the statement `query` on a pooled connection; the number of rows it touched.
    fn execute<Q>(&self, query: Q) -> Result<usize, StoreError>
    where
        Q: diesel::RunQueryDsl<db::DbConnection>
            + diesel::query_dsl::methods::ExecuteDsl<db::DbConnection>,
    {
        Ok(query.execute(&mut *self.conn()?)?)
    }

    /// The SQLite write gate (`None` on PostgreSQL, which has none). Inside
    /// [`Store::read_now`] it is refused at once, as every write is.
    fn write_gate(&self) -> Result<Option<MutexGuard<'_, ()>>, StoreError> {
        held::may_wait("writes")?;
        if self.write_gate.is_some() {
            held::assert_not_holding("waits for the SQLite write gate");
        }
        Ok(self
            .write_gate
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())))
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
        (*self.conn()?).batch_execute(sql)?;
        Ok(())
    }

    /// Takes one pooled connection and keeps it until the guard is dropped (tests that
    /// need the pool's next connection to be opened under changed conditions).
    #[cfg(feature = "test-support")]
    pub fn hold_connection_for_test(&self) -> Result<HeldConnection, StoreError> {
        Ok(HeldConnection(self.pool.get()?))
    }

    /// How many connections sit idle in the pool now (tests).
    pub fn idle_connections_for_test(&self) -> u32 {
        self.pool.state().idle_connections
    }

    /// Whether the database answers.
    pub fn ping(&self) -> Result<(), StoreError> {
        use diesel::connection::SimpleConnection;
        (*self.conn()?).batch_execute("SELECT 1")?;
        Ok(())
    }
}

/// A pooled connection held by a test ([`Store::hold_connection_for_test`]); it goes
/// back to the pool when dropped.
#[cfg(feature = "test-support")]
pub struct HeldConnection(#[allow(dead_code)] db::PooledConnection);

#[cfg(feature = "test-support")]
impl std::fmt::Debug for HeldConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeldConnection")
    }
}

/// Which pooled connections a thread holds. A thread that holds one and waits for another
/// (or for a writer, which needs one) can starve the pool: with every connection held by
/// such waiters, nobody gets one until the acquire timeout, and every request fails with
/// "timed out waiting for connection" meanwhile. So a thread checks out at most one at a
/// time, never waits for the write gate or a writer while it holds one, and debug builds
/// (every test) refuse all three at once.
pub(crate) mod held {
    use std::cell::Cell;

    use crate::db::{DbConnection, Pool, PooledConnection};
    use crate::error::StoreError;

    thread_local! {
        static HELD: Cell<u32> = const { Cell::new(0) };
        /// Inside [`without_waiting`]: a checkout takes an idle connection or fails at once.
        static NO_WAIT: Cell<bool> = const { Cell::new(false) };
        /// A checkout inside [`without_waiting`] found no idle connection.
        static WOULD_WAIT: Cell<bool> = const { Cell::new(false) };
        /// Connections taken inside [`without_waiting`] (r2d2 reports no event for them).
        static TAKEN_NOW: Cell<u32> = const { Cell::new(0) };
    }

    /// Whether this thread holds a pooled connection now.
    pub(crate) fn holding() -> bool {
        HELD.with(|h| h.get()) > 0
    }

    /// Runs `f` with checkouts that never wait: each takes an idle connection or fails at
    /// once. Answers `f`'s result, whether a checkout failed so (then the result is that
    /// failure, or what `f` made of it), and how many connections `f` took.
    pub(crate) fn without_waiting<T>(f: impl FnOnce() -> T) -> (T, bool, u32) {
        let outer = NO_WAIT.with(|n| n.replace(true));
        let outer_missed = WOULD_WAIT.with(|w| w.replace(false));
        let outer_taken = TAKEN_NOW.with(|t| t.replace(0));
        let out = f();
        let missed = WOULD_WAIT.with(|w| w.replace(outer_missed));
        let taken = TAKEN_NOW.with(|t| t.replace(outer_taken));
        NO_WAIT.with(|n| n.set(outer));
        (out, missed, taken)
    }

    /// A pooled connection counted as held by the thread that checked it out.
    pub(crate) struct Conn(PooledConnection);

    impl std::ops::Deref for Conn {
        type Target = DbConnection;
        fn deref(&self) -> &DbConnection {
            &self.0
        }
    }

    impl std::ops::DerefMut for Conn {
        fn deref_mut(&mut self) -> &mut DbConnection {
            &mut self.0
        }
    }

    impl Drop for Conn {
        fn drop(&mut self) {
            HELD.with(|h| h.set(h.get().saturating_sub(1)));
        }
    }

    /// In debug builds, panics when this thread holds a pooled connection: it is about to
    /// do what (`waits for ...`) could wait for a connection held by another such thread.
    pub(crate) fn assert_not_holding(what: &str) {
        debug_assert!(
            HELD.with(|h| h.get()) == 0,
            "a thread that holds a pooled connection {what}: with every connection held so, \
             the pool starves until its acquire timeout"
        );
    }

    /// Fails at once inside [`without_waiting`] (and notes that it would have waited):
    /// what comes next waits for a writer (the write gate, the engine's commit).
    pub(crate) fn may_wait(what: &str) -> Result<(), StoreError> {
        match NO_WAIT.with(|n| n.get()) {
            true => Err(would_wait(what)),
            false => Ok(()),
        }
    }

    /// Notes that a step inside [`without_waiting`] would have waited; the error it fails
    /// with (never shown: `Store::read_now` then answers `None`).
    fn would_wait(what: &str) -> StoreError {
        WOULD_WAIT.with(|w| w.set(true));
        StoreError::Unavailable {
            reason: format!("a read that may not wait {what}"),
        }
    }

    /// Checks a connection out of `pool` for this thread.
    pub(crate) fn checkout(pool: &Pool) -> Result<Conn, StoreError> {
        assert_not_holding("checks out another");
        let conn = if NO_WAIT.with(|n| n.get()) {
            match pool.try_get() {
                Some(conn) => {
                    TAKEN_NOW.with(|t| t.set(t.get() + 1));
                    conn
                }
                None => return Err(would_wait("finds no idle connection")),
            }
        } else {
            pool.get()?
        };
        HELD.with(|h| h.set(h.get() + 1));
        Ok(Conn(conn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let store = Store::open(&url, &PoolOptions::default()).unwrap();
        (dir, store)
    }

    #[test]
    #[should_panic(expected = "checks out another")]
    fn a_thread_never_holds_two_pooled_connections() {
        let (_dir, store) = store();
        let _one = store.conn().unwrap();
        let _two = store.conn();
    }

    #[test]
    #[should_panic(expected = "waits for the SQLite write gate")]
    fn a_thread_never_waits_for_the_write_gate_holding_a_connection() {
        let (_dir, store) = store();
        let _one = store.conn().unwrap();
        let _gate = store.write_gate().unwrap();
    }

    #[test]
    fn a_connection_given_back_is_no_longer_held() {
        let (_dir, store) = store();
        drop(store.conn().unwrap());
        let _again = store.conn().unwrap();
        drop(_again);
        drop(store.write_gate().unwrap());
    }
}
