//! An in-process HTTP forward proxy that enforces the [`TargetPolicy`] on every connection
//! the browser makes.
//!
//! Chromium is launched with `--proxy-server=http://127.0.0.1:<port>` and
//! `--proxy-bypass-list=<-loopback>`, so *all* its traffic, loopback included, arrives here:
//! `CONNECT host:port` for https and WebSockets over TLS, absolute-URI requests
//! (`GET http://host/path HTTP/1.1`) for plain http and ws. For each one the proxy resolves
//! the host itself, checks every address, and connects to an address it checked; the browser
//! never resolves names, so DNS rebinding cannot move it after the check, and redirects and
//! subresources are checked like the first request.
//!
//! Plain-http requests are forwarded one per connection (`Connection: close` both ways), so
//! a kept-alive browser connection can never carry a second request to another host.
//!
//! Every request leaves a [`ProxyEvent`] in a small log that the session reads after a
//! navigation to tell a DNS failure from a refused connection or a forbidden redirect.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use url::{Host, Url};

use crate::guard::{resolve_checked, ResolveFailure, TargetPolicy};

const MAX_HEAD_BYTES: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const LOG_CAPACITY: usize = 512;

/// Longest a connection may stay open without a request (a spare socket of the browser's).
const SPARE_SOCKET_WAIT: Duration = Duration::from_secs(120);
/// Longest wait for the head of a request that will be refused anyway.
const IDLE_HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Response header set on answers the proxy makes up itself.
pub const PROXY_ERROR_HEADER: &str = "x-capture-proxy-error";

/// What happened to one request through the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyOutcome {
    /// Connected to this (checked) address.
    Connected(SocketAddr),
    /// Refused by the policy.
    Forbidden(String),
    /// The host name does not resolve.
    DnsFailure,
    /// Every address refused the connection.
    ConnectionRefused,
    /// Another network error (unreachable, timeout...).
    NetworkError(String),
    /// A plain-http answer redirected the browser here (the event's host and port are the
    /// redirect's target, as its absolute `Location` names them).
    Redirected,
}

impl ProxyOutcome {
    /// True for every outcome but `Connected` and `Redirected`.
    pub fn is_failure(&self) -> bool {
        !matches!(self, Self::Connected(_) | Self::Redirected)
    }
}

/// One request seen by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyEvent {
    /// Host as a normalized string (`example.com`, `127.0.0.1`, `[::1]`).
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// What happened.
    pub outcome: ProxyOutcome,
}

/// Counts of what proxies did, shared by every proxy of a service.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Requests handled while a capture held the proxy's lease (forwarded or refused by
    /// the policy).
    pub requests: AtomicU64,
    /// Requests refused because no capture was in progress (the browser's own traffic).
    pub refused_idle: AtomicU64,
}

/// What the capture holding the lease asks of the proxy, on top of the policy. A new
/// lease starts from the defaults (nothing added, nothing blocked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyRules {
    /// The target's host (as [`normalize_host`] prints it) and port: `headers` go to
    /// plain-http requests for exactly this host and port, and nowhere else.
    pub target: Option<(String, u16)>,
    /// Extra request headers for the target.
    pub headers: Vec<(String, String)>,
    /// Cookies added to the target's plain-http requests (when the browser cannot be given
    /// them itself, on a WebDriver endpoint without CDP).
    pub cookies: Vec<(String, String)>,
    /// Refuse the hosts of the shipped ad list (`blockAds`).
    pub block_ads: bool,
}

/// Network activity through the proxy, for `waitUntil=networkidle`.
#[derive(Debug)]
struct Activity {
    /// Plain-http requests not answered yet, and CONNECT requests not connected yet.
    in_flight: std::sync::atomic::AtomicUsize,
    /// When a request started or ended, or a tunnel carried bytes.
    last: Mutex<std::time::Instant>,
}

impl Activity {
    fn touch(&self) {
        *crate::lock(&self.last) = std::time::Instant::now();
    }
}

/// Counts a request in flight while it lives.
struct InFlight<'a>(&'a Activity);

