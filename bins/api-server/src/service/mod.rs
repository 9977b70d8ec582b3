//! The application layer: each flow of the API as plain async functions over
//! [`AppState`](crate::state::AppState), testable without HTTP. Handlers in `routes`
//! extract, call one of these, and convert the result.

pub mod accounts;
pub mod members;
pub mod metering;
pub mod notifications;
pub mod screenshot;
pub mod subscription;
pub mod system;
