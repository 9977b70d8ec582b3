//! Every page option against the real browser: each test shows the option's effect on the
//! image (a pixel, a size, a missing element) or on what the target received.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use capture::proxy::{Proxy, ProxyOutcome, ProxyRules};
use capture::{CaptureOptions, Captured, RawCaptureOptions, TargetPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::common::{assert_error, listen, read_head, request_target, respond, shared};

pub(crate) const GREEN: [u8; 3] = [0, 128, 0];
pub(crate) const WHITE: [u8; 3] = [255, 255, 255];

/// A fixture server that records the head of every request, by path.
pub(crate) struct Pages {
    pub(crate) addr: SocketAddr,
    heads: Arc<Mutex<Vec<(String, String, std::time::Instant)>>>,
}

impl Pages {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    /// The same server under another host name.
    fn other_host_url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.addr.port())
    }
    /// The heads (lower-cased) of the requests for `path`.
    pub(crate) fn heads(&self, path: &str) -> Vec<String> {
        self.heads
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, h, _)| h.to_ascii_lowercase())
            .collect()
    }
    /// When `path` was last asked for.
    fn last_asked(&self, path: &str) -> Option<std::time::Instant> {
        self.heads
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(p, _, _)| p == path)
            .map(|(_, _, t)| *t)
    }
}

fn red_png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(100, 100, image::Rgb([255, 0, 0]));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn doc(style: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><style>html,body{{margin:0;height:100%;background:#fff}}{style}</style></head><body>{body}</body></html>"
    )
}

/// The page for `path`, given the request head: (content type, body, delay before answering).
fn page(path: &str, head: &str, port: u16) -> (&'static str, Vec<u8>, u64) {
    let html = |s: String| ("text/html", s.into_bytes(), 0);
    let lower = head.to_ascii_lowercase();
    match path {
        "/plain" => html(doc("", "")),
        "/transparent" => html(
            "<!doctype html><html><head><style>html,body{margin:0;background:transparent}</style></head><body></body></html>".into(),
        ),
        "/box" => html(doc(
            "#box{position:absolute;left:50px;top:60px;width:200px;height:100px;background:#c00}",
            "<div id=\"box\"></div>",
        )),
        "/cover" => html(doc(
            ".cover{position:fixed;left:0;top:0;width:100%;height:100%;background:#f00}",
            "<div id=\"promo\" class=\"cover\"></div>",
        )),
        "/banner" => html(doc(
            "#onetrust-consent-sdk{position:fixed;left:0;top:0;width:100%;height:100%;background:#f00}",
            "<div id=\"onetrust-consent-sdk\">We use cookies</div>",
        )),
        "/ad-slot" => html(doc(
            "ins{display:block;position:fixed;left:0;top:0;width:100%;height:100%;background:#f00}",
            "<ins class=\"adsbygoogle\"></ins>",
        )),
        "/ua" => html(doc(
            "",
            "<script>if (navigator.userAgent.includes('ShotTest/1.0')) document.body.style.background = 'rgb(0,128,0)';</script>",
        )),
        "/tz" => html(doc(
            "",
            "<script>if (Intl.DateTimeFormat().resolvedOptions().timeZone === 'Asia/Tokyo' && new Date(0).getTimezoneOffset() === -540) document.body.style.background = 'rgb(0,128,0)';</script>",
        )),
        "/motion" => html(doc(
            "@media (prefers-reduced-motion: reduce){html,body{background:rgb(0,128,0)}}",
            "",
        )),
        // Green when the request carried the test header and the test cookie; it also
        // loads an image from another host name of the same server.
        "/echo" => {
            let mut bg = "#fff";
            if lower.contains("\r\nx-test: yes") && lower.contains("flavour=oat") {
                bg = "rgb(0,128,0)";
            }
            html(format!(
                "<!doctype html><html><head><style>html,body{{margin:0;height:100%;background:{bg}}}</style></head><body><img src=\"http://localhost:{port}/other.png\"></body></html>"
            ))
        }
        "/other.png" | "/slow.png" => ("image/png", red_png(), if path == "/slow.png" { 3000 } else { 0 }),
        // The image arrives 3 s after the document.
        "/slow-image" => html(doc(
            "img{position:absolute;left:0;top:0;width:100px;height:100px}",
            "<img src=\"/slow.png\">",
        )),
        // A request 100 ms after load that takes 800 ms; the page turns green after it.
        "/late-fetch" => html(doc(
            "",
            "<script>addEventListener('load', () => setTimeout(() => fetch('/api').then(r => r.text()).then(() => { document.body.style.background = 'rgb(0,128,0)'; }), 100));</script>",
        )),
        "/api" => ("text/plain", b"ok".to_vec(), 800),
        // 2000 px tall; when its end comes into view it grows by 3000 px more, ending in green.
        "/lazy" => html(
            "<!doctype html><html><head><style>body{margin:0}div{height:2000px;background:#fff}#end{height:10px}.g{background:rgb(0,128,0)}</style></head><body><div></div><p id=\"end\"></p><script>new IntersectionObserver((es, o) => { if (es.some(e => e.isIntersecting)) { o.disconnect(); const d = document.createElement('div'); d.style.height = '3000px'; d.className = 'g'; document.body.appendChild(d); } }).observe(document.getElementById('end'));</script></body></html>".into(),
        ),
        "/too-tall" => html(
            "<!doctype html><html><head><style>body{margin:0}</style></head><body><div style=\"height:20000px\"></div></body></html>".into(),
        ),
        _ => ("text/html", b"no such page".to_vec(), 0),
    }
}

pub(crate) fn pages() -> &'static Pages {
    static PAGES: OnceLock<Pages> = OnceLock::new();
    PAGES.get_or_init(|| {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let h = Arc::clone(&heads);
        let addr = listen(move |mut s| {
            let h = Arc::clone(&h);
            async move {
                let Some(head) = read_head(&mut BufReader::new(&mut s)).await else {
                    return;
                };
                let port = s.local_addr().unwrap().port();
                let path = request_target(&head).split('?').next().unwrap_or("/");
                h.lock()
                    .unwrap()
                    .push((path.to_owned(), head.clone(), std::time::Instant::now()));
                let (ctype, body, delay) = page(path, &head, port);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                respond(&mut s, 200, &format!("Content-Type: {ctype}\r\n"), &body).await;
            }
        });
        Pages { addr, heads }
    })
}