impl<'a> InFlight<'a> {
    fn new(a: &'a Activity) -> Self {
        a.in_flight.fetch_add(1, Ordering::SeqCst);
        a.touch();
        Self(a)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// A running proxy. Dropping it stops accepting connections.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    log: Arc<Mutex<VecDeque<ProxyEvent>>>,
    counters: Arc<ProxyCounters>,
    gate: Arc<Gate>,
    rules: Arc<Mutex<ProxyRules>>,
    activity: Arc<Activity>,
    task: JoinHandle<()>,
}

/// Whether the proxy forwards (`true` while a capture holds a [`Lease`]), and which lease
/// opened it.
type Gate = watch::Sender<(bool, u64)>;

/// Held by a capture in progress: while it lives, the proxy forwards the browser's requests
/// (under the policy). Dropping it closes the proxy again and cuts every connection opened
/// during the lease, so no tunnel outlives its capture.
#[derive(Debug)]
pub struct Lease {
    gate: Arc<Gate>,
    generation: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let generation = self.generation;
        self.gate.send_modify(|(open, current)| {
            if *current == generation {
                *open = false;
            }
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Listen on `bind_ip` (port chosen by the OS) and enforce `policy`.
    pub async fn start(bind_ip: IpAddr, policy: Arc<TargetPolicy>) -> std::io::Result<Self> {
        Self::start_counted(bind_ip, policy, Arc::default()).await
    }

    /// Like [`Proxy::start`], counting into `counters` (shared by a service's proxies).
    pub async fn start_counted(
        bind_ip: IpAddr,
        policy: Arc<TargetPolicy>,
        counters: Arc<ProxyCounters>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::new(bind_ip, 0)).await?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let task_log = Arc::clone(&log);
        let task_counters = Arc::clone(&counters);
        let gate = Arc::new(watch::Sender::new((false, 0)));
        let task_gate = Arc::clone(&gate);
        let rules = Arc::new(Mutex::new(ProxyRules::default()));
        let task_rules = Arc::clone(&rules);
        let activity = Arc::new(Activity {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            last: Mutex::new(std::time::Instant::now()),
        });
        let task_activity = Arc::clone(&activity);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let policy = Arc::clone(&policy);
                let log = Arc::clone(&task_log);
                let counters = Arc::clone(&task_counters);
                let mut gate = task_gate.subscribe();
                let rules = Arc::clone(&task_rules);
                let activity = Arc::clone(&task_activity);
                tokio::spawn(async move {
                    // The request, not the connect, decides which capture a connection
                    // belongs to: Chromium opens spare sockets to its proxy ahead of time.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(SPARE_SOCKET_WAIT, stream.peek(&mut first)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return,
                    }
                    let (open, generation) = *gate.borrow_and_update();
                    if !open {
                        refuse_idle(stream, &counters).await;
                        return;
                    }
                    let rules = crate::lock(&rules).clone();
                    let conn = Conn {
                        policy: &policy,
                        log: &log,
                        counters: &counters,
                        rules: &rules,
                        activity: &activity,
                    };
                    let lease_ended = async move {
                        while gate.changed().await.is_ok() {
                            if *gate.borrow() != (true, generation) {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        r = handle(stream, conn) => {
                            if let Err(e) = r {
                                tracing::debug!(error = %e, "proxy connection ended with an error");
                            }
                        }
                        () = lease_ended => {
                            tracing::debug!("the capture ended; its proxy connection was cut");
                        }
                    }
                });
            }
        });
        Ok(Self {
            addr,
            log,
            counters,
            gate,
            rules,
            activity,
            task,
        })
    }

    /// Open the proxy for one capture (see [`Lease`]). Outside a lease every request is
    /// refused with `403` and counted in [`ProxyCounters::refused_idle`]: the browser's
    /// own background traffic reaches nothing. A new lease supersedes an older one.
    pub fn lease(&self) -> Lease {
        let mut generation = 0;
        *crate::lock(&self.rules) = ProxyRules::default();
        self.gate.send_modify(|(open, current)| {
            *current += 1;
            *open = true;
            generation = *current;
        });
        Lease {
            gate: Arc::clone(&self.gate),
            generation,
        }
    }

    /// Set what the current capture asks (see [`ProxyRules`]); connections opened from now
    /// on follow them. [`Proxy::lease`] resets them.
    pub fn set_rules(&self, rules: ProxyRules) {
        *crate::lock(&self.rules) = rules;
    }

    /// True when no request has been in flight through the proxy, and no tunnel has carried
    /// a byte, for `quiet`.
    pub fn is_idle_for(&self, quiet: Duration) -> bool {
        self.activity.in_flight.load(Ordering::SeqCst) == 0
            && crate::lock(&self.activity.last).elapsed() >= quiet
    }

