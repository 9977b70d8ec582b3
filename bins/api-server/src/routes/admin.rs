//! The operator API (`admin.token`): accounts, adjustments, and metering for trusted
//! services (debits, holds, captures, releases, refunds), subscriptions, verify.
//! Every call that moves credits honours `Idempotency-Key`.

use actix_web::{get, post, put, web, HttpRequest, HttpResponse};
use ledger_core::{AccountId, Credits, EntryId, EntryKind, GrantSource, GrantSpec, HoldId, Memo};
use ledger_store::{NewAccount, Operation, Outcome, Spend, SUBSCRIPTION_STATUSES};

use crate::auth::{hash_password, Admin};
use crate::body::{idempotency, JsonBody};
use crate::error::ApiError;
use crate::routes::auth::{valid_email, valid_password};
use crate::routes::metered;
use crate::state::AppState;
use crate::wire::{
    AccountView, AdjustmentRequest, AdminNewAccount, CaptureRequest, DebitRequest, HoldRequest,
    HoldView, MaxHardLimitRequest, MaxHardLimitView, RefundRequest, SubscriptionRequest,
    SubscriptionView, TransactionView,
};

/// The default maximum hard limit of an account (seed 002).
pub const DEFAULT_MAX_HARD_LIMIT: Credits = Credits::whole(100_000);

fn description(text: &str) -> Result<String, ApiError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > 500 {
        return Err(ApiError::invalid(
            "description",
            "description must be 1 to 500 characters",
        ));
    }
    Ok(text.to_owned())
}

fn positive(field: &str, amount: Credits) -> Result<Credits, ApiError> {
    if amount.is_positive() {
        Ok(amount)
    } else {
        Err(ApiError::invalid(
            field,
            format!("{field} must be greater than zero"),
        ))
    }
}

async fn apply(
    state: &AppState,
    req: &HttpRequest,
    raw: &[u8],
    account: AccountId,
    operation: Operation,
) -> Result<ledger_store::Applied, ApiError> {
    let idem = idempotency(req, raw)?;
    let now = state.now();
    state
        .blocking(move |s| Ok(s.apply(&account, idem.as_ref(), operation, now)?))
        .await
}

/// Applies an operation that writes one entry, answered `201` with that entry.
async fn created_entry(
    state: &AppState,
    req: &HttpRequest,
    raw: &[u8],
    account: String,
    operation: Operation,
) -> Result<HttpResponse, ApiError> {
    let applied = apply(state, req, raw, AccountId::new(account), operation).await?;
    metered(applied, |o| {
        entry_response(actix_web::http::StatusCode::CREATED, o)
    })
}

fn entry_response(
    status: actix_web::http::StatusCode,
    outcome: Outcome,
) -> Result<(HttpResponse, Credits), ApiError> {
    match outcome {
        Outcome::Entry(e) => {
            let charged = if e.kind == EntryKind::Usage {
                -e.amount
            } else {
                Credits::ZERO
            };
            Ok((
                HttpResponse::build(status).json(TransactionView::from(&e)),
                charged,
            ))
        }
        other => Err(ApiError::internal(format!(
            "expected an entry, got {other:?}"
        ))),
    }
}

/// Creates an account (the signup bonus applies).
#[utoipa::path(tag = "admin", request_body = AdminNewAccount,
    security(("admin" = [])),
    responses((status = 201, body = AccountView), (status = 400, body = crate::wire::ErrorBody), (status = 401, body = crate::wire::ErrorBody), (status = 409, body = crate::wire::ErrorBody)))]
#[post("/admin/v1/accounts")]
pub async fn create_account(
    state: web::Data<AppState>,
    _: Admin,
    body: JsonBody<AdminNewAccount>,
) -> Result<HttpResponse, ApiError> {
    let email = body.value.email.as_deref().map(valid_email).transpose()?;
    let password = body.value.password.clone();
    if let Some(p) = &password {
        valid_password(p)?;
    }
    let bonus = state.settings.credits.signup_bonus;
    let now = state.now();
    let (account, balance) = state
        .blocking(move |s| {
            let password_hash = password.as_deref().map(hash_password).transpose()?;
            Ok(s.create_account(
                NewAccount {
                    email,
                    password_hash,
                    signup_bonus: bonus,
                },
                now,
            )?)
        })
        .await?;
    Ok(HttpResponse::Created().json(AccountView {
        account_id: account.id.into_string(),
        email: account.email,
        balance,
    }))
}

