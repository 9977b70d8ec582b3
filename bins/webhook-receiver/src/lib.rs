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
//! Nothing is acknowledged (2xx) before it is stored: when the delivery cannot be stored
//! (the database is down) the answer is `503` with `Retry-After`, so Polar retries.
//! Duplicates (the same webhook id) answer `200` and change nothing; verified events we
//! do not handle answer `200` and are ignored; a paid order that does not match our
//! checkout is refused (kept for an operator, `webhook-receiver refused`) and answers
//! `200`, since retrying cannot change it. Every delivery is logged with its id, type and
//! outcome.
//!
//! No payment provider (the built-in default): webhooks answer `503
//! PAYMENTS_NOT_CONFIGURED` and nothing is stored. Demo mode (only with
//! `payments.provider = "demo"`): `GET /demo/checkout/{id}` shows a local test checkout;
//! its Pay button (`POST /demo/checkout/{id}/pay`) makes this receiver post itself a
//! signed `order.created`, `order.updated` and `order.paid`, then redirects to
//! `polar.success_url`. Likewise `GET /demo/subscription/{token}` (a plan checkout the
//! api-server signed) and its `POST .../pay`, which posts `subscription.created`,
//! `subscription.active` and `order.paid` (`subscription_create`). In any other mode
//! those paths do not exist (`404`).
//!
//! Subscription webhooks (`subscription.*`) are applied through the payments side's
//! `SubscriptionBook` once it is wired; the sweep also reports pending overage items to
//! Polar's event ingestion (`Payments::report_overage`).
//!
//! Every answer is JSON `{"error", "code"}` when it is an error: unknown paths `404
//! NOT_FOUND`, a wrong method on a known path `405 METHOD_NOT_ALLOWED` with `Allow`, a body
//! over 1 MiB `413 PAYLOAD_TOO_LARGE`, and any other error the framework makes (see
//! [`json_errors`]).
//!
//! Test hook: when the environment has `SHOTLEDGER_TEST_CRASH_AFTER_STORE=1`, the process
//! aborts right after storing a new delivery and before processing it. It exists only for
//! the crash-recovery test (tests/it/crash.rs); nothing else sets it.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServerHandle, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, App, HttpRequest, HttpResponse};
use ledger_core::Timestamp;
use ledger_store::payments::DeliveryReceipt;
use ledger_store::{Store, StoreError};
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
pub const MAX_BODY: usize = 1 << 20;

/// What a `503` asks the client to wait before retrying, in seconds.
const RETRY_AFTER_SECS: u64 = 5;

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
    observed: Observed,
    /// This server's own URL (the demo Pay button posts deliveries here).
    self_url: String,
    crash_after_store: bool,
}

/// What `/metrics` shows and who may read it on the receiver's own listener.
#[derive(Clone, Default)]
pub struct Observed {
    /// The metrics the store was opened with ([`open_observed`]) and the handlers count in.
    pub metrics: Arc<telemetry::Metrics>,
    /// `metrics.token`: `/metrics` on `webhooks.bind` asks for it; `None`: not served (404).
    pub token: Option<String>,
}

impl Observed {
    /// The metrics text now.
    fn text(&self, payments: &Payments) -> HttpResponse {
        let sample = startup::sample(payments.store(), Some(payments));
        HttpResponse::Ok()
            .content_type(telemetry::CONTENT_TYPE)
            .body(self.metrics.render(sample))
    }
}

/// Opens the database (migrating it) and builds the payments facade; refuses a Polar
/// configuration without a webhook secret.
pub fn open(settings: &Settings) -> Result<Payments, ReceiverError> {
    payments_on(settings, startup::open_store(settings)?)
}

/// [`open`], with the store's operations and pool waits counted in `metrics`.
pub fn open_observed(
    settings: &Settings,
    metrics: Arc<telemetry::Metrics>,
) -> Result<Payments, ReceiverError> {
    payments_on(settings, startup::open_observed_store(settings, metrics)?)
}

/// The payments facade over an opened `store` (the operator CLI's `reconcile` opens the
/// store itself, without migrating); refuses a Polar configuration without a webhook
/// secret.
pub fn payments_on(settings: &Settings, store: Store) -> Result<Payments, ReceiverError> {
    let payments = startup::payments(settings, store)?;
    if !payments.is_configured() {
        tracing::warn!("no payment provider is configured: Polar's webhooks are answered 503 PAYMENTS_NOT_CONFIGURED and nothing can be credited");
    }
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
    server_observed(
        payments,
        Observed::default(),
        listener,
        shutdown_timeout,
        handle_signals,
    )
}

