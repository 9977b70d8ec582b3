//! Ledger operations over the database: accounts, the transactional apply path, reads.

use std::collections::{BTreeSet, HashMap};

use diesel::prelude::*;
use diesel::query_builder::InsertStatement;
use diesel::query_dsl::methods::ExecuteDsl;
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
use crate::plans::InForce;
use crate::rows::{AccountRow, EntryRow, FirstRecord, GrantRow, HoldRow, IdempotencyRow, Records};
use crate::schema::{accounts, entries, grants, holds, idempotency_keys};
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
        let _gate = self.write_gate();
        let mut conn = self.pool.get()?;
        (*conn).transaction::<T, TxError, _>(f).map_err(|e| e.0)
    }

    /// Runs `f` in a read transaction that sees one consistent snapshot.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&mut DbConnection) -> Result<T, TxError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.pool.get()?;
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
    pub fn balance(&self, id: &AccountId, now: Timestamp) -> Result<Balance, StoreError> {
        // A subscription whose period has ended starts the current one first.
        self.store.plans().roll_if_due(id, now)?;
        self.store.read(|conn| {
            let (book, _) = load_book(conn, id, None, &[])?;
            balance_of(&book, now)
        })
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
        let item = BatchItem {
            account_id: account_id.clone(),
            idempotency: idempotency.cloned(),
            operation,
        };
        self.store.engine.apply(item, now)
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
        self.store.write(|conn| {
            let items = items.iter().map(|item| (item, now));
            Ok(apply_all(conn, items, |_, _| Warm::default())?.answers)
        })
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
    let n = diesel::update(accounts::table.filter(accounts::id.eq(id.as_str())))
        .set(accounts::version.eq(accounts::version + 1))
        .execute(conn)?;
    if n == 0 {
        return Err(StoreError::AccountNotFound {
            account_id: id.clone(),
        }
        .into());
    }
    Ok(())
}

/// [`lock_account`], answering the account's version after the lock (`None`: no such
/// account). Every writer of an account's book takes this lock, so the version tells a
/// writer that kept the book whether anyone else wrote it since.
pub(crate) fn lock_account_version(
    conn: &mut DbConnection,
    id: &AccountId,
) -> Result<Option<i64>, TxError> {
    Ok(
        diesel::update(accounts::table.filter(accounts::id.eq(id.as_str())))
            .set(accounts::version.eq(accounts::version + 1))
            .returning(accounts::version)
            .get_result::<i64>(conn)
            .optional()?,
    )
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
        .filter(holds::status.eq(HoldStatus::Active.as_str()))
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
        .filter(grants::remaining.gt(0))
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

/// Writes a changeset: entries and new lots are inserted, changed lots updated, and the
/// account's balance, overdraft and last sequence number set.
pub(crate) fn persist(
    conn: &mut DbConnection,
    id: &AccountId,
    changes: Changeset,
) -> Result<(), TxError> {
    if changes.is_empty() {
        return Ok(());
    }
    insert_each(
        conn,
        grants::table,
        changes.grants_inserted.iter().map(GrantRow::from),
    )?;
    for g in &changes.grants_updated {
        diesel::update(grants::table.filter(grants::id.eq(g.id.as_str())))
            .set(grants::remaining.eq(g.remaining.millis()))
            .execute(conn)?;
    }
    insert_each(
        conn,
        holds::table,
        changes.holds_inserted.iter().map(HoldRow::from),
    )?;
    for h in &changes.holds_updated {
        diesel::update(holds::table.filter(holds::id.eq(h.id.as_str())))
            .set((
                holds::status.eq(h.status.as_str()),
                holds::captured.eq(h.captured.millis()),
                holds::settled_at.eq(h.settled_at.map(Timestamp::millis)),
            ))
            .execute(conn)?;
    }
    insert_each(
        conn,
        entries::table,
        changes.entries.iter().map(EntryRow::from),
    )?;
    diesel::update(accounts::table.filter(accounts::id.eq(id.as_str())))
        .set((
            accounts::balance.eq(changes.balance.millis()),
            accounts::overdraft.eq(changes.overdraft.millis()),
            accounts::last_seq.eq(changes.last_seq),
        ))
        .execute(conn)?;
    Ok(())
}

/// Inserts `rows` into `table`, one statement a row.
fn insert_each<T, R>(
    conn: &mut DbConnection,
    table: T,
    rows: impl Iterator<Item = R>,
) -> QueryResult<()>
where
    T: Table + Copy,
    R: Insertable<T>,
    InsertStatement<T, R::Values>: ExecuteDsl<DbConnection>,
{
    for row in rows {
        diesel::insert_into(table).values(row).execute(conn)?;
    }
    Ok(())
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
    apply_warm(conn, id, idempotency, operation, now, &mut Warm::default())
}

/// What [`apply_all`] did: each item's answer, in order, and what the transaction knows
/// of each account it locked (with the account's version after the lock).
pub(crate) struct AppliedAll {
    pub(crate) answers: Vec<Result<Applied, StoreError>>,
    pub(crate) accounts: HashMap<AccountId, (Warm, i64)>,
}

/// Applies many operations (each with its own `now`) inside the transaction `conn` is
/// in: every account is locked once, in id order (so concurrent batches cannot
/// deadlock), then the operations run in order, each account's reads shared between its
/// operations ([`Warm`]; `known(id, version)` may start an account with a book kept from
/// an earlier transaction). A refusal ([`StoreError::is_refusal`]) is that item's answer;
/// any other error is returned, and the caller rolls the transaction back.
pub(crate) fn apply_all<'i>(
    conn: &mut DbConnection,
    items: impl Iterator<Item = (&'i BatchItem, Timestamp)> + Clone,
    mut known: impl FnMut(&AccountId, i64) -> Warm,
) -> Result<AppliedAll, TxError> {
    let ids: BTreeSet<&AccountId> = items.clone().map(|(i, _)| &i.account_id).collect();
    let mut accounts = HashMap::new();
    for id in ids {
        // An unknown account is that item's answer, below.
        if let Some(version) = lock_account_version(conn, id)? {
            accounts.insert(id.clone(), (known(id, version), version));
        }
    }
    let mut answers = Vec::new();
    for (item, now) in items {
        let mut cold = Warm::default();
        let warm = match accounts.get_mut(&item.account_id) {
            Some((warm, _)) => warm,
            None => &mut cold,
        };
        let idempotency = item.idempotency.as_ref();
        let operation = item.operation.clone();
        match apply_warm(conn, &item.account_id, idempotency, operation, now, warm) {
            Ok(applied) => answers.push(Ok(applied)),
            Err(TxError(e)) if e.is_refusal() => answers.push(Err(e)),
            Err(e) => return Err(e),
        }
    }
    Ok(AppliedAll { answers, accounts })
}

/// What a transaction already read of one locked account, kept between its operations
/// so that the next one need not read it again (the engine, ADR 10). Every part is
/// exactly what is stored: each operation writes its changes before the next one.
#[derive(Debug, Default)]
pub(crate) struct Warm {
    /// The account's book and overdraft limit.
    pub(crate) book: Option<(Book, i64)>,
    /// The plan in force (`Some(None)`: none), read once a batch unless it changes.
    plan: Option<Option<InForce>>,
    /// The auto top-up settings, likewise.
    topup: Option<Option<ledger_core::AutoTopup>>,
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

    /// The book, loaded when it is not here or lacks the hold or grants named.
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
        let book = match self.book.take() {
            Some(kept) if !lacks(&kept.0) => kept,
            _ => load_book(conn, id, hold, grants)?,
        };
        Ok(self.book.insert(book))
    }
}

