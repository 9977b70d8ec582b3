//! Signed URLs (issue 12, ADR 11): every new key has a signing secret, shown once; a GET
//! whose query names `keyId` and ends with `&signature=<hex HMAC-SHA256 of the query before
//! it>` acts as that key (charges, headers, cache), and every malformed, tampered, expired
//! or unprovable one is a 401 saying what to fix, charging nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::*;
use api_server::service::screenshot::{CaptureFuture, Capturer};
use capture::{CaptureConfig, CaptureOptions, CaptureService, Captured};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

on_both_backends!(
    a_new_key_shows_its_signing_secret_once,
    a_signed_get_acts_as_its_key_until_it_expires,
    a_signed_screenshot_is_charged_as_the_key_and_cached_without_its_signature,
    a_signed_screenshot_is_taken_by_the_real_browser,
    bad_signed_urls_are_refused_and_charge_nothing,
    revoked_keys_and_keys_without_a_secret_sign_nothing,
    the_document_describes_signed_urls,
);

/// The hex HMAC-SHA256 of `message` keyed with `secret`, computed here independently of
/// the server.
fn hmac_hex(secret: &str, message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `path?query&signature=...`, signed with `secret`.
fn signed(path: &str, query: &str, secret: &str) -> String {
    format!("{path}?{query}&signature={}", hmac_hex(secret, query))
}

/// Asserts `res` is a 401 with `code` whose message says `needle`.
fn refused(res: &Resp, code: &str, needle: &str) {
    let body = res.expect(401);
    assert_eq!(body["code"], code, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains(needle), "{needle:?} not in {error:?}");
}

/// A key made through the API with the session: its `201` body.
async fn created_key(app: &TestApp, session: &str, name: &str) -> Value {
    app.send(new_key_req(&Auth::Cookie(session.into()), name))
        .await
        .expect(201)
}

/// A signed-up user's new key: (key, id, signing secret).
async fn signer(app: &TestApp, email: &str) -> (String, String, String) {
    let (session, _) = app.signup(email).await;
    let k = created_key(app, &session, "signer").await;
    let field = |name: &str| k[name].as_str().unwrap().to_owned();
    (field("key"), field("id"), field("signingSecret"))
}

/// The clock of `app` in unix seconds, moved by `secs`.
fn unix_in(app: &TestApp, secs: i64) -> i64 {
    app.clock.now().millis() / 1000 + secs
}

/// The `lastUsedAt` of the one key of the session's account (listed with the session, so
/// listing is no use of a key).
async fn last_used(app: &TestApp, session: &str) -> Value {
    let list = app
        .send(Req::get("/api/v1/api-keys").auth(&Auth::Cookie(session.into())))
        .await
        .expect(200);
    list[0]["lastUsedAt"].clone()
}

async fn a_new_key_shows_its_signing_secret_once(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (session, _) = app.signup("secret@example.com").await;
    let first = created_key(&app, &session, "one").await;
    // (The map's keys are sorted.)
    let fields: Vec<&String> = first.as_object().unwrap().keys().collect();
    let expected = ["createdAt", "id", "key", "name", "prefix", "signingSecret"];
    assert_eq!(fields, expected, "{first}");
    let secret = first["signingSecret"].as_str().unwrap();
    let digits = secret
        .strip_prefix("ss_")
        .unwrap_or_else(|| panic!("{secret}"));
    assert!(
        digits.len() == 64 && digits.bytes().all(|b| b.is_ascii_hexdigit()),
        "{secret}"
    );
    assert_ne!(secret, first["key"].as_str().unwrap());
    let second = created_key(&app, &session, "two").await;
    assert_ne!(second["signingSecret"], first["signingSecret"]);
    // Listings never show it, nor any field of it.
    let res = app
        .send(Req::get("/api/v1/api-keys").auth(&Auth::Cookie(session)))
        .await;
    assert!(!res.text().contains(secret), "{}", res.text());
    assert!(!res.text().contains("signingSecret"), "{}", res.text());
    assert_eq!(res.expect(200).as_array().unwrap().len(), 2);
}

async fn a_signed_get_acts_as_its_key_until_it_expires(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (session, _) = app.signup("signed@example.com").await;
    let k = created_key(&app, &session, "signer").await;
    let (id, secret) = (
        k["id"].as_str().unwrap(),
        k["signingSecret"].as_str().unwrap(),
    );
    assert_eq!(last_used(&app, &session).await, Value::Null);
    let credits = signed("/api/v1/credits", &format!("keyId={id}"), secret);
    assert_eq!(
        app.send(Req::get(&credits)).await.expect(200),
        json!({"balance": 5})
    );
    // Upper-case hex digits are the same signature.
    let upper = format!(
        "/api/v1/credits?keyId={id}&signature={}",
        hmac_hex(secret, &format!("keyId={id}")).to_uppercase()
    );
    app.send(Req::get(upper)).await.expect(200);
    // A quote with options and an expiry in the future: priced as with the key, with the
    // metering headers.
    let exp = unix_in(&app, 60);
    let quote = signed(
        "/api/v1/screenshot/quote",
        &format!("url=https%3A%2F%2Fexample.com%2F&width=800&keyId={id}&expires={exp}"),
        secret,
    );
    let res = app.send(Req::get(&quote)).await;
    assert_eq!(res.expect(200), json!({"credits": 1}));
    assert_eq!(res.header("x-credits-remaining"), Some("5"));
    assert_eq!(res.header("x-credits-charged"), Some("0"));
    // The key's use is noted (after the answer, never making it wait).
    let mut noted = last_used(&app, &session).await;
    for _ in 0..100 {
        if noted != Value::Null {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
        noted = last_used(&app, &session).await;
    }
    assert_eq!(noted, json!(START));
    // At `expires` it stops working, with a message saying so.
    app.clock.advance_secs(60);
    refused(
        &app.send(Req::get(&quote)).await,
        "SIGNATURE_EXPIRED",
        "expired",
    );
    // Without `expires` a URL lives as long as its key.
    app.clock.advance_secs(365 * 24 * 3600);
    app.send(Req::get(&credits)).await.expect(200);
}

/// The app with a screenshot cache of its own (kept while the folder lives) and what
/// `wire` adds to its state (the browser).
async fn with_cache(
    backend: &'static str,
    wire: impl FnOnce(api_server::AppState) -> api_server::AppState,
) -> (TestApp, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().display().to_string();
    let app =
        TestApp::build_with_state(backend, START, |s| s.screenshots.cache_dir = dir, wire).await;
    (app, cache)
}

/// A browser that counts its captures and always succeeds.
#[derive(Default)]
struct Counting(AtomicUsize);

impl Capturer for Counting {
    fn check_target<'a>(&'a self, _: &'a CaptureOptions) -> CaptureFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn capture<'a>(&'a self, _: &'a CaptureOptions) -> CaptureFuture<'a, Captured> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Ok(Captured {
                bytes: b"\x89PNG counted".to_vec(),
                content_type: "image/png",
                width: 640,
                height: 800,
            })
        })
    }
}

