//! Paid orders, their refunds and refused orders, each under its order's lock.

use diesel::prelude::*;
use ledger_core::orders::{self, OrderError, OrderState, Settlement};
use ledger_core::{
    AccountId, Book, Cents, Credits, Event, GrantSpec, LedgerError, Memo, Timestamp,
};

use super::{load_book, lock_account, order_row, Orders};
use crate::db::DbConnection;
use crate::error::StoreError;
use crate::ids::RandomIds;
use crate::ledger::{persist, TxError};
use crate::notifications;
use crate::payments::{
    NewRefusal, OrderKind, PaidOrder, PaidOutcome, PaymentOrder, RefundAmount, RefundOutcome,
    Refusal, RefusalOutcome,
};
use crate::schema::{payment_checkouts, payment_orders, payment_refunds, payment_refusals};

impl From<OrderError> for TxError {
    fn from(e: OrderError) -> TxError {
        TxError(StoreError::corrupt(e.to_string()))
    }
}

/// What the core needs of an order row, with its single refunds loaded.
fn order_state(conn: &mut DbConnection, order: &PaymentOrder) -> Result<OrderState, TxError> {
    let singles: Vec<Cents> = payment_refunds::table
        .filter(payment_refunds::order_id.eq(&order.order_id))
        .select(payment_refunds::amount_cents)
        .load::<i64>(conn)?
        .into_iter()
        .map(Cents::new)
        .collect();
    let refunded =
        orders::refunded(Cents::new(order.refunded_cents), &singles).ok_or_else(|| {
            OrderError::Overflow {
                order_id: order.order_id.clone(),
            }
        })?;
    Ok(OrderState {
        credits: Credits::from_millis(order.credits),
        paid: Cents::new(order.paid_cents.unwrap_or(0)),
        refunded,
        clawed_back: Credits::from_millis(order.clawed_back),
        owed: Credits::from_millis(order.owed),
    })
}

