//! The operator API: accounts, adjustments, debits, holds, refunds, subscriptions, the
//! maximum hard limit, verify, and `Idempotency-Key` on every charged call. Every test runs
//! on SQLite and on PostgreSQL.

use crate::common;

use actix_web::http::Method;
use common::*;
use serde_json::{json, Value};

on_both_backends!(
    the_admin_api_is_off_without_a_token,
    the_admin_api_needs_the_bearer_token,
    accounts_are_created_with_the_signup_bonus,
    adjustments_grant_and_take_but_never_below_zero,
    debits_charge_or_answer_402_with_metering_headers,
    holds_capture_all_or_part_and_release,
    settled_and_expired_holds_are_409,
    refunds_are_capped_by_the_charge,
    subscriptions_and_the_maximum_hard_limit,
    verify_reports_a_clean_ledger,
    idempotency_keys_have_one_effect_on_every_charged_call,
    idempotency_conflicts_and_replayed_rejections,
    balances_stop_at_the_maximum,
    wrong_types_are_400_naming_the_field,
);

fn admin(method: actix_web::http::Method, path: String) -> Req {
    Req::new(method, path).auth(&Auth::Admin)
}

/// `POST /admin/v1/holds/{hold_id}/capture` of `body`, as the admin.
fn capture(hold_id: &str, body: Value) -> Req {
    post(format!("/admin/v1/holds/{hold_id}/capture"), body)
}

/// `GET /admin/v1/verify`, answered 200: the report.
async fn verify(app: &TestApp) -> Value {
    app.send(admin(Method::GET, "/admin/v1/verify".into()))
        .await
        .expect(200)
}

fn post(path: String, body: Value) -> Req {
    Req::post(path).auth(&Auth::Admin).json(body)
}

/// Every admin endpoint, with a body good enough to reach the handler.
fn every_admin_call(account: &str) -> Vec<Req> {
    vec![
        Req::post("/admin/v1/accounts").json(json!({})),
        Req::post(format!("/admin/v1/accounts/{account}/credits"))
            .json(json!({"amount": 5, "description": "x"})),
        Req::post(format!("/admin/v1/accounts/{account}/debits"))
            .json(json!({"amount": 1, "description": "x"})),
        Req::post(format!("/admin/v1/accounts/{account}/holds"))
            .json(json!({"amount": 1, "description": "x"})),
        Req::post("/admin/v1/holds/hold_x/capture").json(json!({})),
        Req::post("/admin/v1/holds/hold_x/release"),
        Req::post(format!("/admin/v1/accounts/{account}/refunds"))
            .json(json!({"transactionId": "txn_x"})),
        Req::put(format!("/admin/v1/accounts/{account}/subscription"))
            .json(json!({"planId": "basic"})),
        Req::put(format!("/admin/v1/accounts/{account}/max-hard-limit"))
            .json(json!({"maxHardLimit": 200000})),
        Req::get("/admin/v1/verify"),
    ]
}

async fn the_admin_api_is_off_without_a_token(backend: &'static str) {
    let app = TestApp::with(backend, |s| s.admin.token = String::new().into()).await;
    let (auth, id) = app.user("noadmin@example.com").await;
    for req in every_admin_call(&id) {
        for auth in [Auth::Admin, Auth::None, Auth::Bearer(String::new())] {
            let res = app.send(req.clone().auth(&auth)).await;
            let body = res.expect(404);
            assert!(body["error"].as_str().unwrap().contains("admin"), "{body}");
            assert!(res.header("x-request-id").is_some());
        }
    }
    // Nothing changed.
    assert_eq!(app.balance(&auth).await, json!(5));
}

async fn the_admin_api_needs_the_bearer_token(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (auth, id) = app.user("admin-auth@example.com").await;
    let key = match &auth {
        Auth::Key(k) => k.clone(),
        _ => unreachable!(),
    };
    let wrong = [
        Auth::None,
        Auth::Bearer("not-the-admin-token-at-all".into()),
        Auth::Bearer(format!("{ADMIN}x")),
        Auth::Bearer(ADMIN[..ADMIN.len() - 1].to_owned()),
        Auth::RawAuthorization(ADMIN.into()),
        Auth::Header("x-api-key", ADMIN.into()),
        Auth::Cookie(ADMIN.into()),
        // A user's own key is no admin credential.
        Auth::Bearer(key.clone()),
        Auth::Key(key),
    ];
    for req in every_admin_call(&id) {
        for auth in &wrong {
            let res = app.send(req.clone().auth(auth)).await;
            assert_401(&res, &req, auth);
            assert!(res.json()["error"].is_string());
        }
    }
    assert_eq!(app.balance(&auth).await, json!(5));
    let v = verify(&app).await;
    assert_eq!(v["accounts"], 1, "no account was created by refused calls");
}

