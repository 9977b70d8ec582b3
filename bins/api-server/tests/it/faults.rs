//! Faults below the application: a database that cannot be written, a PostgreSQL that is
//! slow to open connections or goes away. Each test makes its own fault (an immutable
//! SQLite file, a trigger that refuses writes, a TCP proxy it controls) and never touches
//! the machine's PostgreSQL server itself.

use crate::common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_server::AppState;
use common::*;
use ledger_store::{PoolOptions, Store};
use serde_json::json;
use test_support::{drop_postgres_schema, postgres_schema};

// ---- an SQLite file root cannot write ----

/// Marks a file immutable (`chattr +i`) until dropped. Tests run as root, for whom file
/// modes do not stop writes; the immutable attribute does (opening for writing fails with
/// EPERM, and SQLite falls back to a read-only connection, as it does for a file whose
/// permissions forbid writing).
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Immutable {
        let out = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .expect("run chattr (e2fsprogs)");
        assert!(
            out.status.success(),
            "chattr +i {} failed, so this test cannot make the file unwritable here: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Immutable(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// A migrated SQLite file in a temporary folder, no connection left open.
///
/// The store that migrates it keeps no idle minimum: with one, the pool opens a spare on
/// its own thread, and a spare still being opened when the store is dropped closes later,
/// on that thread, while the test's next store has the file open. SQLite then keeps the
/// closing connection's read-write descriptor for reuse by the next connection to the
/// same file, which can write through it however the file's attributes change: the cause
/// of this module's flaky `a_connection_that_cannot_write_is_never_kept_in_the_pool`.
fn sqlite_file() -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let url = format!("sqlite://{}", path.display());
    let options = PoolOptions {
        min_connections: 0,
        ..PoolOptions::default()
    };
    drop(Store::open(&url, &options).expect("a writable file opens"));
    (dir, path, url)
}

fn write_something(store: &Store) -> Result<(), ledger_store::StoreError> {
    store
        .ledger()
        .create_account(
            ledger_store::NewAccount {
                email: None,
                password_hash: None,
                signup_bonus: ledger_core::Credits::from_millis(1000),
            },
            ledger_core::Timestamp::from_millis(1_700_000_000_000),
        )
        .map(|_| ())
}

#[test]
fn an_sqlite_file_that_cannot_be_written_is_refused_at_open_naming_the_file() {
    let (_dir, path, url) = sqlite_file();
    let guard = Immutable::set(&path);
    let err = match Store::open(&url, &PoolOptions::default()) {
        Ok(store) => panic!(
            "an unwritable database was opened; a write then fails with: {:?}",
            write_something(&store).err()
        ),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&path.display().to_string()),
        "names the file: {err}"
    );
    assert!(err.contains("readonly"), "says why: {err}");
    // Fixed: it opens, and writes work.
    drop(guard);
    let store = Store::open(&url, &PoolOptions::default()).expect("opens once writable");
    write_something(&store).expect("and writes");
}

#[test]
fn a_connection_that_cannot_write_is_never_kept_in_the_pool() {
    let (_dir, path, url) = sqlite_file();
    // No idle minimum: the pool opens a connection only when a caller needs one (with a
    // minimum it would replace a checked-out idle connection at once, in the background).
    let store = Store::open(
        &url,
        &PoolOptions {
            max_connections: 3,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(1),
            ..PoolOptions::default()
        },
    )
    .unwrap();
    write_something(&store).expect("a write while writable");
    // Hold every connection the pool has opened (one, or two when it opened a spare), so
    // the next one is opened while the file is unwritable (SQLite then opens it read-only,
    // silently). A connection opened before keeps writing through the WAL file, which is
    // not immutable: that is why none may be left idle.
    let mut held = vec![store.hold_connection_for_test().unwrap()];
    while store.idle_connections_for_test() > 0 {
        held.push(store.hold_connection_for_test().unwrap());
    }
    assert!(held.len() < 3, "a slot is left for the new connection");
    let guard = Immutable::set(&path);
    let during = write_something(&store);
    let refused = during.expect_err("a write cannot succeed on an immutable file");
    assert!(
        refused.to_string().contains("readonly"),
        "refused because the new connection cannot write, not for want of a slot: {refused}"
    );
    drop(guard);
    write_something(&store).expect("once the file is writable again, writes work");
    drop(held);
    write_something(&store).expect("on every pooled connection");
}

