//! Members of an account (`store.members()`): owners made with their accounts (and from
//! existing logins by the migration), invitations that work once, removal that revokes
//! exactly that member's sessions and keys, the last owner. On SQLite and PostgreSQL.

use crate::common;

use std::path::Path;
use std::sync::{Arc, Barrier};

use common::*;
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use diesel_migrations::{FileBasedMigrations, MigrationHarness};
use ledger_core::{AccountId, Role, Timestamp};
use ledger_store::{
    run_migrations, DbConnection, Holder, KeyBy, Member, MemberRefusal, NewAccount, NewApiKey,
    PoolOptions, Store,
};
use test_support::{drop_postgres_schema, postgres_schema};

on_both_backends!(
    the_person_who_signs_up_is_the_owner,
    an_invitation_works_once_for_the_invited_email_until_it_expires,
    removal_revokes_exactly_that_members_sessions_and_keys,
    the_last_owner_cannot_be_removed,
    one_token_from_many_threads_makes_one_member,
    reading_a_key_writes_nothing_and_its_use_is_noted_once_a_minute,
);

/// A day, in the seconds `at` takes.
const DAY: i64 = 24 * 3600;

fn signup(store: &Store, email: &str) -> (AccountId, Member) {
    let (account, _) = store
        .ledger()
        .create_account(
            NewAccount {
                email: Some(email.into()),
                password_hash: Some(format!("hash of {email}")),
                signup_bonus: c(5),
            },
            at(0),
        )
        .unwrap();
    let owner = store.members().login(email).unwrap().unwrap().member;
    (account.id, owner)
}

/// Invites `email` and signs them up; the new member.
fn invited(store: &Store, account: &AccountId, email: &str, role: Role, token: &str) -> Member {
    store
        .members()
        .invite(account, email, role, token, at(1), at(DAY))
        .unwrap()
        .unwrap();
    store
        .members()
        .join(token, email, "a hash", at(2))
        .unwrap()
        .unwrap()
}

fn the_person_who_signs_up_is_the_owner(db: TestDb) {
    let s = &db.store;
    let (account, owner) = signup(s, "ada@example.com");
    assert_eq!(owner.account_id, account);
    assert_eq!(owner.role, Role::Owner);
    assert_eq!(owner.email, "ada@example.com");
    let login = s.members().login("ada@example.com").unwrap().unwrap();
    assert_eq!(
        login.password_hash.as_deref(),
        Some("hash of ada@example.com")
    );
    assert_eq!(s.members().list(&account).unwrap(), vec![owner.clone()]);
    assert_eq!(s.members().member(&owner.id).unwrap(), Some(owner));
    // An account made without an email has no login.
    let bare = account_id_without_email(s);
    assert!(s.members().list(&bare).unwrap().is_empty());
    // The same email again: no second account, no second owner.
    let again = s.ledger().create_account(
        NewAccount {
            email: Some("ada@example.com".into()),
            ..NewAccount::default()
        },
        at(0),
    );
    assert!(
        matches!(again, Err(ledger_store::StoreError::EmailTaken { .. })),
        "{again:?}"
    );
    assert_eq!(s.members().list(&account).unwrap().len(), 1);
    assert_clean(s);
}

fn account_id_without_email(s: &Store) -> AccountId {
    s.ledger()
        .create_account(NewAccount::default(), at(0))
        .unwrap()
        .0
        .id
}

