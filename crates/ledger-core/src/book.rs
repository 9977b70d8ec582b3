//! [`Book`]: one account's lots, holds and balance, and every operation on them.
//!
//! A caller (the store) loads a book, applies one or many operations, then takes the
//! [`Changeset`] and writes it in one transaction. Each operation either succeeds whole or
//! returns a [`LedgerError`] and changes nothing.
//!
//! Balances:
//! - the *book balance* is the sum of all entries (it may be negative only when an
//!   overdraft policy allowed spending beyond all grants);
//! - the *available balance* is what can be spent now: usable grants minus active holds,
//!   minus any overdraft. Holds take their credits out of grants when they are made, so
//!   `book = Σ grant.remaining + Σ active-hold grant allocations − overdraft`.
//!
//! Limits: an operation moves at most [`Credits::MAX_AMOUNT`], and one that would push the
//! book balance past `±`[`Credits::MAX_BALANCE`] is refused with
//! [`LedgerError::BalanceLimit`], changing nothing (a move back toward zero is always
//! allowed). Overdraft allowances are capped at the maximum balance too, so every sum a
//! book keeps stays far inside an `i64` (see [`crate::amount`]).

use std::collections::BTreeSet;

use crate::amount::Credits;
use crate::entry::{
    Allocation, Entry, EntryKind, Grant, GrantSource, GrantSpec, Hold, HoldStatus, Lot,
};
use crate::error::LedgerError;
use crate::ids::{AccountId, EntryId, GrantId, HoldId, IdKind, IdSource};
use crate::time::Timestamp;

/// How far an operation may spend beyond the account's grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpendPolicy {
    /// Credits that may be owed beyond all grants (0: the balance never goes below zero).
    pub overdraft_limit: Credits,
}

impl SpendPolicy {
    /// Never below zero.
    pub const STRICT: SpendPolicy = SpendPolicy {
        overdraft_limit: Credits::ZERO,
    };

    /// At most `limit` below zero; `limit` is kept within `0..=MAX_BALANCE`.
    pub fn with_overdraft(limit: Credits) -> SpendPolicy {
        SpendPolicy {
            overdraft_limit: limit.max(Credits::ZERO).min(Credits::MAX_BALANCE),
        }
    }
}

/// The human side of an entry: what it says and what it refers to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Memo {
    pub description: String,
    pub reference_id: Option<String>,
    /// Overrides the kind's default `source` label.
    pub source: Option<String>,
}

impl Memo {
    pub fn new(description: impl Into<String>) -> Memo {
        Memo {
            description: description.into(),
            ..Memo::default()
        }
    }

    pub fn reference(mut self, reference_id: impl Into<String>) -> Memo {
        self.reference_id = Some(reference_id.into());
        self
    }

    pub fn source(mut self, source: impl Into<String>) -> Memo {
        self.source = Some(source.into());
        self
    }
}

/// The state of one account as loaded from storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookState {
    pub account_id: AccountId,
    /// Sum of all entries so far (including compacted ones).
    pub balance: Credits,
    /// Credits owed beyond all grants.
    pub overdraft: Credits,
    /// Sequence number of the last entry (0 when there is none).
    pub last_seq: i64,
    /// The account's plan name, stamped on new entries.
    pub plan: Option<String>,
    /// Every grant with credits remaining, plus any other the caller needs (a refund's
    /// source grants, say).
    pub grants: Vec<Grant>,
    /// Every active hold, plus any other the caller needs (the one being settled).
    /// Every grant named by these holds' allocations must be in `grants`.
    pub holds: Vec<Hold>,
}

/// What a batch of operations changed; written to storage in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changeset {
    pub entries: Vec<Entry>,
    pub grants_inserted: Vec<Grant>,
    pub grants_updated: Vec<Grant>,
    pub holds_inserted: Vec<Hold>,
    pub holds_updated: Vec<Hold>,
    pub balance: Credits,
    pub overdraft: Credits,
    pub last_seq: i64,
}

impl Changeset {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.grants_inserted.is_empty()
            && self.grants_updated.is_empty()
            && self.holds_inserted.is_empty()
            && self.holds_updated.is_empty()
    }
}

