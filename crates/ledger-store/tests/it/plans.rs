//! Plans persisted (ADR 9): periods rolled exactly once, the wall under concurrency,
//! overage items equal to the rounded extra, plan changes and cancelling.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Barrier;

use ledger_core::plan::examples::{basic, free};
use ledger_core::plan::{HardLimitRefusal, Plan, Role};
use ledger_core::*;
use ledger_store::{Operation, OverageStatus, PlanRefusal, PlanSubscription, Spend, Store};

use crate::common::*;

on_both_backends!(
    the_allowance_is_granted_once_when_two_threads_race_the_first_touch,
    a_week_of_downtime_grants_only_the_current_period_and_expires_the_old_allowance,
    the_wall_holds_under_sixteen_threads,
    refunding_extra_credits_a_block_back,
    the_seed_examples_as_store_figures,
    upgrading_resets_the_hard_limit_and_starts_a_new_period,
    downgrading_to_free_writes_the_extra_off_at_once,
    downgrading_to_a_paying_plan_keeps_the_allowance_until_the_next_period,
    cancelling_writes_the_extra_off_and_grants_no_more,
    hard_limit_rules_are_the_cores,
    balance_reads_roll_a_period_that_ended,
    subscribing_again_in_a_period_bills_only_the_new_extra,
    released_holds_cost_nothing_and_captures_bill_their_blocks,
);

const DAY: i64 = 86_400;

fn pro() -> Plan {
    let (credits, price) = (c(50_000), Cents::new(9_900));
    Plan::paying("pro", "Pro", credits, price, Cents::new(300))
}

fn starter() -> Plan {
    let (credits, price) = (c(5_000), Cents::new(1_900));
    Plan::paying("starter", "Starter", credits, price, Cents::new(500))
}

fn usage(n: Credits) -> Operation {
    Operation::Debit {
        kind: EntryKind::Usage,
        amount: n,
        spend: Spend::WithinAccountLimit,
        memo: Memo::new("Screenshot captured").source("Screenshot"),
    }
}

/// An account with no credits of its own, on `plan` anchored at `at(0)`.
fn subscribed(s: &Store, plan: &Plan, hard_limit: Option<i64>) -> AccountId {
    let a = account(s, 0);
    s.plans()
        .subscribe(&a, plan, SubscriptionStatus::Active, Some(at(0)), at(0))
        .unwrap();
    if let Some(h) = hard_limit {
        s.plans()
            .set_hard_limit(&a, Role::Owner, c(h), at(0))
            .unwrap()
            .unwrap();
    }
    a
}

/// Applies `op` at `when`; the ledger must accept it.
fn applied(s: &Store, a: &AccountId, op: Operation, when: Timestamp) {
    s.ledger().apply(a, None, op, when).unwrap().result.unwrap();
}

/// A Basic account with a hard limit of 15,000 that used `used` on day one and changed
/// to `to` on day two (which it is on then).
fn changed_after_using(s: &Store, used: i64, to: &Plan) -> (AccountId, PlanSubscription) {
    let a = subscribed(s, &basic(), Some(15_000));
    applied(s, &a, usage(c(used)), at(DAY));
    let sub = s.plans().change_plan(&a, to, at(2 * DAY)).unwrap().unwrap();
    assert_eq!(sub.plan.id, to.id);
    (a, sub)
}

/// The allowance the next period (from day 31) grants, the first period's being the only
/// one until then.
fn next_allowance(s: &Store, a: &AccountId) -> Entry {
    assert_eq!(allowances(s, a).len(), 1);
    s.ledger().balance(a, at(31 * DAY)).unwrap();
    let mut granted = allowances(s, a);
    assert_eq!(granted.len(), 2);
    granted.swap_remove(0)
}

fn allowances(s: &Store, a: &AccountId) -> Vec<Entry> {
    s.ledger()
        .history(a, Page::new(100, 0).unwrap())
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EntryKind::Allowance)
        .collect()
}

