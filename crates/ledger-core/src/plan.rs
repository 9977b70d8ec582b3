//! Plans: monthly allowances, billing periods, the hard limit and charging extra (seed 002).
//!
//! A plan grants its allowance at the start of every billing period and what is left of
//! it expires at the period's end. When the owner of a paying plan sets a hard limit above
//! the plan's limit, work continues once the allowance and the account's credits are spent:
//! that is the period's *extra*, kept in the book as its overdraft, never more than
//! `hard_limit - plan_limit` (the *wall*). Extra is billed in money, in whole blocks of
//! 1,000 rounded up, as usage crosses each block; so credits bought later never pay for it
//! a second time (they do not repay a plan's overdraft), and at the period's end what is
//! left of the overdraft is written off, having been billed.
//!
//! Every rule here is pure: the caller (the store) loads the subscription, asks these
//! functions what to do, and persists the answer.

use chrono::Months;

use crate::amount::{Cents, Credits};
use crate::entry::{GrantSource, GrantSpec};
use crate::overage::OveragePolicy;
use crate::subscription::SubscriptionStatus;
use crate::time::Timestamp;

/// The hard limit of a new customer's account, until an operator raises it.
pub const DEFAULT_MAX_HARD_LIMIT: Credits = Credits::whole(100_000);

/// What the core needs to know of a configured plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub id: String,
    pub name: String,
    /// The allowance granted each period, and the plan's limit.
    pub monthly_credits: Credits,
    pub price_cents: Cents,
    /// The price of extra usage, per started block of 1,000 credits.
    pub overage: OveragePolicy,
    /// Whether customers pay for it (only paying plans may charge extra).
    pub paying: bool,
}

impl Plan {
    /// A plan customers pay `price_cents` a period for, charging `overage_cents` per block
    /// of extra.
    pub fn paying(
        id: &str,
        name: &str,
        monthly_credits: Credits,
        price_cents: Cents,
        overage_cents: Cents,
    ) -> Plan {
        Plan {
            id: id.into(),
            name: name.into(),
            monthly_credits,
            price_cents,
            overage: OveragePolicy::new(overage_cents),
            paying: true,
        }
    }

    /// A plan that costs nothing and never charges extra.
    pub fn free(id: &str, name: &str, monthly_credits: Credits) -> Plan {
        Plan {
            id: id.into(),
            name: name.into(),
            monthly_credits,
            price_cents: Cents::ZERO,
            overage: OveragePolicy::new(Cents::ZERO),
            paying: false,
        }
    }

    /// The plan's limit: what the hard limit starts at and may not go below.
    pub fn limit(&self) -> Credits {
        self.monthly_credits
    }
}

/// The two plans `config/default.toml` ships, for tests and examples: one definition that
/// the core's, the store's and the servers' tests share.
pub mod examples {
    use super::*;

    /// Free: 100 credits a month, nothing to pay, no extra.
    pub fn free() -> Plan {
        Plan::free("free", "Free", Credits::whole(100))
    }

    /// Basic: 10,000 credits for 29.00 a month, 4.00 per 1,000 extra.
    pub fn basic() -> Plan {
        let (credits, price) = (Credits::whole(10_000), Cents::new(2_900));
        Plan::paying("basic", "Basic", credits, price, Cents::new(400))
    }
}

/// One billing period, the half-open range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Period {
    /// The monthly period that contains `now`, counting whole calendar months from
    /// `anchor` (the subscription's first period start). A day the month does not have
    /// is the month's last day (anchored on the 31st: the 30th of April). Each boundary
    /// is computed from the anchor, so short months never make the periods drift. Before
    /// the anchor, the first period.
    pub fn monthly(anchor: Timestamp, now: Timestamp) -> Period {
        let start_of = |n: u32| -> Timestamp {
            anchor
                .to_datetime()
                .checked_add_months(Months::new(n))
                .map_or(Timestamp::MAX, Timestamp::from_datetime)
        };
        if now <= anchor {
            return Period {
                start: anchor,
                end: start_of(1),
            };
        }
        // An estimate from the elapsed time (a month is at least 28 days), then exact steps.
        let days = (now.millis() - anchor.millis()) / 86_400_000;
        let mut n = u32::try_from(days / 31)
            .unwrap_or(u32::MAX)
            .saturating_sub(1);
        while start_of(n.saturating_add(1)) <= now && n < u32::MAX {
            n += 1;
        }
        while n > 0 && start_of(n) > now {
            n -= 1;
        }
        Period {
            start: start_of(n),
            end: start_of(n.saturating_add(1)),
        }
    }

    pub fn contains(&self, at: Timestamp) -> bool {
        self.start <= at && at < self.end
    }
}