/// One account's ledger in memory.
#[derive(Debug)]
pub struct Book {
    state: BookState,
    entries: Vec<Entry>,
    new_grants: BTreeSet<GrantId>,
    touched_grants: BTreeSet<GrantId>,
    new_holds: BTreeSet<HoldId>,
    touched_holds: BTreeSet<HoldId>,
    /// The overdraft is a plan's extra, billed in money: new credits do not repay it.
    overdraft_billed: bool,
}

impl Book {
    pub fn new(state: BookState) -> Book {
        Book {
            state,
            entries: Vec::new(),
            new_grants: BTreeSet::new(),
            touched_grants: BTreeSet::new(),
            new_holds: BTreeSet::new(),
            touched_holds: BTreeSet::new(),
            overdraft_billed: false,
        }
    }

    /// Says whether the overdraft is a plan's extra, billed in money (see
    /// [`crate::plan`]): then credits added later do not repay it, or it would be paid
    /// twice; they are spent before any new extra.
    pub fn set_overdraft_billed(&mut self, billed: bool) {
        self.overdraft_billed = billed;
    }

    /// An account with nothing in it yet.
    pub fn empty(account_id: AccountId) -> Book {
        Book::new(BookState {
            account_id,
            balance: Credits::ZERO,
            overdraft: Credits::ZERO,
            last_seq: 0,
            plan: None,
            grants: Vec::new(),
            holds: Vec::new(),
        })
    }

    pub fn account_id(&self) -> &AccountId {
        &self.state.account_id
    }

    pub fn state(&self) -> &BookState {
        &self.state
    }

    /// The sum of all entries.
    pub fn balance(&self) -> Credits {
        self.state.balance
    }

    pub fn overdraft(&self) -> Credits {
        self.state.overdraft
    }

    pub fn set_plan(&mut self, plan: Option<String>) {
        self.state.plan = plan;
    }

    /// What can be spent now: usable grants (holds are already taken out) minus overdraft.
    /// Holds past their expiry count as returned even before [`Book::sweep`] runs.
    pub fn available(&self, now: Timestamp) -> Credits {
        let usable: Credits = self
            .state
            .grants
            .iter()
            .filter(|g| g.usable(now))
            .map(|g| g.remaining)
            .sum();
        let returning: Credits = self
            .state
            .holds
            .iter()
            .filter(|h| h.status == HoldStatus::Active && h.expires_at <= now)
            .flat_map(|h| h.allocations.iter())
            .filter_map(|a| match &a.lot {
                Lot::Grant(id) => self.grant(id).filter(|g| g.live(now)).map(|_| a.amount),
                Lot::Overdraft => None,
            })
            .sum();
        usable + returning - self.state.overdraft
    }

    /// The first instant after `now` at which time alone changes what [`Book::available`]
    /// or the active holds say: a grant of the book starts or expires, or an active hold
    /// expires. `None`: never, until an operation changes the book. A balance computed at
    /// `now` holds for every instant in `now..steady_until`.
    pub fn steady_until(&self, now: Timestamp) -> Option<Timestamp> {
        let grants = self
            .state
            .grants
            .iter()
            .flat_map(|g| [Some(g.effective_at), g.expires_at]);
        let holds = self
            .state
            .holds
            .iter()
            .filter(|h| h.status == HoldStatus::Active)
            .map(|h| Some(h.expires_at));
        grants.chain(holds).flatten().filter(|t| *t > now).min()
    }

    /// Credits of overdraft reserved by active holds (`None` if the sum overflows).
    fn reserved_overdraft(&self, now: Timestamp) -> Option<Credits> {
        Credits::checked_sum(
            self.state
                .holds
                .iter()
                .filter(|h| h.is_active(now))
                .flat_map(|h| h.allocations.iter())
                .filter(|a| a.lot == Lot::Overdraft)
                .map(|a| a.amount),
        )
    }

