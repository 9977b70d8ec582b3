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
use crate::overage::OveragePolicy;
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
    /// Opens a plan's billing period: settles expiries (the last period's allowance among
    /// them), writes off the last period's extra (billed in money as it was used), then
    /// grants the new period's allowance, if the plan has one.
    StartPeriod {
        allowance: Option<GrantSpec>,
        allowance_memo: Memo,
        write_off_memo: Memo,
    },
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
    /// The account's plan, when it has one in force: its extra is billed in money.
    pub plan: Option<PlanContext>,
}

/// What a plan in force adds to an operation (see [`crate::plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanContext {
    /// How extra is rounded and priced.
    pub overage: OveragePolicy,
    /// How much extra the period may use (`hard_limit - plan_limit`, or zero). The caller
    /// passes the same figure as [`Context::overdraft_limit`].
    pub wall: Credits,
    /// Blocks of extra already billed (net of credits) this period.
    pub billed_blocks: i64,
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
    /// The period's extra crossed into new blocks (`blocks` > 0: bill blocks
    /// `first_block..first_block + blocks`, numbered from 1) or fell back below billed
    /// ones after a refund (`blocks` < 0: credit the last `-blocks` billed blocks back).
    BillOverage { first_block: i64, blocks: i64 },
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
        self.set_overdraft_billed(context.plan.is_some());
        self.sweep(now, ids);
        let charges = operation.charges();
        // The operations that change a period's extra: charges, and refunds of them.
        let moves_extra = charges || matches!(operation, Operation::Refund { .. });
        let may_use_extra = matches!(
            operation,
            Operation::Debit {
                spend: Spend::WithinAccountLimit,
                ..
            } | Operation::Reserve {
                spend: Spend::WithinAccountLimit,
                ..
            }
        );
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
            Operation::StartPeriod {
                allowance,
                allowance_memo,
                write_off_memo,
            } => {
                self.write_off_overdraft(write_off_memo, now, ids);
                match allowance {
                    Some(spec) => self
                        .credit(spec, allowance_memo, now, ids)
                        .map(|e| Outcome::Entry(e.clone())),
                    None => Ok(Outcome::Settled),
                }
            }
        };
        // Past the wall of a plan that charges extra, the refusal says so.
        let result = match (result, &context.plan) {
            (
                Err(LedgerError::InsufficientCredits {
                    required,
                    available,
                }),
                Some(plan),
            ) if may_use_extra && plan.wall.is_positive() => Err(LedgerError::HardLimitReached {
                required,
                available,
            }),
            (result, _) => result,
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
        if let (Some(plan), true) = (&context.plan, result.is_ok() && moves_extra) {
            let due = crate::plan::blocks_due(&plan.overage, self.overdraft(), plan.billed_blocks);
            if due != 0 {
                effects.push(Effect::BillOverage {
                    first_block: if due > 0 {
                        plan.billed_blocks + 1
                    } else {
                        plan.billed_blocks + due + 1
                    },
                    blocks: due,
                });
            }
        }
        Applied {
            result,
            available,
            effects,
        }
    }
}
