//! Row structs (Diesel) and their conversions to and from the core's types. Nothing
//! outside this crate sees a row.

use diesel::prelude::*;
use ledger_core::{
    AccountId, Allocation, AutoTopup, Cents, ChargeStatus, Credits, Entry, EntryId, Grant, GrantId,
    Hold, HoldId, PackId, SubscriptionStatus, Timestamp,
};

use crate::error::StoreError;
use crate::payments::{
    AutoTopupSettings, CheckoutProvider, CheckoutStatus, OrderKind, RefusalSource,
};
use crate::schema::{accounts, auto_topups, entries, grants, holds, idempotency_keys};

/// How a field of a record is kept in its column: the column's Rust type, and the
/// conversions both ways (reading back fails only on what the code does not know).
pub(crate) trait Stored: Sized {
    type Column;
    fn to_column(&self) -> Self::Column;
    fn from_column(column: Self::Column) -> Result<Self, StoreError>;
}

/// A stored status spelling to its enum; a spelling the code does not know is corrupt.
fn parse<T: std::str::FromStr<Err = String>>(text: &str) -> Result<T, StoreError> {
    text.parse().map_err(StoreError::corrupt)
}

/// `Stored` for types kept as `$column`: `|v| to` writes the value `v`, `|c| from` reads
/// the column's `c` back.
macro_rules! stored_as {
    ($column:ty: $($ty:ty),+ => |$v:ident| $to:expr, |$c:ident| $from:expr) => {$(
        impl Stored for $ty {
            type Column = $column;
            fn to_column(&self) -> $column {
                let $v = self;
                $to
            }
            fn from_column($c: $column) -> Result<$ty, StoreError> {
                $from
            }
        }
    )+};
}

// Kept as they are.
stored_as!(Self: String => |v| v.clone(), |c| Ok(c));
stored_as!(Self: i64, bool => |v| *v, |c| Ok(c));
// Ids, kept as their text.
stored_as!(String: AccountId, PackId, EntryId => |v| v.as_str().to_owned(), |c| Ok(Self::new(c)));
// Enums, kept as their spelling; a spelling the code does not know is corrupt.
stored_as!(
    String: OrderKind, CheckoutProvider, CheckoutStatus, RefusalSource, ChargeStatus, SubscriptionStatus
    => |v| v.as_str().to_owned(), |c| parse(&c)
);
// Amounts and times, kept as their integer (thousandths of a credit, milliseconds, cents).
stored_as!(i64: Timestamp, Credits => |v| v.millis(), |c| Ok(Self::from_millis(c)));
stored_as!(i64: Cents => |v| v.get(), |c| Ok(Cents::new(c)));

impl<T: Stored> Stored for Option<T> {
    type Column = Option<T::Column>;
    fn to_column(&self) -> Option<T::Column> {
        self.as_ref().map(T::to_column)
    }
    fn from_column(column: Option<T::Column>) -> Result<Option<T>, StoreError> {
        column.map(T::from_column).transpose()
    }
}

