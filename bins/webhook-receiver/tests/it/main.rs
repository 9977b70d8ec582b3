//! The integration tests of `webhook-receiver`, as one test binary (each binary links the
//! whole dependency graph, so one per crate keeps the build short).

mod codec_errors;
mod common;
mod crash;
mod reconcile;
mod webhooks;
