//! Connections: one `MultiConnection` over SQLite and PostgreSQL, chosen by the URL's
//! scheme; an r2d2 pool; migrations embedded per backend and run before the pool is
//! handed out.

use std::path::PathBuf;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{CustomizeConnection, R2D2Connection};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::error::StoreError;

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

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
}

impl r2d2::ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        let conn = match self.url.backend {
            Backend::Sqlite => {
                SqliteConnection::establish(&self.url.target).map(DbConnection::Sqlite)
            }
            Backend::Postgres => {
                PgConnection::establish(&self.url.target).map(DbConnection::Postgres)
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

/// Which backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A parsed `database.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    backend: Backend,
    /// What Diesel connects with: a file path for SQLite, the URL itself for PostgreSQL.
    target: String,
}

impl DatabaseUrl {
    /// `sqlite://relative/path.db`, `sqlite:///absolute/path.db`, `postgres://...` or
    /// `postgresql://...`. Anything else is refused, never taken as a file name.
    pub fn parse(url: &str) -> Result<DatabaseUrl, StoreError> {
        let url = url.trim();
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() || path == ":memory:" || path.starts_with('?') {
                return Err(StoreError::BadUrl {
                    reason: format!(
                        "`{url}` names no file; use sqlite://data/shotledger.db (relative) or sqlite:///var/lib/shotledger.db (absolute)"
                    ),
                });
            }
            return Ok(DatabaseUrl {
                backend: Backend::Sqlite,
                target: path.to_owned(),
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl {
                backend: Backend::Postgres,
                target: url.to_owned(),
            });
        }
        let shown = url.split_once("://").map_or(url, |(scheme, _)| scheme);
        Err(StoreError::BadUrl {
            reason: format!(
                "unsupported database `{shown}`: the URL must start with sqlite:// (embedded file) or postgres:// (PostgreSQL)"
            ),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// For SQLite, the database file.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        (self.backend == Backend::Sqlite).then(|| PathBuf::from(&self.target))
    }
}

/// Pool sizing and timeouts.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: u32,
    pub connect_timeout: Duration,
    /// SQLite: how long a writer waits for another process's write lock.
    pub busy_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_connections: 16,
            connect_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
struct SqlitePragmas {
    busy_timeout_ms: u128,
}

impl CustomizeConnection<DbConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut DbConnection) -> Result<(), diesel::r2d2::Error> {
        if let DbConnection::Sqlite(c) = conn {
            c.batch_execute(&format!(
                "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                self.busy_timeout_ms
            ))
            .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(())
    }
}

/// Opens a pool for `url`, creating a SQLite file (and its folder) on first use, and runs
/// every pending migration before returning.
pub fn connect(url: &DatabaseUrl, options: &PoolOptions) -> Result<Pool, StoreError> {
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
    let manager = Manager { url: url.clone() };
    let pool = r2d2::Pool::builder()
        .max_size(options.max_connections)
        .connection_timeout(options.connect_timeout)
        .connection_customizer(Box::new(SqlitePragmas {
            busy_timeout_ms: options.busy_timeout.as_millis(),
        }))
        .build(manager)?;
    let mut conn = pool.get()?;
    run_migrations(&mut conn)?;
    Ok(pool)
}

/// Applies every pending migration of the connection's backend.
pub fn run_migrations(conn: &mut DbConnection) -> Result<(), StoreError> {
    let result = match conn {
        DbConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|_| ()),
        DbConnection::Postgres(c) => c.run_pending_migrations(POSTGRES_MIGRATIONS).map(|_| ()),
    };
    result.map_err(|e| StoreError::Migration {
        reason: e.to_string(),
    })
}

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
    fn urls_choose_the_backend() {
        let u = DatabaseUrl::parse("sqlite://data/shotledger.db").unwrap();
        assert_eq!(
            (u.backend(), u.sqlite_path()),
            (Backend::Sqlite, Some(PathBuf::from("data/shotledger.db")))
        );
        let u = DatabaseUrl::parse("sqlite:///var/lib/x.db").unwrap();
        assert_eq!(u.sqlite_path(), Some(PathBuf::from("/var/lib/x.db")));
        assert_eq!(
            DatabaseUrl::parse("postgres://u@h/db").unwrap().backend(),
            Backend::Postgres
        );
        assert_eq!(
            DatabaseUrl::parse("postgresql://u@h/db").unwrap().backend(),
            Backend::Postgres
        );
        for bad in [
            "mysql://x/y",
            "data/shotledger.db",
            "sqlite://",
            "sqlite://:memory:",
            "",
            "http://x",
        ] {
            let e = DatabaseUrl::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("database.url:"), "{bad}: {e}");
        }
        assert!(DatabaseUrl::parse("mysql://secret@x/y")
            .unwrap_err()
            .to_string()
            .contains("unsupported database `mysql`"));
    }
}
