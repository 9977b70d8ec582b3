//! No account can read or change another account's data, on any authenticated endpoint.
//! Runs on SQLite and on PostgreSQL.

use crate::common;

use std::collections::HashSet;

use common::*;
use serde_json::{json, Value};

on_both_backends!(one_account_never_sees_or_changes_another);

/// The CSRF token a cookie-authenticated write without a JSON body carries (none needed
/// with a key).
fn csrf(auth: &Auth) -> String {
    match auth {
        Auth::Cookie(session) => api_server::auth::csrf_token(session),
        _ => String::new(),
    }
}

fn ids(list: &Value, field: &str) -> HashSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v[field].as_str().unwrap().to_owned())
        .collect()
}

async fn one_account_never_sees_or_changes_another(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (a_session, a_id) = app.signup("alice@example.com").await;
    let (a_key, a_key_id) = app.new_key(&a_session, "alice").await;
    let (b_session, b_id) = app.signup("bob@example.com").await;
    let (b_key, b_key_id) = app.new_key(&b_session, "bob").await;
    let a = Auth::Key(a_key.clone());
    let b_ways = [
        Auth::Key(b_key.clone()),
        Auth::Bearer(b_key.clone()),
        Auth::RawAuthorization(b_key.clone()),
        Auth::Cookie(b_session.clone()),
    ];

    // Alice has history, a live hold, a subscription and a second key.
    app.adjust(&a_id, json!(100)).await.expect(201);
    let a_debit = app.debit(&a_id, json!(7)).await.expect(201);
    app.send(
        Req::post(format!("/admin/v1/accounts/{a_id}/holds"))
            .auth(&Auth::Admin)
            .json(json!({"amount": 10, "description": "render"})),
    )
    .await
    .expect(201);
    app.send(subscribe_req(&a_id, "basic")).await.expect(200);
    let (a_key2, a_key2_id) = app.new_key(&a_session, "alice-ci").await;
    let a_txns = app.transactions(&a).await;
    let a_txn_ids = ids(&a_txns, "id");
    assert_eq!(
        a_txn_ids.len(),
        4,
        "bonus, grant, debit, the plan's allowance (a hold is no entry)"
    );
    // Bob has a little of his own.
    app.debit(&b_id, json!(1)).await.expect(201);

    for b in &b_ways {
        let get = |path: &str| Req::get(path).auth(b);
        assert_eq!(
            app.send(get("/api/v1/credits")).await.expect(200),
            json!({"balance": 4})
        );
        assert_eq!(
            app.send(get("/api/v1/account/credits")).await.expect(200),
            json!({"balance": 4})
        );
        assert_eq!(
            app.send(get("/v1/credits")).await.expect(200),
            json!({"credits": 4, "subscriptionStatus": "inactive"}),
            "Alice's subscription is not Bob's"
        );
        let txns = app
            .send(get("/api/v1/credits/transactions?limit=100"))
            .await
            .expect(200);
        assert_eq!(txns.as_array().unwrap().len(), 2, "{txns}");
        assert!(ids(&txns, "id").is_disjoint(&a_txn_ids));
        let usage = app.send(get("/api/v1/credits/usage")).await.expect(200);
        assert_eq!(usage.as_array().unwrap().len(), 2, "{usage}");
        assert!(ids(&usage, "transactionId").is_disjoint(&a_txn_ids));
        for t in usage.as_array().unwrap() {
            assert_eq!(t["plan"], "Pay as you go");
        }
        let keys = app.send(get("/api/v1/api-keys")).await.expect(200);
        let key_ids = ids(&keys, "id");
        assert!(key_ids.contains(&b_key_id));
        assert!(!key_ids.contains(&a_key_id) && !key_ids.contains(&a_key2_id));
        // Bob cannot delete Alice's keys: 404, as if they did not exist.
        for k in [&a_key_id, &a_key2_id] {
            app.send(delete_key_req(b, k, csrf(b))).await.expect(404);
        }
        // A key Bob makes is his alone.
        let made = app.send(new_key_req(b, "tmp")).await.expect(201);
        let a_keys = app
            .send(Req::get("/api/v1/api-keys").auth(&a))
            .await
            .expect(200);
        assert!(!ids(&a_keys, "id").contains(made["id"].as_str().unwrap()));
        app.send(delete_key_req(b, made["id"].as_str().unwrap(), csrf(b)))
            .await
            .expect(204);
        // Purchases start nothing on Alice's account (and never add credits).
        app.send(purchase_req(b, "pack_pro")).await.expect(500);
    }
    // Alice cannot delete Bob's key either.
    app.send(Req::delete(format!("/api/v1/api-keys/{b_key_id}")).auth(&a))
        .await
        .expect(404);
    // Bob logging out ends only Bob's session.
    app.send(
        Req::post("/api/v1/auth/logout")
            .auth(&Auth::Cookie(b_session.clone()))
            .header("x-csrf-token", api_server::auth::csrf_token(&b_session)),
    )
    .await
    .expect(204);
    app.assert_refused(&Auth::Cookie(b_session)).await;
    // Alice is untouched: both keys, her session, her balance (100+5-7-10 held, and
    // Basic's allowance of 10,000).
    for auth in [
        Auth::Key(a_key.clone()),
        Auth::Key(a_key2.clone()),
        Auth::Cookie(a_session.clone()),
    ] {
        assert_eq!(app.balance(&auth).await, json!(10_088));
    }
    let after = app.transactions(&a).await;
    assert_eq!(after, a_txns, "nothing Bob did shows in Alice's history");
    let a_keys = app
        .send(Req::get("/api/v1/api-keys").auth(&a))
        .await
        .expect(200);
    assert_eq!(ids(&a_keys, "id"), HashSet::from([a_key_id, a_key2_id]));
    assert_eq!(app.balance(&Auth::Key(b_key.clone())).await, json!(4));
    // Operators act on the account they name: Alice's charge cannot be refunded to Bob.
    app.send(
        Req::post(format!("/admin/v1/accounts/{b_id}/refunds"))
            .auth(&Auth::Admin)
            .json(json!({"transactionId": a_debit["id"]})),
    )
    .await
    .expect(404);
    assert_eq!(app.balance(&Auth::Key(b_key)).await, json!(4));
    assert_eq!(app.balance(&a).await, json!(10_088));
    app.assert_verified().await;
}