    /// The book balance after adding `delta`; refused when that would push the balance
    /// past `±MAX_BALANCE` (moving back toward zero is always allowed, so an account
    /// somehow beyond the limit can still spend).
    fn balance_after(&self, delta: Credits) -> Result<Credits, LedgerError> {
        let max = Credits::MAX_BALANCE;
        let refused = LedgerError::BalanceLimit { max };
        let next = self
            .state
            .balance
            .checked_add(delta)
            .ok_or(refused.clone())?;
        let past = if delta.is_positive() {
            next > max
        } else {
            next < -max
        };
        if past {
            return Err(refused);
        }
        Ok(next)
    }

    /// One operation moves at most [`Credits::MAX_AMOUNT`].
    fn within_max_amount(amount: Credits) -> Result<(), LedgerError> {
        if amount > Credits::MAX_AMOUNT {
            return Err(LedgerError::BalanceLimit {
                max: Credits::MAX_AMOUNT,
            });
        }
        Ok(())
    }

    pub fn grant(&self, id: &GrantId) -> Option<&Grant> {
        self.state.grants.iter().find(|g| &g.id == id)
    }

    pub fn hold(&self, id: &HoldId) -> Option<&Hold> {
        self.state.holds.iter().find(|h| &h.id == id)
    }

    pub fn grants(&self) -> &[Grant] {
        &self.state.grants
    }

    pub fn holds(&self) -> &[Hold] {
        &self.state.holds
    }

    fn grant_mut(&mut self, id: &GrantId) -> Option<&mut Grant> {
        self.touched_grants.insert(id.clone());
        self.state.grants.iter_mut().find(|g| &g.id == id)
    }

    fn push_entry(
        &mut self,
        kind: EntryKind,
        amount: Credits,
        memo: Memo,
        now: Timestamp,
        ids: &mut dyn IdSource,
        allocations: Vec<Allocation>,
    ) -> &mut Entry {
        self.state.balance += amount;
        self.state.last_seq += 1;
        let entry = Entry {
            id: EntryId::new(ids.next_id(IdKind::Entry)),
            account_id: self.state.account_id.clone(),
            seq: self.state.last_seq,
            kind,
            amount,
            balance_after: self.state.balance,
            description: memo.description,
            reference_id: memo.reference_id,
            source: memo
                .source
                .unwrap_or_else(|| kind.default_source().to_owned()),
            plan: self.state.plan.clone(),
            created_at: now,
            hold_id: None,
            refund_of: None,
            allocations,
        };
        self.entries.push_mut(entry)
    }

    /// Settles what time has decided: holds past their expiry return their credits, and
    /// grants past their expiry lose what remains (one `expiry` entry each).
    pub fn sweep(&mut self, now: Timestamp, ids: &mut dyn IdSource) -> Vec<EntryId> {
        let expired_holds: Vec<HoldId> = self
            .state
            .holds
            .iter()
            .filter(|h| h.status == HoldStatus::Active && h.expires_at <= now)
            .map(|h| h.id.clone())
            .collect();
        for id in expired_holds {
            self.settle_hold(&id, HoldStatus::Expired, Credits::ZERO, now);
        }
        let mut expired: Vec<(GrantId, Credits, GrantSource)> = self
            .state
            .grants
            .iter()
            .filter(|g| g.expired(now) && g.remaining.is_positive())
            .map(|g| (g.id.clone(), g.remaining, g.source))
            .collect();
        expired.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        for (id, remaining, source) in expired {
            if let Some(g) = self.grant_mut(&id) {
                g.remaining = Credits::ZERO;
            }
            let memo = Memo::new(format!(
                "{} unused {} credits expired",
                remaining.grouped(),
                source.as_str().replace('_', " ")
            ))
            .reference(id.as_str());
            let allocations = vec![Allocation {
                lot: Lot::Grant(id),
                amount: remaining,
            }];
            let entry = self.push_entry(EntryKind::Expiry, -remaining, memo, now, ids, allocations);
            out.push(entry.id.clone());
        }
        out
    }

    /// Brings the overdraft back to zero with one `adjustment` entry (a plan period's
    /// extra, billed in money, closed at the period's end). `None` when there is none.
    pub fn write_off_overdraft(
        &mut self,
        memo: Memo,
        now: Timestamp,
        ids: &mut dyn IdSource,
    ) -> Option<&Entry> {
        let owed = self.state.overdraft;
        if !owed.is_positive() {
            return None;
        }
        self.state.overdraft = Credits::ZERO;
        let allocations = vec![Allocation {
            lot: Lot::Overdraft,
            amount: owed,
        }];
        Some(self.push_entry(EntryKind::Adjustment, owed, memo, now, ids, allocations))
    }

