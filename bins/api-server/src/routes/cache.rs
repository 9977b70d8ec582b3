//! The screenshot cache, for operators: its size, entries and hit rate.

use actix_web::{get, web, HttpResponse};

use crate::auth::Admin;
use crate::state::AppState;

/// The disk cache: `{entries, bytes, maxBytes, hits, misses, hitRate}` (hits and misses
/// since start; `hitRate` is `hits / (hits + misses)`, 0 before the first lookup).
#[utoipa::path(tag = "admin",
    responses((status = 200, description = "{entries, bytes, maxBytes, hits, misses, hitRate}"), crate::routes::AuthErrors))]
#[get("/admin/v1/cache")]
pub async fn stats(state: web::Data<AppState>, _: Admin) -> HttpResponse {
    HttpResponse::Ok().json(state.cache.stats())
}
