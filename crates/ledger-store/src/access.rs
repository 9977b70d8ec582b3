//! Who may act for an account: login sessions and API keys (both stored only as hashes),
//! and the account's subscription and limits.

use diesel::prelude::*;
use ledger_core::{AccountId, Credits, SubscriptionStatus, Timestamp};

use crate::error::StoreError;
use crate::ids::new_id;
use crate::rows::stored_record;
use crate::schema::{account_limits, api_keys, sessions, subscriptions};
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
            .first::<String>(&mut *conn)
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
    /// Sessions, API keys, subscriptions and limits
    pub fn access(&self) -> Access<'_> {
        Access { store: self }
    }
}
