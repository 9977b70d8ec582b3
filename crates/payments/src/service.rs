//! [`Payments`]: what the api-server and the webhook receiver call.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{PaymentsConfig, ProviderChoice};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ledger_core::{AccountId, Catalogue, CreditPack, Credits, Timestamp};
use ledger_store::payments::{
    AutoTopupSettings, CheckoutProvider, CheckoutRecord, CheckoutStatus, DeliveryReceipt,
    DeliveryState, NewRefusal, OrderKind, PaidOrder, PaidOutcome, RefundAmount, RefundOutcome,
    RefusalOutcome, RefusalSource, TopupCharge, TopupPack, TopupStatus,
};
use ledger_store::{new_id, Store, StoreError};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::delivery::{envelope, new_webhook_id, SignedDelivery};
use crate::error::{CheckoutError, PaymentsError};
use crate::polar::{CheckoutCreate, Envelope, Order, PolarClient, Refund, META_ACCOUNT, META_PACK};
use crate::polar::{IngestEvent, SubscriptionPatch};
use crate::signature::{verify, SignedHeaders, WebhookSecret};
use crate::subscriptions::{
    not_applicable, report_backoff_secs, to_update, ChangeRequested, PlanOffer, ReportOutcome,
    ReportSummary, Subscription, SubscriptionBook, SubscriptionConfig, UpdateOutcome, META_PLAN,
    SUBSCRIPTION_EVENTS,
};

/// Where the demo signing secret is kept (`payment_secrets`).
pub const DEMO_SECRET_NAME: &str = "demo_webhook_secret";

/// Why a pending auto top-up is declined when no payment provider is configured.
pub const NO_PROVIDER_NO_TOPUP: &str = "Auto top-up is paused: no payment provider is configured on this server (polar.access_token or payments.provider)";

/// The warning both programs log at start when demo payments are on.
pub const DEMO_WARNING: &str = "DEMO PAYMENTS ARE ON (payments.provider = \"demo\"): purchases are local test checkouts, no money moves, and anyone who can reach the webhook-receiver's /demo/checkout pages can add credits to an account for free. Never run this in production: set payments.provider to \"\" or \"polar\" and configure polar.access_token";

/// Why Polar cannot run auto top-up (answered as 409).
pub const POLAR_NO_SAVED_METHOD: &str = "Auto top-up is not available with Polar: Polar's API cannot charge a customer's saved payment method without the customer present (every purchase goes through a checkout session the customer completes)";

/// The clock, in milliseconds since the Unix epoch.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Timestamp::from_millis(ms)
}

#[derive(Debug, Clone)]
enum Provider {
    /// No provider (the built-in default): nothing can be bought, nothing mints credits.
    None,
    Polar(PolarClient),
    /// Local test payments: no money moves. Only when `payments.provider = "demo"`.
    Demo,
}

impl Provider {
    /// The name checkouts are recorded under.
    fn name(&self) -> &'static str {
        self.kind().map_or("none", CheckoutProvider::as_str)
    }

    /// The provider checkouts record; `None` sells nothing.
    fn kind(&self) -> Option<CheckoutProvider> {
        match self {
            Provider::None => None,
            Provider::Polar(_) => Some(CheckoutProvider::Polar),
            Provider::Demo => Some(CheckoutProvider::Demo),
        }
    }
}

/// Where a paid order came from (kept with a refusal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Webhook,
    Reconcile,
}

impl Source {
    fn stored(self) -> RefusalSource {
        match self {
            Source::Webhook => RefusalSource::Webhook,
            Source::Reconcile => RefusalSource::Reconcile,
        }
    }

    fn as_str(self) -> &'static str {
        self.stored().as_str()
    }
}

/// A verified delivery, stored (or recognised as a duplicate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub webhook_id: String,
    pub event_type: String,
    pub receipt: DeliveryReceipt,
}

/// What a demo checkout page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoCheckout {
    pub id: String,
    pub pack_name: String,
    pub credits: Credits,
    pub price_cents: i64,
    pub paid: bool,
}

/// The answer of [`Payments::reconcile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileReport {
    /// Paid one-time orders Polar listed.
    pub orders: u64,
    /// Of those, credited now (the receiver had missed them).
    pub credited: u64,
    /// Refunds applied now.
    pub refunds: u64,
    /// Of those, refused (they do not match a checkout of ours; kept for an operator).
    pub refused: u64,
}

/// What `GET /api/v1/credits/auto-topup` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoTopupView {
    pub enabled: bool,
    pub threshold_credits: Credits,
    pub pack_id: Option<String>,
    /// `disabled`, `active`, `pending` (a top-up is being paid) or `paused`.
    pub status: String,
    pub paused_reason: Option<String>,
}

impl AutoTopupView {
    fn of(row: Option<AutoTopupSettings>) -> AutoTopupView {
        match row {
            None => AutoTopupView {
                enabled: false,
                threshold_credits: Credits::ZERO,
                pack_id: None,
                status: "disabled".into(),
                paused_reason: None,
            },
            Some(r) => AutoTopupView {
                enabled: r.topup.enabled,
                threshold_credits: r.topup.threshold,
                pack_id: Some(r.topup.pack_id.into_string()),
                status: match (r.topup.enabled, r.topup.status) {
                    (_, TopupStatus::Paused) => "paused".into(),
                    (_, TopupStatus::Pending) => "pending".into(),
                    (false, TopupStatus::Idle) => "disabled".into(),
                    (true, TopupStatus::Idle) => "active".into(),
                },
                paused_reason: r.paused_reason,
            },
        }
    }
}

/// What `PUT /api/v1/credits/auto-topup` sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoTopupRequest {
    pub enabled: bool,
    pub threshold_credits: Credits,
    pub pack_id: String,
}

/// How a saved-method charge went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeResult {
    /// Payment confirmed: credit the pack.
    Paid,
    /// Payment refused: pause auto top-up with this reason.
    Declined(String),
    /// No answer yet: try again later.
    Later,
}

/// A provider that charges a customer's saved payment method off-session.
pub trait SavedMethodCharger: Send + Sync {
    fn charge(&self, charge: &TopupCharge) -> ChargeResult;
}

/// The demo provider's "saved card": every charge succeeds, no money moves.
#[derive(Debug, Default, Clone, Copy)]
pub struct DemoCharger;

impl SavedMethodCharger for DemoCharger {
    fn charge(&self, _charge: &TopupCharge) -> ChargeResult {
        ChargeResult::Paid
    }
}

