//! Shared by the api-server's tests: an in-process app on a fresh database with a pinned
//! clock, an in-process server on a real port and the real binary. Requests, answers and
//! the socket client are test-support's.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::test::{self, TestRequest};
use api_server::{app, AppState, Clock};
use ledger_core::Timestamp;
use serde_json::Value;
use settings::{Settings, Sources};
pub use test_support::{
    exchange, free_port, http, on_both_backends, send_only, wait_healthy, Auth, Req, Resp, TestDb,
    ADMIN,
};
/// A password good enough for signups.
pub const PASSWORD: &str = "correct horse battery";

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
/// environment) with the admin token set, and rate limits on but high enough that only
/// the tests of limits (`ratelimit.rs`, which set them low) meet them.
pub fn settings() -> Settings {
    let mut s = Settings::load(Sources {
        file: None,
        working_folder_defaults: false,
        env: vec![("SHOTLEDGER__ADMIN__TOKEN".into(), ADMIN.into())],
    })
    .expect("the default settings load");
    s.ratelimit.per_key_rps = 10_000;
    s.ratelimit.per_key_burst = 100_000;
    s.ratelimit.per_ip_rps = 10_000;
    s.ratelimit.per_ip_burst = 100_000;
    s.ratelimit.captures_per_account = 1_000;
    s
}

