//! `GET|POST /api/v1/screenshot` and its quote.
//!
//! The metering rule, step by step: validate every option (400, nothing charged); answer
//! from the cache when allowed (nothing charged); refuse forbidden targets before any
//! credit moves; hold the cost (402 when not covered); capture; on success capture the
//! hold (one `usage` entry), on any failure release it. Every answer, errors included,
//! carries `x-credits-remaining`, `x-credits-charged` and `x-cache` (and `x-request-id`
//! from the middleware). An `Idempotency-Key` replays the first answer.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse, ResponseError};
use capture::{CaptureError, CaptureOptions, Format, RawCaptureOptions};
use ledger_core::{AccountId, Credits, HoldId, Memo};
use ledger_store::{new_id, Claim, Operation, Outcome, ScreenshotAnswer, Spend};
use serde_json::json;

use crate::auth::{AuthError, Spender};
use crate::body::{idempotency_key, parse_json};
use crate::error::ApiError;
use crate::routes::with_metering;
use crate::state::AppState;

/// The cost of a capture with these options.
pub fn quote(opts: &CaptureOptions, costs: &settings::ScreenshotSettings) -> Credits {
    let mut cost = costs.base_cost;
    if opts.full_page() {
        cost += costs.full_page_cost;
    }
    if opts.format() == Format::Pdf {
        cost += costs.pdf_cost;
    }
    cost
}

/// What a screenshot's `usage` entry says.
fn screenshot_memo(screenshot_id: &str) -> Memo {
    Memo::new("Screenshot captured")
        .source("Screenshot")
        .reference(screenshot_id)
}

fn with_cache_header(
    mut res: HttpResponse,
    cache: &str,
    screenshot_id: Option<&str>,
) -> HttpResponse {
    let h = res.headers_mut();
    h.insert(
        HeaderName::from_static("x-cache"),
        HeaderValue::from_static(if cache == "HIT" { "HIT" } else { "MISS" }),
    );
    if let Some(id) = screenshot_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        h.insert(HeaderName::from_static("x-screenshot-id"), id);
    }
    res
}

/// An error answer with every metering header.
fn refused(err: impl ResponseError, remaining: Option<Credits>) -> HttpResponse {
    let mut res = err.error_response();
    res.headers_mut().insert(
        HeaderName::from_static("x-credits-charged"),
        HeaderValue::from_static("0"),
    );
    if let Some(r) = remaining {
        res = with_metering(res, r, Credits::ZERO);
    }
    with_cache_header(res, "MISS", None)
}

fn image(
    bytes: Vec<u8>,
    content_type: &str,
    screenshot_id: &str,
    format_ext: &str,
) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type.to_owned())
        .insert_header((
            "content-disposition",
            format!("inline; filename=\"{screenshot_id}.{format_ext}\""),
        ))
        .insert_header(("cache-control", "private, max-age=0"))
        .body(bytes)
}

fn capture_failure(e: &CaptureError) -> (StatusCode, serde_json::Value) {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_GATEWAY);
    let message = if e.is_safe_to_show() {
        format!("{e}; nothing was charged")
    } else {
        "The capture failed unexpectedly; nothing was charged. The x-request-id header identifies it in our logs".into()
    };
    (status, json!({ "error": message, "code": e.code() }))
}

async fn balance(state: &AppState, account: &AccountId) -> Option<Credits> {
    let id = account.clone();
    let now = state.now();
    state
        .blocking(move |s| Ok(s.ledger().balance(&id, now)?.available))
        .await
        .ok()
}

/// What one capture request produced, before headers.
struct Done {
    answer: ScreenshotAnswer,
    bytes: Option<Vec<u8>>,
    remaining: Option<Credits>,
    retry_after: Option<u64>,
    /// True when no work started (busy): the idempotency key is released for a retry.
    retryable: bool,
}

