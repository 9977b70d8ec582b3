//! Subscription webhooks and overage reporting through the receiver over real HTTP,
//! fed by the fake Polar, on SQLite and PostgreSQL.
//!
//! The store's `SubscriptionBook` is built separately; these tests use the in-memory one
//! of `test_support::polar::MemoryBook`, which keeps the same `modified_at` rule.

use crate::common;

use std::sync::Arc;

use common::*;
use ledger_core::{AccountId, SubscriptionStatus};
use payments::{OverageReport, StoreBook};
use settings::Settings;
use test_support::fake_polar::{Event, FakePolar, KeyMode};
use test_support::on_both_backends;
use test_support::polar::MemoryBook;
use test_support::polar::{demo_with_memory_book, polar_with_plans, sell_plans_on_polar};
use test_support::TestDb;

/// A fake Polar (legacy keys) selling the plans, settings in Polar mode against it, and a
/// new account.
fn plans_on_polar(db: &TestDb) -> (FakePolar, Settings, AccountId) {
    let fake = FakePolar::start(TOKEN, SECRET, KeyMode::Legacy);
    let mut s = settings(db, Some(&fake.url()));
    sell_plans_on_polar(&mut s);
    (fake, s, account(&db.store))
}

/// The store's own subscription book with the plans of `s` (the one the programs wire).
fn store_book(db: &TestDb, s: &Settings) -> Arc<StoreBook> {
    let plans = s.plans.iter().map(|p| p.plan()).collect();
    Arc::new(StoreBook::new(db.store.clone(), plans))
}

fn subscription_webhooks_duplicated_and_reordered_over_http(db: TestDb) {
    let (fake, s, acct) = plans_on_polar(&db);
    let book = MemoryBook::new([&acct]);
    let payments = polar_with_plans(&fake, &s, db.store.clone(), book.clone());
    let rx = webhook_receiver::spawn(payments.clone()).unwrap();
    let (sub, mut events) = fake.subscribe(&payments, &acct, "basic");
    let id = sub["id"].as_str().unwrap().to_owned();
    events.push(fake.past_due(&id));
    payments.cancel_subscription(&id).unwrap();
    events.extend(fake.take_events());
    // Newest last; delivered newest first, each twice, plus Polar's retries.
    let mut sent: Vec<&Event> = events.iter().rev().chain(events.iter()).collect();
    sent.push(&events[0]);
    for e in sent {
        assert_eq!(fake.send(e, &rx.webhook_url()), 200, "{}", e.event_type);
    }
    let state = book.subscription(&acct).expect("subscribed");
    assert_eq!(state.provider_subscription_id, id);
    assert_eq!(state.status, SubscriptionStatus::PastDue);
    assert!(state.cancel_at_period_end);
    // A subscription event that is not ours answers 200 too (never retried).
    let stranger = fake.change(&id, "subscription.updated", |s| {
        s["product_id"] = serde_json::json!("prod_other_shop")
    });
    assert_eq!(fake.send(&stranger, &rx.webhook_url()), 200);
    assert_eq!(book.subscription(&acct).unwrap(), state);
}

fn the_sweep_reports_overage_to_polar(db: TestDb) {
    let (fake, s, acct) = plans_on_polar(&db);
    let book = MemoryBook::new([&acct]);
    let payments = polar_with_plans(&fake, &s, db.store.clone(), book.clone());
    book.add_overage(OverageReport {
        id: "ovg_sweep_1".into(),
        account_id: acct.clone(),
        period_start: now(),
        blocks: 2,
        credits: 2000,
        amount_cents: 800,
        attempts: 0,
    });
    let _rx = webhook_receiver::spawn(payments).unwrap();
    eventually(10, "the overage item reported", || {
        book.item("ovg_sweep_1").status == "reported"
    });
    let ingested = fake.ingested();
    assert_eq!(ingested.len(), 1);
    assert_eq!(ingested[0]["metadata"]["credits"], 2000);
    assert_eq!(fake.ingest_duplicates(), 0);
}

fn the_demo_plan_checkout_subscribes_through_signed_webhooks(db: TestDb) {
    let s = demo_settings(&db);
    let acct = account(&db.store);
    let (book, payments) = demo_with_memory_book(&s, db.store.clone(), &acct);
    let rx = webhook_receiver::spawn(payments.clone()).unwrap();
    let url = payments.subscription_checkout(&acct, "basic").unwrap();
    let path = demo_path(&url);
    assert!(path.starts_with("/demo/subscription/"), "{path}");
    let a = agent();
    let mut page = a.get(format!("{}{path}", rx.url())).call().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.body_mut().read_to_string().unwrap();
    assert_demo_page(&html, &["Basic plan", "$29.00"]);
    for _ in 0..2 {
        let r = pay_on_demo_page(&a, &rx, &path);
        assert_eq!(r.status().as_u16(), 303);
        let sub = book.subscription(&acct).expect("subscribed");
        assert_eq!(
            (sub.plan_id.as_str(), sub.status),
            ("basic", SubscriptionStatus::Active)
        );
    }
    assert_eq!(
        book.changes(),
        2,
        "created, then active; paying again changes nothing"
    );
    // A forged token has no page.
    let forged = format!("{}{path}x/pay", rx.url());
    assert_eq!(a.post(forged).send_empty().unwrap().status().as_u16(), 404);
}

