//! The screenshot flow, without HTTP.
//!
//! The metering rule, step by step: validate every option (400, nothing charged); claim the
//! `Idempotency-Key` (a replay answers as the first time did and charges nothing); answer
//! from the cache when allowed (nothing charged); refuse forbidden targets before any
//! credit moves; hold the cost (402 when not covered); capture; on success capture the
//! hold (one `usage` entry), on any failure release it; record the answer for the key.
//! The handlers in `routes::screenshot` only turn a [`Shot`] into headers and a body.

use std::future::Future;
use std::pin::Pin;

use capture::{CaptureError, CaptureOptions, Captured, RawCaptureOptions};
use ledger_core::IdempotencyKey;
use ledger_core::{pricing, AccountId, Credits, HoldId, Memo};
use ledger_store::{new_id, Claim, Operation, Outcome, ScreenshotAnswer, Spend};

use crate::error::ApiError;
use crate::state::AppState;

/// A future a [`Capturer`] returns (not `Send`: it runs on the request's worker).
pub type CaptureFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, CaptureError>> + 'a>>;

/// What takes screenshots: the browser pool ([`capture::CaptureService`]) in the server,
/// a fake in tests of this flow.
pub trait Capturer: Send + Sync {
    /// Refuses a target the capture must not reach (SSRF guard), before any credit moves.
    fn check_target<'a>(&'a self, opts: &'a CaptureOptions) -> CaptureFuture<'a, ()>;
    /// Takes the screenshot.
    fn capture<'a>(&'a self, opts: &'a CaptureOptions) -> CaptureFuture<'a, Captured>;
}

impl Capturer for capture::CaptureService {
    fn check_target<'a>(&'a self, opts: &'a CaptureOptions) -> CaptureFuture<'a, ()> {
        Box::pin(capture::CaptureService::check_target(self, opts))
    }

    fn capture<'a>(&'a self, opts: &'a CaptureOptions) -> CaptureFuture<'a, Captured> {
        Box::pin(capture::CaptureService::capture(self, opts))
    }
}

/// The price of a capture with these options (the rule: `ledger_core::pricing`).
pub fn price(opts: &CaptureOptions, costs: &settings::ScreenshotSettings) -> Credits {
    let prices = pricing::ScreenshotPrices {
        base: costs.base_cost,
        full_page: costs.full_page_cost,
        pdf: costs.pdf_cost,
    };
    prices.price(pricing::CaptureKind {
        full_page: opts.full_page(),
        pdf: opts.format() == capture::Format::Pdf,
    })
}

/// How long a capture's hold lives (the rule: `ledger_core::pricing::hold_ttl_ms`).
pub fn hold_ttl_ms(opts: &CaptureOptions, settings: &settings::Settings) -> i64 {
    pricing::hold_ttl_ms(
        opts.timeout_secs()
            .unwrap_or(settings.capture.default_timeout_secs),
        opts.delay_ms(),
        settings.credits.hold_ttl_secs,
    )
}

/// What a screenshot's `usage` entry says.
fn screenshot_memo(screenshot_id: &str) -> Memo {
    Memo::new("Screenshot captured")
        .source("Screenshot")
        .reference(screenshot_id)
}

/// A captured (or cached) image.
#[derive(Debug, Clone)]
pub struct Image {
    pub bytes: Vec<u8>,
    pub content_type: String,
    /// `scr_....png`: the name a browser saves it under.
    pub file_name: String,
}

/// What one screenshot request produced.
#[derive(Debug)]
pub struct Shot {
    /// The image, or why there is none (nothing was charged then).
    pub answer: Result<Image, ApiError>,
    /// The balance after the request, when it could be read.
    pub remaining: Option<Credits>,
    /// What this request charged (a replay and a cache hit charge nothing).
    pub charged: Credits,
    pub cache_hit: bool,
    /// The capture's id; `None` when the request was refused before one was assigned.
    pub screenshot_id: Option<String>,
    /// True when an `Idempotency-Key` matched an earlier request.
    pub replayed: bool,
}

impl Shot {
    /// A refusal before any work: nothing charged, no capture id.
    fn refused(error: ApiError, remaining: Option<Credits>) -> Shot {
        Shot {
            answer: Err(error),
            remaining,
            charged: Credits::ZERO,
            cache_hit: false,
            screenshot_id: None,
            replayed: false,
        }
    }
}

/// A screenshot request, as the handlers received it.
#[derive(Debug)]
pub struct ShotRequest {
    pub account: AccountId,
    /// The options, or why the body holding them was refused.
    pub options: Result<RawCaptureOptions, ApiError>,
    /// The `Idempotency-Key` header (an invalid one is refused after the options are).
    pub key: Result<Option<IdempotencyKey>, ApiError>,
}

