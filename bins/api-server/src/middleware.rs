//! Request ids and JSON for every error.
//!
//! Every answer carries `x-request-id`. A 5xx is logged with its request id and cause.
//! Errors produced by the framework itself (unknown route, wrong method, malformed query
//! string) are turned into the contract's JSON shape.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpResponse};

/// The id of one request.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let id = ledger_store::new_id("req_");
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let path = req.path().to_owned();
    let res = next.call(req).await?.map_into_boxed_body();
    let status = res.status();
    if status.is_server_error() {
        match res.response().error() {
            Some(e) => {
                tracing::error!(request_id = %id, %method, %path, status = status.as_u16(), cause = ?e, "request failed")
            }
            // An upstream failure answered on purpose (a target or provider that failed).
            None => {
                tracing::warn!(request_id = %id, %method, %path, status = status.as_u16(), "upstream failure")
            }
        }
    }
    let is_json = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let mut res = if (status.is_client_error() || status.is_server_error()) && !is_json {
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
