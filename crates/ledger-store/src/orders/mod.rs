//! Payments made durable: webhook deliveries, provider orders, refunds, checkouts, the
//! demo signing secret and auto top-up (the rules are `ledger_core::orders` and
//! `ledger_core::topup`; the types are [`crate::payments`]).
//!
//! Exactly-once crediting rests on one row per provider order (`payment_orders`, keyed
//! by the order id). Every event about an order runs in one transaction that
//! 1. locks that order row (inserting it on first sight), so events of one order are
//!    applied one at a time, across threads and processes;
//! 2. locks the account row (as every ledger operation does), then
//! 3. writes the ledger entries and the order's new state together.
//!
//! A paid order is credited only while its row has no `credit_entry_id`; refunds are
//! recorded on the row (cumulative cents, or one row per refund id) whether or not the
//! order was paid yet, and the share of credits they take back is settled against
//! `clawed_back + owed`, so each refunded cent takes credits back once.
//!
//! A paid order that does not match the checkout we recorded is refused
//! ([`Orders::refuse_order`], `payment_refusals`), under the same order lock: a refused
//! order is never credited automatically, and stays listed for an operator.

mod checkouts;
mod deliveries;
mod paid;
pub(crate) mod topups;

use diesel::prelude::*;
use ledger_core::{AccountId, Book, Timestamp};

use crate::db::DbConnection;
use crate::error::StoreError;
use crate::ids::RandomIds;
use crate::ledger::TxError;
use crate::payments::{OrderKind, PaymentOrder};
use crate::rows::FirstRecord;
use crate::schema::payment_orders;
use crate::Store;

/// Orders, refunds, checkouts, refused orders, webhook deliveries and auto top-up:
/// `store.orders()`.
#[derive(Debug, Clone, Copy)]
pub struct Orders<'a> {
    store: &'a Store,
}

impl Store {
    /// The payments repository.
    pub fn orders(&self) -> Orders<'_> {
        Orders { store: self }
    }
}

/// Locks the account row for the rest of the transaction; false when it does not exist.
fn lock_account(conn: &mut DbConnection, id: &AccountId) -> Result<bool, TxError> {
    match crate::ledger::lock_account(conn, id) {
        Ok(()) => Ok(true),
        Err(TxError(StoreError::AccountNotFound { .. })) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Loads an account's book (open grants, active holds and the grants they name), swept.
fn load_book(conn: &mut DbConnection, id: &AccountId, now: Timestamp) -> Result<Book, TxError> {
    let (mut book, _) = crate::ledger::load_book(conn, id, None, &[])?;
    book.sweep(now, &mut RandomIds);
    Ok(book)
}

/// The order row `order_id`, if there is one.
fn order_row(conn: &mut DbConnection, order_id: &str) -> Result<Option<PaymentOrder>, StoreError> {
    payment_orders::table
        .filter(payment_orders::order_id.eq(order_id))
        .first_record(conn)
}

impl Orders<'_> {
    /// Runs `f` in a write transaction holding the lock of order `order_id` (its row is
    /// inserted on first sight). Two first sights racing: the loser retries.
    fn with_order<T>(
        &self,
        order_id: &str,
        kind: OrderKind,
        now: Timestamp,
        f: impl Fn(&mut DbConnection, PaymentOrder) -> Result<T, TxError>,
    ) -> Result<T, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.store.write(|conn| {
                let n = diesel::update(
                    payment_orders::table.filter(payment_orders::order_id.eq(order_id)),
                )
                .set(payment_orders::version.eq(payment_orders::version + 1))
                .execute(conn)?;
                if n == 0 {
                    diesel::insert_into(payment_orders::table)
                        .values((
                            payment_orders::order_id.eq(order_id),
                            payment_orders::kind.eq(kind.as_str()),
                            payment_orders::created_at.eq(now.millis()),
                            payment_orders::updated_at.eq(now.millis()),
                        ))
                        .execute(conn)?;
                }
                let row = order_row(conn, order_id)?.ok_or_else(|| {
                    StoreError::corrupt(format!("order {order_id} vanished under its lock"))
                })?;
                f(conn, row)
            });
            match result {
                Err(e) if e.is_unique_violation() && attempt < 5 => continue,
                other => return other,
            }
        }
    }

    pub fn payment_order(&self, order_id: &str) -> Result<Option<PaymentOrder>, StoreError> {
        let mut conn = self.store.conn()?;
        order_row(&mut conn, order_id)
    }
}
