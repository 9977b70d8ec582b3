#![allow(dead_code)]

use ledger_core::*;
use ledger_store::{Applied, Idempotency, Operation, Outcome, Spend, Store};
pub use test_support::assert_verified as assert_clean;
pub use test_support::{at, c, on_both_backends, TestDb};

/// An account opened at `at(0)` with a signup bonus of `bonus` credits.
pub fn account(store: &Store, bonus: i64) -> AccountId {
    test_support::account_at(store, c(bonus), at(0))
}

pub fn credit(store: &Store, id: &AccountId, n: i64, now: Timestamp) -> Entry {
    entry(
        store
            .ledger()
            .apply(
                id,
                None,
                Operation::Credit {
                    spec: GrantSpec::new(GrantSource::Purchase, c(n)),
                    memo: Memo::new("Purchased"),
                },
                now,
            )
            .unwrap(),
    )
}

pub fn debit_op(n: Credits) -> Operation {
    Operation::Debit {
        kind: EntryKind::Usage,
        amount: n,
        spend: Spend::Strict,
        memo: Memo::new("Screenshot captured").source("Screenshot"),
    }
}

pub fn entry(a: Applied) -> Entry {
    match a.result {
        Ok(Outcome::Entry(e)) => e,
        other => panic!("expected an entry, got {other:?}"),
    }
}

pub fn hold(a: Applied) -> Hold {
    match a.result {
        Ok(Outcome::Hold(h)) => h,
        other => panic!("expected a hold, got {other:?}"),
    }
}

pub fn idem(key: &str, fingerprint: &str) -> Idempotency {
    Idempotency::new(
        IdempotencyKey::parse(key).unwrap(),
        Fingerprint::new(fingerprint),
    )
}

/// Runs `migrate` on a fresh SQLite file, then opens the result as a store for `check`.
pub fn on_a_fresh_sqlite_file(
    migrate: impl FnOnce(&mut ledger_store::DbConnection),
    check: impl FnOnce(&Store),
) {
    use diesel::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let mut conn = ledger_store::DbConnection::Sqlite(
        diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap(),
    );
    migrate(&mut conn);
    drop(conn);
    let store = Store::open(
        &format!("sqlite://{}", path.display()),
        &ledger_store::PoolOptions::default(),
    )
    .unwrap();
    check(&store);
}
