//! Health and the OpenAPI document.

use actix_web::{get, web, HttpResponse};
use utoipa::OpenApi;

use crate::error::ApiError;
use crate::state::AppState;

/// 200 once the database answers.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, description = "Ready")))]
#[get("/healthz")]
pub async fn healthz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.blocking(|s| s.ping().map_err(ApiError::from)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ok" })))
}

/// This API, described by OpenAPI 3.1, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200, description = "The OpenAPI document")))]
#[get("/openapi.json")]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::ApiDoc::openapi())
}
