//! One file per resource. `configure` mounts them all.

pub mod account;
pub mod admin;
pub mod alerts;
pub mod api_keys;
pub mod auth;
pub mod auto_topup;
pub mod cache;
pub mod credits;
pub mod docs;
pub mod members;
pub mod screenshot;
pub mod subscription;
pub mod system;
pub mod webhooks;

use actix_web::dev::ResourceDef;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpResponse, ResponseError};
use ledger_core::Credits;
use ledger_store::Applied;

use crate::error::ApiError;
use crate::state::AppState;

/// What every handler is handed to reach the application (`state: AppData`).
pub type AppData = web::Data<AppState>;

/// What a handler answers: a response, or the error that becomes one.
pub type Reply = Result<HttpResponse, ApiError>;

/// Declares every route once. Each handler's method and path are written once, in its
/// actix attribute (`#[get("/healthz")]`); its `#[utoipa::path]` reads them from there
/// (no `path =` of its own), so the document cannot drift from what is served. From this
/// one list of handlers come the actix registration ([`configure`]), the OpenAPI paths
/// ([`documented`]) and the methods each path allows ([`table`], for `405` with `Allow`).
macro_rules! routes {
    ($($module:ident :: $handler:ident),* $(,)?) => {
        /// Mounts every API route, and the reference page ([`docs`]).
        pub fn configure(cfg: &mut web::ServiceConfig) {
            $( cfg.service($module::$handler); )*
            docs::configure(cfg);
        }

        /// The OpenAPI paths of every registered route.
        pub fn documented() -> utoipa::openapi::Paths {
            utoipa::openapi::path::PathsBuilder::new()
                $( .path_from::<$module::$handler>() )*
                .build()
        }

        fn registered() -> Vec<(String, Vec<utoipa::openapi::path::HttpMethod>)> {
            vec![ $( (
                <$module::$handler as utoipa::Path>::path(),
                <$module::$handler as utoipa::Path>::methods(),
            ) ),* ]
        }
    };
}

/// Declares types that list the error answers of several operations, for their
/// `#[utoipa::path(responses(..))]`: each status is the contract's JSON error
/// (`ErrorBody`), as `(status = N, body = ErrorBody)` would document it.
macro_rules! error_answers {
    ($($(#[$doc:meta])* $name:ident = [$($status:literal),+];)+) => {$(
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                use utoipa::openapi::{Content, Ref, ResponseBuilder};
                [$($status),+]
                    .into_iter()
                    .map(|status: u16| {
                        let body = Content::new(Some(Ref::from_schema_name("ErrorBody")));
                        let answer = ResponseBuilder::new().content("application/json", body);
                        (status.to_string(), answer.into())
                    })
                    .collect()
            }
        }
    )+};
}

error_answers! {
    /// An admin write to an account's credits: bad input, not covered, no such account,
    /// an idempotency or state conflict.
    CreditWriteErrors = [400, 402, 404, 409];
    /// A screenshot: bad input, credentials, not covered, an idempotency conflict, a page
    /// that cannot be captured, and the browser's failures (down, unavailable, too slow).
    ScreenshotErrors = [400, 401, 402, 409, 422, 502, 503, 504];
    /// A read: bad parameters, credentials.
    ReadErrors = [400, 401];
    /// Credentials: missing, wrong or revoked.
    AuthErrors = [401];
    /// Credentials, or no such thing of the caller's.
    OwnedErrors = [401, 404];
    /// An operator's setting on an account: bad input, no such account.
    AccountSettingErrors = [400, 404];
    /// An operator settling a hold or refunding a charge: bad input, no such hold or
    /// transaction, a state conflict.
    SettleErrors = [400, 404, 409];
}

routes! {
    system::healthz,
    system::readyz,
    system::metrics,
    system::openapi,
    auth::signup,
    auth::login,
    auth::logout,
    api_keys::create,
    api_keys::list,
    api_keys::delete,
    members::invite,
    members::list,
    members::remove,
    account::csrf,
    credits::balance,
    credits::packs,
    credits::purchase,
    credits::transactions,
    credits::usage,
    auto_topup::get,
    auto_topup::put,
    webhooks::create,
    webhooks::list,
    webhooks::delete,
    webhooks::deliveries,
    alerts::get,
    alerts::put,
    screenshot::quote_get,
    screenshot::take_get,
    screenshot::take_post,
    account::account_credits,
    account::v1_credits,
    subscription::get,
    subscription::hard_limit,
    subscription::change,
    subscription::cancel,
    subscription::overage,
    admin::create_account,
    admin::adjust,
    admin::debit,
    admin::hold,
    admin::capture,
    admin::release,
    admin::refund,
    admin::subscription,
    admin::max_hard_limit,
    admin::verify,
    cache::stats,
}

/// One path of the API and the methods registered on it.
pub struct Route {
    /// The path template (`/api/v1/api-keys/{id}`).
    pub template: String,
    pub def: ResourceDef,
    pub methods: Vec<Method>,
}

impl Route {
    /// The name of the parameter at each segment of the template (`None` for a literal).
    pub fn params(&self) -> impl Iterator<Item = Option<&str>> {
        self.template
            .split('/')
            .map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
    }
}

/// Every path with its methods, from the registration above.
pub fn table() -> &'static [Route] {
    static TABLE: std::sync::OnceLock<Vec<Route>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut routes: Vec<Route> = Vec::new();
        for (template, methods) in registered() {
            let methods = methods.iter().filter_map(|m| {
                serde_json::to_value(m)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_ascii_uppercase))
                    .and_then(|m| m.parse::<Method>().ok())
            });
            match routes.iter_mut().find(|r| r.template == template) {
                Some(r) => r.methods.extend(methods),
                None => routes.push(Route {
                    def: ResourceDef::new(template.as_str()),
                    template,
                    methods: methods.collect(),
                }),
            }
        }
        routes
    })
}

/// The route whose template matches `path`, if any.
pub fn route_of(path: &str) -> Option<&'static Route> {
    table().iter().find(|r| r.def.is_match(path))
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
) -> Reply {
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
