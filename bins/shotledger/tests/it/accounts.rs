//! `accounts create|show`, `credits grant` (idempotent, sharing the admin API's keys) and
//! `keys revoke`, checked against the api-server's app built in-process on the same
//! database.

use actix_web::test::{self as actix_test, TestRequest};
use api_server::{app, system_clock, AppState};
use ledger_core::{AccountId, Credits};
use ledger_store::NewApiKey;
use serde_json::{json, Value};
use settings::Sources;
use test_support::{account_at, available, c, now, on_both_backends, TestDb, ADMIN};

use crate::common::{run, run_with};

const PASSWORD: &str = "correct horse battery";

fn accounts_are_created_with_the_signup_bonus_and_shown(db: TestDb) {
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("SHOTLEDGER__CREDITS__SIGNUP_BONUS", "7.5"),
    ];
    let stdin = format!("{PASSWORD}\n");
    let r = run_with(
        &env,
        &[
            "--json",
            "accounts",
            "create",
            "--email",
            " Ops@Example.com ",
            "--password-stdin",
        ],
        Some(&stdin),
    )
    .expect(0);
    let made = r.json();
    let id = made["accountId"].as_str().unwrap().to_owned();
    assert!(id.starts_with("acct_"), "{made}");
    assert_eq!(made["email"], "ops@example.com");
    assert_eq!(made["balance"], json!(7.5));
    let acct = AccountId::new(id.clone());
    assert_eq!(available(&db.store, &acct), Credits::from_millis(7_500));
    let login = db
        .store
        .members()
        .login("ops@example.com")
        .unwrap()
        .unwrap();
    assert!(api_server::auth::verify_password(
        PASSWORD,
        login.password_hash.as_deref()
    ));

    // Shown by id and by email, text and JSON.
    let r = run(&db.url, &["accounts", "show", &id]).expect(0);
    assert!(r.stdout.contains(&format!("account  {id}")), "{r:?}");
    assert!(r.stdout.contains("balance  7.5\n"), "{r:?}");
    assert!(r.stdout.contains("plan     none"), "{r:?}");
    assert!(r.stdout.contains("keys     0 live"), "{r:?}");
    let shown = run(&db.url, &["--json", "accounts", "show", "OPS@example.com"])
        .expect(0)
        .json();
    assert_eq!(shown["accountId"], id.as_str());
    assert_eq!(shown["email"], "ops@example.com");
    assert_eq!(shown["balance"], json!(7.5));
    assert_eq!(shown["plan"], Value::Null);
    assert_eq!(shown["keys"], 0);
    assert!(shown["createdAt"].is_string());

    // The text form says the same.
    let r = run_with(
        &env,
        &[
            "accounts",
            "create",
            "--email",
            "two@example.com",
            "--password",
            PASSWORD,
        ],
        None,
    )
    .expect(0);
    assert!(r.stdout.starts_with("created account acct_"), "{r:?}");
    assert!(r.stdout.contains("(two@example.com), balance 7.5"), "{r:?}");

    // Bad input exits 2 naming the flag and creates nothing; a taken email exits 1.
    let r = run(
        &db.url,
        &["accounts", "create", "--email", "not-an-address"],
    )
    .expect(2);
    assert!(r.stderr.contains("--email"), "{r:?}");
    let r = run(
        &db.url,
        &[
            "accounts",
            "create",
            "--email",
            "x@example.com",
            "--password",
            "short",
        ],
    )
    .expect(2);
    assert!(r.stderr.contains("--password"), "{r:?}");
    assert!(db.store.members().login("x@example.com").unwrap().is_none());
    let r = run(
        &db.url,
        &["accounts", "create", "--email", "ops@example.com"],
    )
    .expect(1);
    assert!(r.stderr.contains("already exists"), "{r:?}");
    let r = run(&db.url, &["accounts", "show", "acct_nobody"]).expect(1);
    assert!(r.stderr.contains("acct_nobody"), "{r:?}");
    run(&db.url, &["accounts", "show", "nobody@example.com"]).expect(1);
}