async fn a_signed_screenshot_is_charged_as_the_key_and_cached_without_its_signature(
    backend: &'static str,
) {
    let browser = Arc::new(Counting::default());
    let shared = browser.clone();
    let (app, _cache) = with_cache(backend, |state| state.with_capturer(shared)).await;
    let (session, _) = app.signup("shot@example.com").await;
    let k = created_key(&app, &session, "embed").await;
    let (id, secret) = (
        k["id"].as_str().unwrap(),
        k["signingSecret"].as_str().unwrap(),
    );
    let options = "url=http%3A%2F%2Fexample.com%2F&width=640";
    let shot = |expires: i64| {
        signed(
            "/api/v1/screenshot",
            &format!("{options}&keyId={id}&expires={expires}"),
            secret,
        )
    };
    // The browser attaches the session cookie to an embedded image: alone it could not
    // spend on a GET, the signature does.
    let cookie = Auth::Cookie(session.clone());
    let res = app
        .send(Req::get(shot(unix_in(&app, 300))).auth(&cookie))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.body, b"\x89PNG counted");
    assert_eq!(res.header("x-credits-charged"), Some("1"));
    assert_eq!(res.header("x-credits-remaining"), Some("4"));
    assert_eq!(res.header("x-cache"), Some("MISS"));
    // Another signature and expiry over the same options: the same capture, from the
    // cache (the signed URL's parameters are not options and not part of the cache key).
    let res = app.send(Req::get(shot(unix_in(&app, 600)))).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-cache"), Some("HIT"));
    assert_eq!(res.header("x-credits-charged"), Some("0"));
    assert_eq!(res.header("x-credits-remaining"), Some("4"));
    assert_eq!(browser.0.load(Ordering::SeqCst), 1);
    // Charged to the key's account as a key's capture is: one usage entry.
    let history = signed(
        "/api/v1/credits/transactions",
        &format!("limit=10&keyId={id}"),
        secret,
    );
    let entries = app.send(Req::get(history)).await.expect(200);
    let kinds: Value = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert_eq!(kinds, json!(["usage", "signup_bonus"]), "{entries}");
    assert_eq!(entries[0]["amount"], json!(-1));
    // The cookie alone still cannot spend on a GET.
    let plain = format!("/api/v1/screenshot?{options}&fresh=true");
    app.send(Req::get(plain).auth(&cookie)).await.expect(401);
    app.assert_verified().await;
}

