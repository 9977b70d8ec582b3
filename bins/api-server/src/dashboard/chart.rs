//! Usage by day of one month as an SVG bar chart, drawn on the server: no script and
//! nothing loaded to draw it, readable by screen readers (`role="img"`, a title and a
//! description with the total, a title on every bar).

use std::fmt::Write as _;

use ledger_core::{Credits, Entry, EntryKind, Timestamp, YearMonth};

use super::html::esc;

const DAY_MS: i64 = 86_400_000;

/// The credits used (captured `usage`, refunds subtracted) on each day of `month`, from
/// its entries.
pub fn usage_by_day(month: YearMonth, entries: &[Entry]) -> Vec<Credits> {
    let start = month.start().millis();
    let days = ((month.end().millis() - start) / DAY_MS).max(1) as usize;
    let mut per_day = vec![Credits::ZERO; days];
    for e in entries {
        let signed = match e.kind {
            EntryKind::Usage => e.amount.abs(),
            EntryKind::Refund => -e.amount.abs(),
            _ => continue,
        };
        let day = ((e.created_at.millis() - start) / DAY_MS) as usize;
        if let Some(slot) = per_day.get_mut(day) {
            *slot = slot.checked_add(signed).unwrap_or(*slot);
        }
    }
    per_day
}

/// The chart of `per_day` (one bar a day) for `month`.
pub fn svg(month: YearMonth, per_day: &[Credits]) -> String {
    const W: i64 = 620;
    const H: i64 = 200;
    const BASE: i64 = 170;
    // The scale: the busiest day, at least one credit.
    let max = per_day
        .iter()
        .map(|c| c.millis())
        .max()
        .unwrap_or(0)
        .max(1000);
    let total = per_day
        .iter()
        .fold(Credits::ZERO, |a, c| a.checked_add(*c).unwrap_or(a));
    let slot = W / per_day.len().max(1) as i64;
    let mut bars = String::new();
    for (i, used) in per_day.iter().enumerate() {
        let day = i + 1;
        let height = (used.millis().max(0) * (BASE - 10)) / max;
        let x = i as i64 * slot + 2;
        let _ = write!(
            bars,
            r#"<rect x="{x}" y="{}" width="{}" height="{height}" class="bar"><title>{}-{:02}-{day:02}: {used} credits</title></rect>"#,
            BASE - height,
            (slot - 4).max(1),
            month.year(),
            month.month(),
        );
        if day == 1 || day % 5 == 0 {
            let _ = write!(
                bars,
                r#"<text x="{}" y="{}" class="axis">{day}</text>"#,
                x + slot / 2 - 2,
                BASE + 18
            );
        }
    }
    let label = format!("{}-{:02}", month.year(), month.month());
    format!(
        r#"<svg role="img" aria-labelledby="chart-title chart-desc" viewBox="0 0 {W} {H}" class="chart" preserveAspectRatio="xMinYMin meet"><title id="chart-title">Usage by day</title><desc id="chart-desc">Credits used each day of {label}: {total} in all; the busiest day used {}.</desc><line x1="0" y1="{BASE}" x2="{W}" y2="{BASE}" class="baseline"></line>{bars}</svg>"#,
        per_day.iter().copied().max().unwrap_or(Credits::ZERO),
        label = esc(&label),
    )
}

/// The month `(year, month)` asks for, like the usage endpoint reads its query.
pub fn month_of(
    year: Option<&str>,
    month: Option<&str>,
    now: Timestamp,
) -> Result<YearMonth, ledger_core::QueryError> {
    YearMonth::from_query(year, month, now)
}
