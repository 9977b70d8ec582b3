//! The crate's one error type, [`CaptureError`], and the option validation error
//! [`OptionError`] it wraps.
//!
//! Every variant has a stable machine-readable [`CaptureError::code`] and a suggested HTTP
//! status ([`CaptureError::http_status`]); the HTTP layer decides the final mapping, but
//! these are the values the contract expects:
//!
//! | code | status | whose fault |
//! |---|---|---|
//! | `INVALID_REQUEST` | 400 | client: an option is wrong |
//! | `FORBIDDEN_TARGET` | 400 | client: not http(s), or a loopback/private/metadata address |
//! | `TARGET_HTTP_ERROR` (4xx) | 422 | the target answered 4xx |
//! | `SELECTOR_NOT_FOUND` | 422 | the selector never matched |
//! | `PAGE_TOO_TALL` | 422 | `fullPage`: the page, its lazy content scrolled in, is taller than a capture can be |
//! | `PAGE_ERROR` | 422 | the page kept the browser from capturing it (endless dialogs, broke the DOM APIs the capture uses) |
//! | `DNS_FAILURE`, `CONNECTION_REFUSED`, `NETWORK_ERROR` | 502 | the target cannot be reached |
//! | `TARGET_HTTP_ERROR` (5xx) | 502 | the target answered 5xx |
//! | `BROWSER_CRASH` | 502 | our browser died mid-capture |
//! | `TIMEOUT` | 504 | the whole capture took longer than `timeout` |
//! | `BUSY` | 503 | every session busy and the queue full (send `Retry-After`) |
//! | `BROWSER_UNAVAILABLE` | 503 | chromedriver/chromium cannot be started or reached |
//! | `SHUT_DOWN` | 503 | the service is stopping |
//! | `INTERNAL` | 500 | a bug or an unexpected WebDriver answer; log it, show nothing |
//! | `INVALID_CONFIG` | 500 | only from start-up: a configuration key is out of range |

/// An option that failed validation: `field()` names it (camelCase: `quality`, `url`,
/// ...); `message()` says what is wrong and what is allowed.
pub type OptionError = field_error::FieldError;