#[test]
fn a_postgresql_session_that_cannot_write_is_refused_at_open() {
    let schema = Schema::new();
    let url = format!("{}%20-cdefault_transaction_read_only%3Don", schema.url);
    let err = match Store::open(&url, &PoolOptions::default()) {
        Ok(_) => panic!("a read-only PostgreSQL session was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("accepts no writes"), "{err}");
    assert!(err.contains("transaction_read_only"), "says why: {err}");
}

// ---- bookkeeping never fails a read ----

/// Makes every update of `api_keys` fail, as a database that cannot be written would.
fn refuse_key_updates(app: &TestApp) {
    let sql = match app.db.store.backend() {
        ledger_store::Backend::Sqlite => {
            "CREATE TRIGGER refuse_key_updates BEFORE UPDATE ON api_keys \
             BEGIN SELECT RAISE(ABORT, 'attempt to write a readonly database'); END;"
        }
        ledger_store::Backend::Postgres => {
            "CREATE FUNCTION refuse_writes() RETURNS trigger AS $$ \
             BEGIN RAISE EXCEPTION 'cannot execute UPDATE in a read-only transaction'; END $$ \
             LANGUAGE plpgsql; \
             CREATE TRIGGER refuse_key_updates BEFORE UPDATE ON api_keys \
             FOR EACH ROW EXECUTE FUNCTION refuse_writes();"
        }
    };
    app.db.store.execute_batch(sql).unwrap();
}

async fn a_read_with_a_key_answers_while_its_last_use_cannot_be_written(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (key, _) = app.user("reader@example.com").await;
    assert_eq!(app.balance(&key).await, json!(5));
    refuse_key_updates(&app);
    // Past the resolution of `last_used_at`, so this read wants to note its use.
    app.clock.advance_secs(3600);
    let res = app.send(Req::get("/api/v1/credits").auth(&key)).await;
    assert_eq!(res.expect(200), json!({"balance": 5}));
    // A wrong key is still refused.
    app.assert_refused(&Auth::Key("sk_wrong".into())).await;
}

on_both_backends!(a_read_with_a_key_answers_while_its_last_use_cannot_be_written);

// ---- PostgreSQL through a proxy the test controls ----

/// A TCP proxy to PostgreSQL. It can open each upstream connection late (a slow server),
/// and it can fail: cut every open connection and then accept new ones without ever
/// answering (a server that is down behind a load balancer).
struct Proxy {
    addr: SocketAddr,
    failing: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: SocketAddr, delay: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let failing = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (f, o, s) = (failing.clone(), open.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                o.lock().unwrap().push(client.try_clone().unwrap());
                if f.load(Ordering::SeqCst) {
                    continue; // kept open, never answered
                }
                let (f, o) = (f.clone(), o.clone());
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    if f.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(upstream) else {
                        return;
                    };
                    o.lock().unwrap().push(server.try_clone().unwrap());
                    pipe(client, server);
                });
            }
        });
        Proxy {
            addr,
            failing,
            open,
            stop,
        }
    }

    /// `url` with its host and port replaced by the proxy's.
    fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let at = rest.find('@').map_or(0, |i| i + 1);
        let end = rest[at..].find(['/', '?']).map_or(rest.len(), |i| at + i);
        format!("{scheme}://{}{}{}", &rest[..at], self.addr, &rest[end..])
    }

    /// The outage: open connections are cut, new ones hang.
    fn fail(&self) {
        self.failing.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn recover(&self) {
        self.failing.store(false, Ordering::SeqCst);
        // Connections accepted during the outage were never answered: cut them.
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        self.fail();
    }
}

fn pipe(a: TcpStream, b: TcpStream) {
    fn copy(mut from: TcpStream, mut to: TcpStream) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    }
    let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    std::thread::spawn(move || copy(a2, b2));
    copy(b, a);
}

/// The host and port a `postgres://` URL names.
fn upstream_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").unwrap().1;
    let at = rest.find('@').map_or(0, |i| i + 1);
    let end = rest[at..].find(['/', '?']).map_or(rest.len(), |i| at + i);
    use std::net::ToSocketAddrs;
    rest[at..end]
        .to_socket_addrs()
        .unwrap()
        .next()
        .expect("the test PostgreSQL's address")
}

