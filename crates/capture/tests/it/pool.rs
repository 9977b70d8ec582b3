//! Pool behaviour: bounded queue, recycling, shutdown, start-up failures, and cleanup when
//! the owner panics.

use crate::common;

use std::time::Duration;

use capture::{CaptureConfig, CaptureService};
use common::{assert_error, local_config, opts, shoot, start_fixture, start_service};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_captures_succeed_or_get_busy() {
    let fx = start_fixture();
    let svc = start_service(CaptureConfig {
        queue_capacity: 3,
        max_uses_per_session: 2,
        ..local_config(2)
    });
    let url = fx.url("/");
    let mut handles = Vec::new();
    for _ in 0..20 {
        let svc = svc.clone();
        let o = opts(&[("url", &url), ("width", "320"), ("height", "240")]);
        handles.push(tokio::spawn(async move { svc.capture(&o).await }));
    }
    let (mut ok, mut busy) = (0, 0);
    for h in handles {
        match h.await.unwrap() {
            Ok(shot) => {
                assert_eq!((shot.width, shot.height), (320, 240));
                ok += 1;
            }
            Err(e) => {
                assert_error(&e, "BUSY", 503);
                assert!(e.retry_after_secs().unwrap() >= 1);
                busy += 1;
            }
        }
    }
    assert_eq!(ok + busy, 20);
    assert!(ok >= 2, "ok={ok}");
    assert!(busy >= 1, "busy={busy}");
    let stats = svc.stats();
    assert_eq!(stats.captures_started, ok as u64);
    assert_eq!(stats.busy_rejections, busy as u64);
    // Sessions are recycled after two uses each.
    assert!(
        stats.sessions_opened as usize >= ok / 2,
        "{stats:?} for {ok} captures"
    );

    let driver = svc.webdriver_url();
    svc.shutdown().await;
    let err = svc.capture(&opts(&[("url", &url)])).await.unwrap_err();
    assert_eq!(err.code(), "SHUT_DOWN");
    let port: u16 = driver.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "chromedriver still listens after shutdown"
    );
}

/// The concurrent test above cannot tell recycling from prewarming; on a pool of one, five
/// captures with `max_uses_per_session = 2` need three sessions.
#[tokio::test]
async fn a_session_is_replaced_after_max_uses() {
    let fx = start_fixture();
    let svc = start_service(CaptureConfig {
        max_uses_per_session: 2,
        ..local_config(1)
    });
    let o = opts(&[("url", &fx.url("/")), ("width", "320"), ("height", "240")]);
    for _ in 0..5 {
        svc.capture(&o).await.unwrap();
    }
    let stats = svc.stats();
    assert_eq!(stats.captures_started, 5);
    assert!(stats.sessions_opened >= 3, "{stats:?}");
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_waited_longer_than_the_queue_timeout_is_busy() {
    let fx = start_fixture();
    let svc = start_service(CaptureConfig {
        queue_timeout_ms: 300,
        ..local_config(1)
    });
    let slow = {
        let svc = svc.clone();
        let o = opts(&[("url", &fx.url("/slow")), ("timeout", "1")]);
        tokio::spawn(async move { svc.capture(&o).await })
    };
    // Let the slow capture take the only session; the next job waits behind it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = shoot(&svc, &fx, "/", &[]).await.unwrap_err();
    assert_eq!(err.code(), "BUSY", "{err}");
    assert!(err.retry_after_secs().unwrap() >= 1);
    let slow = slow.await.unwrap().unwrap_err();
    assert_eq!(slow.code(), "TIMEOUT", "{slow}");
    let stats = svc.stats();
    assert_eq!((stats.captures_started, stats.busy_rejections), (1, 1));
    svc.shutdown().await;
}

#[test]
fn a_missing_browser_fails_start_with_install_advice() {
    let err = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(CaptureService::start(CaptureConfig {
                chromium_path: Some("/nonexistent/chromium".into()),
                ..Default::default()
            }))
    })
    .join()
    .unwrap()
    .unwrap_err();
    assert_eq!(err.code(), "BROWSER_UNAVAILABLE");
    assert!(
        err.to_string()
            .contains("apt-get install chromium chromium-driver"),
        "{err}"
    );
}

