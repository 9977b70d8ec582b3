//! [`CaptureService`]: a pool of browser sessions behind a bounded queue, living on the
//! service's own multi-thread tokio runtime.
//!
//! fantoccini runs each session's connection as a task on the runtime that created it, and
//! actix-web workers are separate single-thread runtimes. So every session, the proxy and
//! the chromedriver supervisor live on one runtime that this service owns; callers on any
//! runtime hand a job over a channel and await a `oneshot` answer.
//!
//! Queueing: `pool_size` workers each own at most one session. Jobs wait in a bounded
//! channel of `queue_capacity`; a full channel answers `BUSY` at once, and a job that waited
//! longer than `queue_timeout_ms` answers `BUSY` when a worker reaches it. The capture
//! `timeout` counts from the moment a worker starts the job.
//!
//! Session life: a session is closed and replaced after `max_uses_per_session` captures,
//! after an error that [`CaptureError::breaks_session`] (a browser crash, an unreachable
//! driver, an internal error), when its reset between captures fails or takes longer than
//! `RESET_TIMEOUT`, and whenever the capture task panics or overruns its budget (the
//! session's drop guard closes it). Page-level errors (dialogs, bad or missing selectors,
//! target errors, DNS, a timeout the browser recovers from) keep the session.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{default_chromium, CaptureConfig};
use crate::driver::{self, DriverUrl};
use crate::error::CaptureError;
use crate::guard::{self, TargetPolicy};
use crate::options::CaptureOptions;
use crate::proxy::{Proxy, ProxyCounters};
use crate::session::{Session, SessionSettings};
use crate::shoot::{self, Captured, Stage};

/// Extra time after a capture's budget before its task is abandoned outright.
const HARD_TIMEOUT_GRACE: Duration = Duration::from_secs(5);

/// Counters for monitoring, tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Browser sessions opened so far.
    pub sessions_opened: u64,
    /// Jobs a worker started on a browser.
    pub captures_started: u64,
    /// Jobs answered `BUSY`.
    pub busy_rejections: u64,
    /// Requests refused by the SSRF guard before reaching a browser.
    pub refused_targets: u64,
    /// Requests the proxies handled for captures in progress (forwarded, or refused by the
    /// SSRF policy).
    pub proxy_requests: u64,
    /// Requests the proxies refused because no capture was in progress: the browser's own
    /// background traffic, which must reach nothing.
    pub proxy_refused_idle: u64,
    /// Workers in the pool (`pool_size`).
    pub pool_size: u64,
    /// Workers with a capture in hand now (the rest are idle).
    pub busy: u64,
    /// Captures waiting in the queue for a worker now.
    pub queued: u64,
}

#[derive(Default)]
struct Counters {
    sessions_opened: AtomicU64,
    captures_started: AtomicU64,
    busy_rejections: AtomicU64,
    refused_targets: AtomicU64,
    /// Workers with a job in hand.
    busy: AtomicU64,
    proxy: Arc<ProxyCounters>,
    /// Moving average of a capture's duration, in milliseconds.
    avg_ms: AtomicU64,
}

struct Job {
    opts: CaptureOptions,
    reply: oneshot::Sender<Result<Captured, CaptureError>>,
    enqueued: Instant,
}

/// What the workers share.
struct Shared {
    config: CaptureConfig,
    policy: Arc<TargetPolicy>,
    driver_url: DriverUrl,
    counters: Counters,
}

struct Inner {
    shared: Arc<Shared>,
    jobs: mpsc::Sender<Job>,
    stop: watch::Sender<bool>,
    shut: AtomicBool,
    handle: tokio::runtime::Handle,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    driver: Mutex<Option<DriverTask>>,
}

/// Our own chromedriver's supervisor and its own stop switch (it stops after the workers).
struct DriverTask {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(d) = crate::lock(&self.driver).take() {
            let _ = d.stop.send(true);
        }
        if let Some(rt) = crate::lock(&self.runtime).take() {
            // Dropping the tasks drops chromedriver's `Child` (kill_on_drop) and the
            // watchdog's pipe, which ends every browser.
            rt.shutdown_background();
        }
    }
}

