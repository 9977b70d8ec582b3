//! Connections: one `MultiConnection` over SQLite and PostgreSQL, chosen by the URL's
//! scheme; an r2d2 pool; one migrations tree, embedded and run before the pool is handed
//! out.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{CustomizeConnection, R2D2Connection};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::error::StoreError;

/// The one migrations tree (`migrations/`), run on both backends: its SQL is written in the
/// dialect SQLite and PostgreSQL share. Folder names, and so versions, are those of the two
/// former per-backend trees, so databases they migrated find nothing new to run.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");
/// The migrations run on SQLite (the one tree).
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = MIGRATIONS;
/// The migrations run on PostgreSQL (the one tree).
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = MIGRATIONS;

/// A connection to either backend. Queries written once with Diesel's DSL run on both.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

pub type Pool = r2d2::Pool<Manager>;
pub type PooledConnection = r2d2::PooledConnection<Manager>;

/// Opens connections of the backend the URL named. (The derived `establish` would try
/// each backend in turn, and SQLite accepts any string as a file name.)
#[derive(Debug)]
pub struct Manager {
    url: DatabaseUrl,
    /// PostgreSQL: what libpq connects with (the URL plus `connect_timeout`).
    connect_target: String,
}

impl Manager {
    fn new(url: &DatabaseUrl, connect_timeout: Duration) -> Manager {
        let connect_target = match url.backend() {
            Backend::Sqlite => url.target().to_owned(),
            Backend::Postgres => {
                let target = with_connect_timeout(url.target(), connect_timeout);
                without_tls_on_loopback(url, &target)
            }
        };
        Manager {
            url: url.clone(),
            connect_target,
        }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        let conn = match self.url.backend() {
            Backend::Sqlite => {
                SqliteConnection::establish(&self.connect_target).map(DbConnection::Sqlite)
            }
            Backend::Postgres => {
                PgConnection::establish(&self.connect_target).map(DbConnection::Postgres)
            }
        };
        conn.map_err(diesel::r2d2::Error::ConnectionError)
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        conn.is_broken()
    }
}

/// A PostgreSQL URL with libpq's `connect_timeout` (whole seconds, at least 2, libpq's
/// minimum) unless the URL sets one itself.
fn with_connect_timeout(url: &str, timeout: Duration) -> String {
    let secs = timeout.as_secs_f64().ceil().max(2.0) as u64;
    with_param(url, "connect_timeout", &secs.to_string())
}

/// `url` with `sslmode=disable` when the database is on this machine
/// ([`DatabaseUrl::is_local`]): libpq's default (`prefer`) negotiates TLS, which on
/// loopback protects nothing and costs a noticeable share of the server's CPU (issue 11).
/// A URL that sets `sslmode` itself, and any other host, keep libpq's choice.
fn without_tls_on_loopback(database: &DatabaseUrl, url: &str) -> String {
    if database.is_local() {
        with_param(url, "sslmode", "disable")
    } else {
        url.to_owned()
    }
}

