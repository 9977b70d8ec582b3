//! Polar's API (blocking; callers run it on a thread pool) and the payload types we read.
//!
//! Payload structs read only the fields we use and ignore the rest, with defaults for
//! anything missing: Polar's schema grew several times in 2026.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use ureq::Agent;

use crate::error::PaymentsError;

/// Metadata key naming our account on checkouts (copied by Polar to the order).
pub const META_ACCOUNT: &str = "account_id";
/// Metadata key naming the credit pack.
pub const META_PACK: &str = "pack_id";

/// The envelope of every webhook body.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Envelope {
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub data: Value,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Customer {
    pub id: Option<String>,
    pub external_id: Option<String>,
    pub email: Option<String>,
}

/// A Polar order (the fields a credit ledger needs).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Order {
    pub id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub paid: bool,
    #[serde(default)]
    pub billing_reason: String,
    #[serde(default)]
    pub subtotal_amount: i64,
    #[serde(default)]
    pub discount_amount: i64,
    #[serde(default)]
    pub net_amount: i64,
    #[serde(default)]
    pub total_amount: i64,
    #[serde(default)]
    pub refunded_amount: i64,
    #[serde(default)]
    pub currency: String,
    pub product_id: Option<String>,
    pub checkout_id: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    pub customer: Option<Customer>,
}

impl Order {
    /// Paid (possibly refunded since): what `order.paid` and reconcile credit.
    pub fn is_paid(&self) -> bool {
        self.paid
            || matches!(
                self.status.as_str(),
                "paid" | "refunded" | "partially_refunded"
            )
    }

    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// A Polar refund.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Refund {
    pub id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub amount: i64,
    pub order_id: Option<String>,
}

/// A Polar checkout session.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Checkout {
    pub id: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub status: String,
    pub product_id: Option<String>,
    pub external_customer_id: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    pub currency: Option<String>,
    pub total_amount: Option<i64>,
}

/// What we send to `POST /v1/checkouts/`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckoutCreate {
    pub products: Vec<String>,
    pub success_url: String,
    pub external_customer_id: String,
    pub metadata: Map<String, Value>,
    /// Always false: a pack is sold at its price, so a paid order whose amount differs
    /// from the price we recorded is refused rather than credited.
    pub allow_discount_codes: bool,
}

/// One page of `GET /v1/orders/`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct OrderPage {
    pub items: Vec<Order>,
    pub pagination: Pagination,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Pagination {
    pub total_count: i64,
    pub max_page: i64,
}

/// What we send to `PATCH /v1/subscriptions/{id}`: one of a product change, a
/// cancellation at the period's end (or its undoing), or an immediate revoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SubscriptionPatch {
    Product { product_id: String },
    CancelAtPeriodEnd { cancel_at_period_end: bool },
    Revoke { revoke: bool },
}

/// One event for `POST /v1/events/ingest`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IngestEvent {
    pub name: String,
    /// Polar ignores an event whose `external_id` it has seen.
    pub external_id: String,
    pub external_customer_id: String,
    pub timestamp: String,
    pub metadata: Map<String, Value>,
}

/// Polar's answer to an ingestion.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct IngestAnswer {
    pub inserted: i64,
    pub duplicates: i64,
}

/// One page of `GET /v1/subscriptions/`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct SubscriptionPage {
    pub items: Vec<crate::subscriptions::Subscription>,
    pub pagination: Pagination,
}

/// A client of Polar's API.
#[derive(Debug, Clone)]
pub struct PolarClient {
    agent: Agent,
    api_url: String,
    token: String,
    calls: Arc<Calls>,
}

/// Calls to Polar so far, by outcome (for the programs' metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolarCalls {
    /// Polar answered 2xx with a readable body.
    pub ok: u64,
    /// Polar answered 4xx (a refused token, a rejected request).
    pub rejected: u64,
    /// Polar answered 5xx or an unreadable body, did not answer in time, or could not be
    /// reached.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Calls {
    ok: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
}

