//! The limits of one process: GCRA with `governor` (one keyed limiter per bucket), and a
//! count of each account's running captures.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use super::{ceil_secs, Bucket, Meter, Rate, Refusal, Verdict};

type Keyed =
    RateLimiter<String, HashMapStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Checks between two sweeps of the keys whose bucket is full again (they hold nothing).
const SWEEP_EVERY: u64 = 4096;

pub struct Local {
    key: Option<(Rate, Keyed)>,
    ip: Option<(Rate, Keyed)>,
    checks: AtomicU64,
    clock: DefaultClock,
    running: Arc<Mutex<HashMap<String, u32>>>,
}

fn limiter(rate: Rate) -> Option<(Rate, Keyed)> {
    let rps = NonZeroU32::new(rate.rps)?;
    let burst = NonZeroU32::new(rate.burst)?;
    let quota = Quota::per_second(rps).allow_burst(burst);
    Some((
        rate,
        RateLimiter::hashmap(quota).with_middleware::<StateInformationMiddleware>(),
    ))
}

impl Local {
    pub fn new(key: Option<Rate>, ip: Option<Rate>) -> Local {
        Local {
            key: key.and_then(limiter),
            ip: ip.and_then(limiter),
            checks: AtomicU64::new(0),
            clock: DefaultClock::default(),
            running: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Counts one request of `id` against `bucket`; `None` when that limit is off.
    pub fn check(&self, bucket: Bucket, id: &str) -> Option<Verdict> {
        let (rate, limiter) = match bucket {
            Bucket::Key => self.key.as_ref()?,
            Bucket::Ip => self.ip.as_ref()?,
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let interval = rate.interval();
        Some(match limiter.check_key(&id.to_owned()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Ok(Meter {
                    limit: rate.burst,
                    remaining,
                    reset_secs: ceil_secs(interval * rate.burst.saturating_sub(remaining)),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err(Refusal {
                    meter: Meter {
                        limit: rate.burst,
                        remaining: 0,
                        reset_secs: ceil_secs(interval * rate.burst).max(1),
                    },
                    retry_after_secs: ceil_secs(wait).max(1),
                })
            }
        })
    }

    /// One of `account`'s `limit` capture slots, or `None` when all are taken.
    pub fn acquire(&self, account: &str, limit: u32) -> Option<LocalSlot> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let n = running.entry(account.to_owned()).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(LocalSlot {
            running: self.running.clone(),
            account: account.to_owned(),
        })
    }
}

/// A running capture of an account in this process; counted until dropped.
#[derive(Debug)]
pub struct LocalSlot {
    running: Arc<Mutex<HashMap<String, u32>>>,
    account: String,
}

impl Drop for LocalSlot {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = running.get_mut(&self.account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(&self.account);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusals_with_the_wait() {
        let local = Local::new(Some(Rate { rps: 1, burst: 3 }), None);
        for left in [2, 1, 0] {
            let meter = local.check(Bucket::Key, "k").unwrap().unwrap();
            assert_eq!((meter.limit, meter.remaining), (3, left));
        }
        let refusal = local.check(Bucket::Key, "k").unwrap().unwrap_err();
        assert_eq!(refusal.retry_after_secs, 1);
        assert_eq!(refusal.meter.remaining, 0);
        assert!(
            local.check(Bucket::Key, "other").unwrap().is_ok(),
            "per key"
        );
        assert!(
            local.check(Bucket::Ip, "k").is_none(),
            "the ip limit is off"
        );
    }

    #[test]
    fn slots_come_back_when_dropped() {
        let local = Local::new(None, None);
        let a = local.acquire("acc", 2).unwrap();
        let _b = local.acquire("acc", 2).unwrap();
        assert!(local.acquire("acc", 2).is_none());
        assert!(local.acquire("other", 2).is_some());
        drop(a);
        assert!(local.acquire("acc", 2).is_some());
    }
}
