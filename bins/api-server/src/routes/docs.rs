//! `GET /docs`: the interactive API reference, a page of our own that reads
//! `/openapi.json` and can send each operation. Its script and style sheet are files this
//! server serves (compiled in), so the page loads nothing from anywhere else and its
//! Content-Security-Policy allows only this origin. Not an API operation: it is not in the
//! OpenAPI document.

use actix_web::http::header::{HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY};
use actix_web::{get, web, HttpResponse};

/// What the page may load and do: scripts, styles and requests of this origin only;
/// images of this origin and the `blob:` URLs the page makes of captured images.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'none'";

const PAGE: &str = include_str!("../docs/reference.html");
const SCRIPT: &str = include_str!("../docs/reference.js");
const STYLE: &str = include_str!("../docs/reference.css");

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    let mut res = HttpResponse::Ok().content_type(content_type).body(body);
    let h = res.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// The reference page.
#[get("/docs")]
pub async fn page() -> HttpResponse {
    asset("text/html; charset=utf-8", PAGE)
}

/// Its script.
#[get("/docs/reference.js")]
pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// Its style sheet.
#[get("/docs/reference.css")]
pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

/// Mounts the page and its assets.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(page).service(script).service(style);
}
