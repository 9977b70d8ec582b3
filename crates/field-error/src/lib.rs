//! [`FieldError`]: an input that failed validation, naming the field and what is allowed.
//!
//! `ledger-core` (query parameters: `limit`, `month`, ...) and `capture` (screenshot
//! options: `width`, `quality`, ...) both refuse input this way, and the api-server turns
//! either into the same `400` naming the field. They may not depend on each other (see
//! `scripts/check-crate-edges.sh`), so the type lives here, with nothing else.

/// A field that failed validation: `field` names it (camelCase, as the client sent it);
/// the message is a sentence saying what is wrong and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    field: &'static str,
    message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> FieldError {
        FieldError {
            field,
            message: message.into(),
        }
    }

    /// The name of the offending field (`limit`, `quality`, `url`, ...).
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong and what is allowed.
    pub fn message(&self) -> &str {
        &self.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_names_the_field_and_says_what_is_allowed() {
        let e = FieldError::new("month", "month must be an integer from 1 to 12");
        assert_eq!(e.field(), "month");
        assert_eq!(e.message(), "month must be an integer from 1 to 12");
        assert_eq!(e.to_string(), e.message());
    }
}
