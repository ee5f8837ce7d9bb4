//! Prices against hand-computed costs, model resolution, overrides and unknown models.
//!
//! Costs are written out as "tokens × $/MTok": a price of $p per million tokens is p × 10^9
//! nano-USD per million, i.e. p × 1000 nano-USD per token.

use std::collections::HashMap;
use std::sync::Arc;

use bursora_core::NanoUsd;
use bursora_core::pricing::{
    FALLBACK_PRICE, ModelPrice, ModelRef, PRICE_DATA_VERSION, PriceContext, PriceData, PriceSource,
    PriceTable, Pricer, ResolvedModel, TokenUsage, UnknownModelPolicy, UsageShape,
};
use bursora_core::warn::{CollectWarnings, IgnoreWarnings, SharedSink};
use serde_json::json;

const OPENAI: &str = "https://api.openai.com/v1";

/// Unix milliseconds of an RFC 3339 instant.
fn at(instant: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(instant)
        .unwrap()
        .timestamp_millis()
}

/// After every price variant in the bundled data took effect (2026-10-14).
fn now() -> i64 {
    at("2026-11-02T12:00:00Z")
}

fn pricer() -> Pricer {
    Pricer::new(
        HashMap::new(),
        UnknownModelPolicy::Fallback,
        Arc::new(IgnoreWarnings),
    )
    .unwrap()
}

fn openai(pricer: &Pricer, model: &str) -> Arc<ResolvedModel> {
    pricer
        .resolve(&ModelRef::new(model).with_base_url(OPENAI))
        .unwrap()
}

fn nanos(n: i64) -> NanoUsd {
    NanoUsd::from_nanos(n).unwrap()
}

fn usage(input: u64, cached: u64, output: u64) -> TokenUsage {
    TokenUsage {
        input_tokens: input,
        cached_input_tokens: cached,
        output_tokens: output,
        ..TokenUsage::default()
    }
}

fn tier(tier: &str) -> PriceContext {
    PriceContext::standard().with_service_tier(tier)
}

#[test]
fn bundled_data_decodes_and_names_its_version() {
    let data = PriceData::bundled();
    assert_eq!(data.version(), PRICE_DATA_VERSION);
    // The copied data must be the pinned crate's: bump both together (scripts/update-prices.sh).
    let manifest = include_str!("../../../Cargo.toml");
    let pin = manifest
        .lines()
        .find(|line| line.starts_with("genai-prices ="))
        .unwrap();
    let version = PRICE_DATA_VERSION.strip_prefix("genai-prices ").unwrap();
    assert!(
        pin.contains(&format!("\"={version}\"")),
        "{pin} vs {PRICE_DATA_VERSION}"
    );
    assert!(bursora_core::pricing::max_output_tokens_source().starts_with("litellm 1."));
    let model = openai(&pricer(), "gpt-4o");
    assert_eq!(&*model.price_data_version, PRICE_DATA_VERSION);
}

