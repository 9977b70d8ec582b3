//! The operator's metering flows (`/admin/v1`): adjustments, debits, holds, captures,
//! releases, refunds, accounts, subscriptions, hard limits and verify. Each checks its
//! input, builds the ledger operation and applies it; the handlers only convert.

use ledger_core::{
    AccountId, Credits, EntryId, EntryKind, GrantSource, GrantSpec, Hold, HoldId, IdempotencyKey,
    Memo, Timestamp,
};
use ledger_store::{
    Account, Applied, Idempotency, NewAccount, Operation, Spend, Store, VerifyReport,
};

use crate::auth::hash_password;
use crate::error::ApiError;
use crate::service::accounts::{valid_email, valid_password};
use crate::state::AppState;

/// The default maximum hard limit of an account (seed 002).
pub const DEFAULT_MAX_HARD_LIMIT: Credits = Credits::whole(100_000);

/// The longest hold an operator may ask for, in seconds.
pub const MAX_HOLD_TTL_SECS: u64 = 86_400;

/// A description, trimmed: 1 to 500 characters.
pub fn description(text: &str) -> Result<String, ApiError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > 500 {
        return Err(ApiError::invalid(
            "description",
            "description must be 1 to 500 characters",
        ));
    }
    Ok(text.to_owned())
}

/// `amount` if it is above zero; 400 naming `field` otherwise.
pub fn positive(field: &str, amount: Credits) -> Result<Credits, ApiError> {
    if amount.is_positive() {
        Ok(amount)
    } else {
        Err(ApiError::invalid(
            field,
            format!("{field} must be greater than zero"),
        ))
    }
}

/// Applies `operation` to `account` (once per idempotency key).
pub async fn apply(
    state: &AppState,
    account: AccountId,
    idempotency: Option<Idempotency>,
    operation: Operation,
) -> Result<Applied, ApiError> {
    let now = state.now();
    // Only the engine's writers take a connection: bounded by the waiting operations.
    state
        .in_ledger(move |s| {
            s.ledger()
                .apply(&account, idempotency.as_ref(), operation, now)
        })
        .await
}

/// An adjustment: a grant when positive, a strict debit (never below zero) when negative.
pub fn adjustment(amount: Credits, description_text: &str) -> Result<Operation, ApiError> {
    let memo = Memo::new(description(description_text)?);
    if amount.is_positive() {
        Ok(Operation::Credit {
            spec: GrantSpec::new(GrantSource::Adjustment, amount),
            memo,
        })
    } else if amount.is_negative() {
        Ok(Operation::Debit {
            kind: EntryKind::Adjustment,
            amount: -amount,
            spend: Spend::Strict,
            memo,
        })
    } else {
        Err(ApiError::invalid("amount", "amount must not be zero"))
    }
}

/// Usage charged at once, within the account's limit.
pub fn debit(
    amount: Credits,
    description_text: &str,
    reference_id: Option<String>,
) -> Result<Operation, ApiError> {
    let mut memo = Memo::new(description(description_text)?);
    memo.reference_id = reference_id;
    Ok(Operation::Debit {
        kind: EntryKind::Usage,
        amount: positive("amount", amount)?,
        spend: Spend::WithinAccountLimit,
        memo,
    })
}

/// A hold for work in progress; `ttl_secs` defaults to `credits.hold_ttl_secs`.
pub fn hold(
    state: &AppState,
    amount: Credits,
    ttl_secs: Option<u64>,
    description_text: &str,
    reference_id: Option<String>,
) -> Result<Operation, ApiError> {
    let ttl = ttl_secs.unwrap_or(state.settings.credits.hold_ttl_secs);
    if !(1..=MAX_HOLD_TTL_SECS).contains(&ttl) {
        return Err(ApiError::invalid(
            "ttlSeconds",
            "ttlSeconds must be from 1 to 86400",
        ));
    }
    let mut memo = Memo::new(description(description_text)?);
    memo.reference_id = reference_id;
    Ok(Operation::Reserve {
        amount: positive("amount", amount)?,
        ttl_ms: ttl as i64 * 1000,
        spend: Spend::WithinAccountLimit,
        memo,
    })
}

/// A refund of all (`None`) or part of a usage charge.
pub fn refund(
    transaction_id: &str,
    amount: Option<Credits>,
    description_text: Option<&str>,
) -> Result<Operation, ApiError> {
    let amount = amount.map(|a| positive("amount", a)).transpose()?;
    let memo = Memo::new(match description_text {
        Some(d) => description(d)?,
        None => "Refund for failed work".to_owned(),
    })
    .reference(transaction_id.to_owned());
    Ok(Operation::Refund {
        entry_id: EntryId::new(transaction_id.to_owned()),
        amount,
        memo,
    })
}

