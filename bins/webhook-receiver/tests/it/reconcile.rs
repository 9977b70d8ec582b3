//! The receiver reconciles with Polar by itself: an order whose webhooks never arrived is
//! credited, once.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use test_support::fake_polar::{FakePolar, KeyMode};
use test_support::on_both_backends;
use test_support::TestDb;

fn a_missed_order_is_credited_by_the_periodic_reconcile(db: TestDb) {
    let fake = FakePolar::start(TOKEN, SECRET, KeyMode::Legacy);
    let mut s = settings(&db, Some(&fake.url()));
    s.polar.reconcile_interval_secs = 1;
    let payments = startup::payments(&s, db.store.clone()).expect("payments");
    for p in payments.catalogue().all() {
        fake.set_price(p.product_id.as_deref().unwrap(), p.price.get());
    }
    let acct = account(&db.store);
    // Bought through our checkout and paid at Polar; no webhook is ever delivered.
    bought(&fake, &payments, &acct, "pack_pro");
    let _rx = webhook_receiver::spawn(payments).expect("receiver");
    let deadline = Instant::now() + Duration::from_secs(20);
    while available(&db.store, &acct) != c(1000) {
        assert!(
            Instant::now() < deadline,
            "the missed order was never credited"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Later reconciles find it applied and change nothing.
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(available(&db.store, &acct), c(1000));
    assert_verified(&db.store);
}

on_both_backends!(a_missed_order_is_credited_by_the_periodic_reconcile);