/// The account's available balance, if it can be read now.
pub async fn balance(state: &AppState, account: &AccountId) -> Option<Credits> {
    let (id, now) = (account.clone(), state.now());
    state
        .read_store(move |s| s.ledger().balance(&id, now).map(|b| b.available))
        .await
        .ok()
}

/// A request refused before any work: nothing charged, the balance as it is.
async fn refuse(state: &AppState, account: &AccountId, error: ApiError) -> Shot {
    Shot::refused(error, balance(state, account).await)
}

/// What a capture with these options would cost, and the balance now.
pub async fn quote(
    state: &AppState,
    account: &AccountId,
    options: RawCaptureOptions,
) -> Result<(Credits, Credits), ApiError> {
    let opts = CaptureOptions::parse(options)?;
    let cost = price(&opts, &state.settings.screenshots);
    Ok((cost, balance(state, account).await.unwrap_or_default()))
}

/// Takes a screenshot for `request.account`, charging it at most once.
pub async fn take(state: &AppState, request: ShotRequest) -> Shot {
    take_with_balance(state, request, None).await
}

/// [`take`], given the account's available balance as read with the credential (the
/// same store call, `auth::SpenderWithBalance`): a cache hit, which charges nothing,
/// answers with it and reads nothing more from the database.
pub async fn take_with_balance(
    state: &AppState,
    request: ShotRequest,
    known_balance: Option<Credits>,
) -> Shot {
    let ShotRequest {
        account,
        options,
        key,
    } = request;
    let options = match options {
        Ok(o) => o,
        Err(e) => return refuse(state, &account, e).await,
    };
    let fingerprint = format!(
        "screenshot\n{}",
        serde_json::to_string(&options).unwrap_or_default()
    );
    let opts = match CaptureOptions::parse(options) {
        Ok(o) => o,
        Err(e) => return refuse(state, &account, e.into()).await,
    };
    let key = match key {
        Ok(k) => k.map(|k| k.as_str().to_owned()),
        Err(e) => return refuse(state, &account, e).await,
    };
    let screenshot_id = new_id("scr_");
    if let Some(key) = &key {
        let (id, k, fp, sid, now) = (
            account.clone(),
            key.clone(),
            fingerprint,
            screenshot_id.clone(),
            state.now(),
        );
        let claim = state
            .in_store(move |s| {
                s.screenshots()
                    .claim_screenshot_request(&id, &k, &fp, &sid, now)
            })
            .await;
        match claim {
            Ok(Claim::Fresh) => {}
            Ok(Claim::Replay(answer)) => return replay(state, &account, &opts, answer).await,
            Ok(Claim::InProgress) => {
                let e = ApiError::conflict(
                    "IDEMPOTENCY_IN_PROGRESS",
                    "A request with this Idempotency-Key is still running; retry when it has finished",
                );
                return refuse(state, &account, e).await;
            }
            Ok(Claim::Conflict) => {
                let e = ApiError::conflict(
                    "IDEMPOTENCY_CONFLICT",
                    "This Idempotency-Key was already used with different options; use a new key for a new request",
                );
                return refuse(state, &account, e).await;
            }
            Err(e) => return Shot::refused(e, None),
        }
    }
    let worked = work(state, &account, &opts, &screenshot_id, known_balance).await;
    if let Some(key) = key {
        record(state, &account, key, &worked).await;
    }
    worked.shot
}

/// The first answer to a key, again: charges nothing; the balance is today's.
async fn replay(
    state: &AppState,
    account: &AccountId,
    opts: &CaptureOptions,
    answer: ScreenshotAnswer,
) -> Shot {
    let bytes = match &answer.object {
        Some(object) => {
            let (cache, object) = (state.cache.clone(), object.clone());
            state
                .blocking
                .run(move || cache.object(&object))
                .await
                .ok()
                .flatten()
        }
        None => None,
    };
    let result = match (bytes, answer.error_body) {
        (Some(bytes), _) => Ok(Image {
            bytes,
            file_name: format!("{}.{}", answer.screenshot_id, opts.format().extension()),
            content_type: answer.content_type,
        }),
        (None, Some(body)) if answer.object.is_none() => Err(ApiError::Stored {
            status: answer.status_code,
            body,
        }),
        // A success whose image is gone (or was never stored).
        (None, _) => {
            let e = ApiError::conflict(
                "REPLAY_UNAVAILABLE",
                "The first answer to this Idempotency-Key is no longer stored; it was charged once. Use a new key to capture again",
            );
            return refuse(state, account, e).await;
        }
    };
    Shot {
        answer: result,
        remaining: balance(state, account).await,
        charged: Credits::ZERO,
        cache_hit: answer.cache_status == "HIT",
        screenshot_id: Some(answer.screenshot_id),
        replayed: true,
    }
}

