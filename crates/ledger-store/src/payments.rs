//! Payments made durable: webhook deliveries, provider orders, refunds, checkouts, the
//! demo signing secret and auto top-up (see `crates/payments` for the rules around them).
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
//! ([`Store::refuse_order`], `payment_refusals`), under the same order lock: a refused
//! order is never credited automatically, and stays listed for an operator.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use ledger_core::{
    AccountId, Book, Credits, EntryId, EntryKind, GrantSource, GrantSpec, LedgerError, Memo,
    PackId, SpendPolicy, Timestamp,
};

use crate::db::DbConnection;
use crate::error::StoreError;
use crate::ids::{new_id, RandomIds};
use crate::ledger::{persist, TxError};
use crate::Store;

/// Diesel's view of the payment tables (`migrations/*/2026-11-21-000003_payments`,
/// `migrations/*/2026-12-01-000802_payment_refusals`).
pub mod tables {
    diesel::table! {
        payment_secrets (name) {
            name -> Text,
            value -> Text,
            created_at -> BigInt,
        }
    }

    diesel::table! {
        payment_checkouts (id) {
            id -> Text,
            provider -> Text,
            account_id -> Text,
            pack_id -> Text,
            credits -> BigInt,
            price_cents -> BigInt,
            url -> Text,
            status -> Text,
            order_id -> Nullable<Text>,
            created_at -> BigInt,
            paid_at -> Nullable<BigInt>,
            product_id -> Nullable<Text>,
            currency -> Nullable<Text>,
        }
    }

    diesel::table! {
        payment_refusals (order_id) {
            order_id -> Text,
            source -> Text,
            reason -> Text,
            checkout_id -> Nullable<Text>,
            account_id -> Nullable<Text>,
            order_json -> Text,
            first_seen_at -> BigInt,
            last_seen_at -> BigInt,
            times_seen -> BigInt,
        }
    }

    diesel::table! {
        webhook_deliveries (webhook_id) {
            webhook_id -> Text,
            event_type -> Text,
            body -> Text,
            received_at -> BigInt,
            attempts -> BigInt,
            processed_at -> Nullable<BigInt>,
            outcome -> Nullable<Text>,
        }
    }

    diesel::table! {
        payment_orders (order_id) {
            order_id -> Text,
            kind -> Text,
            account_id -> Nullable<Text>,
            pack_id -> Nullable<Text>,
            paid_cents -> Nullable<BigInt>,
            credits -> BigInt,
            credit_entry_id -> Nullable<Text>,
            paid_at -> Nullable<BigInt>,
            refunded_cents -> BigInt,
            clawed_back -> BigInt,
            owed -> BigInt,
            version -> BigInt,
            created_at -> BigInt,
            updated_at -> BigInt,
        }
    }

    diesel::table! {
        payment_refunds (refund_id) {
            refund_id -> Text,
            order_id -> Text,
            amount_cents -> BigInt,
            created_at -> BigInt,
        }
    }

    diesel::table! {
        auto_topups (account_id) {
            account_id -> Text,
            enabled -> Bool,
            threshold -> BigInt,
            pack_id -> Text,
            credits -> BigInt,
            price_cents -> BigInt,
            status -> Text,
            paused_reason -> Nullable<Text>,
            updated_at -> BigInt,
        }
    }

    diesel::table! {
        auto_topup_charges (id) {
            id -> Text,
            account_id -> Text,
            pack_id -> Text,
            credits -> BigInt,
            price_cents -> BigInt,
            status -> Text,
            reason -> Nullable<Text>,
            created_at -> BigInt,
            settled_at -> Nullable<BigInt>,
        }
    }
}

use tables::{
    auto_topup_charges, auto_topups, payment_checkouts, payment_orders, payment_refunds,
    payment_refusals, payment_secrets, webhook_deliveries,
};

fn is_unique_violation(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Database(DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            _
        ))
    )
}

// ---------------------------------------------------------------------------------------
// Deliveries

/// What storing a delivery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryReceipt {
    /// First time this webhook id is seen; it is now stored, unprocessed.
    New,
    /// Seen before (a retry, a redelivery or a concurrent duplicate).
    Duplicate { processed: bool },
}