/// [`server`], counting in `observed.metrics` and serving `/metrics` with its token.
pub fn server_observed(
    payments: Payments,
    observed: Observed,
    listener: TcpListener,
    shutdown_timeout: u64,
    handle_signals: bool,
) -> Result<actix_web::dev::Server, ReceiverError> {
    let addr = listener.local_addr().map_err(ReceiverError::Bind)?;
    let state = web::Data::new(AppState {
        payments,
        observed,
        self_url: format!("http://{addr}"),
        crash_after_store: std::env::var(CRASH_AFTER_STORE_ENV).is_ok_and(|v| v == "1"),
    });
    let sweeper = state.clone().into_inner();
    let demo = state.payments.is_demo();
    // actix-web's HttpServer (its defaults: a worker per CPU, 5 s keep-alive, the head
    // within 5 s), with the HTTP parser's own answers as JSON errors (see `http_edge`).
    let config = http_edge::ServeConfig {
        name: "webhook-receiver".into(),
        workers: None,
        shutdown_timeout_secs: shutdown_timeout,
        handle_signals,
        limits: http_edge::H1Limits::default(),
    };
    let server = http_edge::serve(vec![listener], config, {
        let state = state.clone();
        move || {
            let mut app = App::new()
                .wrap(json_errors())
                .wrap(actix_web::middleware::from_fn(observe_request))
                .wrap(security_headers())
                .app_data(state.clone())
                .service(only(
                    "/api/webhooks/polar",
                    "POST",
                    web::post().to(polar_webhook),
                ))
                .service(only("/healthz", "GET", web::get().to(healthz)))
                .service(only("/readyz", "GET", web::get().to(readyz)))
                .service(only("/metrics", "GET", web::get().to(metrics)));
            // The demo pages exist only when demo payments were asked for by name.
            if demo {
                app = app
                    .service(only("/demo/checkout/{id}", "GET", web::get().to(demo_page)))
                    .service(only(
                        "/demo/checkout/{id}/pay",
                        "POST",
                        web::post().to(demo_pay),
                    ))
                    .service(only(
                        "/demo/subscription/{token}",
                        "GET",
                        web::get().to(demo_subscription_page),
                    ))
                    .service(only(
                        "/demo/subscription/{token}/pay",
                        "POST",
                        web::post().to(demo_subscription_pay),
                    ));
            }
            app.default_service(web::to(not_found))
        }
    })
    .map_err(ReceiverError::Bind)?;
    actix_web::rt::spawn(sweep_forever(sweeper));
    tracing::info!(%addr, provider = state.payments.provider_name(), "webhook-receiver listening");
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
                let st = state.clone();
                match web::block(move || st.payments.reconcile_subscriptions(payments::now())).await
                {
                    Ok(Ok(r)) if r.listed > 0 => tracing::info!(
                        listed = r.listed,
                        changed = r.changed,
                        "subscription reconcile"
                    ),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "subscription reconcile failed; it runs again later")
                    }
                    Err(e) => tracing::error!(error = %e, "subscription reconcile did not run"),
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
            // Overage items billed by the api-server, reported to Polar (a no-op until
            // subscriptions are wired); a failure is kept per item with its backoff.
            match st.payments.report_overage(now) {
                Ok(r) if r.reported + r.recorded + r.failed > 0 => tracing::info!(
                    reported = r.reported,
                    recorded = r.recorded,
                    failed = r.failed,
                    "overage report"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "overage report failed; it runs again later"),
            }
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

/// The contract's error body: `{"error": message, "code": code}`.
fn json_error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message, "code": code }))
}

/// `503` with `Retry-After`: not stored, so not acknowledged; the sender retries.
fn unavailable(code: &str, message: &str) -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()))
        .json(json!({ "error": message, "code": code }))
}

fn internal() -> HttpResponse {
    json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        "Internal error; retry later",
    )
}

/// `405` with `Allow` for a known path asked with another method.
/// The resource at `path` served by `route` (method `allow`); any other method is `405`.
fn only(path: &str, allow: &'static str, route: actix_web::Route) -> actix_web::Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(move || method_not_allowed(allow)))
}

