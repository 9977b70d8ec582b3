//! Notifications to customers (ADR 12): registering webhook endpoints (owners only), the
//! list of an endpoint's deliveries, and the account's `credits.low` threshold. The
//! deliveries themselves are written by the store with the ledger changes that cause
//! them, and sent by [`crate::deliverer`].

use base64::Engine;
use ledger_core::{AccountId, Credits, Event};
use ledger_store::{Delivery, Endpoint};

use crate::auth::Authed;
use crate::error::ApiError;
use crate::service::members::require_owner;
use crate::state::AppState;

/// The longest endpoint URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// How long registering waits for the URL's host to resolve.
pub const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Deliveries listed per endpoint (the newest).
pub const DELIVERIES_LISTED: i64 = 100;

/// A new endpoint's signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("random source: {e}")))?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// The event names, for messages.
fn known_events() -> String {
    Event::ALL
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A non-empty list of known event names; a 400 naming `events` otherwise.
pub fn parse_events(events: &[String]) -> Result<Vec<Event>, ApiError> {
    if events.is_empty() {
        return Err(ApiError::invalid(
            "events",
            format!("events must list at least one event: {}", known_events()),
        ));
    }
    events
        .iter()
        .map(|name| {
            name.trim().parse::<Event>().map_err(|_| {
                ApiError::invalid(
                    "events",
                    format!(
                        "events: {name:?} is not an event; the events are {}",
                        known_events()
                    ),
                )
            })
        })
        .collect()
}

/// An http(s) URL whose every address the policy allows; a 400 naming `url` otherwise.
pub async fn check_url(url: &str, policy: &capture::TargetPolicy) -> Result<url::Url, ApiError> {
    let bad = |why: String| ApiError::invalid("url", why);
    let trimmed = url.trim();
    if trimmed.len() > MAX_URL_LEN {
        return Err(bad(format!("url must be at most {MAX_URL_LEN} characters")));
    }
    let parsed = url::Url::parse(trimmed).map_err(|e| {
        bad(format!(
            "url is not an absolute URL ({e}); send e.g. https://example.com/webhooks"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(format!(
            "url must be an http or https URL, not {}:",
            parsed.scheme()
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("url must not carry a user name or password".into()));
    }
    let host = parsed
        .host()
        .ok_or_else(|| bad("url has no host".into()))?
        .to_owned();
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| bad("url has no port".into()))?;
    let resolved = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        capture::guard::resolve_checked(&host, port, policy),
    )
    .await
    .map_err(|_| {
        bad(format!(
            "url: the host {host} did not resolve within {} seconds; check the name",
            RESOLVE_TIMEOUT.as_secs()
        ))
    })?;
    match resolved {
        Ok(_) => Ok(parsed),
        Err(capture::guard::ResolveFailure::Forbidden(_)) => Err(bad(format!(
            "url: {host} is or resolves to a loopback, private, link-local or reserved address, \
             which notifications may not reach; use a public address"
        ))),
        Err(capture::guard::ResolveFailure::Dns) => Err(bad(format!(
            "url: the host {host} does not resolve; check the name"
        ))),
    }
}

/// Registers an endpoint of the caller's account (owners only): the endpoint, with its
/// secret (the only time it is shown).
pub async fn create(
    state: &AppState,
    who: &Authed,
    url: &str,
    events: &[String],
) -> Result<Endpoint, ApiError> {
    require_owner(who)?;
    let events = parse_events(events)?;
    let policy = crate::deliverer::Deliverer::targets(&state.settings.notifications);
    let url = check_url(url, &policy).await?;
    let secret = new_secret()?;
    let (account, now) = (who.account_id.clone(), state.now());
    state
        .in_store(move |s| {
            s.notifications()
                .create_endpoint(&account, url.as_str(), &events, &secret, now)
        })
        .await
}

/// The caller's account's endpoints, oldest first.
pub async fn list(state: &AppState, account: AccountId) -> Result<Vec<Endpoint>, ApiError> {
    state
        .in_store(move |s| s.notifications().endpoints(&account))
        .await
}

fn not_found() -> ApiError {
    ApiError::NotFound("Webhook endpoint not found".into())
}

/// Deletes an endpoint of the caller's account (owners only); 404 when it has none with
/// that id.
pub async fn delete(state: &AppState, who: &Authed, id: String) -> Result<(), ApiError> {
    require_owner(who)?;
    let (account, now) = (who.account_id.clone(), state.now());
    let deleted = state
        .in_store(move |s| s.notifications().delete_endpoint(&account, &id, now))
        .await?;
    if deleted {
        Ok(())
    } else {
        Err(not_found())
    }
}

/// The newest deliveries of an endpoint of the caller's account, newest first.
pub async fn deliveries(
    state: &AppState,
    account: AccountId,
    id: String,
) -> Result<Vec<Delivery>, ApiError> {
    state
        .in_store(move |s| {
            s.notifications()
                .deliveries(&account, &id, DELIVERIES_LISTED)
        })
        .await?
        .ok_or_else(not_found)
}

/// The account's `credits.low` threshold.
pub async fn alerts(state: &AppState, account: AccountId) -> Result<Option<Credits>, ApiError> {
    state
        .in_store(move |s| s.notifications().low_balance(&account))
        .await
}

/// Sets (or with `None` turns off) the account's `credits.low` threshold.
pub async fn set_alerts(
    state: &AppState,
    account: AccountId,
    low: Option<Credits>,
) -> Result<Option<Credits>, ApiError> {
    if low.is_some_and(Credits::is_negative) {
        return Err(ApiError::invalid(
            "lowBalanceCredits",
            "lowBalanceCredits must not be negative (null turns the alert off)",
        ));
    }
    let now = state.now();
    state
        .in_store(move |s| s.notifications().set_low_balance(&account, low, now))
        .await?;
    Ok(low)
}
