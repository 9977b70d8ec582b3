//! The screenshot endpoint with a real browser: charged only for fresh, successful
//! captures; every failure, cache hit and replay leaves the ledger as it was.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::common::account_with_key;
use actix_web::test;
use api_server::{app, AppState};
use capture::{CaptureConfig, CaptureService};
use ledger_core::{Credits, EntryKind, Page, Timestamp};
use settings::{Settings, Sources};
use test_support::on_both_backends as both;
use test_support::{TestDb, ADMIN};

/// A tiny HTTP server for fixture pages, on 127.0.0.1.
fn fixtures() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    format!("http://{addr}")
}

fn serve(mut stream: TcpStream) {
    let mut line = String::new();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    if reader.read_line(&mut line).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (status, body) = match path.as_str() {
        "/404" => ("404 Not Found", "<h1>missing</h1>".to_owned()),
        "/500" => ("500 Internal Server Error", "<h1>broken</h1>".to_owned()),
        "/slow" => {
            std::thread::sleep(Duration::from_secs(8));
            ("200 OK", "<h1>late</h1>".to_owned())
        }
        "/covered" => (
            "200 OK",
            "<body style=\"margin:0;background:#fff\"><div class=\"a\" style=\"position:fixed;left:0;top:0;width:50%;height:100%;background:#f00\"></div><div class=\"b\" style=\"position:fixed;right:0;top:0;width:50%;height:100%;background:#00f\"></div></body>"
                .to_owned(),
        ),
        "/white" => (
            "200 OK",
            "<body style=\"margin:0;background:#fff\"></body>".to_owned(),
        ),
        "/tall" => (
            "200 OK",
            "<body style=\"margin:0\"><div style=\"height:3000px;background:#0a0\"></div></body>"
                .to_owned(),
        ),
        _ => (
            "200 OK",
            "<body style=\"margin:0;background:#fff\"><h1>fixture</h1></body>".to_owned(),
        ),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn settings(cache_dir: &std::path::Path) -> Settings {
    Settings::load(Sources {
        env: vec![
            (
                "SHOTLEDGER__SCREENSHOTS__CACHE_DIR".into(),
                cache_dir.display().to_string(),
            ),
            ("SHOTLEDGER__ADMIN__TOKEN".into(), ADMIN.into()),
            // Limits on, but far above these loads (tests/it/ratelimit.rs tests them).
            (
                "SHOTLEDGER__RATELIMIT__CAPTURES_PER_ACCOUNT".into(),
                "1000".into(),
            ),
            (
                "SHOTLEDGER__RATELIMIT__PER_KEY_BURST".into(),
                "100000".into(),
            ),
            ("SHOTLEDGER__RATELIMIT__PER_KEY_RPS".into(), "10000".into()),
        ],
        ..Sources::default()
    })
    .unwrap()
}

async fn browser(allow_private: bool, pool: usize, queue: usize) -> CaptureService {
    assert!(
        std::path::Path::new("/usr/bin/chromedriver").exists(),
        "chromium-driver is not installed: run `just setup` (apt-get install chromium chromium-driver)"
    );
    CaptureService::start(CaptureConfig {
        pool_size: pool,
        queue_capacity: queue,
        queue_timeout_ms: 60_000,
        allow_private_targets: allow_private,
        default_timeout_secs: 20,
        ..CaptureConfig::default()
    })
    .await
    .expect("start the capture service")
}

struct World {
    db: TestDb,
    state: AppState,
    key: String,
    account: ledger_core::AccountId,
    _cache: tempfile::TempDir,
}

fn world(db: TestDb, service: CaptureService, credits: i64) -> World {
    let cache = tempfile::tempdir().unwrap();
    let store = db.store.clone();
    let clock: api_server::Clock = Arc::new(|| Timestamp::from_millis(1_800_000_000_000));
    let state = AppState::new(store.clone(), settings(cache.path()), clock)
        .unwrap()
        .with_capture(service);
    let now = Timestamp::from_millis(1_800_000_000_000);
    let (account, key) = account_with_key(&store, credits, now);
    World {
        db,
        state,
        key,
        account,
        _cache: cache,
    }
}

impl World {
    fn available(&self) -> Credits {
        self.db
            .store
            .ledger()
            .balance(&self.account, Timestamp::from_millis(1_800_000_000_000))
            .unwrap()
            .available
    }

    fn usage_entries(&self) -> usize {
        self.db
            .store
            .ledger()
            .history(&self.account, Page::new(100, 0).unwrap())
            .unwrap()
            .iter()
            .filter(|e| e.kind == EntryKind::Usage)
            .count()
    }

    /// The end of a test: the ledger is consistent, and the browsers stop.
    async fn done(&self) {
        assert!(self.db.store.maintenance().verify().unwrap().ok);
        self.state.capture.as_ref().unwrap().shutdown().await;
    }

    /// Nothing charged, nothing held, and the ledger consistent.
    fn assert_untouched(&self, credits: i64, what: &str) {
        let b = self
            .db
            .store
            .ledger()
            .balance(&self.account, Timestamp::from_millis(1_800_000_000_000))
            .unwrap();
        assert_eq!(
            (b.available, b.held),
            (Credits::whole(credits), Credits::ZERO),
            "{what}: balance changed"
        );
        assert_eq!(self.usage_entries(), 0, "{what}: a usage entry remains");
        assert!(
            self.db.store.maintenance().verify().unwrap().ok,
            "{what}: verify"
        );
    }
}

fn header<B>(res: &actix_web::dev::ServiceResponse<B>, name: &str) -> String {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("missing header {name}"))
}

macro_rules! get {
    ($app:expr, $w:expr, $q:expr) => {{
        let req = test::TestRequest::get()
            .uri(&format!("/api/v1/screenshot?{}", $q))
            .insert_header(("x-api-key", $w.key.as_str()))
            .to_request();
        test::call_service(&$app, req).await
    }};
}

async fn charged_once_and_cached(db: TestDb) {
    let site = fixtures();
    let w = world(db, browser(true, 1, 8).await, 5);
    let app = test::init_service(app(w.state.clone())).await;
    let q = format!("url={site}/&width=320&height=200&deviceScaleFactor=2");
    let res = get!(app, w, q);
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-type"), "image/png");
    assert_eq!(
        (
            header(&res, "x-credits-charged"),
            header(&res, "x-credits-remaining"),
            header(&res, "x-cache")
        ),
        ("1".into(), "4".into(), "MISS".into())
    );
    assert!(res.headers().contains_key("x-request-id"));
    let bytes = test::read_body(res).await;
    let img = image_size(&bytes);
    assert_eq!(img, (640, 400), "viewport x scale");
    let hit = get!(app, w, q);
    assert_eq!(
        (
            hit.status().as_u16(),
            header(&hit, "x-cache"),
            header(&hit, "x-credits-charged")
        ),
        (200, "HIT".into(), "0".into())
    );
    assert_eq!(test::read_body(hit).await, bytes);
    assert_eq!(w.available(), Credits::whole(4));
    assert_eq!(w.usage_entries(), 1);
    let entry = &w
        .db
        .store
        .ledger()
        .history(&w.account, Page::new(1, 0).unwrap())
        .unwrap()[0];
    assert_eq!(
        (entry.description.as_str(), entry.source.as_str()),
        ("Screenshot captured", "Screenshot")
    );
    assert!(entry.reference_id.as_deref().unwrap().starts_with("scr_"));
    // cache=false captures again and charges again.
    let fresh = get!(app, w, format!("{q}&cache=false"));
    assert_eq!(
        (fresh.status().as_u16(), header(&fresh, "x-credits-charged")),
        (200, "1".into())
    );
    assert_eq!(w.available(), Credits::whole(3));
    w.done().await;
}

fn image_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (w, h)
}

