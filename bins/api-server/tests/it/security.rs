//! The HTTP surface as an attacker meets it: NUL characters in any string, cross-site
//! requests riding a session cookie, security headers, wrong methods. Runs on SQLite and on
//! PostgreSQL.

use crate::common;

use actix_web::http::Method;
use common::*;
use serde_json::{json, Value};

on_both_backends!(
    a_nul_anywhere_is_400_naming_the_field,
    every_answer_carries_the_security_headers,
    answers_with_secrets_or_account_data_are_never_stored,
    a_bare_session_cookie_never_spends_credits,
    session_writes_need_json_or_the_csrf_token,
    a_wrong_method_is_405_with_the_registered_methods,
);

const NUL: &str = "a\u{0}b";

/// Every endpoint that takes a string, with a NUL in each string it takes: a 400 that
/// names the field, and nothing changes (PostgreSQL used to answer 500 to all of them).
async fn a_nul_anywhere_is_400_naming_the_field(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (session, id) = app.signup("nul@example.com").await;
    let (key, key_id) = app.new_key(&session, "k").await;
    let me = Auth::Key(key);
    let admin = |r: Req| r.auth(&Auth::Admin);
    let user = |r: Req| r.auth(&me);
    let account = |tail: &str| format!("/admin/v1/accounts/{id}{tail}");
    let post = |path: String, body: Value| admin(Req::post(path).json(body));
    let put = |path: String, body: Value| admin(Req::put(path).json(body));
    let hold = app
        .send(admin(
            Req::post(format!("/admin/v1/accounts/{id}/holds"))
                .json(json!({"amount": 1, "description": "h"})),
        ))
        .await
        .expect(201)["holdId"]
        .as_str()
        .unwrap()
        .to_owned();
    let cases: Vec<(Req, &str)> = vec![
        // Without any credentials.
        (
            Req::post("/api/v1/auth/signup").json(json!({"email": NUL, "password": PASSWORD})),
            "email",
        ),
        (
            Req::post("/api/v1/auth/signup")
                .json(json!({"email": "x@example.com", "password": format!("{PASSWORD}\u{0}")})),
            "password",
        ),
        (login_req("nul\u{0}@example.com"), "email"),
        (
            Req::post("/api/v1/auth/login")
                .json(json!({"email": "nul@example.com", "password": NUL})),
            "password",
        ),
        // A key in an object.
        (
            Req::post("/api/v1/auth/login").json(json!({"email\u{0}": "a"})),
            "email\\u0000",
        ),
        // User endpoints: bodies, path ids, query strings, headers.
        (
            user(Req::post("/api/v1/api-keys").json(json!({"name": NUL}))),
            "name",
        ),
        (
            user(Req::delete(format!("/api/v1/api-keys/{key_id}%00"))),
            "id",
        ),
        (
            user(Req::post("/api/v1/credits/purchase").json(json!({"packId": "pack_pro\u{0}"}))),
            "packId",
        ),
        (
            user(
                Req::put("/api/v1/credits/auto-topup")
                    .json(json!({"enabled": true, "thresholdCredits": 1, "packId": NUL})),
            ),
            "packId",
        ),
        (
            user(Req::get("/api/v1/credits/transactions?limit=1%00")),
            "limit",
        ),
        (
            user(Req::get("/api/v1/credits/transactions?offset=%00")),
            "offset",
        ),
        (
            user(Req::get("/api/v1/credits/usage?year=2026&month=3%00")),
            "month",
        ),
        (
            user(Req::get("/api/v1/screenshot?url=https://example.com/%00")),
            "url",
        ),
        (
            user(Req::get(
                "/api/v1/screenshot?url=https://example.com/&selector=a%00",
            )),
            "selector",
        ),
        (
            user(Req::get(
                "/api/v1/screenshot/quote?url=https://example.com/&format=png%00",
            )),
            "format",
        ),
        (user(Req::get("/api/v1/screenshot/quote?a%00=1")), "query"),
        (
            user(Req::post("/api/v1/screenshot").json(json!({"url": "https://example.com/\u{0}"}))),
            "url",
        ),
        (
            user(Req::post("/api/v1/screenshot").json(json!({"html": NUL}))),
            "html",
        ),
        (
            user(
                Req::post("/api/v1/screenshot")
                    .json(json!({"url": "https://example.com/", "waitForSelector": NUL})),
            ),
            "waitForSelector",
        ),
        (
            user(
                Req::post("/api/v1/screenshot")
                    .json(json!({"url": "https://example.com/", "hideSelectors": ["a", NUL]})),
            ),
            "hideSelectors[1]",
        ),
        // The operator's API.
        (
            post("/admin/v1/accounts".into(), json!({"email": NUL})),
            "email",
        ),
        (
            post(
                "/admin/v1/accounts".into(),
                json!({"password": format!("{PASSWORD}\u{0}")}),
            ),
            "password",
        ),
        (
            post(
                account("%00/credits"),
                json!({"amount": 1, "description": "d"}),
            ),
            "id",
        ),
        (
            post(
                account("/credits"),
                json!({"amount": 1, "description": NUL}),
            ),
            "description",
        ),
        (
            post(account("/debits"), json!({"amount": 1, "description": NUL})),
            "description",
        ),
        (
            post(
                account("/debits"),
                json!({"amount": 1, "description": "d", "referenceId": NUL}),
            ),
            "referenceId",
        ),
        (
            post(
                "/admin/v1/accounts/%00/debits".into(),
                json!({"amount": 1, "description": "d"}),
            ),
            "id",
        ),
        (
            post(account("/holds"), json!({"amount": 1, "description": NUL})),
            "description",
        ),
        (
            post(
                account("/holds"),
                json!({"amount": 1, "description": "d", "referenceId": NUL}),
            ),
            "referenceId",
        ),
        (
            post(format!("/admin/v1/holds/{hold}%00/capture"), json!({})),
            "holdId",
        ),
        (
            admin(Req::post(format!("/admin/v1/holds/%00{hold}/release"))),
            "holdId",
        ),
        (
            post(account("/refunds"), json!({"transactionId": NUL})),
            "transactionId",
        ),
        (
            post(
                account("/refunds"),
                json!({"transactionId": "txn_x", "description": NUL}),
            ),
            "description",
        ),
        (
            put(account("/subscription"), json!({"planId": NUL})),
            "planId",
        ),
        (
            put(
                account("/subscription"),
                json!({"planId": "basic", "status": NUL}),
            ),
            "status",
        ),
        (
            put(account("%00/subscription"), json!({"planId": "basic"})),
            "id",
        ),
        (
            put(account("%00/max-hard-limit"), json!({"maxHardLimit": 5})),
            "id",
        ),
    ];
    for (req, field) in cases {
        let label = format!("{} {}", req.method, req.path);
        let res = app.send(req).await;
        assert_eq!(res.status, 400, "{label}: {}", res.text());
        let err = res.json();
        assert_eq!(err["code"], "INVALID_REQUEST", "{label}: {err}");
        assert_eq!(err["field"], field, "{label}: {err}");
        let message = err["error"].as_str().unwrap();
        assert!(message.contains("NUL"), "{label}: {err}");
        if field != "query" {
            assert!(
                message.contains(field),
                "{label}: the message names the field: {err}"
            );
        }
    }
    // Nothing changed: one key, the bonus less nothing (the hold still holds 1), no new
    // account, a clean ledger.
    let keys = app
        .send(user(Req::get("/api/v1/api-keys")))
        .await
        .expect(200);
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    assert_eq!(app.balance(&me).await, json!(4));
    app.assert_verified().await;
    let v = app
        .send(admin(Req::get("/admin/v1/verify")))
        .await
        .expect(200);
    assert_eq!(v["accounts"], 1, "{v}");
    // A NUL that only looks like one (an escaped backslash) is ordinary text.
    app.send(user(
        Req::post("/api/v1/api-keys").json(json!({"name": "back\\u0000slash"})),
    ))
    .await
    .expect(201);
    app.send(user(Req::get("/api/v1/credits/transactions?limit=%2500")))
        .await
        .expect(400);
}

