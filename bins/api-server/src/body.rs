//! Request bodies and headers: JSON whose errors name the field, and `Idempotency-Key`.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header::AsHeaderName;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use ledger_core::{Fingerprint, IdempotencyKey};
use ledger_store::Idempotency;
use serde::de::DeserializeOwned;
use settings::ServerSettings;

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body. Malformed JSON, a wrong type or a missing field is a 400 naming the field;
/// a body over `server.max_body_bytes` is a 413.
#[derive(Debug)]
pub struct JsonBody<T> {
    pub value: T,
    /// The body as received, for idempotency fingerprints.
    pub raw: web::Bytes,
}

pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    let text = if raw.iter().all(|b| b.is_ascii_whitespace()) {
        &b"{}"[..]
    } else {
        raw
    };
    // serde reads a struct from a JSON array too (`[1, "x"]` as amount and description):
    // every body of this API is an object.
    if text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::invalid(
            "body",
            "the body must be a JSON object, not an array",
        ));
    }
    refuse_nul_in_json(text)?;
    let mut de = serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::invalid("body", format!("the body is not valid JSON ({inner})"))
        } else if let Some(field) = named_field(&inner.to_string()) {
            // A missing field is reported at its parent: name the field itself.
            let field = if path == "." {
                field
            } else {
                format!("{path}.{field}")
            };
            ApiError::invalid(field.clone(), format!("`{field}`: {inner}"))
        } else if path == "." {
            ApiError::invalid("body", format!("the body does not match: {inner}"))
        } else {
            ApiError::invalid(path.clone(), format!("`{path}`: {inner}"))
        }
    })
}

/// A NUL character (`\u0000`) cannot be stored by PostgreSQL and is never meaningful in
/// this API: a body with one anywhere (a value or a key) is a 400 naming where it is,
/// on both backends alike.
fn refuse_nul_in_json(text: &[u8]) -> Result<(), ApiError> {
    // In valid JSON a NUL can only be written as the escape `\u0000`.
    if !text.windows(6).any(|w| w == b"\\u0000") {
        return Ok(());
    }
    // Malformed JSON is reported by the real parse, with its own message.
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(text) else {
        return Ok(());
    };
    match nul_path(&value, String::new()) {
        None => Ok(()),
        Some(path) => {
            let field = if path.is_empty() {
                "body".to_owned()
            } else {
                path
            };
            Err(ApiError::invalid(
                field.clone(),
                format!("`{field}` must not contain a NUL character (\\u0000)"),
            ))
        }
    }
}

/// The path (`a.b[0]`, as serde_path_to_error writes it) of the first string or key that
/// holds a NUL.
fn nul_path(value: &serde_json::Value, at: String) -> Option<String> {
    match value {
        serde_json::Value::String(s) => s.contains('\0').then_some(at),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_path(v, format!("{at}[{i}]"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            let here = if at.is_empty() {
                k.replace('\0', "\\u0000")
            } else {
                format!("{at}.{}", k.replace('\0', "\\u0000"))
            };
            if k.contains('\0') {
                Some(here)
            } else {
                nul_path(v, here)
            }
        }),
        _ => None,
    }
}

/// Refuses a NUL character in a value taken from a header, the URL or anywhere else that
/// is not a JSON body: 400 naming `field`.
pub fn refuse_nul(field: &str, value: &str) -> Result<(), ApiError> {
    if value.contains('\0') {
        Err(ApiError::invalid(
            field,
            format!("`{field}` must not contain a NUL character"),
        ))
    } else {
        Ok(())
    }
}

/// The field serde names in "missing field `x`" (reported at the parent's path; an unknown
/// field's path already ends with its name).
fn named_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    let name = &rest[..rest.find('`')?];
    (!name.is_empty()).then(|| name.to_owned())
}

/// Reads a whole body of at most `limit` bytes (beyond: `413`, without reading the rest).
pub async fn read_limited(payload: &mut Payload, limit: usize) -> Result<web::Bytes, ApiError> {
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::invalid("body", format!("the body could not be read: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A request header's value, when it is visible text.
pub fn header(req: &HttpRequest, name: impl AsHeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A body limit from the server settings (`fallback` without an [`AppState`]).
pub fn body_limit(req: &HttpRequest, fallback: usize, pick: fn(&ServerSettings) -> usize) -> usize {
    req.app_data::<web::Data<AppState>>()
        .map_or(fallback, |s| pick(&s.settings.server))
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<JsonBody<T>, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = body_limit(req, 256 * 1024, |s| s.max_body_bytes);
        let content_type = header(req, "content-type").map(str::to_ascii_lowercase);
        let mut payload = payload.take();
        Box::pin(async move {
            if let Some(ct) = &content_type {
                if !ct.starts_with("application/json") && !ct.contains("+json") {
                    return Err(ApiError::invalid(
                        "content-type",
                        "send the body as JSON with Content-Type: application/json",
                    ));
                }
            }
            let raw = read_limited(&mut payload, limit).await?;
            let value = parse_json(&raw)?;
            Ok(JsonBody { value, raw })
        })
    }
}

/// Reads `Idempotency-Key` and binds it to the request it came with (method, path and the
/// canonical form of the body).
pub fn idempotency(req: &HttpRequest, body: &[u8]) -> Result<Option<Idempotency>, ApiError> {
    let Some(key) = idempotency_key(req)? else {
        return Ok(None);
    };
    let canonical = serde_json::from_slice::<serde_json::Value>(body)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    let fingerprint = fingerprint(req.method().as_str(), req.path(), &canonical);
    Ok(Some(Idempotency::new(key, fingerprint)))
}

/// What an `Idempotency-Key` is checked against: the method, the path and the body in
/// its canonical JSON form (keys sorted, no spaces). One place, so that a call made
/// outside HTTP (the operator CLI's `credits grant`) can share a key with the API.
pub fn fingerprint(method: &str, path: &str, canonical_body: &str) -> Fingerprint {
    Fingerprint::new(format!("{method} {path}\n{canonical_body}"))
}

/// The request's `Idempotency-Key`, validated (400 naming the header when malformed).
pub fn idempotency_key(req: &HttpRequest) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(raw) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let raw = raw.to_str().map_err(|_| {
        ApiError::invalid("Idempotency-Key", "Idempotency-Key must be visible ASCII")
    })?;
    refuse_nul("Idempotency-Key", raw)?;
    IdempotencyKey::parse(raw.trim())
        .map(Some)
        .map_err(|e| ApiError::invalid("Idempotency-Key", e.to_string()))
}
