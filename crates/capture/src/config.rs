//! [`CaptureConfig`]: how the service reaches a browser and how big its pool is.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::CaptureError;
use crate::guard::TargetPolicy;

/// Configuration of a [`crate::CaptureService`], and the `[capture]` section of Shotledger's
/// settings as it is (every key is documented, with its default, in `config/default.toml`).
///
/// Every key has a default. Unknown keys are refused, so a typo fails naming the key. For
/// the optional keys an empty string means unset (an environment variable cannot be
/// removed by a later layer, only emptied); `pool_size = 0` means one per CPU.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// A WebDriver endpoint (chromedriver or a Selenium Grid router), `http://` only.
    /// Unset: start and supervise our own chromedriver on a free 127.0.0.1 port.
    #[serde(deserialize_with = "empty_is_none")]
    pub webdriver_url: Option<String>,
    /// chromedriver binary, used when `webdriver_url` is unset.
    pub chromedriver_path: PathBuf,
    /// Browser binary passed as `goog:chromeOptions.binary`. Unset: `/usr/bin/chromium` with
    /// our own chromedriver, and the driver's own choice with a `webdriver_url`.
    #[serde(deserialize_with = "empty_is_none")]
    pub chromium_path: Option<PathBuf>,
    /// Number of browser sessions (default, and `0`: the number of CPUs, at most 64).
    #[serde(deserialize_with = "zero_is_one_per_cpu")]
    pub pool_size: usize,
    /// A session is closed and replaced after this many captures.
    pub max_uses_per_session: u32,
    /// Requests that may wait for a session; more are refused at once with `BUSY`.
    pub queue_capacity: usize,
    /// Longest wait in the queue before a request is refused with `BUSY`.
    pub queue_timeout_ms: u64,
    /// Allow loopback/private/link-local targets (development and tests only).
    pub allow_private_targets: bool,
    /// Exact `ip:port` pairs allowed even when private targets are not (empty items are
    /// skipped, so an empty environment variable means none).
    #[serde(deserialize_with = "socket_addresses")]
    pub allowed_private_addresses: Vec<SocketAddr>,
    /// Time budget of a capture whose options give no `timeout`, in seconds (1..=60).
    pub default_timeout_secs: u64,
    /// Address the SSRF proxy listens on.
    pub proxy_bind: IpAddr,
    /// Host name or IP the browser uses to reach the proxy (default: `proxy_bind`). With a
    /// remote Grid this must be an address of this machine that the Grid nodes can reach.
    #[serde(deserialize_with = "empty_is_none")]
    pub proxy_advertised_host: Option<String>,
    /// Certificates the browser accepts although no CA it trusts signed them: base64
    /// SHA-256 hashes of a SubjectPublicKeyInfo in the chain a site presents (a private or
    /// test CA's key; empty items are skipped). Empty, the default: only certificates the
    /// browser trusts itself, and no certificate error is ever ignored.
    #[serde(deserialize_with = "spki_hashes")]
    pub trusted_spki_hashes: Vec<String>,
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
            pool_size: one_per_cpu(),
            max_uses_per_session: 50,
            queue_capacity: 32,
            queue_timeout_ms: 30_000,
            allow_private_targets: false,
            allowed_private_addresses: Vec::new(),
            default_timeout_secs: 30,
            proxy_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            proxy_advertised_host: None,
            trusted_spki_hashes: Vec::new(),
            prewarm: true,
            runtime_threads: 2,
        }
    }
}

/// The default `pool_size`: one session per CPU, within what `validate` accepts.
fn one_per_cpu() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(64))
}

/// An optional key: an empty (or blank) string is unset.
fn empty_is_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: From<String>,
{
    let value = Option::<String>::deserialize(d)?;
    Ok(value.filter(|v| !v.trim().is_empty()).map(T::from))
}

/// `pool_size`: `0` is one per CPU.
fn zero_is_one_per_cpu<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    Ok(if n == 0 { one_per_cpu() } else { n })
}

/// `allowed_private_addresses`: `ip:port` strings; empty items are skipped.
fn socket_addresses<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse().map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{s}` is not an address like 10.0.0.5:8080 (allowed_private_addresses)"
                ))
            })
        })
        .collect()
}

/// `trusted_spki_hashes`: base64 of 32 bytes each; empty items are skipped.
fn spki_hashes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use base64::Engine as _;
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(
            |s| match base64::engine::general_purpose::STANDARD.decode(s) {
                Ok(bytes) if bytes.len() == 32 => Ok(s.to_owned()),
                _ => Err(serde::de::Error::custom(format!(
                    "`{s}` is not the base64 of a SHA-256 hash (trusted_spki_hashes)"
                ))),
            },
        )
        .collect()
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
    /// Checks ranges; the error names the key (`capture.<key>`).
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

    #[test]
    fn empty_optional_keys_zero_pool_and_unknown_keys() {
        let parsed: CaptureConfig = serde_json::from_str(
            r#"{"webdriver_url": "", "chromium_path": " ", "proxy_advertised_host": "",
                "pool_size": 0, "allowed_private_addresses": ["", "10.0.0.1:80"]}"#,
        )
        .unwrap();
        assert_eq!((parsed.webdriver_url, parsed.chromium_path), (None, None));
        assert_eq!(parsed.proxy_advertised_host, None);
        assert_eq!(parsed.pool_size, CaptureConfig::default().pool_size);
        assert_eq!(
            parsed.allowed_private_addresses,
            vec!["10.0.0.1:80".parse::<SocketAddr>().unwrap()]
        );
        let e = serde_json::from_str::<CaptureConfig>(r#"{"pool_sise": 2}"#).unwrap_err();
        assert!(e.to_string().contains("pool_sise"), "{e}");
        let e = serde_json::from_str::<CaptureConfig>(r#"{"allowed_private_addresses": ["x"]}"#)
            .unwrap_err();
        assert!(e.to_string().contains("allowed_private_addresses"), "{e}");
        let hash = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        let parsed: CaptureConfig =
            serde_json::from_str(&format!(r#"{{"trusted_spki_hashes": ["", "{hash}"]}}"#)).unwrap();
        assert_eq!(parsed.trusted_spki_hashes, vec![hash.to_owned()]);
        assert!(CaptureConfig::default().trusted_spki_hashes.is_empty());
        for bad in ["abc", "AAAA"] {
            let e = serde_json::from_str::<CaptureConfig>(&format!(
                r#"{{"trusted_spki_hashes": ["{bad}"]}}"#
            ))
            .unwrap_err();
            assert!(e.to_string().contains("trusted_spki_hashes"), "{e}");
        }
    }
}
