//! # startup
//!
//! The composition root: the one place that knows both the configuration (`settings`) and
//! the libraries it configures, so that none of them depends on another's configuration
//! (the crate-edge table, `scripts/check-crate-edges.sh`: `payments` must not depend on
//! `settings`, `settings` not on `ledger-store`). Both programs, and the tests that build
//! their parts, start here.

use ledger_store::{Store, StoreError};
use std::sync::Arc;

use payments::{
    Payments, PaymentsConfig, PaymentsError, PlanOffer, ProviderChoice, StoreBook,
    SubscriptionConfig,
};
use settings::{PaymentProvider, Settings};

/// Opens (and migrates) the database the settings name, with their pool options.
pub fn open_store(settings: &Settings) -> Result<Store, StoreError> {
    Store::open(&settings.database.url, &settings.database.pool_options())
}

/// What the payments service is configured with: the settings' catalogue, provider,
/// `polar.*` and `webhooks.public_url`.
pub fn payments_config(settings: &Settings) -> Result<PaymentsConfig, PaymentsError> {
    let config = |e: settings::SettingsError| PaymentsError::Config(e.to_string());
    let provider = match settings.payment_provider().map_err(config)? {
        PaymentProvider::None => ProviderChoice::None,
        PaymentProvider::Polar => ProviderChoice::Polar,
        PaymentProvider::Demo => ProviderChoice::Demo,
    };
    Ok(PaymentsConfig {
        provider,
        catalogue: settings.catalogue().map_err(config)?,
        polar_api_url: settings.polar.api_url.clone(),
        access_token: settings.polar.access_token.expose().to_owned(),
        webhook_secret: settings.polar.webhook_secret.expose().to_owned(),
        timeout_secs: settings.polar.timeout_secs,
        success_url: settings.polar.success_url.clone(),
        public_url: settings.webhooks.public_url.clone(),
        reconcile_interval_secs: settings.polar.reconcile_interval_secs,
    })
}

/// The payments service over `store`, as the settings configure it, with subscriptions
/// (Polar's subscription webhooks, overage reports) kept in the same store.
pub fn payments(settings: &Settings, store: Store) -> Result<Payments, PaymentsError> {
    let plans = settings.plans.iter().map(|p| p.plan()).collect();
    let book = Arc::new(StoreBook::new(store.clone(), plans));
    Ok(Payments::new(&payments_config(settings)?, store)?
        .with_subscriptions(book, subscription_config(settings)))
}

/// The plans on sale and the overage event name, as the settings configure them.
pub fn subscription_config(settings: &Settings) -> SubscriptionConfig {
    SubscriptionConfig {
        plans: settings
            .plans
            .iter()
            .map(|p| PlanOffer {
                id: p.id.clone(),
                name: p.name.clone(),
                price_cents: p.price_cents,
                paying: p.paying,
                product_id: p.polar_product_id.clone().filter(|s| !s.trim().is_empty()),
            })
            .collect(),
        overage_event_name: settings.polar.overage_event_name.clone(),
    }
}