async fn accounts_are_created_with_the_signup_bonus(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let res = app
        .send(post(
            "/admin/v1/accounts".into(),
            json!({"email": "Ops@Example.com"}),
        ))
        .await;
    let body = res.expect(201);
    let id = body["accountId"].as_str().unwrap().to_owned();
    assert_eq!(
        body,
        json!({"accountId": id, "email": "ops@example.com", "balance": 5})
    );
    // Without an email at all.
    let anon = app
        .send(post("/admin/v1/accounts".into(), json!({})))
        .await
        .expect(201);
    assert_eq!(anon["balance"], 5);
    assert_eq!(anon["email"], Value::Null);
    assert_ne!(anon["accountId"], body["accountId"]);
    // With a password: the account can log in, and the bonus was granted once.
    let with_pw = app
        .send(post(
            "/admin/v1/accounts".into(),
            json!({"email": "pw@example.com", "password": PASSWORD}),
        ))
        .await
        .expect(201);
    let login = app.send(login_req("pw@example.com")).await;
    assert_eq!(login.expect(200)["accountId"], with_pw["accountId"]);
    let (cookie, _) = login.session_cookie().unwrap();
    let txns = app.transactions(&Auth::Cookie(cookie)).await;
    assert_eq!(txns.as_array().unwrap().len(), 1);
    assert_eq!(txns[0]["type"], "signup_bonus");
    assert_eq!(txns[0]["description"], "Welcome bonus");
    // Taken email 409, bad email / password 400 naming the field.
    app.send(post(
        "/admin/v1/accounts".into(),
        json!({"email": "ops@example.com"}),
    ))
    .await
    .expect(409);
    let err = app
        .send(post("/admin/v1/accounts".into(), json!({"email": "nope"})))
        .await
        .expect(400);
    assert_eq!(err["field"], "email");
    let err = app
        .send(post(
            "/admin/v1/accounts".into(),
            json!({"email": "x@example.com", "password": "short"}),
        ))
        .await
        .expect(400);
    assert_eq!(err["field"], "password");
    let v = verify(&app).await;
    assert_eq!(
        (v["accounts"].clone(), v["entries"].clone()),
        (json!(3), json!(3))
    );
}

async fn adjustments_grant_and_take_but_never_below_zero(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (auth, id) = app.user("adjust@example.com").await;
    let res = app
        .send(post(
            format!("/admin/v1/accounts/{id}/credits"),
            json!({"amount": 100, "description": "Goodwill", }),
        ))
        .await;
    let entry = res.expect(201);
    assert_eq!(entry["type"], "adjustment");
    assert_eq!(entry["amount"], 100);
    assert_eq!(entry["description"], "Goodwill");
    assert_eq!(entry["createdAt"], "2026-03-15T12:00:00.000Z");
    assert!(entry["id"].as_str().unwrap().starts_with("txn_"));
    assert_eq!(res.header("x-credits-remaining"), Some("105"));
    assert_eq!(res.header("x-credits-charged"), Some("0"));
    assert_eq!(app.balance(&auth).await, json!(105));

    let res = app
        .send(post(
            format!("/admin/v1/accounts/{id}/credits"),
            json!({"amount": -30, "description": "Correction"}),
        ))
        .await;
    let entry = res.expect(201);
    assert_eq!(
        (entry["type"].clone(), entry["amount"].clone()),
        (json!("adjustment"), json!(-30))
    );
    assert_eq!(res.header("x-credits-remaining"), Some("75"));
    // Taking more than there is: 402, nothing taken, with the metering headers.
    let res = app
        .send(post(
            format!("/admin/v1/accounts/{id}/credits"),
            json!({"amount": -76, "description": "Too much"}),
        ))
        .await;
    assert_eq!(
        res.expect(402),
        json!({"error": "Insufficient credits", "code": "INSUFFICIENT_CREDITS", "required": 76, "balance": 75})
    );
    assert_eq!(res.header("x-credits-remaining"), Some("75"));
    assert_eq!(res.header("x-credits-charged"), Some("0"));
    // Exactly all of it is fine: zero, never below.
    app.send(post(
        format!("/admin/v1/accounts/{id}/credits"),
        json!({"amount": -75, "description": "All"}),
    ))
    .await
    .expect(201);
    assert_eq!(app.balance(&auth).await, json!(0));
    app.send(post(
        format!("/admin/v1/accounts/{id}/credits"),
        json!({"amount": -0.001, "description": "Below zero"}),
    ))
    .await
    .expect(402);
    assert_eq!(app.balance(&auth).await, json!(0));
    // Zero, a missing or empty description, a wrong type: 400 naming the field.
    for (body, field) in [
        (json!({"amount": 0, "description": "x"}), "amount"),
        (json!({"amount": "lots", "description": "x"}), "amount"),
        (json!({"amount": true, "description": "x"}), "amount"),
        (json!({"amount": 1, "description": ""}), "description"),
        (json!({"amount": 1, "description": 7}), "description"),
    ] {
        let err = app
            .send(post(
                format!("/admin/v1/accounts/{id}/credits"),
                body.clone(),
            ))
            .await
            .expect(400);
        assert_eq!(err["field"], field, "{body}: {err}");
    }
    let err = app
        .send(post(
            format!("/admin/v1/accounts/{id}/credits"),
            json!({"amount": 1}),
        ))
        .await
        .expect(400);
    assert!(
        err["error"].as_str().unwrap().contains("description"),
        "{err}"
    );
    // An unknown account: 404.
    app.send(post(
        "/admin/v1/accounts/acct_nope/credits".into(),
        json!({"amount": 1, "description": "x"}),
    ))
    .await
    .expect(404);
    app.assert_verified().await;
}