async fn failures_charge_nothing(db: TestDb) {
    let site = fixtures();
    let w = world(db, browser(true, 1, 8).await, 5);
    let app = test::init_service(app(w.state.clone())).await;
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cases = [
        (
            "url=http://no-such-host.invalid/".to_owned(),
            502,
            "DNS_FAILURE",
        ),
        (format!("url=http://{closed}/"), 502, "CONNECTION_REFUSED"),
        (format!("url={site}/404"), 422, "TARGET_HTTP_ERROR"),
        (format!("url={site}/500"), 502, "TARGET_HTTP_ERROR"),
        (format!("url={site}/slow&timeout=2"), 504, "TIMEOUT"),
        (format!("url={site}/&quality=50"), 400, "INVALID_REQUEST"),
        (format!("url={site}/&width=0"), 400, "INVALID_REQUEST"),
        (format!("url=ftp://{closed}/"), 400, "FORBIDDEN_TARGET"),
        ("width=100".to_owned(), 400, "INVALID_REQUEST"),
    ];
    for (q, status, code) in cases {
        let res = get!(app, w, format!("{q}&cache=false"));
        assert_eq!(res.status().as_u16(), status, "{q}");
        assert_eq!(
            (
                header(&res, "x-credits-charged"),
                header(&res, "x-credits-remaining")
            ),
            ("0".into(), "5".into()),
            "{q}"
        );
        assert!(
            res.headers().contains_key("x-cache") && res.headers().contains_key("x-request-id")
        );
        let body: serde_json::Value = test::read_body_json(res).await;
        let got = body["code"].as_str().unwrap_or_default().to_owned();
        assert_eq!(got, code, "{q}: {body}");
        w.assert_untouched(5, &q);
    }
    w.done().await;
}

