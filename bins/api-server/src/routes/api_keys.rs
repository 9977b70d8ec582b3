//! API keys: shown once at creation with their signing secrets, stored only as a hash
//! (the secret as it is: the server checks signed URLs with it, ADR 11), revocable at once.

use actix_web::{delete, get, post, web, HttpResponse};
use ledger_core::Timestamp;

use crate::auth::Authed;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::service::accounts;
use crate::state::AppState;
use crate::wire::{KeyCreated, KeyView, NewKey};

pub use crate::service::accounts::NAME_MAX_CHARS;

/// Creates a key. The `key` and `signingSecret` fields appear only in this answer.
#[utoipa::path(tag = "accounts", request_body = NewKey,
    responses((status = 201, body = KeyCreated), (status = 400, body = crate::wire::ErrorBody), (status = 401, body = crate::wire::ErrorBody)))]
#[post("/api/v1/api-keys")]
pub async fn create(
    state: web::Data<AppState>,
    who: Authed,
    body: JsonBody<NewKey>,
) -> Result<HttpResponse, ApiError> {
    let created = accounts::create_api_key(&state, &who, &body.value.name).await?;
    let stored = created.stored;
    Ok(HttpResponse::Created().json(KeyCreated {
        id: stored.id,
        name: stored.name,
        key: created.key,
        prefix: stored.prefix,
        signing_secret: created.signing_secret,
        created_at: Timestamp::from_millis(stored.created_at_ms),
    }))
}

/// The live keys the caller may see (never the keys themselves): an owner sees every key
/// of the account, a member only their own.
#[utoipa::path(tag = "accounts",
    responses((status = 200, body = [KeyView]), crate::routes::AuthErrors))]
#[get("/api/v1/api-keys")]
pub async fn list(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, ApiError> {
    let keys = accounts::api_keys(&state, &who).await?;
    let view: Vec<KeyView> = keys
        .into_iter()
        .map(|k| KeyView {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            created_at: Timestamp::from_millis(k.created_at_ms),
            last_used_at: k.last_used_at_ms.map(Timestamp::from_millis),
        })
        .collect();
    Ok(HttpResponse::Ok().json(view))
}

/// Revokes a key; it stops working at once. A member may revoke only their own keys
/// (404 for others); an owner any key of the account.
#[utoipa::path(tag = "accounts",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 204, description = "Revoked"), crate::routes::OwnedErrors))]
#[delete("/api/v1/api-keys/{id}")]
pub async fn delete(
    state: web::Data<AppState>,
    who: Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    accounts::revoke_api_key(&state, &who, id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}
