//! The integration tests of `ledger-core`, as one test binary (each binary links the
//! whole dependency graph, so one per crate keeps the build short).

mod book;
mod orders;
mod properties;
