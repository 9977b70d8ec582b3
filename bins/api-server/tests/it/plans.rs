//! Plans through HTTP (seed 002, ADR 9): the subscription view, the hard limit, extra
//! billed in blocks of 1,000, the wall under concurrency, upgrades, downgrades, cancelling,
//! and periods rolled once across "downtime". On SQLite and on PostgreSQL.

use crate::common;

use std::sync::{Arc, Barrier};

use api_server::AppState;
use common::*;
use ledger_core::Credits;
use serde_json::{json, Value};
use settings::{PlanSettings, Settings};

on_both_backends!(
    the_seed_002_examples_end_to_end,
    the_rounding_edges_end_to_end,
    the_wall_holds_under_concurrency,
    the_hard_limit_rules,
    upgrading_resets_the_hard_limit_and_starts_a_new_period,
    downgrading_to_free_bills_the_extra_at_once,
    downgrading_to_a_paying_plan_waits_for_the_next_period,
    cancelling_bills_the_extra_then_cancels,
    v1_credits_and_usage_entries_show_the_plan,
    a_week_of_downtime_grants_one_allowance,
    a_new_paid_plan_is_bought_through_a_checkout,
    a_subscription_polar_manages_changes_and_cancels_through_polar,
    the_sweeper_rolls_idle_accounts_and_records_items,
);

fn plan(
    id: &str,
    name: &str,
    credits: i64,
    price: i64,
    overage: i64,
    paying: bool,
) -> PlanSettings {
    PlanSettings {
        id: id.into(),
        name: name.into(),
        monthly_credits: Credits::whole(credits),
        price_cents: price,
        overage_cents_per_1000: overage,
        paying,
        polar_product_id: None,
    }
}

/// No signup bonus (the extra is exact), and two more paying plans.
fn plans_settings(s: &mut Settings) {
    s.credits.signup_bonus = Credits::ZERO;
    s.plans.push(plan("pro", "Pro", 50_000, 9_900, 300, true));
    s.plans
        .push(plan("starter", "Starter", 5_000, 1_900, 500, true));
}

async fn app(backend: &str) -> TestApp {
    TestApp::with(backend, plans_settings).await
}

/// An account with a key (no credits of its own): its id and the key.
fn customer(app: &TestApp) -> (String, Auth) {
    let (id, key) = account_with_key(&app.db.store, 0, app.clock.now());
    (id.into_string(), Auth::Key(key))
}

fn put_subscription(id: &str, body: Value) -> Req {
    Req::put(format!("/admin/v1/accounts/{id}/subscription"))
        .auth(&Auth::Admin)
        .json(body)
}

async fn subscribe(app: &TestApp, id: &str, plan_id: &str) -> Value {
    app.send(put_subscription(id, json!({"planId": plan_id})))
        .await
        .expect(200)
}

async fn hard_limit(app: &TestApp, auth: &Auth, n: i64) -> Resp {
    app.send(
        Req::put("/api/v1/subscription/hard-limit")
            .auth(auth)
            .json(json!({ "hardLimit": n })),
    )
    .await
}

async fn view(app: &TestApp, auth: &Auth) -> Value {
    app.send(Req::get("/api/v1/subscription").auth(auth))
        .await
        .expect(200)
}

async fn overage(app: &TestApp, auth: &Auth) -> Vec<Value> {
    app.list("/api/v1/subscription/overage", auth).await
}

async fn change(app: &TestApp, auth: &Auth, plan_id: &str) -> Resp {
    app.send(
        Req::post("/api/v1/subscription/change")
            .auth(auth)
            .json(json!({ "planId": plan_id })),
    )
    .await
}

/// A Basic customer (10,000 a month, 400 cents per 1,000 extra) with a hard limit of
/// 15,000.
async fn charging_extra(app: &TestApp) -> (String, Auth) {
    let (id, auth) = customer(app);
    subscribe(app, &id, "basic").await;
    hard_limit(app, &auth, 15_000).await.expect(200);
    (id, auth)
}

