//! A fake Polar for tests: a real HTTP server on
//! `127.0.0.1:0` with Polar's checkout and order endpoints, and a webhook sender that
//! behaves like Polar's (compact JSON envelopes, a fresh webhook id per event, the same id
//! re-signed with a fresh timestamp on every retry), plus the faults tests need: duplicate,
//! reordered, stale, future and wrong-secret deliveries, API failures and slow answers,
//! and refunds.
//!
//! Subscriptions: paying a checkout of a plan's product creates a subscription and the
//! events Polar sends (`subscription.created`, `subscription.active`, `order.paid` with
//! billing reason `subscription_create`); `PATCH /v1/subscriptions/{id}` changes the
//! product (`subscription.updated`), cancels at period end (`subscription.canceled`),
//! uncancels or revokes, its events queued for [`FakePolar::take_events`]; tests make
//! past-due, revoked, uncanceled and renewed subscriptions themselves. Every change bumps
//! `modified_at` (microseconds, strictly increasing). `POST /v1/events/ingest` records
//! events, counts duplicates by `external_id`, and can fail the next N calls.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::Deserialize;
use serde_json::{json, Value};

use payments::{envelope, new_webhook_id, now, SignedDelivery, WebhookSecret};

/// How the fake derives its HMAC key from its secret (Polar's two ways).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    /// UTF-8 bytes of the whole `whsec_...` string (secrets before 2026-09-08).
    Legacy,
    /// base64-decode of the text after `whsec_` (newer secrets).
    Standard,
}

/// A fault for the next API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Answer with this status (401, 422, 500, ...).
    Status(u16),
    /// Answer normally, after this long.
    Delay(Duration),
}

/// An API request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

/// One webhook event: its id stays the same across retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub webhook_id: String,
    pub event_type: String,
    pub body: String,
}

#[derive(Default)]
struct State {
    token: String,
    prices: BTreeMap<String, i64>,
    checkouts: BTreeMap<String, Value>,
    orders: Vec<Value>,
    requests: Vec<RecordedRequest>,
    failures: Vec<Failure>,
    seq: u64,
    /// Products sold as subscriptions (a plan's product).
    recurring: BTreeSet<String>,
    subscriptions: BTreeMap<String, Value>,
    /// Events made by API calls (PATCH), for the test to deliver.
    outbox: Vec<Event>,
    /// The last `modified_at` handed out, in microseconds.
    clock_us: i64,
    ingested: Vec<Value>,
    ingest_ids: BTreeSet<String>,
    ingest_duplicates: u64,
    ingest_calls: u64,
    ingest_failures: u32,
    /// `external_id`s whose batch is refused with 422.
    ingest_refused: BTreeSet<String>,
}

impl State {
    /// A fresh instant, strictly after the last one, as Polar writes it (microseconds).
    fn tick(&mut self) -> String {
        self.clock_us = (now().millis() * 1000).max(self.clock_us + 1);
        micros_rfc3339(self.clock_us)
    }

    /// The checkout `id` of this fake (a test that names another is wrong).
    fn checkout_named(&self, id: &str) -> Value {
        self.checkouts
            .get(id)
            .cloned()
            .expect("a checkout of this fake")
    }
}

/// `2026-12-02T05:00:00.123456Z` for microseconds since the Unix epoch.
pub fn micros_rfc3339(us: i64) -> String {
    let ms = ledger_core::Timestamp::from_millis(us.div_euclid(1000)).rfc3339();
    format!("{}{:03}Z", ms.trim_end_matches('Z'), us.rem_euclid(1000))
}

/// An event with a fresh webhook id, its body as Polar writes it.
fn make_event(event_type: &str, data: &Value) -> Event {
    Event {
        webhook_id: new_webhook_id(),
        event_type: event_type.to_owned(),
        body: envelope(event_type, &now().rfc3339(), data),
    }
}