/// The part of a subscription the rules read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    pub status: SubscriptionStatus,
    /// `None`: equal to the plan's limit (charging extra off).
    pub hard_limit: Option<Credits>,
}

/// The hard limit in force: the one set, or the plan's limit.
pub fn hard_limit(plan: &Plan, terms: &Terms) -> Credits {
    terms.hard_limit.unwrap_or(plan.limit()).max(plan.limit())
}

/// How much extra a period may use: `hard_limit - plan_limit` for a paying plan in force
/// whose owner raised the hard limit, otherwise nothing.
pub fn wall(plan: &Plan, terms: &Terms) -> Credits {
    if !plan.paying || !terms.status.stamps_plan() {
        return Credits::ZERO;
    }
    (hard_limit(plan, terms) - plan.limit()).max(Credits::ZERO)
}

/// Whether a plan in force grants its allowance (a cancelled or inactive one does not).
pub fn grants_allowance(terms: &Terms) -> bool {
    terms.status.stamps_plan()
}

/// The grant of a period's allowance: drawn first, expiring at the period's end.
pub fn allowance(plan: &Plan, period: Period) -> Option<GrantSpec> {
    if !plan.monthly_credits.is_positive() {
        return None;
    }
    let source = GrantSource::Allowance;
    Some(GrantSpec {
        source,
        amount: plan.monthly_credits,
        priority: source.default_priority(),
        effective_at: Some(period.start),
        expires_at: Some(period.end),
    })
}

/// Who is asking to change billing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Owner,
    Member,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Owner, Role::Member];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// Only owners purchase, change the plan, set the hard limit or auto top-up, and
    /// manage members.
    pub fn manages_billing(self) -> bool {
        self == Role::Owner
    }
}

/// Why a hard limit cannot be set. Nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HardLimitRefusal {
    #[error("only an owner of the account may set the hard limit")]
    OwnerOnly,
    #[error("the plan `{plan}` is free: only paying plans can charge extra, so its hard limit stays at the plan limit; change to a paying plan first")]
    FreePlan { plan: String },
    #[error("the account has no active subscription; subscribe to a paying plan first")]
    NotInForce,
    #[error("hardLimit must be at least the plan limit, {plan_limit}")]
    BelowPlanLimit { plan_limit: Credits },
    #[error("hardLimit must be at most the account's maximum hard limit, {max}; ask the operator to raise it")]
    AboveMaximum { max: Credits },
    #[error("hardLimit must be a whole number of credits")]
    NotWhole,
}

/// Checks a new hard limit (seed 002): owners of paying plans only, between the plan's
/// limit and the account's maximum.
pub fn check_hard_limit(
    plan: &Plan,
    terms: &Terms,
    role: Role,
    requested: Credits,
    max: Credits,
) -> Result<(), HardLimitRefusal> {
    if !role.manages_billing() {
        return Err(HardLimitRefusal::OwnerOnly);
    }
    if !plan.paying {
        return Err(HardLimitRefusal::FreePlan {
            plan: plan.id.clone(),
        });
    }
    if !terms.status.stamps_plan() {
        return Err(HardLimitRefusal::NotInForce);
    }
    if requested.millis() % Credits::whole(1).millis() != 0 {
        return Err(HardLimitRefusal::NotWhole);
    }
    if requested < plan.limit() {
        return Err(HardLimitRefusal::BelowPlanLimit {
            plan_limit: plan.limit(),
        });
    }
    if requested > max.max(plan.limit()) {
        return Err(HardLimitRefusal::AboveMaximum { max });
    }
    Ok(())
}

