//! The JSON shapes of the contract (camelCase), and conversions from the core's types.
//!
//! Request bodies are strict: every field has one JSON type, and a value of another type
//! (an amount as a string, a boolean as a string, a number for a string, `null` for a
//! required field) is a 400 naming the field (`body::parse_json`). An amount of credits is
//! a JSON number with at most three decimals and at most `Credits::MAX_AMOUNT`
//! (1,000,000,000,000); `Credits`' own `Deserialize` enforces that, so every body that
//! holds a `Credits` gets it. An optional field may be left out or sent as `null`, which
//! means the same.

use ledger_core::{CreditPack, Credits, Entry, Hold, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what to do.
    pub error: String,
    /// A stable machine-readable code, where the contract names one.
    pub code: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceView {
    #[schema(value_type = f64)]
    pub balance: Credits,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackView {
    pub id: String,
    pub name: String,
    #[schema(value_type = f64)]
    pub credits: Credits,
    pub price_cents: i64,
    pub is_popular: bool,
}

impl From<&CreditPack> for PackView {
    fn from(p: &CreditPack) -> PackView {
        PackView {
            id: p.id.as_str().to_owned(),
            name: p.name.clone(),
            credits: p.credits,
            price_cents: p.price.get(),
            is_popular: p.popular,
        }
    }
}

/// A ledger entry as a transaction.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionView {
    pub id: String,
    /// purchase, auto_topup, usage, signup_bonus, refund, allowance, expiry, adjustment, purchase_refund
    #[serde(rename = "type")]
    pub kind: String,
    /// Signed: negative takes credits.
    #[schema(value_type = f64)]
    pub amount: Credits,
    pub description: String,
    pub reference_id: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl From<&Entry> for TransactionView {
    fn from(e: &Entry) -> TransactionView {
        TransactionView {
            id: e.id.as_str().to_owned(),
            kind: e.kind.as_str().to_owned(),
            amount: e.amount,
            description: e.description.clone(),
            reference_id: e.reference_id.clone(),
            created_at: e.created_at,
        }
    }
}

/// One line of the usage-by-month ledger (seed 003).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageView {
    pub transaction_id: String,
    /// credit or debit
    #[serde(rename = "type")]
    pub direction: &'static str,
    /// Always positive.
    #[schema(value_type = f64)]
    pub amount: Credits,
    pub source: String,
    pub description: String,
    pub plan: String,
    #[schema(value_type = String, format = DateTime)]
    pub transaction_date: Timestamp,
}

/// The plan label of entries made without a subscription.
pub const NO_PLAN: &str = "Pay as you go";

impl From<&Entry> for UsageView {
    fn from(e: &Entry) -> UsageView {
        UsageView {
            transaction_id: e.id.as_str().to_owned(),
            direction: if e.amount.is_negative() {
                "debit"
            } else {
                "credit"
            },
            amount: e.amount.abs(),
            source: e.source.clone(),
            description: e.description.clone(),
            plan: e.plan.clone().unwrap_or_else(|| NO_PLAN.into()),
            transaction_date: e.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub email: String,
    pub password: String,
}

/// A signup: a new account, or (with `inviteToken`) a login joining the account that
/// invited this email.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignupRequest {
    pub email: String,
    pub password: String,
    /// The token from `POST /api/v1/members`: joins the inviting account with the
    /// invited role (no new account, no signup bonus).
    #[serde(default)]
    pub invite_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    pub account_id: String,
    pub email: Option<String>,
    #[schema(value_type = f64)]
    pub balance: Credits,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyCreated {
    pub id: String,
    pub name: String,
    /// The key itself: shown only here, once.
    pub key: String,
    pub prefix: String,
    /// The secret that signs this key's signed URLs (`ss_` + 64 hex digits): shown only
    /// here, once. A GET whose query ends `keyId=<id>[&expires=<unix seconds>]` and then
    /// `&signature=<hex HMAC-SHA256 of the query string before it, keyed with this secret's
    /// UTF-8 bytes>` is authenticated as this key.
    pub signing_secret: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<Timestamp>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreditsV1 {
    #[schema(value_type = f64)]
    pub credits: Credits,
    /// active, inactive, cancelled or past_due
    pub subscription_status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PurchaseRequest {
    pub pack_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutView {
    pub checkout_url: String,
}

// ---- admin ----

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminNewAccount {
    pub email: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentRequest {
    /// Positive grants credits, negative takes them away (never below zero). A number
    /// with at most three decimals; a grant that would take the balance past
    /// 1,000,000,000,000 credits is refused.
    #[schema(value_type = f64, minimum = -1e12, maximum = 1e12)]
    pub amount: Credits,
    pub description: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DebitRequest {
    /// Greater than zero, at most three decimals.
    #[schema(value_type = f64, exclusive_minimum = 0, maximum = 1e12)]
    pub amount: Credits,
    pub description: String,
    pub reference_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HoldRequest {
    /// Greater than zero, at most three decimals.
    #[schema(value_type = f64, exclusive_minimum = 0, maximum = 1e12)]
    pub amount: Credits,
    /// Default `credits.hold_ttl_secs`.
    #[schema(minimum = 1, maximum = 86400)]
    pub ttl_seconds: Option<u64>,
    pub description: String,
    pub reference_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// Default: all of the hold; less releases the rest.
    #[schema(value_type = Option<f64>, exclusive_minimum = 0, maximum = 1e12)]
    pub amount: Option<Credits>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HoldView {
    pub hold_id: String,
    /// active, captured, released or expired
    pub status: String,
    #[schema(value_type = f64)]
    pub amount: Credits,
    #[schema(value_type = f64)]
    pub captured: Credits,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// The usage entry of a capture.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction: Option<TransactionView>,
}

impl HoldView {
    pub fn new(h: &Hold, transaction: Option<TransactionView>) -> HoldView {
        HoldView {
            hold_id: h.id.as_str().to_owned(),
            status: h.status.as_str().to_owned(),
            amount: h.amount,
            captured: h.captured,
            expires_at: h.expires_at,
            transaction,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefundRequest {
    pub transaction_id: String,
    /// Default: all that is still refundable.
    #[schema(value_type = Option<f64>, exclusive_minimum = 0, maximum = 1e12)]
    pub amount: Option<Credits>,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionRequest {
    pub plan_id: String,
    pub status: Option<String>,
    /// Aligns the billing periods (whole months from it), RFC 3339, not in the future.
    #[schema(format = DateTime)]
    pub current_period_start: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaxHardLimitRequest {
    #[schema(value_type = f64, exclusive_minimum = 0, maximum = 1e12)]
    pub max_hard_limit: Credits,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaxHardLimitView {
    pub account_id: String,
    #[schema(value_type = f64)]
    pub max_hard_limit: Credits,
}
