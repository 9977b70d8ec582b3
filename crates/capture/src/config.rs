//! [`CaptureConfig`]: how the service reaches a browser and how big its pool is.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::CaptureError;
use crate::guard::TargetPolicy;

/// Configuration of a [`crate::CaptureService`]. Every key has a default; see the README.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct CaptureConfig {
    /// A WebDriver endpoint (chromedriver or a Selenium Grid router), `http://` only.
    /// Unset: start and supervise our own chromedriver on a free 127.0.0.1 port.
    pub webdriver_url: Option<String>,
    /// chromedriver binary, used when `webdriver_url` is unset.
    pub chromedriver_path: PathBuf,
    /// Browser binary passed as `goog:chromeOptions.binary`. Unset: `/usr/bin/chromium` with
    /// our own chromedriver, and the driver's own choice with a `webdriver_url`.
    pub chromium_path: Option<PathBuf>,
    /// Number of browser sessions (default: the number of CPUs).
    pub pool_size: usize,
    /// A session is closed and replaced after this many captures.
    pub max_uses_per_session: u32,
    /// Requests that may wait for a session; more are refused at once with `BUSY`.
    pub queue_capacity: usize,
    /// Longest wait in the queue before a request is refused with `BUSY`.
    pub queue_timeout_ms: u64,
    /// Allow loopback/private/link-local targets (development and tests only).
    pub allow_private_targets: bool,
    /// Exact `ip:port` pairs allowed even when private targets are not.
    pub allowed_private_addresses: Vec<SocketAddr>,
    /// Time budget of a capture whose options give no `timeout`, in seconds (1..=60).
    pub default_timeout_secs: u64,
    /// Address the SSRF proxy listens on.
    pub proxy_bind: IpAddr,
    /// Host name or IP the browser uses to reach the proxy (default: `proxy_bind`). With a
    /// remote Grid this must be an address of this machine that the Grid nodes can reach.
    pub proxy_advertised_host: Option<String>,
    /// Open sessions ahead of demand (and again right after a session is recycled).
    pub prewarm: bool,
    /// Worker threads of the service's own tokio runtime.
    pub runtime_threads: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            webdriver_url: None,
            chromedriver_path: PathBuf::from("/usr/bin/chromedriver"),
            chromium_path: None,
            pool_size: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_uses_per_session: 50,
            queue_capacity: 32,
            queue_timeout_ms: 30_000,
            allow_private_targets: false,
            allowed_private_addresses: Vec::new(),
            default_timeout_secs: 30,
            proxy_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            proxy_advertised_host: None,
            prewarm: true,
            runtime_threads: 2,
        }
    }
}

/// Default browser binary when we run our own chromedriver.
pub const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

/// The binary behind Debian's `/usr/bin/chromium` wrapper script. The wrapper adds
/// `--enable-remote-extensions`, loads packaged extensions and exports Google API keys,
/// which turn background calls to Google back on; when it is there we launch the binary
/// itself with our own flags.
pub const DEBIAN_CHROMIUM_BINARY: &str = "/usr/lib/chromium/chromium";

/// The browser to launch when `chromium_path` is unset.
pub fn default_chromium() -> std::path::PathBuf {
    let binary = std::path::Path::new(DEBIAN_CHROMIUM_BINARY);
    if std::path::Path::new(DEFAULT_CHROMIUM).exists() && binary.exists() {
        binary.to_path_buf()
    } else {
        DEFAULT_CHROMIUM.into()
    }
}

impl CaptureConfig {
    /// Check ranges; the error names the key.
    pub fn validate(&self) -> Result<(), CaptureError> {
        let bad = |key: &'static str, what: &str| CaptureError::InvalidConfig {
            key,
            message: what.to_owned(),
        };
        if !(1..=64).contains(&self.pool_size) {
            return Err(bad("pool_size", "must be from 1 to 64"));
        }
        if self.max_uses_per_session == 0 {
            return Err(bad("max_uses_per_session", "must be at least 1"));
        }
        if !(1..=100_000).contains(&self.queue_capacity) {
            return Err(bad("queue_capacity", "must be from 1 to 100000"));
        }
        if !(1..=60).contains(&self.default_timeout_secs) {
            return Err(bad("default_timeout_secs", "must be from 1 to 60"));
        }
        if !(1..=64).contains(&self.runtime_threads) {
            return Err(bad("runtime_threads", "must be from 1 to 64"));
        }
        if let Some(u) = &self.webdriver_url {
            match url::Url::parse(u) {
                Ok(p) if p.scheme() == "http" => {}
                _ => return Err(bad("webdriver_url", "must be an http:// URL")),
            }
        }
        Ok(())
    }

    /// The network policy these settings describe.
    pub fn policy(&self) -> TargetPolicy {
        let base = if self.allow_private_targets {
            TargetPolicy::allow_private()
        } else {
            TargetPolicy::strict()
        };
        base.with_allowed(self.allowed_private_addresses.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let c = CaptureConfig::default();
        assert!(c.validate().is_ok());
        assert!(c.pool_size >= 1);
        assert_eq!((c.max_uses_per_session, c.queue_capacity), (50, 32));
        assert_eq!(c.default_timeout_secs, 30);
        assert!(!c.allow_private_targets);
        let bad = CaptureConfig {
            pool_size: 0,
            ..Default::default()
        };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.code(), "INVALID_CONFIG");
        assert!(e.to_string().contains("capture.pool_size"), "{e}");
        let grid = CaptureConfig {
            webdriver_url: Some("https://grid:4444".into()),
            ..Default::default()
        };
        assert!(
            grid.validate().is_err(),
            "https WebDriver URLs are not supported"
        );
        let parsed: CaptureConfig = serde_json::from_str(
            r#"{"pool_size": 3, "allow_private_targets": true, "allowed_private_addresses": ["10.1.2.3:8080"]}"#,
        )
        .unwrap();
        assert_eq!(parsed.pool_size, 3);
        assert!(parsed
            .policy()
            .check("10.1.2.3:8080".parse().unwrap())
            .is_ok());
    }
}