async fn method_not_allowed(allow: &'static str) -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, allow))
        .json(json!({
            "error": format!("Method not allowed; this path accepts {allow}"),
            "code": "METHOD_NOT_ALLOWED",
        }))
}

/// The stable code of an error status (for bodies the framework made).
fn code_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_REQUEST",
        401 => "UNAUTHORIZED",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        408 => "REQUEST_TIMEOUT",
        411 => "LENGTH_REQUIRED",
        413 => "PAYLOAD_TOO_LARGE",
        415 => "UNSUPPORTED_MEDIA_TYPE",
        431 => "HEADERS_TOO_LARGE",
        503 => "UNAVAILABLE",
        s if s >= 500 => "INTERNAL",
        _ => "INVALID_REQUEST",
    }
}

/// Middleware: any error answer (4xx/5xx) that is not JSON already (one the framework
/// made: a bad header, a failed extractor, ...) becomes the contract's JSON error with the
/// same status and headers. A 5xx never shows its cause.
pub fn json_errors<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(|res: ServiceResponse<B>| {
        let is_json = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if is_json {
            return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
        }
        let status = res.status();
        let message = if status.is_server_error() {
            "Internal error; retry later".to_owned()
        } else {
            let detail = res
                .response()
                .error()
                .map(|e| e.to_string())
                .filter(|d| !d.is_empty());
            let reason = status.canonical_reason().unwrap_or("Error");
            match detail {
                Some(d) => format!("{reason}: {d}"),
                None => reason.to_owned(),
            }
        };
        let body = json!({ "error": message, "code": code_of(status) }).to_string();
        let (req, mut response) = res.into_parts();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response.headers_mut().remove(header::CONTENT_LENGTH);
        let response = response.set_body(BoxBody::new(body));
        Ok(ErrorHandlerResponse::Response(
            ServiceResponse::new(req, response).map_into_right_body::<B>(),
        ))
    })
}

/// Reads the body, refusing more than [`MAX_BODY`] bytes with a JSON `413` (before any
/// verification or storage).
async fn read_body(req: &HttpRequest, payload: web::Payload) -> Result<web::Bytes, HttpResponse> {
    let too_large = || {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            &format!("Request body is larger than {MAX_BODY} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    match payload.to_bytes_limited(MAX_BODY).await {
        Err(_) => Err(too_large()),
        Ok(Err(e)) => Err(json_error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            &format!("The request body could not be read: {e}"),
        )),
        Ok(Ok(body)) => Ok(body),
    }
}

