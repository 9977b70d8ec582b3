//! The read path (issue 11): `GET /api/v1/credits` and a cached screenshot, with an API
//! key or a signed URL, read the credential and the balance in one store call (one pooled
//! connection; on SQLite on the async thread when one is idle, ADR 20), and the answer is
//! always today's balance: a debit, a credit, a write by another store on the same database
//! and a revocation all show in the very next request. A cached screenshot answered from
//! memory is never older than the last capture of its key (`fresh`). On SQLite and
//! PostgreSQL.

use crate::common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use api_server::service::screenshot::{CaptureFuture, Capturer};
use capture::{CaptureOptions, Captured};
use common::*;
use ledger_core::{GrantSource, GrantSpec, Memo};
use ledger_store::{PoolOptions, Store, StoreObserver};
use serde_json::json;

on_both_backends!(
    a_balance_read_takes_one_pooled_connection_and_is_always_current,
    a_cached_screenshot_takes_one_pooled_connection_and_answers_the_current_balance,
    a_signed_balance_read_takes_one_pooled_connection,
    a_fresh_capture_is_what_the_next_hit_answers,
);

/// Counts the pool's checkouts.
#[derive(Default)]
struct Checkouts(AtomicU64);

impl StoreObserver for Checkouts {
    fn acquired(&self, _waited: Duration) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Checkouts {
    fn count(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

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

/// A fake browser whose every capture differs from the one before (`shot 1`, `shot 2`, ...).
#[derive(Default)]
struct Counting(AtomicU64);

impl Capturer for Counting {
    fn check_target<'a>(&'a self, _: &'a CaptureOptions) -> CaptureFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn capture<'a>(&'a self, _: &'a CaptureOptions) -> CaptureFuture<'a, Captured> {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            Ok(Captured {
                bytes: format!("shot {n}").into_bytes(),
                content_type: "image/png",
                width: 10,
                height: 10,
            })
        })
    }
}

/// The app on a store whose pool checkouts are counted, a fake browser and a cache of
/// its own.
async fn counted(backend: &str, cache_dir: String) -> (TestApp, Arc<Checkouts>) {
    let db = TestDb::of(backend);
    let checkouts = Arc::new(Checkouts::default());
    let store = Store::open_observed(&db.url, &PoolOptions::default(), checkouts.clone())
        .expect("open the test database again");
    let app = TestApp::from_db(
        db,
        START,
        |s| s.screenshots.cache_dir = cache_dir,
        move |mut state| {
            state.store = store;
            state.with_capturer(Arc::new(Stub))
        },
    )
    .await;
    (app, checkouts)
}

/// The checkouts `n` sends of `req` take, each answered 200.
async fn checkouts_of(
    app: &TestApp,
    checkouts: &Checkouts,
    account: &str,
    req: &Req,
    n: u64,
) -> u64 {
    // The first use of a key notes it (once a minute, apart from the request): let that
    // happen first.
    let ok = |res: Resp| assert_eq!(res.status, 200, "{}", res.text());
    ok(app.send(req.clone()).await);
    let id = ledger_core::AccountId::new(account);
    let noted = || {
        let keys = app.state.store.access().api_keys(&id).unwrap();
        keys.iter().all(|k| k.last_used_at_ms.is_some())
    };
    for _ in 0..500 {
        if noted() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(noted(), "the key's use was noted");
    let before = checkouts.count();
    for _ in 0..n {
        ok(app.send(req.clone()).await);
    }
    checkouts.count() - before
}

async fn a_balance_read_takes_one_pooled_connection_and_is_always_current(backend: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let (app, checkouts) = counted(backend, dir.path().display().to_string()).await;
    let (key, account) = app.user("reader@example.com").await;
    let read = Req::get("/api/v1/credits").auth(&key);
    assert_eq!(checkouts_of(&app, &checkouts, &account, &read, 5).await, 5);
    assert_eq!(app.balance(&key).await, json!(5));

    // Every write shows in the very next read: this process's, and another store's on
    // the same database (another api-server, the webhook receiver, the CLI).
    app.debit(&account, json!(2)).await.expect(201);
    assert_eq!(app.balance(&key).await, json!(3));
    let other = Store::open(&app.db.url, &PoolOptions::default()).unwrap();
    let id = ledger_core::AccountId::new(account.clone());
    other
        .ledger()
        .apply(
            &id,
            None,
            ledger_store::Operation::Credit {
                spec: GrantSpec::new(GrantSource::Purchase, test_support::c(10)),
                memo: Memo::new("Purchased"),
            },
            app.clock.now(),
        )
        .unwrap()
        .result
        .unwrap();
    assert_eq!(app.balance(&key).await, json!(13));

    // A key revoked by another store is refused at once.
    let Auth::Key(secret) = &key else {
        unreachable!()
    };
    let hash = api_server::auth::sha256_hex(secret);
    let caller = other
        .access()
        .key_caller(ledger_store::KeyBy::Hash(&hash))
        .unwrap()
        .unwrap();
    assert!(other
        .access()
        .revoke_api_key(&id, &caller.key_id, app.clock.now())
        .unwrap());
    app.send(read).await.expect(401);
}

async fn a_cached_screenshot_takes_one_pooled_connection_and_answers_the_current_balance(
    backend: &'static str,
) {
    let dir = tempfile::tempdir().unwrap();
    let (app, checkouts) = counted(backend, dir.path().display().to_string()).await;
    let (key, account) = app.user("shots@example.com").await;
    let shot = Req::get("/api/v1/screenshot?url=https%3A%2F%2Fexample.com%2F").auth(&key);
    let first = app.send(shot.clone()).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(first.header("x-credits-charged"), Some("1"));
    assert_eq!(checkouts_of(&app, &checkouts, &account, &shot, 5).await, 5);
    let hit = app.send(shot.clone()).await;
    assert_eq!(hit.status, 200, "{}", hit.text());
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.header("x-credits-charged"), Some("0"));
    assert_eq!(hit.header("x-credits-remaining"), Some("4"));
    assert_eq!(hit.body, b"\x89PNG stub");
    // A debit shows in the next hit's remaining credits.
    app.debit(&account, json!(3)).await.expect(201);
    let hit = app.send(shot).await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.header("x-credits-remaining"), Some("1"));
}

