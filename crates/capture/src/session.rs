//! One WebDriver session (= one chromium), with a drop guard that always closes it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fantoccini::error::{CmdError, ErrorStatus};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

use crate::error::CaptureError;

const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

/// How to open a session.
#[derive(Debug, Clone)]
pub(crate) struct SessionSettings {
    pub webdriver_url: String,
    pub chromium_path: Option<PathBuf>,
    /// Create the profile directory here (only when the browser runs on this machine).
    pub local_profile: bool,
    /// `http://host:port` of our SSRF proxy.
    pub proxy_url: String,
    /// `trusted_spki_hashes`: certificates accepted without a trusted CA.
    pub trusted_spki: Vec<String>,
}

/// A live browser session. Dropping it without [`Session::close`] still closes it: the
/// drop guard spawns the close on the current runtime.
#[derive(Debug)]
pub(crate) struct Session {
    client: Client,
    /// Set by [`Session::close`], so the drop guard does not close the session again.
    closed: bool,
    profile: Option<tempfile::TempDir>,
    /// Captures done with this session.
    pub uses: u32,
    /// Whether chromedriver's `goog/cdp/execute` works here (false through some Grids).
    pub cdp: bool,
    /// The device metrics last set through CDP (width, height, scale factor's bits): the
    /// override stays across navigations, so the same viewport is not set again.
    pub metrics: Option<(u32, u32, u64)>,
    /// The emulated media features last set through CDP (dark colour scheme, reduced
    /// motion): they too stay across navigations.
    pub media: Option<(bool, bool)>,
    pub id: u64,
}

/// chromedriver's vendor endpoint that runs one Chrome DevTools Protocol command.
#[derive(Debug)]
struct CdpCommand(Value);

impl WebDriverCompatibleCommand for CdpCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.0.to_string()))
    }
}

/// Chromium switches for a headless browser whose every request goes through our proxy
/// and which makes no request of its own: no update checks, component or extension
/// downloads, safe-browsing lists, sync or sign-in, metrics, crash reports, network time,
/// translation, optimization hints, search-engine preconnects or hyperlink pings. The
/// proxy refuses whatever gets past these outside a capture (see ADR 0100).
pub(crate) fn chromium_args(proxy_url: &str, profile: Option<&std::path::Path>) -> Vec<String> {
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        // Extension, safe-browsing, upgrade, translate and UMA background fetches.
        "--disable-background-networking",
        // chrome://components updates (update.googleapis.com).
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-component-extensions-with-background-pages",
        "--disable-default-apps",
        "--disable-client-side-phishing-detection",
        "--safebrowsing-disable-auto-update",
        "--disable-domain-reliability",
        "--disable-breakpad",
        "--disable-crash-reporter",
        // Record metrics locally, never upload them.
        "--metrics-recording-only",
        // No <a ping> hyperlink-auditing requests.
        "--no-pings",
        "--disable-search-engine-choice-screen",
        "--password-store=basic",
        "--disable-features=Translate,MediaRouter,OptimizationHints,OptimizationHintsFetching,\
OptimizationGuideModelDownloading,OptimizationTargetPrediction,AutofillServerCommunication,\
CertificateTransparencyComponentUpdater,NetworkTimeServiceQuerying,PreconnectToSearch,\
InterestFeedContentSuggestions,SafeBrowsingRealTimeUrlLookups,PrivacySandboxSettings4,\
DialMediaRouteProvider,AcceptCHFrame,BackForwardCache",
        // Memory (issue 12): the GPU thread (software compositing, --disable-gpu) and the
        // network service in the browser process rather than two processes of their own.
        "--in-process-gpu",
        "--enable-features=NetworkServiceInProcess2",
        "--mute-audio",
        "--hide-scrollbars",
        "--force-color-profile=srgb",
        "--window-size=1280,800",
        // WebRTC may not send UDP around the proxy.
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
        "--webrtc-ip-handling-policy=disable_non_proxied_udp",
        // Loopback too goes through the proxy (Chrome bypasses it for localhost otherwise).
        "--proxy-bypass-list=<-loopback>",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.push(format!("--proxy-server={proxy_url}"));
    if let Some(p) = profile {
        args.push(format!("--user-data-dir={}", p.display()));
    }
    args
}

