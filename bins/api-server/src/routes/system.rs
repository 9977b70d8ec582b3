//! Health, readiness, metrics and the OpenAPI document.

use actix_web::{get, HttpRequest, HttpResponse};
use serde_json::json;
use utoipa::OpenApi;

use crate::routes::{AppData, Reply};

/// 200 once the database answers; 503 (with `Retry-After` and the failing check) while
/// it does not, within `database.acquire_timeout_secs`.
#[utoipa::path(tag = "system", responses(
    (status = 200, description = "Ready: every check passed"),
    (status = 503, description = "Not ready: `checks` names the failing one", body = crate::wire::ErrorBody)))]
#[get("/healthz")]
pub async fn healthz(state: AppData) -> Reply {
    crate::service::system::ready(&state).await?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "ok",
        "checks": { "database": { "ok": true } },
    })))
}

/// 200 when the server can do its work: the database answers and holds every migration
/// of this build, and the browser pool can capture (its WebDriver endpoint is ready); 503
/// naming the first failing part (`checks` has each part's state).
#[utoipa::path(tag = "system", responses(
    (status = 200, description = "Ready: `{\"status\":\"ready\",\"checks\":{\"database\":{\"ok\":true},\"migrations\":{..},\"capture\":{..}}}`"),
    (status = 503, description = "Not ready: `error` names the failing part; `checks` has each part's state", body = crate::wire::ErrorBody)))]
#[get("/readyz")]
pub async fn readyz(state: AppData) -> HttpResponse {
    let (status, body) = crate::service::system::readiness(&state).await;
    let mut res = match status {
        200 => HttpResponse::Ok(),
        _ => HttpResponse::ServiceUnavailable(),
    };
    if status != 200 {
        res.insert_header((actix_web::http::header::RETRY_AFTER, "5"));
    }
    res.json(body)
}

/// The Prometheus metrics (OpenMetrics text), with `Authorization: Bearer <metrics.token>`.
/// Without `metrics.token` this path does not exist here (404); `metrics.bind` serves the
/// same text on a listener of its own without a token.
#[utoipa::path(tag = "system", security(("metricsToken" = [])), responses(
    (status = 200, description = "The metrics, as OpenMetrics text", content_type = "application/openmetrics-text", body = String),
    (status = 401, description = "No or a wrong metrics token", body = crate::wire::ErrorBody),
    (status = 404, description = "`metrics.token` is not set: /metrics is not served here", body = crate::wire::ErrorBody),
    (status = 503, description = "The server is shutting down", body = crate::wire::ErrorBody)))]
#[get("/metrics")]
pub async fn metrics(state: AppData, req: HttpRequest) -> Reply {
    let token = state.settings.metrics.token().ok_or_else(|| {
        crate::error::ApiError::NotFound(
            "/metrics is off on this listener: set metrics.token (or metrics.bind for a listener of its own)"
                .into(),
        )
    })?;
    let given = crate::body::header(&req, "authorization")
        .and_then(|v| v.trim().strip_prefix("Bearer "))
        .ok_or(crate::error::ApiError::Unauthorized)?;
    if !crate::auth::secrets_equal(given.trim(), token) {
        return Err(crate::error::ApiError::Unauthorized);
    }
    Ok(metrics_text(&state))
}

/// The metrics text of `state` (the main listener, after its token; `metrics.bind`).
pub fn metrics_text(state: &crate::state::AppState) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(telemetry::CONTENT_TYPE)
        .body(state.metrics.render(state.metrics_sample()))
}

/// This API, described by OpenAPI 3.1, generated from the code.
#[utoipa::path(tag = "system", responses((status = 200, description = "The OpenAPI document")))]
#[get("/openapi.json")]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::ApiDoc::openapi())
}
