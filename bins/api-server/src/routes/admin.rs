//! The operator API (`admin.token`): accounts, adjustments, and metering for trusted
//! services (debits, holds, captures, releases, refunds), subscriptions, verify.
//! Every call that moves credits honours `Idempotency-Key`. The flows are
//! [`crate::service::metering`]; these handlers extract and convert.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{get, post, put, web, FromRequest, HttpRequest, HttpResponse};
use ledger_core::{AccountId, Credits, EntryKind, HoldId};
use ledger_store::{Applied, Operation, Outcome};

use utoipa::openapi::path::{Parameter, ParameterIn};

use crate::auth::Admin;
use crate::body::{idempotency, JsonBody};
use crate::error::ApiError;
use crate::routes::{
    metered, AccountSettingErrors, AppData, CreditWriteErrors, Reply, SettleErrors,
};
use crate::service::metering::{self as service, Settlement};
use crate::state::AppState;
use crate::wire::{
    AccountView, AdjustmentRequest, AdminNewAccount, CaptureRequest, DebitRequest, HoldRequest,
    HoldView, MaxHardLimitRequest, MaxHardLimitView, RefundRequest, SubscriptionRequest,
    TransactionView,
};

pub use crate::service::metering::DEFAULT_MAX_HARD_LIMIT;

/// What an admin call on one account with a JSON body extracts, in this order: the
/// operator's token, the account (`{id}`), and the body (its raw bytes are what
/// `Idempotency-Key` is checked against).
pub struct OnAccount<T> {
    req: HttpRequest,
    account: String,
    body: JsonBody<T>,
}

impl<T: serde::de::DeserializeOwned + 'static> FromRequest for OnAccount<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<OnAccount<T>, actix_web::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let admin = Admin::from_request(req, payload);
        let account = web::Path::<String>::from_request(req, payload);
        let body = JsonBody::<T>::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move {
            admin.await?;
            let account = account.await?.into_inner();
            let body = body.await?;
            Ok(OnAccount { req, account, body })
        })
    }
}

impl<T> OnAccount<T> {
    /// Applies `operation` (built from the body) to the account, under the call's
    /// `Idempotency-Key`.
    async fn apply(
        &self,
        state: &AppState,
        operation: Result<Operation, ApiError>,
    ) -> Result<Applied, ApiError> {
        let operation = operation?;
        let idem = idempotency(&self.req, &self.body.raw)?;
        let account = AccountId::new(self.account.clone());
        service::apply(state, account, idem, operation).await
    }
}

/// Applies the operation `build` makes of the call's body (one that writes one entry),
/// answered `201` with that entry.
async fn created_entry<T>(
    state: &AppState,
    call: &OnAccount<T>,
    build: impl FnOnce(&T) -> Result<Operation, ApiError>,
) -> Reply {
    let applied = call.apply(state, build(&call.body.value)).await?;
    metered(applied, |outcome| match outcome {
        Outcome::Entry(e) => {
            let charged = if e.kind == EntryKind::Usage {
                -e.amount
            } else {
                Credits::ZERO
            };
            Ok((
                HttpResponse::build(StatusCode::CREATED).json(TransactionView::from(&e)),
                charged,
            ))
        }
        other => Err(ApiError::internal(format!(
            "expected an entry, got {other:?}"
        ))),
    })
}

/// The parameters of a charged call on one account: `{id}` in its path, and the optional
/// `Idempotency-Key` header (as `params(("id" = String, Path), ("Idempotency-Key" =
/// Option<String>, Header))` would document them).
pub struct ChargedOnAccount;

/// [`ChargedOnAccount`] for a call on one hold: `{holdId}` in its path.
pub struct ChargedOnHold;

impl utoipa::IntoParams for ChargedOnAccount {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        charged_params("id")
    }
}

impl utoipa::IntoParams for ChargedOnHold {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        charged_params("holdId")
    }
}