/// Options from JSON (so lists and objects can be given), with the page's URL.
pub(crate) fn opts_json(url: &str, mut extra: serde_json::Value) -> CaptureOptions {
    extra["url"] = serde_json::json!(url);
    let raw: RawCaptureOptions = serde_json::from_value(extra).unwrap();
    CaptureOptions::parse(raw).unwrap_or_else(|e| panic!("bad test options: {e}"))
}

async fn shot(path: &str, extra: serde_json::Value) -> Result<Captured, capture::CaptureError> {
    let (svc, _) = shared();
    let mut extra = extra;
    if extra.get("width").is_none() {
        extra["width"] = serde_json::json!(400);
        extra["height"] = serde_json::json!(300);
    }
    svc.capture(&opts_json(&pages().url(path), extra)).await
}

pub(crate) fn rgba_at(c: &Captured, x: u32, y: u32) -> [u8; 4] {
    image::load_from_memory(&c.bytes)
        .unwrap()
        .to_rgba8()
        .get_pixel(x, y)
        .0
}

pub(crate) fn rgb_at(c: &Captured, x: u32, y: u32) -> [u8; 3] {
    let [r, g, b, _] = rgba_at(c, x, y);
    [r, g, b]
}

/// The capture of `path` with `option` fails with `code` and suggests `status`.
async fn refused(
    path: &str,
    option: serde_json::Value,
    code: &str,
    status: u16,
) -> capture::CaptureError {
    let err = shot(path, option).await.unwrap_err();
    assert_error(&err, code, status);
    err
}

/// The colour in the middle of the 400x300 capture of `path` with `option`.
async fn middle(path: &str, option: serde_json::Value) -> [u8; 3] {
    rgb_at(&shot(path, option).await.unwrap(), 200, 150)
}

/// `css` is injected, `js` runs before the capture (a promise it returns is awaited), and a
/// script that throws is a `400` that says what it threw.
#[tokio::test]
async fn css_and_js_change_the_page_and_a_throwing_script_is_a_400() {
    const TURN_GREEN: &str = "document.body.style.background = 'rgb(0, 128, 0)';";
    for (option, colour) in [
        (serde_json::json!({}), WHITE),
        (
            serde_json::json!({"css": "html, body { background: rgb(0, 128, 0) !important; }"}),
            GREEN,
        ),
        (serde_json::json!({ "js": TURN_GREEN }), GREEN),
        (
            serde_json::json!({
                "js": format!("return new Promise(r => setTimeout(() => {{ {TURN_GREEN} r(); }}, 200));")
            }),
            GREEN,
        ),
    ] {
        assert_eq!(middle("/plain", option.clone()).await, colour, "{option}");
    }
    let throws = serde_json::json!({"js": "throw new Error('nope');"});
    let err = refused("/plain", throws, "INVALID_REQUEST", 400).await;
    assert!(err.to_string().contains("nope"), "{err}");
}

