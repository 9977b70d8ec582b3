//! Real browser, real chromedriver: every capture mode and every failure class.
//! These tests never skip: without chromium they fail and say how to install it.

use crate::common;

use capture::{CaptureError, Captured};
use common::{assert_error, opts, shared, shoot, ELEMENT_H, ELEMENT_W};

fn decode(bytes: &[u8]) -> image::DynamicImage {
    image::load_from_memory(bytes).expect("the capture decodes as an image")
}

/// Captures `path` of the shared fixture server with `pairs`; it must succeed.
async fn ok(path: &str, pairs: &[(&str, &str)]) -> Captured {
    let (svc, fx) = shared();
    shoot(svc, fx, path, pairs).await.unwrap()
}

/// Captures `path` of the shared fixture server with `pairs`; it must fail.
async fn fails(path: &str, pairs: &[(&str, &str)]) -> CaptureError {
    let (svc, fx) = shared();
    shoot(svc, fx, path, pairs).await.unwrap_err()
}

/// The capture decoded, after checking that it is `size` (width, height) pixels.
#[track_caller]
fn decode_sized(bytes: &[u8], size: (u32, u32)) -> image::DynamicImage {
    let img = decode(bytes);
    assert_eq!((img.width(), img.height()), size);
    img
}

#[tokio::test]
async fn viewport_size_times_scale() {
    let shot = ok("/", &[("width", "640"), ("height", "400")]).await;
    assert_eq!(shot.content_type, "image/png");
    let img = decode_sized(&shot.bytes, (640, 400));
    assert_eq!((shot.width, shot.height), (640, 400));
    // The fixture's background is #3366cc.
    let p = img.to_rgb8().get_pixel(600, 380).0;
    assert_eq!(p, [0x33, 0x66, 0xcc]);

    let shot = ok(
        "/",
        &[
            ("width", "320"),
            ("height", "200"),
            ("deviceScaleFactor", "2"),
        ],
    )
    .await;
    decode_sized(&shot.bytes, (640, 400));
}

#[tokio::test]
async fn full_page_is_taller_than_the_viewport() {
    let shot = ok(
        "/tall",
        &[("width", "500"), ("height", "400"), ("fullPage", "true")],
    )
    .await;
    let img = decode(&shot.bytes);
    assert_eq!(img.width(), 500);
    assert!(img.height() >= 3000, "full page height {}", img.height());
}

#[tokio::test]
async fn element_capture_has_the_element_size() {
    for scale in ["1", "2"] {
        let shot = ok(
            "/element",
            &[("selector", "#box"), ("deviceScaleFactor", scale)],
        )
        .await;
        let s: u32 = scale.parse().unwrap();
        let img = decode_sized(&shot.bytes, (ELEMENT_W * s, ELEMENT_H * s));
        let p = img.to_rgb8().get_pixel(10, 10).0;
        assert_eq!(p, [0xcc, 0, 0], "the box is red");
    }
    let err = fails("/element", &[("selector", "#nope")]).await;
    assert_error(&err, "SELECTOR_NOT_FOUND", 422);
}

#[tokio::test]
async fn dark_mode_changes_a_known_pixel() {
    let light = ok("/dark", &[("width", "300"), ("height", "200")]).await;
    let dark = ok(
        "/dark",
        &[("width", "300"), ("height", "200"), ("darkMode", "1")],
    )
    .await;
    let px = |b: &[u8]| decode(b).to_rgb8().get_pixel(150, 100).0;
    assert_eq!(px(&light.bytes), [255, 255, 255]);
    assert_eq!(px(&dark.bytes), [0, 0, 0]);
    // The emulated scheme stays on a session until it changes: both sessions of the pool,
    // after a dark capture, are light again.
    for _ in 0..2 {
        let again = ok("/dark", &[("width", "300"), ("height", "200")]).await;
        assert_eq!(px(&again.bytes), [255, 255, 255], "light after dark");
    }
}

#[tokio::test]
async fn pdf_jpeg_and_webp() {
    let pdf = ok("/", &[("format", "pdf")]).await;
    assert!(pdf.bytes.starts_with(b"%PDF"));
    assert_eq!(pdf.content_type, "application/pdf");

    for (format, ctype) in [("jpeg", "image/jpeg"), ("webp", "image/webp")] {
        let shot = ok(
            "/",
            &[
                ("format", format),
                ("quality", "60"),
                ("width", "400"),
                ("height", "300"),
            ],
        )
        .await;
        assert_eq!(shot.content_type, ctype);
        let img = decode(&shot.bytes);
        assert_eq!((img.width(), img.height()), (400, 300), "{format}");
    }
}

#[tokio::test]
async fn html_input_and_wait_for_selector_and_delay() {
    let (svc, _) = shared();
    let shot = svc
        .capture(&opts(&[
            (
                "html",
                "<html><body style='margin:0;background:rgb(0,128,0)'>hi</body></html>",
            ),
            ("width", "200"),
            ("height", "100"),
            ("delay", "50"),
        ]))
        .await
        .unwrap();
    let img = decode_sized(&shot.bytes, (200, 100));
    assert_eq!(img.to_rgb8().get_pixel(190, 90).0, [0, 128, 0]);

    ok("/late", &[("waitForSelector", "#late")]).await;
    let err = fails("/", &[("waitForSelector", "#never"), ("timeout", "2")]).await;
    assert_eq!(err.code(), "SELECTOR_NOT_FOUND", "{err}");
}

