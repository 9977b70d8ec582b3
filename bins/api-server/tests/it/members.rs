//! Members and owners: invitations, signing up with one, what members may and may not
//! do (403 `OWNER_ONLY`), removal revoking sessions and keys at once, the last owner.
//! Every test runs on SQLite and on PostgreSQL.

use crate::common;

use std::sync::Arc;

use api_server::service::screenshot::{CaptureFuture, Capturer};
use capture::{CaptureOptions, Captured};
use common::*;
use serde_json::{json, Value};

on_both_backends!(
    a_member_spends_the_accounts_credits,
    an_invited_member_joins_the_account_and_cannot_manage_billing,
    invitations_refuse_bad_input_and_work_once,
    removal_stops_sessions_and_keys_at_once_and_the_last_owner_stays,
);

const UNAUTHORIZED: &str = r#"{"error":"Unauthorized - Invalid or missing API key"}"#;

/// `POST /api/v1/members` as `auth`.
async fn invite(app: &TestApp, auth: &Auth, email: &str, role: &str) -> Resp {
    app.send(
        Req::post("/api/v1/members")
            .auth(auth)
            .json(json!({"email": email, "role": role})),
    )
    .await
}

/// Signs up with an invitation token.
async fn join(app: &TestApp, email: &str, token: &str) -> Resp {
    app.send(
        Req::post("/api/v1/auth/signup")
            .json(json!({"email": email, "password": PASSWORD, "inviteToken": token})),
    )
    .await
}

fn token_of(invited: &Value) -> String {
    invited["inviteToken"].as_str().unwrap().to_owned()
}

/// The token of a new invitation of `email` as `role`, by `by`.
async fn invited_token(app: &TestApp, by: &Auth, email: &str, role: &str) -> String {
    token_of(&invite(app, by, email, role).await.expect(201))
}

/// `email`, invited by `by` as `role`, joins: what the signup answered, the member's
/// session, and a new API key of theirs named `key_name`.
async fn joined(
    app: &TestApp,
    by: &Auth,
    email: &str,
    role: &str,
    key_name: &str,
) -> (Value, String, Auth) {
    let token = invited_token(app, by, email, role).await;
    let res = join(app, email, &token).await;
    let body = res.expect(201);
    let (session, _) = res.session_cookie().unwrap();
    let (key, _) = app.new_key(&session, key_name).await;
    (body, session, Auth::Key(key))
}

fn assert_owner_only(res: &Resp) {
    let body = res.expect(403);
    assert_eq!(body["code"], "OWNER_ONLY", "{body}");
    assert!(body["error"].as_str().unwrap().contains("owner"), "{body}");
}

/// The listed member with this email.
fn by_email<'a>(listed: &'a [Value], email: &str) -> &'a Value {
    listed
        .iter()
        .find(|m| m["email"] == email)
        .unwrap_or_else(|| panic!("{email} is not listed: {listed:?}"))
}

async fn members(app: &TestApp, auth: &Auth) -> Vec<Value> {
    app.list("/api/v1/members", auth).await
}

/// A browser that always succeeds (the real one is tested in `screenshots.rs`).
struct Stub;

impl Capturer for Stub {
    fn check_target<'a>(&'a self, _: &'a CaptureOptions) -> CaptureFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn capture<'a>(&'a self, _: &'a CaptureOptions) -> CaptureFuture<'a, Captured> {
        Box::pin(async {
            Ok(Captured {
                bytes: b"\x89PNG stub".to_vec(),
                content_type: "image/png",
                width: 10,
                height: 10,
            })
        })
    }
}

