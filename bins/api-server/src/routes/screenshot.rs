//! `GET|POST /api/v1/screenshot` and its quote: the flow is
//! [`crate::service::screenshot`]; these handlers only extract and convert.
//!
//! Every answer, errors included, carries `x-credits-charged` and `x-cache` (and
//! `x-credits-remaining` when the balance could be read, `x-request-id` from the
//! middleware); a replay also `idempotent-replayed: true`.

use std::collections::BTreeMap;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use capture::RawCaptureOptions;
use ledger_core::Credits;
use utoipa::openapi::{Content, RefOr, Response, ResponseBuilder};

use crate::auth::{AuthError, Spender, SpenderWithBalance};
use crate::body::{idempotency_key, parse_json};
use crate::error::ApiError;
use crate::routes::{with_metering, AppData, Reply, ScreenshotErrors};
use crate::service::screenshot::{self as service, Shot, ShotRequest};

/// Turns a [`Shot`] into the answer: the image, or the error's own answer; then the
/// metering and cache headers.
fn render(shot: Shot) -> HttpResponse {
    let is_error = shot.answer.is_err();
    let mut res = match shot.answer {
        Ok(image) => HttpResponse::Ok()
            .content_type(image.content_type)
            .insert_header((
                "content-disposition",
                format!("inline; filename=\"{}\"", image.file_name),
            ))
            .insert_header(("cache-control", "private, max-age=0"))
            .body(image.bytes),
        Err(e) => HttpResponse::from_error(e),
    };
    res = match shot.remaining {
        Some(remaining) => with_metering(res, remaining, shot.charged),
        None if is_error => with_metering_charged_only(res),
        None => res,
    };
    let h = res.headers_mut();
    h.insert(
        HeaderName::from_static("x-cache"),
        HeaderValue::from_static(if shot.cache_hit { "HIT" } else { "MISS" }),
    );
    if let Some(id) = shot
        .screenshot_id
        .and_then(|id| HeaderValue::from_str(&id).ok())
    {
        h.insert(HeaderName::from_static("x-screenshot-id"), id);
    }
    if shot.replayed {
        h.insert(
            HeaderName::from_static("idempotent-replayed"),
            HeaderValue::from_static("true"),
        );
    }
    res
}

/// A refusal whose balance is unknown still says that nothing was charged.
fn with_metering_charged_only(mut res: HttpResponse) -> HttpResponse {
    res.headers_mut().insert(
        HeaderName::from_static("x-credits-charged"),
        HeaderValue::from_static("0"),
    );
    res
}

fn shot_request(
    req: &HttpRequest,
    who: crate::auth::Authed,
    options: Result<RawCaptureOptions, ApiError>,
) -> ShotRequest {
    ShotRequest {
        account: who.account_id,
        options,
        key: idempotency_key(req),
    }
}

/// A caller that is not allowed to spend: refused before anything else.
fn unauthorized(e: AuthError) -> HttpResponse {
    render(Shot {
        answer: Err(e.into()),
        remaining: None,
        charged: Credits::ZERO,
        cache_hit: false,
        screenshot_id: None,
        replayed: false,
    })
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
    /// Capture the whole page, default false (not with `selector`). Lazy content is
    /// scrolled into view first; a page taller than 16384 device pixels (16384 /
    /// `deviceScaleFactor` CSS pixels) is refused with 422 `PAGE_TOO_TALL`, never cut.
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
    /// When the page counts as loaded: `load` (default), `domcontentloaded`, or
    /// `networkidle` (no request in flight for 500 ms).
    #[schema(pattern = "^(load|domcontentloaded|networkidle)$")]
    #[param(pattern = "^(load|domcontentloaded|networkidle)$")]
    pub wait_until: Option<String>,
    /// A rectangle of the page to capture, `x,y,width,height` in CSS pixels (integers; x
    /// and y 0 to 16384, width 1 to 3840, height 1 to 10000). Not with `selector`,
    /// `fullPage` or pdf.
    #[schema(pattern = "^[0-9]+,[0-9]+,[0-9]+,[0-9]+$")]
    #[param(pattern = "^[0-9]+,[0-9]+,[0-9]+,[0-9]+$")]
    pub clip: Option<String>,
    /// A transparent page background (png and webp only), default false.
    pub omit_background: Option<bool>,
    /// CSS selectors of elements to hide (at most 50; repeat the parameter in a GET).
    #[schema(max_items = 50)]
    #[param(max_items = 50)]
    pub hide_selectors: Option<Vec<String>>,
    /// A style sheet added to the page before the capture (at most 100,000 bytes).
    #[schema(max_length = 100000)]
    #[param(max_length = 1000)]
    pub css: Option<String>,
    /// JavaScript run in the page before the capture, as a function body (a promise it
    /// returns is awaited; at most 100,000 bytes).
    #[schema(max_length = 100000)]
    #[param(max_length = 1000)]
    pub js: Option<String>,
    /// The User-Agent the browser presents (printable ASCII, at most 512 bytes).
    #[schema(max_length = 512)]
    #[param(max_length = 128)]
    pub user_agent: Option<String>,
    /// Extra request headers, sent to the target's own host and port only, never to
    /// another host (http:// targets only; at most 50). In a POST an object of names to
    /// values; in a GET the parameter repeated, each `Name: value`.
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    #[param(value_type = Option<Vec<String>>, max_items = 50)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Cookies for the target's own host only (at most 50). In a POST an object of names to
    /// values; in a GET the parameter repeated, each `name=value`.
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    #[param(value_type = Option<Vec<String>>, max_items = 50)]
    pub cookies: Option<BTreeMap<String, String>>,
    /// The IANA time zone the page sees, such as `Europe/Paris` or `UTC`.
    #[schema(max_length = 64)]
    #[param(max_length = 64)]
    pub time_zone: Option<String>,
    /// Emulate `prefers-reduced-motion: reduce`, default false.
    pub reduced_motion: Option<bool>,
    /// Refuse requests to the hosts of the ad list shipped with the service and hide
    /// known ad slots, default false.
    pub block_ads: Option<bool>,
    /// Hide the cookie and consent banners of the list shipped with the service, default
    /// false.
    pub block_cookie_banners: Option<bool>,
    /// Skip the cache lookup and capture again (`x-cache: MISS`), refreshing the cached
    /// entry; charged only if it succeeds. Default false.
    pub fresh: Option<bool>,
}

