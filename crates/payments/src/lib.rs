//! # payments
//!
//! Buying credit packs, and turning the payment provider's signed webhooks into ledger
//! entries exactly once.
//!
//! - [`signature`]: Standard Webhooks verification over the raw body (both of Polar's
//!   secret encodings, several signatures per header, ±5 minutes, constant time).
//! - [`polar`]: Polar's API (checkouts, orders) and the payload types we read.
//! - [`subscriptions`]: provider-managed subscriptions and overage reporting, behind
//!   [`SubscriptionBook`] (implemented by the store); see [`Payments::with_subscriptions`].
//! - [`PaymentsConfig`]: what it is configured with, as plain values (the programs build it
//!   from their settings; this crate does not read the configuration).
//! - [`Payments`]: the facade the api-server and the webhook receiver call: checkouts
//!   (Polar when its access token is set; local demo checkouts only when
//!   `payments.provider = "demo"` asks for them; otherwise none, and nothing can be
//!   bought), storing and processing deliveries, reconcile, and auto top-up.
//!
//! Exactly-once crediting is the store's job (`ledger_store::payments`): one row per
//! order id, locked by every event about that order, written in the same transaction as
//! the ledger entry. See README.md.

mod config;
mod delivery;
mod error;
pub mod polar;
mod service;
pub mod signature;
mod store_book;
pub mod subscriptions;

pub use config::{PaymentsConfig, ProviderChoice};
pub use delivery::{envelope, new_webhook_id, SignedDelivery};
pub use error::{CheckoutError, PaymentsError, PAYMENTS_NOT_CONFIGURED};
pub use service::{
    now, AutoTopupRequest, AutoTopupView, ChargeResult, DemoCharger, DemoCheckout, Payments,
    Received, ReconcileReport, SavedMethodCharger, DEMO_SECRET_NAME, DEMO_WARNING,
    NO_PROVIDER_NO_TOPUP, POLAR_NO_SAVED_METHOD,
};
pub use service::{DemoSubscription, SubscriptionReconcile};
pub use signature::{SignedHeaders, WebhookSecret, TOLERANCE_SECS};
pub use store_book::StoreBook;
pub use subscriptions::{
    ChangeRequested, OverageReport, PlanOffer, ReportOutcome, ReportSummary, SubscriptionBook,
    SubscriptionConfig, SubscriptionUpdate, UpdateOutcome,
};
