//! Property tests: random sequences of operations never break the ledger's invariants.

use std::collections::HashMap;

use ledger_core::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Credit {
        amount: i64,
        expires_in: Option<i64>,
        allowance: bool,
    },
    Debit {
        amount: i64,
    },
    Reserve {
        amount: i64,
        ttl: i64,
    },
    Capture {
        pick: usize,
        part: Option<i64>,
    },
    Release {
        pick: usize,
    },
    Refund {
        pick: usize,
        part: Option<i64>,
    },
    Wait {
        secs: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1..5_000i64, prop::option::of(1..300i64), any::<bool>()).prop_map(
            |(amount, expires_in, allowance)| Op::Credit {
                amount,
                expires_in,
                allowance
            }
        ),
        (1..3_000i64).prop_map(|amount| Op::Debit { amount }),
        (1..3_000i64, 1..200i64).prop_map(|(amount, ttl)| Op::Reserve { amount, ttl }),
        (any::<usize>(), prop::option::of(1..3_000i64))
            .prop_map(|(pick, part)| Op::Capture { pick, part }),
        any::<usize>().prop_map(|pick| Op::Release { pick }),
        (any::<usize>(), prop::option::of(1..3_000i64))
            .prop_map(|(pick, part)| Op::Refund { pick, part }),
        (1..120i64).prop_map(|secs| Op::Wait { secs }),
    ]
}

struct Run {
    book: Book,
    ids: SequentialIds,
    now: Timestamp,
    entries: Vec<Entry>,
    holds: Vec<HoldId>,
    usage: Vec<Entry>,
    refunded: HashMap<EntryId, Credits>,
    settle_attempts: HashMap<HoldId, usize>,
}

fn run(ops: &[Op], policy: SpendPolicy) -> Run {
    let mut r = Run {
        book: Book::empty(AccountId::new("acct_p")),
        ids: SequentialIds::default(),
        now: Timestamp::from_millis(1_770_000_000_000),
        entries: Vec::new(),
        holds: Vec::new(),
        usage: Vec::new(),
        refunded: HashMap::new(),
        settle_attempts: HashMap::new(),
    };
    for op in ops {
        let now = r.now;
        match op {
            Op::Credit {
                amount,
                expires_in,
                allowance,
            } => {
                let source = if *allowance {
                    GrantSource::Allowance
                } else {
                    GrantSource::Purchase
                };
                let mut spec = GrantSpec::new(source, Credits::from_millis(*amount));
                if let Some(s) = expires_in {
                    spec = spec.expiring(now.plus_secs(*s));
                }
                r.book
                    .credit(spec, Memo::new("c"), now, &mut r.ids)
                    .unwrap();
            }
            Op::Debit { amount } => {
                let before = r.book.available(now);
                let res = r.book.debit(
                    EntryKind::Usage,
                    Credits::from_millis(*amount),
                    policy,
                    Memo::new("d"),
                    now,
                    &mut r.ids,
                );
                match res {
                    Ok(e) => r.usage.push(e.clone()),
                    Err(LedgerError::InsufficientCredits { available, .. }) => {
                        assert_eq!(available, before);
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            Op::Reserve { amount, ttl } => {
                if let Ok(h) = r.book.reserve(
                    Credits::from_millis(*amount),
                    now.plus_secs(*ttl),
                    policy,
                    Memo::new("h"),
                    now,
                    &mut r.ids,
                ) {
                    r.holds.push(h.id.clone());
                }
            }
            Op::Capture { pick, part } if !r.holds.is_empty() => {
                let id = r.holds[pick % r.holds.len()].clone();
                if let Ok(e) =
                    r.book
                        .capture(&id, part.map(Credits::from_millis), None, now, &mut r.ids)
                {
                    r.usage.push(e.clone());
                    *r.settle_attempts.entry(id).or_default() += 1;
                }
            }
            Op::Release { pick } if !r.holds.is_empty() => {
                let id = r.holds[pick % r.holds.len()].clone();
                if r.book.release(&id, now).is_ok() {
                    *r.settle_attempts.entry(id).or_default() += 1;
                }
            }
            Op::Refund { pick, part } if !r.usage.is_empty() => {
                let original = r.usage[pick % r.usage.len()].clone();
                let done = r.refunded.get(&original.id).copied().unwrap_or_default();
                if let Ok(e) = r.book.refund(
                    &original,
                    done,
                    part.map(Credits::from_millis),
                    Memo::new("r"),
                    now,
                    &mut r.ids,
                ) {
                    let amount = e.amount;
                    *r.refunded.entry(original.id.clone()).or_default() += amount;
                }
            }
            Op::Wait { secs } => {
                r.now = now.plus_secs(*secs);
                r.book.sweep(r.now, &mut r.ids);
            }
            _ => {}
        }
        r.entries.extend(r.book.take_changes().entries);
        let v = r.book.violations();
        assert!(v.is_empty(), "after {op:?}: {v:?}");
    }
    r
}

fn check(r: &Run, policy: SpendPolicy) {
    // The balance equals the sum of entries, and each entry carries the running balance.
    let mut running = Credits::ZERO;
    for (i, e) in r.entries.iter().enumerate() {
        running += e.amount;
        assert_eq!(e.balance_after, running);
        assert_eq!(e.seq, i as i64 + 1);
        let moved: Credits = e.allocations.iter().map(|a| a.amount).sum();
        assert_eq!(moved, e.amount.abs(), "allocations of {e:?}");
    }
    assert_eq!(running, r.book.balance());
    // Never below zero unless an overdraft is allowed, and never past it.
    assert!(r.book.available(r.now) >= -policy.overdraft_limit);
    assert!(r.book.overdraft() <= policy.overdraft_limit);
    if policy.overdraft_limit.is_zero() {
        assert!(r.book.balance() >= Credits::ZERO);
        assert!(r.book.available(r.now) >= Credits::ZERO);
    }
    // Refunds never exceed charges.
    for u in &r.usage {
        let refunded = r.refunded.get(&u.id).copied().unwrap_or_default();
        assert!(refunded <= -u.amount);
    }
    // A hold settles once.
    assert!(r.settle_attempts.values().all(|n| *n == 1));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn strict_ledgers_keep_every_invariant(ops in prop::collection::vec(op(), 1..60)) {
        let r = run(&ops, SpendPolicy::STRICT);
        check(&r, SpendPolicy::STRICT);
    }

    #[test]
    fn overdraft_ledgers_stay_within_their_limit(ops in prop::collection::vec(op(), 1..60)) {
        let policy = SpendPolicy::with_overdraft(Credits::whole(2));
        let r = run(&ops, policy);
        check(&r, policy);
    }
}
