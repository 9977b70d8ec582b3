//! # startup
//!
//! The composition root: the one place that knows both the configuration (`settings`) and
//! the libraries it configures, so that none of them depends on another's configuration
//! (the crate-edge table, `scripts/check-crate-edges.sh`: `payments` must not depend on
//! `settings`, `settings` not on `ledger-store`). Both programs, and the tests that build
//! their parts, start here.

use ledger_store::{Store, StoreError};
use payments::{Payments, PaymentsConfig, PaymentsError, ProviderChoice};
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

/// The payments service over `store`, as the settings configure it.
pub fn payments(settings: &Settings, store: Store) -> Result<Payments, PaymentsError> {
    Payments::new(&payments_config(settings)?, store)
}
