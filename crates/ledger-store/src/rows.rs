//! Row structs (Diesel) and their conversions to and from the core's types. Nothing
//! outside this crate sees a row.

use diesel::prelude::*;
use ledger_core::{
    AccountId, Allocation, AutoTopup, Cents, Credits, Entry, EntryId, Grant, GrantId, Hold, HoldId,
    PackId, Timestamp,
};

use crate::error::StoreError;
use crate::payments::{
    AutoTopupSettings, CheckoutRecord, PaymentOrder, Refusal, StoredDelivery, TopupCharge,
};
use crate::schema::{
    accounts, auto_topup_charges, auto_topups, entries, grants, holds, idempotency_keys,
    payment_checkouts, payment_orders, payment_refusals, webhook_deliveries,
};

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
    // Derived `Serialize` over ids, a unit variant and `Credits` (an integer or a finite
    // float), with no maps: serde_json has nothing to fail on.
    #[allow(clippy::expect_used)]
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

// ---------------------------------------------------------------------------------------
// Payments

/// A stored status spelling to its enum; a spelling the code does not know is corrupt.
fn parse<T: std::str::FromStr<Err = String>>(text: &str) -> Result<T, StoreError> {
    text.parse().map_err(StoreError::corrupt)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_deliveries)]
pub(crate) struct DeliveryRow {
    pub webhook_id: String,
    pub event_type: String,
    pub body: String,
    pub received_at: i64,
    pub attempts: i64,
    pub processed_at: Option<i64>,
    pub outcome: Option<String>,
}

