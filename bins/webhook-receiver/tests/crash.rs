//! The real binary, killed after storing a delivery and before applying it, then
//! restarted: the order is credited exactly once (on SQLite and PostgreSQL).
//!
//! The crash is made with the test-only hook `SHOTLEDGER_TEST_CRASH_AFTER_STORE=1`, which
//! makes the process abort right after the delivery is stored.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use ledger_store::on_both_backends;
use ledger_store::testing::TestDb;
use payments::fake::{FakePolar, KeyMode};

struct Program(Child);

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(db: &TestDb, fake: &FakePolar, port: u16, crash: bool) -> Program {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_webhook-receiver"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("SHOTLEDGER__WEBHOOKS__BIND", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env(db, Some(&fake.url())) {
        cmd.env(k, v);
    }
    if crash {
        cmd.env(webhook_receiver::CRASH_AFTER_STORE_ENV, "1");
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

fn a_crash_after_storing_is_finished_on_restart(db: TestDb) {
    let fake = FakePolar::start(TOKEN, SECRET, KeyMode::Legacy);
    let acct = account(&db.store);
    // Bought through a checkout our settings make (as the api-server would).
    let payments = payments::Payments::new(&settings(&db, Some(&fake.url())), db.store.clone())
        .expect("payments");
    fake.set_price("prod_pack_pro", 3500);
    let order = bought(&fake, &payments, &acct, "pack_pro");
    let paid = fake.paid_events(&order).remove(2);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/api/webhooks/polar");

    let mut crashing = start(&db, &fake, port, true);
    let status = fake.send(&paid, &url);
    assert_eq!(status, 0, "the process dies before answering");
    let exit = crashing.0.wait().unwrap();
    assert!(!exit.success());
    let stored = db
        .store
        .delivery(&paid.webhook_id)
        .unwrap()
        .expect("stored before the crash");
    assert!(stored.processed_at.is_none());
    assert_eq!(available(&db.store, &acct), c(0));
    drop(crashing);

    let _restarted = start(&db, &fake, port, false);
    eventually(10, "start-up recovery to credit the order", || {
        available(&db.store, &acct) == c(1000)
            && db
                .store
                .delivery(&paid.webhook_id)
                .unwrap()
                .is_some_and(|d| d.processed_at.is_some())
    });
    // Polar's retry of the delivery it never got an answer for: acknowledged, no effect.
    assert_eq!(fake.send(&paid, &url), 200);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(available(&db.store, &acct), c(1000));
    let stored = db.store.delivery(&paid.webhook_id).unwrap().unwrap();
    assert_eq!(stored.outcome.as_deref(), Some("credited 1000"));
    assert_verified(&db.store);
}

on_both_backends!(a_crash_after_storing_is_finished_on_restart);
