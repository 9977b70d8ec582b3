//! The receiver's `/metrics` (behind `metrics.token`; deliveries by event type and
//! outcome, Polar's calls, requests by route) and `/readyz`.

use crate::common;

use std::sync::Arc;

use common::*;
use test_support::fake_polar::{FakePolar, KeyMode};
use test_support::on_both_backends;
use test_support::polar::polar_payments;
use test_support::TestDb;
use webhook_receiver::Observed;

on_both_backends!(the_receiver_counts_signed_deliveries_and_polar_calls_and_is_ready);

const METRICS_TOKEN: &str = "receiver-metrics-token-0123";

fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = agent().get(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut res = req.call().unwrap();
    let status = res.status().as_u16();
    (status, res.body_mut().read_to_string().unwrap())
}

/// The value of the series `series` (name and labels as written), 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

fn the_receiver_counts_signed_deliveries_and_polar_calls_and_is_ready(db: TestDb) {
    let fake = FakePolar::start(TOKEN, SECRET, KeyMode::Legacy);
    let payments = polar_payments(&fake, &settings(&db, Some(&fake.url())), db.store.clone());
    let observed = Observed {
        metrics: Arc::new(telemetry::Metrics::new()),
        token: Some(METRICS_TOKEN.to_owned()),
    };
    let rx = webhook_receiver::spawn_observed(payments.clone(), observed).unwrap();
    let metrics = format!("{}/metrics", rx.url());
    assert_eq!(get(&metrics, None).0, 401);
    assert_eq!(get(&metrics, Some("receiver-metrics-token-0124")).0, 401);

    let acct = account(&db.store);
    let order = bought(&fake, &payments, &acct, "pack_pro");
    let events = fake.paid_events(&order);
    for e in &events {
        assert_eq!(fake.send(e, &rx.webhook_url()), 200);
    }
    // A duplicate (the same webhook id again), and a delivery whose signature is wrong.
    assert_eq!(fake.send(&events[2], &rx.webhook_url()), 200);
    let mut garbled = fake.sign(&fake.event("order.paid", &order), now().millis() / 1000);
    garbled.signature = "v1,AAAA".into();
    assert_eq!(fake.send_signed(&garbled, &rx.webhook_url()), 401);
    assert_eq!(available(&db.store, &acct), c(1000));

    let (status, text) = get(&metrics, Some(METRICS_TOKEN));
    assert_eq!(status, 200, "{text}");
    let delivered = |event: &str, outcome: &str| {
        value(
            &text,
            &format!(
                "shotledger_webhook_deliveries_total{{event_type=\"{event}\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(delivered("order.created", "processed"), 1.0, "{text}");
    assert_eq!(delivered("order.paid", "processed"), 1.0, "{text}");
    assert_eq!(delivered("order.paid", "duplicate"), 1.0, "{text}");
    assert_eq!(delivered("unknown", "bad_signature"), 1.0, "{text}");
    assert_eq!(
        value(
            &text,
            "shotledger_http_requests_total{route=\"/api/webhooks/polar\",method=\"POST\",status=\"200\"}"
        ),
        4.0,
        "{text}"
    );
    // The checkout was created at Polar (and the paid order read back from it).
    assert!(
        value(&text, "shotledger_polar_calls_total{outcome=\"ok\"}") >= 1.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "shotledger_polar_calls_total{outcome=\"failed\"}"),
        0.0,
        "{text}"
    );
    assert!(
        text.contains("# TYPE shotledger_db_pool_connections gauge"),
        "{text}"
    );

    let (status, body) = get(&format!("{}/readyz", rx.url()), None);
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["checks"]["migrations"]["ok"], true, "{body}");
    // The newest migration forgotten: not ready, naming it.
    db.store
        .execute_batch(
            "DELETE FROM __diesel_schema_migrations WHERE version = \
             (SELECT MAX(version) FROM __diesel_schema_migrations)",
        )
        .unwrap();
    let (status, body) = get(&format!("{}/readyz", rx.url()), None);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not ready: migrations"), "{body}");
}

/// The real binary with `log.format = "json"` and `metrics.webhooks_bind`: every stderr
/// line is JSON; each delivery's `request` line and its `webhook` line share the request
/// id; the Polar token and webhook secret never appear; the metrics listener counts the
/// deliveries without a token.
#[test]
fn the_binary_logs_json_with_request_ids_and_serves_metrics_on_its_own_listener() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let db = TestDb::sqlite();
    let fake = FakePolar::start(TOKEN, SECRET, KeyMode::Legacy);
    let (port, metrics_port) = (free_port(), free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_webhook-receiver"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SHOTLEDGER__WEBHOOKS__BIND", format!("127.0.0.1:{port}"))
        .env("SHOTLEDGER__LOG__FORMAT", "json")
        .env("SHOTLEDGER__LOG__LEVEL", "info")
        .env(
            "SHOTLEDGER__METRICS__WEBHOOKS_BIND",
            format!("127.0.0.1:{metrics_port}"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env(&db, Some(&fake.url())) {
        cmd.env(k, v);
    }
    let mut program = Program(cmd.spawn().expect("start webhook-receiver"));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    test_support::wait_healthy(addr, std::time::Duration::from_secs(30)).unwrap();

    let payments = polar_payments(&fake, &settings(&db, Some(&fake.url())), db.store.clone());
    let acct = account(&db.store);
    let order = bought(&fake, &payments, &acct, "pack_pro");
    let url = format!("http://{addr}/api/webhooks/polar");
    for e in fake.paid_events(&order) {
        assert_eq!(fake.send(&e, &url), 200);
    }
    assert_eq!(available(&db.store, &acct), c(1000));
    let (status, text) = get(&format!("http://127.0.0.1:{metrics_port}/metrics"), None);
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        value(
            &text,
            "shotledger_webhook_deliveries_total{event_type=\"order.paid\",outcome=\"processed\"}"
        ),
        1.0,
        "{text}"
    );
    // Not on the main listener without metrics.token.
    assert_eq!(get(&format!("http://{addr}/metrics"), None).0, 404);

    let status = std::process::Command::new("kill")
        .args(["-TERM", &program.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(program.0.wait().unwrap().success());
    let mut stderr = String::new();
    program
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let paid = lines
        .iter()
        .find(|l| l["message"] == "webhook" && l["event_type"] == "order.paid")
        .unwrap_or_else(|| panic!("no webhook line for order.paid in\n{stderr}"));
    let id = paid["span"]["request_id"].as_str().unwrap();
    let request = lines
        .iter()
        .find(|l| l["message"] == "request" && l["request_id"] == id)
        .unwrap_or_else(|| panic!("no request line for {id} in\n{stderr}"));
    assert_eq!(request["method"], "POST", "{request}");
    assert_eq!(request["route"], "/api/webhooks/polar", "{request}");
    assert_eq!(request["status"], 200, "{request}");
    assert!(request["latency_ms"].as_f64().unwrap() > 0.0, "{request}");
    for secret in [TOKEN, SECRET] {
        assert!(!stderr.contains(secret), "`{secret}` was logged:\n{stderr}");
    }
}