/// Grants (positive) or takes away (negative, never below zero) credits: an `adjustment`.
#[utoipa::path(tag = "admin", request_body = AdjustmentRequest,
    security(("admin" = [])), params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = TransactionView), (status = 400, body = crate::wire::ErrorBody), (status = 402, body = crate::wire::ErrorBody), (status = 404, body = crate::wire::ErrorBody), (status = 409, body = crate::wire::ErrorBody)))]
#[post("/admin/v1/accounts/{id}/credits")]
pub async fn adjust(
    state: web::Data<AppState>,
    _: Admin,
    req: HttpRequest,
    id: web::Path<String>,
    body: JsonBody<AdjustmentRequest>,
) -> Result<HttpResponse, ApiError> {
    let memo = Memo::new(description(&body.value.description)?);
    let amount = body.value.amount;
    let operation = if amount.is_positive() {
        Operation::Credit {
            spec: GrantSpec::new(GrantSource::Adjustment, amount),
            memo,
        }
    } else if amount.is_negative() {
        Operation::Debit {
            kind: EntryKind::Adjustment,
            amount: -amount,
            spend: Spend::Strict,
            memo,
        }
    } else {
        return Err(ApiError::invalid("amount", "amount must not be zero"));
    };
    created_entry(&state, &req, &body.raw, id.into_inner(), operation).await
}

/// Charges usage at once; 402 when not covered.
#[utoipa::path(tag = "admin", request_body = DebitRequest,
    security(("admin" = [])), params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = TransactionView), (status = 400, body = crate::wire::ErrorBody), (status = 402, body = crate::wire::ErrorBody), (status = 404, body = crate::wire::ErrorBody), (status = 409, body = crate::wire::ErrorBody)))]
#[post("/admin/v1/accounts/{id}/debits")]
pub async fn debit(
    state: web::Data<AppState>,
    _: Admin,
    req: HttpRequest,
    id: web::Path<String>,
    body: JsonBody<DebitRequest>,
) -> Result<HttpResponse, ApiError> {
    let mut memo = Memo::new(description(&body.value.description)?);
    memo.reference_id = body.value.reference_id.clone();
    let operation = Operation::Debit {
        kind: EntryKind::Usage,
        amount: positive("amount", body.value.amount)?,
        spend: Spend::WithinAccountLimit,
        memo,
    };
    created_entry(&state, &req, &body.raw, id.into_inner(), operation).await
}

/// Reserves credits for work in progress; 402 when not covered.
#[utoipa::path(tag = "admin", request_body = HoldRequest,
    security(("admin" = [])), params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = HoldView), (status = 400, body = crate::wire::ErrorBody), (status = 402, body = crate::wire::ErrorBody), (status = 404, body = crate::wire::ErrorBody), (status = 409, body = crate::wire::ErrorBody)))]
#[post("/admin/v1/accounts/{id}/holds")]
pub async fn hold(
    state: web::Data<AppState>,
    _: Admin,
    req: HttpRequest,
    id: web::Path<String>,
    body: JsonBody<HoldRequest>,
) -> Result<HttpResponse, ApiError> {
    let ttl = body
        .value
        .ttl_seconds
        .unwrap_or(state.settings.credits.hold_ttl_secs);
    if !(1..=86_400).contains(&ttl) {
        return Err(ApiError::invalid(
            "ttlSeconds",
            "ttlSeconds must be from 1 to 86400",
        ));
    }
    let mut memo = Memo::new(description(&body.value.description)?);
    memo.reference_id = body.value.reference_id.clone();
    let operation = Operation::Reserve {
        amount: positive("amount", body.value.amount)?,
        ttl_ms: ttl as i64 * 1000,
        spend: Spend::WithinAccountLimit,
        memo,
    };
    let applied = apply(
        &state,
        &req,
        &body.raw,
        AccountId::new(id.into_inner()),
        operation,
    )
    .await?;
    metered(applied, |o| match o {
        Outcome::Hold(h) => Ok((
            HttpResponse::Created().json(HoldView::new(&h, None)),
            Credits::ZERO,
        )),
        other => Err(ApiError::internal(format!(
            "expected a hold, got {other:?}"
        ))),
    })
}

