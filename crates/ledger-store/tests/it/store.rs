//! The store's behaviour, run on SQLite and on PostgreSQL.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use ledger_core::*;
use ledger_store::{BatchItem, Operation, Outcome, Spend, StoreError};

on_both_backends!(
    signup_bonus_is_granted_once_with_the_account,
    debits_never_overdraw_and_rejections_change_nothing,
    holds_capture_part_and_release,
    refunds_are_capped_by_the_charge,
    history_is_newest_first_with_limit_and_offset,
    month_history_is_a_half_open_utc_range,
    idempotent_requests_have_one_effect,
    expired_grants_and_holds_settle_on_the_next_operation,
    overdraft_only_within_the_account_limit,
    batches_apply_many_operations_in_one_transaction,
    compaction_keeps_every_balance_exact,
    verify_finds_tampering,
    concurrent_debits_never_overdraw,
    concurrent_holds_captures_and_releases_never_overdraw,
    the_same_key_from_many_threads_charges_once,
    unknown_accounts_holds_and_entries_are_reported,
    balances_stop_at_the_maximum,
    verify_reports_overflow_instead_of_panicking,
    overdraft_allowances_stop_at_the_maximum,
);

fn signup_bonus_is_granted_once_with_the_account(db: TestDb) {
    let s = &db.store;
    let (account, available) = s
        .ledger()
        .create_account(
            ledger_store::NewAccount {
                email: Some("a@example.com".into()),
                password_hash: None,
                signup_bonus: c(5),
            },
            at(0),
        )
        .unwrap();
    assert_eq!(available, c(5));
    let history = s.ledger().history(&account.id, Page::default()).unwrap();
    assert_eq!(history.len(), 1);
    let bonus = &history[0];
    assert_eq!(
        (
            bonus.kind,
            bonus.amount,
            bonus.description.as_str(),
            bonus.reference_id.clone()
        ),
        (EntryKind::SignupBonus, c(5), "Welcome bonus", None)
    );
    let again = s.ledger().create_account(
        ledger_store::NewAccount {
            email: Some("a@example.com".into()),
            password_hash: None,
            signup_bonus: c(5),
        },
        at(1),
    );
    assert!(
        matches!(again, Err(StoreError::EmailTaken { .. })),
        "{again:?}"
    );
    assert_eq!(s.maintenance().verify().unwrap().accounts, 1);
    let no_bonus = account_with(s, 0);
    assert!(s
        .ledger()
        .history(&no_bonus, Page::default())
        .unwrap()
        .is_empty());
    assert_clean(s);
}

fn account_with(s: &ledger_store::Store, bonus: i64) -> AccountId {
    account(s, bonus)
}

fn debits_never_overdraw_and_rejections_change_nothing(db: TestDb) {
    let s = &db.store;
    let a = account(s, 5);
    let e = entry(
        s.ledger()
            .apply(&a, None, debit_op(Credits::from_millis(600)), at(1))
            .unwrap(),
    );
    assert_eq!(
        (e.amount, e.balance_after, e.source.as_str()),
        (
            Credits::from_millis(-600),
            Credits::from_millis(4400),
            "Screenshot"
        )
    );
    let refused = s.ledger().apply(&a, None, debit_op(c(5)), at(2)).unwrap();
    assert_eq!(
        refused.result,
        Err(LedgerError::InsufficientCredits {
            required: c(5),
            available: Credits::from_millis(4400)
        })
    );
    assert_eq!(
        s.ledger().balance(&a, at(3)).unwrap().available,
        Credits::from_millis(4400)
    );
    assert_eq!(s.ledger().history(&a, Page::default()).unwrap().len(), 2);
    assert_clean(s);
}

