//! The one bridge from the async handlers to blocking work.
//!
//! Store work takes a permit first: there are as many permits as the database pool has
//! connections, so at most that many requests wait on the pool at once. A request that
//! cannot get a permit within `wait` (the pool's acquire timeout) is answered at once with
//! `503 DATABASE_UNAVAILABLE` and `Retry-After`, instead of queueing on actix's blocking
//! threads until the pool times out with every thread taken. Work that does not touch the
//! database (the disk cache, the payment provider's HTTP calls) runs on the same pool
//! without a permit.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::error::ApiError;

/// How many ledger operations may wait for their group commit at once
/// ([`Blocking::ledger`]), whatever the pool's size: such a wait holds no connection (the
/// engine's writers hold their own), only a blocking thread, and the more operations
/// wait together the larger the batch that commits them.
pub const LEDGER_WAITERS: usize = 256;

/// Runs blocking work on actix's thread pool; store work bounded to the database pool.
#[derive(Debug, Clone)]
pub struct Blocking {
    permits: Arc<Semaphore>,
    ledger_permits: Arc<Semaphore>,
    wait: Duration,
}

impl Blocking {
    /// `permits` store calls at once (the pool's `max_connections`); a call waits at most
    /// `wait` for its turn.
    pub fn new(permits: usize, wait: Duration) -> Blocking {
        Blocking {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            ledger_permits: Arc::new(Semaphore::new(LEDGER_WAITERS)),
            wait,
        }
    }

    /// Runs store work `f` once a database permit is free; `503 DATABASE_UNAVAILABLE`
    /// when none frees up within the wait.
    pub async fn store<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        self.bounded(&self.permits, f).await
    }

    /// Runs `f`, a call that only hands ledger operations to the group-committing engine
    /// (`Ledger::apply`) and waits for their commit, once one of [`LEDGER_WAITERS`]
    /// permits is free (`503 DATABASE_UNAVAILABLE` when none frees up within the wait).
    /// Such a call takes no pooled connection, so bounding it by the pool's size (as
    /// [`Blocking::store`] does) would cap the batches of a busy server at that size: at
    /// 64 callers, 16 operations a commit instead of up to 64.
    pub async fn ledger<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        self.bounded(&self.ledger_permits, f).await
    }

    async fn bounded<T, F>(&self, permits: &Arc<Semaphore>, f: F) -> Result<T, ApiError>
    where
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let permit = match tokio::time::timeout(self.wait, permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            // The semaphore is never closed; a timeout is the pool being saturated.
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(
                    waited_ms = self.wait.as_millis() as u64,
                    "every database connection is in use; answering 503"
                );
                return Err(ApiError::database_unavailable());
            }
        };
        self.run(move || {
            let _permit = permit;
            f()
        })
        .await?
    }

    /// Runs work that does not touch the database (files, outbound HTTP).
    pub async fn run<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // The request's span (its request id) follows the work to the blocking thread.
        let span = tracing::Span::current();
        actix_web::web::block(move || {
            let _span = span.entered();
            f()
        })
        .await
        .map_err(ApiError::internal_from)
    }

    /// Store permits free now (tests).
    pub fn available_permits(&self) -> usize {
        self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Instant;

    use actix_web::ResponseError;

    use super::*;

    #[actix_rt::test]
    async fn a_saturated_pool_answers_503_quickly() {
        let blocking = Blocking::new(2, Duration::from_millis(100));
        let (release, gate) = mpsc::channel::<()>();
        let gate = Arc::new(std::sync::Mutex::new(gate));
        let mut held = Vec::new();
        for _ in 0..2 {
            let (b, gate) = (blocking.clone(), gate.clone());
            held.push(actix_rt::spawn(async move {
                b.store(move || {
                    let _ = gate.lock().unwrap().recv();
                    Ok(())
                })
                .await
            }));
        }
        while blocking.available_permits() > 0 {
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        let started = Instant::now();
        let refused = blocking.store(|| Ok(())).await.unwrap_err();
        let waited = started.elapsed();
        assert_eq!(refused.status_code().as_u16(), 503);
        assert_eq!(refused.code(), "DATABASE_UNAVAILABLE");
        let res = refused.error_response();
        assert!(res.headers().contains_key("retry-after"));
        assert!(waited < Duration::from_secs(1), "waited {waited:?}");
        for _ in 0..2 {
            release.send(()).unwrap();
        }
        for h in held {
            h.await.unwrap().unwrap();
        }
        // The permits are back: store work runs again.
        assert_eq!(blocking.store(|| Ok(7)).await.unwrap(), 7);
    }

    #[actix_rt::test]
    async fn store_errors_pass_through() {
        let blocking = Blocking::new(1, Duration::from_millis(100));
        let e = blocking
            .store(|| Err::<(), _>(ApiError::NotFound("gone".into())))
            .await
            .unwrap_err();
        assert_eq!(e.status_code().as_u16(), 404);
        assert_eq!(blocking.available_permits(), 1);
    }
}
