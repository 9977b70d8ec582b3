//! JSON errors everywhere, request ids, health and the OpenAPI document. Every test runs on
//! SQLite and on PostgreSQL.

use crate::common;

use std::collections::HashSet;

use common::*;
use serde_json::{json, Value};

on_both_backends!(
    malformed_json_wrong_types_and_missing_fields_name_the_field,
    unknown_routes_and_methods_are_json,
    oversized_bodies_are_413_json,
    every_answer_has_a_request_id,
    healthz_answers_once_the_database_does,
    openapi_lists_every_path_of_the_contract,
);

async fn malformed_json_wrong_types_and_missing_fields_name_the_field(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (auth, id) = app.user("json@example.com").await;
    let debits = format!("/admin/v1/accounts/{id}/debits");
    let debit = || Req::post(&debits).auth(&Auth::Admin);
    let raw_debit = |body: &str| debit().raw("application/json", body);
    let json_debit = |body: Value| debit().json(body);
    let cases: Vec<(Req, &str)> = vec![
        // Malformed JSON names the body.
        (raw_debit("{\"amount\": 1,"), "body"),
        (raw_debit("not json"), "body"),
        (raw_debit("[1, 2]"), "body"),
        // (an array is no object even when its items would fit the fields in order)
        (raw_debit("[1, \"x\"]"), "body"),
        (raw_debit("\"text\""), "body"),
        (
            Req::post("/api/v1/auth/signup").raw("application/json", "{email:1}"),
            "body",
        ),
        (
            Req::post("/api/v1/api-keys")
                .auth(&auth)
                .raw("application/json", "{\"name\":"),
            "body",
        ),
        // A wrong type names the field.
        (
            json_debit(json!({"amount": "lots", "description": "x"})),
            "amount",
        ),
        (
            json_debit(json!({"amount": [1], "description": "x"})),
            "amount",
        ),
        (
            json_debit(json!({"amount": 1, "description": {"a": 1}})),
            "description",
        ),
        (
            json_debit(json!({"amount": 1, "description": "x", "referenceId": 5})),
            "referenceId",
        ),
        (
            Req::post("/api/v1/api-keys")
                .auth(&auth)
                .json(json!({"name": false})),
            "name",
        ),
        (
            Req::post("/api/v1/credits/purchase")
                .auth(&auth)
                .json(json!({"packId": null})),
            "packId",
        ),
        // A missing field names the field.
        (json_debit(json!({"amount": 1})), "description"),
        (json_debit(json!({"description": "x"})), "amount"),
        (
            Req::post("/api/v1/auth/login").json(json!({"password": PASSWORD})),
            "email",
        ),
        // So does an unknown one (a typo must not be ignored silently).
        (
            json_debit(json!({"amount": 1, "description": "x", "ammount": 2})),
            "ammount",
        ),
        // Not JSON at all.
        (debit().raw("text/plain", "amount=1"), "content-type"),
    ];
    for (req, field) in cases {
        let label = format!(
            "{} {} {:?}",
            req.method,
            req.path,
            req.body.as_deref().map(String::from_utf8_lossy)
        );
        let res = app.send(req).await;
        assert_eq!(res.status, 400, "{label}: {}", res.text());
        let err = res.json();
        assert_eq!(err["field"], field, "{label}: {err}");
        assert_eq!(err["code"], "INVALID_REQUEST", "{label}: {err}");
        let message = err["error"].as_str().unwrap();
        if field != "body" {
            assert!(
                message.to_lowercase().contains(&field.to_lowercase()),
                "{label}: the message names the field: {err}"
            );
        }
        assert!(res.header("x-request-id").is_some());
    }
    // Nothing was charged by any of them.
    assert_eq!(app.balance(&auth).await, json!(5));
    // An empty body is an empty object: fine where every field is optional.
    let res = app
        .send(
            Req::post("/admin/v1/accounts")
                .auth(&Auth::Admin)
                .raw("application/json", ""),
        )
        .await;
    res.expect(201);
    let err = app
        .send(Req::post("/api/v1/auth/signup").raw("application/json", ""))
        .await
        .expect(400);
    assert!(
        err["field"] == "email" || err["field"] == "password",
        "{err}"
    );
}

