//! The OpenAPI document, generated from the handlers' annotations so it cannot drift.

use serde_json::{json, Value};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::{Modify, OpenApi};

use crate::ratelimit::doc::Documented as RateLimits;
use crate::routes::{account, alerts, auto_topup, members, screenshot, subscription, webhooks};
use crate::wire;

#[derive(OpenApi)]
#[openapi(
    info(title = "Shotledger", description = "A screenshot API paid with prepaid credits, and its credit ledger."),
    components(schemas(
        auto_topup::AutoTopupBody, account::CsrfTokenView, screenshot::ScreenshotOptions, screenshot::QuoteView, wire::ErrorBody, wire::BalanceView, wire::PackView, wire::TransactionView, wire::UsageView,
        wire::Credentials, wire::SignupRequest, members::NewMember, members::MemberInvited, members::MemberView, wire::AccountView, wire::NewKey, wire::KeyCreated, wire::KeyView, wire::CreditsV1,
        wire::PurchaseRequest, wire::CheckoutView, wire::AdminNewAccount, wire::AdjustmentRequest,
        subscription::PlanSubscriptionView, subscription::ChangeAccepted, subscription::OverageItemView, subscription::HardLimitRequest, subscription::PlanChangeRequest,
        wire::DebitRequest, wire::HoldRequest, wire::CaptureRequest, wire::HoldView, wire::RefundRequest,
        wire::SubscriptionRequest, wire::MaxHardLimitRequest, wire::MaxHardLimitView,
        webhooks::NewWebhook, webhooks::EventName, webhooks::WebhookEvent, webhooks::WebhookEventData, webhooks::WebhookCreated, webhooks::WebhookView, webhooks::DeliveryView, alerts::AlertsBody,
    )),
    modifiers(&Registered, &Security, &Answers, &Limits, &RateLimits),
)]
pub struct ApiDoc;

/// The paths: every registered route (`routes::configure`'s own list), so a route cannot be
/// served undocumented or documented unserved.
struct Registered;

impl Modify for Registered {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.paths = crate::routes::documented();
    }
}

/// The security schemes, and which operations need which.
///
/// - `apiKey` (`x-api-key`), `bearer` (`Authorization: Bearer KEY`) and `session` (the
///   cookie set by login) authenticate an account; `csrfToken` (`X-CSRF-Token`) is what a
///   session adds where the cookie alone is not enough (ADR 5): a write without a JSON
///   body, and a GET that can spend credits (one that documents `402`).
/// - `signedUrlKeyId` with `signedUrlSignature` (the query's `keyId` and its last
///   parameter `signature`, ADR 11) authenticate any GET an API key may make.
/// - `admin` is the operator's token (`Authorization: Bearer <admin.token>`).
/// - `metricsToken` is the scraper's (`Authorization: Bearer <metrics.token>`), on
///   `/metrics` only.
///
/// An operation that declares no security and is not [`PUBLIC`] takes the operator's token
/// under `/admin/`, and an account's credentials elsewhere.
struct Security;