/// Takes screenshots with a pool of WebDriver sessions. Cheap to clone; callable from any
/// tokio runtime (actix-web workers included).
#[derive(Clone)]
pub struct CaptureService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CaptureService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureService")
            .field("pool_size", &self.inner.shared.config.pool_size)
            .field("webdriver", &self.inner.shared.driver_url.get())
            .finish()
    }
}

impl CaptureService {
    /// Validate the configuration, start the runtime, chromedriver (unless `webdriver_url`
    /// is set), one proxy per worker and the workers. With `prewarm`, waits until the first
    /// browser session is open, so a missing or broken browser fails here.
    pub async fn start(config: CaptureConfig) -> Result<Self, CaptureError> {
        config.validate()?;
        let mut config = config;
        if config.webdriver_url.is_none() {
            let chromium = config
                .chromium_path
                .get_or_insert_with(default_chromium)
                .clone();
            for bin in [&config.chromedriver_path, &chromium] {
                if !bin.exists() {
                    return Err(CaptureError::BrowserUnavailable {
                        detail: format!(
                            "{} not found: install it with `apt-get install chromium chromium-driver`",
                            bin.display()
                        ),
                    });
                }
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.runtime_threads)
            .thread_name("capture")
            .enable_all()
            .build()
            .map_err(|e| CaptureError::internal(format!("cannot start a runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stop_rx) = watch::channel(false);
        let (jobs, jobs_rx) = mpsc::channel::<Job>(config.queue_capacity);

        let (ready_tx, ready_rx) = oneshot::channel();
        let init_config = config.clone();
        let init_stop = stop_rx.clone();
        handle.spawn(async move {
            let r = init(init_config, init_stop, jobs_rx).await;
            let _ = ready_tx.send(r);
        });
        let started = match ready_rx.await {
            Ok(r) => r,
            Err(_) => Err(CaptureError::internal("service start was interrupted")),
        };
        let (shared, workers, driver) = match started {
            Ok(ok) => ok,
            Err(e) => {
                let _ = stop.send(true);
                runtime.shutdown_background();
                return Err(e);
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                jobs,
                stop,
                shut: AtomicBool::new(false),
                handle,
                runtime: Mutex::new(Some(runtime)),
                workers: Mutex::new(workers),
                driver: Mutex::new(driver),
            }),
        })
    }

    /// Check a target against the SSRF policy without a browser: http(s) only, and every
    /// address the name resolves to allowed. `capture` runs it too; the HTTP layer may call
    /// it first to answer `400` before reserving credits. Html targets always pass (their
    /// subresources are checked by the proxy).
    pub async fn check_target(&self, opts: &CaptureOptions) -> Result<(), CaptureError> {
        let Some(url) = opts.url().cloned() else {
            return Ok(());
        };
        let policy = Arc::clone(&self.inner.shared.policy);
        let (tx, rx) = oneshot::channel();
        self.inner.handle.spawn(async move {
            let _ = tx.send(guard::check_url(&url, &policy).await.map(|_| ()));
        });
        let r = rx.await.unwrap_or(Err(CaptureError::ShutDown));
        if matches!(&r, Err(CaptureError::ForbiddenTarget { .. })) {
            self.inner
                .shared
                .counters
                .refused_targets
                .fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Take one screenshot (or PDF). Waits for a free session; answers `BUSY` at once when
    /// the queue is full.
    pub async fn capture(&self, opts: &CaptureOptions) -> Result<Captured, CaptureError> {
        if self.inner.shut.load(Ordering::SeqCst) {
            return Err(CaptureError::ShutDown);
        }
        self.check_target(opts).await?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            opts: opts.clone(),
            reply,
            enqueued: Instant::now(),
        };
        match self.inner.jobs.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let waiting = self.inner.jobs.max_capacity() - self.inner.jobs.capacity();
                return Err(self.inner.shared.busy(waiting));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(CaptureError::ShutDown),
        }
        answer.await.unwrap_or(Err(CaptureError::ShutDown))
    }

    /// Stop taking work, let running captures finish (bounded by their timeouts), close
    /// every session and stop chromedriver. Idempotent.
    pub async fn shutdown(&self) {
        if self.inner.shut.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.inner.stop.send(true);
        let workers: Vec<_> = std::mem::take(&mut *crate::lock(&self.inner.workers));
        let driver = crate::lock(&self.inner.driver).take();
        let (tx, rx) = oneshot::channel();
        self.inner.handle.spawn(async move {
            for t in workers {
                let _ = tokio::time::timeout(Duration::from_secs(70), t).await;
            }
            if let Some(d) = driver {
                let _ = d.stop.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(10), d.task).await;
            }
            let _ = tx.send(());
        });
        let _ = rx.await;
    }

    /// Counters since start.
    pub fn stats(&self) -> ServiceStats {
        let c = &self.inner.shared.counters;
        ServiceStats {
            sessions_opened: c.sessions_opened.load(Ordering::Relaxed),
            captures_started: c.captures_started.load(Ordering::Relaxed),
            busy_rejections: c.busy_rejections.load(Ordering::Relaxed),
            refused_targets: c.refused_targets.load(Ordering::Relaxed),
            proxy_requests: c.proxy.requests.load(Ordering::Relaxed),
            proxy_refused_idle: c.proxy.refused_idle.load(Ordering::Relaxed),
            pool_size: self.inner.shared.config.pool_size as u64,
            busy: c.busy.load(Ordering::Relaxed),
            queued: (self.inner.jobs.max_capacity() - self.inner.jobs.capacity()) as u64,
        }
    }

    /// Whether a capture could be taken now: the service runs and its WebDriver endpoint
    /// answers `GET /status` with `ready: true` (so a session is open or can be started).
    /// The error says which part failed.
    pub async fn ready(&self) -> Result<(), CaptureError> {
        if self.inner.shut.load(Ordering::SeqCst) {
            return Err(CaptureError::ShutDown);
        }
        let url = self.inner.shared.driver_url.get();
        let (tx, rx) = oneshot::channel();
        let probe = url.clone();
        self.inner.handle.spawn(async move {
            let _ = tx.send(driver::url_ready(&probe).await);
        });
        match rx.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(CaptureError::BrowserUnavailable {
                detail: format!("the WebDriver endpoint {url} does not answer ready"),
            }),
            Err(_) => Err(CaptureError::ShutDown),
        }
    }

