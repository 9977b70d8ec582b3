//! Exactly-once crediting and refunds, through the same path the receiver uses
//! (`Payments::process_event`), on SQLite and PostgreSQL.

use crate::common;

use std::sync::{Arc, Barrier};

use common::*;
use ledger_core::{Credits, EntryKind, Memo};
use ledger_store::Operation;
use serde_json::Value;
use test_support::fake_polar::Event;
use test_support::on_both_backends;
use test_support::TestDb;

fn process(p: &payments::Payments, e: &Event) -> String {
    p.process_event(&e.event_type, &e.body, now())
        .expect("processed")
}

/// The checkout record `order` names.
fn checkout_of(
    store: &ledger_store::Store,
    order: &Value,
) -> ledger_store::payments::CheckoutRecord {
    store
        .orders()
        .checkout(order["checkout_id"].as_str().unwrap())
        .unwrap()
        .unwrap()
}

fn created_and_updated_never_credit(db: TestDb) {
    let (fake, p) = polar(&db);
    let acct = account(&db.store);
    let order = bought(&fake, &p, &acct, "pack_pro");
    let events = fake.paid_events(&order);
    assert_eq!(process(&p, &events[0]), "ignored");
    assert_eq!(process(&p, &events[1]), "ignored");
    assert_eq!(available(&db.store, &acct), Credits::ZERO);
    assert_eq!(process(&p, &events[2]), "credited 1000");
    for e in &events {
        process(&p, e);
    }
    assert_eq!(process(&p, &events[2]), "already credited");
    assert_eq!(available(&db.store, &acct), c(1000));
    let purchases = of_kind(&db.store, &acct, EntryKind::Purchase);
    assert_eq!(purchases.len(), 1);
    assert_eq!(purchases[0].description, "Purchased 1,000 credits");
    assert_eq!(purchases[0].reference_id.as_deref(), order["id"].as_str());
    assert_eq!(purchases[0].amount, c(1000));
    assert_verified(&db.store);
}

fn the_same_paid_order_five_times_at_once_credits_once(db: TestDb) {
    let (fake, p) = polar(&db);
    let acct = account(&db.store);
    let order = bought(&fake, &p, &acct, "pack_business");
    let paid = fake.paid_events(&order).remove(2);
    let barrier = Arc::new(Barrier::new(5));
    let threads: Vec<_> = (0..5)
        .map(|_| {
            let (p, paid, barrier) = (p.clone(), paid.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                process(&p, &paid)
            })
        })
        .collect();
    let outcomes: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| o.starts_with("credited"))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(available(&db.store, &acct), c(5000));
    assert_eq!(of_kind(&db.store, &acct, EntryKind::Purchase).len(), 1);
    assert_verified(&db.store);
}

fn refunds_take_back_once_in_any_order(db: TestDb) {
    let (fake, p) = polar(&db);
    let mut rng = Rng::new(0x5eed_0001);
    for round in 0..6 {
        let acct = account(&db.store);
        let order = bought(&fake, &p, &acct, "pack_pro");
        let order_id = order["id"].as_str().unwrap().to_owned();
        let paid = fake.paid_events(&order);
        let first = fake.refund(&order_id, 500);
        let second = fake.refund(&order_id, 1000);
        let mut events: Vec<Event> = paid.into_iter().chain(first).chain(second).collect();
        // Duplicates of some events, then any order (refunds before the payment included).
        let extra: Vec<Event> = (0..4)
            .map(|_| events[rng.below(events.len())].clone())
            .collect();
        events.extend(extra);
        rng.shuffle(&mut events);
        if round == 0 {
            // One fixed case: every refund event first, the payment last.
            events.sort_by_key(|e| e.event_type == "order.paid");
        }
        for e in &events {
            process(&p, e);
        }
        // 1,500 of 3,500 cents refunded: 3/7 of 1,000 credits, to the thousandth.
        let back = Credits::from_millis(428_571);
        assert_eq!(available(&db.store, &acct), c(1000) - back, "round {round}");
        let refunds = of_kind(&db.store, &acct, EntryKind::PurchaseRefund);
        let total: Credits = refunds.iter().map(|e| e.amount).sum();
        assert_eq!(total, -back, "round {round}: {refunds:?}");
        assert!(refunds
            .iter()
            .all(|e| e.reference_id.as_deref() == Some(order_id.as_str())));
        // Replaying everything again changes nothing.
        for e in &events {
            process(&p, e);
        }
        assert_eq!(available(&db.store, &acct), c(1000) - back);
    }
    assert_verified(&db.store);
}