#[tokio::test]
async fn hide_selectors_cookie_banners_and_ad_slots_disappear() {
    for (path, option) in [
        (
            "/cover",
            serde_json::json!({"hideSelectors": ["#nothing", ".cover"]}),
        ),
        ("/banner", serde_json::json!({"blockCookieBanners": true})),
        ("/ad-slot", serde_json::json!({"blockAds": true})),
    ] {
        let shown = middle(path, serde_json::json!({})).await;
        assert_eq!(shown, [255, 0, 0], "{path} without");
        let hidden = middle(path, option.clone()).await;
        assert_eq!(hidden, WHITE, "{path} with {option}");
    }
}

#[tokio::test]
async fn user_agent_time_zone_and_reduced_motion_are_emulated_and_then_reset() {
    for (path, option) in [
        (
            "/ua",
            serde_json::json!({"userAgent": "Mozilla/5.0 ShotTest/1.0"}),
        ),
        ("/tz", serde_json::json!({"timeZone": "Asia/Tokyo"})),
        ("/motion", serde_json::json!({"reducedMotion": true})),
    ] {
        let with = middle(path, option.clone()).await;
        assert_eq!(with, GREEN, "{path} with {option}");
        // Both sessions of the pool, later, without the option: back to the default.
        for _ in 0..2 {
            let without = middle(path, serde_json::json!({})).await;
            assert_eq!(without, WHITE, "{path} after {option}");
        }
    }
    let ua = pages().heads("/ua");
    assert!(
        ua.iter()
            .any(|h| h.contains("user-agent: mozilla/5.0 shottest/1.0")),
        "the request carried the user agent: {ua:?}"
    );
    let err = shot("/tz", serde_json::json!({"timeZone": "Mars/Olympus_Mons"}))
        .await
        .unwrap_err();
    assert_error(&err, "INVALID_REQUEST", 400);
}

#[tokio::test]
async fn omit_background_is_transparent() {
    let opaque = shot("/transparent", serde_json::json!({})).await.unwrap();
    assert_eq!(rgba_at(&opaque, 200, 150), [255, 255, 255, 255]);
    for format in ["png", "webp"] {
        let clear = shot(
            "/transparent",
            serde_json::json!({"omitBackground": true, "format": format}),
        )
        .await
        .unwrap();
        assert_eq!(rgba_at(&clear, 200, 150)[3], 0, "{format}");
    }
    // The next capture is opaque again.
    let opaque = shot("/transparent", serde_json::json!({})).await.unwrap();
    assert_eq!(rgba_at(&opaque, 200, 150)[3], 255);
}

#[tokio::test]
async fn clip_captures_the_rectangle() {
    for (scale, factor) in [(1.0, 1), (2.0, 2)] {
        let c = shot(
            "/box",
            serde_json::json!({"clip": "50,60,200,100", "deviceScaleFactor": scale}),
        )
        .await
        .unwrap();
        let img = image::load_from_memory(&c.bytes).unwrap();
        assert_eq!((img.width(), img.height()), (200 * factor, 100 * factor));
        assert_eq!(rgb_at(&c, 5, 5), [0xcc, 0, 0]);
        assert_eq!(rgb_at(&c, 195 * factor, 95 * factor), [0xcc, 0, 0]);
    }
    // Beyond the viewport (it is 400x300 here).
    let c = shot(
        "/box",
        serde_json::json!({"clip": {"x": 300, "y": 250, "width": 300, "height": 200}}),
    )
    .await
    .unwrap();
    let img = image::load_from_memory(&c.bytes).unwrap();
    assert_eq!((img.width(), img.height()), (300, 200));
}

