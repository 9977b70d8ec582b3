//! Real screenshots through WebDriver.
//!
//! `capture` drives chromium through chromedriver (or any WebDriver endpoint, such as a
//! Selenium Grid router) with [fantoccini], and turns a validated [`CaptureOptions`] into
//! image or PDF bytes ([`Captured`]).
//!
//! - [`options`]: the wire options, their validation, and the cache key.
//! - [`apply`]: the page options applied to a capture (emulation, injected CSS and
//!   JavaScript, hidden elements, `waitUntil`, lazy content before a full-page capture,
//!   `clip`), with the table of what works on a WebDriver endpoint without CDP, and the
//!   ad and cookie-banner lists shipped in `lists/` (nothing is fetched at run time).
//! - [`guard`]: the SSRF policy (address classifier, resolution, URL check).
//! - [`proxy`]: the forward proxy every browser request goes through, which enforces the
//!   policy on redirects and subresources and tells DNS failures from refused connections.
//! - [`CaptureService`]: a pool of browser sessions behind a bounded queue, on its own tokio
//!   runtime, callable from any runtime.
//! - [`CaptureError`]: the one error type, with stable codes and suggested HTTP statuses.
//!
//! ```no_run
//! # async fn demo() -> Result<(), capture::CaptureError> {
//! use capture::{CaptureConfig, CaptureOptions, CaptureService, RawCaptureOptions};
//! let service = CaptureService::start(CaptureConfig::default()).await?;
//! let opts = CaptureOptions::parse(RawCaptureOptions {
//!     url: Some("https://example.com/".into()),
//!     ..Default::default()
//! })?;
//! let shot = service.capture(&opts).await?;
//! assert_eq!(shot.content_type, "image/png");
//! service.shutdown().await;
//! # Ok(()) }
//! ```

pub mod apply;
pub mod config;
mod driver;
pub mod error;
pub mod guard;
pub mod options;
pub mod proxy;
mod selector;
mod service;
mod session;
mod shoot;

pub use config::CaptureConfig;
pub use driver::Chromedriver;
pub use error::{CaptureError, OptionError};
pub use guard::{classify_ip, TargetPolicy};
pub use options::{CaptureOptions, Clip, Format, RawCaptureOptions, RawValue, Target, WaitUntil};
pub use service::{CaptureService, ServiceStats};
pub use shoot::Captured;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, and goes on if an earlier holder panicked: every critical section in this
/// crate is one take, assignment, push or copy, so the data is whole even then.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
