//! What the store tells whoever watches it (the programs' metrics), as it happens.
//!
//! The store does not depend on any metrics library (ADR 14): it calls a
//! [`StoreObserver`] the program hands to [`crate::Store::open_observed`]. Every method has
//! a default that does nothing, and the calls are cheap and never block: an observer only
//! counts.

use std::sync::Arc;
use std::time::Duration;

use ledger_core::{Credits, EntryKind, LedgerError, Operation, Outcome};

use crate::error::StoreError;
use crate::ledger::Applied;

/// How one ledger operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationOutcome {
    /// Applied (for a debit or a capture: charged).
    Charged,
    /// Refused: not covered by the balance (or the plan's hard limit).
    RejectedCredits,
    /// Refused by another rule of the ledger (a bad amount, an unknown hold...).
    Rejected,
    /// Its idempotency key was seen before: the first answer was given again.
    Replayed,
    /// Its idempotency key was used with another request, or its hold was settled.
    Conflict,
    /// The database failed (retryable).
    Error,
}

impl OperationOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationOutcome::Charged => "charged",
            OperationOutcome::RejectedCredits => "rejected_credits",
            OperationOutcome::Rejected => "rejected",
            OperationOutcome::Replayed => "replayed",
            OperationOutcome::Conflict => "conflict",
            OperationOutcome::Error => "error",
        }
    }

    /// How the answer `answer` to one operation ended.
    pub(crate) fn of(answer: &Result<Applied, StoreError>) -> OperationOutcome {
        match answer {
            Ok(a) if a.replayed => OperationOutcome::Replayed,
            Ok(a) => match &a.result {
                Ok(_) => OperationOutcome::Charged,
                Err(
                    LedgerError::InsufficientCredits { .. } | LedgerError::HardLimitReached { .. },
                ) => OperationOutcome::RejectedCredits,
                Err(LedgerError::HoldSettled { .. }) => OperationOutcome::Conflict,
                Err(_) => OperationOutcome::Rejected,
            },
            Err(StoreError::IdempotencyConflict { .. }) => OperationOutcome::Conflict,
            Err(
                StoreError::AccountNotFound { .. }
                | StoreError::HoldNotFound { .. }
                | StoreError::EntryNotFound { .. }
                | StoreError::Refused(_),
            ) => OperationOutcome::Rejected,
            Err(_) => OperationOutcome::Error,
        }
    }
}

/// The name of an operation's kind, as metrics label it.
pub fn operation_kind(op: &Operation) -> &'static str {
    match op {
        Operation::Credit { .. } => "credit",
        Operation::Debit { .. } => "debit",
        Operation::Reserve { .. } => "hold",
        Operation::Capture { .. } => "capture",
        Operation::Release { .. } => "release",
        Operation::Refund { .. } => "refund",
        Operation::Sweep => "sweep",
        Operation::StartPeriod { .. } => "start_period",
    }
}

/// What a successful, first-time answer charged: the credits a `usage` entry took.
pub(crate) fn charged(answer: &Result<Applied, StoreError>) -> Credits {
    match answer {
        Ok(Applied {
            result: Ok(Outcome::Entry(entry)),
            replayed: false,
            ..
        }) if entry.kind == EntryKind::Usage && entry.amount.is_negative() => {
            Credits::from_millis(-entry.amount.millis())
        }
        _ => Credits::ZERO,
    }
}

/// Told of the store's work as it happens. Every method does nothing by default.
pub trait StoreObserver: Send + Sync + 'static {
    /// One ledger operation of `kind` ([`operation_kind`]) ended as `outcome`.
    fn operation(&self, kind: &'static str, outcome: OperationOutcome) {
        let _ = (kind, outcome);
    }

    /// A first-time answer charged `credits` (a `usage` entry).
    fn charged(&self, credits: Credits) {
        let _ = credits;
    }

    /// A group-committed transaction carried `operations` operations.
    fn batch(&self, operations: usize) {
        let _ = operations;
    }

    /// A caller got a pooled connection after waiting `waited`.
    fn acquired(&self, waited: Duration) {
        let _ = waited;
    }

    /// A caller gave up after waiting `waited` for a pooled connection.
    fn acquire_timed_out(&self, waited: Duration) {
        let _ = waited;
    }
}

/// Watches nothing ([`crate::Store::open`]).
#[derive(Debug, Default)]
pub struct NoObserver;

impl StoreObserver for NoObserver {}

pub(crate) type Observer = Arc<dyn StoreObserver>;

/// Tells the observer of the pool's checkouts and timeouts (r2d2's event hook).
pub(crate) struct PoolEvents(pub(crate) Observer);

impl std::fmt::Debug for PoolEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolEvents")
    }
}

impl r2d2::HandleEvent for PoolEvents {
    fn handle_checkout(&self, event: r2d2::event::CheckoutEvent) {
        self.0.acquired(event.duration());
    }

    fn handle_timeout(&self, event: r2d2::event::TimeoutEvent) {
        self.0.acquire_timed_out(event.timeout());
    }
}

/// Tells `observer` of one operation's answer.
pub(crate) fn report(
    observer: &Observer,
    kind: &'static str,
    answer: &Result<Applied, StoreError>,
) {
    observer.operation(kind, OperationOutcome::of(answer));
    let credits = charged(answer);
    if credits.is_positive() {
        observer.charged(credits);
    }
}

/// The connection pool now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Connections it may open at most.
    pub max: u32,
    /// Connections open now.
    pub open: u32,
    /// Of those, idle.
    pub idle: u32,
}
