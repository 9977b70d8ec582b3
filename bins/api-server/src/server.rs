//! Running the api-server as a program: open the store, start the browser pool and the
//! background work, serve until SIGTERM. `app` (in the crate root) is the HTTP surface.
//!
//! Limits on clients (`[server]`): the request head and body must arrive within
//! `request_timeout_secs` (the head by actix, the body by [`deadline`]); idle keep-alive
//! connections close after `keep_alive_secs`; at most `max_connections` connections are
//! served at once (actix counts per worker, so each worker gets its share), the rest wait
//! in the kernel's backlog.
//!
//! The server is actix-web's `HttpServer` taken apart (actix-server accepting, actix-http's
//! HTTP/1 service running the app) so that each connection's socket can be wrapped: the
//! answers actix-http's parser gives by itself (a head too large, unparsable, or not
//! received in time) then leave as the contract's JSON errors (see
//! [`http_edge::codec_errors`]).
//!
//! Stopping (SIGTERM or Ctrl-C) drains instead of dropping: accepting stops first, the
//! connections already accepted are all handed to the workers, and only then are the
//! workers told to stop, which lets every request in flight finish (up to
//! `shutdown_timeout_secs`). actix's own signal handling stops the workers at once, and a
//! stopping worker drops the connections still queued for it: requests that had been sent
//! whole were lost that way. Connections that reach the listening socket after the signal
//! get a JSON 503 `SHUTTING_DOWN` (nothing was done; retry) instead of a reset.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use ledger_store::Store;
use settings::Settings;

use crate::{app, deadline, system_clock, AppState};

/// Opens the database named by the settings (migrations run first). Fails, naming the
/// database and the cause, when it cannot be reached within `connect_timeout_secs` or
/// (SQLite) cannot be written.
pub fn open_store(settings: &Settings) -> Result<Store, ledger_store::StoreError> {
    startup::open_store(settings)
}

/// The HTTP workers `server.workers` asks for (0: one per CPU).
fn worker_count(settings: &Settings) -> usize {
    match settings.server.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    }
}

/// What the stopping sequence needs to see of the workers and their connections.
#[derive(Debug, Default, Clone)]
pub struct Workers {
    /// Connections handed to a worker whose first request has not reached the app yet.
    unstarted: Arc<AtomicI64>,
    /// Each worker's heartbeat (a tick every [`TICK`] on the worker's event loop).
    ticks: Arc<std::sync::Mutex<Vec<Arc<AtomicU64>>>>,
}

const TICK: Duration = Duration::from_millis(50);

/// Lives in a connection's data from the moment a worker takes the connection: counts it
/// as unstarted until its first request reaches the app (or it closes).
#[derive(Debug)]
struct Unstarted {
    count: Arc<AtomicI64>,
    started: AtomicBool,
}

impl Unstarted {
    fn new(count: Arc<AtomicI64>) -> Unstarted {
        count.fetch_add(1, Ordering::SeqCst);
        Unstarted {
            count,
            started: AtomicBool::new(false),
        }
    }

