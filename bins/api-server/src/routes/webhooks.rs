//! Webhook endpoints of an account: customers' own systems told of balance and billing
//! events (docs/WEBHOOKS.md, ADR 12). Owners register and delete them; anyone in the
//! account lists them and their deliveries.

use actix_web::{delete, get, post, web, HttpResponse};
use ledger_core::Timestamp;
use ledger_store::{Delivery, Endpoint};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Authed;
use crate::body::JsonBody;
use crate::routes::{AppData, Reply};
use crate::service::notifications;

/// An endpoint to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// An http or https URL on a public address.
    pub url: String,
    /// At least one of `credits.low`, `credits.depleted`, `credits.purchased`,
    /// `topup.succeeded`, `topup.failed`, `overage.billed`.
    #[schema(value_type = Vec<EventName>, min_items = 1)]
    pub events: Vec<String>,
}

/// An event an endpoint may subscribe to (docs/WEBHOOKS.md).
#[derive(Debug, Serialize, ToSchema)]
pub enum EventName {
    /// The available balance fell below `lowBalanceCredits` (once per crossing).
    #[serde(rename = "credits.low")]
    CreditsLow,
    /// The available balance reached zero.
    #[serde(rename = "credits.depleted")]
    CreditsDepleted,
    /// A paid pack was credited.
    #[serde(rename = "credits.purchased")]
    CreditsPurchased,
    /// An auto top-up was paid and credited.
    #[serde(rename = "topup.succeeded")]
    TopupSucceeded,
    /// The payment provider refused an auto top-up charge.
    #[serde(rename = "topup.failed")]
    TopupFailed,
    /// A block of overage was billed.
    #[serde(rename = "overage.billed")]
    OverageBilled,
}

/// The JSON body POSTed to an endpoint, with the Standard Webhooks headers `webhook-id`
/// (the delivery's id, the same on every attempt), `webhook-timestamp` (Unix seconds) and
/// `webhook-signature` (`v1,` + base64 HMAC-SHA256 of `id.timestamp.body`, keyed with the
/// base64-decoded part of the endpoint's secret after `whsec_`). Not an operation of this
/// API: what your endpoint receives.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEvent {
    #[serde(rename = "type")]
    pub kind: EventName,
    /// When the event happened.
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: Timestamp,
    pub data: WebhookEventData,
}

/// What an event carries; `accountId` and `balance` always, the rest by event type.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEventData {
    pub account_id: String,
    /// The available balance right after the event.
    #[schema(value_type = f64)]
    pub balance: ledger_core::Credits,
    /// `credits.low`: the threshold crossed.
    #[schema(value_type = Option<f64>)]
    pub low_balance_credits: Option<ledger_core::Credits>,
    /// `credits.purchased`, `topup.succeeded`: the order (for a top-up, the charge's id).
    pub order_id: Option<String>,
    /// `topup.failed`: the refused charge.
    pub charge_id: Option<String>,
    /// `credits.purchased`, `topup.*`: the pack.
    pub pack_id: Option<String>,
    /// `credits.purchased`, `topup.*`, `overage.billed`: the credits concerned.
    #[schema(value_type = Option<f64>)]
    pub credits: Option<ledger_core::Credits>,
    /// `credits.purchased`, `topup.*`: the price.
    pub price_cents: Option<i64>,
    /// `topup.failed`: why the provider refused it.
    pub reason: Option<String>,
    /// `overage.billed`: blocks billed, their price, and the period they belong to.
    pub blocks: Option<i64>,
    pub amount_cents: Option<i64>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub period_start: Option<Timestamp>,
}

/// A new endpoint: `secret` appears only here, once. Deliveries are signed with it
/// (Standard Webhooks; the HMAC key is the base64-decoded part after `whsec_`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookCreated {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// `whsec_` + base64 of 32 random bytes.
    pub secret: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// A registered endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// One event sent (or to be sent) to an endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    /// Also the `webhook-id` header of every attempt.
    pub id: String,
    /// The event's type, e.g. `credits.low`.
    pub event: String,
    /// `pending`, `delivered` or `failed` (every attempt allowed failed).
    pub status: String,
    pub attempts: u32,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_attempt_at: Option<Timestamp>,
    /// The HTTP status of the last answer (`null`: none yet, or no answer).
    pub response_status: Option<u16>,
}

fn events_of(e: &Endpoint) -> Vec<String> {
    e.events.iter().map(|e| e.as_str().to_owned()).collect()
}

impl From<Endpoint> for WebhookView {
    fn from(e: Endpoint) -> WebhookView {
        WebhookView {
            events: events_of(&e),
            id: e.id,
            url: e.url,
            created_at: e.created_at,
        }
    }
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> DeliveryView {
        DeliveryView {
            id: d.id,
            event: d.event.as_str().to_owned(),
            status: d.status.as_str().to_owned(),
            attempts: d.attempts,
            last_attempt_at: d.last_attempt_at,
            response_status: d.response_status,
        }
    }
}

/// Registers an endpoint (owners only: 403 `OWNER_ONLY` otherwise). A URL that is not
/// http(s) or that resolves to a loopback, private, link-local or reserved address (unless
/// the operator allows private targets), or an empty or unknown event: 400.
#[utoipa::path(tag = "notifications", request_body = NewWebhook,
    responses((status = 201, body = WebhookCreated), (status = 400, body = crate::wire::ErrorBody),
        (status = 401, body = crate::wire::ErrorBody), (status = 403, body = crate::wire::ErrorBody)))]
#[post("/api/v1/webhooks")]
pub async fn create(state: AppData, who: Authed, body: JsonBody<NewWebhook>) -> Reply {
    let e = notifications::create(&state, &who, &body.value.url, &body.value.events).await?;
    Ok(HttpResponse::Created().json(WebhookCreated {
        events: events_of(&e),
        id: e.id,
        url: e.url,
        secret: e.secret,
        created_at: e.created_at,
    }))
}

/// The account's endpoints, oldest first (secrets are never shown again).
#[utoipa::path(tag = "notifications",
    responses((status = 200, body = [WebhookView]), crate::routes::AuthErrors))]
#[get("/api/v1/webhooks")]
pub async fn list(state: AppData, who: Authed) -> Reply {
    let view: Vec<WebhookView> = notifications::list(&state, who.account_id)
        .await?
        .into_iter()
        .map(WebhookView::from)
        .collect();
    Ok(HttpResponse::Ok().json(view))
}

/// Deletes an endpoint (owners only); its pending deliveries are not sent.
#[utoipa::path(tag = "notifications",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = crate::wire::ErrorBody),
        (status = 403, body = crate::wire::ErrorBody), (status = 404, body = crate::wire::ErrorBody)))]
#[delete("/api/v1/webhooks/{id}")]
pub async fn delete(state: AppData, who: Authed, id: web::Path<String>) -> Reply {
    notifications::delete(&state, &who, id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The endpoint's latest deliveries (at most 100), newest first.
#[utoipa::path(tag = "notifications",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 200, body = [DeliveryView]), crate::routes::OwnedErrors))]
#[get("/api/v1/webhooks/{id}/deliveries")]
pub async fn deliveries(state: AppData, who: Authed, id: web::Path<String>) -> Reply {
    let view: Vec<DeliveryView> =
        notifications::deliveries(&state, who.account_id, id.into_inner())
            .await?
            .into_iter()
            .map(DeliveryView::from)
            .collect();
    Ok(HttpResponse::Ok().json(view))
}
