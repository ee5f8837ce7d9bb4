//! The common chat request estimated straight from its JSON text.
//!
//! Building a `serde_json::Value` tree (a `BTreeMap` per object, a `String` per key and text)
//! and dropping it again was a third of an admission's time on the caller's thread. Most chat
//! bodies are plain: `model`, text messages and a few sampling options. This reads exactly those
//! into borrowed fields and counts them the way [`super::chat::walk`] would. Anything else (an
//! unknown or repeated key, content parts, tools, a value of the wrong type, a limit out of
//! range) gives `None` and the caller takes the full path, which also words any error, so the
//! result is always the one [`super::estimate`] gives.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::tally::{REPLY_PRIMING, REQUEST_MARGIN, Tally};
use super::{RequestEstimate, encoding_for_model, max_limit};

/// A chat completion body with only what the fast path understands. `deny_unknown_fields`
/// sends every other key to the full path; the ignored keys are ones `chat::walk` never reads.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // the ignored keys are accepted, never read
struct Chat<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    messages: Vec<Message<'a>>,
    max_completion_tokens: Option<u64>,
    max_tokens: Option<u64>,
    n: Option<u64>,
    stream: Option<bool>,
    #[serde(borrow)]
    service_tier: Option<Cow<'a, str>>,
    // Read by the provider, never by the estimate.
    stream_options: Option<IgnoredAny>,
    temperature: Option<IgnoredAny>,
    top_p: Option<IgnoredAny>,
    frequency_penalty: Option<IgnoredAny>,
    presence_penalty: Option<IgnoredAny>,
    seed: Option<IgnoredAny>,
    stop: Option<IgnoredAny>,
    user: Option<IgnoredAny>,
    logprobs: Option<IgnoredAny>,
    top_logprobs: Option<IgnoredAny>,
    logit_bias: Option<IgnoredAny>,
    metadata: Option<IgnoredAny>,
    store: Option<IgnoredAny>,
    reasoning_effort: Option<IgnoredAny>,
    verbosity: Option<IgnoredAny>,
    safety_identifier: Option<IgnoredAny>,
    prompt_cache_key: Option<IgnoredAny>,
}

/// A text message: the only kind the fast path counts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Message<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    /// A string or `null`; content parts go to the full path.
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

