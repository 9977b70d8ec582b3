//! An account holder's flows: signup, login and sessions, API keys, balances and
//! history, purchases and auto top-up. The handlers in `routes` only convert.

use std::sync::Arc;

use ledger_core::{AccountId, Credits, Entry, Page, Retention, Timestamp, YearMonth};
use ledger_store::{Account, ApiKey, Holder, KeyBy, Member, NewAccount, NewApiKey, Subscription};
use payments::{AutoTopupRequest, AutoTopupView, PaymentsError};

use crate::auth::{
    hash_password, new_api_key, new_session_token, new_signing_secret, sha256_hex, verify_password,
    Authed, Credential,
};
use crate::checkout::CheckoutFailure;
use crate::error::ApiError;
use crate::state::AppState;

/// The longest key name, in characters.
pub const NAME_MAX_CHARS: usize = 100;

/// Checks an email address enough to catch typos; returns it trimmed and lowercased.
pub fn valid_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim().to_lowercase();
    let ok = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.contains(char::is_whitespace)
        && email.matches('@').count() == 1;
    if ok {
        Ok(email)
    } else {
        Err(ApiError::invalid(
            "email",
            "email must be an address like name@example.com",
        ))
    }
}

/// 8 to 1024 characters.
pub fn valid_password(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if (8..=1024).contains(&n) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "password",
            "password must be 8 to 1024 characters long",
        ))
    }
}

/// Who presented a live session token or API key.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account_id: AccountId,
    pub credential: Credential,
    /// False when the account no longer exists.
    pub exists: bool,
    /// The member holding the credential; `None` for one made without a login (it acts
    /// as the account's owner).
    pub member: Option<Member>,
}

/// The account a session token or API key belongs to, how it was proven, whether the
/// account still exists, and which member holds it; `None` for a secret nobody holds
/// (or whose member was removed). An API key costs one read and no write
/// ([`find_key`], [`note_key_use`]).
pub async fn authenticate(
    state: &AppState,
    is_session: bool,
    secret: &str,
) -> Result<Option<Caller>, ApiError> {
    let hash = sha256_hex(secret);
    if !is_session {
        let found = find_key(state, hash, |hash| KeyBy::Hash(hash)).await?;
        return Ok(found.map(|key| {
            note_key_use(state, &key);
            key.caller
        }));
    }
    let now = state.now();
    state
        .blocking(move |store| session_caller(store, hash, now))
        .await
}

/// The caller a session token (by its hash) proves, on the store's thread; `None` for a
/// token nobody holds, or whose member was removed.
fn session_caller(
    store: &ledger_store::Store,
    hash: String,
    now: Timestamp,
) -> Result<Option<Caller>, ApiError> {
    let Some(account_id) = store.access().session_account(&hash, now)? else {
        return Ok(None);
    };
    let member = match store.members().session_holder(&hash)? {
        Holder::Account => None,
        Holder::Member(m) => Some(m),
        Holder::Removed => return Ok(None),
    };
    let exists = store.ledger().account(&account_id)?.is_some();
    Ok(Some(Caller {
        account_id,
        credential: Credential::Session(hash),
        exists,
        member,
    }))
}

/// [`authenticate`] and the account's available balance now, in one store call (one
/// permit, one trip to the blocking pool, one pooled connection): for a key, one indexed
/// read of the key, its holder, its account's kept balance and subscription
/// (`Access::key_caller_and_balance`). For the reads that answer with the balance
/// (`GET /api/v1/credits`, a cached screenshot). The balance is `None` only when the
/// account is gone (the caller is then refused anyway).
pub async fn authenticate_with_balance(
    state: &AppState,
    is_session: bool,
    secret: &str,
) -> Result<Option<(Caller, Option<Credits>)>, ApiError> {
    let hash = sha256_hex(secret);
    if !is_session {
        let found = find_key_with_balance(state, hash, |hash| KeyBy::Hash(hash)).await?;
        return Ok(found.map(|(key, balance)| {
            note_key_use(state, &key);
            (key.caller, balance)
        }));
    }
    let now = state.now();
    state
        .blocking(move |store| {
            let Some(caller) = session_caller(store, hash, now)? else {
                return Ok(None);
            };
            let balance = match caller.exists {
                true => Some(store.ledger().balance(&caller.account_id, now)?.available),
                false => None,
            };
            Ok(Some((caller, balance)))
        })
        .await
}

/// A live API key and its caller, with what a signed URL is checked against.
#[derive(Debug, Clone)]
pub struct FoundKey {
    pub caller: Caller,
    /// `None` for a key made before signed URLs existed.
    pub signing_secret: Option<String>,
    key_id: String,
    unnoted: bool,
}