/// Every route of the document, every method it has (and the answers nobody routes: 404,
/// 405, 413, a NUL): all carry the security headers.
async fn every_answer_carries_the_security_headers(backend: &'static str) {
    let app = TestApp::with(backend, |s| s.server.max_body_bytes = 4096).await;
    let (session, id) = app.signup("headers@example.com").await;
    let (key, _) = app.new_key(&session, "k").await;
    let doc = app.send(Req::get("/openapi.json")).await.expect(200);
    let mut reqs = vec![
        Req::get("/nowhere"),
        Req::delete("/api/v1/credits"),
        Req::get("/api/v1/credits?x=%00"),
        Req::post(format!("/admin/v1/accounts/{id}/debits"))
            .auth(&Auth::Admin)
            .raw("application/json", vec![b' '; 5000]),
    ];
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", &id).replace("{holdId}", "hold_x");
        for method in item.as_object().unwrap().keys() {
            let m: Method = method.to_uppercase().parse().unwrap();
            for auth in [Auth::None, Auth::Key(key.clone()), Auth::Admin] {
                reqs.push(Req::new(m.clone(), &concrete).auth(&auth).json(json!({})));
            }
        }
    }
    for req in reqs {
        let label = format!("{} {}", req.method, req.path);
        let res = app.send(req).await;
        for (name, want) in [
            ("x-content-type-options", "nosniff"),
            (
                "content-security-policy",
                "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
        ] {
            assert_eq!(
                res.header(name),
                Some(want),
                "{label} ({}): {name}",
                res.status
            );
        }
        assert!(res.header("cache-control").is_some(), "{label}");
    }
}