async fn forbidden_targets_are_refused_before_any_charge(db: TestDb) {
    let site = fixtures();
    let w = world(db, browser(false, 1, 8).await, 5);
    let app = test::init_service(app(w.state.clone())).await;
    let port = site.rsplit(':').next().unwrap();
    for target in [
        "http://169.254.169.254/".to_owned(),
        "http://[::1]/".to_owned(),
        "http://0.0.0.0/".to_owned(),
        format!("http://localhost:{port}/"),
        format!("http://127.0.0.1:{port}/"),
        "http://10.0.0.1/".to_owned(),
        "http://192.168.1.1/".to_owned(),
        "http://100.64.0.1/".to_owned(),
        "http://[::ffff:127.0.0.1]/".to_owned(),
        "http://[fe80::1]/".to_owned(),
        "file:///etc/passwd".to_owned(),
    ] {
        let res = get!(app, w, format!("url={}", urlencode(&target)));
        assert_eq!(res.status().as_u16(), 400, "{target}");
        assert_eq!(header(&res, "x-credits-charged"), "0");
        w.assert_untouched(5, &target);
    }
    w.done().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn no_credits_is_402_and_replays_never_charge_twice(db: TestDb) {
    let site = fixtures();
    let w = world(db, browser(true, 1, 8).await, 1);
    let app = test::init_service(app(w.state.clone())).await;
    let q = format!("url={site}/&cache=false");
    let keyed = |key: &str| {
        test::TestRequest::get()
            .uri(&format!("/api/v1/screenshot?{q}"))
            .insert_header(("x-api-key", w.key.as_str()))
            .insert_header(("Idempotency-Key", key))
            .to_request()
    };
    let first = test::call_service(&app, keyed("shot-1")).await;
    assert_eq!(
        (first.status().as_u16(), header(&first, "x-credits-charged")),
        (200, "1".into())
    );
    let first_bytes = test::read_body(first).await;
    let again = test::call_service(&app, keyed("shot-1")).await;
    assert_eq!(
        (again.status().as_u16(), header(&again, "x-credits-charged")),
        (200, "0".into())
    );
    assert_eq!(header(&again, "idempotent-replayed"), "true");
    assert_eq!(
        test::read_body(again).await,
        first_bytes,
        "the replay is the first answer"
    );
    assert_eq!(w.usage_entries(), 1);
    // Out of credits: 402 with the numbers, nothing captured.
    let broke = get!(app, w, q);
    assert_eq!(broke.status().as_u16(), 402);
    assert_eq!(
        (
            header(&broke, "x-credits-remaining"),
            header(&broke, "x-credits-charged")
        ),
        ("0".into(), "0".into())
    );
    let body: serde_json::Value = test::read_body_json(broke).await;
    assert_eq!(
        (
            body["error"].as_str(),
            body["required"].as_i64(),
            body["balance"].as_i64()
        ),
        (Some("Insufficient credits"), Some(1), Some(0))
    );
    // The same key with other options is a conflict.
    let other = test::TestRequest::get()
        .uri(&format!("/api/v1/screenshot?{q}&width=500"))
        .insert_header(("x-api-key", w.key.as_str()))
        .insert_header(("Idempotency-Key", "shot-1"))
        .to_request();
    assert_eq!(test::call_service(&app, other).await.status().as_u16(), 409);
    // The quote charges nothing.
    let quote = test::TestRequest::get()
        .uri(&format!("/api/v1/screenshot/quote?{q}"))
        .insert_header(("x-api-key", w.key.as_str()))
        .to_request();
    let quote: serde_json::Value = test::call_and_read_body_json(&app, quote).await;
    assert_eq!(quote["credits"], 1);
    assert_eq!(w.usage_entries(), 1);
    w.done().await;
}

async fn twenty_at_once_through_two_browsers(db: TestDb) {
    let site = fixtures();
    let w = world(db, browser(true, 2, 4).await, 100);
    let app = test::init_service(app(w.state.clone())).await;
    let calls = (0..20).map(|i| {
        let req = test::TestRequest::get()
            .uri(&format!(
                "/api/v1/screenshot?url={site}/&cache=false&width={}",
                300 + i
            ))
            .insert_header(("x-api-key", w.key.as_str()))
            .to_request();
        test::call_service(&app, req)
    });
    let answers = futures_util::future::join_all(calls).await;
    let ok = answers.iter().filter(|r| r.status() == 200).count();
    let busy = answers.iter().filter(|r| r.status() == 503).count();
    assert_eq!(
        ok + busy,
        20,
        "every request finishes or is refused as busy"
    );
    assert!(ok >= 2, "some captures succeed");
    for r in answers.iter().filter(|r| r.status() == 503) {
        assert!(r.headers().contains_key("retry-after"));
        assert_eq!(header(r, "x-credits-charged"), "0");
    }
    assert_eq!(
        w.available(),
        Credits::whole(100 - ok as i64),
        "the ledger matches the captures exactly"
    );
    assert_eq!(w.usage_entries(), ok);
    w.done().await;
}

async fn post_json_html_and_formats(db: TestDb) {
    let site = fixtures();
    let w = world(db, browser(true, 1, 8).await, 5);
    let app = test::init_service(app(w.state.clone())).await;
    let post = |body: serde_json::Value| {
        test::TestRequest::post()
            .uri("/api/v1/screenshot")
            .insert_header(("Authorization", format!("Bearer {}", w.key)))
            .set_json(body)
            .to_request()
    };
    // html input, as JSON with typed values.
    let res = test::call_service(
        &app,
        post(serde_json::json!({"html": "<body style='margin:0;background:#f00'></body>", "width": 200, "height": 100, "cache": false})),
    )
    .await;
    assert_eq!(
        (res.status().as_u16(), header(&res, "x-credits-charged")),
        (200, "1".into())
    );
    assert_eq!(image_size(&test::read_body(res).await), (200, 100));
    for (format, content_type, magic) in [
        ("jpeg", "image/jpeg", &b"\xff\xd8\xff"[..]),
        ("webp", "image/webp", &b"RIFF"[..]),
        ("pdf", "application/pdf", &b"%PDF"[..]),
    ] {
        let res = test::call_service(
            &app,
            post(serde_json::json!({"url": format!("{site}/"), "format": format, "cache": false})),
        )
        .await;
        assert_eq!(res.status(), 200, "{format}");
        assert_eq!(header(&res, "content-type"), content_type);
        let body = test::read_body(res).await;
        assert!(
            body.starts_with(magic),
            "{format} starts with its magic bytes"
        );
    }
    // A wrong type in JSON names the field; malformed JSON is a 400 too; neither charges.
    let res = test::call_service(
        &app,
        post(serde_json::json!({"url": format!("{site}/"), "width": "wide"})),
    )
    .await;
    assert_eq!(
        (res.status().as_u16(), header(&res, "x-credits-charged")),
        (400, "0".into())
    );
    let body: serde_json::Value = test::read_body_json(res).await;
    assert_eq!(body["field"], "width", "{body}");
    // No key: 401, still with the metering headers it can give.
    let res = test::call_service(
        &app,
        test::TestRequest::get()
            .uri(&format!("/api/v1/screenshot?url={site}/"))
            .to_request(),
    )
    .await;
    assert_eq!(
        (res.status().as_u16(), header(&res, "x-credits-charged")),
        (401, "0".into())
    );
    assert!(res.headers().contains_key("x-cache") && res.headers().contains_key("x-request-id"));
    // Authentication comes before the body: a stranger's malformed POST is a 401, not a 400.
    let res = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/api/v1/screenshot")
            .set_payload("{not json")
            .to_request(),
    )
    .await;
    assert_eq!(res.status().as_u16(), 401);
    assert_eq!(
        w.available(),
        Credits::whole(1),
        "four captures were charged, nothing else"
    );
    w.done().await;
}

