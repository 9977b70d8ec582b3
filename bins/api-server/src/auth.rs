//! Who is calling: a session cookie, an API key (`x-api-key`, `Authorization: Bearer KEY`
//! or `Authorization: KEY`), or the operator's admin token.
//!
//! Secrets are never stored: sessions and API keys are random 256-bit values kept as
//! SHA-256 hashes (fast to look up, useless if leaked); passwords are argon2id hashes.
//! Every comparison of a secret is constant-time.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
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

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system's random source is available");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new session token.
pub fn new_session_token() -> String {
    random_hex(32)
}

/// A new API key and the prefix shown in listings (`sk_live_` + 4 characters).
pub fn new_api_key() -> (String, String) {
    let key = format!("{KEY_PREFIX}{}", random_hex(32));
    let prefix = key[..KEY_PREFIX.len() + 4].to_owned();
    (key, prefix)
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

/// An authenticated account.
#[derive(Debug, Clone)]
pub struct Authed {
    pub account_id: AccountId,
    pub credential: Credential,
}

/// The secret the request presents, in the order: session cookie, `x-api-key`,
/// `Authorization`.
fn presented(req: &HttpRequest) -> Option<(bool, String)> {
    if let Some(c) = req.cookie(SESSION_COOKIE) {
        if !c.value().is_empty() {
            return Some((true, c.value().to_owned()));
        }
    }
    if let Some(v) = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some((false, v.trim().to_owned()));
    }
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())?;
    let auth = auth.trim();
    let key = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .unwrap_or(auth);
    Some((false, key.trim().to_owned()))
}

impl FromRequest for Authed {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Authed, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let presented = presented(req);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal("application state missing"))?;
            let (is_session, secret) = presented.ok_or(ApiError::Unauthorized)?;
            if secret.is_empty() {
                return Err(ApiError::Unauthorized);
            }
            let hash = sha256_hex(&secret);
            let now = state.now();
            let found = state
                .blocking(move |store| {
                    let found = if is_session {
                        store
                            .session_account(&hash, now)?
                            .map(|a| (a, Credential::Session(hash)))
                    } else {
                        store
                            .api_key_account(&hash, now)?
                            .map(|(a, id)| (a, Credential::ApiKey(id)))
                    };
                    let Some((account_id, credential)) = found else {
                        return Ok(None);
                    };
                    let exists = store.account(&account_id)?.is_some();
                    Ok(Some((account_id, credential, exists)))
                })
                .await?;
            match found {
                None => Err(ApiError::Unauthorized),
                Some((_, _, false)) => Err(ApiError::UserNotFound),
                Some((account_id, credential, true)) => Ok(Authed {
                    account_id,
                    credential,
                }),
            }
        })
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
            let given = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
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
        let (a, pa) = new_api_key();
        let (b, _) = new_api_key();
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 64);
        assert!(a.starts_with(&pa) && pa.len() == KEY_PREFIX.len() + 4);
        assert_ne!(a, b);
        assert!(secrets_equal(&a, &a.clone()));
        assert!(!secrets_equal(&a, &b));
    }
}