/// A stored webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = webhook_deliveries)]
pub struct StoredDelivery {
    pub webhook_id: String,
    pub event_type: String,
    /// The raw body, exactly as signed.
    pub body: String,
    pub received_at: i64,
    pub attempts: i64,
    pub processed_at: Option<i64>,
    pub outcome: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Orders and refunds

/// What a paid order buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderKind {
    /// A credit pack bought through a checkout (entry type `purchase`).
    Purchase,
    /// A pack bought by auto top-up (entry type `auto_topup`).
    AutoTopup,
}

impl OrderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderKind::Purchase => "purchase",
            OrderKind::AutoTopup => "auto_topup",
        }
    }

    fn grant_source(self) -> GrantSource {
        match self {
            OrderKind::Purchase => GrantSource::Purchase,
            OrderKind::AutoTopup => GrantSource::AutoTopup,
        }
    }
}

/// A paid order to credit, resolved against the catalogue by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidOrder {
    /// The provider's order id: the business key (and the entry's `referenceId`).
    pub order_id: String,
    pub kind: OrderKind,
    pub account_id: AccountId,
    pub pack_id: PackId,
    /// The pack's credits (never an amount from the payload).
    pub credits: Credits,
    /// What the customer paid, before tax, in cents: the base of refund shares.
    pub paid_cents: i64,
    /// The entry's description (`Purchased 1,000 credits`).
    pub description: String,
    /// Our checkout the order paid, marked paid in the same transaction as the credit.
    pub checkout_id: Option<String>,
}

/// What applying a paid order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaidOutcome {
    /// Credited now; refunds recorded earlier were settled in the same transaction.
    Credited {
        entry_id: EntryId,
        taken_back: Credits,
        owed: Credits,
    },
    /// Credited before: nothing changed.
    AlreadyCredited { entry_id: EntryId },
    /// The account does not exist (any more): nothing credited.
    UnknownAccount,
    /// The order was refused before ([`Store::refuse_order`]): it is left for an
    /// operator and never credited automatically.
    Refused { reason: String },
    /// Its checkout was already paid by another order: one checkout buys one pack.
    /// Nothing credited.
    CheckoutAlreadyPaid { by_order: String },
}

/// How a refund is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundAmount {
    /// One succeeded refund (`refund.created` / `refund.updated`), keyed by its id.
    Single { refund_id: String, cents: i64 },
    /// The order's cumulative `refunded_amount` (`order.refunded`).
    Cumulative { cents: i64 },
}

/// What recording a refund did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    /// The order is not credited yet: the refund is kept and settled when it is.
    Pending,
    /// Credits were taken back now (`owed`: the part the account did not have).
    TookBack { taken: Credits, owed: Credits },
    /// Nothing new (a repeat, or a smaller cumulative amount than already seen).
    NothingNew,
}