fn holds_capture_part_and_release(db: TestDb) {
    let s = &db.store;
    let a = account(s, 10);
    let reserve = |n: i64, now| {
        hold(
            s.ledger()
                .apply(
                    &a,
                    None,
                    Operation::Reserve {
                        amount: c(n),
                        ttl_ms: 600_000,
                        spend: Spend::Strict,
                        memo: Memo::new("Screenshot captured").reference("scr_1"),
                    },
                    now,
                )
                .unwrap(),
        )
    };
    let h = reserve(4, at(1));
    let b = s.ledger().balance(&a, at(1)).unwrap();
    assert_eq!((b.available, b.book, b.held), (c(6), c(10), c(4)));
    let e = entry(
        s.ledger()
            .apply(
                &a,
                None,
                Operation::Capture {
                    hold_id: h.id.clone(),
                    amount: Some(c(1)),
                    memo: None,
                },
                at(2),
            )
            .unwrap(),
    );
    assert_eq!(
        (e.kind, e.amount, e.reference_id.as_deref()),
        (EntryKind::Usage, c(-1), Some("scr_1"))
    );
    assert_eq!(s.ledger().balance(&a, at(2)).unwrap().available, c(9));
    assert_eq!(
        s.ledger().hold(&h.id).unwrap().unwrap().status,
        HoldStatus::Captured
    );
    let again = s
        .ledger()
        .apply(
            &a,
            None,
            Operation::Release {
                hold_id: h.id.clone(),
            },
            at(3),
        )
        .unwrap();
    assert!(
        matches!(again.result, Err(LedgerError::HoldSettled { .. })),
        "{again:?}"
    );
    let h2 = reserve(9, at(4));
    assert!(matches!(
        s.ledger()
            .apply(&a, None, debit_op(c(1)), at(4))
            .unwrap()
            .result,
        Err(LedgerError::InsufficientCredits { .. })
    ));
    let released = s
        .ledger()
        .apply(
            &a,
            None,
            Operation::Release {
                hold_id: h2.id.clone(),
            },
            at(5),
        )
        .unwrap();
    assert_eq!(
        (released.result, released.available),
        (Ok(Outcome::Settled), c(9))
    );
    // A release writes no entry: only the bonus and the one capture remain.
    assert_eq!(s.ledger().history(&a, Page::default()).unwrap().len(), 2);
    assert_clean(s);
}

fn refunds_are_capped_by_the_charge(db: TestDb) {
    let s = &db.store;
    let a = account(s, 10);
    let usage = entry(s.ledger().apply(&a, None, debit_op(c(4)), at(1)).unwrap());
    let refund = |amount: Option<i64>, now| {
        s.ledger()
            .apply(
                &a,
                None,
                Operation::Refund {
                    entry_id: usage.id.clone(),
                    amount: amount.map(c),
                    memo: Memo::new("Refund for failed work"),
                },
                now,
            )
            .unwrap()
    };
    let r = entry(refund(Some(1), at(2)));
    assert_eq!(
        (r.kind, r.amount, r.refund_of.clone()),
        (EntryKind::Refund, c(1), Some(usage.id.clone()))
    );
    assert!(matches!(
        refund(Some(4), at(3)).result,
        Err(LedgerError::RefundExceedsCharge { .. })
    ));
    assert_eq!(entry(refund(None, at(4))).amount, c(3));
    assert!(matches!(
        refund(None, at(5)).result,
        Err(LedgerError::RefundExceedsCharge { .. })
    ));
    assert_eq!(s.ledger().balance(&a, at(6)).unwrap().available, c(10));
    let bonus = s
        .ledger()
        .history(&a, Page::default())
        .unwrap()
        .pop()
        .unwrap();
    let not_usage = s
        .ledger()
        .apply(
            &a,
            None,
            Operation::Refund {
                entry_id: bonus.id,
                amount: None,
                memo: Memo::new("x"),
            },
            at(7),
        )
        .unwrap();
    assert!(matches!(
        not_usage.result,
        Err(LedgerError::NotRefundable { .. })
    ));
    assert_clean(s);
}

fn history_is_newest_first_with_limit_and_offset(db: TestDb) {
    let s = &db.store;
    let a = account(s, 0);
    for i in 0..7 {
        credit(s, &a, i + 1, at(i));
    }
    let all = s.ledger().history(&a, Page::default()).unwrap();
    let amounts: Vec<_> = all.iter().map(|e| e.amount).collect();
    assert_eq!(amounts, (1..=7).rev().map(c).collect::<Vec<_>>());
    let page = s.ledger().history(&a, Page::new(2, 3).unwrap()).unwrap();
    assert_eq!(
        page.iter().map(|e| e.amount).collect::<Vec<_>>(),
        vec![c(4), c(3)]
    );
    assert!(s
        .ledger()
        .history(&a, Page::new(10, 7).unwrap())
        .unwrap()
        .is_empty());
    // Another account sees none of it.
    let b = account(s, 0);
    assert!(s.ledger().history(&b, Page::default()).unwrap().is_empty());
}

