//! The crate's one error type.
//!
//! How callers map it to HTTP (the api-server's `ApiError`, the receiver's handler):
//! - [`PaymentsError::NotConfigured`]: 503 `PAYMENTS_NOT_CONFIGURED` (no payment provider
//!   is configured; the message names the settings to set);
//! - [`PaymentsError::ProductNotConfigured`]: 500 `Product not configured for this pack`;
//! - [`PaymentsError::Provider`]: 502 (Polar answered 401/422/5xx, or timed out);
//! - [`PaymentsError::UnknownPack`]: 404 `Credit pack not found`;
//! - [`PaymentsError::UnknownPlan`]: 404 `Plan not found`;
//! - [`PaymentsError::PlanNotSold`]: 409 with its reason (a free plan, or no product);
//! - [`PaymentsError::AutoTopupUnsupported`]: 409 with its reason;
//! - the signature variants: 400 (malformed request) or 401 (not signed by us);
//! - everything else: 500.

use ledger_store::StoreError;

/// What [`PaymentsError::NotConfigured`] says: which settings turn payments on.
pub const PAYMENTS_NOT_CONFIGURED: &str = "Payments are not configured on this server: an operator must set polar.access_token and polar.webhook_secret (Polar), or payments.provider = \"demo\" for local test payments that move no money";

#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    /// No payment provider is configured (the built-in default): nothing can be bought
    /// and nothing mints credits.
    #[error("{}", PAYMENTS_NOT_CONFIGURED)]
    NotConfigured,
    /// The pack has no Polar product id, so it cannot be bought through Polar.
    #[error("Product not configured for this pack")]
    ProductNotConfigured { pack_id: String },
    /// Polar's API failed: an HTTP status (401, 422, 5xx, ...) or a transport failure.
    #[error("payment provider error{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Provider {
        status: Option<u16>,
        message: String,
    },
    #[error("Credit pack not found")]
    UnknownPack { pack_id: String },
    /// No configured plan has this id (404).
    #[error("Plan not found")]
    UnknownPlan { plan_id: String },
    /// The plan cannot be bought through the provider: it is free, or it has no
    /// `plans[].polar_product_id` (the message says which).
    #[error("{reason}")]
    PlanNotSold { plan_id: String, reason: String },
    /// Auto top-up cannot work with the configured provider.
    #[error("{reason}")]
    AutoTopupUnsupported { reason: String },
    #[error("missing header {name}")]
    MissingHeader { name: &'static str },
    #[error("webhook-timestamp `{value}` is not a number of seconds")]
    BadTimestamp { value: String },
    #[error("webhook-timestamp {timestamp} is more than 5 minutes from now ({now})")]
    TimestampOutOfTolerance { timestamp: i64, now: i64 },
    #[error("no valid signature")]
    BadSignature,
    /// A verified body that is not a JSON event envelope.
    #[error("malformed event: {reason}")]
    MalformedEvent { reason: String },
    /// A configuration that cannot work (the message names the key).
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The name the api-server uses for [`crate::Payments::create_checkout`]'s error.
pub type CheckoutError = PaymentsError;

impl PaymentsError {
    /// True for the errors of a webhook request that was not signed by us (401); the
    /// other request errors are 400.
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            PaymentsError::BadSignature | PaymentsError::TimestampOutOfTolerance { .. }
        )
    }

    /// True for errors caused by the webhook request itself (400 or 401).
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            PaymentsError::MissingHeader { .. }
                | PaymentsError::BadTimestamp { .. }
                | PaymentsError::TimestampOutOfTolerance { .. }
                | PaymentsError::BadSignature
                | PaymentsError::MalformedEvent { .. }
        )
    }
}
