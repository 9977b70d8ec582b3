//! Shared by the api-server's tests: an in-process app on a fresh database with a pinned
//! clock, a tiny blocking HTTP/1.1 client, and an in-process server on a real port.
#![allow(dead_code)]

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::Method;
use actix_web::test::{self, TestRequest};
use api_server::{app, AppState, Clock};
use ledger_core::Timestamp;
use ledger_store::testing::TestDb;
use serde_json::Value;
use settings::{Settings, Sources};

/// The admin token every test harness configures.
pub const ADMIN: &str = "test-admin-token-0123456789";
/// A password good enough for signups.
pub const PASSWORD: &str = "correct horse battery";

/// Declares each listed `async fn name(backend: &'static str)` as a test on SQLite and on
/// PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[actix_rt::test] async fn $name() { super::$name("sqlite").await } )*
        }
        mod postgres {
            $( #[actix_rt::test] async fn $name() { super::$name("postgres").await } )*
        }
    };
}

/// A clock the test moves by hand.
#[derive(Clone)]
pub struct PinnedClock(Arc<AtomicI64>);

impl PinnedClock {
    pub fn at(rfc3339: &str) -> PinnedClock {
        let t = Timestamp::parse_rfc3339(rfc3339).expect("a valid RFC 3339 instant");
        PinnedClock(Arc::new(AtomicI64::new(t.millis())))
    }

    pub fn clock(&self) -> Clock {
        let inner = self.0.clone();
        Arc::new(move || Timestamp::from_millis(inner.load(Ordering::SeqCst)))
    }

    pub fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst))
    }

    pub fn advance_secs(&self, secs: i64) {
        self.0.fetch_add(secs * 1000, Ordering::SeqCst);
    }

    pub fn set(&self, rfc3339: &str) {
        let t = Timestamp::parse_rfc3339(rfc3339).expect("a valid RFC 3339 instant");
        assert!(t >= self.now(), "tests only move the clock forward");
        self.0.store(t.millis(), Ordering::SeqCst);
    }
}

/// The default settings (built-in defaults only, no working-folder file, no process
/// environment) with the admin token set.
pub fn settings() -> Settings {
    Settings::load(Sources {
        file: None,
        working_folder_defaults: false,
        env: vec![("SHOTLEDGER__ADMIN__TOKEN".into(), ADMIN.into())],
    })
    .expect("the default settings load")
}

/// The instant every harness starts at.
pub const START: &str = "2026-03-15T12:00:00.000Z";

/// An answer, from the in-process app or from a real socket.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// Names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all_headers(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// Asserts the status, showing the body when it differs; returns the JSON body (or
    /// `Null` for an empty one).
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            self.text()
        );
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// The value of the `session` cookie this answer sets, with the cookie's attributes.
    pub fn session_cookie(&self) -> Option<(String, String)> {
        self.all_headers("set-cookie").into_iter().find_map(|c| {
            let rest = c.strip_prefix("session=")?;
            let value = rest.split(';').next().unwrap_or("").to_owned();
            Some((value, c.to_owned()))
        })
    }
}

/// How a request proves who it is.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Cookie(String),
    Key(String),
    Bearer(String),
    RawAuthorization(String),
    Admin,
    Header(&'static str, String),
}

impl Auth {
    pub fn headers(&self) -> Vec<(String, String)> {
        match self {
            Auth::None => vec![],
            Auth::Cookie(s) => vec![("cookie".into(), format!("session={s}"))],
            Auth::Key(k) => vec![("x-api-key".into(), k.clone())],
            Auth::Bearer(k) => vec![("authorization".into(), format!("Bearer {k}"))],
            Auth::RawAuthorization(k) => vec![("authorization".into(), k.clone())],
            Auth::Admin => vec![("authorization".into(), format!("Bearer {ADMIN}"))],
            Auth::Header(n, v) => vec![((*n).into(), v.clone())],
        }
    }
}