fn grants_are_adjustments_and_each_call_without_a_key_grants(db: TestDb) {
    let acct = account_at(&db.store, c(5), now());
    let id = acct.as_str();
    let first = run(
        &db.url,
        &[
            "--json", "credits", "grant", id, "100", "--reason", "goodwill",
        ],
    )
    .expect(0)
    .json();
    assert_eq!(first["replayed"], false);
    assert_eq!(first["balance"], 105);
    let t = &first["transaction"];
    assert_eq!(t["type"], "adjustment");
    assert_eq!(t["amount"], 100);
    assert_eq!(t["description"], "goodwill");
    assert!(t["id"].as_str().unwrap().len() > 4);
    let r = run(
        &db.url,
        &["credits", "grant", id, "100", "--reason", "goodwill"],
    )
    .expect(0);
    assert!(r.stdout.starts_with("entry "), "{r:?}");
    assert!(
        !r.stdout.contains(t["id"].as_str().unwrap()),
        "a new entry: {r:?}"
    );
    assert!(r.stdout.contains("balance 205"), "{r:?}");
    assert_eq!(available(&db.store, &acct), c(205));

    // Negative amounts follow the admin rule: never below zero.
    let r = run(
        &db.url,
        &["credits", "grant", id, "-1000", "--reason", "oops"],
    )
    .expect(1);
    assert!(r.stderr.contains("insufficient credits"), "{r:?}");
    assert_eq!(available(&db.store, &acct), c(205));
    let taken = run(
        &db.url,
        &["--json", "credits", "grant", id, "-5.25", "--reason", "fix"],
    )
    .expect(0)
    .json();
    assert_eq!(taken["transaction"]["amount"], json!(-5.25));
    assert_eq!(available(&db.store, &acct), Credits::from_millis(199_750));

    // Bad input: exit 2 naming what to fix, nothing granted.
    for (args, names) in [
        (vec!["1.2345", "--reason", "x"], "AMOUNT"),
        (vec!["ten", "--reason", "x"], "AMOUNT"),
        (vec!["0", "--reason", "x"], "AMOUNT"),
        (vec!["5", "--reason", "  "], "--reason"),
        (
            vec!["5", "--reason", "x", "--idempotency-key", "has space"],
            "--idempotency-key",
        ),
    ] {
        let mut all = vec!["credits", "grant", id];
        all.extend(args.iter().copied());
        let r = run(&db.url, &all).expect(2);
        assert!(r.stderr.contains(names), "{names}: {r:?}");
    }
    assert_eq!(available(&db.store, &acct), Credits::from_millis(199_750));
    let r = run(
        &db.url,
        &["credits", "grant", "acct_nobody", "5", "--reason", "x"],
    )
    .expect(1);
    assert!(r.stderr.contains("acct_nobody"), "{r:?}");
}

/// The api-server's app on `db`, with the admin token of the tests.
async fn api(
    db: &TestDb,
) -> impl actix_web::dev::Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
    Error = actix_web::Error,
> {
    let settings = settings::Settings::load(Sources {
        file: None,
        working_folder_defaults: false,
        env: vec![
            ("DATABASE_URL".into(), db.url.clone()),
            ("SHOTLEDGER__ADMIN__TOKEN".into(), ADMIN.into()),
        ],
    })
    .unwrap();
    let state = AppState::new(db.store.clone(), settings, system_clock()).unwrap();
    actix_test::init_service(app(state)).await
}

/// `POST /admin/v1/accounts/{id}/credits` with `body` under `key`: status and body.
async fn admin_grant(
    svc: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
    id: &str,
    key: &str,
    body: Value,
) -> (u16, Value) {
    let req = TestRequest::post()
        .uri(&format!("/admin/v1/accounts/{id}/credits"))
        .insert_header(("authorization", format!("Bearer {ADMIN}")))
        .insert_header(("idempotency-key", key))
        .insert_header(("content-type", "application/json"))
        .set_payload(body.to_string())
        .to_request();
    let res = actix_test::call_service(svc, req).await;
    let status = res.status().as_u16();
    let body = actix_test::read_body(res).await;
    (status, serde_json::from_slice(&body).unwrap())
}

