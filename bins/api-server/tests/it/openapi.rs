//! The OpenAPI document says exactly what the server accepts and answers: every answer the
//! shared layers can give, the security of every operation, the limits the handlers
//! enforce (read from the document and tried against the server), the capture options,
//! optional bodies. `scripts/fuzz-api.sh` fuzzes the server against the same document.

use crate::common;

use std::collections::BTreeSet;

use actix_web::http::Method;
use common::*;
use serde_json::{json, Value};

on_both_backends!(
    every_operation_documents_the_answers_of_the_shared_layers,
    every_operation_that_needs_credentials_declares_them_and_refuses_without,
    the_documented_limits_are_the_servers,
    bodies_whose_fields_are_all_optional_are_optional,
    the_screenshot_body_takes_the_documented_types,
);

async fn document(app: &TestApp) -> Value {
    app.send(Req::get("/openapi.json")).await.expect(200)
}

/// (path, method, operation) for every operation.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = vec![];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((path.clone(), method.clone(), op.clone()));
        }
    }
    out
}

const PUBLIC: &[&str] = &[
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/api/v1/credits/packs",
    "/api/v1/auth/signup",
    "/api/v1/auth/login",
];

async fn every_operation_documents_the_answers_of_the_shared_layers(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let doc = document(&app).await;
    for (path, method, op) in operations(&doc) {
        let label = format!("{method} {path}");
        let responses = op["responses"].as_object().unwrap();
        let has_input = op["parameters"].as_array().is_some_and(|p| !p.is_empty())
            || op.get("requestBody").is_some();
        let mut need = vec!["503", "431"];
        if has_input {
            need.push("400");
        }
        if op.get("requestBody").is_some() {
            need.extend(["413", "408"]);
        }
        if !PUBLIC.contains(&path.as_str()) {
            need.extend(["401", "404"]);
        }
        for status in need {
            assert!(
                responses.contains_key(status),
                "{label} does not document {status}"
            );
        }
        for (status, answer) in responses {
            if status == "431" {
                // The HTTP layer's own answer: documented as it is, with no body.
                assert!(answer.get("content").is_none(), "{label} 431");
            } else if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    answer["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{label} {status}: every error is the JSON error"
                );
            }
        }
    }
    // The capture options are documented where they are read.
    let options: BTreeSet<String> = doc["components"]["schemas"]["ScreenshotOptions"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let read: BTreeSet<String> = serde_json::to_value(capture::RawCaptureOptions::default())
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        options, read,
        "the document lists every option the server reads"
    );
    for path in ["/api/v1/screenshot", "/api/v1/screenshot/quote"] {
        let params: BTreeSet<String> = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(params, read, "GET {path} documents every option");
    }
    let post = &doc["paths"]["/api/v1/screenshot"]["post"]["requestBody"];
    assert_eq!(
        post["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ScreenshotOptions"
    );
    let ok = &doc["paths"]["/api/v1/screenshot"]["get"]["responses"]["200"]["content"];
    for ct in ["image/png", "image/jpeg", "image/webp", "application/pdf"] {
        assert!(ok.get(ct).is_some(), "{ct}: {ok}");
    }
}

async fn every_operation_that_needs_credentials_declares_them_and_refuses_without(
    backend: &'static str,
) {
    let app = TestApp::new(backend).await;
    let doc = document(&app).await;
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for name in ["apiKey", "bearer", "session", "csrfToken", "admin"] {
        assert!(schemes.contains_key(name), "{name}");
    }
    assert_eq!(schemes["apiKey"]["name"], "x-api-key");
    assert_eq!(schemes["session"]["in"], "cookie");
    let mut checked = 0;
    for (path, method, op) in operations(&doc) {
        let label = format!("{method} {path}");
        if PUBLIC.contains(&path.as_str()) {
            assert!(op.get("security").is_none(), "{label} is public");
            continue;
        }
        let security = op["security"]
            .as_array()
            .unwrap_or_else(|| panic!("{label} declares no security"));
        let names: Vec<String> = security
            .iter()
            .flat_map(|r| r.as_object().unwrap().keys().cloned().collect::<Vec<_>>())
            .collect();
        if path == "/metrics" {
            // The scraper's own token; without `metrics.token` (these settings) the path
            // is not served here at all.
            assert_eq!(names, ["metricsToken"], "{label}");
            let res = app.send(Req::get("/metrics")).await;
            assert_eq!(
                res.status,
                404,
                "{label} without metrics.token: {}",
                res.text()
            );
            continue;
        } else if path.starts_with("/admin/") {
            assert_eq!(names, ["admin"], "{label}");
        } else if path == "/api/v1/account/csrf-token" {
            assert_eq!(
                names,
                ["session"],
                "{label}: only a session has a CSRF token"
            );
        } else {
            assert!(names.contains(&"apiKey".to_owned()), "{label}: {names:?}");
            // A session alone is never documented where it is not enough.
            let session_alone = security
                .iter()
                .any(|r| r.as_object().unwrap().keys().collect::<Vec<_>>() == ["session"]);
            let spends_on_get = method == "get" && op["responses"].get("402").is_some();
            let bodyless_write = method != "get" && op.get("requestBody").is_none();
            assert_eq!(
                session_alone,
                !(spends_on_get || bodyless_write),
                "{label}: {security:?}"
            );
        }
        let concrete = path.replace("{id}", "acct_x").replace("{holdId}", "hold_x");
        let m: Method = method.to_uppercase().parse().unwrap();
        let res = app.send(Req::new(m, &concrete).json(json!({}))).await;
        assert_eq!(
            res.status,
            401,
            "{label} without credentials: {}",
            res.text()
        );
        checked += 1;
    }
    assert!(checked > 20, "{checked}");
}