async fn unknown_routes_and_methods_are_json(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (auth, _) = app.user("routes@example.com").await;
    // (`/` is the dashboard's page, see dashboard.rs.)
    for req in [
        Req::get("/nope/deeper"),
        Req::get("/nope"),
        Req::get("/api/v1/nothing"),
        Req::get("/api/v1/credits/nothing").auth(&auth),
        Req::post("/admin/v1/nothing").auth(&Auth::Admin),
        Req::get("/api/v2/credits").auth(&auth),
    ] {
        let res = app.send(req.clone()).await;
        assert_eq!(res.status, 404, "{}: {}", req.path, res.text());
        assert!(res
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json")));
        let body = res.json();
        assert_eq!(body["code"], "NOT_FOUND", "{body}");
        assert!(
            body["error"].as_str().unwrap().contains(&req.path),
            "{body}"
        );
        assert!(res.header("x-request-id").is_some());
    }
    // A known path with a method it does not have: a JSON 4xx, never HTML or empty.
    for req in [
        Req::delete("/api/v1/credits").auth(&auth),
        Req::put("/api/v1/credits/packs"),
        Req::get("/api/v1/auth/signup"),
        Req::get("/admin/v1/accounts").auth(&Auth::Admin),
    ] {
        let res = app.send(req.clone()).await;
        assert!(
            res.status == 404 || res.status == 405,
            "{} {}: {}",
            req.method,
            req.path,
            res.status
        );
        assert!(res.json()["error"].is_string(), "{}", res.text());
    }
}

async fn oversized_bodies_are_413_json(backend: &'static str) {
    let app = TestApp::with(backend, |s| s.server.max_body_bytes = 1024).await;
    let (auth, id) = app.user("big@example.com").await;
    let big = "x".repeat(2000);
    for req in [
        Req::post("/api/v1/auth/signup").json(json!({"email": "a@example.com", "password": big})),
        Req::post("/api/v1/api-keys")
            .auth(&auth)
            .json(json!({"name": big})),
        debit_req(&id, json!({"amount": 1, "description": big})),
        Req::post(format!("/admin/v1/accounts/{id}/credits"))
            .auth(&Auth::Admin)
            .raw("application/json", vec![b' '; 5000]),
    ] {
        let res = app.send(req.clone()).await;
        assert_eq!(res.status, 413, "{}: {}", req.path, res.text());
        let body = res.json();
        assert!(body["error"].as_str().unwrap().contains("1024"), "{body}");
        assert_eq!(body["code"], "PAYLOAD_TOO_LARGE");
        assert!(res.header("x-request-id").is_some());
    }
    // Just under the limit is fine, and nothing above was charged.
    let desc = "y".repeat(400);
    let body = json!({"amount": 1, "description": desc});
    assert!(body.to_string().len() < 1024);
    app.send(debit_req(&id, body)).await.expect(201);
    assert_eq!(app.balance(&auth).await, json!(4));
}

async fn every_answer_has_a_request_id(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (session, id) = app.signup("ids@example.com").await;
    let (key, key_id) = app.new_key(&session, "k").await;
    let auth = Auth::Key(key);
    let reqs = [
        Req::get("/healthz"),
        Req::get("/openapi.json"),
        Req::get("/api/v1/credits/packs"),
        Req::get("/api/v1/credits").auth(&auth),
        Req::get("/api/v1/credits"),
        purchase_req(&auth, "pack_pro"),
        purchase_req(&auth, "nope"),
        Req::get("/api/v1/credits/transactions?limit=0").auth(&auth),
        debit_req(&id, json!({"amount": 1, "description": "x"})),
        debit_req(&id, json!({"amount": 100, "description": "x"})),
        Req::delete(format!("/api/v1/api-keys/{key_id}"))
            .header("x-csrf-token", api_server::auth::csrf_token(&session))
            .auth(&Auth::Cookie(session)),
        Req::get("/nowhere"),
    ];
    let mut seen = HashSet::new();
    let mut statuses = HashSet::new();
    for req in reqs {
        let res = app.send(req.clone()).await;
        let rid = res
            .header("x-request-id")
            .unwrap_or_else(|| {
                panic!(
                    "{} {} ({}) has no x-request-id",
                    req.method, req.path, res.status
                )
            })
            .to_owned();
        assert!(rid.starts_with("req_") && rid.len() > 8, "{rid}");
        assert!(seen.insert(rid), "request ids are unique");
        statuses.insert(res.status);
    }
    let mut statuses: Vec<u16> = statuses.into_iter().collect();
    statuses.sort();
    // (a purchase with no payment provider is the server error: 500 or 503, by item 1)
    let (ok, server_errors): (Vec<u16>, Vec<u16>) = statuses.into_iter().partition(|s| *s < 500);
    assert_eq!(ok, [200, 201, 204, 400, 401, 402, 404]);
    assert_eq!(server_errors.len(), 1, "{server_errors:?}");
}

async fn healthz_answers_once_the_database_does(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let res = app.send(Req::get("/healthz")).await;
    assert_eq!(res.expect(200)["status"], "ok");
}

async fn openapi_lists_every_path_of_the_contract(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let doc = app.send(Req::get("/openapi.json")).await.expect(200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    let contract: &[(&str, &[&str])] = &[
        ("/api/v1/auth/signup", &["post"]),
        ("/api/v1/auth/login", &["post"]),
        ("/api/v1/auth/logout", &["post"]),
        ("/api/v1/api-keys", &["post", "get"]),
        ("/api/v1/api-keys/{id}", &["delete"]),
        ("/api/v1/credits", &["get"]),
        ("/api/v1/credits/packs", &["get"]),
        ("/api/v1/credits/purchase", &["post"]),
        ("/api/v1/credits/transactions", &["get"]),
        ("/api/v1/account/credits", &["get"]),
        ("/v1/credits", &["get"]),
        ("/api/v1/credits/usage", &["get"]),
        ("/admin/v1/accounts", &["post"]),
        ("/admin/v1/accounts/{id}/credits", &["post"]),
        ("/admin/v1/accounts/{id}/debits", &["post"]),
        ("/admin/v1/accounts/{id}/holds", &["post"]),
        ("/admin/v1/holds/{holdId}/capture", &["post"]),
        ("/admin/v1/holds/{holdId}/release", &["post"]),
        ("/admin/v1/accounts/{id}/refunds", &["post"]),
        ("/admin/v1/accounts/{id}/subscription", &["put"]),
        ("/admin/v1/accounts/{id}/max-hard-limit", &["put"]),
        ("/admin/v1/verify", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
    ];
    for (path, methods) in contract {
        let item = paths
            .get(*path)
            .unwrap_or_else(|| panic!("/openapi.json lacks {path}"));
        for m in *methods {
            assert!(item.get(*m).is_some(), "/openapi.json lacks {m} {path}");
        }
    }
    // And every documented path is served (no stale entries): a request to it is never
    // the unknown-route 404.
    for (path, item) in paths {
        let concrete = path.replace("{id}", "acct_x").replace("{holdId}", "hold_x");
        for method in item.as_object().unwrap().keys() {
            let m: actix_web::http::Method = method.to_uppercase().parse().unwrap();
            let res = app.send(Req::new(m, &concrete).auth(&Auth::Admin)).await;
            let body: Value = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
            assert!(
                !body["error"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("No such endpoint"),
                "{method} {path} is documented but not served"
            );
        }
    }
}