async fn debits_charge_or_answer_402_with_metering_headers(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (auth, id) = app.user("debit@example.com").await;
    let res = app
        .send(post(
            format!("/admin/v1/accounts/{id}/debits"),
            json!({"amount": 2, "description": "Render job", "referenceId": "job_1"}),
        ))
        .await;
    let entry = res.expect(201);
    let mut keys: Vec<&String> = entry.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ENTRY_FIELDS);
    assert_eq!(entry["type"], "usage");
    assert_eq!(entry["amount"], -2);
    assert_eq!(entry["referenceId"], "job_1");
    assert_eq!(res.header("x-credits-remaining"), Some("3"));
    assert_eq!(res.header("x-credits-charged"), Some("2"));
    // Not covered: 402 with required and balance, nothing charged, headers present.
    let res = app
        .send(post(
            format!("/admin/v1/accounts/{id}/debits"),
            json!({"amount": 4, "description": "Big job"}),
        ))
        .await;
    let body = res.expect(402);
    assert_eq!(body["error"], "Insufficient credits");
    assert_eq!(body["required"], 4);
    assert_eq!(body["balance"], 3);
    assert_eq!(res.header("x-credits-remaining"), Some("3"));
    assert_eq!(res.header("x-credits-charged"), Some("0"));
    // Exactly the balance is covered.
    let res = app.debit(&id, json!(3)).await;
    res.expect(201);
    assert_eq!(res.header("x-credits-remaining"), Some("0"));
    assert_eq!(res.header("x-credits-charged"), Some("3"));
    let res = app.debit(&id, json!(0.001)).await;
    res.expect(402);
    assert_eq!(res.header("x-credits-remaining"), Some("0"));
    // Only the two debits and the bonus exist; no entry for the refusals.
    let txns = app.transactions(&auth).await;
    let amounts: Vec<&Value> = txns
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["amount"])
        .collect();
    assert_eq!(amounts, [&json!(-3), &json!(-2), &json!(5)]);
    // Bad amounts: 400 naming the field; unknown account 404.
    for amount in [json!(0), json!(-1), json!("x"), json!(null)] {
        let err = app.debit(&id, amount.clone()).await.expect(400);
        assert_eq!(err["field"], "amount", "{amount}: {err}");
    }
    app.debit("acct_nope", json!(1)).await.expect(404);
    app.assert_verified().await;
}

async fn holds_capture_all_or_part_and_release(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (auth, id) = app.user("holds@example.com").await;
    app.adjust(&id, json!(95)).await.expect(201);
    let hold = |amount: Value, ttl: Option<u64>| {
        let mut body = json!({"amount": amount, "description": "Render"});
        if let Some(t) = ttl {
            body["ttlSeconds"] = json!(t);
        }
        post(format!("/admin/v1/accounts/{id}/holds"), body)
    };

    let res = app.send(hold(json!(10), None)).await;
    let h = res.expect(201);
    let hold_id = h["holdId"].as_str().unwrap().to_owned();
    assert_eq!(
        h["expiresAt"], "2026-03-15T12:10:00.000Z",
        "default 10 minutes"
    );
    assert_eq!(res.header("x-credits-remaining"), Some("90"));
    assert_eq!(res.header("x-credits-charged"), Some("0"));
    assert_eq!(app.balance(&auth).await, json!(90));
    let res = app.send(hold(json!(5), Some(30))).await;
    let h2 = res.expect(201);
    assert_eq!(h2["expiresAt"], "2026-03-15T12:00:30.000Z");
    assert_eq!(app.balance(&auth).await, json!(85));

    // Capture all: charged 10, one usage entry.
    let res = app.send(capture(&hold_id, json!({}))).await;
    let cap = res.expect(200);
    assert_eq!(cap["holdId"], hold_id.as_str());
    assert_eq!(cap["status"], "captured");
    assert_eq!(cap["captured"], 10);
    assert_eq!(cap["transaction"]["type"], "usage");
    assert_eq!(cap["transaction"]["amount"], -10);
    assert_eq!(res.header("x-credits-charged"), Some("10"));
    assert_eq!(res.header("x-credits-remaining"), Some("85"));
    // Capture part: the rest returns.
    let h2_id = h2["holdId"].as_str().unwrap();
    let res = app.send(capture(h2_id, json!({"amount": 2}))).await;
    let cap = res.expect(200);
    assert_eq!(cap["captured"], 2);
    assert_eq!(cap["transaction"]["amount"], -2);
    assert_eq!(res.header("x-credits-charged"), Some("2"));
    assert_eq!(app.balance(&auth).await, json!(88));
    // Capture with no body at all is "all".
    let h3 = app.send(hold(json!(3), None)).await.expect(201);
    let h3_id = h3["holdId"].as_str().unwrap();
    app.send(admin(
        Method::POST,
        format!("/admin/v1/holds/{h3_id}/capture"),
    ))
    .await
    .expect(200);
    assert_eq!(app.balance(&auth).await, json!(85));
    // Capture more than held: 400, and the hold is still there to capture.
    let h4 = app.send(hold(json!(4), None)).await.expect(201);
    let h4_id = h4["holdId"].as_str().unwrap();
    let err = app
        .send(capture(h4_id, json!({"amount": 5})))
        .await
        .expect(400);
    assert_eq!(err["field"], "amount");
    assert_eq!(app.balance(&auth).await, json!(81));
    // Release: nothing charged, the credits return.
    let res = app
        .send(admin(
            Method::POST,
            format!("/admin/v1/holds/{h4_id}/release"),
        ))
        .await;
    let rel = res.expect(200);
    assert_eq!(rel["status"], "released");
    assert_eq!(rel["captured"], 0);
    assert!(rel.get("transaction").is_none());
    assert_eq!(res.header("x-credits-charged"), Some("0"));
    assert_eq!(res.header("x-credits-remaining"), Some("85"));
    assert_eq!(app.balance(&auth).await, json!(85));
    // Not covered: 402 with the headers; bad amount or ttl: 400.
    let res = app.send(hold(json!(86), None)).await;
    let body = res.expect(402);
    assert_eq!(
        (body["required"].clone(), body["balance"].clone()),
        (json!(86), json!(85))
    );
    assert_eq!(res.header("x-credits-remaining"), Some("85"));
    assert_eq!(res.header("x-credits-charged"), Some("0"));
    for (body, field) in [
        (json!({"amount": 0, "description": "x"}), "amount"),
        (
            json!({"amount": 1, "description": "x", "ttlSeconds": 0}),
            "ttlSeconds",
        ),
        (
            json!({"amount": 1, "description": "x", "ttlSeconds": 86401}),
            "ttlSeconds",
        ),
        (
            json!({"amount": 1, "description": "x", "ttlSeconds": -5}),
            "ttlSeconds",
        ),
    ] {
        let err = app
            .send(post(format!("/admin/v1/accounts/{id}/holds"), body.clone()))
            .await
            .expect(400);
        assert_eq!(err["field"], field, "{body}: {err}");
    }
    // Unknown holds are 404.
    app.send(post("/admin/v1/holds/hold_nope/capture".into(), json!({})))
        .await
        .expect(404);
    app.send(admin(
        Method::POST,
        "/admin/v1/holds/hold_nope/release".into(),
    ))
    .await
    .expect(404);
    let txns = app.transactions(&auth).await;
    let usage: Vec<&Value> = of_type(&txns, "usage")
        .into_iter()
        .map(|t| &t["amount"])
        .collect();
    assert_eq!(usage, [&json!(-3), &json!(-2), &json!(-10)]);
    app.assert_verified().await;
}

