//! The answers actix-http's HTTP/1 parser gives by itself, before any service runs (a head
//! too large, a head that cannot be parsed, a head that never completes), are the
//! contract's JSON errors with the app's security headers, from the real binary over a
//! real socket; and the server keeps answering normal requests after each.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use test_support::http::RawAnswer;

fn assert_json_error(raw: &[u8], status: u16, code: &str) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let a = RawAnswer::parse(raw);
    assert_eq!(a.status, status, "{text}");
    assert_eq!(a.header("content-type"), Some("application/json"), "{text}");
    assert_eq!(
        a.header("content-length"),
        Some(a.body.len().to_string().as_str()),
        "{text}"
    );
    assert_eq!(a.header("connection"), Some("close"), "{text}");
    assert_eq!(
        a.header("x-content-type-options"),
        Some("nosniff"),
        "{text}"
    );
    assert_eq!(
        a.header("content-security-policy"),
        Some("default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
        "{text}"
    );
    assert_eq!(a.header("x-frame-options"), Some("DENY"), "{text}");
    assert_eq!(a.header("referrer-policy"), Some("no-referrer"), "{text}");
    assert_eq!(a.header("cache-control"), Some("no-store"), "{text}");
    let body: serde_json::Value = serde_json::from_slice(&a.body)
        .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {text}"));
    assert_eq!(body["code"], code, "{text}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.len() > 20),
        "{text}"
    );
    assert_eq!(body.as_object().unwrap().len(), 2, "{text}");
}

/// A normal request on a new connection is still answered.
fn still_serving(addr: SocketAddr) {
    let raw = exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let a = RawAnswer::parse(&raw);
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&raw));
}

#[test]
fn answers_below_the_app_are_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = start_binary(dir.path(), "workers = 1\nrequest_timeout_secs = 2");

    // A header of 200 KiB: over the 128 KiB head limit.
    let mut big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 200 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    assert_json_error(&exchange(addr, &big), 431, "HEADERS_TOO_LARGE");
    still_serving(addr);
    // The same sent whole before anything is read: the answer still arrives.
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(&big)
        .expect("the server reads the whole refused head");
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got);
    assert_json_error(&got, 431, "HEADERS_TOO_LARGE");

    // More than 96 headers, each small.
    let mut many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..120 {
        many.extend_from_slice(format!("X-H{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_json_error(&exchange(addr, &many), 431, "HEADERS_TOO_LARGE");
    still_serving(addr);

    // A raw 0xFF byte in the path, and in a header name.
    assert_json_error(
        &exchange(addr, b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n"),
        400,
        "MALFORMED_REQUEST",
    );
    still_serving(addr);
    assert_json_error(
        &exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-\xff: 1\r\n\r\n",
        ),
        400,
        "MALFORMED_REQUEST",
    );
    still_serving(addr);

    // A head that never completes: answered at request_timeout_secs.
    let raw = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
    assert_json_error(&raw, 408, "REQUEST_TIMEOUT");
    let body = String::from_utf8_lossy(&RawAnswer::parse(&raw).body).into_owned();
    assert!(body.contains("2 seconds"), "{body}");
    still_serving(addr);

    // After normal answers on the same connection (keep-alive; one of them to HEAD, with a
    // content-length but no body), a malformed request still gets the JSON answer, and the
    // answers before it are untouched.
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut seen = Vec::new();
    let read_until = |conn: &mut TcpStream, seen: &mut Vec<u8>, done: &dyn Fn(&[u8]) -> bool| {
        let mut buf = [0u8; 8192];
        while !done(seen) {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    let whole = |raw: &[u8]| {
        raw.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .is_some_and(|end| {
                let a = RawAnswer::parse(raw);
                let len: usize = a.header("content-length").unwrap().parse().unwrap();
                raw.len() >= end + 4 + len
            })
    };
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    read_until(&mut conn, &mut seen, &whole);
    let first = RawAnswer::parse(&seen);
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&seen));
    seen.clear();
    conn.write_all(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    read_until(&mut conn, &mut seen, &|raw: &[u8]| {
        raw.ends_with(b"\r\n\r\n")
    });
    let second = RawAnswer::parse(&seen);
    assert_eq!(second.status, 405, "{}", String::from_utf8_lossy(&seen));
    assert!(second.body.is_empty());
    seen.clear();
    conn.write_all(b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    read_until(&mut conn, &mut seen, &|_: &[u8]| false);
    assert_json_error(&seen, 400, "MALFORMED_REQUEST");
    still_serving(addr);
}