/// Profile preferences (what enterprise policies would set, where no switch reaches),
/// written by the WebDriver endpoint into the session's profile: no network prediction or
/// preconnects, no search suggestions, no safe-browsing or "alternate error page"
/// lookups, no spell-check dictionary downloads, no translation, no sign-in.
pub(crate) fn chromium_prefs() -> Value {
    json!({
        "net": {"network_prediction_options": 2},
        "search": {"suggest_enabled": false},
        "safebrowsing": {"enabled": false, "enhanced": false},
        "alternate_error_pages": {"enabled": false},
        "browser": {"enable_spellchecking": false},
        "spellcheck": {"dictionaries": [], "use_spelling_service": false},
        "translate": {"enabled": false},
        "signin": {"allowed": false},
        "url_keyed_anonymized_data_collection": {"enabled": false},
        "domain_reliability": {"allowed_by_policy": false},
    })
}

/// Runs before every document's own scripts (every frame, every navigation): JavaScript
/// dialogs answer at once as a dismissed dialog would (`alert` returns, `confirm` is false,
/// `prompt` is null, `print` does nothing), and `beforeunload` handlers are never
/// registered, so no dialog ever blocks the page or the WebDriver commands that follow.
/// WebDriver's `unhandledPromptBehavior: dismiss` stays as the net for a dialog that
/// escapes this (a frame the script does not reach, a Grid without CDP).
pub(crate) const DIALOG_GUARD_JS: &str = r#"(() => {
  const quiet = { alert() {}, confirm() { return false; }, prompt() { return null; }, print() {} };
  for (const name of Object.keys(quiet)) {
    try { Object.defineProperty(window, name, { value: quiet[name], writable: false, configurable: false }); } catch (e) {}
  }
  try { Object.defineProperty(window, 'onbeforeunload', { get() { return null; }, set(v) {}, configurable: false }); } catch (e) {}
  const add = EventTarget.prototype.addEventListener;
  try {
    Object.defineProperty(EventTarget.prototype, 'addEventListener', {
      value: function (type, ...rest) {
        if (String(type).toLowerCase() === 'beforeunload') return undefined;
        return add.call(this, type, ...rest);
      },
      writable: false, configurable: false,
    });
  } catch (e) {}
})();"#;

/// Leaves the page for `about:blank` from inside it, after emptying the page's own storage
/// (`sessionStorage` belongs to the tab, so it would outlive the origin's other storage).
const BLANK_PAGE_JS: &str = "try { sessionStorage.clear(); } catch (e) {} \
    try { localStorage.clear(); } catch (e) {} \
    location.replace('about:blank'); return null;";

/// [`BLANK_PAGE_JS`] as an expression for CDP's `Runtime.evaluate`.
const BLANK_PAGE_EXPR: &str = "(() => { try { sessionStorage.clear(); } catch (e) {} \
    try { localStorage.clear(); } catch (e) {} \
    location.replace('about:blank'); return null; })()";

/// What `Storage.clearDataForOrigin` clears between captures: everything a page can read.
const ISOLATED_STORAGE: &str =
    "cookies,file_systems,indexeddb,local_storage,websql,service_workers,cache_storage";