/// An order as the payments tables know it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = payment_orders)]
pub struct PaymentOrder {
    pub order_id: String,
    pub kind: String,
    pub account_id: Option<String>,
    pub pack_id: Option<String>,
    pub paid_cents: Option<i64>,
    /// Credits granted, in thousandths (0 until paid).
    pub credits: i64,
    pub credit_entry_id: Option<String>,
    pub paid_at: Option<i64>,
    /// The largest cumulative `refunded_amount` seen.
    pub refunded_cents: i64,
    /// Credits taken back so far, in thousandths.
    pub clawed_back: i64,
    /// Credits due back that the account did not have, in thousandths.
    pub owed: i64,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Credits a refund of `refunded_cents` out of `paid_cents` takes back: the refunded share
/// of the pack, rounded down to a thousandth; a full (or larger) refund takes all of it.
pub fn refund_share(credits: Credits, paid_cents: i64, refunded_cents: i64) -> Credits {
    if refunded_cents <= 0 || paid_cents <= 0 || credits.millis() <= 0 {
        return Credits::ZERO;
    }
    if refunded_cents >= paid_cents {
        return credits;
    }
    let share = i128::from(credits.millis()) * i128::from(refunded_cents) / i128::from(paid_cents);
    Credits::from_millis(share as i64)
}

// ---------------------------------------------------------------------------------------
// Checkouts

/// A checkout we created.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = payment_checkouts)]
pub struct CheckoutRecord {
    pub id: String,
    /// `polar` or `demo`.
    pub provider: String,
    pub account_id: String,
    pub pack_id: String,
    pub credits: i64,
    pub price_cents: i64,
    pub url: String,
    /// `open` or `paid`.
    pub status: String,
    pub order_id: Option<String>,
    pub created_at: i64,
    pub paid_at: Option<i64>,
    /// The provider's product we asked it to sell (`None` for demo checkouts, and for
    /// checkouts recorded before this column existed).
    pub product_id: Option<String>,
    /// The checkout's currency as the provider answered it (lower case, e.g. `usd`).
    pub currency: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Refused orders

/// A paid order that did not match our checkout record (or matched none), to keep for an
/// operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefusal {
    pub order_id: String,
    /// `webhook` or `reconcile`.
    pub source: String,
    /// Why, in words an operator can act on.
    pub reason: String,
    pub checkout_id: Option<String>,
    /// The account our checkout record names, if there is one.
    pub account_id: Option<String>,
    /// The order as the provider sent it (JSON).
    pub order_json: String,
}

/// A refused order as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = payment_refusals)]
pub struct Refusal {
    pub order_id: String,
    pub source: String,
    pub reason: String,
    pub checkout_id: Option<String>,
    pub account_id: Option<String>,
    pub order_json: String,
    pub first_seen_at: i64,
    pub last_seen_at: i64,
    pub times_seen: i64,
}

/// What [`Store::refuse_order`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalOutcome {
    /// Recorded; `first`: the first time this order was refused.
    Recorded { first: bool },
    /// The order was credited before: nothing is recorded (and nothing taken back).
    AlreadyCredited { entry_id: EntryId },
}

// ---------------------------------------------------------------------------------------
// Auto top-up

/// An account's auto top-up settings and state.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = auto_topups)]
pub struct AutoTopupRow {
    pub account_id: String,
    pub enabled: bool,
    /// Thousandths of a credit.
    pub threshold: i64,
    pub pack_id: String,
    /// The pack's credits (thousandths) and price when the settings were saved: what a
    /// top-up buys.
    pub credits: i64,
    pub price_cents: i64,
    /// `idle`, `pending` (a charge is in flight) or `paused`.
    pub status: String,
    pub paused_reason: Option<String>,
    pub updated_at: i64,
}

/// One auto top-up charge.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = auto_topup_charges)]
pub struct TopupCharge {
    pub id: String,
    pub account_id: String,
    pub pack_id: String,
    pub credits: i64,
    pub price_cents: i64,
    /// `pending`, `paid` or `failed`.
    pub status: String,
    pub reason: Option<String>,
    pub created_at: i64,
    pub settled_at: Option<i64>,
}

/// The pack an auto top-up buys, as the caller's catalogue says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopupPack {
    pub pack_id: PackId,
    pub credits: Credits,
    pub price_cents: i64,
}

// ---------------------------------------------------------------------------------------
// The ledger side, inside a transaction

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

/// Takes back up to `due` credits (what the account has available, never below zero)
/// as one `purchase_refund` entry. Returns what was taken.
fn take_back(
    book: &mut Book,
    due: Credits,
    order_id: &str,
    description: impl FnOnce(Credits) -> String,
    now: Timestamp,
) -> Result<Credits, TxError> {
    let take = due.min(book.available(now).max(Credits::ZERO));
    if take.is_positive() {
        book.debit(
            EntryKind::PurchaseRefund,
            take,
            SpendPolicy::STRICT,
            Memo::new(description(take)).reference(order_id),
            now,
            &mut RandomIds,
        )
        .map_err(|e| StoreError::corrupt(format!("taking back {take} credits: {e}")))?;
    }
    Ok(take)
}

