//! Notifications to customers (ADR 12): webhook endpoints, balance alerts and the durable
//! outbox of deliveries.
//!
//! An event is written as one `notification_deliveries` row per subscribed endpoint **in
//! the transaction of the ledger change that caused it** ([`enqueue_in_tx`]), so an event
//! exists exactly when its change committed. The balance alerts (`credits.low`,
//! `credits.depleted`) are decided by `ledger_core::AlertState` wherever an account's
//! balance is written ([`balance_written`]), under the account's row lock.
//!
//! A sender takes due rows with [`Notifications::claim_due`]: the oldest pending row of
//! each endpoint only (a later one waits while an earlier one of its endpoint is pending),
//! leased with a conditional update, so two senders (threads or processes) never hold the
//! same row at once. [`Notifications::finish`] records the attempt and schedules the next
//! one with `ledger_core::RetryPolicy`.

use std::collections::{BTreeSet, HashMap};

use diesel::prelude::*;
use ledger_core::{AccountId, AlertState, Credits, Event, RetryPolicy, Timestamp};

use crate::db::DbConnection;
use crate::error::StoreError;
use crate::ids::new_id;
use crate::ledger::{lock_account, TxError};
use crate::schema::{account_alerts, notification_deliveries, webhook_endpoints};
use crate::Store;

/// An endpoint of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub account_id: AccountId,
    pub url: String,
    pub events: Vec<Event>,
    /// The `whsec_...` signing secret.
    pub secret: String,
    pub created_at: Timestamp,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its (next) attempt.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every attempt allowed failed.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<DeliveryStatus, StoreError> {
        match s {
            "pending" => Ok(DeliveryStatus::Pending),
            "delivered" => Ok(DeliveryStatus::Delivered),
            "failed" => Ok(DeliveryStatus::Failed),
            other => Err(StoreError::corrupt(format!(
                "unknown delivery status {other:?}"
            ))),
        }
    }
}

/// One event for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Also the Standard Webhooks `webhook-id` (the same on every attempt).
    pub id: String,
    pub endpoint_id: String,
    pub account_id: AccountId,
    /// The endpoint's order: an endpoint's deliveries are sent by increasing `seq`.
    pub seq: i64,
    pub event: Event,
    /// The JSON body sent: `{"type","timestamp","data":{...}}`.
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub last_attempt_at: Option<Timestamp>,
    /// The HTTP status the endpoint answered last (`None`: none, e.g. it did not connect).
    pub response_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub created_at: Timestamp,
}

/// A delivery leased for sending, with where to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub delivery: Delivery,
    pub url: String,
    pub secret: String,
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The endpoint answered 2xx.
    Delivered { status: u16 },
    /// Anything else: a non-2xx answer (`status`), or no answer at all.
    Failed { status: Option<u16>, error: String },
}

type DeliveryRow = (
    String,
    String,
    String,
    i64,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    i64,
);

macro_rules! delivery_columns {
    () => {
        (
            notification_deliveries::id,
            notification_deliveries::endpoint_id,
            notification_deliveries::account_id,
            notification_deliveries::seq,
            notification_deliveries::event,
            notification_deliveries::payload,
            notification_deliveries::status,
            notification_deliveries::attempts,
            notification_deliveries::next_attempt_at,
            notification_deliveries::last_attempt_at,
            notification_deliveries::response_status,
            notification_deliveries::last_error,
            notification_deliveries::created_at,
        )
    };
}

fn delivery(r: DeliveryRow) -> Result<Delivery, StoreError> {
    let (id, endpoint_id, account_id, seq, event, payload, status, attempts, next, last, resp) =
        (r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10);
    Ok(Delivery {
        id,
        endpoint_id,
        account_id: AccountId::new(account_id),
        seq,
        event: event.parse().map_err(StoreError::corrupt)?,
        payload,
        status: DeliveryStatus::parse(&status)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at: Timestamp::from_millis(next),
        last_attempt_at: last.map(Timestamp::from_millis),
        response_status: resp.and_then(|s| u16::try_from(s).ok()),
        last_error: r.11,
        created_at: Timestamp::from_millis(r.12),
    })
}