fn month_history_is_a_half_open_utc_range(db: TestDb) {
    let s = &db.store;
    let a = account(s, 0);
    let march = YearMonth::new(2026, 3).unwrap();
    credit(s, &a, 1, Timestamp::from_millis(march.start().millis() - 1));
    credit(s, &a, 2, march.start());
    credit(s, &a, 3, Timestamp::from_millis(march.end().millis() - 1));
    credit(s, &a, 4, march.end());
    let got: Vec<_> = s
        .ledger()
        .month(&a, march)
        .unwrap()
        .iter()
        .map(|e| e.amount)
        .collect();
    assert_eq!(got, vec![c(3), c(2)]);
    assert_eq!(s.ledger().month(&a, march.next()).unwrap().len(), 1);
}

fn idempotent_requests_have_one_effect(db: TestDb) {
    let s = &db.store;
    let a = account(s, 3);
    let key = idem("k-1", "debit|2");
    let first = s
        .ledger()
        .apply(&a, Some(&key), debit_op(c(2)), at(1))
        .unwrap();
    let again = s
        .ledger()
        .apply(&a, Some(&key), debit_op(c(2)), at(2))
        .unwrap();
    assert!(!first.replayed && again.replayed);
    assert_eq!(
        first.result, again.result,
        "a replay answers as the first time"
    );
    assert_eq!(s.ledger().balance(&a, at(3)).unwrap().available, c(1));
    let conflict = s
        .ledger()
        .apply(&a, Some(&idem("k-1", "debit|1")), debit_op(c(1)), at(3));
    assert!(
        matches!(conflict, Err(StoreError::IdempotencyConflict { .. })),
        "{conflict:?}"
    );
    // A rejection stays a rejection, even after credits arrive.
    let k2 = idem("k-2", "debit|5");
    let refused = s
        .ledger()
        .apply(&a, Some(&k2), debit_op(c(5)), at(4))
        .unwrap();
    assert!(matches!(
        refused.result,
        Err(LedgerError::InsufficientCredits { .. })
    ));
    credit(s, &a, 100, at(5));
    let replay = s
        .ledger()
        .apply(&a, Some(&k2), debit_op(c(5)), at(6))
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.result, refused.result);
    assert_eq!(s.ledger().balance(&a, at(7)).unwrap().available, c(101));
    // Keys belong to one account.
    let b = account(s, 3);
    assert!(
        !s.ledger()
            .apply(&b, Some(&key), debit_op(c(2)), at(8))
            .unwrap()
            .replayed
    );
    assert_clean(s);
}

fn expired_grants_and_holds_settle_on_the_next_operation(db: TestDb) {
    let s = &db.store;
    let a = account(s, 2);
    s.ledger()
        .apply(
            &a,
            None,
            Operation::Credit {
                spec: GrantSpec::new(GrantSource::Allowance, c(10)).expiring(at(100)),
                memo: Memo::new("Credits reset at the start of the billing cycle"),
            },
            at(0),
        )
        .unwrap();
    let h = hold(
        s.ledger()
            .apply(
                &a,
                None,
                Operation::Reserve {
                    amount: c(3),
                    ttl_ms: 50_000,
                    spend: Spend::Strict,
                    memo: Memo::new("job"),
                },
                at(1),
            )
            .unwrap(),
    );
    assert_eq!(s.ledger().balance(&a, at(2)).unwrap().available, c(9));
    assert_eq!(
        s.ledger().balance(&a, at(51)).unwrap().available,
        c(12),
        "an expired hold's credits are back"
    );
    assert_eq!(
        s.ledger().balance(&a, at(100)).unwrap().available,
        c(2),
        "the allowance expired"
    );
    s.ledger()
        .apply(&a, None, Operation::Sweep, at(100))
        .unwrap();
    assert_eq!(
        s.ledger().hold(&h.id).unwrap().unwrap().status,
        HoldStatus::Expired
    );
    let newest = &s.ledger().history(&a, Page::default()).unwrap()[0];
    assert_eq!(
        (newest.kind, newest.amount, newest.balance_after),
        (EntryKind::Expiry, c(-10), c(2))
    );
    assert_clean(s);
}

