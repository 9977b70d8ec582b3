//! Plans made durable (ADR 9): subscriptions with a snapshot of their plan's terms, billing
//! periods rolled lazily under the account lock (exactly once per account and period:
//! the primary key of `plan_periods`), and the billed blocks of extra (`overage_items`).
//!
//! The rules are `ledger-core`'s ([`ledger_core::plan`], [`Operation::StartPeriod`],
//! [`Effect::BillOverage`](ledger_core::Effect::BillOverage)): this module loads, asks the
//! core and persists. Every write runs under the account's row lock in one transaction.

use diesel::prelude::*;
use ledger_core::plan::{self, HardLimitRefusal, Period, Plan, Role, Terms};
use ledger_core::{
    AccountId, Book, Cents, Context, Credits, EntryKind, GrantSource, GrantSpec, Memo, Operation,
    OveragePolicy, PlanContext, SubscriptionStatus, Timestamp,
};

use crate::error::StoreError;
use crate::ids::{new_id, RandomIds};
use crate::ledger::{load_book, lock_account, persist, TxError};
use crate::schema::{
    account_limits, accounts, entries, grants, overage_items, plan_periods, subscriptions,
};
use crate::Store;

/// Where the entries of a period's allowance come from (the contract's `source`).
pub const ALLOWANCE_SOURCE: &str = "Monthly Reset";
/// The source of the entry that writes a period's billed extra off.
pub const OVERAGE_SOURCE: &str = "Overage";

/// A payment provider's view of one subscription, for [`Plans::apply_provider_update`].
#[derive(Debug, Clone, Copy)]
pub struct ProviderUpdate<'a> {
    pub account: &'a AccountId,
    pub provider_subscription_id: &'a str,
    pub plan: &'a Plan,
    pub status: SubscriptionStatus,
    /// The provider's current period start: the subscription's anchor.
    pub period_start: Timestamp,
    /// The provider's `modified_at`, in microseconds (events can share a millisecond).
    pub modified_at_micros: i64,
}

/// What [`Plans::apply_provider_update`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderApplied {
    Changed,
    /// An update as old as, or older than, the one applied last: nothing changed.
    NotNewer,
    UnknownAccount,
}

/// Who manages a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagedBy {
    /// Set through the admin API, invoiced outside the service: changes apply at once.
    Operator,
    /// Bought through Polar (a later part).
    Polar,
}

ledger_core::spelled_enum!(ManagedBy, "subscription manager", Operator => "operator", Polar => "polar");

/// Where a billed block stands with the payment provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverageStatus {
    /// Not reported yet.
    Pending,
    /// Reported to the provider (Polar), which charges it with the subscription.
    Reported,
    /// No provider reports usage (demo or none): only recorded here.
    Recorded,
    /// Reporting failed for good.
    Failed,
}

ledger_core::spelled_enum!(OverageStatus, "overage item status",
    Pending => "pending", Reported => "reported", Recorded => "recorded", Failed => "failed");

/// A subscription with its plan's snapshot and the figures of its current period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSubscription {
    pub account_id: AccountId,
    pub id: String,
    /// The plan's terms as they were when the subscription was set.
    pub plan: Plan,
    pub status: SubscriptionStatus,
    /// The hard limit in force (the plan's limit until the owner raises it).
    pub hard_limit: Credits,
    pub max_hard_limit: Credits,
    /// `None` until the first period starts.
    pub period: Option<Period>,
    pub managed_by: ManagedBy,
    /// The payment provider's id of it, when the provider manages it.
    pub provider_subscription_id: Option<String>,
    /// Credits charged this period, net of refunds.
    pub used: Credits,
    /// This period's extra: beyond the allowance and the account's credits.
    pub extra: Credits,
    /// Blocks billed this period, net of blocks credited back.
    pub billed_blocks: i64,
    /// The money billed for them.
    pub charge: Cents,
}

impl PlanSubscription {
    /// `extra` rounded up to the next whole block: what is billed.
    pub fn extra_billed(&self) -> Credits {
        Credits::from_millis(
            self.billed_blocks
                .saturating_mul(self.plan.overage.block.millis()),
        )
    }
}

/// One billed (or credited-back) block of extra.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverageItem {
    pub id: String,
    pub account_id: AccountId,
    pub period_start: Timestamp,
    /// Its position in its period (1, 2, 3...).
    pub ordinal: i64,
    /// +1 billed, -1 credited back.
    pub blocks: i64,
    /// `blocks` × the block size.
    pub credits: Credits,
    pub amount: Cents,
    pub status: OverageStatus,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub reported_at: Option<Timestamp>,
}

/// Why a subscription change was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanRefusal {
    #[error("the account has no subscription")]
    NoSubscription,
    #[error(transparent)]
    HardLimit(HardLimitRefusal),
    /// A hard limit below what this period already used (extra may never pass the wall).
    #[error("hardLimit must be at least {used}, what this period already used")]
    BelowUse { used: Credits },
    #[error("the subscription is {status}: only a subscription in force changes plan")]
    NotInForce { status: SubscriptionStatus },
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = subscriptions)]
pub(crate) struct SubRow {
    id: String,
    plan_id: String,
    status: String,
    hard_limit: Option<i64>,
    plan_name: Option<String>,
    monthly_credits: i64,
    price_cents: i64,
    overage_cents_per_1000: i64,
    paying: bool,
    period_anchor: Option<i64>,
    period_start: Option<i64>,
    period_end: Option<i64>,
    managed_by: String,
    provider_subscription_id: Option<String>,
}

impl SubRow {
    fn status(&self) -> Result<SubscriptionStatus, StoreError> {
        self.status.parse().map_err(StoreError::corrupt)
    }

