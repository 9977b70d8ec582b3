//! Rate limits (ADR 15): per credential, per client address (unauthenticated requests and
//! refused credentials), captures at once per account; per process, and shared through a
//! real Redis (127.0.0.1:6379) between two real api-server binaries; Redis down fails open.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_server::ratelimit::Limits;
use api_server::service::screenshot::{CaptureFuture, Capturer};
use capture::{CaptureError, CaptureOptions, Captured};
use ledger_core::AccountId;
use serde_json::json;
use settings::Settings;

use crate::common::*;

on_both_backends!(
    a_burst_then_429_with_retry_after_and_headers,
    the_headers_ride_on_every_authenticated_answer,
    unauthenticated_calls_are_limited_per_address,
    refused_keys_are_counted_per_address,
    captures_at_once_are_limited_per_account,
);

/// A Redis key prefix no other test (or run) uses.
fn unique_prefix(test: &str) -> String {
    format!("shotledger:test:{test}:{}:", ledger_store::new_id(""))
}

/// `[ratelimit]` with every limit off but the ones a test sets.
fn limits_off(s: &mut Settings) {
    s.ratelimit.per_key_rps = 0;
    s.ratelimit.per_ip_rps = 0;
    s.ratelimit.captures_per_account = 0;
}

fn meter(res: &Resp) -> (u64, u64, u64) {
    let n = |name: &str| {
        res.header(name)
            .unwrap_or_else(|| panic!("{name} missing ({}): {}", res.status, res.text()))
            .parse::<u64>()
            .unwrap()
    };
    (
        n("x-ratelimit-limit"),
        n("x-ratelimit-remaining"),
        n("x-ratelimit-reset"),
    )
}

fn assert_limited(res: &Resp, code: &str) {
    let body = res.expect(429);
    assert_eq!(body["code"], code, "{body}");
    assert!(body["error"].as_str().unwrap().len() > 20, "{body}");
    let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
}

async fn a_burst_then_429_with_retry_after_and_headers(backend: &'static str) {
    let app = TestApp::with(backend, |s| {
        limits_off(s);
        s.ratelimit.per_key_rps = 1;
        s.ratelimit.per_key_burst = 3;
    })
    .await;
    let (_, key) = account_with_key(&app.db.store, 5, app.clock.now());
    let (_, other) = account_with_key(&app.db.store, 5, app.clock.now());
    let read = |key: &str| Req::get("/api/v1/credits").auth(&Auth::Key(key.to_owned()));
    let started = Instant::now();
    for left in [2, 1, 0] {
        let res = app.send(read(&key)).await;
        res.expect(200);
        let (limit, remaining, reset) = meter(&res);
        assert_eq!((limit, remaining), (3, left));
        assert!((1..=3).contains(&reset), "reset {reset}");
    }
    let res = app.send(read(&key)).await;
    if started.elapsed() < Duration::from_millis(900) {
        assert_limited(&res, "RATE_LIMITED");
        assert_eq!(meter(&res).1, 0);
        assert!(res.json()["error"].as_str().unwrap().contains("API key"));
        assert!(res.header("x-request-id").is_some());
    }
    // Per key: another key is not affected.
    assert_eq!(meter(&app.send(read(&other)).await).1, 2);
    // One token a second comes back.
    std::thread::sleep(Duration::from_millis(1100));
    let res = app.send(read(&key)).await;
    res.expect(200);
    assert_eq!(meter(&res).1, 0);
}

async fn the_headers_ride_on_every_authenticated_answer(backend: &'static str) {
    let app = TestApp::with(backend, |s| {
        s.ratelimit.per_key_rps = 1;
        s.ratelimit.per_key_burst = 500;
    })
    .await;
    let (auth, account) = app.user("headers@example.com").await;
    // A 200, a 4xx of the handler, a quote: each counted against the key, each with the
    // key's meter (the counting itself is checked above).
    for (req, status) in [
        (Req::get("/api/v1/credits"), 200),
        (Req::get("/api/v1/credits/transactions?limit=0"), 400),
        (
            Req::get("/api/v1/screenshot/quote?url=https://example.com/"),
            200,
        ),
    ] {
        let res = app.send(req.auth(&auth)).await;
        assert_eq!(res.status, status, "{}", res.text());
        let (limit, remaining, reset) = meter(&res);
        assert_eq!(limit, 500);
        assert!(remaining < 500 && reset >= 1, "{remaining} {reset}");
    }
    // The operator (who meters for other services) is not limited: no headers.
    let res = app
        .send(debit_req(
            &account,
            json!({"amount": 1, "description": "x"}),
        ))
        .await;
    res.expect(201);
    assert_eq!(
        res.header("x-ratelimit-limit"),
        None,
        "the operator is not limited"
    );
    // Unauthenticated answers carry the address's meter; /healthz none.
    let res = app.send(Req::get("/api/v1/credits/packs")).await;
    res.expect(200);
    assert_eq!(meter(&res).0, 100_000);
    let res = app.send(Req::get("/healthz")).await;
    res.expect(200);
    assert_eq!(res.header("x-ratelimit-limit"), None);
}

