//! Notifications to customers (outgoing webhooks, ADR 12): the endpoints API (shapes,
//! 400s, owners only), and delivery to a real local HTTP receiver: signed with Standard
//! Webhooks headers that the payments crate's `verify` accepts, retried with backoff,
//! ordered per endpoint, and never sent to a private address the policy refuses at
//! connect time. Every test runs on SQLite and on PostgreSQL.

use crate::common;

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use api_server::deliverer::Deliverer;
use base64::Engine;
use common::*;
use serde_json::{json, Value};

on_both_backends!(
    endpoints_have_the_contract_shapes_and_refuse_bad_input,
    members_cannot_register_or_delete_endpoints,
    alerts_are_read_and_set,
    a_signed_credits_low_reaches_the_receiver_once_per_crossing,
    a_failed_delivery_is_retried_with_backoff,
    an_endpoint_gets_its_events_in_order,
    a_private_address_is_refused_at_connect_time,
    a_demo_purchase_sends_credits_purchased,
    the_events_and_their_payload_are_in_the_openapi_document,
);

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) path: String,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: String,
}

impl Received {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A local HTTP endpoint on 127.0.0.1: records each request and answers with the next
/// queued status (200 when none is queued). The dashboard's tests use it too.
pub(crate) struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    pub(crate) fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(VecDeque::new()));
        let (g, a) = (got.clone(), answers.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                let mut headers = HashMap::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.trim_end().split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                g.lock().unwrap().push(Received {
                    path,
                    headers,
                    body: String::from_utf8(body).unwrap(),
                });
                let status = a.lock().unwrap().pop_front().unwrap_or(200);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        Receiver { port, got, answers }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn answer(&self, statuses: &[u16]) {
        self.answers.lock().unwrap().extend(statuses);
    }

    pub(crate) fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

/// The app with private targets allowed (the receiver is on 127.0.0.1) and a retry
/// schedule of 10 s doubling, 3 attempts.
async fn app(backend: &str) -> TestApp {
    TestApp::with(backend, |s| {
        s.notifications.allow_private_targets = true;
        s.notifications.initial_backoff_secs = 10;
        s.notifications.max_backoff_secs = 60;
        s.notifications.max_attempts = 3;
    })
    .await
}

/// A deliverer on the app's store and clock, connecting where `targets` allows.
fn deliverer(app: &TestApp, targets: capture::TargetPolicy) -> Deliverer {
    Deliverer::new(
        app.state.store.clone(),
        &app.state.settings.notifications,
        targets,
        app.clock.clock(),
    )
}

fn local(app: &TestApp) -> Deliverer {
    deliverer(app, capture::TargetPolicy::allow_private())
}

async fn register(app: &TestApp, auth: &Auth, url: &str, events: Value) -> Resp {
    app.send(
        Req::post("/api/v1/webhooks")
            .auth(auth)
            .json(json!({"url": url, "events": events})),
    )
    .await
}

async fn deliveries(app: &TestApp, auth: &Auth, id: &str) -> Vec<Value> {
    app.list(&format!("/api/v1/webhooks/{id}/deliveries"), auth)
        .await
}

async fn set_low(app: &TestApp, auth: &Auth, low: Value) -> Resp {
    app.send(
        Req::put("/api/v1/account/alerts")
            .auth(auth)
            .json(json!({ "lowBalanceCredits": low })),
    )
    .await
}

fn assert_names(res: &Resp, field: &str) -> Value {
    let body = res.expect(400);
    assert_eq!(body["field"], field, "{body}");
    assert!(body["error"].as_str().unwrap().contains(field), "{body}");
    body
}

/// Checks the Standard Webhooks signature of `r` with the endpoint's `secret`, as a
/// receiver would (the payments crate's `verify`), at `now_secs`.
fn assert_signed(r: &Received, secret: &str, now_secs: i64) {
    let s = payments::WebhookSecret::new(secret);
    let headers = payments::SignedHeaders {
        id: r.headers.get("webhook-id").map(String::as_str),
        timestamp: r.headers.get("webhook-timestamp").map(String::as_str),
        signature: r.headers.get("webhook-signature").map(String::as_str),
    };
    payments::signature::verify(&s, headers, r.body.as_bytes(), now_secs)
        .unwrap_or_else(|e| panic!("the signature does not verify: {e}; {r:?}"));
    // The key is the base64-decoded part of the secret, as the contract says.
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let ts: i64 = r.headers["webhook-timestamp"].parse().unwrap();
    let expected = payments::signature::sign(&key, &r.headers["webhook-id"], ts, r.body.as_bytes());
    assert_eq!(r.headers["webhook-signature"], expected);
    // Tampered bodies fail.
    let tampered = format!("{} ", r.body);
    assert!(payments::signature::verify(&s, headers, tampered.as_bytes(), now_secs).is_err());
}

async fn endpoints_have_the_contract_shapes_and_refuse_bad_input(backend: &str) {
    let app = TestApp::new(backend).await;
    let (owner, _) = app.user("owner@example.com").await;
    // A public address literal: accepted without asking a DNS server.
    let res = register(
        &app,
        &owner,
        "https://93.184.216.34/hooks",
        json!(["credits.low", "topup.failed"]),
    )
    .await;
    let created = res.expect(201);
    let mut keys: Vec<&str> = created
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["createdAt", "events", "id", "secret", "url"]);
    assert_eq!(created["url"], "https://93.184.216.34/hooks");
    assert_eq!(created["events"], json!(["credits.low", "topup.failed"]));
    let secret = created["secret"].as_str().unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .unwrap();
    assert_eq!(raw.len(), 32);
    assert!(created["createdAt"].as_str().unwrap().ends_with('Z'));
    let id = created["id"].as_str().unwrap().to_owned();

    // Listed without the secret.
    let listed = app.list("/api/v1/webhooks", &owner).await;
    assert_eq!(listed.len(), 1);
    let mut keys: Vec<&str> = listed[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["createdAt", "events", "id", "url"]);
    assert_eq!(deliveries(&app, &owner, &id).await, Vec::<Value>::new());

    // Bad input: 400 naming the field, nothing registered.
    for url in [
        "ftp://93.184.216.34/x",
        "not a url",
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest",
        "https://user:pw@93.184.216.34/",
    ] {
        assert_names(
            &register(&app, &owner, url, json!(["credits.low"])).await,
            "url",
        );
    }
    let private = register(
        &app,
        &owner,
        "http://127.0.0.1:9/hook",
        json!(["credits.low"]),
    )
    .await;
    assert!(
        private.expect(400)["error"]
            .as_str()
            .unwrap()
            .contains("private"),
        "{}",
        private.text()
    );
    assert_names(
        &register(&app, &owner, "https://93.184.216.34/", json!([])).await,
        "events",
    );
    let unknown = register(
        &app,
        &owner,
        "https://93.184.216.34/",
        json!(["credits.lo"]),
    )
    .await;
    assert!(assert_names(&unknown, "events")["error"]
        .as_str()
        .unwrap()
        .contains("credits.depleted"));
    let missing = app
        .send(
            Req::post("/api/v1/webhooks")
                .auth(&owner)
                .json(json!({"url": "https://93.184.216.34/"})),
        )
        .await;
    assert_eq!(missing.status, 400, "{}", missing.text());
    assert_eq!(app.list("/api/v1/webhooks", &owner).await.len(), 1);

    // Another account sees and deletes nothing of it.
    let (other, _) = app.user("other@example.com").await;
    assert!(app.list("/api/v1/webhooks", &other).await.is_empty());
    app.send(Req::get(format!("/api/v1/webhooks/{id}/deliveries")).auth(&other))
        .await
        .expect(404);
    app.send(Req::delete(format!("/api/v1/webhooks/{id}")).auth(&other))
        .await
        .expect(404);

    // Deleted: gone from the list; again is a 404.
    let del = app
        .send(Req::delete(format!("/api/v1/webhooks/{id}")).auth(&owner))
        .await;
    assert_eq!(del.status, 204, "{}", del.text());
    assert!(app.list("/api/v1/webhooks", &owner).await.is_empty());
    app.send(Req::delete(format!("/api/v1/webhooks/{id}")).auth(&owner))
        .await
        .expect(404);
    // Unauthenticated: 401.
    assert_eq!(app.send(Req::get("/api/v1/webhooks")).await.status, 401);
}