#[tokio::test]
async fn a_delay_longer_than_the_timeout_is_a_timeout_in_the_delay() {
    let (svc, _) = shared();
    let err = svc
        .capture(&opts(&[
            ("html", "<p>x</p>"),
            ("delay", "10000"),
            // Leaves the page time to load on a busy machine, so the budget ends in the delay.
            ("timeout", "3"),
        ]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, capture::CaptureError::Timeout { timeout_secs: 3, stage } if stage == "delay"),
        "{err:?}"
    );
}

#[tokio::test]
async fn dns_failure() {
    let (svc, _) = shared();
    let err = svc
        .capture(&opts(&[("url", "http://no-such-host.invalid/")]))
        .await
        .unwrap_err();
    assert_error(&err, "DNS_FAILURE", 502);
}

#[tokio::test]
async fn connection_refused() {
    let (svc, _) = shared();
    let (port, _refusing) = common::closed_port();
    let err = svc
        .capture(&opts(&[("url", &format!("http://127.0.0.1:{port}/"))]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "CONNECTION_REFUSED", "{err}");
}

#[tokio::test]
async fn target_http_errors_carry_the_status() {
    for (path, status, http) in [("/404", 404, 422), ("/500", 500, 502)] {
        let err = fails(path, &[]).await;
        assert_eq!(err.code(), "TARGET_HTTP_ERROR", "{err}");
        assert!(
            matches!(err, capture::CaptureError::TargetHttpError { status: s, .. } if s == status),
            "{err:?}"
        );
        assert_eq!(err.http_status(), http);
    }
}

#[tokio::test]
async fn slow_page_times_out() {
    let started = std::time::Instant::now();
    let err = fails("/slow", &[("timeout", "2")]).await;
    assert_error(&err, "TIMEOUT", 504);
    assert!(
        started.elapsed().as_secs() < 10,
        "took {:?}",
        started.elapsed()
    );
    // The pool recovers: the next capture works.
    ok("/", &[]).await;
}

/// The pre-check only resolves the first URL; failures after a redirect are classified from
/// the proxy's log and the page the browser ended on (plain http and https/CONNECT), and the
/// message names the hop that failed, not the URL that redirected there.
#[tokio::test]
async fn failures_after_a_redirect_are_classified_in_the_browser() {
    let (svc, fx) = shared();
    let (port, _refusing) = common::closed_port();
    let refused = format!("127.0.0.1:{port}");
    let cases = [
        (
            "http://gone.invalid/".to_string(),
            "DNS_FAILURE",
            "gone.invalid",
        ),
        (
            "https://gone.invalid/".to_string(),
            "DNS_FAILURE",
            "gone.invalid",
        ),
        (
            format!("http://{refused}/"),
            "CONNECTION_REFUSED",
            &*refused,
        ),
        (
            format!("https://{refused}/"),
            "CONNECTION_REFUSED",
            &*refused,
        ),
        (fx.url("/404"), "TARGET_HTTP_ERROR", "/404"),
    ];
    for (to, code, names) in cases {
        let url = fx.url("/redirect?to=") + &to;
        let err = svc.capture(&opts(&[("url", &url)])).await.unwrap_err();
        assert_eq!(err.code(), code, "redirect to {to}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(names) && !msg.contains("/redirect"),
            "redirect to {to}: {msg:?} should name {names:?}"
        );
    }
}

/// The selector table the option check is tested with (`tests/it/selectors.txt`) is what
/// Chromium itself does: every `valid` entry is accepted by `document.querySelector`, every
/// `invalid` one throws, every `stricter` one (refused by us on purpose) is accepted. The
/// page paints one pixel per selector, green when it parsed, red when it threw, and the
/// row is captured as an element.
#[tokio::test]
async fn the_selector_table_matches_chromium() {
    let (svc, _) = shared();
    let table: Vec<(&str, &str)> = include_str!("selectors.txt")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once('\t').expect("verdict<TAB>selector"))
        .collect();
    let selectors: Vec<&str> = table.iter().map(|(_, s)| *s).collect();
    let html = format!(
        "<body style='margin:0'><div id=row style='display:flex;height:4px;width:max-content'></div><script>\
         for (const s of {}) {{ let ok = true; try {{ document.querySelector(s); }} catch (e) {{ ok = false; }} \
         const d = document.createElement('div'); \
         d.style.cssText = 'flex:none;width:1px;height:4px;background:' + (ok ? '#00ff00' : '#ff0000'); \
         document.getElementById('row').appendChild(d); }}</script></body>",
        serde_json::to_string(&selectors).unwrap()
    );
    let shot = svc
        .capture(&opts(&[("html", &html), ("selector", "#row")]))
        .await
        .unwrap();
    let img = decode(&shot.bytes).to_rgb8();
    assert_eq!(img.width() as usize, table.len(), "one pixel per selector");
    let mut wrong = Vec::new();
    for (i, (verdict, s)) in table.iter().enumerate() {
        let chromium_accepts = match img.get_pixel(i as u32, 2).0 {
            [0, 255, 0] => true,
            [255, 0, 0] => false,
            other => panic!("pixel {i} ({s:?}) is {other:?}"),
        };
        let expected = *verdict != "invalid";
        if chromium_accepts != expected {
            wrong.push(format!(
                "{verdict}\t{s:?}: Chromium accepts it: {chromium_accepts}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "the table disagrees with Chromium:\n{}",
        wrong.join("\n")
    );
}
