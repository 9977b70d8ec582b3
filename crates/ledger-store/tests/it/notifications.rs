//! Notifications (ADR 12): the outbox row is written in the transaction of the ledger
//! change that caused it, balance alerts fire once per crossing, and claiming keeps an
//! endpoint's order, leases rows to one sender and backs off after failures.

use crate::common;

use common::*;
use ledger_core::*;
use ledger_store::payments::TopupPack;
use ledger_store::{Attempt, BatchItem, DeliveryStatus, Store};

on_both_backends!(
    a_rejected_debit_enqueues_nothing,
    a_failing_outbox_write_rolls_the_debit_back,
    a_batch_with_crossings_enqueues_exactly_one_credits_low,
    credits_low_fires_once_per_crossing_and_depleted_at_zero,
    only_subscribed_live_endpoints_get_events,
    an_endpoint_is_sent_in_order,
    a_lease_keeps_two_senders_from_one_delivery,
    failures_back_off_then_give_up,
    auto_topup_and_overage_tell_the_customer_in_their_transactions,
);

const ALL: [Event; 6] = Event::ALL;

fn policy() -> RetryPolicy {
    RetryPolicy {
        initial_backoff_secs: 2,
        max_backoff_secs: 5,
        max_attempts: 3,
    }
}

/// An account with `bonus` credits, one endpoint for every event and a `credits.low`
/// threshold of `low` credits.
fn watched(s: &Store, bonus: i64, low: i64) -> (AccountId, String) {
    let a = account(s, bonus);
    let e = s
        .notifications()
        .create_endpoint(&a, "https://hooks.example.com/in", &ALL, "whsec_x", at(0))
        .unwrap();
    s.notifications()
        .set_low_balance(&a, Some(c(low)), at(0))
        .unwrap();
    (a, e.id)
}

fn events(s: &Store, a: &AccountId, endpoint: &str) -> Vec<Event> {
    let mut d = s
        .notifications()
        .deliveries(a, endpoint, 100)
        .unwrap()
        .unwrap();
    d.reverse();
    d.into_iter().map(|d| d.event).collect()
}

fn debit(s: &Store, a: &AccountId, n: i64, t: i64) -> ledger_store::Applied {
    s.ledger().apply(a, None, debit_op(c(n)), at(t)).unwrap()
}

fn a_rejected_debit_enqueues_nothing(db: TestDb) {
    let s = db.store.clone();
    let (a, e) = watched(&s, 5, 3);
    let refused = debit(&s, &a, 6, 1);
    assert!(matches!(
        refused.result,
        Err(LedgerError::InsufficientCredits { .. })
    ));
    assert_eq!(events(&s, &a, &e), vec![]);
    // The debit that does cross enqueues its event, with the balance after it.
    assert!(debit(&s, &a, 3, 2).result.is_ok());
    let d = s.notifications().deliveries(&a, &e, 10).unwrap().unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].event, Event::CreditsLow);
    let body: serde_json::Value = serde_json::from_str(&d[0].payload).unwrap();
    assert_eq!(body["type"], "credits.low");
    assert_eq!(body["data"]["accountId"], a.as_str());
    assert_eq!(body["data"]["balance"], 2);
    assert_eq!(body["data"]["lowBalanceCredits"], 3);
    assert_eq!(body["timestamp"], at(2).rfc3339());
}