async fn members_cannot_register_or_delete_endpoints(backend: &str) {
    let app = TestApp::new(backend).await;
    let (owner, _) = app.user("boss@example.com").await;
    let invited = app
        .send(
            Req::post("/api/v1/members")
                .auth(&owner)
                .json(json!({"email": "staff@example.com", "role": "member"})),
        )
        .await
        .expect(201);
    let joined = app
        .send(Req::post("/api/v1/auth/signup").json(json!({
            "email": "staff@example.com",
            "password": PASSWORD,
            "inviteToken": invited["inviteToken"],
        })))
        .await;
    joined.expect(201);
    let (session, _) = joined.session_cookie().unwrap();
    let (key, _) = app.new_key(&session, "staff").await;
    let member = Auth::Key(key);

    let created = register(
        &app,
        &owner,
        "https://93.184.216.34/",
        json!(["credits.low"]),
    )
    .await
    .expect(201);
    let id = created["id"].as_str().unwrap();
    let refused = register(
        &app,
        &member,
        "https://93.184.216.34/",
        json!(["credits.low"]),
    )
    .await;
    assert_eq!(refused.expect(403)["code"], "OWNER_ONLY");
    let refused = app
        .send(Req::delete(format!("/api/v1/webhooks/{id}")).auth(&member))
        .await;
    assert_eq!(refused.expect(403)["code"], "OWNER_ONLY");
    // Members read them, and their deliveries.
    assert_eq!(app.list("/api/v1/webhooks", &member).await.len(), 1);
    assert!(deliveries(&app, &member, id).await.is_empty());
}