/// A finished attempt, with what the idempotency record needs.
struct Worked {
    shot: Shot,
    /// The cached object holding the image (successes).
    object: Option<String>,
    /// True when no work started (busy, no browser): the key is released for a retry.
    retryable: bool,
}

impl Worked {
    fn failed(error: ApiError, remaining: Option<Credits>, screenshot_id: &str) -> Worked {
        Worked {
            shot: Shot {
                screenshot_id: Some(screenshot_id.to_owned()),
                ..Shot::refused(error, remaining)
            },
            object: None,
            retryable: false,
        }
    }

    /// What is stored for the key: status, content type and object or error body.
    fn answer(&self) -> ScreenshotAnswer {
        let shot = &self.shot;
        let (status_code, content_type, error_body) = match &shot.answer {
            Ok(image) => (200, image.content_type.clone(), None),
            Err(e) => (
                actix_web::ResponseError::status_code(e).as_u16(),
                "application/json".to_owned(),
                Some(e.body().to_string()),
            ),
        };
        ScreenshotAnswer {
            status_code,
            content_type,
            object: self.object.clone(),
            error_body,
            charged: shot.charged,
            cache_status: if shot.cache_hit { "HIT" } else { "MISS" }.into(),
            screenshot_id: shot.screenshot_id.clone().unwrap_or_default(),
        }
    }
}

/// Records the answer for the key, or releases the key when nothing was attempted.
async fn record(state: &AppState, account: &AccountId, key: String, worked: &Worked) {
    let (id, now, retryable) = (account.clone(), state.now(), worked.retryable);
    let answer = worked.answer();
    let recorded = state
        .in_store(move |s| {
            if retryable {
                s.screenshots().forget_screenshot_request(&id, &key)
            } else {
                s.screenshots()
                    .finish_screenshot_request(&id, &key, &answer, now)
            }
        })
        .await;
    if let Err(e) = recorded {
        tracing::error!(error = %e.chain(), "recording an idempotent screenshot answer failed");
    }
}

/// Captures or releases a screenshot's hold (if it had one) and returns the balance after.
/// If that fails, the hold expires by itself and its credits return: never a double
/// charge, at worst a free capture.
async fn settle(
    state: &AppState,
    account: &AccountId,
    hold: Option<HoldId>,
    op: impl FnOnce(HoldId) -> Operation,
) -> Option<Credits> {
    let Some(hold) = hold else {
        return balance(state, account).await;
    };
    let (id, op, now) = (account.clone(), op(hold), state.now());
    match state
        .in_store(move |s| s.ledger().apply(&id, None, op, now))
        .await
    {
        Ok(applied) => Some(applied.available),
        Err(e) => {
            tracing::error!(error = %e.chain(), "settling a screenshot hold failed");
            None
        }
    }
}

/// Holds the cost; `Ok(None)` when the capture is free.
async fn reserve(
    state: &AppState,
    account: &AccountId,
    opts: &CaptureOptions,
    cost: Credits,
    screenshot_id: &str,
) -> Result<Option<HoldId>, (ApiError, Option<Credits>)> {
    if !cost.is_positive() {
        return Ok(None);
    }
    let op = Operation::Reserve {
        amount: cost,
        ttl_ms: hold_ttl_ms(opts, &state.settings),
        spend: Spend::WithinAccountLimit,
        memo: screenshot_memo(screenshot_id),
    };
    let (id, now) = (account.clone(), state.now());
    let applied = state
        .in_store(move |s| s.ledger().apply(&id, None, op, now))
        .await
        .map_err(|e| (e, None))?;
    match applied.result {
        Ok(Outcome::Hold(h)) => Ok(Some(h.id)),
        Ok(other) => Err((
            ApiError::internal(format!("expected a hold, got {other:?}")),
            None,
        )),
        Err(rejected) => Err((ApiError::from(rejected), Some(applied.available))),
    }
}

