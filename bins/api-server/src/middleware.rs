//! Request ids, JSON for every error, NUL characters in the URL, security headers.
//!
//! Every answer carries `x-request-id`. Every request is served inside a `request` span
//! carrying its `request_id` (and `account_id` once authenticated), is counted in the
//! metrics by route pattern, method and status, and is logged in one line (`request`:
//! method, route, status, latency_ms, account_id, request_id). A 5xx is also logged with
//! its cause chain ([`ApiError::chain`]).
//! Errors produced by the framework itself (unknown route, wrong method, malformed query
//! string) are turned into the contract's JSON shape (the dashboard's HTML error pages
//! are kept). A NUL (`%00`) anywhere in the path or
//! the query string is a 400 naming the parameter before any handler runs. Every answer
//! carries the security headers of [`security_headers`].

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpResponse, ResponseError};
use std::time::Instant;
use tracing::Instrument;

use crate::error::ApiError;

/// The id of one request.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let id = ledger_store::new_id("req_");
    // Every line logged while the request is served carries its id (the blocking pool's
    // work too: [`crate::blocking`] carries the span over); the account is recorded into
    // the span once the auth extractor knows it.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        account_id = tracing::field::Empty,
    );
    served(req, next, id).instrument(span).await
}

/// [`request_id`] inside the request's span.
async fn served(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    id: String,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let started = Instant::now();
    req.extensions_mut().insert(RequestId(id.clone()));
    let metrics = req
        .app_data::<actix_web::web::Data<crate::AppState>>()
        .map(|s| s.metrics.clone());
    let method = req.method().clone();
    let path = req.path().to_owned();
    let res = match nul_in_url(req.uri()) {
        Some(refusal) => req.into_response(refusal.error_response()),
        None => next.call(req).await?.map_into_boxed_body(),
    };
    let status = res.status();
    // The route's pattern, never the raw path (which carries ids and whatever a client
    // makes up): what routing matched, else the registered route the path fits (a wrong
    // method on it), else `unmatched`.
    let route = res
        .request()
        .match_pattern()
        .or_else(|| crate::routes::route_of(&path).map(|r| r.template.clone()))
        .unwrap_or_else(|| "unmatched".to_owned());
    // `/readyz` answers 503 by design while a part is not ready (it logs why itself).
    if status.is_server_error() && route != "/readyz" {
        let error = res.response().error();
        let api = error.and_then(|e| e.as_error::<ApiError>());
        let cause = match (api, error) {
            (Some(api), _) => Some(api.chain()),
            (None, Some(e)) => Some(format!("{e:?}")),
            (None, None) => None,
        };
        match cause {
            // A target or provider that failed: not our failure.
            Some(cause) if api.is_some_and(ApiError::is_upstream) => {
                tracing::warn!(request_id = %id, %method, %path, status = status.as_u16(), %cause, "upstream failure")
            }
            Some(cause) => {
                tracing::error!(request_id = %id, %method, %path, status = status.as_u16(), %cause, "request failed")
            }
            None => {
                tracing::warn!(request_id = %id, %method, %path, status = status.as_u16(), "upstream failure")
            }
        }
    }
    let account = res
        .request()
        .extensions()
        .get::<crate::auth::AccountOfRequest>()
        .map(|a| a.0.as_str().to_owned());
    let took = started.elapsed();
    if let Some(metrics) = &metrics {
        metrics.http_request(&route, method.as_str(), status.as_u16(), took);
    }
    let latency_ms = (took.as_secs_f64() * 1_000_000.0).round() / 1000.0;
    tracing::info!(
        %method,
        %route,
        status = status.as_u16(),
        latency_ms,
        account_id = account.as_deref(),
        request_id = %id,
        "request"
    );
    // An answer that is already JSON, or a dashboard page (HTML that says what went
    // wrong to a person), is kept as it is.
    let is_answer = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    let mut res = if (status.is_client_error() || status.is_server_error()) && !is_answer {
        let (req, old) = res.into_parts();
        let mut fresh = framework_error(status, &method, &path);
        for (name, value) in old.headers() {
            if name != CONTENT_TYPE && name != actix_web::http::header::CONTENT_LENGTH {
                fresh.headers_mut().insert(name.clone(), value.clone());
            }
        }
        ServiceResponse::new(req, fresh)
    } else {
        res
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-request-id"),
            v,
        );
    }
    Ok(res)
}

