//! The account's balance alert: `credits.low` is sent to its webhook endpoints when the
//! balance falls below `lowBalanceCredits` (once per crossing; docs/WEBHOOKS.md).

use actix_web::{get, put, HttpResponse};
use ledger_core::Credits;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Authed;
use crate::body::JsonBody;
use crate::routes::{AppData, Reply};
use crate::service::notifications;

/// The alert threshold, in credits; `null` (or left out) turns it off.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertsBody {
    #[schema(value_type = Option<f64>)]
    #[serde(default)]
    pub low_balance_credits: Option<Credits>,
}

/// The account's `credits.low` threshold (`null`: off).
#[utoipa::path(tag = "notifications",
    responses((status = 200, body = AlertsBody), crate::routes::AuthErrors))]
#[get("/api/v1/account/alerts")]
pub async fn get(state: AppData, who: Authed) -> Reply {
    let low = notifications::alerts(&state, who.account_id).await?;
    Ok(HttpResponse::Ok().json(AlertsBody {
        low_balance_credits: low,
    }))
}

/// Sets the `credits.low` threshold (`null` turns it off). Setting it re-arms it: the
/// next balance change below it notifies, even when the balance is below it already.
/// A negative or malformed amount: 400.
#[utoipa::path(tag = "notifications", request_body = AlertsBody,
    responses((status = 200, body = AlertsBody), (status = 400, body = crate::wire::ErrorBody),
        (status = 401, body = crate::wire::ErrorBody)))]
#[put("/api/v1/account/alerts")]
pub async fn put(state: AppData, who: Authed, body: JsonBody<AlertsBody>) -> Reply {
    let low =
        notifications::set_alerts(&state, who.account_id, body.value.low_balance_credits).await?;
    Ok(HttpResponse::Ok().json(AlertsBody {
        low_balance_credits: low,
    }))
}
