//! # api-server
//!
//! The HTTP face of the ledger. `main.rs` only reads the configuration and calls [`run`];
//! everything else lives here so tests build the same app in-process with [`app`].
//!
//! The flows are in [`service`] (testable without HTTP); the handlers in [`routes`] only
//! extract, call a service and convert; [`dashboard`] is the account holder's web pages
//! over the same services; [`error::ApiError`] makes every error status;
//! [`blocking`] is the one bridge to the blocking pool.

pub mod auth;
pub mod blocking;
pub mod body;
pub mod cache;
pub mod checkout;
pub mod dashboard;
pub mod deadline;
pub mod deliverer;
pub mod error;
pub mod middleware;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod server;
pub mod service;
pub mod state;
pub mod throttle;
pub mod wire;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{web, App, HttpRequest, HttpResponse};

use crate::error::ApiError;
pub use crate::server::{init_logging, open_store, run};
pub use crate::state::{system_clock, AppState, Clock};

/// No route took the request: a known path with a method it does not have is `405` with
/// `Allow` (the methods registered on it); anything else is the JSON `404`.
async fn not_found(req: HttpRequest) -> HttpResponse {
    match routes::route_of(req.path()) {
        Some(route) => HttpResponse::from_error(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            path: req.path().to_owned(),
            allow: route
                .methods
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
        None => HttpResponse::from_error(ApiError::NotFound(format!(
            "No such endpoint: {} {}; see /openapi.json",
            req.method(),
            req.path()
        ))),
    }
}

/// The whole application, for the server and for in-process tests.
pub fn app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let limit = state.settings.server.max_body_bytes;
    App::new()
        .app_data(web::Data::new(state))
        .app_data(web::PayloadConfig::new(limit))
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            ApiError::invalid("query", format!("the query string is malformed: {err}")).into()
        }))
        .app_data(web::PathConfig::default().error_handler(|err, _| {
            ApiError::invalid("path", format!("the URL path is malformed: {err}")).into()
        }))
        .configure(routes::configure)
        .configure(dashboard::configure)
        .default_service(web::to(not_found))
        .wrap(actix_web::middleware::from_fn(ratelimit::limit_addresses))
        .wrap(actix_web::middleware::from_fn(middleware::request_id))
        .wrap(actix_web::middleware::from_fn(middleware::security_headers))
}
