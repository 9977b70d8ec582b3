//! Settings and payments wired to a [`FakePolar`](crate::fake_polar::FakePolar).

use ledger_core::AccountId;
use ledger_store::Store;
use payments::{Payments, SubscriptionBook, SubscriptionConfig};
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
    // Without subscriptions: tests wire a book of their choice with `with_plans` (the
    // programs wire the store's, `startup::payments`).
    let config = startup::payments_config(settings).expect("payments configuration");
    let payments = Payments::new(&config, store).expect("payments");
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
    startup::subscription_config(settings)
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

/// [`polar_payments`] with subscriptions wired to `book` ([`with_plans`], each plan sold at
/// `fake`).
pub fn polar_with_plans(
    fake: &FakePolar,
    settings: &Settings,
    store: Store,
    book: Arc<dyn SubscriptionBook>,
) -> Payments {
    with_plans(
        polar_payments(fake, settings, store),
        settings,
        book,
        Some(fake),
    )
}

/// The demo provider's payments (`settings`) on `store`, with subscriptions wired to a new
/// [`MemoryBook`] that knows `acct`.
pub fn demo_with_memory_book(
    settings: &Settings,
    store: Store,
    acct: &AccountId,
) -> (Arc<MemoryBook>, Payments) {
    let book = MemoryBook::new([acct]);
    let payments = startup::payments(settings, store).expect("demo payments");
    let payments = with_plans(payments, settings, book.clone(), None);
    (book, payments)
}

/// An overage item of a [`MemoryBook`], with how reporting it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryItem {
    pub report: payments::OverageReport,
    /// `pending`, `reported` or `recorded`.
    pub status: &'static str,
    pub next_attempt_at: ledger_core::Timestamp,
    pub last_error: Option<String>,
    /// How many times it was marked reported or recorded (must stay at most 1).
    pub acknowledged: u32,
}

#[derive(Debug, Default)]
struct MemoryState {
    accounts: std::collections::BTreeSet<String>,
    subscriptions: std::collections::BTreeMap<String, payments::SubscriptionUpdate>,
    changes: u64,
    items: Vec<MemoryItem>,
}

/// An in-memory [`SubscriptionBook`] for the payments side's tests (the store's real one
/// is built separately): one subscription per account, replaced only by an update with
/// a newer `modified_at`; overage items handed out while pending and due.
#[derive(Debug, Default)]
pub struct MemoryBook(std::sync::Mutex<MemoryState>);

impl MemoryBook {
    /// A book that knows `accounts` (updates for any other are `UnknownAccount`).
    pub fn new<'a>(accounts: impl IntoIterator<Item = &'a AccountId>) -> Arc<MemoryBook> {
        let book = MemoryBook::default();
        book.lock().accounts = accounts
            .into_iter()
            .map(|a| a.as_str().to_owned())
            .collect();
        Arc::new(book)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscription(&self, account: &AccountId) -> Option<payments::SubscriptionUpdate> {
        self.lock().subscriptions.get(account.as_str()).cloned()
    }

    /// Updates applied (changed) so far.
    pub fn changes(&self) -> u64 {
        self.lock().changes
    }

    /// Adds a pending overage item, due now.
    pub fn add_overage(&self, report: payments::OverageReport) {
        self.lock().items.push(MemoryItem {
            report,
            status: "pending",
            next_attempt_at: ledger_core::Timestamp::from_millis(0),
            last_error: None,
            acknowledged: 0,
        });
    }

    /// A crash between the provider's 2xx and the mark: item `id` is pending again.
    pub fn lose_mark(&self, id: &str) {
        let mut s = self.lock();
        if let Some(i) = s.items.iter_mut().find(|i| i.report.id == id) {
            i.status = "pending";
        }
    }

    pub fn items(&self) -> Vec<MemoryItem> {
        self.lock().items.clone()
    }

    pub fn item(&self, id: &str) -> MemoryItem {
        self.items()
            .into_iter()
            .find(|i| i.report.id == id)
            .expect("an item of this book")
    }
}

impl SubscriptionBook for MemoryBook {
    fn apply_subscription_update(
        &self,
        update: &payments::SubscriptionUpdate,
        _now: ledger_core::Timestamp,
    ) -> Result<payments::UpdateOutcome, ledger_store::StoreError> {
        let mut s = self.lock();
        if !s.accounts.contains(update.account_id.as_str()) {
            return Ok(payments::UpdateOutcome::UnknownAccount);
        }
        if let Some(old) = s.subscriptions.get(update.account_id.as_str()) {
            if old.modified_at_micros >= update.modified_at_micros {
                return Ok(payments::UpdateOutcome::NotNewer);
            }
        }
        s.subscriptions
            .insert(update.account_id.as_str().to_owned(), update.clone());
        s.changes += 1;
        Ok(payments::UpdateOutcome::Changed)
    }

    fn pending_overage_reports(
        &self,
        now: ledger_core::Timestamp,
        limit: usize,
    ) -> Result<Vec<payments::OverageReport>, ledger_store::StoreError> {
        Ok(self
            .lock()
            .items
            .iter()
            .filter(|i| i.status == "pending" && i.next_attempt_at <= now)
            .take(limit)
            .map(|i| i.report.clone())
            .collect())
    }

    fn record_overage_report(
        &self,
        id: &str,
        outcome: &payments::ReportOutcome,
        _now: ledger_core::Timestamp,
    ) -> Result<(), ledger_store::StoreError> {
        let mut s = self.lock();
        let Some(item) = s.items.iter_mut().find(|i| i.report.id == id) else {
            return Ok(());
        };
        match outcome {
            payments::ReportOutcome::Reported => {
                item.status = "reported";
                item.acknowledged += 1;
            }
            payments::ReportOutcome::Recorded => {
                item.status = "recorded";
                item.acknowledged += 1;
            }
            payments::ReportOutcome::Failed {
                error,
                next_attempt_at,
            } => {
                item.report.attempts += 1;
                item.last_error = Some(error.clone());
                item.next_attempt_at = *next_attempt_at;
            }
        }
        Ok(())
    }
}
