#![allow(dead_code)]

use ledger_core::{AccountId, CreditPack, Credits, Entry, EntryKind, Page, Timestamp};
use ledger_store::testing::TestDb;
use ledger_store::{NewAccount, Store};
use payments::fake::{FakePolar, KeyMode};
use payments::Payments;
use settings::{Settings, Sources};

pub const TOKEN: &str = "polar_oat_test_token";
/// A Standard-mode secret (bytes 0..31).
pub const SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Default settings on `db`; with `polar_url`, Polar mode against it (every pack gets a
/// product id `prod_<pack id>`), else no payment provider (the built-in default).
pub fn settings(db: &TestDb, polar_url: Option<&str>) -> Settings {
    let mut env = vec![("DATABASE_URL".to_string(), db.url.clone())];
    if let Some(url) = polar_url {
        env.push(("SHOTLEDGER__POLAR__API_URL".into(), url.into()));
        env.push(("SHOTLEDGER__POLAR__ACCESS_TOKEN".into(), TOKEN.into()));
        env.push(("SHOTLEDGER__POLAR__WEBHOOK_SECRET".into(), SECRET.into()));
        env.push(("SHOTLEDGER__POLAR__TIMEOUT_SECS".into(), "1".into()));
    }
    let mut s = Settings::load(Sources {
        file: None,
        working_folder_defaults: false,
        env,
    })
    .expect("test settings");
    if polar_url.is_some() {
        for p in &mut s.credits.packs {
            p.polar_product_id = Some(format!("prod_{}", p.id));
        }
    }
    s
}

/// Default settings with the demo provider asked for by name (it is never the default).
pub fn demo_settings(db: &TestDb) -> Settings {
    let mut s = settings(db, None);
    s.payments.provider = "demo".into();
    s
}

/// A fake Polar and Payments in Polar mode on `db`; the fake charges each pack's price.
pub fn polar(db: &TestDb) -> (FakePolar, Payments) {
    let fake = FakePolar::start(TOKEN, SECRET, KeyMode::Standard);
    let s = settings(db, Some(&fake.url()));
    let payments = Payments::new(&s, db.store.clone()).expect("payments");
    for p in payments.catalogue().all() {
        fake.set_price(p.product_id.as_deref().unwrap(), p.price.get());
    }
    (fake, payments)
}

pub fn now() -> Timestamp {
    payments::now()
}

pub fn account(store: &Store) -> AccountId {
    store
        .ledger()
        .create_account(NewAccount::default(), now())
        .expect("account")
        .0
        .id
}

pub fn available(store: &Store, id: &AccountId) -> Credits {
    store
        .ledger()
        .balance(id, now())
        .expect("balance")
        .available
}

pub fn c(n: i64) -> Credits {
    Credits::whole(n)
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

pub fn of_kind(store: &Store, id: &AccountId, kind: EntryKind) -> Vec<Entry> {
    entries(store, id)
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

pub fn assert_verified(store: &Store) {
    let report = store.maintenance().verify().expect("verify");
    assert!(report.ok, "ledger violations: {:?}", report.violations);
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

/// An order paid at the fake for a checkout `payments` made for `acct`: what a customer
/// who bought `pack_id` through the api-server produces.
pub fn bought(
    fake: &FakePolar,
    payments: &Payments,
    acct: &AccountId,
    pack_id: &str,
) -> serde_json::Value {
    fake.buy(payments, acct, pack_id)
}