/// [`charging_extra`], then `used` credits debited.
async fn charged_extra(app: &TestApp, used: i64) -> (String, Auth) {
    let (id, auth) = charging_extra(app).await;
    app.debit(&id, json!(used)).await.expect(201);
    (id, auth)
}

/// [`change`] to `plan_id`, which answers `200` with the subscription on that plan.
async fn changed_to(app: &TestApp, auth: &Auth, plan_id: &str) -> Value {
    let v = change(app, auth, plan_id).await.expect(200);
    assert_eq!(v["planId"], plan_id);
    v
}

/// A new app whose customer, [`charged_extra`] with `used`, changed to `plan_id`: the app,
/// the customer, and the subscription as the change answered it.
async fn used_then_changed(
    backend: &'static str,
    used: i64,
    plan_id: &str,
) -> (TestApp, Auth, Value) {
    let app = app(backend).await;
    let (_, auth) = charged_extra(&app, used).await;
    let v = changed_to(&app, &auth, plan_id).await;
    (app, auth, v)
}

async fn the_seed_002_examples_end_to_end(backend: &'static str) {
    let app = app(backend).await;
    for (used, extra, billed, cents) in [(12_000, 2_000, 2_000, 800), (12_500, 2_500, 3_000, 1_200)]
    {
        let (id, auth) = charging_extra(&app).await;
        app.debit(&id, json!(10_000)).await.expect(201);
        app.debit(&id, json!(used - 10_000)).await.expect(201);
        let v = view(&app, &auth).await;
        println!(
            "seed 002 through HTTP: used {} extra {} extraBilled {} extraChargeCents {}",
            v["used"], v["extra"], v["extraBilled"], v["extraChargeCents"]
        );
        assert_eq!(v["planLimit"], 10_000);
        assert_eq!(v["hardLimit"], 15_000);
        assert_eq!(v["used"], used);
        assert_eq!(v["extra"], extra);
        assert_eq!(v["extraBilled"], billed);
        assert_eq!(v["extraChargeCents"], cents);
        let items = overage(&app, &auth).await;
        assert_eq!(items.len() as i64, billed / 1_000);
        for item in &items {
            assert_eq!(item["blocks"], 1);
            assert_eq!(item["credits"], 1_000);
            assert_eq!(item["amountCents"], 400);
            assert_eq!(
                item["status"], "recorded",
                "no provider reports usage: recorded"
            );
            assert_eq!(item["periodStart"], v["currentPeriodStart"]);
        }
        let mut fields: Vec<&String> = v.as_object().unwrap().keys().collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "currentPeriodEnd",
                "currentPeriodStart",
                "extra",
                "extraBilled",
                "extraChargeCents",
                "hardLimit",
                "id",
                "maxHardLimit",
                "planId",
                "planLimit",
                "planName",
                "status",
                "used"
            ]
        );
    }
    app.assert_verified().await;
}

async fn the_rounding_edges_end_to_end(backend: &'static str) {
    let app = app(backend).await;
    for (extra, billed, cents) in [
        (1, 1_000, 400),
        (999, 1_000, 400),
        (1_000, 1_000, 400),
        (1_001, 2_000, 800),
    ] {
        let (_, auth) = charged_extra(&app, 10_000 + extra).await;
        let v = view(&app, &auth).await;
        println!(
            "seed 002 rounding through HTTP: extra {} extraBilled {} extraChargeCents {}",
            v["extra"], v["extraBilled"], v["extraChargeCents"]
        );
        assert_eq!(
            (v["extra"].clone(), v["extraBilled"].clone()),
            (json!(extra), json!(billed))
        );
        assert_eq!(v["extraChargeCents"], cents);
    }
    app.assert_verified().await;
}

