//! Whole-database upkeep: `verify` checks every invariant; `compact` drops history older
//! than the retention window while keeping every balance exact.

use std::collections::HashMap;

use diesel::dsl::count_star;
use diesel::prelude::*;
use ledger_core::audit::{AccountTotals, Audit, BookTotals, Charges, HoldSettlement};
use ledger_core::{AccountId, Credits, Entry, EntryKind, HoldId, HoldStatus, Retention, Timestamp};
use serde::Serialize;

use crate::db::DbConnection;
use crate::error::StoreError;
use crate::ledger::TxError;
use crate::rows::{AccountRow, EntryRow, GrantRow, HoldRow};
use crate::schema::{
    accounts, entries, grants, holds, idempotency_keys, notification_deliveries, sessions,
    webhook_deliveries,
};
use crate::Store;

/// A notification delivery that ended (`delivered` or `failed`, never `pending`), made
/// and last tried before `$before` (milliseconds): a filter on `notification_deliveries`.
macro_rules! ended_notification {
    ($before:expr) => {{
        use notification_deliveries as d;
        d::status
            .eq_any([
                crate::notifications::DeliveryStatus::Delivered.as_str(),
                crate::notifications::DeliveryStatus::Failed.as_str(),
            ])
            .and(d::created_at.lt($before))
            .and(
                d::last_attempt_at
                    .is_null()
                    .or(d::last_attempt_at.lt($before)),
            )
    }};
}

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
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
    ///
    /// It streams: accounts and each account's rows are read in pages of [`PAGE`] rows
    /// and fed to `ledger_core::audit::Audit`, so its memory does not grow with an
    /// account's history (issue 11); the report grows with the violations only.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.store.read(|conn| {
            let mut report = VerifyReport {
                ok: true,
                accounts: 0,
                entries: 0,
                violations: Vec::new(),
            };
            in_pages(
                conn,
                |conn, after: Option<&String>| {
                    let mut page = accounts::table
                        .order(accounts::id)
                        .limit(PAGE)
                        .select(AccountRow::as_select())
                        .into_boxed();
                    if let Some(after) = after {
                        page = page.filter(accounts::id.gt(after.clone()));
                    }
                    page.load(conn)
                },
                |a| a.id.clone(),
                |conn, page| verify_accounts(conn, page, &mut report),
            )?;
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

/// Rows `verify` reads per query: what it holds of one table at a time.
const PAGE: i64 = 1_000;

/// Reads rows in pages of at most [`PAGE`] by a key (keyset, not offset): `page(conn,
/// after)` loads the next rows in key order past `after` (from the first when `None`),
/// `each` takes them, until a page comes back short.
fn in_pages<K, R>(
    conn: &mut DbConnection,
    mut page: impl FnMut(&mut DbConnection, Option<&K>) -> QueryResult<Vec<R>>,
    key: impl Fn(&R) -> K,
    mut each: impl FnMut(&mut DbConnection, Vec<R>) -> Result<(), TxError>,
) -> Result<(), TxError> {
    let mut after = None;
    loop {
        let rows = page(conn, after.as_ref())?;
        let full = rows.len() as i64 == PAGE;
        after = rows.last().map(&key);
        each(conn, rows)?;
        if !full {
            return Ok(());
        }
    }
}

/// One account under audit: its [`Audit`], the rows of it that do not decode (named
/// first), and its overdraft (for the plan checks).
struct Audited {
    audit: Audit,
    unread: Vec<String>,
    overdraft: Credits,
}

/// Verifies a page of accounts. Each account's entries are read in sequence order (they
/// are indexed by account); holds and grants are indexed by id only, so those of the
/// whole page are read in one pass over each table, by id, and fed to their account's
/// audit. What is held at once: one page of rows and the page's audits, never an
/// account's history.
fn verify_accounts(
    conn: &mut DbConnection,
    page: Vec<AccountRow>,
    report: &mut VerifyReport,
) -> Result<(), TxError> {
    report.accounts += page.len() as u64;
    let mut audits: HashMap<String, Audited> = HashMap::with_capacity(page.len());
    for account in &page {
        let audited = audit_entries(conn, account, &mut report.entries)?;
        audits.insert(account.id.clone(), audited);
    }
    let ids: Vec<&str> = page.iter().map(|a| a.id.as_str()).collect();
    feed_by_id!(
        conn,
        &mut audits,
        &ids,
        holds as HoldRow,
        "hold",
        Audit::hold
    );
    feed_by_id!(
        conn,
        &mut audits,
        &ids,
        grants as GrantRow,
        "grant",
        Audit::grant
    );
    for account in &page {
        let Some(Audited {
            audit,
            mut unread,
            overdraft,
        }) = audits.remove(&account.id)
        else {
            continue;
        };
        unread.extend(audit.finish());
        unread.extend(crate::plans::period_violations(
            conn,
            &account.id,
            overdraft,
        )?);
        report
            .violations
            .extend(unread.into_iter().map(|message| Violation {
                account_id: account.id.clone(),
                message,
            }));
    }
    Ok(())
}

