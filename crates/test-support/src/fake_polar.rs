//! A fake Polar for tests: a real HTTP server on
//! `127.0.0.1:0` with Polar's checkout and order endpoints, and a webhook sender that
//! behaves like Polar's (compact JSON envelopes, a fresh webhook id per event, the same id
//! re-signed with a fresh timestamp on every retry), plus the faults tests need: duplicate,
//! reordered, stale, future and wrong-secret deliveries, API failures and slow answers,
//! and refunds.

use std::collections::BTreeMap;
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
        self.pay(
            &self
                .checkout_id_for_url(&url)
                .expect("a checkout of this fake"),
        )
    }

    /// The customer pays a checkout: an order is created, already `paid`, carrying the
    /// checkout's metadata and customer (paying again returns the same order).
    pub fn pay(&self, checkout_id: &str) -> Value {
        let mut s = lock(&self.state);
        let checkout = s
            .checkouts
            .get(checkout_id)
            .cloned()
            .expect("a checkout of this fake");
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
        Event {
            webhook_id: new_webhook_id(),
            event_type: event_type.to_owned(),
            body: envelope(event_type, &now().rfc3339(), data),
        }
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

async fn list_orders(state: Shared, req: HttpRequest, q: web::Query<ListQuery>) -> HttpResponse {
    if let Err(answer) = gate(&state, &req, Value::Null).await {
        return answer;
    }
    let s = lock(&state);
    let limit = q.limit.unwrap_or(10).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    // Newest first, as Polar lists them.
    let all: Vec<&Value> = s.orders.iter().rev().collect();
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