/// Payments on one database: checkouts, webhook processing, reconcile, auto top-up.
#[derive(Debug, Clone)]
pub struct Payments {
    store: Store,
    catalogue: Catalogue,
    provider: Provider,
    /// The webhook secret (Polar's, or the demo one). `None`: Polar mode without
    /// `polar.webhook_secret` (the api-server does not need it; the receiver refuses to
    /// start).
    secret: Option<WebhookSecret>,
    /// The raw demo secret (demo mode only), to sign demo deliveries.
    demo_secret: Option<String>,
    public_url: String,
    success_url: String,
    /// How often the receiver asks Polar for paid orders it may have missed.
    reconcile_every: Option<std::time::Duration>,
    /// Provider-managed subscriptions and overage reporting, once wired
    /// ([`Payments::with_subscriptions`]).
    subs: Option<Subs>,
}

/// The subscription side: the store's book and the plans on sale.
#[derive(Clone)]
struct Subs {
    book: Arc<dyn SubscriptionBook>,
    config: SubscriptionConfig,
}

impl std::fmt::Debug for Subs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subs")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Payments {
    /// The provider `config.provider` names (from the settings' `payment_provider`: Polar
    /// when `polar.access_token` is set, the demo provider only when `payments.provider =
    /// "demo"` asks for it, else none: nothing can be bought, nothing mints credits). In
    /// demo mode the webhook
    /// secret is `polar.webhook_secret` when set, else one generated on first start and
    /// kept in the database (so every process of the deployment shares it), and a loud
    /// warning ([`DEMO_WARNING`]) is logged: both programs build their `Payments` here at
    /// start.
    pub fn new(config: &PaymentsConfig, store: Store) -> Result<Payments, PaymentsError> {
        let catalogue = config.catalogue.clone();
        let configured = config.webhook_secret.trim();
        let token = config.access_token.trim();
        let (provider, secret, demo_secret) = match config.provider {
            ProviderChoice::Demo => {
                tracing::warn!("{DEMO_WARNING}");
                let raw = if configured.is_empty() {
                    let mut key = [0u8; 32];
                    getrandom::fill(&mut key)
                        .map_err(|e| PaymentsError::Config(format!("no random source: {e}")))?;
                    let candidate = format!("whsec_{}", STANDARD.encode(key));
                    store
                        .orders()
                        .payment_secret(DEMO_SECRET_NAME, &candidate, now())?
                } else {
                    configured.to_owned()
                };
                (Provider::Demo, Some(WebhookSecret::new(&raw)), Some(raw))
            }
            ProviderChoice::Polar => {
                let client = PolarClient::new(
                    &config.polar_api_url,
                    token,
                    Duration::from_secs(config.timeout_secs.max(1)),
                );
                let secret = (!configured.is_empty()).then(|| WebhookSecret::new(configured));
                (Provider::Polar(client), secret, None)
            }
            ProviderChoice::None => {
                tracing::warn!("payments are off: no payment provider is configured, so credit packs cannot be bought and webhooks are refused (set polar.access_token and polar.webhook_secret for Polar, or payments.provider = \"demo\" for local test payments)");
                (Provider::None, None, None)
            }
        };
        Ok(Payments {
            store,
            catalogue,
            provider,
            secret,
            demo_secret,
            public_url: config.public_url.trim_end_matches('/').to_owned(),
            success_url: config.success_url.clone(),
            reconcile_every: Some(config.reconcile_interval_secs)
                .filter(|s| *s > 0)
                .map(std::time::Duration::from_secs),
            subs: None,
        })
    }

    /// Wires provider-managed subscriptions: subscription webhooks are applied to `book`,
    /// plans are sold and changed through the provider as `config` says, and
    /// [`Payments::report_overage`] reports `book`'s pending overage items.
    pub fn with_subscriptions(
        mut self,
        book: Arc<dyn SubscriptionBook>,
        config: SubscriptionConfig,
    ) -> Payments {
        self.subs = Some(Subs { book, config });
        self
    }

    /// The plans on sale, once subscriptions are wired.
    pub fn subscription_config(&self) -> Option<&SubscriptionConfig> {
        self.subs.as_ref().map(|s| &s.config)
    }

    /// How often to reconcile with Polar: `None` unless Polar is the provider, or when
    /// `polar.reconcile_interval_secs` is 0.
    pub fn reconcile_every(&self) -> Option<std::time::Duration> {
        self.reconcile_every
            .filter(|_| matches!(self.provider, Provider::Polar(_)))
    }

    pub fn is_demo(&self) -> bool {
        matches!(self.provider, Provider::Demo)
    }

    /// False when no payment provider is configured (the built-in default).
    pub fn is_configured(&self) -> bool {
        !matches!(self.provider, Provider::None)
    }

    /// `none`, `polar` or `demo`.
    pub fn provider_name(&self) -> &'static str {
        self.provider.name()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Calls to Polar's API so far, by outcome; `None` when Polar is not the provider.
    pub fn polar_calls(&self) -> Option<crate::polar::PolarCalls> {
        match &self.provider {
            Provider::Polar(client) => Some(client.calls()),
            _ => None,
        }
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    pub fn success_url(&self) -> &str {
        &self.success_url
    }

    /// True when webhooks can be verified (the receiver needs it). Without a provider
    /// there is nothing to verify: webhooks are refused with [`PaymentsError::NotConfigured`].
    pub fn can_verify_webhooks(&self) -> bool {
        self.secret.is_some() || !self.is_configured()
    }

    // -- checkout ----------------------------------------------------------------------

    /// `POST /v1/checkouts/` for `product` with the account as external customer id, the
    /// success URL, and metadata naming the account plus the `(key, value)` given; an answer
    /// without a URL is a provider error.
    fn open_polar_checkout(
        &self,
        client: &PolarClient,
        account: &AccountId,
        product: &str,
        (key, value): (&str, &str),
    ) -> Result<crate::polar::Checkout, PaymentsError> {
        let mut metadata = Map::new();
        metadata.insert(
            META_ACCOUNT.into(),
            Value::String(account.as_str().to_owned()),
        );
        metadata.insert(key.into(), Value::String(value.to_owned()));
        let checkout = client.create_checkout(&CheckoutCreate {
            products: vec![product.to_owned()],
            success_url: self.success_url.clone(),
            external_customer_id: account.as_str().to_owned(),
            metadata,
            allow_discount_codes: false,
        })?;
        if checkout.url.is_empty() {
            return Err(PaymentsError::Provider {
                status: None,
                message: "create checkout: Polar's answer has no url".into(),
            });
        }
        Ok(checkout)
    }

    /// Creates a checkout for `pack` and returns the URL to send the buyer to. Polar:
    /// `POST /v1/checkouts/` with the pack's product, metadata naming account and pack,
    /// the account as external customer id and the success URL. Demo: a local checkout
    /// at `{webhooks.public_url}/demo/checkout/{id}`. No provider:
    /// [`PaymentsError::NotConfigured`], and nothing is written.
    ///
    /// The checkout is recorded (account, pack, credits, price, product, currency) before
    /// its URL is handed out: a paid order is credited from this record, never from the
    /// order's metadata, so a checkout that cannot be recorded is an error.
    pub fn create_checkout(
        &self,
        account: &AccountId,
        pack: &CreditPack,
    ) -> Result<String, CheckoutError> {
        match &self.provider {
            Provider::None => Err(PaymentsError::NotConfigured),
            Provider::Polar(client) => {
                let product =
                    pack.product_id
                        .clone()
                        .ok_or_else(|| PaymentsError::ProductNotConfigured {
                            pack_id: pack.id.as_str().to_owned(),
                        })?;
                let checkout = self.open_polar_checkout(
                    client,
                    account,
                    &product,
                    (META_PACK, pack.id.as_str()),
                )?;
                let record = CheckoutRecord {
                    id: checkout.id.clone(),
                    provider: CheckoutProvider::Polar,
                    account_id: account.clone(),
                    pack_id: pack.id.clone(),
                    credits: pack.credits.millis(),
                    price_cents: pack.price.get(),
                    url: checkout.url.clone(),
                    status: CheckoutStatus::Open,
                    order_id: None,
                    created_at: now().millis(),
                    paid_at: None,
                    product_id: Some(product),
                    currency: checkout
                        .currency
                        .as_deref()
                        .map(str::to_ascii_lowercase)
                        .filter(|c| !c.is_empty()),
                };
                // Crediting depends on this row: without it, the URL is not handed out
                // (the open checkout at Polar expires unpaid).
                self.store.orders().record_checkout(&record)?;
                Ok(checkout.url)
            }
            Provider::Demo => {
                let id = new_id("demo_chk_");
                let url = format!("{}/demo/checkout/{id}", self.public_url);
                self.store.orders().record_checkout(&CheckoutRecord {
                    id,
                    provider: CheckoutProvider::Demo,
                    account_id: account.clone(),
                    pack_id: pack.id.clone(),
                    credits: pack.credits.millis(),
                    price_cents: pack.price.get(),
                    url: url.clone(),
                    status: CheckoutStatus::Open,
                    order_id: None,
                    created_at: now().millis(),
                    paid_at: None,
                    product_id: None,
                    currency: Some("usd".into()),
                })?;
                Ok(url)
            }
        }
    }

    // -- webhooks ----------------------------------------------------------------------

    /// Verifies a delivery (signature over the raw body, ±5 minutes of `now`) and stores
    /// it before anything is processed. Nothing is written when verification fails.
    pub fn receive(
        &self,
        headers: SignedHeaders<'_>,
        body: &[u8],
        now: Timestamp,
    ) -> Result<Received, PaymentsError> {
        if !self.is_configured() {
            return Err(PaymentsError::NotConfigured);
        }
        let secret = self.secret.as_ref().ok_or_else(|| {
            PaymentsError::Config(
                "polar.webhook_secret: must be set to receive Polar webhooks".into(),
            )
        })?;
        verify(secret, headers, body, now.millis().div_euclid(1000))?;
        let webhook_id = headers.id.unwrap_or_default().to_owned();
        let text = std::str::from_utf8(body).map_err(|_| PaymentsError::MalformedEvent {
            reason: "the body is not UTF-8".into(),
        })?;
        let envelope: Envelope =
            serde_json::from_str(text).map_err(|e| PaymentsError::MalformedEvent {
                reason: e.to_string(),
            })?;
        let receipt =
            self.store
                .orders()
                .store_delivery(&webhook_id, &envelope.event_type, text, now)?;
        Ok(Received {
            webhook_id,
            event_type: envelope.event_type,
            receipt,
        })
    }

    /// Processes a stored delivery (once: a processed one answers its stored outcome).
    /// On an error it stays unprocessed, to be retried.
    pub fn process_delivery(
        &self,
        webhook_id: &str,
        now: Timestamp,
    ) -> Result<String, PaymentsError> {
        let Some(delivery) = self.store.orders().delivery(webhook_id)? else {
            return Ok("unknown delivery".into());
        };
        if let DeliveryState::Processed { outcome, .. } = delivery.state() {
            return Ok(outcome);
        }
        self.store.orders().note_delivery_attempt(webhook_id)?;
        match self.process_event(&delivery.event_type, &delivery.body, now) {
            Ok(outcome) => {
                self.store
                    .orders()
                    .finish_delivery(webhook_id, &outcome, now)?;
                tracing::info!(webhook_id, event_type = %delivery.event_type, outcome = %outcome, "webhook processed");
                Ok(outcome)
            }
            Err(e) => {
                tracing::error!(webhook_id, event_type = %delivery.event_type, error = %e, "webhook processing failed; it stays stored and is retried");
                Err(e)
            }
        }
    }

    /// Processes every stored delivery received before `received_before` that is not
    /// processed yet (start-up recovery, and the receiver's periodic sweep).
    pub fn process_unprocessed(
        &self,
        received_before: Timestamp,
        now: Timestamp,
    ) -> Result<usize, PaymentsError> {
        let mut done = 0;
        loop {
            let batch = self
                .store
                .orders()
                .unprocessed_deliveries(received_before, 100)?;
            if batch.is_empty() {
                return Ok(done);
            }
            let mut progressed = false;
            for d in batch {
                if self.process_delivery(&d.webhook_id, now).is_ok() {
                    done += 1;
                    progressed = true;
                }
            }
            if !progressed {
                return Ok(done);
            }
        }
    }

    /// Applies one event; returns its outcome (for the delivery's record and the log).
    pub fn process_event(
        &self,
        event_type: &str,
        body: &str,
        now: Timestamp,
    ) -> Result<String, PaymentsError> {
        let envelope: Envelope =
            serde_json::from_str(body).map_err(|e| PaymentsError::MalformedEvent {
                reason: e.to_string(),
            })?;
        let malformed = |e: serde_json::Error| PaymentsError::MalformedEvent {
            reason: format!("{event_type}: {e}"),
        };
        match event_type {
            "order.paid" => {
                let order: Order = serde_json::from_value(envelope.data).map_err(malformed)?;
                self.apply_order(&order, Source::Webhook, now)
            }
            "order.refunded" => {
                let order: Order = serde_json::from_value(envelope.data).map_err(malformed)?;
                let outcome = self.store.orders().apply_refund(
                    &order.id,
                    &RefundAmount::Cumulative {
                        cents: order.refunded_amount,
                    },
                    now,
                )?;
                Ok(refund_outcome(&outcome))
            }
            "refund.created" | "refund.updated" => {
                let refund: Refund = serde_json::from_value(envelope.data).map_err(malformed)?;
                let Some(order_id) = refund.order_id.as_deref().filter(|s| !s.is_empty()) else {
                    return Ok("ignored: refund of no order".into());
                };
                if refund.status != "succeeded" {
                    return Ok(format!("ignored: refund {}", refund.status));
                }
                let outcome = self.store.orders().apply_refund(
                    order_id,
                    &RefundAmount::Single {
                        refund_id: refund.id.clone(),
                        cents: refund.amount,
                    },
                    now,
                )?;
                Ok(refund_outcome(&outcome))
            }
            t if SUBSCRIPTION_EVENTS.contains(&t) => {
                let sub: Subscription = serde_json::from_value(envelope.data).map_err(malformed)?;
                self.apply_subscription(t, &sub, now)
            }
            // order.created / order.updated describe the same order with other webhook
            // ids; crediting on them would credit twice. Everything else is not ours.
            _ => Ok("ignored".into()),
        }
    }

    /// Credits a paid order once (the path of `order.paid` and of reconcile), from our
    /// own checkout record: the account, the pack, its credits and its price are the
    /// ones we recorded when we made the checkout the order names. The order must agree
    /// with that record (see [`Payments::check_order`]); one that does not, or that names
    /// no checkout of ours, is refused: kept in `payment_refusals` for an operator,
    /// logged, and never credited.
    fn apply_order(
        &self,
        order: &Order,
        source: Source,
        now: Timestamp,
    ) -> Result<String, PaymentsError> {
        if order.billing_reason != "purchase" {
            return Ok(format!("ignored: billing_reason {}", order.billing_reason));
        }
        if !order.is_paid() {
            return Ok(format!("ignored: status {}", order.status));
        }
        let checkout_id = order.checkout_id.as_deref().filter(|s| !s.is_empty());
        let record = match checkout_id {
            Some(id) => self.store.orders().checkout(id)?,
            None => None,
        };
        let Some(record) = record else {
            if !self.names_us(order) {
                // Another product of the same Polar organization: not ours to credit.
                return Ok("ignored: not an order of a Shotledger checkout".into());
            }
            let reason = match checkout_id {
                Some(id) => format!("its checkout {id} is not one this service made"),
                None => "it names no checkout (it was not bought through this service)".into(),
            };
            return self.refuse(order, None, &reason, source, now);
        };
        if let Err(reason) = self.check_order(order, &record) {
            return self.refuse(order, Some(&record), &reason, source, now);
        }
        let credits = Credits::from_millis(record.credits);
        let applied = self.store.orders().apply_paid_order(
            &PaidOrder {
                order_id: order.id.clone(),
                kind: OrderKind::Purchase,
                account_id: record.account_id.clone(),
                pack_id: record.pack_id.clone(),
                credits,
                paid_cents: record.price_cents,
                description: format!("Purchased {} credits", credits.grouped()),
                checkout_id: Some(record.id.clone()),
            },
            now,
        );
        let outcome = match applied {
            Err(StoreError::Refused(rule)) => {
                return self.refuse(
                    order,
                    Some(&record),
                    &format!("the ledger cannot take it: {rule}"),
                    source,
                    now,
                );
            }
            other => other?,
        };
        let mut text = match outcome {
            PaidOutcome::Credited {
                taken_back, owed, ..
            } if taken_back.is_zero() && owed.is_zero() => {
                format!("credited {credits}")
            }
            PaidOutcome::Credited {
                taken_back, owed, ..
            } => {
                format!("credited {credits}, refunds took back {taken_back} (owed {owed})")
            }
            PaidOutcome::AlreadyCredited { .. } => "already credited".to_owned(),
            PaidOutcome::Refused { reason } => {
                return Ok(format!("refused before ({reason}); left for an operator"));
            }
            PaidOutcome::CheckoutAlreadyPaid { by_order } => {
                return self.refuse(
                    order,
                    Some(&record),
                    &format!(
                        "its checkout {} was already paid by order {by_order}",
                        record.id
                    ),
                    source,
                    now,
                );
            }
            PaidOutcome::UnknownAccount => {
                return self.refuse(
                    order,
                    Some(&record),
                    "the account of its checkout no longer exists",
                    source,
                    now,
                );
            }
        };
        // An order fetched later (reconcile) may carry refunds already.
        if order.refunded_amount > 0 {
            let r = self.store.orders().apply_refund(
                &order.id,
                &RefundAmount::Cumulative {
                    cents: order.refunded_amount,
                },
                now,
            )?;
            text.push_str(&format!("; {}", refund_outcome(&r)));
        }
        Ok(text)
    }

    /// Whether a paid order agrees with the checkout we recorded: made by the provider in
    /// force; metadata (when present) naming the same account and pack; the product (when
    /// the order names one) the one we asked Polar to sell; the amount paid before tax
    /// exactly the recorded price (checkouts allow no discount codes); the currency (when
    /// present) the checkout's. `Err` says what differs.
    fn check_order(&self, order: &Order, record: &CheckoutRecord) -> Result<(), String> {
        if Some(record.provider) != self.provider.kind() {
            return Err(format!(
                "its checkout {} was made by the {} provider, but {} is in force",
                record.id,
                record.provider,
                self.provider.name()
            ));
        }
        if let Some(named) = order.metadata_str(META_ACCOUNT) {
            if named != record.account_id.as_str() {
                return Err(format!(
                    "its metadata names account {named}, but checkout {} is account {}'s",
                    record.id, record.account_id
                ));
            }
        }
        if let Some(named) = order.metadata_str(META_PACK) {
            if named != record.pack_id.as_str() {
                return Err(format!(
                    "its metadata names pack {named}, but checkout {} is for {}",
                    record.id, record.pack_id
                ));
            }
        }
        let expected_product = record.product_id.clone().or_else(|| {
            self.catalogue
                .find(record.pack_id.as_str())
                .and_then(|p| p.product_id.clone())
        });
        match (
            order.product_id.as_deref().filter(|p| !p.is_empty()),
            &expected_product,
        ) {
            (Some(got), Some(want)) if got != want => {
                return Err(format!(
                    "it paid for product {got}, but checkout {} sold product {want}",
                    record.id
                ));
            }
            (Some(got), None) => {
                return Err(format!(
                    "it paid for product {got}, but checkout {} sold no product",
                    record.id
                ));
            }
            _ => {}
        }
        if order.net_amount != record.price_cents {
            return Err(format!(
                "it paid {} cents before tax, but checkout {} costs {} cents",
                order.net_amount, record.id, record.price_cents
            ));
        }
        if let Some(want) = record.currency.as_deref().filter(|c| !c.is_empty()) {
            if !order.currency.is_empty() && !order.currency.eq_ignore_ascii_case(want) {
                return Err(format!(
                    "it paid in {}, but checkout {} is in {want}",
                    order.currency, record.id
                ));
            }
        }
        Ok(())
    }

    /// Whether an order with no checkout of ours still claims to be ours: it names an
    /// account or pack in our metadata keys, or it paid for one of our packs' products.
    fn names_us(&self, order: &Order) -> bool {
        order.metadata_str(META_ACCOUNT).is_some()
            || order.metadata_str(META_PACK).is_some()
            || order.product_id.as_deref().is_some_and(|p| {
                self.catalogue
                    .all()
                    .iter()
                    .any(|pack| pack.product_id.as_deref() == Some(p))
            })
    }

    /// Refuses a paid order: keeps it for an operator (durably, before the delivery is
    /// marked processed) and logs why. Never credits.
    fn refuse(
        &self,
        order: &Order,
        record: Option<&CheckoutRecord>,
        reason: &str,
        source: Source,
        now: Timestamp,
    ) -> Result<String, PaymentsError> {
        let refusal = NewRefusal {
            order_id: order.id.clone(),
            source: source.stored(),
            reason: reason.to_owned(),
            checkout_id: order.checkout_id.clone(),
            account_id: record.map(|r| r.account_id.as_str().to_owned()),
            order_json: serde_json::to_string(order).unwrap_or_default(),
        };
        match self.store.orders().refuse_order(&refusal, now)? {
            RefusalOutcome::Recorded { first } => {
                if first {
                    tracing::error!(
                        order_id = %order.id,
                        checkout_id = order.checkout_id.as_deref().unwrap_or("(none)"),
                        source = source.as_str(),
                        reason,
                        "paid order refused: not credited, kept for an operator (`webhook-receiver refused` lists them)"
                    );
                }
                Ok(format!("refused: {reason}"))
            }
            RefusalOutcome::AlreadyCredited { .. } => {
                tracing::warn!(order_id = %order.id, reason, "an event about an order credited before does not match its checkout; nothing changed");
                Ok("already credited".into())
            }
        }
    }

    /// Asks Polar for every paid one-time order and applies those the receiver missed,
    /// through the same path as `order.paid` (so each is credited once).
    pub fn reconcile(&self, now: Timestamp) -> Result<ReconcileReport, PaymentsError> {
        let Provider::Polar(client) = &self.provider else {
            return Err(PaymentsError::Config(
                format!("polar.access_token: reconcile asks Polar's API, and the payment provider in force is {}", self.provider.name()),
            ));
        };
        let mut report = ReconcileReport::default();
        for order in client.paid_orders()? {
            report.orders += 1;
            let outcome = self.apply_order(&order, Source::Reconcile, now)?;
            if outcome.starts_with("refused") {
                report.refused += 1;
            }
            if outcome.starts_with("credited") {
                report.credited += 1;
                tracing::info!(order_id = %order.id, outcome = %outcome, "reconcile credited a missed order");
            }
            if outcome.contains("took back") {
                report.refunds += 1;
            }
        }
        Ok(report)
    }

    // -- demo --------------------------------------------------------------------------

    /// The stored demo checkout `id`; `None` when the provider is not the demo or there is
    /// no such demo checkout.
    fn demo_checkout_record(&self, id: &str) -> Result<Option<CheckoutRecord>, PaymentsError> {
        if !self.is_demo() {
            return Ok(None);
        }
        Ok(self
            .store
            .orders()
            .checkout(id)?
            .filter(|c| c.provider == CheckoutProvider::Demo))
    }

    /// A demo checkout, for its page.
    pub fn demo_checkout(&self, id: &str) -> Result<Option<DemoCheckout>, PaymentsError> {
        let Some(c) = self.demo_checkout_record(id)? else {
            return Ok(None);
        };
        let name = self
            .catalogue
            .find(c.pack_id.as_str())
            .map_or_else(|| c.pack_id.as_str().to_owned(), |p| p.name.clone());
        Ok(Some(DemoCheckout {
            id: c.id,
            pack_name: name,
            credits: Credits::from_millis(c.credits),
            price_cents: c.price_cents,
            paid: c.status == CheckoutStatus::Paid,
        }))
    }

    /// "Pays" a demo checkout: the three deliveries Polar would send (`order.created`,
    /// `order.updated`, `order.paid`), each with a fresh webhook id, signed now with the
    /// demo secret. The order id is derived from the checkout, so paying twice is the
    /// same order (credited once). `None`: no such demo checkout.
    pub fn demo_pay(
        &self,
        checkout_id: &str,
        now: Timestamp,
    ) -> Result<Option<Vec<SignedDelivery>>, PaymentsError> {
        let Some(raw) = &self.demo_secret else {
            return Ok(None);
        };
        let Some(c) = self.demo_checkout_record(checkout_id)? else {
            return Ok(None);
        };
        let order_id = demo_order_id(&c.id);
        let created = now.rfc3339();
        let order = json!({
            "id": order_id,
            "created_at": created,
            "status": "paid",
            "paid": true,
            "billing_reason": "purchase",
            "subtotal_amount": c.price_cents,
            "discount_amount": 0,
            "net_amount": c.price_cents,
            "tax_amount": 0,
            "total_amount": c.price_cents,
            "refunded_amount": 0,
            "currency": "usd",
            "product_id": null,
            "checkout_id": c.id,
            "metadata": { META_ACCOUNT: c.account_id.as_str(), META_PACK: c.pack_id.as_str() },
            "customer": { "id": c.account_id.as_str(), "external_id": c.account_id.as_str() },
            "description": format!("{} credits (test payment)", Credits::from_millis(c.credits)),
        });
        let secret = WebhookSecret::new(raw);
        let key = secret
            .standard_key()
            .unwrap_or(secret.legacy_key())
            .to_vec();
        let ts = now.millis().div_euclid(1000);
        let deliveries = ["order.created", "order.updated", "order.paid"]
            .into_iter()
            .map(|t| {
                SignedDelivery::new(&key, &new_webhook_id(), ts, envelope(t, &created, &order))
            })
            .collect();
        Ok(Some(deliveries))
    }

    /// Marks a demo checkout paid (after its deliveries were accepted).
    pub fn demo_mark_paid(&self, checkout_id: &str, now: Timestamp) -> Result<(), PaymentsError> {
        self.store
            .orders()
            .mark_checkout_paid(checkout_id, &demo_order_id(checkout_id), now)?;
        Ok(())
    }

    // -- auto top-up -------------------------------------------------------------------

    pub fn get_auto_topup(&self, account: &AccountId) -> Result<AutoTopupView, PaymentsError> {
        Ok(AutoTopupView::of(self.store.orders().auto_topup(account)?))
    }

    /// Saves auto top-up settings. Unknown or inactive pack: [`PaymentsError::UnknownPack`]
    /// (404). Enabling with Polar: [`PaymentsError::AutoTopupUnsupported`] (409).
    /// Saving again resumes a paused auto top-up.
    pub fn put_auto_topup(
        &self,
        account: &AccountId,
        request: &AutoTopupRequest,
        now: Timestamp,
    ) -> Result<AutoTopupView, PaymentsError> {
        let pack = self
            .catalogue
            .find_active(&request.pack_id)
            .ok_or_else(|| PaymentsError::UnknownPack {
                pack_id: request.pack_id.clone(),
            })?;
        match &self.provider {
            Provider::None if request.enabled => return Err(PaymentsError::NotConfigured),
            Provider::Polar(_) if request.enabled => {
                return Err(PaymentsError::AutoTopupUnsupported {
                    reason: POLAR_NO_SAVED_METHOD.into(),
                })
            }
            _ => {}
        }
        let row = self.store.orders().put_auto_topup(
            account,
            request.enabled,
            request.threshold_credits,
            &TopupPack {
                pack_id: pack.id.clone(),
                credits: pack.credits,
                price_cents: pack.price.get(),
            },
            now,
        )?;
        Ok(AutoTopupView::of(Some(row)))
    }

    /// Submits pending top-up charges to the provider's saved-method charge and settles
    /// them: paid → credits (type `auto_topup`) land once; declined → auto top-up pauses
    /// with the reason. Returns how many were settled.
    pub fn run_auto_topups(&self, now: Timestamp) -> Result<usize, PaymentsError> {
        match &self.provider {
            Provider::Demo => self.run_auto_topups_with(&DemoCharger, now),
            Provider::Polar(_) => self.run_auto_topups_with(&Decline(POLAR_NO_SAVED_METHOD), now),
            Provider::None => self.run_auto_topups_with(&Decline(NO_PROVIDER_NO_TOPUP), now),
        }
    }

    /// [`Payments::run_auto_topups`] with a given charger (tests, other providers).
    pub fn run_auto_topups_with(
        &self,
        charger: &dyn SavedMethodCharger,
        now: Timestamp,
    ) -> Result<usize, PaymentsError> {
        let mut settled = 0;
        for charge in self.store.orders().pending_topup_charges(100)? {
            match charger.charge(&charge) {
                ChargeResult::Paid => {
                    let credits = charge.credits;
                    let description =
                        format!("Auto top-up: purchased {} credits", credits.grouped());
                    let outcome =
                        self.store
                            .orders()
                            .confirm_topup_charge(&charge.id, &description, now)?;
                    tracing::info!(charge_id = %charge.id, account = %charge.account_id, ?outcome, "auto top-up paid");
                    settled += 1;
                }
                ChargeResult::Declined(reason) => {
                    self.store
                        .orders()
                        .fail_topup_charge(&charge.id, &reason, now)?;
                    tracing::warn!(charge_id = %charge.id, account = %charge.account_id, reason = %reason, "auto top-up declined; paused");
                    settled += 1;
                }
                ChargeResult::Later => {}
            }
        }
        Ok(settled)
    }
}