/// A fresh PostgreSQL schema, dropped at the end.
struct Schema {
    url: String,
    admin_url: String,
    schema: String,
}

impl Schema {
    fn new() -> Schema {
        let (url, admin_url, schema) = postgres_schema();
        Schema {
            url,
            admin_url,
            schema,
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        drop_postgres_schema(&self.admin_url, &self.schema);
    }
}

#[test]
fn the_server_starts_when_postgresql_is_slow_to_open_connections() {
    let schema = Schema::new();
    // Every new connection takes 2 s to open: 16 of them (the pool's maximum) do not fit
    // in the 10 s connect timeout on r2d2's three opening threads; the one needed does.
    let proxy = Proxy::start(upstream_of(&schema.url), Duration::from_secs(2));
    let mut s = settings();
    s.database.url = proxy.url(&schema.url);
    s.database.max_connections = 16;
    let store = api_server::open_store(&s).expect("starts with a slow server");
    store.ping().expect("and answers");
}

#[test]
fn a_database_that_never_answers_fails_the_start_naming_it_and_why() {
    let schema = Schema::new();
    let proxy = Proxy::start(upstream_of(&schema.url), Duration::ZERO);
    proxy.fail();
    let mut s = settings();
    s.database.url = proxy.url(&schema.url);
    s.database.connect_timeout_secs = 2;
    s.database.acquire_timeout_secs = 2;
    let started = Instant::now();
    let err = match api_server::open_store(&s) {
        Ok(_) => panic!("opened a database that never answered"),
        Err(e) => e.to_string(),
    };
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "bounded by connect_timeout_secs: {:?}",
        started.elapsed()
    );
    assert!(
        err.contains(&proxy.addr.to_string()),
        "names the server: {err}"
    );
    assert!(err.to_lowercase().contains("timeout"), "says why: {err}");
}

#[test]
fn a_database_outage_answers_503_with_retry_after_and_healthz_says_so() {
    let schema = Schema::new();
    let proxy = Proxy::start(upstream_of(&schema.url), Duration::ZERO);
    let mut s = settings();
    s.database.url = proxy.url(&schema.url);
    s.database.acquire_timeout_secs = 1;
    s.database.connect_timeout_secs = 2;
    let store = api_server::open_store(&s).expect("open through the proxy");
    let clock = PinnedClock::at(START);
    let state = AppState::new(store, s, clock.clock()).unwrap();
    let server = LiveServer::start(state, 2);
    let res = server.send(&signup_req("outage@example.com"));
    res.expect(201);
    let (session, _) = res.session_cookie().unwrap();
    let read = Req::get("/api/v1/credits").auth(&Auth::Cookie(session));
    assert_eq!(server.send(&read).expect(200), json!({"balance": 5}));

    proxy.fail();
    for req in [
        read.clone(),
        Req::post("/admin/v1/accounts")
            .auth(&Auth::Admin)
            .json(json!({})),
    ] {
        let started = Instant::now();
        let res = server.send(&req);
        let took = started.elapsed();
        let body = res.expect(503);
        assert_eq!(body["code"], "DATABASE_UNAVAILABLE", "{body}");
        let retry: u64 = res
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!(retry >= 1);
        assert!(
            took < Duration::from_secs(8),
            "answered within the acquire timeout (1 s), not after {took:?}"
        );
        assert!(
            !body.to_string().contains(&proxy.addr.port().to_string()),
            "no internals: {body}"
        );
    }
    let health = server.send(&Req::get("/healthz"));
    let body = health.expect(503);
    assert_eq!(body["code"], "DATABASE_UNAVAILABLE", "{body}");
    assert_eq!(body["checks"]["database"]["ok"], false, "{body}");
    assert!(health.header("retry-after").is_some());

    // Back: the pool replaces its dead connections and the service answers again.
    proxy.recover();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = server.send(&Req::get("/healthz"));
        if res.status == 200 {
            assert_eq!(res.json()["checks"]["database"]["ok"], true);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not healthy again: {}",
            res.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(server.send(&read).expect(200), json!({"balance": 5}));
}
