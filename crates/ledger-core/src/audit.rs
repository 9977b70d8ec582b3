//! The invariants `verify` checks over one account's stored rows: its entries, holds and
//! grants as loaded, against the totals on its account row. Pure: the store loads, this
//! judges, and the property tests run the very same checks over what operations produced.

use std::collections::HashMap;

use crate::amount::Credits;
use crate::book::Book;
use crate::entry::{Entry, EntryKind, Hold, HoldStatus};

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

/// Every broken invariant of one account, in words, empty when it is consistent:
/// - entries are numbered 1.. without gaps (after any compacted prefix), each carries the
///   running balance, and the last one the account's balance;
/// - each entry's allocations add up to its amount;
/// - the refunds of a `usage` entry never exceed it;
/// - a hold's `usage` entries match what it captured ([`check_holds`]);
/// - the book's own invariants over every grant and hold ([`Book::violations`]);
/// - without an overdraft allowance the balance is never negative.
///
/// `book` holds every grant and hold of the account (not only the open ones). Never
/// panics: a sum that overflows is a violation.
pub fn violations(account: &AccountTotals, entries: &[Entry], book: &Book) -> Vec<String> {
    let mut out = Vec::new();
    let mut say = |message: String| out.push(message);
    check_entries(account, entries, &mut say);
    check_holds(entries, book.holds(), &mut say);
    for v in book.violations() {
        say(v);
    }
    if account.overdraft_limit.is_zero() && account.balance.is_negative() {
        say(format!(
            "balance {} is negative without an overdraft allowance",
            account.balance
        ));
    }
    out
}

/// The entries' own invariants against the account's totals (part of [`violations`]).
pub fn check_entries(account: &AccountTotals, entries: &[Entry], say: &mut impl FnMut(String)) {
    let max = Credits::MAX_BALANCE;
    let compacted = account.compacted_balance;
    let mut running = Some(compacted);
    // Sequence numbers are compared as i128 so that no stored value can overflow them.
    let mut expected_seq = i128::from(account.compacted_seq) + 1;
    for e in entries {
        if i128::from(e.seq) != expected_seq {
            say(format!(
                "entry {} has seq {}, expected {}",
                e.id, e.seq, expected_seq
            ));
            expected_seq = i128::from(e.seq);
        }
        expected_seq += 1;
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
                "entry {} leaves the balance at {}, past the maximum of ±{max}",
                e.id, e.balance_after
            ));
        }
        running = running.and_then(|r| r.checked_add(e.amount));
        match running {
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
        if running != Some(e.balance_after) {
            running = Some(e.balance_after);
        }
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
    if expected_seq - 1 != i128::from(account.last_seq) {
        say(format!(
            "last entry seq {} but account says {}",
            expected_seq - 1,
            account.last_seq
        ));
    }
    let balance = account.balance;
    if !balance.within_balance_limit() {
        say(format!(
            "account balance {balance} is past the maximum of ±{max}"
        ));
    }
    match Credits::checked_sum(entries.iter().map(|e| e.amount))
        .and_then(|s| s.checked_add(compacted))
    {
        Some(sum) if sum == balance => {}
        Some(sum) => say(format!(
            "account balance {balance} differs from the sum of its entries {sum}"
        )),
        None => say(format!(
            "account balance {balance} cannot be checked: the sum of its entries overflows an i64"
        )),
    }
    let mut refunded: HashMap<&str, Option<Credits>> = HashMap::new();
    for e in entries.iter().filter(|e| e.kind == EntryKind::Refund) {
        if let Some(of) = &e.refund_of {
            let total = refunded.entry(of.as_str()).or_insert(Some(Credits::ZERO));
            *total = total.and_then(|t| t.checked_add(e.amount));
        }
    }
    for (of, total) in refunded {
        let Some(original) = entries.iter().find(|e| e.id.as_str() == of) else {
            continue;
        };
        let charge = original.amount.checked_neg();
        match (total, charge) {
            (Some(total), Some(charge)) if total > charge => say(format!(
                "refunds of {of} add up to {total}, more than its charge {charge}"
            )),
            (None, _) => say(format!("refunds of {of} overflow an i64 when added up")),
            _ => {}
        }
    }
}

/// Each captured hold has exactly one `usage` entry of what it captured; no other hold
/// has one (part of [`violations`]).
pub fn check_holds(entries: &[Entry], holds: &[Hold], say: &mut impl FnMut(String)) {
    let mut usage_by_hold: HashMap<&str, Vec<&Entry>> = HashMap::new();
    for e in entries {
        if let Some(h) = &e.hold_id {
            usage_by_hold.entry(h.as_str()).or_default().push(e);
        }
    }
    for h in holds {
        let charged = usage_by_hold
            .get(h.id.as_str())
            .map_or(&[][..], |v| v.as_slice());
        match h.status {
            HoldStatus::Captured => {
                if charged.len() > 1 {
                    say(format!("hold {} was charged {} times", h.id, charged.len()));
                }
                if let [only] = charged {
                    if only.amount.checked_neg() != Some(h.captured) {
                        say(format!(
                            "hold {} captured {} but its entry says {}",
                            h.id, h.captured, only.amount
                        ));
                    }
                }
            }
            _ if !charged.is_empty() => say(format!(
                "hold {} is {} but has a usage entry",
                h.id,
                h.status.as_str()
            )),
            _ => {}
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
}
