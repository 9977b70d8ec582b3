//! The dashboard end to end, in a real Chromium driven through WebDriver (fantoccini):
//! controls are found by their accessible names (label text, button text, region and
//! caption names) as a person or a screen reader finds them. The app is served on a real
//! port over a fresh database, with demo payments paid on a real webhook-receiver, and
//! screenshots taken by a real browser pool. On SQLite and PostgreSQL.
//!
//! The journey also photographs every page at desktop (1280) and phone (375) width; with
//! `SHOTLEDGER_DASHBOARD_SHOTS=1` the pictures are written to `docs/dashboard/` (how the
//! checked-in ones were made), otherwise to a temporary folder.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use api_server::AppState;
use capture::{CaptureConfig, CaptureService, Chromedriver};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use settings::{Settings, Sources};

/// One browser: its own chromedriver (ended with every browser it started when dropped,
/// however the test ends) and a WebDriver session.
struct Browser {
    client: Client,
    _driver: Chromedriver,
    base: String,
}

impl Browser {
    async fn open(base: &str) -> Browser {
        let driver = Chromedriver::start(std::path::Path::new("/usr/bin/chromedriver"))
            .await
            .expect("chromedriver starts (apt-get install chromium chromium-driver)");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": capture::config::default_chromium().display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         "--hide-scrollbars", "--force-device-scale-factor=1"],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(driver.url())
            .await
            .expect("a browser session");
        Browser {
            client,
            _driver: driver,
            base: base.to_owned(),
        }
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    async fn xpath(&self, xpath: &str) -> Element {
        match self.client.find(Locator::XPath(xpath)).await {
            Ok(e) => e,
            Err(e) => panic!("no element {xpath} on {}: {e}", self.path().await),
        }
    }

    async fn count(&self, xpath: &str) -> usize {
        self.client
            .find_all(Locator::XPath(xpath))
            .await
            .unwrap()
            .len()
    }

    /// The control whose visible `<label>` says `text`.
    async fn labelled(&self, text: &str) -> Element {
        let label = self
            .xpath(&format!("//label[normalize-space()='{text}']"))
            .await;
        let id = label
            .attr("for")
            .await
            .unwrap()
            .expect("the label names its control");
        self.client
            .find(Locator::Id(&id))
            .await
            .unwrap_or_else(|e| panic!("label {text} names #{id}, missing: {e}"))
    }

    async fn fill(&self, label: &str, text: &str) {
        let input = self.labelled(label).await;
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    /// The button whose text (or `aria-label`) is `name`.
    async fn button(&self, name: &str) -> Element {
        self.xpath(&format!(
            "//button[(normalize-space()='{name}' and not(@aria-label)) or @aria-label='{name}']"
        ))
        .await
    }

    async fn has_button(&self, name: &str) -> bool {
        self.count(&format!(
            "//button[(normalize-space()='{name}' and not(@aria-label)) or @aria-label='{name}']"
        ))
        .await
            > 0
    }

    /// Clicks the button `name`, which submits a form, and waits for the next page.
    async fn click_button(&self, name: &str) {
        let button = self.button(name).await;
        self.click_to_next_page(button, name).await;
    }

    /// Clicks `element` and waits until another document has loaded.
    async fn click_to_next_page(&self, element: Element, what: &str) {
        self.js("window.samePage = true; return true").await;
        element.click().await.unwrap();
        self.until(
            30,
            &format!("the page after {what}"),
            "return window.samePage === undefined && document.readyState === 'complete'",
        )
        .await;
    }

    /// The region (a section) named by its heading `name`.
    fn region_xpath(name: &str) -> String {
        format!("//section[@aria-labelledby=//*[normalize-space()='{name}']/@id]")
    }

    async fn region(&self, name: &str) -> Element {
        self.xpath(&Self::region_xpath(name)).await
    }

    async fn has_region(&self, name: &str) -> bool {
        self.count(&Self::region_xpath(name)).await > 0
    }

    async fn text(&self, xpath: &str) -> String {
        self.xpath(xpath).await.text().await.unwrap()
    }

    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Waits (at most `secs`) until `script` returns `true`.
    async fn until(&self, secs: u64, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if self.js(script).await == Value::Bool(true) {
                return;
            }
            if Instant::now() >= deadline {
                let page = self
                    .js("return location.href + '\\n' + document.body.innerText")
                    .await;
                panic!(
                    "waited {secs}s for {what}; the page: {}",
                    page.as_str().unwrap_or("")
                );
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The balance the Balance region shows.
    async fn balance(&self) -> String {
        let region = self.region("Balance").await;
        let text = region.text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_suffix(" credits"))
            .unwrap_or_else(|| panic!("no balance in {text:?}"))
            .trim()
            .to_owned()
    }

    /// The page at desktop and phone width: no horizontal scrolling at either, and a
    /// picture of each.
    async fn photograph(&self, name: &str) {
        for (width, suffix) in [(1280u32, "desktop"), (375, "phone")] {
            self.client.set_window_size(width, 900).await.unwrap();
            let inner = self.js("return window.innerWidth").await;
            let scroll = self.js("return document.documentElement.scrollWidth").await;
            assert!(
                scroll.as_u64() <= inner.as_u64(),
                "{name} at {width}px scrolls sideways: {scroll} > {inner}"
            );
            // The whole page in one picture: the window as tall as the page.
            let height = self
                .js("return document.documentElement.scrollHeight")
                .await;
            let height = height.as_u64().unwrap_or(900).clamp(600, 4000) as u32;
            self.client.set_window_size(width, height).await.unwrap();
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(shots_dir().join(format!("{name}-{suffix}.png")), png).unwrap();
        }
        self.client.set_window_size(1280, 900).await.unwrap();
    }

    /// Presses `key` on whatever has the focus.
    async fn press(&self, key: Key) {
        let focused = self.client.active_element().await.unwrap();
        focused
            .send_keys(&char::from(key).to_string())
            .await
            .unwrap();
    }

    async fn focused_id(&self) -> String {
        let focused = self.client.active_element().await.unwrap();
        focused.attr("id").await.unwrap().unwrap_or_default()
    }
}

fn shots_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = if std::env::var("SHOTLEDGER_DASHBOARD_SHOTS").is_ok_and(|v| v == "1") {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard")
        } else {
            std::env::temp_dir().join(format!("dashboard-shots-{}", std::process::id()))
        };
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
    .clone()
}

/// A fixture page to capture, served on 127.0.0.1.
fn fixture_site() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_fixture(stream));
        }
    });
    format!("http://{addr}/")
}

