//! What an idempotency row remembers of its request: the store's own format, written and
//! read here field by field, so that renaming a core type or variant cannot change it (a
//! replay must answer as the first request did, whatever the code's names are now).
//!
//! Format 2 (written since ADR 0007), a JSON object:
//! - `{"format":2,"outcome":"entry","id":"txn_…"}`, `…"outcome":"hold","id":"hold_…"}`,
//!   `{"format":2,"outcome":"settled"}`;
//! - `{"format":2,"outcome":"rejected","rule":"insufficient_credits",
//!   "required_millis":5000,"available_millis":500}`: the rule's stable name, credits in
//!   thousandths, ids and texts as strings.
//!
//! Rows written before it (format 1: serde's shape of the old enum, credits as decimal
//! numbers, e.g. `{"rejected":{"error":"insufficient_credits","required":5,
//! "available":0.5}}`) still decode.

use ledger_core::{Credits, EntryId, HoldId, LedgerError};
use serde_json::{json, Map, Value};

/// What an idempotency row remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoredOutcome {
    Entry(EntryId),
    Hold(HoldId),
    Settled,
    Rejected(LedgerError),
}

const FORMAT: i64 = 2;

/// Which format a row is in: credits in thousandths (2) or decimal numbers (1).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Legacy,
    Current,
}

impl StoredOutcome {
    /// The stored text (format 2).
    pub(crate) fn encode(&self) -> String {
        let value = match self {
            StoredOutcome::Entry(id) => {
                json!({"format": FORMAT, "outcome": "entry", "id": id.as_str()})
            }
            StoredOutcome::Hold(id) => {
                json!({"format": FORMAT, "outcome": "hold", "id": id.as_str()})
            }
            StoredOutcome::Settled => json!({"format": FORMAT, "outcome": "settled"}),
            StoredOutcome::Rejected(e) => {
                let mut fields = encode_rejection(e);
                fields.insert("format".into(), FORMAT.into());
                fields.insert("outcome".into(), "rejected".into());
                Value::Object(fields)
            }
        };
        value.to_string()
    }

    /// Reads a stored text of either format; the error says what is wrong with it.
    pub(crate) fn decode(text: &str) -> Result<StoredOutcome, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        match &value {
            Value::Object(o) if o.contains_key("format") => decode_current(o),
            _ => decode_legacy(&value),
        }
    }
}

fn encode_rejection(e: &LedgerError) -> Map<String, Value> {
    let millis = |c: &Credits| Value::from(c.millis());
    let value = match e {
        LedgerError::InsufficientCredits {
            required,
            available,
        } => json!({
            "rule": "insufficient_credits",
            "required_millis": millis(required),
            "available_millis": millis(available),
        }),
        LedgerError::HardLimitReached {
            required,
            available,
        } => json!({
            "rule": "hard_limit_reached",
            "required_millis": millis(required),
            "available_millis": millis(available),
        }),
        LedgerError::InvalidAmount { reason } => {
            json!({"rule": "invalid_amount", "reason": reason})
        }
        LedgerError::BalanceLimit { max } => {
            json!({"rule": "balance_limit", "max_millis": millis(max)})
        }
        LedgerError::HoldNotFound { hold_id } => {
            json!({"rule": "hold_not_found", "hold_id": hold_id.as_str()})
        }
        LedgerError::HoldSettled { hold_id, status } => {
            json!({"rule": "hold_settled", "hold_id": hold_id.as_str(), "status": status})
        }
        LedgerError::CaptureExceedsHold {
            hold_id,
            requested,
            held,
        } => json!({
            "rule": "capture_exceeds_hold",
            "hold_id": hold_id.as_str(),
            "requested_millis": millis(requested),
            "held_millis": millis(held),
        }),
        LedgerError::EntryNotFound { entry_id } => {
            json!({"rule": "entry_not_found", "entry_id": entry_id.as_str()})
        }
        LedgerError::NotRefundable { entry_id, kind } => {
            json!({"rule": "not_refundable", "entry_id": entry_id.as_str(), "kind": kind})
        }
        LedgerError::RefundExceedsCharge {
            entry_id,
            requested,
            refundable,
        } => json!({
            "rule": "refund_exceeds_charge",
            "entry_id": entry_id.as_str(),
            "requested_millis": millis(requested),
            "refundable_millis": millis(refundable),
        }),
    };
    match value {
        Value::Object(o) => o,
        _ => unreachable!("json! of an object literal is an object"),
    }
}

