//! The integration tests of `webhook-receiver`, as one test binary (each binary links the
//! whole dependency graph, so one per crate keeps the build short).

// Tests and their helpers panic loudly on a failed step; the lints are for production paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod codec_errors;
mod common;
mod crash;
mod observability;
mod reconcile;
mod subscriptions;
mod webhooks;
