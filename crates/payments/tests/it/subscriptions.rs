//! Provider-managed subscriptions and overage reporting against the fake Polar (real
//! HTTP), through the path the receiver uses (`Payments::process_event`).
//!
//! The store's `SubscriptionBook` is built separately; these tests use the in-memory one
//! of `test_support::polar::MemoryBook`, which keeps the same `modified_at` rule.

use crate::common;

use std::sync::Arc;

use common::*;
use ledger_core::{AccountId, SubscriptionStatus};
use payments::{ChangeRequested, OverageReport, Payments, PaymentsError, ReportSummary};
use settings::{PlanSettings, Settings};
use test_support::fake_polar::{Event, FakePolar, KeyMode};
use test_support::on_both_backends;
use test_support::polar::{
    demo_with_memory_book, polar_payments, sell_plans_on_polar, with_plans, MemoryBook,
};
use test_support::TestDb;

struct Plans {
    fake: FakePolar,
    settings: Settings,
    /// Payments without subscriptions wired (wire a book with [`Plans::wired`]).
    bare: Payments,
    acct: AccountId,
}

impl Plans {
    fn wired(&self, book: &Arc<MemoryBook>) -> Payments {
        with_plans(
            self.bare.clone(),
            &self.settings,
            book.clone(),
            Some(&self.fake),
        )
    }

    /// [`Plans::wired`] to a new [`MemoryBook`] that knows the account.
    fn with_memory_book(&self) -> (Arc<MemoryBook>, Payments) {
        let book = MemoryBook::new([&self.acct]);
        let p = self.wired(&book);
        (book, p)
    }
}

/// Polar mode with the default plans plus a paying `pro`, each paying plan sold as
/// `prod_<plan id>`.
fn plans(db: &TestDb) -> Plans {
    let fake = FakePolar::start(TOKEN, SECRET, KeyMode::Standard);
    let mut settings = settings(db, Some(&fake.url()));
    settings.plans.push(PlanSettings {
        id: "pro".into(),
        name: "Pro".into(),
        monthly_credits: c(50_000),
        price_cents: 9900,
        overage_cents_per_1000: 300,
        paying: true,
        polar_product_id: None,
    });
    sell_plans_on_polar(&mut settings);
    let bare = polar_payments(&fake, &settings, db.store.clone());
    let acct = account(&db.store);
    Plans {
        fake,
        settings,
        bare,
        acct,
    }
}

fn process(p: &Payments, e: &Event) -> String {
    p.process_event(&e.event_type, &e.body, now())
        .expect("processed")
}

fn a_plan_checkout_carries_account_and_plan(db: TestDb) {
    let t = plans(&db);
    let (_, p) = t.with_memory_book();
    let url = p.subscription_checkout(&t.acct, "basic").unwrap();
    let id = t
        .fake
        .checkout_id_for_url(&url)
        .expect("a checkout at Polar");
    let req = t
        .fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(req.path, "/v1/checkouts/");
    assert_eq!(req.body["products"], serde_json::json!(["prod_basic"]));
    assert_eq!(req.body["metadata"]["account_id"], t.acct.as_str());
    assert_eq!(req.body["metadata"]["plan_id"], "basic");
    assert_eq!(req.body["external_customer_id"], t.acct.as_str());
    // Paying it makes a subscription carrying that metadata.
    let (sub, events) = t.fake.pay_subscription(&id);
    assert_eq!(sub["metadata"]["plan_id"], "basic");
    assert_eq!(sub["product_id"], "prod_basic");
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["subscription.created", "subscription.active", "order.paid"]
    );
    // The subscription's first order credits nothing: the allowance comes from the plan.
    assert_eq!(
        process(&p, &events[2]),
        "ignored: billing_reason subscription_create"
    );
    // What cannot be bought through a checkout.
    assert!(matches!(
        p.subscription_checkout(&t.acct, "free"),
        Err(PaymentsError::PlanNotSold { .. })
    ));
    assert!(matches!(
        p.subscription_checkout(&t.acct, "gold"),
        Err(PaymentsError::UnknownPlan { .. })
    ));
    // Not wired: a configuration error, nothing sent.
    let before = t.fake.requests().len();
    assert!(matches!(
        t.bare.subscription_checkout(&t.acct, "basic"),
        Err(PaymentsError::Config(_))
    ));
    assert_eq!(t.fake.requests().len(), before);
}