/// `Cache-Control: no-store` on signup, login, a new key, the CSRF token and every
/// authenticated JSON answer.
async fn answers_with_secrets_or_account_data_are_never_stored(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let signup = app.send(signup_req("store@example.com")).await;
    signup.expect(201);
    let (session, _) = signup.session_cookie().unwrap();
    let csrf = signup
        .header("x-csrf-token")
        .expect("signup returns the CSRF token")
        .to_owned();
    let login = app.send(login_req("store@example.com")).await;
    login.expect(200);
    let cookie = Auth::Cookie(session.clone());
    let created = app.send(new_key_req(&cookie, "k")).await;
    let key = created.expect(201)["key"].as_str().unwrap().to_owned();
    let me = Auth::Key(key);
    let mut answers = vec![
        ("signup", signup),
        ("login", login),
        ("new key", created),
        (
            "csrf token",
            app.send(Req::get("/api/v1/account/csrf-token").auth(&cookie))
                .await,
        ),
        (
            "logout",
            app.send(
                Req::post("/api/v1/auth/logout")
                    .auth(&cookie)
                    .header("x-csrf-token", csrf),
            )
            .await,
        ),
    ];
    for path in [
        "/api/v1/credits",
        "/api/v1/account/credits",
        "/v1/credits",
        "/api/v1/credits/transactions",
        "/api/v1/credits/usage",
        "/api/v1/api-keys",
        "/api/v1/screenshot/quote?url=https://example.com/",
    ] {
        answers.push((path, app.send(Req::get(path).auth(&me)).await));
    }
    answers.push((
        "admin verify",
        app.send(Req::get("/admin/v1/verify").auth(&Auth::Admin))
            .await,
    ));
    for (what, res) in answers {
        assert!(res.status < 300, "{what}: {}", res.text());
        assert_eq!(res.header("cache-control"), Some("no-store"), "{what}");
    }
}

