//! The ledger's rules, one by one, on an in-memory book.

use ledger_core::*;

/// Asserts that an operation was refused with the named `LedgerError` variant.
macro_rules! assert_refused {
    ($op:expr, $variant:ident) => {
        match $op {
            Err(LedgerError::$variant { .. }) => {}
            other => panic!("expected {}, got {other:?}", stringify!($variant)),
        }
    };
}

const T0: i64 = 1_770_000_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_millis(T0 + secs * 1000)
}

fn c(n: i64) -> Credits {
    Credits::whole(n)
}

fn book() -> (Book, SequentialIds) {
    (
        Book::empty(AccountId::new("acct_1")),
        SequentialIds::default(),
    )
}

/// A book with one grant of `spec`, made at 0.
fn book_with(spec: GrantSpec) -> (Book, SequentialIds) {
    let (mut b, mut ids) = book();
    grant(&mut b, &mut ids, spec, at(0));
    (b, ids)
}

/// The entry of a credit of `spec`.
fn credit(
    b: &mut Book,
    ids: &mut SequentialIds,
    spec: GrantSpec,
    memo: &str,
    now: Timestamp,
) -> Entry {
    b.credit(spec, Memo::new(memo), now, ids).unwrap().clone()
}

fn grant(b: &mut Book, ids: &mut SequentialIds, spec: GrantSpec, now: Timestamp) -> GrantId {
    let e = credit(b, ids, spec, "grant", now);
    match &e.allocations.last().unwrap().lot {
        Lot::Grant(id) => id.clone(),
        Lot::Overdraft => panic!("no grant"),
    }
}

fn purchase(n: i64) -> GrantSpec {
    GrantSpec::new(GrantSource::Purchase, c(n))
}

fn allowance_until(n: i64, expires: i64) -> GrantSpec {
    GrantSpec::new(GrantSource::Allowance, c(n)).expiring(at(expires))
}

/// A usage debit under the strict policy.
fn spend<'b>(
    b: &'b mut Book,
    ids: &mut SequentialIds,
    amount: Credits,
    memo: &str,
    now: Timestamp,
) -> Result<&'b Entry, LedgerError> {
    b.debit(
        EntryKind::Usage,
        amount,
        SpendPolicy::STRICT,
        Memo::new(memo),
        now,
        ids,
    )
}

/// A hold under the strict policy: its id.
fn reserve(
    b: &mut Book,
    ids: &mut SequentialIds,
    amount: Credits,
    expires_at: Timestamp,
    memo: &str,
    now: Timestamp,
) -> Result<HoldId, LedgerError> {
    let hold = b.reserve(
        amount,
        expires_at,
        SpendPolicy::STRICT,
        Memo::new(memo),
        now,
        ids,
    )?;
    Ok(hold.id.clone())
}

/// A refund of `amount` (all that is left when `None`) of `usage`, of which `refunded`
/// was refunded before.
fn refund<'b>(
    b: &'b mut Book,
    ids: &mut SequentialIds,
    usage: &Entry,
    refunded: Credits,
    amount: Option<Credits>,
    memo: &str,
    now: Timestamp,
) -> Result<&'b Entry, LedgerError> {
    b.refund(usage, refunded, amount, Memo::new(memo), now, ids)
}

fn remaining(b: &Book, id: &GrantId) -> Credits {
    b.grant(id).unwrap().remaining
}

#[test]
fn burn_down_order_is_priority_then_expiry_then_age_then_id() {
    let (mut b, mut ids) = book();
    let now = at(0);
    let bonus = grant(
        &mut b,
        &mut ids,
        GrantSpec::new(GrantSource::SignupBonus, c(5)),
        now,
    );
    let late = grant(&mut b, &mut ids, purchase(10).expiring(at(900)), at(1));
    let soon = grant(&mut b, &mut ids, purchase(10).expiring(at(500)), at(2));
    let allowance = grant(&mut b, &mut ids, allowance_until(3, 1000), at(3));
    // Allowance first (priority 0), then the sooner expiry, then the later, then the
    // non-expiring bonus.
    spend(&mut b, &mut ids, c(15), "work", at(10)).unwrap();
    assert_eq!(remaining(&b, &allowance), c(0));
    assert_eq!(remaining(&b, &soon), c(0));
    assert_eq!(remaining(&b, &late), c(8));
    assert_eq!(remaining(&b, &bonus), c(5));
    assert!(b.violations().is_empty(), "{:?}", b.violations());
}