/// The whole path once with the real browser (an inline document: no network).
async fn a_signed_screenshot_is_taken_by_the_real_browser(backend: &'static str) {
    assert!(
        std::path::Path::new("/usr/bin/chromedriver").exists(),
        "chromium-driver is not installed: run `just setup`"
    );
    let service = CaptureService::start(CaptureConfig {
        pool_size: 1,
        default_timeout_secs: 20,
        ..CaptureConfig::default()
    })
    .await
    .expect("start the capture service");
    let shared = service.clone();
    let (app, _cache) = with_cache(backend, |state| state.with_capture(shared)).await;
    let (key, id, secret) = signer(&app, "browser@example.com").await;
    let query = format!(
        "html=%3Ch1%3Esigned%3C%2Fh1%3E&width=200&height=100&keyId={id}&expires={}",
        unix_in(&app, 300)
    );
    let res = app
        .send(Req::get(signed("/api/v1/screenshot", &query, &secret)))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("image/png"));
    assert!(res.body.starts_with(b"\x89PNG\r\n"), "not a PNG");
    assert_eq!(res.header("x-credits-charged"), Some("1"));
    assert_eq!(res.header("x-credits-remaining"), Some("4"));
    assert_eq!(app.balance(&Auth::Key(key)).await, json!(4));
    service.shutdown().await;
    app.assert_verified().await;
}

async fn bad_signed_urls_are_refused_and_charge_nothing(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (key, id, secret) = signer(&app, "forger@example.com").await;
    let base = format!("width=800&keyId={id}");
    let sig = hmac_hex(&secret, &base);
    let past = unix_in(&app, -1);
    let now = unix_in(&app, 0);
    let expired = format!("width=800&keyId={id}&expires={past}");
    let at_now = format!("width=800&keyId={id}&expires={now}");
    let cases: Vec<(String, &str, &str)> = vec![
        // Tampered after signing.
        (
            format!("/api/v1/screenshot/quote?width=801&keyId={id}&signature={sig}"),
            "INVALID_SIGNATURE",
            "does not match",
        ),
        // Signed with another secret.
        (
            signed("/api/v1/screenshot/quote", &base, "ss_not_the_secret"),
            "INVALID_SIGNATURE",
            "does not match",
        ),
        // Not last.
        (
            format!("/api/v1/credits?{base}&signature={sig}&fresh=true"),
            "INVALID_SIGNATURE",
            "last parameter",
        ),
        (
            format!("/api/v1/credits?signature={sig}&{base}"),
            "INVALID_SIGNATURE",
            "last parameter",
        ),
        // No key named, no signature, not hex, a parameter twice.
        (
            signed("/api/v1/credits", "width=800", &secret),
            "INVALID_SIGNATURE",
            "keyId=",
        ),
        (
            format!("/api/v1/credits?{base}"),
            "INVALID_SIGNATURE",
            "&signature=",
        ),
        (
            format!("/api/v1/credits?{base}&signature=zz{}", &sig[2..]),
            "INVALID_SIGNATURE",
            "64 hex digits",
        ),
        (
            format!("/api/v1/credits?{base}&signature={}", &sig[..62]),
            "INVALID_SIGNATURE",
            "64 hex digits",
        ),
        (
            signed("/api/v1/credits", &format!("{base}&keyId={id}"), &secret),
            "INVALID_SIGNATURE",
            "keyId is given more than once",
        ),
        // Expired (at or after `expires`), or an expiry that is not unix seconds.
        (
            signed("/api/v1/credits", &expired, &secret),
            "SIGNATURE_EXPIRED",
            "expired",
        ),
        (
            signed("/api/v1/credits", &at_now, &secret),
            "SIGNATURE_EXPIRED",
            "expired",
        ),
        (
            signed("/api/v1/credits", &format!("{base}&expires=soon"), &secret),
            "INVALID_SIGNATURE",
            "unix seconds",
        ),
        // A key that does not exist.
        (
            signed("/api/v1/credits", "keyId=key_nobody", &secret),
            "INVALID_SIGNATURE",
            "no live API key",
        ),
    ];
    for (url, code, needle) in &cases {
        println!("{url}");
        refused(&app.send(Req::get(url)).await, code, needle);
    }
    // A signed query is checked, never ignored: a valid key in a header does not rescue a
    // tampered one.
    let tampered = &cases[0].0;
    let res = app
        .send(Req::get(tampered).auth(&Auth::Key(key.clone())))
        .await;
    refused(&res, "INVALID_SIGNATURE", "does not match");
    // A signed URL proves a GET only.
    let res = app
        .send(Req::post(signed("/api/v1/api-keys", &base, &secret)).json(json!({"name": "x"})))
        .await;
    refused(&res, "INVALID_SIGNATURE", "GET only");
    // A refused capture is charged nothing and says so.
    let res = app
        .send(Req::get(format!(
            "/api/v1/screenshot?url=http%3A%2F%2Fexample.com%2F&keyId={id}&signature={sig}"
        )))
        .await;
    assert_eq!(res.status, 401, "{}", res.text());
    assert_eq!(res.header("x-credits-charged"), Some("0"));
    // Nothing was charged, nothing written.
    assert_eq!(app.balance(&Auth::Key(key.clone())).await, json!(5));
    let entries = app.transactions(&Auth::Key(key)).await;
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
}

