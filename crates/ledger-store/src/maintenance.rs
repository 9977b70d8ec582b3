//! Whole-database upkeep: `verify` checks every invariant; `compact` drops history older
//! than the retention window while keeping every balance exact.

use diesel::prelude::*;
use ledger_core::audit::{self, AccountTotals};
use ledger_core::{AccountId, Book, BookState, Credits, Grant, Hold, Retention, Timestamp};
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

/// The answer of [`Maintenance::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub ok: bool,
    pub accounts: u64,
    pub entries: u64,
    pub violations: Vec<Violation>,
}

/// The answer of [`Maintenance::compact`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactReport {
    pub accounts: u64,
    pub entries_removed: u64,
    pub idempotency_keys_removed: u64,
}

impl Maintenance<'_> {
    /// Checks every invariant of every account, reading one consistent snapshot:
    /// - entries are numbered 1.. without gaps (after any compacted prefix), each carries
    ///   the running balance, and the last one the account's balance;
    /// - each entry's allocations add up to its amount;
    /// - every grant stays within `0..=amount`; balance = remaining + held − overdraft;
    /// - a hold's allocations add up to it, it captured at most its amount, and exactly
    ///   captured holds have one `usage` entry;
    /// - the refunds of a `usage` entry never exceed it;
    /// - without an overdraft allowance the balance is never negative;
    /// - plans (ADR 9): one allowance per account and period, extra within the wall, and
    ///   billed blocks equal to the extra rounded up (`crate::plans::period_violations`);
    /// - no amount or balance is past the ledger's maximum (`Credits::MAX_AMOUNT`,
    ///   `Credits::MAX_BALANCE`).
    ///
    /// It answers on any database: every sum is checked (an overflow is a violation, not a
    /// panic) and a row that does not decode is a violation naming it, not an error.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.store.read(|conn| {
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
                let totals = AccountTotals {
                    balance: Credits::from_millis(account.balance),
                    last_seq: account.last_seq,
                    compacted_balance: Credits::from_millis(account.compacted_balance),
                    compacted_seq: account.compacted_seq,
                    // A plan in force allows its wall instead (ADR 9).
                    overdraft_limit: Credits::from_millis(account.overdraft_limit)
                        .max(crate::plans::wall_in_force(conn, &account.id)?),
                };
                let book = Book::new(BookState {
                    account_id: id,
                    balance: totals.balance,
                    overdraft: Credits::from_millis(account.overdraft),
                    last_seq: account.last_seq,
                    plan: account.plan_name.clone(),
                    grants,
                    holds,
                });
                for v in audit::violations(&totals, &entries, &book) {
                    say(v);
                }
                let overdraft = Credits::from_millis(account.overdraft);
                for v in crate::plans::period_violations(conn, &account.id, overdraft)? {
                    say(v);
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
        self.store.write(|conn| {
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

/// Whole-database upkeep (verify, compact): `store.maintenance()`.
#[derive(Debug, Clone, Copy)]
pub struct Maintenance<'a> {
    store: &'a Store,
}

impl Store {
    /// Whole-database upkeep (verify, compact)
    pub fn maintenance(&self) -> Maintenance<'_> {
        Maintenance { store: self }
    }
}