/// One operation inside a transaction that already holds the account's row lock
/// ([`lock_account`]), with what the transaction already knows of the account in
/// `warm`. A refusal of the caller's (unknown account, hold or entry, an idempotency
/// conflict) is returned before anything of the operation is written.
fn apply_warm(
    conn: &mut DbConnection,
    id: &AccountId,
    idempotency: Option<&Idempotency>,
    operation: Operation,
    now: Timestamp,
    warm: &mut Warm,
) -> Result<Applied, TxError> {
    // A plan's period rolls here when due; its terms bound the operation (ADR 9).
    if warm
        .plan
        .as_ref()
        .is_none_or(|p| p.as_ref().is_some_and(|p| p.ended(now)))
    {
        let (rolled, in_force) = crate::plans::before_operation(conn, id, now)?;
        if rolled {
            warm.book = None;
        }
        warm.plan = Some(in_force);
    }
    let plan = warm.plan.clone().flatten();
    if let Some(idem) = idempotency {
        let stored: Option<IdempotencyRow> = idempotency_keys::table
            .filter(idempotency_keys::account_id.eq(id.as_str()))
            .filter(idempotency_keys::scope.eq(&idem.scope))
            .filter(idempotency_keys::key.eq(idem.key.as_str()))
            .select(IdempotencyRow::as_select())
            .first(conn)
            .optional()?;
        let stored_pair = stored
            .as_ref()
            .map(|r| (Fingerprint::new(r.fingerprint.clone()), r.outcome.clone()));
        match decide(stored_pair.as_ref().map(|(f, o)| (f, o)), &idem.fingerprint) {
            Decision::Fresh => {}
            Decision::Replay(outcome) => {
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
        // Nothing is written: what the book may have settled on the way is forgotten.
        warm.book = None;
        return Err(StoreError::HoldNotFound {
            hold_id: hold_id.clone(),
        }
        .into());
    }
    persist(conn, id, book.take_changes())?;
    // The effects commit (or roll back) with the entries that called for them.
    for effect in &applied.effects {
        match effect {
            Effect::StartTopup(start) => {
                crate::orders::topups::start_in_tx(conn, start, now)?;
                warm.topup = None;
            }
            Effect::BillOverage { blocks, .. } => {
                crate::plans::bill_overage(conn, id, plan.as_ref(), *blocks, now)?;
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
        diesel::insert_into(idempotency_keys::table)
            .values(IdempotencyRow {
                account_id: id.as_str().to_owned(),
                scope: idem.scope.clone(),
                key: idem.key.as_str().to_owned(),
                fingerprint: idem.fingerprint.as_str().to_owned(),
                outcome: stored.encode(),
                created_at: now.millis(),
            })
            .execute(conn)?;
    }
    Ok(Applied {
        result,
        replayed: false,
        available,
    })
}