async fn settled_and_expired_holds_are_409(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (auth, id) = app.user("settled@example.com").await;
    let new_hold = |amount: i64, ttl: u64| {
        post(
            format!("/admin/v1/accounts/{id}/holds"),
            json!({"amount": amount, "description": "Render", "ttlSeconds": ttl}),
        )
    };
    let capture_all = |h: &str| capture(h, json!({}));
    let release = |h: &str| admin(Method::POST, format!("/admin/v1/holds/{h}/release"));
    let captured = app.send(new_hold(1, 600)).await.expect(201);
    let captured = captured["holdId"].as_str().unwrap().to_owned();
    app.send(capture_all(&captured)).await.expect(200);
    let released = app.send(new_hold(1, 600)).await.expect(201);
    let released = released["holdId"].as_str().unwrap().to_owned();
    app.send(release(&released)).await.expect(200);
    for h in [&captured, &released] {
        for req in [capture_all(h), release(h)] {
            let res = app.send(req).await;
            let body = res.expect(409);
            assert!(body["error"].is_string(), "{body}");
            assert!(body["code"].is_string(), "{body}");
        }
    }
    assert_eq!(app.balance(&auth).await, json!(4));

    // A hold that is never settled expires by itself and its credits return.
    let short = app.send(new_hold(3, 60)).await.expect(201);
    let short = short["holdId"].as_str().unwrap().to_owned();
    let long = app.send(new_hold(1, 600)).await.expect(201);
    let long = long["holdId"].as_str().unwrap().to_owned();
    assert_eq!(app.balance(&auth).await, json!(0));
    app.clock.advance_secs(59);
    assert_eq!(app.balance(&auth).await, json!(0), "not yet");
    app.clock.advance_secs(1);
    assert_eq!(app.balance(&auth).await, json!(3), "expired at expiresAt");
    app.send(capture_all(&short)).await.expect(409);
    app.send(release(&short)).await.expect(409);
    // The other hold is still live and capturable.
    app.send(capture_all(&long)).await.expect(200);
    assert_eq!(app.balance(&auth).await, json!(3));
    // Nothing was charged for the expired one.
    let txns = app.transactions(&auth).await;
    let usage: Vec<&Value> = of_type(&txns, "usage")
        .into_iter()
        .map(|t| &t["amount"])
        .collect();
    assert_eq!(usage, [&json!(-1), &json!(-1)]);
    app.assert_verified().await;
}

async fn refunds_are_capped_by_the_charge(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (auth, id) = app.user("refunds@example.com").await;
    let charge = app.debit(&id, json!(4)).await.expect(201);
    let charge_id = charge["id"].as_str().unwrap().to_owned();
    let refund = |body: Value| post(format!("/admin/v1/accounts/{id}/refunds"), body);

    let res = app
        .send(refund(json!({"transactionId": charge_id, "amount": 1.5})))
        .await;
    let entry = res.expect(201);
    assert_eq!(entry["type"], "refund");
    assert_eq!(entry["amount"], 1.5);
    assert_eq!(entry["referenceId"], charge_id.as_str());
    assert_eq!(res.header("x-credits-remaining"), Some("2.5"));
    assert_eq!(res.header("x-credits-charged"), Some("0"));
    // More than is left of the charge: 409, nothing refunded.
    let res = app
        .send(refund(json!({"transactionId": charge_id, "amount": 3})))
        .await;
    let body = res.expect(409);
    assert!(
        body["error"].is_string() && body["code"].is_string(),
        "{body}"
    );
    assert_eq!(app.balance(&auth).await, json!(2.5));
    // The rest, by default.
    let rest = app
        .send(refund(
            json!({"transactionId": charge_id, "description": "Capture failed"}),
        ))
        .await
        .expect(201);
    assert_eq!(rest["amount"], 2.5);
    assert_eq!(rest["description"], "Capture failed");
    assert_eq!(app.balance(&auth).await, json!(5));
    app.send(refund(json!({"transactionId": charge_id, "amount": 0.001})))
        .await
        .expect(409);
    // Only usage can be refunded: the bonus, an adjustment, a refund are 409.
    let txns = app.transactions(&auth).await;
    for t in txns.as_array().unwrap() {
        if t["type"] != "usage" {
            let res = app
                .send(refund(json!({"transactionId": t["id"], "amount": 1})))
                .await;
            assert_eq!(res.status, 409, "{t}: {}", res.text());
        }
    }
    let adj = app.adjust(&id, json!(10)).await.expect(201);
    app.send(refund(json!({"transactionId": adj["id"]})))
        .await
        .expect(409);
    // Unknown transaction 404; bad amount 400.
    app.send(refund(json!({"transactionId": "txn_nope"})))
        .await
        .expect(404);
    let err = app
        .send(refund(json!({"transactionId": charge_id, "amount": -1})))
        .await
        .expect(400);
    assert_eq!(err["field"], "amount");
    let err = app.send(refund(json!({}))).await.expect(400);
    assert!(
        err["error"].as_str().unwrap().contains("transactionId"),
        "{err}"
    );
    assert_eq!(app.balance(&auth).await, json!(15));
    app.assert_verified().await;
}

