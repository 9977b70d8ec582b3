//! Who may act for an account: login sessions and API keys (both stored only as hashes),
//! and the account's subscription and limits.

use diesel::prelude::*;
use ledger_core::{AccountId, Credits, SubscriptionStatus, Timestamp};

use crate::error::StoreError;
use crate::ids::new_id;
use crate::schema::{account_limits, accounts, api_keys, sessions, subscriptions};
use crate::Store;

/// An API key as listed (the key itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub prefix: String,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub(crate) struct ApiKeyRow {
    id: String,
    account_id: String,
    name: String,
    prefix: String,
    created_at: i64,
    last_used_at: Option<i64>,
}

impl From<ApiKeyRow> for ApiKey {
    fn from(r: ApiKeyRow) -> ApiKey {
        ApiKey {
            id: r.id,
            account_id: r.account_id,
            name: r.name,
            prefix: r.prefix,
            created_at_ms: r.created_at,
            last_used_at_ms: r.last_used_at,
        }
    }
}

/// An account's subscription to a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub account_id: String,
    pub id: String,
    pub plan_id: String,
    pub status: SubscriptionStatus,
    pub hard_limit: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = subscriptions)]
struct SubscriptionRow {
    account_id: String,
    id: String,
    plan_id: String,
    status: String,
    hard_limit: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<SubscriptionRow> for Subscription {
    type Error = StoreError;
    fn try_from(r: SubscriptionRow) -> Result<Subscription, StoreError> {
        Ok(Subscription {
            status: r.status.parse().map_err(StoreError::corrupt)?,
            account_id: r.account_id,
            id: r.id,
            plan_id: r.plan_id,
            hard_limit: r.hard_limit,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// How often `last_used_at` of a key is written at most (a write per request would make
/// every read a write).
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

impl Access<'_> {
    pub fn create_session(
        &self,
        account: &AccountId,
        token_hash: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut conn = self.store.conn()?;
        diesel::insert_into(sessions::table)
            .values((
                sessions::token_hash.eq(token_hash),
                sessions::account_id.eq(account.as_str()),
                sessions::created_at.eq(now.millis()),
                sessions::expires_at.eq(expires_at.millis()),
            ))
            .execute(&mut *conn)?;
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
            .first::<String>(&mut *conn)
            .optional()?
            .map(AccountId::new))
    }

    pub fn revoke_session(&self, token_hash: &str, now: Timestamp) -> Result<bool, StoreError> {
        let mut conn = self.store.conn()?;
        let n = diesel::update(
            sessions::table
                .filter(sessions::token_hash.eq(token_hash))
                .filter(sessions::revoked_at.is_null()),
        )
        .set(sessions::revoked_at.eq(now.millis()))
        .execute(&mut *conn)?;
        Ok(n > 0)
    }

    pub fn create_api_key(
        &self,
        account: &AccountId,
        name: &str,
        prefix: &str,
        key_hash: &str,
        now: Timestamp,
    ) -> Result<ApiKey, StoreError> {
        let mut conn = self.store.conn()?;
        let id = new_id("key_");
        diesel::insert_into(api_keys::table)
            .values((
                api_keys::id.eq(&id),
                api_keys::account_id.eq(account.as_str()),
                api_keys::name.eq(name),
                api_keys::prefix.eq(prefix),
                api_keys::key_hash.eq(key_hash),
                api_keys::created_at.eq(now.millis()),
            ))
            .execute(&mut *conn)?;
        Ok(ApiKey {
            id,
            account_id: account.as_str().to_owned(),
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            created_at_ms: now.millis(),
            last_used_at_ms: None,
        })
    }

    /// The account's live keys, newest first.
    pub fn api_keys(&self, account: &AccountId) -> Result<Vec<ApiKey>, StoreError> {
        let mut conn = self.store.conn()?;
        Ok(api_keys::table
            .filter(api_keys::account_id.eq(account.as_str()))
            .filter(api_keys::revoked_at.is_null())
            .order((api_keys::created_at.desc(), api_keys::id.desc()))
            .select(ApiKeyRow::as_select())
            .load(&mut *conn)?
            .into_iter()
            .map(ApiKey::from)
            .collect())
    }

    /// Revokes one of the account's keys; false when it has no such live key.
    pub fn revoke_api_key(
        &self,
        account: &AccountId,
        key_id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut conn = self.store.conn()?;
        let n = diesel::update(
            api_keys::table
                .filter(api_keys::id.eq(key_id))
                .filter(api_keys::account_id.eq(account.as_str()))
                .filter(api_keys::revoked_at.is_null()),
        )
        .set(api_keys::revoked_at.eq(now.millis()))
        .execute(&mut *conn)?;
        Ok(n > 0)
    }

    /// The account and key id of a live key, noting its use (at most once a minute).
    ///
    /// Noting the use is bookkeeping: it never fails the lookup. When it cannot be written
    /// (a database that refuses writes, a full disk) it is logged and skipped, and when
    /// another writer of this process holds SQLite's write lock it is left for a later
    /// request rather than making a read wait.
    pub fn api_key_account(
        &self,
        key_hash: &str,
        now: Timestamp,
    ) -> Result<Option<(AccountId, String)>, StoreError> {
        let mut conn = self.store.conn()?;
        let found: Option<(String, String, Option<i64>)> = api_keys::table
            .filter(api_keys::key_hash.eq(key_hash))
            .filter(api_keys::revoked_at.is_null())
            .select((api_keys::id, api_keys::account_id, api_keys::last_used_at))
            .first(&mut *conn)
            .optional()?;
        let Some((id, account, last_used)) = found else {
            return Ok(None);
        };
        if last_used.is_none_or(|t| now.millis() - t >= LAST_USED_RESOLUTION_MS) {
            if let Some(_gate) = self.store.try_write_gate() {
                let noted = diesel::update(api_keys::table.filter(api_keys::id.eq(&id)))
                    .set(api_keys::last_used_at.eq(now.millis()))
                    .execute(&mut *conn);
                if let Err(error) = noted {
                    tracing::warn!(key_id = %id, %error, "could not note the API key's last use; the request goes on");
                }
            }
        }
        Ok(Some((AccountId::new(account), id)))
    }

    pub fn subscription(&self, account: &AccountId) -> Result<Option<Subscription>, StoreError> {
        let mut conn = self.store.conn()?;
        subscriptions::table
            .filter(subscriptions::account_id.eq(account.as_str()))
            .select(SubscriptionRow::as_select())
            .first(&mut *conn)
            .optional()?
            .map(Subscription::try_from)
            .transpose()
    }

    /// Creates or changes the account's subscription (its id stays the same), and stamps
    /// the plan's name on the account's future entries.
    pub fn put_subscription(
        &self,
        account: &AccountId,
        plan_id: &str,
        plan_name: &str,
        status: SubscriptionStatus,
        now: Timestamp,
    ) -> Result<Subscription, StoreError> {
        self.store.write(|conn| {
            // Also orders this change with the account's ledger operations.
            crate::ledger::lock_account(conn, account)?;
            let current = subscriptions::table
                .filter(subscriptions::account_id.eq(account.as_str()))
                .select(subscriptions::id)
                .first::<String>(conn)
                .optional()?;
            match &current {
                Some(_) => {
                    diesel::update(
                        subscriptions::table.filter(subscriptions::account_id.eq(account.as_str())),
                    )
                    .set((
                        subscriptions::plan_id.eq(plan_id),
                        subscriptions::status.eq(status.as_str()),
                        subscriptions::updated_at.eq(now.millis()),
                    ))
                    .execute(conn)?;
                }
                None => {
                    diesel::insert_into(subscriptions::table)
                        .values((
                            subscriptions::account_id.eq(account.as_str()),
                            subscriptions::id.eq(new_id("sub_")),
                            subscriptions::plan_id.eq(plan_id),
                            subscriptions::status.eq(status.as_str()),
                            subscriptions::created_at.eq(now.millis()),
                            subscriptions::updated_at.eq(now.millis()),
                        ))
                        .execute(conn)?;
                }
            }
            let stamped = status.stamps_plan().then_some(plan_name);
            diesel::update(accounts::table.filter(accounts::id.eq(account.as_str())))
                .set(accounts::plan_name.eq(stamped))
                .execute(conn)?;
            Ok(subscriptions::table
                .filter(subscriptions::account_id.eq(account.as_str()))
                .select(SubscriptionRow::as_select())
                .first(conn)?
                .try_into()?)
        })
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
    /// Sessions, API keys, subscriptions and limits
    pub fn access(&self) -> Access<'_> {
        Access { store: self }
    }
}