/// A request from the load balancer at 127.0.0.1 on behalf of `client`.
fn from(client: &str, req: Req) -> Req {
    req.header("x-forwarded-for", format!("203.0.113.250, {client}"))
}

async fn unauthenticated_calls_are_limited_per_address(backend: &'static str) {
    let app = TestApp::with(backend, |s| {
        limits_off(s);
        s.ratelimit.per_ip_rps = 1;
        s.ratelimit.per_ip_burst = 2;
        s.ratelimit.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let packs = || Req::get("/api/v1/credits/packs");
    let started = Instant::now();
    for left in [1, 0] {
        let res = app.send(from("2001:db8:1:2::1", packs())).await;
        res.expect(200);
        assert_eq!(meter(&res), (2, left, 2 - left));
    }
    // The same /64 is the same client; the limit answers before the handler runs.
    let res = app
        .send(from("2001:db8:1:2:ffff::9", signup_req("nope@example.com")))
        .await;
    if started.elapsed() < Duration::from_millis(900) {
        assert_limited(&res, "RATE_LIMITED");
        assert!(res.json()["error"].as_str().unwrap().contains("address"));
        assert_eq!(meter(&res).1, 0);
    }
    // Another /64, and an IPv4 client, have budgets of their own.
    app.send(from("2001:db8:1:3::1", packs())).await.expect(200);
    app.send(from("198.51.100.7", signup_req("yes@example.com")))
        .await
        .expect(201);
    // The load balancer's own health checks are never limited.
    for _ in 0..5 {
        app.send(from("2001:db8:1:2::1", Req::get("/healthz")))
            .await
            .expect(200);
    }
    // Without a trusted proxy in front, X-Forwarded-For is ignored: the peer is the client.
    let direct = TestApp::with(backend, |s| {
        limits_off(s);
        s.ratelimit.per_ip_rps = 1;
        s.ratelimit.per_ip_burst = 2;
    })
    .await;
    let started = Instant::now();
    for client in ["192.0.2.1", "192.0.2.2"] {
        direct.send(from(client, packs())).await.expect(200);
    }
    let res = direct.send(from("192.0.2.3", packs())).await;
    if started.elapsed() < Duration::from_millis(900) {
        assert_limited(&res, "RATE_LIMITED");
    }
    app.assert_verified().await;
}

async fn refused_keys_are_counted_per_address(backend: &'static str) {
    let app = TestApp::with(backend, |s| {
        limits_off(s);
        s.ratelimit.per_ip_rps = 1;
        s.ratelimit.per_ip_burst = 3;
        s.ratelimit.per_key_rps = 100;
        s.ratelimit.per_key_burst = 100;
        s.ratelimit.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let (_, key) = account_with_key(&app.db.store, 5, app.clock.now());
    let guess = |n: usize| {
        let wrong = format!("sk_live_{n:064x}");
        from(
            "192.0.2.66",
            Req::get("/api/v1/credits").auth(&Auth::Key(wrong)),
        )
    };
    let started = Instant::now();
    for (n, left) in [(1, 2), (2, 1), (3, 0)] {
        let res = app.send(guess(n)).await;
        res.expect(401);
        assert_eq!(meter(&res).1, left, "refusals count against the address");
    }
    let res = app.send(guess(4)).await;
    let blocked = started.elapsed() < Duration::from_millis(900);
    if blocked {
        assert_limited(&res, "RATE_LIMITED");
        // While the address is put aside, even a good key from it is not looked at, and a
        // wrong admin token is refused alike.
        let good = from(
            "192.0.2.66",
            Req::get("/api/v1/credits").auth(&Auth::Key(key.clone())),
        );
        let res = app.send(good).await;
        if started.elapsed() < Duration::from_millis(900) {
            assert_limited(&res, "RATE_LIMITED");
        }
    }
    // Another address with the good key is served (and counted per key, not per address).
    let res = app
        .send(from(
            "192.0.2.67",
            Req::get("/api/v1/credits").auth(&Auth::Key(key.clone())),
        ))
        .await;
    res.expect(200);
    assert_eq!(meter(&res), (100, 99, 1));
    // Wrong admin tokens are refused credentials too.
    let admin = |token: &str| {
        from(
            "192.0.2.68",
            Req::get("/admin/v1/verify").header("authorization", format!("Bearer {token}")),
        )
    };
    let started = Instant::now();
    for _ in 0..3 {
        app.send(admin("wrong-token-0123456789")).await.expect(401);
    }
    let res = app.send(admin("wrong-token-0123456789")).await;
    if started.elapsed() < Duration::from_millis(900) {
        assert_limited(&res, "RATE_LIMITED");
        let res = app.send(admin(ADMIN)).await;
        if started.elapsed() < Duration::from_millis(900) {
            assert_limited(&res, "RATE_LIMITED");
        }
    }
    // Once a token has come back, the good key works from the first address again.
    std::thread::sleep(Duration::from_millis(1100));
    app.send(from(
        "192.0.2.66",
        Req::get("/api/v1/credits").auth(&Auth::Key(key)),
    ))
    .await
    .expect(200);
}

const PNG: &[u8] = b"\x89PNG slow fake";

/// A browser whose captures take `delay` and fail while `fail` is set.
struct SlowBrowser {
    delay: Duration,
    fail: std::sync::atomic::AtomicBool,
    running: AtomicUsize,
    most: AtomicUsize,
}

impl Capturer for SlowBrowser {
    fn check_target<'a>(&'a self, _: &'a CaptureOptions) -> CaptureFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn capture<'a>(&'a self, _: &'a CaptureOptions) -> CaptureFuture<'a, Captured> {
        Box::pin(async move {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            actix_rt::time::sleep(self.delay).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                Err(CaptureError::Timeout {
                    timeout_secs: 1,
                    stage: "load".into(),
                })
            } else {
                Ok(Captured {
                    bytes: PNG.to_vec(),
                    content_type: "image/png",
                    width: 1,
                    height: 1,
                })
            }
        })
    }
}

fn shot(auth: &Auth, n: usize) -> Req {
    Req::get(format!(
        "/api/v1/screenshot?url=https://example.com/{n}&cache=false"
    ))
    .auth(auth)
}

async fn captures_at_once_are_limited_per_account(backend: &'static str) {
    let cache = tempfile::tempdir().unwrap();
    let browser = Arc::new(SlowBrowser {
        delay: Duration::from_millis(1500),
        fail: false.into(),
        running: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
    });
    let shared = browser.clone();
    let app = TestApp::build_with_state(
        backend,
        START,
        |s| {
            s.ratelimit.captures_per_account = 2;
            s.screenshots.cache_dir = cache.path().to_string_lossy().into_owned();
        },
        |state| state.with_capturer(shared),
    )
    .await;
    let (auth, account) = app.user("slots@example.com").await;
    let (other, _) = app.user("other@example.com").await;
    let balance = app.balance(&auth).await;
    assert_eq!(balance, 5);
    // Three at once: two run, the third is refused at once and charged nothing.
    let (a, b, c, d) = futures_util::future::join4(
        app.send(shot(&auth, 1)),
        app.send(shot(&auth, 2)),
        app.send(shot(&auth, 3)),
        app.send(shot(&other, 4)),
    )
    .await;
    let answers = [&a, &b, &c];
    let ok = answers.iter().filter(|r| r.status == 200).count();
    let refused: Vec<_> = answers.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        (ok, refused.len()),
        (2, 1),
        "{:?}",
        answers.map(|r| r.status)
    );
    assert_limited(refused[0], "CONCURRENCY_LIMITED");
    assert_eq!(refused[0].header("x-credits-charged"), Some("0"));
    assert!(refused[0].header("x-ratelimit-limit").is_some());
    assert_eq!(d.status, 200, "another account has slots of its own");
    assert_eq!(
        browser.most.load(Ordering::SeqCst),
        3,
        "two of one account, one of the other"
    );
    assert_eq!(
        app.balance(&auth).await,
        3,
        "charged for the two captures only"
    );
    // A failed capture gives its slot back; so does a client that goes away mid-capture.
    browser.fail.store(true, Ordering::SeqCst);
    let (e, f) =
        futures_util::future::join(app.send(shot(&auth, 5)), app.send(shot(&auth, 6))).await;
    assert_eq!((e.status, f.status), (504, 504), "{}", e.text());
    browser.fail.store(false, Ordering::SeqCst);
    // (An abandoned capture's hold is never settled: it expires by itself, so credits
    // are added for what follows.)
    app.adjust(&account, json!(10)).await.expect(201);
    for n in [7, 8] {
        let gone = actix_rt::time::timeout(Duration::from_millis(300), app.send(shot(&auth, n)));
        assert!(gone.await.is_err(), "the client left before the answer");
    }
    let (g, h) =
        futures_util::future::join(app.send(shot(&auth, 9)), app.send(shot(&auth, 10))).await;
    assert_eq!((g.status, h.status), (200, 200), "{}", g.text());
    assert_eq!(
        app.balance(&auth).await,
        3 + 10 - 2 - 2,
        "two charged, two held"
    );
    app.assert_verified().await;
}

// ---- shared through Redis ----

const REDIS: &str = "redis://127.0.0.1:6379/0";

fn redis_limits(prefix: &str, edit: impl FnOnce(&mut Settings)) -> Limits {
    let mut s = settings();
    limits_off(&mut s);
    s.ratelimit.redis_url = REDIS.into();
    s.ratelimit.redis_prefix = prefix.to_owned();
    edit(&mut s);
    Limits::new(&s.ratelimit)
}

#[actix_rt::test]
async fn capture_slots_in_redis_are_shared_and_leased() {
    let prefix = unique_prefix("slots");
    let edit = |s: &mut Settings| s.ratelimit.captures_per_account = 1;
    let (one, two) = (redis_limits(&prefix, edit), redis_limits(&prefix, edit));
    let account = AccountId::new("acc_shared".to_owned());
    let lease = Duration::from_secs(30);
    let slot = one.capture_slot(&account, lease).await.unwrap();
    assert!(slot.is_some());
    let refused = two.capture_slot(&account, lease).await.unwrap_err();
    assert_eq!(
        actix_web::ResponseError::status_code(&refused).as_u16(),
        429
    );
    assert_eq!(refused.code(), "CONCURRENCY_LIMITED");
    // Another account is not affected.
    let other = AccountId::new("acc_other".to_owned());
    assert!(two.capture_slot(&other, lease).await.unwrap().is_some());
    // Dropping the slot gives it back (the release runs on the runtime).
    drop(slot);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(s) = two.capture_slot(&account, lease).await {
            again = s;
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let again = again.expect("the slot came back");
    // A process that dies never gives its slot back: its lease ends it.
    std::mem::forget(again);
    let short = AccountId::new("acc_crashed".to_owned());
    std::mem::forget(one.capture_slot(&short, Duration::from_millis(300)).await);
    assert!(two
        .capture_slot(&short, Duration::from_millis(300))
        .await
        .is_err());
    actix_rt::time::sleep(Duration::from_millis(400)).await;
    assert!(two
        .capture_slot(&short, Duration::from_secs(1))
        .await
        .unwrap()
        .is_some());
}

#[actix_rt::test]
async fn redis_down_fails_open_to_per_process_limits() {
    // Nothing listens on the first; the second accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("redis://{}/0", silent.local_addr().unwrap());
    for url in [format!("redis://127.0.0.1:{}/0", free_port()), silent_url] {
        let app = TestApp::with("sqlite", |s| {
            limits_off(s);
            s.ratelimit.per_key_rps = 1;
            s.ratelimit.per_key_burst = 3;
            s.ratelimit.redis_url = url.clone().into();
            s.ratelimit.redis_prefix = unique_prefix("down");
            s.ratelimit.redis_timeout_ms = 100;
        })
        .await;
        let (_, key) = account_with_key(&app.db.store, 5, app.clock.now());
        let started = Instant::now();
        for left in [2, 1, 0] {
            let res = app
                .send(Req::get("/api/v1/credits").auth(&Auth::Key(key.clone())))
                .await;
            res.expect(200);
            assert_eq!(meter(&res).1, left, "{url}: the process's own limit");
        }
        // One timeout at most (100 ms), then Redis is left alone for a while.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{url}: {:?}",
            started.elapsed()
        );
        let res = app
            .send(Req::get("/api/v1/credits").auth(&Auth::Key(key.clone())))
            .await;
        if started.elapsed() < Duration::from_millis(900) {
            assert_limited(&res, "RATE_LIMITED");
        }
    }
    drop(silent);
}

/// `name.toml` in `dir` for a binary on a free port over the SQLite file `ledger.db` of
/// `dir`, with `ratelimit` as its `[ratelimit]` section.
fn limited_config(
    dir: &std::path::Path,
    name: &str,
    ratelimit: &str,
) -> (std::path::PathBuf, SocketAddr) {
    let port = free_port();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\nworkers = 2\n\n\
             [database]\nurl = \"sqlite://{}\"\n\n[admin]\ntoken = \"{ADMIN}\"\n\n\
             [capture]\nchromedriver_path = \"/nonexistent/chromedriver\"\n\n\
             [ratelimit]\n{ratelimit}\n",
            dir.join("ledger.db").display()
        ),
    )
    .unwrap();
    (config, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn start(dir: &std::path::Path, config: &std::path::Path, addr: SocketAddr) -> Running {
    let child = binary_command(dir)
        .stderr(std::process::Stdio::null())
        .arg("--config")
        .arg(config)
        .spawn()
        .expect("start the api-server");
    let running = Running(Some(child));
    wait_healthy(addr, Duration::from_secs(60)).expect("the server starts");
    running
}

#[test]
fn two_binaries_sharing_redis_hold_one_limit() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("binaries");
    let ratelimit = format!(
        "per_key_rps = 1\nper_key_burst = 5\nredis_url = \"{REDIS}\"\nredis_prefix = \"{prefix}\"\n"
    );
    let (config_a, a) = limited_config(dir.path(), "a", &ratelimit);
    let _a = start(dir.path(), &config_a, a);
    let (config_b, b) = limited_config(dir.path(), "b", &ratelimit);
    let _b = start(dir.path(), &config_b, b);
    // The operator (not limited) makes an account on A; a session on B makes its key.
    let send = |addr: SocketAddr, req: Req| http(addr, &req).expect("an answer");
    send(a, signup_req("shared@example.com")).expect(201);
    let login = send(b, login_req("shared@example.com"));
    login.expect(200);
    let (session, _) = login.session_cookie().unwrap();
    let key = send(b, new_key_req(&Auth::Cookie(session), "k")).expect(201)["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let read = || Req::get("/api/v1/credits").auth(&Auth::Key(key.clone()));
    let started = Instant::now();
    let mut accepted = [0usize; 2];
    let mut refused = [0usize; 2];
    let mut remaining = Vec::new();
    let mut first_five = Duration::ZERO;
    for i in 0..16 {
        if i == 5 {
            first_five = started.elapsed();
        }
        let side = i % 2;
        let res = send([a, b][side], read());
        match res.status {
            200 => accepted[side] += 1,
            429 => {
                assert_limited(&res, "RATE_LIMITED");
                refused[side] += 1;
            }
            other => panic!("unexpected {other}: {}", res.text()),
        }
        remaining.push(meter(&res).1);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total: usize = accepted.iter().sum();
    // One limit: the burst plus a token a second, whichever server answered (two
    // separate limits would have let 10 through at once).
    assert!(
        total as f64 <= 5.0 + elapsed.ceil(),
        "{total} accepted in {elapsed:.2}s: {accepted:?}, remaining {remaining:?}"
    );
    assert!(total >= 5, "the burst is served: {accepted:?}");
    assert!(
        refused[0] > 0 && refused[1] > 0,
        "both servers refuse once the shared budget is spent: {refused:?}"
    );
    // What B reports counts what A served: the remaining budget went down across both.
    if first_five < Duration::from_millis(900) {
        assert_eq!(&remaining[..5], &[4, 3, 2, 1, 0], "{remaining:?}");
    }
}