fn render(done: &Done, ext: &str) -> HttpResponse {
    let a = &done.answer;
    let res = match (&done.bytes, &a.error_body) {
        (Some(bytes), _) => image(bytes.clone(), &a.content_type, &a.screenshot_id, ext),
        (None, body) => {
            let status =
                StatusCode::from_u16(a.status_code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut res = HttpResponse::build(status)
                .content_type("application/json")
                .body(
                    body.clone()
                        .unwrap_or_else(|| "{\"error\":\"Internal server error\"}".into()),
                );
            if let Some(secs) = done.retry_after {
                res.headers_mut().insert(
                    HeaderName::from_static("retry-after"),
                    HeaderValue::from(secs),
                );
            }
            res
        }
    };
    let res = match done.remaining {
        Some(r) => with_metering(res, r, a.charged),
        None => res,
    };
    with_cache_header(res, &a.cache_status, Some(&a.screenshot_id))
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
        .blocking(move |s| Ok(s.ledger().apply(&id, None, op, now)?))
        .await
    {
        Ok(applied) => Some(applied.available),
        Err(e) => {
            tracing::error!(error = %e, "settling a screenshot hold failed");
            None
        }
    }
}

async fn work(
    state: &AppState,
    account: &AccountId,
    opts: &CaptureOptions,
    screenshot_id: &str,
) -> Done {
    let now = state.now();
    let fail = |status: StatusCode, body: serde_json::Value, remaining: Option<Credits>| Done {
        answer: ScreenshotAnswer {
            status_code: status.as_u16(),
            content_type: "application/json".into(),
            object: None,
            error_body: Some(body.to_string()),
            charged: Credits::ZERO,
            cache_status: "MISS".into(),
            screenshot_id: screenshot_id.to_owned(),
        },
        bytes: None,
        remaining,
        retry_after: None,
        retryable: false,
    };
    let cache_key = format!("{account}\n{}", opts.cache_key());
    if opts.cache() {
        let ttl = opts
            .cache_ttl_secs()
            .unwrap_or(state.settings.screenshots.default_cache_ttl_secs);
        let cache = state.cache.clone();
        let key = cache_key.clone();
        if let Ok(Some(hit)) = web::block(move || cache.get(&key, ttl, now)).await {
            return Done {
                answer: ScreenshotAnswer {
                    status_code: 200,
                    content_type: hit.content_type,
                    object: Some(hit.object),
                    error_body: None,
                    charged: Credits::ZERO,
                    cache_status: "HIT".into(),
                    screenshot_id: screenshot_id.to_owned(),
                },
                bytes: Some(hit.bytes),
                remaining: balance(state, account).await,
                retry_after: None,
                retryable: false,
            };
        }
    }
    let Some(service) = state.capture.clone() else {
        let why = state
            .capture_unavailable
            .clone()
            .unwrap_or_else(|| "no browser is configured".into());
        let mut done = fail(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": format!("Screenshots are unavailable on this server ({why}); nothing was charged"), "code": "BROWSER_UNAVAILABLE" }),
            balance(state, account).await,
        );
        done.retryable = true;
        return done;
    };
    // Forbidden targets are refused before any credit moves.
    if let Err(e) = service.check_target(opts).await {
        let (status, body) = capture_failure(&e);
        return fail(status, body, balance(state, account).await);
    }
    let cost = quote(opts, &state.settings.screenshots);
    let hold = if cost.is_positive() {
        let budget_secs = opts
            .timeout_secs()
            .unwrap_or(state.settings.capture.default_timeout_secs)
            + opts.delay_ms() / 1000
            + 60;
        let ttl_ms = budget_secs.max(state.settings.credits.hold_ttl_secs) as i64 * 1000;
        let op = Operation::Reserve {
            amount: cost,
            ttl_ms,
            spend: Spend::WithinAccountLimit,
            memo: Memo::new("Screenshot captured")
                .source("Screenshot")
                .reference(screenshot_id),
        };
        let id = account.clone();
        let reserved = state
            .blocking(move |s| Ok(s.ledger().apply(&id, None, op, now)?))
            .await;
        match reserved {
            Ok(applied) => match applied.result {
                Ok(Outcome::Hold(h)) => Some(h.id),
                Ok(other) => {
                    let e = ApiError::internal(format!("expected a hold, got {other:?}"));
                    return fail(
                        e.status_code(),
                        json!({ "error": "Internal server error" }),
                        None,
                    );
                }
                Err(rejected) => {
                    let e = ApiError::from(rejected);
                    let body = match &e {
                        ApiError::InsufficientCredits { required, balance } => {
                            json!({ "error": "Insufficient credits", "code": e.code(), "required": required, "balance": balance })
                        }
                        other => json!({ "error": other.to_string(), "code": other.code() }),
                    };
                    return fail(e.status_code(), body, Some(applied.available));
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "reserving a screenshot's cost failed");
                return fail(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "error": "Internal server error; nothing was charged" }),
                    None,
                );
            }
        }
    } else {
        None
    };
    let shot = service.capture(opts).await;
    match shot {
        Ok(shot) => {
            let memo = screenshot_memo(screenshot_id);
            let remaining = settle(state, account, hold, move |hold_id| Operation::Capture {
                hold_id,
                amount: None,
                memo: Some(memo),
            })
            .await;
            let cache = state.cache.clone();
            let bytes = shot.bytes;
            let content_type = shot.content_type.to_owned();
            let store_in_cache = opts.cache();
            let (ct, stored_bytes) = (content_type.clone(), bytes.clone());
            let object = web::block(move || -> std::io::Result<String> {
                let object = cache.put_object(&stored_bytes)?;
                if store_in_cache {
                    cache.put_key(&cache_key, &object, &ct, now)?;
                }
                Ok(object)
            })
            .await
            .ok()
            .and_then(Result::ok);
            Done {
                answer: ScreenshotAnswer {
                    status_code: 200,
                    content_type,
                    object,
                    error_body: None,
                    charged: cost,
                    cache_status: "MISS".into(),
                    screenshot_id: screenshot_id.to_owned(),
                },
                bytes: Some(bytes),
                remaining,
                retry_after: None,
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
            let (status, body) = capture_failure(&e);
            let mut done = fail(status, body, remaining);
            done.retry_after = e.retry_after_secs();
            done.retryable = matches!(e, CaptureError::Busy { .. } | CaptureError::ShutDown);
            done
        }
    }
}