async fn settle(
    state: &AppState,
    req: &HttpRequest,
    raw: &[u8],
    hold_id: HoldId,
    operation: Operation,
) -> Result<HttpResponse, ApiError> {
    let lookup = hold_id.clone();
    let account = state
        .blocking(move |s| Ok(s.hold_account(&lookup)?))
        .await?;
    let applied = apply(state, req, raw, account, operation).await?;
    let settled = state.blocking(move |s| Ok(s.hold(&hold_id)?)).await?;
    let settled = settled.ok_or_else(|| ApiError::internal("a settled hold vanished"))?;
    metered(applied, |o| {
        let (transaction, charged) = match &o {
            Outcome::Entry(e) => (Some(TransactionView::from(e)), -e.amount),
            _ => (None, Credits::ZERO),
        };
        Ok((
            HttpResponse::Ok().json(HoldView::new(&settled, transaction)),
            charged,
        ))
    })
}

/// Charges all of a hold, or part (the rest returns); 409 when settled or expired.
#[utoipa::path(tag = "admin", request_body = CaptureRequest,
    security(("admin" = [])), params(("holdId" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = HoldView), (status = 400, body = crate::wire::ErrorBody), (status = 404, body = crate::wire::ErrorBody), (status = 409, body = crate::wire::ErrorBody)))]
#[post("/admin/v1/holds/{holdId}/capture")]
pub async fn capture(
    state: web::Data<AppState>,
    _: Admin,
    req: HttpRequest,
    hold_id: web::Path<String>,
    body: JsonBody<CaptureRequest>,
) -> Result<HttpResponse, ApiError> {
    let amount = body
        .value
        .amount
        .map(|a| positive("amount", a))
        .transpose()?;
    let hold_id = HoldId::new(hold_id.into_inner());
    let operation = Operation::Capture {
        hold_id: hold_id.clone(),
        amount,
        memo: None,
    };
    settle(&state, &req, &body.raw, hold_id, operation).await
}

/// Ends a hold with nothing charged; 409 when settled or expired.
#[utoipa::path(tag = "admin",
    security(("admin" = [])), params(("holdId" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = HoldView), (status = 404, body = crate::wire::ErrorBody), (status = 409, body = crate::wire::ErrorBody)))]
#[post("/admin/v1/holds/{holdId}/release")]
pub async fn release(
    state: web::Data<AppState>,
    _: Admin,
    req: HttpRequest,
    hold_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hold_id = HoldId::new(hold_id.into_inner());
    let operation = Operation::Release {
        hold_id: hold_id.clone(),
    };
    settle(&state, &req, b"", hold_id, operation).await
}

/// Gives back all or part of a usage charge; 409 beyond what was charged.
#[utoipa::path(tag = "admin", request_body = RefundRequest,
    security(("admin" = [])), params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = TransactionView), (status = 400, body = crate::wire::ErrorBody), (status = 404, body = crate::wire::ErrorBody), (status = 409, body = crate::wire::ErrorBody)))]
#[post("/admin/v1/accounts/{id}/refunds")]
pub async fn refund(
    state: web::Data<AppState>,
    _: Admin,
    req: HttpRequest,
    id: web::Path<String>,
    body: JsonBody<RefundRequest>,
) -> Result<HttpResponse, ApiError> {
    let amount = body
        .value
        .amount
        .map(|a| positive("amount", a))
        .transpose()?;
    let memo = Memo::new(match &body.value.description {
        Some(d) => description(d)?,
        None => "Refund for failed work".to_owned(),
    })
    .reference(body.value.transaction_id.clone());
    let operation = Operation::Refund {
        entry_id: EntryId::new(body.value.transaction_id.clone()),
        amount,
        memo,
    };
    created_entry(&state, &req, &body.raw, id.into_inner(), operation).await
}

