//! The screenshot flow without HTTP: `service::screenshot::take` against a real store (both
//! backends) and a fake browser behind the `Capturer` trait.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::ResponseError;
use api_server::service::screenshot::{self, CaptureFuture, Capturer, Shot, ShotRequest};
use api_server::AppState;
use capture::{CaptureError, CaptureOptions, Captured, RawCaptureOptions};
use ledger_core::{AccountId, Credits, EntryKind, IdempotencyKey, Page, Timestamp};
use ledger_store::NewAccount;
use serde_json::json;
use test_support::{on_both_backends, TestDb};

on_both_backends!(
    a_capture_charges_once,
    a_failed_capture_releases_its_hold,
    credits_that_do_not_cover_are_402_before_the_browser,
    an_idempotent_retry_answers_the_same_and_charges_once,
    a_cache_hit_charges_nothing,
    a_forbidden_target_is_refused_before_any_credit_moves,
);

const PNG: &[u8] = b"\x89PNG fake image";

/// A browser that answers what the test says and counts what it was asked.
#[derive(Default)]
struct FakeBrowser {
    checks: AtomicUsize,
    captures: AtomicUsize,
    fail_with: Mutex<Option<fn() -> CaptureError>>,
    forbid: Mutex<bool>,
}

impl FakeBrowser {
    fn captures(&self) -> usize {
        self.captures.load(Ordering::SeqCst)
    }
}

impl Capturer for FakeBrowser {
    fn check_target<'a>(&'a self, _: &'a CaptureOptions) -> CaptureFuture<'a, ()> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        let forbid = *self.forbid.lock().unwrap();
        Box::pin(async move {
            if forbid {
                Err(CaptureError::ForbiddenTarget {
                    target: "http://10.0.0.1/".into(),
                    reason: "a private address".into(),
                })
            } else {
                Ok(())
            }
        })
    }

    fn capture<'a>(&'a self, _: &'a CaptureOptions) -> CaptureFuture<'a, Captured> {
        self.captures.fetch_add(1, Ordering::SeqCst);
        let fail = *self.fail_with.lock().unwrap();
        Box::pin(async move {
            match fail {
                Some(error) => Err(error()),
                None => Ok(Captured {
                    bytes: PNG.to_vec(),
                    content_type: "image/png",
                    width: 10,
                    height: 10,
                }),
            }
        })
    }
}

struct World {
    state: AppState,
    browser: Arc<FakeBrowser>,
    account: AccountId,
    _db: TestDb,
    _cache: tempfile::TempDir,
}

const NOW: i64 = 1_800_000_000_000;

fn world(backend: &str, credits: i64) -> World {
    let db = TestDb::of(backend);
    let cache = tempfile::tempdir().unwrap();
    let mut settings = crate::common::settings();
    settings.screenshots.cache_dir = cache.path().to_string_lossy().into_owned();
    let browser = Arc::new(FakeBrowser::default());
    let clock: api_server::Clock = Arc::new(|| Timestamp::from_millis(NOW));
    let state = AppState::new(db.store.clone(), settings, clock)
        .unwrap()
        .with_capturer(browser.clone());
    let (account, _) = db
        .store
        .ledger()
        .create_account(
            NewAccount {
                signup_bonus: Credits::whole(credits),
                ..NewAccount::default()
            },
            Timestamp::from_millis(NOW),
        )
        .unwrap();
    World {
        state,
        browser,
        account: account.id,
        _db: db,
        _cache: cache,
    }
}

impl World {
    async fn take(&self, options: serde_json::Value, key: Option<&str>) -> Shot {
        let options: RawCaptureOptions = serde_json::from_value(options).unwrap();
        let request = ShotRequest {
            account: self.account.clone(),
            options: Ok(options),
            key: Ok(key.map(|k| IdempotencyKey::parse(k).unwrap())),
        };
        screenshot::take(&self.state, request).await
    }

    fn available(&self) -> Credits {
        let now = Timestamp::from_millis(NOW);
        self.state
            .store
            .ledger()
            .balance(&self.account, now)
            .unwrap()
            .available
    }

    fn usage_entries(&self) -> usize {
        let entries = self
            .state
            .store
            .ledger()
            .history(&self.account, Page::parse(None, None).unwrap())
            .unwrap();
        entries
            .iter()
            .filter(|e| e.kind == EntryKind::Usage)
            .count()
    }

    /// How the world ends: what the account can spend, its usage entries and the
    /// browser's captures; and a clean ledger.
    fn ends_with(&self, available: i64, usage_entries: usize, captures: usize) {
        assert_eq!(self.available(), Credits::whole(available));
        assert_eq!(
            (self.usage_entries(), self.browser.captures()),
            (usage_entries, captures)
        );
        self.verified();
    }

    fn verified(&self) {
        let report = self.state.store.maintenance().verify().unwrap();
        let report = serde_json::to_value(&report).unwrap();
        assert_eq!(report["ok"], true, "{report}");
    }
}

fn uncached() -> serde_json::Value {
    json!({"url": "https://example.com/", "cache": false})
}