async fn alerts_are_read_and_set(backend: &str) {
    let app = TestApp::new(backend).await;
    let (owner, _) = app.user("alerts@example.com").await;
    let get = || app.send(Req::get("/api/v1/account/alerts").auth(&owner));
    assert_eq!(get().await.expect(200), json!({"lowBalanceCredits": null}));
    assert_eq!(
        set_low(&app, &owner, json!(2.5)).await.expect(200),
        json!({"lowBalanceCredits": 2.5})
    );
    assert_eq!(get().await.expect(200), json!({"lowBalanceCredits": 2.5}));
    for bad in [json!(-1), json!("ten"), json!(0.0001)] {
        assert_names(&set_low(&app, &owner, bad).await, "lowBalanceCredits");
    }
    assert_eq!(
        get().await.expect(200),
        json!({"lowBalanceCredits": 2.5}),
        "nothing changed"
    );
    assert_eq!(
        set_low(&app, &owner, Value::Null).await.expect(200),
        json!({"lowBalanceCredits": null})
    );
    assert_eq!(get().await.expect(200), json!({"lowBalanceCredits": null}));
}

async fn a_signed_credits_low_reaches_the_receiver_once_per_crossing(backend: &str) {
    let app = app(backend).await;
    let rx = Receiver::start();
    let (owner, account) = app.user("low@example.com").await; // 5 credits
    let created = register(&app, &owner, &rx.url(), json!(["credits.low"]))
        .await
        .expect(201);
    let (id, secret) = (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    );
    set_low(&app, &owner, json!(3)).await.expect(200);
    let d = local(&app);
    app.debit(&account, json!(1)).await.expect(201); // 4: above
    assert_eq!(d.run_once().unwrap(), 0);
    app.debit(&account, json!(2)).await.expect(201); // 2: crossed
    app.debit(&account, json!(1)).await.expect(201); // 1: still below
    assert_eq!(d.run_once().unwrap(), 1);
    assert_eq!(d.run_once().unwrap(), 0, "once per crossing");
    let got = rx.got();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.path, "/hook");
    assert_eq!(r.headers["content-type"], "application/json");
    assert_signed(r, &secret, app.clock.now().millis() / 1000);
    let body = r.json();
    assert_eq!(body["type"], "credits.low");
    assert_eq!(body["data"]["accountId"], account.as_str());
    assert_eq!(body["data"]["balance"], 2);
    assert_eq!(body["data"]["lowBalanceCredits"], 3);
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));

    let listed = deliveries(&app, &owner, &id).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], r.headers["webhook-id"].as_str());
    assert_eq!(listed[0]["event"], "credits.low");
    assert_eq!(listed[0]["status"], "delivered");
    assert_eq!(listed[0]["attempts"], 1);
    assert_eq!(listed[0]["responseStatus"], 200);
    assert_eq!(listed[0]["lastAttemptAt"], app.clock.now().rfc3339());

    // Back above the threshold and below again: a second credits.low.
    app.adjust(&account, json!(5)).await.expect(201); // 6
    app.debit(&account, json!(4)).await.expect(201); // 2
    assert_eq!(d.run_once().unwrap(), 1);
    assert_eq!(rx.got().len(), 2);
    assert_eq!(rx.got()[1].json()["type"], "credits.low");
}

