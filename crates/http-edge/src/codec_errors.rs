//! JSON for the answers actix-http's HTTP/1 parser gives by itself.
//!
//! Before any service or middleware runs, actix-http's dispatcher answers a request head it
//! cannot take: `431` for a head over its limits (128 KiB, 96 headers), `400` for one it
//! cannot parse (a raw 0xFF byte in the method, URI or a header name, a bad version or
//! Content-Length, a URI too long), `408` when the head does not arrive within
//! `client_request_timeout`. Those answers have an empty body and none of the app's
//! headers, and actix offers no hook to change them.
//!
//! [`CodecErrorsIo`] wraps a connection's socket and follows the responses the dispatcher
//! writes, one after another (head, then a body framed by `content-length` or chunked; a
//! response to `HEAD`, a 1xx, 204 or 304 has none). A response head that is exactly one of
//! those parser answers (status 400, 408 or 431, `content-length: 0`, and no header but
//! `content-length`, `connection` and `date`: every error answer of an app served this way
//! carries a JSON body, so a `content-type`) is replaced by the contract's JSON error with
//! the [`SECURITY_HEADERS`](crate::SECURITY_HEADERS) and `connection: close`. Nothing else
//! is changed: bytes inside a body are never looked at as a head. Which requests were
//! `HEAD` the app tells the connection through [`RequestMethods`], kept in the
//! connection's data ([`crate::h1`] does both).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A response head longer than this is passed on as it is, and so is the rest of the
/// connection (the dispatcher never writes one; the app's heads are a few hundred bytes).
const MAX_HEAD: usize = 64 * 1024;

/// For each request of a connection that reached the app, in order: whether it was `HEAD`
/// (its response then has a `content-length` but no body). The app's outermost middleware
/// calls [`RequestMethods::push`]; the connection's [`CodecErrorsIo`] takes them as the
/// responses go out.
#[derive(Debug, Clone, Default)]
pub struct RequestMethods(Rc<RefCell<VecDeque<bool>>>);

impl RequestMethods {
    /// Notes the method of a request that has reached the app.
    pub fn push(&self, method: &actix_http::Method) {
        self.0
            .borrow_mut()
            .push_back(method == actix_http::Method::HEAD);
    }

    fn pop_is_head(&self) -> bool {
        self.0.borrow_mut().pop_front().unwrap_or(false)
    }
}

/// Where the writer is in the stream of responses.
#[derive(Debug)]
enum Frame {
    /// Reading a response head (the bytes so far, held back until it is whole).
    Head(Vec<u8>),
    /// Inside a body with this many bytes left.
    Fixed(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// Passing everything on as it is (a body that ends with the connection).
    Rest,
}

#[derive(Debug)]
enum Chunk {
    /// The chunk-size line so far.
    Size(Vec<u8>),
    /// Data of the current chunk left, then its CRLF.
    Data(u64),
    /// The CRLF after a chunk's data: this many bytes left.
    DataEnd(u8),
    /// After the last chunk: the trailer line so far (an empty line ends the body).
    Trailer(Vec<u8>),
}

/// A connection whose parser answers become JSON (see the module documentation).
pub struct CodecErrorsIo<T> {
    inner: T,
    frame: Frame,
    /// Bytes accepted from the dispatcher, not yet written to `inner`.
    out: Vec<u8>,
    methods: RequestMethods,
    request_timeout_secs: u64,
}

impl<T> CodecErrorsIo<T> {
    /// Wraps `inner`; `request_timeout_secs` is named in the 408 answer.
    pub fn new(inner: T, request_timeout_secs: u64) -> CodecErrorsIo<T> {
        CodecErrorsIo {
            inner,
            frame: Frame::Head(Vec::new()),
            out: Vec::new(),
            methods: RequestMethods::default(),
            request_timeout_secs,
        }
    }

    /// The handle the app uses to tell this connection which requests were `HEAD`.
    pub fn methods(&self) -> RequestMethods {
        self.methods.clone()
    }

