//! # settings
//!
//! Both programs (`api-server`, `webhook-receiver`) read the same configuration, in
//! layers, later wins:
//! 1. the defaults of `config/default.toml`, built into the binary;
//! 2. `config/default.toml` in the working folder, when present;
//! 3. the file given with `--config FILE` (it must exist);
//! 4. the environment: `SHOTLEDGER__<SECTION>__<KEY>`, and `DATABASE_URL` for
//!    `database.url`.
//!
//! Unknown keys are refused (a typo must not silently fall back to a default), and
//! [`Settings::validate`] names the key of any bad value. Secrets ([`Secret`], and the
//! password in `database.url`) never appear in `Debug` output.
//!
//! `[capture]` is the capture crate's own [`CaptureConfig`]; the pool keys of
//! `[database]` become the store's [`PoolOptions`] in [`DatabaseSettings::pool_options`].

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use capture::CaptureConfig;
pub use ledger_core::PoolOptions;
use ledger_core::{Catalogue, Cents, CreditPack, Credits, PackId};
use serde::Deserialize;

/// The defaults, as shipped.
pub const DEFAULTS: &str = include_str!("../../../config/default.toml");

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct SettingsError(String);

impl SettingsError {
    fn key(key: impl std::fmt::Display, what: impl std::fmt::Display) -> SettingsError {
        SettingsError(format!("{key}: {what}"))
    }
}

/// `Err` naming `key` when the count `value` is zero (the default of every integer type).
fn at_least_one<T: Default + PartialEq>(key: &str, value: T) -> Result<(), SettingsError> {
    if value == T::default() {
        return Err(SettingsError::key(key, "must be at least 1"));
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub webhooks: WebhookSettings,
    pub database: DatabaseSettings,
    pub admin: AdminSettings,
    pub auth: AuthSettings,
    pub credits: CreditSettings,
    #[serde(default)]
    pub plans: Vec<PlanSettings>,
    pub payments: PaymentSettings,
    pub polar: PolarSettings,
    pub capture: CaptureConfig,
    pub screenshots: ScreenshotSettings,
    pub notifications: NotificationSettings,
    pub ratelimit: RateLimitSettings,
    pub log: LogSettings,
    pub metrics: MetricsSettings,
}

/// `[log]`: how both programs write their log lines (stderr).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A filter: `info`, `warn`, or per target (`api_server=debug,info`). `RUST_LOG` wins
    /// when the environment sets it.
    pub level: String,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// `[metrics]`: where Prometheus may scrape `/metrics`; never public by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Bearer token `/metrics` asks for on the programs' own listeners; empty: `/metrics`
    /// is not served there (404).
    pub token: Secret,
    /// The api-server's separate metrics listener (`/metrics` without a token);
    /// empty: none.
    pub bind: String,
    /// The webhook-receiver's separate metrics listener; empty: none.
    pub webhooks_bind: String,
}

impl MetricsSettings {
    /// The token, when `/metrics` is served on the programs' own listeners.
    pub fn token(&self) -> Option<&str> {
        Some(self.token.expose().trim()).filter(|t| !t.is_empty())
    }

    /// The api-server's separate metrics listener, when configured.
    pub fn bind(&self) -> Option<&str> {
        Some(self.bind.trim()).filter(|b| !b.is_empty())
    }

    /// The webhook-receiver's separate metrics listener, when configured.
    pub fn webhooks_bind(&self) -> Option<&str> {
        Some(self.webhooks_bind.trim()).filter(|b| !b.is_empty())
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let token = self.token.expose().trim();
        if !token.is_empty() && token.len() < 16 {
            return Err(SettingsError::key(
                "metrics.token",
                "must be at least 16 characters (or empty: /metrics is then not served on the main listeners)",
            ));
        }
        if let Some(bind) = self.bind() {
            parse_bind("metrics.bind", bind)?;
        }
        if let Some(bind) = self.webhooks_bind() {
            parse_bind("metrics.webhooks_bind", bind)?;
        }
        Ok(())
    }
}

impl LogSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        let level = self.level.trim();
        let word = |w: &str| {
            matches!(
                w.to_ascii_lowercase().as_str(),
                "off" | "error" | "warn" | "info" | "debug" | "trace"
            )
        };
        // Each directive: `level`, or `target=level` (a target is a Rust path).
        let ok = !level.is_empty()
            && level.split(',').all(|d| match d.trim().split_once('=') {
                None => word(d.trim()),
                Some((target, lvl)) => {
                    !target.is_empty()
                        && target
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '-')
                        && word(lvl)
                }
            });
        if !ok {
            return Err(SettingsError::key(
                "log.level",
                format!("`{level}` is not a level (off, error, warn, info, debug, trace) or a list like `api_server=debug,info`"),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: String,
    pub workers: usize,
    pub max_body_bytes: usize,
    /// Largest body of the unauthenticated auth endpoints (signup, login).
    pub auth_max_body_bytes: usize,
    /// Seconds a client has to send a request's head and its whole body.
    pub request_timeout_secs: u64,
    /// Seconds an idle keep-alive connection stays open.
    pub keep_alive_secs: u64,
    /// Open connections at most, across all workers; beyond it new ones wait in the
    /// kernel's backlog.
    pub max_connections: usize,
    pub shutdown_timeout_secs: u64,
    pub public_url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub bind: String,
    pub public_url: String,
}

/// `[database]`: where the ledger lives and every knob of the store's connection pool.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path` or `postgres://...`; may hold a password, so `Debug` hides it.
    pub url: String,
    pub max_connections: u32,
    /// Connections kept open when idle; the rest open on demand.
    pub min_connections: u32,
    /// Seconds to wait for a new connection to open (and at start, for the first one).
    pub connect_timeout_secs: u64,
    /// Seconds a request waits for a pooled connection before it answers 503.
    pub acquire_timeout_secs: u64,
    /// SQLite: milliseconds a writer waits for another process's write lock.
    pub busy_timeout_ms: u64,
}

impl DatabaseSettings {
    /// The store's pool options from these settings: the one translation, used by both
    /// programs to open their pool.
    pub fn pool_options(&self) -> PoolOptions {
        PoolOptions {
            max_connections: self.max_connections,
            min_connections: self.min_connections,
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            acquire_timeout: Duration::from_secs(self.acquire_timeout_secs),
            busy_timeout: Duration::from_millis(self.busy_timeout_ms),
        }
    }
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url_password(&self.url))
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("acquire_timeout_secs", &self.acquire_timeout_secs)
            .field("busy_timeout_ms", &self.busy_timeout_ms)
            .finish()
    }
}