fn a_failing_outbox_write_rolls_the_debit_back(db: TestDb) {
    let s = db.store.clone();
    let (a, e) = watched(&s, 10, 5);
    match s.backend() {
        ledger_store::Backend::Sqlite => s.execute_batch(
            "CREATE TRIGGER refuse_outbox BEFORE INSERT ON notification_deliveries \
             BEGIN SELECT RAISE(ABORT, 'outbox refused'); END;",
        ),
        ledger_store::Backend::Postgres => s.execute_batch(
            "CREATE FUNCTION refuse_outbox() RETURNS trigger AS $$ \
             BEGIN RAISE EXCEPTION 'outbox refused'; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse_outbox BEFORE INSERT ON notification_deliveries \
             FOR EACH ROW EXECUTE FUNCTION refuse_outbox();",
        ),
    }
    .unwrap();
    // Above the threshold: no event, the debit lands.
    assert!(debit(&s, &a, 2, 1).result.is_ok());
    // Crossing it needs the outbox row: without it the debit does not happen either.
    let crossing = s.ledger().apply(&a, None, debit_op(c(4)), at(2));
    assert!(crossing.is_err(), "{crossing:?}");
    assert_eq!(s.ledger().balance(&a, at(3)).unwrap().available, c(8));
    s.execute_batch("DROP TRIGGER refuse_outbox ON notification_deliveries")
        .or_else(|_| s.execute_batch("DROP TRIGGER refuse_outbox"))
        .unwrap();
    assert!(debit(&s, &a, 4, 4).result.is_ok());
    assert_eq!(events(&s, &a, &e), vec![Event::CreditsLow]);
    assert_clean(&s);
}

fn a_batch_with_crossings_enqueues_exactly_one_credits_low(db: TestDb) {
    let s = db.store.clone();
    let (a, e) = watched(&s, 12, 10);
    let credit = Operation::Credit {
        spec: GrantSpec::new(GrantSource::Purchase, c(5)),
        memo: Memo::new("Purchased"),
    };
    // 12 → 9 (below) → 14 (above) → 9 (below) → 8, in one transaction.
    let items = [debit_op(c(3)), credit, debit_op(c(5)), debit_op(c(1))]
        .into_iter()
        .map(|operation| BatchItem {
            account_id: a.clone(),
            idempotency: None,
            operation,
        })
        .collect();
    let answers = s.ledger().apply_batch(items, at(1)).unwrap();
    assert!(answers.iter().all(|r| r.as_ref().unwrap().result.is_ok()));
    assert_eq!(events(&s, &a, &e), vec![Event::CreditsLow]);

    // Through the engine: many callers at once, all crossing together.
    let (b, f) = watched(&s, 100, 50);
    std::thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| {
                for _ in 0..4 {
                    assert!(debit(&s, &b, 1, 2).result.is_ok());
                }
            });
        }
    });
    for _ in 0..2 {
        assert!(debit(&s, &b, 1, 3).result.is_ok());
    }
    // 100 - 66 = 34 < 50: crossed once, however the debits were batched.
    assert_eq!(s.ledger().balance(&b, at(4)).unwrap().available, c(34));
    assert_eq!(events(&s, &b, &f), vec![Event::CreditsLow]);
}

fn credits_low_fires_once_per_crossing_and_depleted_at_zero(db: TestDb) {
    let s = db.store.clone();
    let (a, e) = watched(&s, 20, 10);
    debit(&s, &a, 11, 1); // 9: below
    debit(&s, &a, 1, 2); // 8: still below, nothing new
    assert_eq!(events(&s, &a, &e), vec![Event::CreditsLow]);
    credit(&s, &a, 2, at(3)); // 10: at the threshold, re-armed
    debit(&s, &a, 1, 4); // 9: below again
    assert_eq!(
        events(&s, &a, &e),
        vec![Event::CreditsLow, Event::CreditsLow]
    );
    debit(&s, &a, 9, 5); // 0: depleted
    debit(&s, &a, 1, 6); // refused, still 0: nothing new
    assert_eq!(
        events(&s, &a, &e),
        vec![Event::CreditsLow, Event::CreditsLow, Event::CreditsDepleted]
    );
    // Turned off: no credits.low any more; depleted still fires after a rise.
    s.notifications().set_low_balance(&a, None, at(7)).unwrap();
    assert_eq!(s.notifications().low_balance(&a).unwrap(), None);
    credit(&s, &a, 1, at(8));
    debit(&s, &a, 1, 9);
    assert_eq!(
        events(&s, &a, &e),
        vec![
            Event::CreditsLow,
            Event::CreditsLow,
            Event::CreditsDepleted,
            Event::CreditsDepleted
        ]
    );
}

