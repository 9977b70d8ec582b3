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
