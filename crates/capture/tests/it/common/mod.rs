//! Test support: a fixture HTTP server on 127.0.0.1:0 and a shared capture service.
//!
//! Both live on their own threads and runtimes (each `#[tokio::test]` has a runtime of its
//! own that ends with the test), and are shared by every test of one test binary.
//! Browser sessions are closed by the service; if a test panics and the process exits, the
//! chromedriver watchdog ends chromedriver and with it every chromium.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use capture::{
    CaptureConfig, CaptureError, CaptureOptions, CaptureService, Captured, RawCaptureOptions,
};
use std::future::Future;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The error has the stable `code` and suggests the HTTP `status`.
#[track_caller]
pub fn assert_error(err: &CaptureError, code: &str, status: u16) {
    assert_eq!(err.code(), code, "{err}");
    assert_eq!(err.http_status(), status, "{err}");
}

/// Fails (never skips) when the browser is not installed.
pub fn require_browser() {
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: browser tests need a real browser; run \
             `apt-get install chromium chromium-driver`"
        );
    }
}

/// A running fixture server.
pub struct Fixture {
    pub addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    total: Arc<AtomicUsize>,
}

impl Fixture {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    /// Requests served for a path (without query).
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
    pub fn total_hits(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

pub const ELEMENT_W: u32 = 200;
pub const ELEMENT_H: u32 = 100;

fn page(path: &str, query: &str) -> (u16, String, String, Option<String>) {
    let html = |body: &str| body.to_string();
    let q = |key: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then(|| v.replace("%3A", ":").replace("%2F", "/"))
        })
    };
    match path {
        "/" => (
            200,
            "text/html".into(),
            html("<!doctype html><html><head><title>ok</title><style>html,body{margin:0;background:#3366cc}</style></head><body><h1>Fixture</h1></body></html>"),
            None,
        ),
        "/tall" => (
            200,
            "text/html".into(),
            html("<!doctype html><html><head><style>body{margin:0}</style></head><body><div style=\"height:3000px;background:linear-gradient(#fff,#000)\">tall</div></body></html>"),
            None,
        ),
        "/element" => (
            200,
            "text/html".into(),
            format!("<!doctype html><html><head><style>body{{margin:0}}</style></head><body><div id=\"box\" style=\"position:absolute;left:50px;top:60px;width:{ELEMENT_W}px;height:{ELEMENT_H}px;background:#c00\"></div></body></html>"),
            None,
        ),
        "/late" => (
            200,
            "text/html".into(),
            html("<!doctype html><html><body><script>setTimeout(function(){var d=document.createElement('div');d.id='late';d.textContent='here';document.body.appendChild(d);},300);</script></body></html>"),
            None,
        ),
        "/dark" => (
            200,
            "text/html".into(),
            html("<!doctype html><html><head><style>html,body{margin:0;height:100%;background:#fff}@media (prefers-color-scheme: dark){html,body{background:#000}}</style></head><body></body></html>"),
            None,
        ),
        "/404" => (404, "text/html".into(), html("<h1>Not found</h1>"), None),
        "/500" => (500, "text/html".into(), html("<h1>Broken</h1>"), None),
        "/redirect" => (
            302,
            "text/html".into(),
            html("moved"),
            Some(q("to").unwrap_or_else(|| "/".into())),
        ),
        "/with-image" => (
            200,
            "text/html".into(),
            format!(
                "<!doctype html><html><body><p>image below</p><img src=\"{}\"></body></html>",
                q("src").unwrap_or_default()
            ),
            None,
        ),
        "/pixel.png" => (200, "image/png".into(), String::new(), None),
        _ => (404, "text/html".into(), html("no such fixture"), None),
    }
}

/// Run `handle` for every connection to a listener on 127.0.0.1:0, on a thread and a
/// runtime of its own (so the server outlives the test that started it); answers the
/// listener's address.
pub fn listen<H, F>(handle: H) -> SocketAddr
where
    H: Fn(TcpStream) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            loop {
                if let Ok((s, _)) = l.accept().await {
                    tokio::spawn(handle(s));
                }
            }
        });
    });
    rx.recv().unwrap()
}

/// The head of one HTTP message (request line or status line, then the headers, each line
/// with its CRLF, without the blank line that ends it); `None` at the end of the stream.
pub async fn read_head<R: AsyncBufRead + Unpin>(r: &mut R) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some(head);
        }
        head.push_str(&line);
    }
}

/// The request target (path and query) of a request head.
pub fn request_target(head: &str) -> &str {
    head.split(' ').nth(1).unwrap_or("/")
}

/// Answer `status` with `headers` (each line with its CRLF) and `body`, then close.
pub async fn respond(s: &mut TcpStream, status: u16, headers: &str, body: &[u8]) {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body).await;
    let _ = s.shutdown().await;
}

/// Start the fixture server (once per call) on its own thread.
pub fn start_fixture() -> Fixture {
    let hits = Arc::new(Mutex::new(HashMap::new()));
    let total = Arc::new(AtomicUsize::new(0));
    let (h, t) = (Arc::clone(&hits), Arc::clone(&total));
    let addr = listen(move |mut s| {
        let (h, t) = (Arc::clone(&h), Arc::clone(&t));
        async move {
            let Some(head) = read_head(&mut BufReader::new(&mut s)).await else {
                return;
            };
            let target = request_target(&head);
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            *h.lock().unwrap().entry(path.to_string()).or_default() += 1;
            t.fetch_add(1, Ordering::SeqCst);
            if path == "/slow" {
                tokio::time::sleep(Duration::from_secs(20)).await;
            }
            let (status, ctype, body, location) = page(path, query);
            let loc = location
                .map(|l| format!("Location: {l}\r\n"))
                .unwrap_or_default();
            let headers = format!("Content-Type: {ctype}\r\n{loc}");
            respond(&mut s, status, &headers, body.as_bytes()).await;
        }
    });
    Fixture { addr, hits, total }
}