async fn subscription_view(
    state: &AppState,
    sub: ledger_store::Subscription,
) -> Result<SubscriptionView, ApiError> {
    let plan = state.settings.plan(&sub.plan_id);
    let account = AccountId::new(sub.account_id.clone());
    let max = state
        .blocking(move |s| Ok(s.max_hard_limit(&account)?))
        .await?;
    Ok(SubscriptionView {
        id: sub.id,
        account_id: sub.account_id,
        plan_name: plan.map_or_else(|| sub.plan_id.clone(), |p| p.name.clone()),
        plan_limit: plan.map_or(Credits::ZERO, |p| p.monthly_credits),
        plan_id: sub.plan_id,
        status: sub.status,
        max_hard_limit: max.unwrap_or(DEFAULT_MAX_HARD_LIMIT),
    })
}

/// Subscribes the account to a configured plan (or changes plan or status).
#[utoipa::path(tag = "admin", request_body = SubscriptionRequest,
    security(("admin" = [])), params(("id" = String, Path)),
    responses((status = 200, body = SubscriptionView), (status = 400, body = crate::wire::ErrorBody), (status = 404, body = crate::wire::ErrorBody)))]
#[put("/admin/v1/accounts/{id}/subscription")]
pub async fn subscription(
    state: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
    body: JsonBody<SubscriptionRequest>,
) -> Result<HttpResponse, ApiError> {
    let plan = state
        .settings
        .plan(body.value.plan_id.trim())
        .cloned()
        .ok_or_else(|| {
            let known: Vec<&str> = state.settings.plans.iter().map(|p| p.id.as_str()).collect();
            ApiError::NotFound(format!(
                "Plan `{}` not found; configured plans: {}",
                body.value.plan_id,
                known.join(", ")
            ))
        })?;
    let status = body.value.status.clone().unwrap_or_else(|| "active".into());
    if !SUBSCRIPTION_STATUSES.contains(&status.as_str()) {
        return Err(ApiError::invalid(
            "status",
            "status must be one of active, inactive, cancelled, past_due",
        ));
    }
    let account = AccountId::new(id.into_inner());
    let now = state.now();
    let sub = state
        .blocking(move |s| Ok(s.put_subscription(&account, &plan.id, &plan.name, &status, now)?))
        .await?;
    Ok(HttpResponse::Ok().json(subscription_view(&state, sub).await?))
}

/// Raises (or lowers) how high the account owner may set the hard limit.
#[utoipa::path(tag = "admin", request_body = MaxHardLimitRequest,
    security(("admin" = [])), params(("id" = String, Path)),
    responses((status = 200, body = MaxHardLimitView), (status = 400, body = crate::wire::ErrorBody), (status = 404, body = crate::wire::ErrorBody)))]
#[put("/admin/v1/accounts/{id}/max-hard-limit")]
pub async fn max_hard_limit(
    state: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
    body: JsonBody<MaxHardLimitRequest>,
) -> Result<HttpResponse, ApiError> {
    let limit = positive("maxHardLimit", body.value.max_hard_limit)?;
    let account = AccountId::new(id.into_inner());
    let now = state.now();
    let shown = account.clone();
    state
        .blocking(move |s| Ok(s.set_max_hard_limit(&account, limit, now)?))
        .await?;
    Ok(HttpResponse::Ok().json(MaxHardLimitView {
        account_id: shown.into_string(),
        max_hard_limit: limit,
    }))
}

/// Checks every ledger invariant over the whole database.
#[utoipa::path(tag = "admin", security(("admin" = [])),
    responses((status = 200, description = "{ok, accounts, entries, violations}"), (status = 401, body = crate::wire::ErrorBody)))]
#[get("/admin/v1/verify")]
pub async fn verify(state: web::Data<AppState>, _: Admin) -> Result<HttpResponse, ApiError> {
    let report = state.blocking(|s| Ok(s.verify()?)).await?;
    Ok(HttpResponse::Ok().json(report))
}