async fn subscriptions_and_the_maximum_hard_limit(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let id = app.admin_account().await;
    let put_sub = |body: Value| {
        Req::put(format!("/admin/v1/accounts/{id}/subscription"))
            .auth(&Auth::Admin)
            .json(body)
    };
    let res = app.send(put_sub(json!({"planId": "basic"}))).await;
    let sub = res.expect(200);
    assert!(sub["id"].as_str().unwrap().starts_with("sub_"), "{sub}");
    assert_eq!(sub["accountId"], id.as_str());
    assert_eq!(sub["planId"], "basic");
    assert_eq!(sub["planName"], "Basic");
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["planLimit"], 10000);
    assert_eq!(sub["maxHardLimit"], 100000, "the default maximum");
    let again = app
        .send(put_sub(json!({"planId": "free", "status": "past_due"})))
        .await
        .expect(200);
    assert_eq!(again["id"], sub["id"], "one subscription per account");
    assert_eq!(again["planName"], "Free");
    assert_eq!(again["status"], "past_due");
    // Unknown plan 404; bad status 400 naming it; missing planId 400; unknown account 404.
    let res = app.send(put_sub(json!({"planId": "platinum"}))).await;
    let body = res.expect(404);
    assert!(
        body["error"].as_str().unwrap().contains("platinum"),
        "{body}"
    );
    let err = app
        .send(put_sub(json!({"planId": "basic", "status": "paused"})))
        .await
        .expect(400);
    assert_eq!(err["field"], "status");
    let err = app
        .send(put_sub(json!({"status": "active"})))
        .await
        .expect(400);
    assert!(err["error"].as_str().unwrap().contains("planId"), "{err}");
    app.send(
        Req::put("/admin/v1/accounts/acct_nope/subscription")
            .auth(&Auth::Admin)
            .json(json!({"planId": "basic"})),
    )
    .await
    .expect(404);
    // The refused calls changed nothing.
    let still = app
        .send(put_sub(json!({"planId": "free", "status": "past_due"})))
        .await
        .expect(200);
    assert_eq!(still["planId"], "free");

    let put_max = |body: Value| {
        Req::put(format!("/admin/v1/accounts/{id}/max-hard-limit"))
            .auth(&Auth::Admin)
            .json(body)
    };
    let res = app.send(put_max(json!({"maxHardLimit": 250000}))).await;
    assert_eq!(
        res.expect(200),
        json!({"accountId": id, "maxHardLimit": 250000})
    );
    let sub = app
        .send(put_sub(json!({"planId": "basic"})))
        .await
        .expect(200);
    assert_eq!(sub["maxHardLimit"], 250000);
    for bad in [
        json!({"maxHardLimit": 0}),
        json!({"maxHardLimit": -5}),
        json!({"maxHardLimit": "big"}),
    ] {
        let err = app.send(put_max(bad.clone())).await.expect(400);
        assert_eq!(err["field"], "maxHardLimit", "{bad}: {err}");
    }
    app.send(
        Req::put("/admin/v1/accounts/acct_nope/max-hard-limit")
            .auth(&Auth::Admin)
            .json(json!({"maxHardLimit": 5})),
    )
    .await
    .expect(404);
}

async fn verify_reports_a_clean_ledger(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let empty = verify(&app).await;
    assert_eq!(
        empty,
        json!({"ok": true, "accounts": 0, "entries": 0, "violations": []})
    );
    let a = app.admin_account().await;
    let b = app.admin_account().await;
    app.debit(&a, json!(1)).await.expect(201);
    app.adjust(&b, json!(3)).await.expect(201);
    app.debit(&b, json!(100)).await.expect(402);
    let v = verify(&app).await;
    assert_eq!(
        v,
        json!({"ok": true, "accounts": 2, "entries": 4, "violations": []})
    );
}

/// Sends `req` twice: the second is a replay answering as the first did.
async fn twice(app: &TestApp, req: Req) -> (Resp, Resp) {
    let first = app.send(req.clone()).await;
    let second = app.send(req).await;
    assert_eq!(first.status, second.status, "{}", second.text());
    assert_eq!(
        first.json(),
        second.json(),
        "a replay answers as the first did"
    );
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert!(second.header("x-credits-remaining").is_some());
    (first, second)
}

