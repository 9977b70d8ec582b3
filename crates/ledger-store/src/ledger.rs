//! Ledger operations over the database: accounts, the transactional apply path, reads.

use std::collections::{BTreeSet, HashMap};

use diesel::prelude::*;
use diesel::result::Error as DieselError;
use ledger_core::idempotency::{decide, Decision};
use ledger_core::{
    AccountId, Book, BookState, Changeset, Context, Credits, Effect, Entry, EntryId, Fingerprint,
    Grant, GrantId, GrantSource, GrantSpec, Hold, HoldId, HoldStatus, IdempotencyKey, LedgerError,
    Lot, Memo, Operation, Outcome, Page, RefundOf, Timestamp, YearMonth,
};

use crate::db::{Backend, DbConnection};
use crate::error::StoreError;
use crate::ids::{new_id, RandomIds};
use crate::outcome::StoredOutcome;
use crate::plans::{InForce, SubRow};
use crate::rows::{AccountRow, EntryRow, FirstRecord, GrantRow, HoldRow, IdempotencyRow, Records};
use crate::schema::{accounts, entries, grants, holds, idempotency_keys, subscriptions};
use crate::Store;

/// An account as the ledger knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub created_at: Timestamp,
    pub plan_name: Option<String>,
    /// How far usage may go beyond all credits (0: never below zero).
    pub overdraft_limit: Credits,
}

impl TryFrom<AccountRow> for Account {
    type Error = StoreError;
    fn try_from(r: AccountRow) -> Result<Account, StoreError> {
        Ok(Account {
            id: AccountId::new(r.id),
            email: r.email,
            password_hash: r.password_hash,
            created_at: Timestamp::from_millis(r.created_at),
            plan_name: r.plan_name,
            overdraft_limit: Credits::from_millis(r.overdraft_limit),
        })
    }
}

/// A new account; `signup_bonus` of zero grants nothing.
#[derive(Debug, Clone, Default)]
pub struct NewAccount {
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub signup_bonus: Credits,
}

/// Balances of one account at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    /// What can be spent now: usable credits minus active holds (and any overdraft).
    pub available: Credits,
    /// The sum of all entries.
    pub book: Credits,
    /// Credits reserved by active holds.
    pub held: Credits,
}

/// The result of [`Ledger::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The operation's outcome, or the ledger rule that refused it (nothing changed then).
    pub result: Result<Outcome, LedgerError>,
    /// True when an idempotency key matched an earlier request: nothing was done now.
    pub replayed: bool,
    /// The available balance after the operation.
    pub available: Credits,
}

/// An idempotency key with the canonical form of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub scope: String,
    pub key: IdempotencyKey,
    pub fingerprint: Fingerprint,
}

impl Idempotency {
    /// A key in the default scope shared by every ledger call of an account.
    pub fn new(key: IdempotencyKey, fingerprint: Fingerprint) -> Idempotency {
        Idempotency {
            scope: "ledger".into(),
            key,
            fingerprint,
        }
    }
}

/// One item of a batch.
#[derive(Debug, Clone)]
pub struct BatchItem {
    pub account_id: AccountId,
    pub idempotency: Option<Idempotency>,
    pub operation: Operation,
}

/// Errors inside a transaction: the store's own, or a database error to roll back on.
impl From<StoreError> for TxError {
    fn from(e: StoreError) -> TxError {
        TxError(e)
    }
}
impl From<DieselError> for TxError {
    fn from(e: DieselError) -> TxError {
        TxError(StoreError::Database(e.into()))
    }
}
#[derive(Debug)]
pub(crate) struct TxError(pub StoreError);

impl Store {
    /// What `read` finds; when it finds nothing, runs `insert` in a write transaction
    /// and answers `inserted`, unless another writer inserted the same key first (a
    /// unique violation): then what `read` finds now.
    pub(crate) fn read_or_insert<T>(
        &self,
        read: impl Fn() -> Result<Option<T>, StoreError>,
        insert: impl FnOnce(&mut DbConnection) -> QueryResult<usize>,
        inserted: T,
    ) -> Result<Option<T>, StoreError> {
        if let Some(found) = read()? {
            return Ok(Some(found));
        }
        match self.write(|conn| Ok(insert(conn)?)) {
            Ok(_) => Ok(Some(inserted)),
            Err(e) if e.is_unique_violation() => read(),
            Err(e) => Err(e),
        }
    }

    /// Runs `f` in a write transaction (behind the SQLite write gate).
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&mut DbConnection) -> Result<T, TxError>,
    ) -> Result<T, StoreError> {
        let _gate = self.write_gate()?;
        let mut conn = crate::held::checkout(&self.pool)?;
        (*conn).transaction::<T, TxError, _>(f).map_err(|e| e.0)
    }

    /// Runs `f` in a read transaction that sees one consistent snapshot.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&mut DbConnection) -> Result<T, TxError>,
    ) -> Result<T, StoreError> {
        let mut conn = crate::held::checkout(&self.pool)?;
        let backend = self.backend;
        (*conn)
            .transaction::<T, TxError, _>(|conn| {
                if backend == Backend::Postgres {
                    diesel::sql_query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                        .execute(conn)?;
                }
                f(conn)
            })
            .map_err(|e| e.0)
    }
}

/// Accounts, the ledger's operations and its reads: `store.ledger()`.
#[derive(Debug, Clone, Copy)]
pub struct Ledger<'a> {
    store: &'a Store,
}