    /// Adds credits as a new grant. Any overdraft is repaid first, unless it is billed in
    /// money ([`Book::set_overdraft_billed`]).
    pub fn credit(
        &mut self,
        spec: GrantSpec,
        memo: Memo,
        now: Timestamp,
        ids: &mut dyn IdSource,
    ) -> Result<&Entry, LedgerError> {
        if !spec.amount.is_positive() {
            return Err(LedgerError::InvalidAmount {
                reason: "amount must be greater than zero".into(),
            });
        }
        Self::within_max_amount(spec.amount)?;
        self.balance_after(spec.amount)?;
        let kind = spec.source.entry_kind();
        let repaid = if self.overdraft_billed {
            Credits::ZERO
        } else {
            spec.amount.min(self.state.overdraft)
        };
        self.state.overdraft -= repaid;
        let grant = Grant {
            id: GrantId::new(ids.next_id(IdKind::Grant)),
            account_id: self.state.account_id.clone(),
            source: spec.source,
            amount: spec.amount,
            remaining: spec.amount - repaid,
            priority: spec.priority,
            effective_at: spec.effective_at.unwrap_or(now),
            expires_at: spec.expires_at,
            created_at: now,
        };
        let mut allocations = Vec::with_capacity(2);
        if repaid.is_positive() {
            allocations.push(Allocation {
                lot: Lot::Overdraft,
                amount: repaid,
            });
        }
        if grant.remaining.is_positive() {
            allocations.push(Allocation {
                lot: Lot::Grant(grant.id.clone()),
                amount: grant.remaining,
            });
        }
        self.new_grants.insert(grant.id.clone());
        self.state.grants.push(grant);
        Ok(self.push_entry(kind, spec.amount, memo, now, ids, allocations))
    }

    /// Plans where `amount` would come from, in burn-down order, without changing anything.
    fn plan_draw(
        &self,
        amount: Credits,
        policy: SpendPolicy,
        now: Timestamp,
    ) -> Result<Vec<Allocation>, LedgerError> {
        if !amount.is_positive() {
            return Err(LedgerError::InvalidAmount {
                reason: "amount must be greater than zero".into(),
            });
        }
        Self::within_max_amount(amount)?;
        let mut usable: Vec<&Grant> = self.state.grants.iter().filter(|g| g.usable(now)).collect();
        usable.sort_by(|a, b| a.burn_key().cmp(&b.burn_key()));
        let mut left = amount;
        let mut allocations = Vec::new();
        for g in usable {
            if !left.is_positive() {
                break;
            }
            let take = g.remaining.min(left);
            allocations.push(Allocation {
                lot: Lot::Grant(g.id.clone()),
                amount: take,
            });
            left -= take;
        }
        if left.is_positive() {
            let limit = policy.overdraft_limit.min(Credits::MAX_BALANCE);
            let room = self.reserved_overdraft(now).and_then(|reserved| {
                limit
                    .checked_sub(self.state.overdraft)?
                    .checked_sub(reserved)
            });
            if room.is_none_or(|room| left > room) {
                return Err(LedgerError::InsufficientCredits {
                    required: amount,
                    available: self.available(now),
                });
            }
            allocations.push(Allocation {
                lot: Lot::Overdraft,
                amount: left,
            });
        }
        Ok(allocations)
    }

    /// Takes planned allocations out of their grants. Overdraft parts are left to the caller.
    fn take_from_grants(&mut self, allocations: &[Allocation]) {
        for a in allocations {
            if let Lot::Grant(id) = &a.lot {
                if let Some(g) = self.grant_mut(id) {
                    g.remaining -= a.amount;
                }
            }
        }
    }

    fn overdraft_part(allocations: &[Allocation]) -> Credits {
        allocations
            .iter()
            .filter(|a| a.lot == Lot::Overdraft)
            .map(|a| a.amount)
            .sum()
    }

