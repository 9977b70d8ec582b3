//! The integration tests of `ledger-store`, as one test binary (each binary links the
//! whole dependency graph, so one per crate keeps the build short).

mod common;
mod migrations;
mod store;