    fn start(&self) {
        if !self.started.swap(true, Ordering::SeqCst) {
            self.count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Unstarted {
    fn drop(&mut self) {
        self.start();
    }
}

/// Marks the connection's first request as started (see [`Unstarted`]).
async fn note_request(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    if let Some(conn) = req.conn_data::<Unstarted>() {
        conn.start();
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

impl Workers {
    /// Starts the heartbeat of the worker whose thread calls it.
    fn register_current_worker(&self) {
        thread_local!(static REGISTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
        if REGISTERED.with(|r| r.replace(true)) {
            return;
        }
        let tick = Arc::new(AtomicU64::new(0));
        self.ticks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tick.clone());
        actix_web::rt::spawn(async move {
            loop {
                actix_web::rt::time::sleep(TICK).await;
                tick.fetch_add(1, Ordering::SeqCst);
            }
        });
    }

    /// Returns once every worker's event loop has run a few times since the call (or
    /// `at_most` passed): a worker empties its queue of accepted connections whenever it
    /// runs, so nothing accepted before the call is still queued afterwards.
    async fn turn_over(&self, at_most: Duration) {
        let ticks = self.ticks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let from: Vec<u64> = ticks.iter().map(|t| t.load(Ordering::SeqCst)).collect();
        let started = Instant::now();
        while started.elapsed() < at_most
            && ticks
                .iter()
                .zip(&from)
                .any(|(t, f)| t.load(Ordering::SeqCst) < f + 3)
        {
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Returns once every connection a worker holds has started its first request or
    /// closed (or `at_most` passed).
    async fn all_started(&self, at_most: Duration) {
        let started = Instant::now();
        while started.elapsed() < at_most && self.unstarted.load(Ordering::SeqCst) > 0 {
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Serves `state` on `listeners` with the `[server]` limits; actix's signal handling is
/// off (see [`run`]).
///
/// This is what `actix_web::HttpServer` does (HTTP/1 only), with each connection's socket
/// wrapped in a [`http_edge::CodecErrorsIo`] (by [`http_edge::h1`]) so that the answers
/// actix-http's parser gives by itself are JSON errors.
pub fn serve(
    state: AppState,
    listeners: Vec<TcpListener>,
    workers_seen: Workers,
) -> std::io::Result<actix_web::dev::Server> {
    let server = state.settings.server.clone();
    let workers = worker_count(&state.settings);
    let per_worker = (server.max_connections / workers).max(1);
    if per_worker * workers > server.max_connections {
        tracing::warn!(
            workers,
            max_connections = server.max_connections,
            "server.max_connections is below server.workers; each worker serves one connection"
        );
    }
    let mut builder = actix_server::Server::build()
        .workers(workers)
        .max_concurrent_connections(per_worker)
        .backlog(1024)
        .shutdown_timeout(server.shutdown_timeout_secs)
        .disable_signals();
    // Tells each connection when the server stops, as HttpServer does: an idle keep-alive
    // connection then closes instead of holding the worker until the shutdown timeout.
    let stopping = builder.graceful_shutdown_signal();
    for listener in listeners {
        let addr = listener.local_addr()?;
        let (state, workers_seen, stopping) =
            (state.clone(), workers_seen.clone(), stopping.clone());
        let server = server.clone();
        builder = builder.listen(format!("api-server-{addr}"), listener, move || {
            // Called on each worker's thread, in its event loop, as it starts.
            workers_seen.register_current_worker();
            let app = app(state.clone())
                .wrap(actix_web::middleware::from_fn(deadline::body_deadline))
                .wrap(actix_web::middleware::from_fn(note_request));
            let limits = http_edge::H1Limits {
                keep_alive: Duration::from_secs(server.keep_alive_secs),
                client_request_timeout: Duration::from_secs(server.request_timeout_secs),
                client_disconnect_timeout: Duration::from_secs(1),
            };
            let unstarted = workers_seen.unstarted.clone();
            http_edge::h1(app, addr, limits, stopping.clone(), move |data| {
                data.insert(Unstarted::new(unstarted.clone()));
            })
        })?;
    }
    Ok(builder.run())
}

/// Binds every address `bind` names, with a backlog of 1024 (std's default is 128).
fn bind_all(bind: &str) -> anyhow::Result<Vec<TcpListener>> {
    let addrs: Vec<SocketAddr> = bind
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("server.bind: cannot resolve {bind}: {e}"))?
        .collect();
    let mut out = Vec::new();
    for addr in &addrs {
        let socket = if addr.is_ipv4() {
            actix_web::rt::net::TcpSocket::new_v4()?
        } else {
            actix_web::rt::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket
            .bind(*addr)
            .map_err(|e| anyhow::anyhow!("server.bind: cannot listen on {addr}: {e}"))?;
        out.push(socket.listen(1024)?.into_std()?);
    }
    anyhow::ensure!(!out.is_empty(), "server.bind: {bind} names no address");
    Ok(out)
}

/// Sends customers' webhook notifications from the outbox on a thread of its own (ADR 12),
/// when `notifications.deliver` is on.
fn spawn_deliverer(state: &AppState) {
    let n = &state.settings.notifications;
    if !n.deliver {
        tracing::info!("notifications.deliver is off: this process sends no webhook notifications");
        return;
    }
    let deliverer = crate::deliverer::Deliverer::new(
        state.store.clone(),
        n,
        crate::deliverer::Deliverer::targets(n),
        state.clock.clone(),
    )
    .with_metrics(state.metrics.clone());
    deliverer.spawn(Duration::from_millis(n.poll_interval_ms));
}

/// Serves until SIGTERM or Ctrl-C, then lets requests in flight finish.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let bind = settings.server.bind.clone();
    // The port is taken first: a port in use fails the start at once, and the port cannot
    // be taken by another program while the database opens and the first browser starts
    // (up to a minute); connections made meanwhile wait in the backlog until serving starts.
    let listeners = bind_all(&bind)?;
    let metrics = Arc::new(telemetry::Metrics::new());
    let store = startup::open_observed_store(&settings, metrics.clone())?;
    let workers = worker_count(&settings);
    let capture_config = settings.capture.clone();
    let payments = std::sync::Arc::new(startup::payments(&settings, store.clone())?);
    let mut state = AppState::new(store, settings, system_clock())?
        .with_payments(payments)
        .with_metrics(metrics);
    match capture::CaptureService::start(capture_config).await {
        Ok(service) => state = state.with_capture(service),
        Err(e) => {
            tracing::warn!(error = %e, "screenshots are unavailable; the ledger API still runs");
            state.capture_unavailable = Some(e.to_string());
        }
    }
    let capture = state.capture.clone();
    spawn_compaction(&state);
    spawn_period_sweeper(&state);
    spawn_deliverer(&state);
    let spares = listeners
        .iter()
        .map(TcpListener::try_clone)
        .collect::<std::io::Result<Vec<_>>>()?;
    let workers_seen = Workers::default();
    let request_timeout = Duration::from_secs(state.settings.server.request_timeout_secs);
    let metrics_server = serve_metrics(&state)?;
    let server = serve(state, listeners, workers_seen.clone())?;
    let refusers = Refusers::default();
    actix_web::rt::spawn(stop_on_signal(
        server.handle(),
        spares,
        workers_seen,
        request_timeout,
        refusers.clone(),
    ));
    tracing::info!(%bind, workers, "api-server listening");
    let served = server.await;
    refusers.finish();
    if let Some(handle) = metrics_server {
        handle.stop(true).await;
    }
    served?;
    if let Some(service) = capture {
        service.shutdown().await;
    }
    tracing::info!("api-server stopped");
    Ok(())
}

/// Waits for SIGTERM or SIGINT, then stops without dropping accepted connections (see
/// the module documentation).
async fn stop_on_signal(
    handle: ServerHandle,
    spares: Vec<TcpListener>,
    workers: Workers,
    request_timeout: Duration,
    refusers: Refusers,
) {
    wait_for_signal().await;
    tracing::info!("stopping: no new connections; finishing the accepted ones");
    // 1. actix stops taking connections from the listening sockets (they stay open).
    handle.pause().await;
    // 2. What reaches the sockets from now on is told to come back, not reset.
    for spare in spares {
        refusers.start(spare);
    }
    // 3. Every connection actix accepted reaches a worker and has its request read.
    wait_until_dispatched(&workers, request_timeout).await;
    // 4. The workers finish what they hold, then exit.
    handle.stop(true).await;
}

async fn wait_for_signal() {
    use actix_web::rt::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            futures_util::future::select(Box::pin(term.recv()), Box::pin(int.recv())).await;
        }
        _ => {
            tracing::warn!("cannot listen for SIGTERM; stopping on Ctrl-C only");
            let _ = actix_web::rt::signal::ctrl_c().await;
        }
    }
}

/// Waits until every connection actix accepted has reached a worker and had its first
/// request read. A stopping worker drops the connections still queued for it, and its
/// connections close at once when they hold no request in progress, even when the request
/// is already in the socket, unread: both lost requests that had been sent whole.
/// Connections that never send a request are closed by actix at `request_timeout_secs`.
async fn wait_until_dispatched(workers: &Workers, request_timeout: Duration) {
    // The accept thread is told to pause, not waited for.
    actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    workers.turn_over(Duration::from_secs(5)).await;
    workers
        .all_started(request_timeout + Duration::from_secs(1))
        .await;
}

/// The threads that answer connections arriving while the server stops.
#[derive(Debug, Default, Clone)]
struct Refusers {
    stopped: Arc<AtomicBool>,
    threads: Arc<std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>>,
}

impl Refusers {
    fn start(&self, listener: TcpListener) {
        let stopped = self.stopped.clone();
        if let Ok(t) = std::thread::Builder::new()
            .name("refuse-while-stopping".into())
            .spawn(move || refuse_while_stopping(listener, &stopped))
        {
            self.threads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(t);
        }
    }

    /// Answers what is still queued, waits for the answers to go out, and closes the
    /// listening sockets.
    fn finish(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Answers every connection that reaches `listener` while the server stops with a 503,
/// until `stopped`; then it answers those still queued, and the socket closes (later
/// connections are refused by the kernel).
fn refuse_while_stopping(listener: TcpListener, stopped: &AtomicBool) {
    let _ = listener.set_nonblocking(true);
    let mut answering = Vec::new();
    loop {
        let last_round = stopped.load(Ordering::SeqCst);
        while let Ok((stream, _)) = listener.accept() {
            if let Ok(t) = std::thread::Builder::new()
                .name("refuse".into())
                .spawn(move || refuse(stream))
            {
                answering.push(t);
            }
        }
        answering.retain(|t: &std::thread::JoinHandle<()>| !t.is_finished());
        if last_round {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(listener);
    for t in answering {
        let _ = t.join();
    }
}

/// One 503 `SHUTTING_DOWN`, after reading the request head (closing a socket with unread
/// data would reset the answer away).
fn refuse(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let body = serde_json::json!({
        "error": "The server is shutting down and did not process this request; send it again",
        "code": "SHUTTING_DOWN",
    })
    .to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Whatever else the client sends is read and dropped until it closes (for a second
    // at most: this runs while the process exits).
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
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
            match store.maintenance().compact(retention, clock()) {
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

/// How often the sweeper rolls subscriptions whose period ended (ADR 9: every minute).
const PERIOD_SWEEP_SECS: u64 = 60;

/// Starts the periods of subscriptions whose period ended, at start and every minute, on
/// its own thread, so idle accounts get their expiry, write-off and allowance close to the
/// boundary (a hastener only: the lazy roll under the account lock is the rule), and
/// records pending overage items when no provider reports them.
fn spawn_period_sweeper(state: &AppState) {
    let (store, clock) = (state.store.clone(), state.clock.clone());
    let record = crate::service::subscription::sweeper_records(state);
    std::thread::Builder::new()
        .name("period-sweeper".into())
        .spawn(move || loop {
            match crate::service::subscription::sweep(&store, record, clock()) {
                Ok(n) if n > 0 => tracing::info!(periods = n, "started plan periods"),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the period sweep failed; it runs again in a minute")
                }
            }
            std::thread::sleep(Duration::from_secs(PERIOD_SWEEP_SECS));
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::warn!(error = %e, "could not start the period sweeper"));
}

/// Serves `GET /metrics` (no token: the listener is the protection) on `metrics.bind`,
/// when it is set; anything else there is a JSON 404. Returns the server's handle.
fn serve_metrics(state: &AppState) -> anyhow::Result<Option<ServerHandle>> {
    let Some(bind) = state.settings.metrics.bind() else {
        return Ok(None);
    };
    let listener = TcpListener::bind(bind)
        .map_err(|e| anyhow::anyhow!("metrics.bind: cannot listen on {bind}: {e}"))?;
    let config = http_edge::ServeConfig {
        name: "api-server-metrics".into(),
        workers: Some(1),
        shutdown_timeout_secs: 1,
        handle_signals: false,
        limits: http_edge::H1Limits::default(),
    };
    let state = actix_web::web::Data::new(state.clone());
    let server = http_edge::serve(vec![listener], config, move || {
        actix_web::App::new()
            .app_data(state.clone())
            .route(
                "/metrics",
                actix_web::web::get().to(|state: actix_web::web::Data<AppState>| async move {
                    crate::routes::system::metrics_text(&state)
                }),
            )
            .default_service(actix_web::web::to(|| async {
                actix_web::HttpResponse::NotFound().json(serde_json::json!({
                    "error": "This listener serves GET /metrics only",
                    "code": "NOT_FOUND",
                }))
            }))
    })?;
    let handle = server.handle();
    actix_web::rt::spawn(server);
    tracing::info!(%bind, "metrics listening");
    Ok(Some(handle))
}

/// Logs as text to stderr, `info` (`RUST_LOG` wins): for programs and tests that have no
/// settings yet; the binary installs `[log]`'s subscriber ([`startup::init_logging`]).
pub fn init_logging() {
    let _ = telemetry::init_logging(telemetry::LogFormat::Text, "info");
}