/// The order id of a demo checkout: derived from it, so paying twice is one order.
fn demo_order_id(checkout_id: &str) -> String {
    format!("demo_ord_{}", checkout_id.trim_start_matches("demo_chk_"))
}

/// A provider that cannot charge off-session (Polar), or no provider: any pending charge
/// fails with this reason (and pauses auto top-up). Nothing is credited.
struct Decline(&'static str);

impl SavedMethodCharger for Decline {
    fn charge(&self, _charge: &TopupCharge) -> ChargeResult {
        ChargeResult::Declined(self.0.into())
    }
}

fn refund_outcome(o: &RefundOutcome) -> String {
    match o {
        RefundOutcome::Pending => "refund recorded; settled when the order is paid".into(),
        RefundOutcome::TookBack { taken, owed } => {
            format!("refund took back {taken} (owed {owed})")
        }
        RefundOutcome::NothingNew => "refund already applied".into(),
    }
}

/// What a demo subscription checkout page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSubscription {
    pub token: String,
    pub account_id: AccountId,
    pub plan_id: String,
    pub plan_name: String,
    pub price_cents: i64,
}

/// What a demo subscription checkout token carries (signed with the demo secret).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct DemoSubClaims {
    /// The account.
    a: String,
    /// The plan.
    p: String,
    /// When the checkout was made (ms): the subscription's start and its id's seed.
    t: i64,
    /// A random nonce.
    n: String,
}

