//! Who may act for an account: login sessions and API keys (both stored only as hashes),
//! and the account's subscription and limits.

use diesel::prelude::*;
use ledger_core::{AccountId, Credits, SubscriptionStatus, Timestamp};

use crate::error::StoreError;
use crate::ids::new_id;
use crate::ledger::Balance;
use crate::members::{joined_holder, Holder, HolderRow};
use crate::plans::SubRow;
use crate::rows::stored_record;
use crate::schema::{account_limits, accounts, api_keys, members, sessions, subscriptions};
use crate::Store;

stored_record! {
    /// An API key as listed (the key itself is never stored).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ApiKey in api_keys as ApiKeyRow {
        pub id: String,
        pub account_id: String,
        pub name: String,
        pub prefix: String,
        pub created_at_ms: i64 => created_at,
        pub last_used_at_ms: Option<i64> => last_used_at,
    }
}

stored_record! {
    /// An account's subscription to a plan.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Subscription in subscriptions as SubscriptionRow {
        pub account_id: String,
        pub id: String,
        pub plan_id: String,
        pub status: SubscriptionStatus,
        pub hard_limit: Option<i64>,
        pub created_at: i64,
        pub updated_at: i64,
    }
}

/// How often `last_used_at` of a key is written at most (a write per request would make
/// every read a write).
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// What is stored of a new API key: never the key itself, only its hash; and the secret
/// its signed URLs are made with (which the server must keep to check them, ADR 11).
#[derive(Debug, Clone, Copy)]
pub struct NewApiKey<'a> {
    pub name: &'a str,
    /// The readable start of the key shown in listings.
    pub prefix: &'a str,
    pub key_hash: &'a str,
    /// `None` makes a key without signed URLs (as every key made before them is).
    pub signing_secret: Option<&'a str>,
}

/// How a request names its API key: the hash of the key it presents, or the key's id
/// (a signed URL, proven by its signature).
#[derive(Debug, Clone, Copy)]
pub enum KeyBy<'a> {
    Hash(&'a str),
    Id(&'a str),
}

/// A live API key with everything authenticating a request needs, read in one query:
/// the account, whether it still exists, who holds the key, and its signing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCaller {
    pub key_id: String,
    pub account_id: AccountId,
    /// False when the account no longer exists.
    pub account_exists: bool,
    pub holder: Holder,
    /// `None` for a key made before signed URLs existed.
    pub signing_secret: Option<String>,
    last_used_at: Option<i64>,
}

impl KeyCaller {
    /// True when the key's last noted use is older than the resolution of `last_used_at`
    /// (a minute), so this use is worth noting ([`Access::note_key_use`]).
    pub fn use_is_unnoted(&self, now: Timestamp) -> bool {
        self.last_used_at
            .is_none_or(|t| now.millis() - t >= LAST_USED_RESOLUTION_MS)
    }
}

/// The row of [`Access::key_caller`]'s query.
type KeyCallerRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<HolderRow>,
);

/// The balance columns of an account row: balance, available, held, balance_at,
/// balance_until (read by `Ledger::balance` and [`Access::key_caller_and_balance`]).
pub(crate) type KeptRow = (i64, i64, i64, i64, i64);

/// The balance an account row keeps, when it holds at `now`: the last write set it,
/// nothing expires or starts before `now`, and the joined subscription has no period due.
pub(crate) fn kept_at(kept: KeptRow, sub: Option<&SubRow>, now: Timestamp) -> Option<Balance> {
    let (book, available, held, at, until) = kept;
    let holds = at <= now.millis() && now.millis() < until;
    (holds && !sub.is_some_and(|s| s.due(now))).then(|| Balance {
        available: Credits::from_millis(available),
        book: Credits::from_millis(book),
        held: Credits::from_millis(held),
    })
}

/// [`KeyCallerRow`] followed by the left-joined account's [`KeptRow`] (each `None` when
/// the account is gone) and its subscription.
type KeyBalanceRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<HolderRow>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<SubRow>,
);

