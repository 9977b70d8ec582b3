//! Settings and payments wired to a [`FakePolar`](crate::fake_polar::FakePolar).

use ledger_core::AccountId;
use ledger_store::Store;
use payments::{Payments, PlanOffer, SubscriptionBook, SubscriptionConfig};
use serde_json::Value;
use settings::{Settings, Sources};
use std::sync::Arc;

use crate::fake_polar::FakePolar;
use crate::TestDb;

/// The access token every fake Polar accepts in the tests.
pub const TOKEN: &str = "polar_oat_test_token";

/// The configuration environment of a program on `database_url`; with `polar_url`, in
/// Polar mode against that fake ([`TOKEN`], `secret`, a `timeout_secs` API timeout).
pub fn polar_env(
    database_url: &str,
    polar_url: Option<&str>,
    secret: &str,
    timeout_secs: u64,
) -> Vec<(String, String)> {
    let mut env = vec![("DATABASE_URL".to_owned(), database_url.to_owned())];
    if let Some(url) = polar_url {
        env.push(("SHOTLEDGER__POLAR__API_URL".into(), url.into()));
        env.push(("SHOTLEDGER__POLAR__ACCESS_TOKEN".into(), TOKEN.into()));
        env.push(("SHOTLEDGER__POLAR__WEBHOOK_SECRET".into(), secret.into()));
        env.push((
            "SHOTLEDGER__POLAR__TIMEOUT_SECS".into(),
            timeout_secs.to_string(),
        ));
    }
    env
}

/// The built-in defaults and `env` only (no file, no process environment); with
/// `on_polar`, every pack is sold as the Polar product `prod_<pack id>`.
pub fn settings_from(env: Vec<(String, String)>, on_polar: bool) -> Settings {
    let mut s = Settings::load(Sources {
        file: None,
        working_folder_defaults: false,
        env,
    })
    .expect("test settings");
    if on_polar {
        for p in &mut s.credits.packs {
            p.polar_product_id = Some(format!("prod_{}", p.id));
        }
    }
    s
}

/// Default settings on `db` with the demo provider asked for by name (it is never the
/// default).
pub fn demo_settings(db: &TestDb) -> Settings {
    let mut s = settings_from(polar_env(&db.url, None, "", 0), false);
    s.payments.provider = "demo".into();
    s
}

/// Payments with `settings` (Polar mode against `fake`) on `store`; the fake charges each
/// pack's price.
pub fn polar_payments(fake: &FakePolar, settings: &Settings, store: Store) -> Payments {
    let payments = startup::payments(settings, store).expect("payments");
    for p in payments.catalogue().all() {
        fake.set_price(
            p.product_id.as_deref().expect("a pack sold on Polar"),
            p.price.get(),
        );
    }
    payments
}

/// An order paid at the fake for a checkout `payments` made for `acct`: what a customer
/// who bought `pack_id` through the api-server produces.
pub fn bought(fake: &FakePolar, payments: &Payments, acct: &AccountId, pack_id: &str) -> Value {
    fake.buy(payments, acct, pack_id)
}

/// Every paying plan of `settings` sold as the Polar product `prod_<plan id>`.
pub fn sell_plans_on_polar(settings: &mut Settings) {
    for p in &mut settings.plans {
        if p.paying {
            p.polar_product_id = Some(format!("prod_{}", p.id));
        }
    }
}

/// The plans and overage event name of `settings`, as the payments side reads them.
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

/// `payments` with subscriptions wired to `book` as `settings` configure them; with a
/// `fake`, each plan's product is sold there as a monthly subscription at its price.
pub fn with_plans(
    payments: Payments,
    settings: &Settings,
    book: Arc<dyn SubscriptionBook>,
    fake: Option<&FakePolar>,
) -> Payments {
    let config = subscription_config(settings);
    if let Some(fake) = fake {
        for p in &config.plans {
            if let Some(product) = &p.product_id {
                fake.set_recurring(product, p.price_cents);
            }
        }
    }
    payments.with_subscriptions(book, config)
}
