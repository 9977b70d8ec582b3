//! The seam to the payment provider: the purchase endpoint asks it for a checkout URL.

use ledger_core::{AccountId, CreditPack};

/// Why no checkout could be made.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutFailure {
    /// The pack has no payment product: the operator must configure one (500).
    #[error("Product not configured for this pack")]
    ProductNotConfigured,
    /// The provider refused, failed or timed out (502).
    #[error("{0}")]
    Provider(String),
}

/// Creates checkouts. Blocking: called on the thread pool.
pub trait CheckoutProvider: Send + Sync {
    fn create_checkout(
        &self,
        account: &AccountId,
        pack: &CreditPack,
    ) -> Result<String, CheckoutFailure>;
}

/// Used when no provider is wired in: every purchase fails clearly.
#[derive(Debug, Default)]
pub struct NoProvider;

impl CheckoutProvider for NoProvider {
    fn create_checkout(&self, _: &AccountId, pack: &CreditPack) -> Result<String, CheckoutFailure> {
        match pack.product_id {
            None => Err(CheckoutFailure::ProductNotConfigured),
            Some(_) => Err(CheckoutFailure::Provider(
                "no payment provider is configured on this server".into(),
            )),
        }
    }
}

/// Checkouts through the `payments` crate (Polar, or demo checkouts without a token).
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
            Err(e) => Err(CheckoutFailure::Provider(e.to_string())),
        }
    }
}