/// Invalid selectors are refused while the options are parsed: 400 naming the field,
/// nothing charged, no browser used. Before the fix they reached the browser, answered 500
/// INTERNAL and cost a new browser session each.
async fn invalid_selectors_are_400_before_any_browser(db: TestDb) {
    let site = fixtures();
    let w = world(db, browser(true, 1, 8).await, 5);
    let app = test::init_service(app(w.state.clone())).await;
    let service = w.state.capture.clone().unwrap();
    let before = service.stats();
    for field in ["waitForSelector", "selector"] {
        for bad in ["a[", "<<<", "::", "div >", "*:not(", ":foo"] {
            let q = format!("url={site}/&{field}={}&cache=false", urlencode(bad));
            let res = get!(app, w, q);
            assert_eq!(res.status().as_u16(), 400, "{field}={bad}");
            assert_eq!(header(&res, "x-credits-charged"), "0", "{field}={bad}");
            let body: serde_json::Value = test::read_body_json(res).await;
            assert_eq!(
                (body["code"].as_str(), body["field"].as_str()),
                (Some("INVALID_REQUEST"), Some(field)),
                "{field}={bad}: {body}"
            );
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("not a valid CSS selector"),
                "{body}"
            );
            w.assert_untouched(5, &format!("{field}={bad}"));
        }
    }
    let after = service.stats();
    assert_eq!(
        (after.sessions_opened, after.captures_started),
        (before.sessions_opened, before.captures_started),
        "a browser was used for an invalid selector"
    );
    service.shutdown().await;
}