fn the_wall_holds_under_concurrency(backend: &'static str) {
    let db = test_support::TestDb::of(backend);
    let clock = PinnedClock::at(START);
    let mut s = settings();
    plans_settings(&mut s);
    let state = AppState::new(db.store.clone(), s, clock.clock()).expect("valid settings");
    let server = Arc::new(LiveServer::start(state, 4));
    let (id, key) = account_with_key(&db.store, 0, clock.now());
    let (id, auth) = (id.into_string(), Auth::Key(key));
    server
        .send(&put_subscription(&id, json!({"planId": "basic"})))
        .expect(200);
    server
        .send(
            &Req::put("/api/v1/subscription/hard-limit")
                .auth(&auth)
                .json(json!({"hardLimit": 15_000})),
        )
        .expect(200);
    const THREADS: usize = 16;
    const EACH: usize = 25;
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (server, barrier, id) = (server.clone(), barrier.clone(), id.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let (mut ok, mut walls) = (0, 0);
                for i in 0..EACH {
                    let res = server.send(
                        &Req::post(format!("/admin/v1/accounts/{id}/debits"))
                            .auth(&Auth::Admin)
                            .json(json!({"amount": 41, "description": format!("t{t} #{i}")})),
                    );
                    match res.status {
                        201 => ok += 1,
                        402 => {
                            assert_eq!(res.json()["code"], "HARD_LIMIT_REACHED", "{}", res.text());
                            walls += 1;
                        }
                        other => panic!("unexpected {other}: {}", res.text()),
                    }
                }
                (ok, walls)
            })
        })
        .collect();
    let (mut ok, mut walls) = (0, 0);
    for h in handles {
        let (o, w) = h.join().expect("a client thread");
        ok += o;
        walls += w;
    }
    // 15,000 / 41 = 365 charges fit (14,965); the other 35 meet the wall.
    assert_eq!((ok, walls), (365, THREADS * EACH - 365));
    let v = server
        .send(&Req::get("/api/v1/subscription").auth(&auth))
        .expect(200);
    assert_eq!(v["extra"], 4_965, "{v}");
    assert_eq!(v["extraBilled"], 5_000);
    assert_eq!(v["extraChargeCents"], 2_000);
    let items = server
        .send(&Req::get("/api/v1/subscription/overage").auth(&auth))
        .expect(200);
    assert_eq!(
        items.as_array().unwrap().len(),
        5,
        "one item per block, never twice"
    );
    let verify = server
        .send(&Req::get("/admin/v1/verify").auth(&Auth::Admin))
        .expect(200);
    assert_eq!(verify["ok"], true, "{verify}");
}

async fn the_hard_limit_rules(backend: &'static str) {
    let app = app(backend).await;
    let (id, auth) = customer(&app);
    // No subscription: 404 NO_SUBSCRIPTION, for the view and the hard limit.
    let res = app.send(Req::get("/api/v1/subscription").auth(&auth)).await;
    assert_eq!(res.expect(404)["code"], "NO_SUBSCRIPTION");
    assert_eq!(
        hard_limit(&app, &auth, 15_000).await.expect(404)["code"],
        "NO_SUBSCRIPTION"
    );
    let sub = subscribe(&app, &id, "basic").await;
    assert_eq!(
        sub["hardLimit"], 10_000,
        "the hard limit starts at the plan's limit"
    );
    assert_eq!(sub["accountId"], id.as_str());
    for n in [9_999, 100_001] {
        let err = hard_limit(&app, &auth, n).await.expect(400);
        assert_eq!(
            (err["code"].clone(), err["field"].clone()),
            (json!("INVALID_REQUEST"), json!("hardLimit")),
            "{n}: {err}"
        );
    }
    assert_eq!(
        hard_limit(&app, &auth, 15_000).await.expect(200)["hardLimit"],
        15_000
    );
    // Without raising it, a Basic customer past the allowance gets a plain 402.
    let (other, _) = customer(&app);
    subscribe(&app, &other, "basic").await;
    let res = app.debit(&other, json!(10_001)).await;
    assert_eq!(res.expect(402)["code"], "INSUFFICIENT_CREDITS");
    // Below this period's use: 400 naming hardLimit.
    app.debit(&id, json!(12_000)).await.expect(201);
    let err = hard_limit(&app, &auth, 11_000).await.expect(400);
    assert_eq!(err["field"], "hardLimit", "{err}");
    // The operator raises the maximum.
    app.send(
        Req::put(format!("/admin/v1/accounts/{id}/max-hard-limit"))
            .auth(&Auth::Admin)
            .json(json!({"maxHardLimit": 250_000})),
    )
    .await
    .expect(200);
    let v = hard_limit(&app, &auth, 200_000).await.expect(200);
    assert_eq!(
        (v["hardLimit"].clone(), v["maxHardLimit"].clone()),
        (json!(200_000), json!(250_000))
    );
    // A free plan refuses it: 403 FREE_PLAN.
    let (free_id, free_auth) = customer(&app);
    subscribe(&app, &free_id, "free").await;
    let err = hard_limit(&app, &free_auth, 200).await.expect(403);
    assert_eq!(err["code"], "FREE_PLAN", "{err}");
    app.assert_verified().await;
}