#[test]
fn gpt_4o_mini_chat_with_cached_tokens() {
    // gpt-4o-mini: input $0.15, cached $0.075, output $0.60 per MTok.
    let model = openai(&pricer(), "gpt-4o-mini");
    assert_eq!(
        (model.provider_id.as_deref(), model.model_id.as_str()),
        (Some("openai"), "gpt-4o-mini")
    );
    let response = json!({
        "object": "chat.completion", "service_tier": "default",
        "usage": {"prompt_tokens": 10_000, "completion_tokens": 1_500, "total_tokens": 11_500,
                  "prompt_tokens_details": {"cached_tokens": 4_000, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}
    });
    let (used, service_tier) = TokenUsage::from_openai(UsageShape::Chat, &response).unwrap();
    let ctx = PriceContext {
        service_tier,
        ..PriceContext::default()
    };
    // 6,000 uncached × 150 + 4,000 cached × 75 + 1,500 out × 600
    // = 900,000 + 300,000 + 900,000 = 2,100,000 nano-USD ($0.0021).
    assert_eq!(model.cost(&used, &ctx, now()).unwrap(), nanos(2_100_000));
    // Cached tokens are a leaf only because the model prices them: 7 in, 3 cached:
    // 4 × 150 + 3 × 75 = 825.
    assert_eq!(
        model.cost(&usage(7, 3, 0), &ctx, now()).unwrap(),
        nanos(825)
    );
}

#[test]
fn gpt_5_reasoning_is_output() {
    // gpt-5: input $1.25, output $10; reasoning tokens are output tokens at the output price.
    let model = openai(&pricer(), "gpt-5");
    let response = json!({
        "object": "response", "service_tier": "default",
        "usage": {"input_tokens": 2_000, "output_tokens": 5_000, "total_tokens": 7_000,
                  "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens_details": {"reasoning_tokens": 4_000}}
    });
    let (used, tier_reported) = TokenUsage::from_openai(UsageShape::Responses, &response).unwrap();
    assert_eq!(used.reasoning_tokens, 4_000);
    let ctx = PriceContext {
        service_tier: tier_reported,
        ..PriceContext::default()
    };
    // 2,000 × 1,250 + 5,000 × 10,000 = 2,500,000 + 50,000,000 = 52,500,000 ($0.0525).
    assert_eq!(model.cost(&used, &ctx, now()).unwrap(), nanos(52_500_000));
}

#[test]
fn o3_price_depends_on_the_date() {
    // o3: $10 in / $40 out until 2025-06-10, then $2 / $8.
    let model = openai(&pricer(), "o3");
    let used = usage(1_000, 0, 1_000);
    // 1,000 × 10,000 + 1,000 × 40,000 = 50,000,000.
    assert_eq!(
        model
            .cost(&used, &PriceContext::default(), at("2025-06-09T23:59:59Z"))
            .unwrap(),
        nanos(50_000_000)
    );
    // 1,000 × 2,000 + 1,000 × 8,000 = 10,000,000.
    assert_eq!(
        model
            .cost(&used, &PriceContext::default(), at("2025-06-10T00:00:00Z"))
            .unwrap(),
        nanos(10_000_000)
    );
    // A bound just before the change covers the dearer price it may still be billed at, and one
    // just before a drop keeps the current (higher) one.
    assert_eq!(
        model.upper_bound(
            1_000,
            1_000,
            &PriceContext::default(),
            at("2025-06-09T23:55:00Z")
        ),
        nanos(50_000_000)
    );
}

#[test]
fn time_of_day_prices_and_the_bound_looks_ahead() {
    // deepseek-chat: $0.135 in / $0.035 cached / $0.55 out off-peak;
    // $0.27 / $0.07 / $1.10 between 00:30 and 16:30 UTC.
    let pricer = pricer();
    let model = pricer
        .resolve(&ModelRef::new("deepseek-chat").with_provider("deepseek"))
        .unwrap();
    let used = usage(1_000, 0, 1_000);
    let ctx = PriceContext::default();
    // Off-peak: 1,000 × 135 + 1,000 × 550 = 685,000.
    assert_eq!(
        model.cost(&used, &ctx, at("2026-11-02T00:25:00Z")).unwrap(),
        nanos(685_000)
    );
    // Peak: 1,000 × 270 + 1,000 × 1,100 = 1,370,000.
    assert_eq!(
        model.cost(&used, &ctx, at("2026-11-02T00:30:00Z")).unwrap(),
        nanos(1_370_000)
    );
    // Five minutes before the peak the bound already charges it; twenty minutes before, not.
    assert_eq!(
        model.upper_bound(1_000, 1_000, &ctx, at("2026-11-02T00:25:00Z")),
        nanos(1_370_000)
    );
    assert_eq!(
        model.upper_bound(1_000, 1_000, &ctx, at("2026-11-02T00:10:00Z")),
        nanos(685_000)
    );
    // Crossing midnight: 23:55 looks 10 minutes into the next day (still off-peak).
    assert_eq!(
        model.upper_bound(1_000, 1_000, &ctx, at("2026-11-02T23:55:00Z")),
        nanos(685_000)
    );
}

#[test]
fn gpt_5_4_long_context_tier_prices_the_whole_request() {
    // gpt-5.4: input $2.50 / cached $0.25 / output $15; above 272,000 input tokens the whole
    // request is $5 / $0.50 / $22.50.
    let model = openai(&pricer(), "gpt-5.4");
    let ctx = PriceContext::default();
    // 200,000 × 5,000 + 100,000 × 500 + 10,000 × 22,500
    // = 1,000,000,000 + 50,000,000 + 225,000,000 = 1,275,000,000 ($1.275).
    assert_eq!(
        model
            .cost(&usage(300_000, 100_000, 10_000), &ctx, now())
            .unwrap(),
        nanos(1_275_000_000)
    );
    // At exactly 272,000 the base rate applies: 272,000 × 2,500 = 680,000,000.
    assert_eq!(
        model.cost(&usage(272_000, 0, 0), &ctx, now()).unwrap(),
        nanos(680_000_000)
    );
    // One more token: 272,001 × 5,000 = 1,360,005,000.
    assert_eq!(
        model.cost(&usage(272_001, 0, 0), &ctx, now()).unwrap(),
        nanos(1_360_005_000)
    );
    // Bound: 300,000 × 5,000 + 10,000 × 22,500 = 1,500,000,000 + 225,000,000.
    assert_eq!(
        model.upper_bound(300_000, 10_000, &ctx, now()),
        nanos(1_725_000_000)
    );
    // Below the tier: 1,000 × 2,500 + 1,000 × 15,000 = 17,500,000.
    assert_eq!(
        model.upper_bound(1_000, 1_000, &ctx, now()),
        nanos(17_500_000)
    );
}

#[test]
fn service_tiers_and_batch() {
    // gpt-5 from 2026-10-12/14: standard $1.25 / $0.125 / $10; flex and batch $0.625 /
    // $0.0625 / $5; priority $2.50 / $0.25 / $20.
    let model = openai(&pricer(), "gpt-5");
    let used = usage(1_000, 0, 1_000);
    let batch = PriceContext {
        batch: true,
        ..PriceContext::default()
    };
    // Standard: 1,000 × 1,250 + 1,000 × 10,000 = 11,250,000.
    assert_eq!(
        model.cost(&used, &PriceContext::default(), now()).unwrap(),
        nanos(11_250_000)
    );
    assert_eq!(
        model.cost(&used, &tier("default"), now()).unwrap(),
        nanos(11_250_000)
    );
    assert_eq!(
        model.cost(&used, &tier("scale"), now()).unwrap(),
        nanos(11_250_000)
    );
    // Flex: 1,000 × 625 + 1,000 × 5,000 = 5,625,000; batch the same.
    assert_eq!(
        model.cost(&used, &tier("flex"), now()).unwrap(),
        nanos(5_625_000)
    );
    assert_eq!(model.cost(&used, &batch, now()).unwrap(), nanos(5_625_000));
    // Priority: 1,000 × 2,500 + 1,000 × 20,000 = 22,500,000.
    assert_eq!(
        model.cost(&used, &tier("priority"), now()).unwrap(),
        nanos(22_500_000)
    );
    // Before the variants took effect, flex is billed at standard.
    assert_eq!(
        model
            .cost(&used, &tier("flex"), at("2026-10-01T00:00:00Z"))
            .unwrap(),
        nanos(11_250_000)
    );
    // Flex cached input is $0.0625/MTok = 62.5 nano-USD a token: 1,000 × 625 + 1 × 62.5
    // = 625,062.5, rounded up once to 625,063.
    assert_eq!(
        model
            .cost(&usage(1_001, 1, 0), &tier("flex"), now())
            .unwrap(),
        nanos(625_063)
    );

    // Bounds: no tier, auto and flex at standard (a flex request may be served at standard);
    // priority at priority prices.
    for ctx in [
        PriceContext::default(),
        tier("auto"),
        tier("flex"),
        tier("default"),
        batch,
    ] {
        assert_eq!(
            model.upper_bound(1_000, 1_000, &ctx, now()),
            nanos(11_250_000),
            "{ctx:?}"
        );
    }
    assert_eq!(
        model.upper_bound(1_000, 1_000, &tier("priority"), now()),
        nanos(22_500_000)
    );
}

#[test]
fn audio_tokens_are_split_into_leaves() {
    // gpt-realtime per MTok: text in $4, cached $0.40, audio in $32, cached audio $0.40,
    // image in $5; text out $16, audio out $64.
    let model = openai(&pricer(), "gpt-realtime");
    let used = TokenUsage {
        input_tokens: 10_000,
        cached_input_tokens: 3_000,
        input_audio_tokens: 6_000,
        cached_audio_tokens: 2_000,
        output_tokens: 2_000,
        output_audio_tokens: 1_500,
        ..TokenUsage::default()
    };
    // Leaves: cached audio 2,000; audio 6,000 − 2,000 = 4,000; cached text 3,000 − 2,000 = 1,000;
    // text 10,000 − 2,000 − 4,000 − 1,000 = 3,000; audio out 1,500; text out 500.
    // 3,000 × 4,000 + 1,000 × 400 + 4,000 × 32,000 + 2,000 × 400 + 500 × 16,000 + 1,500 × 64,000
    // = 12,000,000 + 400,000 + 128,000,000 + 800,000 + 8,000,000 + 96,000,000 = 245,200,000.
    assert_eq!(
        model.cost(&used, &PriceContext::default(), now()).unwrap(),
        nanos(245_200_000)
    );
    // Bound at the highest rates: 10,000 × 32,000 + 2,000 × 64,000 = 448,000,000; text only:
    // 10,000 × 4,000 + 2,000 × 16,000 = 72,000,000.
    assert_eq!(
        model.upper_bound(10_000, 2_000, &PriceContext::default(), now()),
        nanos(448_000_000)
    );
    let text_only = PriceContext {
        text_only: true,
        ..PriceContext::default()
    };
    assert_eq!(
        model.upper_bound(10_000, 2_000, &text_only, now()),
        nanos(72_000_000)
    );
    // Not in LiteLLM's chat table: the context window bounds the output.
    assert_eq!(model.max_output_tokens, 32_000);
}

#[test]
fn embeddings() {
    // text-embedding-3-small: $0.02/MTok. Its name matches no provider's pattern, so the base
    // URL finds it.
    let model = openai(&pricer(), "text-embedding-3-small");
    assert!(model.known);
    let response =
        json!({"object": "list", "usage": {"prompt_tokens": 12_345, "total_tokens": 12_345}});
    let (used, _) = TokenUsage::from_openai(UsageShape::Embeddings, &response).unwrap();
    // 12,345 × 20 = 246,900.
    assert_eq!(
        model.cost(&used, &PriceContext::default(), now()).unwrap(),
        nanos(246_900)
    );
    assert_eq!(
        model.upper_bound(12_345, 0, &PriceContext::default(), now()),
        nanos(246_900)
    );
}

#[test]
fn per_request_fee() {
    // Perplexity sonar-pro: $3 in, $15 out, $14 per 1,000 requests.
    let model = pricer()
        .resolve(&ModelRef::new("sonar-pro").with_base_url("https://api.perplexity.ai"))
        .unwrap();
    assert_eq!(model.provider_id.as_deref(), Some("perplexity"));
    // 100 × 3,000 + 200 × 15,000 + 14,000,000 = 300,000 + 3,000,000 + 14,000,000 = 17,300,000.
    assert_eq!(
        model
            .cost(&usage(100, 0, 200), &PriceContext::default(), now())
            .unwrap(),
        nanos(17_300_000)
    );
    assert_eq!(
        model.upper_bound(0, 0, &PriceContext::default(), now()),
        nanos(14_000_000)
    );
    assert_eq!(
        model.upper_bound(100, 200, &PriceContext::default(), now()),
        nanos(17_300_000)
    );
}

#[test]
fn web_searches_are_charged_at_settlement() {
    // gpt-4o: $2.50 in, $10 out, web searches $10 per 1,000.
    let model = openai(&pricer(), "gpt-4o");
    let used = TokenUsage {
        web_searches: 2,
        ..usage(1_000, 0, 100)
    };
    // 1,000 × 2,500 + 100 × 10,000 + 2 × 10,000,000 = 2,500,000 + 1,000,000 + 20,000,000.
    assert_eq!(
        model.cost(&used, &PriceContext::default(), now()).unwrap(),
        nanos(23_500_000)
    );
}

#[test]
fn resolution_by_provider_url_name_snapshot_and_fine_tune() {
    let pricer = pricer();
    let ids = |r: &ModelRef<'_>| {
        let model = pricer.resolve(r).unwrap();
        assert!(model.known, "{r:?}");
        (
            model.provider_id.clone().unwrap_or_default(),
            model.model_id.clone(),
        )
    };
    let pair = |p: &str, m: &str| (p.to_owned(), m.to_owned());
    assert_eq!(
        ids(&ModelRef::new("gpt-4o").with_provider("openai")),
        pair("openai", "gpt-4o")
    );
    assert_eq!(
        ids(&ModelRef::new("gpt-4o").with_provider("OpenAI")),
        pair("openai", "gpt-4o")
    );
    assert_eq!(
        ids(&ModelRef::new("gpt-4o").with_base_url(OPENAI)),
        pair("openai", "gpt-4o")
    );
    assert_eq!(ids(&ModelRef::new("gpt-4o")), pair("openai", "gpt-4o"));
    assert_eq!(ids(&ModelRef::new("claude-sonnet-4-5")).0, "anthropic");
    // Dated snapshots: listed, unlisted, compact.
    assert_eq!(
        ids(&ModelRef::new("gpt-4o-2024-08-06").with_base_url(OPENAI)),
        pair("openai", "gpt-4o")
    );
    assert_eq!(
        ids(&ModelRef::new("gpt-4o-2099-01-31").with_base_url(OPENAI)),
        pair("openai", "gpt-4o")
    );
    assert_eq!(
        ids(&ModelRef::new("gpt-4o-20240806").with_base_url(OPENAI)),
        pair("openai", "gpt-4o")
    );
    // The explicit provider wins over the base URL; an unknown provider falls through to the URL.
    let azure = "https://acme.openai.azure.com/openai/deployments/x";
    assert_eq!(
        ids(&ModelRef::new("gpt-4o")
            .with_provider("azure")
            .with_base_url(OPENAI))
        .0,
        "azure"
    );
    assert_eq!(
        ids(&ModelRef::new("gpt-4o")
            .with_provider("my-gateway")
            .with_base_url(OPENAI))
        .0,
        "openai"
    );
    assert_eq!(
        ids(&ModelRef::new("gpt-4o").with_base_url(azure)),
        pair("azure", "gpt-4o")
    );
}

