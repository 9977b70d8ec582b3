//! The receiver over real HTTP, fed by the fake Polar, on SQLite and PostgreSQL.

use crate::common;

use std::sync::{Arc, Barrier};

use common::*;
use ledger_core::{AccountId, Credits, EntryKind, Page};
use ledger_store::Store;
use payments::SignedDelivery;
use serde_json::Value;
use test_support::fake_polar::FakePolar;
use test_support::on_both_backends;
use test_support::TestDb;
use webhook_receiver::RunningReceiver;

/// The receiver fed by the fake Polar, and an account that has bought `pack_pro` there
/// (the order's webhooks not sent yet).
fn pro_order(db: &TestDb) -> (FakePolar, RunningReceiver, AccountId, Value) {
    let (fake, payments, rx) = polar_receiver(db);
    let acct = account(&db.store);
    let order = bought(&fake, &payments, &acct, "pack_pro");
    (fake, rx, acct, order)
}

/// The account was credited by exactly one purchase, and the ledger verifies.
fn assert_purchased_once(db: &TestDb, acct: &AccountId) {
    let purchases = db
        .store
        .ledger()
        .history(acct, Page::new(100, 0).unwrap())
        .unwrap()
        .iter()
        .filter(|e| e.kind == EntryKind::Purchase)
        .count();
    assert_eq!(purchases, 1);
    assert_verified(&db.store);
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
    let stored = delivery(&db.store, &events[2].webhook_id).unwrap();
    assert_eq!(stored.event_type, "order.paid");
    assert_eq!(stored.outcome.as_deref(), Some("credited 1000"));
    assert_eq!(available(&db.store, &acct), c(1000));
    assert_purchased_once(&db, &acct);
}

fn the_same_delivery_five_times_at_once_credits_once(db: TestDb) {
    let (fake, rx, acct, order) = pro_order(&db);
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
    assert_purchased_once(&db, &acct);
}

fn bad_deliveries_change_nothing(db: TestDb) {
    let (fake, rx, acct, order) = pro_order(&db);
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
        assert!(delivery(&db.store, id).is_none(), "{id} was stored");
    }
    assert!(db
        .store
        .orders()
        .payment_order(order["id"].as_str().unwrap())
        .unwrap()
        .is_none());
    assert_eq!(available(&db.store, &acct), Credits::ZERO);
    // The genuine delivery still works afterwards.
    assert_eq!(fake.send(&fake.event("order.paid", &order), &url), 200);
    assert_eq!(available(&db.store, &acct), c(1000));
}

