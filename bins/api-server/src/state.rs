//! What every handler shares.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ledger_core::{Catalogue, Timestamp};
use ledger_store::{Store, StoreError};
use settings::Settings;

use crate::blocking::Blocking;
use crate::cache::DiskCache;
use crate::checkout::{CheckoutProvider, NoProvider};
use crate::error::ApiError;
use crate::service::screenshot::Capturer;

/// The time source (tests pin it).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp::from_millis(ms)
    })
}

/// Shared, read-only application state.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub settings: Arc<Settings>,
    pub catalogue: Arc<Catalogue>,
    pub clock: Clock,
    pub checkout: Arc<dyn CheckoutProvider>,
    /// The browser pool; `None` when no browser could be started. Kept for its shutdown
    /// and statistics; captures go through [`AppState::capturer`].
    pub capture: Option<capture::CaptureService>,
    /// What takes screenshots: the browser pool, or a fake in tests.
    pub capturer: Option<Arc<dyn Capturer>>,
    /// Why `capture` is `None`, shown in 503 answers.
    pub capture_unavailable: Option<String>,
    pub cache: DiskCache,
    /// Payments (checkouts, auto top-up); `None` in tests that do not need them.
    pub payments: Option<Arc<payments::Payments>>,
    pub login_throttle: Arc<crate::throttle::LoginThrottle>,
    /// The bridge to the blocking pool, bounded to the database pool's size.
    pub blocking: Blocking,
    /// The rate and concurrency limits (`[ratelimit]`, ADR 15).
    pub limits: Arc<crate::ratelimit::Limits>,
    /// What `/metrics` shows; the store records into the same one when it was opened
    /// with it ([`startup::open_observed_store`]).
    pub metrics: Arc<telemetry::Metrics>,
}

impl AppState {
    pub fn new(
        store: Store,
        settings: Settings,
        clock: Clock,
    ) -> Result<AppState, settings::SettingsError> {
        let catalogue = settings.catalogue()?;
        let shots = &settings.screenshots;
        let cache = DiskCache::with_limit(&shots.cache_dir, shots.cache_max_bytes);
        let login_throttle = Arc::new(crate::throttle::LoginThrottle::new(
            settings.auth.max_failed_logins,
            settings.auth.lockout_secs,
        ));
        let blocking = Blocking::new(
            settings.database.max_connections as usize,
            std::time::Duration::from_secs(settings.database.acquire_timeout_secs),
        );
        let limits = Arc::new(crate::ratelimit::Limits::new(&settings.ratelimit));
        Ok(AppState {
            store,
            settings: Arc::new(settings),
            catalogue: Arc::new(catalogue),
            clock,
            checkout: Arc::new(NoProvider),
            capture: None,
            capturer: None,
            capture_unavailable: Some("the capture service was not started".into()),
            cache,
            payments: None,
            login_throttle,
            blocking,
            limits,
            metrics: Arc::new(telemetry::Metrics::new()),
        })
    }

    /// Records into `metrics` (the one the store was opened with).
    pub fn with_metrics(mut self, metrics: Arc<telemetry::Metrics>) -> AppState {
        self.metrics = metrics;
        self
    }

    /// What the store, the browser pool, the cache and Polar kept, read now for
    /// `/metrics`.
    pub fn metrics_sample(&self) -> telemetry::Sample {
        let mut sample = startup::sample(&self.store, self.payments.as_deref());
        if let Some(c) = &self.capture {
            let s = c.stats();
            sample.capture = Some(telemetry::CaptureSample {
                pool_size: s.pool_size,
                busy: s.busy,
                queued: s.queued,
                sessions_opened: s.sessions_opened,
                busy_rejections: s.busy_rejections,
            });
        }
        let c = self.cache.stats();
        sample.cache = Some(telemetry::CacheSample {
            entries: c.entries,
            bytes: c.bytes,
            max_bytes: c.max_bytes,
            hits: c.hits,
            misses: c.misses,
        });
        sample
    }

    /// Takes screenshots with `service`.
    pub fn with_capture(mut self, service: capture::CaptureService) -> AppState {
        self.capturer = Some(Arc::new(service.clone()));
        self.capture = Some(service);
        self.capture_unavailable = None;
        self
    }

    /// Takes screenshots with `capturer` (tests: a fake browser).
    pub fn with_capturer(mut self, capturer: Arc<dyn Capturer>) -> AppState {
        self.capturer = Some(capturer);
        self.capture_unavailable = None;
        self
    }

    /// Buys packs and runs auto top-up through `payments`.
    pub fn with_payments(mut self, payments: Arc<payments::Payments>) -> AppState {
        self.checkout = Arc::new(crate::checkout::PaymentsCheckout(payments.clone()));
        self.payments = Some(payments);
        self
    }

    /// Uses `provider` for purchases.
    pub fn with_checkout(mut self, provider: Arc<dyn CheckoutProvider>) -> AppState {
        self.checkout = provider;
        self
    }

    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// Runs blocking store work through [`Blocking::store`] (bounded; a quick 503 when
    /// every database connection is taken).
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.clone();
        self.blocking.store(move || f(&store)).await
    }

    /// Runs `f`, which only applies ledger operations through the group-committing engine
    /// (`Ledger::apply`), through [`Blocking::ledger`]: bounded by the operations that may
    /// wait for a commit, not by the pool's size (the wait holds no connection).
    pub async fn in_ledger<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.clone();
        self.blocking.ledger(move || Ok(f(&store)?)).await
    }

    /// A short store read: here, on the async thread, when it needs no wait
    /// (`Store::read_now`: SQLite, a connection idle in the pool, nothing to write), else
    /// as [`AppState::in_store`] on a blocking thread. The hand-off to a blocking thread
    /// and back costs more than such a read (ADR 20).
    pub async fn read_store<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Store) -> Result<T, StoreError> + Clone + Send + 'static,
        T: Send + 'static,
    {
        if let Some(out) = self.store.read_now(f.clone()) {
            return Ok(out?);
        }
        self.in_store(f).await
    }

    /// [`AppState::blocking`] for store work alone: its error answers as [`ApiError`]'s
    /// conversion of [`StoreError`] says.
    pub async fn in_store<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.blocking(move |s| Ok(f(s)?)).await
    }
}