/// The live API key named `name` (its hash, or its id for a signed URL, as `by` says), in
/// one indexed read that writes nothing; `None` when there is no such live key or its
/// member was removed. Revocation shows at once: nothing is cached.
pub async fn find_key(
    state: &AppState,
    name: String,
    by: fn(&str) -> KeyBy<'_>,
) -> Result<Option<FoundKey>, ApiError> {
    let now = state.now();
    let found = state
        .read_store(move |store| store.access().key_caller(by(&name)))
        .await?;
    Ok(found.and_then(|key| found_key(key, now)))
}

/// [`find_key`] and the available balance of the key's account, in one store call
/// (`Access::key_caller_and_balance`).
pub async fn find_key_with_balance(
    state: &AppState,
    name: String,
    by: fn(&str) -> KeyBy<'_>,
) -> Result<Option<(FoundKey, Option<Credits>)>, ApiError> {
    let now = state.now();
    let found = state
        .read_store(move |store| store.access().key_caller_and_balance(by(&name), now))
        .await?;
    Ok(found.and_then(|(key, balance)| {
        found_key(key, now).map(|key| (key, balance.map(|b| b.available)))
    }))
}

/// The caller of a live key; `None` when its member was removed.
fn found_key(key: ledger_store::KeyCaller, now: Timestamp) -> Option<FoundKey> {
    let unnoted = key.use_is_unnoted(now);
    let member = match key.holder {
        Holder::Account => None,
        Holder::Member(m) => Some(m),
        Holder::Removed => return None,
    };
    Some(FoundKey {
        unnoted,
        caller: Caller {
            account_id: key.account_id,
            credential: Credential::ApiKey(key.key_id.clone()),
            exists: key.account_exists,
            member,
        },
        signing_secret: key.signing_secret,
        key_id: key.key_id,
    })
}

/// Notes the use of a key whose `last_used_at` is over a minute old, after the request
/// and apart from it: the request never waits for the write, and a write that fails (a
/// database refusing writes) is logged and forgotten.
pub fn note_key_use(state: &AppState, key: &FoundKey) {
    if !key.unnoted {
        return;
    }
    let (state, id, now) = (state.clone(), key.key_id.clone(), state.now());
    actix_web::rt::spawn(async move {
        let key_id = id.clone();
        let noted = state
            .in_store(move |s| s.access().note_key_use(&id, now))
            .await;
        if let Err(error) = noted {
            tracing::warn!(%key_id, %error, "could not note the API key's last use");
        }
    });
}

/// A new session of a member: the token for the cookie (only its hash is stored).
pub async fn start_session(state: &AppState, member: Member) -> Result<String, ApiError> {
    let token = new_session_token()?;
    let hash = sha256_hex(&token);
    let now = state.now();
    let expires = now.plus_secs(state.settings.auth.session_ttl_hours as i64 * 3600);
    state
        .in_store(move |s| s.members().create_session(&member, &hash, now, expires))
        .await?;
    Ok(token)
}

/// A logged-in member: the account, the login's email, the balance, and the session
/// token for the cookie.
#[derive(Debug)]
pub struct LoggedIn {
    pub account: Account,
    pub email: String,
    pub balance: Credits,
    pub session_token: String,
}

impl LoggedIn {
    /// `member` of `account` (whose balance is `balance`) logged in: a new session.
    pub async fn start(
        state: &AppState,
        account: Account,
        member: Member,
        balance: Credits,
    ) -> Result<LoggedIn, ApiError> {
        let email = member.email.clone();
        let session_token = start_session(state, member).await?;
        Ok(LoggedIn {
            account,
            email,
            balance,
            session_token,
        })
    }
}

/// Creates an account, grants the signup bonus once, and starts a session.
pub async fn signup(state: &AppState, email: &str, password: &str) -> Result<LoggedIn, ApiError> {
    let email = valid_email(email)?;
    valid_password(password)?;
    let password = password.to_owned();
    let bonus = state.settings.credits.signup_bonus;
    let now = state.now();
    let (account, owner, balance) = state
        .blocking(move |s| {
            let hash = hash_password(&password)?;
            let (account, balance) = s.ledger().create_account(
                NewAccount {
                    email: Some(email.clone()),
                    password_hash: Some(hash),
                    signup_bonus: bonus,
                },
                now,
            )?;
            let owner = s
                .members()
                .login(&email)?
                .ok_or_else(|| ApiError::internal("a new account has no owner"))?
                .member;
            Ok((account, owner, balance))
        })
        .await?;
    LoggedIn::start(state, account, owner, balance).await
}