type EndpointRow = (String, String, String, String, String, i64);

macro_rules! endpoint_columns {
    () => {
        (
            webhook_endpoints::id,
            webhook_endpoints::account_id,
            webhook_endpoints::url,
            webhook_endpoints::events,
            webhook_endpoints::secret,
            webhook_endpoints::created_at,
        )
    };
}

fn endpoint(r: EndpointRow) -> Result<Endpoint, StoreError> {
    Ok(Endpoint {
        id: r.0,
        account_id: AccountId::new(r.1),
        url: r.2,
        events: parse_events(&r.3)?,
        secret: r.4,
        created_at: Timestamp::from_millis(r.5),
    })
}

fn parse_events(text: &str) -> Result<Vec<Event>, StoreError> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(StoreError::corrupt))
        .collect()
}

fn join_events(events: &[Event]) -> String {
    let set: BTreeSet<Event> = events.iter().copied().collect();
    set.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(",")
}

/// `notification_deliveries.status = 'pending'` as a literal, so the partial index
/// `notification_deliveries_pending` applies (see `ledger::open_grants`).
fn pending() -> diesel::expression::SqlLiteral<diesel::sql_types::Bool> {
    diesel::dsl::sql("notification_deliveries.status = 'pending'")
}

type AlertRow = (String, Option<i64>, bool, bool);

/// The alert state of each of `ids` that has an `account_alerts` row (one query).
pub(crate) fn load_alerts<'a>(
    conn: &mut DbConnection,
    ids: impl IntoIterator<Item = &'a AccountId>,
) -> Result<HashMap<AccountId, AlertState>, TxError> {
    let ids: Vec<&str> = ids.into_iter().map(AccountId::as_str).collect();
    let columns = (
        account_alerts::account_id,
        account_alerts::low_balance_credits,
        account_alerts::low_notified,
        account_alerts::depleted_notified,
    );
    let mut rows: Vec<AlertRow> = Vec::new();
    if let DbConnection::Sqlite(_) = conn {
        // One point read an account, a statement prepared once (`IN (?, ?, ...)` is a
        // statement of its own length on SQLite, prepared afresh every batch: issue 11).
        for id in &ids {
            rows.extend(
                account_alerts::table
                    .filter(account_alerts::account_id.eq(id))
                    .select(columns)
                    // `load`, not `first`: SQLite prepares a statement with a bound
                    // `LIMIT ?` again on every execution.
                    .load::<AlertRow>(conn)?,
            );
        }
    } else {
        for chunk in ids.chunks(1000) {
            rows.extend(
                account_alerts::table
                    .filter(account_alerts::account_id.eq_any(chunk))
                    .select(columns)
                    .load::<AlertRow>(conn)?,
            );
        }
    }
    let mut found = HashMap::new();
    {
        for (id, low, low_notified, depleted_notified) in rows {
            found.insert(
                AccountId::new(id),
                AlertState {
                    low_balance: low.map(Credits::from_millis),
                    low_notified,
                    depleted_notified,
                },
            );
        }
    }
    Ok(found)
}

