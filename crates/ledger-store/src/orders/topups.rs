//! Auto top-up: saved settings and charges. The store records what the core's rule
//! (`ledger_core::topup::after_charge`) decides; it decides nothing itself.

use diesel::prelude::*;
use ledger_core::topup::{self, status_on_save};
use ledger_core::{
    AccountId, AutoTopup, ChargeStatus, Credits, Timestamp, TopupStart, TopupStatus,
};

use super::{load_book, lock_account, paid::credit_order, Orders};
use crate::db::DbConnection;
use crate::error::StoreError;
use crate::ids::new_id;
use crate::ledger::TxError;
use crate::payments::{
    AutoTopupSettings, OrderKind, PaidOrder, PaidOutcome, TopupCharge, TopupChargeRow, TopupPack,
};
use crate::rows::{AutoTopupRow, FirstRecord, Records};
use crate::schema::{auto_topup_charges, auto_topups};

fn settings_row(
    conn: &mut DbConnection,
    account: &AccountId,
) -> Result<Option<AutoTopupSettings>, StoreError> {
    // A point read on the primary key: no `LIMIT ?` (ADR 18), as the write path runs it.
    Ok(auto_topups::table
        .filter(auto_topups::account_id.eq(account.as_str()))
        .records(conn)?
        .into_iter()
        .next())
}

/// The account's saved settings as the core's rule reads them (`None`: never saved, so
/// no charge of the account ever starts a top-up).
pub(crate) fn settings_in_tx(
    conn: &mut DbConnection,
    account: &AccountId,
) -> Result<Option<AutoTopup>, TxError> {
    Ok(settings_row(conn, account)?.map(|s| s.topup))
}

/// Records [`ledger_core::Effect::StartTopup`]: a pending charge of the saved pack, and
/// the settings marked pending, on the connection of the charge's own transaction (so the
/// top-up commits or rolls back with the charge: none lost, none doubled; a unique index
/// keeps one pending charge per account). A worker
/// (`payments::Payments::run_auto_topups`) then submits it to the provider.
pub(crate) fn start_in_tx(
    conn: &mut DbConnection,
    start: &TopupStart,
    now: Timestamp,
) -> Result<TopupCharge, TxError> {
    let charge = TopupCharge {
        id: new_id("topup_"),
        account_id: start.account_id.clone(),
        pack_id: start.pack_id.clone(),
        credits: start.credits,
        price: start.price,
        status: ChargeStatus::Pending,
        reason: None,
        created_at: now,
        settled_at: None,
    };
    diesel::insert_into(auto_topup_charges::table)
        .values(TopupChargeRow::from(&charge))
        .execute(conn)?;
    diesel::update(
        auto_topups::table.filter(auto_topups::account_id.eq(start.account_id.as_str())),
    )
    .set((
        auto_topups::status.eq(TopupStatus::Pending.as_str()),
        auto_topups::updated_at.eq(now.millis()),
    ))
    .execute(conn)?;
    Ok(charge)
}

fn charge_row(
    conn: &mut DbConnection,
    id: &str,
    status: Option<ChargeStatus>,
) -> Result<Option<TopupCharge>, StoreError> {
    let mut query = auto_topup_charges::table
        .filter(auto_topup_charges::id.eq(id))
        .into_boxed();
    if let Some(status) = status {
        query = query.filter(auto_topup_charges::status.eq(status.as_str()));
    }
    query.first_record(conn)
}