/// `url` with the query parameter `name=value`, unless it sets `name` already.
fn with_param(url: &str, name: &str, value: &str) -> String {
    if url.contains(&format!("{name}=")) {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{name}={value}")
}

pub use ledger_core::database::{Backend, DatabaseUrl};

impl From<ledger_core::database::BadDatabaseUrl> for StoreError {
    fn from(e: ledger_core::database::BadDatabaseUrl) -> StoreError {
        StoreError::BadUrl { reason: e.reason }
    }
}

/// Pool sizing and timeouts: declared in the core, so that the configuration shares the
/// declaration without depending on the store.
pub use ledger_core::database::PoolOptions;

#[derive(Debug)]
struct SqlitePragmas {
    busy_timeout_ms: u128,
}

impl CustomizeConnection<DbConnection, diesel::r2d2::Error> for SqlitePragmas {
    /// Every new SQLite connection gets its pragmas and must prove that it can write: a
    /// file this process may not write (permissions, `chattr +i`, a read-only mount) is
    /// still opened by SQLite, read-only and silently, and every write on it would fail
    /// until the connection is closed. Refused here, such a connection never enters the
    /// pool, and the pool opens a fresh one once the file is writable again.
    fn on_acquire(&self, conn: &mut DbConnection) -> Result<(), diesel::r2d2::Error> {
        if let DbConnection::Sqlite(c) = conn {
            // `synchronous = FULL`: in WAL mode every commit syncs the WAL before it returns,
            // so an acknowledged debit survives a power failure or an OS crash ("never
            // lost"). `NORMAL` syncs only at checkpoints and can lose the last commits.
            // Group commit (one sync for many callers' operations) is what pays for it.
            // `temp_store = MEMORY`: a multi-row insert keeps the pages it changes in a
            // statement journal (to undo the statement alone if it fails), which SQLite
            // spills to a temporary file past 64 KiB; in memory it costs no write calls.
            // Nothing durable lives there: the WAL is what a commit syncs.
            let pragmas = format!(
                "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;",
                self.busy_timeout_ms
            );
            // Turning a new file to WAL needs an exclusive lock, and SQLite answers "locked"
            // at once, without its busy handler, while another connection is just taking
            // the write lock (another process opening the same new file): retry for as
            // long as the busy timeout would have waited.
            let deadline = std::time::Instant::now()
                + Duration::from_millis(self.busy_timeout_ms.try_into().unwrap_or(u64::MAX));
            loop {
                match c.batch_execute(&pragmas) {
                    Err(diesel::result::Error::DatabaseError(_, info))
                        if is_locked(info.message()) && std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    other => break other.map_err(diesel::r2d2::Error::QueryError)?,
                }
            }
            sqlite_write_probe(c).map_err(diesel::r2d2::Error::QueryError)?;
            c.batch_execute(&format!("PRAGMA busy_timeout = {};", self.busy_timeout_ms))
                .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(())
    }
}

/// A real write in a transaction that is rolled back. (`BEGIN IMMEDIATE` alone succeeds on
/// a read-only connection in WAL mode: the write lock lives in the shared-memory file.)
/// It does not wait for SQLite's write lock: a read-only connection fails with
/// "readonly" before it asks for the lock, so "locked" (another writer is busy) means the
/// connection can write.
fn sqlite_write_probe(c: &mut SqliteConnection) -> Result<(), diesel::result::Error> {
    c.batch_execute("PRAGMA busy_timeout = 0;")?;
    let probe = c.batch_execute("BEGIN; CREATE TABLE __shotledger_write_probe (x INTEGER);");
    // Nothing to roll back when BEGIN itself failed.
    let _ = c.batch_execute("ROLLBACK;");
    match probe {
        Err(diesel::result::Error::DatabaseError(_, info)) if is_locked(info.message()) => Ok(()),
        other => other,
    }
}

/// SQLite's answer when another connection holds the lock it needs.
fn is_locked(message: &str) -> bool {
    message.contains("database is locked") || message.contains("database table is locked")
}

/// Logs the pool's failures to open connections (r2d2 keeps only the last one, for the
/// first caller that times out).
#[derive(Debug)]
struct LogPoolErrors {
    database: String,
}

impl r2d2::HandleError<diesel::r2d2::Error> for LogPoolErrors {
    fn handle_error(&self, error: diesel::r2d2::Error) {
        tracing::warn!(database = %self.database, %error, "could not open a database connection");
    }
}

/// Opens a pool for `url`, creating a SQLite file (and its folder) on first use, and runs
/// every pending migration before returning.
///
/// The first connection is opened directly, so a failure names its cause (r2d2 would only
/// say that it timed out); the pool then keeps `min_connections` open and opens the others
/// when needed, each within `connect_timeout`. A caller waits at most `acquire_timeout`
/// for a connection.
pub fn connect(
    url: &DatabaseUrl,
    options: &PoolOptions,
    events: crate::observe::PoolEvents,
) -> Result<Pool, StoreError> {
    pool_after_first(url, options, events, true)
}

/// [`connect`] without running migrations: the operator CLI opens an old database this
/// way to tell what is pending, and refuses to work on it until `shotledger migrate` ran.
pub fn connect_without_migrating(
    url: &DatabaseUrl,
    options: &PoolOptions,
    events: crate::observe::PoolEvents,
) -> Result<Pool, StoreError> {
    pool_after_first(url, options, events, false)
}

/// The pool for `url`, made only after its first connection was checked (writable, not a
/// standby) and, when `migrate`, has run the pending migrations and closed: the pool's
/// own connections open only then, so none of them exists while the first one probes or
/// migrates (a spare open on a SQLite file keeps its WAL, through which a read-only file
/// would still seem writable).
fn pool_after_first(
    url: &DatabaseUrl,
    options: &PoolOptions,
    events: crate::observe::PoolEvents,
    migrate: bool,
) -> Result<Pool, StoreError> {
    if let Some(dir) = url.sqlite_path().as_deref().and_then(|p| p.parent()) {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::BadUrl {
                reason: format!(
                    "cannot create folder {} for the SQLite database: {e}",
                    dir.display()
                ),
            })?;
        }
    }
    let manager = Manager::new(url, options.connect_timeout);
    let customizer = SqlitePragmas {
        busy_timeout_ms: options.busy_timeout.as_millis(),
    };
    let mut first =
        r2d2::ManageConnection::connect(&manager).map_err(|e| StoreError::Unavailable {
            reason: format!("cannot connect to {}: {}", url.describe(), cause(&e)),
        })?;
    customizer
        .on_acquire(&mut first)
        .map_err(|e| match url.sqlite_path() {
            Some(path) => StoreError::Unwritable {
                path: path.display().to_string(),
                reason: cause(&e),
            },
            None => StoreError::Unavailable {
                reason: format!("cannot use {}: {}", url.describe(), cause(&e)),
            },
        })?;
    refuse_read_only_postgres(&mut first, url)?;
    if migrate {
        run_migrations(&mut first)?;
    }
    drop(first);
    let max = options.max_connections.max(1);
    Ok(r2d2::Pool::builder()
        .max_size(max)
        .min_idle(Some(options.min_connections.min(max)))
        .connection_timeout(options.acquire_timeout)
        // No `SELECT 1` on every checkout (a round trip per checkout, issue 11): a
        // connection that broke is dropped when it is returned (`has_broken`), and the
        // next checkout opens a fresh one.
        .test_on_check_out(false)
        .connection_customizer(Box::new(customizer))
        .error_handler(Box::new(LogPoolErrors {
            database: url.describe(),
        }))
        .event_handler(Box::new(events))
        .build_unchecked(manager))
}