/// Logs in with email and password; failed attempts count towards the lockout.
pub async fn login(state: &AppState, email: &str, password: &str) -> Result<LoggedIn, ApiError> {
    // Checked before anything is counted or kept: the throttle only ever sees addresses.
    let email = valid_email(email)?;
    let password = password.to_owned();
    let now = state.now();
    let throttle = state.login_throttle.clone();
    if let Err(retry_after_secs) = throttle.check(&email, now) {
        return Err(ApiError::TooManyAttempts { retry_after_secs });
    }
    let key = email.clone();
    let found = state
        .blocking(move |s| {
            // A login is a member of an account (its owner, or someone they invited).
            let login = s.members().login(&email)?;
            let ok = verify_password(
                &password,
                login.as_ref().and_then(|l| l.password_hash.as_deref()),
            );
            let Some(login) = login.filter(|_| ok) else {
                return Ok(None);
            };
            let Some(account) = s.ledger().account(&login.member.account_id)? else {
                return Ok(None);
            };
            let balance = s.ledger().balance(&account.id, now)?.available;
            Ok(Some((account, login.member, balance)))
        })
        .await?;
    let Some((account, member, balance)) = found else {
        throttle.failed(&key, now);
        return Err(ApiError::BadLogin);
    };
    throttle.succeeded(&key);
    LoggedIn::start(state, account, member, balance).await
}

/// Revokes the session whose token hashes to `hash`.
pub async fn logout(state: &AppState, hash: String) -> Result<(), ApiError> {
    let now = state.now();
    state
        .in_store(move |s| s.access().revoke_session(&hash, now))
        .await?;
    Ok(())
}

/// A new API key of the caller (the member who makes it holds it), with its signing
/// secret.
#[derive(Debug)]
pub struct CreatedKey {
    /// The key itself: shown once, stored only as its hash.
    pub key: String,
    /// The secret its signed URLs are made with: shown once, kept by the server (ADR 11).
    pub signing_secret: String,
    pub stored: ApiKey,
}

/// Makes a key for the caller (the member who makes it holds it).
pub async fn create_api_key(
    state: &AppState,
    who: &Authed,
    name: &str,
) -> Result<CreatedKey, ApiError> {
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > NAME_MAX_CHARS {
        return Err(ApiError::invalid(
            "name",
            format!("name must be 1 to {NAME_MAX_CHARS} characters"),
        ));
    }
    let (key, prefix) = new_api_key()?;
    let signing_secret = new_signing_secret()?;
    let hash = sha256_hex(&key);
    let now = state.now();
    let (account, member) = (who.account_id.clone(), who.member.clone());
    let secret = signing_secret.clone();
    let stored = state
        .in_store(move |s| {
            let new = NewApiKey {
                name: &name,
                prefix: &prefix,
                key_hash: &hash,
                signing_secret: Some(&secret),
            };
            match &member {
                Some(m) => s.members().create_api_key(m, &new, now),
                None => s.access().create_api_key(&account, &new, now),
            }
        })
        .await?;
    Ok(CreatedKey {
        key,
        signing_secret,
        stored,
    })
}

/// The live keys the caller may see: an owner sees every key of the account, a member
/// only their own.
pub async fn api_keys(state: &AppState, who: &Authed) -> Result<Vec<ApiKey>, ApiError> {
    let (account, own) = (who.account_id.clone(), own_keys_only(who));
    state
        .in_store(move |s| match &own {
            Some(m) => s.members().api_keys(m),
            None => s.access().api_keys(&account),
        })
        .await
}

/// The member whose keys alone the caller may see and revoke (a member); `None` for an
/// owner, who manages every key of the account.
fn own_keys_only(who: &Authed) -> Option<Member> {
    who.member.clone().filter(|_| !who.role.manages_billing())
}

/// Revokes a key the caller may see (an owner: any of the account's; a member: their
/// own); 404 otherwise.
pub async fn revoke_api_key(state: &AppState, who: &Authed, id: String) -> Result<(), ApiError> {
    let now = state.now();
    let shown = id.clone();
    let (account, own) = (who.account_id.clone(), own_keys_only(who));
    let revoked = state
        .in_store(move |s| match &own {
            Some(m) => s.members().revoke_api_key(m, &id, now),
            None => s.access().revoke_api_key(&account, &id, now),
        })
        .await?;
    if revoked {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("API key {shown} not found")))
    }
}

/// What can be spent now: usable credits minus active holds.
pub async fn available(state: &AppState, account: &AccountId) -> Result<Credits, ApiError> {
    let (id, now) = (account.clone(), state.now());
    state
        .read_store(move |s| s.ledger().balance(&id, now).map(|b| b.available))
        .await
}