/// Settles the refunds recorded on a credited order: takes back what the refunded share
/// asks beyond `clawed_back + owed`, records the rest as owed. Returns (taken, owed now).
fn settle_refunds(
    conn: &mut DbConnection,
    book: &mut Book,
    order: &PaymentOrder,
    now: Timestamp,
) -> Result<(Credits, Credits), TxError> {
    let singles: Vec<i64> = payment_refunds::table
        .filter(payment_refunds::order_id.eq(&order.order_id))
        .select(payment_refunds::amount_cents)
        .load(conn)?;
    // refund.* events and order.refunded describe the same refunds: the larger of the two
    // totals is what has been refunded (both only grow).
    let singles = singles
        .iter()
        .try_fold(0i64, |sum, &c| sum.checked_add(c))
        .ok_or_else(|| {
            StoreError::corrupt(format!("refunds of order {} overflow", order.order_id))
        })?;
    let refunded = order.refunded_cents.max(singles);
    let target = refund_share(
        Credits::from_millis(order.credits),
        order.paid_cents.unwrap_or(0),
        refunded,
    );
    let settled = order
        .clawed_back
        .checked_add(order.owed)
        .map(Credits::from_millis)
        .ok_or_else(|| {
            StoreError::corrupt(format!("refunds of order {} overflow", order.order_id))
        })?;
    let due = target - settled;
    if !due.is_positive() {
        return Ok((Credits::ZERO, Credits::ZERO));
    }
    let taken = take_back(
        book,
        due,
        &order.order_id,
        |t| format!("Payment refunded: {} credits taken back", t.grouped()),
        now,
    )?;
    let owed = due - taken;
    diesel::update(payment_orders::table.filter(payment_orders::order_id.eq(&order.order_id)))
        .set((
            payment_orders::clawed_back.eq(payment_orders::clawed_back + taken.millis()),
            payment_orders::owed.eq(payment_orders::owed + owed.millis()),
            payment_orders::updated_at.eq(now.millis()),
        ))
        .execute(conn)?;
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
    let owing: Vec<(String, i64)> = payment_orders::table
        .filter(payment_orders::account_id.eq(account.as_str()))
        .filter(payment_orders::owed.gt(0))
        .filter(payment_orders::order_id.ne(except_order))
        .order(payment_orders::order_id)
        .select((payment_orders::order_id, payment_orders::owed))
        .load(conn)?;
    let mut total = Credits::ZERO;
    for (order_id, owed) in owing {
        let taken = take_back(
            book,
            Credits::from_millis(owed),
            &order_id,
            |t| format!("Refunded payment: {} owed credits taken back", t.grouped()),
            now,
        )?;
        if !taken.is_positive() {
            break;
        }
        diesel::update(payment_orders::table.filter(payment_orders::order_id.eq(&order_id)))
            .set((
                payment_orders::clawed_back.eq(payment_orders::clawed_back + taken.millis()),
                payment_orders::owed.eq(payment_orders::owed - taken.millis()),
                payment_orders::updated_at.eq(now.millis()),
            ))
            .execute(conn)?;
        total += taken;
    }
    Ok(total)
}