/// Feeds the rows of `$table` (as `$row`) that belong to the accounts `$accounts` to
/// their audits (`$feed`), read in pages by id ([`feed_rows`]).
macro_rules! feed_by_id {
    ($conn:expr, $audits:expr, $accounts:expr, $table:ident as $row:ident, $what:literal, $feed:expr) => {
        feed_rows(
            $conn,
            $what,
            $audits,
            |conn: &mut DbConnection, after: Option<&String>| {
                let mut rows = $table::table
                    .filter($table::account_id.eq_any($accounts))
                    .order($table::id)
                    .limit(PAGE)
                    .select($row::as_select())
                    .into_boxed();
                if let Some(after) = after {
                    rows = rows.filter($table::id.gt(after.clone()));
                }
                rows.load(conn)
            },
            |r: &$row| (r.account_id.clone(), r.id.clone()),
            $feed,
        )?
    };
}
use feed_by_id;

/// Reads rows with `page` (by id, [`in_pages`]) and feeds each to the audit of its
/// account (`owner` says which, and the row's id), or names it there when it does not
/// decode.
fn feed_rows<R, T>(
    conn: &mut DbConnection,
    what: &str,
    audits: &mut HashMap<String, Audited>,
    page: impl FnMut(&mut DbConnection, Option<&String>) -> QueryResult<Vec<R>>,
    owner: impl Fn(&R) -> (String, String),
    audit: impl Fn(&mut Audit, &T),
) -> Result<(), TxError>
where
    T: TryFrom<R, Error = StoreError>,
{
    in_pages(
        conn,
        page,
        |r| owner(r).1,
        |_, rows| {
            for row in rows {
                let (account, name) = owner(&row);
                let Some(a) = audits.get_mut(&account) else {
                    continue;
                };
                match T::try_from(row) {
                    Ok(v) => audit(&mut a.audit, &v),
                    Err(e) => a.unread.push(format!("{what} {name} cannot be read: {e}")),
                }
            }
            Ok(())
        },
    )
}

/// Starts the audit of one account and feeds it the account's entries, read in pages in
/// sequence order, with what each page's entries relate to: the refunds naming them
/// (through `entries_refund_of`) and the holds they name. The one cross-reference whose
/// every case needs the whole history, holds named by more than one entry, is counted by
/// the database (`GROUP BY`); there are none unless the account is corrupt. Adds the
/// number of entries read to `count`.
fn audit_entries(
    conn: &mut DbConnection,
    account: &AccountRow,
    count: &mut u64,
) -> Result<Audited, TxError> {
    let id = account.id.as_str();
    let totals = AccountTotals {
        balance: Credits::from_millis(account.balance),
        last_seq: account.last_seq,
        compacted_balance: Credits::from_millis(account.compacted_balance),
        compacted_seq: account.compacted_seq,
        // A plan in force allows its wall instead (ADR 9).
        overdraft_limit: Credits::from_millis(account.overdraft_limit)
            .max(crate::plans::wall_in_force(conn, id)?),
    };
    let overdraft = Credits::from_millis(account.overdraft);
    let mut audit = Audit::new(
        &totals,
        BookTotals {
            balance: totals.balance,
            overdraft,
        },
    );
    let mut unread = Vec::new();
    let say = &mut |message| unread.push(message);
    let many: HashMap<String, u64> = entries::table
        .filter(entries::account_id.eq(id))
        .filter(entries::hold_id.is_not_null())
        .group_by(entries::hold_id)
        .having(count_star().gt(1))
        .select((entries::hold_id, count_star()))
        .load::<(Option<String>, i64)>(conn)?
        .into_iter()
        .filter_map(|(hold, n)| Some((hold?, n.unsigned_abs())))
        .collect();
    in_pages(
        conn,
        |conn, after: Option<&i64>| {
            let mut rows = entries::table
                .filter(entries::account_id.eq(id))
                .order(entries::seq.asc())
                .limit(PAGE)
                .select(EntryRow::as_select())
                .into_boxed();
            if let Some(after) = after {
                rows = rows.filter(entries::seq.gt(*after));
            }
            rows.load(conn)
        },
        |e| e.seq,
        |conn, rows| {
            *count += rows.len() as u64;
            let page: Vec<Entry> = decode_all("entry", rows, |r| r.id.clone(), say);
            for e in &page {
                audit.entry(e);
            }
            let mut refunds = refunds_of(conn, id, &page)?;
            for e in &page {
                if let Some(amounts) = refunds.remove(e.id.as_str()) {
                    audit.refunds(e, amounts);
                }
            }
            // A hold named by one entry only (not in `many`) was charged by that entry.
            let once: Vec<&Entry> = page
                .iter()
                .filter(|e| {
                    e.hold_id
                        .as_ref()
                        .is_some_and(|h| !many.contains_key(h.as_str()))
                })
                .collect();
            let named = once.iter().filter_map(|e| e.hold_id.as_ref());
            let holds = holds_named(conn, id, named.map(|h| h.as_str().to_owned()))?;
            for e in once {
                if let Some(h) = e.hold_id.as_ref().and_then(|h| holds.get(h.as_str())) {
                    audit.charges(h.settlement(), Charges::Once(e.amount));
                }
            }
            Ok(())
        },
    )?;
    for (hold_id, h) in holds_named(conn, id, many.keys().cloned())? {
        audit.charges(h.settlement(), Charges::Times(many[&hold_id]));
    }
    Ok(Audited {
        audit,
        unread,
        overdraft,
    })
}