    /// The plan snapshot; `None` for a subscription set before plans were persisted.
    fn plan(&self) -> Option<Plan> {
        Some(Plan {
            id: self.plan_id.clone(),
            name: self.plan_name.clone()?,
            monthly_credits: Credits::from_millis(self.monthly_credits),
            price_cents: Cents::new(self.price_cents),
            overage: OveragePolicy::new(Cents::new(self.overage_cents_per_1000)),
            paying: self.paying,
        })
    }

    fn terms(&self) -> Result<Terms, StoreError> {
        Ok(Terms {
            status: self.status()?,
            hard_limit: self.hard_limit.map(Credits::from_millis),
        })
    }

    fn period(&self) -> Option<Period> {
        Some(Period {
            start: Timestamp::from_millis(self.period_start?),
            end: Timestamp::from_millis(self.period_end?),
        })
    }

    /// In force, with a snapshot, and its recorded period over (or not started).
    pub(crate) fn due(&self, now: Timestamp) -> bool {
        self.plan_name.is_some()
            && self.status().is_ok_and(SubscriptionStatus::stamps_plan)
            && (self.period_start.is_none() || self.period_end.is_none_or(|e| e <= now.millis()))
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = overage_items)]
struct ItemRow {
    id: String,
    account_id: String,
    period_start: i64,
    ordinal: i64,
    blocks: i64,
    credits: i64,
    amount_cents: i64,
    status: String,
    attempts: i64,
    last_error: Option<String>,
    next_attempt_at: Option<i64>,
    created_at: i64,
    reported_at: Option<i64>,
}

impl TryFrom<ItemRow> for OverageItem {
    type Error = StoreError;
    fn try_from(r: ItemRow) -> Result<OverageItem, StoreError> {
        Ok(OverageItem {
            status: r.status.parse().map_err(StoreError::corrupt)?,
            id: r.id,
            account_id: AccountId::new(r.account_id),
            period_start: Timestamp::from_millis(r.period_start),
            ordinal: r.ordinal,
            blocks: r.blocks,
            credits: Credits::from_millis(r.credits),
            amount: Cents::new(r.amount_cents),
            attempts: r.attempts,
            last_error: r.last_error,
            next_attempt_at: r.next_attempt_at.map(Timestamp::from_millis),
            created_at: Timestamp::from_millis(r.created_at),
            reported_at: r.reported_at.map(Timestamp::from_millis),
        })
    }
}

/// A plan in force for one operation: what [`ledger_core::Book::apply`] is given, and the
/// period its overage items belong to.
#[derive(Debug, Clone)]
pub(crate) struct InForce {
    pub context: PlanContext,
    period: Period,
}

/// Sets the account's subscription (see [`Plans::subscribe`]) inside a transaction that
/// already holds the account's lock.
fn subscribe_in_tx(
    conn: &mut crate::db::DbConnection,
    account: &AccountId,
    plan: &Plan,
    status: SubscriptionStatus,
    anchor: Option<Timestamp>,
    managed_by: ManagedBy,
    now: Timestamp,
) -> Result<PlanSubscription, TxError> {
    lock_account(conn, account)?;
    roll_in_tx(conn, account, now)?;
    match load_sub(conn, account)? {
        Some(sub) => {
            let was_in_force = sub.plan_name.is_some() && sub.status()?.stamps_plan();
            if let (true, false, Some(old)) = (was_in_force, status.stamps_plan(), sub.plan()) {
                write_off_now(conn, account, &sub, &old, now)?;
            }
            match sub.plan() {
                // A change of plan in force applies as the customer's would.
                Some(old) if old != *plan && was_in_force && status.stamps_plan() => {
                    change_in_tx(conn, account, &sub, &old, status, plan, now)?;
                }
                Some(old) if old == *plan => {}
                _ => set_snapshot(conn, account, plan, None, now)?,
            }
            diesel::update(
                subscriptions::table.filter(subscriptions::account_id.eq(account.as_str())),
            )
            .set((
                subscriptions::status.eq(status.as_str()),
                subscriptions::managed_by.eq(managed_by.as_str()),
            ))
            .execute(conn)?;
            if let Some(a) = anchor {
                let moved = Period::monthly(a, now).start.millis();
                let mut set_end = None;
                if sub.period_start.is_some_and(|s| s != moved) {
                    // The recorded period is over: the next touch starts the one
                    // the new anchor gives (closing this one properly).
                    set_end = Some(now.millis());
                }
                diesel::update(
                    subscriptions::table.filter(subscriptions::account_id.eq(account.as_str())),
                )
                .set(subscriptions::period_anchor.eq(a.millis()))
                .execute(conn)?;
                if let Some(end) = set_end {
                    diesel::update(
                        subscriptions::table.filter(subscriptions::account_id.eq(account.as_str())),
                    )
                    .set(subscriptions::period_end.eq(end))
                    .execute(conn)?;
                }
            }
        }
        None => {
            diesel::insert_into(subscriptions::table)
                .values((
                    subscriptions::account_id.eq(account.as_str()),
                    subscriptions::id.eq(new_id("sub_")),
                    subscriptions::plan_id.eq(&plan.id),
                    subscriptions::status.eq(status.as_str()),
                    subscriptions::created_at.eq(now.millis()),
                    subscriptions::updated_at.eq(now.millis()),
                    subscriptions::period_anchor.eq(anchor.unwrap_or(now).millis()),
                    subscriptions::managed_by.eq(managed_by.as_str()),
                ))
                .execute(conn)?;
            set_snapshot(conn, account, plan, None, now)?;
        }
    }
    stamp(conn, account, plan, status)?;
    roll_in_tx(conn, account, now)?;
    view_required(conn, account)
}

/// The account's subscription with the plan it snapshots, if it has one.
fn sub_and_plan(
    conn: &mut crate::db::DbConnection,
    id: &AccountId,
) -> Result<Option<(SubRow, Plan)>, TxError> {
    let Some(sub) = load_sub(conn, id)? else {
        return Ok(None);
    };
    Ok(sub.plan().map(|plan| (sub, plan)))
}