fn only_subscribed_live_endpoints_get_events(db: TestDb) {
    let s = db.store.clone();
    let a = account(&s, 5);
    let n = s.notifications();
    let low = n
        .create_endpoint(
            &a,
            "https://a.example.com/",
            &[Event::CreditsLow],
            "whsec_a",
            at(0),
        )
        .unwrap();
    let dep = n
        .create_endpoint(
            &a,
            "https://b.example.com/",
            &[Event::CreditsDepleted, Event::CreditsDepleted],
            "whsec_b",
            at(0),
        )
        .unwrap();
    assert_eq!(dep.events, vec![Event::CreditsDepleted]);
    let gone = n
        .create_endpoint(&a, "https://c.example.com/", &ALL, "whsec_c", at(0))
        .unwrap();
    assert!(n.delete_endpoint(&a, &gone.id, at(0)).unwrap());
    assert!(!n.delete_endpoint(&a, &gone.id, at(0)).unwrap());
    n.set_low_balance(&a, Some(c(3)), at(0)).unwrap();
    debit(&s, &a, 5, 1);
    assert_eq!(events(&s, &a, &low.id), vec![Event::CreditsLow]);
    assert_eq!(events(&s, &a, &dep.id), vec![Event::CreditsDepleted]);
    assert_eq!(events(&s, &a, &gone.id), vec![]);
    // Both live ones listed (made in the same instant: in id order), the deleted one not.
    let listed: Vec<String> = n.endpoints(&a).unwrap().into_iter().map(|e| e.id).collect();
    let mut live = vec![low.id.clone(), dep.id.clone()];
    live.sort();
    assert_eq!(listed, live);
    // Another account sees none of them.
    let other = account(&s, 0);
    assert!(n.deliveries(&other, &low.id, 10).unwrap().is_none());
    assert!(n.endpoint(&other, &low.id).unwrap().is_none());
    assert!(!n.delete_endpoint(&other, &low.id, at(2)).unwrap());
}

fn enqueue_three(s: &Store) -> (AccountId, String, Vec<String>) {
    let a = account(s, 5);
    let e = s
        .notifications()
        .create_endpoint(&a, "https://hooks.example.com/", &ALL, "whsec_x", at(0))
        .unwrap();
    for (i, event) in [
        Event::CreditsPurchased,
        Event::TopupFailed,
        Event::OverageBilled,
    ]
    .into_iter()
    .enumerate()
    {
        let mut data = serde_json::Map::new();
        data.insert("n".into(), i.into());
        s.notifications()
            .enqueue(&a, event, c(5), data, at(1))
            .unwrap();
    }
    let mut ids: Vec<String> = s
        .notifications()
        .deliveries(&a, &e.id, 10)
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    ids.reverse();
    (a, e.id, ids)
}

fn an_endpoint_is_sent_in_order(db: TestDb) {
    let s = db.store.clone();
    let (_, _, ids) = enqueue_three(&s);
    // A second endpoint's delivery is claimed alongside: the order is per endpoint.
    let (_, _, other) = enqueue_three(&s);
    let n = s.notifications();
    let first = n.claim_due(at(2), 10, 30_000).unwrap();
    let mut got: Vec<&str> = first.iter().map(|c| c.delivery.id.as_str()).collect();
    got.sort();
    let mut want = vec![ids[0].as_str(), other[0].as_str()];
    want.sort();
    assert_eq!(got, want);
    let mine = first.iter().find(|c| c.delivery.id == ids[0]).unwrap();
    assert_eq!(mine.url, "https://hooks.example.com/");
    assert_eq!(mine.secret, "whsec_x");
    // The first failed: it is due again later, and nothing after it goes meanwhile.
    let failed = Attempt::Failed {
        status: Some(500),
        error: "HTTP 500".into(),
    };
    assert!(n.finish(&ids[0], &failed, &policy(), at(2)).unwrap());
    let during: Vec<String> = n
        .claim_due(at(3), 10, 30_000)
        .unwrap()
        .into_iter()
        .map(|c| c.delivery.id)
        .collect();
    assert!(!during.contains(&ids[1]), "{during:?}");
    let again = n.claim_due(at(4), 10, 30_000).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.id, ids[0]);
    let ok = Attempt::Delivered { status: 204 };
    assert!(n.finish(&ids[0], &ok, &policy(), at(4)).unwrap());
    let next = n.claim_due(at(4), 10, 30_000).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].delivery.id, ids[1]);
    assert!(n.finish(&ids[1], &ok, &policy(), at(4)).unwrap());
    let last = n.claim_due(at(4), 10, 30_000).unwrap();
    assert_eq!(last[0].delivery.id, ids[2]);
}

