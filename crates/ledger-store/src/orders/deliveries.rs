//! Webhook deliveries, stored verified before they are processed.

use diesel::prelude::*;
use ledger_core::Timestamp;

use super::Orders;
use crate::db::DbConnection;
use crate::error::StoreError;
use crate::payments::{DeliveryReceipt, StoredDelivery};
use crate::schema::webhook_deliveries;

impl Orders<'_> {
    /// Stores a verified delivery before it is processed. A webhook id seen before is
    /// reported as a duplicate and nothing is written.
    pub fn store_delivery(
        &self,
        webhook_id: &str,
        event_type: &str,
        body: &str,
        now: Timestamp,
    ) -> Result<DeliveryReceipt, StoreError> {
        let existing = || -> Result<Option<DeliveryReceipt>, StoreError> {
            Ok(self
                .delivery(webhook_id)?
                .map(|d| DeliveryReceipt::Duplicate {
                    processed: d.processed_at.is_some(),
                }))
        };
        let insert = |conn: &mut DbConnection| {
            diesel::insert_into(webhook_deliveries::table)
                .values((
                    webhook_deliveries::webhook_id.eq(webhook_id),
                    webhook_deliveries::event_type.eq(event_type),
                    webhook_deliveries::body.eq(body),
                    webhook_deliveries::received_at.eq(now.millis()),
                ))
                .execute(conn)
        };
        Ok(self
            .store
            .read_or_insert(existing, insert, DeliveryReceipt::New)?
            .unwrap_or(DeliveryReceipt::Duplicate { processed: false }))
    }

    pub fn delivery(&self, webhook_id: &str) -> Result<Option<StoredDelivery>, StoreError> {
        self.store.first_record(
            webhook_deliveries::table.filter(webhook_deliveries::webhook_id.eq(webhook_id)),
        )
    }

    /// Counts one processing attempt of a delivery.
    pub fn note_delivery_attempt(&self, webhook_id: &str) -> Result<(), StoreError> {
        self.store.write(|conn| {
            diesel::update(
                webhook_deliveries::table.filter(webhook_deliveries::webhook_id.eq(webhook_id)),
            )
            .set(webhook_deliveries::attempts.eq(webhook_deliveries::attempts + 1))
            .execute(conn)?;
            Ok(())
        })
    }

    /// Marks a delivery processed with its outcome (kept for operators).
    pub fn finish_delivery(
        &self,
        webhook_id: &str,
        outcome: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.store.write(|conn| {
            diesel::update(
                webhook_deliveries::table.filter(webhook_deliveries::webhook_id.eq(webhook_id)),
            )
            .set((
                webhook_deliveries::processed_at.eq(now.millis()),
                webhook_deliveries::outcome.eq(outcome),
            ))
            .execute(conn)?;
            Ok(())
        })
    }

    /// Unprocessed deliveries received before `received_before`, oldest first.
    pub fn unprocessed_deliveries(
        &self,
        received_before: Timestamp,
        limit: i64,
    ) -> Result<Vec<StoredDelivery>, StoreError> {
        self.store.records(
            webhook_deliveries::table
                .filter(webhook_deliveries::processed_at.is_null())
                .filter(webhook_deliveries::received_at.lt(received_before.millis()))
                .order((
                    webhook_deliveries::received_at,
                    webhook_deliveries::webhook_id,
                ))
                .limit(limit),
        )
    }
}