/// How a hold ends.
#[derive(Debug, Clone, Copy)]
pub enum Settlement {
    /// Charge all of it, or `Some(part)` (the rest returns).
    Capture(Option<Credits>),
    Release,
}

impl Settlement {
    /// A capture of all, or of a part above zero.
    pub fn capture(amount: Option<Credits>) -> Result<Settlement, ApiError> {
        Ok(Settlement::Capture(
            amount.map(|a| positive("amount", a)).transpose()?,
        ))
    }
}

/// Captures or releases a hold of whichever account holds it; returns what was applied
/// and the hold as it is afterwards.
pub async fn settle(
    state: &AppState,
    hold_id: HoldId,
    settlement: Settlement,
    idempotency: Option<Idempotency>,
) -> Result<(Applied, Hold), ApiError> {
    let operation = match settlement {
        Settlement::Capture(amount) => Operation::Capture {
            hold_id: hold_id.clone(),
            amount,
            memo: None,
        },
        Settlement::Release => Operation::Release {
            hold_id: hold_id.clone(),
        },
    };
    let lookup = hold_id.clone();
    let account = state
        .in_store(move |s| s.ledger().hold_account(&lookup))
        .await?;
    let applied = apply(state, account, idempotency, operation).await?;
    let settled = state.in_store(move |s| s.ledger().hold(&hold_id)).await?;
    let settled = settled.ok_or_else(|| ApiError::internal("a settled hold vanished"))?;
    Ok((applied, settled))
}

/// Creates an account with the signup bonus; email and password are optional here.
pub async fn create_account(
    state: &AppState,
    email: Option<String>,
    password: Option<String>,
) -> Result<(Account, Credits), ApiError> {
    let email = email.as_deref().map(valid_email).transpose()?;
    if let Some(p) = &password {
        valid_password(p)?;
    }
    let bonus = state.settings.credits.signup_bonus;
    let now = state.now();
    state
        .blocking(move |s| create_account_in(s, bonus, email, password, now))
        .await
}

/// [`create_account`] on a blocking thread of the caller's (the operator CLI calls it
/// directly): checks the email and password, hashes the password, and creates the
/// account with `signup_bonus` (`credits.signup_bonus`).
pub fn create_account_in(
    store: &Store,
    signup_bonus: Credits,
    email: Option<String>,
    password: Option<String>,
    now: Timestamp,
) -> Result<(Account, Credits), ApiError> {
    let email = email.as_deref().map(valid_email).transpose()?;
    if let Some(p) = &password {
        valid_password(p)?;
    }
    let password_hash = password.as_deref().map(hash_password).transpose()?;
    Ok(store.ledger().create_account(
        NewAccount {
            email,
            password_hash,
            signup_bonus,
        },
        now,
    )?)
}

/// The path of `POST /admin/v1/accounts/{id}/credits` for `account`.
pub fn adjustment_path(account: &AccountId) -> String {
    format!("/admin/v1/accounts/{}/credits", account.as_str())
}

/// The idempotency of an adjustment of `amount` with `description_text` under `key`,
/// exactly as `POST /admin/v1/accounts/{id}/credits` with the body
/// `{"amount": amount, "description": description_text}` gets it: the operator CLI's
/// `credits grant` shares the admin API's key space, so the same key with the same
/// grant replays the same entry through either.
pub fn adjustment_idempotency(
    account: &AccountId,
    key: IdempotencyKey,
    amount: Credits,
    description_text: &str,
) -> Idempotency {
    let body = serde_json::json!({ "amount": amount, "description": description_text });
    let fingerprint =
        crate::body::fingerprint("POST", &adjustment_path(account), &body.to_string());
    Idempotency::new(key, fingerprint)
}

// Subscriptions: `service::subscription::subscribe_by_operator`.

/// Sets how high the account owner may set the hard limit.
pub async fn set_max_hard_limit(
    state: &AppState,
    account: AccountId,
    limit: Credits,
) -> Result<Credits, ApiError> {
    let limit = positive("maxHardLimit", limit)?;
    let now = state.now();
    state
        .in_store(move |s| s.access().set_max_hard_limit(&account, limit, now))
        .await?;
    Ok(limit)
}

/// Checks every ledger invariant over the whole database.
pub async fn verify(state: &AppState) -> Result<VerifyReport, ApiError> {
    state.in_store(|s| s.maintenance().verify()).await
}
