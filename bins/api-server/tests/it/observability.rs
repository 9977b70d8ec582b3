//! Metrics (`/metrics` behind its token, the families and that they move), readiness
//! (`/readyz` 200 and 503 naming the part), the JSON request log of the real binary (its
//! fields, the request id on every line inside a request, no secrets) and the separate
//! metrics listener.

use crate::common;

use std::io::Read;
use std::sync::Arc;

use api_server::service::screenshot::{CaptureFuture, Capturer};
use capture::{CaptureOptions, Captured};
use common::*;
use serde_json::{json, Value};

on_both_backends!(
    metrics_need_their_token_and_are_off_without_one,
    metrics_count_requests_ledger_operations_captures_and_the_cache,
    readyz_is_200_when_every_part_is_ready_and_503_naming_the_browser,
    readyz_is_503_naming_the_migrations_when_one_is_not_applied,
);

const METRICS_TOKEN: &str = "metrics-token-for-tests-0123";

/// A browser that always succeeds.
struct Stub;

impl Capturer for Stub {
    fn check_target<'a>(&'a self, _: &'a CaptureOptions) -> CaptureFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn capture<'a>(&'a self, _: &'a CaptureOptions) -> CaptureFuture<'a, Captured> {
        Box::pin(async {
            Ok(Captured {
                bytes: b"\x89PNG stub".to_vec(),
                content_type: "image/png",
                width: 10,
                height: 10,
            })
        })
    }
}

fn scrape_req() -> Req {
    Req::get("/metrics").header("authorization", format!("Bearer {METRICS_TOKEN}"))
}

async fn scrape(app: &TestApp) -> String {
    let res = app.send(scrape_req()).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(
        res.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        res.header("content-type")
    );
    res.text()
}

/// The value of the series `series` (name with its labels, exactly as written), 0 when
/// it is not in `text`.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

async fn metrics_need_their_token_and_are_off_without_one(backend: &'static str) {
    // No token configured: the path does not exist here.
    let off = TestApp::new(backend).await;
    let res = off.send(scrape_req()).await;
    assert_eq!(res.status, 404, "{}", res.text());
    assert_eq!(res.json()["code"], "NOT_FOUND");

    let app = TestApp::with(backend, |s| s.metrics.token = METRICS_TOKEN.into()).await;
    let res = app.send(Req::get("/metrics")).await;
    assert_eq!(res.status, 401, "no token: {}", res.text());
    for wrong in [
        "Bearer metrics-token-for-tests-0124".to_owned(),
        format!("Bearer {METRICS_TOKEN}x"),
        METRICS_TOKEN.to_owned(),
        format!("Bearer {}", common::ADMIN),
    ] {
        let res = app
            .send(Req::get("/metrics").header("authorization", wrong.clone()))
            .await;
        assert_eq!(res.status, 401, "{wrong}: {}", res.text());
        assert!(!res.text().contains("shotledger_"), "{}", res.text());
    }
    let text = scrape(&app).await;
    assert!(text.ends_with("# EOF\n"), "{text}");
}