/// `scheme://user:password@host/...` with the password replaced; other URLs as they are.
fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some((userinfo, host)) = rest[..end].rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    let hidden = if userinfo.contains(':') {
        ":[redacted]"
    } else {
        ""
    };
    format!("{scheme}://{user}{hidden}@{host}{}", &rest[end..])
}

/// A configured secret (a token, a signing secret). `Debug` and `Display` print
/// `[redacted]`; [`Secret::expose`] reads it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Unset (empty or blank).
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Empty: the admin API is off.
    pub token: Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub session_ttl_hours: u64,
    pub cookie_secure: bool,
    pub max_failed_logins: u32,
    pub lockout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditSettings {
    pub signup_bonus: Credits,
    pub hold_ttl_secs: u64,
    pub retention_months: u32,
    #[serde(default)]
    pub packs: Vec<PackSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackSettings {
    pub id: String,
    pub name: String,
    pub credits: Credits,
    pub price_cents: i64,
    #[serde(default)]
    pub popular: bool,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    pub polar_product_id: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSettings {
    pub id: String,
    pub name: String,
    pub monthly_credits: Credits,
    pub price_cents: i64,
    #[serde(default)]
    pub overage_cents_per_1000: i64,
    #[serde(default)]
    pub paying: bool,
    /// The Polar product that sells this plan (a paying plan bought through Polar).
    #[serde(default)]
    pub polar_product_id: Option<String>,
}

impl PlanSettings {
    /// The core's view of the plan (what a subscription snapshots).
    pub fn plan(&self) -> ledger_core::Plan {
        ledger_core::Plan {
            id: self.id.clone(),
            name: self.name.clone(),
            monthly_credits: self.monthly_credits,
            price_cents: ledger_core::Cents::new(self.price_cents),
            overage: ledger_core::OveragePolicy::new(ledger_core::Cents::new(
                self.overage_cents_per_1000,
            )),
            paying: self.paying,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentSettings {
    /// `""`: Polar when `polar.access_token` is set, otherwise none; `"polar"`; `"demo"`.
    pub provider: String,
}

/// Which payment provider is in force (see [`Settings::payment_provider`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentProvider {
    /// No provider: purchases answer `503 PAYMENTS_NOT_CONFIGURED`; nothing mints credits.
    None,
    /// Polar's API and signed webhooks.
    Polar,
    /// The local test checkout (no money moves). Only when asked for by name.
    Demo,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolarSettings {
    pub api_url: String,
    /// Empty: no Polar (see [`Settings::payment_provider`]).
    pub access_token: Secret,
    /// The demo provider signs with a local secret instead.
    pub webhook_secret: Secret,
    pub success_url: String,
    pub timeout_secs: u64,
    /// How often the webhook-receiver asks Polar for paid orders it missed (0: never).
    pub reconcile_interval_secs: u64,
    /// The name of the events overage is ingested as (Polar's meter filters on it).
    pub overage_event_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreenshotSettings {
    pub base_cost: Credits,
    pub full_page_cost: Credits,
    pub pdf_cost: Credits,
    pub cache_dir: String,
    pub default_cache_ttl_secs: u64,
    /// Most bytes the cache may hold on disk; past it the least recently used captures go.
    pub cache_max_bytes: u64,
}

/// `[notifications]`: outgoing webhooks to customers' endpoints (ADR 12).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationSettings {
    /// Run the deliverer in this api-server process (several processes may all run it).
    pub deliver: bool,
    /// Let endpoints be private, loopback or link-local addresses (development only).
    pub allow_private_targets: bool,
    /// How often the deliverer looks for due deliveries, in milliseconds.
    pub poll_interval_ms: u64,
    /// Seconds before the first retry of a failed delivery; each retry doubles it.
    pub initial_backoff_secs: u64,
    /// The longest wait between two attempts, in seconds.
    pub max_backoff_secs: u64,
    /// Attempts of one delivery before it is marked `failed`.
    pub max_attempts: u32,
    /// Seconds an endpoint has to answer one attempt.
    pub timeout_secs: u64,
    /// Seconds a claimed delivery stays leased to its sender (longer than an attempt).
    pub lease_secs: u64,
}

impl NotificationSettings {
    /// The retry schedule these settings describe.
    pub fn retry_policy(&self) -> ledger_core::RetryPolicy {
        ledger_core::RetryPolicy {
            initial_backoff_secs: self.initial_backoff_secs,
            max_backoff_secs: self.max_backoff_secs,
            max_attempts: self.max_attempts,
        }
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !(10..=600_000).contains(&self.poll_interval_ms) {
            return Err(SettingsError::key(
                "notifications.poll_interval_ms",
                "must be from 10 to 600000 milliseconds",
            ));
        }
        if !(1..=86_400).contains(&self.initial_backoff_secs) {
            return Err(SettingsError::key(
                "notifications.initial_backoff_secs",
                "must be from 1 to 86400 seconds",
            ));
        }
        if !(self.initial_backoff_secs..=604_800).contains(&self.max_backoff_secs) {
            return Err(SettingsError::key(
                "notifications.max_backoff_secs",
                "must be at least notifications.initial_backoff_secs and at most 604800 (a week)",
            ));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(SettingsError::key(
                "notifications.max_attempts",
                "must be from 1 to 100",
            ));
        }
        if !(1..=300).contains(&self.timeout_secs) {
            return Err(SettingsError::key(
                "notifications.timeout_secs",
                "must be from 1 to 300 seconds",
            ));
        }
        if self.lease_secs <= self.timeout_secs || self.lease_secs > 3600 {
            return Err(SettingsError::key(
                "notifications.lease_secs",
                "must be longer than notifications.timeout_secs (an attempt must end inside its lease) and at most 3600",
            ));
        }
        Ok(())
    }
}

/// `[ratelimit]`: requests a second (with a burst) per API key or session and per client
/// address, and captures at once per account. `0` turns a limit off. With `redis_url` set
/// the limits hold across every api-server process sharing that Redis (ADR 15).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Requests a second per credential (API key, session); 0: no per-key limit.
    pub per_key_rps: u32,
    /// Requests a credential may make at once before the rate applies.
    pub per_key_burst: u32,
    /// Requests a second per client address (IPv6 by /64) for unauthenticated requests
    /// and refused credentials; 0: no per-address limit.
    pub per_ip_rps: u32,
    /// Such requests an address may make at once before the rate applies.
    pub per_ip_burst: u32,
    /// Captures one account may have running at once; 0: no limit.
    pub captures_per_account: u32,
    /// `redis://host:port[/db]`: share the limits through this Redis; "": per process.
    pub redis_url: Secret,
    /// Prefix of every Redis key the limits use.
    pub redis_prefix: String,
    /// Milliseconds a Redis call may take before the limits fail open for a while.
    pub redis_timeout_ms: u64,
    /// Addresses of the load balancers in front: for a request from one of them, the
    /// client is the last address of `X-Forwarded-For` that is not one of them.
    #[serde(default)]
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl RateLimitSettings {
    /// The Redis URL, when the limits are shared.
    pub fn redis(&self) -> Option<&str> {
        Some(self.redis_url.expose().trim()).filter(|u| !u.is_empty())
    }

    fn validate(&self) -> Result<(), SettingsError> {
        const MAX: u32 = 1_000_000;
        for (rps_key, rps, burst_key, burst) in [
            (
                "ratelimit.per_key_rps",
                self.per_key_rps,
                "ratelimit.per_key_burst",
                self.per_key_burst,
            ),
            (
                "ratelimit.per_ip_rps",
                self.per_ip_rps,
                "ratelimit.per_ip_burst",
                self.per_ip_burst,
            ),
        ] {
            if rps > MAX {
                return Err(SettingsError::key(
                    rps_key,
                    "must be at most 1000000 (0 turns the limit off)",
                ));
            }
            if burst > MAX || (rps > 0 && burst == 0) {
                return Err(SettingsError::key(
                    burst_key,
                    format!("must be from 1 to 1000000 while {rps_key} is set"),
                ));
            }
        }
        if self.captures_per_account > 10_000 {
            return Err(SettingsError::key(
                "ratelimit.captures_per_account",
                "must be at most 10000 (0 turns the limit off)",
            ));
        }
        if let Some(url) = self.redis() {
            if !url.starts_with("redis://") {
                return Err(SettingsError::key(
                    "ratelimit.redis_url",
                    "must start with redis:// (e.g. redis://127.0.0.1:6379/0), or be empty for per-process limits",
                ));
            }
            if self.redis_prefix.trim().is_empty() {
                return Err(SettingsError::key(
                    "ratelimit.redis_prefix",
                    "must not be empty while ratelimit.redis_url is set",
                ));
            }
        }
        if !(1..=10_000).contains(&self.redis_timeout_ms) {
            return Err(SettingsError::key(
                "ratelimit.redis_timeout_ms",
                "must be from 1 to 10000 milliseconds",
            ));
        }
        Ok(())
    }
}

/// Where the layers come from (tests point these elsewhere).
#[derive(Debug, Clone, Default)]
pub struct Sources<'a> {
    /// `--config FILE`.
    pub file: Option<&'a Path>,
    /// Read `config/default.toml` from the working folder when present.
    pub working_folder_defaults: bool,
    /// The environment to read (normally `std::env::vars()`).
    pub env: Vec<(String, String)>,
}

impl Settings {
    /// Loads the layers and validates the result.
    pub fn load(sources: Sources<'_>) -> Result<Settings, SettingsError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if sources.working_folder_defaults && Path::new("config/default.toml").is_file() {
            builder = builder.add_source(
                config::File::with_name("config/default.toml").format(config::FileFormat::Toml),
            );
        }
        if let Some(file) = sources.file {
            if !file.is_file() {
                return Err(SettingsError::key(
                    "--config",
                    format!("{} is not a readable file", file.display()),
                ));
            }
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
        }
        let env: config::Map<String, String> = sources
            .env
            .iter()
            .filter(|(k, _)| k.starts_with("SHOTLEDGER__"))
            .cloned()
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("SHOTLEDGER")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                // Lists from the environment are comma-separated; only list keys split.
                .list_separator(",")
                .with_list_parse_key("capture.allowed_private_addresses")
                .with_list_parse_key("capture.trusted_spki_hashes")
                .with_list_parse_key("ratelimit.trusted_proxies")
                .source(Some(env)),
        );
        if let Some((_, url)) = sources
            .env
            .iter()
            .find(|(k, v)| k == "DATABASE_URL" && !v.is_empty())
        {
            builder = builder
                .set_override("database.url", url.clone())
                .map_err(|e| SettingsError::key("DATABASE_URL", e))?;
        }
        let raw = builder.build().map_err(|e| SettingsError(e.to_string()))?;
        let settings: Settings = raw
            .try_deserialize()
            .map_err(|e| SettingsError(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// The usual layers for a program: `--config FILE` from its arguments and the process
    /// environment.
    pub fn from_args_and_env(args: &[String]) -> Result<Settings, SettingsError> {
        let file = config_flag(args)?;
        Settings::load(Sources {
            file: file.as_deref().map(Path::new),
            working_folder_defaults: true,
            env: std::env::vars().collect(),
        })
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        parse_bind("server.bind", &self.server.bind)?;
        parse_bind("webhooks.bind", &self.webhooks.bind)?;
        http_url("server.public_url", &self.server.public_url)?;
        http_url("webhooks.public_url", &self.webhooks.public_url)?;
        if self.server.max_body_bytes < 1024 {
            return Err(SettingsError::key(
                "server.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if !(512..=self.server.max_body_bytes).contains(&self.server.auth_max_body_bytes) {
            return Err(SettingsError::key(
                "server.auth_max_body_bytes",
                "must be at least 512 and at most server.max_body_bytes",
            ));
        }
        for (key, secs) in [
            (
                "server.request_timeout_secs",
                self.server.request_timeout_secs,
            ),
            ("server.keep_alive_secs", self.server.keep_alive_secs),
            (
                "database.connect_timeout_secs",
                self.database.connect_timeout_secs,
            ),
            (
                "database.acquire_timeout_secs",
                self.database.acquire_timeout_secs,
            ),
        ] {
            if !(1..=3600).contains(&secs) {
                return Err(SettingsError::key(key, "must be from 1 to 3600 seconds"));
            }
        }
        at_least_one("server.max_connections", self.server.max_connections)?;
        ledger_core::DatabaseUrl::parse(&self.database.url)
            .map_err(|e| SettingsError(e.to_string()))?;
        at_least_one("database.max_connections", self.database.max_connections)?;
        if self.database.min_connections > self.database.max_connections {
            return Err(SettingsError::key(
                "database.min_connections",
                "must not exceed database.max_connections",
            ));
        }
        if self.database.busy_timeout_ms > 3_600_000 {
            return Err(SettingsError::key(
                "database.busy_timeout_ms",
                "must be at most 3600000 (an hour)",
            ));
        }
        let token = self.admin.token.expose().trim();
        if !token.is_empty() && token.len() < 16 {
            return Err(SettingsError::key(
                "admin.token",
                "must be at least 16 characters (or empty to turn the admin API off)",
            ));
        }
        at_least_one("auth.session_ttl_hours", self.auth.session_ttl_hours)?;
        if self.auth.max_failed_logins == 0 || self.auth.lockout_secs == 0 {
            return Err(SettingsError::key(
                "auth.max_failed_logins",
                "max_failed_logins and lockout_secs must be at least 1",
            ));
        }
        if self.credits.signup_bonus.is_negative() {
            return Err(SettingsError::key(
                "credits.signup_bonus",
                "must not be negative",
            ));
        }
        at_least_one("credits.hold_ttl_secs", self.credits.hold_ttl_secs)?;
        ledger_core::Retention::months(self.credits.retention_months)
            .map_err(|e| SettingsError::key("credits.retention_months", e))?;
        self.catalogue()?;
        self.notifications.validate()?;
        let mut plan_ids = std::collections::BTreeSet::new();
        for (i, p) in self.plans.iter().enumerate() {
            let key = format!("plans[{i}]");
            if p.id.trim().is_empty() || !plan_ids.insert(p.id.clone()) {
                return Err(SettingsError::key(
                    format!("{key}.id"),
                    "must be non-empty and unique",
                ));
            }
            if p.monthly_credits.is_negative() || p.price_cents < 0 || p.overage_cents_per_1000 < 0
            {
                return Err(SettingsError::key(
                    key,
                    "monthly_credits, price_cents and overage_cents_per_1000 must not be negative",
                ));
            }
        }
        self.payment_provider()?;
        self.log.validate()?;
        self.metrics.validate()?;
        if self.polar.overage_event_name.trim().is_empty() {
            return Err(SettingsError::key(
                "polar.overage_event_name",
                "must not be empty (Polar's overage meter filters on it)",
            ));
        }
        let mut products = std::collections::BTreeSet::new();
        let pack_products: std::collections::BTreeSet<&str> = self
            .credits
            .packs
            .iter()
            .filter_map(|p| p.polar_product_id.as_deref())
            .collect();
        for (i, p) in self.plans.iter().enumerate() {
            if let Some(product) = p
                .polar_product_id
                .as_deref()
                .filter(|s| !s.trim().is_empty())
            {
                if pack_products.contains(product) {
                    return Err(SettingsError::key(
                        format!("plans[{i}].polar_product_id"),
                        "is a credit pack's product: a plan needs a recurring product of its own",
                    ));
                }
                if !products.insert(product.to_owned()) {
                    return Err(SettingsError::key(
                        format!("plans[{i}].polar_product_id"),
                        "must be unique: a subscription's product names its plan",
                    ));
                }
            }
        }
        http_url("polar.api_url", &self.polar.api_url)?;
        http_url("polar.success_url", &self.polar.success_url)?;
        if !self.polar.webhook_secret.is_empty()
            && !self.polar.webhook_secret.expose().starts_with("whsec_")
        {
            // Polar's secrets are used as given; a missing prefix is usually a copy error.
            return Err(SettingsError::key(
                "polar.webhook_secret",
                "must start with whsec_ (copy it whole from Polar)",
            ));
        }
        self.capture
            .validate()
            .map_err(|e| SettingsError(e.to_string()))?;
        for (key, cost) in [
            ("screenshots.base_cost", self.screenshots.base_cost),
            (
                "screenshots.full_page_cost",
                self.screenshots.full_page_cost,
            ),
            ("screenshots.pdf_cost", self.screenshots.pdf_cost),
        ] {
            if cost.is_negative() {
                return Err(SettingsError::key(key, "must not be negative"));
            }
        }
        self.ratelimit.validate()?;
        if self.screenshots.cache_max_bytes < 1 << 20 {
            return Err(SettingsError::key(
                "screenshots.cache_max_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        Ok(())
    }

    /// The credit pack catalogue.
    pub fn catalogue(&self) -> Result<Catalogue, SettingsError> {
        let packs = self
            .credits
            .packs
            .iter()
            .map(|p| CreditPack {
                id: PackId::new(p.id.clone()),
                name: p.name.clone(),
                credits: p.credits,
                price: Cents::new(p.price_cents),
                popular: p.popular,
                active: p.active,
                product_id: p.polar_product_id.clone().filter(|s| !s.trim().is_empty()),
            })
            .collect();
        Catalogue::new(packs).map_err(|e| SettingsError::key("credits.packs", e))
    }

    /// The admin token, when the admin API is on.
    pub fn admin_token(&self) -> Option<&str> {
        Some(self.admin.token.expose().trim()).filter(|t| !t.is_empty())
    }

    /// The payment provider: `payments.provider` when set (`demo` must be asked for by
    /// name), otherwise Polar when `polar.access_token` is set, otherwise none. The
    /// built-in default never mints credits.
    pub fn payment_provider(&self) -> Result<PaymentProvider, SettingsError> {
        let has_token = !self.polar.access_token.is_empty();
        match self.payments.provider.trim() {
            "" if has_token => Ok(PaymentProvider::Polar),
            "" | "none" => Ok(PaymentProvider::None),
            "demo" => Ok(PaymentProvider::Demo),
            "polar" if has_token => Ok(PaymentProvider::Polar),
            "polar" => Err(SettingsError::key(
                "payments.provider",
                "`polar` needs polar.access_token (an organization access token)",
            )),
            other => Err(SettingsError::key(
                "payments.provider",
                format!("`{other}` is not one of \"\" (Polar when polar.access_token is set), \"polar\", \"demo\", \"none\""),
            )),
        }
    }

    pub fn plan(&self, id: &str) -> Option<&PlanSettings> {
        self.plans.iter().find(|p| p.id == id)
    }
}

fn parse_bind(key: &str, value: &str) -> Result<SocketAddr, SettingsError> {
    value.parse().map_err(|_| {
        SettingsError::key(
            key,
            format!("`{value}` is not an address like 127.0.0.1:8080"),
        )
    })
}

fn http_url(key: &str, value: &str) -> Result<(), SettingsError> {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(|| {
            SettingsError::key(
                key,
                format!("`{value}` must start with http:// or https://"),
            )
        })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(SettingsError::key(key, format!("`{value}` has no host")));
    }
    Ok(())
}

/// Reads `--config FILE` or `--config=FILE` from program arguments.
pub fn config_flag(args: &[String]) -> Result<Option<String>, SettingsError> {
    let mut it = args.iter().skip(1);
    let mut found = None;
    while let Some(a) = it.next() {
        if a == "--config" {
            found = Some(
                it.next()
                    .cloned()
                    .ok_or_else(|| SettingsError::key("--config", "needs a file name"))?,
            );
        } else if let Some(f) = a.strip_prefix("--config=") {
            found = Some(f.to_owned());
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        Settings::load(Sources {
            file: file.map(|_| path.as_path()),
            working_folder_defaults: false,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    #[test]
    fn defaults_are_the_contract_defaults() {
        let s = load(None, &[]).unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:8080");
        assert_eq!(s.webhooks.bind, "127.0.0.1:8081");
        assert_eq!(s.database.url, "sqlite://data/shotledger.db");
        assert_eq!(s.admin_token(), None);
        assert_eq!(s.credits.signup_bonus, Credits::whole(5));
        assert_eq!(s.polar.success_url, "http://localhost:8080/");
        assert!(!s.capture.allow_private_targets);
        assert_eq!(s.payment_provider().unwrap(), PaymentProvider::None);
        assert_eq!(s.catalogue().unwrap(), Catalogue::seed_default());
        let basic = s.plan("basic").unwrap();
        assert_eq!(
            (basic.monthly_credits, basic.overage_cents_per_1000),
            (Credits::whole(10_000), 400)
        );
    }

    #[test]
    fn log_and_metrics_default_off_and_refuse_bad_values_naming_the_key() {
        let s = load(None, &[]).unwrap();
        assert_eq!(s.log.format, LogFormat::Text);
        assert_eq!(s.log.level, "info");
        assert_eq!(
            (
                s.metrics.token(),
                s.metrics.bind(),
                s.metrics.webhooks_bind()
            ),
            (None, None, None)
        );
        let env = [
            ("SHOTLEDGER__LOG__FORMAT", "json"),
            ("SHOTLEDGER__LOG__LEVEL", "api_server=debug,warn"),
            ("SHOTLEDGER__METRICS__TOKEN", "0123456789abcdef"),
            ("SHOTLEDGER__METRICS__BIND", "127.0.0.1:9100"),
            ("SHOTLEDGER__METRICS__WEBHOOKS_BIND", "127.0.0.1:9101"),
        ];
        assert_documented("log", &env[..2]);
        assert_documented("metrics", &env[2..]);
        let s = load(None, &env).unwrap();
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.metrics.token(), Some("0123456789abcdef"));
        assert_eq!(s.metrics.bind(), Some("127.0.0.1:9100"));
        assert_eq!(s.metrics.webhooks_bind(), Some("127.0.0.1:9101"));
        assert!(
            !format!("{s:?}").contains("0123456789abcdef"),
            "the token prints"
        );
        for (key, value, named) in [
            ("SHOTLEDGER__LOG__FORMAT", "xml", "xml"),
            ("SHOTLEDGER__LOG__LEVEL", "loud", "log.level"),
            ("SHOTLEDGER__LOG__LEVEL", "api_server=loud", "log.level"),
            ("SHOTLEDGER__METRICS__TOKEN", "short", "metrics.token"),
            ("SHOTLEDGER__METRICS__BIND", "localhost", "metrics.bind"),
            (
                "SHOTLEDGER__METRICS__WEBHOOKS_BIND",
                "9101",
                "metrics.webhooks_bind",
            ),
        ] {
            let e = load(None, &[(key, value)]).unwrap_err().to_string();
            assert!(e.contains(named), "{key}={value}: {e}");
        }
    }

    #[test]
    fn plan_products_and_the_overage_event_name() {
        let s = load(None, &[]).unwrap();
        assert_eq!(s.polar.overage_event_name, "shotledger_overage");
        assert_eq!(s.plan("basic").unwrap().polar_product_id, None);
        let env = [("SHOTLEDGER__POLAR__OVERAGE_EVENT_NAME", "extra_credits")];
        assert_documented("polar", &env);
        let file = "[[plans]]\nid = \"free\"\nname = \"Free\"\nmonthly_credits = 100\nprice_cents = 0\n[[plans]]\nid = \"basic\"\nname = \"Basic\"\nmonthly_credits = 10000\nprice_cents = 2900\npaying = true\npolar_product_id = \"prod_basic\"\n";
        let s = load(Some(file), &env).unwrap();
        assert_eq!(s.polar.overage_event_name, "extra_credits");
        assert_eq!(
            s.plan("basic").unwrap().polar_product_id.as_deref(),
            Some("prod_basic")
        );
        let blank = [("SHOTLEDGER__POLAR__OVERAGE_EVENT_NAME", " ")];
        assert!(load(None, &blank)
            .unwrap_err()
            .to_string()
            .contains("polar.overage_event_name"));
        let packs = format!("{file}[[credits.packs]]\nid = \"p\"\nname = \"P\"\ncredits = 10\nprice_cents = 100\npolar_product_id = \"prod_basic\"\n");
        assert!(load(Some(&packs), &[])
            .unwrap_err()
            .to_string()
            .contains("credit pack's product"));
        let twice = file.replace(
            "price_cents = 0\n",
            "price_cents = 0\npolar_product_id = \"prod_basic\"\n",
        );
        assert!(load(Some(&twice), &[])
            .unwrap_err()
            .to_string()
            .contains("polar_product_id"));
    }

    #[test]
    fn file_then_environment_win() {
        let file = "[server]\nbind = \"127.0.0.1:7000\"\n[credits]\nsignup_bonus = 50\n";
        let s = load(Some(file), &[]).unwrap();
        assert_eq!(
            (s.server.bind.as_str(), s.credits.signup_bonus),
            ("127.0.0.1:7000", Credits::whole(50))
        );
        let s = load(
            Some(file),
            &[
                ("SHOTLEDGER__SERVER__BIND", "127.0.0.1:9000"),
                ("SHOTLEDGER__CREDITS__SIGNUP_BONUS", "2.5"),
                ("DATABASE_URL", "postgres://u@h/db"),
                ("SHOTLEDGER__ADMIN__TOKEN", "0123456789abcdef0123"),
            ],
        )
        .unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:9000");
        assert_eq!(s.credits.signup_bonus, Credits::from_millis(2500));
        assert_eq!(s.database.url, "postgres://u@h/db");
        assert_eq!(s.admin_token(), Some("0123456789abcdef0123"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let names = |loaded: Result<Settings, SettingsError>, key: &str| {
            let e = loaded.unwrap_err().to_string();
            assert!(e.contains(key), "expected `{key}` in: {e}");
        };
        // (environment variable, its value, the key the error must name)
        for (var, value, key) in [
            ("SHOTLEDGER__SERVER__BIND", "nowhere", "server.bind"),
            ("DATABASE_URL", "mysql://x", "database.url"),
            ("DATABASE_URL", "sqlite://", "database.url"),
            ("SHOTLEDGER__ADMIN__TOKEN", "short", "admin.token"),
            ("SHOTLEDGER__CREDITS__SIGNUP_BONUS", "lots", "signup_bonus"),
            (
                "SHOTLEDGER__POLAR__WEBHOOK_SECRET",
                "abc",
                "polar.webhook_secret",
            ),
            (
                "SHOTLEDGER__CAPTURE__DEFAULT_TIMEOUT_SECS",
                "600",
                "capture.default_timeout_secs",
            ),
            (
                "SHOTLEDGER__CAPTURE__QUEUE_CAPACITY",
                "0",
                "capture.queue_capacity",
            ),
            (
                "SHOTLEDGER__CAPTURE__ALLOWED_PRIVATE_ADDRESSES",
                "10.0.0.1",
                "allowed_private_addresses",
            ),
            (
                "SHOTLEDGER__DATABASE__BUSY_TIMEOUT_MS",
                "99999999",
                "database.busy_timeout_ms",
            ),
        ] {
            names(load(None, &[(var, value)]), key);
        }
        // (config file, the key the error must name)
        for (file, key) in [
            ("[server]\nbindd = \"x\"\n", "bindd"),
            (
                "[[credits.packs]]\nid = \"p\"\nname = \"P\"\ncredits = 0\nprice_cents = 1\n",
                "credits.packs",
            ),
            ("[capture]\npool_sise = 3\n", "pool_sise"),
        ] {
            names(load(Some(file), &[]), key);
        }
    }

    /// Every `SHOTLEDGER__{SECTION}__KEY` variable of `env` names a key that
    /// config/default.toml documents.
    fn assert_documented(section: &str, env: &[(&str, &str)]) {
        let prefix = format!("SHOTLEDGER__{}__", section.to_uppercase());
        for (var, _) in env {
            let key = var.strip_prefix(&prefix).unwrap().to_lowercase();
            assert!(
                DEFAULTS.contains(&format!("\n{key} = ")),
                "{section}.{key} is not documented in config/default.toml"
            );
        }
    }

    #[test]
    fn every_capture_key_is_settable_from_the_environment() {
        let env = [
            ("SHOTLEDGER__CAPTURE__WEBDRIVER_URL", "http://grid:4444"),
            ("SHOTLEDGER__CAPTURE__CHROMEDRIVER_PATH", "/opt/cd"),
            ("SHOTLEDGER__CAPTURE__CHROMIUM_PATH", "/opt/chrome"),
            ("SHOTLEDGER__CAPTURE__POOL_SIZE", "3"),
            ("SHOTLEDGER__CAPTURE__MAX_USES_PER_SESSION", "7"),
            ("SHOTLEDGER__CAPTURE__QUEUE_CAPACITY", "9"),
            ("SHOTLEDGER__CAPTURE__QUEUE_TIMEOUT_MS", "1500"),
            ("SHOTLEDGER__CAPTURE__ALLOW_PRIVATE_TARGETS", "true"),
            (
                "SHOTLEDGER__CAPTURE__ALLOWED_PRIVATE_ADDRESSES",
                "10.1.2.3:8080,192.168.0.9:80",
            ),
            ("SHOTLEDGER__CAPTURE__DEFAULT_TIMEOUT_SECS", "12"),
            ("SHOTLEDGER__CAPTURE__PROXY_BIND", "0.0.0.0"),
            (
                "SHOTLEDGER__CAPTURE__PROXY_ADVERTISED_HOST",
                "shotledger.internal",
            ),
            (
                "SHOTLEDGER__CAPTURE__TRUSTED_SPKI_HASHES",
                "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=,ypeBEsobvcr6wjGzmiPcTaeG7/gUfE5yuYB3ha/uSLs=",
            ),
            ("SHOTLEDGER__CAPTURE__PREWARM", "false"),
            ("SHOTLEDGER__CAPTURE__RUNTIME_THREADS", "4"),
        ];
        let s = load(None, &env).unwrap();
        let expected = CaptureConfig {
            webdriver_url: Some("http://grid:4444".into()),
            chromedriver_path: "/opt/cd".into(),
            chromium_path: Some("/opt/chrome".into()),
            pool_size: 3,
            max_uses_per_session: 7,
            queue_capacity: 9,
            queue_timeout_ms: 1500,
            allow_private_targets: true,
            allowed_private_addresses: vec![
                "10.1.2.3:8080".parse().unwrap(),
                "192.168.0.9:80".parse().unwrap(),
            ],
            default_timeout_secs: 12,
            proxy_bind: "0.0.0.0".parse().unwrap(),
            proxy_advertised_host: Some("shotledger.internal".into()),
            trusted_spki_hashes: vec![
                "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".into(),
                "ypeBEsobvcr6wjGzmiPcTaeG7/gUfE5yuYB3ha/uSLs=".into(),
            ],
            prewarm: false,
            runtime_threads: 4,
        };
        assert_eq!(s.capture, expected);
        // This test names every field: a key added to CaptureConfig without one here
        // fails to compile (the struct literal above must be complete), and every key
        // must be documented in config/default.toml.
        assert_documented("capture", &env);
    }

    #[test]
    fn capture_defaults_are_the_capture_crates_own() {
        let s = load(None, &[]).unwrap();
        assert_eq!(s.capture, CaptureConfig::default());
        // "" unsets an optional key, and a single address is a list of one.
        let s = load(
            Some("[capture]\nwebdriver_url = \"http://grid:4444\"\n"),
            &[
                ("SHOTLEDGER__CAPTURE__WEBDRIVER_URL", ""),
                (
                    "SHOTLEDGER__CAPTURE__ALLOWED_PRIVATE_ADDRESSES",
                    "10.0.0.5:8080",
                ),
            ],
        )
        .unwrap();
        assert_eq!(s.capture.webdriver_url, None);
        assert_eq!(
            s.capture.allowed_private_addresses,
            vec!["10.0.0.5:8080".parse::<SocketAddr>().unwrap()]
        );
        let s = load(
            None,
            &[("SHOTLEDGER__CAPTURE__ALLOWED_PRIVATE_ADDRESSES", "")],
        )
        .unwrap();
        assert!(s.capture.allowed_private_addresses.is_empty());
    }

    #[test]
    fn every_database_key_is_settable_from_the_environment() {
        let env = [
            ("SHOTLEDGER__DATABASE__URL", "postgres://u@h/db"),
            ("SHOTLEDGER__DATABASE__MAX_CONNECTIONS", "40"),
            ("SHOTLEDGER__DATABASE__MIN_CONNECTIONS", "4"),
            ("SHOTLEDGER__DATABASE__CONNECT_TIMEOUT_SECS", "3"),
            ("SHOTLEDGER__DATABASE__ACQUIRE_TIMEOUT_SECS", "2"),
            ("SHOTLEDGER__DATABASE__BUSY_TIMEOUT_MS", "750"),
        ];
        let s = load(None, &env).unwrap();
        assert_eq!(s.database.url, "postgres://u@h/db");
        assert_eq!(
            s.database.pool_options(),
            PoolOptions {
                max_connections: 40,
                min_connections: 4,
                connect_timeout: Duration::from_secs(3),
                acquire_timeout: Duration::from_secs(2),
                busy_timeout: Duration::from_millis(750),
            }
        );
        assert_documented("database", &env);
        // The shipped defaults are the store's own.
        let s = load(None, &[]).unwrap();
        assert_eq!(s.database.pool_options(), PoolOptions::default());
    }

    #[test]
    fn every_ratelimit_key_is_settable_from_the_environment() {
        let s = load(None, &[]).unwrap();
        assert_eq!(
            (s.ratelimit.per_key_rps, s.ratelimit.per_key_burst),
            (20, 100)
        );
        assert_eq!(s.ratelimit.redis(), None);
        let env = [
            ("SHOTLEDGER__RATELIMIT__PER_KEY_RPS", "5"),
            ("SHOTLEDGER__RATELIMIT__PER_KEY_BURST", "7"),
            ("SHOTLEDGER__RATELIMIT__PER_IP_RPS", "0"),
            ("SHOTLEDGER__RATELIMIT__PER_IP_BURST", "0"),
            ("SHOTLEDGER__RATELIMIT__CAPTURES_PER_ACCOUNT", "2"),
            (
                "SHOTLEDGER__RATELIMIT__REDIS_URL",
                "redis://127.0.0.1:6379/0",
            ),
            ("SHOTLEDGER__RATELIMIT__REDIS_PREFIX", "t:"),
            ("SHOTLEDGER__RATELIMIT__REDIS_TIMEOUT_MS", "80"),
            ("SHOTLEDGER__RATELIMIT__TRUSTED_PROXIES", "10.0.0.1,::1"),
        ];
        let s = load(None, &env).unwrap();
        assert_eq!(
            s.ratelimit,
            RateLimitSettings {
                per_key_rps: 5,
                per_key_burst: 7,
                per_ip_rps: 0,
                per_ip_burst: 0,
                captures_per_account: 2,
                redis_url: "redis://127.0.0.1:6379/0".into(),
                redis_prefix: "t:".into(),
                redis_timeout_ms: 80,
                trusted_proxies: vec!["10.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            }
        );
        assert_documented("ratelimit", &env);
        assert!(
            !format!("{s:?}").contains("6379"),
            "the Redis URL may hold a password"
        );
        for (var, value, key) in [
            (
                "SHOTLEDGER__RATELIMIT__PER_KEY_BURST",
                "0",
                "ratelimit.per_key_burst",
            ),
            (
                "SHOTLEDGER__RATELIMIT__PER_IP_RPS",
                "2000000",
                "ratelimit.per_ip_rps",
            ),
            (
                "SHOTLEDGER__RATELIMIT__REDIS_URL",
                "http://x",
                "ratelimit.redis_url",
            ),
            (
                "SHOTLEDGER__RATELIMIT__REDIS_TIMEOUT_MS",
                "0",
                "ratelimit.redis_timeout_ms",
            ),
            (
                "SHOTLEDGER__RATELIMIT__CAPTURES_PER_ACCOUNT",
                "20000",
                "ratelimit.captures_per_account",
            ),
        ] {
            let e = load(None, &[(var, value)]).unwrap_err().to_string();
            assert!(e.contains(key), "expected `{key}` in: {e}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let secrets = [
            ("SHOTLEDGER__ADMIN__TOKEN", "admin-token-0123456789"),
            ("SHOTLEDGER__POLAR__ACCESS_TOKEN", "polar_oat_secret_value"),
            (
                "SHOTLEDGER__POLAR__WEBHOOK_SECRET",
                "whsec_c2VjcmV0LXZhbHVl",
            ),
        ];
        let mut env = secrets.to_vec();
        env.push((
            "DATABASE_URL",
            "postgres://ledger:pa55word@db:5432/shotledger",
        ));
        let s = load(None, &env).unwrap();
        let printed = format!("{s:?} {s:#?}");
        for (key, value) in secrets {
            assert!(!printed.contains(value), "{key} printed in: {printed}");
        }
        assert!(!printed.contains("pa55word"), "{printed}");
        assert!(printed.contains("postgres://ledger:[redacted]@db:5432/shotledger"));
        // They are still there to use.
        assert_eq!(s.admin_token(), Some("admin-token-0123456789"));
        assert_eq!(s.polar.access_token.expose(), "polar_oat_secret_value");
        assert_eq!(s.polar.webhook_secret.to_string(), "[redacted]");
        for (url, shown) in [
            ("sqlite://data/x.db", "sqlite://data/x.db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://u:p@h/db?x=@y",
                "postgres://u:[redacted]@h/db?x=@y",
            ),
            ("postgres://u:p:q@h", "postgres://u:[redacted]@h"),
        ] {
            assert_eq!(redact_url_password(url), shown);
        }
    }

    #[test]
    fn the_payment_provider_is_explicit() {
        let provider =
            |env: &[(&str, &str)]| load(None, env).map(|s| s.payment_provider().unwrap());
        assert_eq!(provider(&[]).unwrap(), PaymentProvider::None);
        let token = ("SHOTLEDGER__POLAR__ACCESS_TOKEN", "polar_oat_x");
        assert_eq!(provider(&[token]).unwrap(), PaymentProvider::Polar);
        let demo = ("SHOTLEDGER__PAYMENTS__PROVIDER", "demo");
        assert_eq!(provider(&[demo]).unwrap(), PaymentProvider::Demo);
        assert_eq!(provider(&[demo, token]).unwrap(), PaymentProvider::Demo);
        let polar = ("SHOTLEDGER__PAYMENTS__PROVIDER", "polar");
        assert_eq!(provider(&[polar, token]).unwrap(), PaymentProvider::Polar);
        for bad in [
            vec![polar],
            vec![("SHOTLEDGER__PAYMENTS__PROVIDER", "stripe")],
        ] {
            let e = provider(&bad).unwrap_err().to_string();
            assert!(e.contains("payments.provider"), "{e}");
        }
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let e = Settings::load(Sources {
            file: Some(Path::new("/nonexistent/shotledger.toml")),
            ..Sources::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("--config"), "{e}");
    }

    #[test]
    fn config_flag_forms() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            config_flag(&args(&["x", "--config", "a.toml"]))
                .unwrap()
                .as_deref(),
            Some("a.toml")
        );
        assert_eq!(
            config_flag(&args(&["x", "--config=b.toml"]))
                .unwrap()
                .as_deref(),
            Some("b.toml")
        );
        assert_eq!(config_flag(&args(&["x"])).unwrap(), None);
        assert!(config_flag(&args(&["x", "--config"])).is_err());
    }
}
