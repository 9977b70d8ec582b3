//! The integration tests of `capture`, as one test binary (each binary links the
//! whole dependency graph, so one per crate keeps the build short).

mod browser;
mod common;
mod pool;
mod ssrf;
