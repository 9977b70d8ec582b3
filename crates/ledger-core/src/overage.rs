//! Charging extra beyond a plan: usage over the allowance is billed in whole blocks
//! (1,000 credits by default), rounded up, in integers.

use crate::amount::{Cents, Credits};

/// How extra usage is rounded and priced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OveragePolicy {
    /// The block size extra usage is rounded up to.
    pub block: Credits,
    /// The price of one whole block.
    pub cents_per_block: Cents,
}

impl OveragePolicy {
    pub const DEFAULT_BLOCK: Credits = Credits::whole(1_000);

    pub fn new(cents_per_block: Cents) -> OveragePolicy {
        OveragePolicy {
            block: Self::DEFAULT_BLOCK,
            cents_per_block,
        }
    }

    /// Usage beyond the plan limit (never negative). Saturates instead of overflowing:
    /// `used` and `plan_limit` are each within the ledger's limits, so it never does.
    pub fn extra(&self, used: Credits, plan_limit: Credits) -> Credits {
        Credits::from_millis(used.millis().saturating_sub(plan_limit.millis())).max(Credits::ZERO)
    }

    /// Extra usage rounded up to the next whole block: 1 → 1,000; 1,001 → 2,000.
    /// Panics only if the rounded amount does not fit in an `i64` (see
    /// [`OveragePolicy::checked_billable`]).
    pub fn billable(&self, extra: Credits) -> Credits {
        // The documented panicking form of `checked_billable`, as `Credits`' operators are.
        #[allow(clippy::expect_used)]
        self.checked_billable(extra)
            .expect("billable credits overflow")
    }

    /// [`OveragePolicy::billable`], or `None` if it overflows.
    pub fn checked_billable(&self, extra: Credits) -> Option<Credits> {
        self.blocks(extra)
            .checked_mul(self.block.millis().max(1))
            .map(Credits::from_millis)
    }

    /// Number of whole blocks extra usage starts.
    pub fn blocks(&self, extra: Credits) -> i64 {
        let e = extra.millis().max(0);
        let b = self.block.millis().max(1);
        e / b + i64::from(e % b != 0)
    }

    /// The money owed for extra usage. Panics only on overflow (see
    /// [`OveragePolicy::checked_charge`]).
    pub fn charge(&self, extra: Credits) -> Cents {
        // The documented panicking form of `checked_charge`, as `Credits`' operators are.
        #[allow(clippy::expect_used)]
        self.checked_charge(extra)
            .expect("overage charge overflows")
    }

    /// [`OveragePolicy::charge`], or `None` if it overflows.
    pub fn checked_charge(&self, extra: Credits) -> Option<Cents> {
        self.cents_per_block.checked_mul(self.blocks(extra))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OveragePolicy {
        // $0.004 a credit = 400 cents per 1,000.
        OveragePolicy::new(Cents::new(400))
    }

    #[test]
    fn the_seed_examples() {
        let p = policy();
        let plan = Credits::whole(10_000);
        let extra = p.extra(Credits::whole(12_000), plan);
        assert_eq!(p.billable(extra), Credits::whole(2_000));
        assert_eq!(p.charge(extra), Cents::new(800));
        assert_eq!(p.charge(extra).to_string(), "$8.00");
        let extra = p.extra(Credits::whole(12_500), plan);
        assert_eq!(p.billable(extra), Credits::whole(3_000));
        assert_eq!(p.charge(extra).to_string(), "$12.00");
        assert_eq!(p.billable(Credits::whole(1)), Credits::whole(1_000));
        assert_eq!(p.billable(Credits::whole(1_001)), Credits::whole(2_000));
        assert_eq!(p.billable(Credits::whole(999)), Credits::whole(1_000));
        assert_eq!(p.billable(Credits::whole(1_000)), Credits::whole(1_000));
        assert_eq!(p.billable(Credits::ZERO), Credits::ZERO);
        assert_eq!(p.billable(Credits::from_millis(1)), Credits::whole(1_000));
        assert_eq!(p.extra(Credits::whole(9_000), plan), Credits::ZERO);
    }

    #[test]
    fn never_wraps() {
        let p = OveragePolicy::new(Cents::new(i64::MAX / 2));
        let huge = Credits::from_millis(i64::MAX);
        assert_eq!(p.checked_billable(huge), None);
        assert_eq!(p.checked_charge(Credits::whole(3_000)), None);
        assert_eq!(p.extra(Credits::from_millis(i64::MIN), huge), Credits::ZERO);
        let max = Credits::MAX_BALANCE;
        assert_eq!(policy().checked_billable(max), Some(max));
        assert_eq!(
            policy().checked_charge(max),
            Some(Cents::new(400_000_000_000))
        );
    }
}
