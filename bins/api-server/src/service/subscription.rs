//! Subscriptions, the hard limit, plan changes and overage (seed 002, ADR 9): each flow
//! checks its input, calls `store.plans()` (which calls the core's rules) and maps the
//! refusals to the contract's answers. The handlers in `routes::subscription` only convert.
//!
//! Overage items are written `pending` by the store. With no provider that reports usage
//! (payments provider `demo` or none) nothing will ever report them, so this layer marks
//! them `recorded` ([`record_without_reporter`]): before answering any subscription or
//! overage read of the account, and for every account on each sweep ([`sweep`]). With
//! Polar they stay `pending` for the reporter (a later part).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use ledger_core::plan::{HardLimitRefusal, Plan};
use ledger_core::{AccountId, Credits, Role, SubscriptionStatus, Timestamp};
use ledger_store::{ManagedBy, OverageItem, PlanRefusal, PlanSubscription};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// How many due subscriptions the sweeper rolls per transaction batch.
const SWEEP_BATCH: i64 = 100;

/// A failure of a subscription flow: one of the shared API errors, or an answer with a
/// code of this area (`403 OWNER_ONLY`, `403 FREE_PLAN`, `404 NO_SUBSCRIPTION`...).
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{message}")]
    Coded {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
}

impl SubscriptionError {
    fn coded(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        SubscriptionError::Coded {
            status,
            code,
            message: message.into(),
        }
    }

    fn owner_only() -> Self {
        Self::coded(
            StatusCode::FORBIDDEN,
            "OWNER_ONLY",
            "Only an owner of the account may change billing; ask an owner",
        )
    }

    fn no_subscription() -> Self {
        Self::coded(
            StatusCode::NOT_FOUND,
            "NO_SUBSCRIPTION",
            "The account has no subscription",
        )
    }
}

impl From<ledger_store::StoreError> for SubscriptionError {
    fn from(e: ledger_store::StoreError) -> Self {
        SubscriptionError::Api(ApiError::from(e))
    }
}

impl ResponseError for SubscriptionError {
    fn status_code(&self) -> StatusCode {
        match self {
            SubscriptionError::Api(e) => e.status_code(),
            SubscriptionError::Coded { status, .. } => *status,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            SubscriptionError::Api(e) => e.error_response(),
            SubscriptionError::Coded {
                status,
                code,
                message,
            } => HttpResponse::build(*status).json(json!({ "error": message, "code": code })),
        }
    }
}

type Result<T> = std::result::Result<T, SubscriptionError>;

/// The core's view of a configured plan; unknown: 404 naming the configured ones.
pub fn configured_plan(state: &AppState, plan_id: &str) -> std::result::Result<Plan, ApiError> {
    let id = plan_id.trim();
    let p = state.settings.plan(id).ok_or_else(|| {
        let known: Vec<&str> = state.settings.plans.iter().map(|p| p.id.as_str()).collect();
        ApiError::NotFound(format!(
            "Plan `{id}` not found; configured plans: {}",
            known.join(", ")
        ))
    })?;
    Ok(p.plan())
}

/// Marks the account's pending overage items `recorded` when no provider reports usage
/// (see the module's note). `None`: every account.
pub async fn record_without_reporter(state: &AppState, account: Option<AccountId>) -> Result<()> {
    if reporter_configured(state) {
        return Ok(());
    }
    let now = state.now();
    state
        .blocking(move |s| Ok(s.plans().record_pending(account.as_ref(), now)?))
        .await?;
    Ok(())
}

/// Whether a provider reports overage items (Polar); with demo or none they are recorded.
fn reporter_configured(state: &AppState) -> bool {
    matches!(
        state.settings.payment_provider(),
        Ok(settings::PaymentProvider::Polar)
    )
}

async fn current(state: &AppState, account: &AccountId) -> Result<Option<PlanSubscription>> {
    let (id, now) = (account.clone(), state.now());
    Ok(state
        .blocking(move |s| Ok(s.plans().subscription(&id, now)?))
        .await?)
}

/// `GET /api/v1/subscription`: the subscription and this period's figures (a period that
/// ended is rolled first); none: `404 NO_SUBSCRIPTION`.
pub async fn view(state: &AppState, account: AccountId) -> Result<PlanSubscription> {
    record_without_reporter(state, Some(account.clone())).await?;
    current(state, &account)
        .await?
        .ok_or_else(SubscriptionError::no_subscription)
}