fn serve_fixture(mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_or(true, |n| n == 0) || line == "\r\n" {
            break;
        }
    }
    let body = "<body style=\"margin:0;background:#e8f0fe;font:32px sans-serif\"><h1 style=\"padding:40px\">A page to capture</h1></body>";
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The settings of a world: demo payments, the browser back to `api_port` after paying,
/// demo checkouts on `receiver` (when known).
fn world_settings(api_port: u16, receiver: Option<&str>, cache: &std::path::Path) -> Settings {
    let mut env = vec![
        ("SHOTLEDGER__ADMIN__TOKEN".to_owned(), ADMIN.to_owned()),
        ("SHOTLEDGER__PAYMENTS__PROVIDER".into(), "demo".into()),
        (
            "SHOTLEDGER__POLAR__SUCCESS_URL".into(),
            format!("http://127.0.0.1:{api_port}/"),
        ),
        (
            "SHOTLEDGER__SERVER__PUBLIC_URL".into(),
            format!("http://127.0.0.1:{api_port}"),
        ),
        (
            "SHOTLEDGER__SCREENSHOTS__CACHE_DIR".into(),
            cache.display().to_string(),
        ),
    ];
    // Notifications may reach the test's own receiver on 127.0.0.1.
    env.push((
        "SHOTLEDGER__NOTIFICATIONS__ALLOW_PRIVATE_TARGETS".into(),
        "true".into(),
    ));
    if let Some(r) = receiver {
        env.push(("SHOTLEDGER__WEBHOOKS__PUBLIC_URL".into(), r.to_owned()));
    }
    Settings::load(Sources {
        env,
        ..Sources::default()
    })
    .expect("the test settings load")
}

/// The api-server on a real port (with payments and, when asked, a browser pool for
/// captures) and a webhook-receiver for its demo checkouts, over one fresh database.
struct World {
    server: LiveServer,
    _receiver: webhook_receiver::RunningReceiver,
    receiver_addr: std::net::SocketAddr,
    _db: TestDb,
    state: AppState,
    _cache: tempfile::TempDir,
}

