//! A resolved model: what a call to it can cost (before dispatch) and did cost (after).

use std::sync::Arc;

use super::table::{ModelPrices, PriceRefs, Rate, VariantKeys};
use super::units::{DENOM, Direction, UNIT_COUNT, Unit, UnitMap};
use super::usage::TokenUsage;
use crate::error::{Error, Result};
use crate::money::NanoUsd;

/// How far ahead a bound looks for price changes (a time-of-day peak starting, a new price taking
/// effect at midnight): a request reserved now reaches the provider within this, so the bound
/// covers whichever price is in force when it gets there.
pub const PRICE_CHANGE_HORIZON_MS: i64 = 10 * 60 * 1000;

/// The request-specific facts that select prices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriceContext {
    /// OpenAI's `service_tier`: in a request (`auto`, `default`, `flex`, `priority`, ...) for a
    /// bound; as the response reports it for a cost. `None`, `auto` and unknown tiers price at
    /// standard rates.
    pub service_tier: Option<String>,
    /// The call goes through a batch API (`processing: batch` prices).
    pub batch: bool,
    /// The request has no audio or image input and asks for no audio or image output, so a bound
    /// may leave out audio and image rates (which are up to 8× the text rates on realtime and
    /// audio models). Default `false`: the bound takes the highest rate of any input kind.
    pub text_only: bool,
}

impl PriceContext {
    /// Standard prices, any input kind.
    #[must_use]
    pub fn standard() -> Self {
        Self::default()
    }

    /// The same context with a service tier.
    #[must_use]
    pub fn with_service_tier(mut self, tier: impl Into<String>) -> Self {
        self.service_tier = Some(tier.into());
        self
    }

    fn keys(&self) -> VariantKeys<'_> {
        VariantKeys {
            service_tier: self.service_tier.as_deref(),
            batch: self.batch,
        }
    }

    /// Whether the context can select non-standard prices at all.
    fn selects_variant(&self) -> bool {
        self.batch
            || self
                .service_tier
                .as_deref()
                .is_some_and(|tier| tier != "auto")
    }
}

/// Where a resolved model's prices come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PriceSource {
    /// The genai-prices table.
    Table,
    /// A user-supplied price (`prices` option).
    Override,
    /// No price is known: the conservative fallback price (SPEC §3).
    Fallback,
}

/// A model resolved to its prices. Cheap to share; everything here is immutable.
#[derive(Debug)]
pub struct ResolvedModel {
    /// The model name as the request gave it.
    pub model_ref: String,
    /// The provider the prices are for: matched in the table, or the one the caller named or
    /// whose base URL matched when the model is unknown.
    pub provider_id: Option<String>,
    /// The model id in the price table (`gpt-4o` for `gpt-4o-2024-08-06`), the override key, or
    /// the requested name when the model is unknown.
    pub model_id: String,
    /// Whether a real price is known (table or override). `false`: fallback prices.
    pub known: bool,
    /// Where the prices come from.
    pub source: PriceSource,
    /// The largest completion the model can produce: the output bound of a request that sets
    /// none (SPEC §2.1).
    pub max_output_tokens: u64,
    /// The context window, when the price data gives one.
    pub context_window: Option<u64>,
    /// The price data the decision was made with, e.g. `genai-prices 0.2.1`.
    pub price_data_version: Arc<str>,
    pub(crate) prices: Arc<ModelPrices>,
    /// Whether `price_variants` apply (not for a model served through a fallback provider).
    pub(crate) variants_apply: bool,
}

/// The parts of a bound for one set of prices: `input × input_rate + output × output_rate +
/// fixed`, all over [`DENOM`].
#[derive(Clone, Copy, Debug)]
struct BoundTerms {
    input_rate: u128,
    output_rate: u128,
    fixed: u128,
}

impl ResolvedModel {
    /// The most a call with at most `input_tokens` input tokens and at most `output_tokens`
    /// output tokens can cost, rounded up to the nano-USD.
    ///
    /// Every input token is priced at the highest input rate that can apply (the tier for
    /// `input_tokens`; cache writes; audio and image unless `ctx.text_only`), every output token
    /// at the highest output rate, plus per-call fees. Prices in force at `now_ms` and at every
    /// price change within [`PRICE_CHANGE_HORIZON_MS`] are considered. With a `service_tier`
    /// other than `auto`, or `batch`, each rate is the higher of the standard and the
    /// variant's, since a tier can be downgraded. Saturates at [`NanoUsd::MAX`].
    #[must_use]
    pub fn upper_bound(
        &self,
        input_tokens: u64,
        output_tokens: u64,
        ctx: &PriceContext,
        now_ms: i64,
    ) -> NanoUsd {
        let mut worst: u128 = 0;
        self.for_each_bound(input_tokens, ctx, now_ms, |terms| {
            let total = u128::from(input_tokens)
                .saturating_mul(terms.input_rate)
                .saturating_add(u128::from(output_tokens).saturating_mul(terms.output_rate))
                .saturating_add(terms.fixed);
            worst = worst.max(total);
        });
        to_nanos_ceil(worst).unwrap_or(NanoUsd::MAX)
    }