    /// The WebDriver URL sessions are created on now.
    pub fn webdriver_url(&self) -> String {
        self.inner.shared.driver_url.get()
    }

    /// The configuration in force (after defaults were filled in).
    pub fn config(&self) -> &CaptureConfig {
        &self.inner.shared.config
    }
}

impl Shared {
    /// Count a `BUSY` answer and estimate its `Retry-After`: the average capture time times
    /// the rounds of the pool needed by the `waiting` jobs and one more, 1..=60 s.
    fn busy(&self, waiting: usize) -> CaptureError {
        self.counters
            .busy_rejections
            .fetch_add(1, Ordering::Relaxed);
        let avg_ms = self.counters.avg_ms.load(Ordering::Relaxed).max(500);
        let rounds = waiting.div_ceil(self.config.pool_size) as u64 + 1;
        CaptureError::Busy {
            retry_after_secs: (avg_ms * rounds).div_ceil(1000).clamp(1, 60),
        }
    }
}

type Started = (Arc<Shared>, Vec<JoinHandle<()>>, Option<DriverTask>);

/// Counts a worker as busy from the moment it takes a job until its session is reset
/// (or the job ended otherwise).
struct Busy<'a>(&'a AtomicU64);

impl<'a> Busy<'a> {
    fn start(count: &'a AtomicU64) -> Busy<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        Busy(count)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn init(
    config: CaptureConfig,
    stop: watch::Receiver<bool>,
    jobs: mpsc::Receiver<Job>,
) -> Result<Started, CaptureError> {
    let mut driver = None;
    let driver_url = match &config.webdriver_url {
        Some(u) => DriverUrl::fixed(u.trim_end_matches('/').to_owned()),
        None => {
            let (driver_stop, driver_stop_rx) = watch::channel(false);
            let (url, task) =
                driver::start_supervised(config.chromedriver_path.clone(), driver_stop_rx).await?;
            driver = Some(DriverTask {
                stop: driver_stop,
                task,
            });
            url
        }
    };
    let shared = Arc::new(Shared {
        policy: Arc::new(config.policy()),
        driver_url,
        counters: Counters::default(),
        config,
    });
    let jobs = Arc::new(tokio::sync::Mutex::new(jobs));
    let mut first_ready = None;
    let mut worker_tasks = Vec::new();
    for i in 0..shared.config.pool_size {
        let proxy = Proxy::start_counted(
            shared.config.proxy_bind,
            Arc::clone(&shared.policy),
            Arc::clone(&shared.counters.proxy),
        )
        .await
        .map_err(|e| CaptureError::internal(format!("cannot start the proxy: {e}")))?;
        let (tx, rx) = oneshot::channel();
        if i == 0 {
            first_ready = Some(rx);
        }
        worker_tasks.push(tokio::spawn(worker(
            Arc::clone(&shared),
            proxy,
            Arc::clone(&jobs),
            stop.clone(),
            tx,
        )));
    }
    if shared.config.prewarm {
        if let Some(rx) = first_ready {
            match tokio::time::timeout(Duration::from_secs(60), rx).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    for t in &worker_tasks {
                        t.abort();
                    }
                    if let Some(d) = driver {
                        d.task.abort();
                    }
                    return Err(e);
                }
                _ => {
                    return Err(CaptureError::BrowserUnavailable {
                        detail: "the first browser session did not open within 60 s".into(),
                    })
                }
            }
        }
    }
    Ok((shared, worker_tasks, driver))
}