#[tokio::test]
async fn headers_and_cookies_reach_the_target_host_only() {
    let p = pages();
    let c = shot(
        "/echo",
        serde_json::json!({"headers": {"X-Test": "yes"}, "cookies": {"flavour": "oat"}}),
    )
    .await
    .unwrap();
    assert_eq!(rgb_at(&c, 390, 290), GREEN, "the target saw both");
    // The page's image comes from the same server under another host name: it got neither.
    let other = p.heads("/other.png");
    assert!(!other.is_empty(), "the other host was asked for its image");
    for head in &other {
        assert!(head.contains("host: localhost:"), "{head}");
        assert!(!head.contains("x-test"), "a header leaked: {head}");
        assert!(!head.contains("flavour"), "a cookie leaked: {head}");
    }
    // The next capture sends neither.
    let c = shot("/echo", serde_json::json!({})).await.unwrap();
    assert_eq!(rgb_at(&c, 390, 290), WHITE);
    let last = p.heads("/echo").pop().unwrap();
    assert!(
        !last.contains("x-test") && !last.contains("flavour"),
        "{last}"
    );
    // Sent to the other host name as target, they go there (and only there).
    let (svc, _) = shared();
    let c = svc
        .capture(&opts_json(
            &p.other_host_url("/echo"),
            serde_json::json!({"width": 400, "height": 300, "headers": ["X-Test: yes"], "cookies": ["flavour=oat"]}),
        ))
        .await
        .unwrap();
    assert_eq!(rgb_at(&c, 390, 290), GREEN);
}

#[tokio::test]
async fn wait_until_networkidle_waits_for_late_requests() {
    let load = shot("/late-fetch", serde_json::json!({})).await.unwrap();
    assert_eq!(rgb_at(&load, 200, 150), WHITE, "load does not wait");
    let idle = shot(
        "/late-fetch",
        serde_json::json!({"waitUntil": "networkidle"}),
    )
    .await
    .unwrap();
    assert_eq!(rgb_at(&idle, 200, 150), GREEN, "networkidle waits");
}

#[tokio::test]
async fn wait_until_domcontentloaded_does_not_wait_for_images() {
    let dcl = shot(
        "/slow-image",
        serde_json::json!({"waitUntil": "domcontentloaded"}),
    )
    .await
    .unwrap();
    // From the document's request (so a wait for a free session does not count).
    let dcl_took = pages().last_asked("/slow-image").unwrap().elapsed();
    assert_eq!(rgb_at(&dcl, 50, 50), WHITE, "the image had not arrived");
    assert!(dcl_took < Duration::from_millis(2500), "{dcl_took:?}");
    let load = shot("/slow-image", serde_json::json!({})).await.unwrap();
    assert_eq!(
        rgb_at(&load, 50, 50),
        [255, 0, 0],
        "load waits for the image"
    );
}

#[tokio::test]
async fn full_page_scrolls_lazy_content_in_and_refuses_what_is_too_tall() {
    let c = shot(
        "/lazy",
        serde_json::json!({"width": 400, "height": 300, "fullPage": true}),
    )
    .await
    .unwrap();
    let img = image::load_from_memory(&c.bytes).unwrap();
    assert!(img.height() >= 5000, "height {}", img.height());
    assert_eq!(rgb_at(&c, 200, img.height() - 20), GREEN);
    let full = serde_json::json!({"width": 400, "height": 300, "fullPage": true});
    let err = refused("/too-tall", full, "PAGE_TOO_TALL", 422).await;
    assert!(err.to_string().contains("20000"), "{err}");
}

/// The proxy refuses the hosts of the ad list, before resolving them, only when asked.
#[tokio::test]
async fn the_proxy_blocks_listed_ad_hosts_when_asked() {
    let proxy = Proxy::start(
        "127.0.0.1".parse().unwrap(),
        Arc::new(TargetPolicy::allow_private()),
    )
    .await
    .unwrap();
    let ask = |host: &'static str| {
        let addr = proxy.addr();
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let req = format!("GET http://{host}/ad.js HTTP/1.1\r\nHost: {host}\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out).await;
            out
        }
    };
    let _lease = proxy.lease();
    proxy.set_rules(ProxyRules {
        block_ads: true,
        ..Default::default()
    });
    let answer = ask("ads.doubleclick.net").await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.contains("x-capture-proxy-error: blocked-ad"),
        "{answer}"
    );
    let events = proxy.events();
    assert!(
        matches!(&events[..], [e] if e.host == "ads.doubleclick.net" && matches!(e.outcome, ProxyOutcome::Forbidden(_))),
        "{events:?}"
    );
    // Without blockAds the host is looked up like any other (here it does not resolve or is
    // not reachable: anything but the list's refusal).
    proxy.set_rules(ProxyRules::default());
    let answer = ask("ads.doubleclick.net").await;
    assert!(!answer.contains("blocked-ad"), "{answer}");
}