const DEMO_SUB_PREFIX: &str = "demo_sub_";

impl Payments {
    fn subs(&self) -> Result<&Subs, PaymentsError> {
        self.subs.as_ref().ok_or_else(|| {
            PaymentsError::Config(
                "plans: subscriptions are not wired on this server (Payments::with_subscriptions)"
                    .into(),
            )
        })
    }

    /// A paying plan sold through the provider.
    fn plan_on_sale(&self, plan_id: &str) -> Result<PlanOffer, PaymentsError> {
        let plan = self.subs()?.config.plan(plan_id).cloned().ok_or_else(|| {
            PaymentsError::UnknownPlan {
                plan_id: plan_id.to_owned(),
            }
        })?;
        if !plan.paying || plan.price_cents <= 0 {
            return Err(PaymentsError::PlanNotSold {
                plan_id: plan.id.clone(),
                reason: format!("Plan {} is free: it needs no checkout", plan.id),
            });
        }
        Ok(plan)
    }

    /// The Polar product of a plan sold through Polar.
    fn plan_product(plan: &PlanOffer) -> Result<String, PaymentsError> {
        plan.product_id
            .clone()
            .filter(|p| !p.trim().is_empty())
            .ok_or_else(|| PaymentsError::PlanNotSold {
                plan_id: plan.id.clone(),
                reason: format!(
                    "Product not configured for plan {} (plans[].polar_product_id)",
                    plan.id
                ),
            })
    }

