//! The reservation protocol end to end in Rust: estimate → price → reserve before dispatch,
//! settle to the real usage afterwards through the background reporter.

use std::sync::Arc;

use bursora_core::Error;
use bursora_core::budget::Tags;
use bursora_core::clock::ManualClock;
use bursora_core::estimate::Endpoint;
use bursora_core::guard::{CallEnding, Guard, GuardOptions};
use serde_json::json;

/// 2026-11-25T12:00:00Z.
const NOON: i64 = 1_795_608_000_000;

fn guard(options: serde_json::Value) -> Guard {
    let options = GuardOptions::from_json(&options.to_string()).unwrap();
    Guard::with_clock(&options, Arc::new(ManualClock::new(NOON))).unwrap()
}

fn chat(max_tokens: u64) -> serde_json::Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}], "max_completion_tokens": max_tokens})
}

fn spent_nanos(g: &Guard, name: &str) -> (i64, i64) {
    let s = g.spend().unwrap();
    let row = s.iter().find(|s| s.budget.spec.name == name).unwrap();
    (row.spent.nanos(), row.reserved.nanos())
}

#[test]
fn admitted_calls_settle_to_the_exact_cost_of_their_usage() {
    let g = guard(json!({"budgets": [{"name": "day", "limitUsd": 1, "window": "day"}]}));
    let a = g
        .admit(
            Endpoint::ChatCompletions,
            &chat(100),
            &Tags::default(),
            None,
            Some("https://api.openai.com/v1"),
        )
        .unwrap();
    // Upper bound: ≥ 100 output tokens at $0.60/MTok plus the prompt at $0.15/MTok.
    assert!(a.reserved.nanos() >= 100 * 600 + a.input_tokens as i64 * 150);
    assert_eq!(spent_nanos(&g, "day"), (0, a.reserved.nanos()));
    // 12 prompt tokens of which 4 cached, 30 completion tokens:
    // 8 × 150 + 4 × 75 + 30 × 600 = 1,200 + 300 + 18,000 = 19,500 nano-USD.
    let response = json!({"usage": {"prompt_tokens": 12, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 4}}});
    g.finish(&a.id, CallEnding::Response(&response));
    assert_eq!(spent_nanos(&g, "day"), (19_500, 0));
    // A second finish of the same call is ignored.
    g.finish(&a.id, CallEnding::Response(&response));
    assert_eq!(spent_nanos(&g, "day"), (19_500, 0));
}

#[test]
fn a_response_handed_over_as_json_settles_like_the_parsed_response() {
    let g = guard(json!({"budgets": [{"name": "day", "limitUsd": 1, "window": "day"}]}));
    let admit = || {
        g.admit(
            Endpoint::ChatCompletions,
            &chat(100),
            &Tags::default(),
            None,
            None,
        )
        .unwrap()
    };
    // The same usage as above, as text read on the reporter thread: 19,500 nano-USD exactly.
    let a = admit();
    let response = r#"{"usage": {"prompt_tokens": 12, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 4}}, "service_tier": "default"}"#;
    g.finish(&a.id, CallEnding::ResponseJson(response.to_owned()));
    assert_eq!(spent_nanos(&g, "day"), (19_500, 0));
    // Text that is not JSON, or JSON without usage, settles at the reservation.
    let broken = admit();
    g.finish(
        &broken.id,
        CallEnding::ResponseJson("{\"usage\": ".to_owned()),
    );
    assert_eq!(
        spent_nanos(&g, "day"),
        (19_500 + broken.reserved.nanos(), 0)
    );
    let empty = admit();
    g.finish(&empty.id, CallEnding::ResponseJson("{}".to_owned()));
    assert_eq!(
        spent_nanos(&g, "day"),
        (19_500 + broken.reserved.nanos() + empty.reserved.nanos(), 0)
    );
}