/// A PostgreSQL session that cannot write (a hot standby, `default_transaction_read_only`)
/// would answer every read and fail every write: refused at start, naming why.
fn refuse_read_only_postgres(conn: &mut DbConnection, url: &DatabaseUrl) -> Result<(), StoreError> {
    use diesel::RunQueryDsl;
    let DbConnection::Postgres(pg) = conn else {
        return Ok(());
    };
    let read_only: String = diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
        "current_setting('transaction_read_only')",
    ))
    .get_result(pg)?;
    if read_only == "on" {
        return Err(StoreError::Unavailable {
            reason: format!(
                "{} accepts no writes (transaction_read_only is on: a standby, or default_transaction_read_only); point database.url at the primary",
                url.describe()
            ),
        });
    }
    Ok(())
}

/// The message of a connection error without r2d2's or Diesel's wrapping.
fn cause(e: &diesel::r2d2::Error) -> String {
    let text = match e {
        diesel::r2d2::Error::ConnectionError(e) => e.to_string(),
        diesel::r2d2::Error::QueryError(e) => e.to_string(),
    };
    text.trim().replace('\n', "; ")
}

/// Applies every pending migration of the connection's backend.
///
/// Several processes may start on one database at the same moment (`just run` starts two
/// on one new SQLite file; many api-servers may start on one PostgreSQL). The whole run is
/// one transaction that first takes a database-wide lock (SQLite's write lock with
/// `BEGIN IMMEDIATE`; a transaction-scoped advisory lock on PostgreSQL), so one process
/// migrates while the others wait, then find nothing pending. Each migration becomes a
/// savepoint inside it.
///
/// Returns the names of the migrations it applied (folder names, oldest first).
pub fn run_migrations(conn: &mut DbConnection) -> Result<Vec<String>, StoreError> {
    type MigrationError = Box<dyn std::error::Error + Send + Sync>;
    let result = match conn {
        DbConnection::Sqlite(c) => c.immediate_transaction::<_, MigrationError, _>(|c| {
            let names = names(&c.pending_migrations(SQLITE_MIGRATIONS)?);
            c.run_pending_migrations(SQLITE_MIGRATIONS)?;
            Ok(names)
        }),
        DbConnection::Postgres(c) => c.transaction::<_, MigrationError, _>(|c| {
            use diesel::RunQueryDsl;
            diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                .bind::<diesel::sql_types::BigInt, _>(MIGRATION_LOCK_KEY)
                .execute(c)?;
            let names = names(&c.pending_migrations(POSTGRES_MIGRATIONS)?);
            c.run_pending_migrations(POSTGRES_MIGRATIONS)?;
            Ok(names)
        }),
    };
    result.map_err(|e| StoreError::Migration {
        reason: e.to_string(),
    })
}

/// The names of `migrations` (their folder names).
fn names<DB: diesel::backend::Backend>(
    migrations: &[Box<dyn diesel::migration::Migration<DB>>],
) -> Vec<String> {
    migrations.iter().map(|m| m.name().to_string()).collect()
}

/// Every migration of the one tree, oldest first: (version, name).
pub fn all_migrations() -> Result<Vec<(String, String)>, StoreError> {
    use diesel::migration::MigrationSource;
    let all: Vec<Box<dyn diesel::migration::Migration<diesel::sqlite::Sqlite>>> =
        MIGRATIONS.migrations().map_err(|e| StoreError::Migration {
            reason: e.to_string(),
        })?;
    let mut all: Vec<(String, String)> = all
        .iter()
        .map(|m| (m.name().version().to_string(), m.name().to_string()))
        .collect();
    all.sort();
    Ok(all)
}