#[test]
fn fine_tuned_models() {
    let sink = Arc::new(CollectWarnings::default());
    let pricer = Pricer::new(
        HashMap::new(),
        UnknownModelPolicy::Fallback,
        sink.clone() as SharedSink,
    )
    .unwrap();
    // The data prices gpt-4o-mini fine-tunes ($0.30 in / $1.20 out): 1,000 × 300 + 1,000 × 1,200.
    let tuned = openai(&pricer, "ft:gpt-4o-mini-2024-07-18:acme::A1b2C3");
    assert_eq!(tuned.model_id, "ft:gpt-4o-mini");
    assert_eq!(
        tuned
            .cost(&usage(1_000, 0, 1_000), &PriceContext::default(), now())
            .unwrap(),
        nanos(1_500_000)
    );
    assert!(sink.take().is_empty());
    // Others resolve to their base model, with one warning that the base price may be low.
    let tuned = openai(&pricer, "ft:gpt-4.1-mini-2025-04-14:acme:support:B4c5");
    assert_eq!(tuned.model_id, "gpt-4.1-mini");
    assert!(tuned.known);
    let _ = pricer
        .resolve(&ModelRef::new(
            "ft:gpt-4.1-mini-2025-04-14:acme:support:B4c5",
        ))
        .unwrap();
    let warnings = sink.take();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].code, "fine_tuned_model");
}