impl Store {
    /// Accounts, the ledger's operations and its reads.
    pub fn ledger(&self) -> Ledger<'_> {
        Ledger { store: self }
    }
}

impl Ledger<'_> {
    /// Creates an account and grants its signup bonus (`signup_bonus`, `Welcome bonus`)
    /// in the same transaction.
    pub fn create_account(
        &self,
        new: NewAccount,
        now: Timestamp,
    ) -> Result<(Account, Credits), StoreError> {
        let email = new.email.clone();
        let result = self.store.write(|conn| {
            let row = AccountRow {
                id: new_id(AccountId::PREFIX),
                email: new.email,
                password_hash: new.password_hash,
                created_at: now.millis(),
                balance: 0,
                overdraft: 0,
                overdraft_limit: 0,
                last_seq: 0,
                compacted_balance: 0,
                compacted_seq: 0,
                plan_name: None,
                version: 0,
            };
            diesel::insert_into(accounts::table)
                .values(&row)
                .execute(conn)?;
            // The person who signs up is the account's owner (its first login).
            if let Some(email) = &row.email {
                crate::members::add_owner(conn, &row.id, email, row.password_hash.as_deref(), now)?;
            }
            let id = AccountId::new(row.id.clone());
            let mut available = Credits::ZERO;
            if new.signup_bonus.is_positive() {
                let bonus = Operation::Credit {
                    spec: GrantSpec::new(GrantSource::SignupBonus, new.signup_bonus),
                    memo: Memo::new("Welcome bonus"),
                };
                available = apply_in_tx(conn, &id, None, bonus, now)?.available;
            }
            Ok((Account::try_from(row)?, available))
        });
        match result {
            Err(e) if e.is_unique_violation() => Err(StoreError::EmailTaken {
                email: email.unwrap_or_default(),
            }),
            other => other,
        }
    }

    pub fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        self.store
            .first_record(accounts::table.filter(accounts::id.eq(id.as_str())))
    }

    /// Sets the plan name stamped on new entries and how far usage may overdraw (kept
    /// within `0..=Credits::MAX_BALANCE`).
    pub fn set_plan(
        &self,
        id: &AccountId,
        plan_name: Option<&str>,
        overdraft_limit: Credits,
    ) -> Result<(), StoreError> {
        self.store.write(|conn| {
            lock_account(conn, id)?;
            diesel::update(accounts::table.filter(accounts::id.eq(id.as_str())))
                .set((
                    accounts::plan_name.eq(plan_name),
                    accounts::overdraft_limit.eq(overdraft_limit
                        .max(Credits::ZERO)
                        .min(Credits::MAX_BALANCE)
                        .millis()),
                ))
                .execute(conn)?;
            Ok(())
        })
    }

    /// The account's balances now (expired grants and holds already count as settled).
    ///
    /// One indexed read when the account row's balance holds at `now` (the last write
    /// set it, nothing expires or starts before `now`, and no plan period is due): see
    /// [`write_account`]. Otherwise the book is folded.
    pub fn balance(&self, id: &AccountId, now: Timestamp) -> Result<Balance, StoreError> {
        if let Some(kept) = self.kept_balance(id, now)? {
            return Ok(kept);
        }
        // A subscription whose period has ended starts the current one first.
        self.store.plans().roll_if_due(id, now)?;
        self.store.read(|conn| {
            let (book, _) = load_book(conn, id, None, &[])?;
            balance_of(&book, now)
        })
    }

    /// The balance on the account row, when it holds at `now`.
    fn kept_balance(&self, id: &AccountId, now: Timestamp) -> Result<Option<Balance>, StoreError> {
        let mut conn = self.store.conn()?;
        let found: Option<(crate::access::KeptRow, Option<SubRow>)> = accounts::table
            .left_join(subscriptions::table.on(subscriptions::account_id.eq(accounts::id)))
            .filter(accounts::id.eq(id.as_str()))
            .select((
                (
                    accounts::balance,
                    accounts::available,
                    accounts::held,
                    accounts::balance_at,
                    accounts::balance_until,
                ),
                Option::<SubRow>::as_select(),
            ))
            // `get_result`, not `first`: the id is the key, and SQLite re-prepares a
            // statement whose `LIMIT ?` is bound again on every call.
            .get_result(&mut *conn)
            .optional()?;
        Ok(found.and_then(|(kept, sub)| crate::access::kept_at(kept, sub.as_ref(), now)))
    }

    /// Applies one operation. It is group-committed (ADR 10): it shares a transaction with
    /// the other operations queued at the same moment, and returns once that transaction
    /// has committed. Its answer is exactly that of the operation applied on its own.
    pub fn apply(
        &self,
        account_id: &AccountId,
        idempotency: Option<&Idempotency>,
        operation: Operation,
        now: Timestamp,
    ) -> Result<Applied, StoreError> {
        let kind = crate::observe::operation_kind(&operation);
        let item = BatchItem {
            account_id: account_id.clone(),
            idempotency: idempotency.cloned(),
            operation,
        };
        let answer = self.store.engine.apply(item, now);
        crate::observe::report(&self.store.observer, kind, &answer);
        answer
    }

    /// Applies many operations (of one or many accounts) in one transaction, in order.
    /// Accounts are locked in id order first, so concurrent batches cannot deadlock.
    /// A database error rolls the whole batch back; a ledger rejection or a per-item
    /// error (unknown account, idempotency conflict) is that item's answer only.
    pub fn apply_batch(
        &self,
        items: Vec<BatchItem>,
        now: Timestamp,
    ) -> Result<Vec<Result<Applied, StoreError>>, StoreError> {
        let answers = self.store.write(|conn| {
            let items = items.iter().map(|item| (item, now));
            Ok(apply_all(conn, items, |_, _| Warm::default())?.answers)
        });
        match &answers {
            Ok(answers) => {
                self.store.observer.batch(items.len());
                for (item, answer) in items.iter().zip(answers) {
                    let kind = crate::observe::operation_kind(&item.operation);
                    crate::observe::report(&self.store.observer, kind, answer);
                }
            }
            Err(_) => {
                for item in &items {
                    let kind = crate::observe::operation_kind(&item.operation);
                    self.store
                        .observer
                        .operation(kind, crate::OperationOutcome::Error);
                }
            }
        }
        answers
    }

    /// The account a hold belongs to.
    pub fn hold_account(&self, hold_id: &HoldId) -> Result<AccountId, StoreError> {
        let mut conn = self.store.conn()?;
        holds::table
            .filter(holds::id.eq(hold_id.as_str()))
            .select(holds::account_id)
            .first::<String>(&mut *conn)
            .optional()?
            .map(AccountId::new)
            .ok_or_else(|| StoreError::HoldNotFound {
                hold_id: hold_id.clone(),
            })
    }

    pub fn hold(&self, hold_id: &HoldId) -> Result<Option<Hold>, StoreError> {
        self.store
            .first_record(holds::table.filter(holds::id.eq(hold_id.as_str())))
    }

    /// One entry of one account.
    pub fn entry(
        &self,
        account_id: &AccountId,
        entry_id: &EntryId,
    ) -> Result<Option<Entry>, StoreError> {
        let mut conn = self.store.conn()?;
        load_entry(&mut conn, account_id, entry_id)
    }

    /// History, newest first.
    pub fn history(&self, account_id: &AccountId, page: Page) -> Result<Vec<Entry>, StoreError> {
        self.store.records(
            entries::table
                .filter(entries::account_id.eq(account_id.as_str()))
                .order(entries::seq.desc())
                .limit(i64::from(page.limit()))
                .offset(page.offset() as i64),
        )
    }

    /// Every entry of a calendar month (UTC), newest first.
    pub fn month(
        &self,
        account_id: &AccountId,
        month: YearMonth,
    ) -> Result<Vec<Entry>, StoreError> {
        self.store.records(
            entries::table
                .filter(entries::account_id.eq(account_id.as_str()))
                .filter(entries::created_at.ge(month.start().millis()))
                .filter(entries::created_at.lt(month.end().millis()))
                .order(entries::seq.desc()),
        )
    }
}

