//! Plans through `Book::apply`: the allowance drawn first, extra up to the wall, blocks
//! billed as they are crossed, refunds of extra, and the period roll-over.

use ledger_core::plan::examples::basic;
use ledger_core::plan::{self, allowance, blocks_for, Period};
use ledger_core::*;
use proptest::prelude::*;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn at(secs: i64) -> Timestamp {
    Timestamp::from_millis(T0 + secs * 1000)
}

fn c(n: i64) -> Credits {
    Credits::whole(n)
}

/// A book on Basic with the given hard limit, its allowance for the first period granted.
struct Subscribed {
    book: Book,
    ids: SequentialIds,
    period: Period,
    wall: Credits,
    billed_blocks: i64,
}

impl Subscribed {
    fn new(hard_limit: Option<i64>) -> Subscribed {
        let terms = Terms {
            status: SubscriptionStatus::Active,
            hard_limit: hard_limit.map(c),
        };
        let mut s = Subscribed {
            book: Book::empty(AccountId::new("acct_1")),
            ids: SequentialIds::default(),
            period: Period::monthly(at(0), at(0)),
            wall: plan::wall(&basic(), &terms),
            billed_blocks: 0,
        };
        s.start_period(at(0));
        s
    }

    fn context(&self) -> Context {
        Context {
            overdraft_limit: self.wall,
            plan: Some(PlanContext {
                overage: basic().overage,
                wall: self.wall,
                billed_blocks: self.billed_blocks,
            }),
            ..Context::default()
        }
    }

    fn apply(&mut self, op: Operation, now: Timestamp) -> Applied {
        let applied = self.book.apply(op, &self.context(), now, &mut self.ids);
        for effect in &applied.effects {
            if let Effect::BillOverage {
                first_block,
                blocks,
            } = effect
            {
                if *blocks > 0 {
                    assert_eq!(*first_block, self.billed_blocks + 1);
                } else {
                    assert_eq!(*first_block, self.billed_blocks + blocks + 1);
                }
                self.billed_blocks += blocks;
            }
        }
        applied
    }

    fn start_period(&mut self, now: Timestamp) -> Applied {
        self.period = Period::monthly(at(0), now);
        self.billed_blocks = 0;
        let op = Operation::StartPeriod {
            allowance: allowance(&basic(), self.period),
            allowance_memo: Memo::new("Monthly allowance: Basic"),
            write_off_memo: Memo::new("Extra usage billed").source("Overage"),
        };
        let applied = self.apply(op, now);
        assert!(applied.result.is_ok(), "{:?}", applied.result);
        applied
    }

    fn use_credits(&mut self, n: i64, now: Timestamp) -> Result<Outcome, LedgerError> {
        let op = Operation::Debit {
            kind: EntryKind::Usage,
            amount: c(n),
            spend: Spend::WithinAccountLimit,
            memo: Memo::new("Screenshot captured"),
        };
        self.apply(op, now).result
    }

    fn buy(&mut self, n: i64, now: Timestamp) {
        let op = Operation::Credit {
            spec: GrantSpec::new(GrantSource::Purchase, c(n)),
            memo: Memo::new("Purchased"),
        };
        assert!(self.apply(op, now).result.is_ok());
    }

    fn extra(&self) -> Credits {
        self.book.overdraft()
    }
}

#[test]
fn the_first_seed_example_bills_two_blocks() {
    let mut s = Subscribed::new(Some(15_000));
    assert_eq!(s.book.available(at(1)), c(10_000));
    s.use_credits(12_000, at(1)).unwrap();
    assert_eq!(s.extra(), c(2_000));
    assert_eq!(s.billed_blocks, 2);
    let o = plan::overage(&basic().overage, s.extra());
    assert_eq!((o.billed, o.charge), (c(2_000), Cents::new(800)));
}

