//! Rate limits (ADR 15): requests a second with a burst per credential and per client
//! address, and captures at once per account.
//!
//! - **Per credential** (an API key, by its id; a session, by its hash; a signed URL, by
//!   its key): charged by the authentication extractor ([`crate::auth::Authed`]) once the
//!   credential is known to be good, so every authenticated endpoint is limited. The
//!   operator's token is not limited (trusted callers meter through it).
//! - **Per client address** (IPv6 grouped by /64, see [`client_group`]): charged by
//!   [`limit_addresses`] for every request that presents no credential (`/healthz` aside),
//!   and by the extractors for every credential they refuse. An address whose refusals ran
//!   out of budget is put aside until its next token ([`Limits::blocked`]): its requests
//!   with credentials are answered 429 before any credential is looked at, so guessing keys
//!   goes no faster than `per_ip_rps`.
//! - **Captures per account**: a [`Slot`] is taken before the browser is asked and is
//!   given back when it is dropped, on every path (success, error, the client going away).
//!
//! Every limited answer carries `x-ratelimit-limit` (the burst), `x-ratelimit-remaining`
//! and `x-ratelimit-reset` (seconds until the bucket is full again); a refusal is 429
//! `RATE_LIMITED` or `CONCURRENCY_LIMITED` with `Retry-After` (seconds, rounded up).
//!
//! The counting is GCRA (a token bucket kept as one instant per key): by default in this
//! process with `governor` ([`local`]); with `ratelimit.redis_url` in Redis, on Redis's own
//! clock, so the limits hold across every api-server sharing it ([`shared`]). When Redis does
//! not answer within `redis_timeout_ms`, the process falls back to its own limits (fail
//! open: Redis being down never refuses a request), logs one warning, and asks Redis again
//! after [`shared::RETRY_AFTER`].

pub mod doc;
mod local;
mod shared;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage, HttpRequest, HttpResponse};
use ledger_core::AccountId;
use settings::RateLimitSettings;

use crate::error::ApiError;
use crate::state::AppState;

/// What a limited request is told of its bucket (the `x-ratelimit-*` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meter {
    /// The burst: requests that may be made at once.
    pub limit: u32,
    /// Requests that may still be made at once now.
    pub remaining: u32,
    /// Seconds until the bucket is full again (rounded up).
    pub reset_secs: u64,
}

/// A request over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub meter: Meter,
    /// Seconds until one more request is allowed (rounded up, at least 1).
    pub retry_after_secs: u64,
}

/// What one request costs against a bucket: allowed (with what is left) or refused.
pub type Verdict = Result<Meter, Refusal>;

/// Which limit a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Per credential.
    Key,
    /// Per client address.
    Ip,
}

impl Bucket {
    fn label(self) -> &'static str {
        match self {
            Bucket::Key => "key",
            Bucket::Ip => "ip",
        }
    }
}

/// A rate: `rps` requests a second, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub rps: u32,
    pub burst: u32,
}

impl Rate {
    /// `None` when the limit is off (`rps` 0).
    fn of(rps: u32, burst: u32) -> Option<Rate> {
        (rps > 0).then(|| Rate {
            rps,
            burst: burst.max(1),
        })
    }

    /// The time one request's token takes to come back.
    fn interval(self) -> Duration {
        Duration::from_nanos(1_000_000_000 / u64::from(self.rps))
    }
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_nanos().div_ceil(1_000_000_000) as u64
}

/// The client address a request is limited as ([`client_group`] of [`client_ip`]),
/// noted by [`limit_addresses`] for the extractors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Set by an extractor that took the request's credential (good or refused): the request
/// was counted, and [`limit_addresses`] does not count it again.
#[derive(Debug, Clone, Copy)]
pub struct Counted;

/// The limits of one process, and the Redis they share when configured.
pub struct Limits {
    key: Option<Rate>,
    ip: Option<Rate>,
    captures: u32,
    trusted_proxies: Vec<IpAddr>,
    local: local::Local,
    shared: Option<Arc<shared::Shared>>,
    /// Addresses whose refused credentials ran out of budget, until when.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("key", &self.key)
            .field("ip", &self.ip)
            .field("captures", &self.captures)
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

/// Addresses kept aside at most (each one first spent a whole burst of refusals).
const BLOCKED_CAPACITY: usize = 65_536;

impl Limits {
    pub fn new(settings: &RateLimitSettings) -> Limits {
        let key = Rate::of(settings.per_key_rps, settings.per_key_burst);
        let ip = Rate::of(settings.per_ip_rps, settings.per_ip_burst);
        let shared = settings.redis().and_then(|url| {
            shared::Shared::new(
                url,
                &settings.redis_prefix,
                Duration::from_millis(settings.redis_timeout_ms),
            )
            .map_err(|e| {
                tracing::warn!(error = %e, "ratelimit.redis_url cannot be used; limits are per process")
            })
            .ok()
            .map(Arc::new)
        });
        Limits {
            key,
            ip,
            captures: settings.captures_per_account,
            trusted_proxies: settings.trusted_proxies.clone(),
            local: local::Local::new(key, ip),
            shared,
            blocked: Mutex::new(HashMap::new()),
        }
    }

