//! The operator CLI, run as the real binary against real databases: SQLite files and
//! PostgreSQL schemas of test-support's `TestDb`, `DATABASE_URL` set for the child.

// Test helpers panic loudly on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod common;
mod config;
mod maintenance;
mod migrate;
mod reconcile;
