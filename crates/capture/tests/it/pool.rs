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

/// A tiny HTTP server for the isolation and fallback tests: fixed pages by path, a count of
/// requests per path, the `Cookie` header each request carried, and the reports pages send
/// to `/report?...`.
struct Site {
    addr: std::net::SocketAddr,
    log: RequestLog,
}

/// (path, query, `Cookie` header) of every request, in order.
type RequestLog = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Option<String>)>>>;

impl Site {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    fn hits(&self, path: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|(p, _, _)| p == path).count()
    }
    /// Query strings of the requests to `path`.
    fn queries(&self, path: &str) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, q, _)| q.clone())
            .collect()
    }
    fn cookies(&self, path: &str) -> Vec<Option<String>> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, _, c)| c.clone())
            .collect()
    }
}

/// Sets every kind of state a page can leave behind, then reports what it managed to set.
const SETS_EVERYTHING: &str = r#"<!doctype html><html><head><script src="/asset.js"></script></head><body>
<script>
(async () => {
  const set = [];
  document.cookie = 'jscookie=1; max-age=3600; path=/'; if (document.cookie.includes('jscookie')) set.push('cookie');
  localStorage.setItem('k', 'v'); if (localStorage.length) set.push('localStorage');
  sessionStorage.setItem('k', 'v'); if (sessionStorage.length) set.push('sessionStorage');
  try {
    await new Promise((ok, ko) => { const r = indexedDB.open('leak', 1);
      r.onupgradeneeded = () => r.result.createObjectStore('s');
      r.onsuccess = () => { const tx = r.result.transaction('s', 'readwrite'); tx.objectStore('s').put('v', 'k');
        tx.oncomplete = () => { r.result.close(); ok(); }; tx.onerror = ko; };
      r.onerror = ko; });
    set.push('indexedDB');
  } catch (e) {}
  try { const c = await caches.open('leak'); await c.put('/cached', new Response('x')); set.push('cacheStorage'); } catch (e) {}
  try { await navigator.serviceWorker.register('/sw.js'); await navigator.serviceWorker.ready; set.push('serviceWorker'); } catch (e) {}
  if (window.assetLoaded) set.push('httpCache');
  await fetch('/report?set=' + set.join(','));
  const d = document.createElement('div'); d.id = 'done'; document.body.appendChild(d);
})();
</script></body></html>"#;