fn the_allowance_is_granted_once_when_two_threads_race_the_first_touch(db: TestDb) {
    let s = db.store.clone();
    let a = subscribed(&s, &basic(), None);
    assert_eq!(allowances(&s, &a).len(), 1);
    // The next period starts at April 1st; two threads touch the account at once then.
    let april = at(31 * DAY + 60);
    for round in 0..3 {
        let when = april.plus_secs(round * 31 * DAY);
        let barrier = Barrier::new(2);
        std::thread::scope(|scope| {
            for t in 0..2 {
                let (s, a, barrier) = (&s, &a, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    if t == 0 {
                        s.ledger().apply(a, None, usage(c(1)), when).unwrap();
                    } else {
                        s.ledger().balance(a, when).unwrap();
                    }
                });
            }
        });
        assert_eq!(allowances(&s, &a).len(), 2 + round as usize);
    }
    let all = allowances(&s, &a);
    assert!(all
        .iter()
        .all(|e| e.amount == c(10_000) && e.source == "Monthly Reset"));
    assert!(
        all[0].description.contains("Basic"),
        "{}",
        all[0].description
    );
    assert_clean(&s);
}

fn a_week_of_downtime_grants_only_the_current_period_and_expires_the_old_allowance(db: TestDb) {
    let s = db.store.clone();
    let a = subscribed(&s, &basic(), None);
    s.ledger()
        .apply(&a, None, usage(c(4_000)), at(DAY))
        .unwrap();
    // Nothing touches the account for three months and a week.
    let later = at((31 + 30 + 31 + 7) * DAY);
    let b = s.ledger().balance(&a, later).unwrap();
    assert_eq!(
        b.available,
        c(10_000),
        "one fresh allowance, the old one gone"
    );
    let history = s.ledger().history(&a, Page::new(100, 0).unwrap()).unwrap();
    let granted = allowances(&s, &a);
    assert_eq!(granted.len(), 2, "the periods in between are not granted");
    let expiries: Vec<_> = history
        .iter()
        .filter(|e| e.kind == EntryKind::Expiry)
        .collect();
    assert_eq!(expiries.len(), 1);
    assert_eq!(expiries[0].amount, -c(6_000));
    let sub = s.plans().subscription(&a, later).unwrap().unwrap();
    let period = sub.period.unwrap();
    assert!(period.contains(later));
    assert_eq!(
        period.start,
        Timestamp::parse_rfc3339("2026-06-01T00:00:00Z").unwrap()
    );
    // Every process that comes back touches it again: nothing more is granted.
    for _ in 0..3 {
        s.ledger()
            .apply(&a, None, usage(c(1)), later.plus_secs(5))
            .unwrap();
        assert_eq!(s.plans().roll_due(later.plus_secs(5), 10).unwrap(), 0);
    }
    assert_eq!(allowances(&s, &a).len(), 2);
    assert_clean(&s);
}

fn the_wall_holds_under_sixteen_threads(db: TestDb) {
    let s = db.store.clone();
    // 10,000 allowance, hard limit 15,000: 5,000 of extra at most.
    let a = subscribed(&s, &basic(), Some(15_000));
    let ok = AtomicUsize::new(0);
    let walls = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| {
                for _ in 0..40 {
                    let r = s.ledger().apply(&a, None, usage(c(37)), at(60)).unwrap();
                    match r.result {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(LedgerError::HardLimitReached { .. }) => {
                            walls.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(other) => panic!("unexpected refusal {other:?}"),
                    };
                }
            });
        }
    });
    // 15,000 / 37 = 405 charges fit; the 640 - 405 others hit the wall.
    assert_eq!(ok.load(Ordering::Relaxed), 405);
    assert_eq!(walls.load(Ordering::Relaxed), 640 - 405);
    let sub = s.plans().subscription(&a, at(61)).unwrap().unwrap();
    assert_eq!(sub.extra, c(405 * 37 - 10_000));
    assert!(sub.extra <= c(5_000));
    assert_eq!(sub.billed_blocks, 5, "4,985 extra is 5 blocks");
    assert_eq!(sub.charge, Cents::new(2_000));
    let items = s.plans().overage_items(&a).unwrap();
    assert_eq!(items.len(), 5);
    let ordinals: Vec<i64> = items.iter().map(|i| i.ordinal).collect();
    assert_eq!(
        ordinals,
        [5, 4, 3, 2, 1],
        "newest first, numbered once each"
    );
    assert!(items.iter().all(|i| i.status == OverageStatus::Pending));
    assert_clean(&s);
}

