//! Ledger throughput on SQLite and PostgreSQL (a benchmark, not a test).
//!
//! `cargo run --release -p ledger-store --example ledger_bench [OPS]`
//!
//! Scenarios, each on a fresh database:
//! - one thread debiting one account, one operation per transaction;
//! - 8 threads debiting ONE hot account (they serialize on its row lock);
//! - 8 threads each debiting their own account;
//! - one thread, 100 debits per transaction through `apply_batch`;
//! - hold + capture pairs (what a screenshot costs the ledger), one thread.
//!
//! Prints a Markdown table: operations/s and per-operation latency p50/p99.

// A benchmark, not a program: a failed step should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use ledger_core::{AccountId, Credits, EntryKind, GrantSource, GrantSpec, Memo, Timestamp};
use ledger_store::{BatchItem, NewAccount, Operation, Outcome, Spend, Store};
use test_support::TestDb;

fn now() -> Timestamp {
    Timestamp::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    )
}

fn account(store: &Store, credits: i64) -> AccountId {
    let (a, _) = store
        .ledger()
        .create_account(NewAccount::default(), now())
        .unwrap();
    store
        .ledger()
        .apply(
            &a.id,
            None,
            Operation::Credit {
                spec: GrantSpec::new(GrantSource::Purchase, Credits::whole(credits)),
                memo: Memo::new("bench"),
            },
            now(),
        )
        .unwrap();
    a.id
}

fn debit() -> Operation {
    Operation::Debit {
        kind: EntryKind::Usage,
        amount: Credits::whole(1),
        spend: Spend::Strict,
        memo: Memo::new("Screenshot captured"),
    }
}

struct Row {
    scenario: &'static str,
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn run_threads(
    store: &Store,
    threads: usize,
    per_thread: usize,
    shared: Option<AccountId>,
) -> (Duration, Vec<Duration>) {
    let accounts: Vec<AccountId> = (0..threads)
        .map(|_| {
            shared
                .clone()
                .unwrap_or_else(|| account(store, per_thread as i64 + 10))
        })
        .collect();
    let start = Instant::now();
    let handles: Vec<_> = accounts
        .into_iter()
        .map(|a| {
            let s = store.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(per_thread);
                for _ in 0..per_thread {
                    let t = Instant::now();
                    let r = s.ledger().apply(&a, None, debit(), now()).unwrap();
                    assert!(r.result.is_ok());
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().unwrap());
    }
    (start.elapsed(), all)
}

fn bench(db: &TestDb, ops: usize) -> Vec<Row> {
    let s = &db.store;
    let row = |scenario, (elapsed, latencies): (Duration, Vec<Duration>)| Row {
        scenario,
        ops,
        elapsed,
        latencies,
    };
    let mut rows = vec![
        row(
            "1 thread, 1 account, 1 op/tx",
            run_threads(s, 1, ops, Some(account(s, ops as i64 + 10))),
        ),
        row(
            "8 threads, 1 hot account, 1 op/tx",
            run_threads(s, 8, ops / 8, Some(account(s, ops as i64 + 10))),
        ),
        row(
            "8 threads, 8 accounts, 1 op/tx",
            run_threads(s, 8, ops / 8, None),
        ),
    ];

    let a = account(s, ops as i64 + 10);
    rows.push(row(
        "1 thread, 100 ops/tx (apply_batch)",
        one_thread(ops, 100, || {
            let items = (0..100)
                .map(|_| BatchItem {
                    account_id: a.clone(),
                    idempotency: None,
                    operation: debit(),
                })
                .collect();
            let out = s.ledger().apply_batch(items, now()).unwrap();
            assert!(out.iter().all(|r| r.as_ref().unwrap().result.is_ok()));
        }),
    ));

    let a = account(s, ops as i64 + 10);
    rows.push(row(
        "hold + capture pairs, 1 thread",
        one_thread(ops, 2, || {
            let held = s
                .ledger()
                .apply(
                    &a,
                    None,
                    Operation::Reserve {
                        amount: Credits::whole(1),
                        ttl_ms: 600_000,
                        spend: Spend::Strict,
                        memo: Memo::new("shot"),
                    },
                    now(),
                )
                .unwrap();
            let Ok(Outcome::Hold(h)) = held.result else {
                panic!("hold refused")
            };
            s.ledger()
                .apply(
                    &a,
                    None,
                    Operation::Capture {
                        hold_id: h.id,
                        amount: None,
                        memo: None,
                    },
                    now(),
                )
                .unwrap();
        }),
    ));
    assert!(s.maintenance().verify().unwrap().ok);
    rows
}

/// Runs `round` on this thread until it did `ops` operations, `per_round` a round: the time
/// it took, and each operation's latency (its round's share).
fn one_thread(ops: usize, per_round: u32, mut round: impl FnMut()) -> (Duration, Vec<Duration>) {
    let mut latencies = Vec::new();
    let start = Instant::now();
    for _ in 0..ops / per_round as usize {
        let t = Instant::now();
        round();
        let per_op = t.elapsed() / per_round;
        latencies.extend(std::iter::repeat_n(per_op, per_round as usize));
    }
    (start.elapsed(), latencies)
}

fn main() {
    let ops: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4000);
    println!("| backend | scenario | ops | ops/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    for backend in ["sqlite", "postgres"] {
        let db = TestDb::of(backend);
        for mut r in bench(&db, ops) {
            r.latencies.sort();
            println!(
                "| {backend} | {} | {} | {:.0} | {:.2} | {:.2} |",
                r.scenario,
                r.ops,
                r.ops as f64 / r.elapsed.as_secs_f64(),
                pct(&r.latencies, 0.5),
                pct(&r.latencies, 0.99)
            );
        }
    }
}