/// The fake Polar server. Stops when dropped.
pub struct FakePolar {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    secret: String,
    mode: KeyMode,
    handle: actix_web::dev::ServerHandle,
    thread: Option<JoinHandle<()>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakePolar {
    /// Starts a fake accepting `token` and signing webhooks with `secret` the `mode` way.
    pub fn start(token: &str, secret: &str, mode: KeyMode) -> FakePolar {
        let state = Arc::new(Mutex::new(State {
            token: token.to_owned(),
            ..State::default()
        }));
        let (tx, rx) = mpsc::channel();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = web::Data::new(shared);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .route("/v1/checkouts/", web::post().to(create_checkout))
                        .route("/v1/checkouts/{id}", web::get().to(get_checkout))
                        .route("/v1/orders/", web::get().to(list_orders))
                        .route("/v1/orders/{id}", web::get().to(get_order))
                        .route(
                            "/v1/subscriptions/{id}",
                            web::patch().to(patch_subscription),
                        )
                        .route("/v1/events/ingest", web::post().to(ingest_events))
                        .route("/v1/subscriptions/", web::get().to(list_subscriptions))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(1)
                .bind(("127.0.0.1", 0))
                .expect("bind 127.0.0.1:0");
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle())).expect("the starter waits");
                let _ = server.await;
            });
        });
        let (addr, handle) = rx.recv().expect("the fake Polar starts");
        FakePolar {
            addr,
            state,
            secret: secret.to_owned(),
            mode,
            handle,
            thread: Some(thread),
        }
    }

    /// The base URL (`polar.api_url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the price Polar charges for a product (default 1000 cents).
    pub fn set_price(&self, product_id: &str, cents: i64) {
        lock(&self.state)
            .prices
            .insert(product_id.to_owned(), cents);
    }

    /// Queues a fault for the next API request (several queue in order).
    pub fn fail_next(&self, failure: Failure) {
        lock(&self.state).failures.push(failure);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }

    pub fn checkout(&self, id: &str) -> Option<Value> {
        lock(&self.state).checkouts.get(id).cloned()
    }

    /// The id of the checkout whose URL this is.
    pub fn checkout_id_for_url(&self, url: &str) -> Option<String> {
        lock(&self.state)
            .checkouts
            .values()
            .find(|c| c["url"] == url)
            .and_then(|c| c["id"].as_str().map(str::to_owned))
    }

    /// [`FakePolar::checkout_id_for_url`] of a URL this fake made.
    fn own_checkout_id(&self, url: &str) -> String {
        self.checkout_id_for_url(url)
            .expect("a checkout of this fake")
    }

    pub fn order(&self, id: &str) -> Option<Value> {
        lock(&self.state)
            .orders
            .iter()
            .find(|o| o["id"] == id)
            .cloned()
    }

    /// What a customer who buys `pack_id` through the api-server produces: a checkout
    /// `payments` makes for `account`, paid here. Returns the paid order.
    pub fn buy(
        &self,
        payments: &payments::Payments,
        account: &ledger_core::AccountId,
        pack_id: &str,
    ) -> Value {
        let pack = payments
            .catalogue()
            .find(pack_id)
            .expect("a pack of the catalogue");
        let url = payments
            .create_checkout(account, pack)
            .expect("a checkout at the fake");
        self.pay(&self.own_checkout_id(&url))
    }

    /// The customer pays a checkout: an order is created, already `paid`, carrying the
    /// checkout's metadata and customer (paying again returns the same order).
    pub fn pay(&self, checkout_id: &str) -> Value {
        let mut s = lock(&self.state);
        let checkout = s.checkout_named(checkout_id);
        if let Some(o) = s.orders.iter().find(|o| o["checkout_id"] == checkout_id) {
            return o.clone();
        }
        let product = checkout["product_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let price = s.prices.get(&product).copied().unwrap_or(1000);
        let order = make_order(
            &mut s,
            &product,
            price,
            checkout["metadata"].clone(),
            checkout["external_customer_id"].as_str(),
            Some(checkout_id),
        );
        if let Some(c) = s.checkouts.get_mut(checkout_id) {
            c["status"] = json!("succeeded");
        }
        order
    }

    /// An order paid outside any checkout we saw (for reconcile and bulk tests).
    pub fn create_paid_order(
        &self,
        product_id: &str,
        price_cents: i64,
        account_id: &str,
        pack_id: &str,
    ) -> Value {
        let mut s = lock(&self.state);
        make_order(
            &mut s,
            product_id,
            price_cents,
            json!({ "account_id": account_id, "pack_id": pack_id }),
            Some(account_id),
            None,
        )
    }

    /// An event with a fresh webhook id, its body as Polar writes it.
    pub fn event(&self, event_type: &str, data: &Value) -> Event {
        make_event(event_type, data)
    }

    // -- subscriptions -----------------------------------------------------------------

    /// Sells `product_id` as a monthly subscription at `cents` (a plan's product).
    pub fn set_recurring(&self, product_id: &str, cents: i64) {
        let mut s = lock(&self.state);
        s.prices.insert(product_id.to_owned(), cents);
        s.recurring.insert(product_id.to_owned());
    }

    pub fn subscription(&self, id: &str) -> Option<Value> {
        lock(&self.state).subscriptions.get(id).cloned()
    }

    /// The events API calls made since the last take (PATCH: updated, canceled, ...).
    pub fn take_events(&self) -> Vec<Event> {
        std::mem::take(&mut lock(&self.state).outbox)
    }

    /// The customer pays a checkout of a plan's product: a subscription is created
    /// (active, monthly from now, the checkout's metadata and customer), and what Polar
    /// sends follows: `subscription.created` (`modified_at: null`),
    /// `subscription.active`, and `order.paid` with billing reason `subscription_create`.
    /// Returns the subscription and those events.
    pub fn pay_subscription(&self, checkout_id: &str) -> (Value, Vec<Event>) {
        let mut s = lock(&self.state);
        let checkout = s.checkout_named(checkout_id);
        let product = checkout["product_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            s.recurring.contains(&product),
            "{product} is not a plan's product"
        );
        let price = s.prices.get(&product).copied().unwrap_or(1000);
        let start = now();
        let end = ledger_core::Period::monthly(start, start).end;
        let created = s.tick();
        let external = checkout["external_customer_id"].as_str().map(str::to_owned);
        let customer_id = format!("cus-{}", external.as_deref().unwrap_or("anonymous"));
        let id = new_webhook_id();
        let mut sub = json!({
            "id": id, "created_at": created, "modified_at": null,
            "amount": price, "currency": "usd", "recurring_interval": "month", "status": "active",
            "current_period_start": micros_rfc3339(start.millis() * 1000),
            "current_period_end": micros_rfc3339(end.millis() * 1000),
            "cancel_at_period_end": false, "canceled_at": null, "started_at": created,
            "ends_at": null, "ended_at": null,
            "customer_id": customer_id, "product_id": product, "discount_id": null,
            "checkout_id": checkout_id, "metadata": checkout["metadata"],
            "customer": { "id": customer_id, "external_id": external, "email": "buyer@example.com" },
        });
        let created_event = make_event("subscription.created", &sub);
        sub["modified_at"] = json!(s.tick());
        let active_event = make_event("subscription.active", &sub);
        let mut order = make_order(
            &mut s,
            &product,
            price,
            checkout["metadata"].clone(),
            external.as_deref(),
            Some(checkout_id),
        );
        order["billing_reason"] = json!("subscription_create");
        order["subscription_id"] = json!(id);
        if let Some(o) = s.orders.last_mut() {
            *o = order.clone();
        }
        if let Some(c) = s.checkouts.get_mut(checkout_id) {
            c["status"] = json!("succeeded");
            c["subscription_id"] = json!(id);
        }
        s.subscriptions.insert(id, sub.clone());
        let paid_event = make_event("order.paid", &order);
        (sub, vec![created_event, active_event, paid_event])
    }

    /// What an owner who subscribes through the api-server produces: a checkout
    /// `payments` makes for `account` and `plan_id`, paid here.
    pub fn subscribe(
        &self,
        payments: &payments::Payments,
        account: &ledger_core::AccountId,
        plan_id: &str,
    ) -> (Value, Vec<Event>) {
        let url = payments
            .subscription_checkout(account, plan_id)
            .expect("a subscription checkout at the fake");
        self.pay_subscription(&self.own_checkout_id(&url))
    }

    /// Changes subscription `id` with `change`, bumps its `modified_at`, and returns the
    /// `event_type` event carrying the new state.
    pub fn change(&self, id: &str, event_type: &str, change: impl FnOnce(&mut Value)) -> Event {
        let mut s = lock(&self.state);
        let at = s.tick();
        let sub = s
            .subscriptions
            .get_mut(id)
            .expect("a subscription of this fake");
        change(sub);
        sub["modified_at"] = json!(at);
        make_event(event_type, sub)
    }

    /// A renewal payment failed: status `past_due` (`subscription.updated`).
    pub fn past_due(&self, id: &str) -> Event {
        self.change(id, "subscription.updated", |s| {
            s["status"] = json!("past_due")
        })
    }

    /// The period ended on a cancelled subscription, or it was revoked: status
    /// `canceled`, ended now (`subscription.revoked`).
    pub fn revoke(&self, id: &str) -> Event {
        let at = now().rfc3339();
        self.change(id, "subscription.revoked", |s| {
            s["status"] = json!("canceled");
            s["cancel_at_period_end"] = json!(false);
            s["ended_at"] = json!(at);
        })
    }

    /// The customer undid a cancellation (`subscription.uncanceled`).
    pub fn uncancel(&self, id: &str) -> Event {
        self.change(id, "subscription.uncanceled", |s| {
            s["cancel_at_period_end"] = json!(false);
            s["canceled_at"] = json!(null);
        })
    }

    /// The subscription renewed: the next monthly period, status active
    /// (`subscription.updated`), then `order.paid` with billing reason
    /// `subscription_cycle`.
    pub fn renew(&self, id: &str) -> Vec<Event> {
        let sub = self.subscription(id).expect("a subscription of this fake");
        let start = sub["current_period_end"]
            .as_str()
            .and_then(ledger_core::Timestamp::parse_rfc3339)
            .expect("a period end");
        let end = ledger_core::Period::monthly(start, start).end;
        let updated = self.change(id, "subscription.updated", |s| {
            s["status"] = json!("active");
            s["current_period_start"] = json!(micros_rfc3339(start.millis() * 1000));
            s["current_period_end"] = json!(micros_rfc3339(end.millis() * 1000));
        });
        let mut s = lock(&self.state);
        let product = sub["product_id"].as_str().unwrap_or_default().to_owned();
        let price = s.prices.get(&product).copied().unwrap_or(1000);
        let mut order = make_order(
            &mut s,
            &product,
            price,
            sub["metadata"].clone(),
            sub["customer"]["external_id"].as_str(),
            None,
        );
        order["billing_reason"] = json!("subscription_cycle");
        order["subscription_id"] = json!(id);
        if let Some(o) = s.orders.last_mut() {
            *o = order.clone();
        }
        vec![updated, make_event("order.paid", &order)]
    }

    // -- event ingestion ---------------------------------------------------------------

    /// The next `n` calls of `POST /v1/events/ingest` answer 500 and record nothing.
    pub fn fail_next_ingest(&self, n: u32) {
        lock(&self.state).ingest_failures = n;
    }

    /// Any batch carrying an event with this `external_id` is refused with 422 (and
    /// nothing of it is kept), as Polar refuses an invalid batch.
    pub fn refuse_ingest_of(&self, external_id: &str) {
        lock(&self.state)
            .ingest_refused
            .insert(external_id.to_owned());
    }

    /// Every ingested event Polar kept (duplicates by `external_id` are not kept).
    pub fn ingested(&self) -> Vec<Value> {
        lock(&self.state).ingested.clone()
    }

    /// Events ingested again with an `external_id` seen before (ignored, as Polar does).
    pub fn ingest_duplicates(&self) -> u64 {
        lock(&self.state).ingest_duplicates
    }

    /// Calls of `POST /v1/events/ingest`, failed ones included.
    pub fn ingest_calls(&self) -> u64 {
        lock(&self.state).ingest_calls
    }

    /// What Polar sends when an order is paid: `order.created`, `order.updated`,
    /// `order.paid`, each with its own webhook id.
    pub fn paid_events(&self, order: &Value) -> Vec<Event> {
        ["order.created", "order.updated", "order.paid"]
            .into_iter()
            .map(|t| self.event(t, order))
            .collect()
    }

    /// Refunds `cents` of an order: the order's cumulative `refunded_amount` and status
    /// change, and the events Polar sends follow: `refund.created`, `refund.updated`
    /// (both `succeeded`), `order.updated`, `order.refunded`.
    pub fn refund(&self, order_id: &str, cents: i64) -> Vec<Event> {
        let (refund, order) = {
            let mut s = lock(&self.state);
            s.seq += 1;
            let refund_id = format!("refund-{:04}-{}", s.seq, &new_webhook_id()[..8]);
            let order = s
                .orders
                .iter_mut()
                .find(|o| o["id"] == order_id)
                .expect("an order of this fake");
            let refunded = order["refunded_amount"].as_i64().unwrap_or(0) + cents;
            let net = order["net_amount"].as_i64().unwrap_or(0);
            order["refunded_amount"] = json!(refunded);
            order["refundable_amount"] = json!((net - refunded).max(0));
            order["status"] = json!(if refunded >= net {
                "refunded"
            } else {
                "partially_refunded"
            });
            let refund = json!({
                "id": refund_id, "status": "succeeded", "reason": "customer_request", "amount": cents,
                "tax_amount": 0, "currency": "usd", "order_id": order_id,
                "customer_id": order["customer_id"], "revoke_benefits": false, "metadata": {},
            });
            (refund, order.clone())
        };
        vec![
            self.event("refund.created", &refund),
            self.event("refund.updated", &refund),
            self.event("order.updated", &order),
            self.event("order.refunded", &order),
        ]
    }

    fn key_for(&self, secret: &str) -> Vec<u8> {
        let s = WebhookSecret::new(secret);
        match self.mode {
            KeyMode::Legacy => s.legacy_key().to_vec(),
            KeyMode::Standard => s.standard_key().unwrap_or(s.legacy_key()).to_vec(),
        }
    }

    /// The event signed with the fake's secret at `timestamp` (Unix seconds).
    pub fn sign(&self, event: &Event, timestamp: i64) -> SignedDelivery {
        SignedDelivery::new(
            &self.key_for(&self.secret),
            &event.webhook_id,
            timestamp,
            event.body.clone(),
        )
    }

    /// Sends an event now (a retry is the same call again: same id, fresh signature).
    pub fn send(&self, event: &Event, url: &str) -> u16 {
        self.send_signed(&self.sign(event, unix_now()), url)
    }

    /// Sends an event signed `offset_secs` away from now (stale: negative, future:
    /// positive).
    pub fn send_skewed(&self, event: &Event, url: &str, offset_secs: i64) -> u16 {
        self.send_signed(&self.sign(event, unix_now() + offset_secs), url)
    }

    /// Sends an event signed with another secret.
    pub fn send_with_secret(&self, event: &Event, url: &str, secret: &str) -> u16 {
        let d = SignedDelivery::new(
            &self.key_for(secret),
            &event.webhook_id,
            unix_now(),
            event.body.clone(),
        );
        self.send_signed(&d, url)
    }

    /// Sends a delivery as it is (tampered ones included). 0: nothing answered.
    pub fn send_signed(&self, delivery: &SignedDelivery, url: &str) -> u16 {
        delivery.send(url, Duration::from_secs(10)).unwrap_or(0)
    }

    /// Polar's retry loop, compressed: up to `attempts` tries, `backoff` apart, the same
    /// webhook id re-signed each time, until a 2xx. Returns every status seen.
    pub fn deliver_with_retries(
        &self,
        event: &Event,
        url: &str,
        attempts: usize,
        backoff: Duration,
    ) -> Vec<u16> {
        let mut seen = Vec::new();
        for i in 0..attempts {
            if i > 0 {
                std::thread::sleep(backoff);
            }
            let status = self.send(event, url);
            seen.push(status);
            if (200..300).contains(&status) {
                break;
            }
        }
        seen
    }
}