/// One request.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Req {
    pub fn new(method: Method, path: impl Into<String>) -> Req {
        Req {
            method,
            path: path.into(),
            headers: vec![],
            body: None,
        }
    }
    pub fn get(path: impl Into<String>) -> Req {
        Req::new(Method::GET, path)
    }
    pub fn post(path: impl Into<String>) -> Req {
        Req::new(Method::POST, path)
    }
    pub fn put(path: impl Into<String>) -> Req {
        Req::new(Method::PUT, path)
    }
    pub fn delete(path: impl Into<String>) -> Req {
        Req::new(Method::DELETE, path)
    }
    pub fn auth(mut self, auth: &Auth) -> Req {
        self.headers.extend(auth.headers());
        self
    }
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Req {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
    pub fn idem(self, key: &str) -> Req {
        self.header("idempotency-key", key)
    }
    pub fn json(mut self, body: Value) -> Req {
        self.body = Some(body.to_string().into_bytes());
        self.header("content-type", "application/json")
    }
    /// A body sent as is, with the given content type.
    pub fn raw(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Req {
        self.body = Some(body.into());
        self.header("content-type", content_type)
    }
}

type Call = Rc<dyn Fn(Req) -> Pin<Box<dyn Future<Output = Resp>>>>;

/// The app in-process on a fresh database, with a pinned clock.
pub struct TestApp {
    call: Call,
    pub db: Rc<TestDb>,
    pub clock: PinnedClock,
    pub state: AppState,
}

impl TestApp {
    /// The default settings (admin token on), the clock at [`START`].
    pub async fn new(backend: &str) -> TestApp {
        TestApp::with(backend, |_| {}).await
    }

    /// Settings changed by `edit` first.
    pub async fn with(backend: &str, edit: impl FnOnce(&mut Settings)) -> TestApp {
        TestApp::build(backend, START, edit).await
    }

    /// The default settings, the clock at `start`.
    pub async fn with_clock_at(backend: &str, start: &str) -> TestApp {
        TestApp::build(backend, start, |_| {}).await
    }

    pub async fn build(backend: &str, start: &str, edit: impl FnOnce(&mut Settings)) -> TestApp {
        TestApp::build_with_state(backend, start, edit, |s| s).await
    }

    /// The state changed by `wire` (e.g. a checkout provider) before the app is built.
    pub async fn build_with_state(
        backend: &str,
        start: &str,
        edit: impl FnOnce(&mut Settings),
        wire: impl FnOnce(AppState) -> AppState,
    ) -> TestApp {
        let mut s = settings();
        edit(&mut s);
        let db = TestDb::of(backend);
        let clock = PinnedClock::at(start);
        let state = wire(
            AppState::new(db.store.clone(), s, clock.clock()).expect("the test settings are valid"),
        );
        let svc = Rc::new(test::init_service(app(state.clone())).await);
        let call: Call = Rc::new(move |req: Req| {
            let svc = svc.clone();
            Box::pin(async move {
                let mut t = TestRequest::default()
                    .method(req.method)
                    .uri(&req.path)
                    .peer_addr("127.0.0.1:40000".parse().expect("address"));
                for (n, v) in &req.headers {
                    t = t.insert_header((n.as_str(), v.as_str()));
                }
                if let Some(b) = req.body {
                    t = t.set_payload(b);
                }
                let res = test::call_service(&*svc, t.to_request()).await;
                let status = res.status().as_u16();
                let headers = res
                    .headers()
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_ascii_lowercase(),
                            v.to_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect();
                let body = test::read_body(res).await.to_vec();
                Resp {
                    status,
                    headers,
                    body,
                }
            })
        });
        TestApp {
            call,
            db: Rc::new(db),
            clock,
            state,
        }
    }

    pub async fn send(&self, req: Req) -> Resp {
        (self.call)(req).await
    }

    /// Signs up `email` and returns the session cookie's value and the account id.
    pub async fn signup(&self, email: &str) -> (String, String) {
        let res = self
            .send(
                Req::post("/api/v1/auth/signup")
                    .json(serde_json::json!({"email": email, "password": PASSWORD})),
            )
            .await;
        let body = res.expect(201);
        let (cookie, _) = res
            .session_cookie()
            .expect("signup sets the session cookie");
        (
            cookie,
            body["accountId"].as_str().expect("accountId").to_owned(),
        )
    }

    /// Creates an API key with the session and returns the key.
    pub async fn new_key(&self, session: &str, name: &str) -> (String, String) {
        let body = self
            .send(
                Req::post("/api/v1/api-keys")
                    .auth(&Auth::Cookie(session.into()))
                    .json(serde_json::json!({ "name": name })),
            )
            .await
            .expect(201);
        (
            body["key"].as_str().expect("key").to_owned(),
            body["id"].as_str().expect("id").to_owned(),
        )
    }

    /// A signed-up user with a key: (key, account id).
    pub async fn user(&self, email: &str) -> (Auth, String) {
        let (session, id) = self.signup(email).await;
        let (key, _) = self.new_key(&session, "default").await;
        (Auth::Key(key), id)
    }

    /// An account made through the admin API (no password, no argon2): its id.
    pub async fn admin_account(&self) -> String {
        let body = self
            .send(
                Req::post("/admin/v1/accounts")
                    .auth(&Auth::Admin)
                    .json(serde_json::json!({})),
            )
            .await
            .expect(201);
        body["accountId"].as_str().expect("accountId").to_owned()
    }

    /// Grants (or takes) credits through the admin API.
    pub async fn adjust(&self, account: &str, amount: Value) -> Resp {
        self.send(
            Req::post(format!("/admin/v1/accounts/{account}/credits"))
                .auth(&Auth::Admin)
                .json(serde_json::json!({"amount": amount, "description": "Test grant"})),
        )
        .await
    }

    pub async fn debit(&self, account: &str, amount: Value) -> Resp {
        self.send(
            Req::post(format!("/admin/v1/accounts/{account}/debits"))
                .auth(&Auth::Admin)
                .json(serde_json::json!({"amount": amount, "description": "Test debit"})),
        )
        .await
    }

    /// `GET /api/v1/credits` as `auth`: the balance.
    pub async fn balance(&self, auth: &Auth) -> Value {
        self.send(Req::get("/api/v1/credits").auth(auth))
            .await
            .expect(200)["balance"]
            .clone()
    }

    /// The admin view of the whole ledger is clean.
    pub async fn assert_verified(&self) {
        let v = self
            .send(Req::get("/admin/v1/verify").auth(&Auth::Admin))
            .await
            .expect(200);
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["violations"], serde_json::json!([]), "{v}");
    }
}