    /// Spends `amount` at once: a `usage` entry (or `kind`, e.g. a negative `adjustment`).
    pub fn debit(
        &mut self,
        kind: EntryKind,
        amount: Credits,
        policy: SpendPolicy,
        memo: Memo,
        now: Timestamp,
        ids: &mut dyn IdSource,
    ) -> Result<&Entry, LedgerError> {
        let allocations = self.plan_draw(amount, policy, now)?;
        self.balance_after(-amount)?;
        self.take_from_grants(&allocations);
        self.state.overdraft += Self::overdraft_part(&allocations);
        Ok(self.push_entry(kind, -amount, memo, now, ids, allocations))
    }

    /// Reserves `amount` until `expires_at`. No entry is written until the hold is captured.
    pub fn reserve(
        &mut self,
        amount: Credits,
        expires_at: Timestamp,
        policy: SpendPolicy,
        memo: Memo,
        now: Timestamp,
        ids: &mut dyn IdSource,
    ) -> Result<&Hold, LedgerError> {
        if expires_at <= now {
            return Err(LedgerError::InvalidAmount {
                reason: "a hold must expire in the future".into(),
            });
        }
        let allocations = self.plan_draw(amount, policy, now)?;
        self.take_from_grants(&allocations);
        let hold = Hold {
            id: HoldId::new(ids.next_id(IdKind::Hold)),
            account_id: self.state.account_id.clone(),
            amount,
            captured: Credits::ZERO,
            status: HoldStatus::Active,
            description: memo.description,
            reference_id: memo.reference_id,
            created_at: now,
            expires_at,
            settled_at: None,
            allocations,
        };
        self.new_holds.insert(hold.id.clone());
        Ok(self.state.holds.push_mut(hold))
    }

    fn active_hold(&self, id: &HoldId, now: Timestamp) -> Result<&Hold, LedgerError> {
        let hold = self.hold(id).ok_or_else(|| LedgerError::HoldNotFound {
            hold_id: id.clone(),
        })?;
        match hold.status {
            HoldStatus::Active if now < hold.expires_at => Ok(hold),
            HoldStatus::Active => Err(LedgerError::HoldSettled {
                hold_id: id.clone(),
                status: HoldStatus::Expired.as_str().into(),
            }),
            other => Err(LedgerError::HoldSettled {
                hold_id: id.clone(),
                status: other.as_str().into(),
            }),
        }
    }

    /// Ends an active hold: the first `charged` credits of its allocations are kept (and
    /// returned), the rest go back to their grants.
    fn settle_hold(
        &mut self,
        id: &HoldId,
        status: HoldStatus,
        charged: Credits,
        now: Timestamp,
    ) -> Vec<Allocation> {
        let Some(index) = self.state.holds.iter().position(|h| &h.id == id) else {
            return Vec::new();
        };
        let allocations = std::mem::take(&mut self.state.holds[index].allocations);
        let mut kept = Vec::new();
        let mut returned = Vec::new();
        let mut left = charged;
        for a in &allocations {
            let keep = a.amount.min(left);
            left -= keep;
            if keep.is_positive() {
                kept.push(Allocation {
                    lot: a.lot.clone(),
                    amount: keep,
                });
            }
            if (a.amount - keep).is_positive() {
                returned.push(Allocation {
                    lot: a.lot.clone(),
                    amount: a.amount - keep,
                });
            }
        }
        for a in &returned {
            if let Lot::Grant(g) = &a.lot {
                if let Some(g) = self.grant_mut(g) {
                    g.remaining += a.amount;
                }
            }
        }
        self.state.overdraft += Self::overdraft_part(&kept);
        let hold = &mut self.state.holds[index];
        hold.allocations = allocations;
        hold.status = status;
        hold.captured = charged;
        hold.settled_at = Some(now);
        self.touched_holds.insert(id.clone());
        kept
    }