#[test]
fn blocks_are_billed_as_each_is_crossed() {
    let mut s = Subscribed::new(Some(15_000));
    s.use_credits(10_000, at(1)).unwrap();
    assert_eq!(s.billed_blocks, 0, "the allowance is not extra");
    for (used, blocks) in [(1, 1), (998, 1), (1, 1), (1, 2), (1_499, 3)] {
        s.use_credits(used, at(2)).unwrap();
        assert_eq!(s.billed_blocks, blocks, "after {used} more");
    }
    // 12,500 used: three blocks, $12.00.
    assert_eq!(s.extra(), c(2_500));
    assert_eq!(
        plan::overage(&basic().overage, s.extra()).charge,
        Cents::new(1_200)
    );
}

#[test]
fn the_wall_refuses_with_hard_limit_reached_and_changes_nothing() {
    let mut s = Subscribed::new(Some(15_000));
    s.use_credits(14_999, at(1)).unwrap();
    let before = s.book.state().clone();
    let err = s.use_credits(2, at(2)).unwrap_err();
    assert_eq!(
        err,
        LedgerError::HardLimitReached {
            required: c(2),
            available: c(-4_999)
        }
    );
    assert_eq!(s.book.state(), &before);
    s.use_credits(1, at(3)).unwrap();
    assert_eq!(s.extra(), c(5_000));
    assert_eq!(s.billed_blocks, 5);
    assert!(matches!(
        s.use_credits(1, at(4)),
        Err(LedgerError::HardLimitReached { .. })
    ));
}

#[test]
fn without_a_raised_hard_limit_spent_credits_are_a_plain_402() {
    let mut s = Subscribed::new(None);
    s.use_credits(10_000, at(1)).unwrap();
    assert!(matches!(
        s.use_credits(1, at(2)),
        Err(LedgerError::InsufficientCredits { .. })
    ));
    assert_eq!(s.billed_blocks, 0);
}

#[test]
fn extra_starts_only_after_purchased_credits_and_they_never_repay_it() {
    let mut s = Subscribed::new(Some(15_000));
    s.buy(500, at(1));
    s.use_credits(10_400, at(2)).unwrap();
    assert_eq!(
        s.extra(),
        Credits::ZERO,
        "the allowance, then purchased credits"
    );
    s.use_credits(200, at(3)).unwrap();
    assert_eq!(s.extra(), c(100));
    assert_eq!(s.billed_blocks, 1);
    // Credits bought now do not pay the billed extra a second time.
    s.buy(1_000, at(4));
    assert_eq!(s.extra(), c(100));
    assert_eq!(s.book.available(at(4)), c(900));
    // They are spent before any new extra.
    s.use_credits(1_000, at(5)).unwrap();
    assert_eq!(s.extra(), c(100));
    assert_eq!(s.billed_blocks, 1);
}

#[test]
fn a_refund_of_extra_usage_credits_a_block_back() {
    let mut s = Subscribed::new(Some(15_000));
    s.use_credits(10_000, at(1)).unwrap();
    let Outcome::Entry(e) = s.use_credits(1_001, at(2)).unwrap() else {
        panic!("a debit writes an entry")
    };
    assert_eq!(s.billed_blocks, 2);
    let refund = Operation::Refund {
        entry_id: e.id.clone(),
        amount: Some(c(2)),
        memo: Memo::new("failed"),
    };
    let ctx = Context {
        refund: Some(RefundOf {
            original: e,
            already_refunded: Credits::ZERO,
        }),
        ..s.context()
    };
    let applied = s.book.apply(refund, &ctx, at(3), &mut s.ids);
    assert!(applied.result.is_ok());
    assert_eq!(s.book.overdraft(), c(999));
    assert_eq!(
        applied.effects,
        vec![Effect::BillOverage {
            first_block: 2,
            blocks: -1
        }]
    );
}

#[test]
fn a_released_hold_bills_nothing_and_a_captured_one_bills_its_blocks() {
    let mut s = Subscribed::new(Some(15_000));
    s.use_credits(10_000, at(1)).unwrap();
    let reserve = |n| Operation::Reserve {
        amount: c(n),
        ttl_ms: 60_000,
        spend: Spend::WithinAccountLimit,
        memo: Memo::new("Screenshot"),
    };
    let Ok(Outcome::Hold(h)) = s.apply(reserve(10), at(2)).result else {
        panic!("reserved")
    };
    assert_eq!(s.billed_blocks, 0, "a hold is not yet usage");
    s.apply(Operation::Release { hold_id: h.id }, at(3));
    assert_eq!((s.extra(), s.billed_blocks), (Credits::ZERO, 0));
    let Ok(Outcome::Hold(h)) = s.apply(reserve(10), at(4)).result else {
        panic!("reserved")
    };
    let capture = Operation::Capture {
        hold_id: h.id,
        amount: Some(c(4)),
        memo: None,
    };
    assert!(s.apply(capture, at(5)).result.is_ok());
    assert_eq!((s.extra(), s.billed_blocks), (c(4), 1));
}