impl KeyCaller {
    fn of(row: KeyCallerRow) -> Result<KeyCaller, StoreError> {
        let (key_id, account_id, member_id, signing_secret, last_used_at, account, member) = row;
        Ok(KeyCaller {
            key_id,
            account_id: AccountId::new(account_id),
            account_exists: account.is_some(),
            holder: joined_holder(member_id, member)?,
            signing_secret,
            last_used_at,
        })
    }
}

/// Inserts a key of `account` (held by `member`, or by the account itself).
pub(crate) fn insert_api_key(
    store: &Store,
    account: &AccountId,
    member: Option<&str>,
    key: &NewApiKey<'_>,
    now: Timestamp,
) -> Result<ApiKey, StoreError> {
    let id = new_id("key_");
    store.execute(diesel::insert_into(api_keys::table).values((
        api_keys::id.eq(&id),
        api_keys::account_id.eq(account.as_str()),
        api_keys::member_id.eq(member),
        api_keys::name.eq(key.name),
        api_keys::prefix.eq(key.prefix),
        api_keys::key_hash.eq(key.key_hash),
        api_keys::signing_secret.eq(key.signing_secret),
        api_keys::created_at.eq(now.millis()),
    )))?;
    Ok(ApiKey {
        id,
        account_id: account.as_str().to_owned(),
        name: key.name.to_owned(),
        prefix: key.prefix.to_owned(),
        created_at_ms: now.millis(),
        last_used_at_ms: None,
    })
}