fn balance_of(book: &Book, now: Timestamp) -> Result<Balance, TxError> {
    let held = Credits::checked_sum(
        book.holds()
            .iter()
            .filter(|h| h.is_active(now))
            .map(|h| h.amount),
    )
    .ok_or_else(|| {
        StoreError::corrupt(format!(
            "the active holds of {} add up past an i64",
            book.account_id()
        ))
    })?;
    Ok(Balance {
        available: book.available(now),
        book: book.balance(),
        held,
    })
}

/// Takes the account's row lock for the rest of the transaction.
pub(crate) fn lock_account(conn: &mut DbConnection, id: &AccountId) -> Result<(), TxError> {
    match lock_account_version(conn, id)? {
        Some(_) => Ok(()),
        None => Err(StoreError::AccountNotFound {
            account_id: id.clone(),
        }
        .into()),
    }
}

/// [`lock_account`], answering the account's version after the lock (`None`: no such
/// account). Every writer of an account's book takes this lock, so the version tells a
/// writer that kept the book whether anyone else wrote it since. The lock also clears
/// `balance_until`: no reader takes the balance from the row until the writer that locked
/// it sets one ([`write_account`]). One statement, prepared once (`crate::rows::LockAccount`).
pub(crate) fn lock_account_version(
    conn: &mut DbConnection,
    id: &AccountId,
) -> Result<Option<i64>, TxError> {
    Ok(crate::rows::LockAccount { id: id.as_str() }
        .get_result::<i64>(conn)
        .optional()?)
}

fn load_entry(
    conn: &mut DbConnection,
    account_id: &AccountId,
    entry_id: &EntryId,
) -> Result<Option<Entry>, StoreError> {
    entries::table
        .filter(entries::id.eq(entry_id.as_str()))
        .filter(entries::account_id.eq(account_id.as_str()))
        .first_record(conn)
}

/// `holds.status = 'active'`, written as a literal, not a bound parameter: the partial
/// index `holds_active` applies only when the planner sees the value, and a statement
/// whose text never changes is prepared once (SQLite) and planned generically (PostgreSQL).
fn active_holds() -> diesel::expression::SqlLiteral<diesel::sql_types::Bool> {
    debug_assert_eq!(HoldStatus::Active.as_str(), "active");
    diesel::dsl::sql("holds.status = 'active'")
}

/// `grants.remaining > 0` as a literal, for the partial index `grants_open` (see
/// [`active_holds`]).
pub(crate) fn open_grants() -> diesel::expression::SqlLiteral<diesel::sql_types::Bool> {
    diesel::dsl::sql("grants.remaining > 0")
}

