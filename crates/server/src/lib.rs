//! `bursora-server`: the budget server behind the SDK's server mode (SPEC §4, §6).
//!
//! - [`alerts`]: the background task that delivers budget threshold alerts to webhooks.
//! - [`api`]: the HTTP/JSON API under `/v1` (axum).
//! - [`auth`]: API keys, hashed at rest, and the `Authorization: Bearer` extractor.
//! - [`dashboard`]: the embedded web dashboard at `/dashboard/` (static files; it uses the API).
//! - [`error`]: the one error type and our JSON error shape.
//! - [`metrics`]: Prometheus counters and latency histograms for `GET /metrics`.
//! - [`store`]: projects, keys and ledgers on SQLite (default) or Postgres.
//! - [`sweeper`]: the background task that expires overdue reservations.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod metrics;
pub mod store;
pub mod sweeper;

use std::sync::Arc;

pub use api::router;
pub use metrics::Metrics;
pub use store::Store;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The budget store.
    pub store: Arc<Store>,
    /// What `GET /metrics` reports.
    pub metrics: Arc<Metrics>,
    /// API keys the store recently confirmed.
    pub keys: Arc<auth::KeyCache>,
}

impl AppState {
    /// State over `store`.
    #[must_use]
    pub fn new(store: Store) -> Self {
        Self {
            store: Arc::new(store),
            metrics: Arc::default(),
            keys: Arc::default(),
        }
    }
}