async fn a_failed_delivery_is_retried_with_backoff(backend: &str) {
    let app = app(backend).await;
    let rx = Receiver::start();
    rx.answer(&[500]);
    let (owner, account) = app.user("retry@example.com").await;
    let created = register(&app, &owner, &rx.url(), json!(["credits.depleted"]))
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap().to_owned();
    app.debit(&account, json!(5)).await.expect(201); // 0: depleted
    let metrics = std::sync::Arc::new(telemetry::Metrics::new());
    let d = local(&app).with_metrics(metrics.clone());
    assert_eq!(d.run_once().unwrap(), 1);
    let first_try = app.clock.now().rfc3339();
    let listed = deliveries(&app, &owner, &id).await;
    assert_eq!(listed[0]["status"], "pending");
    assert_eq!(listed[0]["attempts"], 1);
    assert_eq!(listed[0]["responseStatus"], 500);
    assert_eq!(listed[0]["lastAttemptAt"], first_try);
    // Not before the backoff (10 s).
    app.clock.advance_secs(9);
    assert_eq!(d.run_once().unwrap(), 0);
    app.clock.advance_secs(1);
    assert_eq!(d.run_once().unwrap(), 1);
    let listed = deliveries(&app, &owner, &id).await;
    assert_eq!(listed[0]["status"], "delivered");
    assert_eq!(listed[0]["attempts"], 2);
    assert_eq!(listed[0]["responseStatus"], 200);
    let got = rx.got();
    assert_eq!(got.len(), 2);
    // The same message both times: one webhook-id, one body.
    assert_eq!(got[0].headers["webhook-id"], got[1].headers["webhook-id"]);
    assert_eq!(got[0].body, got[1].body);
    assert_eq!(got[0].json()["type"], "credits.depleted");

    // An endpoint that keeps failing: attempts at 0 s, 10 s and 30 s, then `failed`.
    rx.answer(&[503, 502, 500]);
    app.adjust(&account, json!(1)).await.expect(201);
    app.debit(&account, json!(1)).await.expect(201);
    for wait in [0, 10, 20] {
        app.clock.advance_secs(wait);
        assert_eq!(d.run_once().unwrap(), 1, "after {wait} s");
    }
    app.clock.advance_secs(3600);
    assert_eq!(d.run_once().unwrap(), 0, "given up");
    let listed = deliveries(&app, &owner, &id).await;
    assert_eq!(listed[0]["status"], "failed");
    assert_eq!(listed[0]["attempts"], 3);
    assert_eq!(listed[0]["responseStatus"], 500);
    // Every attempt is counted by event type and outcome: 1 + 3 failed, 1 delivered.
    let text = metrics.render(Default::default());
    for (outcome, n) in [("failed", 4), ("delivered", 1)] {
        let line = format!(
            "shotledger_notifications_sent_total{{event_type=\"credits.depleted\",outcome=\"{outcome}\"}} {n}"
        );
        assert!(text.contains(&line), "{line} not in\n{text}");
    }
}