/// A property of a component schema, through `oneOf` (nullable fields).
fn limit_of<'a>(doc: &'a Value, schema: &str, field: &str) -> &'a Value {
    let prop = &doc["components"]["schemas"][schema]["properties"][field];
    match prop["oneOf"].as_array() {
        Some(alts) => alts.iter().find(|a| a["type"] != "null").unwrap(),
        None => prop,
    }
}

fn num(v: &Value) -> i64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")) as i64
}

/// At `min` and at `max` the server accepts (`ok`); one step outside either, it answers
/// 400 naming `field`.
async fn accepts_only_within(
    app: &TestApp,
    (min, max): (i64, i64),
    ok: u16,
    field: &str,
    at: impl Fn(i64) -> Req,
) {
    app.send(at(min)).await.expect(ok);
    app.send(at(max)).await.expect(ok);
    for (n, side) in [(min - 1, "under minimum"), (max + 1, "past maximum")] {
        let res = app.send(at(n)).await;
        assert_eq!(res.status, 400, "{field} {side}: {}", res.text());
        assert_eq!(res.json()["field"], field, "{field} {side}");
    }
}

/// Each limit is read from the document, then tried: at the limit the server accepts, past
/// it the server answers 400 naming the field.
async fn the_documented_limits_are_the_servers(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let doc = document(&app).await;
    let (session, id) = app.signup("limits@example.com").await;
    let (key, _) = app.new_key(&session, "k").await;
    let me = Auth::Key(key);
    let refused = |res: &Resp, field: &str, label: &str| {
        assert_eq!(res.status, 400, "{label}: {}", res.text());
        assert_eq!(res.json()["field"], field, "{label}");
    };

    // Key names.
    let max = num(&limit_of(&doc, "NewKey", "name")["maxLength"]) as usize;
    let min = num(&limit_of(&doc, "NewKey", "name")["minLength"]) as usize;
    assert_eq!(min, 1);
    let name = |n: usize| {
        Req::post("/api/v1/api-keys")
            .auth(&me)
            .json(json!({"name": "n".repeat(n)}))
    };
    app.send(name(max)).await.expect(201);
    refused(
        &app.send(name(max + 1)).await,
        "name",
        "name past maxLength",
    );
    refused(&app.send(name(0)).await, "name", "name under minLength");

    // Passwords.
    let p = limit_of(&doc, "Credentials", "password");
    let (min, max) = (num(&p["minLength"]) as usize, num(&p["maxLength"]) as usize);
    let signup = |email: &str, n: usize| {
        Req::post("/api/v1/auth/signup").json(json!({"email": email, "password": "p".repeat(n)}))
    };
    app.send(signup("min@example.com", min)).await.expect(201);
    app.send(signup("max@example.com", max)).await.expect(201);
    refused(
        &app.send(signup("short@example.com", min - 1)).await,
        "password",
        "short password",
    );
    refused(
        &app.send(signup("long@example.com", max + 1)).await,
        "password",
        "long password",
    );
    let e = limit_of(&doc, "Credentials", "email");
    let long_email = format!(
        "{}@example.com",
        "e".repeat(num(&e["maxLength"]) as usize - 11)
    );
    refused(
        &app.send(signup(&long_email, min)).await,
        "email",
        "email past maxLength",
    );

    // Descriptions and the precision of amounts.
    let d = limit_of(&doc, "AdjustmentRequest", "description");
    let max = num(&d["maxLength"]) as usize;
    let grant = |amount: Value, description: String| {
        Req::post(format!("/admin/v1/accounts/{id}/credits"))
            .auth(&Auth::Admin)
            .json(json!({"amount": amount, "description": description}))
    };
    app.send(grant(json!(1), "d".repeat(max))).await.expect(201);
    refused(
        &app.send(grant(json!(1), "d".repeat(max + 1))).await,
        "description",
        "description",
    );
    let a = limit_of(&doc, "AdjustmentRequest", "amount");
    let step = a["multipleOf"].as_f64().unwrap();
    assert_eq!(step, 0.001);
    app.send(grant(json!(0.001), "x".into())).await.expect(201);
    refused(
        &app.send(grant(json!(0.0001), "x".into())).await,
        "amount",
        "finer than multipleOf",
    );
    let top = a["maximum"].as_f64().unwrap();
    refused(
        &app.send(grant(json!(top * 10.0), "x".into())).await,
        "amount",
        "past maximum",
    );

    // Hold lifetimes.
    let ttl = limit_of(&doc, "HoldRequest", "ttlSeconds");
    let (min, max) = (num(&ttl["minimum"]), num(&ttl["maximum"]));
    let hold = |ttl: i64| {
        Req::post(format!("/admin/v1/accounts/{id}/holds"))
            .auth(&Auth::Admin)
            .json(json!({"amount": 1, "ttlSeconds": ttl, "description": "h"}))
    };
    accepts_only_within(&app, (min, max), 201, "ttlSeconds", hold).await;

    // The page size.
    let limit = doc["paths"]["/api/v1/credits/transactions"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()["schema"]
        .clone();
    let (min, max) = (num(&limit["minimum"]), num(&limit["maximum"]));
    let page = |n: i64| Req::get(format!("/api/v1/credits/transactions?limit={n}")).auth(&me);
    accepts_only_within(&app, (min, max), 200, "limit", page).await;

    // Capture options (the quote validates them without a browser).
    let opts = &doc["components"]["schemas"]["ScreenshotOptions"]["properties"];
    for (field, over) in [
        ("width", num(&opts["width"]["maximum"]) + 1),
        ("height", num(&opts["height"]["maximum"]) + 1),
        ("quality", num(&opts["quality"]["maximum"]) + 1),
        ("delay", num(&opts["delay"]["maximum"]) + 1),
        ("timeout", num(&opts["timeout"]["maximum"]) + 1),
        ("cacheTtl", num(&opts["cacheTtl"]["maximum"]) + 1),
    ] {
        let quote = |v: i64| {
            Req::get(format!(
                "/api/v1/screenshot/quote?url=https://example.com/&format=jpeg&{field}={v}"
            ))
            .auth(&me)
        };
        app.send(quote(over - 1)).await.expect(200);
        refused(&app.send(quote(over)).await, field, field);
    }
}

async fn bodies_whose_fields_are_all_optional_are_optional(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let doc = document(&app).await;
    let body = |path: &str| doc["paths"][path]["post"]["requestBody"].clone();
    assert_eq!(body("/admin/v1/accounts")["required"], false);
    assert_eq!(body("/admin/v1/holds/{holdId}/capture")["required"], false);
    assert_eq!(body("/api/v1/auth/signup")["required"], true);
    assert_eq!(body("/api/v1/api-keys")["required"], true);
    // As the server reads them: no body is `{}`.
    let mut bare = Req::post("/admin/v1/accounts").auth(&Auth::Admin);
    bare.body = Some(vec![]);
    app.send(bare).await.expect(201);
    app.send(Req::post("/api/v1/auth/signup").raw("application/json", ""))
        .await
        .expect(400);
}

/// The POST's options are typed JSON, as the document says: a number or a boolean sent as
/// a string is a 400 naming the field (a query string carries only text, so the GET reads
/// text). Without a browser, a well-typed request gets as far as the capture (503).
async fn the_screenshot_body_takes_the_documented_types(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let doc = document(&app).await;
    let (key, _) = app.user("types@example.com").await;
    let opts = &doc["components"]["schemas"]["ScreenshotOptions"]["properties"];
    for (field, good, bad) in [
        ("width", json!(800), json!("800")),
        ("fullPage", json!(true), json!("true")),
        ("delay", json!(10), json!("10")),
        ("cache", json!(false), json!("false")),
    ] {
        let documented = opts[field]["type"].to_string();
        assert!(!documented.contains("string"), "{field}: {documented}");
        let shot = |v: &Value| {
            Req::post("/api/v1/screenshot")
                .auth(&key)
                .json(json!({"url": "https://example.com/", field: v}))
        };
        let res = app.send(shot(&good)).await;
        assert_eq!(res.status, 503, "{field}={good}: {}", res.text());
        let res = app.send(shot(&bad)).await;
        assert_eq!(res.status, 400, "{field}={bad}: {}", res.text());
        assert_eq!(res.json()["field"], field, "{field}={bad}");
        assert_eq!(res.header("x-credits-charged"), Some("0"));
    }
}
