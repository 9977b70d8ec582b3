//! Migrations: one tree (`migrations/`) for both backends, each folder with a working
//! `down.sql`; the versions of the former per-backend trees; and the drift check that
//! `schema.rs` declares exactly what the migrations create (run by `just lint`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl, SqliteConnection};
use diesel_migrations::{FileBasedMigrations, MigrationHarness};
use ledger_store::{
    revert_all_migrations, run_migrations, DbConnection, PoolOptions, Store,
    SQLITE_MIGRATIONS as MIGRATIONS,
};
use test_support::{drop_postgres_schema, postgres_schema};

fn migrations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations")
}

/// The migration folders, each checked to have a non-empty `up.sql` and `down.sql`.
fn folders() -> BTreeSet<String> {
    let dir = migrations_dir();
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

/// The folders of the former `migrations/sqlite` and `migrations/postgres` trees (they
/// were the same): their names are the versions recorded in migrated databases.
const FORMER_FOLDERS: [&str; 5] = [
    "2026-11-21-000001_ledger",
    "2026-11-21-000002_access",
    "2026-11-21-000003_payments",
    "2026-11-21-000004_screenshots",
    "2026-12-01-000802_payment_refusals",
];

#[test]
fn one_tree_keeps_the_former_folders() {
    let now = folders();
    for former in FORMER_FOLDERS {
        assert!(now.contains(former), "{former} was renamed or removed");
    }
    // Only dated migration folders: no per-backend subtree is left behind.
    for name in &now {
        assert!(
            name.as_bytes().first().is_some_and(u8::is_ascii_digit),
            "migrations/{name} is not a migration folder"
        );
    }
}

/// Lays out the former tree for `backend` (`migrations/<backend>/<folder>`) with the
/// migrations it held, in a temporary folder.
fn former_tree(backend: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("migrations").join(backend);
    for folder in FORMER_FOLDERS {
        let (from, to) = (migrations_dir().join(folder), root.join(folder));
        std::fs::create_dir_all(&to).unwrap();
        for f in ["up.sql", "down.sql"] {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    }
    (tmp, root)
}

/// A database migrated by the former tree is current under the one tree: nothing runs
/// again, and the versions recorded are the same.
fn former_tree_database_is_current(conn: &mut DbConnection, backend: &str) {
    let (_tmp, root) = former_tree(backend);
    let former = FileBasedMigrations::from_path(&root).unwrap();
    let recorded = match conn {
        DbConnection::Sqlite(c) => {
            c.run_pending_migrations(former).unwrap();
            c.applied_migrations().unwrap()
        }
        DbConnection::Postgres(c) => {
            c.run_pending_migrations(former).unwrap();
            c.applied_migrations().unwrap()
        }
    };
    assert_eq!(recorded.len(), FORMER_FOLDERS.len());
    let pending = match conn {
        DbConnection::Sqlite(c) => c.pending_migrations(MIGRATIONS).unwrap().len(),
        DbConnection::Postgres(c) => c.pending_migrations(MIGRATIONS).unwrap().len(),
    };
    assert_eq!(pending, folders().len() - FORMER_FOLDERS.len());
    run_migrations(conn).unwrap();
}

/// Runs `migrate` on a fresh SQLite file, then checks that the store opens the result
/// as a working ledger.
fn on_a_fresh_sqlite_file(migrate: fn(&mut DbConnection)) {
    crate::common::on_a_fresh_sqlite_file(migrate, |store| {
        assert!(store.maintenance().verify().unwrap().ok)
    });
}

/// The same on a fresh PostgreSQL schema.
fn on_a_fresh_postgres_schema(migrate: fn(&mut DbConnection)) {
    let (url, admin, schema) = postgres_schema();
    let mut conn = DbConnection::Postgres(PgConnection::establish(&url).unwrap());
    migrate(&mut conn);
    drop(conn);
    let store = Store::open(&url, &PoolOptions::default()).unwrap();
    assert!(store.maintenance().verify().unwrap().ok);
    drop(store);
    drop_postgres_schema(&admin, &schema);
}

#[test]
fn sqlite_databases_of_the_former_tree_are_current() {
    on_a_fresh_sqlite_file(|conn| former_tree_database_is_current(conn, "sqlite"));
}

#[test]
fn postgres_databases_of_the_former_tree_are_current() {
    on_a_fresh_postgres_schema(|conn| former_tree_database_is_current(conn, "postgres"));
}

fn up_down_up(conn: &mut DbConnection) {
    run_migrations(conn).unwrap();
    let reverted = revert_all_migrations(conn).unwrap();
    assert_eq!(reverted, folders().len());
    run_migrations(conn).unwrap();
}

/// The migrated database is a working ledger.
#[test]
fn sqlite_migrations_go_up_down_and_up_again() {
    on_a_fresh_sqlite_file(up_down_up);
}

#[test]
fn postgres_migrations_go_up_down_and_up_again() {
    on_a_fresh_postgres_schema(up_down_up);
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
                .hold_connection_for_test()
                .unwrap_or_else(|e| panic!("connection {i} while the lock is held: {e}"))
        })
        .collect();
    other.batch_execute("ROLLBACK;").unwrap();
    drop(held);
    assert!(store.maintenance().verify().unwrap().ok);
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

// --- The drift check: schema.rs against what the migrations create. ---

/// A table as seen by Diesel or by a database: its primary key, and each column's type
/// (Diesel's name: `Text`, `BigInt`, `Bool`, ...) and nullability.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Table {
    primary_key: Vec<String>,
    columns: BTreeMap<String, (String, bool)>,
}