async fn polar_webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let body = match read_body(&req, payload).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
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
            let (status, code) = if e.is_unauthenticated() {
                (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
            } else {
                (StatusCode::BAD_REQUEST, "INVALID_REQUEST")
            };
            tracing::warn!(webhook_id = header_value(&req, "webhook-id").unwrap_or_default(), outcome = "refused", reason = %e, "webhook refused");
            let outcome = if e.is_unauthenticated() {
                "bad_signature"
            } else {
                "malformed"
            };
            state.observed.metrics.webhook_delivery("unknown", outcome);
            return json_error(status, code, &format!("Webhook refused: {e}"));
        }
        Ok(Err(PaymentsError::NotConfigured)) => {
            tracing::warn!(
                webhook_id = header_value(&req, "webhook-id").unwrap_or_default(),
                "webhook refused: no payment provider is configured"
            );
            state
                .observed
                .metrics
                .webhook_delivery("unknown", "not_configured");
            return unavailable("PAYMENTS_NOT_CONFIGURED", payments::PAYMENTS_NOT_CONFIGURED);
        }
        Ok(Err(e)) => {
            // Not stored, so not acknowledged: Polar retries (and reconcile catches up).
            tracing::error!(error = %e, "webhook could not be stored; answered 503 so it is retried");
            state
                .observed
                .metrics
                .webhook_delivery("unknown", "not_stored");
            return unavailable(
                "DATABASE_UNAVAILABLE",
                "The delivery could not be stored; retry later",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "webhook task failed");
            state
                .observed
                .metrics
                .webhook_delivery("unknown", "not_stored");
            return unavailable(
                "UNAVAILABLE",
                "The delivery could not be stored; retry later",
            );
        }
    };
    if state.crash_after_store && received.receipt == DeliveryReceipt::New {
        tracing::warn!(webhook_id = %received.webhook_id, "{CRASH_AFTER_STORE_ENV}=1: aborting after storing the delivery");
        std::process::abort();
    }
    if received.receipt == (DeliveryReceipt::Duplicate { processed: true }) {
        tracing::info!(webhook_id = %received.webhook_id, event_type = %received.event_type, outcome = "duplicate", "webhook");
        state
            .observed
            .metrics
            .webhook_delivery(&received.event_type, "duplicate");
        return HttpResponse::Ok().json(json!({ "status": "duplicate" }));
    }
    let st = state.clone();
    let webhook_id = received.webhook_id.clone();
    let work = web::block(move || st.payments.process_delivery(&webhook_id, payments::now()));
    match actix_web::rt::time::timeout(PROCESSING_BUDGET, work).await {
        Ok(Ok(Ok(outcome))) => {
            tracing::info!(webhook_id = %received.webhook_id, event_type = %received.event_type, outcome = %outcome, "webhook");
            state
                .observed
                .metrics
                .webhook_delivery(&received.event_type, "processed");
            HttpResponse::Ok().json(json!({ "status": "processed", "outcome": outcome }))
        }
        Ok(Ok(Err(e))) => {
            tracing::error!(webhook_id = %received.webhook_id, event_type = %received.event_type, outcome = "failed", error = %e, "webhook");
            state
                .observed
                .metrics
                .webhook_delivery(&received.event_type, "failed");
            if matches!(e, PaymentsError::Store(_)) {
                unavailable(
                    "DATABASE_UNAVAILABLE",
                    "Stored, but processing failed; it will be retried",
                )
            } else {
                json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL",
                    "Stored, but processing failed; it will be retried",
                )
            }
        }
        Ok(Err(e)) => {
            tracing::error!(webhook_id = %received.webhook_id, error = %e, "webhook task failed");
            state
                .observed
                .metrics
                .webhook_delivery(&received.event_type, "failed");
            internal()
        }
        Err(_) => {
            tracing::info!(webhook_id = %received.webhook_id, event_type = %received.event_type, outcome = "accepted", "webhook processing continues in the background");
            state
                .observed
                .metrics
                .webhook_delivery(&received.event_type, "accepted");
            HttpResponse::Accepted().json(json!({ "status": "accepted" }))
        }
    }
}

async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let st = state.clone();
    match web::block(move || st.payments.store().ping()).await {
        Ok(Ok(())) => HttpResponse::Ok().json(json!({ "status": "ok" })),
        _ => unavailable("DATABASE_UNAVAILABLE", "database unavailable"),
    }
}

/// 200 `{"status":"ready","checks":{..}}` when the database answers and holds every
/// migration of this build; 503 naming the failing part otherwise.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let st = state.clone();
    let checks = match web::block(move || startup::database_checks(st.payments.store())).await {
        Ok(checks) => checks,
        Err(e) => vec![startup::Check::new("database", Err(e.to_string()))],
    };
    match startup::readiness(&checks) {
        (200, body) => HttpResponse::Ok().json(body),
        (_, body) => HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()))
            .json(body),
    }
}

/// `/metrics` with `Authorization: Bearer <metrics.token>`; 404 without a token configured.
async fn metrics(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let Some(token) = state.observed.token.as_deref() else {
        return not_found().await;
    };
    let given = header_value(&req, "authorization");
    let given = given
        .as_deref()
        .and_then(|v| v.trim().strip_prefix("Bearer "))
        .map(str::trim);
    let equal = given.is_some_and(|g| {
        use subtle::ConstantTimeEq;
        g.len() == token.len() && bool::from(g.as_bytes().ct_eq(token.as_bytes()))
    });
    if !equal {
        return json_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "/metrics needs Authorization: Bearer <metrics.token>",
        );
    }
    state.observed.text(&state.payments)
}

