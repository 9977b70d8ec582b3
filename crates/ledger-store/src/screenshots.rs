//! Screenshot requests that carry an `Idempotency-Key`. A key is claimed before any work
//! starts (so two concurrent requests with one key cannot both capture and charge), and
//! the finished answer is kept so a replay answers exactly as the first time did.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use ledger_core::{AccountId, Credits, Timestamp};

use crate::error::StoreError;
use crate::schema::screenshot_requests;
use crate::Store;

/// How long a claimed key whose request never finished (the server died) blocks retries.
/// Its hold has expired by then, so nothing was charged.
pub const ABANDONED_AFTER_MS: i64 = 15 * 60 * 1000;

/// The first answer to a screenshot request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScreenshotAnswer {
    pub status_code: u16,
    pub content_type: String,
    /// The cached object holding the image (successes).
    pub object: Option<String>,
    /// The JSON body (failures).
    pub error_body: Option<String>,
    pub charged: Credits,
    pub cache_status: String,
    pub screenshot_id: String,
}

/// What to do with a keyed screenshot request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is now ours: do the work, then [`Screenshots::finish_screenshot_request`].
    Fresh,
    /// Answered before: send this again.
    Replay(ScreenshotAnswer),
    /// The same request is still running elsewhere.
    InProgress,
    /// The key was used with a different request.
    Conflict,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = screenshot_requests)]
struct Row {
    fingerprint: String,
    state: String,
    status_code: Option<i64>,
    content_type: Option<String>,
    object: Option<String>,
    error_body: Option<String>,
    charged: i64,
    cache_status: Option<String>,
    screenshot_id: String,
    created_at: i64,
}

/// The request of `account` under `key`.
#[diesel::dsl::auto_type]
fn keyed<'a>(account: &'a AccountId, key: &'a str) -> _ {
    let account: &'a str = account.as_str();
    screenshot_requests::table
        .filter(screenshot_requests::account_id.eq(account))
        .filter(screenshot_requests::idempotency_key.eq(key))
}

impl Screenshots<'_> {
    /// Claims `key` for a request, or says why not.
    pub fn claim_screenshot_request(
        &self,
        account: &AccountId,
        key: &str,
        fingerprint: &str,
        screenshot_id: &str,
        now: Timestamp,
    ) -> Result<Claim, StoreError> {
        use screenshot_requests::dsl as t;
        let _gate = self.store.write_gate()?;
        let mut conn = self.store.conn()?;
        let inserted = diesel::insert_into(t::screenshot_requests)
            .values((
                t::account_id.eq(account.as_str()),
                t::idempotency_key.eq(key),
                t::fingerprint.eq(fingerprint),
                t::state.eq("pending"),
                t::screenshot_id.eq(screenshot_id),
                t::created_at.eq(now.millis()),
            ))
            .execute(&mut *conn);
        match inserted {
            Ok(_) => return Ok(Claim::Fresh),
            Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {}
            Err(e) => return Err(e.into()),
        }
        let row = keyed(account, key)
            .select(Row::as_select())
            .first(&mut *conn)?;
        if row.fingerprint != fingerprint {
            return Ok(Claim::Conflict);
        }
        if row.state == "done" {
            return Ok(Claim::Replay(ScreenshotAnswer {
                status_code: row.status_code.unwrap_or(500) as u16,
                content_type: row
                    .content_type
                    .unwrap_or_else(|| "application/json".into()),
                object: row.object,
                error_body: row.error_body,
                charged: Credits::from_millis(row.charged),
                cache_status: row.cache_status.unwrap_or_else(|| "MISS".into()),
                screenshot_id: row.screenshot_id,
            }));
        }
        if now.millis() - row.created_at < ABANDONED_AFTER_MS {
            return Ok(Claim::InProgress);
        }
        // Abandoned by a server that died mid-request: take it over.
        let n = diesel::update(
            keyed(account, key)
                .filter(t::state.eq("pending"))
                .filter(t::created_at.eq(row.created_at)),
        )
        .set((
            t::created_at.eq(now.millis()),
            t::screenshot_id.eq(screenshot_id),
        ))
        .execute(&mut *conn)?;
        Ok(if n == 1 {
            Claim::Fresh
        } else {
            Claim::InProgress
        })
    }

    /// Records the answer of a claimed request.
    pub fn finish_screenshot_request(
        &self,
        account: &AccountId,
        key: &str,
        answer: &ScreenshotAnswer,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        use screenshot_requests::dsl as t;
        let _gate = self.store.write_gate()?;
        self.store
            .execute(diesel::update(keyed(account, key)).set((
                t::state.eq("done"),
                t::status_code.eq(i64::from(answer.status_code)),
                t::content_type.eq(&answer.content_type),
                t::object.eq(&answer.object),
                t::error_body.eq(&answer.error_body),
                t::charged.eq(answer.charged.millis()),
                t::cache_status.eq(&answer.cache_status),
                t::finished_at.eq(now.millis()),
            )))?;
        Ok(())
    }

    /// Lets a claimed key go without an answer (the request was refused before any work,
    /// e.g. the capture queue was full), so the client may retry with the same key.
    pub fn forget_screenshot_request(
        &self,
        account: &AccountId,
        key: &str,
    ) -> Result<(), StoreError> {
        use screenshot_requests::dsl as t;
        let _gate = self.store.write_gate()?;
        self.store.execute(diesel::delete(
            keyed(account, key).filter(t::state.eq("pending")),
        ))?;
        Ok(())
    }
}

/// Keyed screenshot requests: `store.screenshots()`.
#[derive(Debug, Clone, Copy)]
pub struct Screenshots<'a> {
    store: &'a Store,
}

impl Store {
    /// Keyed screenshot requests
    pub fn screenshots(&self) -> Screenshots<'_> {
        Screenshots { store: self }
    }
}
