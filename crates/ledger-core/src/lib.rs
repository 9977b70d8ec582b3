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

pub mod amount;
pub mod book;
pub mod database;
pub mod entry;
pub mod error;
pub mod idempotency;
pub mod ids;
pub mod overage;
pub mod pack;
pub mod page;
pub mod time;

pub use amount::{AmountError, Cents, Credits};
pub use book::{Book, BookState, Changeset, Memo, SpendPolicy};
pub use database::{DatabaseUrl, PoolOptions};
pub use entry::{
    Allocation, Entry, EntryKind, Grant, GrantSource, GrantSpec, Hold, HoldStatus, Lot,
};
pub use error::{LedgerError, QueryError};
pub use idempotency::{Fingerprint, IdempotencyKey};
pub use ids::{AccountId, EntryId, GrantId, HoldId, IdKind, IdSource, PackId, SequentialIds};
pub use overage::OveragePolicy;
pub use pack::{Catalogue, CatalogueError, CreditPack};
pub use page::Page;
pub use time::{Retention, Timestamp, YearMonth};
