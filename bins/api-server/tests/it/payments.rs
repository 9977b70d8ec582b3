//! Purchases and auto top-up through the api-server: with the demo payment provider (asked
//! for by name), with Polar, and with no provider at all (the built-in default).

use std::sync::Arc;

use crate::common::account_with_key;
use actix_web::test;
use api_server::{app, AppState};
use ledger_core::{Credits, EntryKind, Page, Timestamp};
use settings::{Settings, Sources};
use test_support::on_both_backends as both;
use test_support::TestDb;

const NOW: i64 = 1_800_000_000_000;

struct World {
    db: TestDb,
    state: AppState,
    payments: Arc<payments::Payments>,
    key: String,
    account: ledger_core::AccountId,
    _dir: tempfile::TempDir,
}

fn world(db: TestDb, env: &[(&str, &str)]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut vars: Vec<(String, String)> = vec![
        (
            "SHOTLEDGER__SCREENSHOTS__CACHE_DIR".into(),
            dir.path().display().to_string(),
        ),
        (
            "SHOTLEDGER__WEBHOOKS__PUBLIC_URL".into(),
            "http://pay.example.test".into(),
        ),
        (
            "SHOTLEDGER__ADMIN__TOKEN".into(),
            "admin-token-0123456789".into(),
        ),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let settings = Settings::load(Sources {
        env: vars,
        ..Sources::default()
    })
    .unwrap();
    let payments = Arc::new(startup::payments(&settings, db.store.clone()).unwrap());
    let clock: api_server::Clock = Arc::new(|| Timestamp::from_millis(NOW));
    let state = AppState::new(db.store.clone(), settings, clock)
        .unwrap()
        .with_payments(payments.clone());
    let now = Timestamp::from_millis(NOW);
    let (account, key) = account_with_key(&db.store, 5, now);
    World {
        db,
        state,
        payments,
        key,
        account,
        _dir: dir,
    }
}

/// `PUT /api/v1/credits/auto-topup` as `key`: on, below 3 credits, the Starter pack.
fn auto_topup_on(key: &str) -> test::TestRequest {
    test::TestRequest::put()
        .uri("/api/v1/credits/auto-topup")
        .insert_header(("x-api-key", key))
        .set_json(
            serde_json::json!({"enabled": true, "thresholdCredits": 3, "packId": "pack_starter"}),
        )
}

/// `POST /api/v1/credits/purchase` of `pack` as `key`.
fn purchase(key: &str, pack: &str) -> test::TestRequest {
    test::TestRequest::post()
        .uri("/api/v1/credits/purchase")
        .insert_header(("x-api-key", key))
        .set_json(serde_json::json!({"packId": pack}))
}

async fn demo_purchase_and_auto_topup(db: TestDb) {
    let w = world(db, &[("SHOTLEDGER__PAYMENTS__PROVIDER", "demo")]);
    let app = test::init_service(app(w.state.clone())).await;
    let req = |method: test::TestRequest, uri: &str| {
        method.uri(uri).insert_header(("x-api-key", w.key.as_str()))
    };

    // A purchase is a checkout URL; no credits until payment is confirmed.
    let res = test::call_service(&app, purchase(&w.key, "pack_pro").to_request()).await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = test::read_body_json(res).await;
    let url = body["checkoutUrl"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with("http://pay.example.test/demo/checkout/"),
        "{url}"
    );
    let balance =
        w.db.store
            .ledger()
            .balance(&w.account, Timestamp::from_millis(NOW))
            .unwrap()
            .available;
    assert_eq!(balance, Credits::whole(5), "no credits before payment");
    let missing = test::call_service(&app, purchase(&w.key, "pack_nope").to_request()).await;
    assert_eq!(missing.status(), 404);

    // Auto top-up: unknown pack 404, bad threshold 400, then on.
    let put = |body: serde_json::Value| {
        req(test::TestRequest::put(), "/api/v1/credits/auto-topup")
            .set_json(body)
            .to_request()
    };
    assert_eq!(
        test::call_service(
            &app,
            put(serde_json::json!({"enabled": true, "thresholdCredits": 3, "packId": "pack_x"}))
        )
        .await
        .status(),
        404
    );
    assert_eq!(test::call_service(&app, put(serde_json::json!({"enabled": true, "thresholdCredits": -1, "packId": "pack_starter"}))).await.status(), 400);
    let on: serde_json::Value = test::call_and_read_body_json(
        &app,
        put(serde_json::json!({"enabled": true, "thresholdCredits": 3, "packId": "pack_starter"})),
    )
    .await;
    assert_eq!(
        (
            on["enabled"].as_bool(),
            on["status"].as_str(),
            on["thresholdCredits"].as_i64()
        ),
        (Some(true), Some("active"), Some(3))
    );

    // Three charges take the balance from 5 to 2, below 3: exactly one top-up starts.
    for i in 0..3 {
        let debit = test::TestRequest::post()
            .uri(&format!("/admin/v1/accounts/{}/debits", w.account))
            .insert_header(("Authorization", "Bearer admin-token-0123456789"))
            .set_json(serde_json::json!({"amount": 1, "description": format!("work {i}")}))
            .to_request();
        assert_eq!(test::call_service(&app, debit).await.status(), 201);
    }
    let pending: serde_json::Value = test::call_and_read_body_json(
        &app,
        req(test::TestRequest::get(), "/api/v1/credits/auto-topup").to_request(),
    )
    .await;
    assert_eq!(pending["status"], "pending", "{pending}");
    // The provider confirms the payment: credits land once, as auto_topup.
    let settled = w
        .payments
        .run_auto_topups(Timestamp::from_millis(NOW + 1_000))
        .unwrap();
    assert_eq!(settled, 1);
    assert_eq!(
        w.payments
            .run_auto_topups(Timestamp::from_millis(NOW + 2_000))
            .unwrap(),
        0,
        "nothing left to do"
    );
    let history =
        w.db.store
            .ledger()
            .history(&w.account, Page::default())
            .unwrap();
    let topups: Vec<_> = history
        .iter()
        .filter(|e| e.kind == EntryKind::AutoTopup)
        .collect();
    assert_eq!(topups.len(), 1);
    assert_eq!(topups[0].amount, Credits::whole(100));
    let balance =
        w.db.store
            .ledger()
            .balance(&w.account, Timestamp::from_millis(NOW + 3_000))
            .unwrap()
            .available;
    assert_eq!(balance, Credits::whole(102));
    let after: serde_json::Value = test::call_and_read_body_json(
        &app,
        req(test::TestRequest::get(), "/api/v1/credits/auto-topup").to_request(),
    )
    .await;
    assert_eq!(after["status"], "active");
    assert!(w.db.store.maintenance().verify().unwrap().ok);
}

async fn polar_cannot_auto_topup(db: TestDb) {
    let w = world(
        db,
        &[
            ("SHOTLEDGER__POLAR__ACCESS_TOKEN", "polar_oat_test"),
            ("SHOTLEDGER__POLAR__WEBHOOK_SECRET", "whsec_dGVzdA=="),
        ],
    );
    let app = test::init_service(app(w.state.clone())).await;
    let res = test::call_service(&app, auto_topup_on(&w.key).to_request()).await;
    assert_eq!(res.status(), 409);
    let body: serde_json::Value = test::read_body_json(res).await;
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("polar"),
        "{body}"
    );
    // A pack without a Polar product cannot be bought: the contract's 500.
    let res = test::call_service(&app, purchase(&w.key, "pack_pro").to_request()).await;
    assert_eq!(res.status(), 500);
    let body: serde_json::Value = test::read_body_json(res).await;
    assert_eq!(
        body,
        serde_json::json!({"error": "Product not configured for this pack"})
    );
}