/// The instant every harness starts at.
pub const START: &str = "2026-03-15T12:00:00.000Z";

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

    /// The app with the `payments` facade the server wires in, built from its settings
    /// (changed by `edit`).
    pub async fn with_payments(backend: &str, edit: impl FnOnce(&mut Settings)) -> TestApp {
        TestApp::build_with_state(backend, START, edit, |state| {
            let p = startup::payments(&state.settings, state.store.clone())
                .expect("payments from the test settings");
            state.with_payments(std::sync::Arc::new(p))
        })
        .await
    }

    /// The state changed by `wire` (e.g. a checkout provider) before the app is built.
    pub async fn build_with_state(
        backend: &str,
        start: &str,
        edit: impl FnOnce(&mut Settings),
        wire: impl FnOnce(AppState) -> AppState,
    ) -> TestApp {
        TestApp::from_db(TestDb::of(backend), start, edit, wire).await
    }

    /// [`TestApp::build_with_state`] with the store opened again on the test database
    /// with the app's metrics as its observer (as the server opens it), so the ledger's
    /// operations, group commits and pool waits are counted.
    pub async fn observed(
        backend: &str,
        edit: impl FnOnce(&mut Settings),
        wire: impl FnOnce(AppState) -> AppState,
    ) -> TestApp {
        let db = TestDb::of(backend);
        let metrics = Arc::new(telemetry::Metrics::new());
        let store = ledger_store::Store::open_observed(
            &db.url,
            &ledger_store::PoolOptions::default(),
            Arc::new(startup::StoreMetrics(metrics.clone())),
        )
        .expect("open the test database again");
        TestApp::from_db(db, START, edit, move |mut state| {
            state.store = store;
            wire(state.with_metrics(metrics))
        })
        .await
    }

    /// The app on `db`.
    pub async fn from_db(
        db: TestDb,
        start: &str,
        edit: impl FnOnce(&mut Settings),
        wire: impl FnOnce(AppState) -> AppState,
    ) -> TestApp {
        let mut s = settings();
        edit(&mut s);
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
        let res = self.send(signup_req(email)).await;
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
            .send(new_key_req(&Auth::Cookie(session.into()), name))
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
        let body = self.send(new_account_req()).await.expect(201);
        body["accountId"].as_str().expect("accountId").to_owned()
    }

    /// Grants (or takes) credits through the admin API.
    pub async fn adjust(&self, account: &str, amount: Value) -> Resp {
        self.admin_move(account, "credits", amount, "Test grant")
            .await
    }

    /// Debits credits through the admin API.
    pub async fn debit(&self, account: &str, amount: Value) -> Resp {
        self.admin_move(account, "debits", amount, "Test debit")
            .await
    }

    /// `POST /admin/v1/accounts/{account}/{what}` with an amount and a description.
    async fn admin_move(
        &self,
        account: &str,
        what: &str,
        amount: Value,
        description: &str,
    ) -> Resp {
        self.send(
            Req::post(format!("/admin/v1/accounts/{account}/{what}"))
                .auth(&Auth::Admin)
                .json(serde_json::json!({"amount": amount, "description": description})),
        )
        .await
    }

    /// `GET path` as `auth`, answered `200` with a JSON list: its items.
    pub async fn list(&self, path: &str, auth: &Auth) -> Vec<Value> {
        self.send(Req::get(path).auth(auth))
            .await
            .expect(200)
            .as_array()
            .unwrap()
            .clone()
    }

    /// `GET /api/v1/credits/transactions` as `auth`, answered 200: the history.
    pub async fn transactions(&self, auth: &Auth) -> Value {
        self.send(Req::get("/api/v1/credits/transactions").auth(auth))
            .await
            .expect(200)
    }

    /// `GET /api/v1/credits` as `auth`: the balance.
    pub async fn balance(&self, auth: &Auth) -> Value {
        self.send(Req::get("/api/v1/credits").auth(auth))
            .await
            .expect(200)["balance"]
            .clone()
    }

    /// `auth` no longer works: reading the balance with it is a 401.
    pub async fn assert_refused(&self, auth: &Auth) {
        self.send(Req::get("/api/v1/credits").auth(auth))
            .await
            .expect(401);
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

/// The app served on 127.0.0.1 (a free port) by a real actix server on a thread of its
/// own; stopped (gracefully) when dropped.
pub struct LiveServer {
    pub addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl LiveServer {
    pub fn start(state: AppState, workers: usize) -> LiveServer {
        LiveServer::start_on(state, workers, 0)
    }

    /// On `port` of 127.0.0.1 (0: any free port), for a test that must name the address
    /// before the server starts (a success URL the payment pages send the browser back to).
    pub fn start_on(state: AppState, workers: usize, port: u16) -> LiveServer {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = actix_web::HttpServer::new(move || app(state.clone()))
                    .workers(workers)
                    .bind(("127.0.0.1", port))?;
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
        // Stop from a runtime of our own, on a thread of its own (the server's System runs
        // on its own thread, and an async test may drop this inside its runtime).
        let _ =
            std::thread::spawn(move || actix_web::rt::System::new().block_on(handle.stop(true)))
                .join();
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

/// Writes `server.toml` in `dir` for the binary on a free port over the SQLite file
/// `ledger.db` in `dir`, with the admin token set, `server` added to its `[server]`
/// settings and no browser (these tests are about HTTP and the database, and start in a
/// second instead of waiting for a browser pool on a busy machine): the file and the
/// address the binary will listen on.
pub fn config_in(dir: &std::path::Path, server: &str) -> (std::path::PathBuf, SocketAddr) {
    let port = free_port();
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\n{server}\n\n\
             [database]\nurl = \"sqlite://{}\"\n\n[admin]\ntoken = \"{ADMIN}\"\n\n\
             [capture]\nchromedriver_path = \"/nonexistent/chromedriver\"\n",
            dir.join("ledger.db").display()
        ),
    )
    .expect("write the test configuration");
    (config, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The binary as [`config_in`] configures it; returns once it is healthy.
pub fn start_binary(dir: &std::path::Path, server: &str) -> (Running, SocketAddr) {
    let (config, addr) = config_in(dir, server);
    let child = binary_command(dir)
        .stderr(std::process::Stdio::null())
        .arg("--config")
        .arg(&config)
        .spawn()
        .expect("start the api-server");
    let running = Running(Some(child));
    wait_healthy(addr, Duration::from_secs(30)).expect("the server starts");
    (running, addr)
}

/// The fields of a transaction, sorted.
pub const ENTRY_FIELDS: [&str; 6] = [
    "amount",
    "createdAt",
    "description",
    "id",
    "referenceId",
    "type",
];

/// `POST /api/v1/auth/signup` of `email` with [`PASSWORD`].
pub fn signup_req(email: &str) -> Req {
    credentials_req("signup", email)
}

/// `POST /api/v1/auth/login` of `email` with [`PASSWORD`].
pub fn login_req(email: &str) -> Req {
    credentials_req("login", email)
}

fn credentials_req(action: &str, email: &str) -> Req {
    Req::post(format!("/api/v1/auth/{action}"))
        .json(serde_json::json!({"email": email, "password": PASSWORD}))
}

/// `POST /api/v1/credits/purchase` of `pack`, as `auth`.
pub fn purchase_req(auth: &Auth, pack: &str) -> Req {
    Req::post("/api/v1/credits/purchase")
        .auth(auth)
        .json(serde_json::json!({ "packId": pack }))
}

/// The operator's `POST /admin/v1/accounts/{account}/debits` of `body`.
pub fn debit_req(account: &str, body: Value) -> Req {
    Req::post(format!("/admin/v1/accounts/{account}/debits"))
        .auth(&Auth::Admin)
        .json(body)
}

/// `DELETE /api/v1/api-keys/{key_id}` as `auth`, with the session's `csrf` token.
pub fn delete_key_req(auth: &Auth, key_id: &str, csrf: impl Into<String>) -> Req {
    Req::delete(format!("/api/v1/api-keys/{key_id}"))
        .auth(auth)
        .header("x-csrf-token", csrf)
}

/// The operator subscribes `account` to `plan`.
pub fn subscribe_req(account: &str, plan: &str) -> Req {
    Req::put(format!("/admin/v1/accounts/{account}/subscription"))
        .auth(&Auth::Admin)
        .json(serde_json::json!({ "planId": plan }))
}

/// `POST /api/v1/api-keys` of a key named `name`, as `auth`.
pub fn new_key_req(auth: &Auth, name: &str) -> Req {
    Req::post("/api/v1/api-keys")
        .auth(auth)
        .json(serde_json::json!({ "name": name }))
}

/// `POST /admin/v1/accounts` as the admin: a new account.
pub fn new_account_req() -> Req {
    Req::post("/admin/v1/accounts")
        .auth(&Auth::Admin)
        .json(serde_json::json!({}))
}

/// A new account in `store` with a signup bonus of `bonus` credits and an API key; its id
/// and the key.
pub fn account_with_key(
    store: &ledger_store::Store,
    bonus: i64,
    now: Timestamp,
) -> (ledger_core::AccountId, String) {
    let (account, _) = store
        .ledger()
        .create_account(
            ledger_store::NewAccount {
                signup_bonus: ledger_core::Credits::whole(bonus),
                ..ledger_store::NewAccount::default()
            },
            now,
        )
        .unwrap();
    let (key, prefix) = api_server::auth::new_api_key().unwrap();
    store
        .access()
        .create_api_key(
            &account.id,
            &ledger_store::NewApiKey {
                name: "t",
                prefix: &prefix,
                key_hash: &api_server::auth::sha256_hex(&key),
                signing_secret: None,
            },
            now,
        )
        .unwrap();
    (account.id, key)
}

/// Asserts `res`, the answer to `req` sent with `auth`, is a 401.
pub fn assert_401(res: &Resp, req: &Req, auth: &Auth) {
    assert_eq!(
        res.status,
        401,
        "{} {} with {auth:?}: {}",
        req.method,
        req.path,
        res.text()
    );
}

/// The text field `field` of each item of a JSON list, in order.
pub fn texts_of<'a>(list: &'a Value, field: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|t| t[field].as_str().unwrap())
        .collect()
}

/// The `type` of each transaction of a list (`GET /api/v1/credits/transactions`), in order.
pub fn types_of(txns: &Value) -> Vec<&str> {
    texts_of(txns, "type")
}

/// The transactions of a list whose `type` is `kind`, in order.
pub fn of_type<'a>(txns: &'a Value, kind: &str) -> Vec<&'a Value> {
    txns.as_array()
        .unwrap()
        .iter()
        .filter(|t| t["type"] == kind)
        .collect()
}
