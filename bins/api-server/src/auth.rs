//! Who is calling: an API key (`x-api-key`, `Authorization: Bearer KEY` or
//! `Authorization: KEY`), a signed URL (a GET whose query names `keyId` and ends with
//! `&signature=`, [`SignedQuery`], ADR 11), a session cookie, or the operator's admin
//! token; and how strongly the request shows that the account holder meant it ([`Proof`]:
//! a session cookie alone, which any site can make a browser send, never changes state or
//! spends credits).
//!
//! Sessions and API keys are random 256-bit values kept only as SHA-256 hashes (fast to
//! look up, useless if leaked); passwords are argon2id hashes. The one secret kept as it
//! is, is a key's signing secret: checking an HMAC needs it (ADR 11). Every comparison of
//! a secret is constant-time.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use hmac::{Hmac, Mac};
use ledger_core::{AccountId, Timestamp};
use ledger_store::KeyBy;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::service::accounts::{self, Caller};
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
    // Every authenticated request hashes its credential: no `format!` per byte.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for b in Sha256::digest(secret.as_bytes()) {
        hex.push(DIGITS[usize::from(b >> 4)] as char);
        hex.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    hex
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

/// The readable prefix of every signing secret.
pub const SIGNING_SECRET_PREFIX: &str = "ss_";

/// A new signing secret: `ss_` + 256 random bits in hex.
pub fn new_signing_secret() -> Result<String, ApiError> {
    Ok(format!("{SIGNING_SECRET_PREFIX}{}", random_hex(32)?))
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
    /// A GET signed with an API key's signing secret: only the key's holder can make one,
    /// so it spends as the key does (ADR 11).
    SignedUrl,
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
    Signed(SignedQuery),
}

/// The credential the request presents: a signed URL when its query names `keyId` or
/// `signature` (whatever else it carries: such a query is checked, never ignored), then
/// `x-api-key`, `Authorization`, the session cookie. An API key a client sends on purpose
/// wins over a cookie the browser attached.
fn presented(req: &HttpRequest) -> Result<Option<Presented>, SignatureError> {
    if let Some(signed) = SignedQuery::parse(req.query_string())? {
        if req.method() != Method::GET {
            return Err(SignatureError::NotGet);
        }
        return Ok(Some(Presented::Signed(signed)));
    }
    if let Some(v) = req.headers().get("x-api-key") {
        return Ok(Some(Presented::Key(
            v.to_str().map(|v| v.trim().to_owned()).unwrap_or_default(),
        )));
    }
    if let Some(auth) = req.headers().get("authorization") {
        let auth = auth.to_str().unwrap_or("").trim();
        let key = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .unwrap_or(auth);
        return Ok(Some(Presented::Key(key.trim().to_owned())));
    }
    Ok(req
        .cookie(SESSION_COOKIE)
        .filter(|c| !c.value().is_empty())
        .map(|c| Presented::Session(c.value().to_owned())))
}

/// The parameter of a signed URL that names its key (the key's `id`).
pub const KEY_ID_PARAM: &str = "keyId";
/// The optional parameter of a signed URL after which it is refused (unix seconds).
pub const EXPIRES_PARAM: &str = "expires";
/// The last parameter of a signed URL: the hex HMAC-SHA256 of everything before it.
pub const SIGNATURE_PARAM: &str = "signature";

type HmacSha256 = Hmac<Sha256>;

/// The query string of a signed URL, read but not yet checked: what was signed (the query
/// string as sent, up to `&signature=`), the key it names, its expiry, and the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedQuery {
    key_id: String,
    /// Unix seconds.
    expires: Option<i64>,
    signed: String,
    signature: [u8; 32],
}

