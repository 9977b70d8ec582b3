//! The invariants `verify` checks over one account's stored rows: its entries, holds and
//! grants, against the totals on its account row. Pure: the store reads, this judges, and
//! the property tests run the very same checks over what operations produced.
//!
//! [`Audit`] takes the rows one at a time (entries in sequence order, holds and grants in
//! any order), so its state is a few sums, never the history: the store reads an account
//! in pages and its memory does not grow with the account. The two checks that relate rows
//! to one another take what the caller gathered for them: [`Audit::refunds`] the refunds
//! naming one entry, [`Audit::charges`] what the entries naming one hold charged.
//! [`violations`] runs an audit over rows already in memory.

use std::collections::HashMap;

use crate::amount::Credits;
use crate::book::Book;
use crate::entry::{Entry, EntryKind, Grant, Hold, HoldStatus, Lot};
use crate::ids::HoldId;

/// What an account row says about its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountTotals {
    /// The sum of all entries, compacted ones included.
    pub balance: Credits,
    /// The sequence number of the last entry.
    pub last_seq: i64,
    /// The sum of the entries removed by compaction, and the last of their numbers.
    pub compacted_balance: Credits,
    pub compacted_seq: i64,
    /// How far usage may overdraw (0: the balance is never negative).
    pub overdraft_limit: Credits,
}

/// What a book says about its lots: its balance and the credits owed beyond all grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BookTotals {
    pub balance: Credits,
    pub overdraft: Credits,
}

/// What the entries naming one hold charged ([`Audit::charges`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charges {
    /// One entry, of this amount.
    Once(Credits),
    /// This many entries.
    Times(u64),
}

impl Charges {
    /// What `amounts` (the amounts of every entry naming a hold) charged; `None` for none.
    pub fn of(amounts: &[Credits]) -> Option<Charges> {
        match amounts {
            [] => None,
            [only] => Some(Charges::Once(*only)),
            many => Some(Charges::Times(many.len() as u64)),
        }
    }
}

/// What [`Audit::charges`] judges of a hold: how it settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldSettlement<'a> {
    pub id: &'a HoldId,
    pub status: HoldStatus,
    pub captured: Credits,
}

impl<'a> From<&'a Hold> for HoldSettlement<'a> {
    fn from(h: &'a Hold) -> HoldSettlement<'a> {
        HoldSettlement {
            id: &h.id,
            status: h.status,
            captured: h.captured,
        }
    }
}

/// Every broken invariant of one account, in words, empty when it is consistent: an
/// [`Audit`] fed every entry, hold and grant given. `book` holds every grant and hold of
/// the account (not only the open ones). Never panics: a sum that overflows is a violation.
pub fn violations(account: &AccountTotals, entries: &[Entry], book: &Book) -> Vec<String> {
    let mut audit = Audit::new(
        account,
        BookTotals {
            balance: book.balance(),
            overdraft: book.overdraft(),
        },
    );
    let mut refunded: HashMap<&str, Vec<Credits>> = HashMap::new();
    let mut charged: HashMap<&str, Vec<Credits>> = HashMap::new();
    for e in entries {
        audit.entry(e);
        if let (EntryKind::Refund, Some(of)) = (e.kind, &e.refund_of) {
            refunded.entry(of.as_str()).or_default().push(e.amount);
        }
        if let Some(h) = &e.hold_id {
            charged.entry(h.as_str()).or_default().push(e.amount);
        }
    }
    for e in entries {
        if let Some(refunds) = refunded.remove(e.id.as_str()) {
            audit.refunds(e, refunds);
        }
    }
    for h in book.holds() {
        audit.hold(h);
        let amounts = charged.get(h.id.as_str()).map_or(&[][..], Vec::as_slice);
        if let Some(c) = Charges::of(amounts) {
            audit.charges(h.into(), c);
        }
    }
    for g in book.grants() {
        audit.grant(g);
    }
    audit.finish()
}