/// A page that opens JavaScript dialogs is captured like any other page and charged once,
/// on the session that was already open. Before the fix such pages answered 500 and
/// replaced the browser.
async fn pages_with_dialogs_are_captured_and_charged_once(db: TestDb) {
    let w = world(db, browser(true, 1, 8).await, 5);
    let app = test::init_service(app(w.state.clone())).await;
    let service = w.state.capture.clone().unwrap();
    let before = service.stats();
    let html = "<body style='margin:0;background:#fff'><script>alert(1); confirm(2); prompt(3); alert(4)</script><p id=done>done</p></body>";
    let res = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/api/v1/screenshot")
            .insert_header(("Authorization", format!("Bearer {}", w.key)))
            .set_json(serde_json::json!({"html": html, "width": 200, "height": 100, "waitForSelector": "#done", "cache": false}))
            .to_request(),
    )
    .await;
    assert_eq!(
        (res.status().as_u16(), header(&res, "x-credits-charged")),
        (200, "1".into())
    );
    assert_eq!(image_size(&test::read_body(res).await), (200, 100));
    assert_eq!(w.available(), Credits::whole(4));
    assert_eq!(w.usage_entries(), 1);
    assert!(w.db.store.maintenance().verify().unwrap().ok);
    let after = service.stats();
    assert_eq!(after.sessions_opened, before.sessions_opened, "{after:?}");
    service.shutdown().await;
}