fn refunding_extra_credits_a_block_back(db: TestDb) {
    let s = db.store.clone();
    let a = subscribed(&s, &basic(), Some(15_000));
    s.ledger()
        .apply(&a, None, usage(c(10_000)), at(10))
        .unwrap();
    let charge = entry(s.ledger().apply(&a, None, usage(c(1_500)), at(11)).unwrap());
    let sub = s.plans().subscription(&a, at(12)).unwrap().unwrap();
    assert_eq!((sub.extra, sub.billed_blocks), (c(1_500), 2));
    let refund = Operation::Refund {
        entry_id: charge.id.clone(),
        amount: Some(c(600)),
        memo: Memo::new("Refund for failed work"),
    };
    applied(&s, &a, refund, at(13));
    let sub = s.plans().subscription(&a, at(14)).unwrap().unwrap();
    assert_eq!((sub.extra, sub.billed_blocks), (c(900), 1));
    assert_eq!(sub.charge, Cents::new(400));
    let items = s.plans().overage_items(&a).unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!((items[0].blocks, items[0].credits), (-1, -c(1_000)));
    assert_eq!(items[0].amount, Cents::new(-400));
    // Ids are stable: account, period and ordinal.
    let period = sub.period.unwrap();
    assert_eq!(items[2].id, plan::overage_item_id(a.as_str(), period, 1));
    assert_clean(&s);
}

fn the_seed_examples_as_store_figures(db: TestDb) {
    let s = db.store.clone();
    for (used, billed, cents) in [(12_000, 2_000, 800), (12_500, 3_000, 1_200)] {
        let a = subscribed(&s, &basic(), Some(15_000));
        applied(&s, &a, usage(c(used)), at(10));
        let sub = s.plans().subscription(&a, at(11)).unwrap().unwrap();
        assert_eq!(sub.used, c(used));
        assert_eq!(sub.extra_billed(), c(billed));
        assert_eq!(sub.charge, Cents::new(cents));
    }
    for (extra, billed) in [(1, 1_000), (999, 1_000), (1_000, 1_000), (1_001, 2_000)] {
        let a = subscribed(&s, &basic(), Some(15_000));
        applied(&s, &a, usage(c(10_000 + extra)), at(10));
        let sub = s.plans().subscription(&a, at(11)).unwrap().unwrap();
        assert_eq!(
            (sub.extra, sub.extra_billed()),
            (c(extra), c(billed)),
            "{extra}"
        );
    }
    assert_clean(&s);
}

fn upgrading_resets_the_hard_limit_and_starts_a_new_period(db: TestDb) {
    let s = db.store.clone();
    let a = subscribed(&s, &basic(), Some(15_000));
    applied(&s, &a, usage(c(11_500)), at(DAY));
    let now = at(3 * DAY);
    let sub = s.plans().change_plan(&a, &pro(), now).unwrap().unwrap();
    assert_eq!(sub.plan.id, "pro");
    assert_eq!(sub.hard_limit, c(50_000), "back to the new plan's limit");
    assert_eq!(
        sub.period.unwrap().start,
        now,
        "a new period starts at once"
    );
    assert_eq!((sub.used, sub.extra, sub.billed_blocks), (c(0), c(0), 0));
    let b = s.ledger().balance(&a, now).unwrap();
    assert_eq!(
        b.available,
        c(50_000),
        "the new allowance, the old one expired"
    );
    assert_eq!(allowances(&s, &a).len(), 2);
    // The extra of the old period was billed and written off: 2 blocks, kept.
    let items = s.plans().overage_items(&a).unwrap();
    assert_eq!(items.iter().map(|i| i.blocks).sum::<i64>(), 2);
    // Charging extra is off until set again: past the allowance is a plain 402.
    let r = s.ledger().apply(&a, None, usage(c(50_001)), now).unwrap();
    assert!(
        matches!(r.result, Err(LedgerError::InsufficientCredits { .. })),
        "{r:?}"
    );
    assert_clean(&s);
}

fn downgrading_to_free_writes_the_extra_off_at_once(db: TestDb) {
    let s = db.store.clone();
    let (a, sub) = changed_after_using(&s, 10_700, &free());
    assert_eq!(sub.extra, c(700), "the period's extra, written off");
    assert_eq!(sub.billed_blocks, 1);
    let b = s.ledger().balance(&a, at(2 * DAY)).unwrap();
    assert_eq!((b.available, b.book), (c(0), c(0)), "no overdraft left");
    let history = s.ledger().history(&a, Page::new(5, 0).unwrap()).unwrap();
    assert_eq!(history[0].source, "Overage");
    assert_eq!(history[0].amount, c(700));
    // The free plan's allowance comes with the next period.
    let granted = next_allowance(&s, &a);
    assert_eq!(granted.amount, c(100));
    assert_eq!(granted.plan.as_deref(), Some("Free"));
    assert_clean(&s);
}

