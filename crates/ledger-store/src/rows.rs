//! Row structs (Diesel) and their conversions to and from the core's types. Nothing
//! outside this crate sees a row.

use diesel::prelude::*;
use ledger_core::{
    AccountId, Allocation, Credits, Entry, EntryId, Grant, GrantId, Hold, HoldId, Timestamp,
};

use crate::error::StoreError;
use crate::schema::{accounts, entries, grants, holds, idempotency_keys};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = accounts)]
pub(crate) struct AccountRow {
    pub id: String,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub created_at: i64,
    pub balance: i64,
    pub overdraft: i64,
    pub overdraft_limit: i64,
    pub last_seq: i64,
    pub compacted_balance: i64,
    pub compacted_seq: i64,
    pub plan_name: Option<String>,
    pub version: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = grants)]
pub(crate) struct GrantRow {
    pub id: String,
    pub account_id: String,
    pub source: String,
    pub amount: i64,
    pub remaining: i64,
    pub priority: i64,
    pub effective_at: i64,
    pub expires_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = holds)]
pub(crate) struct HoldRow {
    pub id: String,
    pub account_id: String,
    pub amount: i64,
    pub captured: i64,
    pub status: String,
    pub description: String,
    pub reference_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub settled_at: Option<i64>,
    pub allocations: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = entries)]
pub(crate) struct EntryRow {
    pub id: String,
    pub account_id: String,
    pub seq: i64,
    pub kind: String,
    pub amount: i64,
    pub balance_after: i64,
    pub description: String,
    pub reference_id: Option<String>,
    pub source: String,
    pub plan: Option<String>,
    pub created_at: i64,
    pub hold_id: Option<String>,
    pub refund_of: Option<String>,
    pub allocations: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = idempotency_keys)]
pub(crate) struct IdempotencyRow {
    pub account_id: String,
    pub scope: String,
    pub key: String,
    pub fingerprint: String,
    pub outcome: String,
    pub created_at: i64,
}

fn encode_allocations(a: &[Allocation]) -> String {
    serde_json::to_string(a).expect("allocations always serialize")
}

fn decode_allocations(owner: &str, text: &str) -> Result<Vec<Allocation>, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::corrupt(format!("allocations of {owner}: {e}")))
}

impl From<&Grant> for GrantRow {
    fn from(g: &Grant) -> GrantRow {
        GrantRow {
            id: g.id.as_str().to_owned(),
            account_id: g.account_id.as_str().to_owned(),
            source: g.source.as_str().to_owned(),
            amount: g.amount.millis(),
            remaining: g.remaining.millis(),
            priority: i64::from(g.priority),
            effective_at: g.effective_at.millis(),
            expires_at: g.expires_at.map(Timestamp::millis),
            created_at: g.created_at.millis(),
        }
    }
}

impl TryFrom<GrantRow> for Grant {
    type Error = StoreError;
    fn try_from(r: GrantRow) -> Result<Grant, StoreError> {
        Ok(Grant {
            source: r.source.parse().map_err(StoreError::corrupt)?,
            priority: i32::try_from(r.priority).map_err(|e| StoreError::corrupt(e.to_string()))?,
            id: GrantId::new(r.id),
            account_id: AccountId::new(r.account_id),
            amount: Credits::from_millis(r.amount),
            remaining: Credits::from_millis(r.remaining),
            effective_at: Timestamp::from_millis(r.effective_at),
            expires_at: r.expires_at.map(Timestamp::from_millis),
            created_at: Timestamp::from_millis(r.created_at),
        })
    }
}

impl From<&Hold> for HoldRow {
    fn from(h: &Hold) -> HoldRow {
        HoldRow {
            id: h.id.as_str().to_owned(),
            account_id: h.account_id.as_str().to_owned(),
            amount: h.amount.millis(),
            captured: h.captured.millis(),
            status: h.status.as_str().to_owned(),
            description: h.description.clone(),
            reference_id: h.reference_id.clone(),
            created_at: h.created_at.millis(),
            expires_at: h.expires_at.millis(),
            settled_at: h.settled_at.map(Timestamp::millis),
            allocations: encode_allocations(&h.allocations),
        }
    }
}

impl TryFrom<HoldRow> for Hold {
    type Error = StoreError;
    fn try_from(r: HoldRow) -> Result<Hold, StoreError> {
        Ok(Hold {
            allocations: decode_allocations(&r.id, &r.allocations)?,
            status: r.status.parse().map_err(StoreError::corrupt)?,
            id: HoldId::new(r.id),
            account_id: AccountId::new(r.account_id),
            amount: Credits::from_millis(r.amount),
            captured: Credits::from_millis(r.captured),
            description: r.description,
            reference_id: r.reference_id,
            created_at: Timestamp::from_millis(r.created_at),
            expires_at: Timestamp::from_millis(r.expires_at),
            settled_at: r.settled_at.map(Timestamp::from_millis),
        })
    }
}

impl From<&Entry> for EntryRow {
    fn from(e: &Entry) -> EntryRow {
        EntryRow {
            id: e.id.as_str().to_owned(),
            account_id: e.account_id.as_str().to_owned(),
            seq: e.seq,
            kind: e.kind.as_str().to_owned(),
            amount: e.amount.millis(),
            balance_after: e.balance_after.millis(),
            description: e.description.clone(),
            reference_id: e.reference_id.clone(),
            source: e.source.clone(),
            plan: e.plan.clone(),
            created_at: e.created_at.millis(),
            hold_id: e.hold_id.as_ref().map(|h| h.as_str().to_owned()),
            refund_of: e.refund_of.as_ref().map(|r| r.as_str().to_owned()),
            allocations: encode_allocations(&e.allocations),
        }
    }
}

impl TryFrom<EntryRow> for Entry {
    type Error = StoreError;
    fn try_from(r: EntryRow) -> Result<Entry, StoreError> {
        Ok(Entry {
            allocations: decode_allocations(&r.id, &r.allocations)?,
            kind: r.kind.parse().map_err(StoreError::corrupt)?,
            id: EntryId::new(r.id),
            account_id: AccountId::new(r.account_id),
            seq: r.seq,
            amount: Credits::from_millis(r.amount),
            balance_after: Credits::from_millis(r.balance_after),
            description: r.description,
            reference_id: r.reference_id,
            source: r.source,
            plan: r.plan,
            created_at: Timestamp::from_millis(r.created_at),
            hold_id: r.hold_id.map(HoldId::new),
            refund_of: r.refund_of.map(EntryId::new),
        })
    }
}