/// The operations anyone may call.
pub const PUBLIC: &[&str] = &[
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/api/v1/credits/packs",
    "/api/v1/auth/signup",
    "/api/v1/auth/login",
];

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut admin = Http::new(HttpAuthScheme::Bearer);
        admin.description =
            Some("The operator's token: `Authorization: Bearer <admin.token>`".into());
        components.add_security_scheme("admin", SecurityScheme::Http(admin));
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description = Some(
            "An API key: `Authorization: Bearer sk_live_...` (or `Authorization: sk_live_...`)"
                .into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        let mut metrics = Http::new(HttpAuthScheme::Bearer);
        metrics.description = Some(
            "The metrics token: `Authorization: Bearer <metrics.token>` (`/metrics` only)".into(),
        );
        components.add_security_scheme("metricsToken", SecurityScheme::Http(metrics));
        // The schemes carried in a header, a cookie or the query: (scheme, where, name, what).
        type Carried = (
            &'static str,
            fn(ApiKeyValue) -> ApiKey,
            &'static str,
            &'static str,
        );
        let carried: [Carried; 5] = [
            (
                "apiKey",
                ApiKey::Header,
                "x-api-key",
                "An API key (`sk_live_...`), shown once when it is created",
            ),
            (
                "session",
                ApiKey::Cookie,
                crate::auth::SESSION_COOKIE,
                "The session cookie set by signup and login (HttpOnly, SameSite=Lax)",
            ),
            (
                "csrfToken",
                ApiKey::Header,
                "X-CSRF-Token",
                "The session's CSRF token, returned in `X-CSRF-Token` by signup and login",
            ),
            (
                "signedUrlKeyId",
                ApiKey::Query,
                crate::auth::KEY_ID_PARAM,
                "A signed URL (GET only): the id of the API key whose signingSecret signs it; \
                 an optional `expires` (unix seconds) may follow, inside the signed part",
            ),
            (
                "signedUrlSignature",
                ApiKey::Query,
                crate::auth::SIGNATURE_PARAM,
                "The last parameter of a signed URL: the hex HMAC-SHA256 of the query string \
                 before `&signature=`, as sent, keyed with the UTF-8 bytes of the key's \
                 signingSecret",
            ),
        ];
        for (scheme, place, name, what) in carried {
            let value = ApiKeyValue::with_description(name, what);
            components.add_security_scheme(scheme, SecurityScheme::ApiKey(place(value)));
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            if PUBLIC.contains(&path.as_str()) {
                continue;
            }
            let operator = path.starts_with("/admin/");
            for (is_get, op) in operations(item) {
                if op.security.is_some() {
                    continue;
                }
                if operator {
                    op.security = Some(vec![SecurityRequirement::new(
                        "admin",
                        Vec::<String>::new(),
                    )]);
                    continue;
                }
                let spends_on_get = is_get && op.responses.responses.contains_key("402");
                let bodyless_write = !is_get && op.request_body.is_none();
                let session = if spends_on_get || bodyless_write {
                    SecurityRequirement::new("session", Vec::<String>::new())
                        .add("csrfToken", Vec::<String>::new())
                } else {
                    SecurityRequirement::new("session", Vec::<String>::new())
                };
                let mut ways = vec![
                    SecurityRequirement::new("apiKey", Vec::<String>::new()),
                    SecurityRequirement::new("bearer", Vec::<String>::new()),
                    session,
                ];
                if is_get {
                    ways.push(
                        SecurityRequirement::new("signedUrlKeyId", Vec::<String>::new())
                            .add("signedUrlSignature", Vec::<String>::new()),
                    );
                    // A GET that takes a signed URL reads its query; one that cannot be
                    // read (a NUL character, `%00`) is refused before the route.
                    op.responses
                        .responses
                        .entry("400".to_owned())
                        .or_insert_with(|| unreadable_query().into());
                }
                op.security = Some(ways);
            }
        }
    }
}

/// `400 INVALID_REQUEST`: the query string cannot be read.
fn unreadable_query() -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description("The query string cannot be read (it holds a NUL character, `%00`)")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// The operations of a path, each with whether it is a GET.
fn operations(item: &mut PathItem) -> impl Iterator<Item = (bool, &mut Operation)> {
    [
        (true, &mut item.get),
        (false, &mut item.put),
        (false, &mut item.post),
        (false, &mut item.delete),
        (false, &mut item.patch),
    ]
    .into_iter()
    .filter_map(|(is_get, op)| op.as_mut().map(|op| (is_get, op)))
}

/// Applies `edit` to the document as JSON (the rules below are simpler there).
fn edit_json(doc: &mut utoipa::openapi::OpenApi, edit: impl FnOnce(&mut Value)) {
    let Ok(mut value) = serde_json::to_value(&*doc) else {
        return;
    };
    edit(&mut value);
    if let Ok(edited) = serde_json::from_value(value) {
        *doc = edited;
    }
}

