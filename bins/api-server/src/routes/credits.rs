//! Credits (seed 000): balance, packs, purchase, transaction history, usage by month.

use std::collections::HashMap;

use actix_web::{get, post, web, HttpResponse};
use ledger_core::Page;

use crate::auth::{Authed, WithBalance};
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::routes::{AppData, Reply};
use crate::service::accounts;
use crate::state::AppState;
use crate::wire::{
    BalanceView, CheckoutView, PackView, PurchaseRequest, TransactionView, UsageView,
};

/// What `who` can spend now.
pub async fn available(state: &AppState, who: &Authed) -> Result<ledger_core::Credits, ApiError> {
    accounts::available(state, &who.account_id).await
}

/// What can be spent now: usable credits minus active holds. Never consumes credits.
#[utoipa::path(tag = "credits",
    responses((status = 200, body = BalanceView), crate::routes::AuthErrors))]
#[get("/api/v1/credits")]
pub async fn balance(state: AppData, who: WithBalance) -> Reply {
    match who {
        // Read with the key, in the same store call.
        WithBalance(_, Some(spendable)) => {
            Ok(HttpResponse::Ok().json(BalanceView { balance: spendable }))
        }
        WithBalance(who, None) => balance_answer(&state, &who).await,
    }
}

/// `200` with what `who` can spend now (`{"balance": 47}`).
pub async fn balance_answer(state: &AppState, who: &Authed) -> Reply {
    let spendable = available(state, who).await?;
    Ok(HttpResponse::Ok().json(BalanceView { balance: spendable }))
}

/// Active packs, ordered by credits. Public.
#[utoipa::path(tag = "credits", responses((status = 200, body = [PackView])))]
#[get("/api/v1/credits/packs")]
pub async fn packs(state: AppData) -> HttpResponse {
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
    responses((status = 200, body = CheckoutView), (status = 403, body = crate::wire::ErrorBody), (status = 404, body = crate::wire::ErrorBody),
        (status = 500, body = crate::wire::ErrorBody), (status = 502, body = crate::wire::ErrorBody),
        (status = 503, body = crate::wire::ErrorBody)))]
#[post("/api/v1/credits/purchase")]
pub async fn purchase(state: AppData, who: Authed, body: JsonBody<PurchaseRequest>) -> Reply {
    crate::service::members::require_owner(&who)?;
    let checkout_url = accounts::purchase(&state, who.account_id, &body.value.pack_id).await?;
    Ok(HttpResponse::Ok().json(CheckoutView { checkout_url }))
}

pub use crate::service::accounts::payments_not_configured as not_configured;

/// A query string's parameters by name (read with [`param`]).
type QueryParams = web::Query<HashMap<String, String>>;

/// The query parameter `name`, if given.
fn param<'a>(query: &'a QueryParams, name: &str) -> Option<&'a str> {
    query.get(name).map(String::as_str)
}

/// History, newest first. `limit` 1..=100 (default 50), `offset` from 0.
#[utoipa::path(tag = "credits",
    params(("limit" = Option<u32>, Query, description = "1 to 100, default 50"), ("offset" = Option<u64>, Query, description = "default 0")),
    responses((status = 200, body = [TransactionView]), crate::routes::ReadErrors))]
#[get("/api/v1/credits/transactions")]
pub async fn transactions(state: AppData, who: Authed, query: QueryParams) -> Reply {
    let page = Page::parse(param(&query, "limit"), param(&query, "offset"))?;
    let entries = accounts::history(&state, who.account_id, page).await?;
    let view: Vec<TransactionView> = entries.iter().map(TransactionView::from).collect();
    Ok(HttpResponse::Ok().json(view))
}

/// Every entry of a calendar month (UTC), newest first; credits and debits with positive
/// amounts. No parameters: this month; `month` alone: that month of this year.
#[utoipa::path(tag = "credits",
    params(("year" = Option<i32>, Query, description = "needs month"), ("month" = Option<u32>, Query, description = "1 to 12")),
    responses((status = 200, body = [UsageView]), crate::routes::ReadErrors))]
#[get("/api/v1/credits/usage")]
pub async fn usage(state: AppData, who: Authed, query: QueryParams) -> Reply {
    let (year, month) = (param(&query, "year"), param(&query, "month"));
    let entries = accounts::month(&state, who.account_id, year, month).await?;
    let view: Vec<UsageView> = entries.iter().map(UsageView::from).collect();
    Ok(HttpResponse::Ok().json(view))
}
