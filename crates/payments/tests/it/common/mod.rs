#![allow(dead_code)]

use ledger_core::{AccountId, CreditPack, Entry, EntryKind, Memo, Page};
use ledger_store::payments::{Refusal, TopupCharge};
use ledger_store::{Operation, Spend, Store};
use payments::Payments;
use settings::Settings;
use test_support::fake_polar::{FakePolar, KeyMode};
pub use test_support::polar::{bought, demo_settings, TOKEN};
use test_support::polar::{polar_env, polar_payments, settings_from};
use test_support::TestDb;
pub use test_support::{account, assert_verified, available, c, now};

/// A Standard-mode secret (bytes 0..31).
pub const SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Default settings on `db`; with `polar_url`, Polar mode against it (every pack gets a
/// product id `prod_<pack id>`), else no payment provider (the built-in default).
pub fn settings(db: &TestDb, polar_url: Option<&str>) -> Settings {
    settings_from(
        polar_env(&db.url, polar_url, SECRET, 1),
        polar_url.is_some(),
    )
}

/// A fake Polar and Payments in Polar mode on `db`; the fake charges each pack's price.
pub fn polar(db: &TestDb) -> (FakePolar, Payments) {
    let fake = FakePolar::start(TOKEN, SECRET, KeyMode::Standard);
    let payments = polar_payments(&fake, &settings(db, Some(&fake.url())), db.store.clone());
    (fake, payments)
}

pub fn pack(p: &Payments, id: &str) -> CreditPack {
    p.catalogue().find(id).expect("pack").clone()
}

pub fn entries(store: &Store, id: &AccountId) -> Vec<Entry> {
    store
        .ledger()
        .history(id, Page::new(100, 0).unwrap())
        .expect("history")
}

/// Spends `n` credits on a screenshot, strictly.
pub fn spend(store: &Store, acct: &AccountId, n: i64) {
    store
        .ledger()
        .apply(
            acct,
            None,
            Operation::Debit {
                kind: EntryKind::Usage,
                amount: c(n),
                spend: Spend::Strict,
                memo: Memo::new("Screenshot captured"),
            },
            now(),
        )
        .unwrap()
        .result
        .unwrap();
}

/// The refusal kept for `order_id`, if any.
pub fn refusal(store: &Store, order_id: &str) -> Option<Refusal> {
    store.orders().refusal(order_id).unwrap()
}

/// The top-up a standalone check starts for `acct` now, if any.
pub fn standalone_topup(store: &Store, acct: &AccountId) -> Option<TopupCharge> {
    store.orders().after_charge_standalone(acct, now()).unwrap()
}

pub fn of_kind(store: &Store, id: &AccountId, kind: EntryKind) -> Vec<Entry> {
    entries(store, id)
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

/// A small deterministic generator (xorshift64*), seeded per test.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}