fn settings(shared: &Shared, proxy: &Proxy) -> SessionSettings {
    let host = shared
        .config
        .proxy_advertised_host
        .clone()
        .unwrap_or_else(|| match proxy.addr().ip() {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        });
    SessionSettings {
        webdriver_url: shared.driver_url.get(),
        chromium_path: shared.config.chromium_path.clone(),
        local_profile: shared.config.webdriver_url.is_none(),
        proxy_url: format!("http://{host}:{}", proxy.addr().port()),
        trusted_spki: shared.config.trusted_spki_hashes.clone(),
    }
}

async fn open_session(shared: &Shared, proxy: &Proxy) -> Result<Session, CaptureError> {
    let s = Session::open(&settings(shared, proxy)).await?;
    shared
        .counters
        .sessions_opened
        .fetch_add(1, Ordering::Relaxed);
    Ok(s)
}

/// Longest a session's reset between captures may take; a session that cannot go back to
/// a blank page in this time is stuck and is replaced.
const RESET_TIMEOUT: Duration = Duration::from_secs(10);

async fn worker(
    shared: Arc<Shared>,
    proxy: Proxy,
    jobs: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    mut stop: watch::Receiver<bool>,
    first_ready: oneshot::Sender<Result<(), CaptureError>>,
) {
    let proxy = Arc::new(proxy);
    let mut first_ready = Some(first_ready);
    let mut session: Option<Session> = None;
    let queue_timeout = Duration::from_millis(shared.config.queue_timeout_ms);
    loop {
        if *stop.borrow() {
            break;
        }
        if session.is_none() && shared.config.prewarm {
            let opened = tokio::select! {
                s = open_session(&shared, &proxy) => s,
                _ = stop.changed() => break,
            };
            match opened {
                Ok(s) => session = Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "could not open a browser session ahead of demand")
                }
            }
            if let Some(tx) = first_ready.take() {
                let _ = tx.send(match &session {
                    Some(_) => Ok(()),
                    None => Err(CaptureError::BrowserUnavailable {
                        detail: "the first browser session could not be opened (is chromium installed? `apt-get install chromium chromium-driver`)".into(),
                    }),
                });
            }
        }
        let job = tokio::select! {
            j = async { jobs.lock().await.recv().await } => j,
            _ = stop.changed() => None,
        };
        let Some(job) = job else { break };
        if job.reply.is_closed() {
            continue;
        }
        if job.enqueued.elapsed() > queue_timeout {
            // This job is at the head of the queue: one round of the pool.
            let _ = job.reply.send(Err(shared.busy(0)));
            continue;
        }
        let _busy = Busy::start(&shared.counters.busy);
        let mut sess = match session.take() {
            Some(s) => s,
            None => match open_session(&shared, &proxy).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                    continue;
                }
            },
        };
        shared
            .counters
            .captures_started
            .fetch_add(1, Ordering::Relaxed);
        let budget = Duration::from_secs(
            job.opts
                .timeout_secs()
                .unwrap_or(shared.config.default_timeout_secs),
        );
        let started = Instant::now();
        let deadline = started + budget;
        let stage: Stage = Arc::new(Mutex::new("starting"));
        let task_proxy = Arc::clone(&proxy);
        let task_stage = Arc::clone(&stage);
        let opts = job.opts;
        // A transparent background is not reliably undone on the same browser (the next
        // capture came out transparent too: `options::omit_background_is_transparent`), so
        // a session that took one is replaced rather than reset.
        let replace_after = opts.omit_background();
        let mut task = tokio::spawn(async move {
            let r = match tokio::time::timeout_at(
                deadline,
                shoot::run(&mut sess, &opts, &task_proxy, deadline, &task_stage),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(CaptureError::Timeout {
                    timeout_secs: budget.as_secs(),
                    stage: (*crate::lock(&task_stage)).to_owned(),
                }),
            };
            let origin = opts.url().map(|u| u.origin().ascii_serialization());
            (sess, origin, r)
        });
        let result = match tokio::time::timeout(budget + HARD_TIMEOUT_GRACE, &mut task).await {
            Ok(Ok((mut sess, origin, result))) => {
                sess.uses += 1;
                let recycle = sess.uses >= shared.config.max_uses_per_session
                    || result
                        .as_ref()
                        .err()
                        .is_some_and(CaptureError::breaks_session);
                if recycle {
                    tokio::spawn(sess.close());
                } else {
                    session = Some(sess);
                }
                (result, origin)
            }
            Ok(Err(join_error)) => {
                tracing::error!(error = %join_error, "a capture task panicked; its session was closed");
                (
                    Err(CaptureError::internal(
                        "the capture task failed unexpectedly",
                    )),
                    None,
                )
            }
            Err(_) => {
                task.abort();
                (
                    Err(CaptureError::Timeout {
                        timeout_secs: budget.as_secs(),
                        stage: (*crate::lock(&stage)).to_owned(),
                    }),
                    None,
                )
            }
        };
        let (mut result, origin) = result;
        if let Err(CaptureError::Timeout { timeout_secs, .. }) = &mut result {
            // Errors mapped deep in WebDriver calls do not know the budget.
            *timeout_secs = budget.as_secs();
        }
        let ms = started.elapsed().as_millis() as u64;
        let old = shared.counters.avg_ms.load(Ordering::Relaxed);
        let avg = if old == 0 { ms } else { (old * 4 + ms) / 5 };
        shared.counters.avg_ms.store(avg, Ordering::Relaxed);
        if let Err(e) = &result {
            tracing::debug!(code = e.code(), error = %e, "capture failed");
        }
        let _ = job.reply.send(result);
        // Clean the session for the next job after the caller has its answer.
        // The reset is also the health check after a page-level error or a timeout.
        if replace_after {
            if let Some(s) = session.take() {
                tokio::spawn(s.close());
            }
        }
        if let Some(s) = session.as_mut() {
            let reset = tokio::time::timeout(RESET_TIMEOUT, s.reset(origin)).await;
            if !matches!(reset, Ok(Ok(()))) {
                tracing::info!(?reset, "session reset failed; replacing the session");
                if let Some(s) = session.take() {
                    tokio::spawn(s.close());
                }
            }
        }
    }
    if let Some(s) = session.take() {
        s.close().await;
    }
    if let Some(tx) = first_ready.take() {
        let _ = tx.send(Err(CaptureError::ShutDown));
    }
}
