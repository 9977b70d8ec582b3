//! Failed logins are throttled per email: brute force gets 429, the owner gets back in
//! when the window ends.

use crate::common;

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
    app.send(login_req("other@example.com")).await.expect(200);
    // When the window ends the owner logs in, and the count starts again.
    app.clock.advance_secs(60);
    app.send(login(PASSWORD)).await.expect(200);
    app.send(login("wrong password")).await.expect(401);
    app.send(login(PASSWORD)).await.expect(200);
}

async fn a_malformed_or_overlong_email_is_refused_before_it_is_counted(backend: &'static str) {
    let app = TestApp::with(backend, |s| {
        s.auth.max_failed_logins = 3;
    })
    .await;
    let long = format!("{}@example.com", "a".repeat(300));
    for email in [long.as_str(), "not an address", ""] {
        for path in ["/api/v1/auth/login", "/api/v1/auth/signup"] {
            let res = app
                .send(Req::post(path).json(json!({"email": email, "password": PASSWORD})))
                .await;
            let body = res.expect(400);
            assert_eq!(body["field"], "email", "{path} {email:?}: {body}");
        }
    }
    // Many tries with a malformed address never lock anybody out: nothing was counted.
    for _ in 0..5 {
        app.send(Req::post("/api/v1/auth/login").json(json!({"email": long, "password": "x"})))
            .await
            .expect(400);
    }
    assert_eq!(app.state.login_throttle.tracked(), 0, "nothing was kept");
}

async fn the_throttle_tracks_at_most_its_capacity(backend: &'static str) {
    const CAPACITY: usize = 20;
    let app = TestApp::build_with_state(
        backend,
        START,
        |s| s.auth.max_failed_logins = 3,
        |mut state| {
            state.login_throttle = std::sync::Arc::new(
                api_server::throttle::LoginThrottle::with_capacity(3, 60, CAPACITY),
            );
            state
        },
    )
    .await;
    app.signup("victim@example.com").await;
    let login = |email: &str, password: &str| {
        Req::post("/api/v1/auth/login").json(json!({"email": email, "password": password}))
    };
    for _ in 0..3 {
        app.send(login("victim@example.com", "wrong password"))
            .await
            .expect(401);
    }
    app.send(login("victim@example.com", PASSWORD))
        .await
        .expect(429);
    // Three times the capacity in distinct emails, each failing once.
    for i in 0..3 * CAPACITY {
        app.send(login(&format!("flood{i}@example.com"), "wrong password"))
            .await
            .expect(401);
        assert!(app.state.login_throttle.tracked() <= CAPACITY);
    }
    assert_eq!(app.state.login_throttle.tracked(), CAPACITY);
    // The flood did not lift the lockout.
    app.send(login("victim@example.com", PASSWORD))
        .await
        .expect(429);
}

async fn auth_bodies_over_their_small_limit_are_413(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let limit = app.state.settings.server.auth_max_body_bytes;
    let padding = "p".repeat(limit);
    for path in ["/api/v1/auth/login", "/api/v1/auth/signup"] {
        let res = app
            .send(
                Req::post(path).json(
                    json!({"email": "big@example.com", "password": PASSWORD, "pad": padding}),
                ),
            )
            .await;
        let body = res.expect(413);
        assert_eq!(body["code"], "PAYLOAD_TOO_LARGE", "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(&limit.to_string()),
            "says the limit: {body}"
        );
    }
    // A body within the limit is read as usual.
    app.send(login_req("nobody@example.com")).await.expect(401);
}

on_both_backends!(
    repeated_failed_logins_are_throttled,
    a_malformed_or_overlong_email_is_refused_before_it_is_counted,
    auth_bodies_over_their_small_limit_are_413,
    the_throttle_tracks_at_most_its_capacity
);