/// Loads an account's book: its open grants, active holds, `extra_hold` whatever its
/// state, and every grant those holds or `extra_grants` name.
pub(crate) fn load_book(
    conn: &mut DbConnection,
    id: &AccountId,
    extra_hold: Option<&HoldId>,
    extra_grants: &[GrantId],
) -> Result<(Book, i64), TxError> {
    let account = accounts::table
        .filter(accounts::id.eq(id.as_str()))
        .select(AccountRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| StoreError::AccountNotFound {
            account_id: id.clone(),
        })?;
    let mut hold_rows: Vec<HoldRow> = holds::table
        .filter(holds::account_id.eq(id.as_str()))
        .filter(active_holds())
        .select(HoldRow::as_select())
        .load(conn)?;
    if let Some(h) = extra_hold {
        if !hold_rows.iter().any(|r| r.id == h.as_str()) {
            hold_rows.extend(
                holds::table
                    .filter(holds::id.eq(h.as_str()))
                    .filter(holds::account_id.eq(id.as_str()))
                    .select(HoldRow::as_select())
                    .load(conn)?,
            );
        }
    }
    let holds: Vec<Hold> = hold_rows
        .into_iter()
        .map(Hold::try_from)
        .collect::<Result<_, _>>()?;
    let mut grants: Vec<Grant> = grants::table
        .filter(grants::account_id.eq(id.as_str()))
        .filter(open_grants())
        .records(conn)?;
    let have: BTreeSet<GrantId> = grants.iter().map(|g| g.id.clone()).collect();
    let mut wanted: BTreeSet<String> = holds
        .iter()
        .flat_map(|h| h.allocations.iter())
        .filter_map(|a| match &a.lot {
            Lot::Grant(g) if !have.contains(g) => Some(g.as_str().to_owned()),
            _ => None,
        })
        .collect();
    wanted.extend(
        extra_grants
            .iter()
            .filter(|g| !have.contains(*g))
            .map(|g| g.as_str().to_owned()),
    );
    if !wanted.is_empty() {
        let more: Vec<GrantRow> = grants::table
            .filter(grants::id.eq_any(wanted.into_iter().collect::<Vec<_>>()))
            .filter(grants::account_id.eq(id.as_str()))
            .select(GrantRow::as_select())
            .load(conn)?;
        for row in more {
            grants.push(Grant::try_from(row)?);
        }
    }
    let book = Book::new(BookState {
        account_id: id.clone(),
        balance: Credits::from_millis(account.balance),
        overdraft: Credits::from_millis(account.overdraft),
        last_seq: account.last_seq,
        plan: account.plan_name,
        grants,
        holds,
    });
    Ok((book, account.overdraft_limit))
}

/// Writes a changeset: entries and new lots are inserted (a few rows a statement), changed
/// lots updated, and the account's balance, overdraft and last sequence number set. The
/// balance kept on the account row stays cleared (the lock cleared it): the next read folds.
pub(crate) fn persist(
    conn: &mut DbConnection,
    id: &AccountId,
    changes: Changeset,
) -> Result<(), TxError> {
    if changes.is_empty() {
        return Ok(());
    }
    let (balance, overdraft, last_seq) = (changes.balance, changes.overdraft, changes.last_seq);
    let mut inserts = Inserts::default();
    inserts.update_lots(conn, changes)?;
    inserts.write(conn)?;
    diesel::update(accounts::table.filter(accounts::id.eq(id.as_str())))
        .set((
            accounts::balance.eq(balance.millis()),
            accounts::overdraft.eq(overdraft.millis()),
            accounts::last_seq.eq(last_seq),
        ))
        .execute(conn)?;
    Ok(())
}

/// Inserts the rows `$rows` into `$table`: in chunks of a fixed size (the largest power of
/// two, up to [`ROWS_PER_INSERT`], that the rows left fill), so that each statement's text
/// is one of a few, prepared once a connection and cached by Diesel (a `Vec` of rows is a
/// statement of its own length, prepared afresh every time: issue 11). A macro: Diesel
/// builds multi-row inserts for each backend's own connection, not for the connection
/// over both.
macro_rules! insert_all {
    ($conn:expr, $table:expr, $rows:expr) => {{
        let conn: &mut DbConnection = $conn;
        let mut rest = &$rows[..];
        while !rest.is_empty() {
            insert_chunk!(conn, $table, rest, 256, 128, 64, 32, 16, 8, 4, 2, 1);
        }
    }};
}

/// One statement of [`insert_all!`]: the first `$n` rows of `$rest`, for the largest `$n`
/// listed (largest first, ending with 1) that `$rest` fills; `$rest` keeps the others.
macro_rules! insert_chunk {
    ($conn:ident, $table:expr, $rest:ident, $($n:literal),+) => {
        $(
            if let Some((chunk, tail)) = $rest.split_first_chunk::<$n>() {
                match &mut *$conn {
                    DbConnection::Sqlite(c) => diesel::insert_into($table).values(chunk).execute(c),
                    DbConnection::Postgres(c) => diesel::insert_into($table).values(chunk).execute(c),
                }?;
                $rest = tail;
                continue;
            }
        )+
    };
}

/// The rows one write inserts, gathered over every account of a batch so that each table
/// gets a few multi-row statements ([`insert_all!`]) instead of one a row.
#[derive(Default)]
struct Inserts {
    grants: Vec<GrantRow>,
    holds: Vec<HoldRow>,
    entries: Vec<EntryRow>,
    keys: Vec<IdempotencyRow>,
}

/// Rows a multi-row `INSERT` at most: 15 columns × 256 rows = 3,840 parameters, far below
/// what either backend allows in one statement (the sizes [`insert_all!`] uses are the
/// powers of two up to it).
const ROWS_PER_INSERT: usize = 256;