/// What a change of plan does (seed 002).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanChange {
    /// Upgrading: the hard limit goes back to the new plan's limit (charging extra off
    /// until set again).
    pub resets_hard_limit: bool,
    /// Unbilled extra is billed at once (downgrading to a free plan).
    pub bills_extra_now: bool,
    pub upgrade: bool,
}

/// An upgrade is a plan that costs more, or as much with a larger allowance.
pub fn plan_change(from: &Plan, to: &Plan) -> PlanChange {
    let upgrade =
        (to.price_cents.get(), to.monthly_credits) > (from.price_cents.get(), from.monthly_credits);
    PlanChange {
        resets_hard_limit: upgrade,
        bills_extra_now: !to.paying,
        upgrade,
    }
}

/// The billed blocks a period's extra calls for: one per started 1,000.
pub fn blocks_for(policy: &OveragePolicy, extra: Credits) -> i64 {
    policy.blocks(extra)
}

/// What must be billed (positive) or credited back (negative, after a refund of usage
/// that was extra) so the period's billed blocks match its extra.
pub fn blocks_due(policy: &OveragePolicy, extra: Credits, billed_blocks: i64) -> i64 {
    blocks_for(policy, extra) - billed_blocks
}

/// The period's overage as the subscription view shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overage {
    pub extra: Credits,
    /// `extra` rounded up to the next whole block.
    pub billed: Credits,
    pub charge: Cents,
}

pub fn overage(policy: &OveragePolicy, extra: Credits) -> Overage {
    Overage {
        extra,
        billed: policy
            .checked_billable(extra)
            .unwrap_or(Credits::MAX_BALANCE),
        charge: policy.checked_charge(extra).unwrap_or(Cents::new(i64::MAX)),
    }
}

/// The stable id of one billed block, also the idempotency key of its report to the
/// payment provider: the same account, period and block always give the same id.
pub fn overage_item_id(account: &str, period: Period, block: i64) -> String {
    use std::fmt::Write;
    let mut id = String::from("ovg_");
    for byte in account.bytes() {
        if byte.is_ascii_alphanumeric() {
            id.push(byte as char);
        } else {
            let _ = write!(id, "-{byte:02x}");
        }
    }
    let _ = write!(id, "_{}_{}", period.start.millis(), block);
    id
}

/// What `verify` knows of one billing period of one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodAudit {
    pub period: Period,
    /// `allowance` entries made for this period.
    pub allowances: usize,
    /// The period's extra: the overdraft now for the open period, what was written off
    /// for a closed one.
    pub extra: Credits,
    /// The most extra the period allowed.
    pub wall: Credits,
    /// Billed blocks, net of blocks credited back.
    pub billed_blocks: i64,
}

