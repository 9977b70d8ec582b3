//! Our own chromedriver: started on a free loopback port, restarted when it dies, stopped on
//! shutdown.
//!
//! chromedriver runs in a process group of its own, and the browsers it launches join that
//! group. chromium does *not* exit when chromedriver dies, so stopping means signalling the
//! whole group. Two safety nets keep browsers from outliving us: the child is
//! `kill_on_drop`, and a tiny `sh` watchdog holds a pipe from this process and signals the
//! whole group when the pipe closes (that is, when this process exits for any reason, a
//! panicking test included, or the supervisor is dropped).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::error::CaptureError;

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Where sessions should be created: fixed, or whatever our supervised chromedriver uses now.
#[derive(Debug, Clone)]
pub(crate) struct DriverUrl(Arc<RwLock<String>>);

impl DriverUrl {
    pub(crate) fn fixed(url: String) -> Self {
        Self(Arc::new(RwLock::new(url)))
    }
    pub(crate) fn get(&self) -> String {
        // A poisoned lock still holds a whole url: it is only ever replaced.
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
    fn set(&self, url: String) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = url;
    }
}

struct Running {
    child: Child,
    pgid: u32,
    _watchdog: Child,
    url: String,
}

/// Start chromedriver and a task that restarts it until `stop` turns true.
pub(crate) async fn start_supervised(
    path: PathBuf,
    mut stop: watch::Receiver<bool>,
) -> Result<(DriverUrl, tokio::task::JoinHandle<()>), CaptureError> {
    let first = spawn(&path).await?;
    let url = DriverUrl::fixed(first.url.clone());
    let shared = url.clone();
    let task = tokio::spawn(async move {
        let mut running = first;
        let mut backoff = Duration::from_millis(200);
        loop {
            tokio::select! {
                status = running.child.wait() => {
                    // Browsers of the dead chromedriver would linger: end its group.
                    kill_group(running.pgid).await;
                    if *stop.borrow() {
                        break;
                    }
                    tracing::warn!(?status, "chromedriver exited; restarting it");
                    loop {
                        tokio::time::sleep(backoff).await;
                        if *stop.borrow() {
                            return;
                        }
                        match spawn(&path).await {
                            Ok(r) => {
                                shared.set(r.url.clone());
                                running = r;
                                backoff = Duration::from_millis(200);
                                break;
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "chromedriver restart failed");
                                backoff = (backoff * 2).min(Duration::from_secs(5));
                            }
                        }
                    }
                }
                _ = stop.changed() => {
                    kill_group(running.pgid).await;
                    let _ = running.child.kill().await;
                    break;
                }
            }
        }
    });
    Ok((url, task))
}

/// A chromedriver of its own, not supervised: what a Selenium Grid node or a remote
/// WebDriver is to a [`crate::CaptureService`] configured with its `webdriver_url`
/// (benchmarks and tests start one). It listens on a free 127.0.0.1 port; dropping it ends
/// chromedriver and every browser it started.
pub struct Chromedriver {
    running: Running,
}

impl std::fmt::Debug for Chromedriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chromedriver")
            .field("url", &self.running.url)
            .finish()
    }
}

impl Chromedriver {
    /// Start the chromedriver at `path` and wait until it is ready.
    pub async fn start(path: &Path) -> Result<Self, CaptureError> {
        Ok(Self {
            running: spawn(path).await?,
        })
    }

    /// Its WebDriver endpoint (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.running.url
    }

    /// Stop chromedriver and the browsers it started.
    pub async fn stop(mut self) {
        kill_group(self.running.pgid).await;
        let _ = self.running.child.kill().await;
    }
}

async fn spawn(path: &Path) -> Result<Running, CaptureError> {
    let unavailable = |detail: String| CaptureError::BrowserUnavailable { detail };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| unavailable(format!("no free port for chromedriver: {e}")))?
        .port();
    let mut child = Command::new(path)
        .arg(format!("--port={port}"))
        .arg("--log-level=SEVERE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            unavailable(format!(
                "cannot start {} ({e}); install it with `apt-get install chromium chromium-driver`",
                path.display()
            ))
        })?;
    let pid = child.id().unwrap_or_default();
    // Ends chromedriver's group (chromedriver and its browsers) when our end of the pipe
    // closes. A process group id is not reused while any member is alive.
    let watchdog = Command::new("sh")
        .arg("-c")
        .arg(
            "read _ignored; kill -TERM -$1 2>/dev/null || exit 0; sleep 3; \
             kill -KILL -$1 2>/dev/null; exit 0",
        )
        .arg("capture-watchdog")
        .arg(pid.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| unavailable(format!("cannot start the chromedriver watchdog: {e}")))?;
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if ready(port).await {
            tracing::info!(%url, pid, "chromedriver ready");
            return Ok(Running {
                child,
                pgid: pid,
                _watchdog: watchdog,
                url,
            });
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(unavailable(format!(
                "chromedriver exited at start ({status})"
            )));
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill().await;
            return Err(unavailable("chromedriver did not become ready".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM the process group, then SIGKILL what is left a moment later.
async fn kill_group(pgid: u32) {
    if pgid == 0 {
        return;
    }
    let group = format!("-{pgid}");
    let signal = |sig: &'static str| {
        let group = group.clone();
        async move {
            Command::new("kill")
                .args([sig, "--", &group])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .map(|s| s.success())
                .unwrap_or(false)
        }
    };
    if signal("-TERM").await {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if !signal("-0").await {
                return;
            }
        }
        signal("-KILL").await;
    }
}

/// `GET /status` of our own chromedriver answers `"ready": true`.
async fn ready(port: u16) -> bool {
    status_ready("127.0.0.1", port, "").await
}

/// `GET {url}/status` of a WebDriver endpoint (chromedriver, a Grid) answers
/// `"ready": true`, within 2 seconds.
pub(crate) async fn url_ready(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
        return false;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    status_ready(&host, port, parsed.path().trim_end_matches('/')).await
}

async fn status_ready(host: &str, port: u16, base: &str) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect((host, port)).await?;
        let head = format!(
            "GET {base}/status HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await?;
        // chromedriver may keep the connection open: read until the answer is known.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 2048];
        loop {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Ok(false);
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).replace(' ', "");
            if text.contains("\"ready\":true") {
                return Ok::<_, std::io::Error>(true);
            }
            if text.contains("\"ready\":false") {
                return Ok(false);
            }
        }
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Ok(true))
    )
}