    /// What this proxy (and those sharing its counters) did so far.
    pub fn counters(&self) -> &ProxyCounters {
        &self.counters
    }

    /// Where the proxy listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forget every recorded event (done before each navigation).
    pub fn clear_log(&self) {
        crate::lock(&self.log).clear();
    }

    /// A copy of the recorded events, oldest first.
    pub fn events(&self) -> Vec<ProxyEvent> {
        crate::lock(&self.log).iter().cloned().collect()
    }

    /// The latest failure recorded for `host:port` (host as [`normalize_host`] prints it).
    pub fn failure_for(&self, host: &str, port: u16) -> Option<ProxyOutcome> {
        self.latest_failure(|e| e.host == host && e.port == port)
            .map(|e| e.outcome)
    }

    /// The latest failure recorded for any host, with the host and port that failed; a
    /// refusal by the policy before any other kind. The browser makes requests of its own
    /// during a capture (sign-in, component checks), and one of them failing after the
    /// page's hop was refused must not hide the refusal.
    pub fn last_failure(&self) -> Option<ProxyEvent> {
        self.latest_failure(|e| matches!(e.outcome, ProxyOutcome::Forbidden(_)))
            .or_else(|| self.latest_failure(|_| true))
    }

    /// The latest failure of the host and port the latest plain-http redirect sent the
    /// browser to. Through a CONNECT tunnel the browser hides which hop failed; when the
    /// hop before it was plain http, the proxy saw where it pointed.
    pub fn redirect_failure(&self) -> Option<ProxyEvent> {
        let target = crate::lock(&self.log)
            .iter()
            .rev()
            .find(|e| e.outcome == ProxyOutcome::Redirected)
            .map(|e| (e.host.clone(), e.port))?;
        self.latest_failure(|e| e.host == target.0 && e.port == target.1)
    }

    fn latest_failure(&self, wanted: impl Fn(&ProxyEvent) -> bool) -> Option<ProxyEvent> {
        crate::lock(&self.log)
            .iter()
            .rev()
            .find(|e| e.outcome.is_failure() && wanted(e))
            .cloned()
    }
}

/// The host as the proxy logs it: lower-case names, IPv6 in brackets.
pub fn normalize_host(host: &Host<String>) -> String {
    match host {
        Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
        other => other.to_string(),
    }
}

fn record(
    log: &Mutex<VecDeque<ProxyEvent>>,
    host: &Host<String>,
    port: u16,
    outcome: ProxyOutcome,
) {
    let mut log = crate::lock(log);
    if log.len() >= LOG_CAPACITY {
        log.pop_front();
    }
    log.push_back(ProxyEvent {
        host: normalize_host(host),
        port,
        outcome,
    });
}

/// What one proxied connection works with.
#[derive(Clone, Copy)]
struct Conn<'a> {
    policy: &'a TargetPolicy,
    log: &'a Mutex<VecDeque<ProxyEvent>>,
    counters: &'a ProxyCounters,
    rules: &'a ProxyRules,
    activity: &'a Activity,
}

/// The connection to `host:port` for this request, or `Err` with the proxy's own answer to
/// the browser: a host of the ad list under `blockAds`, a target the policy refuses, a DNS
/// failure or a refused connection (each recorded in the log).
async fn connect_upstream(
    client: &mut TcpStream,
    host: &Host<String>,
    port: u16,
    conn: Conn<'_>,
) -> Result<TcpStream, std::io::Result<()>> {
    if conn.rules.block_ads && crate::apply::is_ad_host(&normalize_host(host)) {
        tracing::debug!(%host, port, "proxy refused a host of the ad list");
        record(
            conn.log,
            host,
            port,
            ProxyOutcome::Forbidden("the host is on the blockAds list".into()),
        );
        let blocked = "blocked by blockAds";
        return Err(reply(client, StatusCode::FORBIDDEN, blocked, Some("blocked-ad")).await);
    }
    match open(host, port, conn.policy, conn.log).await {
        Ok(s) => Ok(s),
        Err(outcome) => {
            let (status, code) = status_for(&outcome);
            Err(reply(client, status, code, Some(code)).await)
        }
    }
}

/// `400` with `message`: a request this proxy does not take.
async fn bad_request(client: &mut TcpStream, message: &str) -> std::io::Result<()> {
    reply(client, StatusCode::BAD_REQUEST, message, None).await
}