impl Access<'_> {
    /// A session of the account itself, held by no member (what sessions made before
    /// members existed are).
    pub fn create_session(
        &self,
        account: &AccountId,
        token_hash: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.store
            .execute(diesel::insert_into(sessions::table).values((
                sessions::token_hash.eq(token_hash),
                sessions::account_id.eq(account.as_str()),
                sessions::created_at.eq(now.millis()),
                sessions::expires_at.eq(expires_at.millis()),
            )))?;
        Ok(())
    }

    /// The account of a live session.
    pub fn session_account(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<AccountId>, StoreError> {
        let mut conn = self.store.conn()?;
        Ok(sessions::table
            .filter(sessions::token_hash.eq(token_hash))
            .filter(sessions::revoked_at.is_null())
            .filter(sessions::expires_at.gt(now.millis()))
            .select(sessions::account_id)
            // `get_result`, not `first`: the token hash is the key, and SQLite re-prepares
            // a statement whose `LIMIT ?` is bound again on every call.
            .get_result::<String>(&mut *conn)
            .optional()?
            .map(AccountId::new))
    }

    pub fn revoke_session(&self, token_hash: &str, now: Timestamp) -> Result<bool, StoreError> {
        let n = self.store.execute(
            diesel::update(
                sessions::table
                    .filter(sessions::token_hash.eq(token_hash))
                    .filter(sessions::revoked_at.is_null()),
            )
            .set(sessions::revoked_at.eq(now.millis())),
        )?;
        Ok(n > 0)
    }

    /// A new API key of the account itself, held by no member.
    pub fn create_api_key(
        &self,
        account: &AccountId,
        key: &NewApiKey<'_>,
        now: Timestamp,
    ) -> Result<ApiKey, StoreError> {
        insert_api_key(self.store, account, None, key, now)
    }

    /// The account's live keys, newest first.
    pub fn api_keys(&self, account: &AccountId) -> Result<Vec<ApiKey>, StoreError> {
        self.store.records(
            api_keys::table
                .filter(api_keys::account_id.eq(account.as_str()))
                .filter(api_keys::revoked_at.is_null())
                .order((api_keys::created_at.desc(), api_keys::id.desc())),
        )
    }

    /// Revokes one of the account's keys; false when it has no such live key.
    pub fn revoke_api_key(
        &self,
        account: &AccountId,
        key_id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let n = self.store.execute(
            diesel::update(
                api_keys::table
                    .filter(api_keys::id.eq(key_id))
                    .filter(api_keys::account_id.eq(account.as_str()))
                    .filter(api_keys::revoked_at.is_null()),
            )
            .set(api_keys::revoked_at.eq(now.millis())),
        )?;
        Ok(n > 0)
    }

    /// The live key named by `by`, with its account and holder, in one indexed read (the
    /// key left-joined to its member and its account). It writes nothing: noting the use
    /// is [`Access::note_key_use`], which a caller runs off the request's path. A revoked
    /// key is `None` at once.
    pub fn key_caller(&self, by: KeyBy<'_>) -> Result<Option<KeyCaller>, StoreError> {
        let mut conn = self.store.conn()?;
        let query = api_keys::table
            .left_join(members::table.on(api_keys::member_id.eq(members::id.nullable())))
            .left_join(accounts::table.on(accounts::id.eq(api_keys::account_id)))
            .filter(api_keys::revoked_at.is_null())
            .select((
                api_keys::id,
                api_keys::account_id,
                api_keys::member_id,
                api_keys::signing_secret,
                api_keys::last_used_at,
                accounts::id.nullable(),
                Option::<HolderRow>::as_select(),
            ))
            .into_boxed();
        let query = match by {
            KeyBy::Hash(hash) => query.filter(api_keys::key_hash.eq(hash)),
            KeyBy::Id(id) => query.filter(api_keys::id.eq(id)),
        };
        // `get_result`, not `first`: the hash and the id are unique, and SQLite re-prepares
        // a statement whose `LIMIT ?` is bound again on every call (the planner reads the
        // bound limit), which was about 40 % of the CPU of an authenticated read.
        query
            .get_result::<KeyCallerRow>(&mut *conn)
            .optional()?
            .map(KeyCaller::of)
            .transpose()
    }

    /// [`Access::key_caller`] and the account's balance now (as `Ledger::balance` reads
    /// it), on one connection: one indexed read (the key left-joined to its member, its
    /// account's kept balance and its subscription) whenever the row's balance holds at
    /// `now`, else that read and then the balance folded. The balance is `None` when the
    /// key is not live or its account is gone. A request that reads the balance right
    /// after authenticating (`GET /api/v1/credits`, a cached screenshot) pays one store
    /// call for both.
    pub fn key_caller_and_balance(
        &self,
        by: KeyBy<'_>,
        now: Timestamp,
    ) -> Result<Option<(KeyCaller, Option<Balance>)>, StoreError> {
        let found = {
            let mut conn = self.store.conn()?;
            let query = api_keys::table
                .left_join(members::table.on(api_keys::member_id.eq(members::id.nullable())))
                .left_join(accounts::table.on(accounts::id.eq(api_keys::account_id)))
                .left_join(
                    subscriptions::table.on(subscriptions::account_id.eq(api_keys::account_id)),
                )
                .filter(api_keys::revoked_at.is_null())
                .select((
                    api_keys::id,
                    api_keys::account_id,
                    api_keys::member_id,
                    api_keys::signing_secret,
                    api_keys::last_used_at,
                    accounts::id.nullable(),
                    Option::<HolderRow>::as_select(),
                    accounts::balance.nullable(),
                    accounts::available.nullable(),
                    accounts::held.nullable(),
                    accounts::balance_at.nullable(),
                    accounts::balance_until.nullable(),
                    Option::<SubRow>::as_select(),
                ))
                .into_boxed();
            let query = match by {
                KeyBy::Hash(hash) => query.filter(api_keys::key_hash.eq(hash)),
                KeyBy::Id(id) => query.filter(api_keys::id.eq(id)),
            };
            // Unique keys throughout: no `LIMIT ?` (see `key_caller`).
            query.get_result::<KeyBalanceRow>(&mut *conn).optional()?
        };
        let Some((
            id,
            account_id,
            member_id,
            secret,
            used,
            account,
            member,
            b,
            a,
            h,
            at,
            until,
            sub,
        )) = found
        else {
            return Ok(None);
        };
        let caller = KeyCaller::of((id, account_id, member_id, secret, used, account, member))?;
        if !caller.account_exists || matches!(caller.holder, Holder::Removed) {
            return Ok(Some((caller, None)));
        }
        let kept = match (b, a, h, at, until) {
            (Some(b), Some(a), Some(h), Some(at), Some(until)) => Some((b, a, h, at, until)),
            _ => None,
        };
        let balance = match kept.and_then(|k| kept_at(k, sub.as_ref(), now)) {
            Some(kept) => kept,
            // The connection above is back in the pool: the fold takes its own.
            None => self.store.ledger().balance(&caller.account_id, now)?,
        };
        Ok(Some((caller, Some(balance))))
    }

    /// Notes a use of the key at `now` (bookkeeping, at most once a minute); false when it
    /// was not written: noted within the minute already, or left for a later use because
    /// another writer of this process holds SQLite's write lock (it never waits for one).
    pub fn note_key_use(&self, key_id: &str, now: Timestamp) -> Result<bool, StoreError> {
        let Some(_gate) = self.store.try_write_gate() else {
            return Ok(false);
        };
        let mut conn = self.store.conn()?;
        let n = diesel::update(
            api_keys::table.filter(api_keys::id.eq(key_id)).filter(
                api_keys::last_used_at
                    .is_null()
                    .or(api_keys::last_used_at.le(now.millis() - LAST_USED_RESOLUTION_MS)),
            ),
        )
        .set(api_keys::last_used_at.eq(now.millis()))
        .execute(&mut *conn)?;
        Ok(n > 0)
    }

    pub fn subscription(&self, account: &AccountId) -> Result<Option<Subscription>, StoreError> {
        self.store.first_record(
            subscriptions::table.filter(subscriptions::account_id.eq(account.as_str())),
        )
    }

    /// The account's maximum hard limit, when an operator set one.
    pub fn max_hard_limit(&self, account: &AccountId) -> Result<Option<Credits>, StoreError> {
        let mut conn = self.store.conn()?;
        Ok(account_limits::table
            .filter(account_limits::account_id.eq(account.as_str()))
            .select(account_limits::max_hard_limit)
            .first::<i64>(&mut *conn)
            .optional()?
            .map(Credits::from_millis))
    }

    pub fn set_max_hard_limit(
        &self,
        account: &AccountId,
        limit: Credits,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.store.write(|conn| {
            // Also orders this change with the account's ledger operations.
            crate::ledger::lock_account(conn, account)?;
            let n = diesel::update(
                account_limits::table.filter(account_limits::account_id.eq(account.as_str())),
            )
            .set((
                account_limits::max_hard_limit.eq(limit.millis()),
                account_limits::updated_at.eq(now.millis()),
            ))
            .execute(conn)?;
            if n == 0 {
                diesel::insert_into(account_limits::table)
                    .values((
                        account_limits::account_id.eq(account.as_str()),
                        account_limits::max_hard_limit.eq(limit.millis()),
                        account_limits::updated_at.eq(now.millis()),
                    ))
                    .execute(conn)?;
            }
            Ok(())
        })
    }
}

/// Sessions, API keys, subscriptions and limits: `store.access()`.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    store: &'a Store,
}

impl Store {
    /// Runs the read `f` on this thread, now, when it cannot wait: on SQLite (in WAL mode a
    /// read never waits for a writer), with connections already idle in the pool. `None`
    /// when it would have to wait (PostgreSQL, whose every statement is a round trip to
    /// another process; every connection taken; this thread holding one already): the
    /// caller then runs it where waiting is fine, a blocking thread. An async server
    /// serves its short reads this way without handing each to another thread and back.
    ///
    /// `f` only reads: it must not apply ledger operations or take the write gate.
    pub fn read_now<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Option<Result<T, StoreError>> {
        if self.backend != crate::Backend::Sqlite || crate::held::holding() {
            return None;
        }
        let (out, missed, taken) = crate::held::without_waiting(|| f(self));
        // What r2d2's checkout event tells the observer for a connection waited for.
        for _ in 0..taken {
            self.observer.acquired(std::time::Duration::ZERO);
        }
        (!missed).then_some(out)
    }

    /// Sessions, API keys, subscriptions and limits
    pub fn access(&self) -> Access<'_> {
        Access { store: self }
    }
}