fn an_invitation_works_once_for_the_invited_email_until_it_expires(db: TestDb) {
    let s = &db.store;
    let (account, _) = signup(s, "owner@example.com");
    let (other, _) = signup(s, "other@example.com");
    let m = s.members();
    // An email that has a login, in this account or another: refused.
    for email in ["owner@example.com", "other@example.com"] {
        assert_eq!(
            m.invite(&account, email, Role::Member, "t0", at(1), at(DAY))
                .unwrap(),
            Err(MemberRefusal::EmailTaken {
                email: email.into()
            })
        );
    }
    let invite = m
        .invite(
            &account,
            "bob@example.com",
            Role::Member,
            "t1",
            at(1),
            at(DAY),
        )
        .unwrap()
        .unwrap();
    assert_eq!(invite.account_id, account);
    // Unknown token, wrong email: refused, and the invitation still works.
    assert_eq!(
        m.join("nope", "bob@example.com", "h", at(2)).unwrap(),
        Err(MemberRefusal::InvalidInvite)
    );
    assert_eq!(
        m.join("t1", "robert@example.com", "h", at(2)).unwrap(),
        Err(MemberRefusal::WrongEmail {
            invited: "bob@example.com".into()
        })
    );
    let bob = m
        .join("t1", "bob@example.com", "h", at(2))
        .unwrap()
        .unwrap();
    assert_eq!(bob.id, invite.id);
    assert_eq!(bob.account_id, account);
    assert_eq!(bob.role, Role::Member);
    assert_eq!(m.login("bob@example.com").unwrap().unwrap().member, bob);
    // Once only.
    assert_eq!(
        m.join("t1", "bob@example.com", "h", at(3)).unwrap(),
        Err(MemberRefusal::InvalidInvite)
    );
    assert_eq!(m.list(&account).unwrap().len(), 2);
    assert_eq!(m.list(&other).unwrap().len(), 1);

    // Expired: refused at and after its expiry.
    m.invite(
        &account,
        "carol@example.com",
        Role::Owner,
        "t2",
        at(1),
        at(DAY),
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        m.join("t2", "carol@example.com", "h", at(DAY)).unwrap(),
        Err(MemberRefusal::InvalidInvite)
    );

    // An email that got a login since it was invited: refused, nothing written.
    m.invite(
        &account,
        "dave@example.com",
        Role::Member,
        "t3",
        at(1),
        at(DAY),
    )
    .unwrap()
    .unwrap();
    signup(s, "dave@example.com");
    assert_eq!(
        m.join("t3", "dave@example.com", "h", at(2)).unwrap(),
        Err(MemberRefusal::EmailTaken {
            email: "dave@example.com".into()
        })
    );
    assert_eq!(m.list(&account).unwrap().len(), 2);
    // No account and no credits were made by joining.
    let report = s.maintenance().verify().unwrap();
    assert_eq!(report.accounts, 3, "{report:?}");
    assert_clean(s);
}

fn removal_revokes_exactly_that_members_sessions_and_keys(db: TestDb) {
    let s = &db.store;
    let (account, owner) = signup(s, "owner@example.com");
    let bob = invited(s, &account, "bob@example.com", Role::Member, "t1");
    let m = s.members();
    let far = at(30 * DAY);
    for (who, session) in [(&owner, "owner-session"), (&bob, "bob-session")] {
        m.create_session(who, session, at(3), far).unwrap();
    }
    let key = |name, key_hash| NewApiKey {
        name,
        prefix: "sk_live_",
        key_hash,
        signing_secret: Some("ss_test"),
    };
    let owner_key = m
        .create_api_key(&owner, &key("o", "owner-key"), at(3))
        .unwrap();
    let bob_key = m.create_api_key(&bob, &key("b", "bob-key"), at(3)).unwrap();
    // A session made without a login acts as the account.
    s.access()
        .create_session(&account, "account-session", at(3), far)
        .unwrap();
    assert_eq!(
        m.session_holder("account-session").unwrap(),
        Holder::Account
    );
    assert_eq!(
        m.session_holder("bob-session").unwrap(),
        Holder::Member(bob.clone())
    );
    assert_eq!(
        m.key_holder(&owner_key.id).unwrap(),
        Holder::Member(owner.clone())
    );
    // A member sees and revokes only their own keys.
    assert_eq!(m.api_keys(&bob).unwrap(), vec![bob_key.clone()]);
    assert!(!m.revoke_api_key(&bob, &owner_key.id, at(4)).unwrap());
    assert_eq!(s.access().api_keys(&account).unwrap().len(), 2);

    let removed = m.remove(&account, &bob.id, at(5)).unwrap().unwrap();
    assert_eq!(removed, bob);
    assert_eq!(
        s.access().session_account("bob-session", at(6)).unwrap(),
        None
    );
    assert_eq!(s.access().key_caller(KeyBy::Hash("bob-key")).unwrap(), None);
    assert_eq!(s.access().key_caller(KeyBy::Id(&bob_key.id)).unwrap(), None);
    assert_eq!(m.key_holder(&bob_key.id).unwrap(), Holder::Removed);
    assert_eq!(m.login("bob@example.com").unwrap(), None);
    // Everyone else keeps working.
    assert_eq!(
        s.access().session_account("owner-session", at(6)).unwrap(),
        Some(account.clone())
    );
    // One read finds the key, its account and its holder, by hash or by id.
    let found = live_key(s, KeyBy::Hash("owner-key"));
    assert_eq!(found.key_id, owner_key.id);
    assert_eq!(found.account_id, account);
    assert!(found.account_exists);
    assert_eq!(found.holder, Holder::Member(owner.clone()));
    assert_eq!(found.signing_secret.as_deref(), Some("ss_test"));
    assert_eq!(
        s.access().key_caller(KeyBy::Id(&owner_key.id)).unwrap(),
        Some(found)
    );
    assert!(s
        .access()
        .session_account("account-session", at(6))
        .unwrap()
        .is_some());
    assert_eq!(m.list(&account).unwrap(), vec![owner]);
    // Gone: removing again, or from another account, is not found.
    assert_eq!(
        m.remove(&account, &bob.id, at(7)).unwrap(),
        Err(MemberRefusal::NotFound)
    );
    let (other, other_owner) = signup(s, "other@example.com");
    assert_eq!(
        m.remove(&account, &other_owner.id, at(7)).unwrap(),
        Err(MemberRefusal::NotFound)
    );
    assert_eq!(m.list(&other).unwrap().len(), 1);
    // A removed member's email may be invited again.
    assert!(m
        .invite(&account, "bob@example.com", Role::Member, "t9", at(8), far)
        .unwrap()
        .is_ok());
    assert_clean(s);
}