async fn shoot(
    state: &AppState,
    req: &HttpRequest,
    account: AccountId,
    raw: RawCaptureOptions,
) -> HttpResponse {
    let fingerprint = format!(
        "screenshot\n{}",
        serde_json::to_string(&raw).unwrap_or_default()
    );
    let opts = match CaptureOptions::parse(raw) {
        Ok(o) => o,
        Err(e) => {
            return refused(
                ApiError::invalid(e.field(), e.message()),
                balance(state, &account).await,
            )
        }
    };
    let ext = opts.format().extension();
    let key = match idempotency_key(req) {
        Ok(k) => k,
        Err(e) => return refused(e, balance(state, &account).await),
    };
    let screenshot_id = new_id("scr_");
    if let Some(key) = &key {
        let (id, k, fp, sid, now) = (
            account.clone(),
            key.as_str().to_owned(),
            fingerprint.clone(),
            screenshot_id.clone(),
            state.now(),
        );
        let claim = state
            .blocking(move |s| {
                Ok(s.screenshots()
                    .claim_screenshot_request(&id, &k, &fp, &sid, now)?)
            })
            .await;
        match claim {
            Ok(Claim::Fresh) => {}
            Ok(Claim::Replay(answer)) => {
                let bytes = match &answer.object {
                    Some(object) => {
                        let (cache, object) = (state.cache.clone(), object.clone());
                        web::block(move || cache.object(&object)).await.ok().flatten()
                    }
                    None => None,
                };
                if answer.object.is_some() && bytes.is_none() {
                    return refused(
                        ApiError::Conflict {
                            code: "REPLAY_UNAVAILABLE",
                            message: "The first answer to this Idempotency-Key is no longer stored; it was charged once. Use a new key to capture again".into(),
                        },
                        balance(state, &account).await,
                    );
                }
                // A replay charges nothing now; the balance is today's.
                let done = Done {
                    answer: ScreenshotAnswer {
                        charged: Credits::ZERO,
                        ..answer
                    },
                    bytes,
                    remaining: balance(state, &account).await,
                    retry_after: None,
                    retryable: false,
                };
                let mut res = render(&done, ext);
                res.headers_mut().insert(
                    HeaderName::from_static("idempotent-replayed"),
                    HeaderValue::from_static("true"),
                );
                return res;
            }
            Ok(Claim::InProgress) => {
                return refused(
                    ApiError::Conflict {
                        code: "IDEMPOTENCY_IN_PROGRESS",
                        message: "A request with this Idempotency-Key is still running; retry when it has finished".into(),
                    },
                    balance(state, &account).await,
                )
            }
            Ok(Claim::Conflict) => {
                return refused(
                    ApiError::Conflict {
                        code: "IDEMPOTENCY_CONFLICT",
                        message: "This Idempotency-Key was already used with different options; use a new key for a new request".into(),
                    },
                    balance(state, &account).await,
                )
            }
            Err(e) => return refused(e, None),
        }
    }
    let done = work(state, &account, &opts, &screenshot_id).await;
    if let Some(key) = key {
        let (id, k, now) = (account.clone(), key.as_str().to_owned(), state.now());
        let (answer, retryable) = (done.answer.clone(), done.retryable);
        let recorded = state
            .blocking(move |s| {
                if retryable {
                    Ok(s.screenshots().forget_screenshot_request(&id, &k)?)
                } else {
                    Ok(s.screenshots()
                        .finish_screenshot_request(&id, &k, &answer, now)?)
                }
            })
            .await;
        if let Err(e) = recorded {
            tracing::error!(error = %e, "recording an idempotent screenshot answer failed");
        }
    }
    render(&done, ext)
}

