//! Who is calling: an API key (`x-api-key`, `Authorization: Bearer KEY` or
//! `Authorization: KEY`), a session cookie, or the operator's admin token; and how strongly
//! the request shows that the account holder meant it ([`Proof`]: a session cookie alone,
//! which any site can make a browser send, never changes state or spends credits).
//!
//! Secrets are never stored: sessions and API keys are random 256-bit values kept as
//! SHA-256 hashes (fast to look up, useless if leaked); passwords are argon2id hashes.
//! Every comparison of a secret is constant-time.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ledger_core::AccountId;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "session";
/// The readable prefix of every API key.
pub const KEY_PREFIX: &str = "sk_live_";

fn random_hex(bytes: usize) -> Result<String, ApiError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(ApiError::internal)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

pub fn sha256_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new session token (fails only without the operating system's random source).
pub fn new_session_token() -> Result<String, ApiError> {
    random_hex(32)
}

/// A new API key and the prefix shown in listings (`sk_live_` + 4 characters).
pub fn new_api_key() -> Result<(String, String), ApiError> {
    let key = format!("{KEY_PREFIX}{}", random_hex(32)?);
    let prefix = key[..KEY_PREFIX.len() + 4].to_owned();
    Ok((key, prefix))
}

pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(ApiError::internal)?;
    let salt = SaltString::encode_b64(&salt).map_err(ApiError::internal)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(ApiError::internal)?
        .to_string())
}

/// Checks a password; with no stored hash it still spends the same work, so a wrong email
/// and a wrong password take as long.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2hvdGxlZGdlcmRlY295$2L4CHQ0N3RwBbl62/3sBwDrUQOnodqkZ7lhwPQbQ5Sw";
    let (hash, real) = match stored {
        Some(h) => (h, true),
        None => (DECOY, false),
    };
    let ok = PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false);
    ok && real
}

/// Constant-time equality of two secrets.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    // Compare hashes so the lengths do not leak either.
    sha256_hex(a)
        .as_bytes()
        .ct_eq(sha256_hex(b).as_bytes())
        .into()
}

/// How the caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// The SHA-256 hash of the session token.
    Session(String),
    /// The id of the API key.
    ApiKey(String),
}

/// How strongly the request shows that the account holder meant to make it (ADR 5).
///
/// A browser attaches the session cookie to requests that other sites start (a top-level
/// navigation, a form, an image); it cannot attach a header of the page's choosing, nor
/// send `Content-Type: application/json` cross-site without a CORS preflight, which this
/// service never grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// An API key: only its holder can send it.
    ApiKey,
    /// The session cookie with its CSRF token in `X-CSRF-Token`.
    SessionWithToken,
    /// The session cookie on a request with a JSON body (`Content-Type: application/json`).
    SessionWithJson,
    /// The session cookie alone, on a safe method (GET, HEAD, OPTIONS): enough to read,
    /// never enough to spend.
    SessionOnly,
}

/// An authenticated account.
///
/// Extracting it refuses (401) a session cookie on a method that changes state (POST,
/// PUT, PATCH, DELETE) unless the request carries the session's CSRF token or a JSON
/// content type, so every handler that takes an `Authed` is safe from cross-site forms.
#[derive(Debug, Clone)]
pub struct Authed {
    pub account_id: AccountId,
    pub credential: Credential,
    pub proof: Proof,
    /// The caller's role in the account: only owners manage billing and members.
    pub role: ledger_core::Role,
    /// The member holding the session or key; `None` for a credential made without a
    /// login (it acts as the account's owner).
    pub member: Option<ledger_store::Member>,
}

/// The header that carries a session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The CSRF token of a session: derived from the session token (which only the cookie
/// holds: HttpOnly, never stored), so it lives exactly as long as the session and needs no
/// storage. Knowing it reveals nothing of the session token (a one-way hash over a label).
pub fn csrf_token(session_token: &str) -> String {
    sha256_hex(&format!("shotledger csrf token v1\n{session_token}"))
}

/// A secret the request presents.
enum Presented {
    Session(String),
    Key(String),
}

/// The secret the request presents, in the order: `x-api-key`, `Authorization`, session
/// cookie. An API key a client sends on purpose wins over a cookie the browser attached.
fn presented(req: &HttpRequest) -> Option<Presented> {
    if let Some(v) = req.headers().get("x-api-key") {
        return Some(Presented::Key(
            v.to_str().map(|v| v.trim().to_owned()).unwrap_or_default(),
        ));
    }
    if let Some(auth) = req.headers().get("authorization") {
        let auth = auth.to_str().unwrap_or("").trim();
        let key = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .unwrap_or(auth);
        return Some(Presented::Key(key.trim().to_owned()));
    }
    let c = req.cookie(SESSION_COOKIE)?;
    (!c.value().is_empty()).then(|| Presented::Session(c.value().to_owned()))
}

