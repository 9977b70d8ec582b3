#![allow(dead_code)]

use payments::Payments;
use settings::Settings;
use test_support::fake_polar::{FakePolar, KeyMode};
use test_support::polar::{polar_env, polar_payments, settings_from};
use test_support::TestDb;
use webhook_receiver::RunningReceiver;

pub use test_support::polar::{bought, demo_settings, TOKEN};
pub use test_support::{
    account, agent, assert_verified, available, c, eventually, exchange, free_port, now,
};

/// A legacy-mode Polar secret (the key is the UTF-8 of the whole string).
pub const SECRET: &str = "whsec_ovyN6cPrTv56AApvzCaJno08SSmGJmgbWilb33N2JuK";

pub fn env(db: &TestDb, polar_url: Option<&str>) -> Vec<(String, String)> {
    env_for(&db.url, polar_url)
}

/// [`env`] for a database given by its URL.
pub fn env_for(database_url: &str, polar_url: Option<&str>) -> Vec<(String, String)> {
    let mut env = polar_env(database_url, polar_url, SECRET, 2);
    if polar_url.is_some() {
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
    settings_from(env_for(database_url, polar_url), polar_url.is_some())
}

/// A fake Polar and a receiver (Polar mode) on `db`.
pub fn polar_receiver(db: &TestDb) -> (FakePolar, Payments, RunningReceiver) {
    let fake = FakePolar::start(TOKEN, SECRET, KeyMode::Legacy);
    let payments = polar_payments(&fake, &settings(db, Some(&fake.url())), db.store.clone());
    let receiver = webhook_receiver::spawn(payments.clone()).expect("receiver");
    (fake, payments, receiver)
}

/// The real `webhook-receiver` binary, killed when this is dropped.
pub struct Program(pub std::process::Child);

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    test_support::wait_healthy(addr, std::time::Duration::from_secs(30))
        .expect("the receiver to be ready");
    program
}

/// The delivery stored under `webhook_id`, if any.
pub fn delivery(
    store: &ledger_store::Store,
    webhook_id: &str,
) -> Option<ledger_store::payments::StoredDelivery> {
    store.orders().delivery(webhook_id).unwrap()
}

/// The path of a demo page the receiver links to at `url` (its public URL cut off).
pub fn demo_path(url: &str) -> String {
    url.strip_prefix("http://localhost:8081")
        .expect(url)
        .to_owned()
}

/// Asserts that `html` holds every one of `needles`.
pub fn assert_holds_all(html: &str, needles: &[&str]) {
    for needle in needles {
        assert!(html.contains(needle), "{needle} missing from {html}");
    }
}

/// Asserts that `html` is a demo page (its test-payment banner and its pay button) that
/// shows each of `shown`.
pub fn assert_demo_page(html: &str, shown: &[&str]) {
    assert_holds_all(html, &["TEST PAYMENT — no money moves", "<button"]);
    assert_holds_all(html, shown);
}

/// Submits the pay form of the demo page at `path` of `rx`.
pub fn pay_on_demo_page(
    a: &ureq::Agent,
    rx: &RunningReceiver,
    path: &str,
) -> ureq::http::Response<ureq::Body> {
    a.post(format!("{}{path}/pay", rx.url()))
        .send_empty()
        .unwrap()
}