#[test]
fn azure_serves_openai_models_without_openai_tiers() {
    // Azure falls back to OpenAI's gpt-4o at its standard prices ($2.50 / $10): OpenAI's
    // priority rates are not Azure's.
    let model = pricer()
        .resolve(&ModelRef::new("gpt-4o").with_base_url("https://acme.openai.azure.com"))
        .unwrap();
    assert_eq!(model.provider_id.as_deref(), Some("azure"));
    // 1,000 × 2,500 + 1,000 × 10,000 = 12,500,000.
    assert_eq!(
        model
            .cost(&usage(1_000, 0, 1_000), &tier("priority"), now())
            .unwrap(),
        nanos(12_500_000)
    );
}

#[test]
fn overrides_win() {
    let overrides = [
        (
            "gpt-4o".to_owned(),
            ModelPrice::from_usd_f64(1.0, 2.0, None).unwrap(),
        ),
        (
            "openai/gpt-5".to_owned(),
            ModelPrice::parse("3", "4", Some("0.5")).unwrap(),
        ),
        (
            "My-Model".to_owned(),
            ModelPrice::from_usd_f64(0.1, 0.2, None)
                .unwrap()
                .with_max_output_tokens(4_096),
        ),
    ];
    let pricer = Pricer::new(
        overrides,
        UnknownModelPolicy::Block,
        Arc::new(IgnoreWarnings),
    )
    .unwrap();
    let ctx = PriceContext::default();
    // gpt-4o and its snapshots: 1,000 × 1,000 + 1,000 × 2,000 = 3,000,000.
    for name in ["gpt-4o", "GPT-4o", "gpt-4o-2024-08-06"] {
        let model = openai(&pricer, name);
        assert_eq!(model.source, PriceSource::Override, "{name}");
        assert_eq!(
            model.cost(&usage(1_000, 0, 1_000), &ctx, now()).unwrap(),
            nanos(3_000_000),
            "{name}"
        );
    }
    // Provider-qualified: 1,000 uncached × 3,000 + 1,000 cached × 500 + 1,000 × 4,000 = 7,500,000.
    let gpt5 = openai(&pricer, "gpt-5");
    assert_eq!(
        gpt5.cost(&usage(2_000, 1_000, 1_000), &ctx, now()).unwrap(),
        nanos(7_500_000)
    );
    // Its max output tokens still come from the tables.
    assert_eq!(gpt5.max_output_tokens, 128_000);
    // A new model, and a dated snapshot of it: 1,000 × 100 + 1,000 × 200 = 300,000.
    for name in ["my-model", "my-model-2026-01-01"] {
        let model = pricer.resolve(&ModelRef::new(name)).unwrap();
        assert!(model.known);
        assert_eq!(model.max_output_tokens, 4_096);
        assert_eq!(
            model.cost(&usage(1_000, 0, 1_000), &ctx, now()).unwrap(),
            nanos(300_000)
        );
    }
    // Not overridden: the table.
    assert_eq!(openai(&pricer, "gpt-4o-mini").source, PriceSource::Table);
}