fn overdraft_only_within_the_account_limit(db: TestDb) {
    let s = &db.store;
    let a = account(s, 1);
    let over = |n: i64, now| {
        s.ledger()
            .apply(
                &a,
                None,
                Operation::Debit {
                    kind: EntryKind::Usage,
                    amount: c(n),
                    spend: Spend::WithinAccountLimit,
                    memo: Memo::new("w"),
                },
                now,
            )
            .unwrap()
    };
    assert!(over(2, at(1)).result.is_err(), "no allowance yet");
    s.ledger().set_plan(&a, Some("Basic"), c(5)).unwrap();
    let e = entry(over(3, at(2)));
    assert_eq!((e.balance_after, e.plan.as_deref()), (c(-2), Some("Basic")));
    assert!(over(4, at(3)).result.is_err());
    assert!(
        s.ledger()
            .apply(&a, None, debit_op(c(1)), at(3))
            .unwrap()
            .result
            .is_err(),
        "strict debits stay strict"
    );
    credit(s, &a, 10, at(4));
    assert_eq!(s.ledger().balance(&a, at(5)).unwrap().available, c(8));
    assert_clean(s);
}

fn batches_apply_many_operations_in_one_transaction(db: TestDb) {
    let s = &db.store;
    let a = account(s, 3);
    let b = account(s, 1);
    let items = vec![
        BatchItem {
            account_id: b.clone(),
            idempotency: None,
            operation: debit_op(c(1)),
        },
        BatchItem {
            account_id: a.clone(),
            idempotency: None,
            operation: debit_op(c(2)),
        },
        BatchItem {
            account_id: b.clone(),
            idempotency: None,
            operation: debit_op(c(1)),
        },
        BatchItem {
            account_id: AccountId::new("acct_missing"),
            idempotency: None,
            operation: debit_op(c(1)),
        },
    ];
    let out = s.ledger().apply_batch(items, at(1)).unwrap();
    assert!(out[0].as_ref().unwrap().result.is_ok());
    assert!(out[1].as_ref().unwrap().result.is_ok());
    assert!(matches!(
        out[2].as_ref().unwrap().result,
        Err(LedgerError::InsufficientCredits { .. })
    ));
    assert!(matches!(out[3], Err(StoreError::AccountNotFound { .. })));
    assert_eq!(s.ledger().balance(&a, at(2)).unwrap().available, c(1));
    assert_eq!(s.ledger().balance(&b, at(2)).unwrap().available, c(0));
    assert_clean(s);
}

fn compaction_keeps_every_balance_exact(db: TestDb) {
    let s = &db.store;
    let a = account(s, 5);
    let day = 86_400;
    for i in 0..20 {
        credit(s, &a, 2, at(i * 30 * day));
        s.ledger()
            .apply(&a, None, debit_op(c(1)), at(i * 30 * day + 1))
            .unwrap();
    }
    let before = s.ledger().balance(&a, at(600 * day)).unwrap();
    let now = at(600 * day);
    let report = s.maintenance().compact(Retention::default(), now).unwrap();
    assert!(report.entries_removed > 0);
    let after = s.ledger().balance(&a, now).unwrap();
    assert_eq!(before, after);
    let cutoff = Retention::default().cutoff(now);
    let kept = s.ledger().history(&a, Page::new(100, 0).unwrap()).unwrap();
    assert!(kept.iter().all(|e| e.created_at >= cutoff));
    assert_eq!(kept[0].balance_after, after.book);
    assert_clean(s);
    // More operations after a compaction keep the chain whole.
    s.ledger().apply(&a, None, debit_op(c(1)), now).unwrap();
    assert_clean(s);
    assert_eq!(
        s.maintenance()
            .compact(Retention::default(), now)
            .unwrap()
            .entries_removed,
        0
    );
}