/// Serves every request inside a `request` span with its `request_id`, counts it in the
/// metrics by route pattern (`unmatched` when no route took it), method and status, and
/// logs one `request` line (method, route, status, latency_ms, request_id).
async fn observe_request(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    use tracing::Instrument;
    let id = ledger_store::new_id("req_");
    let span = tracing::info_span!("request", request_id = %id);
    async move {
        let started = std::time::Instant::now();
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let method = req.method().clone();
        let mut res = next.call(req).await?.map_into_boxed_body();
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        let took = started.elapsed();
        let status = res.status().as_u16();
        if let Some(state) = state {
            state
                .observed
                .metrics
                .http_request(&route, method.as_str(), status, took);
        }
        let latency_ms = (took.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        tracing::info!(%method, %route, status, latency_ms, request_id = %id, "request");
        if let Ok(v) = HeaderValue::from_str(&id) {
            res.headers_mut()
                .insert(header::HeaderName::from_static("x-request-id"), v);
        }
        Ok(res)
    }
    .instrument(span)
    .await
}

/// Serves `GET /metrics` without a token on `bind` (`metrics.webhooks_bind`); returns
/// the server's handle.
pub fn serve_metrics(
    payments: Payments,
    observed: Observed,
    bind: &str,
) -> Result<ServerHandle, ReceiverError> {
    let listener = TcpListener::bind(bind).map_err(ReceiverError::Bind)?;
    let config = http_edge::ServeConfig {
        name: "webhook-receiver-metrics".into(),
        workers: Some(1),
        shutdown_timeout_secs: 1,
        handle_signals: false,
        limits: http_edge::H1Limits::default(),
    };
    let shared = Arc::new((payments, observed));
    let server = http_edge::serve(vec![listener], config, move || {
        let shared = shared.clone();
        App::new()
            .route(
                "/metrics",
                web::get().to(move || {
                    let shared = shared.clone();
                    async move { shared.1.text(&shared.0) }
                }),
            )
            .default_service(web::to(not_found))
    })
    .map_err(ReceiverError::Bind)?;
    let handle = server.handle();
    actix_web::rt::spawn(server);
    tracing::info!(%bind, "metrics listening");
    Ok(handle)
}

async fn not_found() -> HttpResponse {
    json_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not found")
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
            return json_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Checkout not found")
        }
        _ => return internal(),
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
    let heading = escape(&checkout.pack_name);
    let body = format!(
        "<p><strong>{credits}</strong> credits for <strong>{price}</strong></p>
{action}
<p><small>Demo checkout {id}: a test payment, no money moves. Paying here sends this server a signed <code>order.paid</code> webhook, exactly as Polar would.</small></p>",
        credits = escape(&checkout.credits.grouped()),
        price = dollars(checkout.price_cents),
        id = escape(&checkout.id),
    );
    test_payment_page(&heading, &body, state.payments.success_url())
}

/// The origin (`scheme://host:port`) of an absolute URL; `None` when it has none.
fn origin_of(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    let host_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let valid = |c: char| c.is_ascii_alphanumeric() || "-.:[]".contains(c);
    let host = &rest[..host_len];
    (!host.is_empty() && host.chars().all(valid) && scheme.chars().all(|c| c.is_ascii_alphabetic()))
        .then(|| &url[..scheme.len() + 3 + host_len])
}

/// A demo page: the test-payment banner, `heading` (HTML, as title and first heading)
/// and `body` (HTML), with the page's own policy: its inline style, and its form posting
/// to this server, whose answer redirects to `success_url` (a browser applies
/// `form-action` to a form's redirects too, so its origin is allowed as well).
fn test_payment_page(heading: &str, body: &str, success_url: &str) -> HttpResponse {
    let page = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TEST PAYMENT — {heading}</title>
<style>body{{font-family:sans-serif;max-width:32rem;margin:3rem auto}}.banner{{background:#b00020;color:#fff;padding:1rem;font-weight:bold;text-align:center}}button{{font-size:1.2rem;padding:.6rem 1.4rem}}</style>
</head><body>
<div class="banner">TEST PAYMENT — no money moves</div>
<h1>{heading}</h1>
{body}
</body></html>"#
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "content-security-policy",
            format!(
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'{}; frame-ancestors 'none'; base-uri 'none'",
                origin_of(success_url).map(|o| format!(" {o}")).unwrap_or_default()
            ),
        ))
        .body(page)
}

/// The api-server's security headers (`http_edge::SECURITY_HEADERS`) on every answer, and
/// `Cache-Control: no-store`, unless a handler set its own (the demo page sets its CSP).
fn security_headers() -> actix_web::middleware::DefaultHeaders {
    http_edge::SECURITY_HEADERS.iter().fold(
        actix_web::middleware::DefaultHeaders::new().add(("cache-control", "no-store")),
        |headers, &header| headers.add(header),
    )
}

