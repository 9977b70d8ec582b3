//! Row structs (Diesel) and their conversions to and from the types the store answers
//! with: how each field is kept in its column ([`Stored`]), the macros that declare a
//! record's row from its one field list (`stored_record!`, `stored_row!`), and the reads
//! that select a record's row and convert it ([`FirstRecord`], [`Records`]). Nothing
//! outside this crate sees a row.

use diesel::dsl::{AsSelect, Limit, Select};
use diesel::prelude::*;
use diesel::query_dsl::methods::{LimitDsl, SelectDsl};
use diesel::query_dsl::LoadQuery;
use diesel::Expression;
use ledger_core::{
    AccountId, Allocation, AutoTopup, Cents, ChargeStatus, Credits, Entry, EntryId, EntryKind,
    Grant, GrantId, GrantSource, Hold, HoldId, HoldStatus, PackId, SubscriptionStatus, Timestamp,
};

use crate::db::{DbConnection, MultiBackend};
use crate::error::StoreError;
use crate::payments::{
    AutoTopupSettings, CheckoutProvider, CheckoutStatus, OrderKind, RefusalSource,
};
use crate::schema::{accounts, auto_topups, idempotency_keys};
use crate::Store;

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
stored_as!(String: AccountId, PackId, EntryId, GrantId, HoldId => |v| v.as_str().to_owned(), |c| Ok(Self::new(c)));
// Enums, kept as their spelling; a spelling the code does not know is corrupt.
stored_as!(
    String: OrderKind, CheckoutProvider, CheckoutStatus, RefusalSource, ChargeStatus, SubscriptionStatus,
        GrantSource, HoldStatus, EntryKind
    => |v| v.as_str().to_owned(), |c| parse(&c)
);
// Amounts and times, kept as their integer (thousandths of a credit, milliseconds, cents).
stored_as!(i64: Timestamp, Credits => |v| v.millis(), |c| Ok(Self::from_millis(c)));
stored_as!(i64: Cents => |v| v.get(), |c| Ok(Cents::new(c)));

/// A grant's priority, in an integer column.
impl Stored for i32 {
    type Column = i64;
    fn to_column(&self) -> i64 {
        i64::from(*self)
    }
    fn from_column(column: i64) -> Result<i32, StoreError> {
        i32::try_from(column).map_err(|e| StoreError::corrupt(e.to_string()))
    }
}

/// A lot's allocations, as JSON text.
impl Stored for Vec<Allocation> {
    type Column = String;
    fn to_column(&self) -> String {
        // Derived `Serialize` over ids, a unit variant and `Credits` (an integer or a
        // finite float), with no maps: serde_json has nothing to fail on.
        #[allow(clippy::expect_used)]
        serde_json::to_string(self).expect("allocations always serialize")
    }
    fn from_column(column: String) -> Result<Vec<Allocation>, StoreError> {
        serde_json::from_str(&column)
            .map_err(|e| StoreError::corrupt(format!("allocations do not decode: {e}")))
    }
}

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
/// row `$row` (see [`stored_row!`]).
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

        $crate::rows::stored_row!($record in $table as $row {
            $($field: $ty $(=> $column)?,)+
        });
    };
}

