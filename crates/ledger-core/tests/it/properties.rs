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
    /// Every grant and hold written, in its latest state (what `verify` loads).
    grants: Vec<Grant>,
    all_holds: Vec<Hold>,
}

/// Keeps the latest version of each lot.
fn upsert<T, K: PartialEq>(all: &mut Vec<T>, item: T, key: impl Fn(&T) -> &K) {
    match all.iter().position(|x| key(x) == key(&item)) {
        Some(i) => all[i] = item,
        None => all.push(item),
    }
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
        grants: Vec::new(),
        all_holds: Vec::new(),
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
        let changes = r.book.take_changes();
        r.entries.extend(changes.entries);
        for g in changes
            .grants_inserted
            .into_iter()
            .chain(changes.grants_updated)
        {
            upsert(&mut r.grants, g, |g| &g.id);
        }
        for h in changes
            .holds_inserted
            .into_iter()
            .chain(changes.holds_updated)
        {
            upsert(&mut r.all_holds, h, |h| &h.id);
        }
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
    // What `GET /admin/v1/verify` checks holds over every entry, grant and hold written.
    let totals = AccountTotals {
        balance: r.book.balance(),
        last_seq: r.book.state().last_seq,
        overdraft_limit: policy.overdraft_limit,
        ..AccountTotals::default()
    };
    let stored = Book::new(BookState {
        grants: r.grants.clone(),
        holds: r.all_holds.clone(),
        ..r.book.state().clone()
    });
    let v = audit::violations(&totals, &r.entries, &stored);
    assert!(v.is_empty(), "verify finds {v:?}");
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

// ---- amounts near the maximum ----

/// The largest balance (and single amount) in thousandths: one trillion credits.
const MAX: i64 = Credits::MAX_BALANCE.millis();

#[derive(Debug, Clone)]
enum BigOp {
    Credit { amount: i64 },
    Debit { amount: i64 },
    Reserve { amount: i64 },
    Capture { pick: usize },
    Refund { pick: usize },
    Wait,
}

/// Amounts that matter near the limit: the maximum itself and just around it, halves and
/// tenths of it, tiny ones, and anything in between.
fn big_amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        (0..3i64).prop_map(|d| MAX - d),
        (0..3i64).prop_map(|d| MAX / 2 + d - 1),
        (0..3i64).prop_map(|d| MAX / 10 + d - 1),
        1..1_000i64,
        1..=MAX,
    ]
}

fn big_op() -> impl Strategy<Value = BigOp> {
    prop_oneof![
        3 => big_amount().prop_map(|amount| BigOp::Credit { amount }),
        2 => big_amount().prop_map(|amount| BigOp::Debit { amount }),
        1 => big_amount().prop_map(|amount| BigOp::Reserve { amount }),
        1 => any::<usize>().prop_map(|pick| BigOp::Capture { pick }),
        1 => any::<usize>().prop_map(|pick| BigOp::Refund { pick }),
        1 => Just(BigOp::Wait),
    ]
}