#[test]
fn refused_calls_name_the_budget_and_reserve_nothing() {
    let g = guard(json!({"budgets": [
        {"name": "org", "limitUsd": 10, "window": "month"},
        {"name": "tenant", "match": {"tenant_id": "*"}, "limitUsd": 0.0001, "window": "day"}
    ]}));
    let acme = Tags::new([("tenant_id", "acme")]).unwrap();
    let e = g
        .admit(Endpoint::ChatCompletions, &chat(1_000), &acme, None, None)
        .unwrap_err();
    let Error::BudgetExceeded(x) = e else {
        panic!("expected a refusal")
    };
    assert_eq!(
        (x.name.as_str(), x.key.as_deref()),
        ("tenant", Some("tenant_id=acme"))
    );
    assert!(
        g.spend()
            .unwrap()
            .iter()
            .all(|s| s.reserved.is_zero() && s.spent.is_zero())
    );
    // Another tenant has its own counter; a small call fits.
    let globex = Tags::new([("tenant_id", "globex")]).unwrap();
    assert!(
        g.admit(Endpoint::ChatCompletions, &chat(50), &globex, None, None)
            .is_ok()
    );
}

#[test]
fn fit_policy_caps_output_to_the_headroom() {
    let g = guard(
        json!({"policy": "fit", "budgets": [{"name": "cap", "limitUsd": 0.001, "window": "total"}]}),
    );
    let a = g
        .admit(
            Endpoint::ChatCompletions,
            &chat(100_000),
            &Tags::default(),
            None,
            None,
        )
        .unwrap();
    assert!(a.capped);
    assert!(a.reserved.nanos() <= 1_000_000);
    let max = a.max_output_tokens.unwrap();
    // $0.001 less the prompt, at 600 nano-USD per output token: at most 1,666 tokens.
    assert!(max > 1_000 && max <= 1_666, "{max}");
    // The next call finds no headroom left at all and is refused.
    assert!(
        g.admit(
            Endpoint::ChatCompletions,
            &chat(100_000),
            &Tags::default(),
            None,
            None
        )
        .is_err()
    );
}

#[test]
fn streams_cut_short_settle_input_plus_output_seen() {
    let g = guard(json!({"budgets": [{"name": "cap", "limitUsd": 1, "window": "total"}]}));
    let a = g
        .admit(
            Endpoint::ChatCompletions,
            &chat(500),
            &Tags::default(),
            None,
            None,
        )
        .unwrap();
    g.finish(&a.id, CallEnding::Partial("Hello there, friend"));
    // "Hello there, friend" is 4 tokens in o200k_base.
    assert_eq!(
        spent_nanos(&g, "cap").0,
        a.input_tokens as i64 * 150 + 4 * 600
    );
}

#[test]
fn failed_calls_release_and_unknown_outcomes_keep_the_reservation() {
    let g = guard(json!({"budgets": [{"name": "cap", "limitUsd": 1, "window": "total"}]}));
    let failed = g
        .admit(
            Endpoint::ChatCompletions,
            &chat(500),
            &Tags::default(),
            None,
            None,
        )
        .unwrap();
    g.finish(&failed.id, CallEnding::Failed);
    assert_eq!(spent_nanos(&g, "cap"), (0, 0));
    let lost = g
        .admit(
            Endpoint::ChatCompletions,
            &chat(500),
            &Tags::default(),
            None,
            None,
        )
        .unwrap();
    g.finish(&lost.id, CallEnding::Unknown);
    assert_eq!(spent_nanos(&g, "cap"), (lost.reserved.nanos(), 0));
}

#[test]
fn unknown_models_fall_back_with_one_warning_or_are_refused() {
    let body = json!({"model": "mystery-model-9", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10});
    let g = guard(json!({"budgets": []}));
    let a = g
        .admit(
            Endpoint::ChatCompletions,
            &body,
            &Tags::default(),
            None,
            None,
        )
        .unwrap();
    assert!(a.reserved.nanos() > 0, "never $0");
    g.admit(
        Endpoint::ChatCompletions,
        &body,
        &Tags::default(),
        None,
        None,
    )
    .unwrap();
    let w = g.take_warnings();
    assert_eq!(
        w.iter().filter(|w| w.code == "unknown_model").count(),
        1,
        "{w:?}"
    );

    let strict = guard(json!({"unknownModel": "block"}));
    let e = strict
        .admit(
            Endpoint::ChatCompletions,
            &body,
            &Tags::default(),
            None,
            None,
        )
        .unwrap_err();
    assert_eq!(e.code(), "unknown_model");
}

