//! Credits (seed 000), the balance in other shapes (seeds 001 and 004) and the usage ledger
//! by month (seed 003). Every test runs on SQLite and on PostgreSQL.

use crate::common;

use common::*;
use ledger_core::Credits;
use serde_json::{json, Value};
use settings::PackSettings;

on_both_backends!(
    packs_are_public_active_only_and_ordered_by_credits,
    purchase_answers_404_and_500_as_the_contract_says,
    purchase_returns_the_providers_checkout_url,
    purchase_without_a_payment_provider_is_503_and_mints_nothing,
    balances_in_three_shapes_count_holds_and_never_charge,
    transactions_are_newest_first_with_limit_and_offset,
    transactions_refuse_bad_paging_with_invalid_request,
    usage_by_month_follows_the_calendar_and_the_retention_window,
    usage_refuses_bad_months,
    fractional_credits_print_exactly,
);

fn pack(id: &str, name: &str, credits: i64, price: i64, active: bool) -> PackSettings {
    PackSettings {
        id: id.into(),
        name: name.into(),
        credits: Credits::whole(credits),
        price_cents: price,
        popular: false,
        active,
        polar_product_id: None,
    }
}

fn seed_000_packs() -> Value {
    json!([
        {"id":"pack_starter","name":"Starter","credits":100,"priceCents":500,"isPopular":false},
        {"id":"pack_pro","name":"Pro","credits":1000,"priceCents":3500,"isPopular":true},
        {"id":"pack_business","name":"Business","credits":5000,"priceCents":12500,"isPopular":false},
        {"id":"pack_enterprise","name":"Enterprise","credits":25000,"priceCents":50000,"isPopular":false}
    ])
}