#[test]
fn a_new_period_expires_the_old_allowance_writes_off_extra_and_grants_once() {
    let mut s = Subscribed::new(Some(15_000));
    s.use_credits(9_000, at(1)).unwrap();
    s.buy(300, at(2));
    s.use_credits(1_500, at(3)).unwrap(); // 1,000 allowance + 300 bought + 200 extra
    assert_eq!(s.extra(), c(200));
    let next = s.period.end;
    let applied = s.start_period(next);
    assert_eq!(applied.available, c(10_000));
    assert_eq!(s.extra(), Credits::ZERO);
    let new: Vec<_> = s.book.take_changes().entries;
    let kinds: Vec<_> = new
        .iter()
        .rev()
        .take(2)
        .map(|e| (e.kind, e.amount))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (EntryKind::Allowance, c(10_000)),
            (EntryKind::Adjustment, c(200))
        ]
    );
    assert!(s.book.violations().is_empty(), "{:?}", s.book.violations());
}

#[test]
fn a_week_of_downtime_expires_the_old_allowance_and_grants_only_the_current_one() {
    let mut s = Subscribed::new(None);
    s.use_credits(100, at(1)).unwrap();
    let first = s.period;
    // The next touch comes a week into the third period.
    let late = Period::monthly(at(0), first.end.plus_secs(40 * 86_400));
    let applied = s.start_period(late.start.plus_secs(7 * 86_400));
    assert_eq!(s.period, late);
    assert_eq!(applied.available, c(10_000));
    let entries = s.book.take_changes().entries;
    let count = |k| entries.iter().filter(|e| e.kind == k).count();
    assert_eq!(
        count(EntryKind::Allowance),
        2,
        "the first period's and this one's"
    );
    assert_eq!(count(EntryKind::Expiry), 1);
}

fn op() -> impl Strategy<Value = (u8, i64)> {
    (0u8..5, 1i64..3_000)
}

proptest! {
    /// Whatever happens in a period, extra stays within the wall and the billed blocks
    /// always equal the extra rounded up to the next 1,000.
    #[test]
    fn billed_blocks_always_match_the_rounded_extra(ops in prop::collection::vec(op(), 1..60)) {
        let mut s = Subscribed::new(Some(14_500));
        let mut charged: Vec<Entry> = Vec::new();
        for (i, (kind, n)) in ops.into_iter().enumerate() {
            let now = at(i as i64 + 1);
            match kind {
                0 | 1 => {
                    if let Ok(Outcome::Entry(e)) = s.use_credits(n, now) {
                        charged.push(e);
                    }
                }
                2 => s.buy(n / 10 + 1, now),
                3 => {
                    if let Some(e) = charged.pop() {
                        let refund = Operation::Refund {
                            entry_id: e.id.clone(),
                            amount: None,
                            memo: Memo::new("failed"),
                        };
                        let ctx = Context {
                            refund: Some(RefundOf { original: e, already_refunded: Credits::ZERO }),
                            ..s.context()
                        };
                        let applied = s.book.apply(refund, &ctx, now, &mut s.ids);
                        for effect in &applied.effects {
                            if let Effect::BillOverage { blocks, .. } = effect {
                                s.billed_blocks += blocks;
                            }
                        }
                    }
                }
                _ => {
                    let _ = s.use_credits(n * 3, now);
                }
            }
            prop_assert!(s.extra() <= s.wall);
            prop_assert!(s.extra() >= Credits::ZERO);
            prop_assert_eq!(s.billed_blocks, blocks_for(&basic().overage, s.extra()));
            prop_assert!(s.book.violations().is_empty(), "{:?}", s.book.violations());
        }
    }
}
