//! Paid orders and their refunds (ADR 0200): the share of a pack a refund takes back,
//! what is due after earlier refunds, and taking it back from a book.
//!
//! An order's refunds are settled against `clawed_back + owed`: whatever the refunded
//! share of the pack asks beyond that is due now; what the account has available is taken
//! back as one `purchase_refund` entry and the rest is owed, collected from the account's
//! next credit. So each refunded cent takes credits back once, and never more than the
//! pack.

use crate::amount::{Cents, Credits};
use crate::book::{Book, Memo, SpendPolicy};
use crate::entry::EntryKind;
use crate::error::LedgerError;
use crate::ids::IdSource;
use crate::time::Timestamp;

/// An order's credits and refunds, as far as taking credits back goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OrderState {
    /// The pack's credits granted by the order.
    pub credits: Credits,
    /// What the customer paid, before tax: the base of refund shares.
    pub paid: Cents,
    /// What has been refunded so far ([`refunded`]).
    pub refunded: Cents,
    /// Credits taken back so far.
    pub clawed_back: Credits,
    /// Credits due back that the account did not have.
    pub owed: Credits,
}

/// A sum of an order's refunds does not fit the ledger's numbers (a corrupt row).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("refunds of order {order_id} overflow")]
    Overflow { order_id: String },
    /// The book refused to take `taking` back: a broken book, since a take-back never
    /// asks more than is available.
    #[error("taking back {taking} credits: {error}")]
    TakeBack { taking: Credits, error: LedgerError },
}

/// Credits a refund of `refunded` out of `paid` takes back: the refunded share of the
/// pack, rounded down to a thousandth; a full (or larger) refund takes all of it, and a
/// free order has nothing to take back.
pub fn refund_share(credits: Credits, paid: Cents, refunded: Cents) -> Credits {
    if refunded.get() <= 0 || paid.get() <= 0 || credits.millis() <= 0 {
        return Credits::ZERO;
    }
    if refunded >= paid {
        return credits;
    }
    let share = i128::from(credits.millis()) * i128::from(refunded.get()) / i128::from(paid.get());
    // Below `credits.millis()`, since refunded < paid.
    Credits::from_millis(share as i64)
}

/// What has been refunded of an order: refund events one by one (`singles`) and the
/// order's cumulative refunded amount describe the same refunds, and both only grow, so
/// the larger of the two totals. `None` when the singles overflow.
pub fn refunded(cumulative: Cents, singles: &[Cents]) -> Option<Cents> {
    let singles = singles
        .iter()
        .try_fold(Cents::ZERO, |sum, c| sum.checked_add(*c))?;
    Some(cumulative.max(singles))
}

/// Whether a reported cumulative refund is news: it only counts when larger than the
/// largest seen (events may come late or twice).
pub fn cumulative_grows(seen: Cents, reported: Cents) -> bool {
    reported > seen
}

/// The amount a single refund event records: never negative.
pub fn single_refund(cents: Cents) -> Cents {
    cents.max(Cents::ZERO)
}

/// Credits the refunds of `order` still ask back: the refunded share beyond what was
/// taken back or recorded as owed (zero when nothing more is due).
pub fn due(order: &OrderState, order_id: &str) -> Result<Credits, OrderError> {
    let target = refund_share(order.credits, order.paid, order.refunded);
    let settled =
        order
            .clawed_back
            .checked_add(order.owed)
            .ok_or_else(|| OrderError::Overflow {
                order_id: order_id.to_owned(),
            })?;
    Ok((target - settled).max(Credits::ZERO))
}

/// Takes back up to `due` credits (what the account has available, never below zero) as
/// one `purchase_refund` entry referring to the order. Returns what was taken.
pub fn take_back(
    book: &mut Book,
    due: Credits,
    order_id: &str,
    description: impl FnOnce(Credits) -> String,
    now: Timestamp,
    ids: &mut dyn IdSource,
) -> Result<Credits, OrderError> {
    let take = due.min(book.available(now).max(Credits::ZERO));
    if take.is_positive() {
        book.debit(
            EntryKind::PurchaseRefund,
            take,
            SpendPolicy::STRICT,
            Memo::new(description(take)).reference(order_id),
            now,
            ids,
        )
        .map_err(|error| OrderError::TakeBack {
            taking: take,
            error,
        })?;
    }
    Ok(take)
}

/// What settling an order's refunds did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settlement {
    /// Taken back now.
    pub taken: Credits,
    /// Newly owed (the part the account did not have).
    pub owed: Credits,
}

impl OrderState {
    /// The order after `settlement`.
    pub fn settled(mut self, settlement: Settlement) -> OrderState {
        self.clawed_back += settlement.taken;
        self.owed += settlement.owed;
        self
    }
}

/// Settles the refunds recorded on a credited order against `book`: takes back what is
/// [`due`] as far as the account has credits, and owes the rest.
pub fn settle_refunds(
    book: &mut Book,
    order: &OrderState,
    order_id: &str,
    now: Timestamp,
    ids: &mut dyn IdSource,
) -> Result<Settlement, OrderError> {
    let due = due(order, order_id)?;
    if !due.is_positive() {
        return Ok(Settlement::default());
    }
    let taken = take_back(
        book,
        due,
        order_id,
        |t| format!("Payment refunded: {} credits taken back", t.grouped()),
        now,
        ids,
    )?;
    Ok(Settlement {
        taken,
        owed: due - taken,
    })
}

