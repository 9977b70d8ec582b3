//! Auto top-up: buy a pack again with the saved payment method when the balance falls
//! below a threshold (type `auto_topup`, at most one in flight).

use actix_web::{get, put, web, HttpResponse};
use ledger_core::Credits;
use payments::{AutoTopupRequest, PaymentsError};
use serde::Deserialize;

use crate::auth::Authed;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoTopupBody {
    pub enabled: bool,
    #[schema(value_type = f64)]
    pub threshold_credits: Credits,
    pub pack_id: String,
}

/// No payments facade wired in (only tests build such a state): payments are off.
fn payments(state: &AppState) -> Result<std::sync::Arc<payments::Payments>, ApiError> {
    state
        .payments
        .clone()
        .ok_or_else(crate::routes::credits::not_configured)
}

/// No provider: turning auto top-up on answers 503 `PAYMENTS_NOT_CONFIGURED` (as a
/// purchase does), since nothing could pay for a top-up; Polar: 409, it cannot charge a
/// saved payment method. Turning it off, and reading it, always work.
fn map(e: PaymentsError) -> ApiError {
    match e {
        PaymentsError::NotConfigured => crate::routes::credits::not_configured(),
        PaymentsError::UnknownPack { .. } => ApiError::NotFound("Credit pack not found".into()),
        PaymentsError::AutoTopupUnsupported { reason } => ApiError::Conflict {
            code: "AUTO_TOPUP_UNSUPPORTED",
            message: reason,
        },
        PaymentsError::Store(s) => ApiError::from(s),
        other => ApiError::internal(other),
    }
}

/// The account's auto top-up: `{"enabled","thresholdCredits","packId","status","pausedReason"}`.
#[utoipa::path(tag = "credits",
    responses((status = 200, description = "The settings and status"), (status = 401, body = crate::wire::ErrorBody)))]
#[get("/api/v1/credits/auto-topup")]
pub async fn get(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, ApiError> {
    let p = payments(&state)?;
    let view = web::block(move || p.get_auto_topup(&who.account_id))
        .await?
        .map_err(map)?;
    Ok(HttpResponse::Ok().json(view))
}

/// Sets auto top-up. Unknown pack: 404; a provider that cannot charge a saved payment
/// method: 409 saying why; no payment provider at all: 503 `PAYMENTS_NOT_CONFIGURED`.
#[utoipa::path(tag = "credits", request_body = AutoTopupBody,
    responses((status = 200, description = "The settings and status"), (status = 400, body = crate::wire::ErrorBody),
        (status = 404, body = crate::wire::ErrorBody), (status = 409, body = crate::wire::ErrorBody),
        (status = 503, body = crate::wire::ErrorBody)))]
#[put("/api/v1/credits/auto-topup")]
pub async fn put(
    state: web::Data<AppState>,
    who: Authed,
    body: JsonBody<AutoTopupBody>,
) -> Result<HttpResponse, ApiError> {
    if body.value.threshold_credits.is_negative() {
        return Err(ApiError::invalid(
            "thresholdCredits",
            "thresholdCredits must not be negative",
        ));
    }
    let p = payments(&state)?;
    let request = AutoTopupRequest {
        enabled: body.value.enabled,
        threshold_credits: body.value.threshold_credits,
        pack_id: body.value.pack_id.trim().to_owned(),
    };
    let now = state.now();
    let view = web::block(move || p.put_auto_topup(&who.account_id, &request, now))
        .await?
        .map_err(map)?;
    Ok(HttpResponse::Ok().json(view))
}
