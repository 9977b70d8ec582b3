//! The ledger's operations, and applying one to a [`Book`].
//!
//! [`Book::apply`] runs one [`Operation`] and returns its [`Outcome`] together with the
//! [`Effect`]s it calls for (today: start an auto top-up). The caller loads what
//! [`Operation::needs`] names into a [`Context`], and persists the book's changeset and
//! the effects in one transaction; it decides nothing itself.

use crate::amount::Credits;
use crate::book::{Book, Memo, SpendPolicy};
use crate::entry::{Entry, EntryKind, GrantSpec, Hold};
use crate::error::LedgerError;
use crate::ids::{EntryId, HoldId, IdSource};
use crate::time::Timestamp;
use crate::topup::{self, AutoTopup, TopupStart};

/// Whether a debit may use the account's overdraft allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// Never below zero.
    Strict,
    /// Up to the account's `overdraft_limit` (plans that charge extra).
    WithinAccountLimit,
}

/// One ledger operation on one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Adds credits as a new grant (purchase, bonus, allowance, positive adjustment...).
    Credit { spec: GrantSpec, memo: Memo },
    /// Takes credits at once: `usage`, or a negative `adjustment`.
    Debit {
        kind: EntryKind,
        amount: Credits,
        spend: Spend,
        memo: Memo,
    },
    /// Reserves credits until `ttl_ms` from now.
    Reserve {
        amount: Credits,
        ttl_ms: i64,
        spend: Spend,
        memo: Memo,
    },
    /// Charges all (`None`) or part of a hold.
    Capture {
        hold_id: HoldId,
        amount: Option<Credits>,
        memo: Option<Memo>,
    },
    /// Ends a hold with nothing charged.
    Release { hold_id: HoldId },
    /// Gives back all that is refundable (`None`) or part of a `usage` entry.
    Refund {
        entry_id: EntryId,
        amount: Option<Credits>,
        memo: Memo,
    },
    /// Only settles expiries (grants and holds past their time).
    Sweep,
}

/// What an operation needs loaded beyond the book's open grants and active holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs<'a> {
    /// The hold it settles, whatever its state.
    pub hold: Option<&'a HoldId>,
    /// The entry it refunds, the sum of that entry's earlier refunds and the grants it
    /// drew from ([`Context::refund`]).
    pub refund_of: Option<&'a EntryId>,
    /// The account's auto top-up settings ([`Context::auto_topup`]), for a charge.
    pub auto_topup: bool,
}

impl Operation {
    /// What the caller must load for [`Book::apply`].
    pub fn needs(&self) -> Needs<'_> {
        match self {
            Operation::Capture { hold_id, .. } => Needs {
                hold: Some(hold_id),
                auto_topup: true,
                ..Needs::default()
            },
            Operation::Release { hold_id } => Needs {
                hold: Some(hold_id),
                ..Needs::default()
            },
            Operation::Refund { entry_id, .. } => Needs {
                refund_of: Some(entry_id),
                ..Needs::default()
            },
            Operation::Debit {
                kind: EntryKind::Usage,
                ..
            } => Needs {
                auto_topup: true,
                ..Needs::default()
            },
            _ => Needs::default(),
        }
    }

    /// Whether it charges for usage (a usage debit or a capture): the operations that
    /// may start an auto top-up.
    pub fn charges(&self) -> bool {
        self.needs().auto_topup
    }
}

/// The entry a refund gives back, with what was refunded of it before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundOf {
    pub original: Entry,
    pub already_refunded: Credits,
}

/// What the caller loaded for an operation (see [`Operation::needs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// How far `Spend::WithinAccountLimit` may go below zero.
    pub overdraft_limit: Credits,
    /// For a refund: the entry it gives back.
    pub refund: Option<RefundOf>,
    /// The account's auto top-up settings, when it saved any.
    pub auto_topup: Option<AutoTopup>,
}

/// What an operation produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Entry(Entry),
    Hold(Hold),
    /// A sweep, or a release (which writes no entry): nothing to show but the balance.
    Settled,
}

/// Something an operation asks its caller to do, in the same transaction as its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Record one pending auto top-up charge and mark the settings pending.
    StartTopup(TopupStart),
}

/// The result of [`Book::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The operation's outcome, or the rule that refused it (nothing changed then, beyond
    /// the expiries settled first).
    pub result: Result<Outcome, LedgerError>,
    /// The available balance after the operation.
    pub available: Credits,
    /// What the caller must persist besides the book's changeset.
    pub effects: Vec<Effect>,
}

impl Book {
    /// Settles expiries, then runs `operation` with what the caller loaded for it.
    pub fn apply(
        &mut self,
        operation: Operation,
        context: &Context,
        now: Timestamp,
        ids: &mut dyn IdSource,
    ) -> Applied {
        self.sweep(now, ids);
        let charges = operation.charges();
        let policy = |spend: Spend| match spend {
            Spend::Strict => SpendPolicy::STRICT,
            Spend::WithinAccountLimit => SpendPolicy::with_overdraft(context.overdraft_limit),
        };
        let result = match operation {
            Operation::Credit { spec, memo } => self
                .credit(spec, memo, now, ids)
                .map(|e| Outcome::Entry(e.clone())),
            Operation::Debit {
                kind,
                amount,
                spend,
                memo,
            } => self
                .debit(kind, amount, policy(spend), memo, now, ids)
                .map(|e| Outcome::Entry(e.clone())),
            Operation::Reserve {
                amount,
                ttl_ms,
                spend,
                memo,
            } => self
                .reserve(
                    amount,
                    now.plus_millis(ttl_ms),
                    policy(spend),
                    memo,
                    now,
                    ids,
                )
                .map(|h| Outcome::Hold(h.clone())),
            Operation::Capture {
                hold_id,
                amount,
                memo,
            } => self
                .capture(&hold_id, amount, memo, now, ids)
                .map(|e| Outcome::Entry(e.clone())),
            Operation::Release { hold_id } => self.release(&hold_id, now).map(|_| Outcome::Settled),
            Operation::Refund {
                entry_id,
                amount,
                memo,
            } => match context
                .refund
                .as_ref()
                .filter(|r| r.original.id == entry_id)
            {
                Some(of) => self
                    .refund(&of.original, of.already_refunded, amount, memo, now, ids)
                    .map(|e| Outcome::Entry(e.clone())),
                None => Err(LedgerError::EntryNotFound { entry_id }),
            },
            Operation::Sweep => Ok(Outcome::Settled),
        };
        let available = self.available(now);
        let mut effects = Vec::new();
        if charges && result.is_ok() {
            if let Some(settings) = &context.auto_topup {
                effects.extend(
                    topup::after_charge(self.account_id(), settings, available)
                        .map(Effect::StartTopup),
                );
            }
        }
        Applied {
            result,
            available,
            effects,
        }
    }
}
