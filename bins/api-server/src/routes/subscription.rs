//! The subscription (seed 002): the plan, this period's use and extra, the hard limit,
//! plan changes, cancelling and the billed blocks of extra. The flows are
//! [`crate::service::subscription`]; these handlers extract and convert.

use actix_web::{get, post, put, HttpResponse, ResponseError};
use ledger_core::Credits;
use ledger_store::{OverageItem, PlanSubscription};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Authed;
use crate::body::JsonBody;
use crate::routes::{AppData, Reply};
use crate::service::subscription::{self as service, SubscriptionError};

/// A subscription and its current period.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanSubscriptionView {
    pub id: String,
    /// The admin API's answer only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    pub plan_id: String,
    pub plan_name: String,
    /// active, inactive, cancelled or past_due
    pub status: String,
    #[schema(format = DateTime)]
    pub current_period_start: Option<String>,
    #[schema(format = DateTime)]
    pub current_period_end: Option<String>,
    #[schema(value_type = f64)]
    pub plan_limit: Credits,
    #[schema(value_type = f64)]
    pub hard_limit: Credits,
    #[schema(value_type = f64)]
    pub max_hard_limit: Credits,
    /// Credits charged this period, net of refunds.
    #[schema(value_type = f64)]
    pub used: Credits,
    /// The part beyond the allowance and the account's credits.
    #[schema(value_type = f64)]
    pub extra: Credits,
    /// `extra` rounded up to the next whole 1,000: what is billed.
    #[schema(value_type = f64)]
    pub extra_billed: Credits,
    pub extra_charge_cents: i64,
}

impl PlanSubscriptionView {
    pub fn new(s: &PlanSubscription, with_account: bool) -> PlanSubscriptionView {
        PlanSubscriptionView {
            id: s.id.clone(),
            account_id: with_account.then(|| s.account_id.as_str().to_owned()),
            plan_id: s.plan.id.clone(),
            plan_name: s.plan.name.clone(),
            status: s.status.as_str().to_owned(),
            current_period_start: s.period.map(|p| p.start.rfc3339()),
            current_period_end: s.period.map(|p| p.end.rfc3339()),
            plan_limit: s.plan.limit(),
            hard_limit: s.hard_limit,
            max_hard_limit: s.max_hard_limit,
            used: s.used,
            extra: s.extra,
            extra_billed: s.extra_billed(),
            extra_charge_cents: s.charge.get(),
        }
    }
}

/// One billed block of extra (`blocks` -1: a block credited back after a refund).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverageItemView {
    pub id: String,
    #[schema(format = DateTime)]
    pub period_start: String,
    pub blocks: i64,
    /// `blocks` × 1,000: what is billed.
    #[schema(value_type = f64)]
    pub credits: Credits,
    pub amount_cents: i64,
    /// pending, reported, recorded or failed
    pub status: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&OverageItem> for OverageItemView {
    fn from(i: &OverageItem) -> OverageItemView {
        OverageItemView {
            id: i.id.clone(),
            period_start: i.period_start.rfc3339(),
            blocks: i.blocks,
            credits: i.credits,
            amount_cents: i.amount.get(),
            status: i.status.as_str().to_owned(),
            created_at: i.created_at.rfc3339(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HardLimitRequest {
    #[schema(value_type = f64, minimum = 0, maximum = 1e12)]
    pub hard_limit: Credits,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanChangeRequest {
    pub plan_id: String,
}

fn answer(s: &PlanSubscription) -> HttpResponse {
    HttpResponse::Ok().json(PlanSubscriptionView::new(s, false))
}

/// A change or cancellation: applied (200, the subscription), a checkout to complete (202,
/// its URL), or taken by the payment provider (202, the subscription as it stands until
/// the provider's webhooks bring the new state).
fn changed(c: service::Changed) -> HttpResponse {
    match c {
        service::Changed::Now(s) => answer(&s),
        service::Changed::Checkout(checkout_url) => {
            HttpResponse::Accepted().json(ChangeAccepted::Checkout(crate::wire::CheckoutView {
                checkout_url,
            }))
        }
        service::Changed::Requested(s) => HttpResponse::Accepted().json(ChangeAccepted::Requested(
            PlanSubscriptionView::new(&s, false),
        )),
    }
}

/// A change the payment provider carries out: the checkout of a new paid plan, or the
/// subscription as it stands until the provider's webhooks bring the new state.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ChangeAccepted {
    Checkout(crate::wire::CheckoutView),
    Requested(PlanSubscriptionView),
}

/// The answer of a flow: a refusal with a code of this area is answered as it is; a
/// shared error stays an [`ApiError`](crate::error::ApiError) (so a 500 is logged with its cause chain).
fn respond(result: Result<HttpResponse, SubscriptionError>) -> Reply {
    match result {
        Ok(res) => Ok(res),
        Err(SubscriptionError::Api(e)) => Err(e),
        Err(coded) => Ok(coded.error_response()),
    }
}

/// The account's subscription and this period's use; none: 404 `NO_SUBSCRIPTION`.
#[utoipa::path(tag = "subscription",
    responses((status = 200, body = PlanSubscriptionView), (status = 401, body = crate::wire::ErrorBody),
        (status = 404, body = crate::wire::ErrorBody)))]
#[get("/api/v1/subscription")]
pub async fn get(state: AppData, who: Authed) -> Reply {
    respond(
        service::view(&state, who.account_id)
            .await
            .map(|s| answer(&s)),
    )
}

/// Sets the hard limit (owners of paying plans: 403 `OWNER_ONLY` / `FREE_PLAN`); below
/// the plan's limit, above the maximum or below this period's use: 400.
#[utoipa::path(tag = "subscription", request_body = HardLimitRequest,
    responses((status = 200, body = PlanSubscriptionView), (status = 400, body = crate::wire::ErrorBody),
        (status = 401, body = crate::wire::ErrorBody), (status = 403, body = crate::wire::ErrorBody),
        (status = 404, body = crate::wire::ErrorBody), (status = 409, body = crate::wire::ErrorBody)))]
