//! The receiver over real HTTP, fed by the fake Polar, on SQLite and PostgreSQL.

mod common;

use std::sync::{Arc, Barrier};

use common::*;
use ledger_core::{Credits, EntryKind, Page};
use ledger_store::on_both_backends;
use ledger_store::testing::TestDb;
use payments::{Payments, SignedDelivery};

fn purchases(db: &TestDb, acct: &ledger_core::AccountId) -> usize {
    db.store
        .history(acct, Page::new(100, 0).unwrap())
        .unwrap()
        .iter()
        .filter(|e| e.kind == EntryKind::Purchase)
        .count()
}

fn a_paid_checkout_credits_once(db: TestDb) {
    let (fake, payments, rx) = polar_receiver(&db);
    let acct = account(&db.store);
    let url = payments
        .create_checkout(&acct, payments.catalogue().find("pack_pro").unwrap())
        .unwrap();
    let order = fake.pay(&fake.checkout_id_for_url(&url).unwrap());
    let events = fake.paid_events(&order);
    for e in &events {
        assert_eq!(fake.send(e, &rx.webhook_url()), 200);
    }
    assert_eq!(available(&db.store, &acct), c(1000));
    // Polar's retries (same webhook id, re-signed) and redeliveries change nothing.
    for e in &events {
        let statuses = fake.deliver_with_retries(
            e,
            &rx.webhook_url(),
            3,
            std::time::Duration::from_millis(10),
        );
        assert_eq!(statuses, vec![200]);
    }
    let stored = db.store.delivery(&events[2].webhook_id).unwrap().unwrap();
    assert_eq!(stored.event_type, "order.paid");
    assert_eq!(stored.outcome.as_deref(), Some("credited 1000"));
    assert_eq!(available(&db.store, &acct), c(1000));
    assert_eq!(purchases(&db, &acct), 1);
    assert_verified(&db.store);
}

fn the_same_delivery_five_times_at_once_credits_once(db: TestDb) {
    let (fake, _payments, rx) = polar_receiver(&db);
    let acct = account(&db.store);
    let order = fake.create_paid_order("prod_pack_pro", 3500, acct.as_str(), "pack_pro");
    let paid = fake.paid_events(&order).remove(2);
    let fake = Arc::new(fake);
    let barrier = Arc::new(Barrier::new(5));
    let threads: Vec<_> = (0..5)
        .map(|_| {
            let (fake, paid, barrier, url) = (
                fake.clone(),
                paid.clone(),
                barrier.clone(),
                rx.webhook_url(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                fake.send(&paid, &url)
            })
        })
        .collect();
    for t in threads {
        let status = t.join().unwrap();
        assert!((200..300).contains(&status), "{status}");
    }
    eventually(5, "the credit", || available(&db.store, &acct) == c(1000));
    assert_eq!(purchases(&db, &acct), 1);
    assert_verified(&db.store);
}

fn bad_deliveries_change_nothing(db: TestDb) {
    let (fake, _payments, rx) = polar_receiver(&db);
    let acct = account(&db.store);
    let order = fake.create_paid_order("prod_pack_pro", 3500, acct.as_str(), "pack_pro");
    let url = rx.webhook_url();
    let mut tried = Vec::new();
    let mut check = |status: u16, expected: u16, id: &str, what: &str| {
        assert_eq!(status, expected, "{what}");
        tried.push(id.to_owned());
    };
    let e = fake.event("order.paid", &order);
    check(
        fake.send_skewed(&e, &url, -301),
        401,
        &e.webhook_id,
        "stale",
    );
    let e = fake.event("order.paid", &order);
    check(
        fake.send_skewed(&e, &url, 301),
        401,
        &e.webhook_id,
        "future",
    );
    let e = fake.event("order.paid", &order);
    check(
        fake.send_with_secret(&e, &url, "whsec_notTheRightSecretAtAll0000000000000000000"),
        401,
        &e.webhook_id,
        "wrong secret",
    );
    let e = fake.event("order.paid", &order);
    let mut tampered = fake.sign(&e, now().millis() / 1000);
    tampered.body = tampered.body.replace("pack_pro", "pack_enterprise");
    check(
        fake.send_signed(&tampered, &url),
        401,
        &e.webhook_id,
        "tampered body",
    );
    let e = fake.event("order.paid", &order);
    let signed: SignedDelivery = fake.sign(&e, now().millis() / 1000);
    for (missing, name) in [
        (0, "webhook-id"),
        (1, "webhook-timestamp"),
        (2, "webhook-signature"),
    ] {
        let mut req = agent()
            .post(&url)
            .header("content-type", "application/json");
        if missing != 0 {
            req = req.header("webhook-id", &signed.webhook_id);
        }
        if missing != 1 {
            req = req.header("webhook-timestamp", signed.timestamp.to_string());
        }
        if missing != 2 {
            req = req.header("webhook-signature", &signed.signature);
        }
        let status = req.send(signed.body.as_bytes()).unwrap().status().as_u16();
        check(status, 400, &e.webhook_id, name);
    }
    let e = fake.event("order.paid", &order);
    let mut garbled = fake.sign(&e, now().millis() / 1000);
    garbled.timestamp = 0;
    garbled.signature = "v1,".into();
    check(
        fake.send_signed(&garbled, &url),
        401,
        &e.webhook_id,
        "empty signature",
    );
    for id in &tried {
        assert!(db.store.delivery(id).unwrap().is_none(), "{id} was stored");
    }
    assert!(db
        .store
        .payment_order(order["id"].as_str().unwrap())
        .unwrap()
        .is_none());
    assert_eq!(available(&db.store, &acct), Credits::ZERO);
    // The genuine delivery still works afterwards.
    assert_eq!(fake.send(&fake.event("order.paid", &order), &url), 200);
    assert_eq!(available(&db.store, &acct), c(1000));
}

