//! The store driven by in-process callers, on SQLite and PostgreSQL (a benchmark, not a
//! test; issue 11's `just bench` runs it).
//!
//! ```sh
//! cargo run --release -p ledger-store --features test-support --example ledger_bench -- \
//!     [--quick] [--seconds S] [--callers 1,16,64] [--backends sqlite,postgres] \
//!     [--loads hot,spread,holds] [--out FILE]
//! ```
//!
//! Loads, each at every caller count, on a fresh database per backend:
//! - `hot`: one-credit debits of ONE account;
//! - `spread`: one-credit debits of an account picked at random among 10,000;
//! - `holds`: on one account, a 2-credit hold then its settlement: 70 % captured in full,
//!   10 % captured in part (1 credit, the rest released), 20 % released.
//!
//! A caller is a thread calling `store.ledger().apply` in a loop, each call with a fresh
//! idempotency key (as the api-server passes one), for `--seconds` per cell. Only the
//! store's public API is used, so it measures whatever the write path is. Latency is per
//! `apply` call; ops/s counts `apply` calls. The run ends with `verify` on each backend and
//! panics if it finds a violation. `--quick` (or `BENCH_QUICK=1`): 1 and 64 callers, 1 s.
//!
//! Prints a Markdown table, and appends one tab-separated row per cell to `--out`
//! (`scripts/bench/summary.py` reads it).

// A benchmark, not a program: a failed step should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger_core::{AccountId, EntryKind, Fingerprint, IdempotencyKey, Memo};
use ledger_store::{Idempotency, Operation, Outcome, Spend, Store};
use test_support::{account_at, assert_verified, c, now, TestDb};

const SPREAD_ACCOUNTS: usize = 10_000;
/// Enough for every cell of a run: no load ever runs out of credits.
const FUNDS: i64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Hot,
    Spread,
    Holds,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::Hot => "hot",
            Load::Spread => "spread",
            Load::Holds => "holds",
        }
    }
}

struct Args {
    seconds: f64,
    callers: Vec<usize>,
    backends: Vec<String>,
    loads: Vec<Load>,
    out: Option<String>,
}

fn args() -> Args {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut a = Args {
        seconds: if quick { 1.0 } else { 3.0 },
        callers: if quick { vec![1, 64] } else { vec![1, 16, 64] },
        backends: vec!["sqlite".into(), "postgres".into()],
        loads: vec![Load::Hot, Load::Spread, Load::Holds],
        out: None,
    };
    let list = |v: String| v.split(',').map(str::to_owned).collect::<Vec<_>>();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--quick" => {
                a.seconds = 1.0;
                a.callers = vec![1, 64];
            }
            "--seconds" => a.seconds = value().parse().expect("--seconds: a number"),
            "--callers" => {
                a.callers = list(value())
                    .iter()
                    .map(|n| n.parse().expect("--callers: numbers"))
                    .collect()
            }
            "--backends" => a.backends = list(value()),
            "--loads" => {
                a.loads = list(value())
                    .iter()
                    .map(|l| match l.as_str() {
                        "hot" => Load::Hot,
                        "spread" => Load::Spread,
                        "holds" => Load::Holds,
                        other => panic!("--loads: unknown load {other}"),
                    })
                    .collect()
            }
            "--out" => a.out = Some(value()),
            other => panic!("unknown argument {other} (see the file's header)"),
        }
    }
    a
}

/// A small deterministic generator (xorshift), one per caller.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// One caller: applies operations on the store and times each call.
struct Caller {
    store: Store,
    id: usize,
    calls: u64,
    latencies: Vec<Duration>,
    errors: u64,
}

/// Unique across the whole run, so no two calls ever share an idempotency key.
static CALLS: AtomicU64 = AtomicU64::new(0);

impl Caller {
    fn apply(&mut self, account: &AccountId, op: Operation, what: &str) -> Option<Outcome> {
        let n = CALLS.fetch_add(1, Ordering::Relaxed);
        let key = IdempotencyKey::parse(&format!("bench-{}-{n}", self.id)).unwrap();
        let idem = Idempotency::new(key, Fingerprint::new(what));
        let t = Instant::now();
        let r = self.store.ledger().apply(account, Some(&idem), op, now());
        self.latencies.push(t.elapsed());
        self.calls += 1;
        match r {
            Ok(applied) => Some(
                applied
                    .result
                    .expect("the ledger refused a funded operation"),
            ),
            Err(e) => {
                // A store error under load (say, the pool timed out) is a finding: counted
                // and shown in the table, not hidden.
                if self.errors == 0 {
                    eprintln!("ledger_bench: caller {}: {e}", self.id);
                }
                self.errors += 1;
                None
            }
        }
    }

    fn debit(&mut self, account: &AccountId) {
        let op = Operation::Debit {
            kind: EntryKind::Usage,
            amount: c(1),
            spend: Spend::Strict,
            memo: Memo::new("Screenshot captured"),
        };
        self.apply(account, op, "debit|1");
    }