fn a_lease_keeps_two_senders_from_one_delivery(db: TestDb) {
    let s = db.store.clone();
    let (_, _, ids) = enqueue_three(&s);
    // Two processes on one database, claiming at the same instant from many threads.
    let second = Store::open(&db.url, &ledger_store::PoolOptions::default()).unwrap();
    let claimed: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let store = if i % 2 == 0 { &s } else { &second };
                scope.spawn(move || store.notifications().claim_due(at(2), 10, 30_000).unwrap())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .map(|c| c.delivery.id)
            .collect()
    });
    assert_eq!(claimed, vec![ids[0].clone()]);
    // Leased: nobody gets it until the lease ends (a sender that died), then one does.
    assert!(s
        .notifications()
        .claim_due(at(20), 10, 30_000)
        .unwrap()
        .is_empty());
    let after = s.notifications().claim_due(at(33), 10, 30_000).unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].delivery.id, ids[0]);
}

fn failures_back_off_then_give_up(db: TestDb) {
    let s = db.store.clone();
    let (a, e, ids) = enqueue_three(&s);
    let n = s.notifications();
    let fail = |code| Attempt::Failed {
        status: Some(code),
        error: format!("HTTP {code}"),
    };
    // Attempt 1 at 2 s fails: due at 4 s (2 s), attempt 2 then at 8 s (4 s), then given up.
    let mut t = 2;
    for (attempt, wait) in [(1, 2), (2, 4)] {
        let got = n.claim_due(at(t), 1, 30_000).unwrap();
        assert_eq!(got[0].delivery.attempts, attempt - 1);
        assert!(n.finish(&ids[0], &fail(503), &policy(), at(t)).unwrap());
        assert!(n.claim_due(at(t + wait - 1), 1, 30_000).unwrap().is_empty());
        t += wait;
    }
    let d = n.deliveries(&a, &e, 10).unwrap().unwrap();
    let first = d.iter().find(|d| d.id == ids[0]).unwrap();
    assert_eq!(first.status, DeliveryStatus::Pending);
    assert_eq!(first.attempts, 2);
    assert_eq!(first.response_status, Some(503));
    assert_eq!(first.last_attempt_at, Some(at(4)));
    assert_eq!(first.next_attempt_at, at(8));
    let third = n.claim_due(at(t), 1, 30_000).unwrap();
    assert_eq!(third[0].delivery.id, ids[0]);
    assert!(n.finish(&ids[0], &fail(500), &policy(), at(t)).unwrap());
    let d = n.deliveries(&a, &e, 10).unwrap().unwrap();
    let first = d.iter().find(|d| d.id == ids[0]).unwrap();
    assert_eq!(first.status, DeliveryStatus::Failed);
    assert_eq!(first.attempts, 3);
    // Finishing a delivery that is no longer pending changes nothing.
    assert!(!n
        .finish(
            &ids[0],
            &Attempt::Delivered { status: 200 },
            &policy(),
            at(t)
        )
        .unwrap());
    // Given up: the next one of the endpoint goes now.
    let next = n.claim_due(at(t), 1, 30_000).unwrap();
    assert_eq!(next[0].delivery.id, ids[1]);
}

/// The last delivery's body.
fn last_body(s: &Store, a: &AccountId, endpoint: &str) -> serde_json::Value {
    let d = s
        .notifications()
        .deliveries(a, endpoint, 1)
        .unwrap()
        .unwrap();
    serde_json::from_str(&d[0].payload).unwrap()
}