/// Every `table!` in the store's sources, with the file it is in. A few lines of text
/// parsing: the declarations are written one column per line.
fn declared_tables() -> BTreeMap<String, (String, Table)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    let mut tables = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
        let mut lines = text.lines().map(str::trim);
        while let Some(line) = lines.next() {
            if !line.ends_with("table! {") {
                continue;
            }
            let head = lines.by_ref().find(|l| !l.starts_with('#')).unwrap();
            let (name, rest) = head.split_once('(').unwrap_or_else(|| panic!("{head}"));
            let key = rest.split_once(')').unwrap().0;
            let mut table = Table {
                primary_key: key.split(',').map(|k| k.trim().to_owned()).collect(),
                ..Table::default()
            };
            for column in lines.by_ref().take_while(|l| *l != "}") {
                let Some((column, ty)) = column.split_once("->") else {
                    continue;
                };
                let ty = ty.trim().trim_end_matches(',');
                let (ty, nullable) = match ty.strip_prefix("Nullable<") {
                    Some(inner) => (inner.trim_end_matches('>'), true),
                    None => (ty, false),
                };
                table
                    .columns
                    .insert(column.trim().to_owned(), (ty.to_owned(), nullable));
            }
            let name = name.trim().to_owned();
            assert!(
                tables
                    .insert(name.clone(), (file_name.clone(), table))
                    .is_none(),
                "table {name} is declared twice"
            );
        }
    }
    tables
}

/// A database's type name in Diesel's words.
fn diesel_type(sql: &str) -> String {
    match sql.to_ascii_lowercase().as_str() {
        "text" => "Text",
        "bigint" | "int8" => "BigInt",
        "integer" | "int" | "int4" => "Integer",
        "boolean" | "bool" => "Bool",
        "blob" | "bytea" => "Binary",
        other => return format!("unknown SQL type {other}"),
    }
    .to_owned()
}

#[derive(QueryableByName)]
struct ColumnRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    table_name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    column_name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    data_type: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    nullable: bool,
    /// Position in the primary key, from 1; 0: not in it.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    key_position: i64,
}

fn tables_from_rows(rows: Vec<ColumnRow>) -> BTreeMap<String, Table> {
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    let mut keys: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for row in rows {
        if row.key_position > 0 {
            keys.entry(row.table_name.clone())
                .or_default()
                .push((row.key_position, row.column_name.clone()));
        }
        tables.entry(row.table_name).or_default().columns.insert(
            row.column_name,
            // A primary key column is never null (SQLite lets a TEXT key be null unless it
            // says NOT NULL; no row of ours ever has one, and Diesel reads it as not null).
            (
                diesel_type(&row.data_type),
                row.nullable && row.key_position == 0,
            ),
        );
    }
    for (table, mut key) in keys {
        key.sort();
        tables.get_mut(&table).unwrap().primary_key = key.into_iter().map(|(_, c)| c).collect();
    }
    tables
}

