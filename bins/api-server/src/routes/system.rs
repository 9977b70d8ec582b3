//! Health and the OpenAPI document.

use actix_web::{get, HttpResponse};
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

/// This API, described by OpenAPI 3.1, generated from the code.
#[utoipa::path(tag = "system", responses((status = 200, description = "The OpenAPI document")))]
#[get("/openapi.json")]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::ApiDoc::openapi())
}
