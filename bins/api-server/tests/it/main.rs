//! The integration tests of `api-server`, as one test binary (each binary links the
//! whole dependency graph, so one per crate keeps the build short).

// Tests and their helpers panic loudly on a failed step; the lints are for production paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;
mod accounts;
mod admin;
mod binary;
mod codec_errors;
mod concurrency;
mod credits;
mod dashboard;
mod docs_page;
mod errors;
mod faults;
mod isolation;
mod members;
mod notifications;
mod observability;
mod openapi;
mod overload;
mod payments;
mod plans;
mod ratelimit;
mod read_path;
mod screenshots;
mod security;
mod service_screenshot;
mod signed_urls;
mod slow_clients;
mod throttle;
mod topology;