fn downgrading_to_a_paying_plan_keeps_the_allowance_until_the_next_period(db: TestDb) {
    let s = db.store.clone();
    let (a, sub) = changed_after_using(&s, 10_500, &starter());
    assert_eq!(sub.extra, c(500), "no billing at once: the extra stays");
    assert_eq!(
        sub.hard_limit,
        c(15_000),
        "a downgrade keeps the hard limit"
    );
    assert_eq!(sub.period.unwrap().start, at(0), "same period");
    let granted = next_allowance(&s, &a);
    assert_eq!(granted.amount, c(5_000));
    assert_clean(&s);
}

fn cancelling_writes_the_extra_off_and_grants_no_more(db: TestDb) {
    let s = db.store.clone();
    let a = subscribed(&s, &basic(), Some(15_000));
    applied(&s, &a, usage(c(12_000)), at(DAY));
    let sub = s.plans().cancel(&a, at(2 * DAY)).unwrap().unwrap();
    assert_eq!(sub.status, SubscriptionStatus::Cancelled);
    assert_eq!((sub.extra, sub.billed_blocks), (c(2_000), 2));
    let b = s.ledger().balance(&a, at(2 * DAY)).unwrap();
    assert_eq!(b.book, c(0));
    // Past the allowance is refused without extra, and no allowance comes next month.
    let r = s
        .ledger()
        .apply(&a, None, usage(c(1)), at(2 * DAY))
        .unwrap();
    assert!(matches!(
        r.result,
        Err(LedgerError::InsufficientCredits { .. })
    ));
    s.ledger().balance(&a, at(40 * DAY)).unwrap();
    assert_eq!(allowances(&s, &a).len(), 1);
    assert_eq!(
        s.plans().due(at(40 * DAY), 10).unwrap(),
        Vec::<AccountId>::new()
    );
    let refused = s.plans().change_plan(&a, &pro(), at(40 * DAY)).unwrap();
    assert!(matches!(refused, Err(PlanRefusal::NotInForce { .. })));
    assert_clean(&s);
}

fn hard_limit_rules_are_the_cores(db: TestDb) {
    let s = db.store.clone();
    let a = subscribed(&s, &basic(), None);
    let refuse = |role, n| s.plans().set_hard_limit(&a, role, c(n), at(1)).unwrap();
    assert_eq!(
        refuse(Role::Member, 15_000),
        Err(PlanRefusal::HardLimit(HardLimitRefusal::OwnerOnly))
    );
    assert!(matches!(
        refuse(Role::Owner, 9_999),
        Err(PlanRefusal::HardLimit(
            HardLimitRefusal::BelowPlanLimit { .. }
        ))
    ));
    assert!(matches!(
        refuse(Role::Owner, 100_001),
        Err(PlanRefusal::HardLimit(
            HardLimitRefusal::AboveMaximum { .. }
        ))
    ));
    assert_eq!(refuse(Role::Owner, 15_000).unwrap().hard_limit, c(15_000));
    // Below what this period used: refused, extra may never pass the wall.
    applied(&s, &a, usage(c(12_000)), at(2));
    assert_eq!(
        refuse(Role::Owner, 11_999),
        Err(PlanRefusal::BelowUse { used: c(12_000) })
    );
    assert_eq!(refuse(Role::Owner, 12_000).unwrap().hard_limit, c(12_000));
    s.access()
        .set_max_hard_limit(&a, c(200_000), at(3))
        .unwrap();
    assert_eq!(
        refuse(Role::Owner, 150_000).unwrap().max_hard_limit,
        c(200_000)
    );
    let f = subscribed(&s, &free(), None);
    let r = s
        .plans()
        .set_hard_limit(&f, Role::Owner, c(200), at(1))
        .unwrap();
    assert!(matches!(
        r,
        Err(PlanRefusal::HardLimit(HardLimitRefusal::FreePlan { .. }))
    ));
    let none = account(&s, 0);
    let r = s
        .plans()
        .set_hard_limit(&none, Role::Owner, c(200), at(1))
        .unwrap();
    assert_eq!(r, Err(PlanRefusal::NoSubscription));
    assert_clean(&s);
}