/// Runs `ops` near the maximum: every operation either succeeds and keeps the balance
/// within the maximum, or is refused and changes nothing; a credit is refused exactly when
/// it would take the balance past the maximum, and then with `BalanceLimit`.
fn run_near_the_maximum(ops: &[BigOp], policy: SpendPolicy) {
    let max = Credits::MAX_BALANCE;
    assert_eq!(Credits::MAX_AMOUNT, max);
    let mut book = Book::empty(AccountId::new("acct_big"));
    let mut ids = SequentialIds::default();
    let mut now = Timestamp::from_millis(1_770_000_000_000);
    let mut entries: Vec<Entry> = Vec::new();
    let mut holds: Vec<HoldId> = Vec::new();
    let mut usage: Vec<Entry> = Vec::new();
    let mut refunded: HashMap<EntryId, Credits> = HashMap::new();
    for op in ops {
        let before = book.state().clone();
        let balance = book.balance().millis();
        let outcome: Result<(), LedgerError> = match op {
            BigOp::Credit { amount } => {
                let spec = GrantSpec::new(GrantSource::Adjustment, Credits::from_millis(*amount));
                let res = book.credit(spec, Memo::new("c"), now, &mut ids).map(|_| ());
                let fits = i128::from(balance) + i128::from(*amount) <= i128::from(MAX);
                match (&res, fits) {
                    (Ok(()), true) => {}
                    (Err(LedgerError::BalanceLimit { max: m }), false) => assert_eq!(*m, max),
                    other => panic!("credit {amount} on {balance}: {other:?}"),
                }
                res
            }
            BigOp::Debit { amount } => book
                .debit(
                    EntryKind::Usage,
                    Credits::from_millis(*amount),
                    policy,
                    Memo::new("d"),
                    now,
                    &mut ids,
                )
                .map(|e| usage.push(e.clone())),
            BigOp::Reserve { amount } => book
                .reserve(
                    Credits::from_millis(*amount),
                    now.plus_secs(60),
                    policy,
                    Memo::new("h"),
                    now,
                    &mut ids,
                )
                .map(|h| holds.push(h.id.clone())),
            BigOp::Capture { pick } if !holds.is_empty() => {
                let id = holds[pick % holds.len()].clone();
                book.capture(&id, None, None, now, &mut ids)
                    .map(|e| usage.push(e.clone()))
            }
            BigOp::Refund { pick } if !usage.is_empty() => {
                let original = usage[pick % usage.len()].clone();
                let done = refunded.get(&original.id).copied().unwrap_or_default();
                book.refund(&original, done, None, Memo::new("r"), now, &mut ids)
                    .map(|e| {
                        *refunded.entry(original.id.clone()).or_default() += e.amount;
                    })
            }
            BigOp::Wait => {
                now = now.plus_secs(61);
                book.sweep(now, &mut ids);
                Ok(())
            }
            _ => Ok(()),
        };
        if outcome.is_err() {
            assert_eq!(book.state(), &before, "a refused {op:?} changed the book");
        }
        let changes = book.take_changes();
        if outcome.is_err() {
            assert!(changes.is_empty(), "a refused {op:?} wrote {changes:?}");
        }
        entries.extend(changes.entries);
        let b = book.balance();
        assert!(
            -max <= b && b <= max,
            "after {op:?} the balance {b} is past the maximum"
        );
        let v = book.violations();
        assert!(v.is_empty(), "after {op:?}: {v:?}");
        assert!(book.available(now) >= -policy.overdraft_limit);
    }
    let sum = entries
        .iter()
        .fold(0i128, |acc, e| acc + i128::from(e.amount.millis()));
    assert_eq!(sum, i128::from(book.balance().millis()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn amounts_near_the_maximum_never_overflow(ops in prop::collection::vec(big_op(), 1..40)) {
        run_near_the_maximum(&ops, SpendPolicy::STRICT);
    }

    #[test]
    fn overdrafts_near_the_maximum_never_overflow(ops in prop::collection::vec(big_op(), 1..40)) {
        // An allowance as large as the maximum itself: the balance may reach -MAX, no further.
        run_near_the_maximum(&ops, SpendPolicy::with_overdraft(Credits::from_millis(MAX)));
    }
}

/// The attack of issue 8 on the book alone: 9,224 grants of the largest amount. Only the
/// first fits; every other is refused and changes nothing.
#[test]
fn repeated_largest_grants_stop_at_the_maximum() {
    let mut book = Book::empty(AccountId::new("acct_attack"));
    let mut ids = SequentialIds::default();
    let now = Timestamp::from_millis(1_770_000_000_000);
    let largest = Credits::from_millis(MAX);
    let mut accepted = 0;
    for _ in 0..9_224 {
        let spec = GrantSpec::new(GrantSource::Adjustment, largest);
        match book.credit(spec, Memo::new("x"), now, &mut ids) {
            Ok(_) => accepted += 1,
            Err(e) => assert_eq!(
                e,
                LedgerError::BalanceLimit {
                    max: Credits::from_millis(MAX)
                }
            ),
        }
    }
    assert_eq!(accepted, 1);
    assert_eq!(book.balance(), largest);
    assert!(book.violations().is_empty());
}