impl SignedQuery {
    /// `None` for a query that names neither `keyId` nor `signature` (no signed URL);
    /// otherwise the signed URL, or what is wrong with its form.
    pub fn parse(query: &str) -> Result<Option<SignedQuery>, SignatureError> {
        let names_signed = url::form_urlencoded::parse(query.as_bytes())
            .any(|(k, _)| k == KEY_ID_PARAM || k == SIGNATURE_PARAM);
        if !names_signed {
            return Ok(None);
        }
        let marker = format!("&{SIGNATURE_PARAM}=");
        let Some(at) = query.rfind(&marker) else {
            let has_signature =
                url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == SIGNATURE_PARAM);
            return Err(if has_signature {
                SignatureError::NotLast
            } else {
                SignatureError::Missing
            });
        };
        let (signed, hex) = (&query[..at], &query[at + marker.len()..]);
        if hex.contains('&') {
            return Err(SignatureError::NotLast);
        }
        let signature = decode_hex32(hex).ok_or(SignatureError::NotHex)?;
        let (mut key_id, mut expires) = (None, None);
        for (k, v) in url::form_urlencoded::parse(signed.as_bytes()) {
            let slot = match &*k {
                KEY_ID_PARAM => &mut key_id,
                EXPIRES_PARAM => &mut expires,
                SIGNATURE_PARAM => return Err(SignatureError::Repeated(SIGNATURE_PARAM)),
                _ => continue,
            };
            if slot.replace(v.into_owned()).is_some() {
                return Err(SignatureError::Repeated(if k == KEY_ID_PARAM {
                    KEY_ID_PARAM
                } else {
                    EXPIRES_PARAM
                }));
            }
        }
        let key_id = key_id
            .filter(|id| !id.is_empty())
            .ok_or(SignatureError::NoKeyId)?;
        let expires = expires
            .map(|e| {
                e.bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| e.parse::<i64>().ok())
                    .flatten()
                    .filter(|e| *e <= i64::MAX / 1000)
                    .ok_or(SignatureError::BadExpires)
            })
            .transpose()?;
        Ok(Some(SignedQuery {
            key_id,
            expires,
            signed: signed.to_owned(),
            signature,
        }))
    }

    /// The id of the key the URL names.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Refused at and after `expires`.
    pub fn check_expiry(&self, now: Timestamp) -> Result<(), SignatureError> {
        match self.expires {
            Some(at) if now.millis() >= at * 1000 => Err(SignatureError::Expired {
                at: Timestamp::from_millis(at * 1000),
            }),
            _ => Ok(()),
        }
    }

    /// Checks the signature against `secret` (the key's signing secret), in constant time.
    pub fn verify(&self, secret: &str) -> Result<(), SignatureError> {
        let expected = sign(secret, &self.signed);
        if bool::from(expected.ct_eq(&self.signature)) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// The HMAC-SHA256 of `message` keyed with the UTF-8 bytes of `secret`.
pub fn sign(secret: &str, message: &str) -> [u8; 32] {
    // HMAC takes a key of any length.
    let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
        unreachable!("HMAC-SHA256 accepts keys of every length")
    };
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().into()
}

/// 64 hex digits (either case) as 32 bytes.
fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let digits = hex.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// Why a signed URL does not authenticate its request: each a 401 saying what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "A signed URL authenticates a GET only: send other methods with an API key in \
         x-api-key"
    )]
    NotGet,
    #[error(
        "The query names keyId but has no signature: end it with &signature=<hex \
         HMAC-SHA256 of the query string before it, keyed with the key's signingSecret>"
    )]
    Missing,
    #[error(
        "signature must be the last parameter of a signed URL: put keyId, expires and every \
         option before &signature="
    )]
    NotLast,
    #[error(
        "signature must be 64 hex digits: the HMAC-SHA256 of the query string before \
         &signature=, keyed with the key's signingSecret"
    )]
    NotHex,
    #[error("{0} is given more than once in the signed URL; give it once, before &signature=")]
    Repeated(&'static str),
    #[error(
        "A signed URL names its key: put keyId=<the key's id, as listed by GET \
         /api/v1/api-keys> before &signature="
    )]
    NoKeyId,
    #[error("expires must be a time in whole unix seconds, such as expires=1767225600")]
    BadExpires,
    #[error("This signed URL expired at {at}: sign a new one with a later expires")]
    Expired { at: Timestamp },
    #[error("keyId names no live API key (it was revoked, or never made): sign with a live key")]
    UnknownKey,
    #[error(
        "This API key was made before signed URLs existed and has no signing secret: create \
         a new key (POST /api/v1/api-keys) and sign with its signingSecret"
    )]
    NoSecret,
    #[error(
        "signature does not match: sign the query string exactly as sent, up to (not \
         including) &signature=, with HMAC-SHA256 keyed with the UTF-8 bytes of the key's \
         signingSecret, and send it as 64 hex digits"
    )]
    Mismatch,
}