async fn relay(a: &mut TcpStream, b: &mut TcpStream, activity: &Activity) {
    async fn pump<R, W>(mut r: R, mut w: W, activity: &Activity) -> std::io::Result<()>
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return w.shutdown().await;
            }
            activity.touch();
            w.write_all(&buf[..n]).await?;
        }
    }
    let (ar, aw) = a.split();
    let (br, bw) = b.split();
    let _ = tokio::join!(pump(ar, bw, activity), pump(br, aw, activity));
}

async fn handle(stream: TcpStream, conn: Conn<'_>) -> std::io::Result<()> {
    let counters = conn.counters;
    let _ = stream.set_nodelay(true);
    let mut client = BufReader::new(stream);
    let head = read_head(&mut client).await?;
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let in_flight = InFlight::new(conn.activity);
    tracing::debug!(
        request = head.lines().next().unwrap_or_default(),
        "proxy request"
    );
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or("HTTP/1.1"),
    );
    let headers: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();

    if method.eq_ignore_ascii_case("CONNECT") {
        let Some((host, port)) = parse_authority(target) else {
            return bad_request(client.get_mut(), "bad CONNECT target").await;
        };
        let upstream = match connect_upstream(client.get_mut(), &host, port, conn).await {
            Ok(s) => s,
            Err(answered) => return answered,
        };
        client
            .get_mut()
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        let buffered = client.buffer().to_vec();
        let mut client = client.into_inner();
        let mut upstream = upstream;
        if !buffered.is_empty() {
            upstream.write_all(&buffered).await?;
        }
        // A tunnel may stay open, idle, for as long as the browser keeps it: it counts as
        // activity only while bytes pass.
        drop(in_flight);
        relay(&mut client, &mut upstream, conn.activity).await;
        return Ok(());
    }

    // Absolute-form request for plain http (or ws).
    let Ok(url) = Url::parse(target) else {
        let message = "this proxy only accepts absolute-form requests";
        return bad_request(client.get_mut(), message).await;
    };
    if !matches!(url.scheme(), "http" | "ws") {
        return bad_request(client.get_mut(), "unsupported scheme").await;
    }
    let (Some(host), Some(port)) = (
        url.host().map(|h| h.to_owned()),
        url.port_or_known_default(),
    ) else {
        return bad_request(client.get_mut(), "missing host").await;
    };
    let mut upstream = match connect_upstream(client.get_mut(), &host, port, conn).await {
        Ok(s) => s,
        Err(answered) => return answered,
    };
    // The capture's extra headers, for the target's own host and port only.
    let for_target = matches!(&conn.rules.target,
        Some((h, p)) if *h == normalize_host(&host) && *p == port);
    let none: &[(String, String)] = &[];
    let (extra, cookies) = if for_target {
        (&conn.rules.headers[..], &conn.rules.cookies[..])
    } else {
        (none, none)
    };
    let mut cookie_line = String::new();
    for (name, value) in cookies {
        if !cookie_line.is_empty() {
            cookie_line.push_str("; ");
        }
        cookie_line.push_str(name);
        cookie_line.push('=');
        cookie_line.push_str(value);
    }
    let is_upgrade = headers.iter().any(|h| {
        h.split_once(':')
            .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case("upgrade"))
    });
    let mut path = url.path().to_owned();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let mut out = format!("{method} {path} {version}\r\n");
    for h in &headers {
        let name = h.split_once(':').map(|(n, _)| n.trim()).unwrap_or_default();
        let hop = ["proxy-connection", "proxy-authorization", "keep-alive"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n));
        let is_conn = name.eq_ignore_ascii_case("connection");
        let replaced = extra.iter().any(|(n, _)| name.eq_ignore_ascii_case(n));
        if hop || replaced || (is_conn && !is_upgrade) {
            continue;
        }
        if !cookie_line.is_empty() && name.eq_ignore_ascii_case("cookie") {
            // The browser's own cookies, then the capture's.
            out.push_str(h.trim_end());
            out.push_str("; ");
            out.push_str(&cookie_line);
            out.push_str("\r\n");
            cookie_line.clear();
            continue;
        }
        out.push_str(h);
        out.push_str("\r\n");
    }
    if !cookie_line.is_empty() {
        out.push_str("Cookie: ");
        out.push_str(&cookie_line);
        out.push_str("\r\n");
    }
    for (name, value) in extra {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    if !is_upgrade {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    upstream.write_all(out.as_bytes()).await?;
    let buffered = client.buffer().to_vec();
    if !buffered.is_empty() {
        upstream.write_all(&buffered).await?;
    }
    let mut client = client.into_inner();
    if is_upgrade {
        drop(in_flight);
        relay(&mut client, &mut upstream, conn.activity).await;
        return Ok(());
    }
    // Relay the response, forcing `Connection: close` so the browser opens a new proxy
    // connection (and so a new check) for its next request.
    let (mut cr, mut cw) = client.split();
    let (ur, mut uw) = upstream.split();
    let to_upstream = tokio::io::copy(&mut cr, &mut uw);
    let to_client = async {
        let mut ur = BufReader::new(ur);
        let head = read_head(&mut ur).await?;
        if let Some((host, port)) = redirect_target(&head) {
            record(conn.log, &host, port, ProxyOutcome::Redirected);
        }
        let mut rewritten = String::with_capacity(head.len() + 20);
        for line in head.split("\r\n").filter(|l| !l.is_empty()) {
            let name = line
                .split_once(':')
                .map(|(n, _)| n.trim())
                .unwrap_or_default();
            if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
                continue;
            }
            rewritten.push_str(line);
            rewritten.push_str("\r\n");
        }
        rewritten.push_str("Connection: close\r\n\r\n");
        cw.write_all(rewritten.as_bytes()).await?;
        cw.write_all(ur.buffer()).await?;
        let mut ur = ur.into_inner();
        tokio::io::copy(&mut ur, &mut cw).await?;
        cw.shutdown().await?;
        Ok::<_, std::io::Error>(())
    };
    tokio::select! {
        r = to_client => r,
        _ = async { let _ = to_upstream.await; std::future::pending::<()>().await } => Ok(()),
    }
}