/// The capture options, as the GET's query string and as the POST's JSON body. Only the
/// document reads this type; the server parses [`RawCaptureOptions`] (a test keeps the two
/// field lists equal).
///
/// The query string's text limits are in characters and tighter than the body's: the
/// server's limits are in bytes (a character is up to 4), and a request line over 64 KiB
/// (a character percent-encodes to up to 12 bytes) or a head over 128 KiB is refused by the
/// HTTP layer itself. Long documents go in a POST.
#[derive(serde::Serialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ScreenshotOptions {
    /// The page to capture: an http(s) URL of a public address. Required unless `html`.
    #[schema(max_length = 8192)]
    #[param(max_length = 2048)]
    pub url: Option<String>,
    /// An HTML document to capture instead of `url` (at most 1,000,000 bytes).
    #[schema(max_length = 1000000)]
    #[param(max_length = 1000)]
    pub html: Option<String>,
    /// Viewport width in CSS pixels, default 1280.
    #[schema(minimum = 1, maximum = 3840)]
    #[param(minimum = 1, maximum = 3840)]
    pub width: Option<u32>,
    /// Viewport height in CSS pixels, default 800.
    #[schema(minimum = 1, maximum = 10000)]
    #[param(minimum = 1, maximum = 10000)]
    pub height: Option<u32>,
    /// Capture the whole page, default false (not with `selector`).
    pub full_page: Option<bool>,
    /// png (default), jpeg, webp or pdf.
    #[schema(pattern = "^(png|jpeg|jpg|webp|pdf)$")]
    #[param(pattern = "^(png|jpeg|jpg|webp|pdf)$")]
    pub format: Option<String>,
    /// 1 to 100, jpeg and webp only.
    #[schema(minimum = 1, maximum = 100)]
    #[param(minimum = 1, maximum = 100)]
    pub quality: Option<u8>,
    /// 1 to 3, at most two decimals; default 1.
    #[schema(minimum = 1, maximum = 3, multiple_of = 0.01)]
    #[param(minimum = 1, maximum = 3, multiple_of = 0.01)]
    pub device_scale_factor: Option<f64>,
    /// Milliseconds to wait before the capture, at most 10000.
    #[schema(minimum = 0, maximum = 10000)]
    #[param(minimum = 0, maximum = 10000)]
    pub delay: Option<u64>,
    /// A CSS selector to wait for (at most 1024 bytes).
    #[schema(max_length = 1024)]
    #[param(max_length = 256)]
    pub wait_for_selector: Option<String>,
    /// A CSS selector of the one element to capture (at most 1024 bytes; not with pdf).
    #[schema(max_length = 1024)]
    #[param(max_length = 256)]
    pub selector: Option<String>,
    /// Emulate a dark colour scheme, default false.
    pub dark_mode: Option<bool>,
    /// Seconds the capture may take, 1 to 60.
    #[schema(minimum = 1, maximum = 60)]
    #[param(minimum = 1, maximum = 60)]
    pub timeout: Option<u64>,
    /// Answer from the cache when the same capture is there, default true.
    pub cache: Option<bool>,
    /// How old a cached capture may be, in seconds (1 to 2592000).
    #[schema(minimum = 1, maximum = 2592000)]
    #[param(minimum = 1, maximum = 2592000)]
    pub cache_ttl: Option<u64>,
}