impl Inserts {
    /// Takes the inserted lots and entries of `changes`, and updates the changed lots now
    /// (one statement a lot: a lot changed many times in a batch is written once).
    fn update_lots(&mut self, conn: &mut DbConnection, changes: Changeset) -> Result<(), TxError> {
        for g in &changes.grants_updated {
            crate::rows::UpdateGrant {
                remaining: g.remaining.millis(),
                id: g.id.as_str(),
            }
            .execute(conn)?;
        }
        for h in &changes.holds_updated {
            crate::rows::UpdateHold {
                status: h.status.as_str(),
                captured: h.captured.millis(),
                settled_at: h.settled_at.map(Timestamp::millis),
                id: h.id.as_str(),
            }
            .execute(conn)?;
        }
        self.grants
            .extend(changes.grants_inserted.iter().map(GrantRow::from));
        self.holds
            .extend(changes.holds_inserted.iter().map(HoldRow::from));
        self.entries
            .extend(changes.entries.iter().map(EntryRow::from));
        Ok(())
    }

    /// Inserts every row gathered, lots before the entries that may name them.
    fn write(self, conn: &mut DbConnection) -> Result<(), TxError> {
        insert_all!(conn, grants::table, self.grants);
        insert_all!(conn, holds::table, self.holds);
        insert_all!(conn, entries::table, self.entries);
        insert_all!(conn, idempotency_keys::table, self.keys);
        Ok(())
    }
}

/// Sets the account row from `book` as of `now`: its balance, overdraft and last sequence
/// number, and the balance a reader may take from the row without folding the book
/// ([`Ledger::balance`]), valid until [`Book::steady_until`]. Answers the available
/// balance written (`None` for a corrupt book, left to the fold).
fn write_account(
    conn: &mut DbConnection,
    id: &AccountId,
    book: &Book,
    now: Timestamp,
) -> Result<Option<Credits>, TxError> {
    let state = book.state();
    // A book whose holds do not add up (only a corrupt one) leaves the row to the fold,
    // which reports it.
    let folded = balance_of(book, now).ok();
    let (shown, until) = match folded {
        Some(b) => (
            b,
            book.steady_until(now).map_or(i64::MAX, Timestamp::millis),
        ),
        None => (
            Balance {
                available: Credits::ZERO,
                book: Credits::ZERO,
                held: Credits::ZERO,
            },
            0,
        ),
    };
    crate::rows::WriteAccount {
        balance: state.balance.millis(),
        overdraft: state.overdraft.millis(),
        last_seq: state.last_seq,
        available: shown.available.millis(),
        held: shown.held.millis(),
        balance_at: now.millis(),
        balance_until: until,
        id: id.as_str(),
    }
    .execute(conn)?;
    Ok(folded.map(|b| b.available))
}

fn replay(
    conn: &mut DbConnection,
    id: &AccountId,
    stored: &str,
) -> Result<Result<Outcome, LedgerError>, TxError> {
    let stored = StoredOutcome::decode(stored)
        .map_err(|e| StoreError::corrupt(format!("idempotency outcome: {e}")))?;
    Ok(match stored {
        StoredOutcome::Entry(e) => {
            let entry = load_entry(conn, id, &e)?.ok_or_else(|| {
                StoreError::corrupt(format!("idempotency outcome names missing entry {e}"))
            })?;
            Ok(Outcome::Entry(entry))
        }
        StoredOutcome::Hold(h) => {
            let row = holds::table
                .filter(holds::id.eq(h.as_str()))
                .select(HoldRow::as_select())
                .first(conn)
                .optional()?
                .ok_or_else(|| {
                    StoreError::corrupt(format!("idempotency outcome names missing hold {h}"))
                })?;
            Ok(Outcome::Hold(Hold::try_from(row)?))
        }
        StoredOutcome::Settled => Ok(Outcome::Settled),
        StoredOutcome::Rejected(e) => Err(e),
    })
}

/// One operation on a connection already inside a transaction.
fn apply_in_tx(
    conn: &mut DbConnection,
    id: &AccountId,
    idempotency: Option<&Idempotency>,
    operation: Operation,
    now: Timestamp,
) -> Result<Applied, TxError> {
    lock_account(conn, id)?;
    let mut warm = Warm::default();
    let applied = apply_warm(
        conn,
        id,
        idempotency,
        operation,
        now,
        &mut warm,
        &Known::default(),
    )?;
    warm.flush(conn, id)?;
    Ok(applied)
}

/// What [`apply_all`] did: each item's answer, in order, and what the transaction knows
/// of each account it locked (with the account's version after the lock).
pub(crate) struct AppliedAll {
    pub(crate) answers: Vec<Result<Applied, StoreError>>,
    pub(crate) accounts: HashMap<AccountId, (Warm, i64)>,
}

/// The idempotency rows stored before a batch began for the keys its operations carry,
/// read in one query, by key.
#[derive(Default)]
struct Known(HashMap<String, Vec<IdempotencyRow>>);

