//! `verify`, `compact`, `prune` and `backup` on both backends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ledger_core::{Credits, GrantSource, GrantSpec, Memo, Timestamp};
use ledger_store::{Backend, Operation, PoolOptions, Store};
use test_support::{account_at, at, available, c, now, on_both_backends, TestDb};

use crate::common::{run, run_with};

fn verify_is_clean_and_exits_1_on_an_injected_violation(db: TestDb) {
    let acct = account_at(&db.store, c(5), now());
    let r = run(&db.url, &["verify"]).expect(0);
    assert_eq!(
        r.stdout.trim(),
        "verified 1 accounts and 1 entries: no violations"
    );
    let json = run(&db.url, &["--json", "verify"]).expect(0).json();
    assert_eq!(
        json,
        serde_json::json!({ "ok": true, "accounts": 1, "entries": 1, "violations": [] })
    );

    // The account row now claims 1,000 credits its entries do not hold.
    db.store
        .execute_batch(&format!(
            "UPDATE accounts SET balance = balance + 1000000 WHERE id = '{}'",
            acct.as_str()
        ))
        .unwrap();
    let r = run(&db.url, &["verify"]).expect(1);
    assert!(r.stdout.contains("violation(s)"), "{r:?}");
    assert!(r.stdout.contains(acct.as_str()), "{r:?}");
    let json = run(&db.url, &["--json", "verify"]).expect(1).json();
    assert_eq!(json["ok"], false);
    let violations = json["violations"].as_array().unwrap();
    assert!(!violations.is_empty(), "{json}");
    assert!(violations
        .iter()
        .all(|v| v["accountId"] == acct.as_str() && v["message"].is_string()));
}

fn compact_drops_old_history_and_keeps_the_balance(db: TestDb) {
    // A bonus from 2026-03-01, then a grant now: with one month of retention the old
    // entry goes, the balance stays.
    let acct = account_at(&db.store, c(5), at(0));
    grant(&db.store, &acct, c(7), now());
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("SHOTLEDGER__CREDITS__RETENTION_MONTHS", "1"),
    ];
    let json = run_with(&env, &["--json", "compact"], None)
        .expect(0)
        .json();
    assert_eq!(
        json,
        serde_json::json!({ "accounts": 1, "entriesRemoved": 1, "idempotencyKeysRemoved": 0, "retentionMonths": 1 })
    );
    assert_eq!(available(&db.store, &acct), c(12));
    let r = run_with(&env, &["compact"], None).expect(0);
    assert!(
        r.stdout.starts_with("compacted 0 accounts: 0 entries"),
        "{r:?}"
    );
    let json = run(&db.url, &["--json", "verify"]).expect(0).json();
    assert_eq!(json["entries"], 1);
}

fn grant(store: &Store, acct: &ledger_core::AccountId, amount: Credits, when: Timestamp) {
    let applied = store
        .ledger()
        .apply(
            acct,
            None,
            Operation::Credit {
                spec: GrantSpec::new(GrantSource::Adjustment, amount),
                memo: Memo::new("test grant".to_owned()),
            },
            when,
        )
        .unwrap();
    applied.result.unwrap();
}