async fn upgrading_resets_the_hard_limit_and_starts_a_new_period(backend: &'static str) {
    let app = app(backend).await;
    let (id, auth) = charged_extra(&app, 11_500).await;
    app.clock.advance_secs(3 * 86_400);
    let v = changed_to(&app, &auth, "pro").await;
    assert_eq!(v["planName"], "Pro");
    assert_eq!(v["hardLimit"], 50_000, "reset to the new plan's limit");
    assert_eq!(
        v["currentPeriodStart"], "2026-03-18T12:00:00.000Z",
        "a new period, now"
    );
    assert_eq!(
        (v["used"].clone(), v["extra"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(
        app.balance(&auth).await,
        json!(50_000),
        "the old allowance expired, the new one granted"
    );
    // The old period's extra (1,500) was billed: two blocks.
    let items = overage(&app, &auth).await;
    assert_eq!(items.len(), 2);
    // Charging extra is off until set again.
    let res = app.debit(&id, json!(50_001)).await;
    assert_eq!(res.expect(402)["code"], "INSUFFICIENT_CREDITS");
    let txns = app.transactions(&auth).await;
    let allowances = of_type(&txns, "allowance");
    assert_eq!(allowances.len(), 2);
    assert_eq!(allowances[0]["amount"], 50_000);
    app.assert_verified().await;
}

async fn downgrading_to_free_bills_the_extra_at_once(backend: &'static str) {
    let (app, auth, v) = used_then_changed(backend, 10_700, "free").await;
    assert_eq!(
        (
            v["extra"].clone(),
            v["extraBilled"].clone(),
            v["extraChargeCents"].clone()
        ),
        (json!(700), json!(1_000), json!(400))
    );
    assert_eq!(v["hardLimit"], 100);
    assert_eq!(
        app.balance(&auth).await,
        json!(0),
        "the extra is written off: nothing owed in credits"
    );
    let txns = app.transactions(&auth).await;
    assert_eq!(txns[0]["type"], "adjustment");
    assert_eq!(txns[0]["amount"], 700);
    // The free allowance comes with the next period.
    app.clock.set("2026-04-15T12:00:00.000Z");
    assert_eq!(app.balance(&auth).await, json!(100));
    app.assert_verified().await;
}

async fn downgrading_to_a_paying_plan_waits_for_the_next_period(backend: &'static str) {
    let (app, auth, v) = used_then_changed(backend, 10_500, "starter").await;
    assert_eq!(
        v["extra"], 500,
        "nothing billed at once beyond the blocks crossed"
    );
    assert_eq!(v["hardLimit"], 15_000);
    assert_eq!(
        v["currentPeriodStart"], "2026-03-15T12:00:00.000Z",
        "the same period"
    );
    assert_eq!(overage(&app, &auth).await.len(), 1);
    app.clock.set("2026-04-15T12:00:00.000Z");
    assert_eq!(
        app.balance(&auth).await,
        json!(5_000),
        "the new allowance from the next period"
    );
    app.assert_verified().await;
}

async fn cancelling_bills_the_extra_then_cancels(backend: &'static str) {
    let app = app(backend).await;
    let (id, auth) = charged_extra(&app, 12_000).await;
    let v = app
        .send(Req::post("/api/v1/subscription/cancel").auth(&auth))
        .await
        .expect(200);
    assert_eq!(v["status"], "cancelled");
    assert_eq!(
        (v["extra"].clone(), v["extraBilled"].clone()),
        (json!(2_000), json!(2_000))
    );
    let v1 = app
        .send(Req::get("/v1/credits").auth(&auth))
        .await
        .expect(200);
    assert_eq!(v1["subscriptionStatus"], "cancelled");
    let res = app.debit(&id, json!(1)).await;
    assert_eq!(res.expect(402)["code"], "INSUFFICIENT_CREDITS");
    app.clock.set("2026-05-20T12:00:00.000Z");
    assert_eq!(app.balance(&auth).await, json!(0), "no further allowance");
    app.assert_verified().await;
}

async fn v1_credits_and_usage_entries_show_the_plan(backend: &'static str) {
    let app = app(backend).await;
    let (id, auth) = customer(&app);
    let v1 = app
        .send(Req::get("/v1/credits").auth(&auth))
        .await
        .expect(200);
    assert_eq!(v1, json!({"credits": 0, "subscriptionStatus": "inactive"}));
    let sub = subscribe(&app, &id, "basic").await;
    let v1 = app
        .send(Req::get("/v1/credits").auth(&auth))
        .await
        .expect(200);
    assert_eq!(
        v1,
        json!({"credits": 10_000, "subscriptionStatus": "active", "subscriptionId": sub["id"]})
    );
    app.debit(&id, json!(3)).await.expect(201);
    let usage = app
        .send(Req::get("/api/v1/credits/usage").auth(&auth))
        .await
        .expect(200);
    let entries = usage.as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e["plan"] == "Basic"), "{usage}");
    assert_eq!(entries[1]["source"], "Monthly Reset");
    assert_eq!(entries[1]["type"], "credit");
    assert_eq!(entries[1]["amount"], 10_000);
    assert!(
        entries[1]["description"]
            .as_str()
            .unwrap()
            .contains("Basic"),
        "{usage}"
    );
}

async fn a_week_of_downtime_grants_one_allowance(backend: &'static str) {
    let app = app(backend).await;
    let (id, auth) = customer(&app);
    // Anchored in the past: the current period is the one `now` falls in.
    let sub = app
        .send(put_subscription(
            &id,
            json!({"planId": "basic", "currentPeriodStart": "2026-01-10T00:00:00Z"}),
        ))
        .await
        .expect(200);
    assert_eq!(sub["currentPeriodStart"], "2026-03-10T00:00:00.000Z");
    assert_eq!(sub["currentPeriodEnd"], "2026-04-10T00:00:00.000Z");
    app.debit(&id, json!(4_000)).await.expect(201);
    // Nothing runs for two months and a week.
    app.clock.set("2026-05-17T12:00:00.000Z");
    assert_eq!(app.balance(&auth).await, json!(10_000));
    let v = view(&app, &auth).await;
    assert_eq!(v["currentPeriodStart"], "2026-05-10T00:00:00.000Z");
    let txns = app.transactions(&auth).await;
    let kinds = types_of(&txns);
    assert_eq!(
        kinds,
        ["allowance", "expiry", "usage", "allowance"],
        "{txns}"
    );
    assert_eq!(txns[1]["amount"], -6_000);
    app.assert_verified().await;
}

async fn a_new_paid_plan_is_bought_through_a_checkout(backend: &'static str) {
    let app = app(backend).await;
    let (_, auth) = customer(&app);
    // A new paid plan is bought through the provider; without one, none can be.
    let err = change(&app, &auth, "basic").await.expect(503);
    assert_eq!(err["code"], "PAYMENTS_NOT_CONFIGURED", "{err}");
    // With the demo provider it is a checkout; nothing changes until it is paid.
    let demo = TestApp::with_payments(backend, |s| {
        plans_settings(s);
        s.payments.provider = "demo".into();
    })
    .await;
    let (_, buyer) = customer(&demo);
    let checkout = change(&demo, &buyer, "basic").await.expect(202);
    let url = checkout["checkoutUrl"].as_str().unwrap_or_default();
    assert!(url.contains("/demo/subscription/"), "{checkout}");
    demo.send(Req::get("/api/v1/subscription").auth(&buyer))
        .await
        .expect(404);
    // A free plan applies at once, operator-managed.
    let v = change(&app, &auth, "free").await.expect(200);
    assert_eq!(
        (v["planId"].clone(), v["status"].clone()),
        (json!("free"), json!("active"))
    );
    // From free to paid is an upgrade of a subscription in force: at once.
    let v = changed_to(&app, &auth, "basic").await;
    assert_eq!(v["planLimit"], 10_000);
    // An upgrade in the very millisecond the period started opens the new period one
    // millisecond later (one allowance per period).
    assert_eq!(v["currentPeriodStart"], "2026-03-15T12:00:00.001Z");
    app.clock.advance_secs(1);
    assert_eq!(
        app.balance(&auth).await,
        json!(10_000),
        "the free allowance expired, Basic's granted"
    );
    let err = change(&app, &auth, "platinum").await.expect(404);
    assert!(err["error"].as_str().unwrap().contains("platinum"), "{err}");
    app.assert_verified().await;
}

/// The real binary: subscribed with a period anchored 45 days ago, restarted; the current
/// period's allowance is granted once, whatever runs after the restart (a request, the
/// sweeper at start).
#[test]
fn the_binary_grants_one_allowance_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (running, addr) = start_binary(dir.path(), "");
    let send = |addr, req: &Req| http(addr, req).unwrap();
    let signup = send(
        addr,
        &Req::post("/api/v1/auth/signup")
            .json(json!({"email": "plans@example.com", "password": PASSWORD})),
    );
    let id = signup.expect(201)["accountId"].as_str().unwrap().to_owned();
    let (cookie, _) = signup.session_cookie().unwrap();
    let auth = Auth::Cookie(cookie);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let anchor = ledger_core::Timestamp::from_millis(now_ms - 45 * 86_400_000);
    let sub = send(
        addr,
        &put_subscription(
            &id,
            json!({"planId": "basic", "currentPeriodStart": anchor.rfc3339()}),
        ),
    )
    .expect(200);
    assert_ne!(
        sub["currentPeriodStart"],
        json!(anchor.rfc3339()),
        "the period now falls in"
    );
    drop(running);
    let (_running, addr) = start_binary(dir.path(), "");
    for _ in 0..3 {
        let v = send(addr, &Req::get("/api/v1/subscription").auth(&auth)).expect(200);
        assert_eq!(v["currentPeriodStart"], sub["currentPeriodStart"]);
        let txns = send(addr, &Req::get("/api/v1/credits/transactions").auth(&auth)).expect(200);
        let allowances = txns
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["type"] == "allowance")
            .count();
        assert_eq!(allowances, 1, "{txns}");
    }
    let balance = send(addr, &Req::get("/api/v1/credits").auth(&auth)).expect(200);
    assert_eq!(
        balance["balance"], 10_005,
        "the allowance and the signup bonus"
    );
    let verify = send(addr, &Req::get("/admin/v1/verify").auth(&Auth::Admin)).expect(200);
    assert_eq!(verify["ok"], true, "{verify}");
}

