//! Credits (seed 000): balance, packs, purchase, transaction history, usage by month.

use std::collections::HashMap;

use actix_web::{get, post, web, HttpResponse};
use ledger_core::{Page, Retention, YearMonth};

use crate::auth::Authed;
use crate::body::JsonBody;
use crate::checkout::CheckoutFailure;
use crate::error::ApiError;
use crate::state::AppState;
use crate::wire::{
    BalanceView, CheckoutView, PackView, PurchaseRequest, TransactionView, UsageView,
};

pub async fn available(state: &AppState, who: &Authed) -> Result<ledger_core::Credits, ApiError> {
    let id = who.account_id.clone();
    let now = state.now();
    state
        .blocking(move |s| Ok(s.balance(&id, now)?.available))
        .await
}

/// What can be spent now: usable credits minus active holds. Never consumes credits.
#[utoipa::path(tag = "credits",
    responses((status = 200, body = BalanceView), (status = 401, body = crate::wire::ErrorBody)))]
#[get("/api/v1/credits")]
pub async fn balance(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, ApiError> {
    let balance = available(&state, &who).await?;
    Ok(HttpResponse::Ok().json(BalanceView { balance }))
}

/// Active packs, ordered by credits. Public.
#[utoipa::path(tag = "credits", responses((status = 200, body = [PackView])))]
#[get("/api/v1/credits/packs")]
pub async fn packs(state: web::Data<AppState>) -> HttpResponse {
    let view: Vec<PackView> = state
        .catalogue
        .active()
        .into_iter()
        .map(PackView::from)
        .collect();
    HttpResponse::Ok().json(view)
}

/// Starts a checkout for a pack; credits arrive only with the provider's signed webhook.
/// No payment provider configured: 503 `PAYMENTS_NOT_CONFIGURED`, nothing written.
#[utoipa::path(tag = "credits", request_body = PurchaseRequest,
    responses((status = 200, body = CheckoutView), (status = 404, body = crate::wire::ErrorBody),
        (status = 500, body = crate::wire::ErrorBody), (status = 502, body = crate::wire::ErrorBody),
        (status = 503, body = crate::wire::ErrorBody)))]
#[post("/api/v1/credits/purchase")]
pub async fn purchase(
    state: web::Data<AppState>,
    who: Authed,
    body: JsonBody<PurchaseRequest>,
) -> Result<HttpResponse, ApiError> {
    let pack = state
        .catalogue
        .find_active(body.value.pack_id.trim())
        .cloned()
        .ok_or_else(|| ApiError::NotFound("Credit pack not found".into()))?;
    let provider = state.checkout.clone();
    let account = who.account_id.clone();
    let url = web::block(move || provider.create_checkout(&account, &pack)).await?;
    match url {
        Ok(checkout_url) => Ok(HttpResponse::Ok().json(CheckoutView { checkout_url })),
        Err(CheckoutFailure::ProductNotConfigured) => Err(ApiError::Misconfigured(
            "Product not configured for this pack".into(),
        )),
        Err(CheckoutFailure::Provider(why)) => Err(ApiError::BadGateway(format!(
            "The payment provider could not start a checkout ({why}); try again in a moment"
        ))),
        Err(CheckoutFailure::NotConfigured) => Err(not_configured()),
        Err(CheckoutFailure::Internal(why)) => Err(ApiError::internal(why)),
    }
}

/// 503 `PAYMENTS_NOT_CONFIGURED`: no payment provider is configured (the built-in
/// default), so nothing can be bought. The message names the settings to set; retrying
/// helps only once an operator has set them.
pub fn not_configured() -> ApiError {
    ApiError::Unavailable {
        code: "PAYMENTS_NOT_CONFIGURED",
        message: payments::PAYMENTS_NOT_CONFIGURED.into(),
        retry_after_secs: 3600,
    }
}

/// History, newest first. `limit` 1..=100 (default 50), `offset` from 0.
#[utoipa::path(tag = "credits",
    params(("limit" = Option<u32>, Query, description = "1 to 100, default 50"), ("offset" = Option<u64>, Query, description = "default 0")),
    responses((status = 200, body = [TransactionView]), (status = 400, body = crate::wire::ErrorBody), (status = 401, body = crate::wire::ErrorBody)))]
#[get("/api/v1/credits/transactions")]
pub async fn transactions(
    state: web::Data<AppState>,
    who: Authed,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let page = Page::parse(
        query.get("limit").map(String::as_str),
        query.get("offset").map(String::as_str),
    )?;
    let entries = state
        .blocking(move |s| Ok(s.history(&who.account_id, page)?))
        .await?;
    let view: Vec<TransactionView> = entries.iter().map(TransactionView::from).collect();
    Ok(HttpResponse::Ok().json(view))
}

/// Every entry of a calendar month (UTC), newest first; credits and debits with positive
/// amounts. No parameters: this month; `month` alone: that month of this year.
#[utoipa::path(tag = "credits",
    params(("year" = Option<i32>, Query, description = "needs month"), ("month" = Option<u32>, Query, description = "1 to 12")),
    responses((status = 200, body = [UsageView]), (status = 400, body = crate::wire::ErrorBody), (status = 401, body = crate::wire::ErrorBody)))]
#[get("/api/v1/credits/usage")]
pub async fn usage(
    state: web::Data<AppState>,
    who: Authed,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let now = state.now();
    let month = YearMonth::from_query(
        query.get("year").map(String::as_str),
        query.get("month").map(String::as_str),
        now,
    )?;
    let retention =
        Retention::months(state.settings.credits.retention_months).map_err(ApiError::internal)?;
    if !retention.contains(month, now) {
        return Ok(HttpResponse::Ok().json(Vec::<UsageView>::new()));
    }
    let entries = state
        .blocking(move |s| Ok(s.month(&who.account_id, month)?))
        .await?;
    let view: Vec<UsageView> = entries.iter().map(UsageView::from).collect();
    Ok(HttpResponse::Ok().json(view))
}
