//! The group-committing write path (ADR 10).
//!
//! [`crate::Ledger::apply`] hands its operation to a writer thread and waits. A writer
//! takes every operation queued for it (up to [`MAX_BATCH`]), applies them in one
//! transaction with exactly the rules of a single `apply` (the core's, through
//! `ledger::apply_all`, which `Ledger::apply_batch` runs too), commits once, and only then answers each caller. So many
//! callers share one commit (one WAL flush) instead of queueing for one each.
//!
//! - Accounts are locked once per batch, in id order, so batches of several processes on
//!   one PostgreSQL cannot deadlock, and each account's lock is taken once, not once per
//!   operation.
//! - A refusal (a ledger rule, an idempotency conflict, an unknown account or hold) is
//!   that caller's answer only: it is detected before anything of that operation is
//!   written.
//! - Any other error before the commit rolls the batch back, and every operation of it is
//!   then applied again on its own, as before the engine, so one bad operation cannot fail
//!   the others and each caller gets its own answer. An error of the commit itself is
//!   ambiguous (the database may have committed), so nothing is re-run then: every caller
//!   gets a retryable error, and a retry with its idempotency key replays if it did land.
//! - Nothing is acknowledged before its commit returned.
//!
//! Each account is served by one writer (its id hashed), so one process never has two
//! writers contending for one account's row lock; PostgreSQL gets several writers, so
//! batches of different accounts commit in parallel; SQLite (one writer at a time anyway)
//! gets one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvError, SyncSender};
use std::sync::{Arc, Mutex};

use diesel::Connection;
use ledger_core::{AccountId, Book, Timestamp};

use crate::db::{Backend, Pool};
use crate::error::StoreError;
use crate::ledger::{self, Applied, BatchItem, TxError, Warm};

/// The most operations one batch carries.
pub(crate) const MAX_BATCH: usize = 512;
/// Operations waiting for one writer before callers wait to enqueue.
const QUEUE: usize = 4096;
/// Books a writer keeps between batches; beyond it, it forgets them all (they are
/// loaded again when next used).
const KEPT_BOOKS: usize = 20_000;

/// A book a writer kept after its batch committed, with the account's version then.
struct Kept {
    book: Book,
    overdraft_limit: i64,
    version: i64,
}

/// The books one writer keeps. A kept book is used only when the account's version,
/// after this batch's lock, is exactly one more than when it was kept: nobody else (no
/// other process, no other path of this one) wrote the account in between.
type Books = HashMap<AccountId, Kept>;

/// What a writer needs: the pool and the SQLite write gate. (Not the `Store`, which holds
/// the engine: when the last `Store` is dropped, the queues close and the writers end.)
#[derive(Clone)]
pub(crate) struct WriterParts {
    pub(crate) pool: Pool,
    pub(crate) write_gate: Option<Arc<Mutex<()>>>,
    pub(crate) counts: Arc<Counts>,
    pub(crate) observer: crate::observe::Observer,
}

struct Job {
    item: BatchItem,
    now: Timestamp,
    reply: SyncSender<Result<Applied, StoreError>>,
}

/// The writers' queues, and the writers themselves (joined on drop).
pub(crate) struct Engine {
    queues: Vec<SyncSender<Job>>,
    writers: Vec<std::thread::JoinHandle<()>>,
    counts: Arc<Counts>,
}

/// What the writers did so far.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    batches: AtomicU64,
    operations: AtomicU64,
    reloads: AtomicU64,
}

/// What the group-committing writers did since the store was opened
/// ([`crate::Store::write_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteStats {
    /// Transactions committed (or failed) by the writers.
    pub batches: u64,
    /// Operations they carried: `operations / batches` is the mean batch size.
    pub operations: u64,
    /// Accounts whose kept book could not be used (first use, or written by someone else
    /// since) and was loaded again.
    pub reloads: u64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("writers", &self.queues.len())
            .finish()
    }
}

impl Engine {
    /// Starts the writers: one on SQLite; on PostgreSQL a quarter of the pool (at least
    /// one, at most 8), which leaves the rest of the pool to reads and other writes.
    pub(crate) fn start(
        parts: WriterParts,
        backend: Backend,
        max_connections: u32,
    ) -> Result<Engine, StoreError> {
        let writers = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => (max_connections / 4).clamp(1, 8) as usize,
        };
        let mut engine = Engine {
            queues: Vec::with_capacity(writers),
            writers: Vec::with_capacity(writers),
            counts: parts.counts.clone(),
        };
        for n in 0..writers {
            let (tx, rx) = mpsc::sync_channel(QUEUE);
            let parts = parts.clone();
            // On failure `engine` is dropped, which stops the writers started so far.
            let writer = std::thread::Builder::new()
                .name(format!("ledger-writer-{n}"))
                .spawn(move || run(parts, rx))
                .map_err(|e| StoreError::Unavailable {
                    reason: format!("cannot start a ledger writer thread: {e}"),
                })?;
            engine.queues.push(tx);
            engine.writers.push(writer);
        }
        Ok(engine)
    }

    pub(crate) fn stats(&self) -> WriteStats {
        WriteStats {
            batches: self.counts.batches.load(Ordering::Relaxed),
            operations: self.counts.operations.load(Ordering::Relaxed),
            reloads: self.counts.reloads.load(Ordering::Relaxed),
        }
    }

    /// Applies `item` in the next batch of its account's writer; returns once that batch
    /// has committed (or failed).
    pub(crate) fn apply(&self, item: BatchItem, now: Timestamp) -> Result<Applied, StoreError> {
        crate::held::assert_not_holding("waits for a ledger writer");
        crate::held::may_wait("applies an operation")?;
        let queue = &self.queues[shard(&item.account_id, self.queues.len())];
        let (reply, answer) = mpsc::sync_channel(1);
        queue
            .send(Job { item, now, reply })
            .map_err(|_| stopped())?;
        answer.recv().map_err(|RecvError| stopped())?
    }
}