    /// A 2-credit hold, then its settlement as the mix says.
    fn hold_and_settle(&mut self, account: &AccountId, rng: &mut Rng) {
        let op = Operation::Reserve {
            amount: c(2),
            ttl_ms: 600_000,
            spend: Spend::Strict,
            memo: Memo::new("Screenshot"),
        };
        let Some(Outcome::Hold(hold)) = self.apply(account, op, "hold|2") else {
            return;
        };
        let hold_id = hold.id;
        let (op, what) = match rng.below(10) {
            0..=6 => (
                Operation::Capture {
                    hold_id,
                    amount: None,
                    memo: None,
                },
                "capture",
            ),
            7 => (
                Operation::Capture {
                    hold_id,
                    amount: Some(c(1)),
                    memo: None,
                },
                "capture|1",
            ),
            _ => (Operation::Release { hold_id }, "release"),
        };
        self.apply(account, op, what);
    }
}

struct Cell {
    calls: u64,
    errors: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

fn run_cell(
    store: &Store,
    load: Load,
    callers: usize,
    seconds: f64,
    hot: &AccountId,
    spread: &Arc<Vec<AccountId>>,
) -> Cell {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let handles: Vec<_> = (0..callers)
        .map(|id| {
            let mut caller = Caller {
                store: store.clone(),
                id,
                calls: 0,
                latencies: Vec::new(),
                errors: 0,
            };
            let hot = hot.clone();
            let spread = Arc::clone(spread);
            std::thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1));
                while Instant::now() < deadline {
                    match load {
                        Load::Hot => caller.debit(&hot),
                        Load::Spread => caller.debit(&spread[rng.below(spread.len())]),
                        Load::Holds => caller.hold_and_settle(&hot, &mut rng),
                    }
                }
                caller
            })
        })
        .collect();
    let mut cell = Cell {
        calls: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for h in handles {
        let caller = h.join().expect("a caller panicked");
        cell.calls += caller.calls;
        cell.errors += caller.errors;
        cell.latencies.extend(caller.latencies);
    }
    cell.elapsed = start.elapsed();
    cell.latencies.sort();
    cell
}

/// User and system CPU time of this process so far, in seconds (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces):
    // utime and stime are the 12th and 13th, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn pct_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// `n` funded accounts, created by a few threads at once (setup, not measured).
fn funded_accounts(store: &Store, n: usize) -> Vec<AccountId> {
    let threads = 8;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (t..n)
                    .step_by(threads)
                    .map(|_| account_at(&store, c(FUNDS), now()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

fn main() {
    let args = args();
    let mut out = args.out.as_ref().map(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    });
    println!("| backend | load | callers | calls | ops/s | p50 ms | p99 ms | errors |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for backend in &args.backends {
        let db = TestDb::of(backend);
        let store = &db.store;
        let t = Instant::now();
        let hot = account_at(store, c(FUNDS), now());
        // The 10,000 accounts only when a load uses them (they take a while to create).
        let spread_n = if args.loads.contains(&Load::Spread) {
            SPREAD_ACCOUNTS
        } else {
            0
        };
        let spread = Arc::new(funded_accounts(store, spread_n));
        eprintln!(
            "ledger_bench: {backend}: {} accounts created in {:.1} s",
            spread_n + 1,
            t.elapsed().as_secs_f64()
        );
        for &load in &args.loads {
            for &callers in &args.callers {
                let before = store.write_stats();
                let cpu_before = cpu_seconds();
                let cell = run_cell(store, load, callers, args.seconds, &hot, &spread);
                let cpu = cpu_seconds() - cpu_before;
                let after = store.write_stats();
                // CPU time of this process (callers and writers; PostgreSQL's server is
                // not in it) an operation: unlike ops/s, it hardly moves with the disk's
                // fsync time or other programs on the machine.
                eprintln!(
                    "ledger_bench: {backend} {} x{callers}: {:.1} operations a batch, {:.0} µs of CPU an operation",
                    load.name(),
                    (after.operations - before.operations) as f64
                        / (after.batches - before.batches).max(1) as f64,
                    cpu * 1e6 / cell.calls.max(1) as f64
                );
                let rate = cell.calls as f64 / cell.elapsed.as_secs_f64();
                let (p50, p99) = (pct_ms(&cell.latencies, 0.5), pct_ms(&cell.latencies, 0.99));
                println!(
                    "| {backend} | {} | {callers} | {} | {rate:.0} | {p50:.2} | {p99:.2} | {} |",
                    load.name(),
                    cell.calls,
                    cell.errors
                );
                if let Some(f) = out.as_mut() {
                    writeln!(
                        f,
                        "store\t{backend}\t{}\t{callers}\t{rate:.0}\t{p50:.3}\t{p99:.3}\terrors {}",
                        load.name(),
                        cell.errors
                    )
                    .unwrap();
                }
            }
        }
        let report = store.maintenance().verify().expect("verify");
        eprintln!(
            "ledger_bench: {backend}: verify ok={} ({} accounts, {} entries)",
            report.ok, report.accounts, report.entries
        );
        assert_verified(store);
        if let Some(f) = out.as_mut() {
            writeln!(
                f,
                "verify\t{backend}\tstore\t\t\t\t\tok {} entries",
                report.entries
            )
            .unwrap();
        }
    }
}