impl From<SignatureError> for ApiError {
    fn from(e: SignatureError) -> ApiError {
        let code = match e {
            SignatureError::Expired { .. } => "SIGNATURE_EXPIRED",
            _ => "INVALID_SIGNATURE",
        };
        ApiError::BadSignature {
            code,
            message: e.to_string(),
        }
    }
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
    /// A signed URL that does not prove its key.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Api(e) => e,
            AuthError::Signature(e) => e.into(),
            other => ApiError::Unproven(other.to_string()),
        }
    }
}

impl AuthError {
    /// The answer of a refusal made here (every variant but `Api`, which answers itself).
    fn refusal(&self) -> ApiError {
        match self {
            AuthError::Signature(e) => e.clone().into(),
            other => ApiError::Unproven(other.to_string()),
        }
    }
}

/// Answered as [`ApiError`] answers.
impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        match self {
            AuthError::Api(e) => e.status_code(),
            other => other.refusal().status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            AuthError::Api(e) => e.error_response(),
            other => other.refusal().error_response(),
        }
    }
}

impl FromRequest for Authed {
    type Error = AuthError;
    type Future = Pin<Box<dyn Future<Output = Result<Authed, AuthError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let extracted = extract(req, false);
        Box::pin(async move { Ok(extracted.await?.0) })
    }
}

/// An authenticated account and its available balance, read together with the credential
/// in one store call (one trip to the blocking pool, one pooled connection, and for an
/// API key one indexed read): for the answers that carry the balance (`GET
/// /api/v1/credits`, a cached screenshot). The balance is `None` only if it could not be
/// read with the credential; the handler then reads it itself.
#[derive(Debug, Clone)]
pub struct WithBalance(pub Authed, pub Option<ledger_core::Credits>);

impl FromRequest for WithBalance {
    type Error = AuthError;
    type Future = Pin<Box<dyn Future<Output = Result<WithBalance, AuthError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let extracted = extract(req, true);
        Box::pin(async move {
            let (authed, balance) = extracted.await?;
            Ok(WithBalance(authed, balance))
        })
    }
}

/// What every extractor of the caller runs: identify, note the account, count the request
/// (ADR 15); with `with_balance`, the balance is read in the same store call.
fn extract(
    req: &HttpRequest,
    with_balance: bool,
) -> impl Future<Output = Result<(Authed, Option<ledger_core::Credits>), AuthError>> + 'static {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let presented = presented(req);
    // Decided now (the request is not available inside the future); applied only once
    // the session is known to be real, so a wrong cookie is the contract's plain 401.
    let session = match &presented {
        Ok(Some(Presented::Session(token))) => Some(session_proof(req, token)),
        _ => None,
    };
    let req = req.clone();
    async move {
        let state = state.ok_or_else(|| ApiError::internal("application state missing"))?;
        let identified = identify(&state, presented, session, with_balance).await;
        let (identified, balance) = match identified {
            Ok((authed, balance)) => {
                note_account(&req, &authed.account_id);
                (Ok(authed), balance)
            }
            Err(e) => (Err(e), None),
        };
        Ok((limit(&state, &req, identified).await?, balance))
    }
}

/// The account of the credential the request presents (and its available balance, when
/// `with_balance`).
async fn identify(
    state: &AppState,
    presented: Result<Option<Presented>, SignatureError>,
    session: Option<Result<Proof, AuthError>>,
    with_balance: bool,
) -> Result<(Authed, Option<ledger_core::Credits>), AuthError> {
    let (is_session, secret) = match presented?.ok_or(ApiError::Unauthorized)? {
        Presented::Signed(signed) => return signed_caller(state, signed, with_balance).await,
        Presented::Session(s) => (true, s),
        Presented::Key(k) => (false, k),
    };
    if secret.is_empty() || secret.contains('\0') {
        return Err(ApiError::Unauthorized.into());
    }
    let (caller, balance) = if with_balance {
        accounts::authenticate_with_balance(state, is_session, &secret)
            .await?
            .ok_or(ApiError::Unauthorized)?
    } else {
        let caller = accounts::authenticate(state, is_session, &secret)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        (caller, None)
    };
    let proof = match session {
        Some(proof) => proof?,
        None => Proof::ApiKey,
    };
    Ok((authed(caller, proof)?, balance))
}

/// True when the request presents a credential of any kind (an API key, a session
/// cookie, a signed URL, an `Authorization` header): such a request is limited by the
/// extractor that checks it, not as an anonymous one (ADR 15).
pub fn presents_credential(req: &HttpRequest) -> bool {
    req.headers().contains_key("authorization") || !matches!(presented(req), Ok(None))
}