async fn packs_are_public_active_only_and_ordered_by_credits(backend: &'static str) {
    // The default catalogue is exactly seed 000's.
    let app = TestApp::new(backend).await;
    let res = app.send(Req::get("/api/v1/credits/packs")).await;
    assert_eq!(res.expect(200), seed_000_packs());
    assert!(res
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    // Credentials change nothing (it is public).
    let (auth, _) = app.user("packs@example.com").await;
    assert_eq!(
        app.send(Req::get("/api/v1/credits/packs").auth(&auth))
            .await
            .expect(200),
        seed_000_packs()
    );
    drop(app);

    // Configured out of order, with an inactive pack: ordered by credits, inactive hidden.
    let app = TestApp::with(backend, |s| {
        s.credits.packs.reverse();
        s.credits
            .packs
            .insert(1, pack("pack_legacy", "Legacy", 2000, 9000, false));
        s.credits
            .packs
            .push(pack("pack_tiny", "Tiny", 10, 100, true));
    })
    .await;
    let packs = app
        .send(Req::get("/api/v1/credits/packs"))
        .await
        .expect(200);
    let mut expected = seed_000_packs().as_array().unwrap().clone();
    expected.insert(
        0,
        json!({"id":"pack_tiny","name":"Tiny","credits":10,"priceCents":100,"isPopular":false}),
    );
    assert_eq!(packs, Value::Array(expected));
    assert!(!packs.to_string().contains("pack_legacy"));
}

async fn purchase_answers_404_and_500_as_the_contract_says(backend: &'static str) {
    // A payment provider is configured (Polar), but no pack has a Polar product: the
    // contract's 500. (With no provider at all, see the 503 test below.)
    let app = with_payments(backend, |s| {
        s.polar.access_token = "polar_oat_test".into();
        s.polar.webhook_secret = "whsec_dGVzdA==".into();
        s.credits
            .packs
            .push(pack("pack_legacy", "Legacy", 2000, 9000, false));
    })
    .await;
    let (auth, _) = app.user("buyer@example.com").await;
    for missing in ["pack_nope", "pack_legacy", "", "PACK_PRO"] {
        let res = app.send(purchase_req(&auth, missing)).await;
        assert_eq!(res.status, 404, "{missing}: {}", res.text());
        // "At least {"error"}": the contract's text, plus the stable code.
        assert_eq!(res.json()["error"], "Credit pack not found");
    }
    for unconfigured in [
        "pack_starter",
        "pack_pro",
        "pack_business",
        "pack_enterprise",
    ] {
        let res = app.send(purchase_req(&auth, unconfigured)).await;
        assert_eq!(res.status, 500, "{unconfigured}: {}", res.text());
        assert_eq!(
            res.json(),
            json!({"error": "Product not configured for this pack"})
        );
        assert!(res.header("x-request-id").is_some());
    }
    // Purchase never adds credits by itself.
    assert_eq!(app.balance(&auth).await, json!(5));
    // A body without packId, or with a wrong type, is a 400 naming it.
    let err = app
        .send(
            Req::post("/api/v1/credits/purchase")
                .auth(&auth)
                .json(json!({"packId": 3})),
        )
        .await
        .expect(400);
    assert_eq!(err["field"], "packId", "{err}");
    let err = app
        .send(
            Req::post("/api/v1/credits/purchase")
                .auth(&auth)
                .json(json!({})),
        )
        .await
        .expect(400);
    assert!(err["error"].as_str().unwrap().contains("packId"), "{err}");
}

/// A payment provider that answers with a URL naming the account and the product.
struct FakeProvider;

impl api_server::checkout::CheckoutProvider for FakeProvider {
    fn create_checkout(
        &self,
        account: &ledger_core::AccountId,
        pack: &ledger_core::CreditPack,
    ) -> Result<String, api_server::checkout::CheckoutFailure> {
        match pack.product_id.as_deref() {
            None => Err(api_server::checkout::CheckoutFailure::ProductNotConfigured),
            Some("prod_down") => Err(api_server::checkout::CheckoutFailure::Provider(
                "sandbox answered 503".into(),
            )),
            Some(p) => Ok(format!(
                "https://checkout.example/{p}?account={}",
                account.as_str()
            )),
        }
    }
}

async fn purchase_returns_the_providers_checkout_url(backend: &'static str) {
    let app = TestApp::build_with_state(
        backend,
        START,
        |s| {
            s.credits.packs[1].polar_product_id = Some("prod_pro".into());
            s.credits.packs[2].polar_product_id = Some("prod_down".into());
        },
        |state| state.with_checkout(std::sync::Arc::new(FakeProvider)),
    )
    .await;
    let (auth, id) = app.user("checkout@example.com").await;
    assert_eq!(
        app.send(purchase_req(&auth, "pack_pro")).await.expect(200),
        json!({"checkoutUrl": format!("https://checkout.example/prod_pro?account={id}")})
    );
    let res = app.send(purchase_req(&auth, "pack_starter")).await;
    assert_eq!(res.status, 500);
    assert_eq!(
        res.json(),
        json!({"error": "Product not configured for this pack"})
    );
    let err = app
        .send(purchase_req(&auth, "pack_business"))
        .await
        .expect(502);
    assert!(err["error"].is_string(), "{err}");
    // Credits arrive with the payment provider's webhook, never with the checkout.
    assert_eq!(app.balance(&auth).await, json!(5));
}

async fn balances_in_three_shapes_count_holds_and_never_charge(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (auth, id) = app.user("shapes@example.com").await;
    app.adjust(&id, json!(942)).await.expect(201);
    app.debit(&id, json!(100)).await.expect(201);
    assert_eq!(
        app.send(Req::get("/api/v1/credits").auth(&auth))
            .await
            .expect(200),
        json!({"balance": 847})
    );
    // Reading the balance never consumes credits, and writes no entry.
    for _ in 0..3 {
        assert_eq!(app.balance(&auth).await, json!(847));
    }
    let txns = app.transactions(&auth).await;
    assert_eq!(txns.as_array().unwrap().len(), 3);

    // An active hold is not spendable: every shape shows usable minus holds.
    let hold = app
        .send(
            Req::post(format!("/admin/v1/accounts/{id}/holds"))
                .auth(&Auth::Admin)
                .json(json!({"amount": 800, "description": "render"})),
        )
        .await
        .expect(201);
    assert_eq!(
        app.send(Req::get("/api/v1/account/credits").auth(&auth))
            .await
            .expect(200),
        json!({"balance": 47})
    );
    let v1 = app.send(Req::get("/v1/credits").auth(&auth)).await;
    assert_eq!(
        v1.expect(200),
        json!({"credits": 47, "subscriptionStatus": "inactive"})
    );
    assert!(!v1.text().contains("subscriptionId"), "{}", v1.text());
    app.send(
        Req::post(format!(
            "/admin/v1/holds/{}/release",
            hold["holdId"].as_str().unwrap()
        ))
        .auth(&Auth::Admin),
    )
    .await
    .expect(200);
    assert_eq!(app.balance(&auth).await, json!(847));

    // With a subscription: active and its sub_ id; other statuses show as set.
    let sub = app.send(subscribe_req(&id, "basic")).await.expect(200);
    let sub_id = sub["id"].as_str().unwrap().to_owned();
    assert!(sub_id.starts_with("sub_"), "{sub}");
    assert_eq!(
        app.send(Req::get("/v1/credits").auth(&auth))
            .await
            .expect(200),
        // Subscribing granted Basic's monthly allowance of 10,000.
        json!({"credits": 10_847, "subscriptionStatus": "active", "subscriptionId": sub_id})
    );
    for status in ["past_due", "cancelled", "inactive", "active"] {
        let again = app
            .send(
                Req::put(format!("/admin/v1/accounts/{id}/subscription"))
                    .auth(&Auth::Admin)
                    .json(json!({"planId": "basic", "status": status})),
            )
            .await
            .expect(200);
        assert_eq!(again["status"], status);
        let v1 = app
            .send(Req::get("/v1/credits").auth(&auth))
            .await
            .expect(200);
        assert_eq!(v1["subscriptionStatus"], status);
        assert_eq!(v1["subscriptionId"], sub_id.as_str(), "the id is stable");
    }
}

fn fields(v: &Value) -> Vec<String> {
    let mut f: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    f.sort();
    f
}

fn is_rfc3339_millis_z(s: &str) -> bool {
    // 2026-03-24T15:30:00.000Z
    let b = s.as_bytes();
    b.len() == 24
        && s.ends_with('Z')
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && ledger_core::Timestamp::parse_rfc3339(s).is_some()
}

async fn transactions_are_newest_first_with_limit_and_offset(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (auth, id) = app.user("history@example.com").await;
    app.adjust(&id, json!(1000)).await.expect(201);
    // 120 usage entries, one a second, with references.
    for i in 0..120 {
        app.clock.advance_secs(1);
        app.send(
            Req::post(format!("/admin/v1/accounts/{id}/debits"))
                .auth(&Auth::Admin)
                .json(json!({"amount": 1, "description": format!("Screenshot captured {i}"), "referenceId": format!("scr_{i}")})),
        )
        .await
        .expect(201);
    }
    let page = |q: &str| Req::get(format!("/api/v1/credits/transactions{q}")).auth(&auth);
    let all = app.send(page("")).await.expect(200);
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 50, "limit defaults to 50");
    // Newest first, with the exact shape.
    let first = &all[0];
    assert_eq!(fields(first), ENTRY_FIELDS);
    assert_eq!(first["type"], "usage");
    assert_eq!(first["amount"], -1);
    assert_eq!(first["description"], "Screenshot captured 119");
    assert_eq!(first["referenceId"], "scr_119");
    assert_eq!(first["createdAt"], "2026-03-15T12:02:00.000Z");
    assert!(first["id"].as_str().unwrap().starts_with("txn_"), "{first}");
    for (n, t) in all.iter().enumerate() {
        assert_eq!(t["referenceId"], format!("scr_{}", 119 - n), "{t}");
        assert!(is_rfc3339_millis_z(t["createdAt"].as_str().unwrap()), "{t}");
    }
    let max = app.send(page("?limit=100")).await.expect(200);
    assert_eq!(max.as_array().unwrap().len(), 100);
    let tail = app.send(page("?limit=100&offset=100")).await.expect(200);
    let tail = tail.as_array().unwrap();
    assert_eq!(tail.len(), 22, "120 debits, the grant and the bonus");
    assert_eq!(tail[19]["referenceId"], "scr_0");
    assert_eq!(tail[20]["type"], "adjustment");
    assert_eq!(tail[20]["amount"], 1000);
    assert_eq!(tail[20]["referenceId"], Value::Null);
    assert_eq!(tail[21]["type"], "signup_bonus");
    assert_eq!(tail[21]["description"], "Welcome bonus");
    assert_eq!(tail[21]["createdAt"], "2026-03-15T12:00:00.000Z");
    let one = app.send(page("?limit=1&offset=5")).await.expect(200);
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["referenceId"], "scr_114");
    let offset_only = app.send(page("?offset=50")).await.expect(200);
    assert_eq!(offset_only.as_array().unwrap().len(), 50);
    assert_eq!(offset_only[0]["referenceId"], "scr_69");
    let beyond = app.send(page("?offset=1000")).await.expect(200);
    assert_eq!(beyond, json!([]));
    // Pages do not overlap and together are everything.
    let mut ids: Vec<String> = Vec::new();
    for offset in (0..122).step_by(25) {
        let p = app
            .send(page(&format!("?limit=25&offset={offset}")))
            .await
            .expect(200);
        ids.extend(
            p.as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_owned()),
        );
    }
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (122, 122));
    app.assert_verified().await;
}

