//! Where the time of one capture goes: every WebDriver command of a capture, timed one by
//! one against chromedriver directly (no pool), with and without the SSRF proxy hop, and
//! the alternatives (CDP screenshots in each format, Rust re-encoding, the isolation
//! strategies).
//!
//! ```text
//! cargo run --release -p capture --example capture_breakdown -- [ITERATIONS]
//! ```
//!
//! Prints one markdown table of medians (ms) per step.

// A benchmark, not a program: a failed step should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use capture::proxy::Proxy;
use capture::TargetPolicy;
use fantoccini::wd::{TimeoutConfiguration, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

#[derive(Debug)]
struct Cdp(Value);

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base: &url::Url, sid: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            sid.unwrap_or_default()
        ))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.0.to_string()))
    }
}

async fn cdp(c: &Client, cmd: &str, params: Value) -> Value {
    c.issue_cmd(Cdp(json!({"cmd": cmd, "params": params})))
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// The storage types a page can read, as the reset lists them (it adds `websql`).
const LISTED_TYPES: &str =
    "cookies,file_systems,indexeddb,local_storage,service_workers,cache_storage";

/// `Network.clearBrowserCookies`.
async fn clear_cookies(c: &Client) -> Value {
    cdp(c, "Network.clearBrowserCookies", json!({})).await
}

/// `Storage.clearDataForOrigin` of these storage types.
async fn clear(c: &Client, origin: &str, types: &str) -> Value {
    cdp(
        c,
        "Storage.clearDataForOrigin",
        json!({"origin": origin, "storageTypes": types}),
    )
    .await
}

#[derive(Default)]
struct Times(BTreeMap<&'static str, Vec<Duration>>);

impl Times {
    async fn time<T, F: std::future::Future<Output = T>>(&mut self, step: &'static str, f: F) -> T {
        let t = Instant::now();
        let r = f.await;
        self.0.entry(step).or_default().push(t.elapsed());
        r
    }
    fn record(&mut self, step: &'static str, t: Instant) {
        self.0.entry(step).or_default().push(t.elapsed());
    }
    fn median(&self, step: &str) -> Option<f64> {
        let mut v = self.0.get(step)?.clone();
        v.sort();
        Some(v[v.len() / 2].as_secs_f64() * 1000.0)
    }
}

async fn open(driver: &str, proxy: Option<SocketAddr>) -> Client {
    let mut args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-extensions".into(),
        "--hide-scrollbars".into(),
        "--force-color-profile=srgb".into(),
        "--window-size=1280,800".into(),
    ];
    if let Some(p) = proxy {
        args.push(format!("--proxy-server=http://{p}"));
        args.push("--proxy-bypass-list=<-loopback>".into());
    }
    let caps = json!({
        "browserName": "chrome",
        "pageLoadStrategy": "normal",
        "goog:chromeOptions": {"binary": capture::config::default_chromium().display().to_string(), "args": args},
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(driver)
        .await
        .unwrap()
}

/// One capture as `shoot::run` did it before this work, step by step, plus alternatives.
async fn one(c: &Client, url: &str, origin: &str, t: &mut Times) {
    let all = Instant::now();
    t.time(
        "1 update_timeouts",
        c.update_timeouts(TimeoutConfiguration::new(
            Some(Duration::from_secs(10)),
            Some(Duration::from_secs(30)),
            Some(Duration::ZERO),
        )),
    )
    .await
    .unwrap();
    t.time(
        "2 CDP setDeviceMetricsOverride",
        cdp(
            c,
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
        ),
    )
    .await;
    t.time(
        "3 CDP setEmulatedMedia",
        cdp(
            c,
            "Emulation.setEmulatedMedia",
            json!({"media": "", "features": [{"name": "prefers-color-scheme", "value": "light"}]}),
        ),
    )
    .await;
    t.time("4 goto (page load)", c.goto(url)).await.unwrap();
    t.time(
        "5 executeScript (navigation check)",
        c.execute(
            "const n = performance.getEntriesByType('navigation')[0]; return [document.URL, n && n.responseStatus];",
            vec![],
        ),
    )
    .await
    .unwrap();
    let png = t
        .time("6 W3C screenshot (PNG, incl. base64)", c.screenshot())
        .await
        .unwrap();
    t.record("= capture, before (steps 1-6)", all);
    // Alternatives for step 6.
    for (name, params) in [
        ("6a CDP png", json!({"format": "png"})),
        (
            "6b CDP png optimizeForSpeed",
            json!({"format": "png", "optimizeForSpeed": true}),
        ),
        ("6c CDP jpeg q80", json!({"format": "jpeg", "quality": 80})),
        ("6d CDP webp q80", json!({"format": "webp", "quality": 80})),
    ] {
        let v = t.time(name, cdp(c, "Page.captureScreenshot", params)).await;
        let b = Instant::now();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().unwrap())
            .unwrap();
        t.record(
            match name {
                "6a CDP png" => "   base64 decode of 6a",
                _ => "   base64 decode (others)",
            },
            b,
        );
        assert!(bytes.len() > 1000);
    }
    // Rust re-encoding of the PNG (the old jpeg/webp path).
    let (p1, p2) = (png.clone(), png.clone());
    let e = Instant::now();
    let img = tokio::task::spawn_blocking(move || {
        image::load_from_memory_with_format(&p1, image::ImageFormat::Png).unwrap()
    })
    .await
    .unwrap();
    t.record("7a Rust PNG decode", e);
    let e = Instant::now();
    tokio::task::spawn_blocking(move || {
        use image::ImageEncoder;
        let rgb = img.to_rgb8();
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .write_image(
                rgb.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        let mut out = Vec::new();
        let rgba = img.to_rgba8();
        let e2 = Instant::now();
        image::codecs::webp::WebPEncoder::new_lossless(&mut out)
            .write_image(
                rgba.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgba8,
            )
            .unwrap();
        e2.elapsed()
    })
    .await
    .unwrap();
    t.record("7b Rust jpeg+webp encode", e);
    drop(p2);
    // Isolation, the old way.
    let r = Instant::now();
    t.time("8 dismiss_alert", c.dismiss_alert()).await.ok();
    t.time("9 goto about:blank", c.goto("about:blank"))
        .await
        .unwrap();
    t.time("10 CDP clearBrowserCookies", clear_cookies(c)).await;
    t.time("11 CDP clearDataForOrigin", clear(c, origin, "all"))
        .await;
    t.record("= reset, before (steps 8-11)", r);
}

/// Cheaper ways to isolate, each followed by the next capture's page load (which a reset
/// may slow down, e.g. by forcing a new renderer process).
async fn reset_variants(c: &Client, url: &str, origin: &str, t: &mut Times) {
    // R2: navigate through CDP (no WebDriver load wait), clear the same things.
    c.goto(url).await.unwrap();
    let r = Instant::now();
    t.time(
        "R2a CDP Page.navigate about:blank",
        cdp(c, "Page.navigate", json!({"url": "about:blank"})),
    )
    .await;
    clear_cookies(c).await;
    t.time(
        "R2b clearDataForOrigin (listed types)",
        clear(c, origin, LISTED_TYPES),
    )
    .await;
    t.record("= R2 reset (CDP navigate + clear)", r);
    t.time("R2c goto after R2", c.goto(url)).await.unwrap();
    // R3: the reset as `Session::reset` does it now: a navigation the page starts, the URL
    // check (WebDriver waits for that navigation first), cookies, the listed storage types.
    let r = Instant::now();
    t.time(
        "R3a script: clear storage, location.replace(about:blank)",
        c.execute(
            "try { sessionStorage.clear(); } catch (e) {} try { localStorage.clear(); } catch (e) {} \
             location.replace('about:blank'); return null;",
            vec![],
        ),
    )
    .await
    .unwrap();
    t.time(
        "R3b current_url (waits for the blank page)",
        c.current_url(),
    )
    .await
    .unwrap();
    t.time("R3d clearBrowserCookies", clear_cookies(c)).await;
    t.time(
        "R3e clearDataForOrigin (listed types)",
        clear(c, origin, &format!("{LISTED_TYPES},websql")),
    )
    .await;
    t.record("= R3 reset, before (Session::reset, WebDriver script)", r);
    t.time("R3c goto after R3", c.goto(url)).await.unwrap();
    // R6: R3 with the script as one CDP `Runtime.evaluate` (what `Session::reset` does now).
    let r = Instant::now();
    t.time(
        "R6a CDP Runtime.evaluate: clear storage, location.replace(about:blank)",
        cdp(
            c,
            "Runtime.evaluate",
            json!({"expression": "(() => { try { sessionStorage.clear(); } catch (e) {} try { localStorage.clear(); } catch (e) {} location.replace('about:blank'); return null; })()", "returnByValue": true}),
        ),
    )
    .await;
    let blank = t
        .time(
            "R6b current_url (waits for the blank page)",
            c.current_url(),
        )
        .await
        .unwrap();
    assert_eq!(blank.as_str(), "about:blank");
    clear_cookies(c).await;
    clear(c, origin, &format!("{LISTED_TYPES},websql")).await;
    t.record("= R6 reset, after (Session::reset, CDP script)", r);
    t.time("R6c goto after R6", c.goto(url)).await.unwrap();
    let r = Instant::now();
    cdp(c, "Network.clearBrowserCache", json!({})).await;
    t.record("R4 Network.clearBrowserCache", r);
    // R5: a fresh tab per capture (a new renderer, nothing of the old page's tab), the old
    // tab closed, the per-tab settings set again, cookies and the origin's storage cleared.
    let r = Instant::now();
    let old = c.window().await.unwrap();
    let fresh = t
        .time("R5a new window (tab)", c.new_window(true))
        .await
        .unwrap();
    t.time("R5b close the old tab", c.close_window())
        .await
        .unwrap();
    t.time(
        "R5c switch to the new tab",
        c.switch_to_window(fresh.handle),
    )
    .await
    .unwrap();
    let s = Instant::now();
    cdp(
        c,
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": "window.x = 1;"}),
    )
    .await;
    cdp(c, "Network.enable", json!({})).await;
    cdp(
        c,
        "Network.setCacheDisabled",
        json!({"cacheDisabled": true}),
    )
    .await;
    cdp(
        c,
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
    )
    .await;
    t.record("R5d per-tab settings (4 CDP commands)", s);
    clear_cookies(c).await;
    clear(c, origin, &format!("{LISTED_TYPES},websql")).await;
    t.record("= R5 reset, fresh tab", r);
    drop(old);
    t.time("R5e goto after R5", c.goto(url)).await.unwrap();
    t.time(
        "5b CDP Runtime.evaluate (navigation check)",
        cdp(
            c,
            "Runtime.evaluate",
            json!({"expression": "(() => { const n = performance.getEntriesByType('navigation')[0]; return [document.URL, n && n.responseStatus]; })()", "returnByValue": true}),
        ),
    )
    .await;
}

/// The other isolation, a browser context per capture, needs `Target.createBrowserContext`,
/// which chromedriver's `goog/cdp/execute` refuses (it runs on the page's target, where the
/// browser-wide `Target` domain answers "Not allowed"). Shown once, as a fact of the run.
async fn context_allowed(c: &Client) -> String {
    match c
        .issue_cmd(Cdp(
            json!({"cmd": "Target.createBrowserContext", "params": {}}),
        ))
        .await
    {
        Ok(v) => format!("allowed ({v})"),
        Err(e) => format!("refused: {e}"),
    }
}

fn main() {
    support::run(20, |n, addr| async move {
        let url = format!("http://{addr}/");
        let origin = format!("http://{addr}");
        let driver = capture::Chromedriver::start("/usr/bin/chromedriver".as_ref())
            .await
            .unwrap();
        let driver_url = driver.url().to_owned();
        let proxy = Proxy::start(
            "127.0.0.1".parse().unwrap(),
            Arc::new(TargetPolicy::allow_private()),
        )
        .await
        .unwrap();
        let mut columns = Vec::new();
        for via_proxy in [false, true] {
            let c = open(&driver_url, via_proxy.then(|| proxy.addr())).await;
            let mut t = Times::default();
            let _lease = proxy.lease();
            for i in 0..n + 2 {
                let mut scratch = Times::default();
                let into = if i < 2 { &mut scratch } else { &mut t };
                one(&c, &url, &origin, into).await;
                reset_variants(&c, &url, &origin, into).await;
            }
            eprintln!("Target.createBrowserContext: {}", context_allowed(&c).await);
            c.close().await.ok();
            columns.push(t);
        }
        driver.stop().await;
        println!("| step | median ms, direct | median ms, through the proxy |");
        println!("|---|---|---|");
        for step in columns[0].0.keys() {
            let f = |t: &Times| t.median(step).map_or("n/a".into(), |m| format!("{m:.1}"));
            println!("| {step} | {} | {} |", f(&columns[0]), f(&columns[1]));
        }
    });
}