fn auto_topup_and_overage_tell_the_customer_in_their_transactions(db: TestDb) {
    let s = db.store.clone();
    let a = account(&s, 5);
    let e = s
        .notifications()
        .create_endpoint(
            &a,
            "https://hooks.example.com/",
            &[
                Event::TopupSucceeded,
                Event::TopupFailed,
                Event::OverageBilled,
            ],
            "whsec_x",
            at(0),
        )
        .unwrap()
        .id;
    let pack = TopupPack {
        pack_id: PackId::new("pack_starter"),
        credits: c(100),
        price_cents: 500,
    };
    s.orders()
        .put_auto_topup(&a, true, c(3), &pack, at(0))
        .unwrap();
    // 5 → 2: below 3, a top-up charge starts with the debit.
    debit(&s, &a, 3, 1);
    let charge = s.orders().pending_topup_charges(10).unwrap().remove(0);
    s.orders()
        .confirm_topup_charge(&charge.id, "Auto top-up", at(2))
        .unwrap();
    assert_eq!(events(&s, &a, &e), vec![Event::TopupSucceeded]);
    let body = last_body(&s, &a, &e);
    assert_eq!(body["data"]["balance"], 102);
    assert_eq!(body["data"]["credits"], 100);
    assert_eq!(body["data"]["orderId"], charge.id.as_str());
    assert_eq!(body["data"]["packId"], "pack_starter");
    // Confirmed again (a duplicate): credited once, told once.
    s.orders()
        .confirm_topup_charge(&charge.id, "Auto top-up", at(3))
        .unwrap();
    assert_eq!(events(&s, &a, &e), vec![Event::TopupSucceeded]);

    // 102 → 1: another charge, which the provider refuses.
    debit(&s, &a, 101, 4);
    let charge = s.orders().pending_topup_charges(10).unwrap().remove(0);
    assert!(s
        .orders()
        .fail_topup_charge(&charge.id, "card declined", at(5))
        .unwrap());
    assert!(!s
        .orders()
        .fail_topup_charge(&charge.id, "card declined", at(6))
        .unwrap());
    assert_eq!(
        events(&s, &a, &e),
        vec![Event::TopupSucceeded, Event::TopupFailed]
    );
    let body = last_body(&s, &a, &e);
    assert_eq!(body["type"], "topup.failed");
    assert_eq!(body["data"]["reason"], "card declined");
    assert_eq!(body["data"]["chargeId"], charge.id.as_str());
    assert_eq!(body["data"]["balance"], 1);

    // A Basic plan (10,000 a month) with a hard limit of 15,000: 500 extra bills a block.
    let b = account(&s, 0);
    let f = s
        .notifications()
        .create_endpoint(&b, "https://hooks.example.com/", &ALL, "whsec_y", at(0))
        .unwrap()
        .id;
    let basic = ledger_core::plan::examples::basic();
    s.plans()
        .subscribe(&b, &basic, SubscriptionStatus::Active, Some(at(0)), at(0))
        .unwrap();
    s.plans()
        .set_hard_limit(&b, ledger_core::Role::Owner, c(15_000), at(0))
        .unwrap()
        .unwrap();
    let usage = |n| Operation::Debit {
        kind: EntryKind::Usage,
        amount: c(n),
        spend: Spend::WithinAccountLimit,
        memo: Memo::new("Screenshot captured"),
    };
    let used = s.ledger().apply(&b, None, usage(10_000), at(1)).unwrap();
    assert!(used.result.is_ok());
    assert_eq!(events(&s, &b, &f), vec![Event::CreditsDepleted]);
    let extra = s.ledger().apply(&b, None, usage(500), at(2)).unwrap();
    assert!(extra.result.is_ok(), "{extra:?}");
    assert_eq!(
        events(&s, &b, &f),
        vec![Event::CreditsDepleted, Event::OverageBilled]
    );
    let items = s.plans().overage_items(&b).unwrap();
    assert_eq!(items.len(), 1);
    let body = last_body(&s, &b, &f);
    assert_eq!(body["data"]["blocks"], 1);
    assert_eq!(body["data"]["credits"], 1000);
    assert_eq!(body["data"]["amountCents"], items[0].amount.get());
    assert_eq!(body["data"]["balance"], serde_json::json!(extra.available));
    assert_clean(&s);
}