/// Where a response head redirects to: the host and port of an absolute `Location` of a
/// 3xx answer (a relative one stays on the host the request went to).
fn redirect_target(head: &str) -> Option<(Host<String>, u16)> {
    let status = head.split_whitespace().nth(1)?;
    if !status.starts_with('3') {
        return None;
    }
    let location = head.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("location")
            .then(|| value.trim())
    })?;
    let url = Url::parse(location).ok()?;
    Some((url.host()?.to_owned(), url.port_or_known_default()?))
}

/// Answer a request that arrived with no capture in progress: read its head (to log what
/// the browser tried), refuse it, connect to nothing.
async fn refuse_idle(stream: TcpStream, counters: &ProxyCounters) {
    counters.refused_idle.fetch_add(1, Ordering::Relaxed);
    let mut client = BufReader::new(stream);
    let head = tokio::time::timeout(IDLE_HEAD_TIMEOUT, read_head(&mut client)).await;
    let request = match &head {
        Ok(Ok(h)) => h.lines().next().unwrap_or_default().to_owned(),
        _ => String::new(),
    };
    tracing::debug!(request, "proxy refused a request outside any capture");
    let _ = reply(
        client.get_mut(),
        StatusCode::FORBIDDEN,
        "no capture in progress",
        Some("no-capture-in-progress"),
    )
    .await;
}

fn status_for(outcome: &ProxyOutcome) -> (StatusCode, &'static str) {
    match outcome {
        ProxyOutcome::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden-target"),
        ProxyOutcome::DnsFailure => (StatusCode::BAD_GATEWAY, "dns-failure"),
        ProxyOutcome::ConnectionRefused => (StatusCode::BAD_GATEWAY, "connection-refused"),
        ProxyOutcome::NetworkError(_) | ProxyOutcome::Connected(_) | ProxyOutcome::Redirected => {
            (StatusCode::BAD_GATEWAY, "network-error")
        }
    }
}

/// Resolve, check, connect, and log what happened.
async fn open(
    host: &Host<String>,
    port: u16,
    policy: &TargetPolicy,
    log: &Mutex<VecDeque<ProxyEvent>>,
) -> Result<TcpStream, ProxyOutcome> {
    let result = connect_checked(host, port, policy).await;
    let outcome = match &result {
        Ok((_, addr)) => ProxyOutcome::Connected(*addr),
        Err(o) => o.clone(),
    };
    if outcome.is_failure() {
        tracing::debug!(%host, port, ?outcome, "proxy refused or failed a request");
    }
    record(log, host, port, outcome);
    result.map(|(s, _)| s)
}