impl Known {
    /// By the whole primary key (account_id, scope, key): with the account alone SQLite
    /// walks every key the account ever stored (issue 11: a quarter of the writer's CPU
    /// on a hot account). On SQLite one point read a key, a statement prepared once; on
    /// PostgreSQL one read for the batch (`= ANY` of arrays, one round trip).
    fn read<'i>(
        conn: &mut DbConnection,
        items: impl Iterator<Item = &'i BatchItem>,
    ) -> Result<Known, TxError> {
        let wanted: Vec<(&str, &str, &str)> = items
            .filter_map(|i| {
                let idem = i.idempotency.as_ref()?;
                Some((
                    i.account_id.as_str(),
                    idem.scope.as_str(),
                    idem.key.as_str(),
                ))
            })
            .collect();
        let mut known = Known::default();
        if wanted.is_empty() {
            return Ok(known);
        }
        let mut found = Vec::new();
        if let DbConnection::Sqlite(_) = conn {
            for &(account, scope, key) in &wanted {
                // `load`, not `first`: SQLite compiles a bound `LIMIT ?` into the plan,
                // so every execution of a statement with one is prepared again.
                found.extend(
                    stored_key(account, scope, key)
                        .select(IdempotencyRow::as_select())
                        .load::<IdempotencyRow>(conn)?,
                );
            }
        } else {
            let accounts: BTreeSet<&str> = wanted.iter().map(|w| w.0).collect();
            let scopes: BTreeSet<&str> = wanted.iter().map(|w| w.1).collect();
            let accounts: Vec<&str> = accounts.into_iter().collect();
            let scopes: Vec<&str> = scopes.into_iter().collect();
            let keys: Vec<&str> = wanted.iter().map(|w| w.2).collect();
            for chunk in keys.chunks(ROWS_PER_INSERT * 4) {
                found.extend(
                    idempotency_keys::table
                        .filter(idempotency_keys::account_id.eq_any(&accounts))
                        .filter(idempotency_keys::scope.eq_any(&scopes))
                        .filter(idempotency_keys::key.eq_any(chunk))
                        .select(IdempotencyRow::as_select())
                        .load::<IdempotencyRow>(conn)?,
                );
            }
        }
        for r in found {
            known.0.entry(r.key.clone()).or_default().push(r);
        }
        Ok(known)
    }

    /// The stored (fingerprint, outcome) of `idem` on account `id`.
    fn get(&self, id: &AccountId, idem: &Idempotency) -> Option<(&str, &str)> {
        self.0
            .get(idem.key.as_str())?
            .iter()
            .find(|r| r.account_id == id.as_str() && r.scope == idem.scope)
            .map(|r| (r.fingerprint.as_str(), r.outcome.as_str()))
    }
}

/// The stored idempotency row of (`account`, `scope`, `key`): a point read of the primary
/// key (at most one row).
#[diesel::dsl::auto_type(no_type_alias)]
fn stored_key<'a>(account: &'a str, scope: &'a str, key: &'a str) -> _ {
    idempotency_keys::table
        .filter(idempotency_keys::account_id.eq(account))
        .filter(idempotency_keys::scope.eq(scope))
        .filter(idempotency_keys::key.eq(key))
}

/// Applies many operations (each with its own `now`) inside the transaction `conn` is
/// in: every account is locked once, in id order (so concurrent batches cannot
/// deadlock), the stored idempotency rows of all their keys read in one query, then the
/// operations run in order against each account's book in memory ([`Warm`]; `known(id,
/// version)` may start an account with a book kept from an earlier transaction), and
/// what they changed is written at the end: a few multi-row inserts for the whole batch,
/// one update a changed lot and one a touched account. A refusal
/// ([`StoreError::is_refusal`]) is that item's answer; any other error is returned, and
/// the caller rolls the transaction back.
pub(crate) fn apply_all<'i>(
    conn: &mut DbConnection,
    items: impl Iterator<Item = (&'i BatchItem, Timestamp)> + Clone,
    mut known: impl FnMut(&AccountId, i64) -> Warm,
) -> Result<AppliedAll, TxError> {
    let ids: BTreeSet<&AccountId> = items.clone().map(|(i, _)| &i.account_id).collect();
    let mut accounts = HashMap::new();
    for id in &ids {
        // An unknown account is that item's answer, below.
        if let Some(version) = lock_account_version(conn, id)? {
            accounts.insert((*id).clone(), (known(id, version), version));
        }
    }
    // Every locked account's balance alerts, in one read (the lock orders their writers).
    let mut alerts = crate::notifications::load_alerts(conn, accounts.keys())?;
    for (id, (warm, _)) in accounts.iter_mut() {
        warm.alerts = Some(alerts.remove(id));
    }
    let stored = Known::read(conn, items.clone().map(|(i, _)| i))?;
    let mut answers = Vec::new();
    for (item, now) in items {
        let mut cold = Warm::default();
        let warm = match accounts.get_mut(&item.account_id) {
            Some((warm, _)) => warm,
            None => &mut cold,
        };
        let idempotency = item.idempotency.as_ref();
        let operation = item.operation.clone();
        match apply_warm(
            conn,
            &item.account_id,
            idempotency,
            operation,
            now,
            warm,
            &stored,
        ) {
            Ok(applied) => answers.push(Ok(applied)),
            Err(TxError(e)) if e.is_refusal() => answers.push(Err(e)),
            Err(e) => return Err(e),
        }
    }
    let mut inserts = Inserts::default();
    for (id, (warm, _)) in &mut accounts {
        warm.gather(conn, id, &mut inserts)?;
    }
    inserts.write(conn)?;
    Ok(AppliedAll { answers, accounts })
}