#[put("/api/v1/subscription/hard-limit")]
pub async fn hard_limit(state: AppData, who: Authed, body: JsonBody<HardLimitRequest>) -> Reply {
    let requested = body.value.hard_limit;
    let s = service::set_hard_limit(&state, who.account_id, who.role, requested).await;
    respond(s.map(|s| answer(&s)))
}

/// Upgrades or downgrades (owners only): an upgrade resets the hard limit and starts a new
/// period; a change to a free plan bills the extra at once. A new paid plan is bought
/// through a checkout: 202 with its URL (the provider's webhooks then start the
/// subscription); a subscription Polar manages is changed through Polar: 202 with it as it
/// stands until Polar's webhooks bring the new state.
#[utoipa::path(tag = "subscription", request_body = PlanChangeRequest,
    responses((status = 200, body = PlanSubscriptionView), (status = 202, body = ChangeAccepted),
        (status = 400, body = crate::wire::ErrorBody),
        (status = 401, body = crate::wire::ErrorBody), (status = 403, body = crate::wire::ErrorBody),
        (status = 404, body = crate::wire::ErrorBody), (status = 409, body = crate::wire::ErrorBody)))]
#[post("/api/v1/subscription/change")]
pub async fn change(state: AppData, who: Authed, body: JsonBody<PlanChangeRequest>) -> Reply {
    let s = service::change(&state, who.account_id, who.role, &body.value.plan_id).await;
    respond(s.map(changed))
}

/// Bills unbilled extra, then cancels (owners only). A subscription the payment provider
/// manages is cancelled there, at the period's end: 202, and its webhooks bring the state.
#[utoipa::path(tag = "subscription",
    responses((status = 200, body = PlanSubscriptionView), (status = 202, body = ChangeAccepted),
        (status = 401, body = crate::wire::ErrorBody),
        (status = 403, body = crate::wire::ErrorBody), (status = 404, body = crate::wire::ErrorBody),
        (status = 409, body = crate::wire::ErrorBody)))]
#[post("/api/v1/subscription/cancel")]
pub async fn cancel(state: AppData, who: Authed) -> Reply {
    let s = service::cancel(&state, who.account_id, who.role).await;
    respond(s.map(changed))
}

/// The billed blocks of extra, newest first.
#[utoipa::path(tag = "subscription",
    responses((status = 200, body = [OverageItemView]), (status = 401, body = crate::wire::ErrorBody)))]
#[get("/api/v1/subscription/overage")]
pub async fn overage(state: AppData, who: Authed) -> Reply {
    respond(service::overage(&state, who.account_id).await.map(|items| {
        let views: Vec<OverageItemView> = items.iter().map(OverageItemView::from).collect();
        HttpResponse::Ok().json(views)
    }))
}
