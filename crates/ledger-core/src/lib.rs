//! # ledger-core
//!
//! Every rule of the Shotledger credit ledger, with no I/O and no clock: callers pass
//! `now`, ids and configuration in, and get decisions back (entries to write, amounts,
//! errors). The store (`ledger-store`) persists what the core decides.
//!
//! - [`Credits`] (exact thousandths) and [`Cents`]: no floats anywhere, checked arithmetic,
//!   and a documented maximum ([`Credits::MAX_BALANCE`], [`Credits::MAX_AMOUNT`]).
//! - [`Book`]: one account's grants and holds, and every operation on them
//!   (credit, debit, reserve / capture / release, refund, sweep of expiries).
//! - [`Catalogue`] of credit packs; [`OveragePolicy`] rounding extra usage up to 1,000s.
//! - [`YearMonth`], [`Retention`] and [`Page`] for history queries.
//! - [`idempotency`]: one effect per key.
//! - [`DatabaseUrl`] and [`PoolOptions`]: the database a deployment names, checked the same
//!   way by the configuration and the store.
//! - [`Operation`] and [`Book::apply`]: one operation with what it needs loaded, giving
//!   its outcome and the [`Effect`]s the caller persists with it.
//! - [`topup`] (when a charge starts an auto top-up), [`orders`] (refund shares and
//!   clawback, ADR 0200), [`audit`] (every invariant `verify` checks), [`pricing`]
//!   (screenshot prices and hold lifetime) and [`subscription`] statuses.

/// `as_str`, `Display`, `FromStr` and comparison with `&str` for a status enum, from its
/// variants' stored spellings (`Variant => "spelling"`). For the core's and the store's
/// status enums; not API.
#[doc(hidden)]
#[macro_export]
macro_rules! spelled_enum {
    ($ty:ident, $what:literal, $($variant:ident => $text:literal),+ $(,)?) => {
        impl $ty {
            /// The stored spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text,)+
                }
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = ::std::string::String;
            fn from_str(s: &str) -> ::std::result::Result<$ty, ::std::string::String> {
                match s {
                    $($text => Ok($ty::$variant),)+
                    other => Err(format!(concat!("unknown ", $what, " `{}`"), other)),
                }
            }
        }

        impl ::std::cmp::PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

pub mod amount;
pub mod audit;
pub mod book;
pub mod database;
pub mod entry;
pub mod error;
pub mod idempotency;
pub mod ids;
pub mod notify;
pub mod operation;
pub mod orders;
pub mod overage;
pub mod pack;
pub mod page;
pub mod plan;
pub mod pricing;
pub mod subscription;
pub mod time;
pub mod topup;

pub use amount::{AmountError, Cents, Credits};
pub use audit::AccountTotals;
pub use book::{Book, BookState, Changeset, Memo, SpendPolicy};
pub use database::{DatabaseUrl, PoolOptions};
pub use entry::{
    Allocation, Entry, EntryKind, Grant, GrantSource, GrantSpec, Hold, HoldStatus, Lot,
};
pub use error::{LedgerError, QueryError};
pub use idempotency::{Fingerprint, IdempotencyKey};
pub use ids::{AccountId, EntryId, GrantId, HoldId, IdKind, IdSource, PackId, SequentialIds};
pub use notify::{AlertState, Event, RetryPolicy};
pub use operation::{
    Applied, Context, Effect, Needs, Operation, Outcome, PlanContext, RefundOf, Spend,
};
pub use orders::{OrderError, OrderState, Settlement};
pub use overage::OveragePolicy;
pub use pack::{Catalogue, CatalogueError, CreditPack};
pub use page::Page;
pub use plan::{HardLimitRefusal, Period, Plan, PlanChange, Role, Terms};
pub use pricing::{CaptureKind, ScreenshotPrices};
pub use subscription::SubscriptionStatus;
pub use time::{Retention, Timestamp, YearMonth};
pub use topup::{AutoTopup, ChargeStatus, TopupStart, TopupStatus};