impl Session {
    pub(crate) async fn open(settings: &SessionSettings) -> Result<Self, CaptureError> {
        let profile = if settings.local_profile {
            Some(
                tempfile::Builder::new()
                    .prefix("capture-profile-")
                    .tempdir()
                    .map_err(|e| CaptureError::BrowserUnavailable {
                        detail: format!("cannot create a browser profile directory: {e}"),
                    })?,
            )
        } else {
            None
        };
        let mut args = chromium_args(&settings.proxy_url, profile.as_ref().map(|p| p.path()));
        if !settings.trusted_spki.is_empty() {
            // Chromium honours it only with a profile directory of the caller's choosing,
            // which chromedriver always gives it.
            args.push(format!(
                "--ignore-certificate-errors-spki-list={}",
                settings.trusted_spki.join(",")
            ));
        }
        let mut chrome = json!({
            "args": args,
            "prefs": chromium_prefs(),
        });
        if let Some(bin) = &settings.chromium_path {
            chrome["binary"] = json!(bin.display().to_string());
        }
        let caps = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "unhandledPromptBehavior": "dismiss",
            "timeouts": {"pageLoad": 30_000, "script": 10_000, "implicit": 0},
            "goog:chromeOptions": chrome,
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!("capabilities are an object"),
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&settings.webdriver_url)
            .await
            .map_err(|e| CaptureError::BrowserUnavailable {
                detail: format!("cannot open a browser session: {e}"),
            })?;
        let id = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(id, "browser session opened");
        let mut session = Self {
            client,
            closed: false,
            profile,
            uses: 0,
            cdp: true,
            metrics: None,
            media: None,
            id,
        };
        let prepared = async {
            session
                .try_cdp(
                    "Page.addScriptToEvaluateOnNewDocument",
                    json!({"source": DIALOG_GUARD_JS}),
                )
                .await?;
            // No HTTP cache shared between captures (clearing it after each one costs
            // 40-90 ms; not keeping it costs nothing a capture of one page would reuse).
            // (`setCacheDisabled` takes effect only with the Network domain on.)
            if session
                .try_cdp("Network.enable", json!({}))
                .await?
                .is_some()
            {
                session
                    .try_cdp("Network.setCacheDisabled", json!({"cacheDisabled": true}))
                    .await?;
            }
            Ok::<_, CmdError>(())
        };
        if let Err(e) = prepared.await {
            session.close().await;
            return Err(CaptureError::BrowserUnavailable {
                detail: format!("cannot prepare the browser session: {e}"),
            });
        }
        Ok(session)
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Run a CDP command through chromedriver.
    pub(crate) async fn cdp(&self, cmd: &str, params: Value) -> Result<Value, CmdError> {
        self.client()
            .issue_cmd(CdpCommand(json!({"cmd": cmd, "params": params})))
            .await
    }