async fn connect_checked(
    host: &Host<String>,
    port: u16,
    policy: &TargetPolicy,
) -> Result<(TcpStream, SocketAddr), ProxyOutcome> {
    let addrs = resolve_checked(host, port, policy)
        .await
        .map_err(|f| match f {
            ResolveFailure::Forbidden(r) => ProxyOutcome::Forbidden(r),
            ResolveFailure::Dns => ProxyOutcome::DnsFailure,
        })?;
    let mut last = ProxyOutcome::NetworkError("no address".into());
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((s, addr));
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = ProxyOutcome::ConnectionRefused;
            }
            Ok(Err(e)) => last = ProxyOutcome::NetworkError(e.to_string()),
            Err(_) => last = ProxyOutcome::NetworkError("connect timed out".into()),
        }
    }
    Err(last)
}

/// `host:port` or `[v6]:port` → host and port.
fn parse_authority(s: &str) -> Option<(Host<String>, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let port: u16 = p.parse().ok()?;
    let host = Host::parse(h).ok()?;
    Some((host, port))
}

async fn read_head<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<String> {
    let mut head = Vec::with_capacity(1024);
    loop {
        let n = r.read_until(b'\n', &mut head).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if head.len() > MAX_HEAD_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

async fn reply(
    w: &mut TcpStream,
    status: StatusCode,
    text: &str,
    code: Option<&str>,
) -> std::io::Result<()> {
    let reason = status.canonical_reason().unwrap_or_default();
    let status = status.as_u16();
    // The code, when there is one, both in the page (for the browser's frame) and in a header.
    let (meta, extra) = match code {
        Some(c) => (
            format!("<meta name=\"capture-proxy-error\" content=\"{c}\">"),
            format!("{PROXY_ERROR_HEADER}: {c}\r\n"),
        ),
        None => Default::default(),
    };
    let body = format!(
        "<!doctype html>{meta}<title>{status} {reason}</title><p>Capture proxy: {text}</p>\n"
    );
    let msg = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/html; charset=utf-8\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    w.write_all(msg.as_bytes()).await?;
    w.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A proxy on loopback under `policy`.
    async fn local_proxy(policy: TargetPolicy) -> Proxy {
        Proxy::start("127.0.0.1".parse().unwrap(), Arc::new(policy))
            .await
            .unwrap()
    }

    async fn drain<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
        let mut v = Vec::new();
        r.read_to_end(&mut v).await?;
        Ok(v)
    }

    async fn origin(body: &'static str) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut r = BufReader::new(&mut s);
                let _ = read_head(&mut r).await;
                let msg = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(msg.as_bytes()).await;
            }
        });
        (addr, hits)
    }

    async fn get_via(proxy: SocketAddr, url: &str) -> String {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.write_all(
            format!("GET {url} HTTP/1.1\r\nHost: x\r\nProxy-Connection: keep-alive\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        String::from_utf8(drain(&mut s).await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_refusal_is_the_latest_failure_whatever_failed_after_it() {
        let proxy = local_proxy(TargetPolicy::strict()).await;
        let host = |h: &str| Host::Domain(h.to_owned());
        record(
            &proxy.log,
            &host("a.example"),
            443,
            ProxyOutcome::DnsFailure,
        );
        assert_eq!(
            proxy.last_failure().unwrap().outcome,
            ProxyOutcome::DnsFailure
        );
        let refused = ProxyOutcome::Forbidden("a private address".into());
        record(&proxy.log, &host("10.0.0.1"), 443, refused.clone());
        // A request of the browser's own fails after the page's hop was refused.
        record(
            &proxy.log,
            &host("accounts.example"),
            443,
            ProxyOutcome::DnsFailure,
        );
        let latest = proxy.last_failure().unwrap();
        assert_eq!(
            (latest.host.as_str(), latest.outcome),
            ("10.0.0.1", refused)
        );
    }

    #[test]
    fn a_redirect_names_the_host_and_port_of_its_absolute_location() {
        let head = "HTTP/1.1 302 Found\r\nlocation: https://127.0.0.1:9/x\r\n";
        assert_eq!(
            redirect_target(head),
            Some((Host::Ipv4("127.0.0.1".parse().unwrap()), 9))
        );
        let to = "HTTP/1.1 301 Moved\r\nLocation: http://example.com/\r\n";
        assert_eq!(
            redirect_target(to),
            Some((Host::Domain("example.com".into()), 80))
        );
        assert_eq!(
            redirect_target("HTTP/1.1 302 Found\r\nLocation: /next\r\n"),
            None
        );
        assert_eq!(
            redirect_target("HTTP/1.1 200 OK\r\nLocation: http://a/\r\n"),
            None
        );
    }

    #[tokio::test]
    async fn a_failed_tunnel_after_a_redirect_is_the_redirect_targets_failure() {
        let proxy = local_proxy(TargetPolicy::strict()).await;
        let host = |h: &str| Host::Domain(h.to_owned());
        assert!(proxy.redirect_failure().is_none(), "no redirect yet");
        record(
            &proxy.log,
            &host("next.example"),
            443,
            ProxyOutcome::Redirected,
        );
        record(
            &proxy.log,
            &host("next.example"),
            443,
            ProxyOutcome::ConnectionRefused,
        );
        // The browser's own request fails after the page's hop did.
        record(
            &proxy.log,
            &host("accounts.example"),
            443,
            ProxyOutcome::DnsFailure,
        );
        let failed = proxy.redirect_failure().unwrap();
        assert_eq!(
            (failed.host.as_str(), failed.port, failed.outcome),
            ("next.example", 443, ProxyOutcome::ConnectionRefused)
        );
    }

    #[tokio::test]
    async fn forwards_allowed_and_refuses_forbidden_hops() {
        let (ok_addr, ok_hits) = origin("hello").await;
        let (bad_addr, bad_hits) = origin("secret").await;
        let proxy = local_proxy(TargetPolicy::strict().with_allowed([ok_addr])).await;
        let _lease = proxy.lease();

        let answer = get_via(proxy.addr(), &format!("http://{ok_addr}/a?b=c")).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("Connection: close"), "{answer}");
        assert!(answer.ends_with("hello"));

        let answer = get_via(proxy.addr(), &format!("http://{bad_addr}/")).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        assert!(answer.contains("forbidden-target"));
        assert_eq!(bad_hits.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(ok_hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        let failure = proxy.failure_for("127.0.0.1", bad_addr.port());
        assert!(
            matches!(failure, Some(ProxyOutcome::Forbidden(_))),
            "{failure:?}"
        );

        // CONNECT to a forbidden address is refused before any byte reaches it.
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"CONNECT 169.254.169.254:443 HTTP/1.1\r\nHost: 169.254.169.254:443\r\n\r\n")
            .await
            .unwrap();
        let answer = String::from_utf8(drain(&mut s).await.unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

        let answer = get_via(proxy.addr(), "http://nothing-here.invalid/").await;
        assert!(answer.contains("dns-failure"), "{answer}");
        assert_eq!(
            proxy.failure_for("nothing-here.invalid", 80),
            Some(ProxyOutcome::DnsFailure)
        );
    }

    /// Neither the browser (the proxy's answer, which a frame could show) nor the capture's
    /// error (from the proxy's log) learns what a refused name resolved to.
    #[tokio::test]
    async fn refusals_through_the_proxy_do_not_disclose_dns_answers() {
        let (bad_addr, bad_hits) = origin("secret").await;
        let proxy = local_proxy(TargetPolicy::strict()).await;
        let _lease = proxy.lease();
        let port = bad_addr.port();
        let answer = get_via(proxy.addr(), &format!("http://localhost:{port}/")).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let tunnel = String::from_utf8(drain(&mut s).await.unwrap()).unwrap();
        for text in [answer, tunnel] {
            assert!(text.starts_with("HTTP/1.1 403"), "{text}");
            assert!(
                !text.contains("127.0.0.1") && !text.contains("::1"),
                "{text}"
            );
        }
        for event in proxy.events() {
            let ProxyOutcome::Forbidden(reason) = event.outcome else {
                panic!("{event:?}");
            };
            assert!(reason.contains("private or reserved"), "{reason}");
            assert!(
                !reason.contains("127.0.0.1") && !reason.contains("::1"),
                "{reason}"
            );
        }
        assert_eq!(bad_hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    /// A connection the browser opened ahead of time (Chromium keeps spare sockets to its
    /// proxy) belongs to the capture in progress when its request arrives: opened while
    /// idle, it is forwarded once a lease holds the proxy, and a socket opened during a
    /// capture is refused once that capture has ended.
    #[tokio::test]
    async fn the_gate_is_decided_when_the_request_arrives() {
        let (ok_addr, ok_hits) = origin("hello").await;
        let proxy = local_proxy(TargetPolicy::strict().with_allowed([ok_addr])).await;
        let request = format!("GET http://{ok_addr}/ HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut spare = TcpStream::connect(proxy.addr()).await.unwrap();
        // Let the proxy accept it while no capture is in progress.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let lease = proxy.lease();
        spare.write_all(request.as_bytes()).await.unwrap();
        let answer = String::from_utf8(drain(&mut spare).await.unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let mut late = TcpStream::connect(proxy.addr()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(lease);
        tokio::time::sleep(Duration::from_millis(50)).await;
        late.write_all(request.as_bytes()).await.unwrap();
        let answer = String::from_utf8(drain(&mut late).await.unwrap_or_default()).unwrap();
        assert!(
            answer.is_empty() || answer.contains("no-capture-in-progress"),
            "{answer}"
        );
        assert_eq!(ok_hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// With no capture in progress the proxy forwards nothing, even to an allowed address;
    /// a lease opens it, and its end closes it again and cuts the tunnels it carried.
    #[tokio::test]
    async fn forwards_only_while_a_capture_holds_a_lease() {
        let (ok_addr, ok_hits) = origin("hello").await;
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let proxy = local_proxy(TargetPolicy::strict().with_allowed([ok_addr, echo_addr])).await;
        let idle = get_via(proxy.addr(), &format!("http://{ok_addr}/")).await;
        assert!(idle.starts_with("HTTP/1.1 403"), "{idle}");
        assert!(idle.contains("no-capture-in-progress"), "{idle}");
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(format!("CONNECT {echo_addr} HTTP/1.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let idle = String::from_utf8(drain(&mut s).await.unwrap()).unwrap();
        assert!(idle.starts_with("HTTP/1.1 403"), "{idle}");
        assert_eq!(ok_hits.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(proxy.counters().refused_idle.load(Ordering::Relaxed), 2);
        assert_eq!(proxy.counters().requests.load(Ordering::Relaxed), 0);
        assert!(proxy.events().is_empty(), "{:?}", proxy.events());

        let lease = proxy.lease();
        let answer = get_via(proxy.addr(), &format!("http://{ok_addr}/")).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let mut tunnel = TcpStream::connect(proxy.addr()).await.unwrap();
        tunnel
            .write_all(format!("CONNECT {echo_addr} HTTP/1.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut head = [0u8; 39];
        tunnel.read_exact(&mut head).await.unwrap();
        tunnel.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        tunnel.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
        drop(lease);
        // The tunnel opened during the capture is cut when the capture ends.
        let rest = tokio::time::timeout(Duration::from_secs(5), drain(&mut tunnel))
            .await
            .expect("the tunnel was not cut");
        assert!(rest.map_or(true, |b| b.is_empty()));
        let after = get_via(proxy.addr(), &format!("http://{ok_addr}/")).await;
        assert!(after.contains("no-capture-in-progress"), "{after}");
        assert_eq!(ok_hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn connect_tunnels_bytes_to_an_allowed_address() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        let proxy = local_proxy(TargetPolicy::strict().with_allowed([echo_addr])).await;
        let _lease = proxy.lease();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(
            format!("CONNECT {echo_addr} HTTP/1.1\r\nHost: {echo_addr}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut head = [0u8; 39];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head[..], b"HTTP/1.1 200 Connection Established\r\n\r\n");
        s.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
    }

    #[tokio::test]
    async fn reports_refused_connections() {
        // Bound but not listening: refuses connections, and no one else can take the port.
        let refusing = tokio::net::TcpSocket::new_v4().unwrap();
        refusing.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = refusing.local_addr().unwrap().port();
        let proxy = local_proxy(TargetPolicy::allow_private()).await;
        let _lease = proxy.lease();
        let answer = get_via(proxy.addr(), &format!("http://127.0.0.1:{port}/")).await;
        assert!(answer.contains("connection-refused"), "{answer}");
        assert_eq!(
            proxy.failure_for("127.0.0.1", port),
            Some(ProxyOutcome::ConnectionRefused)
        );
    }
}