/// The checks of one account, fed its rows one at a time (see the module doc):
/// - entries are numbered 1.. without gaps (after any compacted prefix), each carries the
///   running balance, and the last one the account's balance;
/// - each entry's allocations add up to its amount;
/// - the refunds of an entry never exceed what it charged ([`Audit::refunds`]);
/// - each captured hold has at most one entry, of what it captured; no other hold has one
///   ([`Audit::charges`]);
/// - the lots' invariants over every grant and hold ([`Lots`], what `Book::violations`
///   checks);
/// - without an overdraft allowance the balance is never negative;
/// - no amount or balance is past the ledger's maximum.
///
/// Never panics: a sum that overflows is a violation.
#[derive(Debug, Clone)]
pub struct Audit {
    account: AccountTotals,
    book: BookTotals,
    /// The balance the next entry should carry before its own amount (`None` past an
    /// overflow).
    running: Option<Credits>,
    /// Compared as i128 so that no stored value can overflow it.
    expected_seq: i128,
    /// The sum of the entries fed so far (`None` past an overflow).
    sum: Option<Credits>,
    lots: Lots,
    out: Vec<String>,
}

impl Audit {
    pub fn new(account: &AccountTotals, book: BookTotals) -> Audit {
        Audit {
            account: *account,
            book,
            running: Some(account.compacted_balance),
            expected_seq: i128::from(account.compacted_seq) + 1,
            sum: Some(Credits::ZERO),
            lots: Lots::new(),
            out: Vec::new(),
        }
    }

    /// The next entry, in sequence order.
    pub fn entry(&mut self, e: &Entry) {
        let say = &mut |m: String| self.out.push(m);
        if i128::from(e.seq) != self.expected_seq {
            say(format!(
                "entry {} has seq {}, expected {}",
                e.id, e.seq, self.expected_seq
            ));
            self.expected_seq = i128::from(e.seq);
        }
        self.expected_seq += 1;
        if e.amount
            .checked_abs()
            .is_none_or(|a| a > Credits::MAX_AMOUNT)
        {
            say(format!(
                "entry {} moves {}, past the maximum amount {}",
                e.id,
                e.amount,
                Credits::MAX_AMOUNT
            ));
        }
        if !e.balance_after.within_balance_limit() {
            say(format!(
                "entry {} leaves the balance at {}, past the maximum of ±{}",
                e.id,
                e.balance_after,
                Credits::MAX_BALANCE
            ));
        }
        match self.running.and_then(|r| r.checked_add(e.amount)) {
            Some(r) if r == e.balance_after => {}
            Some(r) => say(format!(
                "entry {} says balance {} but the entries add up to {}",
                e.id, e.balance_after, r
            )),
            None => say(format!(
                "entry {}: the running balance overflows an i64 (it says {})",
                e.id, e.balance_after
            )),
        }
        // The next entry is judged against what this one says.
        self.running = Some(e.balance_after);
        self.sum = self.sum.and_then(|s| s.checked_add(e.amount));
        let moved = Credits::checked_sum(e.allocations.iter().map(|a| a.amount));
        match (moved, e.amount.checked_abs()) {
            (Some(m), Some(a)) if m == a => {}
            (Some(m), _) => say(format!(
                "entry {} moves {} but its amount is {}",
                e.id, m, e.amount
            )),
            (None, _) => say(format!(
                "entry {}: its allocations overflow an i64 when added up (its amount is {})",
                e.id, e.amount
            )),
        }
    }

    /// The amounts of every `refund` entry naming `of` (its `refund_of`): together they
    /// give back at most what `of` charged.
    pub fn refunds(&mut self, of: &Entry, refunds: impl IntoIterator<Item = Credits>) {
        let total = refunds
            .into_iter()
            .try_fold(Credits::ZERO, Credits::checked_add);
        let id = &of.id;
        match (total, of.amount.checked_neg()) {
            (Some(total), Some(charge)) if total > charge => self.out.push(format!(
                "refunds of {id} add up to {total}, more than its charge {charge}"
            )),
            (None, _) => self
                .out
                .push(format!("refunds of {id} overflow an i64 when added up")),
            _ => {}
        }
    }

    /// A hold of the account (its own invariants, [`Lots::hold`]).
    pub fn hold(&mut self, h: &Hold) {
        self.lots.hold(h, &mut |m| self.out.push(m));
    }