/// The account's balance was just written as `available` (under its row lock, in the
/// writing transaction): applies the alert rule to the account's alert state (`known`,
/// when the caller read it already: `Some(None)` means the account has no alerts row,
/// `None` that it is not read yet), records the new state and enqueues the events it
/// calls for. Accounts without an alerts row (no endpoint and no threshold ever set)
/// cost this one read at most.
pub(crate) fn balance_written(
    conn: &mut DbConnection,
    id: &AccountId,
    known: &mut Option<Option<AlertState>>,
    available: Credits,
    now: Timestamp,
) -> Result<(), TxError> {
    let state = match known {
        Some(state) => *state,
        None => load_alerts(conn, [id])?.remove(id),
    };
    let Some(state) = state else {
        *known = Some(None);
        return Ok(());
    };
    let (next, events) = state.after_balance(available);
    *known = Some(Some(next));
    if next != state {
        diesel::update(account_alerts::table.filter(account_alerts::account_id.eq(id.as_str())))
            .set((
                account_alerts::low_notified.eq(next.low_notified),
                account_alerts::depleted_notified.eq(next.depleted_notified),
                account_alerts::updated_at.eq(now.millis()),
            ))
            .execute(conn)?;
    }
    for event in events {
        let mut data = serde_json::Map::new();
        if let (Event::CreditsLow, Some(threshold)) = (event, next.low_balance) {
            data.insert("lowBalanceCredits".into(), json(threshold));
        }
        enqueue_in_tx(conn, id, event, available, data, now)?;
    }
    Ok(())
}

/// [`balance_written`] for the paths that write a book outside the engine (a paid order,
/// a refund, a plan's new period), which have not read the alert state.
pub(crate) fn book_written(
    conn: &mut DbConnection,
    id: &AccountId,
    available: Credits,
    now: Timestamp,
) -> Result<(), TxError> {
    balance_written(conn, id, &mut None, available, now)
}