    /// Creates a checkout for a paying plan and returns the URL to send the owner to.
    /// Polar: `POST /v1/checkouts/` with the plan's product, metadata naming the account
    /// and plan, and the account as external customer id; paying it makes Polar send the
    /// subscription webhooks. Demo: a signed local checkout at
    /// `{webhooks.public_url}/demo/subscription/{token}` whose Pay button sends the same
    /// webhooks. Nothing is written here: the subscription exists once its webhooks are
    /// applied.
    pub fn subscription_checkout(
        &self,
        account: &AccountId,
        plan_id: &str,
    ) -> Result<String, PaymentsError> {
        if !self.is_configured() {
            return Err(PaymentsError::NotConfigured);
        }
        let plan = self.plan_on_sale(plan_id)?;
        match &self.provider {
            Provider::None => Err(PaymentsError::NotConfigured),
            Provider::Polar(client) => {
                let product = Self::plan_product(&plan)?;
                let checkout =
                    self.open_polar_checkout(client, account, &product, (META_PLAN, &plan.id))?;
                Ok(checkout.url)
            }
            Provider::Demo => {
                let token = self.demo_sub_token(&DemoSubClaims {
                    a: account.as_str().to_owned(),
                    p: plan.id.clone(),
                    t: now().millis(),
                    n: new_id("n"),
                })?;
                Ok(format!("{}/demo/subscription/{token}", self.public_url))
            }
        }
    }

