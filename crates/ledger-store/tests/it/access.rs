//! The read path of an authenticated request (`store.access()`): an API key, its holder
//! and its account's balance in one call (`key_caller_and_balance`), always what
//! `key_caller` and `Ledger::balance` answer separately, at once after every change
//! (a debit, a revocation, a removed member, an expiry, a write by another store on the
//! same database). On SQLite and PostgreSQL.

use crate::common;

use common::*;
use ledger_core::{AccountId, Memo, Role, Timestamp};
use ledger_store::{Balance, Holder, KeyBy, KeyCaller, NewApiKey, Operation, Spend, Store};

on_both_backends!(
    the_key_and_the_balance_come_together_as_read_apart,
    every_change_shows_in_the_next_read,
    a_revoked_key_or_removed_member_reads_as_refused_at_once,
    an_expired_hold_is_folded_back_into_the_balance,
    a_write_by_another_store_shows_in_the_next_read,
);

fn new_key(store: &Store, account: &AccountId, hash: &str) -> String {
    store
        .access()
        .create_api_key(
            account,
            &NewApiKey {
                name: "ci",
                prefix: "sk_live_",
                key_hash: hash,
                signing_secret: Some("ss_test"),
            },
            at(0),
        )
        .unwrap()
        .id
}

/// The combined read, which must agree with the two reads it replaces.
fn read(store: &Store, by: KeyBy<'_>, now: Timestamp) -> Option<(KeyCaller, Option<Balance>)> {
    let both = store.access().key_caller_and_balance(by, now).unwrap();
    let apart = store.access().key_caller(by).unwrap();
    assert_eq!(both.as_ref().map(|(k, _)| k), apart.as_ref());
    if let Some((key, Some(balance))) = &both {
        assert_eq!(
            balance,
            &store.ledger().balance(&key.account_id, now).unwrap()
        );
    }
    both
}

fn available(store: &Store, by: KeyBy<'_>, now: Timestamp) -> ledger_core::Credits {
    let (_, balance) = read(store, by, now).expect("a live key");
    balance.expect("the account exists").available
}

fn the_key_and_the_balance_come_together_as_read_apart(db: TestDb) {
    let s = &db.store;
    let a = account(s, 5);
    let id = new_key(s, &a, "key-hash");
    let (key, balance) = read(s, KeyBy::Hash("key-hash"), at(1)).unwrap();
    assert_eq!(key.key_id, id);
    assert_eq!(key.account_id, a);
    assert!(key.account_exists);
    assert_eq!(key.holder, Holder::Account);
    assert_eq!(key.signing_secret.as_deref(), Some("ss_test"));
    assert_eq!(
        balance,
        Some(Balance {
            available: c(5),
            book: c(5),
            held: c(0),
        })
    );
    // By id (a signed URL) the same.
    assert_eq!(read(s, KeyBy::Id(&id), at(1)).unwrap().0, key);
    // Nobody's key.
    assert_eq!(read(s, KeyBy::Hash("no such key"), at(1)), None);
    assert_eq!(read(s, KeyBy::Id("key_none"), at(1)), None);
}

fn every_change_shows_in_the_next_read(db: TestDb) {
    let s = &db.store;
    let a = account(s, 5);
    new_key(s, &a, "key-hash");
    let by = KeyBy::Hash("key-hash");
    assert_eq!(available(s, by, at(1)), c(5));
    entry(s.ledger().apply(&a, None, debit_op(c(2)), at(2)).unwrap());
    assert_eq!(available(s, by, at(2)), c(3));
    credit(s, &a, 10, at(3));
    assert_eq!(available(s, by, at(3)), c(13));
    let h = hold(
        s.ledger()
            .apply(
                &a,
                None,
                Operation::Reserve {
                    amount: c(4),
                    ttl_ms: 600_000,
                    spend: Spend::Strict,
                    memo: Memo::new("job"),
                },
                at(4),
            )
            .unwrap(),
    );
    assert_eq!(available(s, by, at(4)), c(9));
    s.ledger()
        .apply(
            &a,
            None,
            Operation::Capture {
                hold_id: h.id,
                amount: Some(c(1)),
                memo: Some(Memo::new("done")),
            },
            at(5),
        )
        .unwrap()
        .result
        .unwrap();
    assert_eq!(available(s, by, at(5)), c(12));
}