    /// Charges `amount` of an active hold (all of it when `None`) as a `usage` entry; the
    /// rest returns to the grants it came from.
    pub fn capture(
        &mut self,
        hold_id: &HoldId,
        amount: Option<Credits>,
        memo: Option<Memo>,
        now: Timestamp,
        ids: &mut dyn IdSource,
    ) -> Result<&Entry, LedgerError> {
        let hold = self.active_hold(hold_id, now)?;
        let amount = amount.unwrap_or(hold.amount);
        if !amount.is_positive() {
            return Err(LedgerError::InvalidAmount {
                reason: "a capture must be greater than zero; release the hold to charge nothing"
                    .into(),
            });
        }
        if amount > hold.amount {
            return Err(LedgerError::CaptureExceedsHold {
                hold_id: hold_id.clone(),
                requested: amount,
                held: hold.amount,
            });
        }
        self.balance_after(-amount)?;
        let memo = memo.unwrap_or_else(|| Memo {
            description: hold.description.clone(),
            reference_id: hold.reference_id.clone(),
            source: None,
        });
        let kept = self.settle_hold(hold_id, HoldStatus::Captured, amount, now);
        let entry = self.push_entry(EntryKind::Usage, -amount, memo, now, ids, kept);
        entry.hold_id = Some(hold_id.clone());
        Ok(entry)
    }

    /// Ends an active hold with nothing charged.
    pub fn release(&mut self, hold_id: &HoldId, now: Timestamp) -> Result<&Hold, LedgerError> {
        self.active_hold(hold_id, now)?;
        self.settle_hold(hold_id, HoldStatus::Released, Credits::ZERO, now);
        // `active_hold` found it, and settling never removes a hold.
        self.hold(hold_id).ok_or_else(|| LedgerError::HoldNotFound {
            hold_id: hold_id.clone(),
        })
    }

    /// Gives back `amount` (all that is still refundable when `None`) of a `usage` entry.
    ///
    /// Where refunded credits go: back to the lots they were drawn from, last-drawn first,
    /// so a refund restores exactly what the charge took (an allowance stays an allowance
    /// and keeps its expiry). A share whose grant has expired since, or an overdraft share
    /// that was repaid since, comes back as a new non-expiring `refund` grant: the customer
    /// never loses credits for failed work. `already_refunded` is the sum of earlier refunds
    /// of the same entry.
    pub fn refund(
        &mut self,
        original: &Entry,
        already_refunded: Credits,
        amount: Option<Credits>,
        memo: Memo,
        now: Timestamp,
        ids: &mut dyn IdSource,
    ) -> Result<&Entry, LedgerError> {
        if original.kind != EntryKind::Usage || original.account_id != self.state.account_id {
            return Err(LedgerError::NotRefundable {
                entry_id: original.id.clone(),
                kind: original.kind.as_str().into(),
            });
        }
        // A charge is a negative amount; anything else (only on a corrupt row) refunds nothing.
        let refundable = original
            .amount
            .checked_neg()
            .and_then(|charged| charged.checked_sub(already_refunded))
            .unwrap_or(Credits::ZERO)
            .max(Credits::ZERO);
        let amount = amount.unwrap_or(refundable);
        if !amount.is_positive() || amount > refundable {
            return Err(LedgerError::RefundExceedsCharge {
                entry_id: original.id.clone(),
                requested: amount,
                refundable,
            });
        }
        Self::within_max_amount(amount)?;
        self.balance_after(amount)?;
        // Walk the original allocations last-drawn first, skipping what earlier refunds
        // already gave back.
        let mut skip = already_refunded;
        let mut left = amount;
        let mut back: Vec<Allocation> = Vec::new();
        let mut to_new_grant = Credits::ZERO;
        for a in original.allocations.iter().rev() {
            if !left.is_positive() {
                break;
            }
            let skipped = a.amount.min(skip);
            skip -= skipped;
            let give = (a.amount - skipped).min(left);
            if !give.is_positive() {
                continue;
            }
            left -= give;
            match &a.lot {
                Lot::Overdraft => {
                    let repay = give.min(self.state.overdraft);
                    self.state.overdraft -= repay;
                    if repay.is_positive() {
                        back.push(Allocation {
                            lot: Lot::Overdraft,
                            amount: repay,
                        });
                    }
                    to_new_grant += give - repay;
                }
                Lot::Grant(id) => match self.grant(id) {
                    Some(g)
                        if g.live(now)
                            && g.remaining.checked_add(give).is_some_and(|r| r <= g.amount) =>
                    {
                        let id = id.clone();
                        if let Some(g) = self.grant_mut(&id) {
                            g.remaining += give;
                        }
                        back.push(Allocation {
                            lot: Lot::Grant(id),
                            amount: give,
                        });
                    }
                    _ => to_new_grant += give,
                },
            }
        }
        if to_new_grant.is_positive() {
            let grant = Grant {
                id: GrantId::new(ids.next_id(IdKind::Grant)),
                account_id: self.state.account_id.clone(),
                source: GrantSource::Refund,
                amount: to_new_grant,
                remaining: to_new_grant,
                priority: GrantSource::Refund.default_priority(),
                effective_at: now,
                expires_at: None,
                created_at: now,
            };
            back.push(Allocation {
                lot: Lot::Grant(grant.id.clone()),
                amount: to_new_grant,
            });
            self.new_grants.insert(grant.id.clone());
            self.state.grants.push(grant);
        }
        let entry = self.push_entry(EntryKind::Refund, amount, memo, now, ids, back);
        entry.refund_of = Some(original.id.clone());
        Ok(entry)
    }

