//! The integration tests of `ledger-store`, as one test binary (each binary links the
//! whole dependency graph, so one per crate keeps the build short).

// Tests and their helpers panic loudly on a failed step; the lints are for production paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod common;
mod engine;
mod members;
mod migrations;
mod notifications;
mod observe;
mod plans;
mod store;
mod verify;