/// The migrations not yet applied to the database `conn` is on (names, oldest first),
/// read without writing anything: a database that has never been migrated has no
/// bookkeeping table yet, and reading it through Diesel's harness would create one.
pub fn pending_migrations(conn: &mut DbConnection) -> Result<Vec<String>, StoreError> {
    use diesel::sql_types::{BigInt, Text};
    use diesel::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    #[derive(diesel::QueryableByName)]
    struct Version {
        #[diesel(sql_type = Text)]
        version: String,
    }
    let exists = match conn {
        DbConnection::Sqlite(c) => diesel::sql_query(
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '__diesel_schema_migrations'",
        )
        .get_result::<Count>(c)?,
        DbConnection::Postgres(c) => diesel::sql_query(
            "SELECT COUNT(*) AS n FROM (SELECT to_regclass('__diesel_schema_migrations') AS t) r WHERE r.t IS NOT NULL",
        )
        .get_result::<Count>(c)?,
    }
    .n > 0;
    let applied: std::collections::HashSet<String> = if exists {
        let query = diesel::sql_query("SELECT version FROM __diesel_schema_migrations");
        match conn {
            DbConnection::Sqlite(c) => query.load::<Version>(c)?,
            DbConnection::Postgres(c) => query.load::<Version>(c)?,
        }
        .into_iter()
        .map(|v| v.version)
        .collect()
    } else {
        Default::default()
    };
    Ok(all_migrations()?
        .into_iter()
        .filter(|(version, _)| !applied.contains(version))
        .map(|(_, name)| name)
        .collect())
}

/// The advisory lock that serialises migrations on PostgreSQL ("shotledger" in ASCII, as
/// an integer; any constant no other program on the database uses).
const MIGRATION_LOCK_KEY: i64 = 0x73686f746c656467;

/// Reverts every applied migration (for tests of `down.sql`).
pub fn revert_all_migrations(conn: &mut DbConnection) -> Result<usize, StoreError> {
    let result = match conn {
        DbConnection::Sqlite(c) => c.revert_all_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
        DbConnection::Postgres(c) => c
            .revert_all_migrations(POSTGRES_MIGRATIONS)
            .map(|v| v.len()),
    };
    result.map_err(|e| StoreError::Migration {
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_postgres_connects_without_tls_unless_the_url_says_otherwise() {
        for (url, want) in [
            (
                "postgres://u@127.0.0.1:5432/db",
                "postgres://u@127.0.0.1:5432/db?sslmode=disable",
            ),
            (
                "postgres://u:p@localhost/db?connect_timeout=2",
                "postgres://u:p@localhost/db?connect_timeout=2&sslmode=disable",
            ),
            (
                "postgres://[::1]:5432/db",
                "postgres://[::1]:5432/db?sslmode=disable",
            ),
            ("postgresql:///db", "postgresql:///db?sslmode=disable"),
            (
                "postgres://%2Frun%2Fpostgresql/db",
                "postgres://%2Frun%2Fpostgresql/db?sslmode=disable",
            ),
            (
                "postgres:///db?host=/var/run/postgresql",
                "postgres:///db?host=/var/run/postgresql&sslmode=disable",
            ),
            (
                "postgres://u@127.0.0.1/db?sslmode=require",
                "postgres://u@127.0.0.1/db?sslmode=require",
            ),
            (
                "postgres://u@db.example.com/db",
                "postgres://u@db.example.com/db",
            ),
            (
                "postgres://u@10.0.0.5:5432/db",
                "postgres://u@10.0.0.5:5432/db",
            ),
            ("postgres://[2001:db8::1]/db", "postgres://[2001:db8::1]/db"),
            (
                "postgres://localhost.example.com/db",
                "postgres://localhost.example.com/db",
            ),
            (
                "postgres:///db?host=db.example.com",
                "postgres:///db?host=db.example.com",
            ),
        ] {
            let database = DatabaseUrl::parse(url).unwrap();
            assert_eq!(without_tls_on_loopback(&database, url), want, "{url}");
        }
    }

    #[test]
    fn the_connect_target_has_both_the_timeout_and_the_sslmode() {
        let url = DatabaseUrl::parse("postgres://postgres@127.0.0.1:5432/x").unwrap();
        let m = Manager::new(&url, Duration::from_secs(3));
        assert_eq!(
            m.connect_target,
            "postgres://postgres@127.0.0.1:5432/x?connect_timeout=3&sslmode=disable"
        );
    }
}