fn prune_removes_what_ended_before_the_cutoff_never_what_is_open(db: TestDb) {
    let acct = account_at(&db.store, c(5), now());
    let (old, recent) = (at(0).millis(), now().plus_secs(-86_400).millis());
    let far = now().plus_secs(86_400 * 365).millis();
    let a = acct.as_str();
    db.store
        .execute_batch(&format!(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, body, received_at, attempts, processed_at, outcome) VALUES
               ('old_done', 'order.paid', '{{}}', {old}, 1, {old}, 'credited'),
               ('old_open', 'order.paid', '{{}}', {old}, 3, NULL, NULL),
               ('new_done', 'order.paid', '{{}}', {recent}, 1, {recent}, 'credited');
             INSERT INTO sessions (token_hash, account_id, created_at, expires_at, revoked_at, member_id) VALUES
               ('h_expired', '{a}', {old}, {old}, NULL, NULL),
               ('h_revoked', '{a}', {old}, {far}, {old}, NULL),
               ('h_live', '{a}', {old}, {far}, NULL, NULL),
               ('h_recently_expired', '{a}', {recent}, {recent}, NULL, NULL);
             INSERT INTO webhook_endpoints (id, account_id, url, events, secret, next_seq, created_at, deleted_at) VALUES
               ('we_1', '{a}', 'https://example.com/hook', 'credits.low', 'whsec_x', 6, {old}, NULL);
             INSERT INTO notification_deliveries (id, endpoint_id, account_id, seq, event, payload, status, attempts, next_attempt_at, last_attempt_at, response_status, created_at) VALUES
               ('nd_old_delivered', 'we_1', '{a}', 0, 'credits.low', '{{}}', 'delivered', 1, {old}, {old}, 200, {old}),
               ('nd_old_failed', 'we_1', '{a}', 1, 'credits.low', '{{}}', 'failed', 8, {old}, {old}, 500, {old}),
               ('nd_old_pending', 'we_1', '{a}', 2, 'credits.low', '{{}}', 'pending', 3, {far}, {old}, 503, {old}),
               ('nd_old_pending_untried', 'we_1', '{a}', 3, 'credits.low', '{{}}', 'pending', 0, {old}, NULL, NULL, {old}),
               ('nd_recent_delivered', 'we_1', '{a}', 4, 'credits.low', '{{}}', 'delivered', 1, {recent}, {recent}, 200, {recent}),
               ('nd_old_made_recently_failed', 'we_1', '{a}', 5, 'credits.low', '{{}}', 'failed', 8, {recent}, {recent}, 500, {old});"
        ))
        .unwrap();
    let left = |store: &Store| -> Vec<String> {
        let mut ids: Vec<String> = store
            .notifications()
            .deliveries(&acct, "we_1", 100)
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        ids.sort();
        ids
    };
    let all = left(&db.store);
    assert_eq!(all.len(), 6, "{all:?}");
    let args = ["--json", "prune", "--older-than", "30", "--dry-run"];
    let json = run(&db.url, &args).expect(0).json();
    assert_eq!(json["webhookDeliveries"], 1, "{json}");
    assert_eq!(json["sessions"], 2, "{json}");
    assert_eq!(json["notificationDeliveries"], 2, "{json}");
    assert_eq!(json["dryRun"], true);
    assert_eq!(json["olderThanDays"], 30);
    // A dry run removed nothing.
    let again = run(&db.url, &args).expect(0).json();
    assert_eq!(
        (&again["webhookDeliveries"], &again["sessions"]),
        (&json["webhookDeliveries"], &json["sessions"])
    );
    assert!(db.store.orders().delivery("old_done").unwrap().is_some());
    assert_eq!(left(&db.store), all);

    let r = run(&db.url, &["prune", "--older-than", "30"]).expect(0);
    assert!(
        r.stdout.starts_with("removed 1 processed webhook deliveries, 2 expired or revoked sessions and 2 delivered or failed notifications older than 30 days"),
        "{r:?}"
    );
    let orders = db.store.orders();
    assert!(orders.delivery("old_done").unwrap().is_none());
    assert!(
        orders.delivery("old_open").unwrap().is_some(),
        "unprocessed"
    );
    assert!(orders.delivery("new_done").unwrap().is_some(), "recent");
    // Pending notifications stay however old; ended ones stay until they are old.
    assert_eq!(
        left(&db.store),
        [
            "nd_old_made_recently_failed",
            "nd_old_pending",
            "nd_old_pending_untried",
            "nd_recent_delivered"
        ]
    );
    let access = db.store.access();
    assert_eq!(
        access.session_account("h_live", now()).unwrap(),
        Some(acct.clone())
    );
    let json = run(&db.url, &args).expect(0).json();
    assert_eq!(
        (
            json["webhookDeliveries"].clone(),
            json["sessions"].clone(),
            json["notificationDeliveries"].clone()
        ),
        (0.into(), 0.into(), 0.into())
    );
    assert_eq!(available(&db.store, &acct), c(5));
    run(&db.url, &["verify"]).expect(0);
}

fn backup_copies_sqlite_while_another_connection_writes(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("copy.db");
    let dest_s = dest.to_str().unwrap().to_owned();
    if db.store.backend() == Backend::Postgres {
        let r = run(&db.url, &["backup", &dest_s]).expect(2);
        assert!(r.stderr.contains("pg_dump --format=custom"), "{r:?}");
        assert!(r.stderr.contains(&dest_s), "{r:?}");
        assert!(!dest.exists());
        return;
    }
    let still = account_at(&db.store, c(5), now());
    let busy = account_at(&db.store, c(5), now());
    for _ in 0..200 {
        grant(&db.store, &busy, c(1), now());
    }
    // Another connection (another store on the same file) grants all along.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, stop, busy) = (db.url.clone(), stop.clone(), busy.clone());
        std::thread::spawn(move || {
            let other = Store::open(&url, &PoolOptions::default()).unwrap();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                grant(&other, &busy, c(1), now());
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    let json = run(&db.url, &["--json", "backup", &dest_s])
        .expect(0)
        .json();
    stop.store(true, Ordering::SeqCst);
    let granted_meanwhile = writer.join().unwrap();
    assert!(granted_meanwhile > 0, "the writer never wrote");
    assert_eq!(json["path"], dest_s.as_str());
    assert_eq!(json["bytes"], std::fs::metadata(&dest).unwrap().len());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("copy.db")]);

    // The copy opens, verifies clean, and holds the same balances: the quiet account's
    // exactly, the busy one's as it stood at some instant of the writes.
    let copy_url = format!("sqlite://{dest_s}");
    let v = run(&copy_url, &["--json", "verify"]).expect(0).json();
    assert_eq!(v["accounts"], 2);
    let copy = Store::open(&copy_url, &PoolOptions::default()).unwrap();
    assert_eq!(available(&copy, &still), c(5));
    let busy_in_copy = available(&copy, &busy);
    assert!(
        busy_in_copy >= c(205) && busy_in_copy <= available(&db.store, &busy),
        "{busy_in_copy}"
    );

    // An existing destination is refused and left as it was.
    let before = std::fs::read(&dest).unwrap();
    let r = run(&db.url, &["backup", &dest_s]).expect(2);
    assert!(r.stderr.contains("exists"), "{r:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), before);
    let r = run(&db.url, &["backup", "/no/such/folder/x.db"]).expect(2);
    assert!(r.stderr.contains("does not exist"), "{r:?}");
    let r = run(
        &db.url,
        &["backup", dir.path().join("human.db").to_str().unwrap()],
    )
    .expect(0);
    assert!(r.stdout.starts_with("copied the SQLite database"), "{r:?}");
}

on_both_backends!(
    verify_is_clean_and_exits_1_on_an_injected_violation,
    compact_drops_old_history_and_keeps_the_balance,
    prune_removes_what_ended_before_the_cutoff_never_what_is_open,
    backup_copies_sqlite_while_another_connection_writes,
);