/// Maps a refusal of the store to the contract's answer.
fn refused(refusal: PlanRefusal) -> SubscriptionError {
    let field = |message: String| SubscriptionError::Api(ApiError::invalid("hardLimit", message));
    match refusal {
        PlanRefusal::NoSubscription => SubscriptionError::no_subscription(),
        PlanRefusal::HardLimit(HardLimitRefusal::OwnerOnly) => SubscriptionError::owner_only(),
        PlanRefusal::HardLimit(r @ HardLimitRefusal::FreePlan { .. }) => {
            SubscriptionError::coded(StatusCode::FORBIDDEN, "FREE_PLAN", r.to_string())
        }
        PlanRefusal::HardLimit(r @ HardLimitRefusal::NotInForce) => {
            SubscriptionError::coded(StatusCode::CONFLICT, "SUBSCRIPTION_NOT_ACTIVE", r.to_string())
        }
        r @ PlanRefusal::NotInForce { .. } => {
            SubscriptionError::coded(StatusCode::CONFLICT, "SUBSCRIPTION_NOT_ACTIVE", r.to_string())
        }
        PlanRefusal::HardLimit(r) => field(r.to_string()),
        PlanRefusal::BelowUse { used } => field(format!(
            "hardLimit must be at least {used}, what this period already used: extra may never pass the hard limit"
        )),
    }
}

/// `PUT /api/v1/subscription/hard-limit`: owners of paying plans, between the plan's limit
/// and the maximum, never below this period's use.
pub async fn set_hard_limit(
    state: &AppState,
    account: AccountId,
    role: Role,
    hard_limit: Credits,
) -> Result<PlanSubscription> {
    if !role.manages_billing() {
        return Err(SubscriptionError::owner_only());
    }
    let now = state.now();
    let result = state
        .blocking(move |s| Ok(s.plans().set_hard_limit(&account, role, hard_limit, now)?))
        .await?;
    result.map_err(refused)
}

/// What a change of plan came to.
pub enum Changed {
    /// Applied here, at once.
    Now(PlanSubscription),
    /// A new paid plan is bought through the payment provider: the checkout to complete
    /// (the provider's signed webhooks then start the subscription).
    Checkout(String),
    /// The provider took the change; its webhooks bring the new state.
    Requested(PlanSubscription),
}

/// Asks the provider that manages `sub` to change it to `to` (a paid plan) or, for a free
/// plan, to cancel it at the period's end. False: no provider holds it (demo), so the
/// change applies here.
async fn ask_provider(state: &AppState, sub: &PlanSubscription, to: Option<&Plan>) -> Result<bool> {
    let Some(provider_id) = sub.provider_subscription_id.clone() else {
        return Ok(false);
    };
    let payments = crate::service::accounts::payments(state)?;
    let plan = to.filter(|p| p.paying).map(|p| p.id.clone());
    let asked = state
        .blocking(move |_| {
            match &plan {
                Some(plan) => payments.change_subscription(&provider_id, plan),
                None => payments.cancel_subscription(&provider_id),
            }
            .map_err(crate::service::accounts::payments_error)
        })
        .await?;
    Ok(matches!(asked, payments::ChangeRequested::Provider { .. }))
}

/// `POST /api/v1/subscription/change`: owners only; the change applies at once for an
/// operator-managed subscription in force (seed 002's rules, in the core); a new paid plan
/// is a checkout, and a subscription Polar manages changes through Polar. An account
/// without a subscription in force may take a free plan at once.
pub async fn change(
    state: &AppState,
    account: AccountId,
    role: Role,
    plan_id: &str,
) -> Result<Changed> {
    if !role.manages_billing() {
        return Err(SubscriptionError::owner_only());
    }
    let to = configured_plan(state, plan_id)?;
    let sub = current(state, &account).await?;
    let in_force = sub.as_ref().is_some_and(|s| s.status.stamps_plan());
    if to.paying && !in_force {
        // A new paid plan: a checkout with the provider (Polar, or the demo one).
        let payments = crate::service::accounts::payments(state)?;
        let (id, plan) = (account.clone(), to.id.clone());
        let url = state
            .blocking(move |_| {
                payments
                    .subscription_checkout(&id, &plan)
                    .map_err(crate::service::accounts::payments_error)
            })
            .await?;
        return Ok(Changed::Checkout(url));
    }
    if let Some(current) = sub.as_ref().filter(|s| s.managed_by == ManagedBy::Polar) {
        if ask_provider(state, current, Some(&to)).await? {
            return Ok(Changed::Requested(current.clone()));
        }
    }
    let now = state.now();
    let id = account.clone();
    let result = state
        .blocking(move |s| {
            Ok(if in_force {
                s.plans().change_plan(&id, &to, now)?
            } else {
                Ok(s.plans()
                    .subscribe(&id, &to, SubscriptionStatus::Active, None, now)?)
            })
        })
        .await?;
    let view = result.map_err(refused)?;
    record_without_reporter(state, Some(account)).await?;
    Ok(Changed::Now(view))
}