async fn no_provider_mints_nothing(db: TestDb) {
    // The built-in defaults: no polar.access_token, no payments.provider.
    let w = world(db, &[]);
    let app = test::init_service(app(w.state.clone())).await;
    let res = test::call_service(&app, purchase(&w.key, "pack_enterprise").to_request()).await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = test::read_body_json(res).await;
    assert_eq!(body["code"], "PAYMENTS_NOT_CONFIGURED", "{body}");
    // Auto top-up cannot be turned on: nothing could pay for it.
    let res = test::call_service(&app, auto_topup_on(&w.key).to_request()).await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = test::read_body_json(res).await;
    assert_eq!(body["code"], "PAYMENTS_NOT_CONFIGURED", "{body}");
    // Settings saved while another provider was on, and a charge started: the worker
    // declines it (and pauses auto top-up); no credits appear.
    let now = Timestamp::from_millis(NOW);
    w.db.store
        .orders()
        .put_auto_topup(
            &w.account,
            true,
            Credits::whole(10),
            &ledger_store::payments::TopupPack {
                pack_id: ledger_core::PackId::new("pack_starter"),
                credits: Credits::whole(100),
                price_cents: 500,
            },
            now,
        )
        .unwrap();
    assert!(w
        .db
        .store
        .orders()
        .after_charge_standalone(&w.account, now)
        .unwrap()
        .is_some());
    assert_eq!(w.payments.run_auto_topups(now).unwrap(), 1);
    let balance =
        w.db.store
            .ledger()
            .balance(&w.account, now)
            .unwrap()
            .available;
    assert_eq!(balance, Credits::whole(5));
    let view: serde_json::Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::get()
            .uri("/api/v1/credits/auto-topup")
            .insert_header(("x-api-key", w.key.as_str()))
            .to_request(),
    )
    .await;
    assert_eq!(view["status"], "paused", "{view}");
    assert!(w.db.store.maintenance().verify().unwrap().ok);
}

both!(
    demo_purchase_and_auto_topup,
    polar_cannot_auto_topup,
    no_provider_mints_nothing
);
