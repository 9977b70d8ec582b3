//! The integration tests of `capture`, as one test binary (each binary links the
//! whole dependency graph, so one per crate keeps the build short).

// Tests and their helpers panic loudly on a failed step; the lints are for production paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
mod common;
mod https;
mod options;
mod pool;
mod remote;
mod ssrf;