/// `GET {path}?{q}` is answered 200 for each of `queries`.
async fn all_accepted(app: &TestApp, auth: &Auth, path: &str, queries: &[&str]) {
    for q in queries {
        let res = app.send(Req::get(format!("{path}?{q}")).auth(auth)).await;
        res.expect(200);
    }
}

async fn transactions_refuse_bad_paging_with_invalid_request(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (auth, _) = app.user("paging@example.com").await;
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=1.5", "limit"),
        ("limit=", "limit"),
        ("offset=-1", "offset"),
        ("offset=abc", "offset"),
        ("limit=10&offset=x", "offset"),
    ] {
        let res = app
            .send(Req::get(format!("/api/v1/credits/transactions?{q}")).auth(&auth))
            .await;
        let err = res.expect(400);
        assert_eq!(err["code"], "INVALID_REQUEST", "{q}: {err}");
        assert!(err["error"].as_str().unwrap().contains(field), "{q}: {err}");
        assert!(res.header("x-request-id").is_some());
    }
    // Edges that are fine.
    let fine = ["limit=1", "limit=100", "offset=0", "limit=50&offset=0"];
    all_accepted(&app, &auth, "/api/v1/credits/transactions", &fine).await;
}

async fn usage_by_month_follows_the_calendar_and_the_retention_window(backend: &'static str) {
    let app = UsageHarness::new(backend).await;
    let auth = app.auth.clone();
    let usage = |q: &str| Req::get(format!("/api/v1/credits/usage{q}")).auth(&auth);

    // Now: 2026-02-10. March 2025 is the oldest month of the 12-month window.
    let march_2025 = app.app.send(usage("?year=2025&month=3")).await.expect(200);
    assert_eq!(march_2025.as_array().unwrap().len(), 1, "{march_2025}");
    assert_eq!(march_2025[0]["source"], "Signup Bonus");
    assert_eq!(march_2025[0]["type"], "credit");
    assert_eq!(march_2025[0]["amount"], 5);
    assert_eq!(march_2025[0]["plan"], "Pay as you go");
    assert_eq!(march_2025[0]["transactionDate"], "2025-03-20T08:00:00.000Z");
    assert_eq!(march_2025[0]["description"], "Welcome bonus");

    // Move into March 2026: March 2025 leaves the window although its entry is still there.
    app.app.clock.set("2026-03-15T12:00:00.000Z");
    app.app.debit(&app.id, json!(0.6)).await.expect(201);
    app.app
        .send(
            Req::put(format!("/admin/v1/accounts/{}/subscription", app.id))
                .auth(&Auth::Admin)
                .json(json!({"planId": "basic"})),
        )
        .await
        .expect(200);
    app.app.clock.advance_secs(60);
    app.app.debit(&app.id, json!(2)).await.expect(201);
    assert_eq!(
        app.app.send(usage("?year=2025&month=3")).await.expect(200),
        json!([])
    );
    assert_eq!(
        app.app.send(usage("?year=2024&month=12")).await.expect(200),
        json!([])
    );
    assert_eq!(
        app.app.send(usage("?year=2026&month=4")).await.expect(200),
        json!([]),
        "the future is outside the window too"
    );
    // April 2025 is still inside and holds the adjustment made then.
    let april = app.app.send(usage("?year=2025&month=4")).await.expect(200);
    assert_eq!(april.as_array().unwrap().len(), 1, "{april}");
    assert_eq!(april[0]["source"], "Adjustment");
    assert_eq!(april[0]["amount"], 50);

    // No parameters: the current month, newest first, with every field.
    let now = app.app.send(usage("")).await.expect(200);
    let now = now.as_array().unwrap();
    // The debit, the allowance granted by subscribing, the debit before it.
    assert_eq!(now.len(), 3, "{now:?}");
    assert_eq!(
        fields(&now[0]),
        [
            "amount",
            "description",
            "plan",
            "source",
            "transactionDate",
            "transactionId",
            "type"
        ]
    );
    assert_eq!(now[0]["type"], "debit");
    assert_eq!(now[0]["amount"], 2, "debits are positive");
    assert_eq!(now[0]["plan"], "Basic", "made after subscribing");
    assert_eq!(now[0]["source"], "Usage");
    assert_eq!(now[0]["description"], "Test debit");
    assert_eq!(now[0]["transactionDate"], "2026-03-15T12:01:00.000Z");
    assert_eq!(now[1]["source"], "Monthly Reset");
    assert_eq!(now[1]["amount"], 10_000);
    assert_eq!(now[2]["amount"], 0.6);
    assert_eq!(now[2]["plan"], "Pay as you go", "made before subscribing");
    // The transaction ids are those of the transaction history.
    let txns = app
        .app
        .send(Req::get("/api/v1/credits/transactions?limit=2").auth(&auth))
        .await
        .expect(200);
    assert_eq!(now[0]["transactionId"], txns[0]["id"]);
    assert_eq!(now[1]["transactionId"], txns[1]["id"]);
    // month alone: that month of the current year; year+month: the same.
    assert_eq!(
        app.app.send(usage("?month=3")).await.expect(200),
        Value::Array(now.clone())
    );
    assert_eq!(
        app.app.send(usage("?year=2026&month=3")).await.expect(200),
        Value::Array(now.clone())
    );
    // January 2026 holds a refund-like credit and a debit made on its last millisecond.
    let january = app.app.send(usage("?month=1")).await.expect(200);
    let january = january.as_array().unwrap();
    assert_eq!(january.len(), 2, "{january:?}");
    assert_eq!(january[0]["transactionDate"], "2026-01-31T23:59:59.999Z");
    assert_eq!(january[0]["type"], "debit");
    assert_eq!(january[1]["type"], "credit");
    assert_eq!(january[1]["source"], "Adjustment");
    assert_eq!(january[1]["amount"], 10);
    // February 2026: the entry made on its first millisecond, not January's.
    let february = app.app.send(usage("?month=2")).await.expect(200);
    assert_eq!(february.as_array().unwrap().len(), 1, "{february}");
    assert_eq!(february[0]["transactionDate"], "2026-02-01T00:00:00.000Z");
    assert_eq!(february[0]["source"], "Refund");
    assert_eq!(february[0]["type"], "credit");
}

