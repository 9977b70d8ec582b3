//! Running the api-server as a program: open the store, start the browser pool and the
//! background work, serve until SIGTERM. `app` (in the crate root) is the HTTP surface.

use std::time::Duration;

use actix_web::HttpServer;
use ledger_store::{PoolOptions, Store};
use settings::Settings;

use crate::{app, system_clock, AppState};

/// Opens the database named by the settings (migrations run first).
pub fn open_store(settings: &Settings) -> Result<Store, ledger_store::StoreError> {
    Store::open(
        &settings.database.url,
        &PoolOptions {
            max_connections: settings.database.max_connections,
            ..PoolOptions::default()
        },
    )
}

/// Serves until SIGTERM or Ctrl-C, then lets requests in flight finish.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let store = open_store(&settings)?;
    let bind = settings.server.bind.clone();
    let workers = match settings.server.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let shutdown = settings.server.shutdown_timeout_secs;
    let capture_config = capture_config(&settings.capture);
    let payments = std::sync::Arc::new(payments::Payments::new(&settings, store.clone())?);
    let mut state = AppState::new(store, settings, system_clock())?.with_payments(payments);
    match capture::CaptureService::start(capture_config).await {
        Ok(service) => state = state.with_capture(service),
        Err(e) => {
            tracing::warn!(error = %e, "screenshots are unavailable; the ledger API still runs");
            state.capture_unavailable = Some(e.to_string());
        }
    }
    let capture = state.capture.clone();
    spawn_compaction(&state);
    tracing::info!(%bind, workers, backend = ?state.store.backend(), "api-server listening");
    HttpServer::new(move || app(state.clone()))
        .workers(workers)
        .shutdown_timeout(shutdown)
        .client_request_timeout(Duration::from_secs(30))
        .bind(&bind)?
        .run()
        .await?;
    if let Some(service) = capture {
        service.shutdown().await;
    }
    tracing::info!("api-server stopped");
    Ok(())
}

/// Compacts history older than `credits.retention_months` at start and every 6 hours, on
/// its own thread (it is a write transaction; balances stay exact, see `Store::compact`).
fn spawn_compaction(state: &AppState) {
    let Ok(retention) = ledger_core::Retention::months(state.settings.credits.retention_months)
    else {
        return;
    };
    let (store, clock) = (state.store.clone(), state.clock.clone());
    std::thread::Builder::new()
        .name("compaction".into())
        .spawn(move || loop {
            match store.compact(retention, clock()) {
                Ok(r) if r.entries_removed > 0 => {
                    tracing::info!(
                        accounts = r.accounts,
                        entries = r.entries_removed,
                        "compacted old history"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "compaction failed; it will run again later"),
            }
            std::thread::sleep(Duration::from_secs(6 * 3600));
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::warn!(error = %e, "could not start the compaction thread"));
}

/// The capture crate's configuration from the `[capture]` settings.
pub fn capture_config(c: &settings::CaptureSettings) -> capture::CaptureConfig {
    let defaults = capture::CaptureConfig::default();
    capture::CaptureConfig {
        webdriver_url: Some(c.webdriver_url.clone()).filter(|u| !u.trim().is_empty()),
        chromedriver_path: c.chromedriver_path.clone().into(),
        chromium_path: Some(c.chromium_path.clone().into()),
        pool_size: if c.pool_size == 0 {
            defaults.pool_size
        } else {
            c.pool_size
        },
        max_uses_per_session: c.max_uses_per_session,
        queue_capacity: c.queue_capacity,
        allow_private_targets: c.allow_private_targets,
        default_timeout_secs: c.default_timeout_secs,
        ..defaults
    }
}

/// Logs as text to stderr; `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
