//! Test databases: a fresh SQLite file, or a fresh PostgreSQL schema, per test, so tests
//! run in parallel and clean up on drop.
//!
//! PostgreSQL is found in this order: `TEST_DATABASE_URL`; the local server at
//! `postgres://postgres@127.0.0.1:5432/postgres` when it answers; otherwise a throwaway
//! cluster started from the system's PostgreSQL binaries. If none of these works the
//! test fails with the reason: PostgreSQL tests never skip.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

use ledger_store::{new_id, PoolOptions, Store};

const LOCAL_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A store on a database of its own, removed when dropped.
pub struct TestDb {
    pub store: Store,
    /// The URL the store was opened with (to open a second store on the same data).
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, schema: String },
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb").field("url", &self.url).finish()
    }
}

impl TestDb {
    /// A new SQLite file in a temporary folder.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let store = Store::open(&url, &PoolOptions::default()).expect("open SQLite test database");
        TestDb {
            store,
            url,
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A new schema on the test PostgreSQL server.
    pub fn postgres() -> TestDb {
        let (url, admin_url, schema) = postgres_schema();
        let store =
            Store::open(&url, &PoolOptions::default()).expect("open PostgreSQL test schema");
        TestDb {
            store,
            url,
            cleanup: Cleanup::Postgres { admin_url, schema },
        }
    }

    /// A store on the named backend (`"sqlite"` or `"postgres"`).
    pub fn of(backend: &str) -> TestDb {
        match backend {
            "sqlite" => TestBackend::Sqlite.into(),
            "postgres" => TestBackend::Postgres.into(),
            other => panic!("unknown test backend {other}"),
        }
    }
}

/// One of the two backends every store test runs on (see [`on_both_backends!`]).
///
/// [`on_both_backends!`]: crate::on_both_backends
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    Sqlite,
    Postgres,
}

/// A test that takes a [`TestDb`] gets a fresh one.
impl From<TestBackend> for TestDb {
    fn from(backend: TestBackend) -> TestDb {
        match backend {
            TestBackend::Sqlite => TestDb::sqlite(),
            TestBackend::Postgres => TestDb::postgres(),
        }
    }
}

/// A test that takes the backend's name opens its database itself ([`TestDb::of`]).
impl From<TestBackend> for &'static str {
    fn from(backend: TestBackend) -> &'static str {
        match backend {
            TestBackend::Sqlite => "sqlite",
            TestBackend::Postgres => "postgres",
        }
    }
}

/// Creates an empty schema and returns (url bound to it, admin url, schema name). The
/// caller migrates it (usually by opening a [`Store`]) and drops it when done.
pub fn postgres_schema() -> (String, String, String) {
    let admin_url = postgres_admin_url();
    let schema = new_id("t_");
    let mut admin = PgConnection::establish(&admin_url)
        .unwrap_or_else(|e| panic!("connect to test PostgreSQL at {admin_url}: {e}"));
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .expect("create test schema");
    let sep = if admin_url.contains('?') { '&' } else { '?' };
    let url = format!("{admin_url}{sep}options=-csearch_path%3D{schema}");
    (url, admin_url, schema)
}

/// Drops a schema made by [`postgres_schema`].
pub fn drop_postgres_schema(admin_url: &str, schema: &str) {
    if let Ok(mut admin) = PgConnection::establish(admin_url) {
        let _ = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin_url, schema } = &self.cleanup {
            drop_postgres_schema(admin_url, schema);
        }
    }
}

/// The URL of a PostgreSQL server tests may create schemas on.
pub fn postgres_admin_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
            if !url.trim().is_empty() {
                return url;
            }
        }
        let local: SocketAddr = "127.0.0.1:5432".parse().expect("address");
        if TcpStream::connect_timeout(&local, Duration::from_secs(1)).is_ok() {
            return LOCAL_POSTGRES.to_owned();
        }
        start_throwaway_cluster().unwrap_or_else(|why| {
            panic!(
                "no PostgreSQL for the tests: TEST_DATABASE_URL is unset, nothing answers on 127.0.0.1:5432, \
                 and a throwaway cluster could not start ({why}). Start one with \
                 `pg_ctlcluster --skip-systemctl-redirect 15 main start` or set TEST_DATABASE_URL."
            )
        })
    })
    .clone()
}

fn postgres_bin(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path().join("bin"))
        .collect();
    dirs.sort();
    dirs.reverse();
    dirs.extend(
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths),
    );
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// initdb + pg_ctl into a temporary folder, on a free port. The cluster lives as long as
/// the machine (it is only the fallback where no server runs).
fn start_throwaway_cluster() -> Result<String, String> {
    let initdb = postgres_bin("initdb").ok_or("initdb not found")?;
    let pg_ctl = postgres_bin("pg_ctl").ok_or("pg_ctl not found")?;
    let dir = std::env::temp_dir().join(new_id("shotledger-pg-"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let as_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let run = |program: &Path, args: &[&str]| -> Result<(), String> {
        let mut cmd = if as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        let out = cmd.args(args).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    };
    if as_root {
        Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .map_err(|e| e.to_string())?;
    }
    let data = dir.join("data");
    let data_s = data.to_string_lossy().into_owned();
    let dir_s = dir.to_string_lossy().into_owned();
    run(
        &initdb,
        &[
            "-D",
            &data_s,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ],
    )?;
    let opts = format!("-p {port} -k {dir_s} -c listen_addresses=127.0.0.1 -c fsync=off");
    run(
        &pg_ctl,
        &[
            "-D",
            &data_s,
            "-o",
            &opts,
            "-w",
            "-l",
            &format!("{dir_s}/log"),
            "start",
        ],
    )?;
    Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
}
