//! Property tests of refunds (ADR 0200): whatever the order of refund events, spending and
//! later credits, an order's refunds take back exactly the refunded share of its pack,
//! once, and never more than the pack.

use ledger_core::orders::{self, OrderState};
use ledger_core::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Event {
    /// `order.refunded` with the order's cumulative refunded amount.
    Cumulative(i64),
    /// One `refund.created`, by id (a repeated id is a redelivery).
    Single(u8, i64),
    /// The customer spends credits.
    Spend(i64),
    /// Another pack is credited, and owed credits are collected from it.
    Credit(i64),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0..12_000i64).prop_map(Event::Cumulative),
        (0..4u8, 0..4_000i64).prop_map(|(id, c)| Event::Single(id, c)),
        (1..2_000_000i64).prop_map(Event::Spend),
        (1..2_000_000i64).prop_map(Event::Credit),
    ]
}

const NOW: Timestamp = Timestamp::from_millis(1_770_000_000_000);

fn run(credits: Credits, paid: Cents, events: &[Event]) {
    let mut ids = SequentialIds::default();
    let mut book = Book::empty(AccountId::new("acct_r"));
    book.credit(
        GrantSpec::new(GrantSource::Purchase, credits),
        Memo::new("pack").reference("ord_1"),
        NOW,
        &mut ids,
    )
    .unwrap();
    let mut order = OrderState {
        credits,
        paid,
        ..OrderState::default()
    };
    let mut cumulative = Cents::ZERO;
    let mut singles: Vec<(u8, Cents)> = Vec::new();
    let mut taken_entries = Credits::ZERO;
    for e in events {
        match e {
            Event::Cumulative(c) => {
                if orders::cumulative_grows(cumulative, Cents::new(*c)) {
                    cumulative = Cents::new(*c);
                }
            }
            Event::Single(id, c) => {
                if !singles.iter().any(|(seen, _)| seen == id) {
                    singles.push((*id, orders::single_refund(Cents::new(*c))));
                }
            }
            Event::Spend(m) => {
                let _ = book.debit(
                    EntryKind::Usage,
                    Credits::from_millis(*m),
                    SpendPolicy::STRICT,
                    Memo::new("use"),
                    NOW,
                    &mut ids,
                );
            }
            Event::Credit(m) => {
                book.credit(
                    GrantSpec::new(GrantSource::Purchase, Credits::from_millis(*m)),
                    Memo::new("another pack"),
                    NOW,
                    &mut ids,
                )
                .unwrap();
                let owing = [("ord_1".to_owned(), order.owed)];
                let owing = if order.owed.is_positive() {
                    &owing[..]
                } else {
                    &[]
                };
                for (_, taken) in orders::collect_owed(&mut book, owing, NOW, &mut ids).unwrap() {
                    order.clawed_back += taken;
                    order.owed -= taken;
                }
            }
        }
        let cents: Vec<Cents> = singles.iter().map(|(_, c)| *c).collect();
        order.refunded = orders::refunded(cumulative, &cents).unwrap();
        let s = orders::settle_refunds(&mut book, &order, "ord_1", NOW, &mut ids).unwrap();
        order = order.settled(s);
        for entry in book.take_changes().entries {
            if entry.kind == EntryKind::PurchaseRefund {
                assert_eq!(entry.reference_id.as_deref(), Some("ord_1"));
                taken_entries += -entry.amount;
            }
        }
        // Each refunded cent takes credits back once: what was taken or owed is exactly
        // the refunded share, never more than the pack.
        let share = orders::refund_share(credits, paid, order.refunded);
        assert_eq!(order.clawed_back + order.owed, share, "{order:?}");
        assert!(order.clawed_back + order.owed <= credits);
        assert!(!order.owed.is_negative());
        assert_eq!(taken_entries, order.clawed_back);
        assert!(book.available(NOW) >= Credits::ZERO);
        assert!(book.violations().is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn refunds_take_back_the_refunded_share_once(
        credits in 1..5_000_000i64,
        paid in 0..10_000i64,
        events in prop::collection::vec(event(), 1..40),
    ) {
        run(Credits::from_millis(credits), Cents::new(paid), &events);
    }
}