#[test]
fn bad_options_are_config_errors() {
    for bad in [
        json!({"budgets": [{"name": "x", "limitUsd": -1, "window": "day"}]}),
        json!({"budgets": [{"name": "x", "limitUsd": 1, "window": "fortnight"}]}),
        json!({"budgets": [{"name": "x", "limitUsd": 1, "window": "day", "mode": "shout"}]}),
        json!({"budgets": [{"name": "x", "limitUsd": 1, "window": "day"}, {"name": "x", "limitUsd": 2, "window": "day"}]}),
        json!({"unknownModel": "maybe"}),
        json!({"policy": "sometimes"}),
        json!({"prices": {"m": {"inputPerMTok": -1, "outputPerMTok": 1}}}),
        json!({"bogus": true}),
    ] {
        let err = GuardOptions::from_json(&bad.to_string())
            .and_then(|o| Guard::new(&o))
            .unwrap_err();
        assert_eq!(err.code(), "config", "{bad}: {err}");
    }
}

#[test]
fn a_changed_limit_in_a_shared_file_is_announced() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db").to_string_lossy().into_owned();
    let first =
        guard(json!({"db": db, "budgets": [{"name": "day", "limitUsd": 5, "window": "day"}]}));
    assert!(first.take_warnings().is_empty());
    let second =
        guard(json!({"db": db, "budgets": [{"name": "day", "limitUsd": 10, "window": "day"}]}));
    let w = second.take_warnings();
    assert!(
        w.iter()
            .any(|w| w.code == "budget_changed" && w.message.contains("$10")),
        "{w:?}"
    );
}

#[test]
fn malformed_bodies_are_invalid_input() {
    let g = guard(json!({}));
    for body in [
        json!([]),
        json!({"messages": []}),
        json!({"model": "gpt-4o-mini", "messages": "hi"}),
    ] {
        let e = g
            .admit(
                Endpoint::ChatCompletions,
                &body,
                &Tags::default(),
                None,
                None,
            )
            .unwrap_err();
        assert_eq!(e.code(), "invalid_input", "{body}");
    }
}

#[test]
fn openai_models_behind_a_gateway_url_are_priced_as_openai() {
    let g = guard(json!({}));
    let body = json!({"model": "text-embedding-3-small", "input": "hello"});
    g.admit(
        Endpoint::Embeddings,
        &body,
        &Tags::default(),
        None,
        Some("http://127.0.0.1:9999/v1"),
    )
    .unwrap();
    assert!(g.take_warnings().iter().all(|w| w.code != "unknown_model"));
}

#[test]
fn a_sequential_caller_is_not_refused_for_its_previous_calls_queued_settlement() {
    // Room for one worst case (1,000 output tokens ≈ $0.0006) but not two.
    let g = guard(json!({"budgets": [{"name": "cap", "limitUsd": 0.001, "window": "total"}]}));
    for _ in 0..20 {
        let a = g
            .admit(
                Endpoint::ChatCompletions,
                &chat(1_000),
                &Tags::default(),
                None,
                None,
            )
            .unwrap();
        // The call used almost nothing; its settlement is queued for the background reporter.
        let response = json!({"usage": {"prompt_tokens": 10, "completion_tokens": 1}});
        g.finish(&a.id, CallEnding::Response(&response));
    }
    let (spent, reserved) = spent_nanos(&g, "cap");
    assert_eq!((spent, reserved), (20 * (10 * 150 + 600), 0));
}

#[test]
fn a_settlement_wakes_a_parked_reporter_without_a_flush() {
    let g = guard(json!({"budgets": [{"name": "day", "limitUsd": 1, "window": "day"}]}));
    let ledger = g.ledger().unwrap().clone();
    let spent = || {
        ledger
            .status()
            .unwrap()
            .iter()
            .find(|s| s.budget.spec.name == "day")
            .map(|s| s.spent.nanos())
            .unwrap()
    };
    for round in 1..=3_i64 {
        // Long enough for the reporter to stop polling and park.
        std::thread::sleep(std::time::Duration::from_millis(30));
        let a = g
            .admit(
                Endpoint::ChatCompletions,
                &chat(100),
                &Tags::default(),
                None,
                None,
            )
            .unwrap();
        let response = json!({"usage": {"prompt_tokens": 12, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 4}}});
        g.finish(&a.id, CallEnding::Response(&response));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while spent() != round * 19_500 {
            assert!(
                std::time::Instant::now() < deadline,
                "settlement {round} was never applied"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}