/// The account's subscription, if any.
pub async fn subscription(
    state: &AppState,
    account: AccountId,
) -> Result<Option<Subscription>, ApiError> {
    state
        .in_store(move |s| s.access().subscription(&account))
        .await
}

/// One page of history, newest first.
pub async fn history(
    state: &AppState,
    account: AccountId,
    page: Page,
) -> Result<Vec<Entry>, ApiError> {
    state
        .in_store(move |s| s.ledger().history(&account, page))
        .await
}

/// Every entry of a calendar month; empty beyond the retention window.
pub async fn month(
    state: &AppState,
    account: AccountId,
    year: Option<&str>,
    month: Option<&str>,
) -> Result<Vec<Entry>, ApiError> {
    let now = state.now();
    let month = YearMonth::from_query(year, month, now)?;
    let retention =
        Retention::months(state.settings.credits.retention_months).map_err(ApiError::internal)?;
    if !retention.contains(month, now) {
        return Ok(Vec::new());
    }
    state
        .in_store(move |s| s.ledger().month(&account, month))
        .await
}

/// 503 `PAYMENTS_NOT_CONFIGURED`: no payment provider is configured (the built-in
/// default), so nothing can be bought. The message names the settings to set; retrying
/// helps only once an operator has set them.
pub fn payments_not_configured() -> ApiError {
    ApiError::Unavailable {
        code: "PAYMENTS_NOT_CONFIGURED",
        message: payments::PAYMENTS_NOT_CONFIGURED.into(),
        retry_after_secs: 3600,
    }
}

/// Starts a checkout for an active pack; returns the provider's checkout URL.
pub async fn purchase(
    state: &AppState,
    account: AccountId,
    pack_id: &str,
) -> Result<String, ApiError> {
    let pack = state
        .catalogue
        .find_active(pack_id.trim())
        .cloned()
        .ok_or_else(|| ApiError::NotFound("Credit pack not found".into()))?;
    let provider = state.checkout.clone();
    let url = state
        .blocking
        .store(move || Ok(provider.create_checkout(&account, &pack)))
        .await?;
    url.map_err(|failure| match failure {
        CheckoutFailure::ProductNotConfigured => {
            ApiError::Misconfigured("Product not configured for this pack".into())
        }
        CheckoutFailure::Provider(why) => ApiError::BadGateway(format!(
            "The payment provider could not start a checkout ({why}); try again in a moment"
        )),
        CheckoutFailure::NotConfigured => payments_not_configured(),
        CheckoutFailure::Internal(why) => ApiError::internal(why),
    })
}

/// The payments service; none wired in (only tests build such a state): payments are off.
pub(crate) fn payments(state: &AppState) -> Result<Arc<payments::Payments>, ApiError> {
    state.payments.clone().ok_or_else(payments_not_configured)
}

/// No provider: turning auto top-up on answers 503 `PAYMENTS_NOT_CONFIGURED` (as a
/// purchase does), since nothing could pay for a top-up; Polar: 409, it cannot charge a
/// saved payment method.
pub(crate) fn payments_error(e: PaymentsError) -> ApiError {
    match e {
        PaymentsError::NotConfigured => payments_not_configured(),
        PaymentsError::UnknownPack { .. } => ApiError::NotFound("Credit pack not found".into()),
        PaymentsError::UnknownPlan { .. } => ApiError::NotFound("Plan not found".into()),
        PaymentsError::PlanNotSold { reason, .. } => ApiError::conflict("PLAN_NOT_SOLD", reason),
        PaymentsError::AutoTopupUnsupported { reason } => {
            ApiError::conflict("AUTO_TOPUP_UNSUPPORTED", reason)
        }
        PaymentsError::Store(s) => ApiError::from(s),
        other => ApiError::internal_from(other),
    }
}

/// The account's auto top-up settings and status.
pub async fn auto_topup(state: &AppState, account: AccountId) -> Result<AutoTopupView, ApiError> {
    let p = payments(state)?;
    state
        .blocking
        .store(move || p.get_auto_topup(&account).map_err(payments_error))
        .await
}

/// Sets auto top-up.
pub async fn set_auto_topup(
    state: &AppState,
    account: AccountId,
    request: AutoTopupRequest,
) -> Result<AutoTopupView, ApiError> {
    if request.threshold_credits.is_negative() {
        return Err(ApiError::invalid(
            "thresholdCredits",
            "thresholdCredits must not be negative",
        ));
    }
    let (p, now) = (payments(state)?, state.now());
    state
        .blocking
        .store(move || {
            p.put_auto_topup(&account, &request, now)
                .map_err(payments_error)
        })
        .await
}