impl Orders<'_> {
    pub fn auto_topup(&self, account: &AccountId) -> Result<Option<AutoTopupSettings>, StoreError> {
        let mut conn = self.store.conn()?;
        settings_row(&mut conn, account)
    }

    /// Sets an account's auto top-up. Enabling clears a pause; a charge in flight stays
    /// in flight (status `pending`).
    pub fn put_auto_topup(
        &self,
        account: &AccountId,
        enabled: bool,
        threshold: Credits,
        pack: &TopupPack,
        now: Timestamp,
    ) -> Result<AutoTopupSettings, StoreError> {
        self.store.write(|conn| {
            if !lock_account(conn, account)? {
                return Err(StoreError::AccountNotFound {
                    account_id: account.clone(),
                }
                .into());
            }
            let pending = auto_topup_charges::table
                .filter(auto_topup_charges::account_id.eq(account.as_str()))
                .filter(auto_topup_charges::status.eq(ChargeStatus::Pending.as_str()))
                .select(auto_topup_charges::id)
                .first::<String>(conn)
                .optional()?;
            let settings = AutoTopupSettings {
                account_id: account.clone(),
                topup: AutoTopup {
                    enabled,
                    threshold: threshold.max(Credits::ZERO),
                    pack_id: pack.pack_id.clone(),
                    credits: pack.credits,
                    price: ledger_core::Cents::new(pack.price_cents),
                    status: status_on_save(pending.is_some()),
                },
                paused_reason: None,
                updated_at: now,
            };
            diesel::delete(auto_topups::table.filter(auto_topups::account_id.eq(account.as_str())))
                .execute(conn)?;
            diesel::insert_into(auto_topups::table)
                .values(AutoTopupRow::from(&settings))
                .execute(conn)?;
            Ok(settings)
        })
    }

    /// Pending top-up charges, oldest first.
    pub fn pending_topup_charges(&self, limit: i64) -> Result<Vec<TopupCharge>, StoreError> {
        self.store.records(
            auto_topup_charges::table
                .filter(auto_topup_charges::status.eq(ChargeStatus::Pending.as_str()))
                .order((auto_topup_charges::created_at, auto_topup_charges::id))
                .limit(limit),
        )
    }

    pub fn topup_charge(&self, id: &str) -> Result<Option<TopupCharge>, StoreError> {
        let mut conn = self.store.conn()?;
        charge_row(&mut conn, id, None)
    }

    /// The provider confirmed a top-up charge: credits its pack once (type `auto_topup`,
    /// keyed by the charge id as the order id) and ends the charge, in one transaction.
    pub fn confirm_topup_charge(
        &self,
        charge_id: &str,
        description: &str,
        now: Timestamp,
    ) -> Result<PaidOutcome, StoreError> {
        self.with_order(charge_id, OrderKind::AutoTopup, now, |conn, row| {
            let charge = charge_row(conn, charge_id, None)?
                .ok_or_else(|| StoreError::corrupt(format!("no auto top-up charge {charge_id}")))?;
            let order = PaidOrder {
                order_id: charge_id.to_owned(),
                kind: OrderKind::AutoTopup,
                account_id: charge.account_id.clone(),
                pack_id: charge.pack_id.clone(),
                credits: charge.credits,
                paid_cents: charge.price.get(),
                description: description.to_owned(),
                checkout_id: None,
            };
            let outcome = credit_order(conn, row, &order, now)?;
            if !matches!(outcome, PaidOutcome::Credited { .. }) {
                return Ok(outcome);
            }
            diesel::update(auto_topup_charges::table.filter(auto_topup_charges::id.eq(charge_id)))
                .set((
                    auto_topup_charges::status.eq(ChargeStatus::Paid.as_str()),
                    auto_topup_charges::settled_at.eq(now.millis()),
                ))
                .execute(conn)?;
            diesel::update(
                auto_topups::table
                    .filter(auto_topups::account_id.eq(charge.account_id.as_str()))
                    .filter(auto_topups::status.eq(TopupStatus::Pending.as_str())),
            )
            .set((
                auto_topups::status.eq(TopupStatus::Idle.as_str()),
                auto_topups::updated_at.eq(now.millis()),
            ))
            .execute(conn)?;
            Ok(outcome)
        })
    }

    /// The provider refused a top-up charge: it ends with `reason` and auto top-up of the
    /// account is paused with that reason (until the owner saves the settings again).
    pub fn fail_topup_charge(
        &self,
        charge_id: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.store.write(|conn| {
            let Some(charge) = charge_row(conn, charge_id, Some(ChargeStatus::Pending))? else {
                return Ok(false);
            };
            // The account's lock first, as every writer of its top-up rows takes it.
            let locked = lock_account(conn, &charge.account_id)?;
            diesel::update(auto_topup_charges::table.filter(auto_topup_charges::id.eq(charge_id)))
                .set((
                    auto_topup_charges::status.eq(ChargeStatus::Failed.as_str()),
                    auto_topup_charges::reason.eq(reason),
                    auto_topup_charges::settled_at.eq(now.millis()),
                ))
                .execute(conn)?;
            diesel::update(
                auto_topups::table.filter(auto_topups::account_id.eq(charge.account_id.as_str())),
            )
            .set((
                auto_topups::status.eq(TopupStatus::Paused.as_str()),
                auto_topups::paused_reason.eq(reason),
                auto_topups::updated_at.eq(now.millis()),
            ))
            .execute(conn)?;
            // The customer hears of it with this change (ADR 12).
            if locked {
                use crate::notifications::{enqueue_in_tx, json};
                let available = load_book(conn, &charge.account_id, now)?.available(now);
                let mut data = serde_json::Map::new();
                data.insert("chargeId".into(), json(&charge.id));
                data.insert("packId".into(), json(charge.pack_id.as_str()));
                data.insert("credits".into(), json(charge.credits));
                data.insert("priceCents".into(), json(charge.price.get()));
                data.insert("reason".into(), json(reason));
                enqueue_in_tx(
                    conn,
                    &charge.account_id,
                    ledger_core::Event::TopupFailed,
                    available,
                    data,
                    now,
                )?;
            }
            Ok(true)
        })
    }

    /// Applies the auto top-up rule to the account's balance now, in a transaction of its
    /// own. Every usage debit and capture already applies it in its own transaction; this
    /// is for checks outside a charge (tests, and resuming after settings change).
    pub fn after_charge_standalone(
        &self,
        account: &AccountId,
        now: Timestamp,
    ) -> Result<Option<TopupCharge>, StoreError> {
        self.store.write(|conn| {
            if !lock_account(conn, account)? {
                return Ok(None);
            }
            let Some(settings) = settings_in_tx(conn, account)? else {
                return Ok(None);
            };
            let available = load_book(conn, account, now)?.available(now);
            match topup::after_charge(account, &settings, available) {
                Some(start) => Ok(Some(start_in_tx(conn, &start, now)?)),
                None => Ok(None),
            }
        })
    }
}