fn a_plan_without_a_product_is_not_sold(db: TestDb) {
    let t = plans(&db);
    let mut settings = t.settings.clone();
    for p in &mut settings.plans {
        p.polar_product_id = None;
    }
    let book = MemoryBook::new([&t.acct]);
    let p = with_plans(t.bare.clone(), &settings, book, None);
    let e = p.subscription_checkout(&t.acct, "basic").unwrap_err();
    assert!(matches!(e, PaymentsError::PlanNotSold { .. }), "{e}");
    assert!(e.to_string().contains("polar_product_id"), "{e}");
}

/// Everything Polar sends for one subscription's life: created, active, a change to
/// `pro`, a cancellation at period end. The newest state: `pro`, active, cancelling.
fn a_life(t: &Plans, p: &Payments) -> (String, Vec<Event>) {
    let (sub, mut events) = t.fake.subscribe(p, &t.acct, "basic");
    let id = sub["id"].as_str().unwrap().to_owned();
    assert_eq!(
        p.change_subscription(&id, "pro").unwrap(),
        ChangeRequested::Provider {
            subscription_id: id.clone()
        }
    );
    events.extend(t.fake.take_events());
    p.cancel_subscription(&id).unwrap();
    events.extend(t.fake.take_events());
    let patches: Vec<_> = t
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 2);
    assert_eq!(patches[0].path, format!("/v1/subscriptions/{id}"));
    assert_eq!(
        patches[0].body,
        serde_json::json!({"product_id": "prod_pro"})
    );
    assert_eq!(
        patches[1].body,
        serde_json::json!({"cancel_at_period_end": true})
    );
    (id, events)
}

fn events_in_any_order_and_any_number_leave_the_newest_state(db: TestDb) {
    let t = plans(&db);
    let first = MemoryBook::new([&t.acct]);
    let (id, events) = a_life(&t, &t.wired(&first));
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "subscription.created",
            "subscription.active",
            "order.paid",
            "subscription.updated",
            "subscription.canceled"
        ]
    );
    let mut rng = Rng::new(0x5eed);
    for round in 0..12 {
        let book = MemoryBook::new([&t.acct]);
        let p = t.wired(&book);
        // Each event one to three times, shuffled.
        let mut deliveries: Vec<&Event> = events
            .iter()
            .flat_map(|e| std::iter::repeat_n(e, 1 + rng.below(3)))
            .collect();
        rng.shuffle(&mut deliveries);
        for e in deliveries {
            process(&p, e);
        }
        let s = book.subscription(&t.acct).expect("a subscription");
        assert_eq!(s.provider_subscription_id, id, "round {round}");
        assert_eq!(s.plan_id, "pro", "round {round}");
        assert_eq!(s.status, SubscriptionStatus::Active, "round {round}");
        assert!(s.cancel_at_period_end, "round {round}");
    }
}

fn an_older_event_never_undoes_a_newer_one(db: TestDb) {
    let t = plans(&db);
    let (book, p) = t.with_memory_book();
    let (sub, events) = t.fake.subscribe(&p, &t.acct, "basic");
    let id = sub["id"].as_str().unwrap();
    // subscription.active before subscription.created (Polar issue 6751).
    assert!(process(&p, &events[1]).contains("plan basic, active"));
    assert_eq!(
        process(&p, &events[0]),
        "unchanged: not newer than the stored subscription"
    );
    assert_eq!(book.changes(), 1);
    let active = book.subscription(&t.acct).unwrap();
    // Past due, then the payment is retried and the subscription renews.
    let past_due = t.fake.past_due(id);
    assert!(process(&p, &past_due).contains("past_due"));
    assert_eq!(
        book.subscription(&t.acct).unwrap().status,
        SubscriptionStatus::PastDue
    );
    let renewed = t.fake.renew(id);
    assert!(process(&p, &renewed[0]).contains("active"));
    assert_eq!(
        process(&p, &renewed[1]),
        "ignored: billing_reason subscription_cycle"
    );
    let now_state = book.subscription(&t.acct).unwrap();
    assert_eq!(now_state.status, SubscriptionStatus::Active);
    assert_eq!(
        now_state.current_period_start,
        active.current_period_end.unwrap()
    );
    // The old past-due and the old active arrive late: nothing changes.
    for late in [&past_due, &events[1], &events[0]] {
        assert_eq!(
            process(&p, late),
            "unchanged: not newer than the stored subscription"
        );
    }
    assert_eq!(book.subscription(&t.acct).unwrap(), now_state);
}

