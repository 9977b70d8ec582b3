//! A remote WebDriver: a standalone chromedriver on a port of its own, as a Selenium Grid
//! node would be, and capture services configured with its URL (`webdriver_url`), whose
//! browsers reach the capture proxy over the network. Every option works there; in front
//! of it, a relay that knows no CDP (as a Grid without vendor endpoints) shows each class of
//! option that cannot work on such an endpoint, refused by name with `400 INVALID_REQUEST`.

use std::sync::OnceLock;

use capture::{CaptureConfig, CaptureError, CaptureService, Captured, Chromedriver};
use serde_json::json;

use crate::common::{assert_error, no_cdp_relay, standalone_chromedriver, start_service};
use crate::https::{assert_shows_the_page, serve_tls, TestCa};
use crate::options::{opts_json, pages, rgb_at, rgba_at, GREEN, WHITE};

struct Remote {
    driver: Chromedriver,
    ca: TestCa,
    /// Configured with the chromedriver's URL.
    direct: CaptureService,
    /// Configured with the URL of a relay to it that answers no CDP command.
    without_cdp: CaptureService,
}

/// One chromedriver and the two services for the whole test binary.
fn remote() -> &'static Remote {
    static REMOTE: OnceLock<Remote> = OnceLock::new();
    REMOTE.get_or_init(|| {
        let driver = standalone_chromedriver();
        let ca = TestCa::new();
        let config = |url: String| CaptureConfig {
            webdriver_url: Some(url),
            pool_size: 1,
            allow_private_targets: true,
            default_timeout_secs: 20,
            trusted_spki_hashes: vec![ca.spki_hash.clone()],
            ..Default::default()
        };
        let direct = start_service(config(driver.url().to_owned()));
        let without_cdp = start_service(config(no_cdp_relay(driver.url())));
        Remote {
            driver,
            ca,
            direct,
            without_cdp,
        }
    })
}

/// A 400x300 capture of the option pages' `path` with `extra`.
async fn shoot(
    svc: &CaptureService,
    path: &str,
    extra: serde_json::Value,
) -> Result<Captured, CaptureError> {
    let mut extra = extra;
    extra["width"] = json!(400);
    extra["height"] = json!(300);
    svc.capture(&opts_json(&pages().url(path), extra)).await
}

/// `/echo` with a header and a cookie: its colour, green when the target received both.
async fn echo(svc: &CaptureService) -> [u8; 3] {
    let both = json!({"headers": {"X-Test": "yes"}, "cookies": {"flavour": "oat"}});
    rgb_at(&shoot(svc, "/echo", both).await.unwrap(), 390, 290)
}

/// The error names `field` (a `400 INVALID_REQUEST`).
#[track_caller]
fn assert_refused(err: &CaptureError, field: &str, what: &serde_json::Value) {
    assert_error(err, "INVALID_REQUEST", 400);
    match err {
        CaptureError::InvalidOptions(e) => assert_eq!(e.field(), field, "{what}"),
        other => panic!("{what}: {other}"),
    }
}