async fn a_member_spends_the_accounts_credits(backend: &'static str) {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().display().to_string();
    let app = TestApp::build_with_state(
        backend,
        START,
        |s| s.screenshots.cache_dir = dir,
        |state| state.with_capturer(Arc::new(Stub)),
    )
    .await;
    let (owner_session, account) = app.signup("owner@example.com").await;
    let owner = Auth::Cookie(owner_session);
    let (_, _, bob) = joined(&app, &owner, "bob@example.com", "member", "bob's").await;
    let res = app
        .send(
            Req::post("/api/v1/screenshot")
                .auth(&bob)
                .json(json!({"html": "<h1>hi</h1>", "cache": false})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-credits-charged"), Some("1"));
    assert_eq!(res.header("x-credits-remaining"), Some("4"));
    // The account's one balance paid for it, as the owner sees.
    assert_eq!(app.balance(&owner).await, json!(4));
    let txns = app.transactions(&owner).await;
    assert_eq!(txns[0]["type"], "usage", "{txns}");
    assert_eq!(txns[0]["amount"], -1, "{txns}");
    let v = app
        .send(Req::get("/admin/v1/verify").auth(&Auth::Admin))
        .await
        .expect(200);
    assert_eq!(v["accounts"], 1, "{v}");
    assert!(!account.is_empty());
    app.assert_verified().await;
}

async fn an_invited_member_joins_the_account_and_cannot_manage_billing(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (owner_session, account) = app.signup("owner@example.com").await;
    let owner = Auth::Cookie(owner_session.clone());
    let (owner_key, owner_key_id) = app.new_key(&owner_session, "owner's").await;

    // The owner is the account's one member; an invitation is not a member yet.
    let listed = members(&app, &owner).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["email"], "owner@example.com");
    assert_eq!(listed[0]["role"], "owner");
    let res = invite(&app, &owner, " Bob@Example.com ", "member").await;
    let invited = res.expect(201);
    let token = token_of(&invited);
    assert!(token.starts_with("inv_") && token.len() >= 64, "{invited}");
    assert_eq!(invited["email"], "bob@example.com");
    assert_eq!(invited["role"], "member");
    let id = invited["id"].as_str().unwrap().to_owned();
    assert!(
        invited["createdAt"].as_str().unwrap().ends_with('Z'),
        "{invited}"
    );
    assert_eq!(members(&app, &owner).await.len(), 1);

    // Bob joins the owner's account: no new account, no second bonus.
    let res = join(&app, "bob@example.com", &token).await;
    let body = res.expect(201);
    assert_eq!(
        body,
        json!({"accountId": account, "email": "bob@example.com", "balance": 5})
    );
    let (bob_session, _) = res.session_cookie().expect("a session cookie");
    let bob = Auth::Cookie(bob_session.clone());
    let listed = members(&app, &bob).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let listed_bob = by_email(&listed, "bob@example.com");
    assert_eq!(listed_bob["id"], id.as_str());
    assert_eq!(listed_bob["role"], "member");
    assert_eq!(by_email(&listed, "owner@example.com")["role"], "owner");
    let v = app
        .send(Req::get("/admin/v1/verify").auth(&Auth::Admin))
        .await
        .expect(200);
    assert_eq!(v["accounts"], 1, "{v}");
    assert_eq!(v["entries"], 1, "{v}");

    // Bob logs in with his own password, into the owner's account.
    let res = app
        .send(
            Req::post("/api/v1/auth/login")
                .json(json!({"email": "bob@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(res.expect(200)["accountId"], account.as_str());

    // A member reads the account's credits and makes keys of his own.
    assert_eq!(app.balance(&bob).await, json!(5));
    let (bob_key, bob_key_id) = app.new_key(&bob_session, "bob's").await;
    let bob_by_key = Auth::Key(bob_key);
    assert_eq!(app.balance(&bob_by_key).await, json!(5));
    assert_eq!(
        app.transactions(&bob_by_key)
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let keys = app
        .send(Req::get("/api/v1/api-keys").auth(&bob_by_key))
        .await
        .expect(200);
    let ids = texts_of(&keys, "id");
    assert_eq!(
        ids,
        vec![bob_key_id.as_str()],
        "a member sees only his keys"
    );
    // The owner sees every key of the account.
    let keys = app
        .send(Req::get("/api/v1/api-keys").auth(&owner))
        .await
        .expect(200);
    assert_eq!(keys.as_array().unwrap().len(), 2, "{keys}");
    // A member cannot revoke the owner's key (it is not his to see): 404, still working.
    app.send(Req::delete(format!("/api/v1/api-keys/{owner_key_id}")).auth(&bob_by_key))
        .await
        .expect(404);
    assert_eq!(app.balance(&Auth::Key(owner_key.clone())).await, json!(5));

    // Only owners purchase, set auto top-up and manage members.
    for auth in [&bob, &bob_by_key] {
        let res = app
            .send(
                Req::post("/api/v1/credits/purchase")
                    .auth(auth)
                    .json(json!({"packId": "pack_pro"})),
            )
            .await;
        assert_owner_only(&res);
        let res = app
            .send(
                Req::put("/api/v1/credits/auto-topup")
                    .auth(auth)
                    .json(json!({"enabled": true, "thresholdCredits": 10, "packId": "pack_pro"})),
            )
            .await;
        assert_owner_only(&res);
        assert_owner_only(&invite(&app, auth, "carol@example.com", "member").await);
        let owner_id = by_email(&listed, "owner@example.com")["id"]
            .as_str()
            .unwrap();
        let res = app
            .send(Req::delete(format!("/api/v1/members/{owner_id}")).auth(&bob_by_key))
            .await;
        assert_owner_only(&res);
    }
    // Reading auto top-up is allowed to anyone in the account.
    let read = app
        .send(Req::get("/api/v1/credits/auto-topup").auth(&bob))
        .await;
    assert_ne!(read.status, 403, "{}", read.text());
    // The owner is not refused as a member is (no payment product is configured here).
    let res = app
        .send(
            Req::post("/api/v1/credits/purchase")
                .auth(&Auth::Key(owner_key))
                .json(json!({"packId": "pack_pro"})),
        )
        .await;
    assert_ne!(res.status, 403, "{}", res.text());
    assert_eq!(members(&app, &owner).await.len(), 2);
    app.assert_verified().await;
}

async fn invitations_refuse_bad_input_and_work_once(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (session, _) = app.signup("owner@example.com").await;
    let owner = Auth::Cookie(session);
    let (_, other_account) = app.signup("other@example.com").await;

    // Bad email or role: 400 naming the field.
    for (email, role, field) in [
        ("not-an-email", "member", "email"),
        ("bob@example.com", "admin", "role"),
        ("bob@example.com", "", "role"),
    ] {
        let body = invite(&app, &owner, email, role).await.expect(400);
        assert_eq!(body["code"], "INVALID_REQUEST", "{body}");
        assert_eq!(body["field"], field, "{body}");
    }
    let body = app
        .send(
            Req::post("/api/v1/members")
                .auth(&owner)
                .json(json!({"email": "bob@example.com"})),
        )
        .await
        .expect(400);
    assert!(body["error"].as_str().unwrap().contains("role"), "{body}");
    // An email that already has a login (any account's): 409.
    for email in ["owner@example.com", "OTHER@example.com"] {
        let body = invite(&app, &owner, email, "member").await.expect(409);
        assert_eq!(body["code"], "EMAIL_TAKEN", "{body}");
    }

    let token = invited_token(&app, &owner, "bob@example.com", "owner").await;
    // Unknown tokens.
    for bad in ["inv_0000", "nothing", ""] {
        let res = join(&app, "bob@example.com", bad).await;
        let body = res.expect(400);
        assert_eq!(body["code"], "INVALID_INVITE", "{body}");
        assert!(res.session_cookie().is_none());
    }
    // Another email than the invited one: 400 saying which, and the token still works.
    let body = join(&app, "robert@example.com", &token).await.expect(400);
    assert_eq!(body["field"], "email", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("bob@example.com"),
        "{body}"
    );
    // A bad password is refused before the token is spent.
    let body = app
        .send(
            Req::post("/api/v1/auth/signup").json(
                json!({"email": "bob@example.com", "password": "short", "inviteToken": token}),
            ),
        )
        .await
        .expect(400);
    assert_eq!(body["field"], "password", "{body}");
    let joined = join(&app, "bob@example.com", &token).await.expect(201);
    assert_ne!(joined["accountId"], other_account.as_str());
    // Once only.
    let body = join(&app, "bob@example.com", &token).await.expect(400);
    assert_eq!(body["code"], "INVALID_INVITE", "{body}");
    // Bob joined as an owner: he may invite.
    let bob_session = app
        .send(
            Req::post("/api/v1/auth/login")
                .json(json!({"email": "bob@example.com", "password": PASSWORD})),
        )
        .await
        .session_cookie()
        .unwrap()
        .0;
    let bob = Auth::Cookie(bob_session);
    let later = invited_token(&app, &bob, "carol@example.com", "member").await;

    // An email that got a login after it was invited: 409 at signup.
    let early = invited_token(&app, &owner, "dave@example.com", "member").await;
    let (_, _) = app.signup("dave@example.com").await;
    let body = join(&app, "dave@example.com", &early).await.expect(409);
    assert_eq!(body["code"], "EMAIL_TAKEN", "{body}");

    // Invitations expire after 7 days.
    app.clock.advance_secs(7 * 24 * 3600 + 1);
    let body = join(&app, "carol@example.com", &later).await.expect(400);
    assert_eq!(body["code"], "INVALID_INVITE", "{body}");
    assert!(body["error"].as_str().unwrap().contains("7 days"), "{body}");
    app.assert_verified().await;
}

async fn removal_stops_sessions_and_keys_at_once_and_the_last_owner_stays(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (owner_session, _) = app.signup("owner@example.com").await;
    let (owner_key, _) = app.new_key(&owner_session, "owner's").await;
    let owner = Auth::Key(owner_key);
    let (bob_id, bob_session, bob_key) =
        joined(&app, &owner, "bob@example.com", "member", "bob's").await;
    let bob_cookie = Auth::Cookie(bob_session);
    assert_eq!(app.balance(&bob_cookie).await, json!(5));
    assert_eq!(app.balance(&bob_key).await, json!(5));
    let listed = members(&app, &owner).await;
    let owner_id = by_email(&listed, "owner@example.com")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob_member = by_email(&listed, "bob@example.com")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(bob_id["accountId"].is_string());

    // Unknown ids and another account's members: 404.
    let (other_session, _) = app.signup("other@example.com").await;
    let other = Auth::Cookie(other_session);
    let other_id = members(&app, &other).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for id in ["mem_nobody", other_id.as_str()] {
        app.send(Req::delete(format!("/api/v1/members/{id}")).auth(&owner))
            .await
            .expect(404);
    }
    assert_eq!(members(&app, &other).await.len(), 1);

    // Removing Bob stops his session and his key at once; he cannot log in.
    app.send(Req::delete(format!("/api/v1/members/{bob_member}")).auth(&owner))
        .await
        .expect(204);
    for auth in [&bob_cookie, &bob_key] {
        let res = app.send(Req::get("/api/v1/credits").auth(auth)).await;
        assert_eq!(res.status, 401);
        assert_eq!(res.text(), UNAUTHORIZED);
    }
    app.send(
        Req::post("/api/v1/auth/login")
            .json(json!({"email": "bob@example.com", "password": PASSWORD})),
    )
    .await
    .expect(401);
    // Removing again: 404. The owner still works.
    app.send(Req::delete(format!("/api/v1/members/{bob_member}")).auth(&owner))
        .await
        .expect(404);
    assert_eq!(app.balance(&owner).await, json!(5));
    assert_eq!(members(&app, &owner).await.len(), 1);

    // The last owner cannot be removed.
    let body = app
        .send(Req::delete(format!("/api/v1/members/{owner_id}")).auth(&owner))
        .await
        .expect(409);
    assert_eq!(body["code"], "LAST_OWNER", "{body}");
    assert_eq!(app.balance(&owner).await, json!(5));

    // With a second owner, the first may go; then the second is the last.
    let (_, _, dana) = joined(&app, &owner, "dana@example.com", "owner", "dana's").await;
    app.send(Req::delete(format!("/api/v1/members/{owner_id}")).auth(&dana))
        .await
        .expect(204);
    assert_eq!(
        app.send(Req::get("/api/v1/credits").auth(&owner))
            .await
            .status,
        401
    );
    let dana_id = by_email(&members(&app, &dana).await, "dana@example.com")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = app
        .send(Req::delete(format!("/api/v1/members/{dana_id}")).auth(&dana))
        .await
        .expect(409);
    assert_eq!(body["code"], "LAST_OWNER", "{body}");

    // A removed member's email may be invited again.
    invite(&app, &dana, "bob@example.com", "member")
        .await
        .expect(201);
    app.assert_verified().await;
}