fn cancel_uncancel_and_revoke(db: TestDb) {
    let t = plans(&db);
    let (book, p) = t.with_memory_book();
    let (sub, events) = t.fake.subscribe(&p, &t.acct, "basic");
    let id = sub["id"].as_str().unwrap();
    for e in &events {
        process(&p, e);
    }
    p.cancel_subscription(id).unwrap();
    let canceled = t.fake.take_events();
    assert_eq!(canceled[0].event_type, "subscription.canceled");
    process(&p, &canceled[0]);
    // Cancelled at period end: still active until it ends.
    let s = book.subscription(&t.acct).unwrap();
    assert_eq!(
        (s.status, s.cancel_at_period_end),
        (SubscriptionStatus::Active, true)
    );
    process(&p, &t.fake.uncancel(id));
    let s = book.subscription(&t.acct).unwrap();
    assert_eq!(
        (s.status, s.cancel_at_period_end),
        (SubscriptionStatus::Active, false)
    );
    p.revoke_subscription(id).unwrap();
    let revoked = t.fake.take_events();
    let types: Vec<&str> = revoked.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["subscription.canceled", "subscription.revoked"]);
    for e in revoked.iter().rev() {
        process(&p, e);
    }
    assert_eq!(
        book.subscription(&t.acct).unwrap().status,
        SubscriptionStatus::Cancelled
    );
    // Polar refuses changes to a cancelled subscription: a provider error.
    assert!(matches!(
        p.change_subscription(id, "pro"),
        Err(PaymentsError::Provider {
            status: Some(403),
            ..
        })
    ));
}

fn events_not_ours_are_not_applicable_never_retried(db: TestDb) {
    let t = plans(&db);
    // A book that knows no account.
    let book = MemoryBook::new([]);
    let p = t.wired(&book);
    let (sub, events) = t.fake.subscribe(&p, &t.acct, "basic");
    let outcome = process(&p, &events[1]);
    assert!(outcome.starts_with("not applicable: account"), "{outcome}");
    // Another product of the same organization.
    let other = t
        .fake
        .change(sub["id"].as_str().unwrap(), "subscription.updated", |s| {
            s["product_id"] = serde_json::json!("prod_somebody_else")
        });
    assert!(process(&p, &other).starts_with("not applicable: product"));
    // No account anywhere.
    let anonymous = t
        .fake
        .change(sub["id"].as_str().unwrap(), "subscription.updated", |s| {
            s["product_id"] = serde_json::json!("prod_basic");
            s["metadata"] = serde_json::json!({});
            s["customer"]["external_id"] = serde_json::Value::Null;
        });
    assert!(process(&p, &anonymous).starts_with("not applicable: it names no account"));
    assert_eq!(book.changes(), 0);
    // Not wired: ignored (as before subscriptions existed).
    assert_eq!(
        process(&t.bare, &events[1]),
        "ignored: subscriptions are not wired"
    );
}

fn reconcile_brings_in_subscriptions_whose_webhooks_were_lost(db: TestDb) {
    let t = plans(&db);
    let (book, p) = t.with_memory_book();
    // Every webhook lost: subscribed, then past due.
    let (sub, events) = t.fake.subscribe(&p, &t.acct, "basic");
    let past_due = t.fake.past_due(sub["id"].as_str().unwrap());
    assert!(book.subscription(&t.acct).is_none());
    let r = p.reconcile_subscriptions(now()).unwrap();
    assert_eq!((r.listed, r.changed), (1, 1));
    let s = book.subscription(&t.acct).unwrap();
    assert_eq!(
        (s.plan_id.as_str(), s.status),
        ("basic", SubscriptionStatus::PastDue)
    );
    // Again, or the late webhooks: nothing changes.
    assert_eq!(p.reconcile_subscriptions(now()).unwrap().changed, 0);
    for e in events.iter().chain([&past_due]) {
        process(&p, e);
    }
    assert_eq!(book.subscription(&t.acct).unwrap(), s);
    assert_eq!(book.changes(), 1);
    // Not wired: nothing asked.
    let before = t.fake.requests().len();
    assert_eq!(t.bare.reconcile_subscriptions(now()).unwrap().listed, 0);
    assert_eq!(t.fake.requests().len(), before);
}

