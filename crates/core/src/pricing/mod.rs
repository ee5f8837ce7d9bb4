//! Prices: the genai-prices table in integer form, model resolution and usage → cost.
//!
//! - [`Pricer::resolve`] turns a request's provider, base URL and model name into a
//!   [`ResolvedModel`] (cached: the hot path is a read lock and a hash lookup).
//! - [`ResolvedModel::upper_bound`] is what a call can cost at most, for the reservation;
//!   [`ResolvedModel::max_output_within`] inverts it for the `fit` policy.
//! - [`ResolvedModel::cost`] is what a call did cost, from the [`TokenUsage`] the provider
//!   returned ([`TokenUsage::from_openai`]).
//!
//! Prices are integers (nano-USD per million tokens, per thousand requests); a cost is summed
//! exactly in `u128` over one common denominator and rounded up once. The data is the
//! genai-prices snapshot in `crates/core/data/` ([`PRICE_DATA_VERSION`]), refreshed by
//! `scripts/update-prices.sh`; output limits come from LiteLLM's table
//! (`scripts/gen-max-output-tokens.py`).

mod custom;
mod limits;
mod model;
mod resolve;
mod table;
mod units;
mod usage;

pub use custom::{FALLBACK_PRICE, ModelPrice};
pub use limits::{DEFAULT_MAX_OUTPUT_TOKENS, max_output_tokens_source};
pub use model::{PRICE_CHANGE_HORIZON_MS, PriceContext, PriceSource, ResolvedModel};
pub use resolve::{ModelRef, PriceData, Pricer, UnknownModelPolicy};
pub use table::PriceTable;
pub use usage::{CHAT_USAGE_FIELDS, CountValue, TokenUsage, UsageShape};

/// The bundled price data's version, e.g. `genai-prices 0.2.1`; every decision records it.
pub const PRICE_DATA_VERSION: &str = include_str!("../../data/genai-prices.version").trim_ascii();

/// The bundled genai-prices data, as copied by `scripts/update-prices.sh`.
pub(crate) const BUNDLED_PRICES_JSON: &str = include_str!("../../data/genai-prices.json");