fn verify_finds_tampering(db: TestDb) {
    let s = &db.store;
    let a = account(s, 5);
    s.ledger().apply(&a, None, debit_op(c(1)), at(1)).unwrap();
    assert_clean(s);
    let tamper = |sql: String| s.execute_batch(&sql).unwrap();
    let assert_violation = |text: &str| {
        let report = s.maintenance().verify().unwrap();
        assert!(!report.ok);
        assert!(
            report.violations.iter().any(|v| v.message.contains(text)),
            "{report:?}"
        );
    };
    tamper(format!(
        "UPDATE accounts SET balance = balance + 1000 WHERE id = '{a}'"
    ));
    assert_violation("differs from the sum of its entries");
    tamper(format!(
        "UPDATE accounts SET balance = balance - 1000 WHERE id = '{a}'"
    ));
    tamper(format!(
        "UPDATE grants SET remaining = remaining - 1000 WHERE account_id = '{a}'"
    ));
    assert_violation("differs from lots");
}

/// Runs `work(t)` for `t` in `0..n` on `n` threads at once; the results in that order.
fn on_threads<R: Send>(n: usize, work: impl Fn(usize) -> R + Sync) -> Vec<R> {
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..n)
            .map(|t| {
                let work = &work;
                scope.spawn(move || work(t))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

/// The store, shared across threads, and a new account holding `n` purchased credits.
fn shared_with_credits(db: &TestDb, n: i64) -> (Arc<ledger_store::Store>, AccountId) {
    let s = Arc::new(db.store.clone());
    let a = account(&s, 0);
    credit(&s, &a, n, at(0));
    (s, a)
}

fn concurrent_debits_never_overdraw(db: TestDb) {
    let (s, a) = shared_with_credits(&db, 4_000);
    let ok = Arc::new(AtomicUsize::new(0));
    on_threads(16, |_| {
        for _ in 0..500 {
            let r = s.ledger().apply(&a, None, debit_op(c(1)), at(1)).unwrap();
            assert!(r.available >= Credits::ZERO);
            if r.result.is_ok() {
                ok.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    assert_eq!(ok.load(Ordering::Relaxed), 4_000);
    let b = s.ledger().balance(&a, at(2)).unwrap();
    assert_eq!((b.available, b.book), (c(0), c(0)));
    let entries = s.ledger().history(&a, Page::new(1, 0).unwrap()).unwrap();
    assert_eq!(entries[0].seq, 4_001);
    assert_clean(&s);
}

fn concurrent_holds_captures_and_releases_never_overdraw(db: TestDb) {
    let (s, a) = shared_with_credits(&db, 1_000);
    let charged = Arc::new(AtomicUsize::new(0));
    on_threads(8, |t| {
        for i in 0..150 {
            let r = s
                .ledger()
                .apply(
                    &a,
                    None,
                    Operation::Reserve {
                        amount: c(3),
                        ttl_ms: 600_000,
                        spend: Spend::Strict,
                        memo: Memo::new("job"),
                    },
                    at(1),
                )
                .unwrap();
            assert!(r.available >= Credits::ZERO);
            let Ok(Outcome::Hold(h)) = r.result else {
                continue;
            };
            let op = match (t + i) % 3 {
                0 => Operation::Release { hold_id: h.id },
                1 => Operation::Capture {
                    hold_id: h.id,
                    amount: Some(c(2)),
                    memo: None,
                },
                _ => Operation::Capture {
                    hold_id: h.id,
                    amount: None,
                    memo: None,
                },
            };
            let done = s.ledger().apply(&a, None, op, at(2)).unwrap();
            if let Ok(Outcome::Entry(e)) = done.result {
                charged.fetch_add((-e.amount.millis() / 1000) as usize, Ordering::Relaxed);
            }
        }
    });
    let b = s.ledger().balance(&a, at(3)).unwrap();
    assert!(b.available >= Credits::ZERO);
    assert_eq!(b.held, c(0));
    assert_eq!(
        b.available,
        c(1_000 - charged.load(Ordering::Relaxed) as i64)
    );
    assert_clean(&s);
}

fn the_same_key_from_many_threads_charges_once(db: TestDb) {
    let s = Arc::new(db.store.clone());
    let a = account(&s, 10);
    let results = on_threads(8, |_| {
        s.ledger()
            .apply(&a, Some(&idem("same", "debit|3")), debit_op(c(3)), at(1))
            .unwrap()
    });
    assert_eq!(results.iter().filter(|r| !r.replayed).count(), 1);
    let first = &results[0].result;
    assert!(
        results.iter().all(|r| &r.result == first),
        "every answer is the first one"
    );
    assert_eq!(s.ledger().balance(&a, at(2)).unwrap().available, c(7));
    assert_clean(&s);
}

fn unknown_accounts_holds_and_entries_are_reported(db: TestDb) {
    let s = &db.store;
    let ghost = AccountId::new("acct_ghost");
    assert!(matches!(
        s.ledger().apply(&ghost, None, debit_op(c(1)), at(0)),
        Err(StoreError::AccountNotFound { .. })
    ));
    assert!(s.ledger().account(&ghost).unwrap().is_none());
    let a = account(s, 1);
    let missing_hold = HoldId::new("hold_nope");
    assert!(matches!(
        s.ledger().apply(
            &a,
            None,
            Operation::Release {
                hold_id: missing_hold.clone()
            },
            at(0)
        ),
        Err(StoreError::HoldNotFound { .. })
    ));
    assert!(matches!(
        s.ledger().hold_account(&missing_hold),
        Err(StoreError::HoldNotFound { .. })
    ));
    assert!(matches!(
        s.ledger().apply(
            &a,
            None,
            Operation::Refund {
                entry_id: EntryId::new("txn_nope"),
                amount: None,
                memo: Memo::new("x")
            },
            at(0)
        ),
        Err(StoreError::EntryNotFound { .. })
    ));
    // Another account's hold is not found through this account.
    let b = account(s, 5);
    let h = hold(
        s.ledger()
            .apply(
                &b,
                None,
                Operation::Reserve {
                    amount: c(1),
                    ttl_ms: 1000,
                    spend: Spend::Strict,
                    memo: Memo::new("x"),
                },
                at(0),
            )
            .unwrap(),
    );
    assert!(matches!(
        s.ledger()
            .apply(&a, None, Operation::Release { hold_id: h.id }, at(0)),
        Err(StoreError::HoldNotFound { .. })
    ));
}

/// The largest balance the ledger keeps, in thousandths (one trillion credits).
const MAX_MILLIS: i64 = 1_000_000_000_000_000;

/// Grants past the maximum balance are refused whole, alone or in a batch, on both
/// backends; the ledger stays exact and verified, and compaction keeps it so.
fn balances_stop_at_the_maximum(db: TestDb) {
    let s = &db.store;
    let a = account(s, 0);
    let largest = Credits::from_millis(MAX_MILLIS);
    let grant = |amount: Credits| Operation::Credit {
        spec: GrantSpec::new(GrantSource::Adjustment, amount),
        memo: Memo::new("Big"),
    };
    let first = s.ledger().apply(&a, None, grant(largest), at(1)).unwrap();
    assert!(first.result.is_ok(), "{first:?}");
    assert_eq!(first.available, largest);
    let refused = s
        .ledger()
        .apply(&a, None, grant(Credits::from_millis(1)), at(2))
        .unwrap();
    assert_eq!(
        refused.result,
        Err(LedgerError::BalanceLimit { max: largest }),
        "{refused:?}"
    );
    assert_eq!(refused.available, largest);
    // The attack of issue 8, in one batch: every grant after the first is refused.
    let items: Vec<BatchItem> = (0..50)
        .map(|_| BatchItem {
            account_id: a.clone(),
            idempotency: None,
            operation: grant(largest),
        })
        .collect();
    let answers = s.ledger().apply_batch(items, at(3)).unwrap();
    assert!(answers.iter().all(|r| matches!(
        r,
        Ok(applied) if applied.result == Err(LedgerError::BalanceLimit { max: largest })
    )));
    let b = s.ledger().balance(&a, at(4)).unwrap();
    assert_eq!((b.book, b.available), (largest, largest));
    assert_eq!(s.ledger().history(&a, Page::default()).unwrap().len(), 1);
    assert_clean(s);
    // Spending and refunding near the limit stays exact.
    let charge = entry(
        s.ledger()
            .apply(&a, None, debit_op(largest), at(5))
            .unwrap(),
    );
    assert_eq!(s.ledger().balance(&a, at(5)).unwrap().book, Credits::ZERO);
    s.ledger()
        .apply(&a, None, grant(Credits::from_millis(MAX_MILLIS - 1)), at(6))
        .unwrap()
        .result
        .unwrap();
    let refund = |amount: Option<Credits>| Operation::Refund {
        entry_id: charge.id.clone(),
        amount,
        memo: Memo::new("Refund"),
    };
    let over = s.ledger().apply(&a, None, refund(None), at(7)).unwrap();
    assert_eq!(over.result, Err(LedgerError::BalanceLimit { max: largest }));
    entry(
        s.ledger()
            .apply(&a, None, refund(Some(Credits::from_millis(1))), at(8))
            .unwrap(),
    );
    assert_eq!(s.ledger().balance(&a, at(8)).unwrap().book, largest);
    assert_clean(s);
    let now = at(800 * 86_400);
    s.maintenance().compact(Retention::default(), now).unwrap();
    assert_eq!(s.ledger().balance(&a, now).unwrap().book, largest);
    assert_clean(s);
}

/// `verify` reads any database it is given: sums that overflow an i64 and rows that do
/// not decode are reported as violations, never a panic or a failed verify.
fn verify_reports_overflow_instead_of_panicking(db: TestDb) {
    let s = &db.store;
    let a = account(s, 5);
    for i in 0..3 {
        credit(s, &a, 10, at(i + 1));
    }
    let hold_op = Operation::Reserve {
        amount: c(1),
        ttl_ms: 600_000,
        spend: Spend::Strict,
        memo: Memo::new("Render"),
    };
    hold(s.ledger().apply(&a, None, hold_op, at(5)).unwrap());
    let b = account(s, 5);
    assert_clean(s);
    let max = i64::MAX;
    s.execute_batch(&format!(
            "UPDATE entries SET amount = {max}, balance_after = {max} WHERE account_id = '{a}';
             UPDATE grants SET amount = {max}, remaining = {max} WHERE account_id = '{a}';
             UPDATE holds SET amount = {max} WHERE account_id = '{a}';
             UPDATE accounts SET balance = {max}, compacted_balance = {max} WHERE id = '{a}';
             UPDATE entries SET allocations = '[{{\"lot\":{{\"lot\":\"overdraft\"}},\"amount\":1e30}}]' WHERE account_id = '{b}';"
        ))
        .unwrap();
    let report = s
        .maintenance()
        .verify()
        .expect("verify answers on any database");
    assert!(!report.ok);
    assert_eq!(report.accounts, 2);
    let of = |id: &AccountId| -> Vec<&str> {
        report
            .violations
            .iter()
            .filter(|v| v.account_id == id.as_str())
            .map(|v| v.message.as_str())
            .collect()
    };
    let on_a = of(&a);
    assert!(
        on_a.iter().any(|m| m.contains("overflow")),
        "an overflow is reported: {on_a:?}"
    );
    assert!(
        on_a.iter().any(|m| m.contains("past the maximum")),
        "amounts past the maximum are reported: {on_a:?}"
    );
    let on_b = of(&b);
    assert!(
        on_b.iter().any(|m| m.contains("cannot be read")),
        "an undecodable row is reported: {on_b:?}"
    );
}

/// An overdraft allowance larger than the maximum balance is kept at the maximum: usage
/// may take the balance down to minus the maximum, never further.
fn overdraft_allowances_stop_at_the_maximum(db: TestDb) {
    let s = &db.store;
    let a = account(s, 0);
    let largest = Credits::from_millis(MAX_MILLIS);
    s.ledger()
        .set_plan(&a, Some("Huge"), Credits::from_millis(i64::MAX))
        .unwrap();
    assert_eq!(
        s.ledger().account(&a).unwrap().unwrap().overdraft_limit,
        largest
    );
    let spend = |amount: Credits| Operation::Debit {
        kind: EntryKind::Usage,
        amount,
        spend: Spend::WithinAccountLimit,
        memo: Memo::new("Usage"),
    };
    entry(s.ledger().apply(&a, None, spend(largest), at(1)).unwrap());
    let more = s
        .ledger()
        .apply(&a, None, spend(Credits::from_millis(1)), at(2))
        .unwrap();
    assert!(
        matches!(more.result, Err(LedgerError::InsufficientCredits { .. })),
        "{more:?}"
    );
    assert_eq!(s.ledger().balance(&a, at(3)).unwrap().book, -largest);
    assert_clean(s);
}
