//! Instants and calendar months. The core owns no clock: callers pass `now` in.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeZone, Utc};
use serde::{Serialize, Serializer};

use crate::error::QueryError;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    pub const fn from_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    pub fn from_datetime(dt: DateTime<Utc>) -> Timestamp {
        Timestamp(dt.timestamp_millis())
    }

    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    pub fn plus_millis(self, ms: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    pub fn plus_secs(self, secs: i64) -> Timestamp {
        self.plus_millis(secs.saturating_mul(1000))
    }

    /// RFC 3339 in UTC with milliseconds: `2026-03-24T15:30:00.000Z`.
    pub fn rfc3339(self) -> String {
        self.to_datetime()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()
    }

    /// Parses RFC 3339 (any offset) into an instant.
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|dt| Timestamp(dt.timestamp_millis()))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

/// A calendar month in UTC; as a period it is the half-open range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct YearMonth {
    year: i32,
    month: u32,
}

impl YearMonth {
    /// `month` must be in 1..=12 and the year within 1970..=9999.
    pub fn new(year: i32, month: u32) -> Result<YearMonth, QueryError> {
        if !(1..=12).contains(&month) {
            return Err(QueryError::new(
                "month",
                "month must be an integer from 1 to 12",
            ));
        }
        if !(1970..=9999).contains(&year) {
            return Err(QueryError::new(
                "year",
                "year must be an integer from 1970 to 9999",
            ));
        }
        Ok(YearMonth { year, month })
    }