/// The page options through HTTP: a list repeated in the query string or given as a JSON
/// array, a bad option a 400 naming it (nothing charged), `fresh` a charged MISS that
/// refreshes the cached entry.
async fn page_options_in_get_and_post_and_fresh(db: TestDb) {
    let site = fixtures();
    let w = world(db, browser(true, 1, 8).await, 10);
    let app = test::init_service(app(w.state.clone())).await;
    // What a blank white page of this size looks like (PNG encoding is deterministic).
    let white = test::read_body(get!(
        app,
        w,
        format!("url={site}/white&width=200&height=100&cache=false")
    ))
    .await;
    // Both covers shown, then both hidden by a repeated parameter.
    let q = format!("url={site}/covered&width=200&height=100");
    let res = get!(app, w, q);
    assert_eq!(res.status(), 200);
    assert_ne!(test::read_body(res).await, white, "the covers show");
    let res = get!(app, w, format!("{q}&hideSelectors=.a&hideSelectors=.b"));
    assert_eq!(
        (res.status().as_u16(), header(&res, "x-cache")),
        (200, "MISS".into()),
        "another cache key"
    );
    assert_eq!(test::read_body(res).await, white, "both covers hidden");
    let res = get!(app, w, format!("{q}&hideSelectors=.a"));
    assert_ne!(test::read_body(res).await, white, "one cover hidden");
    // The same through a JSON array.
    let req = test::TestRequest::post()
        .uri("/api/v1/screenshot")
        .insert_header(("x-api-key", w.key.as_str()))
        .set_json(
            serde_json::json!({"url": format!("{site}/covered"), "width": 200, "height": 100,
            "hideSelectors": [".a", ".b"], "cache": false}),
        )
        .to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        test::read_body(res).await,
        white,
        "both hidden through JSON"
    );
    let charged = w.available();
    // Bad options: 400 naming the field, nothing charged.
    for (bad, field) in [
        ("waitUntil=later", "waitUntil"),
        ("clip=1,2,3", "clip"),
        ("hideSelectors=a[", "hideSelectors"),
        ("omitBackground=true&format=jpeg", "omitBackground"),
        ("headers=Host:%20x", "headers"),
        ("cookies=novalue", "cookies"),
        ("timeZone=not%20a%20zone", "timeZone"),
        ("width=10&width=20", "width"),
    ] {
        let res = get!(app, w, format!("{q}&{bad}"));
        assert_eq!(res.status(), 400, "{bad}");
        assert_eq!(header(&res, "x-credits-charged"), "0", "{bad}");
        let body: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(body["code"], "INVALID_REQUEST", "{bad}: {body}");
        assert_eq!(body["field"], field, "{bad}: {body}");
    }
    assert_eq!(w.available(), charged);
    // A cached capture is a HIT; fresh is a MISS, charged, and refreshes the entry.
    let hit = get!(app, w, q);
    assert_eq!(
        (header(&hit, "x-cache"), header(&hit, "x-credits-charged")),
        ("HIT".into(), "0".into())
    );
    let fresh = get!(app, w, format!("{q}&fresh=true"));
    assert_eq!(
        (
            fresh.status().as_u16(),
            header(&fresh, "x-cache"),
            header(&fresh, "x-credits-charged")
        ),
        (200, "MISS".into(), "1".into())
    );
    assert_eq!(w.available(), charged - Credits::whole(1));
    let hit = get!(app, w, q);
    assert_eq!(header(&hit, "x-cache"), "HIT", "fresh kept the cache key");
    // A fresh capture that fails charges nothing.
    let failed = get!(app, w, format!("url={site}/404&fresh=true"));
    assert_eq!(
        (
            failed.status().as_u16(),
            header(&failed, "x-credits-charged")
        ),
        (422, "0".into())
    );
    assert_eq!(w.available(), charged - Credits::whole(1));
    w.done().await;
}

