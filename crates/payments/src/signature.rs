//! Standard Webhooks signatures, as Polar sends them.
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{raw body}`; the signature is
//! HMAC-SHA256 of it, base64 (standard alphabet), written `v1,<base64>`. One header may
//! carry several space-separated signatures; any `v1` entry that matches is enough, and
//! other versions (`v1a`, ...) are ignored. Comparison is constant-time
//! (`Mac::verify_slice`). The timestamp must be within [`TOLERANCE_SECS`] of `now`, both
//! ways; like the official SDKs it is read as a number and floored, and the floored
//! integer is what was signed.
//!
//! Polar derives the HMAC key from its `whsec_...` secret in one of two ways (see
//! `shared/reference/polar-webhooks.md`): secrets made before 2026-09-08 use the UTF-8
//! bytes of the whole string, newer ones the base64-decoded text after `whsec_`. A
//! [`WebhookSecret`] tries both; both come from the same secret, so this adds no forgery
//! risk. The verifier owns no clock: callers pass `now`.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::PaymentsError;

type HmacSha256 = Hmac<Sha256>;

/// How far a delivery's timestamp may be from now, either way (five minutes).
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Lenient base64 for secrets (padding optional, stray trailing bits allowed), as the
/// Standard Webhooks libraries decode them.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A webhook signing secret and the HMAC keys it may stand for.
#[derive(Clone)]
pub struct WebhookSecret {
    /// Polar's legacy key: the UTF-8 bytes of the whole secret.
    legacy: Vec<u8>,
    /// The Standard Webhooks key: base64-decode of the text after `whsec_`, when it
    /// decodes (and differs from the legacy key).
    standard: Option<Vec<u8>>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    pub fn new(secret: &str) -> WebhookSecret {
        let legacy = secret.as_bytes().to_vec();
        let rest = secret.strip_prefix("whsec_").unwrap_or(secret);
        let standard = LENIENT
            .decode(rest.trim_end_matches('='))
            .ok()
            .filter(|k| !k.is_empty() && *k != legacy);
        WebhookSecret { legacy, standard }
    }

    /// The legacy key (UTF-8 of the whole secret).
    pub fn legacy_key(&self) -> &[u8] {
        &self.legacy
    }

    /// The standard key (base64 after `whsec_`), when the secret decodes.
    pub fn standard_key(&self) -> Option<&[u8]> {
        self.standard.as_deref()
    }

    fn keys(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.legacy.as_slice()).chain(self.standard.as_deref())
    }
}

/// The three Standard Webhooks headers, as received (absent: `None`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SignedHeaders<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// An HMAC-SHA256 keyed with `key`.
fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (longer ones are hashed first), so this cannot fail.
    #[allow(clippy::expect_used)]
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// `v1,<base64 HMAC-SHA256 of id.timestamp.body>` with `key`.
pub fn sign(key: &[u8], webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = keyed(key);
    feed(&mut mac, webhook_id, timestamp, body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn feed(mac: &mut HmacSha256, webhook_id: &str, timestamp: i64, body: &[u8]) {
    mac.update(webhook_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
}

/// Verifies a delivery against the raw body. `now_secs` is the receiver's clock (Unix
/// seconds). Errors say which check failed; none of them has touched any state.
pub fn verify(
    secret: &WebhookSecret,
    headers: SignedHeaders<'_>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), PaymentsError> {
    let missing = |name: &'static str| PaymentsError::MissingHeader { name };
    let id = headers
        .id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("webhook-id"))?;
    let raw_ts = headers
        .timestamp
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("webhook-timestamp"))?;
    let signatures = headers
        .signature
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| missing("webhook-signature"))?;
    let timestamp = parse_timestamp(raw_ts)?;
    if (now_secs - timestamp).abs() > TOLERANCE_SECS {
        return Err(PaymentsError::TimestampOutOfTolerance {
            timestamp,
            now: now_secs,
        });
    }
    for entry in signatures.split_whitespace() {
        let Some(("v1", sig)) = entry.split_once(',') else {
            continue;
        };
        let Ok(sig) = STANDARD.decode(sig) else {
            continue;
        };
        for key in secret.keys() {
            let mut mac = keyed(key);
            feed(&mut mac, id, timestamp, body);
            if mac.verify_slice(&sig).is_ok() {
                return Ok(());
            }
        }
    }
    Err(PaymentsError::BadSignature)
}

/// Unix seconds as a number (integers, or a float as the Python SDKs send), floored.
fn parse_timestamp(raw: &str) -> Result<i64, PaymentsError> {
    let bad = || PaymentsError::BadTimestamp {
        value: raw.chars().take(40).collect(),
    };
    if let Ok(n) = raw.trim().parse::<i64>() {
        return Ok(n);
    }
    let f: f64 = raw.trim().parse().map_err(|_| bad())?;
    if !f.is_finite() || f.abs() > 1e15 {
        return Err(bad());
    }
    Ok(f.floor() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_735_689_600;
    const BODY: &str =
        r#"{"type":"order.paid","timestamp":"2025-01-01T00:00:00Z","data":{"id":"x"}}"#;
    const ID: &str = "3f0c2a1e-6b7d-4c55-9a0e-2b8f5d1c9e42";
    const LEGACY: &str = "whsec_ovyN6cPrTv56AApvzCaJno08SSmGJmgbWilb33N2JuK";
    const STD: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn headers<'a>(ts: &'a str, sig: &'a str) -> SignedHeaders<'a> {
        SignedHeaders {
            id: Some(ID),
            timestamp: Some(ts),
            signature: Some(sig),
        }
    }

    #[test]
    fn the_spec_vector() {
        let secret = WebhookSecret::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let expected = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
        assert_eq!(
            sign(
                secret.standard_key().unwrap(),
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                body
            ),
            expected
        );
        let h = SignedHeaders {
            id: Some("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"),
            timestamp: Some("1649367553"),
            signature: Some(expected),
        };
        verify(&secret, h, body, 1649367553 + 10).unwrap();
    }

    #[test]
    fn polar_legacy_and_standard_vectors() {
        let legacy = WebhookSecret::new(LEGACY);
        let standard = WebhookSecret::new(STD);
        assert_eq!(
            sign(legacy.legacy_key(), ID, NOW, BODY.as_bytes()),
            "v1,z6HZ7HrQ0dyUffcHh5IcME50NyqE4aty/ClMRqFi2QY="
        );
        assert_eq!(
            sign(legacy.standard_key().unwrap(), ID, NOW, BODY.as_bytes()),
            "v1,mr45VPd2+OPBWD4jb9hj7BJm66hmh5GRtiajSe1Q8cs="
        );
        assert_eq!(
            sign(standard.standard_key().unwrap(), ID, NOW, BODY.as_bytes()),
            "v1,VOyT68JtTbQx/PiiAZvN9wujFjaQnH+Gw0SfJQrF7/0="
        );
        assert_eq!(
            sign(standard.legacy_key(), ID, NOW, BODY.as_bytes()),
            "v1,YBFFzoOOgZPJjWeHO+Ao5q5IFxPfKHWTo9YmKPaN19M="
        );
        // Every vector verifies with its secret, whichever derivation signed it.
        for (secret, sig) in [
            (&legacy, "v1,z6HZ7HrQ0dyUffcHh5IcME50NyqE4aty/ClMRqFi2QY="),
            (&legacy, "v1,mr45VPd2+OPBWD4jb9hj7BJm66hmh5GRtiajSe1Q8cs="),
            (&standard, "v1,VOyT68JtTbQx/PiiAZvN9wujFjaQnH+Gw0SfJQrF7/0="),
            (&standard, "v1,YBFFzoOOgZPJjWeHO+Ao5q5IFxPfKHWTo9YmKPaN19M="),
        ] {
            verify(secret, headers("1735689600", sig), BODY.as_bytes(), NOW).unwrap();
        }
        // ...and not with the other secret.
        let e = verify(
            &standard,
            headers(
                "1735689600",
                "v1,z6HZ7HrQ0dyUffcHh5IcME50NyqE4aty/ClMRqFi2QY=",
            ),
            BODY.as_bytes(),
            NOW,
        );
        assert!(matches!(e, Err(PaymentsError::BadSignature)));
    }

    #[test]
    fn several_signatures_one_header() {
        let secret = WebhookSecret::new(STD);
        let good = "v1,VOyT68JtTbQx/PiiAZvN9wujFjaQnH+Gw0SfJQrF7/0=";
        let header = format!("v1a,AAAA v1,bm90IGl0 v1,!!notbase64 {good}");
        verify(
            &secret,
            headers("1735689600", &header),
            BODY.as_bytes(),
            NOW,
        )
        .unwrap();
        let no_v1 = "v1a,VOyT68JtTbQx/PiiAZvN9wujFjaQnH+Gw0SfJQrF7/0=";
        assert!(matches!(
            verify(&secret, headers("1735689600", no_v1), BODY.as_bytes(), NOW),
            Err(PaymentsError::BadSignature)
        ));
    }

    #[test]
    fn body_id_and_timestamp_are_all_signed() {
        let secret = WebhookSecret::new(STD);
        let good = "v1,VOyT68JtTbQx/PiiAZvN9wujFjaQnH+Gw0SfJQrF7/0=";
        let changed_body = BODY.replace("\"x\"", "\"y\"");
        assert!(verify(
            &secret,
            headers("1735689600", good),
            changed_body.as_bytes(),
            NOW
        )
        .is_err());
        assert!(verify(&secret, headers("1735689601", good), BODY.as_bytes(), NOW).is_err());
        let other_id = SignedHeaders {
            id: Some("another"),
            ..headers("1735689600", good)
        };
        assert!(verify(&secret, other_id, BODY.as_bytes(), NOW).is_err());
    }

    #[test]
    fn the_window_is_five_minutes_both_ways() {
        let secret = WebhookSecret::new(STD);
        let good = "v1,VOyT68JtTbQx/PiiAZvN9wujFjaQnH+Gw0SfJQrF7/0=";
        verify(
            &secret,
            headers("1735689600", good),
            BODY.as_bytes(),
            NOW + 300,
        )
        .unwrap();
        verify(
            &secret,
            headers("1735689600", good),
            BODY.as_bytes(),
            NOW - 300,
        )
        .unwrap();
        for now in [NOW + 301, NOW - 301] {
            assert!(matches!(
                verify(&secret, headers("1735689600", good), BODY.as_bytes(), now),
                Err(PaymentsError::TimestampOutOfTolerance { .. })
            ));
        }
        // A float timestamp is floored, and the floored integer is what was signed.
        verify(
            &secret,
            headers("1735689600.75", good),
            BODY.as_bytes(),
            NOW,
        )
        .unwrap();
        assert!(matches!(
            verify(&secret, headers("soon", good), BODY.as_bytes(), NOW),
            Err(PaymentsError::BadTimestamp { .. })
        ));
    }

    #[test]
    fn missing_headers_are_named() {
        let secret = WebhookSecret::new(STD);
        for (h, name) in [
            (
                SignedHeaders {
                    id: None,
                    ..headers("1", "v1,x")
                },
                "webhook-id",
            ),
            (
                SignedHeaders {
                    timestamp: None,
                    ..headers("1", "v1,x")
                },
                "webhook-timestamp",
            ),
            (
                SignedHeaders {
                    signature: Some(" "),
                    ..headers("1", "v1,x")
                },
                "webhook-signature",
            ),
        ] {
            match verify(&secret, h, BODY.as_bytes(), NOW) {
                Err(PaymentsError::MissingHeader { name: n }) => assert_eq!(n, name),
                other => panic!("{other:?}"),
            }
        }
    }
}
