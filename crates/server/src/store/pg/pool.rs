//! The connection pool `bursora-server serve` runs on.
//!
//! sqlx pings every connection it hands out (`test_before_acquire`): one extra round trip on
//! each of the server's transactions; a reservation is usually one statement. Here only
//! a connection that sat idle long enough to have been dropped by a firewall or a restarted
//! database is pinged first; a busy connection goes straight to work. A connection that broke
//! while busy fails the one request that used it (503) and the pool replaces it.

use std::time::Duration;

use bursora_core::Result;
use sqlx::Connection;
use sqlx::postgres::PgPoolOptions;

use super::PgStore;

/// A connection idle at least this long is pinged before use.
const PING_IF_IDLE: Duration = Duration::from_secs(10);

impl PgStore {
    /// Like [`PgStore::connect`], with the pool tuned for serving: only connections idle for
    /// [`PING_IF_IDLE`] are pinged before use.
    ///
    /// # Errors
    /// The database cannot be reached or migrated.
    pub async fn connect_for_serving(url: &str, max_connections: u32) -> Result<Self> {
        let options = PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            });
        Self::connect_with(url, max_connections, options).await
    }
}