#[test]
fn bad_overrides_are_refused() {
    for (input, output, cached) in [
        (-1.0, 1.0, None),
        (1.0, f64::NAN, None),
        (1.0, 1.0, Some(f64::INFINITY)),
    ] {
        let err = ModelPrice::from_usd_f64(input, output, cached).unwrap_err();
        assert_eq!(err.code(), "invalid_input", "{err}");
    }
    let price = ModelPrice::parse("1", "1", None).unwrap();
    let err = Pricer::new(
        [(" ".to_owned(), price)],
        UnknownModelPolicy::Fallback,
        Arc::new(IgnoreWarnings),
    )
    .unwrap_err();
    assert_eq!(err.code(), "invalid_input");
}

#[test]
fn unknown_models_fall_back_with_one_warning() {
    let sink = Arc::new(CollectWarnings::default());
    let pricer = Pricer::new(
        HashMap::new(),
        UnknownModelPolicy::Fallback,
        sink.clone() as SharedSink,
    )
    .unwrap();
    let model = pricer
        .resolve(&ModelRef::new("mystery-model-9").with_base_url(OPENAI))
        .unwrap();
    assert!(!model.known);
    assert_eq!(model.source, PriceSource::Fallback);
    assert_eq!(model.provider_id.as_deref(), Some("openai"));
    assert_eq!(model.max_output_tokens, 128_000);
    // Never $0: one input token at $30/MTok is 30,000 nano-USD; one output token 150,000.
    let ctx = PriceContext::default();
    assert_eq!(
        model.cost(&usage(1, 0, 0), &ctx, now()).unwrap(),
        nanos(30_000)
    );
    assert_eq!(model.upper_bound(1, 1, &ctx, now()), nanos(180_000));
    assert_eq!(FALLBACK_PRICE.input_per_mtok, nanos(30_000_000_000));
    // Other ways to name it warn no more.
    let _ = pricer.resolve(&ModelRef::new("mystery-model-9")).unwrap();
    let _ = pricer
        .resolve(&ModelRef::new("mystery-model-9").with_provider("openai"))
        .unwrap();
    let warnings = sink.take();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].code, "unknown_model");
    assert!(warnings[0].message.contains("mystery-model-9"));
    // A model priced only per audio hour cannot be metered from tokens: fallback too.
    assert!(
        !pricer
            .resolve(&ModelRef::new("whisper-1").with_base_url(OPENAI))
            .unwrap()
            .known
    );
}