/// Through the standalone chromedriver every option works: the colour in the middle of
/// each page shows its effect; transparency, clip, full page, lossy webp and an https page
/// (through the proxy's CONNECT tunnel) too.
#[tokio::test]
async fn a_standalone_chromedriver_captures_with_every_option() {
    let r = remote();
    let svc = &r.direct;
    assert_eq!(
        svc.webdriver_url(),
        r.driver.url(),
        "no chromedriver of its own"
    );
    let before = svc.stats().proxy_requests;
    for (path, option, colour) in [
        ("/plain", json!({}), WHITE),
        (
            "/plain",
            json!({"css": "html, body { background: rgb(0, 128, 0) !important; }"}),
            GREEN,
        ),
        (
            "/plain",
            json!({"js": "document.body.style.background = 'rgb(0, 128, 0)';"}),
            GREEN,
        ),
        ("/cover", json!({"hideSelectors": [".cover"]}), WHITE),
        ("/banner", json!({"blockCookieBanners": true}), WHITE),
        ("/ad-slot", json!({"blockAds": true}), WHITE),
        (
            "/ua",
            json!({"userAgent": "Mozilla/5.0 ShotTest/1.0"}),
            GREEN,
        ),
        ("/tz", json!({"timeZone": "Asia/Tokyo"}), GREEN),
        ("/motion", json!({"reducedMotion": true}), GREEN),
        ("/late-fetch", json!({"waitUntil": "networkidle"}), GREEN),
    ] {
        let c = shoot(svc, path, option.clone()).await.unwrap();
        assert_eq!(rgb_at(&c, 200, 150), colour, "{path} with {option}");
    }
    assert_eq!(
        echo(svc).await,
        GREEN,
        "headers and cookies reached the target"
    );
    let c = shoot(svc, "/slow-image", json!({"waitUntil": "domcontentloaded"}))
        .await
        .unwrap();
    assert_eq!(
        rgb_at(&c, 50, 50),
        WHITE,
        "domcontentloaded did not wait for the image"
    );
    let c = shoot(svc, "/transparent", json!({"omitBackground": true}))
        .await
        .unwrap();
    assert_eq!(rgba_at(&c, 200, 150)[3], 0, "transparent");
    // A clip beyond the viewport.
    let c = shoot(svc, "/box", json!({"clip": "300,250,300,200"}))
        .await
        .unwrap();
    assert_eq!((c.width, c.height), (300, 200));
    let c = shoot(svc, "/lazy", json!({"fullPage": true}))
        .await
        .unwrap();
    assert!(c.height >= 5000, "lazy content scrolled in: {}", c.height);
    assert_eq!(rgb_at(&c, 200, c.height - 20), GREEN);
    let c = shoot(svc, "/plain", json!({"format": "webp", "quality": 50}))
        .await
        .unwrap();
    assert_eq!(
        (c.content_type, c.width, c.height),
        ("image/webp", 400, 300)
    );
    let tls = serve_tls(&r.ca);
    let url = format!("https://localhost:{}/", tls.port());
    let c = svc
        .capture(&opts_json(&url, json!({"width": 400, "height": 300})))
        .await
        .unwrap();
    assert_shows_the_page(&c, &url);
    assert!(
        svc.stats().proxy_requests > before + 15,
        "the remote browser used the capture proxy: {:?}",
        svc.stats()
    );
}

/// The capture options themselves work there too: an element at a device scale factor,
/// dark mode, waiting for a selector after a delay, jpeg with a quality, and pdf.
#[tokio::test]
async fn a_standalone_chromedriver_takes_every_kind_of_capture() {
    let svc = &remote().direct;
    let c = shoot(
        svc,
        "/box",
        json!({"selector": "#box", "deviceScaleFactor": 2}),
    )
    .await
    .unwrap();
    assert_eq!((c.width, c.height), (400, 200), "the box, twice as large");
    assert_eq!(rgb_at(&c, 200, 100), [0xcc, 0, 0]);
    let page = "<style>html,body{margin:0;height:100%;background:#fff}\
        @media (prefers-color-scheme: dark){html,body{background:#000}}</style>\
        <script>setTimeout(() => { const d = document.createElement('p'); d.id = 'late'; \
        document.body.appendChild(d); }, 300);</script>";
    let html = |extra: serde_json::Value| {
        let mut raw = extra;
        raw["html"] = json!(page);
        let raw: capture::RawCaptureOptions = serde_json::from_value(raw).unwrap();
        capture::CaptureOptions::parse(raw).unwrap()
    };
    let c = svc
        .capture(&html(
            json!({"darkMode": true, "waitForSelector": "#late", "delay": 50}),
        ))
        .await
        .unwrap();
    assert_eq!(rgb_at(&c, 10, 10), [0, 0, 0], "dark mode");
    let c = svc
        .capture(&html(json!({"format": "jpeg", "quality": 40})))
        .await
        .unwrap();
    assert_eq!(c.content_type, "image/jpeg");
    let c = svc.capture(&html(json!({"format": "pdf"}))).await.unwrap();
    assert!(c.bytes.starts_with(b"%PDF"), "a pdf");
}

