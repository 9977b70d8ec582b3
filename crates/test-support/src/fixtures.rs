//! The small things tests build on: amounts, instants, accounts, the ledger check.

use std::time::{Duration, Instant};

use ledger_core::{AccountId, Credits, Timestamp};
use ledger_store::{NewAccount, Store};

/// A pinned instant, 2026-03-01T00:00:00Z, for tests that set the clock themselves.
pub const T0: i64 = 1_772_323_200_000;

/// `secs` seconds after [`T0`].
pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_millis(T0 + secs * 1000)
}

/// The wall clock, as the programs read it (webhooks are signed with real time).
pub fn now() -> Timestamp {
    payments::now()
}

/// `n` whole credits.
pub fn c(n: i64) -> Credits {
    Credits::whole(n)
}

/// A new account created at `when` with a signup bonus of `bonus` (zero grants nothing).
pub fn account_at(store: &Store, bonus: Credits, when: Timestamp) -> AccountId {
    store
        .ledger()
        .create_account(
            NewAccount {
                signup_bonus: bonus,
                ..NewAccount::default()
            },
            when,
        )
        .expect("account")
        .0
        .id
}

/// A new account without a bonus, created now.
pub fn account(store: &Store) -> AccountId {
    account_at(store, Credits::ZERO, now())
}

/// What the account can spend now.
pub fn available(store: &Store, id: &AccountId) -> Credits {
    store
        .ledger()
        .balance(id, now())
        .expect("balance")
        .available
}

/// The whole ledger passes `verify` (what `GET /admin/v1/verify` checks).
#[track_caller]
pub fn assert_verified(store: &Store) {
    let report = store.maintenance().verify().expect("verify");
    assert!(report.ok, "ledger violations: {:?}", report.violations);
}

/// Waits until `f` holds (polling every 50 ms), or fails after `secs`.
pub fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}
