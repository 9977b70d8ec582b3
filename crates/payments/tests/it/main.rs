//! The integration tests of `payments`, as one test binary (each binary links the
//! whole dependency graph, so one per crate keeps the build short).

mod auto_topup;
mod checkout;
mod common;
mod crediting;
