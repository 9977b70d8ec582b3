//! Subscription statuses, and which of them put the plan's name on new entries.

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

    /// The status spelled `text`, if it is one.
    pub fn parse(text: &str) -> Option<SubscriptionStatus> {
        text.parse().ok()
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

// The contract's (and the database's) spellings.
crate::spelled_enum!(
    SubscriptionStatus,
    "subscription status",
    Active => "active",
    Inactive => "inactive",
    Cancelled => "cancelled",
    PastDue => "past_due",
);

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