/// The amounts of the `refund` entries of account `id` naming each of `page`'s entries.
fn refunds_of(
    conn: &mut DbConnection,
    id: &str,
    page: &[Entry],
) -> Result<HashMap<String, Vec<Credits>>, TxError> {
    if page.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<&str> = page.iter().map(|e| e.id.as_str()).collect();
    // By `refund_of` alone, so that the index on it is the one used; the account is
    // checked here.
    let rows: Vec<(String, Option<String>, i64)> = entries::table
        .filter(entries::refund_of.is_not_null())
        .filter(entries::refund_of.eq_any(ids))
        .filter(entries::kind.eq(EntryKind::Refund.as_str()))
        .select((entries::account_id, entries::refund_of, entries::amount))
        .load(conn)?;
    let mut refunds: HashMap<String, Vec<Credits>> = HashMap::new();
    for (account, of, amount) in rows {
        if let (true, Some(of)) = (account == id, of) {
            refunds
                .entry(of)
                .or_default()
                .push(Credits::from_millis(amount));
        }
    }
    Ok(refunds)
}

/// How a hold settled: its id, status and captured amount (all [`Audit::charges`] needs,
/// read without decoding its allocations).
struct Settled(HoldId, HoldStatus, Credits);

impl Settled {
    fn settlement(&self) -> HoldSettlement<'_> {
        HoldSettlement {
            id: &self.0,
            status: self.1,
            captured: self.2,
        }
    }
}

/// How the holds of account `id` among `named` settled, by id; one whose status does not
/// decode is left out (the walk over the holds names it).
fn holds_named(
    conn: &mut DbConnection,
    id: &str,
    named: impl Iterator<Item = String>,
) -> Result<HashMap<String, Settled>, TxError> {
    let named: Vec<String> = named.collect();
    if named.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, String, i64)> = holds::table
        .filter(holds::account_id.eq(id))
        .filter(holds::id.eq_any(&named))
        .select((holds::id, holds::status, holds::captured))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(hold, status, captured)| {
            let status = status.parse().ok()?;
            let settled = Settled(
                HoldId::new(hold.clone()),
                status,
                Credits::from_millis(captured),
            );
            Some((hold, settled))
        })
        .collect())
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

/// What [`Maintenance::prune`] removed (or, from [`Maintenance::prunable`], would remove).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    /// Webhook deliveries the receiver processed before the cutoff.
    pub webhook_deliveries: u64,
    /// Sessions that expired, or were revoked, before the cutoff.
    pub sessions: u64,
    /// Notifications to customers' endpoints that ended (delivered, or failed for good)
    /// before the cutoff; pending ones are never removed.
    pub notification_deliveries: u64,
}