fn status(shot: &Shot) -> u16 {
    match &shot.answer {
        Ok(_) => 200,
        Err(e) => e.status_code().as_u16(),
    }
}

async fn a_capture_charges_once(backend: &'static str) {
    let w = world(backend, 5);
    let shot = w.take(uncached(), None).await;
    assert_eq!(status(&shot), 200, "{:?}", shot.answer.as_ref().err());
    let image = shot.answer.as_ref().unwrap();
    assert_eq!(
        (image.bytes.as_slice(), image.content_type.as_str()),
        (PNG, "image/png")
    );
    assert!(image.file_name.starts_with("scr_") && image.file_name.ends_with(".png"));
    assert_eq!(shot.charged, Credits::whole(1));
    assert_eq!(shot.remaining, Some(Credits::whole(4)));
    assert!(!shot.cache_hit && !shot.replayed);
    w.ends_with(4, 1, 1);
}

async fn a_failed_capture_releases_its_hold(backend: &'static str) {
    let w = world(backend, 5);
    *w.browser.fail_with.lock().unwrap() = Some(|| CaptureError::Timeout {
        timeout_secs: 30,
        stage: "loading".into(),
    });
    let shot = w.take(uncached(), None).await;
    assert_eq!(status(&shot), 504);
    let body = shot.answer.as_ref().unwrap_err().body();
    assert_eq!(body["code"], "TIMEOUT", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .ends_with("nothing was charged"),
        "{body}"
    );
    assert_eq!(
        (shot.charged, shot.remaining),
        (Credits::ZERO, Some(Credits::whole(5)))
    );
    w.ends_with(5, 0, 1);
}

async fn credits_that_do_not_cover_are_402_before_the_browser(backend: &'static str) {
    let w = world(backend, 0);
    let shot = w.take(uncached(), None).await;
    assert_eq!(status(&shot), 402);
    let body = shot.answer.as_ref().unwrap_err().body();
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["balance", "code", "error", "required"], "{body}");
    assert_eq!(body["code"], "INSUFFICIENT_CREDITS");
    assert_eq!(body["error"], "Insufficient credits");
    assert_eq!(
        (body["required"].as_f64(), body["balance"].as_f64()),
        (Some(1.0), Some(0.0)),
        "{body}"
    );
    assert_eq!(
        (shot.charged, shot.remaining),
        (Credits::ZERO, Some(Credits::ZERO))
    );
    assert_eq!(
        w.browser.captures(),
        0,
        "the browser ran for an unpaid capture"
    );
    w.verified();
}

async fn an_idempotent_retry_answers_the_same_and_charges_once(backend: &'static str) {
    let w = world(backend, 5);
    let first = w.take(uncached(), Some("retry-1")).await;
    assert_eq!(status(&first), 200);
    assert_eq!(first.charged, Credits::whole(1));
    let again = w.take(uncached(), Some("retry-1")).await;
    assert_eq!(status(&again), 200);
    assert!(again.replayed);
    assert_eq!(again.charged, Credits::ZERO);
    assert_eq!(again.screenshot_id, first.screenshot_id);
    assert_eq!(
        again.answer.as_ref().unwrap().bytes,
        first.answer.as_ref().unwrap().bytes
    );
    assert_eq!(again.remaining, Some(Credits::whole(4)));
    assert_eq!((w.usage_entries(), w.browser.captures()), (1, 1));
    // The same key with other options is a conflict, and charges nothing either.
    let other = w
        .take(
            json!({"url": "https://example.org/", "cache": false}),
            Some("retry-1"),
        )
        .await;
    assert_eq!(status(&other), 409);
    assert_eq!(other.answer.unwrap_err().code(), "IDEMPOTENCY_CONFLICT");
    assert_eq!(w.available(), Credits::whole(4));
    w.verified();
}

async fn a_cache_hit_charges_nothing(backend: &'static str) {
    let w = world(backend, 5);
    let cached = json!({"url": "https://example.com/"});
    let first = w.take(cached.clone(), None).await;
    assert_eq!((status(&first), first.cache_hit), (200, false));
    let hit = w.take(cached, None).await;
    assert_eq!((status(&hit), hit.cache_hit), (200, true));
    assert_eq!(hit.charged, Credits::ZERO);
    assert_eq!(hit.answer.as_ref().unwrap().bytes, PNG);
    assert_eq!(hit.remaining, Some(Credits::whole(4)));
    w.ends_with(4, 1, 1);
}

async fn a_forbidden_target_is_refused_before_any_credit_moves(backend: &'static str) {
    let w = world(backend, 5);
    *w.browser.forbid.lock().unwrap() = true;
    let shot = w.take(uncached(), None).await;
    assert_eq!(status(&shot), 400);
    assert_eq!(shot.answer.as_ref().unwrap_err().code(), "FORBIDDEN_TARGET");
    assert_eq!(shot.charged, Credits::ZERO);
    assert_eq!(
        (
            w.browser.checks.load(Ordering::SeqCst),
            w.browser.captures()
        ),
        (1, 0)
    );
    assert_eq!(w.available(), Credits::whole(5));
    w.verified();
}