async fn the_sweeper_rolls_idle_accounts_and_records_items(backend: &'static str) {
    let app = app(backend).await;
    let (id, auth) = charged_extra(&app, 10_001).await;
    let (idle, _) = customer(&app);
    subscribe(&app, &idle, "free").await;
    let store = app.db.store.clone();
    // Within the period nothing is due; the pending item is recorded (no provider).
    let now = app.clock.now();
    assert_eq!(
        api_server::service::subscription::sweep(&store, true, now).unwrap(),
        0
    );
    let items = store
        .plans()
        .overage_items(&ledger_core::AccountId::new(id.clone()))
        .unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].status, ledger_store::OverageStatus::Recorded);
    // After the boundary the sweeper starts both periods once, whoever touches them.
    app.clock.set("2026-04-15T12:00:00.000Z");
    let now = app.clock.now();
    assert_eq!(
        api_server::service::subscription::sweep(&store, true, now).unwrap(),
        2
    );
    assert_eq!(
        api_server::service::subscription::sweep(&store, true, now).unwrap(),
        0
    );
    assert_eq!(app.balance(&auth).await, json!(10_000));
    let txns = app.transactions(&auth).await;
    assert_eq!(txns[0]["type"], "allowance");
    assert_eq!(
        txns[1]["type"], "adjustment",
        "the billed extra written off: {txns}"
    );
    assert_eq!(txns[1]["amount"], 1);
    app.assert_verified().await;
}