#[test]
fn equal_priority_and_expiry_draws_oldest_then_id() {
    let (mut b, mut ids) = book();
    let old = grant(&mut b, &mut ids, purchase(2), at(0));
    let new = grant(&mut b, &mut ids, purchase(2), at(5));
    spend(&mut b, &mut ids, c(1), "w", at(6)).unwrap();
    assert_eq!((remaining(&b, &old), remaining(&b, &new)), (c(1), c(2)));
    let (mut b, mut ids) = book();
    let first = grant(&mut b, &mut ids, purchase(2), at(0));
    let second = grant(&mut b, &mut ids, purchase(2), at(0));
    assert!(first < second);
    spend(&mut b, &mut ids, c(1), "w", at(0)).unwrap();
    assert_eq!(
        (remaining(&b, &first), remaining(&b, &second)),
        (c(1), c(2))
    );
}

#[test]
fn expired_and_future_grants_are_never_drawn() {
    let (mut b, mut ids) = book_with(allowance_until(10, 100));
    grant(&mut b, &mut ids, purchase(7).effective(at(500)), at(0));
    assert_eq!(b.available(at(50)), c(10));
    assert_eq!(b.available(at(100)), c(0));
    let err = spend(&mut b, &mut ids, c(1), "w", at(100)).unwrap_err();
    assert_eq!(
        err,
        LedgerError::InsufficientCredits {
            required: c(1),
            available: c(0)
        }
    );
    assert_eq!(b.available(at(500)), c(7));
}

#[test]
fn sweep_writes_one_expiry_entry_per_expired_grant() {
    let (mut b, mut ids) = book_with(allowance_until(10, 100));
    grant(&mut b, &mut ids, purchase(4), at(0));
    spend(&mut b, &mut ids, c(3), "w", at(10)).unwrap();
    b.take_changes();
    assert!(b.sweep(at(99), &mut ids).is_empty());
    let swept = b.sweep(at(100), &mut ids);
    assert_eq!(swept.len(), 1);
    let changes = b.take_changes();
    let expiry = &changes.entries[0];
    assert_eq!(
        (expiry.kind, expiry.amount, expiry.balance_after),
        (EntryKind::Expiry, c(-7), c(4))
    );
    assert!(
        b.sweep(at(200), &mut ids).is_empty(),
        "a second sweep changes nothing"
    );
    assert_eq!(b.balance(), c(4));
}

#[test]
fn hold_capture_part_returns_the_rest() {
    let (mut b, mut ids) = book_with(purchase(10));
    let hold = reserve(&mut b, &mut ids, c(4), at(600), "job", at(0)).unwrap();
    assert_eq!(b.available(at(1)), c(6));
    assert_eq!(b.balance(), c(10), "a hold writes no entry");
    let entry = b.capture(&hold, Some(c(1)), None, at(2), &mut ids).unwrap();
    assert_eq!(
        (entry.kind, entry.amount, entry.hold_id.clone()),
        (EntryKind::Usage, c(-1), Some(hold.clone()))
    );
    assert_eq!(b.available(at(3)), c(9));
    assert_eq!(b.hold(&hold).unwrap().status, HoldStatus::Captured);
    // Exactly one terminal state.
    assert_refused!(b.release(&hold, at(4)), HoldSettled);
    assert_refused!(b.capture(&hold, None, None, at(4), &mut ids), HoldSettled);
    assert!(b.violations().is_empty());
}

#[test]
fn capture_never_exceeds_its_hold() {
    let (mut b, mut ids) = book_with(purchase(10));
    let hold = reserve(&mut b, &mut ids, c(2), at(600), "job", at(0)).unwrap();
    assert_refused!(
        b.capture(&hold, Some(c(3)), None, at(1), &mut ids),
        CaptureExceedsHold
    );
    assert_refused!(
        b.capture(&hold, Some(c(0)), None, at(1), &mut ids),
        InvalidAmount
    );
    assert_eq!(b.hold(&hold).unwrap().status, HoldStatus::Active);
}

