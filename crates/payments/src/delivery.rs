//! Building and sending signed webhook deliveries (the demo checkout and the fake Polar
//! send them the way Polar does).

use std::time::Duration;

use serde_json::{json, Value};

use crate::signature::sign;

/// One signed webhook request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDelivery {
    pub webhook_id: String,
    pub timestamp: i64,
    pub signature: String,
    /// The exact bytes that were signed.
    pub body: String,
}

impl SignedDelivery {
    /// Signs `body` for `webhook_id` at `timestamp` (Unix seconds) with `key`.
    pub fn new(key: &[u8], webhook_id: &str, timestamp: i64, body: String) -> SignedDelivery {
        SignedDelivery {
            webhook_id: webhook_id.to_owned(),
            timestamp,
            signature: sign(key, webhook_id, timestamp, body.as_bytes()),
            body,
        }
    }

    /// POSTs it to `url` with Polar's headers; the HTTP status, or why nothing answered.
    /// Redirects are not followed (Polar counts them as failures).
    pub fn send(&self, url: &str, timeout: Duration) -> Result<u16, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        agent
            .post(url)
            .header("user-agent", "polar.sh webhooks")
            .header("content-type", "application/json")
            .header("webhook-id", &self.webhook_id)
            .header("webhook-timestamp", self.timestamp.to_string())
            .header("webhook-signature", &self.signature)
            .header("webhook-api-version", "2026-04")
            .send(self.body.as_bytes())
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    }
}

/// The JSON body Polar sends: `{type, timestamp, api_version, data}`, compact.
pub fn envelope(event_type: &str, timestamp_rfc3339: &str, data: &Value) -> String {
    json!({
        "type": event_type,
        "timestamp": timestamp_rfc3339,
        "api_version": "2026-04",
        "data": data,
    })
    .to_string()
}

/// A fresh webhook id (a random UUID-shaped string, as Polar's).
pub fn new_webhook_id() -> String {
    let mut b = [0u8; 16];
    // Without the OS random source no unguessable id can be made (as `ledger_store::new_id`).
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut b).expect("the operating system's random source is available");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
