//! `reconcile` credits a paid order whose webhooks never arrived, once, through the
//! receiver's own library code.

use std::fmt::Write as _;

use test_support::fake_polar::{FakePolar, KeyMode};
use test_support::polar::{bought, polar_env, polar_payments, settings_from, TOKEN};
use test_support::{account, available, c, on_both_backends, TestDb};

use crate::common::{run, run_with};

/// A legacy-mode Polar webhook secret (any string works in legacy mode).
const SECRET: &str = "whsec_cliReconcileTestSecret0123456789abcdefghijk";

fn a_missed_order_is_credited_once(db: TestDb) {
    let fake = FakePolar::start(TOKEN, SECRET, KeyMode::Legacy);
    let env = polar_env(&db.url, Some(&fake.url()), SECRET, 2);
    let settings = settings_from(env.clone(), true);
    let payments = polar_payments(&fake, &settings, db.store.clone());
    let acct = account(&db.store);
    // Bought through our checkout and paid at Polar; no webhook is ever delivered.
    bought(&fake, &payments, &acct, "pack_pro");
    assert_eq!(available(&db.store, &acct), c(0));

    // The child sells the packs as the same Polar products (a config file, as an
    // operator would write it).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("polar.toml");
    let mut toml = String::new();
    for p in &settings.credits.packs {
        writeln!(
            toml,
            "[[credits.packs]]\nid = \"{}\"\nname = \"{}\"\ncredits = {}\nprice_cents = {}\npopular = {}\nactive = {}\npolar_product_id = \"{}\"\n",
            p.id,
            p.name,
            p.credits,
            p.price_cents,
            p.popular,
            p.active,
            p.polar_product_id.as_deref().unwrap()
        )
        .unwrap();
    }
    std::fs::write(&file, toml).unwrap();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let config = file.to_str().unwrap();

    let json = run_with(&env, &["--json", "--config", config, "reconcile"], None)
        .expect(0)
        .json();
    assert_eq!(
        json,
        serde_json::json!({ "orders": 1, "credited": 1, "refunds": 0, "refused": 0 })
    );
    assert_eq!(available(&db.store, &acct), c(1000));
    let r = run_with(&env, &["--config", config, "reconcile"], None).expect(0);
    assert!(
        r.stdout
            .starts_with("Polar listed 1 paid orders: 0 credited now"),
        "{r:?}"
    );
    assert_eq!(available(&db.store, &acct), c(1000));
    run(&db.url, &["verify"]).expect(0);

    // Without Polar configured there is nothing to ask: exit 2 naming the setting.
    let r = run(&db.url, &["reconcile"]).expect(2);
    assert!(r.stderr.contains("polar.access_token"), "{r:?}");
}

on_both_backends!(a_missed_order_is_credited_once);