    /// Forgets what loading the account afresh would not bring back (its open grants and
    /// active holds): settled holds, and spent grants that no active hold names. For a
    /// caller that keeps a book between operations, so it does not grow with history;
    /// call it once every change has been taken ([`Book::take_changes`]): what it drops
    /// is then already stored.
    pub fn forget_settled(&mut self) {
        debug_assert!(self.entries.is_empty() && self.touched_grants.is_empty());
        self.state.holds.retain(|h| h.status == HoldStatus::Active);
        let named: BTreeSet<&GrantId> = self
            .state
            .holds
            .iter()
            .flat_map(|h| h.allocations.iter())
            .filter_map(|a| match &a.lot {
                Lot::Grant(g) => Some(g),
                Lot::Overdraft => None,
            })
            .collect();
        let keep: BTreeSet<GrantId> = self
            .state
            .grants
            .iter()
            .filter(|g| g.remaining.is_positive() || named.contains(&g.id))
            .map(|g| g.id.clone())
            .collect();
        self.state.grants.retain(|g| keep.contains(&g.id));
    }

    /// Everything changed since the book was loaded (or since the last call).
    pub fn take_changes(&mut self) -> Changeset {
        let (grants_inserted, grants_updated) = inserted_and_updated(
            &self.state.grants,
            |g| &g.id,
            &self.new_grants,
            &self.touched_grants,
        );
        let (holds_inserted, holds_updated) = inserted_and_updated(
            &self.state.holds,
            |h| &h.id,
            &self.new_holds,
            &self.touched_holds,
        );
        let changes = Changeset {
            entries: std::mem::take(&mut self.entries),
            grants_inserted,
            grants_updated,
            holds_inserted,
            holds_updated,
            balance: self.state.balance,
            overdraft: self.state.overdraft,
            last_seq: self.state.last_seq,
        };
        self.new_grants.clear();
        self.touched_grants.clear();
        self.new_holds.clear();
        self.touched_holds.clear();
        changes
    }

    /// Checks the book's own invariants; an empty list means it is consistent. Never
    /// panics: a sum that overflows is reported as a violation.
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        let say = &mut |m| out.push(m);
        let mut lots = crate::audit::Lots::new();
        for g in &self.state.grants {
            lots.grant(g, say);
        }
        for h in &self.state.holds {
            lots.hold(h, say);
        }
        let totals = crate::audit::BookTotals {
            balance: self.state.balance,
            overdraft: self.state.overdraft,
        };
        lots.finish(totals, say);
        out
    }
}

/// The items `new` names, and the others `touched` names, each in their order in `items`.
fn inserted_and_updated<T: Clone, K: Ord>(
    items: &[T],
    id: impl Fn(&T) -> &K,
    new: &BTreeSet<K>,
    touched: &BTreeSet<K>,
) -> (Vec<T>, Vec<T>) {
    let pick = |keep: &dyn Fn(&K) -> bool| items.iter().filter(|t| keep(id(t))).cloned().collect();
    (
        pick(&|k| new.contains(k)),
        pick(&|k| touched.contains(k) && !new.contains(k)),
    )
}
