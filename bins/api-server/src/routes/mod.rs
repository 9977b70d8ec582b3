//! One file per resource. `configure` mounts them all.

pub mod account;
pub mod admin;
pub mod api_keys;
pub mod auth;
pub mod auto_topup;
pub mod credits;
pub mod screenshot;
pub mod system;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, HttpResponse, ResponseError};
use ledger_core::Credits;
use ledger_store::Applied;

use crate::error::ApiError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(system::healthz)
        .service(system::openapi)
        .service(auth::signup)
        .service(auth::login)
        .service(auth::logout)
        .service(api_keys::create)
        .service(api_keys::list)
        .service(api_keys::delete)
        .service(credits::balance)
        .service(credits::packs)
        .service(credits::purchase)
        .service(credits::transactions)
        .service(credits::usage)
        .service(auto_topup::get)
        .service(auto_topup::put)
        .service(screenshot::quote_get)
        .service(screenshot::take_get)
        .service(screenshot::take_post)
        .service(account::account_credits)
        .service(account::v1_credits)
        .service(admin::create_account)
        .service(admin::adjust)
        .service(admin::debit)
        .service(admin::hold)
        .service(admin::capture)
        .service(admin::release)
        .service(admin::refund)
        .service(admin::subscription)
        .service(admin::max_hard_limit)
        .service(admin::verify);
}

/// Adds the metering headers: what is left, and what this request charged.
pub fn with_metering(mut res: HttpResponse, remaining: Credits, charged: Credits) -> HttpResponse {
    let h = res.headers_mut();
    for (name, value) in [
        ("x-credits-remaining", remaining),
        ("x-credits-charged", charged),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    res
}

/// Answers a metered operation: its success through `ok`, a ledger rejection as its
/// error; both with the metering headers. A replay answers as the first time did.
pub fn metered(
    applied: Applied,
    ok: impl FnOnce(ledger_store::Outcome) -> Result<(HttpResponse, Credits), ApiError>,
) -> Result<HttpResponse, ApiError> {
    let remaining = applied.available;
    let mut res = match applied.result {
        Ok(outcome) => {
            let (res, charged) = ok(outcome)?;
            let charged = if applied.replayed {
                Credits::ZERO
            } else {
                charged
            };
            with_metering(res, remaining, charged)
        }
        Err(rejected) => with_metering(
            ApiError::from(rejected).error_response(),
            remaining,
            Credits::ZERO,
        ),
    };
    // A replayed rejection (e.g. a 402) is a replay too.
    if applied.replayed {
        res.headers_mut().insert(
            HeaderName::from_static("idempotent-replayed"),
            HeaderValue::from_static("true"),
        );
    }
    Ok(res)
}
