//! Whole-database upkeep: `verify` checks every invariant; `compact` drops history older
//! than the retention window while keeping every balance exact.

use std::collections::HashMap;

use diesel::prelude::*;
use ledger_core::{
    AccountId, Book, BookState, Credits, Entry, EntryKind, Grant, Hold, HoldStatus, Retention,
    Timestamp,
};
use serde::Serialize;

use crate::error::StoreError;
use crate::ledger::TxError;
use crate::rows::{AccountRow, EntryRow, GrantRow, HoldRow};
use crate::schema::{accounts, entries, grants, holds, idempotency_keys};
use crate::Store;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    pub account_id: String,
    pub message: String,
}

/// The answer of [`Store::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub ok: bool,
    pub accounts: u64,
    pub entries: u64,
    pub violations: Vec<Violation>,
}

/// The answer of [`Store::compact`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactReport {
    pub accounts: u64,
    pub entries_removed: u64,
    pub idempotency_keys_removed: u64,
}

impl Store {
    /// Checks every invariant of every account, reading one consistent snapshot:
    /// - entries are numbered 1.. without gaps (after any compacted prefix), each carries
    ///   the running balance, and the last one the account's balance;
    /// - each entry's allocations add up to its amount;
    /// - every grant stays within `0..=amount`; balance = remaining + held − overdraft;
    /// - a hold's allocations add up to it, it captured at most its amount, and exactly
    ///   captured holds have one `usage` entry;
    /// - the refunds of a `usage` entry never exceed it;
    /// - without an overdraft allowance the balance is never negative;
    /// - no amount or balance is past the ledger's maximum (`Credits::MAX_AMOUNT`,
    ///   `Credits::MAX_BALANCE`).
    ///
    /// It answers on any database: every sum is checked (an overflow is a violation, not a
    /// panic) and a row that does not decode is a violation naming it, not an error.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.read(|conn| {
            let accounts: Vec<AccountRow> = accounts::table
                .order(accounts::id)
                .select(AccountRow::as_select())
                .load(conn)?;
            let mut report = VerifyReport {
                ok: true,
                accounts: accounts.len() as u64,
                entries: 0,
                violations: Vec::new(),
            };
            for account in accounts {
                let id = AccountId::new(account.id.clone());
                let entry_rows: Vec<EntryRow> = entries::table
                    .filter(entries::account_id.eq(&account.id))
                    .order(entries::seq.asc())
                    .select(EntryRow::as_select())
                    .load(conn)?;
                let grant_rows: Vec<GrantRow> = grants::table
                    .filter(grants::account_id.eq(&account.id))
                    .select(GrantRow::as_select())
                    .load(conn)?;
                let hold_rows: Vec<HoldRow> = holds::table
                    .filter(holds::account_id.eq(&account.id))
                    .select(HoldRow::as_select())
                    .load(conn)?;
                report.entries += entry_rows.len() as u64;
                let mut say = |message: String| {
                    report.violations.push(Violation {
                        account_id: account.id.clone(),
                        message,
                    })
                };
                let entries = decode_all("entry", entry_rows, |r| r.id.clone(), &mut say);
                let grants: Vec<Grant> =
                    decode_all("grant", grant_rows, |r| r.id.clone(), &mut say);
                let holds: Vec<Hold> = decode_all("hold", hold_rows, |r| r.id.clone(), &mut say);
                check_entries(&account, &entries, &mut say);
                check_holds(&entries, &holds, &mut say);
                let book = Book::new(BookState {
                    account_id: id,
                    balance: Credits::from_millis(account.balance),
                    overdraft: Credits::from_millis(account.overdraft),
                    last_seq: account.last_seq,
                    plan: account.plan_name.clone(),
                    grants,
                    holds,
                });
                for v in book.violations() {
                    say(v);
                }
                if account.overdraft_limit == 0 && account.balance < 0 {
                    say(format!(
                        "balance {} is negative without an overdraft allowance",
                        Credits::from_millis(account.balance)
                    ));
                }
            }
            report.ok = report.violations.is_empty();
            Ok(report)
        })
    }

    /// Removes entries created before the retention window (and idempotency keys as old),
    /// folding their sum into each account's `compacted_balance` so balances stay exact
    /// and `verify` stays clean. Returns what was removed.
    pub fn compact(
        &self,
        retention: Retention,
        now: Timestamp,
    ) -> Result<CompactReport, StoreError> {
        let cutoff = retention.cutoff(now).millis();
        self.write(|conn| {
            let mut report = CompactReport::default();
            let candidates: Vec<String> = entries::table
                .filter(entries::created_at.lt(cutoff))
                .select(entries::account_id)
                .distinct()
                .load(conn)?;
            for account_id in candidates {
                // Compact a prefix by sequence number, so the remaining chain is whole.
                let old: Vec<(i64, i64, i64)> = entries::table
                    .filter(entries::account_id.eq(&account_id))
                    .filter(entries::created_at.lt(cutoff))
                    .select((entries::seq, entries::amount, entries::created_at))
                    .order(entries::seq.asc())
                    .load(conn)?;
                let Some(last) = old.iter().map(|e| e.0).max() else {
                    continue;
                };
                let prefix: Vec<(i64, i64)> = entries::table
                    .filter(entries::account_id.eq(&account_id))
                    .filter(entries::seq.le(last))
                    .select((entries::seq, entries::amount))
                    .load(conn)?;
                // Fold the prefix into the compacted balance with checked sums, under the
                // account's lock; an account whose numbers overflow (only a corrupt one) is
                // left whole for `verify` to report.
                crate::ledger::lock_account(conn, &AccountId::new(account_id.clone()))?;
                let compacted: i64 = accounts::table
                    .filter(accounts::id.eq(&account_id))
                    .select(accounts::compacted_balance)
                    .first(conn)?;
                let Some(folded) = prefix
                    .iter()
                    .try_fold(compacted, |sum, e| sum.checked_add(e.1))
                else {
                    tracing::warn!(account_id = %account_id, "not compacting: the sum of its entries overflows; run verify");
                    continue;
                };
                let removed = diesel::delete(
                    entries::table
                        .filter(entries::account_id.eq(&account_id))
                        .filter(entries::seq.le(last)),
                )
                .execute(conn)?;
                diesel::update(accounts::table.filter(accounts::id.eq(&account_id)))
                    .set((
                        accounts::compacted_balance.eq(folded),
                        accounts::compacted_seq.eq(last),
                    ))
                    .execute(conn)?;
                report.accounts += 1;
                report.entries_removed += removed as u64;
            }
            report.idempotency_keys_removed = diesel::delete(
                idempotency_keys::table.filter(idempotency_keys::created_at.lt(cutoff)),
            )
            .execute(conn)? as u64;
            Ok::<_, TxError>(report)
        })
    }
}

/// Decodes every row, reporting (and skipping) the ones that do not decode.
fn decode_all<R, T>(
    what: &str,
    rows: Vec<R>,
    id: impl Fn(&R) -> String,
    say: &mut impl FnMut(String),
) -> Vec<T>
where
    T: TryFrom<R, Error = StoreError>,
{
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let name = id(&row);
        match T::try_from(row) {
            Ok(v) => out.push(v),
            Err(e) => say(format!("{what} {name} cannot be read: {e}")),
        }
    }
    out
}

fn check_entries(account: &AccountRow, entries: &[Entry], say: &mut impl FnMut(String)) {
    let max = Credits::MAX_BALANCE;
    let compacted = Credits::from_millis(account.compacted_balance);
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
    let balance = Credits::from_millis(account.balance);
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

fn check_holds(entries: &[Entry], holds: &[Hold], say: &mut impl FnMut(String)) {
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
