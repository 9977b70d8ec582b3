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

/// [`open_store`], with the store's operations, group commits and pool waits counted in
/// `metrics`.
pub fn open_observed_store(
    settings: &Settings,
    metrics: Arc<telemetry::Metrics>,
) -> Result<Store, StoreError> {
    Store::open_observed(
        &settings.database.url,
        &settings.database.pool_options(),
        Arc::new(StoreMetrics(metrics)),
    )
}

/// The store's hooks ([`ledger_store::StoreObserver`]) recording into the programs'
/// metrics: the one place that knows both (ADR 14).
pub struct StoreMetrics(pub Arc<telemetry::Metrics>);

impl ledger_store::StoreObserver for StoreMetrics {
    fn operation(&self, kind: &'static str, outcome: ledger_store::OperationOutcome) {
        self.0.ledger_operation(kind, outcome.as_str());
    }

    fn charged(&self, credits: ledger_core::Credits) {
        self.0
            .credits_charged(u64::try_from(credits.millis()).unwrap_or(0));
    }

    fn batch(&self, operations: usize) {
        self.0.ledger_batch(operations);
    }

    fn acquired(&self, waited: std::time::Duration) {
        self.0.db_acquired(waited);
    }

    fn acquire_timed_out(&self, _waited: std::time::Duration) {
        self.0.db_acquire_timed_out();
    }
}

/// The store's pool and Polar's calls, as `/metrics` shows them (both programs).
pub fn sample(store: &Store, payments: Option<&Payments>) -> telemetry::Sample {
    let pool = store.pool_stats();
    let polar_calls = payments
        .and_then(Payments::polar_calls)
        .map(|c| vec![("ok", c.ok), ("rejected", c.rejected), ("failed", c.failed)])
        .unwrap_or_default();
    telemetry::Sample {
        db_pool: Some(telemetry::PoolSample {
            max: pool.max,
            open: pool.open,
            idle: pool.idle,
        }),
        polar_calls,
        ..telemetry::Sample::default()
    }
}

/// Installs the log subscriber `[log]` asks for.
pub fn init_logging(settings: &Settings) -> Result<(), telemetry::LoggingError> {
    let format = match settings.log.format {
        settings::LogFormat::Text => telemetry::LogFormat::Text,
        settings::LogFormat::Json => telemetry::LogFormat::Json,
    };
    telemetry::init_logging(format, &settings.log.level)
}

/// One part of `/readyz`: its name and, when it fails, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub error: Option<String>,
}

impl Check {
    pub fn new(name: &'static str, result: Result<(), String>) -> Check {
        Check {
            name,
            error: result.err(),
        }
    }
}

/// The database parts of `/readyz` (both programs): `database` (the migrations table can
/// be read: the database answers and holds our schema) and `migrations` (every migration
/// of this build is applied).
pub fn database_checks(store: &Store) -> Vec<Check> {
    let known = ledger_store::all_migrations().map_or(0, |all| all.len());
    match store.pending_migrations().map(|pending| pending.len()) {
        Ok(0) => vec![Check::new("database", Ok(())), Check::new("migrations", Ok(()))],
        // Not one migration applied: the database answers, but what the server was
        // working on is not there (an empty or dropped schema, another database).
        Ok(n) if n == known => vec![
            Check::new(
                "database",
                Err("the database answers but holds none of Shotledger's tables (an empty or dropped schema, or another database): check database.url".into()),
            ),
            Check::new("migrations", Err("not checked: no schema".into())),
        ],
        Ok(n) => vec![
            Check::new("database", Ok(())),
            Check::new(
                "migrations",
                Err(format!(
                    "{n} migration(s) of this build are not applied to the database; run `shotledger migrate`, or start a server of this build once (it migrates at start)"
                )),
            ),
        ],
        Err(e) => vec![
            Check::new("database", Err(e.to_string())),
            Check::new("migrations", Err("not checked: the database does not answer".into())),
        ],
    }
}

/// The `/readyz` answer for `checks`: `200 {"status":"ready","checks":{..}}`, or `503
/// {"error":"not ready: <first failing part>: <why>","code":"NOT_READY","checks":{..}}`;
/// each check is `{"ok":true}` or `{"ok":false,"error":".."}`.
pub fn readiness(checks: &[Check]) -> (u16, serde_json::Value) {
    let mut parts = serde_json::Map::new();
    for c in checks {
        let part = match &c.error {
            None => serde_json::json!({ "ok": true }),
            Some(e) => serde_json::json!({ "ok": false, "error": e }),
        };
        parts.insert(c.name.to_owned(), part);
    }
    match checks.iter().find(|c| c.error.is_some()) {
        None => (
            200,
            serde_json::json!({ "status": "ready", "checks": parts }),
        ),
        Some(failed) => (
            503,
            serde_json::json!({
                "error": format!("not ready: {}: {}", failed.name, failed.error.as_deref().unwrap_or("")),
                "code": "NOT_READY",
                "checks": parts,
            }),
        ),
    }
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
