//! Slow clients against the real binary: a body dribbled a byte at a time is cut off at
//! `server.request_timeout_secs` (408, JSON), while normal clients are served; and no more
//! than `server.max_connections` connections are served at once.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A login whose head is sent whole and whose 200-byte body is then sent one byte every
/// 250 ms by [`Dribbler`].
fn slow_login(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /api/v1/auth/login HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: 200\r\n\r\n{{"
    )
    .unwrap();
    s
}

/// Writes one space to each stream every 250 ms until dropped.
struct Dribbler(Arc<AtomicBool>);

impl Dribbler {
    fn start(streams: Vec<TcpStream>) -> Dribbler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let streams = Arc::new(Mutex::new(streams));
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                for st in streams.lock().unwrap().iter_mut() {
                    let _ = st.write_all(b" ");
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Dribbler(stop)
    }
}

impl Drop for Dribbler {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What a slow connection got: `Some(answer)`, or `None` when the server closed it
/// without one. Panics when the connection is still open after `within`.
fn outcome(mut s: TcpStream, within: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(within)).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "a dribbled body is still being read after {within:?} (got {:?})",
                    String::from_utf8_lossy(&raw)
                )
            }
            Err(_) => break, // reset by the server
        }
    }
    (!raw.is_empty()).then_some(raw)
}

#[test]
fn dribbled_bodies_are_cut_off_at_the_request_timeout_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = start_binary(dir.path(), "workers = 2\nrequest_timeout_secs = 2");
    const SLOW: usize = 50;
    let slow: Vec<TcpStream> = (0..SLOW).map(|_| slow_login(addr)).collect();
    let started = Instant::now();
    let dribbler = Dribbler::start(slow.iter().map(|s| s.try_clone().unwrap()).collect());

    // Normal clients are answered meanwhile.
    http(addr, &Req::get("/healthz")).unwrap().expect(200);
    http(addr, &signup_req("normal@example.com"))
        .unwrap()
        .expect(201);

    // Each slow one is answered 408 (or closed) within the timeout, plus slack for a
    // loaded machine.
    let bound = Duration::from_secs(2 + 6);
    let mut answered = 0;
    for s in slow {
        let left = bound
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        if let Some(raw) = outcome(s, left) {
            let text = String::from_utf8_lossy(&raw);
            assert!(text.starts_with("HTTP/1.1 408"), "{text}");
            let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
            let json: serde_json::Value = serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("the 408 is JSON ({e}): {text}"));
            assert_eq!(json["code"], "REQUEST_TIMEOUT", "{json}");
            answered += 1;
        }
    }
    drop(dribbler);
    assert!(
        answered > 0,
        "at least the first ones get a 408, not just a closed socket"
    );
    // And the server still serves.
    http(addr, &Req::get("/healthz")).unwrap().expect(200);
}

#[test]
fn no_more_than_max_connections_are_served_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // Two per worker.
    let (_server, addr) = start_binary(
        dir.path(),
        "workers = 2\nmax_connections = 4\nrequest_timeout_secs = 3",
    );
    // Four slow bodies take every slot...
    let slow: Vec<TcpStream> = (0..4).map(|_| slow_login(addr)).collect();
    let dribbler = Dribbler::start(slow.iter().map(|s| s.try_clone().unwrap()).collect());
    std::thread::sleep(Duration::from_millis(300));
    // ...so a fifth connection waits in the backlog: not answered while they are open,
    let mut fifth = TcpStream::connect(addr).unwrap();
    write!(
        fifth,
        "GET /healthz HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    fifth
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let mut buf = [0u8; 64];
    match fifth.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("a fifth connection was served beside four open ones: {other:?}"),
    }
    // ...and answered once the slow ones are cut off at the request timeout.
    fifth
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut raw = Vec::new();
    fifth.read_to_end(&mut raw).unwrap();
    assert!(
        String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    drop(dribbler);
    for s in slow {
        let _ = outcome(s, Duration::from_secs(10));
    }
}