fn reordered_refunds_and_unhandled_events(db: TestDb) {
    let (fake, rx, acct, order) = pro_order(&db);
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
        delivery(&db.store, &other.webhook_id)
            .unwrap()
            .outcome
            .as_deref(),
        Some("ignored")
    );
    assert_eq!(available(&db.store, &acct), Credits::ZERO);
    let back: Credits = db
        .store
        .ledger()
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
    let s = demo_settings(&db);
    let payments = startup::payments(&s, db.store.clone()).unwrap();
    let rx = webhook_receiver::spawn(payments.clone()).unwrap();
    let acct = account(&db.store);
    let url = payments
        .create_checkout(&acct, payments.catalogue().find("pack_starter").unwrap())
        .unwrap();
    let path = demo_path(&url);
    let a = agent();
    let mut page = a.get(format!("{}{path}", rx.url())).call().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    // The page's own policy: its inline style and its form (to this server), nothing else.
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_holds_all(
        &csp,
        &[
            "default-src 'none'",
            "style-src 'unsafe-inline'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ],
    );
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.body_mut().read_to_string().unwrap();
    assert_demo_page(&html, &["Starter", "100", "$5.00"]);
    for _ in 0..2 {
        let r = pay_on_demo_page(&a, &rx, &path);
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
    assert_purchased_once(&db, &acct);
}

// -- issue 8 ------------------------------------------------------------------------------

fn without_a_provider_there_are_no_demo_pages(db: TestDb) {
    // The built-in defaults: no polar.access_token, no payments.provider.
    let payments = startup::payments(&settings(&db, None), db.store.clone()).unwrap();
    let rx = webhook_receiver::spawn(payments).unwrap();
    let acct = account(&db.store);
    // A demo checkout left over from a time when demo payments were on.
    db.store
        .orders()
        .record_checkout(&ledger_store::payments::CheckoutRecord {
            id: "demo_chk_left_over".into(),
            provider: ledger_store::payments::CheckoutProvider::Demo,
            account_id: acct.clone(),
            pack_id: "pack_enterprise".into(),
            credits: c(25_000).millis(),
            price_cents: 50_000,
            url: "http://localhost:8081/demo/checkout/demo_chk_left_over".into(),
            status: ledger_store::payments::CheckoutStatus::Open,
            order_id: None,
            created_at: now().millis(),
            paid_at: None,
            product_id: None,
            currency: Some("usd".into()),
        })
        .unwrap();
    let a = agent();
    for id in ["demo_chk_left_over", "x"] {
        let page = a
            .get(format!("{}/demo/checkout/{id}", rx.url()))
            .call()
            .unwrap();
        let pay = a
            .post(format!("{}/demo/checkout/{id}/pay", rx.url()))
            .send_empty()
            .unwrap();
        for (what, mut answer) in [("page", page), ("pay", pay)] {
            assert_eq!(answer.status().as_u16(), 404, "{what} of {id}");
            let body: serde_json::Value = answer.body_mut().read_json().unwrap();
            assert!(body["error"].is_string(), "{body}");
        }
    }
    assert_eq!(available(&db.store, &acct), Credits::ZERO);
}

fn json_of(r: &mut ureq::http::Response<ureq::Body>) -> serde_json::Value {
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    r.body_mut().read_json().expect("a JSON body")
}

/// The security headers of the api-server on every answer of the receiver too.
fn every_answer_carries_the_security_headers(db: TestDb) {
    let (_fake, _payments, rx) = polar_receiver(&db);
    let a = agent();
    let answers = [
        a.get(format!("{}/healthz", rx.url())).call().unwrap(),
        a.get(format!("{}/nope", rx.url())).call().unwrap(),
        a.get(rx.webhook_url()).call().unwrap(),
        a.post(rx.webhook_url())
            .header("content-type", "application/json")
            .send("{}")
            .unwrap(),
    ];
    for r in &answers {
        for (name, value) in http_edge::SECURITY_HEADERS {
            assert_eq!(
                r.headers().get(name).map(|v| v.to_str().unwrap()),
                Some(value),
                "{name} on a {} answer",
                r.status()
            );
        }
        assert_eq!(r.headers()["cache-control"], "no-store", "{}", r.status());
    }
}

fn every_answer_is_a_json_error(db: TestDb) {
    let (_fake, _payments, rx) = polar_receiver(&db);
    let a = agent();
    // A wrong method on a known path: 405 with Allow.
    let mut r = a.get(rx.webhook_url()).call().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers().get("allow").unwrap(), "POST");
    let body = json_of(&mut r);
    assert_eq!(body["code"], "METHOD_NOT_ALLOWED", "{body}");
    assert!(body["error"].as_str().unwrap().contains("POST"), "{body}");
    let mut r = a
        .post(format!("{}/healthz", rx.url()))
        .send_empty()
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers().get("allow").unwrap(), "GET");
    json_of(&mut r);
    // Unknown routes: JSON 404.
    let mut r = a.get(format!("{}/nope", rx.url())).call().unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(json_of(&mut r)["code"], "NOT_FOUND");
    // A body over the limit: JSON 413, nothing stored.
    let big = vec![b'x'; 2 << 20];
    let mut r = a
        .post(rx.webhook_url())
        .header("content-type", "application/json")
        .header("webhook-id", "msg_big")
        .header("webhook-timestamp", (now().millis() / 1000).to_string())
        .header("webhook-signature", "v1,AAAA")
        .send(&big[..])
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let body = json_of(&mut r);
    assert_eq!(body["code"], "PAYLOAD_TOO_LARGE", "{body}");
    assert!(delivery(&db.store, "msg_big").is_none());
}