/// GET /api/v1/screenshot with nothing but the session cookie (what a third-party page gets
/// from a top-level navigation): 401 saying what to send, before anything else happens.
/// With an API key, or the session plus its CSRF token, or a JSON POST, the call gets past
/// authentication (and reaches the capture service, which these tests do not start: 503).
async fn a_bare_session_cookie_never_spends_credits(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let signup = app.send(signup_req("spend@example.com")).await;
    signup.expect(201);
    let (session, _) = signup.session_cookie().unwrap();
    let csrf = signup.header("x-csrf-token").unwrap().to_owned();
    let (key, _) = app.new_key(&session, "k").await;
    let cookie = Auth::Cookie(session.clone());
    let shot = "/api/v1/screenshot?url=https://example.com/";
    let refused = [
        Req::get(shot).auth(&cookie),
        Req::get(format!("{shot}&csrfToken={csrf}")).auth(&cookie),
        Req::get(shot)
            .auth(&cookie)
            .header("x-csrf-token", "0".repeat(64)),
        // A form or a simple cross-site request: no JSON content type.
        Req::post("/api/v1/screenshot").auth(&cookie).raw(
            "text/plain",
            json!({"url": "https://example.com/"}).to_string(),
        ),
        Req::post("/api/v1/screenshot").auth(&cookie).raw(
            "application/x-www-form-urlencoded",
            "url=https://example.com/",
        ),
        Req::post("/api/v1/screenshot")
            .auth(&cookie)
            .raw("multipart/form-data; boundary=x", "--x--"),
        // (a Blob body sends none at all)
        {
            let mut r = Req::post("/api/v1/screenshot").auth(&cookie);
            r.body = Some(
                json!({"url": "https://example.com/"})
                    .to_string()
                    .into_bytes(),
            );
            r
        },
    ];
    for req in refused {
        let label = format!("{} {} {:?}", req.method, req.path, req.headers);
        let res = app.send(req).await;
        assert_eq!(res.status, 401, "{label}: {}", res.text());
        let err = res.json();
        assert_eq!(err["code"], "CSRF_TOKEN_REQUIRED", "{label}: {err}");
        let message = err["error"].as_str().unwrap();
        assert!(
            message.contains("X-CSRF-Token") && message.contains("x-api-key"),
            "{label}: the error says what to send: {err}"
        );
        assert_eq!(res.header("x-credits-charged"), Some("0"), "{label}");
    }
    let accepted = [
        Req::get(shot).auth(&Auth::Key(key.clone())),
        // The API key wins over a cookie the browser attached.
        Req::get(shot).auth(&cookie).auth(&Auth::Key(key.clone())),
        Req::get(shot)
            .auth(&cookie)
            .header("x-csrf-token", csrf.clone()),
        Req::post("/api/v1/screenshot")
            .auth(&cookie)
            .json(json!({"url": "https://example.com/"})),
        Req::post("/api/v1/screenshot")
            .auth(&cookie)
            .header("x-csrf-token", csrf.clone())
            .raw(
                "text/plain",
                json!({"url": "https://example.com/"}).to_string(),
            ),
    ];
    for req in accepted {
        let label = format!("{} {} {:?}", req.method, req.path, req.headers);
        let res = app.send(req).await;
        assert_eq!(res.status, 503, "{label}: {}", res.text());
        assert_eq!(res.json()["code"], "BROWSER_UNAVAILABLE", "{label}");
    }
    // Reading never needed more than the cookie, and nothing was spent.
    app.send(Req::get("/api/v1/screenshot/quote?url=https://example.com/").auth(&cookie))
        .await
        .expect(200);
    assert_eq!(app.balance(&cookie).await, json!(5));
}