/// The same deliveries, duplicated and reordered, through the store's own book (the one
/// the programs wire): the newest state wins, the plan's allowance is granted once, and
/// `verify` stays clean.
fn subscription_webhooks_reach_the_store_once_in_the_newest_state(db: TestDb) {
    let (fake, s, acct) = plans_on_polar(&db);
    let payments = polar_with_plans(&fake, &s, db.store.clone(), store_book(&db, &s));
    let rx = webhook_receiver::spawn(payments.clone()).unwrap();
    let (sub, mut events) = fake.subscribe(&payments, &acct, "basic");
    let id = sub["id"].as_str().unwrap().to_owned();
    events.push(fake.past_due(&id));
    let mut sent: Vec<&Event> = events.iter().rev().chain(events.iter()).collect();
    sent.push(&events[0]);
    for e in sent {
        assert_eq!(fake.send(e, &rx.webhook_url()), 200, "{}", e.event_type);
    }
    let state = db
        .store
        .plans()
        .subscription(&acct, now())
        .unwrap()
        .expect("subscribed through the webhooks");
    assert_eq!(state.plan.id, "basic");
    assert_eq!(state.status, SubscriptionStatus::PastDue);
    assert_eq!(state.managed_by, ledger_store::ManagedBy::Polar);
    let allowances = db
        .store
        .ledger()
        .history(&acct, ledger_core::Page::new(100, 0).unwrap())
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == ledger_core::EntryKind::Allowance)
        .count();
    assert_eq!(
        allowances, 1,
        "one allowance, however often the events came"
    );
    assert!(db.store.maintenance().verify().unwrap().ok);
}

/// Extra billed in the store (a plan past its allowance) is reported to Polar by the
/// receiver's sweep through the store's book: retried after Polar fails, accepted once.
fn the_stores_overage_reaches_polar_once_after_a_failure(db: TestDb) {
    let (fake, s, acct) = plans_on_polar(&db);
    let basic = s.plan("basic").expect("the basic plan").plan();
    let (plans, at) = (db.store.plans(), now());
    plans
        .subscribe(&acct, &basic, SubscriptionStatus::Active, None, at)
        .unwrap();
    let hard = basic.monthly_credits + ledger_core::Credits::whole(5_000);
    plans
        .set_hard_limit(&acct, ledger_core::Role::Owner, hard, at)
        .unwrap()
        .expect("the owner of a paying plan may raise it");
    // The allowance and 1,001 credits of extra: two blocks.
    let used = basic.monthly_credits + ledger_core::Credits::whole(1_001);
    let debit = ledger_core::Operation::Debit {
        kind: ledger_core::EntryKind::Usage,
        amount: used,
        spend: ledger_core::Spend::WithinAccountLimit,
        memo: ledger_core::Memo::new("metered work"),
    };
    db.store
        .ledger()
        .apply(&acct, None, debit, at)
        .unwrap()
        .result
        .unwrap();
    let items = plans.overage_items(&acct).unwrap();
    assert_eq!(items.len(), 2, "{items:?}");
    fake.fail_next_ingest(1);
    let payments = polar_with_plans(&fake, &s, db.store.clone(), store_book(&db, &s));
    let _rx = webhook_receiver::spawn(payments).unwrap();
    eventually(90, "both blocks reported", || {
        plans
            .overage_items(&acct)
            .unwrap()
            .iter()
            .all(|i| i.status == ledger_store::OverageStatus::Reported)
    });
    let ingested = fake.ingested();
    assert_eq!(ingested.len(), 2, "{ingested:?}");
    assert_eq!(fake.ingest_duplicates(), 0);
    assert!(db.store.maintenance().verify().unwrap().ok);
}

on_both_backends!(
    the_stores_overage_reaches_polar_once_after_a_failure,
    subscription_webhooks_reach_the_store_once_in_the_newest_state,
    subscription_webhooks_duplicated_and_reordered_over_http,
    the_sweep_reports_overage_to_polar,
    the_demo_plan_checkout_subscribes_through_signed_webhooks,
);
