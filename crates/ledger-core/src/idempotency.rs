//! Idempotency: the same key with the same request has one effect and answers as the
//! first time; the same key with a different request is a conflict.

use serde::{Deserialize, Serialize};

/// A client's `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Idempotency-Key must be 1 to 255 visible ASCII characters")]
pub struct BadIdempotencyKey;

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<IdempotencyKey, BadIdempotencyKey> {
        let ok = (1..=255).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| IdempotencyKey(raw.to_owned()))
            .ok_or(BadIdempotencyKey)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the request was, in a canonical form the caller chooses (operation and every
/// parameter that changes its effect).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn new(canonical: impl Into<String>) -> Fingerprint {
        Fingerprint(canonical.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What to do with a request that carries a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a, T> {
    /// Never seen: do it, and remember the outcome under the key.
    Fresh,
    /// Seen with the same request: answer with the stored outcome, change nothing.
    Replay(&'a T),
    /// Seen with a different request: refuse.
    Conflict,
}

/// Decides from what is stored under the key (if anything).
pub fn decide<'a, T>(
    stored: Option<(&Fingerprint, &'a T)>,
    request: &Fingerprint,
) -> Decision<'a, T> {
    match stored {
        None => Decision::Fresh,
        Some((fp, outcome)) if fp == request => Decision::Replay(outcome),
        Some(_) => Decision::Conflict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_decisions() {
        assert!(IdempotencyKey::parse("order-1").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"x".repeat(256)).is_err());
        let a = Fingerprint::new("debit|5");
        let b = Fingerprint::new("debit|6");
        let outcome = 42;
        assert_eq!(decide::<i32>(None, &a), Decision::Fresh);
        assert_eq!(decide(Some((&a, &outcome)), &a), Decision::Replay(&42));
        assert_eq!(decide(Some((&a, &outcome)), &b), Decision::Conflict);
    }
}