/// Reads every kind of state and reports what it found; green when it found none.
const READS_EVERYTHING: &str = r#"<!doctype html><html><head><script src="/asset.js"></script>
<style>html,body{margin:0;height:100%;background:#fff}</style></head><body>
<script>
(async () => {
  const found = [];
  if (document.cookie) found.push('cookie:' + document.cookie);
  if (localStorage.length) found.push('localStorage');
  if (sessionStorage.length) found.push('sessionStorage');
  try { if ((await indexedDB.databases()).length) found.push('indexedDB'); } catch (e) { found.push('indexedDB?' + e); }
  try { if ((await caches.keys()).length) found.push('cacheStorage'); } catch (e) { found.push('cacheStorage?' + e); }
  try { if ((await navigator.serviceWorker.getRegistrations()).length || navigator.serviceWorker.controller) found.push('serviceWorker'); } catch (e) { found.push('serviceWorker?' + e); }
  await fetch('/report?found=' + found.join(','));
  document.body.style.background = found.length ? '#f00' : '#0f0';
  const d = document.createElement('div'); d.id = 'done'; document.body.appendChild(d);
})();
</script></body></html>"#;

fn site_page(path: &str) -> (&'static str, &'static str, String) {
    match path {
        "/set" => ("text/html", "Set-Cookie: servercookie=1; Max-Age=3600; Path=/\r\n", SETS_EVERYTHING.into()),
        "/read" => ("text/html", "", READS_EVERYTHING.into()),
        // Cacheable for a day: a second request means the HTTP cache did not keep it.
        "/asset.js" => ("text/javascript", "Cache-Control: public, max-age=86400\r\n", "window.assetLoaded = true;".into()),
        "/sw.js" => ("text/javascript", "", "self.addEventListener('fetch', () => {});".into()),
        // Fine detail in many colours, so that the jpeg quality shows in the file size.
        "/noise" => ("text/html", "", "<!doctype html><html><body style=\"margin:0\"><canvas id=c width=640 height=400></canvas><script>const c = document.getElementById('c').getContext('2d'); let s = 7; for (let y = 0; y < 400; y += 4) for (let x = 0; x < 640; x += 4) { s = (s * 1103515245 + 12345) % 2147483648; c.fillStyle = '#' + (s % 16777216).toString(16).padStart(6, '0'); c.fillRect(x, y, 4, 4); }</script></body></html>".into()),
        "/report" => ("text/plain", "", String::new()),
        _ => ("text/html", "", "<!doctype html><html><body style=\"margin:0;background:#0000ff\"></body></html>".into()),
    }
}

fn start_site() -> Site {
    let log: RequestLog = std::sync::Arc::default();
    let shared = std::sync::Arc::clone(&log);
    let addr = common::listen(move |mut s| {
        let log = std::sync::Arc::clone(&shared);
        async move {
            let Some(head) = common::read_head(&mut tokio::io::BufReader::new(&mut s)).await else {
                return;
            };
            let cookie = head.split("\r\n").find_map(|h| {
                let (name, value) = h.split_once(':')?;
                name.eq_ignore_ascii_case("cookie")
                    .then(|| value.trim().to_owned())
            });
            let target = common::request_target(&head);
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            log.lock()
                .unwrap()
                .push((path.to_owned(), query.to_owned(), cookie));
            let (ctype, extra, body) = site_page(path);
            let headers = format!("Content-Type: {ctype}\r\n{extra}");
            common::respond(&mut s, 200, &headers, body.as_bytes()).await;
        }
    });
    Site { addr, log }
}

/// Isolation between customers: on one session (a pool of one, one browser for both
/// captures), a page that sets a cookie (from the server and from script), localStorage,
/// sessionStorage, an IndexedDB database, a Cache Storage entry, a service worker and a
/// cacheable script is followed by a page of the same origin that looks for each of them:
/// it finds none, its server sees no cookie, and the cacheable script is fetched again.
#[tokio::test]
async fn nothing_of_one_capture_is_visible_to_the_next() {
    let site = start_site();
    let svc = start_service(local_config(1));
    let wait = [
        ("waitForSelector", "#done"),
        ("width", "320"),
        ("height", "200"),
    ];
    let mut set = vec![("url", site.url("/set"))];
    set.extend(wait.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let set: Vec<(&str, &str)> = set.iter().map(|(k, v)| (*k, v.as_str())).collect();
    svc.capture(&opts(&set)).await.unwrap();
    assert_eq!(
        site.queries("/report"),
        vec![
            "set=cookie,localStorage,sessionStorage,indexedDB,cacheStorage,serviceWorker,httpCache"
        ],
        "the first page could not set everything, so the test would prove nothing"
    );
    for round in 0..2 {
        let read_url = site.url("/read");
        let mut read = vec![("url", read_url.as_str())];
        read.extend_from_slice(&wait);
        let shot = svc.capture(&opts(&read)).await.unwrap();
        let reports = site.queries("/report");
        assert_eq!(
            reports.last().unwrap(),
            "found=",
            "round {round}: {reports:?}"
        );
        let img = image::load_from_memory(&shot.bytes).unwrap();
        assert_eq!(
            img.to_rgb8().get_pixel(10, 10).0,
            [0, 255, 0],
            "round {round}"
        );
    }
    assert_eq!(
        site.cookies("/read"),
        vec![None, None],
        "the reading page's requests carried cookies"
    );
    assert_eq!(
        site.hits("/asset.js"),
        3,
        "a cacheable script was served from the previous capture's HTTP cache"
    );
    assert_eq!(
        svc.stats().sessions_opened,
        1,
        "both captures used one browser"
    );
    svc.shutdown().await;
}

fn size_of(svc_shot: &capture::Captured) -> usize {
    svc_shot.bytes.len()
}

/// jpeg quality reaches the encoder (a lower quality is a smaller file); png, jpeg and webp
/// come out in their format at the asked size.
async fn check_formats(svc: &CaptureService, site: &Site) {
    let url = site.url("/noise");
    let shot = |format: &'static str, quality: Option<&'static str>| {
        let url = url.clone();
        async move {
            let mut pairs = vec![
                ("url", url.as_str()),
                ("format", format),
                ("width", "640"),
                ("height", "400"),
            ];
            if let Some(q) = quality {
                pairs.push(("quality", q));
            }
            svc.capture(&opts(&pairs)).await.unwrap()
        }
    };
    let low = shot("jpeg", Some("10")).await;
    let high = shot("jpeg", Some("95")).await;
    assert!(low.bytes.starts_with(b"\xff\xd8\xff") && high.bytes.starts_with(b"\xff\xd8\xff"));
    assert!(
        size_of(&low) * 2 < size_of(&high),
        "jpeg q10 {} bytes, q95 {} bytes",
        size_of(&low),
        size_of(&high)
    );
    for (format, magic, ctype) in [
        ("png", &b"\x89PNG"[..], "image/png"),
        ("jpeg", &b"\xff\xd8\xff"[..], "image/jpeg"),
        ("webp", &b"RIFF"[..], "image/webp"),
    ] {
        let c = shot(format, None).await;
        assert!(c.bytes.starts_with(magic), "{format}");
        assert_eq!(c.content_type, ctype);
        assert_eq!((c.width, c.height), (640, 400), "{format}");
        let img = image::load_from_memory(&c.bytes).unwrap();
        assert_eq!((img.width(), img.height()), (640, 400), "{format}");
    }
}

/// The fourcc of a webp's image chunk (`VP8 ` lossy, `VP8L` lossless), walking the RIFF
/// chunks past `VP8X`, `ALPH` and the like.
fn webp_image_chunk(bytes: &[u8]) -> Vec<u8> {
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let fourcc = &bytes[at..at + 4];
        if fourcc == b"VP8 " || fourcc == b"VP8L" {
            return fourcc.to_vec();
        }
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 8 + len + len % 2;
    }
    panic!("no image chunk in the webp");
}

/// webp with a quality is lossy (a `VP8 ` chunk, the browser's encoder), its size follows
/// the quality, and it decodes to the viewport; without a quality it stays lossless (`VP8L`).
async fn check_lossy_webp(svc: &CaptureService, site: &Site) {
    let url = site.url("/noise");
    let webp = |quality: Option<&'static str>| {
        let url = url.clone();
        async move {
            let mut pairs = vec![
                ("url", url.as_str()),
                ("format", "webp"),
                ("width", "640"),
                ("height", "400"),
            ];
            pairs.extend(quality.map(|q| ("quality", q)));
            svc.capture(&opts(&pairs)).await.unwrap()
        }
    };
    let chunk = |c: &capture::Captured| {
        assert!(
            c.bytes.starts_with(b"RIFF") && &c.bytes[8..12] == b"WEBP",
            "not a webp"
        );
        assert_eq!(c.content_type, "image/webp");
        let img = image::load_from_memory(&c.bytes).unwrap();
        assert_eq!((img.width(), img.height()), (640, 400));
        webp_image_chunk(&c.bytes)
    };
    let low = webp(Some("10")).await;
    let high = webp(Some("95")).await;
    let lossless = webp(None).await;
    assert_eq!(chunk(&low), b"VP8 ");
    assert_eq!(chunk(&high), b"VP8 ");
    assert_eq!(chunk(&lossless), b"VP8L");
    assert!(
        size_of(&low) * 2 < size_of(&high),
        "webp q10 {} bytes, q95 {} bytes",
        size_of(&low),
        size_of(&high)
    );
}

