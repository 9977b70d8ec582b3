//! `migrate --check` changes nothing and exits 1 while migrations are pending; `migrate`
//! applies them; no other command migrates (exit 2, "run `shotledger migrate` first").

use test_support::{drop_postgres_schema, on_both_backends, postgres_schema};

use crate::common::run;

/// A database nothing has migrated: a SQLite path with no file yet, or an empty schema.
struct Fresh {
    url: String,
    sqlite: Option<std::path::PathBuf>,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl Fresh {
    fn of(backend: &str) -> Fresh {
        if backend == "sqlite" {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ledger.db");
            Fresh {
                url: format!("sqlite://{}", path.display()),
                sqlite: Some(path),
                _dir: Some(dir),
                postgres: None,
            }
        } else {
            let (url, admin, schema) = postgres_schema();
            Fresh {
                url,
                sqlite: None,
                _dir: None,
                postgres: Some((admin, schema)),
            }
        }
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if let Some((admin, schema)) = &self.postgres {
            drop_postgres_schema(admin, schema);
        }
    }
}

fn a_fresh_database_is_migrated_only_by_migrate(backend: &'static str) {
    let db = Fresh::of(backend);
    let all: Vec<String> = ledger_store::all_migrations()
        .unwrap()
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    assert!(all.len() >= 9, "{all:?}");

    // --check lists everything as pending, exits 1, and creates nothing.
    let r = run(&db.url, &["--json", "migrate", "--check"]).expect(1);
    let json = r.json();
    assert_eq!(json["upToDate"], false);
    let pending: Vec<String> = serde_json::from_value(json["pending"].clone()).unwrap();
    assert_eq!(pending, all);
    if let Some(path) = &db.sqlite {
        assert!(!path.exists(), "--check created the SQLite file");
        // An empty file is an empty SQLite database: everything is pending on it too.
        std::fs::write(path, b"").unwrap();
    }
    let r = run(&db.url, &["migrate", "--check"]).expect(1);
    assert!(r.stdout.contains("pending migration(s)"), "{r:?}");
    for name in &all {
        assert!(r.stdout.contains(name.as_str()), "{name} in {r:?}");
    }
    // Twice: the check wrote nothing that makes anything look applied.
    let again = run(&db.url, &["--json", "migrate", "--check"]).expect(1);
    assert_eq!(again.json()["pending"], json["pending"]);

    // Other commands refuse the old database, and do not migrate it.
    for args in [
        &["verify"][..],
        &["compact"],
        &["accounts", "create", "--email", "a@example.com"],
        &["credits", "grant", "acct_x", "5", "--reason", "r"],
        &["keys", "revoke", "key_x"],
        &["prune", "--older-than", "1"],
    ] {
        let r = run(&db.url, args).expect(2);
        assert!(
            r.stderr.contains("pending migration(s)")
                && r.stderr.contains("run `shotledger migrate` first"),
            "{args:?}: {r:?}"
        );
    }
    run(&db.url, &["migrate", "--check"]).expect(1);

    // migrate applies all of them and lists them.
    let r = run(&db.url, &["--json", "migrate"]).expect(0);
    let applied: Vec<String> = serde_json::from_value(r.json()["applied"].clone()).unwrap();
    assert_eq!(applied, all);
    let r = run(&db.url, &["migrate", "--check"]).expect(0);
    assert!(r.stdout.contains("no pending migrations"), "{r:?}");
    assert_eq!(
        run(&db.url, &["--json", "migrate", "--check"]).json(),
        serde_json::json!({ "upToDate": true, "pending": [] })
    );
    let r = run(&db.url, &["migrate"]).expect(0);
    assert!(r.stdout.contains("no pending migrations"), "{r:?}");
    assert_eq!(
        run(&db.url, &["--json", "migrate"]).expect(0).json(),
        serde_json::json!({ "applied": [] })
    );
    run(&db.url, &["verify"]).expect(0);
}

on_both_backends!(a_fresh_database_is_migrated_only_by_migrate);