#[test]
fn released_and_expired_holds_return_everything() {
    let (mut b, mut ids) = book_with(purchase(5));
    let h1 = reserve(&mut b, &mut ids, c(5), at(60), "a", at(0)).unwrap();
    assert_refused!(
        reserve(&mut b, &mut ids, c(1), at(60), "b", at(0)),
        InsufficientCredits
    );
    b.release(&h1, at(1)).unwrap();
    assert_eq!(b.available(at(1)), c(5));
    let h2 = reserve(&mut b, &mut ids, c(5), at(60), "c", at(1)).unwrap();
    // Past expiry the credits already count as back, before any sweep.
    assert_eq!(b.available(at(60)), c(5));
    assert_refused!(b.capture(&h2, None, None, at(60), &mut ids), HoldSettled);
    b.sweep(at(60), &mut ids);
    assert_eq!(b.hold(&h2).unwrap().status, HoldStatus::Expired);
    assert_eq!(b.available(at(61)), c(5));
    assert_eq!(b.balance(), c(5));
}

#[test]
fn a_hold_keeps_credits_of_a_grant_that_expires_meanwhile() {
    let (mut b, mut ids) = book_with(allowance_until(3, 10));
    let h = reserve(&mut b, &mut ids, c(3), at(600), "a", at(0)).unwrap();
    b.sweep(at(20), &mut ids);
    let e = b.capture(&h, Some(c(2)), None, at(20), &mut ids).unwrap();
    assert_eq!(e.amount, c(-2));
    // The returned credit lands in an expired grant and expires on the next sweep.
    b.sweep(at(21), &mut ids);
    assert_eq!(b.balance(), c(0));
    assert!(b.violations().is_empty());
}

#[test]
fn refunds_go_back_to_their_lots_and_never_exceed_the_charge() {
    let (mut b, mut ids) = book();
    let allowance = grant(&mut b, &mut ids, allowance_until(2, 100), at(0));
    let bought = grant(&mut b, &mut ids, purchase(10), at(0));
    let usage = spend(&mut b, &mut ids, c(5), "w", at(1)).unwrap().clone();
    // What is left in the allowance and in the purchase.
    let left = |b: &Book| (remaining(b, &allowance), remaining(b, &bought));
    assert_eq!(left(&b), (c(0), c(7)));
    // Partial refund: last drawn (the purchase) first.
    let r1 = refund(&mut b, &mut ids, &usage, c(0), Some(c(2)), "partial", at(2));
    let r1 = r1.unwrap().clone();
    assert_eq!(
        (r1.kind, r1.amount, r1.refund_of.clone()),
        (EntryKind::Refund, c(2), Some(usage.id.clone()))
    );
    assert_eq!(left(&b), (c(0), c(9)));
    let err = refund(
        &mut b,
        &mut ids,
        &usage,
        c(2),
        Some(c(4)),
        "too much",
        at(3),
    );
    let err = err.unwrap_err();
    assert_eq!(
        err,
        LedgerError::RefundExceedsCharge {
            entry_id: usage.id.clone(),
            requested: c(4),
            refundable: c(3)
        }
    );
    // The rest: one more purchased credit, then the allowance's two.
    b.refund(&usage, c(2), None, Memo::new("rest"), at(3), &mut ids)
        .unwrap();
    assert_eq!(left(&b), (c(2), c(10)));
    assert_refused!(
        b.refund(&usage, c(5), None, Memo::new("again"), at(4), &mut ids),
        RefundExceedsCharge
    );
    assert!(b.violations().is_empty());
}

#[test]
fn refund_of_an_expired_lot_becomes_a_non_expiring_refund_grant() {
    let (mut b, mut ids) = book_with(allowance_until(2, 100));
    let usage = spend(&mut b, &mut ids, c(2), "w", at(1)).unwrap().clone();
    b.sweep(at(200), &mut ids);
    let r = b
        .refund(&usage, c(0), None, Memo::new("failed"), at(200), &mut ids)
        .unwrap()
        .clone();
    let Lot::Grant(id) = &r.allocations[0].lot else {
        panic!()
    };
    let g = b.grant(id).unwrap();
    assert_eq!(
        (g.source, g.expires_at, g.remaining),
        (GrantSource::Refund, None, c(2))
    );
    assert_eq!(b.available(at(10_000)), c(2));
}

#[test]
fn only_usage_can_be_refunded() {
    let (mut b, mut ids) = book();
    let e = credit(&mut b, &mut ids, purchase(3), "p", at(0));
    assert_refused!(
        b.refund(&e, c(0), None, Memo::new("r"), at(1), &mut ids),
        NotRefundable
    );
}