/// The answers that come from the layers every handler shares, added to each operation that
/// can meet them (so no handler has to list them, and none can forget):
/// - `400` (the contract's JSON error naming the field) wherever there is a parameter or a
///   body to get wrong, including a NUL character anywhere (middleware, `JsonBody`);
/// - `401` and `404` (`User not found`) wherever credentials are needed (`Authed`, `Admin`;
///   the admin API answers `404` while `admin.token` is unset);
/// - `413` and `408` wherever there is a body (`server.max_body_bytes`, and the body's
///   deadline, `server.request_timeout_secs`);
/// - `503` with `Retry-After` everywhere: the database (or a payment provider) is down;
/// - `431` everywhere: the HTTP layer's answer to a request head over 128 KiB (no body);
///
/// Every error answer is `application/json` with the `ErrorBody` schema. A request body
/// whose fields are all optional is optional itself (an empty body reads as `{}`).
struct Answers;

impl Modify for Answers {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        edit_json(doc, |doc| {
            let error = json!({
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
            });
            let schemas = doc["components"]["schemas"].clone();
            let Some(paths) = doc["paths"].as_object_mut() else {
                return;
            };
            for (path, item) in paths.iter_mut() {
                let Some(item) = item.as_object_mut() else {
                    continue;
                };
                for (method, op) in item.iter_mut() {
                    let has_params = op["parameters"].as_array().is_some_and(|p| !p.is_empty());
                    let has_body = op.get("requestBody").is_some();
                    let authenticated = !PUBLIC.contains(&path.as_str());
                    let mut add = |status: &str, what: &str| {
                        let responses = &mut op["responses"];
                        if responses.get(status).is_none() {
                            let mut answer = error.clone();
                            answer["description"] = json!(what);
                            responses[status] = answer;
                        }
                    };
                    if has_params || has_body {
                        add(
                            "400",
                            "Bad input: the error names the field and what is allowed",
                        );
                    }
                    if authenticated {
                        add(
                            "401",
                            "Missing or wrong credentials (the error says what to send)",
                        );
                        add(
                            "404",
                            "The account no longer exists, or the resource is not found",
                        );
                    }
                    if has_body {
                        add("413", "The body is larger than the server accepts");
                        add(
                            "408",
                            "The body did not arrive within server.request_timeout_secs",
                        );
                    }
                    add("503", "A dependency (the database, a payment provider) is unavailable; retry after Retry-After seconds");
                    // actix-http's HTTP/1 parser answers this itself, before any of our code
                    // runs, and with no body (see ADR 5).
                    op["responses"]["431"] = json!({
                        "description": "The request head (URL and headers) is larger than 128 KiB; \
                            answered by the HTTP layer, with no body"
                    });
                    // Every error is JSON with the ErrorBody schema.
                    if let Some(responses) = op["responses"].as_object_mut() {
                        for (status, answer) in responses.iter_mut() {
                            if (status.starts_with('4') || status.starts_with('5'))
                                && status != "431"
                            {
                                answer["content"] = error["content"].clone();
                            }
                        }
                    }
                    if has_body {
                        let schema = &op["requestBody"]["content"]["application/json"]["schema"];
                        let resolved = match schema["$ref"].as_str() {
                            Some(r) => &schemas[r.trim_start_matches("#/components/schemas/")],
                            None => schema,
                        };
                        let none_required =
                            resolved["required"].as_array().is_none_or(|r| r.is_empty());
                        op["requestBody"]["required"] = json!(!none_required);
                    }
                    let _ = method;
                }
            }
        });
    }
}

/// The limits the handlers enforce, written into the schemas they apply to: lengths,
/// ranges, the precision of credit amounts (thousandths). `tests/it/openapi.rs` checks each
/// against the server (at the limit is accepted, past it is a 400 naming the field).
struct Limits;

