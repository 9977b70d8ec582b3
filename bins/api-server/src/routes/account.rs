//! The balance in the shapes of seeds 001 and 004.

use actix_web::{get, HttpRequest, HttpResponse};

use crate::auth::{csrf_token, Authed, Credential, SESSION_COOKIE};
use crate::error::ApiError;
use crate::routes::credits::{available, balance_answer};
use crate::routes::{AppData, Reply};
use crate::wire::{BalanceView, CreditsV1};

/// `{"balance": 47}` (seed 001).
#[utoipa::path(tag = "credits",
    responses((status = 200, body = BalanceView), crate::routes::AuthErrors))]
#[get("/api/v1/account/credits")]
pub async fn account_credits(state: AppData, who: Authed) -> Reply {
    balance_answer(&state, &who).await
}

/// Credits with subscription status (seed 004). No subscription: `inactive`, no id.
#[utoipa::path(tag = "credits",
    responses((status = 200, body = CreditsV1), crate::routes::OwnedErrors))]
#[get("/v1/credits")]
pub async fn v1_credits(state: AppData, who: Authed) -> Reply {
    let credits = available(&state, &who).await?;
    let sub = crate::service::accounts::subscription(&state, who.account_id).await?;
    let (subscription_status, subscription_id) = match sub {
        Some(s) => (s.status, Some(s.id)),
        None => (ledger_core::SubscriptionStatus::Inactive, None),
    };
    Ok(HttpResponse::Ok().json(CreditsV1 {
        credits,
        subscription_status: subscription_status.as_str().to_owned(),
        subscription_id,
    }))
}

/// A session's CSRF token.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CsrfTokenView {
    /// Send it back in `X-CSRF-Token` with cookie-authenticated calls that are not JSON.
    pub csrf_token: String,
}

/// The CSRF token of the caller's session (the same one login and signup return in
/// `X-CSRF-Token`), for a page that lost it. Only a page of this origin can read the answer:
/// the service grants no CORS.
#[utoipa::path(tag = "accounts",
    security(("session" = [])),
    responses((status = 200, body = CsrfTokenView), (status = 400, body = crate::wire::ErrorBody),
        (status = 401, body = crate::wire::ErrorBody), (status = 404, body = crate::wire::ErrorBody)))]
#[get("/api/v1/account/csrf-token")]
pub async fn csrf(req: HttpRequest, who: Authed) -> Reply {
    let token = match (&who.credential, req.cookie(SESSION_COOKIE)) {
        (Credential::Session(_), Some(cookie)) => csrf_token(cookie.value()),
        _ => return Err(ApiError::invalid(
            "session",
            "only a session (the cookie set by login) has a CSRF token; API-key calls need none",
        )),
    };
    Ok(HttpResponse::Ok().json(CsrfTokenView { csrf_token: token }))
}