    fn rate(&self, bucket: Bucket) -> Option<Rate> {
        match bucket {
            Bucket::Key => self.key,
            Bucket::Ip => self.ip,
        }
    }

    /// Counts one request against `bucket` for `id`; `None` when that limit is off.
    pub async fn check(&self, bucket: Bucket, id: &str) -> Option<Verdict> {
        let rate = self.rate(bucket)?;
        if let Some(shared) = &self.shared {
            if let Some(verdict) = shared.check(bucket, id, rate).await {
                return Some(verdict);
            }
        }
        self.local.check(bucket, id)
    }

    /// Counts a request from `addr` (already grouped).
    pub async fn check_addr(&self, addr: IpAddr) -> Option<Verdict> {
        self.check(Bucket::Ip, &addr.to_string()).await
    }

    /// Counts a refused credential from `addr`: when its budget is spent, the address is
    /// put aside until its next token and the refusal becomes a 429.
    pub async fn refused_from(&self, addr: IpAddr) -> Option<Verdict> {
        let verdict = self.check_addr(addr).await?;
        if let Err(refusal) = verdict {
            self.block(addr, Duration::from_secs(refusal.retry_after_secs));
        }
        Some(verdict)
    }

    fn lock_blocked(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant>> {
        self.blocked.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn block(&self, addr: IpAddr, for_: Duration) {
        let now = Instant::now();
        let mut blocked = self.lock_blocked();
        if blocked.len() >= BLOCKED_CAPACITY {
            blocked.retain(|_, until| *until > now);
        }
        if blocked.len() < BLOCKED_CAPACITY {
            blocked.insert(addr, now + for_);
        }
    }

    /// `Some(seconds left)` while `addr` is put aside for its refused credentials.
    pub fn blocked(&self, addr: IpAddr) -> Option<u64> {
        let now = Instant::now();
        let mut blocked = self.lock_blocked();
        match blocked.get(&addr) {
            Some(until) if *until > now => Some(ceil_secs(*until - now).max(1)),
            Some(_) => {
                blocked.remove(&addr);
                None
            }
            None => None,
        }
    }

    /// The meter of an address that is put aside (`retry_after_secs` from [`Limits::blocked`]).
    pub fn blocked_refusal(&self, retry_after_secs: u64) -> Refusal {
        let burst = self.ip.map_or(0, |r| r.burst);
        Refusal {
            meter: Meter {
                limit: burst,
                remaining: 0,
                reset_secs: self
                    .ip
                    .map_or(1, |r| ceil_secs(r.interval() * r.burst).max(1)),
            },
            retry_after_secs,
        }
    }

    /// Captures one account may run at once (0: no limit).
    pub fn captures_per_account(&self) -> u32 {
        self.captures
    }

    /// A capture slot of `account`, held until the [`Slot`] is dropped; `lease` bounds how
    /// long a slot of a process that died keeps counting (shared limits only).
    /// `Ok(None)` when captures are not limited; 429 `CONCURRENCY_LIMITED` when every slot
    /// is taken.
    pub async fn capture_slot(
        &self,
        account: &AccountId,
        lease: Duration,
    ) -> Result<Option<Slot>, ApiError> {
        if self.captures == 0 {
            return Ok(None);
        }
        if let Some(shared) = &self.shared {
            match shared.acquire(account.as_str(), self.captures, lease).await {
                Some(Some(slot)) => return Ok(Some(Slot::Shared(slot))),
                Some(None) => return Err(self.concurrency_refusal()),
                None => {}
            }
        }
        match self.local.acquire(account.as_str(), self.captures) {
            Some(slot) => Ok(Some(Slot::Local(slot))),
            None => Err(self.concurrency_refusal()),
        }
    }

    fn concurrency_refusal(&self) -> ApiError {
        ApiError::ConcurrencyLimited {
            limit: self.captures,
            retry_after_secs: CAPTURE_RETRY_AFTER_SECS,
        }
    }

    /// The client address of `req`: its peer, or, when the peer is one of
    /// `trusted_proxies`, the last `X-Forwarded-For` address that is not.
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        if !self.trusted_proxies.contains(&canonical(peer)) {
            return Some(peer);
        }
        let forwarded: Vec<IpAddr> = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .collect();
        Some(
            forwarded
                .into_iter()
                .rev()
                .find(|a| !self.trusted_proxies.contains(&canonical(*a)))
                .unwrap_or(peer),
        )
    }
}

/// Seconds a client is asked to wait when its account's capture slots are all taken.
pub const CAPTURE_RETRY_AFTER_SECS: u64 = 1;

/// An IPv4 address mapped into IPv6 as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The group an address is limited as: an IPv4 address alone, an IPv6 address by its /64
/// (one customer's network usually holds a whole /64).
pub fn client_group(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// A capture slot of an account; given back when dropped.
#[derive(Debug)]
pub enum Slot {
    Local(local::LocalSlot),
    Shared(shared::SharedSlot),
}

/// The address `req` is limited as (noted by [`limit_addresses`], else worked out).
pub fn client_addr(req: &HttpRequest, limits: &Limits) -> Option<IpAddr> {
    if let Some(ClientAddr(addr)) = req.extensions().get::<ClientAddr>() {
        return Some(*addr);
    }
    limits.client_ip(req).map(client_group)
}

/// 429 `RATE_LIMITED` for `refusal` of `bucket`.
pub fn rate_limited(bucket: Bucket, rate: Option<Rate>, refusal: Refusal) -> ApiError {
    let (rps, burst) = rate.map_or((0, 0), |r| (r.rps, r.burst));
    let whose = match bucket {
        Bucket::Key => "this API key",
        Bucket::Ip => "this address",
    };
    ApiError::RateLimited {
        message: format!(
            "Too many requests for {whose}: at most {burst} at once and {rps} a second; \
             retry in {} seconds (Retry-After)",
            refusal.retry_after_secs
        ),
        retry_after_secs: refusal.retry_after_secs,
    }
}

impl Limits {
    /// The rate of `bucket`, for messages.
    pub fn rate_of(&self, bucket: Bucket) -> Option<Rate> {
        self.rate(bucket)
    }
}

/// Notes `meter` on the request, for the `x-ratelimit-*` headers of its answer.
pub fn note(req: &HttpRequest, meter: Meter) {
    req.extensions_mut().insert(meter);
}

/// Adds the `x-ratelimit-*` headers of `meter`.
pub fn add_headers(res: &mut HttpResponse, meter: Meter) {
    let h = res.headers_mut();
    for (name, value) in [
        ("x-ratelimit-limit", u64::from(meter.limit)),
        ("x-ratelimit-remaining", u64::from(meter.remaining)),
        ("x-ratelimit-reset", meter.reset_secs),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
}

/// The per-address limit, and the `x-ratelimit-*` headers of every answer (see the module
/// documentation).
pub async fn limit_addresses(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let limits = state.limits.clone();
    let addr = limits.client_ip(req.request()).map(client_group);
    if let Some(addr) = addr {
        req.extensions_mut().insert(ClientAddr(addr));
    }
    let exempt = EXEMPT.contains(&req.path());
    let credentialed = crate::auth::presents_credential(req.request());
    if let (Some(addr), false) = (addr, exempt) {
        let refused = if credentialed {
            limits
                .blocked(addr)
                .map(|secs| limits.blocked_refusal(secs))
        } else {
            match limits.check_addr(addr).await {
                Some(Ok(meter)) => {
                    req.extensions_mut().insert(meter);
                    None
                }
                Some(Err(refusal)) => Some(refusal),
                None => None,
            }
        };
        if let Some(refusal) = refused {
            let error = rate_limited(Bucket::Ip, limits.rate_of(Bucket::Ip), refusal);
            let mut res = HttpResponse::from_error(error);
            add_headers(&mut res, refusal.meter);
            return Ok(req.into_response(res));
        }
    }
    let mut res = next.call(req).await?.map_into_boxed_body();
    let counted = res.request().extensions().contains::<Counted>();
    if let (Some(addr), true, false, false) = (addr, credentialed, counted, exempt) {
        // A credential no extractor took (a public route): the address pays, and the next
        // request is refused when that emptied its budget.
        if let Some(verdict) = limits.refused_from(addr).await {
            let meter = match verdict {
                Ok(meter) => meter,
                Err(refusal) => refusal.meter,
            };
            res.request().extensions_mut().insert(meter);
        }
    }
    let meter = res.request().extensions().get::<Meter>().copied();
    if let Some(meter) = meter {
        add_headers(res.response_mut(), meter);
    }
    Ok(res)
}

/// Paths no limit applies to: a load balancer's health checks.
pub const EXEMPT: &[&str] = &["/healthz"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_grouped_by_its_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_group(a), client_group(b));
        assert_ne!(client_group(a), client_group(c));
        assert_eq!(client_group(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_group(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1000)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
    }
}
