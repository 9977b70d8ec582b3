//! Random ids with readable prefixes.

use ledger_core::{IdKind, IdSource};

/// `prefix` + 24 lowercase hex characters (96 random bits).
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    // Ids are made where no error can be returned (`IdSource::next_id`), and without the
    // operating system's random source nothing safe can be made at all: stop loudly.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    let mut out = String::with_capacity(prefix.len() + 24);
    out.push_str(prefix);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Random ids for the core.
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn next_id(&mut self, kind: IdKind) -> String {
        new_id(kind.prefix())
    }
}
