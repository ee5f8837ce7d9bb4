//! Settles reservations that outlived their TTL at their reserved amount (SPEC §2.5).
//!
//! Safe with any number of replicas: each sweep is the store's own transaction (Postgres takes
//! due rows with `SKIP LOCKED`, SQLite under its write lock), so a reservation expires once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Store;

/// Starts sweeping every `every` until `stop` changes; join the handle to wait for the last sweep.
#[must_use]
pub fn spawn(
    store: Arc<Store>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => match store.expire().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "settled overdue reservations at their reserved amount"),
                    Err(e) => tracing::warn!(error = %e, "expiring reservations failed; will retry"),
                },
                _ = stop.changed() => break,
            }
        }
    })
}