/// What a transaction knows of one locked account, kept between its operations so that
/// the next one need not read it again (the engine, ADR 10), and what they changed that
/// is not written yet. Whatever reads the account's rows from the database first writes
/// what is pending ([`Warm::flush`]), so every read sees every earlier operation.
#[derive(Debug, Default)]
pub(crate) struct Warm {
    /// The account's book and overdraft limit; its changes not taken yet are pending.
    pub(crate) book: Option<(Book, i64)>,
    /// The plan in force (`Some(None)`: none), read once a batch unless it changes.
    plan: Option<Option<InForce>>,
    /// The auto top-up settings, likewise.
    topup: Option<Option<ledger_core::AutoTopup>>,
    /// The idempotency rows of this transaction's operations; the first `keys_written`
    /// of them are written.
    keys: Vec<IdempotencyRow>,
    keys_written: usize,
    /// The book has changes not written yet.
    dirty: bool,
    /// The latest `now` of the account's operations (what the balance on the account row
    /// is computed for).
    now: Option<Timestamp>,
    /// The account's balance alerts (`None`: not read yet; `Some(None)`: it has none),
    /// applied wherever the balance is written ([`crate::notifications::balance_written`]).
    alerts: Option<Option<ledger_core::AlertState>>,
}

impl Warm {
    /// A warm state whose book is `book` (kept from an earlier transaction whose writes
    /// are known to be the account's latest).
    pub(crate) fn with_book(book: Book, overdraft_limit: i64) -> Warm {
        Warm {
            book: Some((book, overdraft_limit)),
            ..Warm::default()
        }
    }

    /// The book, loaded when it is not here or lacks the hold or grants named (what is
    /// pending is written first).
    fn book(
        &mut self,
        conn: &mut DbConnection,
        id: &AccountId,
        hold: Option<&HoldId>,
        grants: &[GrantId],
    ) -> Result<&mut (Book, i64), TxError> {
        let lacks = |b: &Book| {
            hold.is_some_and(|h| b.hold(h).is_none()) || grants.iter().any(|g| b.grant(g).is_none())
        };
        if self.book.as_ref().is_some_and(|(b, _)| lacks(b)) {
            self.flush(conn, id)?;
            self.book = None;
        }
        let book = match self.book.take() {
            Some(kept) => kept,
            None => load_book(conn, id, hold, grants)?,
        };
        Ok(self.book.insert(book))
    }

    /// Whether operations left changes that are not written yet.
    fn pending(&self) -> bool {
        self.dirty || self.keys.len() > self.keys_written
    }

    /// Takes what is pending into `inserts`, updating the changed lots and the account
    /// row (its balance, and the balance readers take from it) now.
    fn gather(
        &mut self,
        conn: &mut DbConnection,
        id: &AccountId,
        inserts: &mut Inserts,
    ) -> Result<(), TxError> {
        inserts
            .keys
            .extend_from_slice(&self.keys[self.keys_written..]);
        self.keys_written = self.keys.len();
        let (Some(now), Some((book, _))) = (self.now, self.book.as_mut()) else {
            return Ok(());
        };
        if std::mem::take(&mut self.dirty) {
            inserts.update_lots(conn, book.take_changes())?;
        }
        if let Some(available) = write_account(conn, id, book, now)? {
            crate::notifications::balance_written(conn, id, &mut self.alerts, available, now)?;
        }
        Ok(())
    }

    /// Writes what is pending, before something reads the account's rows.
    fn flush(&mut self, conn: &mut DbConnection, id: &AccountId) -> Result<(), TxError> {
        if self.pending() {
            let mut inserts = Inserts::default();
            self.gather(conn, id, &mut inserts)?;
            inserts.write(conn)?;
        }
        Ok(())
    }
}