/// A WebDriver endpoint in front of the chromedriver at `upstream` that knows no CDP (as a
/// Selenium Grid without vendor endpoints): `goog/cdp/execute` answers `404 unknown
/// command`, everything else is relayed. Answers the relay's `http://` URL.
pub fn no_cdp_relay(upstream: &str) -> String {
    let upstream = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let addr = listen(move |s| relay(s, upstream.clone()));
    format!("http://{addr}")
}

/// A message head without its `Connection` header, and its `Content-Length` (0 if none).
fn without_connection(head: &str) -> (String, usize) {
    let mut kept = String::new();
    let mut len = 0;
    for line in head.split_inclusive("\r\n") {
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if !lower.starts_with("connection:") {
            kept.push_str(line);
        }
    }
    (kept, len)
}

/// One client connection of [`no_cdp_relay`]: each request is sent upstream on a connection
/// of its own (chromedriver may keep it open, so its answer is read by its length).
async fn relay(s: TcpStream, upstream: String) {
    let mut r = BufReader::new(s);
    while let Some(head) = read_head(&mut r).await {
        let (head, len) = without_connection(&head);
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).await.is_err() {
            return;
        }
        let answer = if request_target(&head).contains("/goog/cdp/") {
            let b = r#"{"value":{"error":"unknown command","message":"unknown command: no CDP on this endpoint","stacktrace":""}}"#;
            format!(
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )
            .into_bytes()
        } else {
            let Ok(up) = TcpStream::connect(&upstream).await else {
                return;
            };
            let mut up = BufReader::new(up);
            let request = format!("{head}Connection: close\r\n\r\n");
            if up.get_mut().write_all(request.as_bytes()).await.is_err()
                || up.get_mut().write_all(&body).await.is_err()
            {
                return;
            }
            let Some(answer_head) = read_head(&mut up).await else {
                return;
            };
            let (answer_head, len) = without_connection(&answer_head);
            let mut out = format!("{answer_head}\r\n").into_bytes();
            let mut b = vec![0u8; len];
            if up.read_exact(&mut b).await.is_err() {
                return;
            }
            out.extend_from_slice(&b);
            out
        };
        if r.get_mut().write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// A standalone chromedriver on a port of its own, as a Selenium Grid node would be (it
/// ends with its browsers when dropped).
pub fn standalone_chromedriver() -> capture::Chromedriver {
    require_browser();
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(capture::Chromedriver::start(std::path::Path::new(
                "/usr/bin/chromedriver",
            )))
    })
    .join()
    .unwrap()
    .unwrap_or_else(|e| panic!("chromedriver did not start: {e}"))
}

/// Start a capture service from a plain thread (so it does not depend on a test's runtime).
pub fn start_service(config: CaptureConfig) -> CaptureService {
    require_browser();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(CaptureService::start(config))
    })
    .join()
    .unwrap()
    .unwrap_or_else(|e| panic!("capture service did not start: {e} ({})", e.code()))
}

/// One service and one fixture for the whole test binary (private targets allowed).
pub fn shared() -> &'static (CaptureService, Fixture) {
    static SHARED: OnceLock<(CaptureService, Fixture)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let fixture = start_fixture();
        let service = start_service(CaptureConfig {
            pool_size: 2,
            allow_private_targets: true,
            queue_capacity: 64,
            default_timeout_secs: 20,
            ..Default::default()
        });
        (service, fixture)
    })
}

/// Build options from `key=value` pairs the way a query string would give them.
pub fn opts(pairs: &[(&str, &str)]) -> CaptureOptions {
    let mut map = serde_json::Map::new();
    for (k, v) in pairs {
        map.insert(
            (*k).to_string(),
            serde_json::Value::String((*v).to_string()),
        );
    }
    let raw: RawCaptureOptions = serde_json::from_value(serde_json::Value::Object(map)).unwrap();
    CaptureOptions::parse(raw).unwrap_or_else(|e| panic!("bad test options: {e}"))
}

/// A port on 127.0.0.1 that refuses connections: bound but never listening, so no other
/// process can take it while the returned socket lives (a port freed after binding can be).
pub fn closed_port() -> (u16, tokio::net::TcpSocket) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (s.local_addr().unwrap().port(), s)
}

/// Pid of the chromedriver listening on the port of `webdriver_url` (it leads its group).
pub fn chromedriver_pid(webdriver_url: &str) -> Option<u32> {
    let port = webdriver_url.rsplit(':').next()?.trim_end_matches('/');
    let needle = format!("--port={port}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        (cmd.contains("chromedriver") && cmd.contains(&needle)).then_some(pid)
    })
}

/// Live processes in a process group (chromedriver and the browsers it started).
pub fn group_members(pgid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| {
            e.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut f = rest.split(' ');
            let state = f.next()?;
            let pg: u32 = f.nth(1)?.parse().ok()?;
            (pg == pgid && state != "Z").then_some(())
        })
        .count()
}

/// Captures `path` of the fixture server with the options `rest`.
pub async fn shoot(
    svc: &CaptureService,
    fx: &Fixture,
    path: &str,
    rest: &[(&str, &str)],
) -> Result<Captured, CaptureError> {
    let url = fx.url(path);
    let mut pairs = vec![("url", url.as_str())];
    pairs.extend_from_slice(rest);
    svc.capture(&opts(&pairs)).await
}

/// A configuration of `pool_size` sessions that may capture the local fixture server.
pub fn local_config(pool_size: usize) -> CaptureConfig {
    CaptureConfig {
        pool_size,
        allow_private_targets: true,
        ..Default::default()
    }
}