async fn a_grant_replays_across_the_cli_and_the_admin_api(db: TestDb) {
    let svc = api(&db).await;
    let acct = account_at(&db.store, c(5), now());
    let id = acct.as_str();

    // The CLI first, then the admin API with the same key and grant: the same entry.
    let cli = run(
        &db.url,
        &[
            "--json",
            "credits",
            "grant",
            id,
            "100",
            "--reason",
            "goodwill",
            "--idempotency-key",
            "k-cli-1",
        ],
    )
    .expect(0)
    .json();
    assert_eq!(cli["replayed"], false);
    let entry = cli["transaction"]["id"].as_str().unwrap().to_owned();
    let (status, body) = admin_grant(
        &svc,
        id,
        "k-cli-1",
        json!({ "amount": 100, "description": "goodwill" }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], entry.as_str());
    assert_eq!(available(&db.store, &acct), c(105));

    // The admin API first, then the CLI: replayed, the same entry, nothing granted.
    let (status, body) = admin_grant(
        &svc,
        id,
        "k-api-1",
        json!({ "amount": 2.5, "description": "outage" }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let r = run(
        &db.url,
        &[
            "--json",
            "credits",
            "grant",
            id,
            "2.5",
            "--reason",
            "outage",
            "--idempotency-key",
            "k-api-1",
        ],
    )
    .expect(0);
    let replay = r.json();
    assert_eq!(replay["replayed"], true);
    assert_eq!(replay["transaction"]["id"], body["id"]);
    assert_eq!(replay["balance"], json!(107.5));
    let r = run(
        &db.url,
        &[
            "credits",
            "grant",
            id,
            "2.5",
            "--reason",
            "outage",
            "--idempotency-key",
            "k-api-1",
        ],
    )
    .expect(0);
    assert!(r.stdout.starts_with("replayed: entry "), "{r:?}");
    assert_eq!(available(&db.store, &acct), Credits::from_millis(107_500));

    // The same key with another grant is a conflict through either, and changes nothing.
    let r = run(
        &db.url,
        &[
            "credits",
            "grant",
            id,
            "3",
            "--reason",
            "outage",
            "--idempotency-key",
            "k-api-1",
        ],
    )
    .expect(1);
    assert!(r.stderr.contains("Idempotency-Key `k-api-1`"), "{r:?}");
    let (status, _) = admin_grant(
        &svc,
        id,
        "k-cli-1",
        json!({ "amount": 100, "description": "another reason" }),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(available(&db.store, &acct), Credits::from_millis(107_500));
    run(&db.url, &["verify"]).expect(0);
}

async fn a_revoked_key_stops_working_at_once(db: TestDb) {
    let svc = api(&db).await;
    let acct = account_at(&db.store, c(5), now());
    let (key, prefix) = api_server::auth::new_api_key().unwrap();
    let hash = api_server::auth::sha256_hex(&key);
    let stored = db
        .store
        .access()
        .create_api_key(
            &acct,
            &NewApiKey {
                name: "ci",
                prefix: &prefix,
                key_hash: &hash,
                signing_secret: None,
            },
            now(),
        )
        .unwrap();
    let balance = || {
        TestRequest::get()
            .uri("/api/v1/credits")
            .insert_header(("x-api-key", key.clone()))
            .to_request()
    };
    let res = actix_test::call_service(&svc, balance()).await;
    assert_eq!(res.status().as_u16(), 200);
    let api_balance: Value = serde_json::from_slice(&actix_test::read_body(res).await).unwrap();

    // `accounts show` gives the balance exactly as /api/v1/credits does.
    let shown = run(&db.url, &["--json", "accounts", "show", acct.as_str()])
        .expect(0)
        .json();
    assert_eq!(shown["balance"], api_balance["balance"]);
    assert_eq!(shown["keys"], 1);

    let r = run(&db.url, &["--json", "keys", "revoke", &stored.id]).expect(0);
    assert_eq!(
        r.json(),
        json!({ "keyId": stored.id, "accountId": acct.as_str(), "revoked": true })
    );
    let res = actix_test::call_service(&svc, balance()).await;
    assert_eq!(res.status().as_u16(), 401);
    let r = run(&db.url, &["keys", "revoke", &stored.id]).expect(1);
    assert!(r.stderr.contains("no live API key"), "{r:?}");
    let shown = run(&db.url, &["--json", "accounts", "show", acct.as_str()]).json();
    assert_eq!(shown["keys"], 0);
    run(&db.url, &["keys", "revoke", "key_nonexistent"]).expect(1);
}

on_both_backends!(
    accounts_are_created_with_the_signup_bonus_and_shown,
    grants_are_adjustments_and_each_call_without_a_key_grants,
    a_grant_replays_across_the_cli_and_the_admin_api,
    a_revoked_key_stops_working_at_once,
);