/// `POST /api/v1/subscription/cancel`: owners only; the extra is billed (written off)
/// first, then the subscription is cancelled.
pub async fn cancel(state: &AppState, account: AccountId, role: Role) -> Result<Changed> {
    if !role.manages_billing() {
        return Err(SubscriptionError::owner_only());
    }
    let sub = current(state, &account).await?;
    let Some(current) = sub else {
        return Err(SubscriptionError::no_subscription());
    };
    if current.managed_by == ManagedBy::Polar && ask_provider(state, &current, None).await? {
        // Polar cancels at the period's end; its webhooks bring the state, and the
        // webhook-receiver's sweep reports any pending overage item first.
        return Ok(Changed::Requested(current));
    }
    let now = state.now();
    let id = account.clone();
    let result = state
        .blocking(move |s| Ok(s.plans().cancel(&id, now)?))
        .await?;
    let view = result.map_err(refused)?;
    record_without_reporter(state, Some(account)).await?;
    Ok(Changed::Now(view))
}

/// `GET /api/v1/subscription/overage`: the billed blocks, newest first.
pub async fn overage(state: &AppState, account: AccountId) -> Result<Vec<OverageItem>> {
    record_without_reporter(state, Some(account.clone())).await?;
    Ok(state
        .blocking(move |s| Ok(s.plans().overage_items(&account)?))
        .await?)
}

/// `PUT /admin/v1/accounts/{id}/subscription`: an operator-managed subscription to a
/// configured plan (its terms snapshotted), `status` default `active`, periods anchored at
/// `current_period_start` (RFC 3339, not in the future) or now.
pub async fn subscribe_by_operator(
    state: &AppState,
    account: AccountId,
    plan_id: &str,
    status: Option<&str>,
    current_period_start: Option<&str>,
) -> std::result::Result<PlanSubscription, ApiError> {
    let plan = configured_plan(state, plan_id)?;
    let status = status.unwrap_or(SubscriptionStatus::Active.as_str());
    let Some(status) = SubscriptionStatus::parse(status) else {
        return Err(ApiError::invalid(
            "status",
            "status must be one of active, inactive, cancelled, past_due",
        ));
    };
    let now = state.now();
    let anchor = current_period_start
        .map(|text| {
            Timestamp::parse_rfc3339(text.trim())
                .filter(|t| *t <= now)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "currentPeriodStart",
                        "currentPeriodStart must be an RFC 3339 instant that is not in the future",
                    )
                })
        })
        .transpose()?;
    let view = state
        .blocking(move |s| Ok(s.plans().subscribe(&account, &plan, status, anchor, now)?))
        .await?;
    if !reporter_configured(state) {
        let id = view.account_id.clone();
        state
            .blocking(move |s| Ok(s.plans().record_pending(Some(&id), now)?))
            .await?;
    }
    Ok(view)
}

/// One pass of the sweeper: starts the period of every subscription whose period ended
/// (so idle accounts get their expiry, write-off and allowance close to the boundary;
/// the lazy roll under the account lock is what makes the rule hold), and records
/// pending items when no provider reports them. Returns how many periods started.
pub fn sweep(
    store: &ledger_store::Store,
    record: bool,
    now: Timestamp,
) -> std::result::Result<usize, ledger_store::StoreError> {
    let started = store.plans().roll_due(now, SWEEP_BATCH)?;
    if record {
        store.plans().record_pending(None, now)?;
    }
    Ok(started)
}

/// Whether the sweeper records pending items itself (no provider reports them).
pub fn sweeper_records(state: &AppState) -> bool {
    !reporter_configured(state)
}