    /// Follows `input` through the responses, appending what is to be written to `out`.
    fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            match &mut self.frame {
                Frame::Rest => {
                    self.out.extend_from_slice(input);
                    return;
                }
                Frame::Fixed(left) => {
                    let n = (*left).min(input.len() as u64) as usize;
                    self.out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        self.frame = Frame::Head(Vec::new());
                    }
                }
                Frame::Head(buf) => {
                    let (byte, rest) = (input[0], &input[1..]);
                    input = rest;
                    buf.push(byte);
                    if buf.ends_with(b"\r\n\r\n") {
                        let head = std::mem::take(buf);
                        self.frame = self.on_head(head);
                    } else if buf.len() > MAX_HEAD {
                        let head = std::mem::take(buf);
                        self.out.extend_from_slice(&head);
                        self.frame = Frame::Rest;
                    }
                }
                Frame::Chunked(chunk) => {
                    let byte = input[0];
                    match chunk {
                        Chunk::Data(left) => {
                            let n = (*left).min(input.len() as u64) as usize;
                            self.out.extend_from_slice(&input[..n]);
                            input = &input[n..];
                            *left -= n as u64;
                            if *left == 0 {
                                *chunk = Chunk::DataEnd(2);
                            }
                            continue;
                        }
                        Chunk::DataEnd(left) => {
                            *left -= 1;
                            if *left == 0 {
                                *chunk = Chunk::Size(Vec::new());
                            }
                        }
                        Chunk::Size(line) => {
                            line.push(byte);
                            if line.ends_with(b"\r\n") {
                                let text = String::from_utf8_lossy(&line[..line.len() - 2]);
                                let hex = text.split(';').next().unwrap_or("").trim();
                                match u64::from_str_radix(hex, 16) {
                                    Ok(0) => *chunk = Chunk::Trailer(Vec::new()),
                                    Ok(n) => *chunk = Chunk::Data(n),
                                    // Not a framing this follows: pass the rest on.
                                    Err(_) => self.frame = Frame::Rest,
                                }
                            } else if line.len() > 1024 {
                                self.frame = Frame::Rest;
                            }
                        }
                        Chunk::Trailer(line) => {
                            line.push(byte);
                            if line == b"\r\n" {
                                self.frame = Frame::Head(Vec::new());
                            } else if line.ends_with(b"\r\n") {
                                line.clear();
                            } else if line.len() > MAX_HEAD {
                                self.frame = Frame::Rest;
                            }
                        }
                    }
                    self.out.push(byte);
                    input = &input[1..];
                }
            }
        }
    }

    /// Writes a whole response head (replaced when it is a parser answer) and returns how
    /// its body is framed.
    fn on_head(&mut self, head: Vec<u8>) -> Frame {
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
        let status_line = lines.next().unwrap_or("").to_owned();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = None;
        let mut chunked = false;
        let mut date = None;
        let mut only_parser_headers = true;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                only_parser_headers = false;
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => length = value.parse::<u64>().ok(),
                "transfer-encoding" => {
                    chunked |= value.to_ascii_lowercase().contains("chunked");
                    only_parser_headers = false;
                }
                "date" => date = Some(line.to_owned()),
                "connection" => {}
                _ => only_parser_headers = false,
            }
        }
        if (100..200).contains(&status) {
            self.out.extend_from_slice(&head);
            return Frame::Head(Vec::new());
        }
        if only_parser_headers && length == Some(0) {
            if let Some(answer) = self.parser_answer(status) {
                self.write_json(&status_line, date.as_deref(), status, answer);
                return Frame::Rest;
            }
        }
        self.out.extend_from_slice(&head);
        let is_head = self.methods.pop_is_head();
        if is_head || status == 204 || status == 304 {
            Frame::Head(Vec::new())
        } else if chunked {
            Frame::Chunked(Chunk::Size(Vec::new()))
        } else {
            match length {
                Some(0) => Frame::Head(Vec::new()),
                Some(n) => Frame::Fixed(n),
                None => Frame::Rest,
            }
        }
    }

    /// The error and code for a parser answer with this status.
    fn parser_answer(&self, status: u16) -> Option<(String, &'static str)> {
        Some(match status {
            400 => (
                "The request could not be parsed as HTTP/1.1: check the request line and headers"
                    .to_owned(),
                "MALFORMED_REQUEST",
            ),
            408 => (
                format!(
                    "The request head was not received within {} seconds; send the whole \
                     request at once",
                    self.request_timeout_secs
                ),
                "REQUEST_TIMEOUT",
            ),
            431 => (
                "The request's headers are too large (at most 128 KiB and 96 headers); send \
                 fewer or smaller headers"
                    .to_owned(),
                "HEADERS_TOO_LARGE",
            ),
            _ => return None,
        })
    }

    fn write_json(
        &mut self,
        status_line: &str,
        date: Option<&str>,
        status: u16,
        (error, code): (String, &str),
    ) {
        let body = serde_json::json!({ "error": error, "code": code }).to_string();
        let mut head = format!(
            "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\ncache-control: no-store\r\n",
            body.len()
        );
        // The headers the apps put on every answer.
        for (name, value) in crate::SECURITY_HEADERS {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(date) = date {
            head.push_str(date);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        self.out.extend_from_slice(head.as_bytes());
        self.out.extend_from_slice(body.as_bytes());
        tracing::info!(status, code, "request refused by the HTTP parser");
    }
}

impl<T: AsyncWrite + Unpin> CodecErrorsIo<T> {
    /// Writes `out` to the socket.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => {
                    self.out.drain(..n);
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CodecErrorsIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CodecErrorsIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What was accepted before goes out first, so `out` stays one write's worth.
        ready!(this.poll_drain(cx))?;
        this.feed(buf);
        // Written now if the socket takes it; otherwise by the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Frame::Head(held) = &mut this.frame {
            // A head the dispatcher never finished: pass on what there is.
            let held = std::mem::take(held);
            this.out.extend_from_slice(&held);
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(chunks: &[&[u8]], heads: &[bool]) -> Vec<u8> {
        let mut io = CodecErrorsIo::new((), 7);
        for h in heads {
            io.methods().0.borrow_mut().push_back(*h);
        }
        for c in chunks {
            io.feed(c);
        }
        io.out
    }

    const PARSER_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\ndate: Tue, 01 Dec 2026 22:35:13 GMT\r\n\r\n";

    #[test]
    fn a_parser_answer_becomes_json_even_when_split_byte_by_byte() {
        let chunks: Vec<&[u8]> = PARSER_400.chunks(1).collect();
        let out = String::from_utf8(through(&chunks, &[])).unwrap();
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"));
        assert!(out.contains("date: Tue, 01 Dec 2026 22:35:13 GMT\r\n"));
        assert!(out.contains(r#""code":"MALFORMED_REQUEST""#), "{out}");
    }

    #[test]
    fn app_answers_and_their_bodies_pass_unchanged() {
        // A body that contains a parser answer, a HEAD answer without its body, a chunked
        // answer that contains one too: all unchanged; the parser answer after them is JSON.
        let sized = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 103\r\n\r\n".as_slice(),
            PARSER_400,
        ]
        .concat();
        let head = b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 100\r\n\r\n";
        let chunked = [
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n67\r\n".as_slice(),
            PARSER_400,
            b"\r\n0\r\n\r\n",
        ]
        .concat();
        let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
        let all = [sized.as_slice(), head, cont, chunked.as_slice(), PARSER_400].concat();
        let expected_prefix = [sized.as_slice(), head, cont, chunked.as_slice()].concat();
        for split in [1, 7, 4096] {
            let chunks: Vec<&[u8]> = all.chunks(split).collect();
            let out = through(&chunks, &[false, true, false]);
            assert_eq!(&out[..expected_prefix.len()], expected_prefix.as_slice());
            let tail = String::from_utf8_lossy(&out[expected_prefix.len()..]).into_owned();
            assert!(tail.contains("MALFORMED_REQUEST"), "{tail}");
        }
    }
}