impl AuthError {
    /// True for a credential that was looked at and refused (missing, wrong, revoked, of
    /// an account that is gone, a bad signature): counted against the client's address.
    fn is_refused_credential(&self) -> bool {
        matches!(
            self,
            AuthError::Signature(_)
                | AuthError::Api(
                    ApiError::Unauthorized | ApiError::BadSignature { .. } | ApiError::UserNotFound
                )
        )
    }
}

/// Counts the request (ADR 15): a good credential against its own rate, a refused one
/// against the client's address; the meter is noted for the `x-ratelimit-*` headers.
async fn limit(
    state: &AppState,
    req: &HttpRequest,
    identified: Result<Authed, AuthError>,
) -> Result<Authed, AuthError> {
    use crate::ratelimit::{note, rate_limited, Bucket, Counted};
    let limits = &state.limits;
    match identified {
        Ok(authed) => {
            req.extensions_mut().insert(Counted);
            let id = match &authed.credential {
                Credential::ApiKey(id) => format!("k:{id}"),
                Credential::Session(hash) => format!("s:{hash}"),
            };
            match limits.check(Bucket::Key, &id).await {
                None => Ok(authed),
                Some(Ok(meter)) => {
                    note(req, meter);
                    Ok(authed)
                }
                Some(Err(refusal)) => {
                    note(req, refusal.meter);
                    Err(rate_limited(Bucket::Key, limits.rate_of(Bucket::Key), refusal).into())
                }
            }
        }
        Err(e) if e.is_refused_credential() => match count_refusal(state, req).await {
            Some(limited) => Err(limited.into()),
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Counts a refused credential against the client's address; the 429 that replaces the
/// refusal when the address has spent its budget.
async fn count_refusal(state: &AppState, req: &HttpRequest) -> Option<ApiError> {
    use crate::ratelimit::{client_addr, note, rate_limited, Bucket, Counted};
    req.extensions_mut().insert(Counted);
    let limits = &state.limits;
    let addr = client_addr(req, limits)?;
    match limits.refused_from(addr).await? {
        Ok(meter) => {
            note(req, meter);
            None
        }
        Err(refusal) => {
            note(req, refusal.meter);
            Some(rate_limited(
                Bucket::Ip,
                limits.rate_of(Bucket::Ip),
                refusal,
            ))
        }
    }
}

/// The authenticated account of a request, for its log line (`account_id`); the request
/// middleware reads it from the request's extensions ([`crate::middleware::request_id`]).
#[derive(Debug, Clone)]
pub struct AccountOfRequest(pub AccountId);

/// Puts `account` into the request's extensions and its span.
fn note_account(req: &HttpRequest, account: &AccountId) {
    tracing::Span::current().record("account_id", account.as_str());
    req.extensions_mut()
        .insert(AccountOfRequest(account.clone()));
}

/// The caller of a signed URL: the key it names, proven by its signature (ADR 11). The
/// expiry is checked first (no read), then the key (one read), then the HMAC; only a
/// proven use is noted as the key's use.
async fn signed_caller(
    state: &AppState,
    signed: SignedQuery,
    with_balance: bool,
) -> Result<(Authed, Option<ledger_core::Credits>), AuthError> {
    signed.check_expiry(state.now())?;
    let id = signed.key_id().to_owned();
    let (key, balance) = if with_balance {
        accounts::find_key_with_balance(state, id, |id| KeyBy::Id(id)).await?
    } else {
        accounts::find_key(state, id, |id| KeyBy::Id(id))
            .await?
            .map(|key| (key, None))
    }
    .ok_or(SignatureError::UnknownKey)?;
    let secret = key
        .signing_secret
        .as_deref()
        .ok_or(SignatureError::NoSecret)?;
    signed.verify(secret)?;
    accounts::note_key_use(state, &key);
    Ok((authed(key.caller, Proof::SignedUrl)?, balance))
}

/// The account of a live credential; 404 `User not found` when the account is gone.
fn authed(caller: Caller, proof: Proof) -> Result<Authed, AuthError> {
    if !caller.exists {
        return Err(ApiError::UserNotFound.into());
    }
    Ok(Authed {
        account_id: caller.account_id,
        credential: caller.credential,
        role: caller
            .member
            .as_ref()
            .map_or(ledger_core::Role::Owner, |m| m.role),
        member: caller.member,
        proof,
    })
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
        Box::pin(async move { spender(authed.await?) })
    }
}

fn spender(authed: Authed) -> Result<Spender, AuthError> {
    match authed.proof {
        Proof::SessionOnly => Err(AuthError::SpendNeedsProof),
        _ => Ok(Spender(authed)),
    }
}

/// A [`Spender`] and its available balance, read with the credential in one store call
/// ([`WithBalance`]): the screenshot handlers, whose cache hits answer with the balance.
#[derive(Debug, Clone)]
pub struct SpenderWithBalance(pub Spender, pub Option<ledger_core::Credits>);

impl FromRequest for SpenderWithBalance {
    type Error = AuthError;
    type Future = Pin<Box<dyn Future<Output = Result<SpenderWithBalance, AuthError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let with = WithBalance::from_request(req, payload);
        Box::pin(async move {
            let WithBalance(authed, balance) = with.await?;
            Ok(SpenderWithBalance(spender(authed)?, balance))
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
    type Future = Pin<Box<dyn Future<Output = Result<Admin, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let result = (|| {
            let state = state
                .as_ref()
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
        let req = req.clone();
        Box::pin(async move {
            match (result, state) {
                // The operator is not rate limited (ADR 15).
                (Ok(admin), _) => {
                    req.extensions_mut().insert(crate::ratelimit::Counted);
                    Ok(admin)
                }
                (Err(ApiError::Unauthorized), Some(state)) => Err(count_refusal(&state, &req)
                    .await
                    .unwrap_or(ApiError::Unauthorized)),
                (Err(e), _) => Err(e),
            }
        })
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
    fn signed_queries_sign_the_raw_query_before_the_signature() {
        let secret = new_signing_secret().unwrap();
        assert!(secret.starts_with(SIGNING_SECRET_PREFIX) && secret.len() == 3 + 64);
        // Percent-encoding is signed as sent; the key id is read decoded.
        let signed = "url=https%3A%2F%2Fa.test%2F&keyId=key%5Fab&expires=1767225600";
        let hex: String = sign(&secret, signed)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let q = SignedQuery::parse(&format!("{signed}&signature={hex}"))
            .unwrap()
            .unwrap();
        assert_eq!(q.key_id(), "key_ab");
        assert_eq!(q.verify(&secret), Ok(()));
        assert_eq!(q.verify("ss_other"), Err(SignatureError::Mismatch));
        // The same parameters encoded otherwise are another message.
        let q = SignedQuery::parse(&format!(
            "url=https://a.test/&keyId=key%5Fab&expires=1767225600&signature={hex}"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(q.verify(&secret), Err(SignatureError::Mismatch));
        // Expiry: valid before the second, refused from it on.
        let at = |s: i64| Timestamp::from_millis(s * 1000);
        let q = SignedQuery::parse(&format!("{signed}&signature={hex}"))
            .unwrap()
            .unwrap();
        assert_eq!(q.check_expiry(at(1767225599)), Ok(()));
        assert!(matches!(
            q.check_expiry(at(1767225600)),
            Err(SignatureError::Expired { .. })
        ));
        // A query that names neither parameter is no signed URL.
        assert_eq!(SignedQuery::parse("url=x&expires=1"), Ok(None));
        assert_eq!(SignedQuery::parse(""), Ok(None));
        for (query, refusal) in [
            ("keyId=k", SignatureError::Missing),
            ("signature=00&keyId=k", SignatureError::NotLast),
            (
                &format!("keyId=k&signature={hex}&x=1"),
                SignatureError::NotLast,
            ),
            ("keyId=k&signature=", SignatureError::NotHex),
            (&format!("keyId=&signature={hex}"), SignatureError::NoKeyId),
            (
                &format!("keyId=k&expires=-5&signature={hex}"),
                SignatureError::BadExpires,
            ),
            (
                &format!("keyId=k&expires=+5&signature={hex}"),
                SignatureError::BadExpires,
            ),
            (
                &format!("keyId=k&expires=1&expires=2&signature={hex}"),
                SignatureError::Repeated(EXPIRES_PARAM),
            ),
            (
                &format!("keyId=k&signature={hex}&signature={hex}"),
                SignatureError::Repeated(SIGNATURE_PARAM),
            ),
            (
                &format!("keyId=k&signature=00&signature={hex}"),
                SignatureError::Repeated(SIGNATURE_PARAM),
            ),
        ] {
            assert_eq!(SignedQuery::parse(query), Err(refusal), "{query}");
        }
    }

    #[test]
    fn sha256_hex_is_the_lowercase_hex_digest() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
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