/// `twice` for a POST of `body` to `path` under the idempotency key `key`.
async fn twice_post(app: &TestApp, path: String, body: Value, key: &str) -> (Resp, Resp) {
    twice(app, post(path, body).idem(key)).await
}

async fn idempotency_keys_have_one_effect_on_every_charged_call(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (auth, id) = app.user("idem@example.com").await;
    let acct = format!("/admin/v1/accounts/{id}");
    // Adjustment.
    let body = json!({"amount": 20, "description": "Grant"});
    let (first, _) = twice_post(&app, format!("{acct}/credits"), body, "grant-1").await;
    assert_eq!(first.expect(201)["amount"], 20);
    assert_eq!(app.balance(&auth).await, json!(25));
    // Debit.
    let body = json!({"amount": 2, "description": "Job"});
    let (first, second) = twice_post(&app, format!("{acct}/debits"), body, "debit-1").await;
    first.expect(201);
    assert_eq!(first.header("x-credits-charged"), Some("2"));
    assert_eq!(second.header("x-credits-remaining"), Some("23"));
    assert_eq!(app.balance(&auth).await, json!(23));
    // The same body in another key order or spacing is the same request.
    let same = app
        .send(
            Req::post(format!("/admin/v1/accounts/{id}/debits"))
                .auth(&Auth::Admin)
                .idem("debit-1")
                .raw(
                    "application/json",
                    r#"{ "description": "Job",   "amount": 2 }"#,
                ),
        )
        .await;
    assert_eq!(same.expect(201), first.json());
    assert_eq!(same.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.balance(&auth).await, json!(23));
    // Hold.
    let body = json!({"amount": 5, "description": "Render"});
    let (first, _) = twice_post(&app, format!("{acct}/holds"), body, "hold-1").await;
    let hold_id = first.expect(201)["holdId"].as_str().unwrap().to_owned();
    assert_eq!(app.balance(&auth).await, json!(18), "one hold, not two");
    // Capture.
    let body = json!({"amount": 4});
    let (first, _) = twice_post(
        &app,
        format!("/admin/v1/holds/{hold_id}/capture"),
        body,
        "capture-1",
    )
    .await;
    assert_eq!(first.expect(200)["captured"], 4);
    assert_eq!(app.balance(&auth).await, json!(19));
    // Refund.
    let debit_id = app.transactions(&auth).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"transactionId": debit_id, "amount": 1});
    let (first, _) = twice_post(&app, format!("{acct}/refunds"), body, "refund-1").await;
    assert_eq!(first.expect(201)["type"], "refund");
    assert_eq!(app.balance(&auth).await, json!(20));
    // Release.
    let h2 = app
        .send(post(
            format!("/admin/v1/accounts/{id}/holds"),
            json!({"amount": 1, "description": "x"}),
        ))
        .await
        .expect(201);
    let (first, _) = twice(
        &app,
        admin(
            Method::POST,
            format!("/admin/v1/holds/{}/release", h2["holdId"].as_str().unwrap()),
        )
        .idem("release-1"),
    )
    .await;
    assert_eq!(first.expect(200)["status"], "released");
    assert_eq!(app.balance(&auth).await, json!(20));
    // One entry per effect: bonus, grant, debit, capture, refund.
    let txns = app.transactions(&auth).await;
    let kinds = types_of(&txns);
    assert_eq!(
        kinds,
        ["refund", "usage", "usage", "adjustment", "signup_bonus"]
    );
    // Keys belong to an account: another account may use the same key string.
    let other = app.admin_account().await;
    let res = app
        .send(
            post(
                format!("/admin/v1/accounts/{other}/debits"),
                json!({"amount": 2, "description": "Job"}),
            )
            .idem("debit-1"),
        )
        .await;
    res.expect(201);
    assert_eq!(res.header("idempotent-replayed"), None);
    assert_eq!(res.header("x-credits-remaining"), Some("3"));
    app.assert_verified().await;
}

async fn idempotency_conflicts_and_replayed_rejections(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (auth, id) = app.user("idem409@example.com").await;
    let debit = |amount: i64| {
        post(
            format!("/admin/v1/accounts/{id}/debits"),
            json!({"amount": amount, "description": "Job"}),
        )
    };
    app.send(debit(1).idem("k1")).await.expect(201);
    // The same key with another body, or on another endpoint: 409, nothing done.
    for req in [
        debit(2).idem("k1"),
        post(
            format!("/admin/v1/accounts/{id}/credits"),
            json!({"amount": 1, "description": "Job"}),
        )
        .idem("k1"),
        post(
            format!("/admin/v1/accounts/{id}/holds"),
            json!({"amount": 1, "description": "Job"}),
        )
        .idem("k1"),
    ] {
        let res = app.send(req).await;
        let body = res.expect(409);
        assert_eq!(body["code"], "IDEMPOTENCY_CONFLICT", "{body}");
        assert!(body["error"].as_str().unwrap().contains("k1"), "{body}");
    }
    assert_eq!(app.balance(&auth).await, json!(4));

    // A 402 stays a 402 when replayed, even after credits arrive.
    let res = app.send(debit(10).idem("k402")).await;
    assert_eq!(res.expect(402)["required"], 10);
    app.adjust(&id, json!(100)).await.expect(201);
    assert_eq!(app.balance(&auth).await, json!(104));
    let replay = app.send(debit(10).idem("k402")).await;
    let body = replay.expect(402);
    assert_eq!(body["error"], "Insufficient credits");
    assert_eq!(
        (body["required"].clone(), body["balance"].clone()),
        (json!(10), json!(4))
    );
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.header("x-credits-charged"), Some("0"));
    assert_eq!(
        app.balance(&auth).await,
        json!(104),
        "the replay charged nothing"
    );
    // A new key for the same request now succeeds.
    app.send(debit(10).idem("k402-retry")).await.expect(201);
    assert_eq!(app.balance(&auth).await, json!(94));
    // A malformed key is a 400 naming the header.
    for bad in ["", &"x".repeat(300)] {
        let err = app.send(debit(1).idem(bad)).await.expect(400);
        assert_eq!(err["field"], "Idempotency-Key", "{err}");
    }
    assert_eq!(app.balance(&auth).await, json!(94));
    app.assert_verified().await;
}

