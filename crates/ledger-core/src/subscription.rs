//! Subscription statuses, and which of them put the plan's name on new entries.

use std::fmt;
use std::str::FromStr;

/// Where an account's subscription stands (the contract's spellings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionStatus {
    Active,
    Inactive,
    Cancelled,
    PastDue,
}

impl SubscriptionStatus {
    /// Every status, in the contract's order.
    pub const ALL: [SubscriptionStatus; 4] = [
        SubscriptionStatus::Active,
        SubscriptionStatus::Inactive,
        SubscriptionStatus::Cancelled,
        SubscriptionStatus::PastDue,
    ];

    /// The contract's (and the database's) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Inactive => "inactive",
            SubscriptionStatus::Cancelled => "cancelled",
            SubscriptionStatus::PastDue => "past_due",
        }
    }

    /// The status spelled `text`, if it is one.
    pub fn parse(text: &str) -> Option<SubscriptionStatus> {
        SubscriptionStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
    }

    /// Whether the plan's name is stamped on the account's new entries: a subscription
    /// still in force (active, or past due while payment is retried).
    pub fn stamps_plan(self) -> bool {
        matches!(
            self,
            SubscriptionStatus::Active | SubscriptionStatus::PastDue
        )
    }
}

impl fmt::Display for SubscriptionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SubscriptionStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<SubscriptionStatus, String> {
        SubscriptionStatus::parse(s).ok_or_else(|| format!("unknown subscription status `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_their_own_spelling_only() {
        for s in SubscriptionStatus::ALL {
            assert_eq!(SubscriptionStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(SubscriptionStatus::parse("Active"), None);
        assert_eq!(SubscriptionStatus::parse("trialing"), None);
        assert!("paused".parse::<SubscriptionStatus>().is_err());
    }

    #[test]
    fn only_subscriptions_in_force_stamp_the_plan() {
        let stamping: Vec<_> = SubscriptionStatus::ALL
            .into_iter()
            .filter(|s| s.stamps_plan())
            .collect();
        assert_eq!(
            stamping,
            [SubscriptionStatus::Active, SubscriptionStatus::PastDue]
        );
    }
}
