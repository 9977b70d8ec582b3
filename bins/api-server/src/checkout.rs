//! The seam to the payment provider: the purchase endpoint asks it for a checkout URL.

use ledger_core::{AccountId, CreditPack};

/// Why no checkout could be made.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutFailure {
    /// No payment provider is configured (503 `PAYMENTS_NOT_CONFIGURED`; the message says
    /// which settings to set).
    #[error("{}", payments::PAYMENTS_NOT_CONFIGURED)]
    NotConfigured,
    /// The pack has no payment product: the operator must configure one (500).
    #[error("Product not configured for this pack")]
    ProductNotConfigured,
    /// The provider refused, failed or timed out (502).
    #[error("{0}")]
    Provider(String),
    /// Our own side failed (the checkout could not be recorded): 500, cause logged.
    #[error("{0}")]
    Internal(String),
}

/// Creates checkouts. Blocking: called on the thread pool.
pub trait CheckoutProvider: Send + Sync {
    fn create_checkout(
        &self,
        account: &AccountId,
        pack: &CreditPack,
    ) -> Result<String, CheckoutFailure>;
}

/// Used when no provider is wired in (only tests build such a state: the server always
/// wires [`PaymentsCheckout`], whose "no provider" is [`CheckoutFailure::NotConfigured`]):
/// every purchase fails, and nothing is written.
#[derive(Debug, Default)]
pub struct NoProvider;

impl CheckoutProvider for NoProvider {
    fn create_checkout(&self, _: &AccountId, pack: &CreditPack) -> Result<String, CheckoutFailure> {
        match pack.product_id {
            None => Err(CheckoutFailure::ProductNotConfigured),
            Some(_) => Err(CheckoutFailure::NotConfigured),
        }
    }
}

/// Checkouts through the `payments` crate: Polar, demo checkouts when
/// `payments.provider = "demo"`, or none ([`CheckoutFailure::NotConfigured`]).
pub struct PaymentsCheckout(pub std::sync::Arc<payments::Payments>);

impl CheckoutProvider for PaymentsCheckout {
    fn create_checkout(
        &self,
        account: &AccountId,
        pack: &CreditPack,
    ) -> Result<String, CheckoutFailure> {
        match self.0.create_checkout(account, pack) {
            Ok(url) => Ok(url),
            Err(payments::PaymentsError::ProductNotConfigured { .. }) => {
                Err(CheckoutFailure::ProductNotConfigured)
            }
            Err(payments::PaymentsError::NotConfigured) => Err(CheckoutFailure::NotConfigured),
            Err(e @ payments::PaymentsError::Provider { .. }) => {
                Err(CheckoutFailure::Provider(e.to_string()))
            }
            Err(e) => Err(CheckoutFailure::Internal(e.to_string())),
        }
    }
}