#[tokio::test]
async fn the_browser_encodes_each_format_and_jpeg_quality_shows() {
    let site = start_site();
    let svc = start_service(local_config(1));
    check_formats(&svc, &site).await;
    check_lossy_webp(&svc, &site).await;
    svc.shutdown().await;
}

/// A WebDriver endpoint without chromedriver's `goog/cdp/execute` (as some Selenium Grids
/// are): a relay in front of a real chromedriver answers `unknown command` for it. Every
/// format still works through the W3C screenshot and encoding in Rust, jpeg quality too,
/// and the page is really captured (its colour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cdp_the_w3c_fallback_captures_every_format() {
    let site = start_site();
    let driver = common::standalone_chromedriver();
    let relay = common::no_cdp_relay(driver.url());
    let svc = start_service(CaptureConfig {
        webdriver_url: Some(relay),
        chromium_path: Some(capture::config::default_chromium()),
        ..local_config(1)
    });
    let shot = svc
        .capture(&opts(&[("url", &site.url("/blue"))]))
        .await
        .unwrap();
    let img = image::load_from_memory(&shot.bytes).unwrap();
    assert_eq!((img.width(), img.height()), (1280, 800));
    assert_eq!(img.to_rgb8().get_pixel(100, 100).0, [0, 0, 255]);
    check_formats(&svc, &site).await;
    assert_eq!(svc.stats().sessions_opened, 1);
    svc.shutdown().await;
    drop(driver);
}
