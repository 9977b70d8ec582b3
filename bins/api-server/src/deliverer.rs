//! The deliverer: sends the outbox of customer notifications (ADR 12).
//!
//! A thread started by `server::run` (when `notifications.deliver`) polls
//! [`ledger_store::Notifications::claim_due`] every `notifications.poll_interval_ms`, POSTs
//! each claimed delivery to its endpoint with the Standard Webhooks headers
//! (`webhook-id` = the delivery id, the same on every attempt; `webhook-timestamp`;
//! `webhook-signature` = `v1,` + base64 HMAC-SHA256 keyed with the base64-decoded part of
//! the endpoint's `whsec_` secret, signed by the payments crate's `sign`), and records the
//! outcome with [`ledger_store::Notifications::finish`]: a 2xx is delivered, anything
//! else (another status, a timeout, a refused address) is retried with backoff.
//!
//! Every address an endpoint's name resolves to is checked with the capture's SSRF guard
//! ([`capture::TargetPolicy`]) inside the HTTP client's resolver, and the client connects
//! only to the addresses that resolver returned: the check is on the address actually
//! connected to, at connect time, so a name that resolves differently after registration
//! (DNS rebinding) cannot reach a private address. No proxy from the environment is used
//! and redirects are not followed (a 3xx is a failed attempt).

use std::time::Duration;

use ledger_core::{RetryPolicy, Timestamp};
use ledger_store::{Attempt, Claimed, Store, StoreError};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use crate::state::Clock;

/// Deliveries claimed (and sent in parallel) per poll, at most.
const PER_POLL: usize = 16;
/// How much of an endpoint's answer is kept in the log of a failed attempt.
const ERROR_CHARS: usize = 200;

/// A resolver that refuses a name when any address it resolves to is one the policy
/// refuses (as the capture's `resolve_checked` does).
#[derive(Debug)]
struct GuardedResolver {
    policy: capture::TargetPolicy,
    inner: DefaultResolver,
}

impl Resolver for GuardedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addrs = self.inner.resolve(uri, config, timeout)?;
        for addr in addrs.iter() {
            if let Err(reason) = self.policy.check(*addr) {
                return Err(ureq::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "refused to connect to {}: it is {reason}, which notifications may not reach",
                        addr.ip()
                    ),
                )));
            }
        }
        Ok(addrs)
    }
}

/// Sends due deliveries. Cheap to share between threads.
pub struct Deliverer {
    store: Store,
    agent: ureq::Agent,
    policy: RetryPolicy,
    lease_ms: i64,
    clock: Clock,
    /// Counts each attempt (`shotledger_notifications_sent`) when set.
    metrics: Option<std::sync::Arc<telemetry::Metrics>>,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("policy", &self.policy)
            .finish()
    }
}

impl Deliverer {
    /// A deliverer with `settings`' timeout, lease and retry schedule, connecting only
    /// where `targets` allows.
    pub fn new(
        store: Store,
        settings: &settings::NotificationSettings,
        targets: capture::TargetPolicy,
        clock: Clock,
    ) -> Deliverer {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(settings.timeout_secs)))
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .proxy(None)
            .user_agent("Shotledger-Webhooks/1")
            .build();
        let resolver = GuardedResolver {
            policy: targets,
            inner: DefaultResolver::default(),
        };
        Deliverer {
            store,
            agent: ureq::Agent::with_parts(config, DefaultConnector::default(), resolver),
            policy: settings.retry_policy(),
            lease_ms: i64::try_from(settings.lease_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            clock,
            metrics: None,
        }
    }

    /// This deliverer, counting every attempt in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<telemetry::Metrics>) -> Deliverer {
        self.metrics = Some(metrics);
        self
    }

    /// The policy the settings name: the SSRF guard's, unless private targets are allowed.
    pub fn targets(settings: &settings::NotificationSettings) -> capture::TargetPolicy {
        if settings.allow_private_targets {
            capture::TargetPolicy::allow_private()
        } else {
            capture::TargetPolicy::strict()
        }
    }

    /// Claims what is due now, sends it (in parallel, one thread a delivery) and records
    /// each outcome; how many were attempted.
    pub fn run_once(&self) -> Result<usize, StoreError> {
        let now = (self.clock)();
        let claimed = self
            .store
            .notifications()
            .claim_due(now, PER_POLL, self.lease_ms)?;
        let n = claimed.len();
        let results: Vec<Result<(), StoreError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = claimed
                .iter()
                .map(|c| scope.spawn(move || self.deliver(c)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(StoreError::Unavailable {
                            reason: "a delivery thread panicked".into(),
                        })
                    })
                })
                .collect()
        });
        for r in results {
            r?;
        }
        Ok(n)
    }

    /// One attempt of one delivery, recorded.
    fn deliver(&self, claimed: &Claimed) -> Result<(), StoreError> {
        let sent_at = (self.clock)();
        let attempt = self.send(claimed, sent_at);
        let d = &claimed.delivery;
        if let Some(metrics) = &self.metrics {
            let outcome = match &attempt {
                Attempt::Delivered { .. } => "delivered",
                Attempt::Failed { .. } => "failed",
            };
            metrics.notification_sent(d.event.as_str(), outcome);
        }
        match &attempt {
            Attempt::Delivered { status } => {
                tracing::info!(delivery = %d.id, endpoint = %d.endpoint_id, event = %d.event, status, "notification delivered");
            }
            Attempt::Failed { status, error } => {
                tracing::warn!(delivery = %d.id, endpoint = %d.endpoint_id, event = %d.event, ?status, %error, attempts = d.attempts + 1, "notification delivery failed");
            }
        }
        self.store
            .notifications()
            .finish(&d.id, &attempt, &self.policy, (self.clock)())?;
        Ok(())
    }

    fn send(&self, claimed: &Claimed, now: Timestamp) -> Attempt {
        let d = &claimed.delivery;
        let secret = payments::WebhookSecret::new(&claimed.secret);
        let key = secret
            .standard_key()
            .unwrap_or_else(|| secret.legacy_key())
            .to_vec();
        let timestamp = now.millis().div_euclid(1000);
        let signature = payments::signature::sign(&key, &d.id, timestamp, d.payload.as_bytes());
        let answer = self
            .agent
            .post(&claimed.url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.id)
            .header("webhook-timestamp", &timestamp.to_string())
            .header("webhook-signature", &signature)
            .send(d.payload.as_bytes());
        match answer {
            Ok(mut res) => {
                let status = res.status().as_u16();
                if (200..300).contains(&status) {
                    Attempt::Delivered { status }
                } else {
                    let text = res
                        .body_mut()
                        .with_config()
                        .limit(4096)
                        .read_to_string()
                        .unwrap_or_default();
                    let text: String = text.chars().take(ERROR_CHARS).collect();
                    Attempt::Failed {
                        status: Some(status),
                        error: format!("the endpoint answered HTTP {status} {}", text.trim()),
                    }
                }
            }
            Err(e) => Attempt::Failed {
                status: None,
                error: e.to_string(),
            },
        }
    }

    /// Runs [`Deliverer::run_once`] every `interval` on a thread of its own, for the
    /// life of the process (a failed poll is logged and retried at the next one).
    pub fn spawn(self, interval: Duration) {
        let started = std::thread::Builder::new()
            .name("notifications".into())
            .spawn(move || loop {
                match self.run_once() {
                    // Something was due: look again at once, there may be more.
                    Ok(n) if n > 0 => continue,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the notification deliverer could not poll")
                    }
                }
                std::thread::sleep(interval);
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "could not start the notification deliverer");
        }
    }
}