/// Declares a record kept whole in one table: the public struct, and its private Diesel
/// row `$row` (the same fields, each as [`Stored`] keeps it; `=> column` where the column
/// is named otherwise) with the conversions both ways.
macro_rules! stored_record {
    (
        $(#[$meta:meta])*
        pub struct $record:ident in $table:ident as $row:ident {
            $($(#[$field_meta:meta])* pub $field:ident: $ty:ty $(=> $column:ident)?,)+
        }
    ) => {
        $(#[$meta])*
        pub struct $record {
            $($(#[$field_meta])* pub $field: $ty,)+
        }

        #[derive(Debug, Clone, diesel::Queryable, diesel::Selectable, diesel::Insertable)]
        #[diesel(table_name = $crate::schema::$table)]
        pub(crate) struct $row {
            $($(#[diesel(column_name = $column)])? pub $field: <$ty as $crate::rows::Stored>::Column,)+
        }

        impl From<&$record> for $row {
            fn from(record: &$record) -> $row {
                $row {
                    $($field: $crate::rows::Stored::to_column(&record.$field),)+
                }
            }
        }

        impl TryFrom<$row> for $record {
            type Error = $crate::error::StoreError;
            fn try_from(row: $row) -> Result<$record, $crate::error::StoreError> {
                Ok($record {
                    $($field: $crate::rows::Stored::from_column(row.$field)?,)+
                })
            }
        }
    };
}

pub(crate) use stored_record;

/// The row a query may find, as its record (a row that does not convert fails the read).
pub(crate) trait FoundRecord<R> {
    fn optional_record<T>(self) -> Result<Option<T>, StoreError>
    where
        T: TryFrom<R, Error = StoreError>;
}

impl<R> FoundRecord<R> for QueryResult<R> {
    fn optional_record<T>(self) -> Result<Option<T>, StoreError>
    where
        T: TryFrom<R, Error = StoreError>,
    {
        self.optional()?.map(T::try_from).transpose()
    }
}

/// The rows a query found, as their records (one that does not convert fails the read).
pub(crate) trait FoundRecords<R> {
    fn records<T>(self) -> Result<Vec<T>, StoreError>
    where
        T: TryFrom<R, Error = StoreError>;
}

impl<R> FoundRecords<R> for QueryResult<Vec<R>> {
    fn records<T>(self) -> Result<Vec<T>, StoreError>
    where
        T: TryFrom<R, Error = StoreError>,
    {
        self?.into_iter().map(T::try_from).collect()
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = accounts)]
pub(crate) struct AccountRow {
    pub id: String,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub created_at: i64,
    pub balance: i64,
    pub overdraft: i64,
    pub overdraft_limit: i64,
    pub last_seq: i64,
    pub compacted_balance: i64,
    pub compacted_seq: i64,
    pub plan_name: Option<String>,
    pub version: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = grants)]
pub(crate) struct GrantRow {
    pub id: String,
    pub account_id: String,
    pub source: String,
    pub amount: i64,
    pub remaining: i64,
    pub priority: i64,
    pub effective_at: i64,
    pub expires_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = holds)]
pub(crate) struct HoldRow {
    pub id: String,
    pub account_id: String,
    pub amount: i64,
    pub captured: i64,
    pub status: String,
    pub description: String,
    pub reference_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub settled_at: Option<i64>,
    pub allocations: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = entries)]
pub(crate) struct EntryRow {
    pub id: String,
    pub account_id: String,
    pub seq: i64,
    pub kind: String,
    pub amount: i64,
    pub balance_after: i64,
    pub description: String,
    pub reference_id: Option<String>,
    pub source: String,
    pub plan: Option<String>,
    pub created_at: i64,
    pub hold_id: Option<String>,
    pub refund_of: Option<String>,
    pub allocations: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = idempotency_keys)]
pub(crate) struct IdempotencyRow {
    pub account_id: String,
    pub scope: String,
    pub key: String,
    pub fingerprint: String,
    pub outcome: String,
    pub created_at: i64,
}

fn encode_allocations(a: &[Allocation]) -> String {
    // Derived `Serialize` over ids, a unit variant and `Credits` (an integer or a finite
    // float), with no maps: serde_json has nothing to fail on.
    #[allow(clippy::expect_used)]
    serde_json::to_string(a).expect("allocations always serialize")
}

fn decode_allocations(owner: &str, text: &str) -> Result<Vec<Allocation>, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::corrupt(format!("allocations of {owner}: {e}")))
}

impl From<&Grant> for GrantRow {
    fn from(g: &Grant) -> GrantRow {
        GrantRow {
            id: g.id.as_str().to_owned(),
            account_id: g.account_id.as_str().to_owned(),
            source: g.source.as_str().to_owned(),
            amount: g.amount.millis(),
            remaining: g.remaining.millis(),
            priority: i64::from(g.priority),
            effective_at: g.effective_at.millis(),
            expires_at: g.expires_at.map(Timestamp::millis),
            created_at: g.created_at.millis(),
        }
    }
}

impl TryFrom<GrantRow> for Grant {
    type Error = StoreError;
    fn try_from(r: GrantRow) -> Result<Grant, StoreError> {
        Ok(Grant {
            source: r.source.parse().map_err(StoreError::corrupt)?,
            priority: i32::try_from(r.priority).map_err(|e| StoreError::corrupt(e.to_string()))?,
            id: GrantId::new(r.id),
            account_id: AccountId::new(r.account_id),
            amount: Credits::from_millis(r.amount),
            remaining: Credits::from_millis(r.remaining),
            effective_at: Timestamp::from_millis(r.effective_at),
            expires_at: r.expires_at.map(Timestamp::from_millis),
            created_at: Timestamp::from_millis(r.created_at),
        })
    }
}

impl From<&Hold> for HoldRow {
    fn from(h: &Hold) -> HoldRow {
        HoldRow {
            id: h.id.as_str().to_owned(),
            account_id: h.account_id.as_str().to_owned(),
            amount: h.amount.millis(),
            captured: h.captured.millis(),
            status: h.status.as_str().to_owned(),
            description: h.description.clone(),
            reference_id: h.reference_id.clone(),
            created_at: h.created_at.millis(),
            expires_at: h.expires_at.millis(),
            settled_at: h.settled_at.map(Timestamp::millis),
            allocations: encode_allocations(&h.allocations),
        }
    }
}

impl TryFrom<HoldRow> for Hold {
    type Error = StoreError;
    fn try_from(r: HoldRow) -> Result<Hold, StoreError> {
        Ok(Hold {
            allocations: decode_allocations(&r.id, &r.allocations)?,
            status: r.status.parse().map_err(StoreError::corrupt)?,
            id: HoldId::new(r.id),
            account_id: AccountId::new(r.account_id),
            amount: Credits::from_millis(r.amount),
            captured: Credits::from_millis(r.captured),
            description: r.description,
            reference_id: r.reference_id,
            created_at: Timestamp::from_millis(r.created_at),
            expires_at: Timestamp::from_millis(r.expires_at),
            settled_at: r.settled_at.map(Timestamp::from_millis),
        })
    }
}

impl From<&Entry> for EntryRow {
    fn from(e: &Entry) -> EntryRow {
        EntryRow {
            id: e.id.as_str().to_owned(),
            account_id: e.account_id.as_str().to_owned(),
            seq: e.seq,
            kind: e.kind.as_str().to_owned(),
            amount: e.amount.millis(),
            balance_after: e.balance_after.millis(),
            description: e.description.clone(),
            reference_id: e.reference_id.clone(),
            source: e.source.clone(),
            plan: e.plan.clone(),
            created_at: e.created_at.millis(),
            hold_id: e.hold_id.as_ref().map(|h| h.as_str().to_owned()),
            refund_of: e.refund_of.as_ref().map(|r| r.as_str().to_owned()),
            allocations: encode_allocations(&e.allocations),
        }
    }
}

impl TryFrom<EntryRow> for Entry {
    type Error = StoreError;
    fn try_from(r: EntryRow) -> Result<Entry, StoreError> {
        Ok(Entry {
            allocations: decode_allocations(&r.id, &r.allocations)?,
            kind: r.kind.parse().map_err(StoreError::corrupt)?,
            id: EntryId::new(r.id),
            account_id: AccountId::new(r.account_id),
            seq: r.seq,
            amount: Credits::from_millis(r.amount),
            balance_after: Credits::from_millis(r.balance_after),
            description: r.description,
            reference_id: r.reference_id,
            source: r.source,
            plan: r.plan,
            created_at: Timestamp::from_millis(r.created_at),
            hold_id: r.hold_id.map(HoldId::new),
            refund_of: r.refund_of.map(EntryId::new),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Payments

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = auto_topups)]
pub(crate) struct AutoTopupRow {
    pub account_id: String,
    pub enabled: bool,
    pub threshold: i64,
    pub pack_id: String,
    pub credits: i64,
    pub price_cents: i64,
    pub status: String,
    pub paused_reason: Option<String>,
    pub updated_at: i64,
}

impl TryFrom<AutoTopupRow> for AutoTopupSettings {
    type Error = StoreError;
    fn try_from(r: AutoTopupRow) -> Result<AutoTopupSettings, StoreError> {
        Ok(AutoTopupSettings {
            topup: AutoTopup {
                enabled: r.enabled,
                threshold: Credits::from_millis(r.threshold),
                pack_id: PackId::new(r.pack_id),
                credits: Credits::from_millis(r.credits),
                price: Cents::new(r.price_cents),
                status: parse(&r.status)?,
            },
            account_id: AccountId::new(r.account_id),
            paused_reason: r.paused_reason,
            updated_at: Timestamp::from_millis(r.updated_at),
        })
    }
}

impl From<&AutoTopupSettings> for AutoTopupRow {
    fn from(s: &AutoTopupSettings) -> AutoTopupRow {
        AutoTopupRow {
            account_id: s.account_id.as_str().to_owned(),
            enabled: s.topup.enabled,
            threshold: s.topup.threshold.millis(),
            pack_id: s.topup.pack_id.as_str().to_owned(),
            credits: s.topup.credits.millis(),
            price_cents: s.topup.price.get(),
            status: s.topup.status.as_str().to_owned(),
            paused_reason: s.paused_reason.clone(),
            updated_at: s.updated_at.millis(),
        }
    }
}
