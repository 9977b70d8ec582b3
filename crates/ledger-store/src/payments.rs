//! The payment records the store keeps, as plain types: webhook deliveries, provider
//! orders and their refunds, checkouts, refused orders and auto top-up. The rules around
//! them are in `ledger_core::orders` and `ledger_core::topup` (and `crates/payments`);
//! the repository is [`crate::Orders`] (`store.orders()`).

use ledger_core::{AccountId, AutoTopup, Cents, Credits, EntryId, PackId, Timestamp};

pub use ledger_core::{ChargeStatus, TopupStatus};

use crate::rows::stored_record;

// ---------------------------------------------------------------------------------------
// Deliveries

/// What storing a delivery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryReceipt {
    /// First time this webhook id is seen; it is now stored, unprocessed.
    New,
    /// Seen before (a retry, a redelivery or a concurrent duplicate).
    Duplicate { processed: bool },
}

/// Where a stored delivery stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryState {
    /// Stored, not processed yet (or its processing failed and is retried).
    Unprocessed,
    /// Processed, with the outcome kept for operators.
    Processed { at: Timestamp, outcome: String },
}

stored_record! {
    /// A stored webhook delivery.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct StoredDelivery in webhook_deliveries as DeliveryRow {
        pub webhook_id: String,
        pub event_type: String,
        /// The raw body, exactly as signed.
        pub body: String,
        pub received_at: Timestamp,
        pub attempts: i64,
        pub processed_at: Option<Timestamp>,
        pub outcome: Option<String>,
    }
}

impl StoredDelivery {
    pub fn state(&self) -> DeliveryState {
        match self.processed_at {
            None => DeliveryState::Unprocessed,
            Some(at) => DeliveryState::Processed {
                at,
                outcome: self.outcome.clone().unwrap_or_default(),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// Orders and refunds

/// What a paid order buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderKind {
    /// A credit pack bought through a checkout (entry type `purchase`).
    Purchase,
    /// A pack bought by auto top-up (entry type `auto_topup`).
    AutoTopup,
}

ledger_core::spelled_enum!(OrderKind, "order kind", Purchase => "purchase", AutoTopup => "auto_topup");

impl OrderKind {
    pub(crate) fn grant_source(self) -> ledger_core::GrantSource {
        match self {
            OrderKind::Purchase => ledger_core::GrantSource::Purchase,
            OrderKind::AutoTopup => ledger_core::GrantSource::AutoTopup,
        }
    }
}

/// A paid order to credit, resolved against the catalogue by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidOrder {
    /// The provider's order id: the business key (and the entry's `referenceId`).
    pub order_id: String,
    pub kind: OrderKind,
    pub account_id: AccountId,
    pub pack_id: PackId,
    /// The pack's credits (never an amount from the payload).
    pub credits: Credits,
    /// What the customer paid, before tax, in cents: the base of refund shares.
    pub paid_cents: i64,
    /// The entry's description (`Purchased 1,000 credits`).
    pub description: String,
    /// Our checkout the order paid, marked paid in the same transaction as the credit.
    pub checkout_id: Option<String>,
}

/// What applying a paid order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaidOutcome {
    /// Credited now; refunds recorded earlier were settled in the same transaction.
    Credited {
        entry_id: EntryId,
        taken_back: Credits,
        owed: Credits,
    },
    /// Credited before: nothing changed.
    AlreadyCredited { entry_id: EntryId },
    /// The account does not exist (any more): nothing credited.
    UnknownAccount,
    /// The order was refused before (`refuse_order`): it is left for an operator and
    /// never credited automatically.
    Refused { reason: String },
    /// Its checkout was already paid by another order: one checkout buys one pack.
    /// Nothing credited.
    CheckoutAlreadyPaid { by_order: String },
}

/// How a refund is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundAmount {
    /// One succeeded refund (`refund.created` / `refund.updated`), keyed by its id.
    Single { refund_id: String, cents: i64 },
    /// The order's cumulative `refunded_amount` (`order.refunded`).
    Cumulative { cents: i64 },
}

/// What recording a refund did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    /// The order is not credited yet: the refund is kept and settled when it is.
    Pending,
    /// Credits were taken back now (`owed`: the part the account did not have).
    TookBack { taken: Credits, owed: Credits },
    /// Nothing new (a repeat, or a smaller cumulative amount than already seen).
    NothingNew,
}

stored_record! {
    /// An order as the store keeps it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct PaymentOrder in payment_orders as PaymentOrderRow {
        pub order_id: String,
        pub kind: OrderKind,
        pub account_id: Option<AccountId>,
        pub pack_id: Option<PackId>,
        pub paid_cents: Option<i64>,
        /// Credits granted, in thousandths (0 until paid).
        pub credits: i64,
        pub credit_entry_id: Option<EntryId>,
        pub paid_at: Option<Timestamp>,
        /// The largest cumulative `refunded_amount` seen.
        pub refunded_cents: i64,
        /// Credits taken back so far, in thousandths.
        pub clawed_back: i64,
        /// Credits due back that the account did not have, in thousandths.
        pub owed: i64,
        pub created_at: Timestamp,
        pub updated_at: Timestamp,
    }
}