impl Drop for FakePolar {
    fn drop(&mut self) {
        // The stop starts when asked; its future only waits for the outcome.
        drop(self.handle.stop(false));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn unix_now() -> i64 {
    now().millis().div_euclid(1000)
}

fn make_order(
    s: &mut State,
    product_id: &str,
    price: i64,
    metadata: Value,
    external_id: Option<&str>,
    checkout_id: Option<&str>,
) -> Value {
    s.seq += 1;
    let id = new_webhook_id();
    let at = now().rfc3339();
    let customer_id = format!("cus-{}", external_id.unwrap_or("anonymous"));
    let order = json!({
        "id": id, "created_at": at, "modified_at": at,
        "status": "paid", "paid": true,
        "subtotal_amount": price, "discount_amount": 0, "net_amount": price, "tax_amount": 0, "total_amount": price,
        "applied_balance_amount": 0, "due_amount": 0, "refunded_amount": 0, "refunded_tax_amount": 0,
        "currency": "usd", "billing_reason": "purchase",
        "customer_id": customer_id, "product_id": product_id, "discount_id": null, "subscription_id": null,
        "checkout_id": checkout_id, "metadata": metadata, "custom_field_data": {},
        "customer": { "id": customer_id, "external_id": external_id, "email": "buyer@example.com" },
        "product": null, "discount": null, "subscription": null,
        "items": [{ "id": new_webhook_id(), "label": "credits", "amount": price, "tax_amount": 0, "proration": false }],
        "description": "credits", "refundable_amount": price, "refundable_tax_amount": 0,
        "seq": s.seq,
    });
    s.orders.push(order.clone());
    order
}

type Shared = web::Data<Arc<Mutex<State>>>;

/// Records the request, then applies auth and any queued fault. `Err` is the answer.
async fn gate(state: &Shared, req: &HttpRequest, body: Value) -> Result<(), HttpResponse> {
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let failure = {
        let mut s = lock(state);
        s.requests.push(RecordedRequest {
            method: req.method().to_string(),
            path: req.uri().to_string(),
            authorization: authorization.clone(),
            body,
        });
        let expected = format!("Bearer {}", s.token);
        if authorization.as_deref() != Some(expected.as_str()) {
            return Err(HttpResponse::Unauthorized()
                .insert_header(("WWW-Authenticate", "Bearer realm=\"polar\""))
                .json(
                    json!({"error": "Unauthorized", "detail": "Invalid or missing access token"}),
                ));
        }
        (!s.failures.is_empty()).then(|| s.failures.remove(0))
    };
    match failure {
        Some(Failure::Status(code)) => {
            let status = actix_web::http::StatusCode::from_u16(code).expect("a valid status");
            let body = if code == 422 {
                json!({"error": "RequestValidationError", "detail": [{"loc": ["body"], "msg": "invalid", "type": "value_error"}]})
            } else {
                json!({"error": "InternalServerError", "detail": "fault injected"})
            };
            Err(HttpResponse::build(status).json(body))
        }
        Some(Failure::Delay(d)) => {
            actix_web::rt::time::sleep(d).await;
            Ok(())
        }
        None => Ok(()),
    }
}

async fn create_checkout(state: Shared, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Err(answer) = gate(&state, &req, parsed.clone()).await {
        return answer;
    }
    let products: Vec<String> = parsed["products"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if products.is_empty() {
        return HttpResponse::UnprocessableEntity().json(json!({
            "error": "RequestValidationError",
            "detail": [{"loc": ["body", "products"], "msg": "Field required", "type": "missing"}],
        }));
    }
    let host = req.connection_info().host().to_owned();
    let mut s = lock(&state);
    let id = new_webhook_id();
    let secret = format!("polar_c_{}", new_webhook_id().replace('-', ""));
    let amount = s.prices.get(&products[0]).copied().unwrap_or(1000);
    let checkout = json!({
        "id": id, "status": "open", "client_secret": secret,
        "url": format!("http://{host}/checkout/{secret}"),
        "expires_at": now().plus_secs(86_400).rfc3339(),
        "success_url": parsed["success_url"], "return_url": null,
        "amount": amount, "discount_amount": 0, "net_amount": amount, "tax_amount": null, "total_amount": amount,
        "currency": "usd", "product_id": products[0], "products": products,
        "external_customer_id": parsed["external_customer_id"], "customer_id": null,
        "metadata": parsed.get("metadata").cloned().unwrap_or(json!({})),
        "is_payment_required": true,
    });
    s.checkouts.insert(id, checkout.clone());
    HttpResponse::Created().json(checkout)
}

async fn get_checkout(state: Shared, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    if let Err(answer) = gate(&state, &req, Value::Null).await {
        return answer;
    }
    match lock(&state).checkouts.get(id.as_str()) {
        Some(c) => HttpResponse::Ok().json(c),
        None => HttpResponse::NotFound()
            .json(json!({"error": "ResourceNotFound", "detail": "Not found"})),
    }
}

async fn get_order(state: Shared, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    if let Err(answer) = gate(&state, &req, Value::Null).await {
        return answer;
    }
    match lock(&state).orders.iter().find(|o| o["id"] == id.as_str()) {
        Some(o) => HttpResponse::Ok().json(o),
        None => HttpResponse::NotFound()
            .json(json!({"error": "ResourceNotFound", "detail": "Not found"})),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    page: Option<usize>,
    limit: Option<usize>,
}

/// The page of `all` that `q` asks for (10 a page unless it says, at most 100), with
/// Polar's pagination.
fn list_page(all: &[&Value], q: &ListQuery) -> HttpResponse {
    let limit = q.limit.unwrap_or(10).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    let items: Vec<&Value> = all
        .iter()
        .skip((page - 1) * limit)
        .take(limit)
        .copied()
        .collect();
    let max_page = all.len().div_ceil(limit).max(1);
    HttpResponse::Ok().json(json!({
        "items": items,
        "pagination": {"total_count": all.len(), "max_page": max_page},
    }))
}

async fn list_orders(state: Shared, req: HttpRequest, q: web::Query<ListQuery>) -> HttpResponse {
    if let Err(answer) = gate(&state, &req, Value::Null).await {
        return answer;
    }
    let s = lock(&state);
    // Newest first, as Polar lists them.
    let all: Vec<&Value> = s.orders.iter().rev().collect();
    list_page(&all, &q)
}

async fn patch_subscription(
    state: Shared,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Err(answer) = gate(&state, &req, parsed.clone()).await {
        return answer;
    }
    let mut s = lock(&state);
    if !s.subscriptions.contains_key(id.as_str()) {
        return HttpResponse::NotFound()
            .json(json!({"error": "ResourceNotFound", "detail": "Not found"}));
    }
    let at = s.tick();
    let mut events = Vec::new();
    let sub = s.subscriptions.get_mut(id.as_str()).expect("checked above");
    if sub["status"] == "canceled" {
        return HttpResponse::Forbidden().json(json!({
            "error": "AlreadyCanceledSubscription",
            "detail": "This subscription is already canceled.",
        }));
    }
    if let Some(product) = parsed["product_id"].as_str() {
        sub["product_id"] = json!(product);
        sub["modified_at"] = json!(at);
        events.push(make_event("subscription.updated", sub));
    } else if let Some(cancel) = parsed["cancel_at_period_end"].as_bool() {
        sub["cancel_at_period_end"] = json!(cancel);
        sub["canceled_at"] = if cancel { json!(at) } else { json!(null) };
        sub["modified_at"] = json!(at);
        let t = if cancel {
            "subscription.canceled"
        } else {
            "subscription.uncanceled"
        };
        events.push(make_event(t, sub));
    } else if parsed["revoke"].as_bool() == Some(true) {
        sub["status"] = json!("canceled");
        sub["cancel_at_period_end"] = json!(false);
        sub["canceled_at"] = json!(at);
        sub["ended_at"] = json!(at);
        sub["modified_at"] = json!(at);
        events.push(make_event("subscription.canceled", sub));
        events.push(make_event("subscription.revoked", sub));
    } else {
        return HttpResponse::UnprocessableEntity().json(json!({
            "error": "RequestValidationError",
            "detail": [{"loc": ["body"], "msg": "one of product_id, cancel_at_period_end, revoke", "type": "value_error"}],
        }));
    }
    let answer = sub.clone();
    s.outbox.extend(events);
    HttpResponse::Ok().json(answer)
}

async fn ingest_events(state: Shared, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Err(answer) = gate(&state, &req, parsed.clone()).await {
        return answer;
    }
    let mut s = lock(&state);
    s.ingest_calls += 1;
    if s.ingest_failures > 0 {
        s.ingest_failures -= 1;
        return HttpResponse::InternalServerError()
            .json(json!({"error": "InternalServerError", "detail": "fault injected"}));
    }
    let Some(events) = parsed["events"].as_array() else {
        return HttpResponse::UnprocessableEntity().json(json!({
            "error": "RequestValidationError",
            "detail": [{"loc": ["body", "events"], "msg": "Field required", "type": "missing"}],
        }));
    };
    let invalid = |e: &Value| {
        e["name"].as_str().is_none_or(str::is_empty)
            || e["external_customer_id"].as_str().is_none_or(str::is_empty)
            || e["external_id"]
                .as_str()
                .is_some_and(|x| s.ingest_refused.contains(x))
    };
    if events.iter().any(invalid) {
        return HttpResponse::UnprocessableEntity().json(json!({
            "error": "RequestValidationError",
            "detail": [{"loc": ["body", "events"], "msg": "name and a customer are required", "type": "value_error"}],
        }));
    }
    let (mut inserted, mut duplicates) = (0, 0);
    for e in events {
        match e["external_id"].as_str() {
            Some(x) if !s.ingest_ids.insert(x.to_owned()) => duplicates += 1,
            _ => {
                inserted += 1;
                s.ingested.push(e.clone());
            }
        }
    }
    s.ingest_duplicates += duplicates;
    HttpResponse::Ok().json(json!({"inserted": inserted, "duplicates": duplicates}))
}

async fn list_subscriptions(
    state: Shared,
    req: HttpRequest,
    q: web::Query<ListQuery>,
) -> HttpResponse {
    if let Err(answer) = gate(&state, &req, Value::Null).await {
        return answer;
    }
    let s = lock(&state);
    let all: Vec<&Value> = s.subscriptions.values().collect();
    list_page(&all, &q)
}