/// An account whose history spans a year: made 2025-03-20, an adjustment in April 2025, a
/// debit and an adjustment in January 2026 (the debit on its last millisecond), and a
/// refund on the first millisecond of February 2026. Ends at 2026-02-10.
struct UsageHarness {
    app: TestApp,
    auth: Auth,
    id: String,
}

impl UsageHarness {
    async fn new(backend: &'static str) -> UsageHarness {
        let app = TestApp::with_clock_at(backend, "2025-03-20T08:00:00.000Z").await;
        let (auth, id) = app.user("months@example.com").await;
        app.clock.set("2025-04-02T10:00:00.000Z");
        app.adjust(&id, json!(50)).await.expect(201);
        app.clock.set("2026-01-05T10:00:00.000Z");
        app.adjust(&id, json!(10)).await.expect(201);
        app.clock.set("2026-01-31T23:59:59.999Z");
        let debit = app.debit(&id, json!(3)).await.expect(201);
        app.clock.set("2026-02-01T00:00:00.000Z");
        app.send(
            Req::post(format!("/admin/v1/accounts/{id}/refunds"))
                .auth(&Auth::Admin)
                .json(json!({"transactionId": debit["id"], "amount": 1})),
        )
        .await
        .expect(201);
        app.clock.set("2026-02-10T00:00:00.000Z");
        UsageHarness { app, auth, id }
    }
}