/// The invariants of plans: one allowance per account and period, extra within the wall,
/// and billed blocks equal to the extra rounded up to the next 1,000.
pub fn period_violations(
    account: &str,
    policy: &OveragePolicy,
    audit: &PeriodAudit,
) -> Vec<String> {
    let mut out = Vec::new();
    let at = audit.period.start.rfc3339();
    if audit.allowances > 1 {
        out.push(format!(
            "account {account}: {} allowances granted for the period starting {at}",
            audit.allowances
        ));
    }
    if audit.extra > audit.wall {
        out.push(format!(
            "account {account}: extra {} in the period starting {at} is past its wall {}",
            audit.extra, audit.wall
        ));
    }
    let due = blocks_for(policy, audit.extra);
    if audit.billed_blocks != due {
        out.push(format!(
            "account {account}: {} overage blocks billed in the period starting {at}, but its extra {} calls for {due}",
            audit.billed_blocks, audit.extra
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap_or(Timestamp::MAX)
    }

    use examples::{basic, free};

    fn terms(hard: Option<i64>) -> Terms {
        Terms {
            status: SubscriptionStatus::Active,
            hard_limit: hard.map(Credits::whole),
        }
    }

    #[test]
    fn periods_count_months_from_the_anchor() {
        let anchor = ts("2026-01-31T10:00:00.000Z");
        let p = Period::monthly(anchor, ts("2026-02-15T00:00:00.000Z"));
        assert_eq!(p.start, anchor);
        assert_eq!(p.end, ts("2026-02-28T10:00:00.000Z"));
        let p = Period::monthly(anchor, ts("2026-03-30T00:00:00.000Z"));
        assert_eq!(p.start, ts("2026-02-28T10:00:00.000Z"));
        assert_eq!(p.end, ts("2026-03-31T10:00:00.000Z"));
        // No drift: April's period starts on the 31st's clamp, not on the 28th.
        let p = Period::monthly(anchor, ts("2026-05-01T00:00:00.000Z"));
        assert_eq!(p.start, ts("2026-04-30T10:00:00.000Z"));
        assert_eq!(p.end, ts("2026-05-31T10:00:00.000Z"));
        // Boundaries belong to the period they start.
        let p = Period::monthly(anchor, ts("2026-05-31T10:00:00.000Z"));
        assert_eq!(p.start, ts("2026-05-31T10:00:00.000Z"));
        // Years later, and before the anchor.
        let p = Period::monthly(anchor, ts("2029-12-31T09:59:59.999Z"));
        assert_eq!(p.start, ts("2029-11-30T10:00:00.000Z"));
        assert!(p.contains(ts("2029-12-31T09:59:59.999Z")));
        assert_eq!(
            Period::monthly(anchor, ts("2025-01-01T00:00:00.000Z")).start,
            anchor
        );
    }

    #[test]
    fn every_instant_is_in_exactly_the_period_monthly_returns() {
        let anchor = ts("2026-01-29T23:59:59.999Z");
        let mut at = anchor;
        let mut last = Period::monthly(anchor, at);
        for _ in 0..2_000 {
            at = at.plus_millis(7 * 3_600_000 + 1);
            let p = Period::monthly(anchor, at);
            assert!(p.contains(at), "{p:?} does not contain {at:?}");
            assert!(p.start >= last.start);
            if p != last {
                assert_eq!(p.start, last.end, "periods tile time");
            }
            last = p;
        }
    }

    #[test]
    fn the_wall_is_the_hard_limit_above_the_plan_for_paying_plans_in_force() {
        assert_eq!(wall(&basic(), &terms(None)), Credits::ZERO);
        assert_eq!(wall(&basic(), &terms(Some(15_000))), Credits::whole(5_000));
        assert_eq!(wall(&free(), &terms(Some(15_000))), Credits::ZERO);
        let cancelled = Terms {
            status: SubscriptionStatus::Cancelled,
            hard_limit: Some(Credits::whole(15_000)),
        };
        assert_eq!(wall(&basic(), &cancelled), Credits::ZERO);
        assert!(!grants_allowance(&cancelled));
        assert_eq!(hard_limit(&basic(), &terms(None)), Credits::whole(10_000));
    }

    #[test]
    fn hard_limit_rules() {
        let max = DEFAULT_MAX_HARD_LIMIT;
        let ok = |p: &Plan, role, n: i64| {
            check_hard_limit(p, &terms(None), role, Credits::whole(n), max)
        };
        assert_eq!(ok(&basic(), Role::Owner, 15_000), Ok(()));
        assert_eq!(ok(&basic(), Role::Owner, 10_000), Ok(()));
        assert_eq!(ok(&basic(), Role::Owner, 100_000), Ok(()));
        assert_eq!(
            ok(&basic(), Role::Member, 15_000),
            Err(HardLimitRefusal::OwnerOnly)
        );
        assert!(matches!(
            ok(&free(), Role::Owner, 15_000),
            Err(HardLimitRefusal::FreePlan { .. })
        ));
        assert_eq!(
            ok(&basic(), Role::Owner, 9_999),
            Err(HardLimitRefusal::BelowPlanLimit {
                plan_limit: Credits::whole(10_000)
            })
        );
        assert_eq!(
            ok(&basic(), Role::Owner, 100_001),
            Err(HardLimitRefusal::AboveMaximum { max })
        );
        assert_eq!(
            check_hard_limit(
                &basic(),
                &terms(None),
                Role::Owner,
                Credits::from_millis(10_000_500),
                max
            ),
            Err(HardLimitRefusal::NotWhole)
        );
    }

    #[test]
    fn plan_changes() {
        let pro = Plan {
            id: "pro".into(),
            name: "Pro".into(),
            monthly_credits: Credits::whole(50_000),
            price_cents: Cents::new(9_900),
            ..basic()
        };
        let up = plan_change(&basic(), &pro);
        assert!(up.upgrade && up.resets_hard_limit && !up.bills_extra_now);
        let down = plan_change(&pro, &basic());
        assert!(!down.upgrade && !down.resets_hard_limit && !down.bills_extra_now);
        let to_free = plan_change(&basic(), &free());
        assert!(!to_free.upgrade && to_free.bills_extra_now);
    }

    #[test]
    fn the_seed_002_examples_as_blocks() {
        let p = basic().overage;
        let plan = basic().limit();
        let bill = |used: i64| overage(&p, p.extra(Credits::whole(used), plan));
        assert_eq!(bill(12_000).billed, Credits::whole(2_000));
        assert_eq!(bill(12_000).charge, Cents::new(800));
        assert_eq!(bill(12_500).billed, Credits::whole(3_000));
        assert_eq!(bill(12_500).charge, Cents::new(1_200));
        for (extra, blocks) in [(0, 0), (1, 1), (999, 1), (1_000, 1), (1_001, 2)] {
            assert_eq!(blocks_for(&p, Credits::whole(extra)), blocks, "{extra}");
        }
        assert_eq!(blocks_due(&p, Credits::whole(1_001), 1), 1);
        assert_eq!(blocks_due(&p, Credits::whole(999), 2), -1);
    }

    #[test]
    fn overage_item_ids_are_stable_and_distinct() {
        let period = Period::monthly(
            ts("2026-01-01T00:00:00.000Z"),
            ts("2026-01-02T00:00:00.000Z"),
        );
        let a = overage_item_id("acc_1", period, 1);
        assert_eq!(a, overage_item_id("acc_1", period, 1));
        assert_ne!(a, overage_item_id("acc_1", period, 2));
        assert_ne!(a, overage_item_id("acc-1", period, 1));
        assert!(a.starts_with("ovg_acc-5f1_"));
    }

    #[test]
    fn allowance_grants_are_drawn_first_and_expire_at_the_period_end() {
        let period = Period::monthly(
            ts("2026-01-01T00:00:00.000Z"),
            ts("2026-01-02T00:00:00.000Z"),
        );
        let spec = allowance(&basic(), period)
            .unwrap_or_else(|| GrantSpec::new(GrantSource::Purchase, Credits::ZERO));
        assert_eq!(spec.source, GrantSource::Allowance);
        assert_eq!(spec.amount, Credits::whole(10_000));
        assert_eq!(spec.expires_at, Some(period.end));
        assert!(spec.priority < GrantSource::Purchase.default_priority());
        let none = Plan {
            monthly_credits: Credits::ZERO,
            ..free()
        };
        assert_eq!(allowance(&none, period), None);
    }

    #[test]
    fn period_audits() {
        let period = Period::monthly(
            ts("2026-01-01T00:00:00.000Z"),
            ts("2026-01-02T00:00:00.000Z"),
        );
        let ok = PeriodAudit {
            period,
            allowances: 1,
            extra: Credits::whole(1_001),
            wall: Credits::whole(5_000),
            billed_blocks: 2,
        };
        let p = basic().overage;
        assert!(period_violations("a", &p, &ok).is_empty());
        let twice = PeriodAudit {
            allowances: 2,
            ..ok.clone()
        };
        assert_eq!(period_violations("a", &p, &twice).len(), 1);
        let past = PeriodAudit {
            extra: Credits::whole(5_001),
            billed_blocks: 6,
            ..ok.clone()
        };
        assert_eq!(period_violations("a", &p, &past).len(), 1);
        let unbilled = PeriodAudit {
            billed_blocks: 1,
            ..ok
        };
        assert!(period_violations("a", &p, &unbilled)[0].contains("calls for 2"));
    }
}
