//! One id type per entity. Ids are opaque strings with a readable prefix (`txn_...`);
//! the core never makes them up: an [`IdSource`] passed in by the caller does.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix new ids of this kind carry.
            pub const PREFIX: &'static str = $prefix;

            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

id_type!(
    /// An account (a customer of the metered service).
    AccountId, "acct_"
);
id_type!(
    /// A ledger entry, shown to clients as a transaction.
    EntryId, "txn_"
);
id_type!(
    /// A lot of credits with its own priority and expiry.
    GrantId, "grant_"
);
id_type!(
    /// A reservation of credits for work in progress.
    HoldId, "hold_"
);
id_type!(
    /// A credit pack of the catalogue.
    PackId, "pack_"
);

/// Which kind of id to mint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Entry,
    Grant,
    Hold,
}

impl IdKind {
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::Entry => EntryId::PREFIX,
            IdKind::Grant => GrantId::PREFIX,
            IdKind::Hold => HoldId::PREFIX,
        }
    }
}

/// Supplies fresh, unique ids. The store uses random ones; tests use counters.
pub trait IdSource {
    fn next_id(&mut self, kind: IdKind) -> String;
}

/// Sequential ids (`txn_1`, `grant_2`, ...), for tests and examples.
#[derive(Debug, Default)]
pub struct SequentialIds(u64);

impl IdSource for SequentialIds {
    fn next_id(&mut self, kind: IdKind) -> String {
        self.0 += 1;
        format!("{}{}", kind.prefix(), self.0)
    }
}
