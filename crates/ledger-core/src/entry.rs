//! Ledger entries (what clients see as transactions), lots of credits (grants) and holds.

use serde::{Deserialize, Serialize};

use crate::amount::Credits;
use crate::ids::{AccountId, EntryId, GrantId, HoldId};
use crate::time::Timestamp;

/// The type of a ledger entry, as named by the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Purchase,
    AutoTopup,
    Usage,
    SignupBonus,
    Refund,
    Allowance,
    Expiry,
    Adjustment,
    PurchaseRefund,
}

impl EntryKind {
    pub const ALL: [EntryKind; 9] = [
        EntryKind::Purchase,
        EntryKind::AutoTopup,
        EntryKind::Usage,
        EntryKind::SignupBonus,
        EntryKind::Refund,
        EntryKind::Allowance,
        EntryKind::Expiry,
        EntryKind::Adjustment,
        EntryKind::PurchaseRefund,
    ];

    /// The short human label of the usage-by-month view (`source`), when the caller
    /// gives none.
    pub fn default_source(self) -> &'static str {
        match self {
            EntryKind::Purchase => "Purchase",
            EntryKind::AutoTopup => "Auto Top-up",
            EntryKind::Usage => "Usage",
            EntryKind::SignupBonus => "Signup Bonus",
            EntryKind::Refund => "Refund",
            EntryKind::Allowance => "Monthly Reset",
            EntryKind::Expiry => "Expiry",
            EntryKind::Adjustment => "Adjustment",
            EntryKind::PurchaseRefund => "Purchase Refund",
        }
    }
}

crate::spelled_enum!(
    EntryKind,
    "entry kind",
    Purchase => "purchase",
    AutoTopup => "auto_topup",
    Usage => "usage",
    SignupBonus => "signup_bonus",
    Refund => "refund",
    Allowance => "allowance",
    Expiry => "expiry",
    Adjustment => "adjustment",
    PurchaseRefund => "purchase_refund",
);

/// Where a slice of credits came from or went to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "lot", content = "id", rename_all = "snake_case")]
pub enum Lot {
    /// A grant's remaining credits.
    Grant(GrantId),
    /// Credits spent beyond all grants, allowed only under an overdraft policy.
    Overdraft,
}

/// A positive quantity of credits moved to or from one lot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub lot: Lot,
    pub amount: Credits,
}

/// One append-only line of an account's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: EntryId,
    pub account_id: AccountId,
    /// Position in the account's ledger, from 1, without gaps.
    pub seq: i64,
    pub kind: EntryKind,
    /// Signed: positive adds credits, negative takes them.
    pub amount: Credits,
    /// The account's book balance right after this entry.
    pub balance_after: Credits,
    pub description: String,
    pub reference_id: Option<String>,
    /// Short human label (`Screenshot`, `Purchase`, ...).
    pub source: String,
    /// The account's plan name when the entry was made.
    pub plan: Option<String>,
    pub created_at: Timestamp,
    /// The hold a `usage` entry captured.
    pub hold_id: Option<HoldId>,
    /// The `usage` entry a `refund` gives back.
    pub refund_of: Option<EntryId>,
    /// Which lots the entry moved; they add up to `|amount|`.
    pub allocations: Vec<Allocation>,
}

/// What kind of lot a grant is; decides its default priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantSource {
    Allowance,
    Purchase,
    AutoTopup,
    SignupBonus,
    Adjustment,
    Refund,
}

impl GrantSource {
    pub const ALL: [GrantSource; 6] = [
        GrantSource::Allowance,
        GrantSource::Purchase,
        GrantSource::AutoTopup,
        GrantSource::SignupBonus,
        GrantSource::Adjustment,
        GrantSource::Refund,
    ];

    /// Lower is drawn first: a period's allowance before purchased and bonus credits.
    pub fn default_priority(self) -> i32 {
        match self {
            GrantSource::Allowance => 0,
            _ => 100,
        }
    }

    /// The entry kind that records this grant.
    pub fn entry_kind(self) -> EntryKind {
        match self {
            GrantSource::Allowance => EntryKind::Allowance,
            GrantSource::Purchase => EntryKind::Purchase,
            GrantSource::AutoTopup => EntryKind::AutoTopup,
            GrantSource::SignupBonus => EntryKind::SignupBonus,
            GrantSource::Adjustment => EntryKind::Adjustment,
            GrantSource::Refund => EntryKind::Refund,
        }
    }
}

crate::spelled_enum!(
    GrantSource,
    "grant source",
    Allowance => "allowance",
    Purchase => "purchase",
    AutoTopup => "auto_topup",
    SignupBonus => "signup_bonus",
    Adjustment => "adjustment",
    Refund => "refund",
);

/// A lot of credits: drawn in burn-down order, never below zero, never above `amount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: GrantId,
    pub account_id: AccountId,
    pub source: GrantSource,
    pub amount: Credits,
    pub remaining: Credits,
    pub priority: i32,
    pub effective_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl Grant {
    /// Can be drawn at `now`: effective, not expired, not empty.
    pub fn usable(&self, now: Timestamp) -> bool {
        self.remaining.is_positive() && self.live(now)
    }

    /// Effective and not expired at `now`, whatever remains.
    pub fn live(&self, now: Timestamp) -> bool {
        self.effective_at <= now && self.expires_at.is_none_or(|e| now < e)
    }

    pub fn expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    /// Burn-down order: priority, then earliest expiry (never-expiring last), then oldest,
    /// then id.
    pub fn burn_key(&self) -> (i32, Timestamp, Timestamp, &GrantId) {
        (
            self.priority,
            self.expires_at.unwrap_or(Timestamp::MAX),
            self.created_at,
            &self.id,
        )
    }
}

/// What a new grant looks like; the book adds id, account and remaining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantSpec {
    pub source: GrantSource,
    pub amount: Credits,
    pub priority: i32,
    pub effective_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
}

impl GrantSpec {
    /// A non-expiring grant, effective at once, with its source's default priority.
    pub fn new(source: GrantSource, amount: Credits) -> GrantSpec {
        GrantSpec {
            source,
            amount,
            priority: source.default_priority(),
            effective_at: None,
            expires_at: None,
        }
    }

    pub fn expiring(mut self, at: Timestamp) -> GrantSpec {
        self.expires_at = Some(at);
        self
    }

    pub fn effective(mut self, at: Timestamp) -> GrantSpec {
        self.effective_at = Some(at);
        self
    }
}

/// The life of a hold: exactly one terminal state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    Active,
    Captured,
    Released,
    Expired,
}

crate::spelled_enum!(
    HoldStatus,
    "hold status",
    Active => "active",
    Captured => "captured",
    Released => "released",
    Expired => "expired",
);

/// Credits reserved for work in progress. The reserved credits are taken out of their
/// grants at once (so an expiring grant cannot strand a hold) and go back on release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub id: HoldId,
    pub account_id: AccountId,
    pub amount: Credits,
    pub captured: Credits,
    pub status: HoldStatus,
    pub description: String,
    pub reference_id: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub settled_at: Option<Timestamp>,
    /// The lots the reserved credits were taken from, in burn-down order.
    pub allocations: Vec<Allocation>,
}

impl Hold {
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.status == HoldStatus::Active && now < self.expires_at
    }
}