async fn demo_pay(state: web::Data<AppState>, id: web::Path<String>) -> HttpResponse {
    let st = state.clone();
    let id = id.into_inner();
    let result = web::block(move || -> Result<Option<()>, String> {
        let now = payments::now();
        let Some(deliveries) = st.payments.demo_pay(&id, now).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        deliver_to_self(&st.self_url, &deliveries)?;
        st.payments
            .demo_mark_paid(&id, now)
            .map_err(|e| e.to_string())?;
        Ok(Some(()))
    })
    .await;
    paid_answer(&state, result, "demo payment failed")
}

async fn demo_subscription_page(
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> HttpResponse {
    let Some(sub) = state.payments.demo_subscription(&token) else {
        return json_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Checkout not found");
    };
    let heading = format!("{} plan", escape(&sub.plan_name));
    let body = format!(
        r#"<p><strong>{price}</strong> a month</p>
<form method="post" action="/demo/subscription/{token}/pay"><button type="submit">Subscribe for {price}</button></form>
<p><small>Demo subscription checkout: a test payment, no money moves. Subscribing here sends this server signed <code>subscription.created</code>, <code>subscription.active</code> and <code>order.paid</code> webhooks, exactly as Polar would.</small></p>"#,
        price = dollars(sub.price_cents),
        token = escape(&sub.token),
    );
    test_payment_page(&heading, &body, state.payments.success_url())
}

async fn demo_subscription_pay(
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> HttpResponse {
    let st = state.clone();
    let token = token.into_inner();
    let result = web::block(move || -> Result<Option<()>, String> {
        let Some(deliveries) = st.payments.demo_subscription_pay(&token) else {
            return Ok(None);
        };
        deliver_to_self(&st.self_url, &deliveries)?;
        Ok(Some(()))
    })
    .await;
    paid_answer(&state, result, "demo subscription payment failed")
}

/// Sends a demo payment's signed webhooks to this receiver, as Polar would.
fn deliver_to_self(self_url: &str, deliveries: &[payments::SignedDelivery]) -> Result<(), String> {
    let url = format!("{self_url}/api/webhooks/polar");
    for d in deliveries {
        let status = d.send(&url, Duration::from_secs(10))?;
        if !(200..300).contains(&status) {
            return Err(format!(
                "the receiver answered {status} to its own demo delivery"
            ));
        }
    }
    Ok(())
}

/// The answer of a demo payment: back to the success URL once its webhooks were
/// delivered; 404 for an unknown checkout; 502 (logged as `what`) when delivery failed.
fn paid_answer(
    state: &AppState,
    result: Result<Result<Option<()>, String>, actix_web::error::BlockingError>,
    what: &str,
) -> HttpResponse {
    match result {
        Ok(Ok(Some(()))) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, state.payments.success_url().to_owned()))
            .finish(),
        Ok(Ok(None)) => json_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Checkout not found"),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "{what}");
            json_error(
                StatusCode::BAD_GATEWAY,
                "DEMO_PAYMENT_FAILED",
                "The test payment could not be delivered; try again",
            )
        }
        Err(_) => internal(),
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
    spawn_observed(payments, Observed::default())
}

/// [`spawn`], counting in `observed.metrics` and serving `/metrics` with its token.
pub fn spawn_observed(
    payments: Payments,
    observed: Observed,
) -> Result<RunningReceiver, ReceiverError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(ReceiverError::Bind)?;
    let addr = listener.local_addr().map_err(ReceiverError::Bind)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            match server_observed(payments, observed, listener, 1, false) {
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

#[cfg(test)]
mod tests {
    use super::origin_of;

    #[test]
    fn the_origin_of_a_success_url() {
        assert_eq!(
            origin_of("http://localhost:8080/"),
            Some("http://localhost:8080")
        );
        assert_eq!(
            origin_of("https://shop.example.com/thanks?x=1"),
            Some("https://shop.example.com")
        );
        assert_eq!(origin_of("http://127.0.0.1:9"), Some("http://127.0.0.1:9"));
        assert_eq!(origin_of("not a url"), None);
        assert_eq!(origin_of("http://a b/"), None);
        assert_eq!(
            origin_of("http://x;y/"),
            None,
            "nothing that could end the policy"
        );
    }
}