fn a_full_refund_takes_all_back_and_spent_credits_are_owed(db: TestDb) {
    let (fake, p) = polar(&db);
    let acct = account(&db.store);
    let order = bought(&fake, &p, &acct, "pack_starter");
    let order_id = order["id"].as_str().unwrap().to_owned();
    process(&p, &fake.paid_events(&order)[2]);
    spend(&db.store, &acct, 80);
    for e in fake.refund(&order_id, 500) {
        process(&p, &e);
    }
    // 20 credits were left: taken; 80 are owed, and the balance never went negative.
    assert_eq!(available(&db.store, &acct), Credits::ZERO);
    let row = db.store.orders().payment_order(&order_id).unwrap().unwrap();
    assert_eq!(
        (row.clawed_back, row.owed),
        (c(20).millis(), c(80).millis())
    );
    assert_verified(&db.store);
    // The next purchase pays the debt first.
    let next = bought(&fake, &p, &acct, "pack_starter");
    process(&p, &fake.paid_events(&next)[2]);
    assert_eq!(available(&db.store, &acct), c(20));
    let row = db.store.orders().payment_order(&order_id).unwrap().unwrap();
    assert_eq!((row.clawed_back, row.owed), (c(100).millis(), 0));
    let back: Credits = of_kind(&db.store, &acct, EntryKind::PurchaseRefund)
        .iter()
        .map(|e| e.amount)
        .sum();
    assert_eq!(back, -c(100));
    assert_verified(&db.store);
}

fn orders_we_cannot_match_credit_nothing(db: TestDb) {
    let (fake, p) = polar(&db);
    let acct = account(&db.store);
    // Orders of no checkout of ours are refused, whatever their metadata names.
    let unknown_pack = fake.create_paid_order("prod_pack_pro", 3500, acct.as_str(), "pack_nope");
    let outcome = process(&p, &fake.paid_events(&unknown_pack)[2]);
    assert!(outcome.starts_with("refused: "), "{outcome}");
    // Metadata naming a big pack on a cheap product is not trusted.
    let forged = fake.create_paid_order("prod_pack_starter", 500, acct.as_str(), "pack_enterprise");
    let outcome = process(&p, &fake.paid_events(&forged)[2]);
    assert!(outcome.starts_with("refused: "), "{outcome}");
    // Our checkout, but another product paid for: refused.
    let mut other_product = bought(&fake, &p, &acct, "pack_enterprise");
    other_product["product_id"] = "prod_pack_starter".into();
    let outcome = process(&p, &fake.event("order.paid", &other_product));
    assert!(outcome.starts_with("refused: "), "{outcome}");
    // Once refused, always refused (for an operator to decide), however it comes again.
    other_product["product_id"] = "prod_pack_enterprise".into();
    let outcome = process(&p, &fake.event("order.paid", &other_product));
    assert!(outcome.starts_with("refused before"), "{outcome}");
    let refusal = refusal(&db.store, other_product["id"].as_str().unwrap()).unwrap();
    assert_eq!(refusal.source, "webhook");
    assert_eq!(refusal.times_seen, 1);
    let mut subscription = bought(&fake, &p, &acct, "pack_pro");
    subscription["billing_reason"] = "subscription_cycle".into();
    assert!(process(&p, &fake.event("order.paid", &subscription)).starts_with("ignored"));
    // Another product of the same Polar organization, nothing of ours named: ignored.
    let mut foreign = fake.create_paid_order("prod_tshirt", 2000, acct.as_str(), "x");
    foreign["metadata"] = serde_json::json!({});
    foreign["customer"]["external_id"] = Value::Null;
    assert_eq!(
        process(&p, &fake.event("order.paid", &foreign)),
        "ignored: not an order of a Shotledger checkout"
    );
    assert_eq!(
        process(
            &p,
            &fake.event("customer.created", &serde_json::json!({"id": "x"}))
        ),
        "ignored"
    );
    assert_eq!(available(&db.store, &acct), Credits::ZERO);
    assert_eq!(db.store.orders().refusals(10).unwrap().len(), 3);
    assert_verified(&db.store);
}

