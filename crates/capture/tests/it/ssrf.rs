//! The SSRF guard end to end, with `allow_private_targets = false`.

use crate::common;

use std::sync::OnceLock;

use capture::{CaptureConfig, CaptureService};
use common::{opts, start_fixture, start_service, Fixture};

/// A strict service that allows exactly one private address: fixture `allowed`. Fixture
/// `secret` stands for an internal host that must never be reached.
fn strict() -> &'static (CaptureService, Fixture, Fixture) {
    static S: OnceLock<(CaptureService, Fixture, Fixture)> = OnceLock::new();
    S.get_or_init(|| {
        let allowed = start_fixture();
        let secret = start_fixture();
        let svc = start_service(CaptureConfig {
            pool_size: 1,
            allow_private_targets: false,
            allowed_private_addresses: vec![allowed.addr],
            ..Default::default()
        });
        (svc, allowed, secret)
    })
}

#[tokio::test]
async fn forbidden_targets_never_reach_a_browser() {
    // No prewarm: a browser session would only open if a capture got through the guard.
    let svc = start_service(CaptureConfig {
        pool_size: 1,
        prewarm: false,
        ..Default::default()
    });
    let (port, _refusing) = common::closed_port();
    let table = [
        "http://169.254.169.254/".to_string(),
        "http://169.254.169.254/latest/meta-data/iam/".into(),
        "http://[::1]/".into(),
        "http://0.0.0.0/".into(),
        format!("http://127.0.0.1:{port}/"),
        "http://10.0.0.1/".into(),
        "http://192.168.0.1/".into(),
        "http://172.16.5.4/".into(),
        "http://100.64.0.1/".into(),
        "http://[::ffff:127.0.0.1]/".into(),
        "http://[::ffff:a9fe:a9fe]/".into(),
        "http://[fd00::1]/".into(),
        "http://[fe80::1]/".into(),
        "http://0x7f000001/".into(),
        "http://017700000001/".into(),
        "file:///etc/passwd".into(),
        "ftp://example.com/".into(),
        "http://localhost/".into(),
        format!("http://localhost:{port}/"),
    ];
    for url in &table {
        let err = svc.capture(&opts(&[("url", url)])).await.unwrap_err();
        assert_eq!(err.code(), "FORBIDDEN_TARGET", "{url}: {err}");
        assert_eq!(err.http_status(), 400);
        assert!(err.is_client_fault());
    }
    let stats = svc.stats();
    assert_eq!(stats.sessions_opened, 0, "a browser was started: {stats:?}");
    assert_eq!(stats.captures_started, 0);
    assert_eq!(stats.refused_targets, table.len() as u64);
    svc.shutdown().await;
}

#[tokio::test]
async fn redirect_into_a_forbidden_address_is_refused() {
    let (svc, allowed, secret) = strict();
    // Sanity: the allowed fixture can be captured, and redirects within it work.
    svc.capture(&opts(&[("url", &allowed.url("/"))]))
        .await
        .unwrap();
    let to_self = allowed.url("/redirect?to=") + &allowed.url("/");
    svc.capture(&opts(&[("url", &to_self)])).await.unwrap();

    let to_secret = allowed.url("/redirect?to=") + &secret.url("/");
    let err = svc
        .capture(&opts(&[("url", &to_secret)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "FORBIDDEN_TARGET", "{err}");
    assert!(allowed.hits("/redirect") >= 2);
    assert_eq!(secret.total_hits(), 0, "the forbidden host was reached");

    // Through a CONNECT tunnel (https) the proxy refuses the same way.
    let to_secret_tls = allowed.url("/redirect?to=") + &format!("https://{}/", secret.addr);
    let err = svc
        .capture(&opts(&[("url", &to_secret_tls)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "FORBIDDEN_TARGET", "{err}");
    assert_eq!(secret.total_hits(), 0, "the forbidden host was reached");

    let to_metadata = allowed.url("/redirect?to=http://169.254.169.254/latest/meta-data/");
    let err = svc
        .capture(&opts(&[("url", &to_metadata)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "FORBIDDEN_TARGET", "{err}");
}

#[tokio::test]
async fn forbidden_subresources_are_not_fetched() {
    let (svc, allowed, secret) = strict();
    // Positive control: an allowed subresource is fetched.
    let page = allowed.url("/with-image?src=") + &allowed.url("/pixel.png");
    svc.capture(&opts(&[("url", &page)])).await.unwrap();
    assert!(
        allowed.hits("/pixel.png") >= 1,
        "the page's image was never requested"
    );

    let page = allowed.url("/with-image?src=") + &secret.url("/pixel.png");
    let shot = svc.capture(&opts(&[("url", &page)])).await.unwrap();
    assert!(shot.bytes.starts_with(b"\x89PNG"));
    // The html form goes through the same proxy.
    let html = format!("<p>x</p><img src=\"{}\">", secret.url("/pixel.png"));
    svc.capture(&opts(&[("html", &html)])).await.unwrap();
    assert_eq!(secret.total_hits(), 0, "the forbidden host was reached");
}

/// A refusal found by the proxy (a redirect, through plain http and a CONNECT tunnel) says
/// that the target is not allowed, never what its name resolved to.
#[tokio::test]
async fn refusals_after_a_redirect_do_not_disclose_dns_answers() {
    let (svc, allowed, secret) = strict();
    let port = secret.addr.port();
    for to in [
        format!("http://localhost:{port}/"),
        format!("https://localhost:{port}/"),
    ] {
        let url = allowed.url("/redirect?to=") + &to;
        let err = svc.capture(&opts(&[("url", &url)])).await.unwrap_err();
        assert_eq!(err.code(), "FORBIDDEN_TARGET", "{to}: {err}");
        let msg = err.to_string();
        assert!(msg.contains("private or reserved"), "{to}: {msg}");
        assert!(
            !msg.contains("127.0.0.1") && !msg.contains("::1"),
            "{to}: {msg:?} discloses the DNS answer"
        );
    }
    // The first URL, refused before any browser.
    let err = svc
        .capture(&opts(&[("url", &format!("http://localhost:{port}/"))]))
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("127.0.0.1"), "{err}");
    assert_eq!(secret.total_hits(), 0, "the forbidden host was reached");
}