/// True for the methods that never change state.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// True when the request's body is declared as JSON (`application/json`, or any
/// `application/*+json`): a type no cross-site form or simple request can send.
pub fn declares_json(req: &HttpRequest) -> bool {
    let Some(value) = crate::body::header(req, CONTENT_TYPE) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// What a session request proves, or why it is refused.
fn session_proof(req: &HttpRequest, session_token: &str) -> Result<Proof, AuthError> {
    if let Some(given) = req.headers().get(CSRF_HEADER) {
        let given = given.to_str().unwrap_or("").trim();
        return if secrets_equal(given, &csrf_token(session_token)) {
            Ok(Proof::SessionWithToken)
        } else {
            Err(AuthError::BadCsrfToken)
        };
    }
    if is_safe(req.method()) {
        Ok(Proof::SessionOnly)
    } else if declares_json(req) {
        Ok(Proof::SessionWithJson)
    } else {
        Err(AuthError::CsrfTokenRequired)
    }
}

/// Why a request is not authenticated: the contract's errors, plus the two refusals of a
/// session cookie that is not backed by proof of intent (401 with code
/// `CSRF_TOKEN_REQUIRED`, saying what to send instead).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(
        "A session cookie alone cannot make this call: send the body as JSON \
         (Content-Type: application/json), or the session's CSRF token (returned in the \
         X-CSRF-Token header at login and signup) in an X-CSRF-Token header, or an API key \
         in x-api-key"
    )]
    CsrfTokenRequired,
    #[error(
        "A session cookie alone never spends credits on a GET: send an API key in x-api-key \
         (or Authorization: Bearer KEY), or the session's CSRF token (returned in the \
         X-CSRF-Token header at login and signup) in an X-CSRF-Token header, or POST the \
         options as JSON"
    )]
    SpendNeedsProof,
    #[error(
        "The X-CSRF-Token header does not belong to this session: send the token returned \
         in the X-CSRF-Token header at login or signup, or use an API key in x-api-key"
    )]
    BadCsrfToken,
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Api(e) => e,
            other => ApiError::Unproven(other.to_string()),
        }
    }
}

/// Answered as [`ApiError`] answers.
impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        match self {
            AuthError::Api(e) => e.status_code(),
            other => ApiError::Unproven(other.to_string()).status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            AuthError::Api(e) => e.error_response(),
            other => ApiError::Unproven(other.to_string()).error_response(),
        }
    }
}

impl FromRequest for Authed {
    type Error = AuthError;
    type Future = Pin<Box<dyn Future<Output = Result<Authed, AuthError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let presented = presented(req);
        // Decided now (the request is not available inside the future); applied only once
        // the session is known to be real, so a wrong cookie is the contract's plain 401.
        let session = match &presented {
            Some(Presented::Session(token)) => Some(session_proof(req, token)),
            _ => None,
        };
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal("application state missing"))?;
            let presented = presented.ok_or(ApiError::Unauthorized)?;
            let (is_session, secret) = match presented {
                Presented::Session(s) => (true, s),
                Presented::Key(k) => (false, k),
            };
            if secret.is_empty() || secret.contains('\0') {
                return Err(ApiError::Unauthorized.into());
            }
            let found = crate::service::accounts::authenticate(&state, is_session, &secret).await?;
            match found {
                None => Err(ApiError::Unauthorized.into()),
                Some(caller) if !caller.exists => Err(ApiError::UserNotFound.into()),
                Some(caller) => Ok(Authed {
                    account_id: caller.account_id,
                    credential: caller.credential,
                    role: caller
                        .member
                        .as_ref()
                        .map_or(ledger_core::Role::Owner, |m| m.role),
                    member: caller.member,
                    proof: match session {
                        Some(proof) => proof?,
                        None => Proof::ApiKey,
                    },
                }),
            }
        })
    }
}

/// An account that may spend credits with this request: an API key, or a session backed
/// by its CSRF token or a JSON body. A bare session cookie (which any site can make a
/// browser send with a GET) is refused with 401.
#[derive(Debug, Clone)]
pub struct Spender(pub Authed);

impl FromRequest for Spender {
    type Error = AuthError;
    type Future = Pin<Box<dyn Future<Output = Result<Spender, AuthError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let authed = Authed::from_request(req, payload);
        Box::pin(async move {
            let authed = authed.await?;
            match authed.proof {
                Proof::SessionOnly => Err(AuthError::SpendNeedsProof),
                _ => Ok(Spender(authed)),
            }
        })
    }
}

/// Adds `X-CSRF-Token` to an answer that starts a session (login, signup): the token the
/// client sends back with cookie-authenticated calls that are not JSON.
pub fn expose_csrf_token(res: &mut HttpResponse) {
    let token = res
        .cookies()
        .find(|c| c.name() == SESSION_COOKIE && !c.value().is_empty())
        .map(|c| csrf_token(c.value()));
    if let Some(v) = token.and_then(|t| HeaderValue::from_str(&t).ok()) {
        res.headers_mut()
            .insert(HeaderName::from_static(CSRF_HEADER), v);
    }
}

/// The operator, proven by `Authorization: Bearer <admin.token>`. With no token
/// configured the admin API does not exist (404).
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Admin, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = (|| {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| ApiError::internal("application state missing"))?;
            let token = state.settings.admin_token().ok_or_else(|| {
                ApiError::NotFound("The admin API is off: set admin.token to turn it on".into())
            })?;
            let given = crate::body::header(req, "authorization")
                .and_then(|v| v.trim().strip_prefix("Bearer "))
                .ok_or(ApiError::Unauthorized)?;
            if secrets_equal(given.trim(), token) {
                Ok(Admin)
            } else {
                Err(ApiError::Unauthorized)
            }
        })();
        std::future::ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_decoys_never_do() {
        let h = hash_password("correct horse").unwrap();
        assert!(verify_password("correct horse", Some(&h)));
        assert!(!verify_password("wrong", Some(&h)));
        assert!(!verify_password("anything", None));
    }

    #[test]
    fn keys_have_a_readable_prefix_and_are_unique() {
        let (a, pa) = new_api_key().unwrap();
        let (b, _) = new_api_key().unwrap();
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 64);
        assert!(a.starts_with(&pa) && pa.len() == KEY_PREFIX.len() + 4);
        assert_ne!(a, b);
        assert!(secrets_equal(&a, &a.clone()));
        assert!(!secrets_equal(&a, &b));
    }
}