async fn an_endpoint_gets_its_events_in_order(backend: &str) {
    let app = app(backend).await;
    let rx = Receiver::start();
    rx.answer(&[500]);
    let (owner, account) = app.user("order@example.com").await;
    register(
        &app,
        &owner,
        &rx.url(),
        json!(["credits.low", "credits.depleted"]),
    )
    .await
    .expect(201);
    set_low(&app, &owner, json!(3)).await.expect(200);
    app.debit(&account, json!(3)).await.expect(201); // 2: low
    app.debit(&account, json!(2)).await.expect(201); // 0: depleted
    let d = local(&app);
    // Both are due; only the first goes, and fails.
    assert_eq!(d.run_once().unwrap(), 1);
    app.clock.advance_secs(5);
    assert_eq!(d.run_once().unwrap(), 0, "the second waits for the first");
    app.clock.advance_secs(5);
    assert_eq!(d.run_once().unwrap(), 1);
    assert_eq!(d.run_once().unwrap(), 1);
    let types: Vec<String> = rx
        .got()
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["credits.low", "credits.low", "credits.depleted"]);
}

async fn a_private_address_is_refused_at_connect_time(backend: &str) {
    // Registered while private targets were allowed; sent by a deliverer whose policy
    // refuses them (as a name that later resolves to a private address would be).
    let app = app(backend).await;
    let rx = Receiver::start();
    let (owner, account) = app.user("ssrf@example.com").await;
    let created = register(&app, &owner, &rx.url(), json!(["credits.depleted"]))
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap().to_owned();
    app.debit(&account, json!(5)).await.expect(201);
    let strict = deliverer(&app, capture::TargetPolicy::strict());
    assert_eq!(strict.run_once().unwrap(), 1);
    assert!(rx.got().is_empty(), "nothing reached the private address");
    let listed = deliveries(&app, &owner, &id).await;
    assert_eq!(listed[0]["status"], "pending");
    assert_eq!(listed[0]["attempts"], 1);
    assert_eq!(listed[0]["responseStatus"], Value::Null);
    let stored = app
        .state
        .store
        .notifications()
        .deliveries(&ledger_core::AccountId::new(account.clone()), &id, 10)
        .unwrap()
        .unwrap();
    let why = stored[0].last_error.clone().unwrap();
    assert!(
        why.contains("refused") && why.contains("127.0.0.1"),
        "{why}"
    );
}

async fn a_demo_purchase_sends_credits_purchased(backend: &str) {
    let app = TestApp::with_payments(backend, |s| {
        s.payments.provider = "demo".into();
        s.notifications.allow_private_targets = true;
    })
    .await;
    let rx = Receiver::start();
    let (owner, account) = app.user("buyer@example.com").await; // 5 credits
    let created = register(&app, &owner, &rx.url(), json!(["credits.purchased"]))
        .await
        .expect(201);
    let secret = created["secret"].as_str().unwrap().to_owned();
    let packs = app
        .send(Req::get("/api/v1/credits/packs"))
        .await
        .expect(200);
    let pro = packs
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "pack_pro")
        .unwrap()
        .clone();
    let checkout = app.send(purchase_req(&owner, "pack_pro")).await.expect(200);
    let url = checkout["checkoutUrl"].as_str().unwrap();
    let payments = app.state.payments.clone().unwrap();
    let now = app.clock.now();
    for d in payments
        .demo_pay(url.rsplit('/').next().unwrap(), now)
        .unwrap()
        .unwrap()
    {
        let e: Value = serde_json::from_str(&d.body).unwrap();
        payments
            .process_event(e["type"].as_str().unwrap(), &d.body, now)
            .unwrap();
    }
    assert_eq!(local(&app).run_once().unwrap(), 1);
    let got = rx.got();
    assert_eq!(got.len(), 1);
    assert_signed(&got[0], &secret, now.millis() / 1000);
    let body = got[0].json();
    assert_eq!(body["type"], "credits.purchased");
    assert_eq!(body["data"]["accountId"], account.as_str());
    assert_eq!(body["data"]["packId"], "pack_pro");
    assert_eq!(body["data"]["credits"], pro["credits"]);
    let balance = app.balance(&owner).await;
    assert_eq!(body["data"]["balance"], balance);
    assert_eq!(
        balance.as_f64().unwrap(),
        5.0 + pro["credits"].as_f64().unwrap()
    );
}

