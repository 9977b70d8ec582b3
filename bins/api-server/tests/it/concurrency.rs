//! Many clients at once, through real HTTP: debits never overdraw an account, and the same
//! `Idempotency-Key` sent in parallel charges once. On SQLite and on PostgreSQL.

use crate::common;

use std::sync::Barrier;

use api_server::AppState;
use common::*;
use serde_json::json;
use test_support::TestDb;

fn serve(backend: &str) -> (TestDb, LiveServer) {
    let db = TestDb::of(backend);
    let clock = PinnedClock::at(START);
    let state = AppState::new(db.store.clone(), settings(), clock.clock()).expect("valid settings");
    let server = LiveServer::start(state, 4);
    (db, server)
}

fn account_with(server: &LiveServer, credits: i64) -> String {
    let id = server.send(&new_account_req()).expect(201)["accountId"]
        .as_str()
        .unwrap()
        .to_owned();
    // The signup bonus (5) is taken back so the account holds exactly `credits`.
    server
        .send(
            &Req::post(format!("/admin/v1/accounts/{id}/credits"))
                .auth(&Auth::Admin)
                .json(json!({"amount": credits - 5, "description": "Test balance"})),
        )
        .expect(201);
    id
}

/// Runs `work` on `threads` threads released together; their results in thread order.
fn at_once<T: Send>(threads: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(threads);
    let (barrier, work) = (&barrier, &work);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    barrier.wait();
                    work(t)
                })
            })
            .collect();
        let joined = handles
            .into_iter()
            .map(|h| h.join().expect("a client thread"));
        joined.collect()
    })
}

fn balance_of(server: &LiveServer, id: &str) -> serde_json::Value {
    // The operator reads a balance with a debit that can never be covered: the 402 shows
    // the balance and changes nothing.
    let res = server.send(&debit_req(
        id,
        json!({"amount": 1_000_000, "description": "probe"}),
    ));
    assert_eq!(res.status, 402, "{}", res.text());
    res.json()["balance"].clone()
}

fn many_debits_never_overdraw(backend: &str) {
    let (_db, server) = serve(backend);
    let id = account_with(&server, 400);
    assert_eq!(balance_of(&server, &id), json!(400));
    const THREADS: usize = 16;
    const EACH: usize = 50;
    let counts = at_once(THREADS, |t| {
        let (mut ok, mut refused): (usize, usize) = (0, 0);
        for i in 0..EACH {
            let res = server.send(&debit_req(
                &id,
                json!({"amount": 1, "description": format!("t{t} #{i}")}),
            ));
            match res.status {
                201 => ok += 1,
                402 => {
                    assert_eq!(res.header("x-credits-charged"), Some("0"));
                    refused += 1
                }
                other => panic!("unexpected {other}: {}", res.text()),
            }
            let remaining: f64 = res
                .header("x-credits-remaining")
                .expect("metering header")
                .parse()
                .unwrap();
            assert!(remaining >= 0.0, "never below zero: {remaining}");
        }
        (ok, refused)
    });
    let ok: usize = counts.iter().map(|c| c.0).sum();
    let refused: usize = counts.iter().map(|c| c.1).sum();
    assert_eq!((ok, refused), (400, THREADS * EACH - 400));
    assert_eq!(balance_of(&server, &id), json!(0));
    let v = server
        .send(&Req::get("/admin/v1/verify").auth(&Auth::Admin))
        .expect(200);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["violations"], json!([]));
    // The bonus, its correction, and exactly 400 usage entries.
    assert_eq!(v["entries"], 402, "{v}");
}

fn the_same_key_in_parallel_charges_once(backend: &str) {
    let (_db, server) = serve(backend);
    let id = account_with(&server, 100);
    const THREADS: usize = 8;
    let answers = at_once(THREADS, |_| {
        server.send(&debit_req(&id, json!({"amount": 7, "description": "once"})).idem("parallel-1"))
    });
    for a in &answers {
        assert_eq!(a.status, 201, "{}", a.text());
    }
    let first = answers[0].json();
    assert!(
        answers.iter().all(|a| a.json() == first),
        "every answer names the one entry"
    );
    let fresh = answers
        .iter()
        .filter(|a| a.header("idempotent-replayed").is_none())
        .count();
    assert_eq!(fresh, 1, "exactly one request did the work");
    assert_eq!(balance_of(&server, &id), json!(93));
    let v = server
        .send(&Req::get("/admin/v1/verify").auth(&Auth::Admin))
        .expect(200);
    assert_eq!(
        (v["ok"].clone(), v["entries"].clone()),
        (json!(true), json!(3)),
        "{v}"
    );
}

#[test]
fn sqlite_many_debits_never_overdraw() {
    many_debits_never_overdraw("sqlite");
}

#[test]
fn postgres_many_debits_never_overdraw() {
    many_debits_never_overdraw("postgres");
}

#[test]
fn sqlite_the_same_key_in_parallel_charges_once() {
    the_same_key_in_parallel_charges_once("sqlite");
}

#[test]
fn postgres_the_same_key_in_parallel_charges_once() {
    the_same_key_in_parallel_charges_once("postgres");
}