/// The largest balance (and single amount) the ledger keeps: one trillion credits.
const MAX_BALANCE: i64 = 1_000_000_000_000;

/// The overflow attack of issue 8 (9,224 grants of 10^12 wrapped the balance negative),
/// repeated: large grants succeed up to the maximum balance exactly, the one past it is a
/// 400 naming `amount` that changes nothing, and the ledger stays verified throughout.
async fn balances_stop_at_the_maximum(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (auth, id) = app.user("rich@example.com").await;
    assert_eq!(app.balance(&auth).await, json!(5));
    let tenth = MAX_BALANCE / 10;
    let mut granted = 0;
    let refused = loop {
        let res = app.adjust(&id, json!(tenth)).await;
        if res.status != 201 {
            break res;
        }
        granted += 1;
        assert!(granted < 20, "grants never stopped");
    };
    // 5 + 9 × 10^11 fits; 5 + 10 × 10^11 does not.
    assert_eq!(granted, 9);
    let body = refused.expect(400);
    assert_eq!(body["field"], "amount", "{body}");
    assert_eq!(body["code"], "INVALID_REQUEST", "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("1000000000000"),
        "names the maximum: {message}"
    );
    let full = 9 * tenth + 5;
    assert_eq!(
        refused.header("x-credits-remaining"),
        Some(&*full.to_string())
    );
    assert_eq!(app.balance(&auth).await, json!(full));
    // The attack itself: the largest single grant, again and again.
    for _ in 0..3 {
        let err = app.adjust(&id, json!(MAX_BALANCE)).await.expect(400);
        assert_eq!(err["field"], "amount", "{err}");
    }
    assert_eq!(app.balance(&auth).await, json!(full));
    app.assert_verified().await;
    // Exactly up to the maximum is fine; a thousandth more is not.
    app.adjust(&id, json!(MAX_BALANCE - full)).await.expect(201);
    assert_eq!(app.balance(&auth).await, json!(MAX_BALANCE));
    let err = app.adjust(&id, json!(0.001)).await.expect(400);
    assert_eq!(err["field"], "amount", "{err}");
    assert_eq!(app.balance(&auth).await, json!(MAX_BALANCE));
    // A refund that would go past it is refused too, and changes nothing.
    let charge = app.debit(&id, json!(2)).await.expect(201);
    app.adjust(&id, json!(2)).await.expect(201);
    let err = app
        .send(post(
            format!("/admin/v1/accounts/{id}/refunds"),
            json!({"transactionId": charge["id"]}),
        ))
        .await
        .expect(400);
    assert_eq!(err["field"], "amount", "{err}");
    assert_eq!(app.balance(&auth).await, json!(MAX_BALANCE));
    // Spending it all, in the largest single debit, works.
    app.debit(&id, json!(MAX_BALANCE)).await.expect(201);
    assert_eq!(app.balance(&auth).await, json!(0));
    app.assert_verified().await;
}

/// The amount parser over HTTP: the largest amount accepted and at most three decimals,
/// each refused with a message that says what is allowed.
async fn amounts_past_the_parser_limits_say_what_is_allowed(app: &TestApp, id: &str) {
    let (too_large, too_precise) = ("1000000000000 credits", "three decimals");
    let cases = [
        ("credits", json!(MAX_BALANCE + 1), too_large),
        ("credits", json!(1e300), too_large),
        ("debits", json!(MAX_BALANCE + 1), too_large),
        ("holds", json!(MAX_BALANCE + 1), too_large),
        ("credits", json!(1.0005), too_precise),
        ("debits", json!(0.0001), too_precise),
    ];
    for (write, amount, says) in cases {
        let path = format!("/admin/v1/accounts/{id}/{write}");
        let body = json!({"amount": amount, "description": "x"});
        let err = app.send(post(path.clone(), body.clone())).await.expect(400);
        assert_eq!(err["field"], "amount", "{path} {body}: {err}");
        let message = err["error"].as_str().unwrap();
        assert!(message.contains(says), "{path} {body}: {message}");
        assert!(message.len() < 300, "a short message: {message}");
    }
}