fn a_revoked_key_or_removed_member_reads_as_refused_at_once(db: TestDb) {
    let s = &db.store;
    let a = account(s, 5);
    let id = new_key(s, &a, "key-hash");
    assert!(read(s, KeyBy::Hash("key-hash"), at(1)).is_some());
    assert!(s.access().revoke_api_key(&a, &id, at(2)).unwrap());
    assert_eq!(read(s, KeyBy::Hash("key-hash"), at(2)), None);
    assert_eq!(read(s, KeyBy::Id(&id), at(2)), None);

    // A member's key: once the member is removed, the holder reads as removed and no
    // balance is read for it.
    let (account, _) = s
        .ledger()
        .create_account(
            ledger_store::NewAccount {
                email: Some("owner@example.com".into()),
                password_hash: Some("hash".into()),
                signup_bonus: c(5),
            },
            at(0),
        )
        .unwrap();
    let account = account.id;
    s.members()
        .invite(
            &account,
            "bob@example.com",
            Role::Member,
            "t1",
            at(1),
            at(3600),
        )
        .unwrap()
        .unwrap();
    let bob = s
        .members()
        .join("t1", "bob@example.com", "a hash", at(2))
        .unwrap()
        .unwrap();
    let bobs = NewApiKey {
        name: "bob",
        prefix: "sk_live_",
        key_hash: "bob-key",
        signing_secret: None,
    };
    s.members().create_api_key(&bob, &bobs, at(3)).unwrap();
    let (key, balance) = read(s, KeyBy::Hash("bob-key"), at(3)).unwrap();
    assert_eq!(key.holder, Holder::Member(bob.clone()));
    assert_eq!(balance.map(|b| b.available), Some(c(5)));
    s.members()
        .remove(&account, &bob.id, at(4))
        .unwrap()
        .unwrap();
    assert_eq!(read(s, KeyBy::Hash("bob-key"), at(4)), None);
}

fn an_expired_hold_is_folded_back_into_the_balance(db: TestDb) {
    let s = &db.store;
    let a = account(s, 5);
    new_key(s, &a, "key-hash");
    let by = KeyBy::Hash("key-hash");
    hold(
        s.ledger()
            .apply(
                &a,
                None,
                Operation::Reserve {
                    amount: c(3),
                    ttl_ms: 50_000,
                    spend: Spend::Strict,
                    memo: Memo::new("job"),
                },
                at(1),
            )
            .unwrap(),
    );
    assert_eq!(available(s, by, at(2)), c(2));
    // Past the hold's expiry the row's balance no longer holds: the read folds the book.
    assert_eq!(available(s, by, at(51)), c(5));
}

fn a_write_by_another_store_shows_in_the_next_read(db: TestDb) {
    // Another process on the same database (the webhook receiver crediting an order, the
    // operator's CLI revoking a key): a second store opened on the same URL.
    let s = &db.store;
    let other = Store::open(&db.url, &ledger_store::PoolOptions::default()).unwrap();
    let a = account(s, 5);
    let id = new_key(s, &a, "key-hash");
    let by = KeyBy::Hash("key-hash");
    assert_eq!(available(s, by, at(1)), c(5));
    credit(&other, &a, 10, at(2));
    assert_eq!(available(s, by, at(2)), c(15));
    entry(
        other
            .ledger()
            .apply(&a, None, debit_op(c(1)), at(3))
            .unwrap(),
    );
    assert_eq!(available(s, by, at(3)), c(14));
    assert!(other.access().revoke_api_key(&a, &id, at(4)).unwrap());
    assert_eq!(read(s, by, at(4)), None);
}

/// `Store::read_now` (ADR 20) answers a read here on SQLite, exactly as the read answers
/// on a blocking thread; it gives up, changing nothing, where it would wait: every pooled
/// connection taken, or a read that has to write (a plan period to roll, an operation).
#[test]
fn a_read_now_runs_at_once_on_sqlite_and_gives_up_where_it_would_wait() {
    let db = TestDb::sqlite();
    let s = &db.store;
    let a = account(s, 5);
    new_key(s, &a, "key-hash");
    let now = s
        .read_now(|s| {
            s.access()
                .key_caller_and_balance(KeyBy::Hash("key-hash"), at(1))
        })
        .expect("an idle connection: answered at once")
        .unwrap();
    assert_eq!(now, read(s, KeyBy::Hash("key-hash"), at(1)));
    assert_eq!(now.unwrap().1.unwrap().available, c(5));

    // Every connection taken: no answer, no wait.
    let mut held = Vec::new();
    while s.idle_connections_for_test() > 0 {
        held.push(s.hold_connection_for_test().unwrap());
    }
    assert!(s.read_now(|s| s.ledger().balance(&a, at(1))).is_none());
    drop(held);

    // A write inside is refused before it starts: nothing is debited.
    let tried = s.read_now(|s| s.ledger().apply(&a, None, debit_op(c(1)), at(2)));
    assert!(tried.is_none(), "{tried:?}");
    assert_eq!(available(s, KeyBy::Hash("key-hash"), at(3)), c(5));
    // And the store goes on as before.
    s.ledger().apply(&a, None, debit_op(c(1)), at(4)).unwrap();
    assert_eq!(available(s, KeyBy::Hash("key-hash"), at(5)), c(4));
}

/// On PostgreSQL every statement is a round trip: `read_now` never runs there.
#[test]
fn a_read_now_never_runs_on_postgres() {
    let db = TestDb::postgres();
    let a = account(&db.store, 5);
    assert!(db
        .store
        .read_now(|s| s.ledger().balance(&a, at(1)))
        .is_none());
}