    /// The largest output token count whose [`upper_bound`](Self::upper_bound) fits in
    /// `amount` for this input, or `None` when not even zero output tokens fit. `u64::MAX` when
    /// output is free. The `fit` policy lowers a request's max tokens to this (never raises).
    #[must_use]
    pub fn max_output_within(
        &self,
        input_tokens: u64,
        amount: NanoUsd,
        ctx: &PriceContext,
        now_ms: i64,
    ) -> Option<u64> {
        // bound(n) = ceil(num(n) / DENOM) ≤ amount  ⇔  num(n) ≤ amount × DENOM (num is an integer).
        let budget = u128::try_from(amount.nanos())
            .unwrap_or(0)
            .saturating_mul(DENOM);
        let mut best = Some(u64::MAX);
        self.for_each_bound(input_tokens, ctx, now_ms, |terms| {
            let committed = u128::from(input_tokens)
                .saturating_mul(terms.input_rate)
                .saturating_add(terms.fixed);
            let fits = match budget.checked_sub(committed) {
                None => None,
                Some(_) if terms.output_rate == 0 => Some(u64::MAX),
                Some(left) => Some(u64::try_from(left / terms.output_rate).unwrap_or(u64::MAX)),
            };
            best = match (best, fits) {
                (Some(a), Some(b)) => Some(a.min(b)),
                _ => None,
            };
        });
        best
    }

    /// The exact cost of a call that consumed `usage`, at the prices in force at `now_ms` for
    /// `ctx` (use the `service_tier` the response reports). Each unit is charged on its leaf
    /// value (see [`TokenUsage`]), tiers are chosen by the total input tokens, and the sum is
    /// rounded up to the nano-USD once, at the end.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for inconsistent usage (e.g. more cached tokens than input
    /// tokens) or a cost too large to represent.
    pub fn cost(&self, usage: &TokenUsage, ctx: &PriceContext, now_ms: i64) -> Result<NanoUsd> {
        usage.validate()?;
        let keys = ctx.keys();
        let variant_keys = self.variants_apply.then_some(&keys);
        let prices = self.prices.prices_at(now_ms, variant_keys);
        let counts = usage.by_unit();
        let leaves = leaf_values(&prices, &counts)?;
        let overflow = || Error::invalid("the usage is too large to price");
        let mut total: u128 = 0;
        for unit in Unit::ALL {
            let Some(rate) = prices[unit.index()] else {
                continue;
            };
            let term = u128::from(rate.at(usage.input_tokens))
                .checked_mul(u128::from(leaves[unit.index()]))
                .and_then(|term| term.checked_mul(unit.scale()))
                .ok_or_else(overflow)?;
            total = total.checked_add(term).ok_or_else(overflow)?;
        }
        to_nanos_ceil(total).ok_or_else(overflow)
    }

    /// Calls `f` with the bound terms of every price set that may apply.
    fn for_each_bound(
        &self,
        input_tokens: u64,
        ctx: &PriceContext,
        now_ms: i64,
        mut f: impl FnMut(BoundTerms),
    ) {
        let keys = ctx.keys();
        let with_variant = self.variants_apply && ctx.selects_variant();
        for instant in self.prices.instants(now_ms, PRICE_CHANGE_HORIZON_MS) {
            f(bound_terms(
                &self.prices.prices_at(instant, None),
                input_tokens,
                ctx.text_only,
            ));
            if with_variant {
                f(bound_terms(
                    &self.prices.prices_at(instant, Some(&keys)),
                    input_tokens,
                    ctx.text_only,
                ));
            }
        }
    }
}

fn bound_terms(prices: &PriceRefs<'_>, input_tokens: u64, text_only: bool) -> BoundTerms {
    let mut terms = BoundTerms {
        input_rate: 0,
        output_rate: 0,
        fixed: 0,
    };
    for unit in Unit::ALL {
        let Some(rate) = prices[unit.index()] else {
            continue;
        };
        if text_only && unit.is_media() {
            continue;
        }
        let rate = u128::from(Rate::at(rate, input_tokens));
        match (unit.direction(), unit) {
            (Direction::Input, _) => terms.input_rate = terms.input_rate.max(rate),
            (Direction::Output, _) => terms.output_rate = terms.output_rate.max(rate),
            // One call: the per-request fee. Tool calls (web searches) cannot be bounded from the
            // request; they are charged at settlement.
            (Direction::Other, Unit::Requests) => {
                terms.fixed = terms.fixed.saturating_add(rate * unit.scale())
            }
            (Direction::Other, _) => {}
        }
    }
    terms
}

/// Splits usage into the leaf value of each priced unit: its count less the leaves of its priced
/// descendants, most specific first (genai-prices' decomposition, in integers).
fn leaf_values(prices: &PriceRefs<'_>, counts: &UnitMap<u64>) -> Result<UnitMap<u64>> {
    let mut leaves = [0u64; UNIT_COUNT];
    for unit in Unit::DECOMPOSITION_ORDER {
        if prices[unit.index()].is_none() {
            continue;
        }
        let descendants: u64 = Unit::ALL
            .into_iter()
            .filter(|other| prices[other.index()].is_some() && unit.is_ancestor_of(*other))
            .map(|other| leaves[other.index()])
            .fold(0u64, u64::saturating_add);
        let count = counts[unit.index()];
        leaves[unit.index()] = count.checked_sub(descendants).ok_or_else(|| {
            Error::invalid(format!(
                "inconsistent usage: the more specific counts within {} total {descendants}, more than its {count}",
                unit.price_key().trim_end_matches("_mtok").trim_end_matches("_kcount")
            ))
        })?;
    }
    Ok(leaves)
}

/// `ceil(total / DENOM)` as nano-USD, or `None` past [`NanoUsd::MAX`].
fn to_nanos_ceil(total: u128) -> Option<NanoUsd> {
    let nanos = i64::try_from(total.div_ceil(DENOM)).ok()?;
    Some(NanoUsd::from_nanos_clamped(nanos))
}