async fn the_events_and_their_payload_are_in_the_openapi_document(backend: &str) {
    let app = TestApp::new(backend).await;
    let doc = app.send(Req::get("/openapi.json")).await.expect(200);
    let schemas = &doc["components"]["schemas"];
    let mut names: Vec<String> = schemas["EventName"]["enum"]
        .as_array()
        .or_else(|| schemas["EventName"]["oneOf"].as_array())
        .unwrap_or_else(|| panic!("{}", schemas["EventName"]))
        .iter()
        .map(|v| {
            v.as_str()
                .map_or_else(|| v["enum"][0].as_str().unwrap().to_owned(), str::to_owned)
        })
        .collect();
    names.sort();
    let mut want: Vec<String> = ledger_core::Event::ALL
        .iter()
        .map(|e| e.as_str().to_owned())
        .collect();
    want.sort();
    assert_eq!(names, want);
    let items = &schemas["NewWebhook"]["properties"]["events"]["items"];
    assert!(items.to_string().contains("EventName"), "{items}");
    for field in ["type", "timestamp", "data"] {
        assert!(
            schemas["WebhookEvent"]["properties"].get(field).is_some(),
            "{}",
            schemas["WebhookEvent"]
        );
    }
    for field in [
        "accountId",
        "balance",
        "lowBalanceCredits",
        "reason",
        "amountCents",
    ] {
        assert!(
            schemas["WebhookEventData"]["properties"]
                .get(field)
                .is_some(),
            "{field}"
        );
    }
    for path in [
        "/api/v1/webhooks",
        "/api/v1/webhooks/{id}",
        "/api/v1/webhooks/{id}/deliveries",
        "/api/v1/account/alerts",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is not documented");
    }
}

/// The real binary sends on its own: `server::run` starts the deliverer, which finds the
/// event a debit enqueued and POSTs it, signed with the wall clock's time.
#[test]
fn the_server_binary_delivers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start();
    let (_running, addr) = start_binary(
        dir.path(),
        "\n[notifications]\nallow_private_targets = true\npoll_interval_ms = 50\n",
    );
    let send = |req: Req| http(addr, &req).expect("an answer");
    let signed_up = send(signup_req("binary@example.com"));
    let account = signed_up.expect(201)["accountId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (session, _) = signed_up.session_cookie().unwrap();
    let key = send(new_key_req(&Auth::Cookie(session), "k")).expect(201)["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let owner = Auth::Key(key);
    let created = send(
        Req::post("/api/v1/webhooks")
            .auth(&owner)
            .json(json!({"url": rx.url(), "events": ["credits.depleted"]})),
    )
    .expect(201);
    let secret = created["secret"].as_str().unwrap().to_owned();
    send(
        Req::post(format!("/admin/v1/accounts/{account}/debits"))
            .auth(&Auth::Admin)
            .json(json!({"amount": 5, "description": "all of it"})),
    )
    .expect(201);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while rx.got().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing was delivered"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let got = rx.got();
    assert_signed(&got[0], &secret, test_support::now().millis() / 1000);
    assert_eq!(got[0].json()["type"], "credits.depleted");
    assert_eq!(got[0].json()["data"]["balance"], 0);
    let id = created["id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let listed =
            send(Req::get(format!("/api/v1/webhooks/{id}/deliveries")).auth(&owner)).expect(200);
        if listed[0]["status"] == "delivered" {
            assert_eq!(listed[0]["responseStatus"], 200);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{listed}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