/// A credit amount: a JSON number with at most three decimals, at most 10^12 credits.
fn credits_amount(minimum: Option<f64>) -> Value {
    let max = ledger_core::Credits::MAX_AMOUNT.millis() as f64 / 1000.0;
    let mut schema = json!({
        "type": "number",
        "multipleOf": 0.001,
        "maximum": max,
        "minimum": -max,
    });
    match minimum {
        Some(min) if min > 0.0 => {
            schema["exclusiveMinimum"] = json!(0);
            schema.as_object_mut().map(|o| o.remove("minimum"));
        }
        Some(min) => schema["minimum"] = json!(min),
        None => {}
    }
    schema
}

impl Modify for Limits {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let string =
            |min: usize, max: usize| json!({"type": "string", "minLength": min, "maxLength": max});
        let email = json!({"type": "string", "maxLength": 254, "format": "email"});
        let password = string(8, 1024);
        let description = string(1, 500);
        let limits: Vec<(&str, &str, Value)> = vec![
            ("Credentials", "email", email.clone()),
            ("Credentials", "password", password.clone()),
            ("AdminNewAccount", "email", email.clone()),
            ("AdminNewAccount", "password", password),
            (
                "NewKey",
                "name",
                string(1, crate::routes::api_keys::NAME_MAX_CHARS),
            ),
            ("AdjustmentRequest", "amount", credits_amount(None)),
            ("AdjustmentRequest", "description", description.clone()),
            ("DebitRequest", "amount", credits_amount(Some(1.0))),
            ("DebitRequest", "description", description.clone()),
            ("HoldRequest", "amount", credits_amount(Some(1.0))),
            ("HoldRequest", "description", description.clone()),
            (
                "HoldRequest",
                "ttlSeconds",
                json!({"type": ["integer", "null"], "minimum": 1, "maximum": 86400}),
            ),
            ("CaptureRequest", "amount", credits_amount(Some(1.0))),
            ("RefundRequest", "amount", credits_amount(Some(1.0))),
            ("RefundRequest", "description", description),
            (
                "MaxHardLimitRequest",
                "maxHardLimit",
                credits_amount(Some(1.0)),
            ),
            (
                "AutoTopupBody",
                "thresholdCredits",
                credits_amount(Some(0.0)),
            ),
        ];
        edit_json(doc, |doc| {
            for (schema, field, limit) in limits {
                let prop = &mut doc["components"]["schemas"][schema]["properties"][field];
                let nullable = prop["type"]
                    .as_array()
                    .is_some_and(|t| t.contains(&json!("null")))
                    || prop.get("oneOf").is_some();
                let mut limit = limit;
                if nullable && limit["type"] != json!(["integer", "null"]) {
                    limit = json!({"oneOf": [{"type": "null"}, limit]});
                }
                if let Some(d) = prop.get("description").cloned() {
                    limit["description"] = d;
                }
                *prop = limit;
            }
            // Query strings: the page size, and the month.
            let page = ledger_core::Page::MAX_LIMIT;
            set_param(
                doc,
                "/api/v1/credits/transactions",
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": page, "default": ledger_core::Page::DEFAULT_LIMIT}),
            );
            set_param(
                doc,
                "/api/v1/credits/transactions",
                "offset",
                json!({"type": "integer", "minimum": 0, "default": 0}),
            );
            set_param(
                doc,
                "/api/v1/credits/usage",
                "month",
                json!({"type": "integer", "minimum": 1, "maximum": 12}),
            );
            set_param(
                doc,
                "/api/v1/credits/usage",
                "year",
                json!({"type": "integer", "minimum": 1970, "maximum": 9999}),
            );
        });
    }
}

fn set_param(doc: &mut Value, path: &str, name: &str, schema: Value) {
    if let Some(params) = doc["paths"][path]["get"]["parameters"].as_array_mut() {
        for p in params {
            if p["name"] == name {
                p["schema"] = schema.clone();
            }
        }
    }
}