impl Maintenance<'_> {
    /// Counts what [`Maintenance::prune`] would remove with the same `before`; changes
    /// nothing.
    pub fn prunable(&self, before: Timestamp) -> Result<PruneReport, StoreError> {
        let before = before.millis();
        self.store.read(|conn| {
            let webhook_deliveries: i64 = webhook_deliveries::table
                .filter(webhook_deliveries::processed_at.lt(before))
                .select(count_star())
                .first(conn)?;
            let sessions: i64 = sessions::table
                .filter(dead_session(before))
                .select(count_star())
                .first(conn)?;
            let notification_deliveries: i64 = notification_deliveries::table
                .filter(ended_notification!(before))
                .select(count_star())
                .first(conn)?;
            Ok(PruneReport {
                webhook_deliveries: webhook_deliveries as u64,
                sessions: sessions as u64,
                notification_deliveries: notification_deliveries as u64,
            })
        })
    }

    /// Removes the receiver's inbox rows that are fully processed (`processed_at` set)
    /// before `before`, the sessions that expired or were revoked before it, and the
    /// notification deliveries that ended (`delivered` or `failed`) before it: made and
    /// last tried before `before`. A `pending` notification is never removed. Nothing
    /// the ledger needs is touched: a paid order is credited once by its order id
    /// (`payment_orders`, ADR 201), not by the delivery row, and an unprocessed delivery
    /// is never removed.
    pub fn prune(&self, before: Timestamp) -> Result<PruneReport, StoreError> {
        let before = before.millis();
        self.store.write(|conn| {
            let webhook_deliveries = diesel::delete(
                webhook_deliveries::table.filter(webhook_deliveries::processed_at.lt(before)),
            )
            .execute(conn)?;
            let sessions =
                diesel::delete(sessions::table.filter(dead_session(before))).execute(conn)?;
            let notification_deliveries =
                diesel::delete(notification_deliveries::table.filter(ended_notification!(before)))
                    .execute(conn)?;
            Ok::<_, TxError>(PruneReport {
                webhook_deliveries: webhook_deliveries as u64,
                sessions: sessions as u64,
                notification_deliveries: notification_deliveries as u64,
            })
        })
    }
}

/// A session that expired, or was revoked, before `before` (milliseconds).
fn dead_session(
    before: i64,
) -> diesel::dsl::Or<
    diesel::dsl::Lt<sessions::expires_at, i64>,
    diesel::dsl::Lt<sessions::revoked_at, i64>,
> {
    sessions::expires_at
        .lt(before)
        .or(sessions::revoked_at.lt(before))
}

/// What [`Store::backup_sqlite`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupReport {
    pub path: String,
    pub bytes: u64,
}

impl Store {
    /// An online, consistent copy of the SQLite database at `dest`: `VACUUM INTO` a
    /// temporary file next to it (one read snapshot; writers of this and other processes
    /// go on meanwhile), `fsync` it, then link it to `dest`, which fails when `dest`
    /// exists, so no file is ever replaced and `dest` is never seen half written. Not
    /// PostgreSQL: `pg_dump` is its tool.
    pub fn backup_sqlite(&self, dest: &std::path::Path) -> Result<BackupReport, StoreError> {
        let refuse = |reason: String| StoreError::Backup { reason };
        if self.backend != crate::Backend::Sqlite {
            return Err(refuse(
                "the database is PostgreSQL; back it up with pg_dump".into(),
            ));
        }
        if dest.exists() {
            return Err(refuse(format!(
                "{} exists; a backup never replaces a file, choose a new path",
                dest.display()
            )));
        }
        let name = dest
            .file_name()
            .ok_or_else(|| refuse(format!("{} names no file", dest.display())))?;
        let folder = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        if !folder.is_dir() {
            return Err(refuse(format!(
                "the folder {} does not exist",
                folder.display()
            )));
        }
        let temp = folder.join(format!(
            ".{}.{}.partial",
            name.to_string_lossy(),
            crate::new_id("")
        ));
        let result = self.vacuum_into(&temp).and_then(|()| {
            let io = |what: &str, e: std::io::Error| refuse(format!("{what}: {e}"));
            std::fs::File::open(&temp)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(&format!("cannot sync {}", temp.display()), e))?;
            std::fs::hard_link(&temp, dest).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => refuse(format!(
                    "{} exists; a backup never replaces a file, choose a new path",
                    dest.display()
                )),
                _ => io(&format!("cannot create {}", dest.display()), e),
            })?;
            // The new name is durable once its folder is.
            std::fs::File::open(&folder)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(&format!("cannot sync the folder {}", folder.display()), e))?;
            let bytes = std::fs::metadata(dest)
                .map_err(|e| io(&format!("cannot read {}", dest.display()), e))?
                .len();
            Ok(BackupReport {
                path: dest.display().to_string(),
                bytes,
            })
        });
        let _ = std::fs::remove_file(&temp);
        result
    }

    /// `VACUUM INTO path` on a pooled SQLite connection.
    fn vacuum_into(&self, path: &std::path::Path) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let DbConnection::Sqlite(c) = &mut *conn else {
            return Err(StoreError::Backup {
                reason: "VACUUM INTO is SQLite's".into(),
            });
        };
        let target = path.to_str().ok_or_else(|| StoreError::Backup {
            reason: format!("{} is not valid UTF-8", path.display()),
        })?;
        diesel::sql_query("VACUUM INTO ?")
            .bind::<diesel::sql_types::Text, _>(target)
            .execute(c)?;
        Ok(())
    }
}