async fn metrics_count_requests_ledger_operations_captures_and_the_cache(backend: &'static str) {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().display().to_string();
    let app = TestApp::observed(
        backend,
        |s| {
            s.metrics.token = METRICS_TOKEN.into();
            s.screenshots.cache_dir = dir;
        },
        |state| state.with_capturer(Arc::new(Stub)),
    )
    .await;
    let before = scrape(&app).await;
    // The first scrape itself was counted, under its route.
    let scrapes =
        "shotledger_http_requests_total{route=\"/metrics\",method=\"GET\",status=\"200\"}";
    assert_eq!(value(&scrape(&app).await, scrapes), 1.0);

    let (key, account) = app.user("metered@example.com").await;
    let debit = |key: &str, amount: i64| {
        debit_req(
            &account,
            json!({"amount": amount, "description": "metered"}),
        )
        .header("idempotency-key", key.to_owned())
    };
    app.send(debit("d-1", 2)).await.expect(201);
    app.send(debit("d-1", 2)).await.expect(201); // the same key: a replay
    app.send(debit("d-2", 1000)).await.expect(402); // not covered
    app.send(debit("d-1", 3)).await.expect(409); // the key with another request
    app.send(
        Req::post(format!("/admin/v1/accounts/{account}/credits"))
            .auth(&Auth::Admin)
            .header("idempotency-key", "grant-1")
            .json(json!({"amount": 5, "description": "goodwill"})),
    )
    .await
    .expect(201);
    app.send(Req::get("/no/such/path/acct_123"))
        .await
        .expect(404);
    let shot = || {
        Req::post("/api/v1/screenshot")
            .auth(&key)
            .json(json!({"url": "http://example.com/"}))
    };
    let res = app.send(shot()).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-cache"), Some("MISS"));
    let res = app.send(shot()).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-cache"), Some("HIT"));

    let after = scrape(&app).await;
    // Every family, once something was counted in it (a family without series is not
    // written).
    for family in [
        "# TYPE shotledger_http_requests counter",
        "# TYPE shotledger_http_request_duration_seconds histogram",
        "# TYPE shotledger_ledger_operations counter",
        "# TYPE shotledger_ledger_batch_size histogram",
        "# TYPE shotledger_ledger_credits_charged_thousandths counter",
        "# TYPE shotledger_captures counter",
        "# TYPE shotledger_capture_duration_seconds histogram",
        "# TYPE shotledger_db_pool_acquire_wait_seconds histogram",
        "# TYPE shotledger_db_pool_acquire_timeouts counter",
        "# TYPE shotledger_db_pool_connections gauge",
        "# TYPE shotledger_db_pool_max_connections gauge",
        "# TYPE shotledger_cache_hits counter",
        "# TYPE shotledger_cache_misses counter",
        "# TYPE shotledger_cache_entries gauge",
        "# TYPE shotledger_cache_bytes gauge",
    ] {
        assert!(after.contains(family), "no `{family}` in:\n{after}");
    }
    let op = |kind: &str, outcome: &str| {
        value(
            &after,
            &format!("shotledger_ledger_operations_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(op("debit", "charged"), 1.0, "{after}");
    assert_eq!(op("debit", "replayed"), 1.0, "{after}");
    assert_eq!(op("debit", "rejected_credits"), 1.0, "{after}");
    assert_eq!(op("debit", "conflict"), 1.0, "{after}");
    // The screenshot: a hold, then its capture; the adjustment: a credit.
    assert_eq!(op("hold", "charged"), 1.0, "{after}");
    assert_eq!(op("capture", "charged"), 1.0, "{after}");
    assert_eq!(op("credit", "charged"), 1.0, "{after}");
    // 2 credits debited and 1 captured, in thousandths.
    assert_eq!(
        value(
            &after,
            "shotledger_ledger_credits_charged_thousandths_total"
        ),
        3000.0,
        "{after}"
    );
    assert!(
        value(&after, "shotledger_ledger_batch_size_count") >= 5.0,
        "{after}"
    );
    assert!(
        value(&after, "shotledger_ledger_batch_size_sum")
            >= value(&after, "shotledger_ledger_batch_size_count"),
        "{after}"
    );
    // Requests by route pattern, never the raw path.
    let requests = |route: &str, method: &str, status: u16| {
        value(
            &after,
            &format!("shotledger_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(
        requests("/admin/v1/accounts/{id}/debits", "POST", 201),
        2.0,
        "{after}"
    );
    assert_eq!(
        requests("/admin/v1/accounts/{id}/debits", "POST", 402),
        1.0,
        "{after}"
    );
    assert_eq!(
        requests("/admin/v1/accounts/{id}/debits", "POST", 409),
        1.0,
        "{after}"
    );
    assert_eq!(requests("unmatched", "GET", 404), 1.0, "{after}");
    assert_eq!(requests("/api/v1/screenshot", "POST", 200), 2.0, "{after}");
    assert!(
        !after.contains(&account),
        "a raw path leaked into a label:\n{after}"
    );
    assert!(
        value(
            &after,
            "shotledger_http_request_duration_seconds_count{route=\"/api/v1/screenshot\",method=\"POST\"}"
        ) == 2.0,
        "{after}"
    );
    // One capture (the second answer came from the cache), one hit, one miss.
    assert_eq!(
        value(&after, "shotledger_captures_total{outcome=\"ok\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        value(
            &after,
            "shotledger_capture_duration_seconds_count{outcome=\"ok\"}"
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        value(&after, "shotledger_cache_hits_total")
            - value(&before, "shotledger_cache_hits_total"),
        1.0,
        "{after}"
    );
    assert_eq!(
        value(&after, "shotledger_cache_misses_total")
            - value(&before, "shotledger_cache_misses_total"),
        1.0,
        "{after}"
    );
    assert_eq!(value(&after, "shotledger_cache_entries"), 1.0, "{after}");
    assert!(value(&after, "shotledger_cache_bytes") > 0.0, "{after}");
    // The pool: every checkout waited (a little), and the pool is sized as configured.
    assert!(
        value(&after, "shotledger_db_pool_acquire_wait_seconds_count")
            > value(&before, "shotledger_db_pool_acquire_wait_seconds_count"),
        "{after}"
    );
    assert_eq!(
        value(&after, "shotledger_db_pool_max_connections"),
        16.0,
        "{after}"
    );
    assert!(
        value(&after, "shotledger_db_pool_connections{state=\"idle\"}") >= 1.0,
        "{after}"
    );
    app.assert_verified().await;
}

async fn readyz_is_200_when_every_part_is_ready_and_503_naming_the_browser(backend: &'static str) {
    let app =
        TestApp::build_with_state(backend, START, |_| {}, |s| s.with_capturer(Arc::new(Stub)))
            .await;
    let body = app.send(Req::get("/readyz")).await.expect(200);
    assert_eq!(
        body,
        json!({"status": "ready", "checks": {
            "database": {"ok": true}, "migrations": {"ok": true}, "capture": {"ok": true}}}),
    );
    // No browser could be started: not ready, and the answer says which part and why.
    let app = TestApp::new(backend).await;
    let res = app.send(Req::get("/readyz")).await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert!(res.header("retry-after").is_some());
    let body = res.json();
    assert_eq!(body["code"], "NOT_READY", "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.starts_with("not ready: capture: "), "{body}");
    assert!(error.contains("not started"), "{body}");
    assert_eq!(body["checks"]["database"], json!({"ok": true}), "{body}");
    assert_eq!(body["checks"]["capture"]["ok"], false, "{body}");
    // Alive all the same.
    app.send(Req::get("/healthz")).await.expect(200);
}

async fn readyz_is_503_naming_the_migrations_when_one_is_not_applied(backend: &'static str) {
    let app =
        TestApp::build_with_state(backend, START, |_| {}, |s| s.with_capturer(Arc::new(Stub)))
            .await;
    app.send(Req::get("/readyz")).await.expect(200);
    // The newest migration forgotten behind the server's back.
    app.db
        .store
        .execute_batch(
            "DELETE FROM __diesel_schema_migrations WHERE version = \
             (SELECT MAX(version) FROM __diesel_schema_migrations)",
        )
        .unwrap();
    let res = app.send(Req::get("/readyz")).await;
    assert_eq!(res.status, 503, "{}", res.text());
    let body = res.json();
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("not ready: migrations: 1 migration(s)"),
        "{body}"
    );
    assert_eq!(body["checks"]["database"], json!({"ok": true}), "{body}");
    assert_eq!(body["checks"]["capture"], json!({"ok": true}), "{body}");
}

/// PostgreSQL: the schema the server works in is dropped; the database part fails.
#[actix_rt::test]
async fn readyz_is_503_naming_the_database_when_its_schema_is_gone() {
    let app = TestApp::build_with_state(
        "postgres",
        START,
        |_| {},
        |s| s.with_capturer(Arc::new(Stub)),
    )
    .await;
    app.send(Req::get("/readyz")).await.expect(200);
    let schema: String = app
        .db
        .url
        .split("search_path%3D")
        .nth(1)
        .or_else(|| app.db.url.split("search_path=").nth(1))
        .map(|s| s.split(['&', '%']).next().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no search_path in {}", app.db.url));
    app.db
        .store
        .execute_batch(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();
    let res = app.send(Req::get("/readyz")).await;
    assert_eq!(res.status, 503, "{}", res.text());
    let body = res.json();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("not ready: database: "),
        "{body}"
    );
    assert_eq!(body["checks"]["database"]["ok"], false, "{body}");
    assert_eq!(body["checks"]["migrations"]["ok"], false, "{body}");
}

/// The real binary with `log.format = "json"`: every line on stderr is a JSON object; each
/// request has its `request` line (method, route pattern, status, latency_ms, account_id
/// once authenticated, request_id = its `x-request-id`); a line logged inside a request
/// carries the same id in `span.request_id`; no secret (password, API key, session
/// cookie, CSRF token, admin token, metrics token, webhook secret) is ever written. The
/// separate metrics listener answers without a token.
#[test]
fn the_binary_logs_json_lines_with_request_ids_and_no_secrets() {
    const WEBHOOK_SECRET: &str = "whsec_secret-for-the-log-test-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let (config, addr) = config_in(
        dir.path(),
        &format!(
            "\n[log]\nformat = \"json\"\nlevel = \"info\"\n\n\
             [metrics]\ntoken = \"{METRICS_TOKEN}\"\nbind = \"127.0.0.1:{metrics_port}\"\n\n\
             [polar]\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n"
        ),
    );
    // config_in puts its argument under [server]; the sections above follow it.
    let child = binary_command(dir.path())
        .env_remove("RUST_LOG")
        .arg("--config")
        .arg(&config)
        .spawn()
        .expect("start the api-server");
    let mut running = Running(Some(child));
    wait_healthy(addr, std::time::Duration::from_secs(30)).expect("the server starts");

    let signup = http(addr, &signup_req("logs@example.com")).unwrap();
    assert_eq!(signup.status, 201, "{}", signup.text());
    let signup_id = signup.header("x-request-id").unwrap().to_owned();
    let account = signup.json()["accountId"].as_str().unwrap().to_owned();
    let (session, _) = signup.session_cookie().expect("a session cookie");
    let csrf = signup.header("x-csrf-token").unwrap().to_owned();
    let key = http(addr, &new_key_req(&Auth::Cookie(session.clone()), "logs")).unwrap();
    assert_eq!(key.status, 201, "{}", key.text());
    let key = key.json()["key"].as_str().unwrap().to_owned();
    let balance = http(
        addr,
        &Req::get("/api/v1/credits").auth(&Auth::Key(key.clone())),
    )
    .unwrap();
    assert_eq!(balance.status, 200, "{}", balance.text());
    let balance_id = balance.header("x-request-id").unwrap().to_owned();
    let login = http(addr, &login_req("logs@example.com")).unwrap();
    assert_eq!(login.status, 200, "{}", login.text());
    let wrong = http(
        addr,
        &Req::post("/api/v1/auth/login")
            .json(json!({"email": "logs@example.com", "password": "wrong password 123"})),
    )
    .unwrap();
    assert_eq!(wrong.status, 401);
    let admin = http(addr, &Req::get("/admin/v1/verify").auth(&Auth::Admin)).unwrap();
    assert_eq!(admin.status, 200, "{}", admin.text());
    let scraped = http(addr, &scrape_req()).unwrap();
    assert_eq!(scraped.status, 200, "{}", scraped.text());
    // The separate listener: no token asked, the same families.
    let metrics_addr = std::net::SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let own = http(metrics_addr, &Req::get("/metrics")).unwrap();
    assert_eq!(own.status, 200, "{}", own.text());
    assert!(own.text().contains("shotledger_http_requests_total{route=\"/api/v1/auth/signup\",method=\"POST\",status=\"201\"} 1"), "{}", own.text());
    assert_eq!(
        http(metrics_addr, &Req::get("/healthz")).unwrap().status,
        404
    );

    let mut child = running.0.take().unwrap();
    sigterm(&child);
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status:?}: {stderr}");

    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let request_line = |id: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "request" && l["request_id"] == id)
            .unwrap_or_else(|| panic!("no request line for {id} in\n{stderr}"))
            .clone()
    };
    let line = request_line(&signup_id);
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["method"], "POST", "{line}");
    assert_eq!(line["route"], "/api/v1/auth/signup", "{line}");
    assert_eq!(line["status"], 201, "{line}");
    assert!(line["latency_ms"].as_f64().unwrap() > 0.0, "{line}");
    assert!(line["timestamp"].is_string(), "{line}");
    assert_eq!(line["span"]["request_id"], signup_id.as_str(), "{line}");
    let line = request_line(&balance_id);
    assert_eq!(line["route"], "/api/v1/credits", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["account_id"], account.as_str(), "{line}");
    // A line logged inside the signup carries its request id.
    let created = lines
        .iter()
        .find(|l| l["message"] == "account created")
        .unwrap_or_else(|| panic!("no `account created` line in\n{stderr}"));
    assert_eq!(
        created["span"]["request_id"],
        signup_id.as_str(),
        "{created}"
    );
    assert_eq!(created["account_id"], account.as_str(), "{created}");
    // Every request was logged, each with its own id.
    let requests: Vec<&Value> = lines.iter().filter(|l| l["message"] == "request").collect();
    assert!(requests.len() >= 7, "{stderr}");
    for secret in [
        common::PASSWORD,
        "wrong password 123",
        key.as_str(),
        session.as_str(),
        csrf.as_str(),
        common::ADMIN,
        METRICS_TOKEN,
        WEBHOOK_SECRET,
    ] {
        assert!(!stderr.contains(secret), "`{secret}` was logged:\n{stderr}");
    }
}

/// SIGTERM to `child` (the binary drains and exits 0).
fn sigterm(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A real browser: the capture's latency and the pool's gauges; ready while the pool
/// runs, 503 naming the capture once it is shut down.
#[actix_rt::test]
async fn a_real_capture_is_timed_and_the_pool_is_ready_until_it_stops() {
    assert!(
        std::path::Path::new("/usr/bin/chromedriver").exists(),
        "chromium-driver is not installed: run `just setup` (apt-get install chromium chromium-driver)"
    );
    let service = capture::CaptureService::start(capture::CaptureConfig {
        pool_size: 1,
        default_timeout_secs: 20,
        ..capture::CaptureConfig::default()
    })
    .await
    .expect("start the capture service");
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().display().to_string();
    let pool = service.clone();
    let app = TestApp::observed(
        "sqlite",
        |s| {
            s.metrics.token = METRICS_TOKEN.into();
            s.screenshots.cache_dir = dir;
        },
        move |state| state.with_capture(pool),
    )
    .await;
    let body = app.send(Req::get("/readyz")).await.expect(200);
    assert_eq!(body["checks"]["capture"], json!({"ok": true}), "{body}");
    let (key, _) = app.user("real@example.com").await;
    let res = app
        .send(
            Req::post("/api/v1/screenshot")
                .auth(&key)
                .json(json!({"html": "<h1>timed</h1>", "width": 320, "height": 240})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let text = scrape(&app).await;
    assert_eq!(
        value(&text, "shotledger_captures_total{outcome=\"ok\"}"),
        1.0,
        "{text}"
    );
    let took = value(
        &text,
        "shotledger_capture_duration_seconds_sum{outcome=\"ok\"}",
    );
    // A real browser takes milliseconds at least, and less than the budget.
    assert!(took > 0.005 && took < 20.0, "{took}: {text}");
    // The worker stays busy while it resets its session after the answer, then is idle.
    let mut text = text;
    for _ in 0..100 {
        if value(&text, "shotledger_capture_pool_workers{state=\"idle\"}") == 1.0 {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
        text = scrape(&app).await;
    }
    assert_eq!(
        value(&text, "shotledger_capture_pool_workers{state=\"busy\"}"),
        0.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "shotledger_capture_pool_workers{state=\"idle\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "shotledger_capture_queue_depth"),
        0.0,
        "{text}"
    );
    assert!(
        value(&text, "shotledger_capture_sessions_opened_total") >= 1.0,
        "{text}"
    );
    service.shutdown().await;
    let res = app.send(Req::get("/readyz")).await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert!(
        res.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("not ready: capture: "),
        "{}",
        res.text()
    );
}

/// The default `log.format = "text"`: a human line per request, the span's request id in
/// front.
#[test]
fn the_binary_logs_text_lines_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let (config, addr) = config_in(dir.path(), "");
    let child = binary_command(dir.path())
        .env_remove("RUST_LOG")
        .arg("--config")
        .arg(&config)
        .spawn()
        .expect("start the api-server");
    let mut running = Running(Some(child));
    wait_healthy(addr, std::time::Duration::from_secs(30)).expect("the server starts");
    let res = http(addr, &Req::get("/api/v1/credits/packs")).unwrap();
    assert_eq!(res.status, 200);
    let id = res.header("x-request-id").unwrap().to_owned();
    let mut child = running.0.take().unwrap();
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let line = stderr
        .lines()
        .find(|l| {
            l.contains(&format!("request_id={id}")) && l.contains("route=/api/v1/credits/packs")
        })
        .unwrap_or_else(|| panic!("no request line for {id} in\n{stderr}"));
    assert!(
        line.contains(&format!("request{{request_id={id}}}")),
        "{line}"
    );
    assert!(
        line.contains("status=200") && line.contains("latency_ms="),
        "{line}"
    );
    assert!(
        !stderr.trim_start().starts_with('{'),
        "text, not JSON:\n{stderr}"
    );
}
