//! Checkouts we created, and the payment secrets (the demo provider's signing secret).

use diesel::prelude::*;
use ledger_core::{AccountId, Timestamp};

use super::Orders;
use crate::db::DbConnection;
use crate::error::StoreError;
use crate::ledger::TxError;
use crate::payments::{CheckoutRecord, CheckoutRow, CheckoutStatus};
use crate::schema::{payment_checkouts, payment_secrets};

/// Marks an open checkout paid by `order_id`; false when it was not open (paid before).
pub(super) fn mark_paid(
    conn: &mut DbConnection,
    id: &str,
    order_id: &str,
    now: Timestamp,
) -> Result<bool, TxError> {
    let n = diesel::update(
        payment_checkouts::table
            .filter(payment_checkouts::id.eq(id))
            .filter(payment_checkouts::status.eq(CheckoutStatus::Open.as_str())),
    )
    .set((
        payment_checkouts::status.eq(CheckoutStatus::Paid.as_str()),
        payment_checkouts::order_id.eq(order_id),
        payment_checkouts::paid_at.eq(now.millis()),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

impl Orders<'_> {
    pub fn record_checkout(&self, checkout: &CheckoutRecord) -> Result<(), StoreError> {
        self.store.write(|conn| {
            diesel::insert_into(payment_checkouts::table)
                .values(CheckoutRow::from(checkout))
                .execute(conn)?;
            Ok(())
        })
    }

    /// An account's checkouts, newest first.
    pub fn checkouts_of(&self, account: &AccountId) -> Result<Vec<CheckoutRecord>, StoreError> {
        self.store.records(
            payment_checkouts::table
                .filter(payment_checkouts::account_id.eq(account.as_str()))
                .order((payment_checkouts::created_at.desc(), payment_checkouts::id)),
        )
    }

    pub fn checkout(&self, id: &str) -> Result<Option<CheckoutRecord>, StoreError> {
        self.store
            .first_record(payment_checkouts::table.filter(payment_checkouts::id.eq(id)))
    }

    /// Marks an open checkout paid by `order_id`; false when it was not open (paid before).
    pub fn mark_checkout_paid(
        &self,
        id: &str,
        order_id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.store.write(|conn| mark_paid(conn, id, order_id, now))
    }

    /// The secret stored under `name`; `candidate` is stored first when there is none
    /// (the first process to store one wins, every process then reads the same).
    pub fn payment_secret(
        &self,
        name: &str,
        candidate: &str,
        now: Timestamp,
    ) -> Result<String, StoreError> {
        let read = || -> Result<Option<String>, StoreError> {
            let mut conn = self.store.conn()?;
            Ok(payment_secrets::table
                .filter(payment_secrets::name.eq(name))
                .select(payment_secrets::value)
                .first(&mut *conn)
                .optional()?)
        };
        let insert = |conn: &mut DbConnection| {
            diesel::insert_into(payment_secrets::table)
                .values((
                    payment_secrets::name.eq(name),
                    payment_secrets::value.eq(candidate),
                    payment_secrets::created_at.eq(now.millis()),
                ))
                .execute(conn)
        };
        self.store
            .read_or_insert(read, insert, candidate.to_owned())?
            .ok_or_else(|| StoreError::corrupt(format!("payment secret {name} vanished")))
    }
}