/// Declares the private Diesel row `$row` of a record kept whole in one table: the same
/// fields, each as [`Stored`] keeps it (`=> column` where the column is named otherwise),
/// with the conversions both ways.
macro_rules! stored_row {
    ($record:ident in $table:ident as $row:ident {
        $($field:ident: $ty:ty $(=> $column:ident)?,)+
    }) => {
        // `None` is NULL, not DEFAULT (no nullable column has a default): so that SQLite
        // gets one multi-row INSERT for many rows, not one INSERT a row.
        #[derive(Debug, Clone, diesel::Queryable, diesel::Selectable, diesel::Insertable)]
        #[diesel(table_name = $crate::schema::$table, treat_none_as_default_value = false)]
        pub(crate) struct $row {
            $($(#[diesel(column_name = $column)])? pub $field: <$ty as $crate::rows::Stored>::Column,)+
        }

        impl $crate::rows::Record for $record {
            type Row = $row;
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
pub(crate) use stored_row;

/// A type read from a row of its table (a row that does not convert fails the read).
pub(crate) trait Record: TryFrom<Self::Row, Error = StoreError> {
    type Row;
}

/// A query that finds records `T` (selecting their rows' columns): its first.
pub(crate) trait FirstRecord<'q, T> {
    fn first_record(self, conn: &mut DbConnection) -> Result<Option<T>, StoreError>;
}

/// [`Records`] of the query limited to one row.
impl<'q, T, Q> FirstRecord<'q, T> for Q
where
    Q: LimitDsl,
    Limit<Q>: Records<'q, T>,
{
    fn first_record(self, conn: &mut DbConnection) -> Result<Option<T>, StoreError> {
        Ok(LimitDsl::limit(self, 1).records(conn)?.into_iter().next())
    }
}

/// A query that finds records `T` (selecting their rows' columns): all of them.
pub(crate) trait Records<'q, T> {
    fn records(self, conn: &mut DbConnection) -> Result<Vec<T>, StoreError>;
}

impl<'q, T, R, Q> Records<'q, T> for Q
where
    T: Record<Row = R>,
    R: Selectable<MultiBackend>,
    Q: SelectDsl<AsSelect<R, MultiBackend>>,
    AsSelect<R, MultiBackend>: Expression,
    Select<Q, AsSelect<R, MultiBackend>>:
        RunQueryDsl<DbConnection> + LoadQuery<'q, DbConnection, R>,
{
    fn records(self, conn: &mut DbConnection) -> Result<Vec<T>, StoreError> {
        SelectDsl::select(self, R::as_select())
            .load(conn)?
            .into_iter()
            .map(T::try_from)
            .collect()
    }
}

impl Store {
    /// The first record `query` finds, on a pooled connection.
    pub(crate) fn first_record<'q, T>(
        &self,
        query: impl FirstRecord<'q, T>,
    ) -> Result<Option<T>, StoreError> {
        query.first_record(&mut *self.conn()?)
    }

    /// The records `query` finds, on a pooled connection.
    pub(crate) fn records<'q, T>(&self, query: impl Records<'q, T>) -> Result<Vec<T>, StoreError> {
        query.records(&mut *self.conn()?)
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

stored_row!(Grant in grants as GrantRow {
    id: GrantId,
    account_id: AccountId,
    source: GrantSource,
    amount: Credits,
    remaining: Credits,
    priority: i32,
    effective_at: Timestamp,
    expires_at: Option<Timestamp>,
    created_at: Timestamp,
});

stored_row!(Hold in holds as HoldRow {
    id: HoldId,
    account_id: AccountId,
    amount: Credits,
    captured: Credits,
    status: HoldStatus,
    description: String,
    reference_id: Option<String>,
    created_at: Timestamp,
    expires_at: Timestamp,
    settled_at: Option<Timestamp>,
    allocations: Vec<Allocation>,
});

stored_row!(Entry in entries as EntryRow {
    id: EntryId,
    account_id: AccountId,
    seq: i64,
    kind: EntryKind,
    amount: Credits,
    balance_after: Credits,
    description: String,
    reference_id: Option<String>,
    source: String,
    plan: Option<String>,
    created_at: Timestamp,
    hold_id: Option<HoldId>,
    refund_of: Option<EntryId>,
    allocations: Vec<Allocation>,
});

impl Record for crate::ledger::Account {
    type Row = AccountRow;
}

/// No column has a default: with the derive's default (`treat_none_as_default_value`),
/// Diesel inserts many rows on SQLite one statement a row inside a savepoint of its own
/// (issue 11: a tenth of the SQLite writer's CPU), instead of one multi-row `INSERT`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = idempotency_keys, treat_none_as_default_value = false)]
pub(crate) struct IdempotencyRow {
    pub account_id: String,
    pub scope: String,
    pub key: String,
    pub fingerprint: String,
    pub outcome: String,
    pub created_at: i64,
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

impl Record for AutoTopupSettings {
    type Row = AutoTopupRow;
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

// ---------------------------------------------------------------------------------------
// The write path's updates, as statements Diesel caches

/// Declares an `UPDATE` whose text never changes: `$sql` parts with a bound field after
/// each, and an optional `RETURNING`. Diesel never caches the statement of its own
/// `diesel::update` (a changeset may skip fields, so its text may change), so each would
/// be prepared again at every execution, several times a batch (issue 11); these are
/// prepared once a connection.
macro_rules! fixed_update {
    (
        $(#[$meta:meta])*
        $name:ident { $($sql:literal, $field:ident: $ty:ty as $st:ty;)+ } $tail:literal
        $(returning $ret:ty)?
    ) => {
        $(#[$meta])*
        pub(crate) struct $name<'a> {
            $(pub(crate) $field: $ty,)+
        }

        impl diesel::query_builder::QueryId for $name<'_> {
            type QueryId = $name<'static>;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl diesel::query_builder::QueryFragment<MultiBackend> for $name<'_> {
            fn walk_ast<'b>(
                &'b self,
                mut out: diesel::query_builder::AstPass<'_, 'b, MultiBackend>,
            ) -> QueryResult<()> {
                $(
                    out.push_sql($sql);
                    out.push_bind_param::<$st, _>(&self.$field)?;
                )+
                out.push_sql($tail);
                Ok(())
            }
        }

        $(
            impl diesel::query_builder::Query for $name<'_> {
                type SqlType = $ret;
            }
        )?

        impl<Conn> RunQueryDsl<Conn> for $name<'_> {}
    };
}

fixed_update!(
    /// Takes an account's row lock: the next version (answered), and no balance readers may
    /// take from the row until the writer that locked it sets one.
    LockAccount {
        "UPDATE accounts SET version = version + 1, balance_until = 0 WHERE id = ", id: &'a str as diesel::sql_types::Text;
    } " RETURNING version" returning diesel::sql_types::BigInt
);

fixed_update!(
    /// Sets an account's balances after its operations, and the balance readers take from
    /// the row (valid from `balance_at` until `balance_until`).
    WriteAccount {
        "UPDATE accounts SET balance = ", balance: i64 as diesel::sql_types::BigInt;
        ", overdraft = ", overdraft: i64 as diesel::sql_types::BigInt;
        ", last_seq = ", last_seq: i64 as diesel::sql_types::BigInt;
        ", available = ", available: i64 as diesel::sql_types::BigInt;
        ", held = ", held: i64 as diesel::sql_types::BigInt;
        ", balance_at = ", balance_at: i64 as diesel::sql_types::BigInt;
        ", balance_until = ", balance_until: i64 as diesel::sql_types::BigInt;
        " WHERE id = ", id: &'a str as diesel::sql_types::Text;
    } ""
);

fixed_update!(
    /// What is left of a grant.
    UpdateGrant {
        "UPDATE grants SET remaining = ", remaining: i64 as diesel::sql_types::BigInt;
        " WHERE id = ", id: &'a str as diesel::sql_types::Text;
    } ""
);

fixed_update!(
    /// A hold's settlement.
    UpdateHold {
        "UPDATE holds SET status = ", status: &'a str as diesel::sql_types::Text;
        ", captured = ", captured: i64 as diesel::sql_types::BigInt;
        ", settled_at = ", settled_at: Option<i64> as diesel::sql_types::Nullable<diesel::sql_types::BigInt>;
        " WHERE id = ", id: &'a str as diesel::sql_types::Text;
    } ""
);
