//! The database a deployment names: [`DatabaseUrl`] (which backend, which file or server)
//! and [`PoolOptions`] (the sizes and timeouts of the store's connection pool).
//!
//! Plain values and string rules, with no I/O. They live here, below both the
//! configuration (`settings`, which checks `[database]` at load) and the store
//! (`ledger-store`, which connects with them), so that each is declared once without the
//! configuration crate depending on the store and its database drivers.

use std::path::PathBuf;
use std::time::Duration;

/// `database.url` cannot be used; the message says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("database.url: {reason}")]
pub struct BadDatabaseUrl {
    pub reason: String,
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
    pub fn parse(url: &str) -> Result<DatabaseUrl, BadDatabaseUrl> {
        let url = url.trim();
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() || path == ":memory:" || path.starts_with('?') {
                return Err(BadDatabaseUrl {
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
        Err(BadDatabaseUrl {
            reason: format!(
                "unsupported database `{shown}`: the URL must start with sqlite:// (embedded file) or postgres:// (PostgreSQL)"
            ),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What the driver connects with: the file path for SQLite, the URL for PostgreSQL.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// For SQLite, the database file.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        (self.backend == Backend::Sqlite).then(|| PathBuf::from(&self.target))
    }

    /// The database in words, for errors and logs: the SQLite file, or PostgreSQL's
    /// host, port and database (never the user or the password).
    pub fn describe(&self) -> String {
        match self.backend {
            Backend::Sqlite => format!("the SQLite database {}", self.target),
            Backend::Postgres => {
                let (host, db) = self.postgres_authority();
                let host = if host.is_empty() { "localhost" } else { host };
                match db {
                    "" => format!("PostgreSQL at {host}"),
                    db => format!("PostgreSQL database {db} at {host}"),
                }
            }
        }
    }

    /// PostgreSQL: the URL's `host[:port]` (without any `user:password@`) and database.
    fn postgres_authority(&self) -> (&str, &str) {
        // The credentials end at the last '@' (a password may hold a '/'), so they are cut
        // off first and can never show as the host.
        let rest = self.target.split_once("://").map_or("", |(_, r)| r);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let rest = rest.split('?').next().unwrap_or(rest);
        rest.split_once('/').unwrap_or((rest, ""))
    }

    /// Whether the database is on this machine: a SQLite file, or PostgreSQL on a
    /// loopback name or address or a unix socket (no host, a socket folder, or a `host=`
    /// parameter that is one of those).
    pub fn is_local(&self) -> bool {
        if self.backend == Backend::Sqlite {
            return true;
        }
        let local = |host: &str| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host.is_empty()
                || host.starts_with('/')
                || host.to_ascii_lowercase().starts_with("%2f")
                || host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        };
        let query = self.target.split_once('?').map_or("", |(_, q)| q);
        if let Some(host) = query.split('&').find_map(|kv| kv.strip_prefix("host=")) {
            return local(host);
        }
        let (hostport, _) = self.postgres_authority();
        // A bracketed IPv6 address keeps its colons; otherwise the port follows a ':'.
        let host = match hostport.strip_prefix('[') {
            Some(v6) => v6.split_once(']').map_or(v6, |(h, _)| h),
            None => hostport.split(':').next().unwrap_or(""),
        };
        local(host)
    }
}

/// Pool sizing and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOptions {
    /// Connections open at most.
    pub max_connections: u32,
    /// Connections kept open while idle; the others open when needed.
    pub min_connections: u32,
    /// How long opening one new connection may take (PostgreSQL's `connect_timeout`; at
    /// start, the first connection).
    pub connect_timeout: Duration,
    /// How long a caller waits for a pooled connection before the store answers that it
    /// is unavailable.
    pub acquire_timeout: Duration,
    /// SQLite: how long a writer waits for another process's write lock.
    pub busy_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_connections: 16,
            min_connections: 1,
            connect_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(10),
        }
    }
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

    #[test]
    fn local_databases_and_descriptions_without_credentials() {
        let url = |u: &str| DatabaseUrl::parse(u).unwrap();
        for local in [
            "sqlite://data/x.db",
            "postgres://u@127.0.0.1:5432/db",
            "postgres://[::1]/db",
            "postgresql:///db",
            "postgres:///db?host=/var/run/postgresql",
            "postgres://u:p/w@localhost/db",
        ] {
            assert!(url(local).is_local(), "{local}");
        }
        for remote in [
            "postgres://u@10.0.0.5/db",
            "postgres://localhost.example.com/db",
            "postgres:///db?host=db.example.com",
            "postgres://u:p@[2001:db8::1]:5432/db",
        ] {
            assert!(!url(remote).is_local(), "{remote}");
        }
        let shown = url("postgres://u:se/cret@db.internal:5433/app?sslmode=require").describe();
        assert_eq!(shown, "PostgreSQL database app at db.internal:5433");
    }
}