async fn usage_refuses_bad_months(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (auth, _) = app.user("badmonth@example.com").await;
    let res = app
        .send(Req::get("/api/v1/credits/usage?year=2026").auth(&auth))
        .await;
    let err = res.expect(400);
    assert_eq!(err["code"], "INVALID_REQUEST");
    assert_eq!(err["message"], "month is required when year is provided");
    assert!(err["error"].is_string(), "{err}");
    for q in [
        "month=0",
        "month=13",
        "month=x",
        "month=-1",
        "month=1.5",
        "month=",
        "year=2026&month=0",
        "year=2026&month=13",
        "year=abc&month=3",
    ] {
        let err = app
            .send(Req::get(format!("/api/v1/credits/usage?{q}")).auth(&auth))
            .await
            .expect(400);
        assert_eq!(err["code"], "INVALID_REQUEST", "{q}: {err}");
        assert!(err["error"].is_string(), "{q}: {err}");
    }
    let fine = ["month=1", "month=12", "year=2026&month=3", "month=03"];
    all_accepted(&app, &auth, "/api/v1/credits/usage", &fine).await;
}

async fn fractional_credits_print_exactly(backend: &'static str) {
    let app = TestApp::new(backend).await;
    let (auth, id) = app.user("fractions@example.com").await;
    // 5 - 4.4 = 0.6 exactly (0.6000001 would be a float sum).
    let res = app.debit(&id, json!(4.4)).await;
    res.expect(201);
    assert_eq!(res.header("x-credits-remaining"), Some("0.6"));
    assert_eq!(res.header("x-credits-charged"), Some("4.4"));
    let bal = app.send(Req::get("/api/v1/credits").auth(&auth)).await;
    assert_eq!(bal.text(), r#"{"balance":0.6}"#);
    let v1 = app.send(Req::get("/v1/credits").auth(&auth)).await;
    assert!(v1.text().contains(r#""credits":0.6,"#), "{}", v1.text());
    // Tenths add up exactly.
    for _ in 0..3 {
        app.adjust(&id, json!(0.1)).await.expect(201);
    }
    let bal = app
        .send(Req::get("/api/v1/account/credits").auth(&auth))
        .await;
    assert_eq!(bal.text(), r#"{"balance":0.9}"#);
    let txns = app
        .send(Req::get("/api/v1/credits/transactions?limit=4").auth(&auth))
        .await;
    let text = txns.text();
    assert!(text.contains(r#""amount":0.1,"#), "{text}");
    assert!(text.contains(r#""amount":-4.4,"#), "{text}");
    let usage = app
        .send(Req::get("/api/v1/credits/usage").auth(&auth))
        .await
        .text();
    assert!(usage.contains(r#""amount":4.4,"#), "{usage}");
    // More than three decimals is refused, naming the field.
    let err = app.debit(&id, json!(0.0001)).await.expect(400);
    assert_eq!(err["field"], "amount", "{err}");
    assert_eq!(app.balance(&auth).await, json!(0.9));
}

async fn with_payments(
    backend: &'static str,
    edit: impl FnOnce(&mut settings::Settings),
) -> TestApp {
    TestApp::with_payments(backend, edit).await
}

async fn purchase_without_a_payment_provider_is_503_and_mints_nothing(backend: &'static str) {
    // The built-in defaults: no polar.access_token, no payments.provider.
    let app = with_payments(backend, |_| {}).await;
    let (auth, id) = app.user("nopay@example.com").await;
    for pack in ["pack_starter", "pack_enterprise"] {
        let res = app.send(purchase_req(&auth, pack)).await;
        assert_eq!(res.status, 503, "{pack}: {}", res.text());
        let body = res.json();
        assert_eq!(body["code"], "PAYMENTS_NOT_CONFIGURED", "{body}");
        let message = body["error"].as_str().unwrap();
        for key in ["polar.access_token", "payments.provider"] {
            assert!(message.contains(key), "{message} does not name {key}");
        }
        assert!(res.header("retry-after").is_some());
    }
    // An unknown pack is still the contract's 404.
    let res = app.send(purchase_req(&auth, "pack_nope")).await;
    assert_eq!(res.status, 404);
    assert_eq!(app.balance(&auth).await, json!(5));
    let account = ledger_core::AccountId::new(id);
    assert!(
        app.db
            .store
            .orders()
            .checkouts_of(&account)
            .unwrap()
            .is_empty(),
        "a checkout was written"
    );
}