fn framework_error(
    status: StatusCode,
    method: &actix_web::http::Method,
    path: &str,
) -> HttpResponse {
    let (message, code) = match status {
        StatusCode::NOT_FOUND => (
            format!("No such endpoint: {method} {path}; see /openapi.json"),
            "NOT_FOUND",
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            format!("{method} is not allowed on {path}; see /openapi.json"),
            "METHOD_NOT_ALLOWED",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "The request body is too large".to_owned(),
            "PAYLOAD_TOO_LARGE",
        ),
        s if s.is_server_error() => (
            "Internal server error; the x-request-id header identifies this failure in our logs"
                .to_owned(),
            "INTERNAL",
        ),
        s => (
            format!(
                "{}: check the request's URL, query string and headers",
                s.canonical_reason().unwrap_or("Bad request")
            ),
            "INVALID_REQUEST",
        ),
    };
    HttpResponse::build(status).json(serde_json::json!({ "error": message, "code": code }))
}

/// A 400 for a NUL character (`%00`) in the path (naming the path parameter) or in the
/// query string (naming the query parameter). PostgreSQL cannot store one, and no value
/// of this API has one, so it is refused alike on both backends.
fn nul_in_url(uri: &actix_web::http::Uri) -> Option<ApiError> {
    // `%00` is the only way a NUL reaches us: the HTTP parser refuses a raw one, and the
    // URL is decoded once (`%2500` is the text `%00`, not a NUL).
    let path = uri.path();
    if path.contains("%00") {
        let field = crate::routes::route_of(path)
            .and_then(|route| {
                path.split('/')
                    .zip(route.params())
                    .find(|(seg, _)| seg.contains("%00"))
                    .and_then(|(_, name)| name.map(str::to_owned))
            })
            .unwrap_or_else(|| "path".to_owned());
        return Some(ApiError::invalid(
            field.clone(),
            format!("`{field}` in the URL path must not contain a NUL character (%00)"),
        ));
    }
    let query = uri.query().unwrap_or("");
    if query.contains("%00") {
        let field = query
            .split('&')
            .find(|pair| pair.contains("%00"))
            .and_then(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (!name.contains("%00") && value.contains("%00")).then(|| decode_name(name))
            })
            .unwrap_or_else(|| "query".to_owned());
        return Some(ApiError::invalid(
            field.clone(),
            format!("`{field}` in the query string must not contain a NUL character (%00)"),
        ));
    }
    None
}

/// Decodes a query-string name (`%XX` escapes, `+` for a space).
fn decode_name(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The headers every answer carries, and `Cache-Control: no-store` where it matters.
///
/// - `X-Content-Type-Options: nosniff`: a browser never second-guesses a content type
///   (a JSON error is never run as script, an image never as HTML).
/// - `Content-Security-Policy: default-src 'none'; frame-ancestors 'none'; base-uri
///   'none'; form-action 'none'` and `X-Frame-Options: DENY`: whatever a browser renders
///   from this service (an error, a PDF it was sent to) may load, run, frame or post
///   nothing, and no site may frame it. The one page, the API reference (`/docs`), sets
///   its own policy, which allows scripts, styles and requests of this origin only.
/// - `Referrer-Policy: no-referrer`: an API has no page whose address a link should pass
///   on, while its URLs can carry what must not leak (capture options, signed-URL
///   signatures); a capture opened in a browser sends no `Referer` to the sites it links.
/// - `Cache-Control: no-store` on every answer that does not set its own: that covers every
///   answer with a secret (a new API key, signup, login, a CSRF token) and all
///   authenticated JSON. An answer that sets the session cookie always gets `no-store`,
///   whatever it set. Captured images keep their own `private, max-age=0`.
///
/// An answer that starts a session also gets the session's `X-CSRF-Token` (ADR 5).
pub async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    use actix_web::http::header;
    let mut res = next.call(req).await?.map_into_boxed_body();
    crate::auth::expose_csrf_token(res.response_mut());
    let sets_session = res
        .response()
        .cookies()
        .any(|c| c.name() == crate::auth::SESSION_COOKIE);
    let h = res.headers_mut();
    // The reference page sets its own (still same-origin only) policy.
    let page_csp = h.get(header::CONTENT_SECURITY_POLICY).cloned();
    // The same list the HTTP parser's own answers get (`http_edge`).
    for (name, value) in http_edge::SECURITY_HEADERS {
        h.insert(
            header::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    if let Some(csp) = page_csp {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    if sets_session || !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(res)
}