/// Polar mode against `fake_url`, with every paying plan sold as `prod_<plan id>`.
fn on_polar(s: &mut Settings, fake_url: &str) {
    let polar = test_support::polar::settings_from(
        test_support::polar::polar_env("sqlite://unused.db", Some(fake_url), POLAR_SECRET, 5),
        true,
    );
    s.polar = polar.polar;
    s.payments = polar.payments;
    s.credits.packs = polar.credits.packs;
    plans_settings(s);
    test_support::polar::sell_plans_on_polar(s);
}

const POLAR_SECRET: &str = "whsec_ovyN6cPrTv56AApvzCaJno08SSmGJmgbWilb33N2JuK";

/// A subscription bought on Polar (its webhooks applied through the store's book) changes
/// and cancels through Polar's API: 202, and nothing changes here until Polar's webhooks.
async fn a_subscription_polar_manages_changes_and_cancels_through_polar(backend: &'static str) {
    use test_support::fake_polar::{FakePolar, KeyMode};
    let fake = FakePolar::start(test_support::polar::TOKEN, POLAR_SECRET, KeyMode::Legacy);
    let url = fake.url();
    let app = TestApp::with_payments(backend, |s| on_polar(s, &url)).await;
    let (id, auth) = customer(&app);
    let acct = ledger_core::AccountId::new(id.clone());
    // The customer buys Basic at Polar; its webhooks reach the store through its book.
    let mut s = common::settings();
    on_polar(&mut s, &url);
    let plans = s.plans.iter().map(|p| p.plan()).collect();
    let book = Arc::new(payments::StoreBook::new(app.db.store.clone(), plans));
    let p = test_support::polar::with_plans(
        test_support::polar::polar_payments(&fake, &s, app.db.store.clone()),
        &s,
        book,
        Some(&fake),
    );
    let (sub, events) = fake.subscribe(&p, &acct, "basic");
    for e in &events {
        p.process_event(&e.event_type, &e.body, app.clock.now())
            .expect("the subscription webhooks apply");
    }
    let polar_id = sub["id"].as_str().unwrap().to_owned();
    let before = view(&app, &auth).await;
    assert_eq!(
        (before["planId"].clone(), before["status"].clone()),
        (json!("basic"), json!("active"))
    );
    // Upgrading goes to Polar.
    let asked = change(&app, &auth, "pro").await.expect(202);
    assert_eq!(
        asked["planId"], "basic",
        "unchanged until Polar's webhook: {asked}"
    );
    let patches: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path == format!("/v1/subscriptions/{polar_id}"))
        .collect();
    assert_eq!(patches.len(), 1, "one PATCH");
    assert_eq!(patches[0].body["product_id"], "prod_pro");
    // Cancelling too: at the period's end, at Polar.
    app.send(Req::post("/api/v1/subscription/cancel").auth(&auth))
        .await
        .expect(202);
    let cancels = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.body["cancel_at_period_end"] == json!(true))
        .count();
    assert_eq!(cancels, 1);
    assert_eq!(view(&app, &auth).await["status"], "active");
    app.assert_verified().await;
}