/// One operation inside a transaction that already holds the account's row lock
/// ([`lock_account`]), with what the transaction already knows of the account in
/// `warm` and the idempotency rows stored before it began in `stored`. A refusal of the
/// caller's (unknown account, hold or entry, an idempotency conflict) is returned before
/// anything of the operation is written. What it changes stays pending in `warm`.
fn apply_warm(
    conn: &mut DbConnection,
    id: &AccountId,
    idempotency: Option<&Idempotency>,
    operation: Operation,
    now: Timestamp,
    warm: &mut Warm,
    stored: &Known,
) -> Result<Applied, TxError> {
    warm.now = Some(warm.now.map_or(now, |t| t.max(now)));
    // A plan's period rolls here when due; its terms bound the operation (ADR 9).
    if warm
        .plan
        .as_ref()
        .is_none_or(|p| p.as_ref().is_some_and(|p| p.ended(now)))
    {
        warm.flush(conn, id)?;
        let (rolled, in_force) = crate::plans::before_operation(conn, id, now)?;
        if rolled {
            warm.book = None;
            // The new period wrote the balance and its alerts: read them again.
            warm.alerts = None;
        }
        warm.plan = Some(in_force);
    }
    let plan = warm.plan.clone().flatten();
    if let Some(idem) = idempotency {
        let pending = warm
            .keys
            .iter()
            .find(|r| r.scope == idem.scope && r.key == idem.key.as_str())
            .map(|r| (r.fingerprint.as_str(), r.outcome.as_str()));
        let found = pending.or_else(|| stored.get(id, idem));
        let found = found.map(|(f, o)| (Fingerprint::new(f.to_owned()), o.to_owned()));
        match decide(found.as_ref().map(|(f, o)| (f, o)), &idem.fingerprint) {
            Decision::Fresh => {}
            Decision::Replay(outcome) => {
                warm.flush(conn, id)?;
                let result = replay(conn, id, outcome)?;
                let (book, _) = warm.book(conn, id, None, &[])?;
                return Ok(Applied {
                    result,
                    replayed: true,
                    available: book.available(now),
                });
            }
            Decision::Conflict => {
                return Err(StoreError::IdempotencyConflict {
                    key: idem.key.as_str().to_owned(),
                }
                .into())
            }
        }
    }

    // Load what the operation needs; the core decides everything else.
    let needs = operation.needs();
    let extra_hold = needs.hold.cloned();
    let mut context = Context::default();
    let mut extra_grants = Vec::new();
    if let Some(entry_id) = needs.refund_of {
        warm.flush(conn, id)?;
        let original =
            load_entry(conn, id, entry_id)?.ok_or_else(|| StoreError::EntryNotFound {
                entry_id: entry_id.clone(),
            })?;
        let earlier: Vec<i64> = entries::table
            .filter(entries::refund_of.eq(entry_id.as_str()))
            .select(entries::amount)
            .load(conn)?;
        extra_grants = original
            .allocations
            .iter()
            .filter_map(|a| match &a.lot {
                Lot::Grant(g) => Some(g.clone()),
                Lot::Overdraft => None,
            })
            .collect();
        let earlier = earlier
            .iter()
            .try_fold(0i64, |sum, amount| sum.checked_add(*amount))
            .ok_or_else(|| {
                StoreError::corrupt(format!("the refunds of {entry_id} add up past an i64"))
            })?;
        context.refund = Some(RefundOf {
            original,
            already_refunded: Credits::from_millis(earlier),
        });
    }
    if needs.auto_topup {
        if warm.topup.is_none() {
            warm.topup = Some(crate::orders::topups::settings_in_tx(conn, id)?);
        }
        context.auto_topup = warm.topup.clone().flatten();
    }
    let (book, overdraft_limit) = warm.book(conn, id, extra_hold.as_ref(), &extra_grants)?;
    context.overdraft_limit = Credits::from_millis(*overdraft_limit);
    if let Some(in_force) = &plan {
        context.overdraft_limit = in_force.context.wall;
        context.plan = Some(in_force.context.clone());
    }
    let applied = book.apply(operation, &context, now, &mut RandomIds);
    let (result, available) = (applied.result, applied.available);
    // Capturing or releasing an unknown hold is reported as the store's "not found".
    if let Err(LedgerError::HoldNotFound { hold_id }) = &result {
        // Nothing is written: what the book may have settled on the way is forgotten. The
        // book lacked the hold, so it was loaded afresh just now and holds nothing of an
        // earlier operation (were it otherwise, the batch fails and runs one by one).
        if warm.dirty {
            return Err(StoreError::corrupt(format!(
                "hold {hold_id} vanished from a book with pending changes"
            ))
            .into());
        }
        warm.book = None;
        return Err(StoreError::HoldNotFound {
            hold_id: hold_id.clone(),
        }
        .into());
    }
    warm.dirty = true;
    // The effects commit (or roll back) with the entries that called for them.
    if !applied.effects.is_empty() {
        warm.flush(conn, id)?;
    }
    for effect in &applied.effects {
        match effect {
            Effect::StartTopup(start) => {
                crate::orders::topups::start_in_tx(conn, start, now)?;
                warm.topup = None;
            }
            Effect::BillOverage { blocks, .. } => {
                crate::plans::bill_overage(conn, id, plan.as_ref(), *blocks, available, now)?;
                warm.plan = None;
            }
        }
    }
    if let Some(idem) = idempotency {
        let stored = match &result {
            Ok(Outcome::Entry(e)) => StoredOutcome::Entry(e.id.clone()),
            Ok(Outcome::Hold(h)) => StoredOutcome::Hold(h.id.clone()),
            Ok(Outcome::Settled) => StoredOutcome::Settled,
            Err(e) => StoredOutcome::Rejected(e.clone()),
        };
        warm.keys.push(IdempotencyRow {
            account_id: id.as_str().to_owned(),
            scope: idem.scope.clone(),
            key: idem.key.as_str().to_owned(),
            fingerprint: idem.fingerprint.as_str().to_owned(),
            outcome: stored.encode(),
            created_at: now.millis(),
        });
    }
    Ok(Applied {
        result,
        replayed: false,
        available,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::sqlite::Sqlite;

    #[derive(QueryableByName)]
    struct PlanRow {
        #[diesel(sql_type = diesel::sql_types::Text)]
        detail: String,
    }

    /// How SQLite runs `query` (its `EXPLAIN QUERY PLAN` details), on a migrated database.
    fn plan_of<Q: diesel::query_builder::QueryFragment<Sqlite>>(query: &Q) -> Vec<String> {
        let mut conn = DbConnection::Sqlite(
            diesel::SqliteConnection::establish(":memory:").expect("an in-memory database"),
        );
        crate::db::run_migrations(&mut conn).expect("migrations");
        let sql = diesel::debug_query::<Sqlite, _>(query).to_string();
        let sql = sql.split(" -- binds").next().unwrap_or_default();
        diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
            .load::<PlanRow>(&mut conn)
            .expect("a plan")
            .into_iter()
            .map(|r| r.detail)
            .collect()
    }

    /// The batch's idempotency read finds each key through the whole primary key: with
    /// the account alone (issue 11) it walked every key the account ever stored.
    #[test]
    fn a_stored_key_is_read_through_the_whole_primary_key() {
        let query = stored_key("acct_1", "ledger", "k").select(IdempotencyRow::as_select());
        let plan = plan_of(&query);
        assert!(
            plan.iter()
                .any(|d| d.contains("(account_id=? AND scope=? AND key=?)")),
            "{plan:?}"
        );
    }
}
