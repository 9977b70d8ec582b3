//! Signup, login and logout (server-side sessions in an HttpOnly cookie).

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{time::Duration, Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::{post, web, FromRequest, HttpRequest, HttpResponse};
use ledger_store::NewAccount;
use serde::de::DeserializeOwned;

use crate::auth::{
    hash_password, new_session_token, sha256_hex, verify_password, Authed, Credential,
    SESSION_COOKIE,
};
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;
use crate::wire::{AccountView, Credentials};

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

/// The JSON body of signup and login, which anyone may send: at most
/// `server.auth_max_body_bytes` (a 413 beyond, checked on the declared length first and
/// then on what arrives), then read as [`JsonBody`].
#[derive(Debug)]
pub struct AuthBody<T>(pub JsonBody<T>);

impl<T: DeserializeOwned + 'static> FromRequest for AuthBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<AuthBody<T>, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<AppState>>()
            .map_or(4096, |s| s.settings.server.auth_max_body_bytes);
        let declared = req
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|n| n > limit as u64) {
                return Err(ApiError::TooLarge { limit });
            }
            let body = crate::body::read_limited(&mut payload, limit).await?;
            let mut whole = Payload::from(body);
            JsonBody::<T>::from_request(&req, &mut whole)
                .await
                .map(AuthBody)
        })
    }
}

fn session_cookie(state: &AppState, token: String) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, token)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.settings.auth.cookie_secure)
        .max_age(Duration::hours(
            state.settings.auth.session_ttl_hours as i64,
        ))
        .finish()
}

async fn start_session(
    state: &AppState,
    account: ledger_core::AccountId,
) -> Result<Cookie<'static>, ApiError> {
    let token = new_session_token();
    let hash = sha256_hex(&token);
    let now = state.now();
    let expires = now.plus_secs(state.settings.auth.session_ttl_hours as i64 * 3600);
    state
        .blocking(move |s| Ok(s.create_session(&account, &hash, now, expires)?))
        .await?;
    Ok(session_cookie(state, token))
}

/// Creates an account, grants the signup bonus once, and logs in.
#[utoipa::path(tag = "accounts", request_body = Credentials,
    responses((status = 201, body = AccountView), (status = 400, body = crate::wire::ErrorBody), (status = 409, body = crate::wire::ErrorBody), (status = 413, body = crate::wire::ErrorBody)))]
#[post("/api/v1/auth/signup")]
pub async fn signup(
    state: web::Data<AppState>,
    AuthBody(body): AuthBody<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let email = valid_email(&body.value.email)?;
    valid_password(&body.value.password)?;
    let password = body.value.password.clone();
    let bonus = state.settings.credits.signup_bonus;
    let now = state.now();
    let (account, balance) = state
        .blocking(move |s| {
            let hash = hash_password(&password)?;
            Ok(s.create_account(
                NewAccount {
                    email: Some(email),
                    password_hash: Some(hash),
                    signup_bonus: bonus,
                },
                now,
            )?)
        })
        .await?;
    let cookie = start_session(&state, account.id.clone()).await?;
    Ok(HttpResponse::Created().cookie(cookie).json(AccountView {
        account_id: account.id.into_string(),
        email: account.email,
        balance,
    }))
}

/// Logs in with email and password.
#[utoipa::path(tag = "accounts", request_body = Credentials,
    responses((status = 200, body = AccountView), (status = 400, body = crate::wire::ErrorBody), (status = 401, body = crate::wire::ErrorBody), (status = 413, body = crate::wire::ErrorBody), (status = 429, body = crate::wire::ErrorBody)))]
#[post("/api/v1/auth/login")]
pub async fn login(
    state: web::Data<AppState>,
    AuthBody(body): AuthBody<Credentials>,
) -> Result<HttpResponse, ApiError> {
    // Checked before anything is counted or kept: the throttle only ever sees addresses.
    let email = valid_email(&body.value.email)?;
    let password = body.value.password.clone();
    let now = state.now();
    let throttle = state.login_throttle.clone();
    if let Err(retry_after_secs) = throttle.check(&email, now) {
        return Err(ApiError::TooManyAttempts { retry_after_secs });
    }
    let key = email.clone();
    let found = state
        .blocking(move |s| {
            let account = s.account_by_email(&email)?;
            let ok = verify_password(
                &password,
                account.as_ref().and_then(|a| a.password_hash.as_deref()),
            );
            match account {
                Some(a) if ok => {
                    let balance = s.balance(&a.id, now)?.available;
                    Ok(Some((a, balance)))
                }
                _ => Ok(None),
            }
        })
        .await?;
    let Some((account, balance)) = found else {
        throttle.failed(&key, now);
        return Err(ApiError::BadLogin);
    };
    throttle.succeeded(&key);
    let cookie = start_session(&state, account.id.clone()).await?;
    Ok(HttpResponse::Ok().cookie(cookie).json(AccountView {
        account_id: account.id.into_string(),
        email: account.email,
        balance,
    }))
}

/// Ends the session (revoked server-side: the cookie stops working everywhere).
#[utoipa::path(tag = "accounts",
    responses((status = 204, description = "Logged out"), (status = 401, body = crate::wire::ErrorBody)))]
#[post("/api/v1/auth/logout")]
pub async fn logout(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, ApiError> {
    if let Credential::Session(hash) = who.credential {
        let now = state.now();
        state
            .blocking(move |s| Ok(s.revoke_session(&hash, now)?))
            .await?;
    }
    let mut gone = Cookie::build(SESSION_COOKIE, "").path("/").finish();
    gone.make_removal();
    Ok(HttpResponse::NoContent().cookie(gone).finish())
}