/// The account's subscription: a point read on the primary key, without `first()`'s
/// bound `LIMIT` (SQLite prepares such a statement again at every execution, ADR 18); the
/// write path runs it for every account of every batch.
fn load_sub(conn: &mut crate::db::DbConnection, id: &AccountId) -> Result<Option<SubRow>, TxError> {
    Ok(subscriptions::table
        .filter(subscriptions::account_id.eq(id.as_str()))
        .select(SubRow::as_select())
        .load(conn)?
        .into_iter()
        .next())
}

/// Called by the write path (`ledger::apply_warm`) under the account lock, before the book is
/// loaded: rolls the period when it is due, then says what the plan in force adds to the
/// operation (`None`: no plan in force, the account row's overdraft limit applies).
/// Also says whether a period was started (which wrote to the account's book).
pub(crate) fn before_operation(
    conn: &mut crate::db::DbConnection,
    id: &AccountId,
    now: Timestamp,
) -> Result<(bool, Option<InForce>), TxError> {
    let rolled = roll_in_tx(conn, id, now)?;
    Ok((rolled, in_force(conn, id)?))
}

impl InForce {
    /// Whether `now` is past the period this was read for (the next operation must read
    /// the plan again, and maybe start a period).
    pub(crate) fn ended(&self, now: Timestamp) -> bool {
        now >= self.period.end
    }
}

fn in_force(
    conn: &mut crate::db::DbConnection,
    id: &AccountId,
) -> Result<Option<InForce>, TxError> {
    let Some(sub) = load_sub(conn, id)? else {
        return Ok(None);
    };
    let (Some(plan), Some(period)) = (sub.plan(), sub.period()) else {
        return Ok(None);
    };
    let terms = sub.terms()?;
    if !terms.status.stamps_plan() {
        return Ok(None);
    }
    // Extra written off in this very period (cancelled or changed to a free plan, then
    // subscribed again) was billed and settled: its blocks are not the live overdraft's.
    let settled = written_off(conn, id, period.start)?;
    let billed_blocks =
        billed_blocks(conn, id, period.start)? - plan::blocks_for(&plan.overage, settled);
    Ok(Some(InForce {
        context: PlanContext {
            overage: plan.overage,
            wall: plan::wall(&plan, &terms),
            billed_blocks,
        },
        period,
    }))
}

/// The wall of the account's plan in force (zero without one): how far its book may be
/// overdrawn, for `verify`.
pub(crate) fn wall_in_force(
    conn: &mut crate::db::DbConnection,
    account_id: &str,
) -> Result<Credits, TxError> {
    Ok(in_force(conn, &AccountId::new(account_id))?.map_or(Credits::ZERO, |p| p.context.wall))
}

fn written_off(
    conn: &mut crate::db::DbConnection,
    id: &AccountId,
    period_start: Timestamp,
) -> Result<Credits, TxError> {
    let w: Option<i64> = plan_periods::table
        .filter(plan_periods::account_id.eq(id.as_str()))
        .filter(plan_periods::period_start.eq(period_start.millis()))
        .select(plan_periods::extra_written_off)
        .first(conn)
        .optional()?;
    Ok(Credits::from_millis(w.unwrap_or(0)))
}

fn billed_blocks(
    conn: &mut crate::db::DbConnection,
    id: &AccountId,
    period_start: Timestamp,
) -> Result<i64, TxError> {
    let blocks: Vec<i64> = overage_items::table
        .filter(overage_items::account_id.eq(id.as_str()))
        .filter(overage_items::period_start.eq(period_start.millis()))
        .select(overage_items::blocks)
        .load(conn)?;
    Ok(blocks.iter().sum())
}

/// Persists [`ledger_core::Effect::BillOverage`]: one `pending` item per block (`blocks`
/// > 0 billed, < 0 credited back), numbered on from the period's last item.
pub(crate) fn bill_overage(
    conn: &mut crate::db::DbConnection,
    id: &AccountId,
    plan: Option<&InForce>,
    blocks: i64,
    available: Credits,
    now: Timestamp,
) -> Result<(), TxError> {
    let Some(plan) = plan else {
        return Err(StoreError::corrupt("an overage block without a plan in force").into());
    };
    let last: Option<i64> = overage_items::table
        .filter(overage_items::account_id.eq(id.as_str()))
        .filter(overage_items::period_start.eq(plan.period.start.millis()))
        .select(diesel::dsl::max(overage_items::ordinal))
        .first(conn)?;
    let mut ordinal = last.unwrap_or(0);
    let sign = blocks.signum();
    let policy = plan.context.overage;
    for _ in 0..blocks.unsigned_abs() {
        ordinal += 1;
        diesel::insert_into(overage_items::table)
            .values((
                overage_items::id.eq(plan::overage_item_id(id.as_str(), plan.period, ordinal)),
                overage_items::account_id.eq(id.as_str()),
                overage_items::period_start.eq(plan.period.start.millis()),
                overage_items::ordinal.eq(ordinal),
                overage_items::blocks.eq(sign),
                overage_items::credits.eq(policy.block.millis() * sign),
                overage_items::amount_cents.eq(policy.cents_per_block.get() * sign),
                overage_items::status.eq(OverageStatus::Pending.as_str()),
                overage_items::attempts.eq(0),
                overage_items::created_at.eq(now.millis()),
            ))
            .execute(conn)?;
    }
    // Billed blocks (not a block given back) tell the customer (ADR 12).
    if blocks > 0 {
        use crate::notifications::json;
        let mut data = serde_json::Map::new();
        data.insert("blocks".into(), json(blocks));
        data.insert(
            "credits".into(),
            json(Credits::from_millis(policy.block.millis() * blocks)),
        );
        data.insert(
            "amountCents".into(),
            json(policy.cents_per_block.get() * blocks),
        );
        data.insert("periodStart".into(), json(plan.period.start.rfc3339()));
        crate::notifications::enqueue_in_tx(
            conn,
            id,
            ledger_core::Event::OverageBilled,
            available,
            data,
            now,
        )?;
    }
    Ok(())
}