/// Takes a screenshot (options in the query string). Charged only when it succeeds and
/// was not served from the cache.
#[utoipa::path(get, path = "/api/v1/screenshot", tag = "screenshots",
    params(ScreenshotOptions, ("Idempotency-Key" = Option<String>, Header, description = "Repeat a capture without paying twice (1 to 255 visible ASCII characters)")),
    responses((status = 200, description = "The image or PDF", content(
            (Vec<u8> = "image/png"), (Vec<u8> = "image/jpeg"), (Vec<u8> = "image/webp"), (Vec<u8> = "application/pdf"))),
        (status = 400, body = crate::wire::ErrorBody), (status = 401, body = crate::wire::ErrorBody),
        (status = 402, body = crate::wire::ErrorBody), (status = 409, body = crate::wire::ErrorBody),
        (status = 422, body = crate::wire::ErrorBody), (status = 502, body = crate::wire::ErrorBody),
        (status = 503, body = crate::wire::ErrorBody), (status = 504, body = crate::wire::ErrorBody)))]
#[get("/api/v1/screenshot")]
pub async fn take_get(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Result<Spender, AuthError>,
    query: web::Query<RawCaptureOptions>,
) -> HttpResponse {
    match who {
        Ok(Spender(who)) => shoot(&state, &req, who.account_id, query.into_inner()).await,
        Err(e) => refused(e, None),
    }
}

/// Takes a screenshot (options as JSON, `url` or `html`).
#[utoipa::path(post, path = "/api/v1/screenshot", tag = "screenshots",
    request_body(content = ScreenshotOptions, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat a capture without paying twice (1 to 255 visible ASCII characters)")),
    responses((status = 200, description = "The image or PDF", content(
            (Vec<u8> = "image/png"), (Vec<u8> = "image/jpeg"), (Vec<u8> = "image/webp"), (Vec<u8> = "application/pdf"))),
        (status = 400, body = crate::wire::ErrorBody), (status = 401, body = crate::wire::ErrorBody),
        (status = 402, body = crate::wire::ErrorBody), (status = 409, body = crate::wire::ErrorBody),
        (status = 422, body = crate::wire::ErrorBody), (status = 502, body = crate::wire::ErrorBody),
        (status = 503, body = crate::wire::ErrorBody), (status = 504, body = crate::wire::ErrorBody)))]
#[post("/api/v1/screenshot")]
pub async fn take_post(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Result<Spender, AuthError>,
    body: web::Bytes,
) -> HttpResponse {
    // Who is asking comes first: a stranger gets 401 whatever the body says.
    let who = match who {
        Ok(Spender(w)) => w,
        Err(e) => return refused(e, None),
    };
    // A JSON body is typed: `"width": "800"` is a wrong type (the query string of a GET
    // carries only text).
    let raw = parse_json::<RawCaptureOptions>(&body).and_then(|raw| {
        raw.check_json_types()
            .map_err(|e| ApiError::invalid(e.field(), e.message()))?;
        Ok(raw)
    });
    match raw {
        Ok(raw) => shoot(&state, &req, who.account_id, raw).await,
        Err(e) => refused(e, balance(&state, &who.account_id).await),
    }
}

/// What a capture would cost.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct QuoteView {
    #[schema(value_type = f64)]
    pub credits: Credits,
}

/// What a screenshot with these options would cost. Charges nothing.
#[utoipa::path(get, path = "/api/v1/screenshot/quote", tag = "screenshots",
    params(ScreenshotOptions),
    responses((status = 200, body = QuoteView), (status = 400, body = crate::wire::ErrorBody), (status = 401, body = crate::wire::ErrorBody)))]
#[get("/api/v1/screenshot/quote")]
pub async fn quote_get(
    state: web::Data<AppState>,
    who: crate::auth::Authed,
    query: web::Query<RawCaptureOptions>,
) -> Result<HttpResponse, ApiError> {
    let opts = CaptureOptions::parse(query.into_inner())
        .map_err(|e| ApiError::invalid(e.field(), e.message()))?;
    let credits = quote(&opts, &state.settings.screenshots);
    let remaining = balance(&state, &who.account_id).await.unwrap_or_default();
    Ok(with_metering(
        HttpResponse::Ok().json(QuoteView { credits }),
        remaining,
        Credits::ZERO,
    ))
}