fn a_cross_account_order_is_refused_and_kept_for_an_operator(db: TestDb) {
    let (fake, payments, rx) = polar_receiver(&db);
    let (a, b) = (account(&db.store), account(&db.store));
    let url = payments
        .create_checkout(&a, payments.catalogue().find("pack_starter").unwrap())
        .unwrap();
    let mut order = fake.pay(&fake.checkout_id_for_url(&url).unwrap());
    order["metadata"] = serde_json::json!({"account_id": b.as_str(), "pack_id": "pack_enterprise"});
    order["product_id"] = serde_json::Value::Null;
    let paid = fake.event("order.paid", &order);
    // Acknowledged (it is stored and kept), never credited.
    assert_eq!(fake.send(&paid, &rx.webhook_url()), 200);
    assert_eq!(available(&db.store, &b), Credits::ZERO);
    assert_eq!(available(&db.store, &a), Credits::ZERO);
    let stored = delivery(&db.store, &paid.webhook_id).unwrap();
    assert!(
        stored
            .outcome
            .as_deref()
            .unwrap_or("")
            .starts_with("refused"),
        "{stored:?}"
    );
    // Kept for an operator, with what our checkout said and the order as sent.
    let refusal = db
        .store
        .orders()
        .refusal(order["id"].as_str().unwrap())
        .unwrap()
        .expect("the refused order is recorded");
    assert_eq!(
        refusal.account_id.as_ref().map(|a| a.as_str()),
        Some(a.as_str())
    );
    assert!(refusal.reason.contains(b.as_str()), "{refusal:?}");
    assert!(refusal.order_json.contains("pack_enterprise"));
    // Polar's retry of it, and reconcile, change nothing.
    assert_eq!(fake.send(&paid, &rx.webhook_url()), 200);
    assert_eq!(available(&db.store, &b), Credits::ZERO);
    assert_verified(&db.store);
}

on_both_backends!(
    every_answer_carries_the_security_headers,
    without_a_provider_there_are_no_demo_pages,
    every_answer_is_a_json_error,
    a_cross_account_order_is_refused_and_kept_for_an_operator,
    a_paid_checkout_credits_once,
    the_same_delivery_five_times_at_once_credits_once,
    bad_deliveries_change_nothing,
    reordered_refunds_and_unhandled_events,
    health_and_unknown_routes,
    the_demo_checkout_pays_through_a_signed_webhook,
);

/// While the database cannot store a delivery, the receiver answers 503 with Retry-After
/// (so Polar retries) and never a 2xx. PostgreSQL only: the test drops the schema under
/// the running receiver, which an open SQLite file cannot be made to do.
#[test]
fn a_delivery_that_cannot_be_stored_is_answered_503() {
    use test_support::{drop_postgres_schema, postgres_schema};
    let (url, admin, schema) = postgres_schema();
    let store = Store::open(&url, &ledger_store::PoolOptions::default()).unwrap();
    let fake = test_support::fake_polar::FakePolar::start(
        TOKEN,
        SECRET,
        test_support::fake_polar::KeyMode::Legacy,
    );
    let mut s = settings_for(&url, Some(&fake.url()));
    for p in &mut s.credits.packs {
        p.polar_product_id = Some(format!("prod_{}", p.id));
    }
    let payments = startup::payments(&s, store.clone()).unwrap();
    fake.set_price("prod_pack_pro", 3500);
    let acct = account(&store);
    let order = bought(&fake, &payments, &acct, "pack_pro");
    let rx = webhook_receiver::spawn(payments).unwrap();
    drop_postgres_schema(&admin, &schema);
    let paid = fake.event("order.paid", &order);
    let signed = fake.sign(&paid, now().millis() / 1000);
    let mut r = agent()
        .post(rx.webhook_url())
        .header("content-type", "application/json")
        .header("webhook-id", &signed.webhook_id)
        .header("webhook-timestamp", signed.timestamp.to_string())
        .header("webhook-signature", &signed.signature)
        .send(signed.body.as_bytes())
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let body = json_of(&mut r);
    assert_eq!(body["code"], "DATABASE_UNAVAILABLE", "{body}");
    drop(rx);
}
