#![allow(dead_code)]

use ledger_core::*;
use ledger_store::{Applied, Idempotency, NewAccount, Operation, Outcome, Spend, Store};

pub const T0: i64 = 1_772_323_200_000; // 2026-03-01T00:00:00Z

pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_millis(T0 + secs * 1000)
}

pub fn c(n: i64) -> Credits {
    Credits::whole(n)
}

pub fn account(store: &Store, bonus: i64) -> AccountId {
    store
        .ledger()
        .create_account(
            NewAccount {
                signup_bonus: c(bonus),
                ..NewAccount::default()
            },
            at(0),
        )
        .unwrap()
        .0
        .id
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

pub fn assert_clean(store: &Store) {
    let report = store.maintenance().verify().unwrap();
    assert!(report.ok, "verify found: {:?}", report.violations);
}
