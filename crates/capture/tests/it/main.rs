//! The integration tests of `capture`, as one test binary (each binary links the
//! whole dependency graph, so one per crate keeps the build short).

mod common;
mod browser;
mod pool;
mod ssrf;
