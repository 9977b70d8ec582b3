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
    /// - without an overdraft allowance the balance is never negative.
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
                let entries: Vec<Entry> = entries::table
                    .filter(entries::account_id.eq(&account.id))
                    .order(entries::seq.asc())
                    .select(EntryRow::as_select())
                    .load(conn)?
                    .into_iter()
                    .map(Entry::try_from)
                    .collect::<Result<_, _>>()?;
                let grants: Vec<Grant> = grants::table
                    .filter(grants::account_id.eq(&account.id))
                    .select(GrantRow::as_select())
                    .load(conn)?
                    .into_iter()
                    .map(Grant::try_from)
                    .collect::<Result<_, _>>()?;
                let holds: Vec<Hold> = holds::table
                    .filter(holds::account_id.eq(&account.id))
                    .select(HoldRow::as_select())
                    .load(conn)?
                    .into_iter()
                    .map(Hold::try_from)
                    .collect::<Result<_, _>>()?;
                report.entries += entries.len() as u64;
                let mut say = |message: String| {
                    report.violations.push(Violation {
                        account_id: account.id.clone(),
                        message,
                    })
                };
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
                let sum: i64 = prefix.iter().map(|e| e.1).sum();
                let removed = diesel::delete(
                    entries::table
                        .filter(entries::account_id.eq(&account_id))
                        .filter(entries::seq.le(last)),
                )
                .execute(conn)?;
                diesel::update(accounts::table.filter(accounts::id.eq(&account_id)))
                    .set((
                        accounts::compacted_balance.eq(accounts::compacted_balance + sum),
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

fn check_entries(account: &AccountRow, entries: &[Entry], say: &mut impl FnMut(String)) {
    let mut running = Credits::from_millis(account.compacted_balance);
    let mut expected_seq = account.compacted_seq + 1;
    for e in entries {
        if e.seq != expected_seq {
            say(format!(
                "entry {} has seq {}, expected {}",
                e.id, e.seq, expected_seq
            ));
            expected_seq = e.seq;
        }
        expected_seq += 1;
        running += e.amount;
        if e.balance_after != running {
            say(format!(
                "entry {} says balance {} but the entries add up to {}",
                e.id, e.balance_after, running
            ));
            running = e.balance_after;
        }
        let moved: Credits = e.allocations.iter().map(|a| a.amount).sum();
        if moved != e.amount.abs() {
            say(format!(
                "entry {} moves {} but its amount is {}",
                e.id, moved, e.amount
            ));
        }
    }
    if expected_seq - 1 != account.last_seq {
        say(format!(
            "last entry seq {} but account says {}",
            expected_seq - 1,
            account.last_seq
        ));
    }
    let sum: Credits = entries.iter().map(|e| e.amount).sum::<Credits>()
        + Credits::from_millis(account.compacted_balance);
    if sum != Credits::from_millis(account.balance) {
        say(format!(
            "account balance {} differs from the sum of its entries {}",
            Credits::from_millis(account.balance),
            sum
        ));
    }
    let mut refunded: HashMap<&str, Credits> = HashMap::new();
    for e in entries.iter().filter(|e| e.kind == EntryKind::Refund) {
        if let Some(of) = &e.refund_of {
            *refunded.entry(of.as_str()).or_default() += e.amount;
        }
    }
    for (of, total) in refunded {
        match entries.iter().find(|e| e.id.as_str() == of) {
            Some(original) if total > -original.amount => say(format!(
                "refunds of {of} add up to {total}, more than its charge {}",
                -original.amount
            )),
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
                    if -only.amount != h.captured {
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