const DIESEL_BOOKKEEPING: &str = "__diesel_schema_migrations";

fn sqlite_tables(conn: &mut SqliteConnection) -> BTreeMap<String, Table> {
    let rows = diesel::sql_query(format!(
        "SELECT m.name AS table_name, p.name AS column_name, p.type AS data_type, \
                p.\"notnull\" = 0 AS nullable, CAST(p.pk AS BIGINT) AS key_position \
         FROM sqlite_master m, pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '{DIESEL_BOOKKEEPING}'"
    ))
    .load::<ColumnRow>(conn)
    .unwrap();
    tables_from_rows(rows)
}

fn postgres_tables(conn: &mut PgConnection) -> BTreeMap<String, Table> {
    let rows = diesel::sql_query(format!(
        "SELECT c.table_name::text AS table_name, c.column_name::text AS column_name, \
                c.data_type::text AS data_type, c.is_nullable = 'YES' AS nullable, \
                COALESCE(k.ordinal_position, 0)::bigint AS key_position \
         FROM information_schema.columns c \
         LEFT JOIN information_schema.table_constraints t \
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
          AND t.constraint_type = 'PRIMARY KEY' \
         LEFT JOIN information_schema.key_column_usage k \
           ON k.constraint_schema = t.constraint_schema AND k.constraint_name = t.constraint_name \
          AND k.column_name = c.column_name \
         WHERE c.table_schema = current_schema() AND c.table_name <> '{DIESEL_BOOKKEEPING}'"
    ))
    .load::<ColumnRow>(conn)
    .unwrap();
    tables_from_rows(rows)
}

/// Every difference between what the migrations created on `backend` and the `table!`s.
fn drift(backend: &str, created: &BTreeMap<String, Table>) -> Vec<String> {
    let declared = declared_tables();
    let mut problems = Vec::new();
    for (name, table) in created {
        let Some((file, declared)) = declared.get(name) else {
            problems.push(format!(
                "{backend}: the migrations create table {name}, which schema.rs lacks"
            ));
            continue;
        };
        if file != "schema.rs" {
            problems.push(format!(
                "table {name} is declared in {file}: every table! belongs in schema.rs"
            ));
        }
        if declared.primary_key != table.primary_key {
            problems.push(format!(
                "{backend}: {name}: primary key {:?} in {file}, {:?} in the database",
                declared.primary_key, table.primary_key
            ));
        }
        for (column, in_db) in &table.columns {
            match declared.columns.get(column) {
                None => problems.push(format!(
                    "{backend}: {name}.{column} {in_db:?} exists in the database, not in {file}"
                )),
                Some(in_rust) if in_rust != in_db => problems.push(format!(
                    "{backend}: {name}.{column}: (type, nullable) {in_rust:?} in {file}, {in_db:?} in the database"
                )),
                Some(_) => {}
            }
        }
        for column in declared.columns.keys() {
            if !table.columns.contains_key(column) {
                problems.push(format!(
                    "{backend}: {name}.{column} is declared in {file} but no migration creates it"
                ));
            }
        }
    }
    for (name, (file, _)) in &declared {
        if !created.contains_key(name) {
            problems.push(format!(
                "{backend}: table {name} is declared in {file} but no migration creates it"
            ));
        }
    }
    problems
}

/// The tables the migrations create in a new SQLite file.
fn migrated_sqlite_tables() -> BTreeMap<String, Table> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drift.db");
    let mut sqlite = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    sqlite.run_pending_migrations(MIGRATIONS).unwrap();
    sqlite_tables(&mut sqlite)
}

