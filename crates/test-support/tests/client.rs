//! The socket client changes nothing a test asserts on, and `on_both_backends!` runs
//! plain and `async` tests on both backends.

// Tests and their helpers panic loudly on a failed step; the lints are for production paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};

use test_support::{http, on_both_backends, Req, TestDb};

/// Answers one connection with `answer` and returns the request head it read.
fn one_answer(answer: &'static str) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push(line.trim_end().to_ascii_lowercase());
        }
        let mut stream = stream;
        stream.write_all(answer.as_bytes()).unwrap();
        head
    });
    (addr, served)
}

#[test]
fn a_redirect_is_returned_with_every_header_and_nothing_is_added() {
    let (addr, served) = one_answer(
        "HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n\
         content-length: 2\r\nconnection: close\r\n\r\nhi",
    );
    let res = http(
        addr,
        &Req::get("/start").header("x-one", "1").header("x-one", "2"),
    )
    .unwrap();
    assert_eq!(res.status, 302);
    assert_eq!(res.header("Location"), Some("/elsewhere"));
    assert_eq!(res.all_headers("set-cookie"), vec!["a=1", "b=2"]);
    assert_eq!(res.text(), "hi");
    let head = served.join().unwrap();
    assert_eq!(head[0], "get /start http/1.1");
    let names: Vec<&str> = head[1..]
        .iter()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    for added in ["user-agent", "accept", "accept-encoding"] {
        assert!(!names.contains(&added), "{added} was added: {head:?}");
    }
    assert!(head.contains(&"x-one: 1".to_owned()), "{head:?}");
    assert!(head.contains(&"x-one: 2".to_owned()), "{head:?}");
    assert!(head.contains(&"connection: close".to_owned()), "{head:?}");
}

#[test]
fn an_error_status_is_an_answer() {
    let (addr, _served) = one_answer(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: 14\r\nconnection: close\r\n\r\n{\"error\":\"no\"}",
    );
    let res = http(addr, &Req::post("/x")).unwrap();
    assert_eq!(res.expect(503), serde_json::json!({"error": "no"}));
}

fn a_plain_test_gets_a_fresh_database(db: TestDb) {
    db.store.ping().unwrap();
    assert!(db.url.starts_with(match db.store.backend() {
        ledger_store::Backend::Sqlite => "sqlite://",
        ledger_store::Backend::Postgres => "postgres://",
    }));
}

async fn an_async_test_runs_to_its_end(backend: &'static str) {
    let db = TestDb::of(backend);
    // Spawning needs the actix system the macro starts.
    actix_web::rt::spawn(async {}).await.unwrap();
    db.store.ping().unwrap();
    assert!(db.url.starts_with(backend));
}

on_both_backends!(
    a_plain_test_gets_a_fresh_database,
    an_async_test_runs_to_its_end
);