async fn a_signed_balance_read_takes_one_pooled_connection(backend: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let (app, checkouts) = counted(backend, dir.path().display().to_string()).await;
    let (session, account) = app.signup("signer@example.com").await;
    let body = app
        .send(new_key_req(&Auth::Cookie(session), "signed"))
        .await
        .expect(201);
    let (id, secret) = (
        body["id"].as_str().unwrap(),
        body["signingSecret"].as_str().unwrap(),
    );
    let query = format!("keyId={id}");
    let hex: String = api_server::auth::sign(secret, &query)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let read = Req::get(format!("/api/v1/credits?{query}&signature={hex}"));
    assert_eq!(checkouts_of(&app, &checkouts, &account, &read, 3).await, 3);
    assert_eq!(app.send(read).await.expect(200), json!({"balance": 5}));
}

/// `fresh` refreshes the cached entry (the contract): the hits after it answer the new
/// capture, even when the old one was being answered from memory (ADR 20), and without
/// charging.
async fn a_fresh_capture_is_what_the_next_hit_answers(backend: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::of(backend);
    let app = TestApp::from_db(
        db,
        START,
        |s| s.screenshots.cache_dir = dir.path().display().to_string(),
        |state| state.with_capturer(Arc::new(Counting::default())),
    )
    .await;
    let (key, _) = app.user("fresh@example.com").await;
    let url = "/api/v1/screenshot?url=https%3A%2F%2Fexample.com%2F";
    let shot = |query: &str| Req::get(format!("{url}{query}")).auth(&key);
    let first = app.send(shot("")).await;
    assert_eq!(
        (first.header("x-cache"), first.body.as_slice()),
        (Some("MISS"), &b"shot 1"[..])
    );
    // Read from disk, then (within the second) from memory.
    for _ in 0..3 {
        let hit = app.send(shot("")).await;
        assert_eq!(
            (hit.header("x-cache"), hit.body.as_slice()),
            (Some("HIT"), &b"shot 1"[..])
        );
    }
    let fresh = app.send(shot("&fresh=true")).await;
    assert_eq!(
        (
            fresh.header("x-cache"),
            fresh.header("x-credits-charged"),
            fresh.body.as_slice()
        ),
        (Some("MISS"), Some("1"), &b"shot 2"[..])
    );
    for _ in 0..3 {
        let hit = app.send(shot("")).await;
        assert_eq!(
            (
                hit.header("x-cache"),
                hit.header("x-credits-charged"),
                hit.body.as_slice()
            ),
            (Some("HIT"), Some("0"), &b"shot 2"[..]),
            "the hit after fresh answers the new capture"
        );
    }
}