    /// Like [`Session::cdp`], but turns CDP off for this session (and answers `Ok(None)`)
    /// when the endpoint does not exist, so callers fall back to plain W3C commands.
    pub(crate) async fn try_cdp(
        &mut self,
        cmd: &str,
        params: Value,
    ) -> Result<Option<Value>, CmdError> {
        if !self.cdp {
            return Ok(None);
        }
        match self.cdp(cmd, params).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_unsupported(&e) => {
                tracing::info!(error = %e, "CDP is not available; using W3C fallbacks");
                self.cdp = false;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Make the session ready for the next capture: a blank page, and nothing of the page
    /// just captured left behind (cookies, storage, service workers; the HTTP cache is off,
    /// see [`Session::open`]). It runs after the caller has its answer, before the session
    /// takes the next job, and it is the session's health check too.
    ///
    /// The blank page is reached by a navigation the page itself starts (`location.replace`
    /// in one script, which also empties the page's own `sessionStorage`): a WebDriver `goto`
    /// to `about:blank` costs two to three times as much, as it moves the tab to a new
    /// renderer. The storage types are listed rather than `all`, which also clears caches
    /// no page can read (the shader cache and the like) and costs 50-120 ms more.
    pub(crate) async fn reset(&mut self, origin: Option<String>) -> Result<(), CmdError> {
        let mut dialogs = 0;
        loop {
            // Through CDP the script is one `Runtime.evaluate`; WebDriver's `execute` wraps
            // it, checks the page and waits for the navigation it starts (`current_url`
            // below waits for it either way).
            let left = if self.cdp {
                self.cdp(
                    "Runtime.evaluate",
                    json!({"expression": BLANK_PAGE_EXPR, "returnByValue": true}),
                )
                .await
                .and_then(|v| match v.get("exceptionDetails") {
                    // The page broke `location` or the storage objects: the long way round.
                    Some(_) => Err(CmdError::NotW3C(v)),
                    None => Ok(()),
                })
            } else {
                self.client().execute(BLANK_PAGE_JS, vec![]).await.map(drop)
            };
            match left {
                Ok(()) => break,
                // A dialog the page guard did not reach: dismiss it and try again.
                Err(CmdError::Standard(wd))
                    if wd.error == ErrorStatus::UnexpectedAlertOpen && dialogs < 5 =>
                {
                    dialogs += 1;
                    let _ = self.client().dismiss_alert().await;
                }
                // A page that broke `location` (or a dead renderer): the long way round.
                Err(_) => {
                    let _ = self.client().dismiss_alert().await;
                    self.client().goto("about:blank").await?;
                    break;
                }
            }
        }
        // WebDriver waits for the navigation the script started before it runs this, so
        // the page is gone (and cannot write again) before anything is cleared.
        let url = self.client().current_url().await?;
        if url.as_str() != "about:blank" {
            self.client().goto("about:blank").await?;
        }
        if self.cdp {
            self.cdp("Network.clearBrowserCookies", json!({})).await?;
            if let Some(origin) = origin {
                self.cdp(
                    "Storage.clearDataForOrigin",
                    json!({"origin": origin, "storageTypes": ISOLATED_STORAGE}),
                )
                .await?;
            }
        } else {
            self.client().delete_all_cookies().await?;
        }
        Ok(())
    }

    /// Close the session (ends the browser) and remove its profile.
    pub(crate) async fn close(mut self) {
        self.closed = true;
        close_client(self.client.clone(), self.profile.take(), self.id).await;
    }
}

async fn close_client(client: Client, profile: Option<tempfile::TempDir>, id: u64) {
    match tokio::time::timeout(CLOSE_TIMEOUT, client.close()).await {
        Ok(Ok(())) => tracing::debug!(id, "browser session closed"),
        Ok(Err(e)) => tracing::debug!(id, error = %e, "closing a browser session failed"),
        Err(_) => tracing::warn!(id, "closing a browser session timed out"),
    }
    drop(profile);
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.closed {
            let client = self.client.clone();
            let profile = self.profile.take();
            let id = self.id;
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(close_client(client, profile, id));
                }
                Err(_) => tracing::warn!(
                    id,
                    "browser session dropped outside a runtime; chromedriver will end it"
                ),
            }
        }
    }
}

/// The WebDriver endpoint does not know this command (a Grid without vendor endpoints).
pub(crate) fn is_unsupported(e: &CmdError) -> bool {
    match e {
        CmdError::Standard(wd) => matches!(
            wd.error,
            ErrorStatus::UnknownCommand
                | ErrorStatus::UnknownMethod
                | ErrorStatus::UnknownPath
                | ErrorStatus::UnsupportedOperation
        ),
        CmdError::NotJson(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The switches that keep Chromium from calling home are all there, and features are
    /// disabled with one `--disable-features` (Chromium reads only the last one).
    #[test]
    fn chromium_is_told_to_stay_quiet() {
        let args = chromium_args("http://127.0.0.1:1", None);
        for switch in [
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--no-pings",
            "--metrics-recording-only",
            "--disable-breakpad",
            "--no-first-run",
            "--proxy-server=http://127.0.0.1:1",
            "--proxy-bypass-list=<-loopback>",
        ] {
            assert!(args.iter().any(|a| a == switch), "{switch} missing");
        }
        let features: Vec<_> = args
            .iter()
            .filter(|a| a.starts_with("--disable-features="))
            .collect();
        assert_eq!(features.len(), 1, "{features:?}");
        assert!(!features[0].contains(char::is_whitespace), "{features:?}");
        for f in [
            "Translate",
            "OptimizationHints",
            "NetworkTimeServiceQuerying",
        ] {
            assert!(features[0].split(['=', ',']).any(|x| x == f), "{f}");
        }
        assert_eq!(chromium_prefs()["net"]["network_prediction_options"], 2);
    }
}