fn decode_current(o: &Map<String, Value>) -> Result<StoredOutcome, String> {
    let fields = Fields(o, Format::Current);
    match fields.text("outcome")? {
        "entry" => Ok(StoredOutcome::Entry(EntryId::new(fields.text("id")?))),
        "hold" => Ok(StoredOutcome::Hold(HoldId::new(fields.text("id")?))),
        "settled" => Ok(StoredOutcome::Settled),
        "rejected" => Ok(StoredOutcome::Rejected(decode_rejection(
            fields.text("rule")?,
            &fields,
        )?)),
        other => Err(format!("unknown outcome `{other}`")),
    }
}

fn decode_legacy(value: &Value) -> Result<StoredOutcome, String> {
    let bad = || format!("not a stored outcome: {value}");
    match value {
        Value::String(s) if s == "settled" => Ok(StoredOutcome::Settled),
        Value::Object(o) if o.len() == 1 => {
            let (tag, inner) = o.iter().next().ok_or_else(bad)?;
            match (tag.as_str(), inner) {
                ("entry", Value::String(id)) => Ok(StoredOutcome::Entry(EntryId::new(id.clone()))),
                ("hold", Value::String(id)) => Ok(StoredOutcome::Hold(HoldId::new(id.clone()))),
                ("rejected", Value::Object(e)) => {
                    let fields = Fields(e, Format::Legacy);
                    Ok(StoredOutcome::Rejected(decode_rejection(
                        fields.text("error")?,
                        &fields,
                    )?))
                }
                _ => Err(bad()),
            }
        }
        _ => Err(bad()),
    }
}

fn decode_rejection(rule: &str, f: &Fields<'_>) -> Result<LedgerError, String> {
    Ok(match rule {
        "insufficient_credits" => LedgerError::InsufficientCredits {
            required: f.credits("required")?,
            available: f.credits("available")?,
        },
        "hard_limit_reached" => LedgerError::HardLimitReached {
            required: f.credits("required")?,
            available: f.credits("available")?,
        },
        "invalid_amount" => LedgerError::InvalidAmount {
            reason: f.text("reason")?.to_owned(),
        },
        "balance_limit" => LedgerError::BalanceLimit {
            max: f.credits("max")?,
        },
        "hold_not_found" => LedgerError::HoldNotFound {
            hold_id: HoldId::new(f.text("hold_id")?),
        },
        "hold_settled" => LedgerError::HoldSettled {
            hold_id: HoldId::new(f.text("hold_id")?),
            status: f.text("status")?.to_owned(),
        },
        "capture_exceeds_hold" => LedgerError::CaptureExceedsHold {
            hold_id: HoldId::new(f.text("hold_id")?),
            requested: f.credits("requested")?,
            held: f.credits("held")?,
        },
        "entry_not_found" => LedgerError::EntryNotFound {
            entry_id: EntryId::new(f.text("entry_id")?),
        },
        "not_refundable" => LedgerError::NotRefundable {
            entry_id: EntryId::new(f.text("entry_id")?),
            kind: f.text("kind")?.to_owned(),
        },
        "refund_exceeds_charge" => LedgerError::RefundExceedsCharge {
            entry_id: EntryId::new(f.text("entry_id")?),
            requested: f.credits("requested")?,
            refundable: f.credits("refundable")?,
        },
        other => return Err(format!("unknown rejection `{other}`")),
    })
}

/// The fields of one stored object.
struct Fields<'a>(&'a Map<String, Value>, Format);

