//! Signup, login and logout (server-side sessions in an HttpOnly cookie).

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{time::Duration, Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{post, FromRequest, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;

use crate::auth::{Authed, Credential, SESSION_COOKIE};
use crate::body::{body_limit, header, read_limited, JsonBody};
use crate::error::ApiError;
use crate::routes::{AppData, Reply};
use crate::service::accounts::{self, LoggedIn};
use crate::state::AppState;
use crate::wire::{AccountView, Credentials, SignupRequest};

pub use crate::service::accounts::{valid_email, valid_password};

/// The JSON body of signup and login, which anyone may send: at most
/// `server.auth_max_body_bytes` (a 413 beyond, checked on the declared length first and
/// then on what arrives), then read as [`JsonBody`].
#[derive(Debug)]
pub struct AuthBody<T>(pub JsonBody<T>);

impl<T: DeserializeOwned + 'static> FromRequest for AuthBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<AuthBody<T>, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = body_limit(req, 4096, |s| s.auth_max_body_bytes);
        let declared = header(req, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|n| n > limit as u64) {
                return Err(ApiError::TooLarge { limit });
            }
            let body = read_limited(&mut payload, limit).await?;
            let mut whole = Payload::from(body);
            JsonBody::<T>::from_request(&req, &mut whole)
                .await
                .map(AuthBody)
        })
    }
}

/// The session cookie of `token` (HttpOnly, SameSite=Lax, Secure when
/// `auth.cookie_secure`): the API's and the dashboard's.
pub fn session_cookie(state: &AppState, token: String) -> Cookie<'static> {
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

/// The answer that logs `who` in: their account and the session cookie.
fn logged_in(state: &AppState, status: StatusCode, who: LoggedIn) -> HttpResponse {
    HttpResponse::build(status)
        .cookie(session_cookie(state, who.session_token))
        .json(AccountView {
            account_id: who.account.id.into_string(),
            email: Some(who.email),
            balance: who.balance,
        })
}

/// Creates an account, grants the signup bonus once, and logs in; with `inviteToken`,
/// joins the inviting account instead (no new account, no bonus; an unknown, used or
/// expired token is 400 `INVALID_INVITE`).
#[utoipa::path(tag = "accounts", request_body = SignupRequest,
    responses((status = 201, body = AccountView), (status = 400, body = crate::wire::ErrorBody), (status = 409, body = crate::wire::ErrorBody), (status = 413, body = crate::wire::ErrorBody)))]
#[post("/api/v1/auth/signup")]
pub async fn signup(state: AppData, AuthBody(body): AuthBody<SignupRequest>) -> Reply {
    let body = body.value;
    let who = match &body.invite_token {
        Some(token) => {
            crate::service::members::join(&state, &body.email, &body.password, token).await?
        }
        None => accounts::signup(&state, &body.email, &body.password).await?,
    };
    tracing::info!(account_id = %who.account.id, "account created");
    Ok(logged_in(&state, StatusCode::CREATED, who))
}

/// Logs in with email and password.
#[utoipa::path(tag = "accounts", request_body = Credentials,
    responses((status = 200, body = AccountView), (status = 400, body = crate::wire::ErrorBody), (status = 401, body = crate::wire::ErrorBody), (status = 413, body = crate::wire::ErrorBody), (status = 429, body = crate::wire::ErrorBody)))]
#[post("/api/v1/auth/login")]
pub async fn login(state: AppData, AuthBody(body): AuthBody<Credentials>) -> Reply {
    let who = accounts::login(&state, &body.value.email, &body.value.password).await?;
    Ok(logged_in(&state, StatusCode::OK, who))
}

/// Ends the session (revoked server-side: the cookie stops working everywhere).
#[utoipa::path(tag = "accounts",
    responses((status = 204, description = "Logged out"), crate::routes::AuthErrors))]
#[post("/api/v1/auth/logout")]
pub async fn logout(state: AppData, who: Authed) -> Reply {
    if let Credential::Session(hash) = who.credential {
        accounts::logout(&state, hash).await?;
    }
    let mut gone = Cookie::build(SESSION_COOKIE, "").path("/").finish();
    gone.make_removal();
    Ok(HttpResponse::NoContent().cookie(gone).finish())
}