async fn work(
    state: &AppState,
    account: &AccountId,
    opts: &CaptureOptions,
    screenshot_id: &str,
    known_balance: Option<Credits>,
) -> Worked {
    let now = state.now();
    let file_name = format!("{screenshot_id}.{}", opts.format().extension());
    let cache_key = format!("{account}\n{}", opts.cache_key());
    // `fresh` skips the lookup; the capture still refreshes the entry (when `cache` allows).
    if opts.cache() && !opts.fresh() {
        let ttl = opts
            .cache_ttl_secs()
            .unwrap_or(state.settings.screenshots.default_cache_ttl_secs);
        // A hot entry answers from memory, here (no I/O); the disk is read on a blocking
        // thread otherwise.
        let hit = match state.cache.get_hot(&cache_key, ttl, now) {
            Some(hit) => Some(hit),
            None => {
                let (cache, key) = (state.cache.clone(), cache_key.clone());
                state
                    .blocking
                    .run(move || cache.get(&key, ttl, now))
                    .await
                    .ok()
                    .flatten()
            }
        };
        if let Some(hit) = hit {
            return Worked {
                shot: Shot {
                    answer: Ok(Image {
                        bytes: hit.bytes,
                        content_type: hit.content_type,
                        file_name,
                    }),
                    remaining: match known_balance {
                        Some(known) => Some(known),
                        None => balance(state, account).await,
                    },
                    charged: Credits::ZERO,
                    cache_hit: true,
                    screenshot_id: Some(screenshot_id.to_owned()),
                    replayed: false,
                },
                object: Some(hit.object),
                retryable: false,
            };
        }
    }
    let Some(capturer) = state.capturer.clone() else {
        let why = state
            .capture_unavailable
            .clone()
            .unwrap_or_else(|| "no browser is configured".into());
        let e = ApiError::Unavailable {
            code: "BROWSER_UNAVAILABLE",
            message: format!(
                "Screenshots are unavailable on this server ({why}); nothing was charged"
            ),
            retry_after_secs: BROWSER_RETRY_AFTER_SECS,
        };
        let mut worked = Worked::failed(e, balance(state, account).await, screenshot_id);
        worked.retryable = true;
        return worked;
    };
    // Forbidden targets are refused before any credit moves.
    if let Err(e) = capturer.check_target(opts).await {
        return Worked::failed(e.into(), balance(state, account).await, screenshot_id);
    }
    // One of the account's capture slots (`ratelimit.captures_per_account`), held until
    // this function returns: on every path, and when the client goes away (the request's
    // future is dropped with it).
    let _slot = match state
        .limits
        .capture_slot(account, slot_lease(opts, state))
        .await
    {
        Ok(slot) => slot,
        Err(e) => {
            let mut worked = Worked::failed(e, balance(state, account).await, screenshot_id);
            worked.retryable = true;
            return worked;
        }
    };
    let cost = price(opts, &state.settings.screenshots);
    let hold = match reserve(state, account, opts, cost, screenshot_id).await {
        Ok(hold) => hold,
        Err((e, remaining)) => return Worked::failed(e, remaining, screenshot_id),
    };
    let started = std::time::Instant::now();
    let captured = capturer.capture(opts).await;
    let outcome = match &captured {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    state.metrics.capture(outcome, started.elapsed());
    match captured {
        Ok(shot) => {
            let memo = screenshot_memo(screenshot_id);
            let remaining = settle(state, account, hold, move |hold_id| Operation::Capture {
                hold_id,
                amount: None,
                memo: Some(memo),
            })
            .await;
            let content_type = shot.content_type.to_owned();
            let (cache, ct, bytes) = (
                state.cache.clone(),
                content_type.clone(),
                shot.bytes.clone(),
            );
            let store_in_cache = opts.cache();
            let object = state
                .blocking
                .run(move || -> std::io::Result<String> {
                    let object = cache.put_object(&bytes)?;
                    if store_in_cache {
                        cache.put_key(&cache_key, &object, &ct, now)?;
                    }
                    Ok(object)
                })
                .await
                .ok()
                .and_then(Result::ok);
            Worked {
                shot: Shot {
                    answer: Ok(Image {
                        bytes: shot.bytes,
                        content_type,
                        file_name,
                    }),
                    remaining,
                    charged: cost,
                    cache_hit: false,
                    screenshot_id: Some(screenshot_id.to_owned()),
                    replayed: false,
                },
                object,
                retryable: false,
            }
        }
        Err(e) => {
            let remaining = settle(state, account, hold, |hold_id| Operation::Release {
                hold_id,
            })
            .await;
            if !e.is_safe_to_show() {
                tracing::error!(error = %e, "capture failed");
            }
            let retryable = matches!(e, CaptureError::Busy { .. } | CaptureError::ShutDown);
            let mut worked = Worked::failed(e.into(), remaining, screenshot_id);
            worked.retryable = retryable;
            worked
        }
    }
}

/// The longest a capture can hold its slot: the wait for a browser and the capture's own
/// budget (its hold's lifetime). A slot of a process that died counts no longer.
fn slot_lease(opts: &CaptureOptions, state: &AppState) -> std::time::Duration {
    let ms = u64::try_from(hold_ttl_ms(opts, &state.settings)).unwrap_or(0);
    std::time::Duration::from_millis(ms.saturating_add(state.settings.capture.queue_timeout_ms))
}

/// Seconds a client is asked to wait when this server has no browser.
pub const BROWSER_RETRY_AFTER_SECS: u64 = 60;
