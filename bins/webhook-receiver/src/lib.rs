//! # webhook-receiver
//!
//! Shotledger's second program: it receives Polar's webhooks on its own port and turns
//! them into ledger entries, on the same database as the api-server.
//!
//! `POST /api/webhooks/polar`:
//! 1. verifies the Standard Webhooks signature over the raw body (missing or malformed
//!    headers: 400; a wrong signature or a timestamp more than 5 minutes away: 401; in
//!    both cases nothing is stored or changed);
//! 2. stores the delivery (its webhook id is unique) *before* processing it, so a crash
//!    between receipt and effect loses nothing: unprocessed deliveries are processed at
//!    start-up and by a sweep every few seconds;
//! 3. processes it inline within a budget of 1.5 s (Polar asks for an answer within
//!    2 s): done in time → `200`; still running → `202` and the work finishes in the
//!    background (it is stored, and idempotent by order id, so nothing is lost or
//!    doubled); a processing error → `500` (Polar retries; the sweep retries too).
//!
//! Duplicates (the same webhook id) answer `200` and change nothing; verified events we
//! do not handle answer `200` and are ignored. Every delivery is logged with its id, type
//! and outcome.
//!
//! Demo mode (no `polar.access_token`): `GET /demo/checkout/{id}` shows a local test
//! checkout; its Pay button (`POST /demo/checkout/{id}/pay`) makes this receiver post
//! itself a signed `order.created`, `order.updated` and `order.paid`, then redirects to
//! `polar.success_url`.
//!
//! Test hook: when the environment has `SHOTLEDGER_TEST_CRASH_AFTER_STORE=1`, the process
//! aborts right after storing a new delivery and before processing it. It exists only for
//! the crash-recovery test (tests/crash.rs); nothing else sets it.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use ledger_core::Timestamp;
use ledger_store::payments::DeliveryReceipt;
use ledger_store::{PoolOptions, Store, StoreError};
use payments::{Payments, PaymentsError, SignedHeaders};
use serde_json::json;
use settings::Settings;

/// The environment variable of the crash test hook (see the crate docs).
pub const CRASH_AFTER_STORE_ENV: &str = "SHOTLEDGER_TEST_CRASH_AFTER_STORE";

/// How long a webhook request may spend processing before it answers `202`.
pub const PROCESSING_BUDGET: Duration = Duration::from_millis(1500);

/// How often stored but unprocessed deliveries (and pending auto top-ups) are swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// Largest webhook body accepted.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Payments(#[from] PaymentsError),
    #[error("webhooks.bind: {0}")]
    Bind(std::io::Error),
    #[error("server: {0}")]
    Server(std::io::Error),
}

/// What the handlers share.
pub struct AppState {
    payments: Payments,
    /// This server's own URL (the demo Pay button posts deliveries here).
    self_url: String,
    crash_after_store: bool,
}

/// Opens the database (migrating it) and builds the payments facade; refuses a Polar
/// configuration without a webhook secret.
pub fn open(settings: &Settings) -> Result<Payments, ReceiverError> {
    let store = Store::open(
        &settings.database.url,
        &PoolOptions {
            max_connections: settings.database.max_connections,
            ..PoolOptions::default()
        },
    )?;
    let payments = Payments::new(settings, store)?;
    if !payments.can_verify_webhooks() {
        return Err(PaymentsError::Config(
            "polar.webhook_secret: must be set when polar.access_token is (Polar signs its webhooks with it)".into(),
        )
        .into());
    }
    Ok(payments)
}

/// Serves on `listener` until SIGTERM/SIGINT (graceful, `shutdown_timeout` seconds) or
/// until the returned server's handle stops it.
pub fn server(
    payments: Payments,
    listener: TcpListener,
    shutdown_timeout: u64,
    handle_signals: bool,
) -> Result<actix_web::dev::Server, ReceiverError> {
    let addr = listener.local_addr().map_err(ReceiverError::Bind)?;
    let state = web::Data::new(AppState {
        payments,
        self_url: format!("http://{addr}"),
        crash_after_store: std::env::var(CRASH_AFTER_STORE_ENV).is_ok_and(|v| v == "1"),
    });
    let sweeper = state.clone().into_inner();
    let mut http = HttpServer::new({
        let state = state.clone();
        move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY))
                .route("/api/webhooks/polar", web::post().to(polar_webhook))
                .route("/healthz", web::get().to(healthz))
                .route("/demo/checkout/{id}", web::get().to(demo_page))
                .route("/demo/checkout/{id}/pay", web::post().to(demo_pay))
                .default_service(web::to(not_found))
        }
    })
    .shutdown_timeout(shutdown_timeout)
    .listen(listener)
    .map_err(ReceiverError::Bind)?;
    if !handle_signals {
        http = http.disable_signals();
    }
    let server = http.run();
    actix_web::rt::spawn(sweep_forever(sweeper));
    tracing::info!(%addr, demo = state.payments.is_demo(), "webhook-receiver listening");
    Ok(server)
}

