//! The dashboard: the account holder's web pages, served at `/` by this server over the
//! same services the JSON API uses (ADR 16).
//!
//! Server-rendered HTML ([`html`]), one style sheet and one small script of our own
//! (compiled in, served from `/dashboard/`), nothing loaded from anywhere else. Every page
//! sets its own Content-Security-Policy ([`html::PAGE_CSP`]); the rest of the security
//! headers come from the middleware.
//!
//! Forms and CSRF ([`session`]): every form carries a hidden `csrf` field. Signed in, it is
//! the session's CSRF token (the one the API returns in `X-CSRF-Token`); signed out (log
//! in, sign up) it is a random value also kept in a `SameSite=Strict` cookie (double
//! submit). A post whose token is missing or wrong is answered `403` before anything is
//! read or changed.
//!
//! Pages: `/` (balance, plan, buying packs), `/login`, `/signup` (with `?invite=`),
//! `/keys`, `/history` (transactions, usage chart, CSV export), `/settings` (hard limit,
//! auto top-up, members, webhook endpoints and their deliveries, the low-balance alert), `/try` (a screenshot). They are not API
//! operations and are not in the OpenAPI document.

pub mod account;
pub mod chart;
pub mod history;
pub mod html;
pub mod keys;
pub mod session;
pub mod settings;
pub mod try_shot;
pub mod webhooks;

use actix_web::http::header::{HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY};
use actix_web::http::StatusCode;
use actix_web::{get, web, HttpResponse};

use crate::error::ApiError;

const STYLE: &str = include_str!("app.css");
const SCRIPT: &str = include_str!("app.js");

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    let mut res = HttpResponse::Ok().content_type(content_type).body(body);
    let h = res.headers_mut();
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(html::PAGE_CSP),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// The dashboard's style sheet.
#[get("/dashboard/app.css")]
pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

/// The dashboard's script: copy buttons, and watching the balance after a purchase.
#[get("/dashboard/app.js")]
pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// What a failed call says to the person: the API's own message (a 500 says nothing of
/// its cause, which is logged here).
pub fn message_of(e: &ApiError) -> String {
    let status = actix_web::ResponseError::status_code(e);
    if status.is_server_error() {
        tracing::error!(cause = %e.chain(), status = status.as_u16(), "dashboard request failed");
    }
    e.body()["error"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| "Something went wrong; try again".into())
}

/// The status of a failed call.
pub fn status_of(e: &ApiError) -> StatusCode {
    actix_web::ResponseError::status_code(e)
}

/// A `303 See Other` to `to`.
pub fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, to.to_owned()))
        .finish()
}

/// Mounts every page and the two assets.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(style).service(script);
    account::configure(cfg);
    keys::configure(cfg);
    history::configure(cfg);
    settings::configure(cfg);
    try_shot::configure(cfg);
    webhooks::configure(cfg);
}