#[test]
fn schema_rs_matches_what_the_migrations_create() {
    let sqlite_created = migrated_sqlite_tables();

    let (url, admin, schema) = postgres_schema();
    let mut pg = PgConnection::establish(&url).unwrap();
    pg.run_pending_migrations(MIGRATIONS).unwrap();
    let postgres_created = postgres_tables(&mut pg);
    drop(pg);
    drop_postgres_schema(&admin, &schema);

    // Sanity: the introspection sees the tables, and the two backends agree.
    assert!(sqlite_created.contains_key("accounts") && sqlite_created.len() >= 10);
    assert_eq!(
        sqlite_created.keys().collect::<Vec<_>>(),
        postgres_created.keys().collect::<Vec<_>>()
    );
    let mut problems = drift("sqlite", &sqlite_created);
    problems.extend(drift("postgres", &postgres_created));
    problems.dedup();
    assert!(
        problems.is_empty(),
        "schema.rs does not match the migrations:\n{}",
        problems.join("\n")
    );
}

/// The check can fail: a column the migrations do not create, a wrong type, a missing
/// table, each reported.
#[test]
fn the_drift_check_reports_differences() {
    let mut created = migrated_sqlite_tables();
    assert_eq!(drift("sqlite", &created), Vec::<String>::new());
    let accounts = created.get_mut("accounts").unwrap();
    accounts.columns.remove("plan_name");
    accounts
        .columns
        .insert("balance".into(), ("Text".into(), false));
    created.insert("stray".into(), Table::default());
    let problems = drift("sqlite", &created).join("\n");
    for expected in [
        "accounts.plan_name is declared",
        "accounts.balance: (type, nullable)",
        "table stray, which schema.rs lacks",
    ] {
        assert!(
            problems.contains(expected),
            "{expected} missing in:\n{problems}"
        );
    }
}

/// A database of the former tree, opened without migrating (the operator CLI): exactly the
/// newer folders are pending, listing them writes nothing, `Store::migrate` applies exactly
/// those, and then nothing is pending.
fn an_old_database_lists_then_applies_what_is_pending(url: &str, mut conn: DbConnection) {
    let backend = match conn {
        DbConnection::Sqlite(_) => "sqlite",
        DbConnection::Postgres(_) => "postgres",
    };
    let (_tmp, root) = former_tree(backend);
    let former = FileBasedMigrations::from_path(&root).unwrap();
    match &mut conn {
        DbConnection::Sqlite(c) => drop(c.run_pending_migrations(former).unwrap()),
        DbConnection::Postgres(c) => drop(c.run_pending_migrations(former).unwrap()),
    }
    drop(conn);
    let newer: Vec<String> = folders()
        .into_iter()
        .filter(|f| !FORMER_FOLDERS.contains(&f.as_str()))
        .collect();
    assert!(!newer.is_empty());
    let store = Store::open_without_migrating(url, &PoolOptions::default()).unwrap();
    assert_eq!(store.pending_migrations().unwrap(), newer);
    assert_eq!(
        store.pending_migrations().unwrap(),
        newer,
        "listing changed it"
    );
    assert_eq!(store.migrate().unwrap(), newer);
    assert_eq!(store.pending_migrations().unwrap(), Vec::<String>::new());
    assert_eq!(store.migrate().unwrap(), Vec::<String>::new());
    assert!(store.maintenance().verify().unwrap().ok);
    let all: Vec<String> = ledger_store::all_migrations()
        .unwrap()
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    assert_eq!(all, folders().into_iter().collect::<Vec<_>>());
}

#[test]
fn sqlite_an_old_database_lists_then_applies_what_is_pending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let conn = DbConnection::Sqlite(SqliteConnection::establish(path.to_str().unwrap()).unwrap());
    an_old_database_lists_then_applies_what_is_pending(
        &format!("sqlite://{}", path.display()),
        conn,
    );
}

#[test]
fn postgres_an_old_database_lists_then_applies_what_is_pending() {
    let (url, admin, schema) = postgres_schema();
    let conn = DbConnection::Postgres(PgConnection::establish(&url).unwrap());
    an_old_database_lists_then_applies_what_is_pending(&url, conn);
    drop_postgres_schema(&admin, &schema);
}