/// Every field of every request body this file's routes read, given a value of the wrong
/// type (a number as a string, a string as a number, a boolean as a string, `null` for a
/// required field, an array or object for a scalar): `400 INVALID_REQUEST` naming exactly
/// that field, and nothing changes.
async fn wrong_types_are_400_naming_the_field(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (auth, id) = app.user("types@example.com").await;
    let session = app.signup("types-session@example.com").await.0;
    app.adjust(&id, json!(95)).await.expect(201);
    let hold = app
        .send(post(
            format!("/admin/v1/accounts/{id}/holds"),
            json!({"amount": 1, "description": "Render"}),
        ))
        .await
        .expect(201);
    let hold_id = hold["holdId"].as_str().unwrap().to_owned();
    let charge = app.debit(&id, json!(2)).await.expect(201);
    let charge_id = charge["id"].as_str().unwrap().to_owned();
    let balance = app.balance(&auth).await;
    assert_eq!(balance, json!(97));

    // (method, path, who, a valid body, each field to spoil with its wrong values)
    let number_as_text: &[Value] = &[
        json!("10"),
        json!("1.5"),
        json!("lots"),
        json!(""),
        json!(true),
        json!(null),
        json!([1]),
        json!({"n": 1}),
    ];
    let text_field: &[Value] = &[
        json!(7),
        json!(1.5),
        json!(true),
        json!(null),
        json!(["x"]),
        json!({"s": "x"}),
    ];
    let optional_text: &[Value] = &[json!(7), json!(true), json!(["x"]), json!({"s": "x"})];
    let optional_number: &[Value] = &[
        json!("1"),
        json!("lots"),
        json!(true),
        json!([1]),
        json!({"n": 1}),
    ];
    let whole_seconds: &[Value] = &[json!("60"), json!(1.5), json!(true), json!([60]), json!(-5)];
    let boolean: &[Value] = &[
        json!("true"),
        json!("false"),
        json!(1),
        json!(0),
        json!(null),
        json!([true]),
    ];
    let admin_auth = Auth::Admin;
    let user_auth = Auth::Cookie(session.clone());
    type Case<'a> = (Method, String, &'a Auth, Value, Vec<(&'a str, &'a [Value])>);
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/admin/v1/accounts".into(),
            &admin_auth,
            json!({"email": "new@example.com", "password": PASSWORD}),
            vec![("email", optional_text), ("password", optional_text)],
        ),
        (
            Method::POST,
            format!("/admin/v1/accounts/{id}/credits"),
            &admin_auth,
            json!({"amount": 10, "description": "x"}),
            vec![("amount", number_as_text), ("description", text_field)],
        ),
        (
            Method::POST,
            format!("/admin/v1/accounts/{id}/debits"),
            &admin_auth,
            json!({"amount": 1, "description": "x", "referenceId": "r"}),
            vec![
                ("amount", number_as_text),
                ("description", text_field),
                ("referenceId", optional_text),
            ],
        ),
        (
            Method::POST,
            format!("/admin/v1/accounts/{id}/holds"),
            &admin_auth,
            json!({"amount": 1, "ttlSeconds": 60, "description": "x", "referenceId": "r"}),
            vec![
                ("amount", number_as_text),
                ("ttlSeconds", whole_seconds),
                ("description", text_field),
                ("referenceId", optional_text),
            ],
        ),
        (
            Method::POST,
            format!("/admin/v1/holds/{hold_id}/capture"),
            &admin_auth,
            json!({"amount": 1}),
            vec![("amount", optional_number)],
        ),
        (
            Method::POST,
            format!("/admin/v1/accounts/{id}/refunds"),
            &admin_auth,
            json!({"transactionId": charge_id, "amount": 1, "description": "x"}),
            vec![
                ("transactionId", text_field),
                ("amount", optional_number),
                ("description", optional_text),
            ],
        ),
        (
            Method::PUT,
            format!("/admin/v1/accounts/{id}/subscription"),
            &admin_auth,
            json!({"planId": "basic", "status": "active"}),
            vec![("planId", text_field), ("status", optional_text)],
        ),
        (
            Method::PUT,
            format!("/admin/v1/accounts/{id}/max-hard-limit"),
            &admin_auth,
            json!({"maxHardLimit": 200000}),
            vec![("maxHardLimit", number_as_text)],
        ),
        // The user API's bodies.
        (
            Method::POST,
            "/api/v1/api-keys".into(),
            &user_auth,
            json!({"name": "k"}),
            vec![("name", text_field)],
        ),
        (
            Method::POST,
            "/api/v1/credits/purchase".into(),
            &user_auth,
            json!({"packId": "pack_starter"}),
            vec![("packId", text_field)],
        ),
        (
            Method::PUT,
            "/api/v1/credits/auto-topup".into(),
            &user_auth,
            json!({"enabled": true, "thresholdCredits": 10, "packId": "pack_starter"}),
            vec![
                ("enabled", boolean),
                ("thresholdCredits", number_as_text),
                ("packId", text_field),
            ],
        ),
        (
            Method::POST,
            "/api/v1/auth/login".into(),
            &Auth::None,
            json!({"email": "types@example.com", "password": PASSWORD}),
            vec![("email", text_field), ("password", text_field)],
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, who, valid, fields) in &cases {
        for (field, wrong) in fields {
            for value in wrong.iter() {
                let mut body = valid.clone();
                body[*field] = value.clone();
                let req = Req::new(method.clone(), path.clone()).auth(who);
                let res = app.send(req.json(body.clone())).await;
                let answer = res.json();
                if res.status != 400
                    || answer["field"] != json!(field)
                    || answer["code"] != "INVALID_REQUEST"
                {
                    failures.push(format!("{method} {path} {body} -> {} {answer}", res.status));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "not a 400 naming the field:\n{}",
        failures.join("\n")
    );
    // Nothing changed: the balance, the hold, the ledger.
    assert_eq!(app.balance(&auth).await, balance);
    let still = app
        .send(capture(&hold_id, json!({"amount": 1})))
        .await
        .expect(200);
    assert_eq!(still["status"], "captured");
    amounts_past_the_parser_limits_say_what_is_allowed(&app, &id).await;
    // The hold's credit was already taken out when it was made.
    assert_eq!(app.balance(&auth).await, balance);
    app.assert_verified().await;
}
