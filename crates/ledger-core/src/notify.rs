//! Notifications to customers (outgoing webhooks): the events, when a balance change
//! calls for one, and how a failed delivery is retried. Pure rules: the store records
//! and sends what these decide.

use std::fmt;
use std::str::FromStr;

use crate::Credits;

/// An event a customer's endpoint may subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// The available balance fell below the account's `lowBalanceCredits` (once per
    /// crossing: it is sent again only after the balance rose to or above it).
    CreditsLow,
    /// The available balance reached zero (once, until it is above zero again).
    CreditsDepleted,
    /// A paid pack was credited.
    CreditsPurchased,
    /// An auto top-up was paid and credited.
    TopupSucceeded,
    /// An auto top-up charge was refused by the payment provider.
    TopupFailed,
    /// A block of overage was billed.
    OverageBilled,
}

impl Event {
    /// Every event, in the order the documentation lists them.
    pub const ALL: [Event; 6] = [
        Event::CreditsLow,
        Event::CreditsDepleted,
        Event::CreditsPurchased,
        Event::TopupSucceeded,
        Event::TopupFailed,
        Event::OverageBilled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::CreditsLow => "credits.low",
            Event::CreditsDepleted => "credits.depleted",
            Event::CreditsPurchased => "credits.purchased",
            Event::TopupSucceeded => "topup.succeeded",
            Event::TopupFailed => "topup.failed",
            Event::OverageBilled => "overage.billed",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Event {
    type Err = String;
    fn from_str(s: &str) -> Result<Event, String> {
        Event::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("unknown event {s:?}"))
    }
}

/// An account's balance alerts and whether they have fired since the balance was last
/// on the other side of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlertState {
    /// `credits.low` fires when the available balance falls below this (`None`: off).
    pub low_balance: Option<Credits>,
    /// `credits.low` fired and the balance has not been at or above the threshold since.
    pub low_notified: bool,
    /// `credits.depleted` fired and the balance has not been above zero since.
    pub depleted_notified: bool,
}

impl AlertState {
    /// The state after the available balance became `available`, and the events that
    /// change calls for (at most one of each).
    pub fn after_balance(self, available: Credits) -> (AlertState, Vec<Event>) {
        let mut next = self;
        let mut events = Vec::new();
        match self.low_balance {
            Some(threshold) if available < threshold => {
                if !self.low_notified {
                    next.low_notified = true;
                    events.push(Event::CreditsLow);
                }
            }
            _ => next.low_notified = false,
        }
        if available <= Credits::ZERO {
            if !self.depleted_notified {
                next.depleted_notified = true;
                events.push(Event::CreditsDepleted);
            }
        } else {
            next.depleted_notified = false;
        }
        (next, events)
    }
}

/// How failed deliveries are retried: exponential backoff from `initial_backoff_secs`,
/// doubling after every failure up to `max_backoff_secs`, until `max_attempts` attempts
/// have failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial_backoff_secs: u64,
    pub max_backoff_secs: u64,
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The wait in milliseconds before the next attempt after `attempts` attempts failed,
    /// or `None` when that was the last one allowed.
    pub fn retry_after_ms(&self, attempts: u32) -> Option<i64> {
        if attempts >= self.max_attempts {
            return None;
        }
        let doublings = attempts.saturating_sub(1).min(40);
        let secs = self
            .initial_backoff_secs
            .saturating_mul(1u64 << doublings)
            .min(self.max_backoff_secs);
        Some(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: i64) -> Credits {
        Credits::from_millis(n * 1000)
    }

    #[test]
    fn low_fires_once_per_crossing_and_rearms_at_the_threshold() {
        let s = AlertState {
            low_balance: Some(c(10)),
            ..AlertState::default()
        };
        let (s, e) = s.after_balance(c(12));
        assert!(e.is_empty());
        let (s, e) = s.after_balance(c(9));
        assert_eq!(e, vec![Event::CreditsLow]);
        let (s, e) = s.after_balance(c(5));
        assert!(e.is_empty(), "still below: no second credits.low");
        let (s, e) = s.after_balance(c(10));
        assert!(e.is_empty() && !s.low_notified, "at the threshold re-arms");
        let (_, e) = s.after_balance(c(3));
        assert_eq!(e, vec![Event::CreditsLow]);
    }

    #[test]
    fn depleted_fires_at_zero_once_and_without_a_threshold() {
        let s = AlertState::default();
        let (s, e) = s.after_balance(c(0));
        assert_eq!(e, vec![Event::CreditsDepleted]);
        let (s, e) = s.after_balance(c(0));
        assert!(e.is_empty());
        let (s, e) = s.after_balance(c(1));
        assert!(e.is_empty() && !s.depleted_notified);
        let with_low = AlertState {
            low_balance: Some(c(5)),
            ..s
        };
        let (_, e) = with_low.after_balance(c(0));
        assert_eq!(e, vec![Event::CreditsLow, Event::CreditsDepleted]);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_then_gives_up() {
        let p = RetryPolicy {
            initial_backoff_secs: 2,
            max_backoff_secs: 10,
            max_attempts: 5,
        };
        let waits: Vec<_> = (1..=5).map(|a| p.retry_after_ms(a)).collect();
        assert_eq!(
            waits,
            vec![Some(2000), Some(4000), Some(8000), Some(10_000), None]
        );
    }

    #[test]
    fn event_names_round_trip() {
        for e in Event::ALL {
            assert_eq!(e.as_str().parse::<Event>(), Ok(e));
        }
        assert!("credits.lo".parse::<Event>().is_err());
    }
}
