//! A deadline for receiving request bodies.
//!
//! actix's `client_request_timeout` bounds only the request head: a client that sends its
//! head and then dribbles the body a byte at a time would hold a connection (and whatever
//! the handler holds while it reads) for as long as it likes. This middleware gives the
//! body `server.request_timeout_secs` from the moment the head was read. When the time
//! runs out while the body is still being read, the read fails, and the answer, whatever
//! the handler made of that failure, becomes a JSON `408 REQUEST_TIMEOUT` that closes the
//! connection. A body that has arrived in time is never refused, however late the handler
//! reads it.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::{Error, HttpMessage, HttpResponse};
use futures_util::Stream;

use crate::state::AppState;

/// The middleware (mount with `actix_web::middleware::from_fn(body_deadline)`).
pub async fn body_deadline(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let timeout = req
        .app_data::<web::Data<AppState>>()
        .map(|s| Duration::from_secs(s.settings.server.request_timeout_secs));
    let (Some(timeout), true) = (timeout, has_body(&req)) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let expired = Rc::new(Cell::new(false));
    let inner = req.take_payload();
    let timed: actix_web::dev::Payload = Payload::from(Box::pin(TimedBody {
        inner,
        deadline: Box::pin(actix_web::rt::time::sleep(timeout)),
        expired: expired.clone(),
        done: false,
    })
        as Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>);
    req.set_payload(timed);
    let res = next.call(req).await?.map_into_boxed_body();
    if !expired.get() {
        return Ok(res);
    }
    let (req, old) = res.into_parts();
    tracing::info!(path = %req.path(), "request body not received in time; answered 408");
    let mut fresh = HttpResponse::RequestTimeout()
        .force_close()
        .json(serde_json::json!({
            "error": format!(
                "The request body was not received within {} seconds; send the whole body at once",
                timeout.as_secs()
            ),
            "code": "REQUEST_TIMEOUT",
        }));
    for (name, value) in old.headers() {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(ServiceResponse::new(req, fresh))
}

/// Whether the request announces a body (a length above zero, or chunks).
fn has_body(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

/// The request's body stream, failing once the deadline passes while it still waits for
/// the client.
struct TimedBody {
    inner: Payload,
    deadline: Pin<Box<actix_web::rt::time::Sleep>>,
    expired: Rc<Cell<bool>>,
    done: bool,
}

impl Stream for TimedBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        // What has arrived is always handed on; the clock only matters while waiting.
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            if item.is_none() {
                self.done = true;
            }
            return Poll::Ready(item);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.done = true;
            self.expired.set(true);
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request body was not received in time",
            )))));
        }
        Poll::Pending
    }
}
