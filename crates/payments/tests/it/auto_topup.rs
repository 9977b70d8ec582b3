//! Auto top-up: settings, one top-up per crossing, credits only when paid, pause on a
//! declined payment, and Polar's refusal. On SQLite and PostgreSQL.

use crate::common;

use common::*;
use ledger_core::EntryKind;
use ledger_store::payments::{PaidOutcome, RefundAmount, TopupCharge};
use payments::{AutoTopupRequest, ChargeResult, PaymentsError, SavedMethodCharger};
use test_support::on_both_backends;
use test_support::TestDb;

struct Declines;

impl SavedMethodCharger for Declines {
    fn charge(&self, _: &TopupCharge) -> ChargeResult {
        ChargeResult::Declined("card declined".into())
    }
}

/// Buys `pack_id` in demo mode and processes every event the demo payment sends; the
/// order id the last event names.
fn demo_buy(p: &payments::Payments, acct: &ledger_core::AccountId, pack_id: &str) -> String {
    let url = p.create_checkout(acct, &pack(p, pack_id)).unwrap();
    let mut order_id = String::new();
    for d in p
        .demo_pay(url.rsplit('/').next().unwrap(), now())
        .unwrap()
        .unwrap()
    {
        let e: serde_json::Value = serde_json::from_str(&d.body).unwrap();
        order_id = e["data"]["id"].as_str().unwrap().to_owned();
        p.process_event(e["type"].as_str().unwrap(), &d.body, now())
            .unwrap();
    }
    order_id
}

fn request(enabled: bool, threshold: i64, pack: &str) -> AutoTopupRequest {
    AutoTopupRequest {
        enabled,
        threshold_credits: c(threshold),
        pack_id: pack.into(),
    }
}

fn demo_auto_topup_buys_once_and_pauses_on_decline(db: TestDb) {
    let p = startup::payments(&demo_settings(&db), db.store.clone()).unwrap();
    let acct = account(&db.store);
    assert_eq!(p.get_auto_topup(&acct).unwrap().status, "disabled");
    assert!(matches!(
        p.put_auto_topup(&acct, &request(true, 50, "pack_nope"), now()),
        Err(PaymentsError::UnknownPack { .. })
    ));
    let view = p
        .put_auto_topup(&acct, &request(true, 50, "pack_starter"), now())
        .unwrap();
    assert_eq!(
        (view.enabled, view.status.as_str(), view.threshold_credits),
        (true, "active", c(50))
    );
    // Buy 100 credits, spend 60: 40 < 50 starts exactly one top-up.
    demo_buy(&p, &acct, "pack_starter");
    assert_eq!(
        standalone_topup(&db.store, &acct),
        None,
        "100 is above the threshold"
    );
    // The charge itself starts the top-up, in its own transaction (after_charge is wired
    // into the ledger's write path); a standalone check finds it already in flight.
    spend(&db.store, &acct, 60);
    assert_eq!(p.get_auto_topup(&acct).unwrap().status, "pending");
    assert_eq!(
        standalone_topup(&db.store, &acct),
        None,
        "the charge already started one"
    );
    spend(&db.store, &acct, 10);
    assert_eq!(
        standalone_topup(&db.store, &acct),
        None,
        "one in flight at most"
    );
    assert_eq!(p.get_auto_topup(&acct).unwrap().status, "pending");
    assert_eq!(
        available(&db.store, &acct),
        c(30),
        "no credits before the payment is confirmed"
    );
    let pending = db.store.orders().pending_topup_charges(10).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(p.run_auto_topups(now()).unwrap(), 1);
    assert_eq!(available(&db.store, &acct), c(130));
    let topups = of_kind(&db.store, &acct, EntryKind::AutoTopup);
    assert_eq!(topups.len(), 1);
    assert_eq!(
        topups[0].reference_id.as_deref(),
        Some(pending[0].id.as_str()),
        "the top-up names its charge"
    );
    assert_eq!(topups[0].description, "Auto top-up: purchased 100 credits");
    assert_eq!(p.run_auto_topups(now()).unwrap(), 0, "nothing left to pay");
    assert_eq!(p.get_auto_topup(&acct).unwrap().status, "active");
    // Below again; this time the saved card is declined: paused with the reason.
    spend(&db.store, &acct, 100);
    assert_eq!(p.get_auto_topup(&acct).unwrap().status, "pending");
    assert_eq!(p.run_auto_topups_with(&Declines, now()).unwrap(), 1);
    let view = p.get_auto_topup(&acct).unwrap();
    assert_eq!(
        (view.status.as_str(), view.paused_reason.as_deref()),
        ("paused", Some("card declined"))
    );
    assert_eq!(available(&db.store, &acct), c(30));
    assert_eq!(standalone_topup(&db.store, &acct), None, "paused");
    // Saving the settings again resumes it.
    assert_eq!(
        p.put_auto_topup(&acct, &request(true, 50, "pack_starter"), now())
            .unwrap()
            .status,
        "active"
    );
    assert!(standalone_topup(&db.store, &acct).is_some());
    assert_verified(&db.store);
}

