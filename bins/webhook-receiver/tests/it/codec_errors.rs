//! The answers actix-http's HTTP/1 parser gives by itself, before any service runs (a head
//! too large, a head that cannot be parsed), are the contract's JSON errors, from the real
//! binary over a real socket; and the receiver keeps answering normal requests after each.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use test_support::http::RawAnswer;
use test_support::TestDb;

fn healthy(port: u16) -> bool {
    agent()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .call()
        .is_ok_and(|r| r.status().as_u16() == 200)
}

/// Checks `raw` is one JSON error answer with `status` and `code`.
fn assert_json_error(raw: &[u8], status: u16, code: &str) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let a = RawAnswer::parse(raw);
    let header = |name: &str| a.header(name);
    let (got_status, body) = (a.status, a.body.as_slice());
    assert_eq!(got_status, status, "{text}");
    assert_eq!(header("content-type"), Some("application/json"), "{text}");
    assert_eq!(
        header("content-length"),
        Some(body.len().to_string().as_str()),
        "{text}"
    );
    assert_eq!(header("x-content-type-options"), Some("nosniff"), "{text}");
    let json: serde_json::Value =
        serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    let fields = json.as_object().unwrap_or_else(|| panic!("{text}"));
    let mut keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "error"], "{text}");
    assert_eq!(json["code"], code, "{text}");
    assert!(
        json["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{text}"
    );
}

#[test]
fn parser_answers_are_json_and_the_receiver_keeps_serving() {
    let db = TestDb::sqlite();
    let port = free_port();
    let _receiver = start_program(&db, None, port, &[]);

    // A 200 KiB header: over actix-http's 128 KiB limit for a head.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    assert_json_error(&exchange(port, big.as_bytes()), 431, "HEADERS_TOO_LARGE");
    assert!(healthy(port), "the receiver answers after a 431");

    // A raw 0xFF byte in the request line: unparsable.
    assert_json_error(
        &exchange(port, b"GET /\xff HTTP/1.1\r\nhost: x\r\n\r\n"),
        400,
        "MALFORMED_REQUEST",
    );
    assert!(healthy(port), "the receiver answers after a 400");

    // On one keep-alive connection: an answer to HEAD (a content-length, no body), then an
    // unparsable request; the wrapper knows the first had no body, so the second is JSON.
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"HEAD /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            conn.read(&mut byte).unwrap(),
            1,
            "the HEAD answer ends early"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(!head.contains("content-length: 0\r\n"), "{head}");
    conn.write_all(b"GET /\xff HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    assert_json_error(&rest, 400, "MALFORMED_REQUEST");

    // A normal request on a connection of its own still gets the app's answer.
    let ok = exchange(
        port,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&ok);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(r#""status":"ok""#), "{text}");
}
