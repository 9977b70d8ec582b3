//! # telemetry
//!
//! What an operator sees of a running program: its Prometheus metrics ([`Metrics`], one
//! registry of `shotledger_*` families, rendered as OpenMetrics text) and its structured
//! logs ([`init_logging`], text or JSON lines through `tracing-subscriber`).
//!
//! Both programs own one [`Metrics`] and record into it where things happen (a request
//! answered, a ledger operation applied, a capture taken, a webhook delivered). What other
//! crates keep by themselves (the store's connection pool, the browser pool, the screenshot
//! cache, Polar's calls) is read only when `/metrics` is scraped and handed to
//! [`Metrics::render`] as a [`Sample`]: those crates never depend on this one (ADR 14).

mod logs;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

pub use logs::{init_logging, LogFormat, LoggingError};

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The label pairs of one series.
type Labels = Vec<(&'static str, String)>;

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Request and capture latencies: 1 ms to about 33 s, doubling.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The registry and every family both programs record into. Cheap to share (`Arc`).
pub struct Metrics {
    registry: Registry,
    http_requests: Family<Labels, Counter>,
    http_duration: HistogramFamily,
    ledger_operations: Family<Labels, Counter>,
    ledger_batch_size: Histogram,
    credits_charged: Counter,
    captures: Family<Labels, Counter>,
    capture_duration: HistogramFamily,
    webhook_deliveries: Family<Labels, Counter>,
    notifications_sent: Family<Labels, Counter>,
    db_acquire_wait: Histogram,
    db_acquire_timeouts: Counter,
    sample: Arc<Mutex<Sample>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every family registered and nothing counted yet.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let http_requests = Family::<Labels, Counter>::default();
        registry.register(
            "shotledger_http_requests",
            "HTTP requests answered, by route pattern (`unmatched` when no route took it), method and status",
            http_requests.clone(),
        );
        let http_duration = HistogramFamily::new_with_constructor(latency as fn() -> Histogram);
        registry.register_with_unit(
            "shotledger_http_request_duration",
            "Time from a request's head to its answer, by route pattern and method",
            Unit::Seconds,
            http_duration.clone(),
        );
        let ledger_operations = Family::<Labels, Counter>::default();
        registry.register(
            "shotledger_ledger_operations",
            "Ledger operations by kind and outcome: charged (applied), rejected_credits (not covered), rejected (another ledger rule), replayed (idempotency key seen), conflict (key reused with another request, or a settled hold), error (the database)",
            ledger_operations.clone(),
        );
        let ledger_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "shotledger_ledger_batch_size",
            "Operations per group-committed transaction of the ledger writers",
            ledger_batch_size.clone(),
        );
        let credits_charged = Counter::default();
        registry.register(
            "shotledger_ledger_credits_charged_thousandths",
            "Credits charged (usage debits and captured holds), in thousandths of a credit so the sum stays exact",
            credits_charged.clone(),
        );
        let captures = Family::<Labels, Counter>::default();
        registry.register(
            "shotledger_captures",
            "Screenshots and PDFs taken by the browser pool, by outcome (`ok` or the error code)",
            captures.clone(),
        );
        let capture_duration = HistogramFamily::new_with_constructor(latency as fn() -> Histogram);
        registry.register_with_unit(
            "shotledger_capture_duration",
            "Time a capture took in the browser pool (queue included), by outcome",
            Unit::Seconds,
            capture_duration.clone(),
        );
        let webhook_deliveries = Family::<Labels, Counter>::default();
        registry.register(
            "shotledger_webhook_deliveries",
            "Webhook deliveries received, by event type and outcome",
            webhook_deliveries.clone(),
        );
        let notifications_sent = Family::<Labels, Counter>::default();
        registry.register(
            "shotledger_notifications_sent",
            "Attempts to deliver a webhook notification to a customer's endpoint, by event type and outcome (delivered: a 2xx; failed: another answer or none, retried with backoff)",
            notifications_sent.clone(),
        );
        let db_acquire_wait = Histogram::new(exponential_buckets(0.0001, 4.0, 10));
        registry.register_with_unit(
            "shotledger_db_pool_acquire_wait",
            "Time a caller waited for a database connection from the pool",
            Unit::Seconds,
            db_acquire_wait.clone(),
        );
        let db_acquire_timeouts = Counter::default();
        registry.register(
            "shotledger_db_pool_acquire_timeouts",
            "Callers that gave up waiting for a database connection (database.acquire_timeout_secs)",
            db_acquire_timeouts.clone(),
        );
        let sample = Arc::new(Mutex::new(Sample::default()));
        registry.register_collector(Box::new(Sampled(sample.clone())));
        Metrics {
            registry,
            http_requests,
            http_duration,
            ledger_operations,
            ledger_batch_size,
            credits_charged,
            captures,
            capture_duration,
            webhook_deliveries,
            notifications_sent,
            db_acquire_wait,
            db_acquire_timeouts,
            sample,
        }
    }

    /// One answered request. `route` is the route's pattern (`/api/v1/api-keys/{id}`),
    /// never the raw path; a method outside HTTP's usual ones counts as `OTHER`, so a
    /// client cannot make up series.
    pub fn http_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method,
            _ => "OTHER",
        };
        self.http_requests
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("method", method.to_owned()),
                ("status", status.to_string()),
            ])
            .inc();
        self.http_duration
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("method", method.to_owned()),
            ])
            .observe(took.as_secs_f64());
    }

    /// One ledger operation and how it ended (see the family's help for the outcomes).
    pub fn ledger_operation(&self, kind: &str, outcome: &str) {
        self.ledger_operations
            .get_or_create(&vec![
                ("kind", kind.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// One group-committed transaction of `operations` operations.
    pub fn ledger_batch(&self, operations: usize) {
        self.ledger_batch_size.observe(operations as f64);
    }

    /// Credits charged, in thousandths of a credit.
    pub fn credits_charged(&self, thousandths: u64) {
        self.credits_charged.inc_by(thousandths);
    }

    /// One capture, `ok` or its error code, and how long it took.
    pub fn capture(&self, outcome: &str, took: Duration) {
        let labels = vec![("outcome", outcome.to_owned())];
        self.captures.get_or_create(&labels).inc();
        self.capture_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// One attempt to deliver a notification to a customer's endpoint (api-server).
    pub fn notification_sent(&self, event_type: &str, outcome: &str) {
        self.notifications_sent
            .get_or_create(&vec![
                ("event_type", event_type.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// One webhook delivery, by its event type (`unknown` before it is verified) and outcome.
    pub fn webhook_delivery(&self, event_type: &str, outcome: &str) {
        self.webhook_deliveries
            .get_or_create(&vec![
                ("event_type", event_type.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// A caller got a database connection after waiting `waited`.
    pub fn db_acquired(&self, waited: Duration) {
        self.db_acquire_wait.observe(waited.as_secs_f64());
    }

    /// A caller gave up waiting for a database connection.
    pub fn db_acquire_timed_out(&self) {
        self.db_acquire_timeouts.inc();
    }

    /// The whole registry as OpenMetrics text ([`CONTENT_TYPE`]), with `sample` (what
    /// the other crates kept, read now) among it.
    pub fn render(&self, sample: Sample) -> String {
        *self.sample.lock().unwrap_or_else(|p| p.into_inner()) = sample;
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would only cut the text short.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// What other crates keep by themselves, read when `/metrics` is scraped. A part that is
/// `None` (no browser pool in the webhook-receiver, say) is left out of the text.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub db_pool: Option<PoolSample>,
    pub capture: Option<CaptureSample>,
    pub cache: Option<CacheSample>,
    /// Calls to Polar's API so far, by outcome.
    pub polar_calls: Vec<(&'static str, u64)>,
}

/// The store's connection pool now.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolSample {
    /// Connections it may open at most.
    pub max: u32,
    /// Connections open now.
    pub open: u32,
    /// Of those, idle in the pool.
    pub idle: u32,
}

/// The browser pool now, and its counters since start.
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureSample {
    /// Workers (each one browser session at most).
    pub pool_size: u64,
    /// Workers taking a capture now.
    pub busy: u64,
    /// Captures waiting for a worker.
    pub queued: u64,
    /// Browser sessions opened since start.
    pub sessions_opened: u64,
    /// Captures answered `BUSY` (queue full, or waited too long).
    pub busy_rejections: u64,
}

/// The screenshot cache now, and its counters since start.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheSample {
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub hits: u64,
    pub misses: u64,
}

/// Encodes the [`Sample`] last handed to [`Metrics::render`].
#[derive(Debug)]
struct Sampled(Arc<Mutex<Sample>>);

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: &[Labels],
    values: &[i64],
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(0i64);
    let mut family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    for (labels, value) in labels.iter().zip(values) {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: &[Labels],
    values: &[u64],
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(0u64);
    let mut family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    for (labels, value) in labels.iter().zip(values) {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for Sampled {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let none: Labels = Vec::new();
        if let Some(p) = s.db_pool {
            let states = [
                vec![("state", "in_use".to_owned())],
                vec![("state", "idle".to_owned())],
            ];
            let in_use = i64::from(p.open.saturating_sub(p.idle));
            gauge(
                &mut e,
                "shotledger_db_pool_connections",
                "Database connections of the pool, in use (checked out) or idle",
                &states,
                &[in_use, i64::from(p.idle)],
            )?;
            gauge(
                &mut e,
                "shotledger_db_pool_max_connections",
                "Database connections the pool may open at most (database.max_connections)",
                std::slice::from_ref(&none),
                &[i64::from(p.max)],
            )?;
        }
        if let Some(c) = s.capture {
            let states = [
                vec![("state", "busy".to_owned())],
                vec![("state", "idle".to_owned())],
            ];
            let busy = clamp(c.busy);
            gauge(
                &mut e,
                "shotledger_capture_pool_workers",
                "Browser pool workers taking a capture (busy) or waiting for one (idle)",
                &states,
                &[busy, clamp(c.pool_size).saturating_sub(busy).max(0)],
            )?;
            gauge(
                &mut e,
                "shotledger_capture_queue_depth",
                "Captures waiting for a free browser pool worker",
                std::slice::from_ref(&none),
                &[clamp(c.queued)],
            )?;
            counter(
                &mut e,
                "shotledger_capture_sessions_opened",
                "Browser sessions opened since start",
                std::slice::from_ref(&none),
                &[c.sessions_opened],
            )?;
            counter(
                &mut e,
                "shotledger_capture_busy_rejections",
                "Captures answered BUSY (the queue was full or the wait too long)",
                std::slice::from_ref(&none),
                &[c.busy_rejections],
            )?;
        }
        if let Some(c) = s.cache {
            counter(
                &mut e,
                "shotledger_cache_hits",
                "Screenshot cache lookups that found a fresh capture",
                std::slice::from_ref(&none),
                &[c.hits],
            )?;
            counter(
                &mut e,
                "shotledger_cache_misses",
                "Screenshot cache lookups that found nothing fresh",
                std::slice::from_ref(&none),
                &[c.misses],
            )?;
            gauge(
                &mut e,
                "shotledger_cache_entries",
                "Captures kept in the screenshot cache",
                std::slice::from_ref(&none),
                &[clamp(c.entries)],
            )?;
            gauge(
                &mut e,
                "shotledger_cache_bytes",
                "Bytes the screenshot cache holds on disk",
                std::slice::from_ref(&none),
                &[clamp(c.bytes)],
            )?;
            gauge(
                &mut e,
                "shotledger_cache_max_bytes",
                "The screenshot cache's limit in bytes (screenshots.cache_max_bytes)",
                std::slice::from_ref(&none),
                &[clamp(c.max_bytes)],
            )?;
        }
        if !s.polar_calls.is_empty() {
            let labels: Vec<Labels> = s
                .polar_calls
                .iter()
                .map(|(outcome, _)| vec![("outcome", (*outcome).to_owned())])
                .collect();
            let values: Vec<u64> = s.polar_calls.iter().map(|(_, n)| *n).collect();
            counter(
                &mut e,
                "shotledger_polar_calls",
                "Calls to Polar's API by outcome: ok, rejected (Polar answered 4xx), failed (5xx, a timeout or no connection)",
                &labels,
                &values,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_their_names_and_move() {
        let m = Metrics::new();
        m.http_request(
            "/api/v1/api-keys/{id}",
            "DELETE",
            204,
            Duration::from_millis(3),
        );
        m.http_request("unmatched", "BREW", 404, Duration::from_millis(1));
        m.ledger_operation("debit", "charged");
        m.ledger_batch(3);
        m.credits_charged(1500);
        let text = m.render(Sample {
            db_pool: Some(PoolSample {
                max: 8,
                open: 3,
                idle: 1,
            }),
            polar_calls: vec![("ok", 2), ("failed", 1)],
            ..Sample::default()
        });
        for line in [
            "shotledger_http_requests_total{route=\"/api/v1/api-keys/{id}\",method=\"DELETE\",status=\"204\"} 1",
            "shotledger_http_requests_total{route=\"unmatched\",method=\"OTHER\",status=\"404\"} 1",
            "shotledger_ledger_operations_total{kind=\"debit\",outcome=\"charged\"} 1",
            "shotledger_ledger_batch_size_count 1",
            "shotledger_ledger_credits_charged_thousandths_total 1500",
            "shotledger_db_pool_connections{state=\"in_use\"} 2",
            "shotledger_db_pool_connections{state=\"idle\"} 1",
            "shotledger_polar_calls_total{outcome=\"failed\"} 1",
        ] {
            assert!(text.contains(line), "no `{line}` in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        // Parts not sampled are left out.
        assert!(!text.contains("shotledger_cache_hits"), "{text}");
    }
}