impl Drop for Engine {
    /// Closes the queues and waits for the writers to finish the batch in flight and end.
    /// Each writer holds a handle of the pool, so its end closes the last connections:
    /// when the last `Store` is dropped, the database is closed before `drop` returns (a
    /// program that opens the same SQLite file again, or changes it, never races a
    /// connection that is still closing).
    fn drop(&mut self) {
        self.queues.clear();
        let me = std::thread::current().id();
        for writer in self.writers.drain(..) {
            // A writer never holds the engine; were it to drop it, it cannot wait for itself.
            if writer.thread().id() != me {
                let _ = writer.join();
            }
        }
    }
}

/// What each caller of a batch whose commit failed is told: retryable (the commit may
/// have landed; a retry with the same idempotency key then replays it).
fn commit_failed(e: &StoreError) -> StoreError {
    StoreError::Unavailable {
        reason: format!("the commit failed ({e}); retry with the same Idempotency-Key"),
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable {
        reason: "the ledger writer stopped".into(),
    }
}

fn shard(account: &AccountId, n: usize) -> usize {
    // FNV-1a: stable and cheap; any hash that spreads ids would do.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in account.as_str().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % n as u64) as usize
}

/// A writer: waits for one job, takes whatever else is queued, applies the batch.
fn run(parts: WriterParts, rx: Receiver<Job>) {
    let counts = &parts.counts;
    let mut books = Books::new();
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if books.len() > KEPT_BOOKS {
            books.clear();
        }
        counts.batches.fetch_add(1, Ordering::Relaxed);
        counts
            .operations
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        parts.observer.batch(jobs.len());

        for (job, answer) in apply_jobs(&parts, &mut books, &jobs) {
            // A caller that stopped waiting is gone; its operation stands.
            let _ = job.reply.send(answer);
        }
    }
}

/// How a batch ended.
enum BatchEnd {
    Committed(Vec<Result<Applied, StoreError>>),
    /// Failed before the commit: nothing of it was written.
    RolledBack(StoreError),
    /// The commit itself failed: it may or may not have been written.
    CommitFailed(StoreError),
}

fn apply_jobs<'j>(
    parts: &WriterParts,
    books: &mut Books,
    jobs: &'j [Job],
) -> Vec<(&'j Job, Result<Applied, StoreError>)> {
    match batch(parts, books, jobs) {
        BatchEnd::Committed(answers) => jobs.iter().zip(answers).collect(),
        BatchEnd::CommitFailed(e) => jobs.iter().map(|j| (j, Err(commit_failed(&e)))).collect(),
        BatchEnd::RolledBack(e) if jobs.len() == 1 => vec![(&jobs[0], Err(e))],
        // Each on its own, so that one operation's failure is its caller's alone.
        BatchEnd::RolledBack(_) => jobs
            .iter()
            .map(|j| {
                let answer = match batch(parts, books, std::slice::from_ref(j)) {
                    BatchEnd::Committed(mut a) => a.pop().unwrap_or_else(|| Err(stopped())),
                    BatchEnd::RolledBack(e) => Err(e),
                    BatchEnd::CommitFailed(e) => Err(commit_failed(&e)),
                };
                (j, answer)
            })
            .collect(),
    }
}

/// One transaction for `jobs`. The books of its accounts are taken out of `books` and
/// put back only when it commits, so a batch that fails leaves none behind.
fn batch(parts: &WriterParts, books: &mut Books, jobs: &[Job]) -> BatchEnd {
    let _gate = parts
        .write_gate
        .as_ref()
        .map(|m| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    let mut conn = match crate::held::checkout(&parts.pool) {
        Ok(c) => c,
        Err(e) => return BatchEnd::RolledBack(e),
    };
    let mut body_done = false;
    let result = (*conn).transaction::<_, TxError, _>(|conn| {
        let items = jobs.iter().map(|j| (&j.item, j.now));
        let done = ledger::apply_all(conn, items, |id, version| match books.remove(id) {
            Some(k) if k.version + 1 == version => Warm::with_book(k.book, k.overdraft_limit),
            _ => {
                parts.counts.reloads.fetch_add(1, Ordering::Relaxed);
                Warm::default()
            }
        })?;
        body_done = true;
        Ok(done)
    });
    match result {
        Ok(done) => {
            for (id, (state, version)) in done.accounts {
                if let Some((mut book, overdraft_limit)) = state.book {
                    book.forget_settled();
                    let kept = Kept {
                        book,
                        overdraft_limit,
                        version,
                    };
                    books.insert(id, kept);
                }
            }
            BatchEnd::Committed(done.answers)
        }
        Err(TxError(e)) if body_done => BatchEnd::CommitFailed(e),
        Err(TxError(e)) => BatchEnd::RolledBack(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_always_goes_to_the_same_writer_and_ids_spread() {
        let ids: Vec<AccountId> = (0..1000)
            .map(|i| AccountId::new(format!("acct_{i}")))
            .collect();
        let mut counts = [0usize; 4];
        for id in &ids {
            let s = shard(id, 4);
            assert_eq!(s, shard(id, 4));
            counts[s] += 1;
        }
        assert!(counts.iter().all(|&c| c > 150), "{counts:?}");
    }
}