/// The string path parameter `name` (required) and the optional `Idempotency-Key` header.
fn charged_params(name: &str) -> Vec<Parameter> {
    use utoipa::openapi::path::ParameterBuilder;
    use utoipa::openapi::schema::SchemaType;
    use utoipa::openapi::{ObjectBuilder, Required, Type};
    let path = ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)));
    let key = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .schema(Some(
            ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Null])),
        ));
    vec![path.build(), key.build()]
}

/// The hold a call names (`{holdId}`).
type HoldPath = web::Path<String>;

/// Settles the hold `hold_id` `how`, under the call's `Idempotency-Key` (checked against
/// the body's `raw` bytes): `200` with the hold and the entry a capture wrote.
async fn settle(
    state: &AppState,
    req: &HttpRequest,
    hold_id: String,
    how: Settlement,
    raw: &[u8],
) -> Reply {
    let idem = idempotency(req, raw)?;
    let (applied, after) = service::settle(state, HoldId::new(hold_id), how, idem).await?;
    metered(applied, |o| {
        let (transaction, charged) = match &o {
            Outcome::Entry(e) => (Some(TransactionView::from(e)), -e.amount),
            _ => (None, Credits::ZERO),
        };
        Ok((
            HttpResponse::Ok().json(HoldView::new(&after, transaction)),
            charged,
        ))
    })
}

/// Creates an account (the signup bonus applies).
#[utoipa::path(tag = "admin", request_body = AdminNewAccount,
    responses((status = 201, body = AccountView), (status = 400, body = crate::wire::ErrorBody), (status = 401, body = crate::wire::ErrorBody), (status = 409, body = crate::wire::ErrorBody)))]
#[post("/admin/v1/accounts")]
pub async fn create_account(state: AppData, _: Admin, body: JsonBody<AdminNewAccount>) -> Reply {
    let AdminNewAccount { email, password } = body.value;
    let (account, balance) = service::create_account(&state, email, password).await?;
    Ok(HttpResponse::Created().json(AccountView {
        account_id: account.id.into_string(),
        email: account.email,
        balance,
    }))
}

/// Grants (positive) or takes away (negative, never below zero) credits: an `adjustment`.
#[utoipa::path(tag = "admin", request_body = AdjustmentRequest, params(ChargedOnAccount),
    responses((status = 201, body = TransactionView), CreditWriteErrors))]
#[post("/admin/v1/accounts/{id}/credits")]
pub async fn adjust(state: AppData, call: OnAccount<AdjustmentRequest>) -> Reply {
    created_entry(&state, &call, |v| {
        service::adjustment(v.amount, &v.description)
    })
    .await
}

/// Charges usage at once; 402 when not covered.
#[utoipa::path(tag = "admin", request_body = DebitRequest, params(ChargedOnAccount),
    responses((status = 201, body = TransactionView), CreditWriteErrors))]
#[post("/admin/v1/accounts/{id}/debits")]
pub async fn debit(state: AppData, call: OnAccount<DebitRequest>) -> Reply {
    created_entry(&state, &call, |v| {
        service::debit(v.amount, &v.description, v.reference_id.clone())
    })
    .await
}

/// Reserves credits for work in progress; 402 when not covered.
#[utoipa::path(tag = "admin", request_body = HoldRequest, params(ChargedOnAccount),
    responses((status = 201, body = HoldView), CreditWriteErrors))]
#[post("/admin/v1/accounts/{id}/holds")]
pub async fn hold(state: AppData, call: OnAccount<HoldRequest>) -> Reply {
    let v = &call.body.value;
    let (amount, ttl, reference) = (v.amount, v.ttl_seconds, v.reference_id.clone());
    let operation = service::hold(&state, amount, ttl, &v.description, reference);
    metered(call.apply(&state, operation).await?, created_hold)
}

/// `201` with the new hold; a hold charges nothing yet.
fn created_hold(outcome: Outcome) -> Result<(HttpResponse, Credits), ApiError> {
    match outcome {
        Outcome::Hold(h) => Ok((
            HttpResponse::Created().json(HoldView::new(&h, None)),
            Credits::ZERO,
        )),
        other => Err(ApiError::internal(format!(
            "expected a hold, got {other:?}"
        ))),
    }
}

