//! The store's hooks for metrics (ADR 14): an observer told of every ledger operation's
//! kind and outcome, the credits charged, each group commit's size and each wait for a
//! pooled connection; the pool's state and the pending migrations on demand.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ledger_core::*;
use ledger_store::{BatchItem, OperationOutcome, PoolOptions, Store, StoreObserver};

on_both_backends!(the_observer_sees_every_outcome_batch_and_pool_wait);

#[derive(Default)]
struct Recorder {
    operations: Mutex<Vec<(&'static str, OperationOutcome)>>,
    charged: Mutex<i64>,
    batches: Mutex<Vec<usize>>,
    acquired: Mutex<usize>,
}

impl StoreObserver for Recorder {
    fn operation(&self, kind: &'static str, outcome: OperationOutcome) {
        self.operations.lock().unwrap().push((kind, outcome));
    }
    fn charged(&self, credits: Credits) {
        *self.charged.lock().unwrap() += credits.millis();
    }
    fn batch(&self, operations: usize) {
        self.batches.lock().unwrap().push(operations);
    }
    fn acquired(&self, _waited: Duration) {
        *self.acquired.lock().unwrap() += 1;
    }
}

fn the_observer_sees_every_outcome_batch_and_pool_wait(db: TestDb) {
    let seen = Arc::new(Recorder::default());
    let s = Store::open_observed(&db.url, &PoolOptions::default(), seen.clone()).unwrap();
    assert!(s.pending_migrations().unwrap().is_empty());
    let a = account(&s, 0);
    let ledger = s.ledger();
    ledger
        .apply(
            &a,
            None,
            Operation::Credit {
                spec: GrantSpec::new(GrantSource::Purchase, c(10)),
                memo: Memo::new("Purchased"),
            },
            at(1),
        )
        .unwrap();
    let key = idem("k-1", "debit 3");
    assert!(ledger
        .apply(&a, Some(&key), debit_op(c(3)), at(2))
        .unwrap()
        .result
        .is_ok());
    let again = ledger.apply(&a, Some(&key), debit_op(c(3)), at(2)).unwrap();
    assert!(again.replayed);
    let other = idem("k-1", "debit 4");
    assert!(ledger
        .apply(&a, Some(&other), debit_op(c(4)), at(2))
        .is_err());
    let refused = ledger.apply(&a, None, debit_op(c(1000)), at(3)).unwrap();
    assert!(refused.result.is_err());
    let nobody = AccountId::new("acct_nobody");
    assert!(ledger.apply(&nobody, None, debit_op(c(1)), at(3)).is_err());
    // One transaction of two operations, on the caller's thread.
    let items = (0..2)
        .map(|_| BatchItem {
            account_id: a.clone(),
            idempotency: None,
            operation: debit_op(Credits::from_millis(500)),
        })
        .collect();
    ledger.apply_batch(items, at(4)).unwrap();

    let ops = seen.operations.lock().unwrap().clone();
    use OperationOutcome::*;
    assert_eq!(
        ops,
        vec![
            ("credit", Charged),
            ("debit", Charged),
            ("debit", Replayed),
            ("debit", Conflict),
            ("debit", RejectedCredits),
            ("debit", Rejected),
            ("debit", Charged),
            ("debit", Charged),
        ]
    );
    // 3 credits, then two halves: first answers only, in thousandths.
    assert_eq!(*seen.charged.lock().unwrap(), 4_000);
    let batches = seen.batches.lock().unwrap().clone();
    assert_eq!(batches.iter().sum::<usize>(), 8, "{batches:?}");
    assert_eq!(batches.last(), Some(&2), "{batches:?}");
    assert!(*seen.acquired.lock().unwrap() >= batches.len());
    let pool = s.pool_stats();
    assert_eq!(pool.max, 16);
    assert!(pool.open >= 1 && pool.idle <= pool.open, "{pool:?}");
    assert_eq!(
        OperationOutcome::RejectedCredits.as_str(),
        "rejected_credits"
    );
    assert_clean(&s);
}
