//! The core's errors. Each variant says what is wrong with enough context for a caller to
//! tell its user exactly what to fix.

use crate::amount::Credits;
use crate::ids::{EntryId, HoldId};

/// A rule of the ledger refused an operation. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum LedgerError {
    #[error("insufficient credits: {required} required, {available} available")]
    InsufficientCredits {
        required: Credits,
        available: Credits,
    },
    /// A plan that charges extra reached its hard limit: the period's extra would pass
    /// `hard_limit - plan_limit`.
    #[error("hard limit reached: {required} required, {available} available, and the period's extra is at the hard limit; the account owner can raise the hard limit")]
    HardLimitReached {
        required: Credits,
        available: Credits,
    },
    #[error("invalid amount: {reason}")]
    InvalidAmount { reason: String },
    /// The operation would take a balance past the largest the ledger keeps, or move more
    /// than one operation may: `max` credits ([`Credits::MAX_BALANCE`],
    /// [`Credits::MAX_AMOUNT`]). Nothing was changed.
    #[error("this would take the balance past {max} credits, the most the ledger keeps in one balance or moves at once; use a smaller amount")]
    BalanceLimit { max: Credits },
    #[error("hold {hold_id} not found")]
    HoldNotFound { hold_id: HoldId },
    #[error("hold {hold_id} is already {status}")]
    HoldSettled { hold_id: HoldId, status: String },
    #[error("cannot capture {requested} from hold {hold_id}, which holds {held}")]
    CaptureExceedsHold {
        hold_id: HoldId,
        requested: Credits,
        held: Credits,
    },
    #[error("transaction {entry_id} not found")]
    EntryNotFound { entry_id: EntryId },
    #[error("transaction {entry_id} is of type {kind} and cannot be refunded; only usage can")]
    NotRefundable { entry_id: EntryId, kind: String },
    #[error("cannot refund {requested} of transaction {entry_id}: only {refundable} of it is still refundable")]
    RefundExceedsCharge {
        entry_id: EntryId,
        requested: Credits,
        refundable: Credits,
    },
}

/// A query parameter is malformed: `field()` names it; `message()` says what is allowed.
pub type QueryError = field_error::FieldError;