fn balance_reads_roll_a_period_that_ended(db: TestDb) {
    let s = db.store.clone();
    let a = subscribed(&s, &basic(), None);
    applied(&s, &a, usage(c(10_000)), at(DAY));
    assert_eq!(
        s.ledger().balance(&a, at(30 * DAY)).unwrap().available,
        c(0)
    );
    assert_eq!(
        s.ledger().balance(&a, at(31 * DAY)).unwrap().available,
        c(10_000),
        "the first read of April sees April's allowance"
    );
    // The sweeper finds nothing due once a read rolled it; later it rolls idle accounts.
    assert_eq!(
        s.plans().due(at(31 * DAY), 10).unwrap(),
        Vec::<AccountId>::new()
    );
    let idle = subscribed(&s, &basic(), None);
    assert_eq!(s.plans().due(at(61 * DAY), 10).unwrap().len(), 2);
    assert_eq!(s.plans().roll_due(at(61 * DAY), 1).unwrap(), 2);
    assert_eq!(allowances(&s, &idle).len(), 2);
    assert_clean(&s);
}

fn subscribing_again_in_a_period_bills_only_the_new_extra(db: TestDb) {
    let s = db.store.clone();
    let a = subscribed(&s, &basic(), Some(15_000));
    applied(&s, &a, usage(c(11_500)), at(DAY));
    s.plans().cancel(&a, at(2 * DAY)).unwrap().unwrap();
    // The operator puts the account back on Basic in the same period: no second
    // allowance, and the written-off extra is not credited back.
    let sub = s
        .plans()
        .subscribe(&a, &basic(), SubscriptionStatus::Active, None, at(3 * DAY))
        .unwrap();
    assert_eq!(sub.period.unwrap().start, at(0));
    assert_eq!(allowances(&s, &a).len(), 1);
    s.plans()
        .set_hard_limit(&a, Role::Owner, c(15_000), at(3 * DAY))
        .unwrap()
        .unwrap();
    applied(&s, &a, usage(c(500)), at(4 * DAY));
    let items = s.plans().overage_items(&a).unwrap();
    assert_eq!(
        items.iter().map(|i| i.blocks).collect::<Vec<_>>(),
        [1, 1, 1]
    );
    // And an admin change of plan in force is a change: Basic to Pro is an upgrade.
    let sub = s
        .plans()
        .subscribe(&a, &pro(), SubscriptionStatus::Active, None, at(5 * DAY))
        .unwrap();
    assert_eq!(sub.period.unwrap().start, at(5 * DAY));
    assert_eq!(sub.hard_limit, c(50_000));
    assert_eq!(
        s.ledger().balance(&a, at(5 * DAY)).unwrap().available,
        c(50_000)
    );
    assert_clean(&s);
}

fn released_holds_cost_nothing_and_captures_bill_their_blocks(db: TestDb) {
    let s = db.store.clone();
    let a = subscribed(&s, &basic(), Some(15_000));
    let reserve = |n: i64| Operation::Reserve {
        amount: c(n),
        ttl_ms: 600_000,
        spend: Spend::WithinAccountLimit,
        memo: Memo::new("Screenshot in progress"),
    };
    // A hold past the allowance, released: nothing billed.
    let h = hold(s.ledger().apply(&a, None, reserve(12_000), at(10)).unwrap());
    applied(&s, &a, Operation::Release { hold_id: h.id }, at(11));
    assert!(s.plans().overage_items(&a).unwrap().is_empty());
    // Past the wall, a hold is refused with the plan's refusal.
    let r = s.ledger().apply(&a, None, reserve(15_001), at(12)).unwrap();
    assert!(
        matches!(r.result, Err(LedgerError::HardLimitReached { .. })),
        "{r:?}"
    );
    // Captured in part: only what was captured counts.
    let h = hold(s.ledger().apply(&a, None, reserve(13_000), at(13)).unwrap());
    let capture = Operation::Capture {
        hold_id: h.id,
        amount: Some(c(11_200)),
        memo: None,
    };
    applied(&s, &a, capture, at(14));
    let sub = s.plans().subscription(&a, at(15)).unwrap().unwrap();
    assert_eq!(
        (sub.used, sub.extra, sub.billed_blocks),
        (c(11_200), c(1_200), 2)
    );
    assert_clean(&s);
}