/// Starts the current period when the subscription's recorded one has ended (or none
/// started yet). Runs under the account lock.
fn roll_in_tx(
    conn: &mut crate::db::DbConnection,
    id: &AccountId,
    now: Timestamp,
) -> Result<bool, TxError> {
    let Some(sub) = load_sub(conn, id)? else {
        return Ok(false);
    };
    if !sub.due(now) {
        return Ok(false);
    }
    let Some(plan) = sub.plan() else {
        return Ok(false);
    };
    let anchor = sub.period_anchor.map_or(now, Timestamp::from_millis);
    start_period(conn, id, &sub, &plan, Period::monthly(anchor, now), now)?;
    Ok(true)
}

/// Opens `period`: the core's `StartPeriod` (expiries, the write-off of the closing
/// period's extra, the allowance), the `plan_periods` row that makes the grant happen once,
/// what was written off on the closing period's row, and the subscription's period.
fn start_period(
    conn: &mut crate::db::DbConnection,
    id: &AccountId,
    sub: &SubRow,
    plan: &Plan,
    period: Period,
    now: Timestamp,
) -> Result<(), TxError> {
    let granted_before = plan_periods::table
        .filter(plan_periods::account_id.eq(id.as_str()))
        .filter(plan_periods::period_start.eq(period.start.millis()))
        .count()
        .get_result::<i64>(conn)?
        > 0;
    let allowance = if granted_before {
        None
    } else {
        plan::allowance(plan, period)
    };
    let (mut book, _) = load_book(conn, id, None, &[])?;
    let closing_extra = book.overdraft();
    let allowance_memo =
        Memo::new(format!("Monthly allowance: {}", plan.name)).source(ALLOWANCE_SOURCE);
    apply_start_period(conn, id, &mut book, allowance, allowance_memo, plan, now)?;
    if let Some(old) = sub.period_start {
        record_write_off(conn, id, old, closing_extra)?;
    }
    if !granted_before {
        diesel::insert_into(plan_periods::table)
            .values((
                plan_periods::account_id.eq(id.as_str()),
                plan_periods::period_start.eq(period.start.millis()),
                plan_periods::period_end.eq(period.end.millis()),
                plan_periods::plan_id.eq(&plan.id),
                plan_periods::allowance.eq(plan.monthly_credits.millis().max(0)),
                plan_periods::extra_written_off.eq(0),
                plan_periods::created_at.eq(now.millis()),
            ))
            .execute(conn)?;
    }
    diesel::update(subscriptions::table.filter(subscriptions::account_id.eq(id.as_str())))
        .set((
            subscriptions::period_anchor.eq(sub.period_anchor.unwrap_or(period.start.millis())),
            subscriptions::period_start.eq(period.start.millis()),
            subscriptions::period_end.eq(period.end.millis()),
            subscriptions::updated_at.eq(now.millis()),
        ))
        .execute(conn)?;
    Ok(())
}

fn write_off_memo(plan: &Plan) -> Memo {
    Memo::new(format!("Extra usage billed with the plan {}", plan.name)).source(OVERAGE_SOURCE)
}

fn record_write_off(
    conn: &mut crate::db::DbConnection,
    id: &AccountId,
    period_start: i64,
    extra: Credits,
) -> Result<(), TxError> {
    if !extra.is_positive() {
        return Ok(());
    }
    // A second write-off in the same period (cancelled or changed to free, subscribed
    // again, then the period closed) was billed in blocks of its own: what was written off
    // before counts in the whole blocks it was billed in, so the period's blocks stay the
    // rounded figure `verify` checks. A single write-off, the usual case, is exact.
    let before = written_off(conn, id, Timestamp::from_millis(period_start))?;
    let before = if before.is_positive() {
        OveragePolicy::new(Cents::ZERO)
            .checked_billable(before)
            .unwrap_or(Credits::MAX_BALANCE)
    } else {
        before
    };
    let total = before.checked_add(extra).unwrap_or(Credits::MAX_BALANCE);
    diesel::update(
        plan_periods::table
            .filter(plan_periods::account_id.eq(id.as_str()))
            .filter(plan_periods::period_start.eq(period_start)),
    )
    .set(plan_periods::extra_written_off.eq(total.millis()))
    .execute(conn)?;
    Ok(())
}

/// Applies the core's `StartPeriod` to `book` (`allowance` granted with `allowance_memo`,
/// the extra written off under `plan`'s memo) and persists what it changed; a refusal of
/// the core is [`StoreError::Refused`].
fn apply_start_period(
    conn: &mut crate::db::DbConnection,
    id: &AccountId,
    book: &mut Book,
    allowance: Option<GrantSpec>,
    allowance_memo: Memo,
    plan: &Plan,
    now: Timestamp,
) -> Result<(), TxError> {
    let applied = book.apply(
        Operation::StartPeriod {
            allowance,
            allowance_memo,
            write_off_memo: write_off_memo(plan),
        },
        &Context::default(),
        now,
        &mut RandomIds,
    );
    if let Err(rule) = applied.result {
        return Err(StoreError::Refused(rule).into());
    }
    persist(conn, id, book.take_changes())?;
    crate::notifications::book_written(conn, id, book.available(now), now)?;
    Ok(())
}