#[test]
fn browsers_end_when_the_owner_panics() {
    common::require_browser();
    let fx = start_fixture();
    let url = fx.url("/");
    let (tx, rx) = std::sync::mpsc::channel();
    let owner = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let svc = CaptureService::start(CaptureConfig {
                pool_size: 1,
                allow_private_targets: true,
                ..Default::default()
            })
            .await
            .unwrap();
            svc.capture(&opts(&[("url", &url)])).await.unwrap();
            tx.send(svc.webdriver_url()).unwrap();
            // Give the test a moment to look at the live processes, then fail hard.
            tokio::time::sleep(Duration::from_millis(500)).await;
            panic!("simulated failure while the service is in use");
        })
    });
    let driver = rx.recv().unwrap();
    let pgid = common::chromedriver_pid(&driver).expect("chromedriver is running");
    assert!(
        common::group_members(pgid) >= 2,
        "chromedriver and chromium run"
    );
    assert!(owner.join().is_err(), "the owner thread panicked");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while common::group_members(pgid) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} browser processes outlived their owner",
            common::group_members(pgid)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_dead_chromedriver_is_restarted() {
    let fx = start_fixture();
    let svc = start_service(local_config(1));
    let o = opts(&[("url", &fx.url("/"))]);
    svc.capture(&o).await.unwrap();
    let before = svc.webdriver_url();
    let pid = common::chromedriver_pid(&before).expect("chromedriver runs");
    // Kill our own chromedriver (by pid) as a crash would.
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut failures = Vec::new();
    loop {
        match svc.capture(&o).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    matches!(
                        e.code(),
                        "BROWSER_CRASH" | "BROWSER_UNAVAILABLE" | "INTERNAL"
                    ),
                    "{e}"
                );
                failures.push(e.code());
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recovered: {failures:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(
        svc.webdriver_url(),
        before,
        "a new chromedriver was started"
    );
    // The old group (chromium of the dead chromedriver) is gone.
    assert_eq!(common::group_members(pid), 0);
    svc.shutdown().await;
}

/// Page-level failures (dialogs, a missing element, a target's 404, a name that does not
/// resolve) are the request's fault: the session that met them is healthy and is kept.
/// Before the fix every dialog answered INTERNAL and cost a new browser.
#[tokio::test]
async fn page_level_failures_keep_the_session() {
    let fx = start_fixture();
    let svc = start_service(local_config(1));
    let green = "style='margin:0;background:rgb(0,128,0)'";
    let dialogs = [
        format!("<body {green}><script>alert('hi')</script>x</body>"),
        format!("<body {green}><script>if (confirm('ok?')) document.title='yes'</script>x</body>"),
        format!("<body {green}><script>prompt('name?', 'x')</script>x</body>"),
        format!("<body {green}><script>addEventListener('load', () => alert('late'))</script>x</body>"),
        format!("<body {green}><script>setTimeout(() => alert('timer'), 10)</script>x</body>"),
        format!("<body {green}><script>onbeforeunload = e => {{ e.preventDefault(); return 'stay'; }}</script>x</body>"),
        format!("<body {green}><script>alert(1); alert(2); confirm(3); prompt(4)</script>x</body>"),
        // A dialog from a fresh frame's window, which the guard script may not reach.
        format!("<body {green}>x<script>const f = document.createElement('iframe'); f.style.display = 'none'; document.body.appendChild(f); f.contentWindow.alert.call(window, 'a'); f.contentWindow.confirm('b'); f.contentWindow.alert('c');</script></body>"),
    ];
    for _round in 0..2 {
        for html in &dialogs {
            let shot = svc
                .capture(&opts(&[
                    ("html", html),
                    ("width", "100"),
                    ("height", "50"),
                    ("delay", "50"),
                ]))
                .await
                .unwrap_or_else(|e| panic!("{html}: {e} ({})", e.code()));
            let img = image::load_from_memory(&shot.bytes).unwrap();
            assert_eq!(img.to_rgb8().get_pixel(90, 40).0, [0, 128, 0], "{html}");
        }
        // A dialog while waiting for a selector, and with a selector capture.
        let html = format!("<body {green}><script>setTimeout(() => {{ alert('x'); document.body.innerHTML += '<p id=late>late</p>' }}, 100)</script></body>");
        svc.capture(&opts(&[("html", &html), ("waitForSelector", "#late")]))
            .await
            .unwrap();
        let html = format!("<body {green}><div id=box style='width:20px;height:10px'></div><script>alert('x')</script></body>");
        svc.capture(&opts(&[("html", &html), ("selector", "#box")]))
            .await
            .unwrap();
        for (o, code) in [
            (opts(&[("url", &fx.url("/404"))]), "TARGET_HTTP_ERROR"),
            (
                opts(&[(
                    "url",
                    &(fx.url("/redirect?to=") + "http://nowhere.invalid/"),
                )]),
                "DNS_FAILURE",
            ),
            (
                opts(&[("url", &fx.url("/")), ("selector", "#nope")]),
                "SELECTOR_NOT_FOUND",
            ),
        ] {
            let err = svc.capture(&o).await.unwrap_err();
            assert_eq!(err.code(), code, "{err}");
        }
    }
    // A page that never stops opening dialogs (from a fresh frame, around the guard) cannot
    // be captured, but it does not break the browser either.
    let endless = format!("<body {green}>x<script>const f = document.createElement('iframe'); document.body.appendChild(f); const w = f.contentWindow; setInterval(() => w.alert('again'), 1);</script></body>");
    let err = svc
        .capture(&opts(&[("html", &endless), ("timeout", "3")]))
        .await;
    match &err {
        Ok(_) => {}
        Err(e) => assert!(matches!(e.code(), "PAGE_ERROR" | "TIMEOUT"), "{e}"),
    }
    // A page slower than the budget is a timeout; the browser recovers and is kept.
    let err = shoot(&svc, &fx, "/slow", &[("timeout", "1")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), "TIMEOUT", "{err}");
    shoot(&svc, &fx, "/", &[]).await.unwrap();
    let stats = svc.stats();
    assert_eq!(stats.captures_started, 2 * (dialogs.len() as u64 + 5) + 3);
    assert_eq!(
        stats.sessions_opened, 1,
        "a healthy session was replaced after a page-level error: {stats:?}"
    );
    svc.shutdown().await;
}

/// Chromium's own background traffic (update checks, safe browsing, search engine
/// preconnects...) never leaves through the capture proxy: an idle browser sends nothing
/// the proxy forwards, and during captures of a page without subresources every request
/// the proxy sees is one the page's server received.
#[tokio::test]
async fn only_captures_go_through_the_proxy() {
    let fx = start_fixture();
    let svc = start_service(local_config(1));
    // A freshly started browser, idle for a few seconds.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let idle = svc.stats();
    assert_eq!(
        idle.proxy_requests, 0,
        "the idle browser used the proxy: {idle:?}"
    );
    let o = opts(&[("url", &fx.url("/")), ("width", "320"), ("height", "200")]);
    for _ in 0..3 {
        svc.capture(&o).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = svc.stats();
    assert_eq!(
        after.proxy_requests as usize,
        fx.total_hits(),
        "requests other than the page's went through the proxy: {after:?}"
    );
    if after.proxy_refused_idle > 0 {
        println!(
            "the browser tried the proxy {} times outside captures (refused)",
            after.proxy_refused_idle
        );
    }
    svc.shutdown().await;
}
