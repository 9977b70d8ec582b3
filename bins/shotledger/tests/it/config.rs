//! Usage and configuration errors exit 2 with a message naming what to fix; help exits 0.

use crate::common::{run, run_with};

#[test]
fn a_missing_config_file_exits_2_naming_the_flag() {
    let r = run_with(
        &[("DATABASE_URL", "sqlite:///nonexistent/x.db")],
        &["--config", "/no/such/file.toml", "verify"],
        None,
    )
    .expect(2);
    assert!(r.stderr.contains("--config"), "{r:?}");
    assert!(r.stderr.contains("/no/such/file.toml"), "{r:?}");
    assert!(r.stdout.is_empty(), "{r:?}");
}

#[test]
fn a_bad_database_url_exits_2_naming_the_key() {
    let r = run("mysql://root@127.0.0.1/x", &["verify"]).expect(2);
    assert!(r.stderr.contains("database.url"), "{r:?}");
}

#[test]
fn a_bad_value_in_the_environment_exits_2_naming_the_key() {
    let r = run_with(
        &[
            ("DATABASE_URL", "sqlite:///nonexistent/x.db"),
            ("SHOTLEDGER__CREDITS__RETENTION_MONTHS", "0"),
        ],
        &["compact"],
        None,
    )
    .expect(2);
    assert!(r.stderr.contains("credits.retention_months"), "{r:?}");
}

#[test]
fn a_config_file_is_read_and_its_keys_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ops.toml");
    std::fs::write(&file, "[credits]\nretention_months = 0\n").unwrap();
    let r = run_with(
        &[("DATABASE_URL", "sqlite:///nonexistent/x.db")],
        &["--config", file.to_str().unwrap(), "verify"],
        None,
    )
    .expect(2);
    assert!(r.stderr.contains("credits.retention_months"), "{r:?}");
}

#[test]
fn an_unreachable_postgres_exits_2_naming_it() {
    let r = run(
        "postgres://postgres@127.0.0.1:1/nothing?connect_timeout=2",
        &["verify"],
    )
    .expect(2);
    assert!(r.stderr.contains("PostgreSQL"), "{r:?}");
}

#[test]
fn a_missing_sqlite_file_is_refused_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let url = format!("sqlite://{}", path.display());
    for args in [
        &["verify"][..],
        &["compact"],
        &["accounts", "show", "acct_x"],
        &["prune", "--older-than", "30"],
    ] {
        let r = run(&url, args).expect(2);
        assert!(r.stderr.contains("run `shotledger migrate` first"), "{r:?}");
    }
    assert!(
        !path.exists(),
        "no command but migrate creates the database"
    );
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let url = "sqlite:///nonexistent/x.db";
    let r = run(url, &["frobnicate"]).expect(2);
    assert!(r.stderr.contains("frobnicate"), "{r:?}");
    run(url, &[]).expect(2);
    let r = run(url, &["credits", "grant", "acct_x", "5"]).expect(2);
    assert!(r.stderr.contains("--reason"), "{r:?}");
    let r = run(url, &["prune"]).expect(2);
    assert!(r.stderr.contains("--older-than"), "{r:?}");
    let r = run(url, &["--help"]).expect(0);
    for command in [
        "verify",
        "compact",
        "migrate",
        "accounts",
        "credits",
        "keys",
        "reconcile",
        "prune",
        "backup",
    ] {
        assert!(r.stdout.contains(command), "{command} in {r:?}");
    }
}