/// Start-up recovery, then a sweep every [`SWEEP_EVERY`]: unprocessed deliveries (older
/// than the processing budget, so in-flight ones are left to their request) and pending
/// auto top-ups.
///
/// With Polar, it also reconciles at start and every `polar.reconcile_interval_secs`: Polar
/// stops retrying a delivery after about 10 attempts in 30 minutes, so an order whose
/// webhooks all failed (this program was down, say) is still credited, once.
async fn sweep_forever(state: Arc<AppState>) {
    let mut first = true;
    let mut last_reconcile: Option<std::time::Instant> = None;
    loop {
        if let Some(every) = state.payments.reconcile_every() {
            if last_reconcile.is_none_or(|t| t.elapsed() >= every) {
                last_reconcile = Some(std::time::Instant::now());
                let st = state.clone();
                match web::block(move || st.payments.reconcile(payments::now())).await {
                    Ok(Ok(r)) => tracing::info!(
                        orders = r.orders,
                        credited = r.credited,
                        refunds = r.refunds,
                        "reconcile"
                    ),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "reconcile failed; it runs again later")
                    }
                    Err(e) => tracing::error!(error = %e, "reconcile did not run"),
                }
            }
        }
        let st = state.clone();
        let startup = first;
        let result = web::block(move || -> Result<(usize, usize), PaymentsError> {
            let now = payments::now();
            let before = if startup {
                now.plus_millis(1)
            } else {
                now.plus_millis(-3_000)
            };
            let recovered = st.payments.process_unprocessed(before, now)?;
            let topups = st.payments.run_auto_topups(now)?;
            Ok((recovered, topups))
        })
        .await;
        match result {
            Ok(Ok((recovered, topups))) if recovered + topups > 0 || startup => {
                tracing::info!(recovered, topups, startup, "sweep");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "sweep failed"),
            Err(e) => tracing::error!(error = %e, "sweep did not run"),
        }
        first = false;
        actix_web::rt::time::sleep(SWEEP_EVERY).await;
    }
}

fn header_value(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn json_error(status: actix_web::http::StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message }))
}

async fn polar_webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let id = header_value(&req, "webhook-id");
    let timestamp = header_value(&req, "webhook-timestamp");
    let signature = header_value(&req, "webhook-signature");
    let now: Timestamp = payments::now();
    let st = state.clone();
    let received = web::block(move || {
        let headers = SignedHeaders {
            id: id.as_deref(),
            timestamp: timestamp.as_deref(),
            signature: signature.as_deref(),
        };
        st.payments.receive(headers, &body, now)
    })
    .await;
    let received = match received {
        Ok(Ok(r)) => r,
        Ok(Err(e)) if e.is_bad_request() => {
            let status = if e.is_unauthenticated() {
                actix_web::http::StatusCode::UNAUTHORIZED
            } else {
                actix_web::http::StatusCode::BAD_REQUEST
            };
            tracing::warn!(webhook_id = header_value(&req, "webhook-id").unwrap_or_default(), outcome = "refused", reason = %e, "webhook refused");
            return json_error(status, &format!("Webhook refused: {e}"));
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "webhook could not be stored");
            return json_error(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error; retry later",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "webhook task failed");
            return json_error(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error; retry later",
            );
        }
    };
    if state.crash_after_store && received.receipt == DeliveryReceipt::New {
        tracing::warn!(webhook_id = %received.webhook_id, "{CRASH_AFTER_STORE_ENV}=1: aborting after storing the delivery");
        std::process::abort();
    }
    if received.receipt == (DeliveryReceipt::Duplicate { processed: true }) {
        tracing::info!(webhook_id = %received.webhook_id, event_type = %received.event_type, outcome = "duplicate", "webhook");
        return HttpResponse::Ok().json(json!({ "status": "duplicate" }));
    }
    let st = state.clone();
    let webhook_id = received.webhook_id.clone();
    let work = web::block(move || st.payments.process_delivery(&webhook_id, payments::now()));
    match actix_web::rt::time::timeout(PROCESSING_BUDGET, work).await {
        Ok(Ok(Ok(outcome))) => {
            tracing::info!(webhook_id = %received.webhook_id, event_type = %received.event_type, outcome = %outcome, "webhook");
            HttpResponse::Ok().json(json!({ "status": "processed", "outcome": outcome }))
        }
        Ok(Ok(Err(e))) => {
            tracing::error!(webhook_id = %received.webhook_id, event_type = %received.event_type, outcome = "failed", error = %e, "webhook");
            json_error(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Stored, but processing failed; it will be retried",
            )
        }
        Ok(Err(e)) => {
            tracing::error!(webhook_id = %received.webhook_id, error = %e, "webhook task failed");
            json_error(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error; retry later",
            )
        }
        Err(_) => {
            tracing::info!(webhook_id = %received.webhook_id, event_type = %received.event_type, outcome = "accepted", "webhook processing continues in the background");
            HttpResponse::Accepted().json(json!({ "status": "accepted" }))
        }
    }
}