/// Writes the extra off at once (cancelling, changing to a free plan): it was billed as
/// it was used. The core's `StartPeriod` with no allowance does exactly that.
fn write_off_now(
    conn: &mut crate::db::DbConnection,
    id: &AccountId,
    sub: &SubRow,
    plan: &Plan,
    now: Timestamp,
) -> Result<(), TxError> {
    let (mut book, _) = load_book(conn, id, None, &[])?;
    let extra = book.overdraft();
    if !extra.is_positive() {
        return Ok(());
    }
    apply_start_period(conn, id, &mut book, None, Memo::new(""), plan, now)?;
    if let Some(start) = sub.period_start {
        record_write_off(conn, id, start, extra)?;
    }
    Ok(())
}

fn set_snapshot(
    conn: &mut crate::db::DbConnection,
    id: &AccountId,
    plan: &Plan,
    hard_limit: Option<i64>,
    now: Timestamp,
) -> Result<(), TxError> {
    diesel::update(subscriptions::table.filter(subscriptions::account_id.eq(id.as_str())))
        .set((
            subscriptions::plan_id.eq(&plan.id),
            subscriptions::plan_name.eq(&plan.name),
            subscriptions::monthly_credits.eq(plan.monthly_credits.millis()),
            subscriptions::price_cents.eq(plan.price_cents.get()),
            subscriptions::overage_cents_per_1000.eq(plan.overage.cents_per_block.get()),
            subscriptions::paying.eq(plan.paying),
            subscriptions::hard_limit.eq(hard_limit),
            subscriptions::updated_at.eq(now.millis()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Stamps the plan's name on the account's new entries while it is in force.
fn stamp(
    conn: &mut crate::db::DbConnection,
    id: &AccountId,
    plan: &Plan,
    status: SubscriptionStatus,
) -> Result<(), TxError> {
    diesel::update(accounts::table.filter(accounts::id.eq(id.as_str())))
        .set(accounts::plan_name.eq(status.stamps_plan().then_some(plan.name.as_str())))
        .execute(conn)?;
    Ok(())
}

/// The subscription view of `id`, read on `conn` (inside a transaction).
fn view_in_tx(
    conn: &mut crate::db::DbConnection,
    id: &AccountId,
) -> Result<Option<PlanSubscription>, TxError> {
    let Some(sub) = load_sub(conn, id)? else {
        return Ok(None);
    };
    let Some(plan) = sub.plan() else {
        return Ok(None);
    };
    let terms = sub.terms()?;
    let period = sub.period();
    let max_hard_limit = account_limits::table
        .filter(account_limits::account_id.eq(id.as_str()))
        .select(account_limits::max_hard_limit)
        .first::<i64>(conn)
        .optional()?
        .map_or(plan::DEFAULT_MAX_HARD_LIMIT, Credits::from_millis);
    let overdraft = accounts::table
        .filter(accounts::id.eq(id.as_str()))
        .select(accounts::overdraft)
        .first::<i64>(conn)?;
    let (mut used, mut extra, mut billed_blocks, mut charge) = (0i64, 0i64, 0i64, 0i64);
    if let Some(p) = period {
        let amounts: Vec<i64> = entries::table
            .filter(entries::account_id.eq(id.as_str()))
            .filter(entries::created_at.ge(p.start.millis()))
            .filter(entries::kind.eq_any([EntryKind::Usage.as_str(), EntryKind::Refund.as_str()]))
            .select(entries::amount)
            .load(conn)?;
        used = amounts
            .iter()
            .fold(0i64, |s, a| s.saturating_sub(*a))
            .max(0);
        let written_off: Option<i64> = plan_periods::table
            .filter(plan_periods::account_id.eq(id.as_str()))
            .filter(plan_periods::period_start.eq(p.start.millis()))
            .select(plan_periods::extra_written_off)
            .first(conn)
            .optional()?;
        extra = written_off.unwrap_or(0).saturating_add(overdraft);
        let items: Vec<(i64, i64)> = overage_items::table
            .filter(overage_items::account_id.eq(id.as_str()))
            .filter(overage_items::period_start.eq(p.start.millis()))
            .select((overage_items::blocks, overage_items::amount_cents))
            .load(conn)?;
        billed_blocks = items.iter().map(|i| i.0).sum();
        charge = items.iter().map(|i| i.1).sum();
    }
    Ok(Some(PlanSubscription {
        account_id: id.clone(),
        id: sub.id.clone(),
        hard_limit: plan::hard_limit(&plan, &terms),
        status: terms.status,
        max_hard_limit,
        period,
        managed_by: sub.managed_by.parse().map_err(StoreError::corrupt)?,
        provider_subscription_id: sub.provider_subscription_id.clone(),
        used: Credits::from_millis(used),
        extra: Credits::from_millis(extra),
        billed_blocks,
        charge: Cents::new(charge),
        plan,
    }))
}

fn view_required(
    conn: &mut crate::db::DbConnection,
    id: &AccountId,
) -> Result<PlanSubscription, TxError> {
    view_in_tx(conn, id)?
        .ok_or_else(|| StoreError::corrupt("a subscription vanished inside its transaction").into())
}

/// What `verify` finds wrong with the plan periods of one account (see
/// [`plan::period_violations`]): one allowance per period, extra within the wall, billed
/// blocks equal to the rounded extra. The extra of the open period is what was written
/// off plus the overdraft now; the part written off was within the wall in force when it
/// was used, so the wall the open period is checked against is today's wall plus it.
/// A closed period's wall is not kept, so only its allowances and blocks are checked.
pub(crate) fn period_violations(
    conn: &mut crate::db::DbConnection,
    account_id: &str,
    overdraft: Credits,
) -> Result<Vec<String>, TxError> {
    let id = AccountId::new(account_id);
    let periods: Vec<(i64, i64, i64)> = plan_periods::table
        .filter(plan_periods::account_id.eq(account_id))
        .order(plan_periods::period_start.asc())
        .select((
            plan_periods::period_start,
            plan_periods::period_end,
            plan_periods::extra_written_off,
        ))
        .load(conn)?;
    if periods.is_empty() {
        return Ok(Vec::new());
    }
    let sub = load_sub(conn, &id)?;
    let plan = sub.as_ref().and_then(SubRow::plan);
    let policy = plan
        .as_ref()
        .map_or(OveragePolicy::new(Cents::ZERO), |p| p.overage);
    let wall_now = match (&sub, &plan) {
        (Some(s), Some(p)) => plan::wall(p, &s.terms()?),
        _ => Credits::ZERO,
    };
    let open = sub.as_ref().and_then(|s| s.period_start);
    let mut out = Vec::new();
    for (start, end, written_off) in periods {
        let period = Period {
            start: Timestamp::from_millis(start),
            end: Timestamp::from_millis(end),
        };
        let allowances = entries::table
            .filter(entries::account_id.eq(account_id))
            .filter(entries::kind.eq(EntryKind::Allowance.as_str()))
            .filter(entries::created_at.ge(start))
            .filter(entries::created_at.lt(end))
            .count()
            .get_result::<i64>(conn)?;
        let written_off = Credits::from_millis(written_off);
        let (extra, wall) = if open == Some(start) {
            // What was written off was billed in its own blocks, the live overdraft in
            // the blocks after them: the written-off part counts rounded up to its blocks.
            let settled = policy
                .checked_billable(written_off)
                .unwrap_or(Credits::MAX_BALANCE);
            let extra = settled
                .checked_add(overdraft)
                .unwrap_or(Credits::MAX_BALANCE);
            (
                extra,
                wall_now
                    .checked_add(settled)
                    .unwrap_or(Credits::MAX_BALANCE),
            )
        } else {
            (written_off, written_off)
        };
        let audit = plan::PeriodAudit {
            period,
            allowances: usize::try_from(allowances).unwrap_or(usize::MAX),
            extra,
            wall,
            billed_blocks: billed_blocks(conn, &id, period.start)?,
        };
        out.extend(plan::period_violations(account_id, &policy, &audit));
    }
    Ok(out)
}

/// Applies a change of plan to a subscription in force (see [`Plans::change_plan`]).
fn change_in_tx(
    conn: &mut crate::db::DbConnection,
    account: &AccountId,
    sub: &SubRow,
    from: &Plan,
    status: SubscriptionStatus,
    to: &Plan,
    now: Timestamp,
) -> Result<(), TxError> {
    let change = plan::plan_change(from, to);
    if change.upgrade {
        // The new period starts now; an upgrade in the very millisecond the old period
        // started starts it a millisecond later, so each period keeps its one allowance.
        let now = if sub.period_start == Some(now.millis()) {
            now.plus_millis(1)
        } else {
            now
        };
        // The old allowance expires now: its grants end at this instant, and the
        // core's StartPeriod (sweeping first) expires what is left of them.
        diesel::update(
            grants::table
                .filter(grants::account_id.eq(account.as_str()))
                .filter(grants::source.eq(GrantSource::Allowance.as_str()))
                .filter(crate::ledger::open_grants())
                .filter(
                    grants::expires_at
                        .is_null()
                        .or(grants::expires_at.gt(now.millis())),
                ),
        )
        .set(grants::expires_at.eq(now.millis()))
        .execute(conn)?;
        if let Some(start) = sub.period_start {
            diesel::update(
                plan_periods::table
                    .filter(plan_periods::account_id.eq(account.as_str()))
                    .filter(plan_periods::period_start.eq(start))
                    .filter(plan_periods::period_end.gt(now.millis())),
            )
            .set(plan_periods::period_end.eq(now.millis()))
            .execute(conn)?;
        }
        set_snapshot(conn, account, to, None, now)?;
        diesel::update(subscriptions::table.filter(subscriptions::account_id.eq(account.as_str())))
            .set(subscriptions::period_anchor.eq(now.millis()))
            .execute(conn)?;
        stamp(conn, account, to, status)?;
        let sub = load_sub(conn, account)?
            .ok_or_else(|| StoreError::corrupt("a subscription vanished"))?;
        start_period(conn, account, &sub, to, Period::monthly(now, now), now)?;
    } else {
        if change.bills_extra_now {
            write_off_now(conn, account, sub, from, now)?;
        }
        let hard_limit = if to.paying { sub.hard_limit } else { None };
        set_snapshot(conn, account, to, hard_limit, now)?;
        stamp(conn, account, to, status)?;
    }
    Ok(())
}

/// Plans: subscriptions, hard limits, changes, periods and overage items: `store.plans()`.
#[derive(Debug, Clone, Copy)]
pub struct Plans<'a> {
    store: &'a Store,
}

impl Store {
    /// Plans: subscriptions, hard limits, plan changes, periods and overage items.
    pub fn plans(&self) -> Plans<'_> {
        Plans { store: self }
    }
}

impl Plans<'_> {
    /// Runs `f` in a write transaction under the account's lock, once the account's period
    /// is rolled in (so `f` sees the period in force).
    fn write_rolled<T>(
        &self,
        account: &AccountId,
        now: Timestamp,
        f: impl FnOnce(&mut crate::db::DbConnection) -> Result<T, TxError>,
    ) -> Result<T, StoreError> {
        self.store.write(|conn| {
            lock_account(conn, account)?;
            roll_in_tx(conn, account, now)?;
            f(conn)
        })
    }

    /// Sets the account's operator-managed subscription to `plan` (snapshotting its terms)
    /// with `status`. `anchor` aligns the billing periods (they count whole months from
    /// it); without one a new subscription is anchored now and an existing one keeps its
    /// periods. A different plan for a subscription in force is a change of plan (the
    /// rules of [`Plans::change_plan`]); otherwise it resets the hard limit. Going out of
    /// force writes the extra off (billed); coming into force starts the current period.
    pub fn subscribe(
        &self,
        account: &AccountId,
        plan: &Plan,
        status: SubscriptionStatus,
        anchor: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<PlanSubscription, StoreError> {
        self.store.write(|conn| {
            lock_account(conn, account)?;
            subscribe_in_tx(
                conn,
                account,
                plan,
                status,
                anchor,
                ManagedBy::Operator,
                now,
            )
        })
    }

    /// Applies a payment provider's view of a subscription (its webhooks, or a
    /// reconciliation), only when `modified_at_micros` is newer than the one applied last
    /// for that provider subscription: an older event never undoes a newer one, and the
    /// same event twice changes nothing. The anchor is the provider's current period start.
    pub fn apply_provider_update(
        &self,
        update: &ProviderUpdate<'_>,
        now: Timestamp,
    ) -> Result<ProviderApplied, StoreError> {
        let account = update.account;
        self.store.write(|conn| {
            match lock_account(conn, account) {
                Err(TxError(StoreError::AccountNotFound { .. })) => {
                    return Ok(ProviderApplied::UnknownAccount)
                }
                other => other?,
            }
            let seen: Option<(Option<String>, Option<i64>)> = subscriptions::table
                .filter(subscriptions::account_id.eq(account.as_str()))
                .select((
                    subscriptions::provider_subscription_id,
                    subscriptions::provider_modified_at,
                ))
                .first(conn)
                .optional()?;
            if let Some((Some(id), Some(at))) = &seen {
                if id == update.provider_subscription_id && *at >= update.modified_at_micros {
                    return Ok(ProviderApplied::NotNewer);
                }
            }
            subscribe_in_tx(
                conn,
                account,
                update.plan,
                update.status,
                Some(update.period_start),
                ManagedBy::Polar,
                now,
            )?;
            diesel::update(
                subscriptions::table.filter(subscriptions::account_id.eq(account.as_str())),
            )
            .set((
                subscriptions::provider_subscription_id.eq(update.provider_subscription_id),
                subscriptions::provider_modified_at.eq(update.modified_at_micros),
            ))
            .execute(conn)?;
            Ok(ProviderApplied::Changed)
        })
    }

    /// The account's subscription with its current period's figures; a period that has
    /// ended is rolled first (one write, once per period).
    pub fn subscription(
        &self,
        account: &AccountId,
        now: Timestamp,
    ) -> Result<Option<PlanSubscription>, StoreError> {
        self.roll_if_due(account, now)?;
        self.store.read(|conn| view_in_tx(conn, account))
    }

    /// Starts the account's current period if its recorded one has ended (a cheap read
    /// when it has not). True when a period was started.
    pub fn roll_if_due(&self, account: &AccountId, now: Timestamp) -> Result<bool, StoreError> {
        let due = {
            let mut conn = self.store.conn()?;
            subscriptions::table
                .filter(subscriptions::account_id.eq(account.as_str()))
                .select(SubRow::as_select())
                .first(&mut *conn)
                .optional()?
                .is_some_and(|s| s.due(now))
        };
        if !due {
            return Ok(false);
        }
        self.store.write(|conn| {
            lock_account(conn, account)?;
            roll_in_tx(conn, account, now)
        })
    }

    /// Accounts whose subscription is in force and whose period has ended, at most
    /// `limit` of them (for the sweeper).
    pub fn due(&self, now: Timestamp, limit: i64) -> Result<Vec<AccountId>, StoreError> {
        let mut conn = self.store.conn()?;
        let in_force = [
            SubscriptionStatus::Active.as_str(),
            SubscriptionStatus::PastDue.as_str(),
        ];
        Ok(subscriptions::table
            .filter(subscriptions::status.eq_any(in_force))
            .filter(subscriptions::plan_name.is_not_null())
            .filter(
                subscriptions::period_end
                    .is_null()
                    .or(subscriptions::period_end.le(now.millis())),
            )
            .order(subscriptions::period_end.asc())
            .limit(limit)
            .select(subscriptions::account_id)
            .load::<String>(&mut *conn)?
            .into_iter()
            .map(AccountId::new)
            .collect())
    }

    /// Rolls every due subscription (in batches of `batch`); returns how many periods
    /// started. Each account rolls in its own transaction.
    pub fn roll_due(&self, now: Timestamp, batch: i64) -> Result<usize, StoreError> {
        let mut started = 0;
        loop {
            let due = self.due(now, batch)?;
            let mut progressed = false;
            for account in &due {
                match self.roll_if_due(account, now) {
                    Ok(true) => {
                        started += 1;
                        progressed = true;
                    }
                    Ok(false) => {}
                    // One account that cannot roll does not stop the others.
                    Err(e) if !e.is_unavailable() => {
                        tracing::warn!(account_id = %account, error = %e, "could not start the plan period");
                    }
                    Err(e) => return Err(e),
                }
            }
            if !progressed || (due.len() as i64) < batch {
                return Ok(started);
            }
        }
    }

    /// Sets the hard limit (seed 002: owners of paying plans, between the plan's limit and
    /// the account's maximum, and never below what this period already used).
    pub fn set_hard_limit(
        &self,
        account: &AccountId,
        role: Role,
        requested: Credits,
        now: Timestamp,
    ) -> Result<Result<PlanSubscription, PlanRefusal>, StoreError> {
        self.write_rolled(account, now, |conn| {
            let Some(view) = view_in_tx(conn, account)? else {
                return Ok(Err(PlanRefusal::NoSubscription));
            };
            let terms = Terms {
                status: view.status,
                hard_limit: Some(view.hard_limit),
            };
            if let Err(refusal) =
                plan::check_hard_limit(&view.plan, &terms, role, requested, view.max_hard_limit)
            {
                return Ok(Err(PlanRefusal::HardLimit(refusal)));
            }
            let used = view
                .plan
                .limit()
                .checked_add(view.extra)
                .unwrap_or(Credits::MAX_BALANCE);
            if requested < used {
                return Ok(Err(PlanRefusal::BelowUse { used }));
            }
            diesel::update(
                subscriptions::table.filter(subscriptions::account_id.eq(account.as_str())),
            )
            .set((
                subscriptions::hard_limit.eq(requested.millis()),
                subscriptions::updated_at.eq(now.millis()),
            ))
            .execute(conn)?;
            Ok(Ok(view_required(conn, account)?))
        })
    }

    /// Changes an operator-managed subscription in force to `to` at once (seed 002):
    /// - an upgrade resets the hard limit and starts a new period now: the old allowance
    ///   expires, the extra is written off (billed), the new allowance is granted;
    /// - a change to a free plan writes the extra off at once;
    /// - other downgrades apply the new terms now and the new allowance from the next
    ///   period.
    pub fn change_plan(
        &self,
        account: &AccountId,
        to: &Plan,
        now: Timestamp,
    ) -> Result<Result<PlanSubscription, PlanRefusal>, StoreError> {
        self.write_rolled(account, now, |conn| {
            let Some((sub, from)) = sub_and_plan(conn, account)? else {
                return Ok(Err(PlanRefusal::NoSubscription));
            };
            let status = sub.status()?;
            if !status.stamps_plan() {
                return Ok(Err(PlanRefusal::NotInForce { status }));
            }
            if from == *to {
                return Ok(Ok(view_required(conn, account)?));
            }
            change_in_tx(conn, account, &sub, &from, status, to, now)?;
            Ok(Ok(view_required(conn, account)?))
        })
    }

    /// Cancels: the extra is written off (billed) first, then the subscription is
    /// `cancelled`; no further allowance is granted.
    pub fn cancel(
        &self,
        account: &AccountId,
        now: Timestamp,
    ) -> Result<Result<PlanSubscription, PlanRefusal>, StoreError> {
        self.write_rolled(account, now, |conn| {
            let Some((sub, plan)) = sub_and_plan(conn, account)? else {
                return Ok(Err(PlanRefusal::NoSubscription));
            };
            write_off_now(conn, account, &sub, &plan, now)?;
            diesel::update(
                subscriptions::table.filter(subscriptions::account_id.eq(account.as_str())),
            )
            .set((
                subscriptions::status.eq(SubscriptionStatus::Cancelled.as_str()),
                subscriptions::hard_limit.eq(None::<i64>),
                subscriptions::updated_at.eq(now.millis()),
            ))
            .execute(conn)?;
            stamp(conn, account, &plan, SubscriptionStatus::Cancelled)?;
            Ok(Ok(view_required(conn, account)?))
        })
    }

    /// The account's overage items, newest first.
    pub fn overage_items(&self, account: &AccountId) -> Result<Vec<OverageItem>, StoreError> {
        let mut conn = self.store.conn()?;
        overage_items::table
            .filter(overage_items::account_id.eq(account.as_str()))
            .order((
                overage_items::period_start.desc(),
                overage_items::ordinal.desc(),
            ))
            .select(ItemRow::as_select())
            .load(&mut *conn)?
            .into_iter()
            .map(OverageItem::try_from)
            .collect()
    }

    /// Pending items due for a report (never tried, or their retry time has come),
    /// oldest first.
    pub fn pending_items(
        &self,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<OverageItem>, StoreError> {
        let mut conn = self.store.conn()?;
        overage_items::table
            .filter(overage_items::status.eq(OverageStatus::Pending.as_str()))
            .filter(
                overage_items::next_attempt_at
                    .is_null()
                    .or(overage_items::next_attempt_at.le(now.millis())),
            )
            .order((overage_items::created_at.asc(), overage_items::id.asc()))
            .limit(limit)
            .select(ItemRow::as_select())
            .load(&mut *conn)?
            .into_iter()
            .map(OverageItem::try_from)
            .collect()
    }

    /// Marks a pending item: `Reported`/`Recorded` (done), `Failed` (for good), or
    /// `Pending` again with the error and the time of its next attempt. False when the
    /// item is not pending (already marked by another process).
    pub fn mark_item(
        &self,
        item_id: &str,
        status: OverageStatus,
        error: Option<&str>,
        next_attempt_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.store.write(|conn| {
            let done = matches!(status, OverageStatus::Reported | OverageStatus::Recorded);
            let n = diesel::update(
                overage_items::table
                    .filter(overage_items::id.eq(item_id))
                    .filter(overage_items::status.eq(OverageStatus::Pending.as_str())),
            )
            .set((
                overage_items::status.eq(status.as_str()),
                overage_items::attempts.eq(overage_items::attempts + 1),
                overage_items::last_error.eq(error),
                overage_items::next_attempt_at.eq(next_attempt_at.map(Timestamp::millis)),
                overage_items::reported_at.eq(done.then_some(now.millis())),
            ))
            .execute(conn)?;
            Ok(n > 0)
        })
    }

    /// Marks pending items `recorded` (of one account, or all): what the api-server does
    /// when no provider reports usage. Returns how many.
    pub fn record_pending(
        &self,
        account: Option<&AccountId>,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        self.store.write(|conn| {
            let pending = overage_items::table
                .filter(overage_items::status.eq(OverageStatus::Pending.as_str()))
                .into_boxed();
            let ids: Vec<String> = match account {
                Some(a) => pending.filter(overage_items::account_id.eq(a.as_str())),
                None => pending,
            }
            .select(overage_items::id)
            .load(conn)?;
            if ids.is_empty() {
                return Ok(0);
            }
            let n = diesel::update(
                overage_items::table
                    .filter(overage_items::id.eq_any(&ids))
                    .filter(overage_items::status.eq(OverageStatus::Pending.as_str())),
            )
            .set((
                overage_items::status.eq(OverageStatus::Recorded.as_str()),
                overage_items::reported_at.eq(now.millis()),
            ))
            .execute(conn)?;
            Ok(n)
        })
    }
}