#[test]
fn overdraft_only_within_the_policy_and_repaid_by_new_credits() {
    let (mut b, mut ids) = book_with(purchase(2));
    let policy = SpendPolicy::with_overdraft(c(5));
    b.debit(
        EntryKind::Usage,
        c(6),
        policy,
        Memo::new("w"),
        at(1),
        &mut ids,
    )
    .unwrap();
    assert_eq!(
        (b.balance(), b.overdraft(), b.available(at(1))),
        (c(-4), c(4), c(-4))
    );
    assert_refused!(
        b.debit(
            EntryKind::Usage,
            c(2),
            policy,
            Memo::new("w"),
            at(2),
            &mut ids
        ),
        InsufficientCredits
    );
    let h = b
        .reserve(c(1), at(60), policy, Memo::new("h"), at(2), &mut ids)
        .unwrap()
        .id
        .clone();
    assert!(
        b.reserve(c(1), at(60), policy, Memo::new("h2"), at(2), &mut ids)
            .is_err(),
        "reserved overdraft counts against the limit"
    );
    b.capture(&h, None, None, at(3), &mut ids).unwrap();
    assert_eq!(b.overdraft(), c(5));
    credit(&mut b, &mut ids, purchase(100), "buy", at(4));
    assert_eq!(
        (b.balance(), b.overdraft(), b.available(at(4))),
        (c(95), c(0), c(95))
    );
    assert!(b.violations().is_empty(), "{:?}", b.violations());
}

#[test]
fn non_positive_amounts_are_refused() {
    let (mut b, mut ids) = book();
    assert_refused!(
        b.credit(purchase(0), Memo::new("p"), at(0), &mut ids),
        InvalidAmount
    );
    assert_refused!(spend(&mut b, &mut ids, c(-1), "p", at(0)), InvalidAmount);
    assert!(b.take_changes().is_empty());
}

#[test]
fn changes_list_exactly_what_moved() {
    let (mut b, mut ids) = book();
    // (entries, grants inserted, grants updated, holds inserted)
    let counts = |c: &Changeset| {
        (
            c.entries.len(),
            c.grants_inserted.len(),
            c.grants_updated.len(),
            c.holds_inserted.len(),
        )
    };
    grant(&mut b, &mut ids, purchase(5), at(0));
    assert_eq!(counts(&b.take_changes()), (1, 1, 0, 0));
    reserve(&mut b, &mut ids, c(1), at(60), "h", at(0)).unwrap();
    let second = b.take_changes();
    assert_eq!(counts(&second), (0, 0, 1, 1));
    assert_eq!(second.last_seq, 1);
}

#[test]
fn entries_carry_seq_balance_plan_and_source() {
    let (mut b, mut ids) = book();
    b.set_plan(Some("Basic".into()));
    let bonus = GrantSpec::new(GrantSource::SignupBonus, c(5));
    let e = credit(&mut b, &mut ids, bonus, "Welcome bonus", at(0));
    assert_eq!(
        (e.seq, e.balance_after, e.source.as_str(), e.plan.as_deref()),
        (1, c(5), "Signup Bonus", Some("Basic"))
    );
    let u = b
        .debit(
            EntryKind::Usage,
            Credits::from_millis(600),
            SpendPolicy::STRICT,
            Memo::new("Screenshot captured")
                .source("Screenshot")
                .reference("scr_1"),
            at(1),
            &mut ids,
        )
        .unwrap();
    assert_eq!(
        (u.seq, u.balance_after, u.source.as_str()),
        (2, Credits::from_millis(4400), "Screenshot")
    );
}

/// `steady_until` is the next instant at which time alone changes the balance: a grant
/// that starts or expires, an active hold that expires; a settled hold or a past instant
/// does not count, and a book with nothing timed never changes by itself.
#[test]
fn the_balance_is_steady_until_the_next_start_or_expiry() {
    let (mut b, mut ids) = book_with(purchase(10));
    assert_eq!(b.steady_until(at(1)), None, "nothing timed");
    grant(&mut b, &mut ids, allowance_until(5, 100), at(1));
    let hold = reserve(&mut b, &mut ids, c(2), at(50), "job", at(2)).unwrap();
    assert_eq!(
        b.steady_until(at(2)),
        Some(at(50)),
        "the hold expires first"
    );
    assert_eq!(b.available(at(2)), b.available(at(49)));
    b.release(&hold, at(3)).unwrap();
    assert_eq!(
        b.steady_until(at(3)),
        Some(at(100)),
        "a released hold no longer counts"
    );
    assert_eq!(b.available(at(3)), b.available(at(99)));
    assert_ne!(b.available(at(99)), b.available(at(100)));
    assert_eq!(b.steady_until(at(100)), None, "past every expiry");
}
