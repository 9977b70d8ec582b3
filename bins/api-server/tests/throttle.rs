//! Failed logins are throttled per email: brute force gets 429, the owner gets back in
//! when the window ends.

mod common;

use common::*;
use serde_json::json;

async fn repeated_failed_logins_are_throttled(backend: &'static str) {
    let app = TestApp::with(backend, |s| {
        s.auth.max_failed_logins = 3;
        s.auth.lockout_secs = 60;
    })
    .await;
    app.signup("owner@example.com").await;
    let login = |password: &str| {
        Req::post("/api/v1/auth/login")
            .json(json!({"email": "Owner@example.com", "password": password}))
    };
    for _ in 0..3 {
        app.send(login("wrong password")).await.expect(401);
    }
    // Locked: even the right password waits, and the answer says how long.
    let res = app.send(login(PASSWORD)).await;
    let body = res.expect(429);
    assert_eq!(body["code"], "TOO_MANY_ATTEMPTS");
    assert_eq!(res.header("retry-after"), Some("60"));
    // Another account is not affected.
    app.signup("other@example.com").await;
    app.send(
        Req::post("/api/v1/auth/login")
            .json(json!({"email": "other@example.com", "password": PASSWORD})),
    )
    .await
    .expect(200);
    // When the window ends the owner logs in, and the count starts again.
    app.clock.advance_secs(60);
    app.send(login(PASSWORD)).await.expect(200);
    app.send(login("wrong password")).await.expect(401);
    app.send(login(PASSWORD)).await.expect(200);
}

on_both_backends!(repeated_failed_logins_are_throttled);