/// A value as JSON (credits as the contract writes them: a number, up to three decimals).
pub(crate) fn json<T: serde::Serialize>(value: T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// Writes `event` for every live endpoint of `account` subscribed to it, inside the
/// caller's transaction (the durable outbox): the body is `{"type", "timestamp", "data":
/// {"accountId", "balance", ...data}}`. Each row takes its endpoint's next sequence number.
pub(crate) fn enqueue_in_tx(
    conn: &mut DbConnection,
    account: &AccountId,
    event: Event,
    balance: Credits,
    data: serde_json::Map<String, serde_json::Value>,
    now: Timestamp,
) -> Result<usize, TxError> {
    let endpoints: Vec<(String, String)> = webhook_endpoints::table
        .filter(webhook_endpoints::account_id.eq(account.as_str()))
        .filter(webhook_endpoints::deleted_at.is_null())
        .select((webhook_endpoints::id, webhook_endpoints::events))
        .order(webhook_endpoints::id)
        .load(conn)?;
    let subscribed: Vec<String> = endpoints
        .into_iter()
        .filter(|(_, events)| events.split(',').any(|e| e == event.as_str()))
        .map(|(id, _)| id)
        .collect();
    if subscribed.is_empty() {
        return Ok(0);
    }
    let mut body = serde_json::Map::new();
    body.insert("accountId".into(), json(account.as_str()));
    body.insert("balance".into(), json(balance));
    body.extend(data);
    let payload = serde_json::json!({
        "type": event.as_str(),
        "timestamp": now.rfc3339(),
        "data": body,
    })
    .to_string();
    for endpoint_id in &subscribed {
        let seq: i64 =
            diesel::update(webhook_endpoints::table.filter(webhook_endpoints::id.eq(endpoint_id)))
                .set(webhook_endpoints::next_seq.eq(webhook_endpoints::next_seq + 1))
                .returning(webhook_endpoints::next_seq)
                .get_result(conn)?;
        diesel::insert_into(notification_deliveries::table)
            .values((
                notification_deliveries::id.eq(new_id("msg_")),
                notification_deliveries::endpoint_id.eq(endpoint_id),
                notification_deliveries::account_id.eq(account.as_str()),
                notification_deliveries::seq.eq(seq),
                notification_deliveries::event.eq(event.as_str()),
                notification_deliveries::payload.eq(&payload),
                notification_deliveries::status.eq(DeliveryStatus::Pending.as_str()),
                notification_deliveries::attempts.eq(0),
                notification_deliveries::next_attempt_at.eq(now.millis()),
                notification_deliveries::lease_until.eq(0),
                notification_deliveries::created_at.eq(now.millis()),
            ))
            .execute(conn)?;
    }
    Ok(subscribed.len())
}

/// Makes sure the account has an alerts row (so `credits.depleted` is tracked), under
/// its row lock.
fn ensure_alerts(conn: &mut DbConnection, id: &AccountId, now: Timestamp) -> Result<(), TxError> {
    let exists = account_alerts::table
        .filter(account_alerts::account_id.eq(id.as_str()))
        .select(account_alerts::account_id)
        .first::<String>(conn)
        .optional()?
        .is_some();
    if !exists {
        diesel::insert_into(account_alerts::table)
            .values((
                account_alerts::account_id.eq(id.as_str()),
                account_alerts::low_notified.eq(false),
                account_alerts::depleted_notified.eq(false),
                account_alerts::updated_at.eq(now.millis()),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Webhook endpoints, balance alerts and the delivery outbox: `store.notifications()`.
#[derive(Debug, Clone, Copy)]
pub struct Notifications<'a> {
    store: &'a Store,
}

impl Store {
    /// Webhook endpoints, balance alerts and the delivery outbox.
    pub fn notifications(&self) -> Notifications<'_> {
        Notifications { store: self }
    }
}

impl Notifications<'_> {
    /// Registers an endpoint of `account` for `events` (kept as a set), signed with
    /// `secret`.
    pub fn create_endpoint(
        &self,
        account: &AccountId,
        url: &str,
        events: &[Event],
        secret: &str,
        now: Timestamp,
    ) -> Result<Endpoint, StoreError> {
        let events_text = join_events(events);
        let id = new_id("wh_");
        self.store.write(|conn| {
            lock_account(conn, account)?;
            ensure_alerts(conn, account, now)?;
            diesel::insert_into(webhook_endpoints::table)
                .values((
                    webhook_endpoints::id.eq(&id),
                    webhook_endpoints::account_id.eq(account.as_str()),
                    webhook_endpoints::url.eq(url),
                    webhook_endpoints::events.eq(&events_text),
                    webhook_endpoints::secret.eq(secret),
                    webhook_endpoints::next_seq.eq(0),
                    webhook_endpoints::created_at.eq(now.millis()),
                ))
                .execute(conn)?;
            Ok(())
        })?;
        Ok(Endpoint {
            id,
            account_id: account.clone(),
            url: url.to_owned(),
            events: parse_events(&events_text)?,
            secret: secret.to_owned(),
            created_at: now,
        })
    }

    /// The account's live endpoints, oldest first.
    pub fn endpoints(&self, account: &AccountId) -> Result<Vec<Endpoint>, StoreError> {
        let mut conn = self.store.conn()?;
        let rows: Vec<EndpointRow> = webhook_endpoints::table
            .filter(webhook_endpoints::account_id.eq(account.as_str()))
            .filter(webhook_endpoints::deleted_at.is_null())
            .order((webhook_endpoints::created_at, webhook_endpoints::id))
            .select(endpoint_columns!())
            .load(&mut *conn)?;
        rows.into_iter().map(endpoint).collect()
    }

    /// One live endpoint of the account.
    pub fn endpoint(&self, account: &AccountId, id: &str) -> Result<Option<Endpoint>, StoreError> {
        let mut conn = self.store.conn()?;
        let row: Option<EndpointRow> = webhook_endpoints::table
            .filter(webhook_endpoints::id.eq(id))
            .filter(webhook_endpoints::account_id.eq(account.as_str()))
            .filter(webhook_endpoints::deleted_at.is_null())
            .select(endpoint_columns!())
            .first(&mut *conn)
            .optional()?;
        row.map(endpoint).transpose()
    }

    /// Deletes a live endpoint of the account (false: there is none with that id). Its
    /// pending deliveries are never sent.
    pub fn delete_endpoint(
        &self,
        account: &AccountId,
        id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let n = self.store.execute(
            diesel::update(
                webhook_endpoints::table
                    .filter(webhook_endpoints::id.eq(id))
                    .filter(webhook_endpoints::account_id.eq(account.as_str()))
                    .filter(webhook_endpoints::deleted_at.is_null()),
            )
            .set(webhook_endpoints::deleted_at.eq(now.millis())),
        )?;
        Ok(n == 1)
    }

    /// The account's `credits.low` threshold (`None`: off).
    pub fn low_balance(&self, account: &AccountId) -> Result<Option<Credits>, StoreError> {
        let mut conn = self.store.conn()?;
        Ok(account_alerts::table
            .filter(account_alerts::account_id.eq(account.as_str()))
            .select(account_alerts::low_balance_credits)
            .first::<Option<i64>>(&mut *conn)
            .optional()?
            .flatten()
            .map(Credits::from_millis))
    }

    /// Sets the account's `credits.low` threshold (`None` turns it off) and re-arms it:
    /// the next balance change below it notifies, even when the balance is below already.
    pub fn set_low_balance(
        &self,
        account: &AccountId,
        threshold: Option<Credits>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.store.write(|conn| {
            lock_account(conn, account)?;
            ensure_alerts(conn, account, now)?;
            diesel::update(
                account_alerts::table.filter(account_alerts::account_id.eq(account.as_str())),
            )
            .set((
                account_alerts::low_balance_credits.eq(threshold.map(Credits::millis)),
                account_alerts::low_notified.eq(false),
                account_alerts::updated_at.eq(now.millis()),
            ))
            .execute(conn)?;
            Ok(())
        })
    }

    /// Writes `event` for the account's subscribed endpoints in a transaction of its own
    /// (under the account's lock); how many rows were written. For events that have no
    /// ledger change of their own, and tests.
    pub fn enqueue(
        &self,
        account: &AccountId,
        event: Event,
        balance: Credits,
        data: serde_json::Map<String, serde_json::Value>,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        self.store.write(|conn| {
            lock_account(conn, account)?;
            enqueue_in_tx(conn, account, event, balance, data, now)
        })
    }

    /// The deliveries of one endpoint of the account (deleted ones too), newest first;
    /// `None` when the account has no such endpoint.
    pub fn deliveries(
        &self,
        account: &AccountId,
        endpoint_id: &str,
        limit: i64,
    ) -> Result<Option<Vec<Delivery>>, StoreError> {
        let mut conn = self.store.conn()?;
        let found = webhook_endpoints::table
            .filter(webhook_endpoints::id.eq(endpoint_id))
            .filter(webhook_endpoints::account_id.eq(account.as_str()))
            .select(webhook_endpoints::id)
            .first::<String>(&mut *conn)
            .optional()?;
        if found.is_none() {
            return Ok(None);
        }
        let rows: Vec<DeliveryRow> = notification_deliveries::table
            .filter(notification_deliveries::endpoint_id.eq(endpoint_id))
            .order(notification_deliveries::seq.desc())
            .limit(limit)
            .select(delivery_columns!())
            .load(&mut *conn)?;
        rows.into_iter()
            .map(delivery)
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// Leases up to `limit` due deliveries for `lease_ms`: of each live endpoint only its
    /// oldest pending delivery, when it is due (`next_attempt_at <= now`) and not leased
    /// by another sender. Each lease is a conditional update, so of two senders racing
    /// for a row exactly one gets it.
    pub fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let mut pooled = self.store.conn()?;
        let conn = &mut *pooled;
        let heads: Vec<(String, Option<i64>)> = notification_deliveries::table
            .inner_join(webhook_endpoints::table)
            .filter(pending())
            .filter(webhook_endpoints::deleted_at.is_null())
            .group_by(notification_deliveries::endpoint_id)
            .select((
                notification_deliveries::endpoint_id,
                diesel::dsl::min(notification_deliveries::seq),
            ))
            .load(conn)?;
        let heads: HashMap<String, i64> = heads
            .into_iter()
            .filter_map(|(e, s)| Some((e, s?)))
            .collect();
        if heads.is_empty() {
            return Ok(Vec::new());
        }
        let mut candidates: Vec<(DeliveryRow, String, String)> = Vec::new();
        let endpoints: Vec<&String> = heads.keys().collect();
        for chunk in endpoints.chunks(500) {
            let seqs: Vec<i64> = chunk.iter().map(|e| heads[*e]).collect();
            let rows: Vec<(DeliveryRow, (String, String), i64)> = notification_deliveries::table
                .inner_join(webhook_endpoints::table)
                .filter(pending())
                .filter(notification_deliveries::endpoint_id.eq_any(chunk))
                .filter(notification_deliveries::seq.eq_any(&seqs))
                .filter(notification_deliveries::next_attempt_at.le(now.millis()))
                .filter(notification_deliveries::lease_until.le(now.millis()))
                .select((
                    delivery_columns!(),
                    (webhook_endpoints::url, webhook_endpoints::secret),
                    notification_deliveries::lease_until,
                ))
                .load(conn)?;
            candidates.extend(
                rows.into_iter()
                    .filter(|(r, _, _)| heads.get(&r.1) == Some(&r.3))
                    .map(|(r, (url, secret), _)| (r, url, secret)),
            );
        }
        candidates.sort_by_key(|(r, _, _)| (r.8, r.12, r.3));
        drop(pooled);
        let until = now.millis().saturating_add(lease_ms);
        let claimed = self.store.write(|conn| {
            let mut claimed = Vec::new();
            for (row, url, secret) in candidates {
                if claimed.len() >= limit {
                    break;
                }
                let n = diesel::update(
                    notification_deliveries::table
                        .filter(notification_deliveries::id.eq(&row.0))
                        .filter(pending())
                        .filter(notification_deliveries::lease_until.le(now.millis()))
                        .filter(notification_deliveries::next_attempt_at.le(now.millis())),
                )
                .set(notification_deliveries::lease_until.eq(until))
                .execute(conn)?;
                if n == 1 {
                    claimed.push(Claimed {
                        delivery: delivery(row)?,
                        url,
                        secret,
                    });
                }
            }
            Ok(claimed)
        })?;
        Ok(claimed)
    }

    /// Records an attempt of a pending delivery: delivered, or failed and due again after
    /// `policy`'s backoff, or failed for good once its attempts are spent. False when the
    /// delivery is not pending (another sender finished it first).
    pub fn finish(
        &self,
        id: &str,
        attempt: &Attempt,
        policy: &RetryPolicy,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.store.write(|conn| {
            let attempts: Option<i64> = notification_deliveries::table
                .filter(notification_deliveries::id.eq(id))
                .filter(pending())
                .select(notification_deliveries::attempts)
                .first(conn)
                .optional()?;
            let Some(attempts) = attempts else {
                return Ok(false);
            };
            let attempts = attempts.saturating_add(1);
            let (status, next, response, error) = match attempt {
                Attempt::Delivered { status } => (
                    DeliveryStatus::Delivered,
                    now.millis(),
                    Some(i64::from(*status)),
                    None,
                ),
                Attempt::Failed { status, error } => {
                    let wait = policy.retry_after_ms(u32::try_from(attempts).unwrap_or(u32::MAX));
                    let status_now = match wait {
                        Some(_) => DeliveryStatus::Pending,
                        None => DeliveryStatus::Failed,
                    };
                    let next = now.millis().saturating_add(wait.unwrap_or(0));
                    (status_now, next, status.map(i64::from), Some(error.clone()))
                }
            };
            diesel::update(
                notification_deliveries::table.filter(notification_deliveries::id.eq(id)),
            )
            .set((
                notification_deliveries::status.eq(status.as_str()),
                notification_deliveries::attempts.eq(attempts),
                notification_deliveries::next_attempt_at.eq(next),
                notification_deliveries::lease_until.eq(0),
                notification_deliveries::last_attempt_at.eq(now.millis()),
                notification_deliveries::response_status.eq(response),
                notification_deliveries::last_error.eq(error),
            ))
            .execute(conn)?;
            Ok(true)
        })
    }
}