    /// Asks the provider to move subscription `provider_id` to `plan_id` (Polar: `PATCH
    /// /v1/subscriptions/{id}` with the plan's product; `subscription.updated` follows).
    /// Demo: [`ChangeRequested::Local`], the caller applies it.
    pub fn change_subscription(
        &self,
        provider_id: &str,
        plan_id: &str,
    ) -> Result<ChangeRequested, PaymentsError> {
        let plan = self.plan_on_sale(plan_id)?;
        match &self.provider {
            Provider::None => Err(PaymentsError::NotConfigured),
            Provider::Demo => Ok(ChangeRequested::Local),
            Provider::Polar(client) => {
                let product_id = Self::plan_product(&plan)?;
                let sub = client
                    .update_subscription(provider_id, &SubscriptionPatch::Product { product_id })?;
                Ok(ChangeRequested::Provider {
                    subscription_id: sub.id,
                })
            }
        }
    }

    /// Asks the provider to cancel subscription `provider_id` at the end of its period
    /// (Polar: `PATCH` with `cancel_at_period_end: true`; `subscription.canceled`
    /// follows, the status staying active until the period ends). Demo:
    /// [`ChangeRequested::Local`].
    pub fn cancel_subscription(&self, provider_id: &str) -> Result<ChangeRequested, PaymentsError> {
        self.patch_subscription(
            provider_id,
            &SubscriptionPatch::CancelAtPeriodEnd {
                cancel_at_period_end: true,
            },
        )
    }