impl World {
    async fn start(backend: &str, with_capture: bool) -> World {
        let db = TestDb::of(backend);
        let cache = tempfile::tempdir().unwrap();
        let port = free_port();
        let receiver_settings = world_settings(port, None, cache.path());
        let receiver_payments = startup::payments(&receiver_settings, db.store.clone()).unwrap();
        let receiver = webhook_receiver::spawn(receiver_payments).expect("the receiver starts");
        let settings = world_settings(port, Some(&receiver.url()), cache.path());
        let payments = Arc::new(startup::payments(&settings, db.store.clone()).unwrap());
        let mut state = AppState::new(db.store.clone(), settings, api_server::system_clock())
            .unwrap()
            .with_payments(payments);
        if with_capture {
            let service = CaptureService::start(CaptureConfig {
                pool_size: 1,
                allow_private_targets: true,
                default_timeout_secs: 30,
                ..CaptureConfig::default()
            })
            .await
            .expect("the capture service starts");
            state = state.with_capture(service);
        }
        let server = LiveServer::start_on(state.clone(), 2, port);
        World {
            receiver_addr: receiver.addr,
            server,
            _receiver: receiver,
            _db: db,
            state,
            _cache: cache,
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    fn api(&self, req: Req) -> Resp {
        self.server.send(&req)
    }

    async fn done(&self) {
        let report = self
            .api(Req::get("/admin/v1/verify").auth(&Auth::Admin))
            .expect(200);
        assert_eq!(report["ok"], true, "{report}");
        if let Some(c) = &self.state.capture {
            c.shutdown().await;
        }
    }
}

/// The session the browser holds, as a credential for the API, and its account's id.
async fn session_of(b: &Browser, w: &World, email: &str) -> (Auth, String) {
    let cookie = b.client.get_named_cookie("session").await.unwrap();
    let login = w
        .state
        .store
        .members()
        .login(email)
        .unwrap()
        .expect("the login exists");
    (
        Auth::Cookie(cookie.value().to_owned()),
        login.member.account_id.as_str().to_owned(),
    )
}

/// Sign up with the keyboard alone, keys shown once, a purchase watched without reload,
/// history paged, the chart, a screenshot with its cost, revoking a key.
async fn journey(backend: &'static str) {
    let w = World::start(backend, true).await;
    let b = Browser::open(&w.base()).await;
    let email = format!("journey-{backend}@example.com");

    // Signed out, the dashboard is the login page.
    b.goto("/").await;
    assert_eq!(b.path().await, "/login");
    b.photograph("login").await;

    // Sign up with the keyboard only: Tab to the Email field, type, Tab, type, Enter.
    b.goto("/signup").await;
    b.photograph("signup").await;
    let mut tabs = 0;
    while b.focused_id().await != "email" {
        b.press(Key::Tab).await;
        tabs += 1;
        assert!(tabs < 15, "Tab never reached the Email field");
    }
    b.press_text(&email).await;
    b.press(Key::Tab).await;
    assert_eq!(b.focused_id().await, "password");
    b.press_text(PASSWORD).await;
    b.press(Key::Tab).await;
    assert_eq!(
        b.client
            .active_element()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "Sign up",
        "the next stop is the Sign up button"
    );
    b.press(Key::Enter).await;
    b.until(
        30,
        "the overview",
        "return location.pathname === '/' && !!document.getElementById('balance')",
    )
    .await;
    assert_eq!(b.balance().await, "5", "the welcome bonus");
    let session = b.client.get_named_cookie("session").await.unwrap();
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(format!("{:?}", session.same_site()), "Some(Lax)");
    let (owner, id) = session_of(&b, &w, &email).await;
    assert_eq!(
        w.api(Req::get("/api/v1/credits").auth(&owner)).expect(200)["balance"],
        5
    );

    // A key: shown once in the region "New API key", working against the API.
    b.goto("/keys").await;
    b.fill("Key name", "ci").await;
    b.click_button("Create key").await;
    let region = b.region("New API key").await;
    let key = region
        .find(Locator::Id("new-key"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(key.starts_with("sk_live_") && key.len() == 72, "{key}");
    let secret = b.text("//*[@id='new-secret']").await;
    assert!(secret.starts_with("ss_"), "{secret}");
    assert!(
        b.button("Copy key").await.is_displayed().await.unwrap(),
        "the script shows the copy button"
    );
    b.photograph("keys-new").await;
    let api_key = Auth::Key(key.clone());
    assert_eq!(
        w.api(Req::get("/api/v1/credits").auth(&api_key))
            .expect(200)["balance"],
        5
    );
    // Reloaded: never shown again.
    b.goto("/keys").await;
    assert!(!b.has_region("New API key").await);
    let source = b.client.source().await.unwrap();
    assert!(!source.contains(&key) && !source.contains(&secret));
    assert!(source.contains(&key[..12]), "the list shows the prefix");
    b.photograph("keys").await;

    // Buy Starter; come back before the payment is confirmed: "on their way", then the
    // credits land while the page stays (no reload).
    b.goto("/").await;
    b.photograph("overview").await;
    b.click_button("Buy Starter").await;
    let receiver_port = w.receiver_addr.port();
    b.until(
        30,
        "the checkout page",
        &format!(
            "return location.port === '{receiver_port}' && document.readyState === 'complete'"
        ),
    )
    .await;
    let checkout = b.client.current_url().await.unwrap();
    assert_eq!(checkout.port(), Some(w.receiver_addr.port()), "{checkout}");
    assert!(checkout.path().starts_with("/demo/checkout/"), "{checkout}");
    b.goto("/").await;
    let notice = b.text("//*[@id='purchase-notice']").await;
    assert!(
        notice.contains("Payment received, credits on their way"),
        "{notice}"
    );
    assert_eq!(b.balance().await, "5");
    b.js("window.notReloaded = true; return true").await;
    // The payment goes through in another tab, as it were: the receiver's demo Pay button.
    let pay = http(
        w.receiver_addr,
        &Req::post(format!("{}/pay", checkout.path())),
    )
    .unwrap();
    assert_eq!(pay.status, 303, "{}", pay.text());
    b.until(
        30,
        "the balance to change by itself",
        "return document.getElementById('balance').textContent === '105'",
    )
    .await;
    assert_eq!(
        b.js("return window.notReloaded === true").await,
        true,
        "the page was not reloaded"
    );
    let notice = b.text("//*[@id='purchase-notice']").await;
    assert!(
        notice.contains("Your purchase of Starter arrived"),
        "{notice}"
    );
    assert_eq!(
        w.api(Req::get("/api/v1/credits").auth(&owner)).expect(200)["balance"],
        105
    );

    // Buy Pro and pay on the checkout page: back on the dashboard with the credits.
    b.click_button("Buy Pro").await;
    b.until(
        30,
        "the checkout page",
        &format!(
            "return location.port === '{receiver_port}' && document.readyState === 'complete'"
        ),
    )
    .await;
    b.click_button("Pay $35.00").await;
    b.until(
        30,
        "the way back",
        "return location.pathname === '/' && !!document.getElementById('balance')",
    )
    .await;
    assert_eq!(b.balance().await, "1105");
    assert!(b
        .text("//*[@role='status']")
        .await
        .contains("Your purchase of Pro arrived"));

    // A screenshot of a local page: the image, what it cost and the balance after it.
    let site = fixture_site();
    b.goto("/try").await;
    b.fill("URL", &site).await;
    b.click_button("Take screenshot").await;
    b.until(60, "the screenshot", "const i = document.querySelector('img[alt=\"Screenshot\"]'); return !!i && i.complete && i.naturalWidth === 1280").await;
    assert_eq!(b.text("//*[@id='shot-cost']").await, "1 credits");
    assert_eq!(b.text("//*[@id='shot-balance']").await, "1104 credits");
    assert_eq!(
        w.api(Req::get("/api/v1/credits").auth(&owner)).expect(200)["balance"],
        1104
    );
    b.photograph("try").await;

    // History: 25 more charges make two pages of 20.
    for i in 0..25 {
        w.api(debit_req(
            &id,
            json!({"amount": 1, "description": format!("Charge {i}")}),
        ))
        .expect(201);
    }
    b.goto("/history").await;
    let table = "//table[caption[normalize-space()='Transactions']]";
    let rows = format!("{table}/tbody/tr");
    assert_eq!(b.count(&rows).await, 20);
    assert!(b
        .text(&format!("{table}/tbody/tr[1]"))
        .await
        .contains("Charge 24"));
    b.photograph("history").await;
    let next = b.xpath("//a[normalize-space()='Next page']").await;
    b.click_to_next_page(next, "Next page").await;
    // 29 in all: the bonus, two purchases, the capture, 25 charges.
    assert_eq!(b.count(&rows).await, 9);
    assert!(b
        .text(&format!("{table}/tbody/tr[9]"))
        .await
        .contains("Welcome bonus"));
    assert_eq!(b.count("//a[normalize-space()='Next page']").await, 0);
    let previous = b.xpath("//a[normalize-space()='Previous page']").await;
    b.click_to_next_page(previous, "Previous page").await;
    assert_eq!(b.count(&rows).await, 20);
    // The chart: today's bar holds the capture and the 25 charges.
    let chart = "//*[local-name()='svg' and @role='img'][*[local-name()='title' and normalize-space()='Usage by day']]";
    assert_eq!(b.count(chart).await, 1);
    let today = b
        .js(
            "const d = new Date(); const id = `${d.getUTCFullYear()}-${String(d.getUTCMonth()+1).padStart(2,'0')}-${String(d.getUTCDate()).padStart(2,'0')}`; \
             const bar = [...document.querySelectorAll('svg rect')].find(r => r.querySelector('title').textContent.startsWith(id)); \
             return bar.querySelector('title').textContent",
        )
        .await;
    assert!(today.as_str().unwrap().ends_with(": 26 credits"), "{today}");
    // The month as CSV, from the page's own link.
    let csv = b
        .js("return fetch(document.querySelector('a[href^=\"/history/usage.csv\"]').href).then(r => r.text())")
        .await;
    let csv = csv.as_str().unwrap();
    assert!(
        csv.starts_with("transactionId,type,amount,source,description,plan,transactionDate\r\n"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 30, "a header and 29 entries");
    assert!(
        csv.contains(",debit,1,Screenshot,Screenshot captured,"),
        "{csv}"
    );

    // Settings, as the owner.
    b.goto("/settings").await;
    b.photograph("settings").await;

    // Revoke the key after confirming: the API refuses it at once.
    b.goto("/keys").await;
    let revoke = b
        .xpath("//tr[td[1][normalize-space()='ci']]//button[normalize-space()='Revoke']")
        .await;
    b.click_to_next_page(revoke, "Revoke").await;
    b.until(
        30,
        "the confirmation",
        "return location.pathname.endsWith('/revoke')",
    )
    .await;
    assert!(b.text("//h2").await.contains("Revoke “ci”?"));
    assert_eq!(
        w.api(Req::get("/api/v1/credits").auth(&api_key)).status,
        200,
        "not before confirming"
    );
    b.click_button("Revoke").await;
    assert_eq!(b.path().await, "/keys?revoked=1");
    assert_eq!(
        w.api(Req::get("/api/v1/credits").auth(&api_key)).status,
        401
    );
    assert_eq!(b.count("//tr[td[1][normalize-space()='ci']]").await, 0);

    // Log out: the session is revoked server-side.
    b.click_button("Log out").await;
    assert_eq!(b.path().await, "/login");
    assert_eq!(w.api(Req::get("/api/v1/credits").auth(&owner)).status, 401);
    b.close().await;
    w.done().await;
}

impl Browser {
    /// Types `text` into whatever has the focus.
    async fn press_text(&self, text: &str) {
        let focused = self.client.active_element().await.unwrap();
        focused.send_keys(text).await.unwrap();
    }
}

/// A member sees the hard limit read-only and cannot change it (the server refuses a
/// forged post too); the owner changes it in the browser.
async fn member_cannot_change_hard_limit(backend: &'static str) {
    let w = World::start(backend, false).await;
    let owner_email = format!("owner-{backend}@example.com");
    let member_email = format!("member-{backend}@example.com");
    let signup = w.api(signup_req(&owner_email));
    let id = signup.expect(201)["accountId"].as_str().unwrap().to_owned();
    let owner = Auth::Cookie(signup.session_cookie().unwrap().0);
    w.api(subscribe_req(&id, "basic")).expect(200);
    let invite = w
        .api(
            Req::post("/api/v1/members")
                .auth(&owner)
                .json(json!({"email": member_email, "role": "member"})),
        )
        .expect(201);
    let token = invite["inviteToken"].as_str().unwrap();

    // The member joins from the invitation link, in the browser.
    let b = Browser::open(&w.base()).await;
    b.goto(&format!("/signup?invite={token}")).await;
    b.fill("Email", &member_email).await;
    b.fill("Password", PASSWORD).await;
    b.click_button("Sign up").await;
    b.until(30, "the overview", "return location.pathname === '/'")
        .await;
    assert!(!b.has_button("Buy Pro").await, "members do not buy");
    b.goto("/settings").await;
    assert!(!b.has_button("Save hard limit").await);
    assert_eq!(b.count("//label[normalize-space()='Hard limit']").await, 0);
    let region = b.region("Plan and hard limit").await.text().await.unwrap();
    assert!(
        region.contains("10000 credits") && region.contains("Read-only"),
        "{region}"
    );
    assert!(!b.has_button("Save auto top-up").await);
    // Webhook endpoints and the alert: read-only, no add form.
    assert!(!b.has_button("Add endpoint").await);
    assert!(!b.has_button("Save alert").await);
    assert_eq!(
        b.count("//label[normalize-space()='Endpoint URL']").await,
        0
    );
    assert_eq!(
        b.count("//label[normalize-space()='Low balance alert']")
            .await,
        0
    );
    let hooks = b.region("Webhook endpoints").await.text().await.unwrap();
    assert!(hooks.contains("Read-only"), "{hooks}");
    let alert = b.region("Low balance alert").await.text().await.unwrap();
    assert!(
        alert.contains("off") && alert.contains("Read-only"),
        "{alert}"
    );
    b.photograph("settings-member").await;
    // A post made by hand, with the member's own session and token: refused, unchanged.
    let csrf = b
        .xpath("//form[@action='/logout']/input[@name='csrf']")
        .await
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let cookie = b.client.get_named_cookie("session").await.unwrap();
    let forged = w.api(
        Req::post("/settings/hard-limit")
            .header("cookie", format!("session={}", cookie.value()))
            .raw(
                "application/x-www-form-urlencoded",
                format!("csrf={csrf}&hard_limit=20000"),
            ),
    );
    assert_eq!(forged.status, 403, "{}", forged.text());
    assert!(forged.text().contains("Only an owner"), "{}", forged.text());
    let rx = crate::notifications::Receiver::start();
    for (path, body) in [
        (
            "/settings/webhooks",
            format!("csrf={csrf}&url={}&events=credits.low", rx.url()),
        ),
        ("/settings/alerts", format!("csrf={csrf}&low_balance=3")),
    ] {
        let forged = w.api(
            Req::post(path)
                .header("cookie", format!("session={}", cookie.value()))
                .raw("application/x-www-form-urlencoded", body),
        );
        assert_eq!(forged.status, 403, "{path}: {}", forged.text());
        assert!(forged.text().contains("Only an owner"), "{}", forged.text());
    }
    let hooks = w.api(Req::get("/api/v1/webhooks").auth(&owner)).expect(200);
    assert_eq!(hooks, json!([]));
    let alerts = w
        .api(Req::get("/api/v1/account/alerts").auth(&owner))
        .expect(200);
    assert_eq!(alerts["lowBalanceCredits"], Value::Null);
    let sub = w
        .api(Req::get("/api/v1/subscription").auth(&owner))
        .expect(200);
    assert_eq!(sub["hardLimit"], 10000);
    b.close().await;

    // The owner sets it in the browser.
    let b = Browser::open(&w.base()).await;
    b.goto("/login").await;
    b.fill("Email", &owner_email).await;
    b.fill("Password", PASSWORD).await;
    b.click_button("Log in").await;
    b.until(30, "the overview", "return location.pathname === '/'")
        .await;
    b.goto("/settings").await;
    b.fill("Hard limit", "15000").await;
    b.click_button("Save hard limit").await;
    assert_eq!(b.path().await, "/settings?saved=hard-limit");
    assert!(b
        .text("//*[@role='status']")
        .await
        .contains("Hard limit saved"));
    let sub = w
        .api(Req::get("/api/v1/subscription").auth(&owner))
        .expect(200);
    assert_eq!(sub["hardLimit"], 15000);
    // Below the plan's limit: the page says why, nothing changes.
    b.fill("Hard limit", "5").await;
    b.js("document.getElementById('hard-limit').removeAttribute('min'); return true")
        .await;
    b.click_button("Save hard limit").await;
    assert!(b.text("//*[@role='alert']").await.len() > 10);
    assert_eq!(
        w.api(Req::get("/api/v1/subscription").auth(&owner))
            .expect(200)["hardLimit"],
        15000
    );
    // Auto top-up (demo payments can charge a saved method).
    b.labelled("Auto top-up").await.click().await.unwrap();
    b.fill("Threshold", "3").await;
    b.labelled("Pack")
        .await
        .select_by_value("pack_starter")
        .await
        .unwrap();
    b.click_button("Save auto top-up").await;
    assert_eq!(b.path().await, "/settings?saved=auto-topup");
    let topup = w
        .api(Req::get("/api/v1/credits/auto-topup").auth(&owner))
        .expect(200);
    assert_eq!(
        (topup["enabled"].clone(), topup["packId"].clone()),
        (json!(true), json!("pack_starter")),
        "{topup}"
    );
    // Members: invite someone (the link is shown once), remove the member (their
    // session stops working at once).
    b.fill("Invite email", &format!("third-{backend}@example.com"))
        .await;
    b.labelled("Role")
        .await
        .select_by_value("member")
        .await
        .unwrap();
    b.click_button("Invite").await;
    let link = b.text("//*[@id='invite-link']").await;
    assert!(
        link.starts_with(&format!("{}/signup?invite=inv_", w.base())),
        "{link}"
    );
    b.goto("/settings").await;
    assert_eq!(b.count("//*[@id='invite-link']").await, 0, "shown once");
    let member_session = Auth::Cookie(cookie.value().to_owned());
    assert_eq!(
        w.api(Req::get("/api/v1/credits").auth(&member_session))
            .status,
        200
    );
    b.click_button(&format!("Remove {member_email}")).await;
    assert_eq!(b.path().await, "/settings?saved=removed");
    assert_eq!(
        w.api(Req::get("/api/v1/credits").auth(&member_session))
            .status,
        401
    );
    b.photograph("settings-owner").await;
    b.close().await;
    w.done().await;
}

/// An owner adds a webhook endpoint in the browser (its secret shown once), sets the
/// low-balance alert, sees the `credits.low` delivery a debit caused reach a real local
/// receiver, and deletes the endpoint after confirming.
async fn owner_manages_webhook_endpoints(backend: &'static str) {
    let w = World::start(backend, false).await;
    let rx = crate::notifications::Receiver::start();
    let email = format!("hooks-{backend}@example.com");
    let signup = w.api(signup_req(&email));
    let id = signup.expect(201)["accountId"].as_str().unwrap().to_owned();
    let owner = Auth::Cookie(signup.session_cookie().unwrap().0);
    let b = Browser::open(&w.base()).await;
    b.goto("/login").await;
    b.fill("Email", &email).await;
    b.fill("Password", PASSWORD).await;
    b.click_button("Log in").await;
    b.until(30, "the overview", "return location.pathname === '/'")
        .await;
    b.goto("/settings").await;
    let hooks = b.region("Webhook endpoints").await.text().await.unwrap();
    assert!(hooks.contains("No endpoints yet"), "{hooks}");

    // No event ticked: the page says what to fix, nothing is added.
    b.fill("Endpoint URL", &rx.url()).await;
    b.click_button("Add endpoint").await;
    let said = b.text("//*[@role='alert']").await;
    assert!(
        said.contains("events must list at least one event"),
        "{said}"
    );
    assert_eq!(
        w.api(Req::get("/api/v1/webhooks").auth(&owner)).expect(200),
        json!([])
    );

    b.fill("Endpoint URL", &rx.url()).await;
    b.labelled("credits.low").await.click().await.unwrap();
    b.labelled("credits.purchased").await.click().await.unwrap();
    b.click_button("Add endpoint").await;
    let secret_xpath = "//*[@role='region' and @aria-label='New webhook secret']";
    let shown = b.text(secret_xpath).await;
    let secret = b.text("//*[@id='webhook-secret']").await;
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );
    assert!(shown.contains(&secret), "{shown}");
    assert!(b.button("Copy secret").await.is_displayed().await.unwrap());
    b.photograph("settings-webhook-secret").await;
    let listed = w.api(Req::get("/api/v1/webhooks").auth(&owner)).expect(200);
    let items = listed.as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["url"], rx.url().as_str());
    assert_eq!(
        items[0]["events"],
        json!(["credits.low", "credits.purchased"])
    );
    let endpoint = items[0]["id"].as_str().unwrap().to_owned();
    b.goto("/settings").await;
    assert_eq!(b.count(secret_xpath).await, 0, "shown once");
    let hooks = b.region("Webhook endpoints").await.text().await.unwrap();
    assert!(
        hooks.contains(&rx.url()) && hooks.contains("credits.low, credits.purchased"),
        "{hooks}"
    );

    // The alert: a negative amount is refused and names the field; 3 is saved.
    b.fill("Low balance alert", "-1").await;
    b.js("document.getElementById('alert-low').removeAttribute('min'); return true")
        .await;
    b.click_button("Save alert").await;
    let said = b.text("//*[@role='alert']").await;
    assert!(said.contains("Low balance alert"), "{said}");
    let alerts = || {
        w.api(Req::get("/api/v1/account/alerts").auth(&owner))
            .expect(200)["lowBalanceCredits"]
            .clone()
    };
    assert_eq!(alerts(), Value::Null);
    b.fill("Low balance alert", "3").await;
    b.click_button("Save alert").await;
    assert_eq!(b.path().await, "/settings?saved=alert");
    assert_eq!(alerts(), json!(3));
    assert_eq!(
        b.labelled("Low balance alert")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("3")
    );

    // 5 credits, then debits of 1 and 2: the second crosses 3; one delivery, sent.
    for amount in [1, 2] {
        w.api(
            Req::post(format!("/admin/v1/accounts/{id}/debits"))
                .auth(&Auth::Admin)
                .json(json!({"amount": amount, "description": "Test debit"})),
        )
        .expect(201);
    }
    b.goto("/settings").await;
    let caption = format!("Recent deliveries to {}", rx.url());
    let row = format!("//table[caption[normalize-space()='{caption}']]/tbody/tr");
    assert_eq!(b.count(&row).await, 1);
    let pending = b.text(&row).await;
    assert!(
        pending.starts_with("credits.low pending 0 none"),
        "{pending}"
    );
    let d = api_server::deliverer::Deliverer::new(
        w.state.store.clone(),
        &w.state.settings.notifications,
        capture::TargetPolicy::allow_private(),
        w.state.clock.clone(),
    );
    assert_eq!(d.run_once().unwrap(), 1);
    let got = rx.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["type"], "credits.low");
    b.goto("/settings").await;
    let delivered = b.text(&row).await;
    assert!(
        delivered.starts_with("credits.low delivered 1 200"),
        "{delivered}"
    );
    b.photograph("settings-webhooks").await;

    // Delete, after the confirmation page.
    let link = b
        .xpath(&format!("//a[@aria-label='Delete {}']", rx.url()))
        .await;
    b.click_to_next_page(link, "Delete").await;
    assert_eq!(
        b.path().await,
        format!("/settings/webhooks/{endpoint}/delete")
    );
    b.click_button("Delete endpoint").await;
    assert_eq!(b.path().await, "/settings?saved=webhook-deleted");
    assert!(b
        .text("//*[@role='status']")
        .await
        .contains("Endpoint deleted"));
    let hooks = b.region("Webhook endpoints").await.text().await.unwrap();
    assert!(hooks.contains("No endpoints yet"), "{hooks}");
    assert_eq!(
        w.api(Req::get("/api/v1/webhooks").auth(&owner)).expect(200),
        json!([])
    );
    b.close().await;
    w.done().await;
}

// ---- without a browser: the CSRF refusals and the headers, over plain HTTP ----

/// The form field of a page's CSRF token.
fn csrf_in(page: &str) -> String {
    let at = page
        .find(r#"name="csrf" value=""#)
        .expect("a form with its token")
        + 19;
    page[at..at + 64].to_owned()
}

/// A form post with the session cookie (and a form cookie when given).
fn form_post(path: &str, cookies: &str, body: &str) -> Req {
    Req::post(path)
        .header("cookie", cookies)
        .raw("application/x-www-form-urlencoded", body.to_owned())
}

/// A post without the token, or with another one, is 403 and changes nothing; with the
/// page's token it works. Signed-out forms are checked against their cookie.
async fn csrf_refused_without_token(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (session, _) = app.signup("csrf@example.com").await;
    let cookie = format!("session={session}");
    let page = app.send(Req::get("/keys").header("cookie", &cookie)).await;
    assert_eq!(page.status, 200);
    let token = csrf_in(&page.text());
    let auth = Auth::Cookie(session.clone());
    for body in [
        "name=forged".to_owned(),
        "name=forged&csrf=".to_owned(),
        format!("name=forged&csrf={}", "0".repeat(64)),
        format!("name=forged&csrf={}", &token[..63]),
    ] {
        let res = app.send(form_post("/keys", &cookie, &body)).await;
        assert_eq!(res.status, 403, "{body}: {}", res.text());
        assert!(res.header("content-type").unwrap().starts_with("text/html"));
        assert!(res.text().contains("Nothing was changed"));
    }
    assert_eq!(
        app.list("/api/v1/api-keys", &auth).await.len(),
        0,
        "no key was made"
    );
    // Every other form of a session, likewise.
    for path in [
        "/logout",
        "/buy",
        "/try",
        "/settings/hard-limit",
        "/settings/auto-topup",
        "/settings/members",
        "/settings/webhooks",
        "/settings/webhooks/we_none/delete",
        "/settings/alerts",
    ] {
        let res = app
            .send(form_post(
                path,
                &cookie,
                "pack=pack_pro&email=x%40example.com&role=member&url=http%3A%2F%2Fexample.com&events=credits.low&low_balance=3",
            ))
            .await;
        assert_eq!(res.status, 403, "{path}: {}", res.text());
    }
    assert_eq!(
        app.list("/api/v1/members", &Auth::Cookie(session.clone()))
            .await
            .len(),
        1
    );
    assert_eq!(
        app.send(Req::get("/api/v1/credits").auth(&Auth::Cookie(session.clone())))
            .await
            .status,
        200,
        "still logged in"
    );
    // With the page's token: made.
    let res = app
        .send(form_post(
            "/keys",
            &cookie,
            &format!("name=real&csrf={token}"),
        ))
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(app.list("/api/v1/api-keys", &auth).await.len(), 1);
    // Another session's token does not work for this one.
    let (other, _) = app.signup("csrf-other@example.com").await;
    let res = app
        .send(form_post(
            "/keys",
            &format!("session={other}"),
            &format!("name=x&csrf={token}"),
        ))
        .await;
    assert_eq!(res.status, 403);

    // Log in: the form's value must match this browser's form cookie.
    let login = app.send(Req::get("/login")).await;
    let set = login
        .header("set-cookie")
        .expect("the form cookie")
        .to_owned();
    assert!(
        set.starts_with("form_csrf=")
            && set.contains("HttpOnly")
            && set.contains("SameSite=Strict"),
        "{set}"
    );
    let value = csrf_in(&login.text());
    let creds = format!(
        "email=csrf%40example.com&password={}",
        PASSWORD.replace(' ', "+")
    );
    let refused = app
        .send(form_post("/login", "", &format!("{creds}&csrf={value}")))
        .await;
    assert_eq!(refused.status, 403, "no form cookie");
    assert!(refused.session_cookie().is_none());
    let refused = app
        .send(form_post(
            "/login",
            &format!("form_csrf={}", "a".repeat(64)),
            &format!("{creds}&csrf={value}"),
        ))
        .await;
    assert_eq!(refused.status, 403, "another browser's value");
    let ok = app
        .send(form_post(
            "/login",
            &format!("form_csrf={value}"),
            &format!("{creds}&csrf={value}"),
        ))
        .await;
    assert_eq!(ok.status, 303, "{}", ok.text());
    assert_eq!(ok.header("location"), Some("/"));
    let session = ok
        .all_headers("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("session="))
        .expect("a session")
        .to_owned();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );
    assert!(
        !session.contains("Secure"),
        "plain http by default: {session}"
    );
    // A wrong password: the form again with the reason, 401.
    let wrong = app
        .send(form_post(
            "/login",
            &format!("form_csrf={value}"),
            &format!("email=csrf%40example.com&password=nope-nope&csrf={value}"),
        ))
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.text().contains("Invalid email or password"));
    // Bad input names the field.
    let bad = app
        .send(form_post(
            "/signup",
            &format!("form_csrf={value}"),
            &format!("email=not-an-email&password=x&csrf={value}"),
        ))
        .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.text().contains("email must be an address"),
        "{}",
        bad.text()
    );
}

/// Pages carry their own policy and the security headers; signed out, every page goes to
/// the login page; a secure deployment marks the cookie `Secure`.
async fn pages_carry_their_policy(backend: &'static str) {
    let app = TestApp::new(backend).await;
    for path in [
        "/",
        "/keys",
        "/history",
        "/settings",
        "/try",
        "/keys/key_x/revoke",
        "/history/usage.csv",
    ] {
        let res = app.send(Req::get(path)).await;
        assert_eq!(res.status, 303, "{path}");
        assert_eq!(res.header("location"), Some("/login"), "{path}");
    }
    let (session, _) = app.signup("policy@example.com").await;
    for path in [
        "/",
        "/login",
        "/signup",
        "/keys",
        "/history",
        "/settings",
        "/try",
    ] {
        let res = app
            .send(Req::get(path).header("cookie", format!("session={session}")))
            .await;
        assert!(
            res.status == 200 || res.status == 303,
            "{path}: {}",
            res.status
        );
        if res.status == 303 {
            continue;
        }
        assert_eq!(
            res.header("content-security-policy"),
            Some(api_server::dashboard::html::PAGE_CSP),
            "{path}"
        );
        assert_eq!(res.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(res.header("cache-control"), Some("no-store"), "{path}");
        let text = res.text();
        assert!(
            !text.contains("<script>") && !text.contains("style="),
            "{path}: nothing inline"
        );
        assert!(
            !text.contains("http://") && !text.contains("https://") || path == "/try",
            "{path}: no external asset"
        );
    }
    for asset in ["/dashboard/app.css", "/dashboard/app.js"] {
        assert_eq!(app.send(Req::get(asset)).await.status, 200);
    }
    // A bad offset names the field.
    let res = app
        .send(Req::get("/history?offset=-1").header("cookie", format!("session={session}")))
        .await;
    assert_eq!(res.status, 400);
    assert!(res.text().contains("offset must be a whole number"));
    let secure = TestApp::with(backend, |s| s.auth.cookie_secure = true).await;
    let login = secure.send(Req::get("/login")).await;
    assert!(login.header("set-cookie").unwrap().contains("Secure"));
}

on_both_backends!(
    journey,
    member_cannot_change_hard_limit,
    owner_manages_webhook_endpoints,
    csrf_refused_without_token,
    pages_carry_their_policy
);
