//! [`StoreBook`]: the [`SubscriptionBook`] over `ledger-store`, the one the binaries use.
//!
//! It only translates: the modified-at guard, the plan snapshot, the roll of the period
//! and the overage items' states are the store's (`ledger_store::Plans`), and the rules
//! behind them the core's (`ledger_core::plan`).

use ledger_core::{Plan, Timestamp};
use ledger_store::{OverageStatus, ProviderApplied, ProviderUpdate, Store, StoreError};

use crate::subscriptions::{
    OverageReport, ReportOutcome, SubscriptionBook, SubscriptionUpdate, UpdateOutcome,
};

/// The store, and the configured plans (a provider update names a plan by id; the store
/// keeps a snapshot of its terms).
pub struct StoreBook {
    store: Store,
    plans: Vec<Plan>,
}

impl StoreBook {
    pub fn new(store: Store, plans: Vec<Plan>) -> StoreBook {
        StoreBook { store, plans }
    }
}

impl SubscriptionBook for StoreBook {
    fn apply_subscription_update(
        &self,
        update: &SubscriptionUpdate,
        now: Timestamp,
    ) -> Result<UpdateOutcome, StoreError> {
        // The receiver maps the product to a configured plan before it gets here, from the
        // same settings; a plan this book does not know is said so, not applied.
        let Some(plan) = self.plans.iter().find(|p| p.id == update.plan_id) else {
            return Ok(UpdateOutcome::UnknownPlan);
        };
        let applied = self.store.plans().apply_provider_update(
            &ProviderUpdate {
                account: &update.account_id,
                provider_subscription_id: &update.provider_subscription_id,
                plan,
                status: update.status,
                period_start: update.current_period_start,
                modified_at_micros: update.modified_at_micros,
            },
            now,
        )?;
        Ok(match applied {
            ProviderApplied::Changed => UpdateOutcome::Changed,
            ProviderApplied::NotNewer => UpdateOutcome::NotNewer,
            ProviderApplied::UnknownAccount => UpdateOutcome::UnknownAccount,
        })
    }

    fn pending_overage_reports(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<OverageReport>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(self
            .store
            .plans()
            .pending_items(now, limit)?
            .into_iter()
            .map(|item| OverageReport {
                credits: item.credits.millis() / 1_000,
                amount_cents: item.amount.get(),
                attempts: u32::try_from(item.attempts).unwrap_or(u32::MAX),
                id: item.id,
                account_id: item.account_id,
                period_start: item.period_start,
                blocks: item.blocks,
            })
            .collect())
    }

    fn record_overage_report(
        &self,
        id: &str,
        outcome: &ReportOutcome,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let plans = self.store.plans();
        match outcome {
            ReportOutcome::Reported => {
                plans.mark_item(id, OverageStatus::Reported, None, None, now)
            }
            ReportOutcome::Recorded => {
                plans.mark_item(id, OverageStatus::Recorded, None, None, now)
            }
            ReportOutcome::Failed {
                error,
                next_attempt_at,
            } => plans.mark_item(
                id,
                OverageStatus::Pending,
                Some(error),
                Some(*next_attempt_at),
                now,
            ),
        }
        .map(|_| ())
    }
}