/// Collects credits owed by earlier refunds (`owing`: order id and credits owed, in the
/// order to collect them) from what the account has available now, right after a credit.
/// Stops at the first order nothing could be taken for. Returns what was taken per order.
pub fn collect_owed(
    book: &mut Book,
    owing: &[(String, Credits)],
    now: Timestamp,
    ids: &mut dyn IdSource,
) -> Result<Vec<(String, Credits)>, OrderError> {
    let mut collected = Vec::new();
    for (order_id, owed) in owing {
        let taken = take_back(
            book,
            *owed,
            order_id,
            |t| format!("Refunded payment: {} owed credits taken back", t.grouped()),
            now,
            ids,
        )?;
        if !taken.is_positive() {
            break;
        }
        collected.push((order_id.clone(), taken));
    }
    Ok(collected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{GrantSource, GrantSpec};
    use crate::ids::{AccountId, SequentialIds};

    const NOW: Timestamp = Timestamp::from_millis(1_770_000_000_000);

    fn book_with(credits: Credits) -> (Book, SequentialIds) {
        let mut ids = SequentialIds::default();
        let mut book = Book::empty(AccountId::new("acct_o"));
        if credits.is_positive() {
            book.credit(
                GrantSpec::new(GrantSource::Purchase, credits),
                Memo::new("pack"),
                NOW,
                &mut ids,
            )
            .unwrap();
        }
        (book, ids)
    }

    #[test]
    fn refund_shares_round_down_and_cap_at_the_pack() {
        let pack = Credits::whole(1000);
        let c = Cents::new;
        assert_eq!(refund_share(pack, c(3500), c(0)), Credits::ZERO);
        assert_eq!(refund_share(pack, c(3500), c(1750)), Credits::whole(500));
        assert_eq!(
            refund_share(pack, c(3500), c(1500)),
            Credits::from_millis(428_571)
        );
        assert_eq!(refund_share(pack, c(3500), c(3500)), pack);
        assert_eq!(refund_share(pack, c(3500), c(9999)), pack);
        // A free order (100% discount) has nothing to refund.
        assert_eq!(refund_share(pack, c(0), c(100)), Credits::ZERO);
    }

    #[test]
    fn the_larger_of_the_two_refund_totals_counts() {
        let c = Cents::new;
        assert_eq!(refunded(c(500), &[c(200), c(100)]), Some(c(500)));
        assert_eq!(refunded(c(100), &[c(200), c(300)]), Some(c(500)));
        assert_eq!(refunded(c(0), &[c(i64::MAX), c(1)]), None);
        assert!(cumulative_grows(c(100), c(101)));
        assert!(!cumulative_grows(c(100), c(100)));
        assert_eq!(single_refund(c(-5)), Cents::ZERO);
    }

    #[test]
    fn a_refund_takes_back_what_is_available_and_owes_the_rest() {
        let (mut book, mut ids) = book_with(Credits::whole(300));
        let order = OrderState {
            credits: Credits::whole(1000),
            paid: Cents::new(1000),
            refunded: Cents::new(500),
            ..OrderState::default()
        };
        let s = settle_refunds(&mut book, &order, "ord_1", NOW, &mut ids).unwrap();
        assert_eq!(
            s,
            Settlement {
                taken: Credits::whole(300),
                owed: Credits::whole(200)
            }
        );
        assert_eq!(book.available(NOW), Credits::ZERO);
        let entries = book.take_changes().entries;
        let last = entries.last().unwrap();
        assert_eq!(last.kind, EntryKind::PurchaseRefund);
        assert_eq!(last.reference_id.as_deref(), Some("ord_1"));
        assert_eq!(last.description, "Payment refunded: 300 credits taken back");
        // Settled once: the same refund again asks nothing.
        let again = settle_refunds(&mut book, &order.settled(s), "ord_1", NOW, &mut ids);
        assert_eq!(again.unwrap(), Settlement::default());
    }

    #[test]
    fn owed_credits_are_collected_in_order_until_nothing_is_left() {
        let (mut book, mut ids) = book_with(Credits::whole(250));
        let owing = vec![
            ("ord_a".to_owned(), Credits::whole(100)),
            ("ord_b".to_owned(), Credits::whole(200)),
            ("ord_c".to_owned(), Credits::whole(50)),
        ];
        let taken = collect_owed(&mut book, &owing, NOW, &mut ids).unwrap();
        assert_eq!(
            taken,
            vec![
                ("ord_a".to_owned(), Credits::whole(100)),
                ("ord_b".to_owned(), Credits::whole(150)),
            ]
        );
        assert_eq!(book.available(NOW), Credits::ZERO);
    }

    #[test]
    fn an_overflowing_order_is_an_error_not_a_panic() {
        let order = OrderState {
            credits: Credits::whole(10),
            paid: Cents::new(10),
            refunded: Cents::new(10),
            clawed_back: Credits::from_millis(i64::MAX),
            owed: Credits::from_millis(1),
        };
        assert_eq!(
            due(&order, "ord_x"),
            Err(OrderError::Overflow {
                order_id: "ord_x".into()
            })
        );
    }
}