/// Without CDP these still work: scripts, styles and hidden elements (WebDriver scripts),
/// what the proxy adds to plain http (headers, cookies) or waits for (network idle), a
/// clip inside the viewport (cropped), full page (lazy content scrolled in, too tall
/// refused).
#[tokio::test]
async fn without_cdp_page_scripts_proxy_options_clip_and_full_page_work() {
    let svc = &remote().without_cdp;
    let p = pages();
    for (path, option, colour) in [
        (
            "/plain",
            json!({"css": "html, body { background: rgb(0, 128, 0) !important; }"}),
            GREEN,
        ),
        ("/cover", json!({"hideSelectors": [".cover"]}), WHITE),
        ("/banner", json!({"blockCookieBanners": true}), WHITE),
        ("/late-fetch", json!({"waitUntil": "networkidle"}), GREEN),
    ] {
        let c = shoot(svc, path, option.clone()).await.unwrap();
        assert_eq!(rgb_at(&c, 200, 150), colour, "{path} with {option}");
    }
    let c = shoot(svc, "/box", json!({"clip": "50,60,200,100"}))
        .await
        .unwrap();
    let img = image::load_from_memory(&c.bytes).unwrap();
    assert_eq!((img.width(), img.height()), (200, 100));
    assert_eq!(rgb_at(&c, 100, 50), [0xcc, 0, 0]);
    // Headers and cookies reach the target (through the proxy) and not the other host.
    let before = p.heads("/other.png").len();
    assert_eq!(echo(svc).await, GREEN);
    let other = p.heads("/other.png");
    assert!(
        other.len() > before,
        "the other host was asked for its image"
    );
    for head in &other[before..] {
        assert!(
            !head.contains("x-test") && !head.contains("flavour"),
            "{head}"
        );
    }
    let c = shoot(svc, "/lazy", json!({"fullPage": true}))
        .await
        .unwrap();
    let img = image::load_from_memory(&c.bytes).unwrap();
    // Without scrolling the page would be 2,010 px. (The W3C fallback sizes the window, not
    // the viewport, to the page, so its image is short by the browser's own frame.)
    assert!(img.height() >= 4500, "height {}", img.height());
    let err = shoot(svc, "/too-tall", json!({"fullPage": true}))
        .await
        .unwrap_err();
    assert_error(&err, "PAGE_TOO_TALL", 422);
}

/// A capture of `/plain` with `option` on the endpoint without CDP is refused, naming `field`.
async fn refused_without_cdp(option: serde_json::Value, field: &str) {
    let err = shoot(&remote().without_cdp, "/plain", option.clone())
        .await
        .unwrap_err();
    assert_refused(&err, field, &option);
}

/// Emulation needs CDP: each such option is refused by name.
#[tokio::test]
async fn without_cdp_emulation_is_refused_by_name() {
    for (option, field) in [
        (json!({"userAgent": "x"}), "userAgent"),
        (json!({"timeZone": "UTC"}), "timeZone"),
        (json!({"reducedMotion": true}), "reducedMotion"),
        (json!({"omitBackground": true}), "omitBackground"),
        (json!({"waitUntil": "domcontentloaded"}), "waitUntil"),
    ] {
        refused_without_cdp(option, field).await;
    }
}

/// A clip beyond the viewport needs CDP's screenshot of the page.
#[tokio::test]
async fn without_cdp_a_clip_beyond_the_viewport_is_refused() {
    refused_without_cdp(json!({"clip": "300,200,200,200"}), "clip").await;
}

/// Lossy webp needs the browser's encoder: refused before the navigation.
#[tokio::test]
async fn without_cdp_lossy_webp_is_refused() {
    refused_without_cdp(json!({"format": "webp", "quality": 50}), "quality").await;
}

/// Cookies for an https url: the proxy cannot see into the tunnel, and without CDP the
/// browser cannot be given them.
#[tokio::test]
async fn without_cdp_cookies_for_an_https_url_are_refused() {
    let option = json!({"cookies": {"a": "b"}});
    let https = opts_json(&format!("https://{}/", pages().addr), option.clone());
    let err = remote().without_cdp.capture(&https).await.unwrap_err();
    assert_refused(&err, "cookies", &option);
    assert!(err.to_string().contains("cookies"), "{err}");
}