async fn revoked_keys_and_keys_without_a_secret_sign_nothing(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (key, id, secret) = signer(&app, "revoked@example.com").await;
    let url = signed("/api/v1/credits", &format!("keyId={id}"), &secret);
    app.send(Req::get(&url)).await.expect(200);
    // Revoked: its signed URLs stop at once.
    app.send(Req::delete(format!("/api/v1/api-keys/{id}")).auth(&Auth::Key(key)))
        .await
        .expect(204);
    let res = app.send(Req::get(&url)).await;
    refused(&res, "INVALID_SIGNATURE", "no live API key");

    // A key from before signing secrets (the migration leaves its secret NULL): the key
    // works, its signed URLs cannot, and the answer says to make a new key.
    let (old_key, old_id, old_secret) = signer(&app, "old@example.com").await;
    app.db
        .store
        .execute_batch(&format!(
            "UPDATE api_keys SET signing_secret = NULL WHERE id = '{old_id}'"
        ))
        .unwrap();
    let url = signed("/api/v1/credits", &format!("keyId={old_id}"), &old_secret);
    let res = app.send(Req::get(&url)).await;
    refused(
        &res,
        "INVALID_SIGNATURE",
        "create a new key (POST /api/v1/api-keys)",
    );
    assert_eq!(app.balance(&Auth::Key(old_key)).await, json!(5));
}

async fn the_document_describes_signed_urls(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let doc = app.send(Req::get("/openapi.json")).await.expect(200);
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["signedUrlKeyId"]["in"], "query", "{schemes}");
    assert_eq!(schemes["signedUrlKeyId"]["name"], "keyId");
    assert_eq!(schemes["signedUrlSignature"]["name"], "signature");
    let signed = json!({"signedUrlKeyId": [], "signedUrlSignature": []});
    for path in [
        "/api/v1/screenshot",
        "/api/v1/screenshot/quote",
        "/api/v1/credits",
    ] {
        let security = doc["paths"][path]["get"]["security"].as_array().unwrap();
        assert!(security.contains(&signed), "{path}: {security:?}");
    }
    // Not for writes.
    let post = doc["paths"]["/api/v1/screenshot"]["post"]["security"]
        .as_array()
        .unwrap();
    assert!(!post.contains(&signed), "{post:?}");
    let created = &doc["components"]["schemas"]["KeyCreated"];
    assert!(
        created["required"]
            .as_array()
            .unwrap()
            .contains(&json!("signingSecret")),
        "{created}"
    );
}
