//! What a screenshot costs, and how long its hold lasts.

use crate::amount::Credits;

/// The price list of captures (configured per server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScreenshotPrices {
    /// Every capture.
    pub base: Credits,
    /// Added for a full-page capture.
    pub full_page: Credits,
    /// Added for a PDF.
    pub pdf: Credits,
}

/// What a capture asks for, as far as its price goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CaptureKind {
    pub full_page: bool,
    pub pdf: bool,
}

impl ScreenshotPrices {
    /// The price of one capture: the base, plus full page and PDF when asked for.
    pub fn price(&self, capture: CaptureKind) -> Credits {
        let mut price = self.base;
        if capture.full_page {
            price += self.full_page;
        }
        if capture.pdf {
            price += self.pdf;
        }
        price
    }
}

/// Seconds a capture's hold must outlive the capture itself (queueing, upload, settling).
pub const HOLD_MARGIN_SECS: u64 = 60;

/// How long a capture's hold lasts, in milliseconds: the capture's budget (its timeout,
/// its delay and [`HOLD_MARGIN_SECS`]) or the configured hold lifetime, whichever is
/// longer, so a hold never expires under a capture still running.
pub fn hold_ttl_ms(timeout_secs: u64, delay_ms: u64, configured_ttl_secs: u64) -> i64 {
    let budget_secs = timeout_secs
        .saturating_add(delay_ms / 1000)
        .saturating_add(HOLD_MARGIN_SECS);
    let secs = budget_secs.max(configured_ttl_secs);
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRICES: ScreenshotPrices = ScreenshotPrices {
        base: Credits::whole(1),
        full_page: Credits::whole(2),
        pdf: Credits::whole(4),
    };

    #[test]
    fn a_capture_costs_the_base_plus_what_it_asks_for() {
        let kind = |full_page, pdf| CaptureKind { full_page, pdf };
        assert_eq!(PRICES.price(kind(false, false)), Credits::whole(1));
        assert_eq!(PRICES.price(kind(true, false)), Credits::whole(3));
        assert_eq!(PRICES.price(kind(false, true)), Credits::whole(5));
        assert_eq!(PRICES.price(kind(true, true)), Credits::whole(7));
        assert_eq!(
            ScreenshotPrices::default().price(kind(true, true)),
            Credits::ZERO
        );
    }

    #[test]
    fn a_hold_outlives_its_capture_or_lasts_the_configured_time() {
        // 30 s timeout + 2 s delay + 60 s margin beats a 60 s configured lifetime.
        assert_eq!(hold_ttl_ms(30, 2_500, 60), 92_000);
        // A long configured lifetime wins over a short capture.
        assert_eq!(hold_ttl_ms(5, 0, 300), 300_000);
        // Nothing overflows.
        assert_eq!(hold_ttl_ms(u64::MAX, u64::MAX, 0), i64::MAX);
    }
}
