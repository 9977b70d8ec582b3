//! Checkouts against the fake Polar (and demo checkouts), and reconcile.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use ledger_core::EntryKind;
use payments::PaymentsError;
use test_support::fake_polar::{Failure, FakePolar, KeyMode};
use test_support::on_both_backends;
use test_support::TestDb;

fn a_checkout_carries_everything_polar_needs(db: TestDb) {
    let (fake, p) = polar(&db);
    let acct = account(&db.store);
    let url = p
        .create_checkout(&acct, &pack(&p, "pack_pro"))
        .expect("checkout");
    let id = fake
        .checkout_id_for_url(&url)
        .expect("the URL of a checkout the fake made");
    let req = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(req.path, "/v1/checkouts/");
    assert_eq!(
        req.authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(req.body["products"], serde_json::json!(["prod_pack_pro"]));
    assert_eq!(req.body["metadata"]["account_id"], acct.as_str());
    assert_eq!(req.body["metadata"]["pack_id"], "pack_pro");
    assert_eq!(req.body["external_customer_id"], acct.as_str());
    assert_eq!(req.body["success_url"], "http://localhost:8080/");
    // A pack is sold at its price: the amount paid must be the price we recorded.
    assert_eq!(req.body["allow_discount_codes"], false);
    // Recorded before the URL is handed out (a paid order is credited from it); Polar's
    // own view agrees.
    let record = db.store.orders().checkout(&id).unwrap().unwrap();
    assert_eq!(
        (record.provider.as_str(), record.pack_id.as_str()),
        ("polar", "pack_pro")
    );
    assert_eq!(
        (
            record.account_id.as_str(),
            record.price_cents,
            record.credits
        ),
        (acct.as_str(), 3500, c(1000).millis())
    );
    assert_eq!(record.product_id.as_deref(), Some("prod_pack_pro"));
    assert_eq!(record.currency.as_deref(), Some("usd"));
    let client = payments::polar::PolarClient::new(&fake.url(), TOKEN, Duration::from_secs(2));
    assert_eq!(client.checkout(&id).unwrap().url, url);
    // Paying it makes an order carrying the checkout's metadata.
    let order = fake.pay(&id);
    let got = client.order(order["id"].as_str().unwrap()).unwrap();
    assert_eq!(got.metadata_str("account_id"), Some(acct.as_str()));
    assert_eq!(got.net_amount, 3500);
}

fn polar_failures_are_provider_errors(db: TestDb) {
    let (fake, p) = polar(&db);
    let acct = account(&db.store);
    let pro = pack(&p, "pack_pro");
    for (failure, status) in [
        (Failure::Status(422), Some(422)),
        (Failure::Status(500), Some(500)),
        (Failure::Status(503), Some(503)),
        (Failure::Delay(Duration::from_secs(3)), None),
    ] {
        fake.fail_next(failure);
        let started = Instant::now();
        match p.create_checkout(&acct, &pro) {
            Err(PaymentsError::Provider { status: s, message }) => {
                assert_eq!(s, status, "{message}");
                assert!(!message.is_empty());
            }
            other => panic!("{failure:?}: {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "polar.timeout_secs bounds the wait"
        );
    }
    // A wrong token: Polar's 401.
    let mut s = settings(&db, Some(&fake.url()));
    s.polar.access_token = "polar_oat_wrong".into();
    let wrong = startup::payments(&s, db.store.clone()).unwrap();
    match wrong.create_checkout(&acct, &pro) {
        Err(PaymentsError::Provider {
            status: Some(401),
            message,
        }) => assert!(message.contains("access token"), "{message}"),
        other => panic!("{other:?}"),
    }
    // Nothing answering at all.
    let gone = fake.url();
    drop(fake);
    let mut s = settings(&db, Some(&gone));
    s.polar.timeout_secs = 1;
    let nobody = startup::payments(&s, db.store.clone()).unwrap();
    assert!(matches!(
        nobody.create_checkout(&acct, &pro),
        Err(PaymentsError::Provider { status: None, .. })
    ));
}

fn a_pack_without_a_product_is_not_configured(db: TestDb) {
    let (_fake, p) = polar(&db);
    let acct = account(&db.store);
    let mut pro = pack(&p, "pack_pro");
    pro.product_id = None;
    let e = p.create_checkout(&acct, &pro).unwrap_err();
    assert!(matches!(e, PaymentsError::ProductNotConfigured { .. }));
    assert_eq!(e.to_string(), "Product not configured for this pack");
}

fn demo_checkouts_are_local_and_need_no_product(db: TestDb) {
    let s = demo_settings(&db);
    let p = startup::payments(&s, db.store.clone()).unwrap();
    assert!(p.is_demo());
    let acct = account(&db.store);
    let starter = pack(&p, "pack_starter");
    assert!(starter.product_id.is_none());
    let url = p.create_checkout(&acct, &starter).unwrap();
    let id = url
        .strip_prefix("http://localhost:8081/demo/checkout/")
        .expect(&url);
    let view = p.demo_checkout(id).unwrap().unwrap();
    assert_eq!(
        (
            view.pack_name.as_str(),
            view.credits,
            view.price_cents,
            view.paid
        ),
        ("Starter", c(100), 500, false)
    );
    // The generated secret is kept: a second process signs and verifies with the same.
    let again = startup::payments(&s, db.store.clone()).unwrap();
    let deliveries = p.demo_pay(id, now()).unwrap().unwrap();
    assert_eq!(deliveries.len(), 3);
    for d in &deliveries {
        let h = payments::SignedHeaders {
            id: Some(&d.webhook_id),
            timestamp: Some(&d.timestamp.to_string()),
            signature: Some(&d.signature),
        };
        again
            .receive(h, d.body.as_bytes(), now())
            .expect("the demo secret is shared");
    }
}

fn reconcile_applies_missed_orders_once(db: TestDb) {
    let (fake, p) = polar(&db);
    let acct = account(&db.store);
    let seen = bought(&fake, &p, &acct, "pack_pro");
    let missed = bought(&fake, &p, &acct, "pack_starter");
    let refunded = bought(&fake, &p, &acct, "pack_starter");
    fake.refund(refunded["id"].as_str().unwrap(), 250);
    let paid = fake.paid_events(&seen).remove(2);
    p.process_event(&paid.event_type, &paid.body, now())
        .unwrap();
    assert_eq!(available(&db.store, &acct), c(1000));
    let report = p.reconcile(now()).unwrap();
    assert_eq!((report.orders, report.credited, report.refunds), (3, 2, 1));
    // 1,000 + 100 + (100 − half of it refunded).
    assert_eq!(available(&db.store, &acct), c(1150));
    let again = p.reconcile(now()).unwrap();
    assert_eq!((again.credited, again.refunds), (0, 0));
    assert_eq!(available(&db.store, &acct), c(1150));
    assert_eq!(of_kind(&db.store, &acct, EntryKind::Purchase).len(), 3);
    // A late webhook for a reconciled order changes nothing.
    let late = fake.paid_events(&missed).remove(2);
    assert_eq!(
        p.process_event(&late.event_type, &late.body, now())
            .unwrap(),
        "already credited"
    );
    assert_verified(&db.store);
}

fn reconcile_pages_through_every_order(db: TestDb) {
    let fake = FakePolar::start(TOKEN, SECRET, KeyMode::Legacy);
    let p = startup::payments(&settings(&db, Some(&fake.url())), db.store.clone()).unwrap();
    fake.set_price("prod_pack_starter", 500);
    let acct = account(&db.store);
    for _ in 0..105 {
        bought(&fake, &p, &acct, "pack_starter");
    }
    let report = p.reconcile(now()).unwrap();
    assert_eq!((report.orders, report.credited), (105, 105));
    assert_eq!(available(&db.store, &acct), c(10_500));
    assert_verified(&db.store);
}

fn no_provider_sells_nothing_and_receives_nothing(db: TestDb) {
    let mut s = settings(&db, None);
    s.polar.reconcile_interval_secs = 60;
    let p = startup::payments(&s, db.store.clone()).unwrap();
    assert!(!p.is_configured() && !p.is_demo());
    let acct = account(&db.store);
    let e = p
        .create_checkout(&acct, &pack(&p, "pack_enterprise"))
        .unwrap_err();
    assert!(matches!(e, PaymentsError::NotConfigured), "{e}");
    assert!(e.to_string().contains("polar.access_token"), "{e}");
    assert!(e.to_string().contains("payments.provider"), "{e}");
    assert!(db.store.orders().checkouts_of(&acct).unwrap().is_empty());
    let h = payments::SignedHeaders {
        id: Some("msg_1"),
        timestamp: Some("1"),
        signature: Some("v1,AAAA"),
    };
    let e = p.receive(h, b"{}", now()).unwrap_err();
    assert!(matches!(e, PaymentsError::NotConfigured), "{e}");
    assert!(db.store.orders().delivery("msg_1").unwrap().is_none());
    assert!(p.reconcile_every().is_none(), "nothing to reconcile with");
    assert!(p.reconcile(now()).is_err());
    let on = payments::AutoTopupRequest {
        enabled: true,
        threshold_credits: c(10),
        pack_id: "pack_starter".into(),
    };
    let e = p.put_auto_topup(&acct, &on, now()).unwrap_err();
    assert!(matches!(e, PaymentsError::NotConfigured), "{e}");
}

on_both_backends!(
    no_provider_sells_nothing_and_receives_nothing,
    a_checkout_carries_everything_polar_needs,
    polar_failures_are_provider_errors,
    a_pack_without_a_product_is_not_configured,
    demo_checkouts_are_local_and_need_no_product,
    reconcile_applies_missed_orders_once,
    reconcile_pages_through_every_order,
);
