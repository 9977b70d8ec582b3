//! Migrations: the same folders for both backends, each with a working `down.sql`.

use std::collections::BTreeSet;
use std::path::Path;

use diesel::{Connection, PgConnection, SqliteConnection};
use ledger_store::testing::{drop_postgres_schema, postgres_schema};
use ledger_store::{revert_all_migrations, run_migrations, DbConnection, PoolOptions, Store};

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
