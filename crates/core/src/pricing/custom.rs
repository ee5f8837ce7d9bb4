//! User-supplied prices (the `prices` option) and the fallback price for unknown models.

use super::table::{ModelPrices, Rate};
use super::units::{UNIT_COUNT, Unit};
use crate::error::{Error, Result};
use crate::money::NanoUsd;

/// A user's price for a model, in USD per million tokens held exactly as [`NanoUsd`] (so
/// `input_per_mtok = NanoUsd::parse_usd("2.5")` means $2.50 per million input tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelPrice {
    /// USD per million input tokens.
    pub input_per_mtok: NanoUsd,
    /// USD per million output tokens.
    pub output_per_mtok: NanoUsd,
    /// USD per million cached input tokens; without it cached tokens cost the input price.
    pub cached_input_per_mtok: Option<NanoUsd>,
    /// The model's largest completion, for requests that set no output limit.
    pub max_output_tokens: Option<u64>,
}

impl ModelPrice {
    /// A price from decimal USD text, e.g. `("2.5", "10", Some("1.25"))`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the field, for negative or malformed text.
    pub fn parse(
        input_per_mtok: &str,
        output_per_mtok: &str,
        cached_input_per_mtok: Option<&str>,
    ) -> Result<Self> {
        let field = |name: &str, text: &str| {
            NanoUsd::parse_usd(text).map_err(|e| Error::invalid(format!("price {name}: {e}")))
        };
        Ok(Self {
            input_per_mtok: field("inputPerMTok", input_per_mtok)?,
            output_per_mtok: field("outputPerMTok", output_per_mtok)?,
            cached_input_per_mtok: cached_input_per_mtok
                .map(|text| field("cachedInputPerMTok", text))
                .transpose()?,
            max_output_tokens: None,
        })
    }

    /// A price from JavaScript numbers of USD per million tokens, each read through its
    /// shortest round-trip decimal text (`0.1` is exactly $0.10).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the field, for negative, NaN or infinite numbers.
    pub fn from_usd_f64(
        input_per_mtok: f64,
        output_per_mtok: f64,
        cached_input_per_mtok: Option<f64>,
    ) -> Result<Self> {
        let field = |name: &str, usd: f64| {
            NanoUsd::from_usd_f64(usd).map_err(|e| {
                Error::invalid(format!("price {name} must be a finite, non-negative number of USD per million tokens: {e}"))
            })
        };
        Ok(Self {
            input_per_mtok: field("inputPerMTok", input_per_mtok)?,
            output_per_mtok: field("outputPerMTok", output_per_mtok)?,
            cached_input_per_mtok: cached_input_per_mtok
                .map(|usd| field("cachedInputPerMTok", usd))
                .transpose()?,
            max_output_tokens: None,
        })
    }

    /// The same price with a max output token count.
    #[must_use]
    pub fn with_max_output_tokens(mut self, max_output_tokens: u64) -> Self {
        self.max_output_tokens = Some(max_output_tokens);
        self
    }

    pub(crate) fn to_prices(self, context_window: Option<u64>) -> ModelPrices {
        let rate = |usd: NanoUsd| Some(Rate::flat(u64::try_from(usd.nanos()).unwrap_or(0)));
        let mut set: [Option<Rate>; UNIT_COUNT] = std::array::from_fn(|_| None);
        set[Unit::Input.index()] = rate(self.input_per_mtok);
        set[Unit::Output.index()] = rate(self.output_per_mtok);
        if let Some(cached) = self.cached_input_per_mtok {
            set[Unit::CacheRead.index()] = rate(cached);
        }
        ModelPrices::fixed(set, context_window)
    }
}

/// The price of a model nobody priced: **$30 per million input tokens, $150 per million output
/// tokens**. That is the top of the mainstream range in the bundled data (the fast Claude Opus
/// tier; above every current GPT, Claude, Gemini, Grok, Mistral and DeepSeek model), so an
/// unknown model is never reserved below what a real one costs. Only the "pro" reasoning SKUs
/// (`o1-pro`, `gpt-5.x-pro`) and retired GPT-4 variants are dearer; a test keeps this true.
pub const FALLBACK_PRICE: ModelPrice = ModelPrice {
    input_per_mtok: NanoUsd::from_nanos_clamped(30_000_000_000),
    output_per_mtok: NanoUsd::from_nanos_clamped(150_000_000_000),
    cached_input_per_mtok: None,
    max_output_tokens: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_prices() {
        let price = ModelPrice::from_usd_f64(0.15, 0.6, Some(0.075)).unwrap();
        assert_eq!(price.input_per_mtok.nanos(), 150_000_000);
        assert_eq!(price.output_per_mtok.nanos(), 600_000_000);
        assert_eq!(
            price.cached_input_per_mtok.map(NanoUsd::nanos),
            Some(75_000_000)
        );
        assert_eq!(
            ModelPrice::parse("2.5", "10", None)
                .unwrap()
                .input_per_mtok
                .nanos(),
            2_500_000_000
        );
    }

    #[test]
    fn rejects_bad_prices_by_field() {
        for (input, output, cached, field) in [
            (-1.0, 1.0, None, "inputPerMTok"),
            (1.0, f64::NAN, None, "outputPerMTok"),
            (1.0, 1.0, Some(f64::INFINITY), "cachedInputPerMTok"),
            (1.0, f64::NEG_INFINITY, None, "outputPerMTok"),
        ] {
            let err = ModelPrice::from_usd_f64(input, output, cached).unwrap_err();
            assert_eq!(err.code(), "invalid_input");
            assert!(err.to_string().contains(field), "{err}");
        }
        assert!(
            ModelPrice::parse("1", "-2", None)
                .unwrap_err()
                .to_string()
                .contains("outputPerMTok")
        );
    }

    /// The fallback is never below a mainstream model: every standard price (all dates, all
    /// tiers; input including cache writes) of the big providers' models is at or below it,
    /// except the listed "pro" reasoning SKUs and retired GPT-4 variants.
    #[test]
    fn fallback_is_above_mainstream_models() {
        let dearer = [
            "gpt-4-32k",
            "gpt-4.5-preview",
            "gpt-5.2-pro",
            "gpt-5.4-pro",
            "gpt-5.5-pro",
            "o1-pro",
        ];
        let providers = [
            "openai",
            "anthropic",
            "google",
            "x-ai",
            "mistral",
            "deepseek",
        ];
        let data = crate::pricing::PriceData::bundled();
        let highest = |rate: &Option<Rate>| {
            rate.as_ref().map_or(0, |rate| {
                rate.tiers
                    .iter()
                    .map(|tier| tier.rate)
                    .fold(rate.base, u64::max)
            })
        };
        let (fallback_in, fallback_out) = (
            FALLBACK_PRICE.input_per_mtok.nanos().unsigned_abs(),
            FALLBACK_PRICE.output_per_mtok.nanos().unsigned_abs(),
        );
        let mut checked = 0;
        for (provider, model, prices) in data.table().models() {
            if !providers.contains(&provider) || dearer.contains(&model) {
                continue;
            }
            for standard in &prices.standard {
                let set = &standard.prices;
                let input = [Unit::Input, Unit::CacheWrite, Unit::CacheWrite1h]
                    .map(|u| highest(&set[u.index()]));
                assert!(
                    input.into_iter().all(|rate| rate <= fallback_in),
                    "{provider}/{model} input {input:?}"
                );
                let output = highest(&set[Unit::Output.index()]);
                assert!(output <= fallback_out, "{provider}/{model} output {output}");
                checked += 1;
            }
        }
        assert!(checked > 300, "only {checked} price sets checked");
    }
}