fn reordered_refunds_and_unhandled_events(db: TestDb) {
    let (fake, _payments, rx) = polar_receiver(&db);
    let acct = account(&db.store);
    let order = fake.create_paid_order("prod_pack_pro", 3500, acct.as_str(), "pack_pro");
    let id = order["id"].as_str().unwrap().to_owned();
    let mut paid = fake.paid_events(&order);
    let refund = fake.refund(&id, 3500);
    // Refund first, then order.paid, then the earlier order events.
    for e in refund
        .iter()
        .chain([paid.remove(2)].iter())
        .chain(paid.iter())
    {
        assert_eq!(fake.send(e, &rx.webhook_url()), 200);
    }
    let other = fake.event(
        "checkout.updated",
        &serde_json::json!({"id": "c", "status": "succeeded"}),
    );
    assert_eq!(fake.send(&other, &rx.webhook_url()), 200);
    assert_eq!(
        db.store
            .delivery(&other.webhook_id)
            .unwrap()
            .unwrap()
            .outcome
            .as_deref(),
        Some("ignored")
    );
    assert_eq!(available(&db.store, &acct), Credits::ZERO);
    let back: Credits = db
        .store
        .history(&acct, Page::new(100, 0).unwrap())
        .unwrap()
        .iter()
        .filter(|e| e.kind == EntryKind::PurchaseRefund)
        .map(|e| e.amount)
        .sum();
    assert_eq!(back, -c(1000));
    assert_verified(&db.store);
}

fn health_and_unknown_routes(db: TestDb) {
    let (_fake, _payments, rx) = polar_receiver(&db);
    let a = agent();
    assert_eq!(
        a.get(format!("{}/healthz", rx.url()))
            .call()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let mut r = a.get(format!("{}/nope", rx.url())).call().unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let body: serde_json::Value = r.body_mut().read_json().unwrap();
    assert!(body["error"].is_string());
    // Polar mode serves no demo pages.
    assert_eq!(
        a.get(format!("{}/demo/checkout/x", rx.url()))
            .call()
            .unwrap()
            .status()
            .as_u16(),
        404
    );
}

fn the_demo_checkout_pays_through_a_signed_webhook(db: TestDb) {
    let s = settings(&db, None);
    let payments = Payments::new(&s, db.store.clone()).unwrap();
    let rx = webhook_receiver::spawn(payments.clone()).unwrap();
    let acct = account(&db.store);
    let url = payments
        .create_checkout(&acct, payments.catalogue().find("pack_starter").unwrap())
        .unwrap();
    let path = url
        .strip_prefix("http://localhost:8081")
        .expect(&url)
        .to_owned();
    let a = agent();
    let mut page = a.get(format!("{}{path}", rx.url())).call().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.body_mut().read_to_string().unwrap();
    for needle in [
        "TEST PAYMENT — no money moves",
        "Starter",
        "100",
        "$5.00",
        "<button",
    ] {
        assert!(html.contains(needle), "{needle} missing from {html}");
    }
    for _ in 0..2 {
        let r = a
            .post(format!("{}{path}/pay", rx.url()))
            .send_empty()
            .unwrap();
        assert_eq!(r.status().as_u16(), 303);
        assert_eq!(
            r.headers().get("location").unwrap(),
            "http://localhost:8080/"
        );
        assert_eq!(available(&db.store, &acct), c(100));
    }
    let html = a
        .get(format!("{}{path}", rx.url()))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(html.contains("is paid"));
    assert_eq!(purchases(&db, &acct), 1);
    assert_verified(&db.store);
}

on_both_backends!(
    a_paid_checkout_credits_once,
    the_same_delivery_five_times_at_once_credits_once,
    bad_deliveries_change_nothing,
    reordered_refunds_and_unhandled_events,
    health_and_unknown_routes,
    the_demo_checkout_pays_through_a_signed_webhook,
);