fn item(acct: &AccountId, n: i64) -> OverageReport {
    OverageReport {
        id: format!("ovg_{}_{n}", acct.as_str()),
        account_id: acct.clone(),
        period_start: ledger_core::Timestamp::parse_rfc3339("2026-12-01T00:00:00Z").unwrap(),
        blocks: 1,
        credits: 1000,
        amount_cents: 400,
        attempts: 0,
    }
}

fn overage_is_retried_after_failures_and_accepted_once_per_item(db: TestDb) {
    let t = plans(&db);
    let (book, p) = t.with_memory_book();
    for n in 0..3 {
        book.add_overage(item(&t.acct, n));
    }
    t.fake.fail_next_ingest(2);
    let t0 = now();
    assert_eq!(
        p.report_overage(t0).unwrap(),
        ReportSummary {
            failed: 3,
            ..ReportSummary::default()
        }
    );
    let failed = book.item(&item(&t.acct, 0).id);
    assert_eq!(failed.status, "pending");
    assert_eq!(failed.report.attempts, 1);
    assert_eq!(failed.next_attempt_at, t0.plus_secs(30));
    assert!(failed.last_error.unwrap().contains("500"));
    // Not due yet: no call.
    assert_eq!(p.report_overage(t0).unwrap(), ReportSummary::default());
    assert_eq!(t.fake.ingest_calls(), 1);
    // Due: fails again, the backoff doubles.
    let t1 = t0.plus_secs(30);
    assert_eq!(p.report_overage(t1).unwrap().failed, 3);
    assert_eq!(
        book.item(&item(&t.acct, 0).id).next_attempt_at,
        t1.plus_secs(60)
    );
    // Then Polar takes them, in one call.
    let t2 = t1.plus_secs(60);
    assert_eq!(p.report_overage(t2).unwrap().reported, 3);
    assert_eq!(t.fake.ingest_calls(), 3);
    let ingested = t.fake.ingested();
    assert_eq!(ingested.len(), 3);
    let first = &ingested[0];
    assert_eq!(first["name"], "shotledger_overage");
    assert_eq!(first["external_id"], item(&t.acct, 0).id);
    assert_eq!(first["external_customer_id"], t.acct.as_str());
    assert_eq!(first["metadata"]["credits"], 1000);
    assert_eq!(first["metadata"]["blocks"], 1);
    assert_eq!(
        first["metadata"]["period_start"],
        "2026-12-01T00:00:00.000Z"
    );
    // Acknowledged items are never sent again.
    assert_eq!(
        p.report_overage(t2.plus_secs(3600)).unwrap(),
        ReportSummary::default()
    );
    assert_eq!(t.fake.ingest_calls(), 3);
    assert!(book.items().iter().all(|i| i.acknowledged == 1));
    // A crash between Polar's 2xx and the mark resends the same id: Polar ignores it.
    book.lose_mark(&item(&t.acct, 1).id);
    book.add_overage(item(&t.acct, 3));
    assert_eq!(p.report_overage(t2).unwrap().reported, 2);
    assert_eq!(t.fake.ingest_duplicates(), 1);
    assert_eq!(t.fake.ingested().len(), 4);
}