/// The estimate of a chat completion body, if it is plain enough for the fast path; `None`
/// means "use [`super::estimate_json`]", never that the body is invalid.
pub(crate) fn chat(json: &str) -> Option<RequestEstimate> {
    let body: Chat<'_> = serde_json::from_str(json).ok()?;
    let model = body.model.as_ref();
    if model.trim().is_empty() {
        return None;
    }
    let choices = match body.n {
        None => 1,
        Some(n @ 1..=128) => u32::try_from(n).ok()?,
        Some(_) => return None,
    };
    let encoding = encoding_for_model(model);
    let mut t = Tally::new(model, encoding);
    for m in &body.messages {
        t.message(&m.role);
        if let Some(content) = &m.content {
            t.text(content);
        }
        if let Some(name) = &m.name {
            t.name(name);
        }
    }
    t.text += REPLY_PRIMING + REQUEST_MARGIN;
    t.finish();
    let output_limit = max_limit(body.max_completion_tokens, body.max_tokens);
    let n = u64::from(choices);
    Some(RequestEstimate {
        model: model.to_owned(),
        encoding,
        input_tokens: t.text + t.image_tokens + t.audio_tokens + t.file_tokens,
        image_tokens: t.image_tokens,
        audio_tokens: t.audio_tokens,
        file_tokens: t.file_tokens,
        output_tokens: output_limit.map(|limit| limit.saturating_mul(n)),
        prediction_tokens: 0,
        choices,
        stream: body.stream.unwrap_or(false),
        service_tier: body.service_tier.map(Cow::into_owned),
        audio_output: false,
        images: t.images,
        unbounded_context: t.unbounded_context,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::chat;
    use crate::estimate::{Endpoint, estimate};

    /// Whatever the fast path answers equals the full path; `Some` exactly when `fast` is true.
    fn same(body: &Value, fast: bool) {
        let text = body.to_string();
        let quick = chat(&text);
        assert_eq!(quick.is_some(), fast, "fast path taken? {text}");
        if let Some(quick) = quick {
            assert_eq!(
                Some(quick),
                estimate(Endpoint::ChatCompletions, body).ok(),
                "{text}"
            );
        }
    }

    #[test]
    fn plain_chat_bodies_match_the_full_estimate() {
        let long = "The quick brown fox jumps over the lazy dog. ".repeat(200);
        for body in [
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}),
            json!({"model": "gpt-4o-mini", "messages": [
                {"role": "system", "content": "You are a helpful assistant that answers briefly."},
                {"role": "user", "content": "What is the capital of France? Answer in one word.", "name": "ann"},
                {"role": "assistant", "content": null},
                {"role": "user", "content": long},
            ], "max_completion_tokens": 64, "temperature": 0.2, "stream": true,
               "stream_options": {"include_usage": true}, "n": 3, "service_tier": "flex",
               "user": "u1", "seed": 7, "stop": ["\n"], "metadata": {"a": "b"}}),
            json!({"model": "gpt-4", "messages": [], "max_tokens": 10, "max_completion_tokens": 20}),
            json!({"model": "some-unknown-model", "messages": [{"role": "user", "content": "héllo \"wörld\"\n\u{1F600}"}]}),
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "n": null,
                   "max_tokens": null, "stream": null, "service_tier": null}),
        ] {
            same(&body, true);
        }
    }

    #[test]
    fn anything_else_takes_the_full_path() {
        for body in [
            // Shapes the fast path does not count.
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "tools": []}),
            json!({"model": "gpt-4o", "messages": [{"role": "assistant", "content": "hi", "refusal": null}]}),
            json!({"model": "gpt-4o", "messages": [{"role": "tool", "content": "1", "tool_call_id": "c1"}]}),
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "prediction": {"content": "x"}}),
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "modalities": ["audio"]}),
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "web_search_options": {}}),
            // Invalid bodies: the full path words the error.
            json!({"model": " ", "messages": []}),
            json!({"model": 4, "messages": []}),
            json!({"messages": []}),
            json!({"model": "gpt-4o"}),
            json!({"model": "gpt-4o", "messages": [{"content": "hi"}]}),
            json!({"model": "gpt-4o", "messages": [], "n": 0}),
            json!({"model": "gpt-4o", "messages": [], "n": 129}),
            json!({"model": "gpt-4o", "messages": [], "max_tokens": -1}),
            json!({"model": "gpt-4o", "messages": [], "max_tokens": 1.5}),
            json!({"model": "gpt-4o", "messages": [], "stream": "yes"}),
            json!({"model": "gpt-4o", "messages": [], "service_tier": 1}),
        ] {
            same(&body, false);
        }
        // A repeated key (the full path keeps the last one), and text that is not JSON.
        assert!(chat(r#"{"model":"gpt-4o","model":"gpt-4","messages":[]}"#).is_none());
        assert!(chat(r#"{"model":"gpt-4o","messages":[]"#).is_none());
    }

    /// Bodies as text (numbers spelled as a client might): whenever the fast path answers, the
    /// full path reads the same text to the same estimate.
    #[test]
    fn numbers_are_read_alike() {
        for limit in [
            "0",
            "-0",
            "64",
            "64.0",
            "1e2",
            "-1",
            "18446744073709551615",
            "18446744073709551616",
        ] {
            for key in ["max_tokens", "max_completion_tokens", "n"] {
                let text = format!(
                    r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"hi"}}],"{key}":{limit}}}"#
                );
                if let Some(quick) = chat(&text) {
                    let full: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(
                        Some(quick),
                        estimate(Endpoint::ChatCompletions, &full).ok(),
                        "{text}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_chat_corpus_matches_the_full_estimate() {
        let corpus: Vec<Value> =
            serde_json::from_str(include_str!("../../tests/fixtures/estimate-corpus.json"))
                .unwrap();
        let mut fast = 0;
        for entry in corpus.iter().filter(|e| e["endpoint"] == "chat") {
            let body = &entry["body"];
            if let Some(quick) = chat(&body.to_string()) {
                fast += 1;
                let full = estimate(Endpoint::ChatCompletions, body).unwrap();
                assert_eq!(quick, full, "{}", entry["name"]);
            }
        }
        assert!(fast >= 5, "only {fast} corpus requests took the fast path");
    }
}