impl Fields<'_> {
    fn text(&self, name: &str) -> Result<&str, String> {
        self.0
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("missing text field `{name}`"))
    }

    /// Credits: `<name>_millis` (an integer) in format 2, `<name>` (a decimal number of
    /// credits) in format 1.
    fn credits(&self, name: &str) -> Result<Credits, String> {
        match self.1 {
            Format::Current => {
                let key = format!("{name}_millis");
                self.0
                    .get(&key)
                    .and_then(Value::as_i64)
                    .map(Credits::from_millis)
                    .ok_or_else(|| format!("missing integer field `{key}`"))
            }
            Format::Legacy => match self.0.get(name) {
                Some(Value::Number(n)) => n
                    .to_string()
                    .parse()
                    .map_err(|e| format!("field `{name}`: {e}")),
                _ => Err(format!("missing number field `{name}`")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_outcome() -> Vec<StoredOutcome> {
        let c = Credits::from_millis;
        let hold = || HoldId::new("hold_1");
        let entry = || EntryId::new("txn_1");
        [
            LedgerError::InsufficientCredits {
                required: c(5_000),
                available: c(-500),
            },
            LedgerError::HardLimitReached {
                required: c(1_000),
                available: c(-5_000_000),
            },
            LedgerError::InvalidAmount {
                reason: "must be positive".into(),
            },
            LedgerError::BalanceLimit {
                max: Credits::MAX_BALANCE,
            },
            LedgerError::HoldNotFound { hold_id: hold() },
            LedgerError::HoldSettled {
                hold_id: hold(),
                status: "captured".into(),
            },
            LedgerError::CaptureExceedsHold {
                hold_id: hold(),
                requested: c(3_001),
                held: c(3_000),
            },
            LedgerError::EntryNotFound { entry_id: entry() },
            LedgerError::NotRefundable {
                entry_id: entry(),
                kind: "purchase".into(),
            },
            LedgerError::RefundExceedsCharge {
                entry_id: entry(),
                requested: c(2_000),
                refundable: c(1_250),
            },
        ]
        .into_iter()
        .map(StoredOutcome::Rejected)
        .chain([
            StoredOutcome::Entry(entry()),
            StoredOutcome::Hold(hold()),
            StoredOutcome::Settled,
        ])
        .collect()
    }

    #[test]
    fn every_outcome_reads_back_as_written() {
        for o in every_outcome() {
            assert_eq!(StoredOutcome::decode(&o.encode()), Ok(o));
        }
    }

    #[test]
    fn the_current_format_is_fixed() {
        let stored = r#"{"format":2,"outcome":"rejected","rule":"insufficient_credits","required_millis":5000,"available_millis":500}"#;
        let expected = StoredOutcome::Rejected(LedgerError::InsufficientCredits {
            required: Credits::whole(5),
            available: Credits::from_millis(500),
        });
        assert_eq!(StoredOutcome::decode(stored), Ok(expected.clone()));
        let written: Value = serde_json::from_str(&expected.encode()).unwrap();
        assert_eq!(written, serde_json::from_str::<Value>(stored).unwrap());
        assert_eq!(
            StoredOutcome::decode(r#"{"format":2,"outcome":"entry","id":"txn_9"}"#),
            Ok(StoredOutcome::Entry(EntryId::new("txn_9")))
        );
    }

    #[test]
    fn rows_written_before_format_2_still_decode() {
        let cases = [
            (
                r#"{"rejected":{"error":"insufficient_credits","required":5,"available":0.5}}"#,
                StoredOutcome::Rejected(LedgerError::InsufficientCredits {
                    required: Credits::whole(5),
                    available: Credits::from_millis(500),
                }),
            ),
            (
                r#"{"rejected":{"error":"refund_exceeds_charge","entry_id":"txn_2","requested":2,"refundable":1.25}}"#,
                StoredOutcome::Rejected(LedgerError::RefundExceedsCharge {
                    entry_id: EntryId::new("txn_2"),
                    requested: Credits::whole(2),
                    refundable: Credits::from_millis(1_250),
                }),
            ),
            (
                r#"{"rejected":{"error":"hold_settled","hold_id":"hold_3","status":"released"}}"#,
                StoredOutcome::Rejected(LedgerError::HoldSettled {
                    hold_id: HoldId::new("hold_3"),
                    status: "released".into(),
                }),
            ),
            (
                r#"{"entry":"txn_1"}"#,
                StoredOutcome::Entry(EntryId::new("txn_1")),
            ),
            (
                r#"{"hold":"hold_1"}"#,
                StoredOutcome::Hold(HoldId::new("hold_1")),
            ),
            (r#""settled""#, StoredOutcome::Settled),
        ];
        for (stored, expected) in cases {
            assert_eq!(StoredOutcome::decode(stored), Ok(expected), "{stored}");
        }
    }

    #[test]
    fn what_is_not_an_outcome_is_an_error() {
        for bad in [
            "",
            "{}",
            r#""done""#,
            r#"{"format":2,"outcome":"won"}"#,
            r#"{"format":2,"outcome":"rejected","rule":"insufficient_credits"}"#,
            r#"{"rejected":{"error":"no_such_rule"}}"#,
        ] {
            assert!(StoredOutcome::decode(bad).is_err(), "{bad}");
        }
    }
}