/// `GET /admin/v1/cache` shows operators the cache: a miss stores an entry, a hit counts,
/// `cache=false` neither looks up nor adds an entry; the operator's token is required.
async fn operators_see_the_cache_size_and_hit_rate(db: TestDb) {
    let site = fixtures();
    let w = world(db, browser(true, 1, 8).await, 5);
    let app = test::init_service(app(w.state.clone())).await;
    let stats = || async {
        let req = test::TestRequest::get()
            .uri("/admin/v1/cache")
            .insert_header(("authorization", format!("Bearer {ADMIN}")))
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), 200);
        let v: serde_json::Value = test::read_body_json(res).await;
        v
    };
    let empty = stats().await;
    assert_eq!(
        empty,
        serde_json::json!({"entries": 0, "bytes": 0, "maxBytes": 1u64 << 30,
                           "hits": 0, "misses": 0, "hitRate": 0.0})
    );
    let q = format!("url={site}/&width=320&height=200");
    assert_eq!(header(&get!(app, w, q), "x-cache"), "MISS");
    assert_eq!(header(&get!(app, w, q), "x-cache"), "HIT");
    assert_eq!(header(&get!(app, w, q), "x-cache"), "HIT");
    let no_cache = get!(app, w, format!("url={site}/white&cache=false"));
    assert_eq!(no_cache.status(), 200);
    let after = stats().await;
    assert_eq!(
        (&after["entries"], &after["hits"], &after["misses"]),
        (
            &serde_json::json!(1),
            &serde_json::json!(2),
            &serde_json::json!(1)
        ),
        "{after}"
    );
    let rate = after["hitRate"].as_f64().unwrap();
    assert!((rate - 2.0 / 3.0).abs() < 1e-9, "{after}");
    // The image and its key record (and the cache=false capture's object, kept for
    // idempotent replays).
    assert!(after["bytes"].as_u64().unwrap() > 1_000, "{after}");
    let user_key = format!("Bearer {}", w.key);
    for auth in [
        None,
        Some("Bearer not-the-admin-token-at-all"),
        Some(&*user_key),
    ] {
        let mut req = test::TestRequest::get().uri("/admin/v1/cache");
        if let Some(a) = auth {
            req = req.insert_header(("authorization", a));
        }
        let res = test::call_service(&app, req.to_request()).await;
        assert_eq!(res.status(), 401, "{auth:?}");
    }
    let doc = test::TestRequest::get().uri("/openapi.json").to_request();
    let doc: serde_json::Value = test::call_and_read_body_json(&app, doc).await;
    let listed = &doc["paths"]["/admin/v1/cache"]["get"];
    assert!(
        listed.is_object(),
        "/openapi.json lists the cache: {listed}"
    );
    assert!(listed["responses"]["401"].is_object(), "{listed}");
    w.done().await;
}

both!(
    page_options_in_get_and_post_and_fresh,
    charged_once_and_cached,
    failures_charge_nothing,
    forbidden_targets_are_refused_before_any_charge,
    no_credits_is_402_and_replays_never_charge_twice,
    twenty_at_once_through_two_browsers,
    post_json_html_and_formats,
    invalid_selectors_are_400_before_any_browser,
    pages_with_dialogs_are_captured_and_charged_once,
    operators_see_the_cache_size_and_hit_rate
);
