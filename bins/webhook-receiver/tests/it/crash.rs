//! The real binary, killed after storing a delivery and before applying it, then
//! restarted: the order is credited exactly once (on SQLite and PostgreSQL).
//!
//! The crash is made with the test-only hook `SHOTLEDGER_TEST_CRASH_AFTER_STORE=1`, which
//! makes the process abort right after the delivery is stored.

use crate::common;

use std::time::Duration;

use common::*;
use test_support::fake_polar::{FakePolar, KeyMode};
use test_support::on_both_backends;
use test_support::TestDb;

fn a_crash_after_storing_is_finished_on_restart(db: TestDb) {
    let fake = FakePolar::start(TOKEN, SECRET, KeyMode::Legacy);
    let acct = account(&db.store);
    // Bought through a checkout our settings make (as the api-server would).
    let payments =
        startup::payments(&settings(&db, Some(&fake.url())), db.store.clone()).expect("payments");
    fake.set_price("prod_pack_pro", 3500);
    let order = bought(&fake, &payments, &acct, "pack_pro");
    let paid = fake.paid_events(&order).remove(2);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/api/webhooks/polar");

    let mut crashing = start_program(
        &db,
        Some(&fake.url()),
        port,
        &[(webhook_receiver::CRASH_AFTER_STORE_ENV, "1")],
    );
    let status = fake.send(&paid, &url);
    assert_eq!(status, 0, "the process dies before answering");
    let exit = crashing.0.wait().unwrap();
    assert!(!exit.success());
    let stored = delivery(&db.store, &paid.webhook_id).expect("stored before the crash");
    assert!(stored.processed_at.is_none());
    assert_eq!(available(&db.store, &acct), c(0));
    drop(crashing);

    let _restarted = start_program(&db, Some(&fake.url()), port, &[]);
    eventually(10, "start-up recovery to credit the order", || {
        available(&db.store, &acct) == c(1000)
            && delivery(&db.store, &paid.webhook_id).is_some_and(|d| d.processed_at.is_some())
    });
    // Polar's retry of the delivery it never got an answer for: acknowledged, no effect.
    assert_eq!(fake.send(&paid, &url), 200);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(available(&db.store, &acct), c(1000));
    let stored = delivery(&db.store, &paid.webhook_id).unwrap();
    assert_eq!(stored.outcome.as_deref(), Some("credited 1000"));
    assert_verified(&db.store);
}

on_both_backends!(a_crash_after_storing_is_finished_on_restart);