/// Everything that can go wrong while taking a screenshot.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The options did not validate.
    #[error(transparent)]
    InvalidOptions(#[from] OptionError),

    /// The target is not http(s) or resolves to an address we refuse to reach (SSRF guard).
    #[error("forbidden target {target}: {reason}")]
    ForbiddenTarget { target: String, reason: String },

    /// The target's host name does not resolve.
    #[error("the host {host} could not be resolved (DNS failure)")]
    DnsFailure { host: String },

    /// The target refused the TCP connection.
    #[error("the connection to {target} was refused")]
    ConnectionRefused { target: String },

    /// Any other network failure reaching the target (reset, unreachable, TLS...).
    #[error("the target {target} could not be reached: {detail}")]
    NetworkError { target: String, detail: String },

    /// The target answered with a 4xx or 5xx status.
    #[error("the target {url} answered HTTP {status}")]
    TargetHttpError { url: String, status: u16 },

    /// The capture did not finish within its time budget.
    #[error("the capture did not finish within {timeout_secs} s ({stage})")]
    Timeout { timeout_secs: u64, stage: String },

    /// The element to capture or to wait for never appeared.
    #[error("no element matches the selector {selector:?}")]
    SelectorNotFound { selector: String },

    /// A full-page capture of a page taller than the largest image the browser can make:
    /// refused rather than cut silently.
    #[error("the page is {height} CSS pixels tall; a full-page capture can be at most {max} at this deviceScaleFactor (capture a clip or the viewport instead)")]
    PageTooTall { height: u64, max: u64 },

    /// The page itself kept the capture from finishing: it kept opening JavaScript dialogs,
    /// or broke the DOM APIs the capture's own scripts use. The session is healthy.
    #[error("the page could not be captured: {detail}")]
    PageError { detail: String },

    /// The browser session died or became unusable in the middle of a capture.
    #[error("the browser session failed: {detail}")]
    BrowserCrash { detail: String },

    /// chromedriver / chromium could not be started or the WebDriver endpoint is unreachable.
    #[error("the browser is not available: {detail}")]
    BrowserUnavailable { detail: String },

    /// Every browser session is busy and the wait queue is full (or the wait was too long).
    #[error("all browser sessions are busy; retry in {retry_after_secs} s")]
    Busy { retry_after_secs: u64 },

    /// A configuration key is out of range (raised by `CaptureConfig::validate` and `start`).
    #[error("invalid capture configuration: capture.{key} {message}")]
    InvalidConfig { key: &'static str, message: String },

    /// The service has been shut down.
    #[error("the capture service is shut down")]
    ShutDown,

    /// Anything unexpected: a WebDriver answer we do not understand, an encoding failure.
    #[error("internal capture error: {detail}")]
    Internal { detail: String },
}

impl CaptureError {
    /// A stable, machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidOptions(_) => "INVALID_REQUEST",
            Self::ForbiddenTarget { .. } => "FORBIDDEN_TARGET",
            Self::DnsFailure { .. } => "DNS_FAILURE",
            Self::ConnectionRefused { .. } => "CONNECTION_REFUSED",
            Self::NetworkError { .. } => "NETWORK_ERROR",
            Self::TargetHttpError { .. } => "TARGET_HTTP_ERROR",
            Self::Timeout { .. } => "TIMEOUT",
            Self::SelectorNotFound { .. } => "SELECTOR_NOT_FOUND",
            Self::PageError { .. } => "PAGE_ERROR",
            Self::PageTooTall { .. } => "PAGE_TOO_TALL",
            Self::BrowserCrash { .. } => "BROWSER_CRASH",
            Self::BrowserUnavailable { .. } => "BROWSER_UNAVAILABLE",
            Self::Busy { .. } => "BUSY",
            Self::InvalidConfig { .. } => "INVALID_CONFIG",
            Self::ShutDown => "SHUT_DOWN",
            Self::Internal { .. } => "INTERNAL",
        }
    }

    /// The HTTP status the screenshot endpoint should answer with (see the module docs).
    pub fn http_status(&self) -> u16 {
        match self {
            Self::InvalidOptions(_) | Self::ForbiddenTarget { .. } => 400,
            Self::TargetHttpError { status, .. } if (400..500).contains(status) => 422,
            Self::SelectorNotFound { .. } | Self::PageError { .. } | Self::PageTooTall { .. } => {
                422
            }
            Self::DnsFailure { .. }
            | Self::ConnectionRefused { .. }
            | Self::NetworkError { .. }
            | Self::TargetHttpError { .. }
            | Self::BrowserCrash { .. } => 502,
            Self::Timeout { .. } => 504,
            Self::Busy { .. } | Self::BrowserUnavailable { .. } | Self::ShutDown => 503,
            Self::Internal { .. } | Self::InvalidConfig { .. } => 500,
        }
    }

    /// True when the request itself is at fault (bad options, forbidden target, a target
    /// that answers 4xx, a selector that matches nothing): retrying unchanged will not help.
    pub fn is_client_fault(&self) -> bool {
        (400..500).contains(&self.http_status())
    }

    /// True when the browser session that met this error cannot be trusted with another
    /// capture and must be replaced: the browser crashed or is unreachable, or something
    /// unexpected happened. Everything else is page-level (the request's fault or the
    /// target's): the session stays, after its reset between captures proved it healthy.
    /// A timeout is page-level too; when the browser is really stuck, the reset fails and
    /// the session is replaced then.
    pub fn breaks_session(&self) -> bool {
        matches!(
            self,
            Self::BrowserCrash { .. } | Self::BrowserUnavailable { .. } | Self::Internal { .. }
        )
    }

    /// True when the message may be shown to the client as-is. `INTERNAL` errors should be
    /// logged and replaced by a generic message.
    pub fn is_safe_to_show(&self) -> bool {
        !matches!(self, Self::Internal { .. })
    }

    /// For `BUSY`: the suggested `Retry-After` in seconds.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Busy { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }

    pub(crate) fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal {
            detail: detail.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_contract() {
        let forbidden = CaptureError::ForbiddenTarget {
            target: "x".into(),
            reason: "y".into(),
        };
        assert_eq!(forbidden.http_status(), 400);
        assert!(forbidden.is_client_fault());
        let t404 = CaptureError::TargetHttpError {
            url: "u".into(),
            status: 404,
        };
        assert_eq!(
            (t404.code(), t404.http_status()),
            ("TARGET_HTTP_ERROR", 422)
        );
        let t500 = CaptureError::TargetHttpError {
            url: "u".into(),
            status: 500,
        };
        assert_eq!(t500.http_status(), 502);
        assert!(!t500.is_client_fault());
        let busy = CaptureError::Busy {
            retry_after_secs: 3,
        };
        assert_eq!((busy.code(), busy.http_status()), ("BUSY", 503));
        assert_eq!(busy.retry_after_secs(), Some(3));
        let timeout = CaptureError::Timeout {
            timeout_secs: 5,
            stage: "navigation".into(),
        };
        assert_eq!(timeout.http_status(), 504);
    }
}
