//! Auto top-up: buy a pack again with the saved payment method when the balance falls
//! below a threshold (type `auto_topup`, at most one in flight).

use actix_web::{get, put, HttpResponse};
use ledger_core::Credits;
use payments::AutoTopupRequest;
use serde::Deserialize;

use crate::auth::Authed;
use crate::body::JsonBody;
use crate::routes::{AppData, Reply};
use crate::service::accounts;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoTopupBody {
    pub enabled: bool,
    #[schema(value_type = f64)]
    pub threshold_credits: Credits,
    pub pack_id: String,
}

/// The account's auto top-up: `{"enabled","thresholdCredits","packId","status","pausedReason"}`.
#[utoipa::path(tag = "credits",
    responses((status = 200, description = "The settings and status"), crate::routes::AuthErrors))]
#[get("/api/v1/credits/auto-topup")]
pub async fn get(state: AppData, who: Authed) -> Reply {
    let view = accounts::auto_topup(&state, who.account_id).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Sets auto top-up. Unknown pack: 404; a provider that cannot charge a saved payment
/// method: 409 saying why; no payment provider at all: 503 `PAYMENTS_NOT_CONFIGURED`.
#[utoipa::path(tag = "credits", request_body = AutoTopupBody,
    responses((status = 200, description = "The settings and status"), (status = 400, body = crate::wire::ErrorBody),
        (status = 403, body = crate::wire::ErrorBody), (status = 404, body = crate::wire::ErrorBody), (status = 409, body = crate::wire::ErrorBody),
        (status = 503, body = crate::wire::ErrorBody)))]
#[put("/api/v1/credits/auto-topup")]
pub async fn put(state: AppData, who: Authed, body: JsonBody<AutoTopupBody>) -> Reply {
    crate::service::members::require_owner(&who)?;
    let request = AutoTopupRequest {
        enabled: body.value.enabled,
        threshold_credits: body.value.threshold_credits,
        pack_id: body.value.pack_id.trim().to_owned(),
    };
    let view = accounts::set_auto_topup(&state, who.account_id, request).await?;
    Ok(HttpResponse::Ok().json(view))
}