// ---------------------------------------------------------------------------------------
// Checkouts

/// Who sells a checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutProvider {
    Polar,
    /// Local test payments: no money moves.
    Demo,
}

ledger_core::spelled_enum!(CheckoutProvider, "payment provider", Polar => "polar", Demo => "demo");

/// Where a checkout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutStatus {
    Open,
    /// Paid by one order (`order_id`); one checkout buys one pack.
    Paid,
}

ledger_core::spelled_enum!(CheckoutStatus, "checkout status", Open => "open", Paid => "paid");

stored_record! {
    /// A checkout we created.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct CheckoutRecord in payment_checkouts as CheckoutRow {
        pub id: String,
        pub provider: CheckoutProvider,
        pub account_id: AccountId,
        pub pack_id: PackId,
        /// The pack's credits, in thousandths.
        pub credits: i64,
        pub price_cents: i64,
        pub url: String,
        pub status: CheckoutStatus,
        pub order_id: Option<String>,
        /// Milliseconds since the epoch.
        pub created_at: i64,
        pub paid_at: Option<i64>,
        /// The provider's product we asked it to sell (`None` for demo checkouts, and for
        /// checkouts recorded before this column existed).
        pub product_id: Option<String>,
        /// The checkout's currency as the provider answered it (lower case, e.g. `usd`).
        pub currency: Option<String>,
    }
}

// ---------------------------------------------------------------------------------------
// Refused orders

/// Where a refused order was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalSource {
    Webhook,
    Reconcile,
}

ledger_core::spelled_enum!(RefusalSource, "refusal source", Webhook => "webhook", Reconcile => "reconcile");

/// A paid order that did not match our checkout record (or matched none), to keep for an
/// operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefusal {
    pub order_id: String,
    pub source: RefusalSource,
    /// Why, in words an operator can act on.
    pub reason: String,
    pub checkout_id: Option<String>,
    /// The account our checkout record names, if there is one.
    pub account_id: Option<String>,
    /// The order as the provider sent it (JSON).
    pub order_json: String,
}

stored_record! {
    /// A refused order as stored.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Refusal in payment_refusals as RefusalRow {
        pub order_id: String,
        pub source: RefusalSource,
        pub reason: String,
        pub checkout_id: Option<String>,
        pub account_id: Option<AccountId>,
        pub order_json: String,
        pub first_seen_at: Timestamp,
        pub last_seen_at: Timestamp,
        pub times_seen: i64,
    }
}

/// What `refuse_order` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalOutcome {
    /// Recorded; `first`: the first time this order was refused.
    Recorded { first: bool },
    /// The order was credited before: nothing is recorded (and nothing taken back).
    AlreadyCredited { entry_id: EntryId },
}

// ---------------------------------------------------------------------------------------
// Auto top-up

/// An account's saved auto top-up: the settings the core's rule reads, and bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoTopupSettings {
    pub account_id: AccountId,
    pub topup: AutoTopup,
    pub paused_reason: Option<String>,
    pub updated_at: Timestamp,
}

stored_record! {
    /// One auto top-up charge.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct TopupCharge in auto_topup_charges as TopupChargeRow {
        pub id: String,
        pub account_id: AccountId,
        pub pack_id: PackId,
        pub credits: Credits,
        pub price: Cents => price_cents,
        pub status: ChargeStatus,
        pub reason: Option<String>,
        pub created_at: Timestamp,
        pub settled_at: Option<Timestamp>,
    }
}

/// The pack an auto top-up buys, as the caller's catalogue says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopupPack {
    pub pack_id: PackId,
    pub credits: Credits,
    pub price_cents: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_back_their_stored_spelling() {
        for k in [OrderKind::Purchase, OrderKind::AutoTopup] {
            assert_eq!(k.as_str().parse::<OrderKind>(), Ok(k));
        }
        for p in [CheckoutProvider::Polar, CheckoutProvider::Demo] {
            assert_eq!(p.as_str().parse::<CheckoutProvider>(), Ok(p));
        }
        for s in [CheckoutStatus::Open, CheckoutStatus::Paid] {
            assert_eq!(s.as_str().parse::<CheckoutStatus>(), Ok(s));
        }
        for s in [RefusalSource::Webhook, RefusalSource::Reconcile] {
            assert_eq!(s.as_str().parse::<RefusalSource>(), Ok(s));
        }
        assert!("stripe".parse::<CheckoutProvider>().is_err());
        assert!(CheckoutStatus::Paid == "paid");
    }
}