/// A cookie-authenticated POST, PUT or DELETE without a JSON content type needs the
/// session's CSRF token (from login, signup, or GET /api/v1/account/csrf-token); a token
/// belongs to its session only.
async fn session_writes_need_json_or_the_csrf_token(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (a_session, _) = app.signup("csrf-a@example.com").await;
    let (b_session, _) = app.signup("csrf-b@example.com").await;
    let login = app.send(login_req("csrf-a@example.com")).await;
    login.expect(200);
    let (a2_session, _) = login.session_cookie().unwrap();
    let a2_csrf = login.header("x-csrf-token").unwrap().to_owned();
    let a = Auth::Cookie(a_session.clone());
    let a2 = Auth::Cookie(a2_session.clone());
    let b = Auth::Cookie(b_session.clone());
    // Each session's token: the one login gave, and the one the API tells the session.
    let a_csrf = app
        .send(Req::get("/api/v1/account/csrf-token").auth(&a))
        .await
        .expect(200)["csrfToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let again = app
        .send(Req::get("/api/v1/account/csrf-token").auth(&a2))
        .await
        .expect(200);
    assert_eq!(again["csrfToken"], a2_csrf.as_str());
    assert_ne!(a_csrf, a2_csrf, "a token belongs to one session");
    let (key, key_id) = app.new_key(&a_session, "doomed").await;
    // API keys have no session and need no token.
    app.send(Req::get("/api/v1/account/csrf-token").auth(&Auth::Key(key.clone())))
        .await
        .expect(400);

    // Without a body (a form can send these with the cookie alone).
    let bodyless = |auth: &Auth| {
        vec![
            Req::delete(format!("/api/v1/api-keys/{key_id}")).auth(auth),
            Req::post("/api/v1/auth/logout").auth(auth),
        ]
    };
    // With a body a form or a simple request can send (never JSON).
    let with_body = |auth: &Auth| {
        vec![
            Req::post("/api/v1/api-keys")
                .auth(auth)
                .raw("text/plain", json!({"name": "x"}).to_string()),
            {
                let mut r = Req::post("/api/v1/api-keys").auth(auth);
                r.body = Some(json!({"name": "no content type"}).to_string().into_bytes());
                r
            },
            Req::post("/api/v1/credits/purchase")
                .auth(auth)
                .raw("application/x-www-form-urlencoded", "packId=pack_pro"),
            Req::put("/api/v1/credits/auto-topup").auth(auth).raw(
                "text/plain",
                json!({"enabled": true, "thresholdCredits": 1, "packId": "pack_pro"}).to_string(),
            ),
        ]
    };
    // No token, or the token of another session, or of another account: refused (a body
    // that is not JSON may be refused for that first: 400 naming content-type).
    for (auth, token) in [
        (&a, None),
        (&a, Some(a2_csrf.clone())),
        (&b, Some(a_csrf.clone())),
    ] {
        let reqs = bodyless(auth).into_iter().map(|r| (r, true));
        for (mut req, bare) in reqs.chain(with_body(auth).into_iter().map(|r| (r, false))) {
            if let Some(t) = &token {
                req = req.header("x-csrf-token", t.clone());
            }
            let label = format!("{} {} {:?}", req.method, req.path, token);
            let res = app.send(req).await;
            let err = res.json();
            if bare || res.status == 401 {
                assert_eq!(res.status, 401, "{label}: {err}");
                assert_eq!(err["code"], "CSRF_TOKEN_REQUIRED", "{label}: {err}");
            } else {
                assert_eq!(res.status, 400, "{label}: {err}");
                assert_eq!(err["field"], "content-type", "{label}: {err}");
            }
        }
    }
    let keys = app
        .send(Req::get("/api/v1/api-keys").auth(&a))
        .await
        .expect(200);
    assert_eq!(
        keys.as_array().unwrap().len(),
        1,
        "nothing was created: {keys}"
    );
    // The key and both sessions still work.
    app.send(Req::get("/api/v1/credits").auth(&Auth::Key(key.clone())))
        .await
        .expect(200);
    app.send(Req::get("/api/v1/credits").auth(&a))
        .await
        .expect(200);
    app.send(Req::get("/api/v1/credits").auth(&b))
        .await
        .expect(200);
    // With the session's own token, or a JSON body, the same calls go through.
    app.send(
        Req::post("/api/v1/api-keys")
            .auth(&a)
            .header("x-csrf-token", a_csrf.clone())
            .raw(
                "application/json",
                json!({"name": "with token"}).to_string(),
            ),
    )
    .await
    .expect(201);
    app.send(delete_key_req(&a, &key_id, a_csrf.clone()))
        .await
        .expect(204);
    app.assert_refused(&Auth::Key(key)).await;
    app.send(
        Req::post("/api/v1/auth/logout")
            .auth(&a)
            .header("x-csrf-token", a_csrf),
    )
    .await
    .expect(204);
    app.assert_refused(&a).await;
    app.send(Req::post("/api/v1/auth/logout").auth(&b).json(json!({})))
        .await
        .expect(204);
}

/// A known path with a method it does not have is `405` with `Allow` listing exactly the
/// methods the document (generated from the route registration) gives it, in-process and
/// over a real socket.
async fn a_wrong_method_is_405_with_the_registered_methods(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let doc = app.send(Req::get("/openapi.json")).await.expect(200);
    let all = ["GET", "POST", "PUT", "DELETE", "PATCH"];
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", "acct_x").replace("{holdId}", "hold_x");
        let mut allowed: Vec<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        allowed.sort();
        for m in all.iter().filter(|m| !allowed.iter().any(|a| a == *m)) {
            let res = app.send(Req::new(m.parse().unwrap(), &concrete)).await;
            assert_eq!(res.status, 405, "{m} {path}: {}", res.text());
            let mut allow: Vec<String> = res
                .header("allow")
                .unwrap_or_else(|| panic!("{m} {path} has no Allow"))
                .split(',')
                .map(|s| s.trim().to_owned())
                .collect();
            allow.sort();
            assert_eq!(allow, allowed, "{m} {path}");
            let body = res.json();
            assert_eq!(body["code"], "METHOD_NOT_ALLOWED", "{body}");
            assert!(body["error"]
                .as_str()
                .unwrap()
                .contains(path.split('{').next().unwrap()));
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked}");
}

/// Over a real socket (a real actix server on a free port).
mod over_a_socket {
    use super::*;
    use api_server::AppState;
    use test_support::TestDb;

    fn serve(backend: &str) -> (TestDb, LiveServer) {
        let db = TestDb::of(backend);
        let clock = PinnedClock::at(START);
        let state =
            AppState::new(db.store.clone(), settings(), clock.clock()).expect("valid settings");
        let server = LiveServer::start(state, 1);
        (db, server)
    }

    fn wrong_methods_are_405_and_unknown_paths_404(backend: &str) {
        let (_db, live) = serve(backend);
        let res = live.send(&Req::new(Method::PATCH, "/api/v1/api-keys"));
        assert_eq!(res.status, 405, "{}", res.text());
        assert_eq!(res.header("allow"), Some("POST, GET"));
        assert_eq!(res.json()["code"], "METHOD_NOT_ALLOWED");
        assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
        let res = live.send(&Req::delete("/admin/v1/holds/hold_1/capture").auth(&Auth::Admin));
        assert_eq!(res.status, 405, "{}", res.text());
        assert_eq!(res.header("allow"), Some("POST"));
        let res = live.send(&Req::get("/api/v1/api-keys/nope/more"));
        assert_eq!(res.status, 404);
        assert_eq!(res.json()["code"], "NOT_FOUND");
    }

    /// Sends `raw` as is on a new connection and reads the answer to the end: (status, the
    /// head in lower case, the body).
    fn raw(addr: std::net::SocketAddr, raw: &[u8]) -> (u16, String, Vec<u8>) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        stream.write_all(raw).expect("write");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let end = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&answer)));
        let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        (status, head, answer[end + 4..].to_vec())
    }

    /// Bytes the HTTP parser lets through (obs-text, 0x80-0xFF, in a header value) reach the
    /// application, which answers the contract's JSON: a key that is not text is no key
    /// (401), an Idempotency-Key that is not visible ASCII is a 400 naming it.
    fn raw_bytes_in_header_values_get_json_answers(backend: &str) {
        let (_db, live) = serve(backend);
        let (status, head, body) = raw(
            live.addr,
            b"GET /api/v1/credits HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-api-key: sk_live_\xff\xfe\r\n\r\n",
        );
        assert_eq!(status, 401, "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "Unauthorized - Invalid or missing API key");
        let (status, head, body) = raw(
            live.addr,
            b"POST /admin/v1/accounts HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer test-admin-token-0123456789\r\nidempotency-key: k\xff\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        );
        // (account creation takes no Idempotency-Key: it is created, the header ignored)
        assert!(status == 201 || status == 400, "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
        let (status, head, body) = raw(
            live.addr,
            b"POST /admin/v1/accounts/acct_x/debits HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer test-admin-token-0123456789\r\nidempotency-key: k\xff\r\ncontent-type: application/json\r\ncontent-length: 31\r\n\r\n{\"amount\":1,\"description\":\"dd\"}",
        );
        assert_eq!(status, 400, "{head}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["field"], "Idempotency-Key", "{body}");
    }

    #[test]
    fn sqlite_raw_bytes_in_header_values_get_json_answers() {
        raw_bytes_in_header_values_get_json_answers("sqlite")
    }

    #[test]
    fn postgres_raw_bytes_in_header_values_get_json_answers() {
        raw_bytes_in_header_values_get_json_answers("postgres")
    }

    #[test]
    fn sqlite_wrong_methods_are_405_and_unknown_paths_404() {
        wrong_methods_are_405_and_unknown_paths_404("sqlite")
    }

    #[test]
    fn postgres_wrong_methods_are_405_and_unknown_paths_404() {
        wrong_methods_are_405_and_unknown_paths_404("postgres")
    }
}