// ---- over a real socket ----

/// Sends `req` whole on a new connection (`Connection: close`) and returns the connection,
/// to read the answer from later.
pub fn send_only(addr: SocketAddr, req: &Req) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let body = req.body.clone().unwrap_or_default();
    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        req.method,
        req.path,
        body.len()
    );
    for (n, v) in &req.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    stream.flush()?;
    Ok(stream)
}

/// One request over a new connection (`Connection: close`), read to the end.
pub fn http(addr: SocketAddr, req: &Req) -> std::io::Result<Resp> {
    let mut stream = send_only(addr, req)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn bad(why: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.into())
}

fn parse_response(raw: &[u8]) -> std::io::Result<Resp> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else if let Some((_, len)) = headers.iter().find(|(n, _)| n == "content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        rest.get(..len)
            .ok_or_else(|| bad("body shorter than content-length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("bad chunk"))?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| bad("bad chunk"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("bad chunk size"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or_else(|| bad("short chunk"))?);
        data = data.get(size + 2..).ok_or_else(|| bad("short chunk"))?;
    }
}

/// Polls `GET /healthz` until it answers 200.
pub fn wait_healthy(addr: SocketAddr, within: Duration) -> Result<(), String> {
    let deadline = std::time::Instant::now() + within;
    let mut last = String::from("never tried");
    while std::time::Instant::now() < deadline {
        match http(addr, &Req::get("/healthz")) {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) => last = format!("status {}", r.status),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("not healthy within {within:?}: {last}"))
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The app served on 127.0.0.1 (a free port) by a real actix server on a thread of its
/// own; stopped (gracefully) when dropped.
pub struct LiveServer {
    pub addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl LiveServer {
    pub fn start(state: AppState, workers: usize) -> LiveServer {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = actix_web::HttpServer::new(move || app(state.clone()))
                    .workers(workers)
                    .bind(("127.0.0.1", 0))?;
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle()))
                    .expect("the test waits for the address");
                server.await
            })
        });
        let (addr, handle) = rx.recv().expect("the server starts");
        LiveServer {
            addr,
            handle,
            thread: Some(thread),
        }
    }

    pub fn send(&self, req: &Req) -> Resp {
        http(self.addr, req).unwrap_or_else(|e| panic!("{} {}: {e}", req.method, req.path))
    }
}

impl Drop for LiveServer {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        // Stop from a runtime of our own: the server's System runs on its own thread.
        actix_web::rt::System::new().block_on(handle.stop(true));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The real `api-server` binary, working in `dir`, with a clean environment for the
/// configuration layers (no `DATABASE_URL`, no `SHOTLEDGER__*`); stderr is piped.
pub fn binary_command(dir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_api-server"));
    cmd.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("SHOTLEDGER__") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A child process killed when this is dropped, however the test ends.
pub struct Running(pub Option<std::process::Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The binary on a fresh SQLite file in `dir`, without a browser (these tests are about
/// HTTP and the database), the admin token set and `server` added to its `[server]`
/// settings; returns once it is healthy.
pub fn start_binary(dir: &std::path::Path, server: &str) -> (Running, SocketAddr) {
    let port = free_port();
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\n{server}\n\n\
             [database]\nurl = \"sqlite://{}\"\n\n[admin]\ntoken = \"{ADMIN}\"\n\n\
             [capture]\nchromedriver_path = \"/nonexistent/chromedriver\"\n",
            dir.join("server.db").display()
        ),
    )
    .unwrap();
    let child = binary_command(dir)
        .stderr(std::process::Stdio::null())
        .arg("--config")
        .arg(&config)
        .spawn()
        .expect("start the api-server");
    let running = Running(Some(child));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_healthy(addr, Duration::from_secs(30)).expect("the server starts");
    (running, addr)
}