/// Credits `order` on its order row `row`, locked by [`Store::with_order`]: unless the
/// row already names its credit entry, the ledger entry and the order's new state are
/// written, refunds recorded before it are settled and credits owed by the account's
/// earlier refunds collected, all in the caller's transaction. The one crediting path of
/// purchases and auto top-ups.
fn credit_order(
    conn: &mut DbConnection,
    row: PaymentOrder,
    order: &PaidOrder,
    now: Timestamp,
) -> Result<PaidOutcome, TxError> {
    if let Some(entry) = &row.credit_entry_id {
        return Ok(PaidOutcome::AlreadyCredited {
            entry_id: EntryId::new(entry.clone()),
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
        let marked = diesel::update(
            payment_checkouts::table
                .filter(payment_checkouts::id.eq(checkout))
                .filter(payment_checkouts::status.eq("open")),
        )
        .set((
            payment_checkouts::status.eq("paid"),
            payment_checkouts::order_id.eq(&order.order_id),
            payment_checkouts::paid_at.eq(now.millis()),
        ))
        .execute(conn)?;
        if marked == 0 {
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
        account_id: Some(order.account_id.as_str().to_owned()),
        paid_cents: Some(order.paid_cents),
        credits: order.credits.millis(),
        ..row
    };
    let (taken_back, owed) = settle_refunds(conn, &mut book, &credited, now)?;
    collect_owed(conn, &mut book, &order.account_id, &order.order_id, now)?;
    persist(conn, &order.account_id, book.take_changes())?;
    Ok(PaidOutcome::Credited {
        entry_id,
        taken_back,
        owed,
    })
}

impl Store {
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
            let result = self.write(|conn| {
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
                let row = payment_orders::table
                    .filter(payment_orders::order_id.eq(order_id))
                    .select(PaymentOrder::as_select())
                    .first(conn)?;
                f(conn, row)
            });
            match result {
                Err(e) if is_unique_violation(&e) && attempt < 5 => continue,
                other => return other,
            }
        }
    }

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
                                payment_refunds::amount_cents.eq((*cents).max(0)),
                                payment_refunds::created_at.eq(now.millis()),
                            ))
                            .execute(conn)?;
                        changed = true;
                    }
                }
                RefundAmount::Cumulative { cents } => {
                    if *cents > row.refunded_cents {
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
            let account = AccountId::new(account);
            if !lock_account(conn, &account)? {
                return Ok(RefundOutcome::NothingNew);
            }
            let row = payment_orders::table
                .filter(payment_orders::order_id.eq(order_id))
                .select(PaymentOrder::as_select())
                .first(conn)?;
            let mut book = load_book(conn, &account, now)?;
            let (taken, owed) = settle_refunds(conn, &mut book, &row, now)?;
            persist(conn, &account, book.take_changes())?;
            Ok(if taken.is_positive() || owed.is_positive() {
                RefundOutcome::TookBack { taken, owed }
            } else {
                RefundOutcome::NothingNew
            })
        })
    }

    /// Keeps a refused paid order for an operator, under the order's lock (so it cannot
    /// race its own credit): once refused, [`Store::apply_paid_order`] never credits it.
    /// An order credited before is left as it is.
    pub fn refuse_order(
        &self,
        refusal: &NewRefusal,
        now: Timestamp,
    ) -> Result<RefusalOutcome, StoreError> {
        self.with_order(&refusal.order_id, OrderKind::Purchase, now, |conn, row| {
            if let Some(entry) = &row.credit_entry_id {
                return Ok(RefusalOutcome::AlreadyCredited {
                    entry_id: EntryId::new(entry.clone()),
                });
            }
            let n = diesel::update(
                payment_refusals::table.filter(payment_refusals::order_id.eq(&refusal.order_id)),
            )
            .set((
                payment_refusals::source.eq(&refusal.source),
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
                    payment_refusals::source.eq(&refusal.source),
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
        let mut conn = self.connection()?;
        Ok(payment_refusals::table
            .filter(payment_refusals::order_id.eq(order_id))
            .select(Refusal::as_select())
            .first(&mut *conn)
            .optional()?)
    }

    /// Refused orders, the most recently seen first.
    pub fn refusals(&self, limit: i64) -> Result<Vec<Refusal>, StoreError> {
        let mut conn = self.connection()?;
        Ok(payment_refusals::table
            .order((
                payment_refusals::last_seen_at.desc(),
                payment_refusals::order_id,
            ))
            .limit(limit)
            .select(Refusal::as_select())
            .load(&mut *conn)?)
    }

    pub fn payment_order(&self, order_id: &str) -> Result<Option<PaymentOrder>, StoreError> {
        let mut conn = self.connection()?;
        Ok(payment_orders::table
            .filter(payment_orders::order_id.eq(order_id))
            .select(PaymentOrder::as_select())
            .first(&mut *conn)
            .optional()?)
    }

    // -- deliveries ------------------------------------------------------------------

    /// Stores a verified delivery before it is processed. A webhook id seen before is
    /// reported as a duplicate and nothing is written.
    pub fn store_delivery(
        &self,
        webhook_id: &str,
        event_type: &str,
        body: &str,
        now: Timestamp,
    ) -> Result<DeliveryReceipt, StoreError> {
        let existing = |store: &Store| -> Result<Option<DeliveryReceipt>, StoreError> {
            Ok(store
                .delivery(webhook_id)?
                .map(|d| DeliveryReceipt::Duplicate {
                    processed: d.processed_at.is_some(),
                }))
        };
        if let Some(seen) = existing(self)? {
            return Ok(seen);
        }
        let inserted = self.write(|conn| {
            diesel::insert_into(webhook_deliveries::table)
                .values((
                    webhook_deliveries::webhook_id.eq(webhook_id),
                    webhook_deliveries::event_type.eq(event_type),
                    webhook_deliveries::body.eq(body),
                    webhook_deliveries::received_at.eq(now.millis()),
                ))
                .execute(conn)?;
            Ok(())
        });
        match inserted {
            Ok(()) => Ok(DeliveryReceipt::New),
            Err(e) if is_unique_violation(&e) => {
                Ok(existing(self)?.unwrap_or(DeliveryReceipt::Duplicate { processed: false }))
            }
            Err(e) => Err(e),
        }
    }

    pub fn delivery(&self, webhook_id: &str) -> Result<Option<StoredDelivery>, StoreError> {
        let mut conn = self.connection()?;
        Ok(webhook_deliveries::table
            .filter(webhook_deliveries::webhook_id.eq(webhook_id))
            .select(StoredDelivery::as_select())
            .first(&mut *conn)
            .optional()?)
    }

    /// Counts one processing attempt of a delivery.
    pub fn note_delivery_attempt(&self, webhook_id: &str) -> Result<(), StoreError> {
        self.write(|conn| {
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
        self.write(|conn| {
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
        let mut conn = self.connection()?;
        Ok(webhook_deliveries::table
            .filter(webhook_deliveries::processed_at.is_null())
            .filter(webhook_deliveries::received_at.lt(received_before.millis()))
            .order((
                webhook_deliveries::received_at,
                webhook_deliveries::webhook_id,
            ))
            .limit(limit)
            .select(StoredDelivery::as_select())
            .load(&mut *conn)?)
    }

    // -- checkouts and secrets ---------------------------------------------------------

    pub fn record_checkout(&self, checkout: &CheckoutRecord) -> Result<(), StoreError> {
        self.write(|conn| {
            diesel::insert_into(payment_checkouts::table)
                .values(checkout)
                .execute(conn)?;
            Ok(())
        })
    }

    /// An account's checkouts, newest first.
    pub fn checkouts_of(&self, account: &AccountId) -> Result<Vec<CheckoutRecord>, StoreError> {
        let mut conn = self.connection()?;
        Ok(payment_checkouts::table
            .filter(payment_checkouts::account_id.eq(account.as_str()))
            .order((payment_checkouts::created_at.desc(), payment_checkouts::id))
            .select(CheckoutRecord::as_select())
            .load(&mut *conn)?)
    }

    pub fn checkout(&self, id: &str) -> Result<Option<CheckoutRecord>, StoreError> {
        let mut conn = self.connection()?;
        Ok(payment_checkouts::table
            .filter(payment_checkouts::id.eq(id))
            .select(CheckoutRecord::as_select())
            .first(&mut *conn)
            .optional()?)
    }

    /// Marks an open checkout paid by `order_id`; false when it was not open (paid before).
    pub fn mark_checkout_paid(
        &self,
        id: &str,
        order_id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.write(|conn| {
            let n = diesel::update(
                payment_checkouts::table
                    .filter(payment_checkouts::id.eq(id))
                    .filter(payment_checkouts::status.eq("open")),
            )
            .set((
                payment_checkouts::status.eq("paid"),
                payment_checkouts::order_id.eq(order_id),
                payment_checkouts::paid_at.eq(now.millis()),
            ))
            .execute(conn)?;
            Ok(n == 1)
        })
    }

    /// The secret stored under `name`; `candidate` is stored first when there is none
    /// (the first process to store one wins, every process then reads the same).
    pub fn payment_secret(
        &self,
        name: &str,
        candidate: &str,
        now: Timestamp,
    ) -> Result<String, StoreError> {
        let read = |store: &Store| -> Result<Option<String>, StoreError> {
            let mut conn = store.connection()?;
            Ok(payment_secrets::table
                .filter(payment_secrets::name.eq(name))
                .select(payment_secrets::value)
                .first(&mut *conn)
                .optional()?)
        };
        if let Some(v) = read(self)? {
            return Ok(v);
        }
        let inserted = self.write(|conn| {
            diesel::insert_into(payment_secrets::table)
                .values((
                    payment_secrets::name.eq(name),
                    payment_secrets::value.eq(candidate),
                    payment_secrets::created_at.eq(now.millis()),
                ))
                .execute(conn)?;
            Ok(())
        });
        match inserted {
            Ok(()) => Ok(candidate.to_owned()),
            Err(e) if is_unique_violation(&e) => read(self)?
                .ok_or_else(|| StoreError::corrupt(format!("payment secret {name} vanished"))),
            Err(e) => Err(e),
        }
    }

    // -- auto top-up -------------------------------------------------------------------

    pub fn auto_topup(&self, account: &AccountId) -> Result<Option<AutoTopupRow>, StoreError> {
        let mut conn = self.connection()?;
        Ok(auto_topups::table
            .filter(auto_topups::account_id.eq(account.as_str()))
            .select(AutoTopupRow::as_select())
            .first(&mut *conn)
            .optional()?)
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
    ) -> Result<AutoTopupRow, StoreError> {
        self.write(|conn| {
            if !lock_account(conn, account)? {
                return Err(StoreError::AccountNotFound {
                    account_id: account.clone(),
                }
                .into());
            }
            let pending = auto_topup_charges::table
                .filter(auto_topup_charges::account_id.eq(account.as_str()))
                .filter(auto_topup_charges::status.eq("pending"))
                .select(auto_topup_charges::id)
                .first::<String>(conn)
                .optional()?;
            let row = AutoTopupRow {
                account_id: account.as_str().to_owned(),
                enabled,
                threshold: threshold.max(Credits::ZERO).millis(),
                pack_id: pack.pack_id.as_str().to_owned(),
                credits: pack.credits.millis(),
                price_cents: pack.price_cents,
                status: if pending.is_some() { "pending" } else { "idle" }.to_owned(),
                paused_reason: None,
                updated_at: now.millis(),
            };
            diesel::delete(auto_topups::table.filter(auto_topups::account_id.eq(account.as_str())))
                .execute(conn)?;
            diesel::insert_into(auto_topups::table)
                .values(&row)
                .execute(conn)?;
            Ok(row)
        })
    }

    /// Pending top-up charges, oldest first.
    pub fn pending_topup_charges(&self, limit: i64) -> Result<Vec<TopupCharge>, StoreError> {
        let mut conn = self.connection()?;
        Ok(auto_topup_charges::table
            .filter(auto_topup_charges::status.eq("pending"))
            .order((auto_topup_charges::created_at, auto_topup_charges::id))
            .limit(limit)
            .select(TopupCharge::as_select())
            .load(&mut *conn)?)
    }

    pub fn topup_charge(&self, id: &str) -> Result<Option<TopupCharge>, StoreError> {
        let mut conn = self.connection()?;
        Ok(auto_topup_charges::table
            .filter(auto_topup_charges::id.eq(id))
            .select(TopupCharge::as_select())
            .first(&mut *conn)
            .optional()?)
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
            let charge = auto_topup_charges::table
                .filter(auto_topup_charges::id.eq(charge_id))
                .select(TopupCharge::as_select())
                .first(conn)
                .optional()?
                .ok_or_else(|| StoreError::corrupt(format!("no auto top-up charge {charge_id}")))?;
            let order = PaidOrder {
                order_id: charge_id.to_owned(),
                kind: OrderKind::AutoTopup,
                account_id: AccountId::new(charge.account_id.clone()),
                pack_id: PackId::new(charge.pack_id.clone()),
                credits: Credits::from_millis(charge.credits),
                paid_cents: charge.price_cents,
                description: description.to_owned(),
                checkout_id: None,
            };
            let outcome = credit_order(conn, row, &order, now)?;
            if !matches!(outcome, PaidOutcome::Credited { .. }) {
                return Ok(outcome);
            }
            diesel::update(auto_topup_charges::table.filter(auto_topup_charges::id.eq(charge_id)))
                .set((
                    auto_topup_charges::status.eq("paid"),
                    auto_topup_charges::settled_at.eq(now.millis()),
                ))
                .execute(conn)?;
            diesel::update(
                auto_topups::table
                    .filter(auto_topups::account_id.eq(&charge.account_id))
                    .filter(auto_topups::status.eq("pending")),
            )
            .set((
                auto_topups::status.eq("idle"),
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
        self.write(|conn| {
            let Some(charge) = auto_topup_charges::table
                .filter(auto_topup_charges::id.eq(charge_id))
                .filter(auto_topup_charges::status.eq("pending"))
                .select(TopupCharge::as_select())
                .first(conn)
                .optional()?
            else {
                return Ok(false);
            };
            diesel::update(auto_topup_charges::table.filter(auto_topup_charges::id.eq(charge_id)))
                .set((
                    auto_topup_charges::status.eq("failed"),
                    auto_topup_charges::reason.eq(reason),
                    auto_topup_charges::settled_at.eq(now.millis()),
                ))
                .execute(conn)?;
            diesel::update(
                auto_topups::table.filter(auto_topups::account_id.eq(&charge.account_id)),
            )
            .set((
                auto_topups::status.eq("paused"),
                auto_topups::paused_reason.eq(reason),
                auto_topups::updated_at.eq(now.millis()),
            ))
            .execute(conn)?;
            Ok(true)
        })
    }
}

/// Starts an auto top-up when a charge left the account below its threshold. Call it on
/// the connection of the charge's own transaction, after the debit or capture is applied
/// and while the account row is locked, with the available balance after the charge: the
/// pending top-up charge is then committed (or rolled back) together with the charge, so
/// none is lost or doubled. At most one is pending per account (the settings' status, and
/// a unique index). It buys the pack saved with the settings.
///
/// Returns the new charge, which a worker (`payments::Payments::run_auto_topups`) then
/// submits to the provider.
pub fn after_charge(
    conn: &mut DbConnection,
    account: &AccountId,
    available_after: Credits,
    now: Timestamp,
) -> Result<Option<TopupCharge>, StoreError> {
    let Some(settings) = auto_topups::table
        .filter(auto_topups::account_id.eq(account.as_str()))
        .select(AutoTopupRow::as_select())
        .first(conn)
        .optional()?
    else {
        return Ok(None);
    };
    if !settings.enabled
        || settings.status != "idle"
        || available_after >= Credits::from_millis(settings.threshold)
    {
        return Ok(None);
    }
    let charge = TopupCharge {
        id: new_id("topup_"),
        account_id: account.as_str().to_owned(),
        pack_id: settings.pack_id.clone(),
        credits: settings.credits,
        price_cents: settings.price_cents,
        status: "pending".into(),
        reason: None,
        created_at: now.millis(),
        settled_at: None,
    };
    diesel::insert_into(auto_topup_charges::table)
        .values(&charge)
        .execute(conn)?;
    diesel::update(auto_topups::table.filter(auto_topups::account_id.eq(account.as_str())))
        .set((
            auto_topups::status.eq("pending"),
            auto_topups::updated_at.eq(now.millis()),
        ))
        .execute(conn)?;
    Ok(Some(charge))
}

impl Store {
    /// [`after_charge`] in a transaction of its own. The ledger already calls `after_charge`
    /// inside every usage debit and capture; this is for checks outside a charge (tests, and
    /// resuming after settings change).
    pub fn after_charge_standalone(
        &self,
        account: &AccountId,
        now: Timestamp,
    ) -> Result<Option<TopupCharge>, StoreError> {
        self.write(|conn| {
            if !lock_account(conn, account)? {
                return Ok(None);
            }
            let available = load_book(conn, account, now)?.available(now);
            Ok(after_charge(conn, account, available, now)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refund_shares_round_down_and_cap_at_the_pack() {
        let pack = Credits::whole(1000);
        assert_eq!(refund_share(pack, 3500, 0), Credits::ZERO);
        assert_eq!(refund_share(pack, 3500, 1750), Credits::whole(500));
        assert_eq!(
            refund_share(pack, 3500, 1500),
            Credits::from_millis(428_571)
        );
        assert_eq!(refund_share(pack, 3500, 3500), pack);
        assert_eq!(refund_share(pack, 3500, 9999), pack);
        // A free order (100% discount) has nothing to refund.
        assert_eq!(refund_share(pack, 0, 100), Credits::ZERO);
    }
}