fn polar_cannot_charge_a_saved_method(db: TestDb) {
    let (_fake, p) = polar(&db);
    let acct = account(&db.store);
    match p.put_auto_topup(&acct, &request(true, 50, "pack_pro"), now()) {
        Err(PaymentsError::AutoTopupUnsupported { reason }) => {
            assert!(reason.contains("saved payment method"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // Turning it off (or keeping it off) is fine.
    let view = p
        .put_auto_topup(&acct, &request(false, 50, "pack_pro"), now())
        .unwrap();
    assert_eq!((view.enabled, view.status.as_str()), (false, "disabled"));
}

/// ADR 0203: a confirmed top-up is credited once, keyed by its charge id; ADR 0200: it
/// first pays back credits owed by an earlier refund.
fn a_top_up_credits_once_and_pays_owed_refunds_first(db: TestDb) {
    let p = startup::payments(&demo_settings(&db), db.store.clone()).unwrap();
    let acct = account(&db.store);
    p.put_auto_topup(&acct, &request(true, 50, "pack_starter"), now())
        .unwrap();
    let order_id = demo_buy(&p, &acct, "pack_starter");
    // 100 bought, 90 spent (a top-up starts), then the purchase is refunded in full:
    // the 10 left are taken back and 90 are owed.
    spend(&db.store, &acct, 90);
    db.store
        .orders()
        .apply_refund(&order_id, &RefundAmount::Cumulative { cents: 500 }, now())
        .unwrap();
    assert_eq!(available(&db.store, &acct), c(0));
    let charge = db
        .store
        .orders()
        .pending_topup_charges(10)
        .unwrap()
        .remove(0);
    assert_eq!(p.run_auto_topups(now()).unwrap(), 1);
    // The top-up's 100 pay the 90 owed first.
    assert_eq!(available(&db.store, &acct), c(10));
    let row = db.store.orders().payment_order(&order_id).unwrap().unwrap();
    assert_eq!((row.clawed_back, row.owed), (c(100).millis(), 0));
    // A second confirmation of the same charge changes nothing.
    let first = of_kind(&db.store, &acct, EntryKind::AutoTopup);
    assert_eq!(first.len(), 1);
    match db
        .store
        .orders()
        .confirm_topup_charge(&charge.id, "again", now())
        .unwrap()
    {
        PaidOutcome::AlreadyCredited { entry_id } => assert_eq!(entry_id, first[0].id),
        other => panic!("{other:?}"),
    }
    assert_eq!(available(&db.store, &acct), c(10));
    assert_eq!(of_kind(&db.store, &acct, EntryKind::AutoTopup).len(), 1);
    assert_eq!(p.get_auto_topup(&acct).unwrap().status, "active");
    assert_verified(&db.store);
}

on_both_backends!(
    demo_auto_topup_buys_once_and_pauses_on_decline,
    polar_cannot_charge_a_saved_method,
    a_top_up_credits_once_and_pays_owed_refunds_first
);