    /// What the entries naming hold `h` charged, when any does: a captured hold has one
    /// entry of what it captured, any other hold none.
    pub fn charges(&mut self, h: HoldSettlement<'_>, charged: Charges) {
        let message = match (h.status, charged) {
            (HoldStatus::Captured, Charges::Times(n)) if n > 1 => {
                format!("hold {} was charged {n} times", h.id)
            }
            (HoldStatus::Captured, Charges::Once(amount))
                if amount.checked_neg() != Some(h.captured) =>
            {
                format!(
                    "hold {} captured {} but its entry says {amount}",
                    h.id, h.captured
                )
            }
            (HoldStatus::Captured, _) | (_, Charges::Times(0)) => return,
            (status, _) => format!("hold {} is {} but has a usage entry", h.id, status.as_str()),
        };
        self.out.push(message);
    }

    /// A grant of the account (its own invariants, [`Lots::grant`]).
    pub fn grant(&mut self, g: &Grant) {
        self.lots.grant(g, &mut |m| self.out.push(m));
    }

    /// The checks that need every row, then every violation found, in the order found.
    pub fn finish(mut self) -> Vec<String> {
        let account = self.account;
        let max = Credits::MAX_BALANCE;
        let say = &mut |m: String| self.out.push(m);
        if self.expected_seq - 1 != i128::from(account.last_seq) {
            say(format!(
                "last entry seq {} but account says {}",
                self.expected_seq - 1,
                account.last_seq
            ));
        }
        let balance = account.balance;
        if !balance.within_balance_limit() {
            say(format!(
                "account balance {balance} is past the maximum of ±{max}"
            ));
        }
        match self
            .sum
            .and_then(|s| s.checked_add(account.compacted_balance))
        {
            Some(sum) if sum == balance => {}
            Some(sum) => say(format!(
                "account balance {balance} differs from the sum of its entries {sum}"
            )),
            None => say(format!(
                "account balance {balance} cannot be checked: the sum of its entries overflows an i64"
            )),
        }
        self.lots.finish(self.book, say);
        if account.overdraft_limit.is_zero() && balance.is_negative() {
            say(format!(
                "balance {balance} is negative without an overdraft allowance"
            ));
        }
        self.out
    }
}

/// The invariants of a book's lots, fed one grant and one hold at a time, then
/// [`Lots::finish`]ed with the book's totals: every grant stays within `0..=amount`, each
/// hold's allocations add up to it and it captured at most its amount, and
/// `balance = Σ grant.remaining + Σ active-hold grant allocations − overdraft`. What
/// `Book::violations` checks, and part of an [`Audit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lots {
    /// `None` past an overflow.
    remaining: Option<Credits>,
    held: Option<Credits>,
}

impl Default for Lots {
    fn default() -> Lots {
        Lots::new()
    }
}

impl Lots {
    pub fn new() -> Lots {
        Lots {
            remaining: Some(Credits::ZERO),
            held: Some(Credits::ZERO),
        }
    }

    pub fn grant(&mut self, g: &Grant, say: &mut impl FnMut(String)) {
        if g.remaining.is_negative() || g.remaining > g.amount {
            say(format!(
                "grant {} has remaining {} outside 0..={}",
                g.id, g.remaining, g.amount
            ));
        }
        if g.amount > Credits::MAX_AMOUNT {
            say(format!(
                "grant {} of {} is past the maximum amount {}",
                g.id,
                g.amount,
                Credits::MAX_AMOUNT
            ));
        }
        self.remaining = self.remaining.and_then(|r| r.checked_add(g.remaining));
    }

    pub fn hold(&mut self, h: &Hold, say: &mut impl FnMut(String)) {
        match Credits::checked_sum(h.allocations.iter().map(|a| a.amount)) {
            Some(total) if total == h.amount => {}
            Some(total) => say(format!(
                "hold {} allocations {} differ from its amount {}",
                h.id, total, h.amount
            )),
            None => say(format!(
                "hold {} allocations overflow when added up (its amount is {})",
                h.id, h.amount
            )),
        }
        if h.amount > Credits::MAX_AMOUNT {
            say(format!(
                "hold {} of {} is past the maximum amount {}",
                h.id,
                h.amount,
                Credits::MAX_AMOUNT
            ));
        }
        if h.captured > h.amount || h.captured.is_negative() {
            say(format!(
                "hold {} captured {} of {}",
                h.id, h.captured, h.amount
            ));
        }
        if h.status == HoldStatus::Active && h.settled_at.is_some() {
            say(format!("hold {} is active but settled", h.id));
        }
        if h.status == HoldStatus::Active {
            let mut held = h
                .allocations
                .iter()
                .filter(|a| matches!(a.lot, Lot::Grant(_)))
                .map(|a| a.amount);
            self.held = self
                .held
                .and_then(|sum| held.try_fold(sum, Credits::checked_add));
        }
    }

