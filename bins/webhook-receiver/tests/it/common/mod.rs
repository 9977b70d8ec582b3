#![allow(dead_code)]

use std::time::Duration;

use ledger_core::{AccountId, Credits, Timestamp};
use ledger_store::testing::TestDb;
use ledger_store::{NewAccount, Store};
use payments::fake::{FakePolar, KeyMode};
use payments::Payments;
use settings::{Settings, Sources};
use webhook_receiver::RunningReceiver;

pub const TOKEN: &str = "polar_oat_test_token";
/// A legacy-mode Polar secret (the key is the UTF-8 of the whole string).
pub const SECRET: &str = "whsec_ovyN6cPrTv56AApvzCaJno08SSmGJmgbWilb33N2JuK";

pub fn env(db: &TestDb, polar_url: Option<&str>) -> Vec<(String, String)> {
    env_for(&db.url, polar_url)
}

/// [`env`] for a database given by its URL.
pub fn env_for(database_url: &str, polar_url: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![("DATABASE_URL".to_string(), database_url.to_owned())];
    if let Some(url) = polar_url {
        env.push(("SHOTLEDGER__POLAR__API_URL".into(), url.into()));
        env.push(("SHOTLEDGER__POLAR__ACCESS_TOKEN".into(), TOKEN.into()));
        env.push(("SHOTLEDGER__POLAR__WEBHOOK_SECRET".into(), SECRET.into()));
        env.push(("SHOTLEDGER__POLAR__TIMEOUT_SECS".into(), "2".into()));
        // Tests drive deliveries themselves; the periodic reconcile has its own test.
        env.push((
            "SHOTLEDGER__POLAR__RECONCILE_INTERVAL_SECS".into(),
            "0".into(),
        ));
    }
    env
}

pub fn settings(db: &TestDb, polar_url: Option<&str>) -> Settings {
    settings_for(&db.url, polar_url)
}

/// [`settings`] for a database given by its URL.
pub fn settings_for(database_url: &str, polar_url: Option<&str>) -> Settings {
    let mut s = Settings::load(Sources {
        file: None,
        working_folder_defaults: false,
        env: env_for(database_url, polar_url),
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

/// A fake Polar and a receiver (Polar mode) on `db`.
pub fn polar_receiver(db: &TestDb) -> (FakePolar, Payments, RunningReceiver) {
    let fake = FakePolar::start(TOKEN, SECRET, KeyMode::Legacy);
    let payments =
        Payments::new(&settings(db, Some(&fake.url())), db.store.clone()).expect("payments");
    for p in payments.catalogue().all() {
        fake.set_price(p.product_id.as_deref().unwrap(), p.price.get());
    }
    let receiver = webhook_receiver::spawn(payments.clone()).expect("receiver");
    (fake, payments, receiver)
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

pub fn assert_verified(store: &Store) {
    let report = store.maintenance().verify().expect("verify");
    assert!(report.ok, "ledger violations: {:?}", report.violations);
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Waits until `f` holds (polling), or fails after `secs`.
pub fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < until {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
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

/// The real `webhook-receiver` binary, killed when this is dropped.
pub struct Program(pub std::process::Child);

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the real binary on `db` and `port` with only the settings of [`env`] (and
/// `extra`) in its environment; returns once `/healthz` answers 200.
pub fn start_program(
    db: &TestDb,
    polar_url: Option<&str>,
    port: u16,
    extra: &[(&str, &str)],
) -> Program {
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_webhook-receiver"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("SHOTLEDGER__WEBHOOKS__BIND", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env(db, polar_url) {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let program = Program(cmd.spawn().expect("start webhook-receiver"));
    let health = format!("http://127.0.0.1:{port}/healthz");
    eventually(30, "the receiver to be ready", || {
        agent()
            .get(&health)
            .call()
            .is_ok_and(|r| r.status().as_u16() == 200)
    });
    program
}