fn one_refused_overage_item_does_not_hold_back_the_others(db: TestDb) {
    let t = plans(&db);
    let (book, p) = t.with_memory_book();
    for n in 0..3 {
        book.add_overage(item(&t.acct, n));
    }
    t.fake.refuse_ingest_of(&item(&t.acct, 1).id);
    assert_eq!(
        p.report_overage(now()).unwrap(),
        ReportSummary {
            reported: 2,
            failed: 1,
            ..ReportSummary::default()
        }
    );
    // The batch, then each alone.
    assert_eq!(t.fake.ingest_calls(), 4);
    let kept: Vec<String> = t
        .fake
        .ingested()
        .iter()
        .map(|e| e["external_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kept, [item(&t.acct, 0).id, item(&t.acct, 2).id]);
    let refused = book.item(&item(&t.acct, 1).id);
    assert_eq!((refused.status, refused.report.attempts), ("pending", 1));
    assert!(refused.last_error.unwrap().contains("422"));
}

fn overage_with_the_demo_provider_is_recorded_without_a_call(db: TestDb) {
    let mut settings = demo_settings(&db);
    sell_plans_on_polar(&mut settings);
    let acct = account(&db.store);
    let (book, p) = demo_with_memory_book(&settings, db.store.clone(), &acct);
    book.add_overage(item(&acct, 0));
    assert_eq!(
        p.report_overage(now()).unwrap(),
        ReportSummary {
            recorded: 1,
            ..ReportSummary::default()
        }
    );
    assert_eq!(book.item(&item(&acct, 0).id).status, "recorded");
    assert_eq!(p.report_overage(now()).unwrap(), ReportSummary::default());
    // Demo changes are the caller's to apply.
    assert_eq!(
        p.change_subscription("demo_sub_x", "basic").unwrap(),
        ChangeRequested::Local
    );
    assert_eq!(
        p.cancel_subscription("demo_sub_x").unwrap(),
        ChangeRequested::Local
    );
}

fn a_demo_plan_checkout_sends_the_same_webhooks(db: TestDb) {
    let settings = demo_settings(&db);
    let acct = account(&db.store);
    let (book, p) = demo_with_memory_book(&settings, db.store.clone(), &acct);
    let url = p.subscription_checkout(&acct, "basic").unwrap();
    let token = url
        .rsplit_once("/demo/subscription/")
        .map(|(_, t)| t.to_owned())
        .expect("a demo subscription URL");
    let shown = p.demo_subscription(&token).expect("its page");
    assert_eq!(
        (shown.plan_id.as_str(), shown.price_cents, &shown.account_id),
        ("basic", 2900, &acct)
    );
    // A token changed by hand is nobody's.
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    assert!(p.demo_subscription(&forged).is_none());
    assert!(p.demo_subscription_pay(&forged).is_none());
    // Paying (twice) sends signed deliveries that verify and apply like Polar's.
    let mut changes = Vec::new();
    for round in 0..2 {
        let deliveries = p.demo_subscription_pay(&token).unwrap();
        let types: Vec<String> = deliveries
            .iter()
            .map(|d| {
                serde_json::from_str::<serde_json::Value>(&d.body).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            types,
            ["subscription.created", "subscription.active", "order.paid"]
        );
        for d in &deliveries {
            let received = p
                .receive(
                    payments::SignedHeaders {
                        id: Some(&d.webhook_id),
                        timestamp: Some(&d.timestamp.to_string()),
                        signature: Some(&d.signature),
                    },
                    d.body.as_bytes(),
                    now(),
                )
                .expect("verified");
            p.process_delivery(&received.webhook_id, now()).unwrap();
        }
        let s = book.subscription(&acct).expect("subscribed");
        assert_eq!(
            (s.plan_id.as_str(), s.status),
            ("basic", SubscriptionStatus::Active),
            "round {round}"
        );
        changes.push(book.changes());
    }
    // created (modified_at null: its created_at) then active: two changes; paying again
    // sends the same subscription, which changes nothing.
    assert_eq!(changes, [2, 2]);
}

on_both_backends!(
    a_plan_checkout_carries_account_and_plan,
    a_plan_without_a_product_is_not_sold,
    events_in_any_order_and_any_number_leave_the_newest_state,
    an_older_event_never_undoes_a_newer_one,
    cancel_uncancel_and_revoke,
    events_not_ours_are_not_applicable_never_retried,
    reconcile_brings_in_subscriptions_whose_webhooks_were_lost,
    overage_is_retried_after_failures_and_accepted_once_per_item,
    one_refused_overage_item_does_not_hold_back_the_others,
    overage_with_the_demo_provider_is_recorded_without_a_call,
    a_demo_plan_checkout_sends_the_same_webhooks,
);