fn fifty_purchases_in_random_order_with_duplicates(db: TestDb) {
    let (fake, p) = polar(&db);
    let accounts: Vec<_> = (0..5).map(|_| account(&db.store)).collect();
    let packs = [
        "pack_starter",
        "pack_pro",
        "pack_business",
        "pack_enterprise",
    ];
    let credits = |pack: &str| match pack {
        "pack_starter" => 100,
        "pack_pro" => 1000,
        "pack_business" => 5000,
        _ => 25000,
    };
    let mut rng = Rng::new(0x5eed_0050);
    let mut expected = vec![0i64; accounts.len()];
    let mut events = Vec::new();
    for _ in 0..50 {
        let who = rng.below(accounts.len());
        let pack = packs[rng.below(packs.len())];
        expected[who] += credits(pack);
        let order = bought(&fake, &p, &accounts[who], pack);
        let evs = fake.paid_events(&order);
        for _ in 0..rng.below(3) {
            events.push(evs[2].clone());
        }
        events.extend(evs);
    }
    rng.shuffle(&mut events);
    // Two workers, as the receiver's thread pool would be.
    let halves: Vec<Vec<Event>> = vec![
        events.iter().step_by(2).cloned().collect(),
        events.iter().skip(1).step_by(2).cloned().collect(),
    ];
    let threads: Vec<_> = halves
        .into_iter()
        .map(|part| {
            let p = p.clone();
            std::thread::spawn(move || {
                for e in part {
                    process(&p, &e);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for (acct, want) in accounts.iter().zip(&expected) {
        assert_eq!(available(&db.store, acct), c(*want));
    }
    let purchases: usize = accounts
        .iter()
        .map(|a| of_kind(&db.store, a, EntryKind::Purchase).len())
        .sum();
    assert_eq!(purchases, 50);
    assert_verified(&db.store);
}

// -- issue 8, item 2: a paid order is credited from our checkout record -----------------

fn a_cross_account_order_credits_nobody(db: TestDb) {
    let (fake, p) = polar(&db);
    let (a, b) = (account(&db.store), account(&db.store));
    // A's Starter checkout, paid (500 cents), but the order's metadata names B and the
    // Enterprise pack, and the product id is null (so no product to compare).
    let mut order = bought(&fake, &p, &a, "pack_starter");
    order["metadata"] = serde_json::json!({"account_id": b.as_str(), "pack_id": "pack_enterprise"});
    order["product_id"] = Value::Null;
    let outcome = process(&p, &fake.event("order.paid", &order));
    assert!(outcome.starts_with("refused"), "{outcome}");
    assert_eq!(available(&db.store, &b), Credits::ZERO, "B got credits");
    assert_eq!(available(&db.store, &a), Credits::ZERO, "A got credits");
    let refusal = refusal(&db.store, order["id"].as_str().unwrap()).unwrap();
    assert_eq!(
        refusal.account_id.as_ref().map(|a| a.as_str()),
        Some(a.as_str())
    );
    assert!(refusal.reason.contains(b.as_str()), "{}", refusal.reason);
    assert_verified(&db.store);
}

fn one_checkout_buys_one_pack(db: TestDb) {
    let (fake, p) = polar(&db);
    let acct = account(&db.store);
    let order = bought(&fake, &p, &acct, "pack_pro");
    assert_eq!(
        process(&p, &fake.event("order.paid", &order)),
        "credited 1000"
    );
    // Another order naming the same checkout: refused, not a second pack.
    let mut second = order.clone();
    second["id"] = "another-order-of-the-same-checkout".into();
    let outcome = process(&p, &fake.event("order.paid", &second));
    assert!(outcome.starts_with("refused: "), "{outcome}");
    assert!(outcome.contains(order["id"].as_str().unwrap()), "{outcome}");
    assert_eq!(available(&db.store, &acct), c(1000));
    let record = checkout_of(&db.store, &order);
    assert_eq!(record.status, "paid");
    assert_eq!(record.order_id.as_deref(), order["id"].as_str());
    assert_verified(&db.store);
}

fn a_null_product_with_a_wrong_amount_is_refused(db: TestDb) {
    let (fake, p) = polar(&db);
    let acct = account(&db.store);
    let mut order = bought(&fake, &p, &acct, "pack_pro");
    order["product_id"] = Value::Null;
    for field in ["subtotal_amount", "net_amount", "total_amount"] {
        order[field] = 100.into();
    }
    let outcome = process(&p, &fake.event("order.paid", &order));
    assert!(outcome.starts_with("refused"), "{outcome}");
    assert_eq!(available(&db.store, &acct), Credits::ZERO);
    // Another currency for the right number of cents is refused too.
    let mut euros = bought(&fake, &p, &acct, "pack_pro");
    euros["currency"] = "eur".into();
    let outcome = process(&p, &fake.event("order.paid", &euros));
    assert!(outcome.starts_with("refused"), "{outcome}");
    assert_eq!(available(&db.store, &acct), Credits::ZERO);
}

fn an_order_of_no_checkout_of_ours_is_refused(db: TestDb) {
    let (fake, p) = polar(&db);
    let acct = account(&db.store);
    // Right product, right price, metadata naming an account: but not a checkout we made.
    let stray = fake.create_paid_order("prod_pack_pro", 3500, acct.as_str(), "pack_pro");
    let outcome = process(&p, &fake.event("order.paid", &stray));
    assert!(outcome.starts_with("refused"), "{outcome}");
    assert_eq!(available(&db.store, &acct), Credits::ZERO);
    // Reconcile finds it at Polar and holds to the same rule.
    let report = p.reconcile(now()).unwrap();
    assert_eq!((report.orders, report.credited, report.refused), (1, 0, 1));
    assert_eq!(available(&db.store, &acct), Credits::ZERO);
    let refusal = refusal(&db.store, stray["id"].as_str().unwrap()).unwrap();
    assert_eq!(
        (refusal.source.as_str(), refusal.times_seen),
        ("reconcile", 2)
    );
    // A genuine purchase next to it is credited by reconcile as by the webhook.
    bought(&fake, &p, &acct, "pack_starter");
    let report = p.reconcile(now()).unwrap();
    assert_eq!((report.orders, report.credited, report.refused), (2, 1, 1));
    assert_eq!(available(&db.store, &acct), c(100));
    assert_verified(&db.store);
}

/// An account at the ledger's maximum balance cannot take a paid pack: the order is
/// refused and kept for an operator (not retried for ever as a corrupt row), its checkout
/// stays open, and nothing moves.
fn an_order_past_the_balance_maximum_is_refused_and_kept(db: TestDb) {
    let (fake, p) = polar(&db);
    let acct = account(&db.store);
    let near_max = Credits::MAX_BALANCE.checked_sub(c(50)).unwrap();
    db.store
        .ledger()
        .apply(
            &acct,
            None,
            Operation::Credit {
                spec: ledger_core::GrantSpec::new(ledger_core::GrantSource::Adjustment, near_max),
                memo: Memo::new("Nearly everything"),
            },
            now(),
        )
        .unwrap()
        .result
        .unwrap();
    let order = bought(&fake, &p, &acct, "pack_starter");
    let outcome = process(&p, &fake.event("order.paid", &order));
    assert!(outcome.starts_with("refused"), "{outcome}");
    assert!(outcome.contains("the most the ledger keeps"), "{outcome}");
    assert_eq!(available(&db.store, &acct), near_max, "credits moved");
    let order_id = order["id"].as_str().unwrap();
    let refusal = refusal(&db.store, order_id).expect("a refusal kept");
    assert_eq!(
        refusal.account_id.as_ref().map(|a| a.as_str()),
        Some(acct.as_str())
    );
    let record = checkout_of(&db.store, &order);
    assert_eq!(
        record.status, "open",
        "the checkout was marked paid: {record:?}"
    );
    // A second delivery of the same order finds the refusal: still nothing credited.
    let again = process(&p, &fake.event("order.paid", &order));
    assert!(again.starts_with("refused"), "{again}");
    assert_eq!(available(&db.store, &acct), near_max);
    assert_verified(&db.store);
}

on_both_backends!(
    an_order_past_the_balance_maximum_is_refused_and_kept,
    created_and_updated_never_credit,
    the_same_paid_order_five_times_at_once_credits_once,
    refunds_take_back_once_in_any_order,
    a_full_refund_takes_all_back_and_spent_credits_are_owed,
    orders_we_cannot_match_credit_nothing,
    fifty_purchases_in_random_order_with_duplicates,
    a_cross_account_order_credits_nobody,
    a_null_product_with_a_wrong_amount_is_refused,
    one_checkout_buys_one_pack,
    an_order_of_no_checkout_of_ours_is_refused,
);