    pub fn containing(ts: Timestamp) -> YearMonth {
        let dt = ts.to_datetime();
        YearMonth {
            year: dt.year(),
            month: dt.month(),
        }
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u32 {
        self.month
    }

    /// The first instant of the month. The month is always 1..=12; a year beyond the
    /// calendar's range (±262,000, reachable only by stepping past it) saturates, as
    /// [`Timestamp::to_datetime`] does.
    pub fn start(self) -> Timestamp {
        match NaiveDate::from_ymd_opt(self.year, self.month, 1) {
            Some(date) => {
                Timestamp::from_datetime(Utc.from_utc_datetime(&date.and_time(NaiveTime::MIN)))
            }
            None if self.year > 0 => Timestamp::MAX,
            None => Timestamp::from_millis(i64::MIN),
        }
    }

    /// The first instant of the next month (exclusive end).
    pub fn end(self) -> Timestamp {
        self.next().start()
    }

    pub fn next(self) -> YearMonth {
        if self.month == 12 {
            YearMonth {
                year: self.year + 1,
                month: 1,
            }
        } else {
            YearMonth {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// The month `n` months before this one.
    pub fn minus_months(self, n: u32) -> YearMonth {
        let index = self.year as i64 * 12 + (self.month as i64 - 1) - n as i64;
        YearMonth {
            year: index.div_euclid(12) as i32,
            month: (index.rem_euclid(12) + 1) as u32,
        }
    }

    pub fn contains(self, ts: Timestamp) -> bool {
        self.start() <= ts && ts < self.end()
    }

    /// Reads the `year` and `month` query parameters of the usage-by-month endpoint.
    ///
    /// No parameters: the current month. `month` alone: that month of the current year.
    /// `year` without `month` is refused.
    pub fn from_query(
        year: Option<&str>,
        month: Option<&str>,
        now: Timestamp,
    ) -> Result<YearMonth, QueryError> {
        let current = YearMonth::containing(now);
        let month = match month {
            None if year.is_some() => {
                return Err(QueryError::new(
                    "month",
                    "month is required when year is provided",
                ));
            }
            None => return Ok(current),
            Some(m) => m
                .trim()
                .parse::<u32>()
                .map_err(|_| QueryError::new("month", "month must be an integer from 1 to 12"))?,
        };
        let year = match year {
            None => current.year,
            Some(y) => y.trim().parse::<i32>().map_err(|_| {
                QueryError::new("year", "year must be an integer from 1970 to 9999")
            })?,
        };
        YearMonth::new(year, month)
    }
}

impl fmt::Display for YearMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// How many calendar months of history are kept (the current one included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    months: u32,
}

impl Retention {
    pub const DEFAULT_MONTHS: u32 = 12;

    pub fn months(months: u32) -> Result<Retention, QueryError> {
        if months == 0 {
            return Err(QueryError::new(
                "retention_months",
                "retention must keep at least one month",
            ));
        }
        Ok(Retention { months })
    }

    /// The oldest month still inside the window.
    pub fn oldest_month(self, now: Timestamp) -> YearMonth {
        YearMonth::containing(now).minus_months(self.months - 1)
    }

    /// Entries created before this instant may be compacted away.
    pub fn cutoff(self, now: Timestamp) -> Timestamp {
        self.oldest_month(now).start()
    }

    pub fn contains(self, month: YearMonth, now: Timestamp) -> bool {
        month >= self.oldest_month(now) && month <= YearMonth::containing(now)
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            months: Self::DEFAULT_MONTHS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn formats_with_milliseconds() {
        assert_eq!(
            ts("2026-03-24T15:30:00Z").rfc3339(),
            "2026-03-24T15:30:00.000Z"
        );
        assert_eq!(
            ts("2026-03-24T17:30:00.25+02:00").rfc3339(),
            "2026-03-24T15:30:00.250Z"
        );
    }

    #[test]
    fn months_are_half_open() {
        let m = YearMonth::new(2026, 12).unwrap();
        assert_eq!(m.start(), ts("2026-12-01T00:00:00Z"));
        assert_eq!(m.end(), ts("2027-01-01T00:00:00Z"));
        assert!(m.contains(ts("2026-12-31T23:59:59.999Z")));
        assert!(!m.contains(m.end()));
        assert_eq!(
            YearMonth::new(2026, 1).unwrap().minus_months(1),
            YearMonth::new(2025, 12).unwrap()
        );
        assert_eq!(
            YearMonth::new(2026, 3).unwrap().minus_months(14),
            YearMonth::new(2025, 1).unwrap()
        );
        assert_eq!(
            YearMonth::new(2024, 2).unwrap().end(),
            ts("2024-03-01T00:00:00Z")
        );
    }

    #[test]
    fn month_query_rules() {
        let now = ts("2026-05-08T15:37:11Z");
        assert_eq!(
            YearMonth::from_query(None, None, now).unwrap(),
            YearMonth::new(2026, 5).unwrap()
        );
        assert_eq!(
            YearMonth::from_query(None, Some("2"), now).unwrap(),
            YearMonth::new(2026, 2).unwrap()
        );
        assert_eq!(
            YearMonth::from_query(Some("2025"), Some("3"), now).unwrap(),
            YearMonth::new(2025, 3).unwrap()
        );
        let e = YearMonth::from_query(Some("2026"), None, now).unwrap_err();
        assert_eq!(e.message(), "month is required when year is provided");
        for bad in ["0", "13", "1.5", "x", "-1"] {
            assert_eq!(
                YearMonth::from_query(None, Some(bad), now)
                    .unwrap_err()
                    .field(),
                "month"
            );
        }
        assert_eq!(
            YearMonth::from_query(Some("20x6"), Some("1"), now)
                .unwrap_err()
                .field(),
            "year"
        );
    }

    #[test]
    fn retention_window() {
        let now = ts("2026-05-08T00:00:00Z");
        let r = Retention::default();
        assert_eq!(r.oldest_month(now), YearMonth::new(2025, 6).unwrap());
        assert!(r.contains(YearMonth::new(2025, 6).unwrap(), now));
        assert!(!r.contains(YearMonth::new(2025, 5).unwrap(), now));
        assert!(!r.contains(YearMonth::new(2026, 6).unwrap(), now));
        assert_eq!(r.cutoff(now), ts("2025-06-01T00:00:00Z"));
    }
}