/// The options of a GET, from its query string as sent (`hideSelectors`, `headers` and
/// `cookies` may be repeated).
fn query_options(req: &HttpRequest) -> Result<RawCaptureOptions, ApiError> {
    Ok(RawCaptureOptions::from_query(req.query_string())?)
}

/// What a screenshot answers: the image or PDF (200), or one of [`ScreenshotErrors`].
pub struct ScreenshotAnswers;

impl utoipa::IntoResponses for ScreenshotAnswers {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let bytes = || Content::new(Some(<Vec<u8> as utoipa::PartialSchema>::schema()));
        let image = ["image/png", "image/jpeg", "image/webp", "application/pdf"]
            .into_iter()
            .fold(
                ResponseBuilder::new().description("The image or PDF"),
                |r, ct| r.content(ct, bytes()),
            );
        let mut answers = ScreenshotErrors::responses();
        answers.insert("200".into(), image.build().into());
        answers
    }
}

/// Takes a screenshot (options in the query string). Charged only when it succeeds and
/// was not served from the cache.
#[utoipa::path(tag = "screenshots",
    params(ScreenshotOptions, ("Idempotency-Key" = Option<String>, Header, description = "Repeat a capture without paying twice (1 to 255 visible ASCII characters)")),
    responses(ScreenshotAnswers))]
#[get("/api/v1/screenshot")]
pub async fn take_get(
    state: AppData,
    req: HttpRequest,
    who: Result<SpenderWithBalance, AuthError>,
) -> HttpResponse {
    let SpenderWithBalance(Spender(who), balance) = match who {
        Ok(who) => who,
        Err(e) => return unauthorized(e),
    };
    let request = shot_request(&req, who, query_options(&req));
    render(service::take_with_balance(&state, request, balance).await)
}

/// Takes a screenshot (options as JSON, `url` or `html`).
#[utoipa::path(tag = "screenshots",
    request_body(content = ScreenshotOptions, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat a capture without paying twice (1 to 255 visible ASCII characters)")),
    responses(ScreenshotAnswers))]
#[post("/api/v1/screenshot")]
pub async fn take_post(
    state: AppData,
    req: HttpRequest,
    who: Result<SpenderWithBalance, AuthError>,
    body: web::Bytes,
) -> HttpResponse {
    // Who is asking comes first: a stranger gets 401 whatever the body says.
    let SpenderWithBalance(Spender(who), balance) = match who {
        Ok(who) => who,
        Err(e) => return unauthorized(e),
    };
    // A JSON body is typed: `"width": "800"` is a wrong type (the query string of a GET
    // carries only text).
    let options = parse_json::<RawCaptureOptions>(&body).and_then(|raw| {
        raw.check_json_types()?;
        Ok(raw)
    });
    let request = shot_request(&req, who, options);
    render(service::take_with_balance(&state, request, balance).await)
}

/// What a capture would cost.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct QuoteView {
    #[schema(value_type = f64)]
    pub credits: Credits,
}

/// What a screenshot with these options would cost. Charges nothing.
#[utoipa::path(tag = "screenshots",
    params(ScreenshotOptions),
    responses((status = 200, body = QuoteView), crate::routes::ReadErrors))]
#[get("/api/v1/screenshot/quote")]
pub async fn quote_get(state: AppData, req: HttpRequest, who: crate::auth::Authed) -> Reply {
    let options = query_options(&req)?;
    let (credits, remaining) = service::quote(&state, &who.account_id, options).await?;
    let res = HttpResponse::Ok().json(QuoteView { credits });
    Ok(with_metering(res, remaining, Credits::ZERO))
}
