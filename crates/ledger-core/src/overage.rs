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

    /// Usage beyond the plan limit (never negative).
    pub fn extra(&self, used: Credits, plan_limit: Credits) -> Credits {
        (used - plan_limit).max(Credits::ZERO)
    }

    /// Extra usage rounded up to the next whole block: 1 → 1,000; 1,001 → 2,000.
    pub fn billable(&self, extra: Credits) -> Credits {
        Credits::from_millis(self.blocks(extra) * self.block.millis())
    }

    /// Number of whole blocks extra usage starts.
    pub fn blocks(&self, extra: Credits) -> i64 {
        let e = extra.millis().max(0);
        let b = self.block.millis().max(1);
        e / b + i64::from(e % b != 0)
    }

    /// The money owed for extra usage.
    pub fn charge(&self, extra: Credits) -> Cents {
        Cents::new(self.blocks(extra) * self.cents_per_block.get())
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
}
