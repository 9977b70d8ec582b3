//! The group-committing write path (ADR 10): many callers share a commit, each gets
//! exactly the answer it would get alone, and a kept book is never used after someone
//! else wrote the account. (Every other store test runs through the engine too.)

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use ledger_core::*;
use ledger_store::{BatchItem, Store};

on_both_backends!(
    concurrent_callers_share_commits_and_every_debit_counts,
    a_refusal_in_a_batch_is_only_its_callers_answer,
    a_second_process_writing_the_account_is_seen,
    another_path_of_this_process_writing_the_account_is_seen,
    a_database_error_fails_only_its_own_operation,
);

fn on_threads(n: usize, work: impl Fn(usize) + Sync) {
    std::thread::scope(|scope| {
        for t in 0..n {
            let work = &work;
            scope.spawn(move || work(t));
        }
    });
}

fn debit(s: &Store, a: &AccountId, n: i64) -> ledger_store::Applied {
    s.ledger().apply(a, None, debit_op(c(n)), at(1)).unwrap()
}

fn concurrent_callers_share_commits_and_every_debit_counts(db: TestDb) {
    let s = db.store.clone();
    let a = account(&s, 0);
    credit(&s, &a, 100_000, at(0));
    let before = s.write_stats();
    on_threads(32, |_| {
        for _ in 0..100 {
            assert!(debit(&s, &a, 1).result.is_ok());
        }
    });
    let stats = s.write_stats();
    let (batches, ops) = (
        stats.batches - before.batches,
        stats.operations - before.operations,
    );
    assert_eq!(ops, 3_200);
    // 32 callers queue behind each commit: batches carry many operations each.
    assert!(batches < ops / 2, "{batches} batches for {ops} operations");
    let b = s.ledger().balance(&a, at(2)).unwrap();
    assert_eq!(b.available, c(100_000 - 3_200));
    assert_clean(&s);
}

fn a_refusal_in_a_batch_is_only_its_callers_answer(db: TestDb) {
    let s = db.store.clone();
    let a = account(&s, 0);
    credit(&s, &a, 100, at(0));
    let (ok, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    on_threads(32, |t| {
        for i in 0..10 {
            let key = idem(&format!("k-{t}-{i}"), "debit-1");
            let r = s
                .ledger()
                .apply(&a, Some(&key), debit_op(c(1)), at(1))
                .unwrap();
            match r.result {
                Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                Err(LedgerError::InsufficientCredits { .. }) => {
                    refused.fetch_add(1, Ordering::Relaxed)
                }
                Err(other) => panic!("unexpected {other:?}"),
            };
            // A replay answers what the first call answered.
            let again = s
                .ledger()
                .apply(&a, Some(&key), debit_op(c(1)), at(1))
                .unwrap();
            assert!(again.replayed);
        }
    });
    assert_eq!(ok.load(Ordering::Relaxed), 100);
    assert_eq!(refused.load(Ordering::Relaxed), 220);
    assert_eq!(s.ledger().balance(&a, at(2)).unwrap().available, c(0));
    assert_clean(&s);
}

/// Two stores on one database are two processes: each keeps books, and each must see
/// what the other wrote.
fn a_second_process_writing_the_account_is_seen(db: TestDb) {
    let one = db.store.clone();
    let other = Store::open(&db.url, &ledger_store::PoolOptions::default()).unwrap();
    let a = account(&one, 0);
    credit(&one, &a, 10, at(0));
    assert!(debit(&one, &a, 4).result.is_ok()); // `one` keeps the book: 6 left
    assert!(debit(&other, &a, 4).result.is_ok()); // 2 left
                                                  // With a stale book `one` would see 6 and accept.
    let third = debit(&one, &a, 4);
    assert!(
        matches!(third.result, Err(LedgerError::InsufficientCredits { .. })),
        "{third:?}"
    );
    assert_eq!(third.available, c(2));
    assert!(one.write_stats().reloads >= 2);
    assert_clean(&one);
}

fn another_path_of_this_process_writing_the_account_is_seen(db: TestDb) {
    let s = db.store.clone();
    let a = account(&s, 0);
    credit(&s, &a, 10, at(0));
    assert!(debit(&s, &a, 4).result.is_ok());
    // apply_batch writes in its own transaction, outside the writers.
    let batch = s
        .ledger()
        .apply_batch(
            vec![BatchItem {
                account_id: a.clone(),
                idempotency: None,
                operation: debit_op(c(4)),
            }],
            at(1),
        )
        .unwrap();
    assert!(batch[0].as_ref().unwrap().result.is_ok());
    let third = debit(&s, &a, 4);
    assert!(matches!(
        third.result,
        Err(LedgerError::InsufficientCredits { .. })
    ));
    assert_clean(&s);
}

/// A database error in one operation rolls its batch back; the others of that batch are
/// then applied on their own and succeed, and the failing one's caller gets the error.
fn a_database_error_fails_only_its_own_operation(db: TestDb) {
    let s = db.store.clone();
    let (good, bad) = (account(&s, 0), account(&s, 0));
    credit(&s, &good, 1_000, at(0));
    credit(&s, &bad, 1_000, at(0));
    // Every entry of `bad` is refused by the database from now on.
    s.execute_batch(&match s.backend() {
        ledger_store::Backend::Sqlite => format!(
            "CREATE TRIGGER poison BEFORE INSERT ON entries WHEN NEW.account_id = '{bad}'
             BEGIN SELECT RAISE(ABORT, 'poisoned by the test'); END;"
        ),
        ledger_store::Backend::Postgres => format!(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN IF NEW.account_id = '{bad}' THEN RAISE EXCEPTION 'poisoned by the test'; END IF;
             RETURN NEW; END $$;
             CREATE TRIGGER poison BEFORE INSERT ON entries FOR EACH ROW EXECUTE FUNCTION poison();"
        ),
    })
    .unwrap();
    let (ok, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    on_threads(16, |t| {
        let who = if t % 4 == 0 { &bad } else { &good };
        for _ in 0..20 {
            match s.ledger().apply(who, None, debit_op(c(1)), at(1)) {
                Ok(r) if who == &good => {
                    assert!(r.result.is_ok(), "{r:?}");
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if who == &bad => {
                    assert!(e.to_string().contains("poisoned by the test"), "{e}");
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                other => panic!("{who}: unexpected {other:?}"),
            }
        }
    });
    assert_eq!((ok.into_inner(), failed.into_inner()), (240, 80));
    assert_eq!(s.ledger().balance(&good, at(2)).unwrap().available, c(760));
    assert_eq!(s.ledger().balance(&bad, at(2)).unwrap().available, c(1_000));
    assert_clean(&s);
}