async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let st = state.clone();
    match web::block(move || st.payments.store().ping()).await {
        Ok(Ok(())) => HttpResponse::Ok().json(json!({ "status": "ok" })),
        _ => json_error(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "database unavailable",
        ),
    }
}

async fn not_found() -> HttpResponse {
    json_error(actix_web::http::StatusCode::NOT_FOUND, "Not found")
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}

fn dollars(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, (cents % 100).abs())
}

async fn demo_page(state: web::Data<AppState>, id: web::Path<String>) -> HttpResponse {
    let st = state.clone();
    let id = id.into_inner();
    let checkout = match web::block(move || st.payments.demo_checkout(&id)).await {
        Ok(Ok(Some(c))) => c,
        Ok(Ok(None)) => {
            return json_error(actix_web::http::StatusCode::NOT_FOUND, "Checkout not found")
        }
        _ => {
            return json_error(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
            )
        }
    };
    let action = if checkout.paid {
        "<p class=\"paid\">This checkout is paid. Your credits have been added.</p>".to_owned()
    } else {
        format!(
            "<form method=\"post\" action=\"/demo/checkout/{}/pay\"><button type=\"submit\">Pay {}</button></form>",
            escape(&checkout.id),
            dollars(checkout.price_cents)
        )
    };
    let page = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TEST PAYMENT — {name}</title>
<style>body{{font-family:sans-serif;max-width:32rem;margin:3rem auto}}.banner{{background:#b00020;color:#fff;padding:1rem;font-weight:bold;text-align:center}}button{{font-size:1.2rem;padding:.6rem 1.4rem}}</style>
</head><body>
<div class="banner">TEST PAYMENT — no money moves</div>
<h1>{name}</h1>
<p><strong>{credits}</strong> credits for <strong>{price}</strong></p>
{action}
<p><small>Demo checkout {id}: Shotledger runs without a payment provider. Paying here sends this server a signed <code>order.paid</code> webhook, exactly as Polar would.</small></p>
</body></html>"#,
        name = escape(&checkout.pack_name),
        credits = escape(&checkout.credits.grouped()),
        price = dollars(checkout.price_cents),
        id = escape(&checkout.id),
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(page)
}

async fn demo_pay(state: web::Data<AppState>, id: web::Path<String>) -> HttpResponse {
    let st = state.clone();
    let id = id.into_inner();
    let result = web::block(move || -> Result<Option<()>, String> {
        let now = payments::now();
        let Some(deliveries) = st.payments.demo_pay(&id, now).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let url = format!("{}/api/webhooks/polar", st.self_url);
        for d in &deliveries {
            let status = d.send(&url, Duration::from_secs(10))?;
            if !(200..300).contains(&status) {
                return Err(format!(
                    "the receiver answered {status} to its own demo delivery"
                ));
            }
        }
        st.payments
            .demo_mark_paid(&id, now)
            .map_err(|e| e.to_string())?;
        Ok(Some(()))
    })
    .await;
    match result {
        Ok(Ok(Some(()))) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, state.payments.success_url().to_owned()))
            .finish(),
        Ok(Ok(None)) => json_error(actix_web::http::StatusCode::NOT_FOUND, "Checkout not found"),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "demo payment failed");
            json_error(
                actix_web::http::StatusCode::BAD_GATEWAY,
                "The test payment could not be delivered; try again",
            )
        }
        Err(_) => json_error(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
        ),
    }
}

/// A receiver running on its own thread (tests): stops when dropped.
pub struct RunningReceiver {
    pub addr: SocketAddr,
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningReceiver {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn webhook_url(&self) -> String {
        format!("{}/api/webhooks/polar", self.url())
    }
}

/// Starts a receiver for `payments` on `127.0.0.1:0` in a thread of its own.
pub fn spawn(payments: Payments) -> Result<RunningReceiver, ReceiverError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(ReceiverError::Bind)?;
    let addr = listener.local_addr().map_err(ReceiverError::Bind)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            match server(payments, listener, 1, false) {
                Ok(server) => {
                    let _ = tx.send(Ok(server.handle()));
                    let _ = server.await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    });
    let handle = rx
        .recv()
        .map_err(|_| ReceiverError::Server(std::io::Error::other("the receiver thread died")))??;
    Ok(RunningReceiver {
        addr,
        handle,
        thread: Some(thread),
    })
}

impl Drop for RunningReceiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