    /// Ends subscription `provider_id` now (Polar: `PATCH` with `revoke: true`;
    /// `subscription.revoked` follows). Demo: [`ChangeRequested::Local`].
    pub fn revoke_subscription(&self, provider_id: &str) -> Result<ChangeRequested, PaymentsError> {
        self.patch_subscription(provider_id, &SubscriptionPatch::Revoke { revoke: true })
    }

    fn patch_subscription(
        &self,
        provider_id: &str,
        patch: &SubscriptionPatch,
    ) -> Result<ChangeRequested, PaymentsError> {
        match &self.provider {
            Provider::None => Err(PaymentsError::NotConfigured),
            Provider::Demo => Ok(ChangeRequested::Local),
            Provider::Polar(client) => {
                let sub = client.update_subscription(provider_id, patch)?;
                Ok(ChangeRequested::Provider {
                    subscription_id: sub.id,
                })
            }
        }
    }

    /// Applies a subscription event to the book. An event that is not ours (no account,
    /// an unknown product or plan, an unknown account) is recorded as not applicable,
    /// never retried; an older or repeated one changes nothing (the book's `modified_at`
    /// guard).
    fn apply_subscription(
        &self,
        event_type: &str,
        sub: &Subscription,
        now: Timestamp,
    ) -> Result<String, PaymentsError> {
        let Some(subs) = &self.subs else {
            tracing::warn!(event_type, subscription_id = %sub.id, "a subscription event arrived but subscriptions are not wired; ignored");
            return Ok("ignored: subscriptions are not wired".into());
        };
        let update = match to_update(event_type, sub, &subs.config) {
            Ok(u) => u,
            Err(reason) => {
                tracing::warn!(event_type, subscription_id = %sub.id, %reason, "subscription event not applied");
                return Ok(reason);
            }
        };
        Ok(match subs.book.apply_subscription_update(&update, now)? {
            UpdateOutcome::Changed => format!(
                "subscription {} of {}: plan {}, {}{}",
                update.provider_subscription_id,
                update.account_id,
                update.plan_id,
                update.status.as_str(),
                if update.cancel_at_period_end {
                    ", cancels at period end"
                } else {
                    ""
                }
            ),
            UpdateOutcome::NotNewer => "unchanged: not newer than the stored subscription".into(),
            UpdateOutcome::UnknownAccount => {
                not_applicable(format!("account {} does not exist", update.account_id))
            }
            UpdateOutcome::UnknownPlan => not_applicable(format!(
                "plan {} is not in this server's [[plans]]",
                update.plan_id
            )),
        })
    }

    /// Asks Polar for every subscription and applies each through the same path as the
    /// webhooks (the book's `modified_at` guard keeps it harmless when the webhooks did
    /// arrive): Polar stops retrying a webhook after about 30 minutes, so a subscription
    /// whose events all failed is still brought in step. Only with Polar and once
    /// subscriptions are wired (otherwise nothing to do).
    pub fn reconcile_subscriptions(
        &self,
        now: Timestamp,
    ) -> Result<SubscriptionReconcile, PaymentsError> {
        let mut report = SubscriptionReconcile::default();
        let (Provider::Polar(client), Some(_)) = (&self.provider, &self.subs) else {
            return Ok(report);
        };
        for sub in client.all_subscriptions()? {
            report.listed += 1;
            // The status decides (as for any update); `revoked` has no status of its own.
            let outcome = self.apply_subscription("subscription.updated", &sub, now)?;
            if outcome.starts_with("subscription ") {
                report.changed += 1;
                tracing::info!(subscription_id = %sub.id, %outcome, "reconcile brought a subscription in step");
            }
        }
        Ok(report)
    }

    /// Reports the book's pending overage items: with Polar, one
    /// `POST /v1/events/ingest` per batch of up to 100 (`external_id` = the item id,
    /// which Polar deduplicates on), each marked reported after a 2xx; on a failure the
    /// batch is marked failed with the error and a backoff, and the run stops. With the
    /// demo provider or none, items are marked recorded without a call. Without
    /// subscriptions wired, nothing to do.
    pub fn report_overage(&self, now: Timestamp) -> Result<ReportSummary, PaymentsError> {
        let mut summary = ReportSummary::default();
        let Some(subs) = &self.subs else {
            return Ok(summary);
        };
        // Each batch leaves its items reported, recorded or not due: at most 10 batches
        // a run, so a book that keeps answering cannot loop us forever.
        for _ in 0..10 {
            let items = subs.book.pending_overage_reports(now, 100)?;
            if items.is_empty() {
                break;
            }
            let Provider::Polar(client) = &self.provider else {
                for item in &items {
                    subs.book
                        .record_overage_report(&item.id, &ReportOutcome::Recorded, now)?;
                    summary.recorded += 1;
                }
                continue;
            };
            let events: Vec<IngestEvent> = items
                .iter()
                .map(|item| {
                    let mut metadata = Map::new();
                    metadata.insert("credits".into(), json!(item.credits));
                    metadata.insert("blocks".into(), json!(item.blocks));
                    metadata.insert("period_start".into(), json!(item.period_start.rfc3339()));
                    metadata.insert("amount_cents".into(), json!(item.amount_cents));
                    IngestEvent {
                        name: subs.config.overage_event_name.clone(),
                        external_id: item.id.clone(),
                        external_customer_id: item.account_id.as_str().to_owned(),
                        // Now, so a late report still lands in a cycle Polar has not
                        // invoiced yet.
                        timestamp: now.rfc3339(),
                        metadata,
                    }
                })
                .collect();
            let failed = |item: &crate::subscriptions::OverageReport,
                          error: &str,
                          summary: &mut ReportSummary|
             -> Result<(), PaymentsError> {
                subs.book.record_overage_report(
                    &item.id,
                    &ReportOutcome::Failed {
                        error: error.to_owned(),
                        next_attempt_at: now.plus_secs(report_backoff_secs(item.attempts)),
                    },
                    now,
                )?;
                summary.failed += 1;
                Ok(())
            };
            match client.ingest_events(&events) {
                Ok(answer) => {
                    for item in &items {
                        subs.book
                            .record_overage_report(&item.id, &ReportOutcome::Reported, now)?;
                        summary.reported += 1;
                    }
                    tracing::info!(
                        items = items.len(),
                        inserted = answer.inserted,
                        duplicates = answer.duplicates,
                        "overage reported to Polar"
                    );
                }
                // Polar refused the batch's contents: one bad item must not hold back
                // the others, so each is sent alone.
                Err(PaymentsError::Provider {
                    status: Some(422), ..
                }) if items.len() > 1 => {
                    for (item, event) in items.iter().zip(&events) {
                        match client.ingest_events(std::slice::from_ref(event)) {
                            Ok(_) => {
                                subs.book.record_overage_report(
                                    &item.id,
                                    &ReportOutcome::Reported,
                                    now,
                                )?;
                                summary.reported += 1;
                            }
                            Err(e) => {
                                tracing::warn!(item = %item.id, error = %e, "overage item refused by Polar; retried after a backoff");
                                failed(item, &e.to_string(), &mut summary)?;
                            }
                        }
                    }
                }
                Err(e) => {
                    let error = e.to_string();
                    for item in &items {
                        failed(item, &error, &mut summary)?;
                    }
                    tracing::warn!(items = items.len(), %error, "overage report failed; retried after a backoff");
                    break;
                }
            }
        }
        Ok(summary)
    }

