//! One HTTP client for the tests: [`Req`] and [`Resp`] serve the in-process app (each
//! program's test harness converts them) and real sockets ([`http`], on `ureq`), so a test
//! reads the same whichever way it talks to the server.
//!
//! The client changes nothing a test asserts on: 4xx and 5xx are answers, not errors;
//! redirects are returned, not followed; it adds no `user-agent`, `accept` or
//! `accept-encoding` header, keeps every response header as received (repeated ones
//! included), and closes the connection after each request.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use ureq::config::AutoHeaderValue;

pub use actix_web::http::Method;

/// The admin token every test harness configures.
pub const ADMIN: &str = "test-admin-token-0123456789";

/// An answer, from the in-process app or from a real socket.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// Names in lower case, each value as received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all_headers(name).into_iter().next()
    }

    /// Every value of header `name` (any case), in order.
    pub fn all_headers(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// Asserts the status, showing the body when it differs; returns the JSON body (or
    /// `Null` for an empty one).
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            self.text()
        );
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// The value of the `session` cookie this answer sets, with the cookie's attributes.
    pub fn session_cookie(&self) -> Option<(String, String)> {
        self.all_headers("set-cookie").into_iter().find_map(|c| {
            let rest = c.strip_prefix("session=")?;
            let value = rest.split(';').next().unwrap_or("").to_owned();
            Some((value, c.to_owned()))
        })
    }
}

/// How a request proves who it is.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Cookie(String),
    Key(String),
    Bearer(String),
    RawAuthorization(String),
    /// The [`ADMIN`] token.
    Admin,
    Header(&'static str, String),
}

impl Auth {
    /// The request headers this proof is.
    pub fn headers(&self) -> Vec<(String, String)> {
        match self {
            Auth::None => vec![],
            Auth::Cookie(s) => vec![("cookie".into(), format!("session={s}"))],
            Auth::Key(k) => vec![("x-api-key".into(), k.clone())],
            Auth::Bearer(k) => vec![("authorization".into(), format!("Bearer {k}"))],
            Auth::RawAuthorization(k) => vec![("authorization".into(), k.clone())],
            Auth::Admin => vec![("authorization".into(), format!("Bearer {ADMIN}"))],
            Auth::Header(n, v) => vec![((*n).into(), v.clone())],
        }
    }
}

/// One request.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Req {
    pub fn new(method: Method, path: impl Into<String>) -> Req {
        Req {
            method,
            path: path.into(),
            headers: vec![],
            body: None,
        }
    }
    pub fn get(path: impl Into<String>) -> Req {
        Req::new(Method::GET, path)
    }
    pub fn post(path: impl Into<String>) -> Req {
        Req::new(Method::POST, path)
    }
    pub fn put(path: impl Into<String>) -> Req {
        Req::new(Method::PUT, path)
    }
    pub fn delete(path: impl Into<String>) -> Req {
        Req::new(Method::DELETE, path)
    }
    pub fn auth(mut self, auth: &Auth) -> Req {
        self.headers.extend(auth.headers());
        self
    }
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Req {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
    pub fn idem(self, key: &str) -> Req {
        self.header("idempotency-key", key)
    }
    pub fn json(mut self, body: Value) -> Req {
        self.body = Some(body.to_string().into_bytes());
        self.header("content-type", "application/json")
    }
    /// A body sent as is, with the given content type.
    pub fn raw(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Req {
        self.body = Some(body.into());
        self.header("content-type", content_type)
    }
}

/// The `ureq` agent every socket test uses: statuses are answers, redirects are not
/// followed, no header is added, a request gives up after 30 seconds.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(AutoHeaderValue::None)
        .accept(AutoHeaderValue::None)
        .accept_encoding(AutoHeaderValue::None)
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// One request to `addr` on a new connection (`Connection: close`), read to the end.
pub fn http(addr: SocketAddr, req: &Req) -> std::io::Result<Resp> {
    let mut request = ureq::http::Request::builder()
        .method(req.method.as_str())
        .uri(format!("http://{addr}{}", req.path))
        .header("connection", "close");
    for (n, v) in &req.headers {
        request = request.header(n.as_str(), v.as_str());
    }
    // Always a body, as long as it may be empty: `content-length` is sent on every request.
    let request = request
        .body(req.body.clone().unwrap_or_default())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut res = agent().run(request).map_err(ureq::Error::into_io)?;
    let headers = res
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = res
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .map_err(ureq::Error::into_io)?;
    Ok(Resp {
        status: res.status().as_u16(),
        headers,
        body,
    })
}

/// Sends `req` as raw bytes, whole, on a new connection (`Connection: close`) and returns
/// the connection to read the answer from later: for tests of the server's own parser
/// and of clients that stop reading.
pub fn send_only(addr: SocketAddr, req: &Req) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let body = req.body.clone().unwrap_or_default();
    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        req.method,
        req.path,
        body.len()
    );
    for (n, v) in &req.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    stream.flush()?;
    Ok(stream)
}

/// Polls `GET /healthz` until it answers 200.
pub fn wait_healthy(addr: SocketAddr, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut last = String::from("never tried");
    while Instant::now() < deadline {
        match http(addr, &Req::get("/healthz")) {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) => last = format!("status {}", r.status),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("not healthy within {within:?}: {last}"))
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Where [`exchange`] connects: an address, or a port on 127.0.0.1.
pub trait Peer {
    fn socket_addr(&self) -> SocketAddr;
}

impl Peer for SocketAddr {
    fn socket_addr(&self) -> SocketAddr {
        *self
    }
}

impl Peer for u16 {
    fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], *self))
    }
}

/// Sends `raw` as it is on a new connection (while reading, so a large request cannot
/// block on a full window), then reads until the server closes or 15 seconds pass;
/// returns what arrived. For tests of what the server's HTTP parser answers by itself.
pub fn exchange(peer: impl Peer, raw: &[u8]) -> Vec<u8> {
    let stream = TcpStream::connect(peer.socket_addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    let mut reader = stream.try_clone().expect("a second handle");
    let raw = raw.to_vec();
    let mut writer = stream;
    let sending = std::thread::spawn(move || {
        for chunk in raw.chunks(16 * 1024) {
            if writer.write_all(chunk).is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let _ = sending.join();
    got
}

/// An HTTP/1 answer as read off a socket byte for byte, for tests of what the server's
/// own parser sends before any service runs.
pub struct RawAnswer {
    pub status: u16,
    /// Names lower-cased, values trimmed, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawAnswer {
    /// Splits `raw` into status, headers and body; panics on an incomplete head.
    pub fn parse(raw: &[u8]) -> RawAnswer {
        let text = String::from_utf8_lossy(raw);
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete answer: {text:?}"));
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {text:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        RawAnswer {
            status,
            headers,
            body: raw[end + 4..].to_vec(),
        }
    }

    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}
