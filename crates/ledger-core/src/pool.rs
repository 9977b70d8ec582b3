//! [`PoolOptions`]: the sizes and timeouts of the store's connection pool.
//!
//! Plain values with no I/O. They live here, below both the configuration (`settings`,
//! which reads them from `[database]`) and the store (`ledger-store`, which opens its pool
//! with them), so that each knob is declared once without the configuration crate
//! depending on the store and its database drivers.

use std::time::Duration;

/// Pool sizing and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOptions {
    /// Connections open at most.
    pub max_connections: u32,
    /// Connections kept open while idle; the others open when needed.
    pub min_connections: u32,
    /// How long opening one new connection may take (PostgreSQL's `connect_timeout`; at
    /// start, the first connection).
    pub connect_timeout: Duration,
    /// How long a caller waits for a pooled connection before the store answers that it
    /// is unavailable.
    pub acquire_timeout: Duration,
    /// SQLite: how long a writer waits for another process's write lock.
    pub busy_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_connections: 16,
            min_connections: 1,
            connect_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(10),
        }
    }
}
