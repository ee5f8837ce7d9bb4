//! `bursora-core`: the part of Bursora that decides, before any money is spent, whether an LLM
//! call may go out, and keeps the books exact afterwards.
//!
//! - [`money`]: integer nano-USD and exact decimal parsing.
//! - [`pricing`]: the genai-prices table in integer form, model resolution, usage → cost.
//! - [`estimate`]: upper bounds of a request's tokens before dispatch.
//! - [`window`]: UTC calendar windows.
//! - [`budget`]: budget specs, tag selectors and templates.
//! - [`ledger`]: the atomic reservation ledger (in memory or in a SQLite file).
//! - [`guard`]: the reservation protocol end to end (estimate → price → reserve; settle).
//! - [`reporter`]: the background thread that settles off the caller's path.
//! - [`remote`]: server mode, the client of bursora-server (reservations over HTTP, circuit
//!   breaker, outbox).
//! - [`clock`]: the injectable clock every time-dependent decision reads.
//! - [`warn`]: the sink for warnings (the library never prints).

pub mod budget;
pub mod clock;
pub mod error;
pub mod estimate;
pub mod guard;
pub mod ledger;
pub mod money;
pub mod pricing;
pub mod remote;
pub mod reporter;
pub mod warn;
pub mod window;

pub use error::{Error, Result};
pub use money::NanoUsd;