impl From<DeliveryRow> for StoredDelivery {
    fn from(r: DeliveryRow) -> StoredDelivery {
        StoredDelivery {
            webhook_id: r.webhook_id,
            event_type: r.event_type,
            body: r.body,
            received_at: Timestamp::from_millis(r.received_at),
            attempts: r.attempts,
            processed_at: r.processed_at.map(Timestamp::from_millis),
            outcome: r.outcome,
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = payment_orders)]
pub(crate) struct PaymentOrderRow {
    pub order_id: String,
    pub kind: String,
    pub account_id: Option<String>,
    pub pack_id: Option<String>,
    pub paid_cents: Option<i64>,
    pub credits: i64,
    pub credit_entry_id: Option<String>,
    pub paid_at: Option<i64>,
    pub refunded_cents: i64,
    pub clawed_back: i64,
    pub owed: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TryFrom<PaymentOrderRow> for PaymentOrder {
    type Error = StoreError;
    fn try_from(r: PaymentOrderRow) -> Result<PaymentOrder, StoreError> {
        Ok(PaymentOrder {
            kind: parse(&r.kind)?,
            order_id: r.order_id,
            account_id: r.account_id.map(AccountId::new),
            pack_id: r.pack_id.map(PackId::new),
            paid_cents: r.paid_cents,
            credits: r.credits,
            credit_entry_id: r.credit_entry_id.map(EntryId::new),
            paid_at: r.paid_at.map(Timestamp::from_millis),
            refunded_cents: r.refunded_cents,
            clawed_back: r.clawed_back,
            owed: r.owed,
            created_at: Timestamp::from_millis(r.created_at),
            updated_at: Timestamp::from_millis(r.updated_at),
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = payment_checkouts)]
pub(crate) struct CheckoutRow {
    pub id: String,
    pub provider: String,
    pub account_id: String,
    pub pack_id: String,
    pub credits: i64,
    pub price_cents: i64,
    pub url: String,
    pub status: String,
    pub order_id: Option<String>,
    pub created_at: i64,
    pub paid_at: Option<i64>,
    pub product_id: Option<String>,
    pub currency: Option<String>,
}

impl From<&CheckoutRecord> for CheckoutRow {
    fn from(c: &CheckoutRecord) -> CheckoutRow {
        CheckoutRow {
            id: c.id.clone(),
            provider: c.provider.as_str().to_owned(),
            account_id: c.account_id.as_str().to_owned(),
            pack_id: c.pack_id.as_str().to_owned(),
            credits: c.credits,
            price_cents: c.price_cents,
            url: c.url.clone(),
            status: c.status.as_str().to_owned(),
            order_id: c.order_id.clone(),
            created_at: c.created_at,
            paid_at: c.paid_at,
            product_id: c.product_id.clone(),
            currency: c.currency.clone(),
        }
    }
}

impl TryFrom<CheckoutRow> for CheckoutRecord {
    type Error = StoreError;
    fn try_from(r: CheckoutRow) -> Result<CheckoutRecord, StoreError> {
        Ok(CheckoutRecord {
            provider: parse(&r.provider)?,
            status: parse(&r.status)?,
            id: r.id,
            account_id: AccountId::new(r.account_id),
            pack_id: PackId::new(r.pack_id),
            credits: r.credits,
            price_cents: r.price_cents,
            url: r.url,
            order_id: r.order_id,
            created_at: r.created_at,
            paid_at: r.paid_at,
            product_id: r.product_id,
            currency: r.currency,
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = payment_refusals)]
pub(crate) struct RefusalRow {
    pub order_id: String,
    pub source: String,
    pub reason: String,
    pub checkout_id: Option<String>,
    pub account_id: Option<String>,
    pub order_json: String,
    pub first_seen_at: i64,
    pub last_seen_at: i64,
    pub times_seen: i64,
}

impl TryFrom<RefusalRow> for Refusal {
    type Error = StoreError;
    fn try_from(r: RefusalRow) -> Result<Refusal, StoreError> {
        Ok(Refusal {
            source: parse(&r.source)?,
            order_id: r.order_id,
            reason: r.reason,
            checkout_id: r.checkout_id,
            account_id: r.account_id,
            order_json: r.order_json,
            first_seen_at: r.first_seen_at,
            last_seen_at: r.last_seen_at,
            times_seen: r.times_seen,
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = auto_topups)]
pub(crate) struct AutoTopupRow {
    pub account_id: String,
    pub enabled: bool,
    pub threshold: i64,
    pub pack_id: String,
    pub credits: i64,
    pub price_cents: i64,
    pub status: String,
    pub paused_reason: Option<String>,
    pub updated_at: i64,
}

impl TryFrom<AutoTopupRow> for AutoTopupSettings {
    type Error = StoreError;
    fn try_from(r: AutoTopupRow) -> Result<AutoTopupSettings, StoreError> {
        Ok(AutoTopupSettings {
            topup: AutoTopup {
                enabled: r.enabled,
                threshold: Credits::from_millis(r.threshold),
                pack_id: PackId::new(r.pack_id),
                credits: Credits::from_millis(r.credits),
                price: Cents::new(r.price_cents),
                status: parse(&r.status)?,
            },
            account_id: AccountId::new(r.account_id),
            paused_reason: r.paused_reason,
            updated_at: Timestamp::from_millis(r.updated_at),
        })
    }
}

impl From<&AutoTopupSettings> for AutoTopupRow {
    fn from(s: &AutoTopupSettings) -> AutoTopupRow {
        AutoTopupRow {
            account_id: s.account_id.as_str().to_owned(),
            enabled: s.topup.enabled,
            threshold: s.topup.threshold.millis(),
            pack_id: s.topup.pack_id.as_str().to_owned(),
            credits: s.topup.credits.millis(),
            price_cents: s.topup.price.get(),
            status: s.topup.status.as_str().to_owned(),
            paused_reason: s.paused_reason.clone(),
            updated_at: s.updated_at.millis(),
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = auto_topup_charges)]
pub(crate) struct TopupChargeRow {
    pub id: String,
    pub account_id: String,
    pub pack_id: String,
    pub credits: i64,
    pub price_cents: i64,
    pub status: String,
    pub reason: Option<String>,
    pub created_at: i64,
    pub settled_at: Option<i64>,
}

impl TryFrom<TopupChargeRow> for TopupCharge {
    type Error = StoreError;
    fn try_from(r: TopupChargeRow) -> Result<TopupCharge, StoreError> {
        Ok(TopupCharge {
            status: parse(&r.status)?,
            id: r.id,
            account_id: AccountId::new(r.account_id),
            pack_id: PackId::new(r.pack_id),
            credits: Credits::from_millis(r.credits),
            price: Cents::new(r.price_cents),
            reason: r.reason,
            created_at: Timestamp::from_millis(r.created_at),
            settled_at: r.settled_at.map(Timestamp::from_millis),
        })
    }
}

impl From<&TopupCharge> for TopupChargeRow {
    fn from(c: &TopupCharge) -> TopupChargeRow {
        TopupChargeRow {
            id: c.id.clone(),
            account_id: c.account_id.as_str().to_owned(),
            pack_id: c.pack_id.as_str().to_owned(),
            credits: c.credits.millis(),
            price_cents: c.price.get(),
            status: c.status.as_str().to_owned(),
            reason: c.reason.clone(),
            created_at: c.created_at.millis(),
            settled_at: c.settled_at.map(Timestamp::millis),
        }
    }
}