#[test]
fn unknown_models_can_be_blocked() {
    let pricer = Pricer::new(
        HashMap::new(),
        UnknownModelPolicy::Block,
        Arc::new(IgnoreWarnings),
    )
    .unwrap();
    for _ in 0..2 {
        let err = pricer
            .resolve(&ModelRef::new("mystery-model-9").with_provider("openai"))
            .unwrap_err();
        assert_eq!(err.code(), "unknown_model");
        assert!(err.to_string().contains("mystery-model-9"), "{err}");
    }
    assert!(pricer.resolve(&ModelRef::new("gpt-4o")).is_ok());
    assert_eq!(
        pricer.resolve(&ModelRef::new("")).unwrap_err().code(),
        "invalid_input"
    );
}

#[test]
fn malformed_price_data_is_an_error() {
    let bad = [
        "not json",
        "{}",
        r#"[{"name": "x", "api_pattern": "x"}]"#,
        r#"[{"id": "p", "name": "P", "api_pattern": "p", "models": [{"id": "m", "match": {"equals": "m"}, "prices": {"input_mtok": "cheap"}}]}]"#,
        r#"[{"id": "p", "name": "P", "api_pattern": "p", "models": [{"id": "m", "match": {"equals": "m"}, "prices": {"input_mtok": -1}}]}]"#,
        r#"[{"id": "p", "name": "P", "api_pattern": "p", "models": [{"id": "m", "match": {"equals": "m"}, "prices": {"input_mtok": {"base": 1}}}]}]"#,
        r#"[{"id": "p", "name": "P", "api_pattern": "p", "models": [{"id": "m", "match": {"equals": "m"}, "prices": [{"constraint": {"start_date": "2025-13-01"}, "prices": {}}, {"prices": {}}]}]}]"#,
        r#"[{"id": "p", "name": "P", "api_pattern": "p", "models": [{"id": "m", "match": {"equals": "m"}, "prices": [{"constraint": {"start_date": "2025-01-01"}, "prices": {}}]}]}]"#,
        r#"[{"id": "p", "name": "P", "api_pattern": "p", "models": [{"id": "m", "match": {"equals": "m"}, "prices": {}, "price_variants": [{"when": {}, "prices": {}}]}]}]"#,
        r#"[{"id": "p", "name": "P", "api_pattern": "p", "models": [{"id": "m", "match": {"equals": "m"}, "prices": {"input_mtok": 1e400}}]}]"#,
    ];
    for json in bad {
        let err = PriceTable::from_json(json).unwrap_err();
        assert_eq!(err.code(), "price_data", "{json}: {err}");
        assert_eq!(
            PriceData::from_json(json, "test").unwrap_err().code(),
            "price_data",
            "{json}"
        );
    }
    // A small valid file decodes, and a Pricer over it prices from it.
    let good = r#"[{"id": "acme", "name": "Acme", "api_pattern": "https://api\\.acme\\.test",
        "models": [{"id": "rocket", "match": {"equals": "rocket"}, "prices": {"input_mtok": 0.0375, "output_mtok": 1}}]}]"#;
    let data = Arc::new(PriceData::from_json(good, "acme 1").unwrap());
    let pricer = Pricer::with_data(
        data,
        HashMap::new(),
        UnknownModelPolicy::Block,
        Arc::new(IgnoreWarnings),
    )
    .unwrap();
    let model = pricer
        .resolve(&ModelRef::new("rocket").with_base_url("https://api.acme.test/v1"))
        .unwrap();
    assert_eq!(&*model.price_data_version, "acme 1");
    // $0.0375/MTok = 37.5 nano-USD a token: 3 tokens = 112.5, rounded up to 113.
    assert_eq!(
        model
            .cost(&usage(3, 0, 0), &PriceContext::default(), now())
            .unwrap(),
        nanos(113)
    );
}