    /// The checks over the sums, against the book's balance and overdraft.
    pub fn finish(self, book: BookTotals, say: &mut impl FnMut(String)) {
        let BookTotals { balance, overdraft } = book;
        if !balance.within_balance_limit() {
            say(format!(
                "balance {balance} is past the maximum of ±{}",
                Credits::MAX_BALANCE
            ));
        }
        let expected = self
            .remaining
            .zip(self.held)
            .and_then(|(r, h)| r.checked_add(h)?.checked_sub(overdraft));
        match (self.remaining, self.held, expected) {
            (Some(remaining), Some(held), Some(expected)) => {
                if expected != balance {
                    say(format!(
                        "balance {balance} differs from lots: remaining {remaining} + held {held} - overdraft {overdraft}"
                    ));
                }
            }
            _ => say(format!(
                "balance {balance} cannot be checked against its lots: the sum of remaining \
                 grants, active holds and overdraft {overdraft} overflows"
            )),
        }
        if overdraft.is_negative() {
            say(format!("overdraft {overdraft} is negative"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::{BookState, Memo, SpendPolicy};
    use crate::entry::{GrantSource, GrantSpec};
    use crate::ids::{AccountId, SequentialIds};
    use crate::time::Timestamp;

    const NOW: Timestamp = Timestamp::from_millis(1_770_000_000_000);

    /// A book with a credit, a captured hold and a debit, and the entries it wrote.
    fn sample() -> (AccountTotals, Vec<Entry>, Book) {
        let mut ids = SequentialIds::default();
        let mut book = Book::empty(AccountId::new("acct_a"));
        book.credit(
            GrantSpec::new(GrantSource::Purchase, Credits::whole(10)),
            Memo::new("c"),
            NOW,
            &mut ids,
        )
        .unwrap();
        let hold = book
            .reserve(
                Credits::whole(3),
                NOW.plus_secs(60),
                SpendPolicy::STRICT,
                Memo::new("h"),
                NOW,
                &mut ids,
            )
            .unwrap()
            .id
            .clone();
        book.capture(&hold, None, None, NOW, &mut ids).unwrap();
        let changes = book.take_changes();
        let totals = AccountTotals {
            balance: changes.balance,
            last_seq: changes.last_seq,
            ..AccountTotals::default()
        };
        let state = BookState {
            grants: changes.grants_inserted.clone(),
            holds: changes.holds_inserted.clone(),
            ..book.state().clone()
        };
        (totals, changes.entries, Book::new(state))
    }

    #[test]
    fn a_consistent_account_has_no_violations() {
        let (totals, entries, book) = sample();
        assert_eq!(violations(&totals, &entries, &book), Vec::<String>::new());
    }

    #[test]
    fn gaps_wrong_totals_and_double_charges_are_named() {
        let (totals, entries, book) = sample();
        let mut gap = entries.clone();
        gap[1].seq = 5;
        assert!(violations(&totals, &gap, &book)
            .iter()
            .any(|v| v.contains("has seq 5, expected 2")));
        let off = AccountTotals {
            balance: totals.balance + Credits::whole(1),
            ..totals
        };
        assert!(violations(&off, &entries, &book)
            .iter()
            .any(|v| v.contains("differs from the sum of its entries")));
        let mut twice = entries.clone();
        twice.push(entries[1].clone());
        assert!(violations(&totals, &twice, &book)
            .iter()
            .any(|v| v.contains("was charged 2 times")));
        let negative = AccountTotals {
            balance: Credits::whole(-1),
            ..totals
        };
        assert!(violations(&negative, &entries, &book)
            .iter()
            .any(|v| v.contains("negative without an overdraft allowance")));
    }

    /// Every violation of an audit fed `entries` one at a time, with no hold or grant.
    fn audit_of(totals: &AccountTotals, entries: &[Entry]) -> Vec<String> {
        let mut audit = Audit::new(totals, BookTotals::default());
        for e in entries {
            audit.entry(e);
        }
        audit.finish()
    }

    #[test]
    fn entries_fed_one_at_a_time_are_judged_against_the_one_before() {
        let (totals, entries, _) = sample();
        assert_eq!(audit_of(&totals, &entries), Vec::<String>::new());
        let mut wrong = entries.clone();
        wrong[0].balance_after += Credits::whole(1);
        let found = audit_of(&totals, &wrong);
        // The first entry is off; the second is judged against what the first says, so
        // one bad row is one violation.
        assert_eq!(
            found,
            vec![
                format!(
                    "entry {} says balance {} but the entries add up to {}",
                    wrong[0].id, wrong[0].balance_after, entries[0].balance_after
                ),
                format!(
                    "entry {} says balance {} but the entries add up to {}",
                    wrong[1].id,
                    wrong[1].balance_after,
                    wrong[1].balance_after + Credits::whole(1)
                )
            ],
        );
        let short = AccountTotals {
            last_seq: totals.last_seq + 1,
            ..totals
        };
        assert!(audit_of(&short, &entries)
            .iter()
            .any(|v| v == &format!("last entry seq 2 but account says {}", short.last_seq)));
    }

    #[test]
    fn the_refunds_of_an_entry_are_judged_together() {
        let (totals, entries, _) = sample();
        let usage = &entries[1];
        assert_eq!(usage.amount, Credits::whole(-3));
        let mut audit = Audit::new(&totals, BookTotals::default());
        audit.refunds(usage, [Credits::whole(1), Credits::whole(2)]);
        assert!(audit
            .clone()
            .finish()
            .iter()
            .all(|v| !v.contains("refunds")));
        audit.refunds(usage, [Credits::whole(2), Credits::whole(2)]);
        audit.refunds(usage, [Credits::from_millis(i64::MAX), Credits::whole(1)]);
        let found = audit.finish();
        let id = &usage.id;
        assert_eq!(
            found
                .iter()
                .filter(|v| v.starts_with("refunds"))
                .collect::<Vec<_>>(),
            [
                &format!("refunds of {id} add up to 4, more than its charge 3"),
                &format!("refunds of {id} overflow an i64 when added up"),
            ]
        );
    }

    #[test]
    fn charges_name_double_wrong_and_unexpected_usage() {
        let (totals, _, book) = sample();
        let captured = book.holds()[0].clone();
        assert_eq!(captured.status, HoldStatus::Captured);
        let released = Hold {
            status: HoldStatus::Released,
            captured: Credits::ZERO,
            ..captured.clone()
        };
        let judged = |hold: &Hold, charged: Charges| {
            let mut audit = Audit::new(&totals, BookTotals::default());
            audit.charges(hold.into(), charged);
            audit
                .finish()
                .into_iter()
                .filter(|v| v.starts_with("hold"))
                .collect::<Vec<_>>()
        };
        let id = &captured.id;
        assert!(judged(&captured, Charges::Once(Credits::whole(-3))).is_empty());
        assert_eq!(
            judged(&captured, Charges::Once(Credits::whole(-2))),
            vec![format!(
                "hold {id} captured {} but its entry says {}",
                captured.captured,
                Credits::whole(-2)
            )]
        );
        assert_eq!(
            judged(&captured, Charges::Times(2)),
            vec![format!("hold {id} was charged 2 times")]
        );
        assert_eq!(
            judged(&released, Charges::Once(Credits::whole(-3))),
            vec![format!("hold {id} is released but has a usage entry")]
        );
        assert_eq!(Charges::of(&[]), None);
        assert_eq!(
            Charges::of(&[Credits::whole(1), Credits::whole(1)]),
            Some(Charges::Times(2))
        );
    }

    #[test]
    fn lots_fed_one_at_a_time_find_what_the_book_finds() {
        let (_, _, book) = sample();
        let mut grant = book.grants()[0].clone();
        grant.remaining = grant.amount + Credits::whole(1);
        let mut lots = Lots::new();
        let mut found = Vec::new();
        lots.grant(&grant, &mut |m| found.push(m));
        for h in book.holds() {
            lots.hold(h, &mut |m| found.push(m));
        }
        lots.finish(
            BookTotals {
                balance: book.balance(),
                overdraft: book.overdraft(),
            },
            &mut |m| found.push(m),
        );
        let tampered = Book::new(BookState {
            grants: vec![grant.clone()],
            ..book.state().clone()
        });
        assert_eq!(found, tampered.violations());
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("outside 0..="));
        assert!(found[1].contains("differs from lots"));
    }
}