/// Charges all of a hold, or part (the rest returns); 409 when settled or expired.
#[utoipa::path(tag = "admin", request_body = CaptureRequest, params(ChargedOnHold),
    responses((status = 200, body = HoldView), SettleErrors))]
#[post("/admin/v1/holds/{holdId}/capture")]
pub async fn capture(
    state: AppData,
    _: Admin,
    req: HttpRequest,
    hold_id: HoldPath,
    body: JsonBody<CaptureRequest>,
) -> Reply {
    let how = Settlement::capture(body.value.amount)?;
    settle(&state, &req, hold_id.into_inner(), how, &body.raw).await
}

/// Ends a hold with nothing charged; 409 when settled or expired.
#[utoipa::path(tag = "admin", params(ChargedOnHold),
    responses((status = 200, body = HoldView), (status = 404, body = crate::wire::ErrorBody), (status = 409, body = crate::wire::ErrorBody)))]
#[post("/admin/v1/holds/{holdId}/release")]
pub async fn release(state: AppData, _: Admin, req: HttpRequest, hold_id: HoldPath) -> Reply {
    settle(&state, &req, hold_id.into_inner(), Settlement::Release, b"").await
}

/// Gives back all or part of a usage charge; 409 beyond what was charged.
#[utoipa::path(tag = "admin", request_body = RefundRequest, params(ChargedOnAccount),
    responses((status = 201, body = TransactionView), SettleErrors))]
#[post("/admin/v1/accounts/{id}/refunds")]
pub async fn refund(state: AppData, call: OnAccount<RefundRequest>) -> Reply {
    created_entry(&state, &call, |v| {
        service::refund(&v.transaction_id, v.amount, v.description.as_deref())
    })
    .await
}

/// Subscribes the account to a configured plan, operator-managed (or changes plan or
/// status), snapshotting the plan's terms; `currentPeriodStart` anchors the periods.
#[utoipa::path(tag = "admin", request_body = SubscriptionRequest,
    params(("id" = String, Path)),
    responses((status = 200, body = crate::routes::subscription::PlanSubscriptionView), AccountSettingErrors))]
#[put("/admin/v1/accounts/{id}/subscription")]
pub async fn subscription(state: AppData, call: OnAccount<SubscriptionRequest>) -> Reply {
    let SubscriptionRequest {
        plan_id,
        status,
        current_period_start,
    } = call.body.value;
    let account = AccountId::new(call.account);
    let sub = crate::service::subscription::subscribe_by_operator(
        &state,
        account,
        &plan_id,
        status.as_deref(),
        current_period_start.as_deref(),
    )
    .await?;
    Ok(
        HttpResponse::Ok().json(crate::routes::subscription::PlanSubscriptionView::new(
            &sub, true,
        )),
    )
}

/// Raises (or lowers) how high the account owner may set the hard limit.
#[utoipa::path(tag = "admin", request_body = MaxHardLimitRequest,
    params(("id" = String, Path)),
    responses((status = 200, body = MaxHardLimitView), AccountSettingErrors))]
#[put("/admin/v1/accounts/{id}/max-hard-limit")]
pub async fn max_hard_limit(state: AppData, call: OnAccount<MaxHardLimitRequest>) -> Reply {
    let account = AccountId::new(call.account);
    let shown = account.as_str().to_owned();
    let limit =
        service::set_max_hard_limit(&state, account, call.body.value.max_hard_limit).await?;
    Ok(HttpResponse::Ok().json(MaxHardLimitView {
        account_id: shown,
        max_hard_limit: limit,
    }))
}

/// Checks every ledger invariant over the whole database.
#[utoipa::path(tag = "admin",
    responses((status = 200, description = "{ok, accounts, entries, violations}"), crate::routes::AuthErrors))]
#[get("/admin/v1/verify")]
pub async fn verify(state: AppData, _: Admin) -> Reply {
    Ok(HttpResponse::Ok().json(service::verify(&state).await?))
}