fn the_last_owner_cannot_be_removed(db: TestDb) {
    let s = &db.store;
    let (account, owner) = signup(s, "owner@example.com");
    let m = s.members();
    assert_eq!(
        m.remove(&account, &owner.id, at(5)).unwrap(),
        Err(MemberRefusal::LastOwner)
    );
    let second = invited(s, &account, "second@example.com", Role::Owner, "t1");
    let member = invited(s, &account, "member@example.com", Role::Member, "t2");
    m.remove(&account, &owner.id, at(5)).unwrap().unwrap();
    // A member does not count as an owner.
    assert_eq!(
        m.remove(&account, &second.id, at(6)).unwrap(),
        Err(MemberRefusal::LastOwner)
    );
    let mut left = m.list(&account).unwrap();
    left.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected = vec![second, member];
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(left, expected);
}

fn one_token_from_many_threads_makes_one_member(db: TestDb) {
    let s = db.store.clone();
    let (account, _) = signup(&s, "owner@example.com");
    s.members()
        .invite(
            &account,
            "bob@example.com",
            Role::Member,
            "tok",
            at(1),
            at(DAY),
        )
        .unwrap()
        .unwrap();
    let n = 6;
    let barrier = Arc::new(Barrier::new(n));
    let joined: Vec<Result<Member, MemberRefusal>> = (0..n)
        .map(|_| {
            let (s, barrier) = (s.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                s.members()
                    .join("tok", "bob@example.com", "h", at(2))
                    .unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let ok = joined.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{joined:?}");
    assert_eq!(s.members().list(&account).unwrap().len(), 2);
}

/// Accounts, sessions and keys made before members existed become owners, and their
/// sessions and keys belong to those owners.
fn existing_logins_become_owners(conn: &mut DbConnection) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    // Every migration before this one, applied from a copy of the tree.
    let tmp = tempfile::tempdir().unwrap();
    for folder in std::fs::read_dir(&dir).unwrap() {
        let folder = folder.unwrap();
        let name = folder.file_name().to_string_lossy().into_owned();
        if name.as_str() >= "2026-12-02-000002" {
            continue;
        }
        let to = tmp.path().join(&name);
        std::fs::create_dir_all(&to).unwrap();
        for f in ["up.sql", "down.sql"] {
            std::fs::copy(folder.path().join(f), to.join(f)).unwrap();
        }
    }
    let before = FileBasedMigrations::from_path(tmp.path()).unwrap();
    match conn {
        DbConnection::Sqlite(c) => drop(c.run_pending_migrations(before).unwrap()),
        DbConnection::Postgres(c) => drop(c.run_pending_migrations(before).unwrap()),
    }
    conn.batch_execute(
        "INSERT INTO accounts (id, email, password_hash, created_at) VALUES \
            ('acct_old', 'old@example.com', 'old hash', 1), ('acct_bare', NULL, NULL, 1); \
         INSERT INTO sessions (token_hash, account_id, created_at, expires_at) \
            VALUES ('old-session', 'acct_old', 1, 9000000000000); \
         INSERT INTO api_keys (id, account_id, name, prefix, key_hash, created_at) \
            VALUES ('key_old', 'acct_old', 'old', 'sk_live_old', 'old-key', 1);",
    )
    .unwrap();
    run_migrations(conn).unwrap();
}

fn check_backfill(store: &Store) {
    let m = store.members();
    let login = m.login("old@example.com").unwrap().unwrap();
    assert_eq!(login.member.account_id, AccountId::new("acct_old"));
    assert_eq!(login.member.role, Role::Owner);
    assert_eq!(login.password_hash.as_deref(), Some("old hash"));
    assert_eq!(
        m.session_holder("old-session").unwrap(),
        Holder::Member(login.member.clone())
    );
    assert_eq!(
        m.key_holder("key_old").unwrap(),
        Holder::Member(login.member.clone())
    );
    // A key made before signing secrets has none; the one read finds its owner.
    let old = live_key(store, KeyBy::Id("key_old"));
    assert_eq!(old.signing_secret, None);
    assert_eq!(old.holder, Holder::Member(login.member.clone()));
    assert!(m.list(&AccountId::new("acct_bare")).unwrap().is_empty());
    // The owner can be removed only once there is another one.
    assert_eq!(
        m.remove(
            &login.member.account_id,
            &login.member.id,
            Timestamp::from_millis(2)
        )
        .unwrap(),
        Err(MemberRefusal::LastOwner)
    );
}

#[test]
fn sqlite_existing_logins_become_owners() {
    on_a_fresh_sqlite_file(existing_logins_become_owners, check_backfill);
}

#[test]
fn postgres_existing_logins_become_owners() {
    let (url, admin, schema) = postgres_schema();
    let mut conn = DbConnection::Postgres(PgConnection::establish(&url).unwrap());
    existing_logins_become_owners(&mut conn);
    drop(conn);
    let store = Store::open(&url, &PoolOptions::default()).unwrap();
    check_backfill(&store);
    drop(store);
    drop_postgres_schema(&admin, &schema);
}

/// Issue 11: authenticating a key is one read that writes nothing; its use is noted apart,
/// at most once a minute.
fn reading_a_key_writes_nothing_and_its_use_is_noted_once_a_minute(db: TestDb) {
    let s = &db.store;
    let (account, owner) = signup(s, "owner@example.com");
    let new = NewApiKey {
        name: "k",
        prefix: "sk_live_",
        key_hash: "k-hash",
        signing_secret: None,
    };
    let key = s.members().create_api_key(&owner, &new, at(1)).unwrap();
    let last_used = || s.access().api_keys(&account).unwrap()[0].last_used_at_ms;
    let found = live_key(s, KeyBy::Hash("k-hash"));
    assert_eq!(found.signing_secret, None);
    assert!(found.use_is_unnoted(at(2)));
    assert_eq!(last_used(), None, "a read wrote");
    assert!(s.access().note_key_use(&key.id, at(2)).unwrap());
    assert_eq!(last_used(), Some(at(2).millis()));
    // Within the minute: nothing to note, and a second note writes nothing.
    let found = live_key(s, KeyBy::Id(&key.id));
    assert!(!found.use_is_unnoted(at(61)));
    assert!(!s.access().note_key_use(&key.id, at(61)).unwrap());
    assert_eq!(last_used(), Some(at(2).millis()));
    // A minute later it is noted again.
    assert!(found.use_is_unnoted(at(62)));
    assert!(s.access().note_key_use(&key.id, at(62)).unwrap());
    assert_eq!(last_used(), Some(at(62).millis()));
    // Revocation takes effect on the very next read.
    assert!(s
        .access()
        .revoke_api_key(&account, &key.id, at(63))
        .unwrap());
    assert_eq!(s.access().key_caller(KeyBy::Id(&key.id)).unwrap(), None);
}

/// The live key `by` names (one read).
fn live_key(store: &Store, by: KeyBy<'_>) -> ledger_store::KeyCaller {
    store.access().key_caller(by).unwrap().expect("a live key")
}
