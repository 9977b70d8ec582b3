//! The limits shared by every api-server of a deployment, in Redis, on Redis's own clock
//! (`TIME`), so the processes' clocks never need to agree.
//!
//! - A rate is GCRA in one Lua script ([`GCRA`]): the key holds the bucket's theoretical
//!   arrival time in microseconds and lives only as long as the bucket is not full.
//! - An account's capture slots are a sorted set ([`ACQUIRE`]): one member per running
//!   capture, scored by when its lease ends. A slot is removed when its capture ends; the
//!   slots of a process that died are dropped by the next acquire once their lease ended.
//!
//! Every call is bounded by `redis_timeout_ms`. A call that fails or takes longer marks
//! Redis down for [`RETRY_AFTER`]: meanwhile the process counts on its own (see
//! `ratelimit::local`), one warning is logged per outage, and one line when Redis answers
//! again.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::RedisResult;

use super::{Bucket, Meter, Rate, Refusal, Verdict};

/// How long the limits stay per process after Redis failed to answer.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// GCRA. KEYS[1]: the bucket; ARGV[1]: microseconds per token; ARGV[2]: the burst.
/// Returns {allowed (1/0), tokens left, microseconds until full, microseconds until the
/// next token (refused only)}.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local horizon = interval * burst
local new_tat = tat + interval
if new_tat - now > horizon then
  return {0, 0, tat - now, new_tat - horizon - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((horizon - (new_tat - now)) / interval), new_tat - now, 0}
";

/// A capture slot. KEYS[1]: the account's slots; ARGV[1]: the limit; ARGV[2]: the lease
/// in milliseconds; ARGV[3]: the new slot's member. Returns {taken (1/0), slots running}.
const ACQUIRE: &str = r"
local limit = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n >= limit then return {0, n} end
redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
if redis.call('PTTL', KEYS[1]) < lease then redis.call('PEXPIRE', KEYS[1], lease) end
return {1, n + 1}
";

pub struct Shared {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    timeout: Duration,
    down_until: Mutex<Option<Instant>>,
    /// True from the warning of an outage until Redis answers again.
    warned: AtomicBool,
    gcra: redis::Script,
    acquire: redis::Script,
}

impl Shared {
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> RedisResult<Shared> {
        Ok(Shared {
            client: redis::Client::open(url)?,
            conn: tokio::sync::Mutex::new(None),
            prefix: prefix.to_owned(),
            timeout,
            down_until: Mutex::new(None),
            warned: AtomicBool::new(false),
            gcra: redis::Script::new(GCRA),
            acquire: redis::Script::new(ACQUIRE),
        })
    }

    fn is_down(&self) -> bool {
        let mut down = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        match *down {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *down = None;
                false
            }
            None => false,
        }
    }

    fn failed(&self, why: &str) {
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + RETRY_AFTER);
        if let Ok(mut conn) = self.conn.try_lock() {
            *conn = None;
        }
        if !self.warned.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                error = %why,
                retry_secs = RETRY_AFTER.as_secs(),
                "Redis does not answer: rate limits are per process until it does (fail open)"
            );
        }
    }

    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let c = self.client.get_multiplexed_async_connection().await?;
        *conn = Some(c.clone());
        Ok(c)
    }

    /// Runs `call` within the timeout; `None` when Redis is down or fails now.
    async fn run<T, F, Fut>(&self, call: F) -> Option<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if self.is_down() {
            return None;
        }
        let answer = tokio::time::timeout(self.timeout, async {
            let conn = self.connection().await?;
            call(conn).await
        })
        .await;
        match answer {
            Ok(Ok(value)) => {
                if self.warned.swap(false, Ordering::SeqCst) {
                    tracing::info!("Redis answers again: rate limits are shared again");
                }
                Some(value)
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                None
            }
            Err(_) => {
                self.failed(&format!("no answer within {} ms", self.timeout.as_millis()));
                None
            }
        }
    }

    /// Counts one request of `id` against `bucket` at `rate`; `None` when Redis is down.
    pub async fn check(&self, bucket: Bucket, id: &str, rate: Rate) -> Option<Verdict> {
        let key = format!("{}{}:{id}", self.prefix, bucket.label());
        let interval_us = (1_000_000 / u64::from(rate.rps)).max(1);
        let script = &self.gcra;
        let answer: Vec<i64> = self
            .run(|mut conn| async move {
                script
                    .key(key)
                    .arg(interval_us)
                    .arg(rate.burst)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let at = |i: usize| answer.get(i).copied().unwrap_or(0).max(0) as u64;
        let us = |n: u64| Duration::from_micros(n);
        let meter = Meter {
            limit: rate.burst,
            remaining: at(1).min(u64::from(rate.burst)) as u32,
            reset_secs: super::ceil_secs(us(at(2))),
        };
        Some(if at(0) == 1 {
            Ok(meter)
        } else {
            Err(Refusal {
                meter: Meter {
                    reset_secs: meter.reset_secs.max(1),
                    ..meter
                },
                retry_after_secs: super::ceil_secs(us(at(3))).max(1),
            })
        })
    }

    /// One of `account`'s `limit` capture slots for at most `lease`: `Some(None)` when all
    /// are taken, `None` when Redis is down.
    pub async fn acquire(
        self: &Arc<Self>,
        account: &str,
        limit: u32,
        lease: Duration,
    ) -> Option<Option<SharedSlot>> {
        let key = format!("{}captures:{account}", self.prefix);
        let member = ledger_store::new_id("slot_");
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
        let script = &self.acquire;
        let (k, m) = (key.clone(), member.clone());
        let answer: Vec<i64> = self
            .run(|mut conn| async move {
                script
                    .key(k)
                    .arg(limit)
                    .arg(lease_ms)
                    .arg(m)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Some((answer.first() == Some(&1)).then(|| SharedSlot {
            shared: self.clone(),
            key,
            member,
        }))
    }

    async fn release(&self, key: String, member: String) {
        self.run(|mut conn| async move {
            redis::cmd("ZREM")
                .arg(key)
                .arg(member)
                .query_async::<i64>(&mut conn)
                .await
        })
        .await;
    }
}

/// A running capture counted in Redis; removed from the account's set when dropped (or,
/// if this process dies first, when its lease ends).
pub struct SharedSlot {
    shared: Arc<Shared>,
    key: String,
    member: String,
}

impl std::fmt::Debug for SharedSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSlot")
            .field("key", &self.key)
            .field("member", &self.member)
            .finish()
    }
}

impl Drop for SharedSlot {
    fn drop(&mut self) {
        let (shared, key, member) = (
            self.shared.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.member),
        );
        // Outside a runtime (the process is stopping) the lease ends it instead.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { shared.release(key, member).await });
        }
    }
}