/// Adds what was taken back and newly owed to an order row.
fn record_settlement(
    conn: &mut DbConnection,
    order_id: &str,
    taken: Credits,
    owed_delta: i64,
    now: Timestamp,
) -> Result<(), TxError> {
    diesel::update(payment_orders::table.filter(payment_orders::order_id.eq(order_id)))
        .set((
            payment_orders::clawed_back.eq(payment_orders::clawed_back + taken.millis()),
            payment_orders::owed.eq(payment_orders::owed + owed_delta),
            payment_orders::updated_at.eq(now.millis()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Settles the refunds recorded on a credited order (`ledger_core::orders::settle_refunds`)
/// and records the result on its row. Returns (taken, owed now).
fn settle_refunds(
    conn: &mut DbConnection,
    book: &mut Book,
    order: &PaymentOrder,
    now: Timestamp,
) -> Result<(Credits, Credits), TxError> {
    let state = order_state(conn, order)?;
    let Settlement { taken, owed } =
        orders::settle_refunds(book, &state, &order.order_id, now, &mut RandomIds)?;
    if !taken.is_positive() && !owed.is_positive() {
        return Ok((Credits::ZERO, Credits::ZERO));
    }
    record_settlement(conn, &order.order_id, taken, owed.millis(), now)?;
    if owed.is_positive() {
        tracing::warn!(order_id = %order.order_id, owed = %owed, "refund exceeds the available credits; the rest is owed");
    }
    Ok((taken, owed))
}

/// Collects credits owed by earlier refunds of the account's other orders from what the
/// account has available now (called right after a credit, under the account lock).
fn collect_owed(
    conn: &mut DbConnection,
    book: &mut Book,
    account: &AccountId,
    except_order: &str,
    now: Timestamp,
) -> Result<Credits, TxError> {
    let owing: Vec<(String, Credits)> = payment_orders::table
        .filter(payment_orders::account_id.eq(account.as_str()))
        .filter(payment_orders::owed.gt(0))
        .filter(payment_orders::order_id.ne(except_order))
        .order(payment_orders::order_id)
        .select((payment_orders::order_id, payment_orders::owed))
        .load::<(String, i64)>(conn)?
        .into_iter()
        .map(|(id, owed)| (id, Credits::from_millis(owed)))
        .collect();
    let mut total = Credits::ZERO;
    for (order_id, taken) in orders::collect_owed(book, &owing, now, &mut RandomIds)? {
        record_settlement(conn, &order_id, taken, -taken.millis(), now)?;
        total += taken;
    }
    Ok(total)
}

/// Credits `order` on its order row `row`, locked by [`Orders::with_order`]: unless the
/// row already names its credit entry, the ledger entry and the order's new state are
/// written, refunds recorded before it are settled and credits owed by the account's
/// earlier refunds collected, all in the caller's transaction. The one crediting path of
/// purchases and auto top-ups.
pub(super) fn credit_order(
    conn: &mut DbConnection,
    row: PaymentOrder,
    order: &PaidOrder,
    now: Timestamp,
) -> Result<PaidOutcome, TxError> {
    if let Some(entry_id) = &row.credit_entry_id {
        return Ok(PaidOutcome::AlreadyCredited {
            entry_id: entry_id.clone(),
        });
    }
    let refused = payment_refusals::table
        .filter(payment_refusals::order_id.eq(&order.order_id))
        .select(payment_refusals::reason)
        .first::<String>(conn)
        .optional()?;
    if let Some(reason) = refused {
        return Ok(PaidOutcome::Refused { reason });
    }
    if let Some(checkout) = &order.checkout_id {
        // One checkout buys one pack: mark it paid by this order, unless another order
        // paid it already (rolled back with everything else if the credit fails).
        let marked = super::checkouts::mark_paid(conn, checkout, &order.order_id, now)?;
        if !marked {
            let paid_by = payment_checkouts::table
                .filter(payment_checkouts::id.eq(checkout))
                .select(payment_checkouts::order_id)
                .first::<Option<String>>(conn)
                .optional()?
                .flatten();
            if let Some(other) = paid_by.filter(|o| *o != order.order_id) {
                return Ok(PaidOutcome::CheckoutAlreadyPaid { by_order: other });
            }
        }
    }
    if !lock_account(conn, &order.account_id)? {
        return Ok(PaidOutcome::UnknownAccount);
    }
    let mut book = load_book(conn, &order.account_id, now)?;
    let entry_id = book
        .credit(
            GrantSpec::new(order.kind.grant_source(), order.credits),
            Memo::new(order.description.clone()).reference(order.order_id.clone()),
            now,
            &mut RandomIds,
        )
        .map_err(|e| match e {
            // A limit of the ledger, not a broken row: the caller refuses the order (the
            // whole transaction, the checkout's mark included, rolls back).
            LedgerError::BalanceLimit { .. } => StoreError::Refused(e),
            e => StoreError::corrupt(format!("crediting order {}: {e}", order.order_id)),
        })?
        .id
        .clone();
    diesel::update(payment_orders::table.filter(payment_orders::order_id.eq(&order.order_id)))
        .set((
            payment_orders::kind.eq(order.kind.as_str()),
            payment_orders::account_id.eq(order.account_id.as_str()),
            payment_orders::pack_id.eq(order.pack_id.as_str()),
            payment_orders::paid_cents.eq(order.paid_cents),
            payment_orders::credits.eq(order.credits.millis()),
            payment_orders::credit_entry_id.eq(entry_id.as_str()),
            payment_orders::paid_at.eq(now.millis()),
            payment_orders::updated_at.eq(now.millis()),
        ))
        .execute(conn)?;
    let credited = PaymentOrder {
        account_id: Some(order.account_id.clone()),
        paid_cents: Some(order.paid_cents),
        credits: order.credits.millis(),
        ..row
    };
    let (taken_back, owed) = settle_refunds(conn, &mut book, &credited, now)?;
    collect_owed(conn, &mut book, &order.account_id, &order.order_id, now)?;
    persist(conn, &order.account_id, book.take_changes())?;
    // The customer hears of it in this transaction's outbox (ADR 12).
    let available = book.available(now);
    notifications::book_written(conn, &order.account_id, available, now)?;
    let mut data = serde_json::Map::new();
    data.insert("orderId".into(), notifications::json(&order.order_id));
    data.insert("packId".into(), notifications::json(order.pack_id.as_str()));
    data.insert("credits".into(), notifications::json(order.credits));
    data.insert("priceCents".into(), notifications::json(order.paid_cents));
    let event = match order.kind {
        OrderKind::Purchase => Event::CreditsPurchased,
        OrderKind::AutoTopup => Event::TopupSucceeded,
    };
    notifications::enqueue_in_tx(conn, &order.account_id, event, available, data, now)?;
    Ok(PaidOutcome::Credited {
        entry_id,
        taken_back,
        owed,
    })
}

impl Orders<'_> {
    /// Credits a paid order exactly once (keyed by its order id), settling any refunds
    /// recorded before it, and collecting credits owed by earlier refunds — all in one
    /// transaction.
    pub fn apply_paid_order(
        &self,
        order: &PaidOrder,
        now: Timestamp,
    ) -> Result<PaidOutcome, StoreError> {
        self.with_order(&order.order_id, order.kind, now, |conn, row| {
            credit_order(conn, row, order, now)
        })
    }

    /// Records a refund of an order and, when the order is credited, takes the refunded
    /// share of its credits back (once), in the same transaction.
    pub fn apply_refund(
        &self,
        order_id: &str,
        refund: &RefundAmount,
        now: Timestamp,
    ) -> Result<RefundOutcome, StoreError> {
        self.with_order(order_id, OrderKind::Purchase, now, |conn, row| {
            let mut changed = false;
            match refund {
                RefundAmount::Single { refund_id, cents } => {
                    let seen = payment_refunds::table
                        .filter(payment_refunds::refund_id.eq(refund_id))
                        .select(payment_refunds::refund_id)
                        .first::<String>(conn)
                        .optional()?;
                    if seen.is_none() {
                        diesel::insert_into(payment_refunds::table)
                            .values((
                                payment_refunds::refund_id.eq(refund_id),
                                payment_refunds::order_id.eq(order_id),
                                payment_refunds::amount_cents
                                    .eq(orders::single_refund(Cents::new(*cents)).get()),
                                payment_refunds::created_at.eq(now.millis()),
                            ))
                            .execute(conn)?;
                        changed = true;
                    }
                }
                RefundAmount::Cumulative { cents } => {
                    let (seen, reported) = (Cents::new(row.refunded_cents), Cents::new(*cents));
                    if orders::cumulative_grows(seen, reported) {
                        diesel::update(
                            payment_orders::table.filter(payment_orders::order_id.eq(order_id)),
                        )
                        .set((
                            payment_orders::refunded_cents.eq(*cents),
                            payment_orders::updated_at.eq(now.millis()),
                        ))
                        .execute(conn)?;
                        changed = true;
                    }
                }
            }
            let Some(account) = row.credit_entry_id.as_ref().and(row.account_id.clone()) else {
                return Ok(if changed {
                    RefundOutcome::Pending
                } else {
                    RefundOutcome::NothingNew
                });
            };
            if !lock_account(conn, &account)? {
                return Ok(RefundOutcome::NothingNew);
            }
            let row = order_row(conn, order_id)?.ok_or_else(|| {
                StoreError::corrupt(format!("order {order_id} vanished under its lock"))
            })?;
            let mut book = load_book(conn, &account, now)?;
            let (taken, owed) = settle_refunds(conn, &mut book, &row, now)?;
            persist(conn, &account, book.take_changes())?;
            notifications::book_written(conn, &account, book.available(now), now)?;
            Ok(if taken.is_positive() || owed.is_positive() {
                RefundOutcome::TookBack { taken, owed }
            } else {
                RefundOutcome::NothingNew
            })
        })
    }

    /// Keeps a refused paid order for an operator, under the order's lock (so it cannot
    /// race its own credit): once refused, [`Orders::apply_paid_order`] never credits it.
    /// An order credited before is left as it is.
    pub fn refuse_order(
        &self,
        refusal: &NewRefusal,
        now: Timestamp,
    ) -> Result<RefusalOutcome, StoreError> {
        self.with_order(&refusal.order_id, OrderKind::Purchase, now, |conn, row| {
            if let Some(entry_id) = &row.credit_entry_id {
                return Ok(RefusalOutcome::AlreadyCredited {
                    entry_id: entry_id.clone(),
                });
            }
            let n = diesel::update(
                payment_refusals::table.filter(payment_refusals::order_id.eq(&refusal.order_id)),
            )
            .set((
                payment_refusals::source.eq(refusal.source.as_str()),
                payment_refusals::reason.eq(&refusal.reason),
                payment_refusals::order_json.eq(&refusal.order_json),
                payment_refusals::last_seen_at.eq(now.millis()),
                payment_refusals::times_seen.eq(payment_refusals::times_seen + 1),
            ))
            .execute(conn)?;
            if n == 1 {
                return Ok(RefusalOutcome::Recorded { first: false });
            }
            diesel::insert_into(payment_refusals::table)
                .values((
                    payment_refusals::order_id.eq(&refusal.order_id),
                    payment_refusals::source.eq(refusal.source.as_str()),
                    payment_refusals::reason.eq(&refusal.reason),
                    payment_refusals::checkout_id.eq(&refusal.checkout_id),
                    payment_refusals::account_id.eq(&refusal.account_id),
                    payment_refusals::order_json.eq(&refusal.order_json),
                    payment_refusals::first_seen_at.eq(now.millis()),
                    payment_refusals::last_seen_at.eq(now.millis()),
                    payment_refusals::times_seen.eq(1),
                ))
                .execute(conn)?;
            Ok(RefusalOutcome::Recorded { first: true })
        })
    }

    /// The refusal of an order, if it was refused.
    pub fn refusal(&self, order_id: &str) -> Result<Option<Refusal>, StoreError> {
        self.store
            .first_record(payment_refusals::table.filter(payment_refusals::order_id.eq(order_id)))
    }

    /// Refused orders, the most recently seen first.
    pub fn refusals(&self, limit: i64) -> Result<Vec<Refusal>, StoreError> {
        self.store.records(
            payment_refusals::table
                .order((
                    payment_refusals::last_seen_at.desc(),
                    payment_refusals::order_id,
                ))
                .limit(limit),
        )
    }
}
