//! [`PaymentsConfig`]: what the payments service needs to know, as plain values, so the
//! crate does not depend on the application's configuration crate (the programs build it
//! from their settings in `startup::payments_config`).

use ledger_core::Catalogue;

/// Which payment provider sells credit packs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderChoice {
    /// Nothing can be bought; nothing mints credits.
    None,
    /// Polar's API and signed webhooks.
    Polar,
    /// The built-in demo checkout (local testing only).
    Demo,
}

/// Everything [`crate::Payments::new`] reads.
#[derive(Clone)]
pub struct PaymentsConfig {
    pub provider: ProviderChoice,
    /// The credit packs on sale.
    pub catalogue: Catalogue,
    /// Polar's API base URL.
    pub polar_api_url: String,
    /// Polar's organization access token (empty: none).
    pub access_token: String,
    /// The Standard Webhooks secret (`whsec_...`; empty: none, or generated in demo mode).
    pub webhook_secret: String,
    /// Seconds a call to Polar may take.
    pub timeout_secs: u64,
    /// Where Polar sends the customer after paying.
    pub success_url: String,
    /// The public base URL of the webhook-receiver (demo checkout pages).
    pub public_url: String,
    /// Seconds between reconciles with Polar (0: never).
    pub reconcile_interval_secs: u64,
}

impl std::fmt::Debug for PaymentsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |s: &str| if s.is_empty() { "" } else { "[redacted]" };
        f.debug_struct("PaymentsConfig")
            .field("provider", &self.provider)
            .field("catalogue", &self.catalogue)
            .field("polar_api_url", &self.polar_api_url)
            .field("access_token", &shown(&self.access_token))
            .field("webhook_secret", &shown(&self.webhook_secret))
            .field("timeout_secs", &self.timeout_secs)
            .field("success_url", &self.success_url)
            .field("public_url", &self.public_url)
            .field("reconcile_interval_secs", &self.reconcile_interval_secs)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let config = PaymentsConfig {
            provider: ProviderChoice::Polar,
            catalogue: Catalogue::seed_default(),
            polar_api_url: "http://polar.test".into(),
            access_token: "polar_oat_secret".into(),
            webhook_secret: "whsec_secret".into(),
            timeout_secs: 10,
            success_url: String::new(),
            public_url: String::new(),
            reconcile_interval_secs: 0,
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("polar_oat_secret"), "{shown}");
        assert!(!shown.contains("whsec_secret"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }
}