#[test]
fn inconsistent_usage_is_invalid_input() {
    let model = openai(&pricer(), "gpt-4o-mini");
    let ctx = PriceContext::default();
    for used in [
        usage(10, 11, 0),
        TokenUsage {
            output_tokens: 5,
            reasoning_tokens: 6,
            ..TokenUsage::default()
        },
        TokenUsage {
            input_tokens: 10,
            input_audio_tokens: 5,
            cached_audio_tokens: 6,
            cached_input_tokens: 6,
            ..TokenUsage::default()
        },
    ] {
        assert_eq!(
            model.cost(&used, &ctx, now()).unwrap_err().code(),
            "invalid_input",
            "{used:?}"
        );
    }
    let huge = usage(u64::MAX, 0, u64::MAX);
    assert!(model.cost(&huge, &ctx, now()).is_err());
    assert_eq!(
        model.upper_bound(u64::MAX, u64::MAX, &ctx, now()),
        NanoUsd::MAX
    );
}

#[test]
fn max_output_tokens_come_from_litellm() {
    let pricer = pricer();
    assert_eq!(openai(&pricer, "gpt-4o").max_output_tokens, 16_384);
    assert_eq!(
        openai(&pricer, "gpt-4o-2024-08-06").max_output_tokens,
        16_384
    );
    assert_eq!(openai(&pricer, "o3").max_output_tokens, 100_000);
    assert_eq!(openai(&pricer, "gpt-5").max_output_tokens, 128_000);
    assert_eq!(
        pricer
            .resolve(&ModelRef::new("claude-sonnet-4-5"))
            .unwrap()
            .max_output_tokens,
        64_000
    );
}

/// Usages whose totals are within the bound's `(input, output)`.
fn usages_within(input: u64, output: u64) -> Vec<TokenUsage> {
    let mut out = Vec::new();
    for cached in [0, input / 3, input] {
        for audio in [0, input / 2] {
            // At least the overlap that cached and audio tokens must share.
            let cached_audio = (cached.min(audio) / 2).max((cached + audio).saturating_sub(input));
            for reasoning in [0, output / 2, output] {
                out.push(TokenUsage {
                    input_tokens: input,
                    cached_input_tokens: cached,
                    input_audio_tokens: audio,
                    cached_audio_tokens: cached_audio,
                    output_tokens: output,
                    reasoning_tokens: reasoning,
                    output_audio_tokens: (output - reasoning) / 2,
                    ..TokenUsage::default()
                });
            }
        }
        out.push(TokenUsage {
            cache_write_tokens: input - cached,
            ..usage(input, cached, output)
        });
    }
    out
}

#[test]
fn the_bound_covers_every_cost() {
    let pricer = pricer();
    let models = [
        "gpt-4o-mini",
        "gpt-5",
        "gpt-5.4",
        "o3",
        "gpt-realtime",
        "gpt-6-astra",
        "mystery-model",
    ];
    let contexts = [
        PriceContext::default(),
        tier("flex"),
        tier("priority"),
        PriceContext {
            batch: true,
            ..PriceContext::default()
        },
    ];
    let instants = [
        now(),
        at("2025-06-09T23:58:00Z"),
        at("2026-10-11T23:59:00Z"),
    ];
    for name in models {
        let model = openai(&pricer, name);
        for (input, output) in [
            (0, 0),
            (1, 1),
            (999, 77),
            (272_000, 1_000),
            (272_001, 50_000),
            (1_000_000, 128_000),
        ] {
            for ctx in &contexts {
                for &instant in &instants {
                    let bound = model.upper_bound(input, output, ctx, instant);
                    assert!(
                        !bound.is_zero() || (input, output) == (0, 0),
                        "{name} bound is zero"
                    );
                    for used in usages_within(input, output) {
                        // The bound is taken with the request's tier; the response may report
                        // any tier at or below it (or none).
                        for billed in [
                            ctx.clone(),
                            PriceContext {
                                service_tier: None,
                                ..ctx.clone()
                            },
                        ] {
                            let cost = model.cost(&used, &billed, instant).unwrap();
                            assert!(
                                cost <= bound,
                                "{name} {used:?} {billed:?}: cost {cost} > bound {bound}"
                            );
                        }
                    }
                }
            }
        }
    }
    // Off-peak at reservation, peak at billing, within the horizon.
    let deepseek = pricer
        .resolve(&ModelRef::new("deepseek-chat").with_provider("deepseek"))
        .unwrap();
    let bound = deepseek.upper_bound(
        5_000,
        500,
        &PriceContext::default(),
        at("2026-11-02T00:21:00Z"),
    );
    let cost = deepseek
        .cost(
            &usage(5_000, 0, 500),
            &PriceContext::default(),
            at("2026-11-02T00:30:30Z"),
        )
        .unwrap();
    assert!(cost <= bound);
}

