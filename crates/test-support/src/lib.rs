//! # test-support
//!
//! What the workspace's integration tests share, in one place:
//! - [`TestDb`]: a store on a database of its own per test (a temporary SQLite file or a
//!   PostgreSQL schema), and [`on_both_backends!`] to run a test on each backend;
//! - [`fixtures`]: the accounts, amounts, clocks and checks the tests build on;
//! - [`fake_polar`]: a fake Polar HTTP server, and [`polar`]: settings and payments wired
//!   to it;
//! - [`http`]: one HTTP client for tests that talk to a real socket ([`Req`], [`Resp`]),
//!   built on `ureq`, plus [`http::send_only`] for raw bytes.
//!
//! A dev-dependency only: nothing here is part of a program.

// Test helpers panic loudly on a failed step; the lints are for production paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod db;
pub mod fake_polar;
pub mod fixtures;
pub mod http;
pub mod polar;

pub use db::{drop_postgres_schema, postgres_admin_url, postgres_schema, TestBackend, TestDb};
pub use fixtures::*;
pub use http::{
    agent, exchange, free_port, http, send_only, wait_healthy, Auth, Method, Req, Resp, ADMIN,
};

/// Declares each listed test function twice, in a `sqlite` and a `postgres` module.
///
/// The function takes a [`TestDb`] (a fresh database on that backend) or a
/// `&'static str` (the backend's name, for harnesses that open the database
/// themselves); it may be `async`, and then runs on an actix system of its own, as
/// `#[actix_rt::test]` would run it.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() {
                use $crate::__private::{RunAsync as _, RunSync as _};
                (&$crate::__private::Body::new(super::$name($crate::TestBackend::Sqlite.into()))).run()
            } )*
        }
        mod postgres {
            $( #[test] fn $name() {
                use $crate::__private::{RunAsync as _, RunSync as _};
                (&$crate::__private::Body::new(super::$name($crate::TestBackend::Postgres.into()))).run()
            } )*
        }
    };
}

/// How [`on_both_backends!`] runs a plain and an `async` test through one macro arm: the
/// method call picks [`RunAsync`](__private::RunAsync) when the result is a future and
/// falls back (one auto-reference further) to [`RunSync`](__private::RunSync) when it is
/// `()`.
#[doc(hidden)]
pub mod __private {
    use std::cell::Cell;
    use std::future::Future;

    /// What a test function returned.
    pub struct Body<T>(Cell<Option<T>>);

    impl<T> Body<T> {
        pub fn new(result: T) -> Body<T> {
            Body(Cell::new(Some(result)))
        }
    }

    /// An `async` test: run the future on an actix system of its own.
    pub trait RunAsync {
        fn run(&self);
    }

    impl<F: Future<Output = ()>> RunAsync for Body<F> {
        fn run(&self) {
            if let Some(test) = self.0.take() {
                actix_web::rt::System::new().block_on(test);
            }
        }
    }

    /// A plain test: it has already run.
    pub trait RunSync {
        fn run(&self);
    }

    impl RunSync for &Body<()> {
        fn run(&self) {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::__private::{Body, RunAsync as _, RunSync as _};

    #[test]
    fn an_async_body_is_run_to_its_end() {
        static RAN: AtomicBool = AtomicBool::new(false);
        Body::new(async {
            actix_web::rt::spawn(async {}).await.unwrap();
            RAN.store(true, Ordering::SeqCst);
        })
        .run();
        assert!(RAN.load(Ordering::SeqCst));
    }

    #[test]
    fn a_plain_body_has_run() {
        (&Body::new(())).run();
    }
}
