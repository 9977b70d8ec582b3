//! Migrations: the same folders for both backends, each with a working `down.sql`.

use std::collections::BTreeSet;
use std::path::Path;

use diesel::{Connection, PgConnection, SqliteConnection};
use ledger_store::{revert_all_migrations, run_migrations, DbConnection, PoolOptions, Store};
use test_support::{drop_postgres_schema, postgres_schema};

fn folders(backend: &str) -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations")
        .join(backend);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|d| d.unwrap())
        .filter(|d| d.path().is_dir())
        .map(|d| {
            for f in ["up.sql", "down.sql"] {
                let sql = std::fs::read_to_string(d.path().join(f)).unwrap_or_default();
                assert!(!sql.trim().is_empty(), "{} has no {f}", d.path().display());
            }
            d.file_name().to_string_lossy().into_owned()
        })
        .collect()
}

#[test]
fn both_backends_have_the_same_migration_folders() {
    let sqlite = folders("sqlite");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, folders("postgres"));
}

fn up_down_up(conn: &mut DbConnection) {
    run_migrations(conn).unwrap();
    let reverted = revert_all_migrations(conn).unwrap();
    assert_eq!(reverted, folders("sqlite").len());
    run_migrations(conn).unwrap();
}

#[test]
fn sqlite_migrations_go_up_down_and_up_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let mut conn =
        DbConnection::Sqlite(SqliteConnection::establish(path.to_str().unwrap()).unwrap());
    up_down_up(&mut conn);
    drop(conn);
    // The migrated file is a working ledger.
    let store = Store::open(
        &format!("sqlite://{}", path.display()),
        &PoolOptions::default(),
    )
    .unwrap();
    assert!(store.verify().unwrap().ok);
}

#[test]
fn postgres_migrations_go_up_down_and_up_again() {
    let (url, admin, schema) = postgres_schema();
    let mut conn = DbConnection::Postgres(PgConnection::establish(&url).unwrap());
    up_down_up(&mut conn);
    drop(conn);
    let store = Store::open(&url, &PoolOptions::default()).unwrap();
    assert!(store.verify().unwrap().ok);
    drop(store);
    drop_postgres_schema(&admin, &schema);
}

#[test]
fn an_unknown_scheme_is_an_error_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cwd_file = dir.path().join("mysql:");
    let err = Store::open(
        &format!("mysql://{}/x", dir.path().display()),
        &PoolOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("must start with sqlite://"),
        "{err}"
    );
    assert!(!cwd_file.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn sqlite_creates_its_folder_on_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/ledger.db");
    Store::open(
        &format!("sqlite://{}", path.display()),
        &PoolOptions::default(),
    )
    .unwrap();
    assert!(path.is_file());
}

#[test]
fn new_sqlite_connections_open_while_another_process_holds_the_write_lock() {
    use diesel::connection::SimpleConnection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let store = Store::open(
        &format!("sqlite://{}", path.display()),
        &PoolOptions {
            max_connections: 4,
            min_connections: 0,
            acquire_timeout: std::time::Duration::from_secs(2),
            ..PoolOptions::default()
        },
    )
    .unwrap();
    // Another writer (another process, as far as SQLite knows) is inside a write.
    let mut other = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    other
        .batch_execute("BEGIN IMMEDIATE; CREATE TABLE elsewhere (x INTEGER);")
        .unwrap();
    // Each checkout opens a new connection, whose write probe must not wait for that
    // lock (it would time out here) nor take "locked" for "cannot write".
    let held: Vec<_> = (0..3)
        .map(|i| {
            store
                .connection()
                .unwrap_or_else(|e| panic!("connection {i} while the lock is held: {e}"))
        })
        .collect();
    other.batch_execute("ROLLBACK;").unwrap();
    drop(held);
    assert!(store.verify().unwrap().ok);
}

/// `just run` starts the api-server and the webhook-receiver on the same new SQLite file
/// at the same moment: both must open it (one migrates, the other waits), however their
/// first steps interleave. Each round uses a fresh file, and many openers at once.
#[test]
fn several_processes_open_one_new_sqlite_file_at_once() {
    for round in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let (url, barrier) = (url.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    Store::open(&url, &PoolOptions::default()).map(|_| ())
                })
            })
            .collect();
        for (i, opener) in openers.into_iter().enumerate() {
            if let Err(e) = opener.join().unwrap() {
                panic!("round {round}, opener {i}: {e}");
            }
        }
    }
}