    // -- demo subscriptions ------------------------------------------------------------

    fn demo_key(&self) -> Option<Vec<u8>> {
        let raw = self.demo_secret.as_ref()?;
        let secret = WebhookSecret::new(raw);
        Some(
            secret
                .standard_key()
                .unwrap_or(secret.legacy_key())
                .to_vec(),
        )
    }

    fn demo_mac(key: &[u8], payload: &str) -> Result<String, PaymentsError> {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
            .map_err(|e| PaymentsError::Config(format!("demo secret: {e}")))?;
        mac.update(b"demo-subscription-checkout.");
        mac.update(payload.as_bytes());
        Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    fn demo_sub_token(&self, claims: &DemoSubClaims) -> Result<String, PaymentsError> {
        let key = self
            .demo_key()
            .ok_or_else(|| PaymentsError::Config("demo secret missing".into()))?;
        let payload = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(claims)
                .map_err(|e| PaymentsError::Config(format!("demo checkout: {e}")))?,
        );
        Ok(format!(
            "{DEMO_SUB_PREFIX}{payload}.{}",
            Self::demo_mac(&key, &payload)?
        ))
    }

    /// The claims of a demo subscription token this deployment signed.
    fn demo_sub_claims(&self, token: &str) -> Option<DemoSubClaims> {
        if !self.is_demo() {
            return None;
        }
        let key = self.demo_key()?;
        let (payload, mac) = token.strip_prefix(DEMO_SUB_PREFIX)?.split_once('.')?;
        let want = Self::demo_mac(&key, payload).ok()?;
        // Compared in constant time (the token is a bearer of "pay for this account").
        let same = want.len() == mac.len()
            && want
                .bytes()
                .zip(mac.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return None;
        }
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }

    /// A demo subscription checkout, for its page (`None`: not a token of ours, or not
    /// in demo mode).
    pub fn demo_subscription(&self, token: &str) -> Option<DemoSubscription> {
        let claims = self.demo_sub_claims(token)?;
        let plan = self.subs.as_ref()?.config.plan(&claims.p)?.clone();
        Some(DemoSubscription {
            token: token.to_owned(),
            account_id: AccountId::new(claims.a),
            plan_id: plan.id,
            plan_name: plan.name,
            price_cents: plan.price_cents,
        })
    }

    /// "Pays" a demo subscription checkout: the deliveries Polar would send
    /// (`subscription.created`, `subscription.active`, `order.paid` with billing reason
    /// `subscription_create`), each with a fresh webhook id, signed with the demo
    /// secret. Everything in them is derived from the token, so paying twice sends the
    /// same subscription (the second changes nothing). `None`: no such checkout.
    pub fn demo_subscription_pay(&self, token: &str) -> Option<Vec<SignedDelivery>> {
        let claims = self.demo_sub_claims(token)?;
        let plan = self.subs.as_ref()?.config.plan(&claims.p)?.clone();
        let key = self.demo_key()?;
        let start = Timestamp::from_millis(claims.t);
        let end = ledger_core::Period::monthly(start, start).end;
        let micros = |ts: Timestamp, extra: i64| {
            let dt = ts.to_datetime() + chrono::Duration::microseconds(extra);
            dt.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
        };
        let seed = claims.n.trim_start_matches('n').to_owned();
        let sub_id = format!("demo_sub_{seed}");
        let metadata = json!({ META_ACCOUNT: claims.a, META_PLAN: plan.id });
        let customer = json!({ "id": claims.a, "external_id": claims.a });
        let subscription = |status: &str, modified: Option<String>| {
            json!({
                "id": sub_id, "status": status, "amount": plan.price_cents, "currency": "usd",
                "recurring_interval": "month",
                "current_period_start": micros(start, 0), "current_period_end": micros(end, 0),
                "cancel_at_period_end": false, "started_at": micros(start, 0),
                "created_at": micros(start, 0), "modified_at": modified,
                "product_id": null, "customer_id": claims.a, "customer": customer,
                "metadata": metadata,
            })
        };
        let order = json!({
            "id": format!("demo_ord_sub_{seed}"), "created_at": micros(start, 0),
            "status": "paid", "paid": true, "billing_reason": "subscription_create",
            "subtotal_amount": plan.price_cents, "discount_amount": 0,
            "net_amount": plan.price_cents, "tax_amount": 0, "total_amount": plan.price_cents,
            "refunded_amount": 0, "currency": "usd", "product_id": null,
            "subscription_id": sub_id, "checkout_id": null, "metadata": metadata,
            "customer": customer,
            "description": format!("{} plan (test payment)", plan.name),
        });
        let ts = now().millis().div_euclid(1000);
        let at = now().rfc3339();
        let events = [
            ("subscription.created", subscription("active", None)),
            (
                "subscription.active",
                subscription("active", Some(micros(start, 1))),
            ),
            ("order.paid", order),
        ];
        Some(
            events
                .iter()
                .map(|(t, data)| {
                    SignedDelivery::new(&key, &new_webhook_id(), ts, envelope(t, &at, data))
                })
                .collect(),
        )
    }
}

/// The answer of [`Payments::reconcile_subscriptions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionReconcile {
    /// Subscriptions Polar listed.
    pub listed: u64,
    /// Of those, applied now (newer than what the book held).
    pub changed: u64,
}