impl Calls {
    fn count<T>(&self, answer: &Result<T, PaymentsError>) {
        let counter = match answer {
            Ok(_) => &self.ok,
            Err(PaymentsError::Provider {
                status: Some(400..=499),
                ..
            }) => &self.rejected,
            Err(_) => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl PolarClient {
    pub fn new(api_url: &str, token: &str, timeout: Duration) -> PolarClient {
        let config = Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent("shotledger")
            .build();
        PolarClient {
            agent: config.into(),
            api_url: api_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            calls: Arc::default(),
        }
    }

    /// The calls made so far, by outcome.
    pub fn calls(&self) -> PolarCalls {
        PolarCalls {
            ok: self.calls.ok.load(Ordering::Relaxed),
            rejected: self.calls.rejected.load(Ordering::Relaxed),
            failed: self.calls.failed.load(Ordering::Relaxed),
        }
    }

    /// [`read`], counted.
    fn read<T: for<'de> Deserialize<'de>>(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        what: &str,
    ) -> Result<T, PaymentsError> {
        let answer = read(response, what);
        self.calls.count(&answer);
        answer
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// `POST /v1/checkouts/`.
    pub fn create_checkout(&self, request: &CheckoutCreate) -> Result<Checkout, PaymentsError> {
        let response = self
            .agent
            .post(format!("{}/v1/checkouts/", self.api_url))
            .header("Authorization", self.bearer())
            .send_json(request);
        self.read(response, "create checkout")
    }

    /// `GET /v1/checkouts/{id}`.
    pub fn checkout(&self, id: &str) -> Result<Checkout, PaymentsError> {
        self.get(&format!("/v1/checkouts/{id}"), &[], "get checkout")
    }

    /// `GET /v1/orders/{id}`.
    pub fn order(&self, id: &str) -> Result<Order, PaymentsError> {
        self.get(&format!("/v1/orders/{id}"), &[], "get order")
    }

    /// `GET /v1/orders/?page=..&limit=..` (newest first, as Polar sorts by default).
    pub fn orders(&self, page: i64, limit: i64) -> Result<OrderPage, PaymentsError> {
        let query = [("page", page.to_string()), ("limit", limit.to_string())];
        self.get("/v1/orders/", &query, "list orders")
    }

    /// `GET /v1/subscriptions/?page=..&limit=..` (every status).
    pub fn subscriptions(&self, page: i64, limit: i64) -> Result<SubscriptionPage, PaymentsError> {
        let query = [("page", page.to_string()), ("limit", limit.to_string())];
        self.get("/v1/subscriptions/", &query, "list subscriptions")
    }

    /// Every subscription of the organization, walking all pages (`limit` 100).
    pub fn all_subscriptions(
        &self,
    ) -> Result<Vec<crate::subscriptions::Subscription>, PaymentsError> {
        let mut out = Vec::new();
        let mut page = 1;
        loop {
            let p = self.subscriptions(page, 100)?;
            let n = p.items.len();
            out.extend(p.items);
            if n == 0 || page >= p.pagination.max_page || page >= 10_000 {
                return Ok(out);
            }
            page += 1;
        }
    }

    /// `PATCH /v1/subscriptions/{id}`.
    pub fn update_subscription(
        &self,
        id: &str,
        patch: &SubscriptionPatch,
    ) -> Result<crate::subscriptions::Subscription, PaymentsError> {
        let response = self
            .agent
            .patch(format!("{}/v1/subscriptions/{id}", self.api_url))
            .header("Authorization", self.bearer())
            .send_json(patch);
        self.read(response, "update subscription")
    }

    /// `POST /v1/events/ingest` with `events` (one call for several).
    pub fn ingest_events(&self, events: &[IngestEvent]) -> Result<IngestAnswer, PaymentsError> {
        let response = self
            .agent
            .post(format!("{}/v1/events/ingest", self.api_url))
            .header("Authorization", self.bearer())
            .send_json(serde_json::json!({ "events": events }));
        self.read(response, "ingest events")
    }

    /// `GET {api_url}{path}` with `query`, authorised, read as `T` (`what` names the call
    /// in errors).
    fn get<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        query: &[(&str, String)],
        what: &str,
    ) -> Result<T, PaymentsError> {
        let mut request = self.agent.get(format!("{}{path}", self.api_url));
        for (name, value) in query {
            request = request.query(*name, value);
        }
        self.read(request.header("Authorization", self.bearer()).call(), what)
    }

    /// Every paid one-time purchase, walking all pages (`limit` 100).
    pub fn paid_orders(&self) -> Result<Vec<Order>, PaymentsError> {
        let mut out = Vec::new();
        let mut page = 1;
        loop {
            let p = self.orders(page, 100)?;
            let n = p.items.len();
            out.extend(
                p.items
                    .into_iter()
                    .filter(|o| o.is_paid() && o.billing_reason == "purchase"),
            );
            if n == 0 || page >= p.pagination.max_page || page >= 10_000 {
                return Ok(out);
            }
            page += 1;
        }
    }
}

/// Turns a response into `T`, or into [`PaymentsError::Provider`] with what went wrong.
fn read<T: for<'de> Deserialize<'de>>(
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    what: &str,
) -> Result<T, PaymentsError> {
    let mut response = response.map_err(|e| PaymentsError::Provider {
        status: None,
        message: match e {
            ureq::Error::Timeout(_) => format!("{what}: Polar did not answer in time"),
            other => format!("{what}: {other}"),
        },
    })?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        let body = response.body_mut().read_to_string().unwrap_or_default();
        let detail: String = body.chars().take(300).collect();
        let message = match status {
            401 | 403 => format!(
                "{what}: Polar refused the access token (check polar.access_token): {detail}"
            ),
            422 => format!("{what}: Polar rejected the request: {detail}"),
            _ => format!("{what}: Polar answered {status}: {detail}"),
        };
        return Err(PaymentsError::Provider {
            status: Some(status),
            message,
        });
    }
    response
        .body_mut()
        .read_json::<T>()
        .map_err(|e| PaymentsError::Provider {
            status: Some(status),
            message: format!("{what}: unreadable answer: {e}"),
        })
}