#[test]
fn max_output_within_is_the_largest_that_fits() {
    let pricer = pricer();
    for name in ["gpt-4o-mini", "gpt-5.4", "gpt-realtime", "mystery-model"] {
        let model = openai(&pricer, name);
        for ctx in [PriceContext::default(), tier("priority")] {
            for input in [0, 1_000, 300_000] {
                for amount in [0, 1, 999, 123_456, 10_000_000, 5_000_000_000] {
                    let amount = nanos(amount);
                    match model.max_output_within(input, amount, &ctx, now()) {
                        None => assert!(model.upper_bound(input, 0, &ctx, now()) > amount),
                        Some(max) => {
                            assert!(
                                model.upper_bound(input, max, &ctx, now()) <= amount,
                                "{name} {input} {amount}"
                            );
                            assert!(
                                model.upper_bound(input, max + 1, &ctx, now()) > amount,
                                "{name} {input} {amount}"
                            );
                        }
                    }
                }
            }
        }
    }
    // gpt-4o-mini: $0.01 less 1,000 input tokens × 150 leaves 9,850,000 for output at 600 a
    // token: 16,416 tokens (16,416 × 600 = 9,849,600; one more is 9,850,200).
    let model = openai(&pricer, "gpt-4o-mini");
    assert_eq!(
        model.max_output_within(1_000, nanos(10_000_000), &PriceContext::default(), now()),
        Some(16_416)
    );
    // Free output (an embedding model): no limit from money.
    let embed = openai(&pricer, "text-embedding-3-small");
    assert_eq!(
        embed.max_output_within(10, nanos(1_000), &PriceContext::default(), now()),
        Some(u64::MAX)
    );
}

#[test]
fn resolution_is_cached() {
    // The hot path must not re-run genai-prices matching (tens of µs): a second resolve returns
    // the very same resolved model. Speed itself is measured in bench/, not here.
    let pricer = pricer();
    let model = ModelRef::new("gpt-4o-mini").with_base_url(OPENAI);
    let first = pricer.resolve(&model).unwrap();
    for _ in 0..3 {
        assert!(Arc::ptr_eq(&first, &pricer.resolve(&model).unwrap()));
    }
}

#[test]
fn one_rounding_at_the_end() {
    // deepseek-v4-flash before 2026-08-17: $0.14 in, $0.0028 cached (2.8 nano-USD a token).
    let model = pricer()
        .resolve(&ModelRef::new("deepseek-v4-flash").with_provider("deepseek"))
        .unwrap();
    let when = at("2026-08-01T12:00:00Z");
    let ctx = PriceContext::default();
    // 999 × 140 + 1 × 2.8 = 139,862.8 → 139,863.
    assert_eq!(
        model.cost(&usage(1_000, 1, 0), &ctx, when).unwrap(),
        nanos(139_863)
    );
    // 997 × 140 + 3 × 2.8 = 139,588.4 → 139,589; 995 × 140 + 5 × 2.8 = 139,314 exactly;
    // 993 × 140 + 7 × 2.8 = 139,039.6 → 139,040.
    assert_eq!(
        model.cost(&usage(1_000, 3, 0), &ctx, when).unwrap(),
        nanos(139_589)
    );
    assert_eq!(
        model.cost(&usage(1_000, 5, 0), &ctx, when).unwrap(),
        nanos(139_314)
    );
    assert_eq!(
        model.cost(&usage(1_000, 7, 0), &ctx, when).unwrap(),
        nanos(139_040)
    );
    // From 2026-09-10, peak hours (01:00–04:00 and 06:00–10:00 UTC) cost $0.30 in, off-peak
    // $0.15: 1,000 × 300 = 300,000 and 1,000 × 150 = 150,000.
    assert_eq!(
        model
            .cost(&usage(1_000, 0, 0), &ctx, at("2026-11-02T02:00:00Z"))
            .unwrap(),
        nanos(300_000)
    );
    assert_eq!(
        model
            .cost(&usage(1_000, 0, 0), &ctx, at("2026-11-02T12:00:00Z"))
            .unwrap(),
        nanos(150_000)
    );
}

#[test]
fn shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Pricer>();
    assert_send_sync::<ResolvedModel>();
    assert_send_sync::<PriceData>();
}
