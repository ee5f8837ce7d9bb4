//! Token usage as a provider reports it, and reading it from OpenAI response objects.

use serde_json::Value;

use super::units::{UNIT_COUNT, Unit, UnitMap};
use crate::error::{Error, Result};

/// What a call consumed, in genai-prices' nesting: every count includes its more specific
/// sub-counts. `input_tokens` includes cached, cache-write, audio and image input tokens;
/// `cached_input_tokens` includes cached audio and image tokens; `output_tokens` includes
/// reasoning, audio and image output tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// All input (prompt) tokens.
    pub input_tokens: u64,
    /// Input tokens read from the provider's prompt cache.
    pub cached_input_tokens: u64,
    /// Input tokens written to the prompt cache (all lifetimes).
    pub cache_write_tokens: u64,
    /// The part of `cache_write_tokens` written with a one-hour lifetime.
    pub cache_write_1h_tokens: u64,
    /// Audio input tokens, cached or not.
    pub input_audio_tokens: u64,
    /// Audio input tokens read from the cache (part of both `cached_input_tokens` and
    /// `input_audio_tokens`).
    pub cached_audio_tokens: u64,
    /// Image input tokens, cached or not.
    pub input_image_tokens: u64,
    /// Image input tokens read from the cache.
    pub cached_image_tokens: u64,
    /// All output (completion) tokens.
    pub output_tokens: u64,
    /// Reasoning tokens (part of `output_tokens`).
    pub reasoning_tokens: u64,
    /// Audio output tokens (part of `output_tokens`).
    pub output_audio_tokens: u64,
    /// Image output tokens (part of `output_tokens`).
    pub output_image_tokens: u64,
    /// Web searches run by a built-in search tool.
    pub web_searches: u64,
}

/// The fields of a chat completion's `usage` that are read, in the order
/// [`TokenUsage::from_chat_counts`] takes them (paths below `usage`).
pub const CHAT_USAGE_FIELDS: [&[&str]; 8] = [
    &["prompt_tokens"],
    &["prompt_tokens_details", "cached_tokens"],
    &["prompt_tokens_details", "cache_write_tokens"],
    &["prompt_tokens_details", "audio_tokens"],
    &["prompt_tokens_details", "image_tokens"],
    &["completion_tokens"],
    &["completion_tokens_details", "reasoning_tokens"],
    &["completion_tokens_details", "audio_tokens"],
];

/// A value of a [`CHAT_USAGE_FIELDS`] path as a JavaScript caller read it off the usage object:
/// what it holds decides the count exactly as its JSON text would (`null`, `undefined`, `NaN`
/// and infinities all serialise to `null` or nothing).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CountValue {
    /// `undefined` or `null` (or a parent object that is absent or not an object).
    Absent,
    /// A number.
    Number(f64),
    /// Anything else (a string, a boolean, an object, ...): not a count.
    Other,
}

/// The shape of an OpenAI response's `usage` object. (To be unified with
/// `estimate::Endpoint`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UsageShape {
    /// `/v1/chat/completions`: `prompt_tokens`, `completion_tokens`, `*_tokens_details`.
    Chat,
    /// `/v1/responses`: `input_tokens`, `output_tokens`, `*_tokens_details`.
    Responses,
    /// `/v1/embeddings`: `prompt_tokens`, `total_tokens`.
    Embeddings,
}

impl TokenUsage {
    /// Reads usage from an OpenAI response object (or the final chunk of a stream, which carries
    /// the same `usage` and `service_tier`). Returns the usage and the `service_tier` the
    /// response reports, to price the call at exactly that tier.
    ///
    /// Chat `accepted_prediction_tokens` and `rejected_prediction_tokens` are not read: OpenAI
    /// counts both inside `completion_tokens`, which is what it bills. For `Responses`, each
    /// `web_search_call` item in `output` counts as one web search.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `usage` or a required count is missing, or a count is not a
    /// non-negative integer.
    pub fn from_openai(shape: UsageShape, response: &Value) -> Result<(Self, Option<String>)> {
        let usage = response
            .get("usage")
            .filter(|usage| usage.is_object())
            .ok_or_else(|| Error::invalid("the response has no `usage` object to settle from"))?;
        let service_tier = response
            .get("service_tier")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let read = |path: &[&str]| count(usage, path);
        let need = |path: &[&str]| {
            read(path)?
                .ok_or_else(|| Error::invalid(format!("usage.{} is missing", path.join("."))))
        };
        let tokens = match shape {
            UsageShape::Chat => Self::chat_from(|i| read(CHAT_USAGE_FIELDS[i]))?,
            UsageShape::Responses => Self {
                input_tokens: need(&["input_tokens"])?,
                cached_input_tokens: read(&["input_tokens_details", "cached_tokens"])?.unwrap_or(0),
                cache_write_tokens: read(&["input_tokens_details", "cache_write_tokens"])?
                    .unwrap_or(0),
                output_tokens: need(&["output_tokens"])?,
                reasoning_tokens: read(&["output_tokens_details", "reasoning_tokens"])?
                    .unwrap_or(0),
                web_searches: web_search_calls(response),
                ..Self::default()
            },
            UsageShape::Embeddings => Self {
                input_tokens: match read(&["prompt_tokens"])? {
                    Some(prompt) => prompt,
                    None => need(&["total_tokens"])?,
                },
                ..Self::default()
            },
        };
        Ok((tokens, service_tier))
    }

    /// Chat usage from the values of [`CHAT_USAGE_FIELDS`], as a JavaScript caller read them:
    /// the same result, and the same errors, as [`TokenUsage::from_openai`] of the usage
    /// object's JSON text.
    ///
    /// # Errors
    /// As [`TokenUsage::from_openai`].
    pub fn from_chat_counts(values: &[CountValue; CHAT_USAGE_FIELDS.len()]) -> Result<Self> {
        Self::chat_from(|i| match values[i] {
            CountValue::Absent => Ok(None),
            // JSON has no NaN or infinity: `JSON.stringify` writes `null`.
            CountValue::Number(n) if !n.is_finite() => Ok(None),
            // Exactly the numbers whose JSON text is a u64 (`-0` is written `0`).
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            CountValue::Number(n)
                if n >= 0.0 && n.fract() == 0.0 && n < 18_446_744_073_709_551_616.0 =>
            {
                Ok(Some(n as u64))
            }
            CountValue::Number(n) => Err(Error::invalid(format!(
                "usage.{} must be a non-negative integer, got {n}",
                CHAT_USAGE_FIELDS[i].join(".")
            ))),
            CountValue::Other => Err(Error::invalid(format!(
                "usage.{} must be a non-negative integer",
                CHAT_USAGE_FIELDS[i].join(".")
            ))),
        })
    }

    /// Chat usage from a reader of the [`CHAT_USAGE_FIELDS`] by index: the one place that says
    /// what each field means and which are required.
    fn chat_from(mut read: impl FnMut(usize) -> Result<Option<u64>>) -> Result<Self> {
        // In field order, so the first bad field is the one an error names.
        let mut counts = [0u64; CHAT_USAGE_FIELDS.len()];
        for (i, count) in counts.iter_mut().enumerate() {
            *count = match read(i)? {
                Some(n) => n,
                None if matches!(
                    CHAT_USAGE_FIELDS[i],
                    ["prompt_tokens"] | ["completion_tokens"]
                ) =>
                {
                    return Err(Error::invalid(format!(
                        "usage.{} is missing",
                        CHAT_USAGE_FIELDS[i].join(".")
                    )));
                }
                None => 0,
            };
        }
        let [
            input,
            cached,
            cache_write,
            audio_in,
            image_in,
            output,
            reasoning,
            audio_out,
        ] = counts;
        Ok(Self {
            input_tokens: input,
            cached_input_tokens: cached,
            cache_write_tokens: cache_write,
            input_audio_tokens: audio_in,
            input_image_tokens: image_in,
            output_tokens: output,
            reasoning_tokens: reasoning,
            output_audio_tokens: audio_out,
            ..Self::default()
        })
    }

    /// Checks that sub-counts fit in the counts that include them.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the two counts that disagree.
    pub fn validate(&self) -> Result<()> {
        let within = |part: u64, part_name: &str, whole: u64, whole_name: &str| {
            if part > whole {
                Err(Error::invalid(format!(
                    "inconsistent usage: {part_name} ({part}) exceeds {whole_name} ({whole})"
                )))
            } else {
                Ok(())
            }
        };
        within(
            self.cached_input_tokens,
            "cached_input_tokens",
            self.input_tokens,
            "input_tokens",
        )?;
        within(
            self.cache_write_tokens,
            "cache_write_tokens",
            self.input_tokens,
            "input_tokens",
        )?;
        within(
            self.cached_input_tokens
                .saturating_add(self.cache_write_tokens),
            "cached_input_tokens + cache_write_tokens",
            self.input_tokens,
            "input_tokens",
        )?;
        within(
            self.cache_write_1h_tokens,
            "cache_write_1h_tokens",
            self.cache_write_tokens,
            "cache_write_tokens",
        )?;
        within(
            self.input_audio_tokens,
            "input_audio_tokens",
            self.input_tokens,
            "input_tokens",
        )?;
        within(
            self.input_image_tokens,
            "input_image_tokens",
            self.input_tokens,
            "input_tokens",
        )?;
        within(
            self.cached_audio_tokens,
            "cached_audio_tokens",
            self.cached_input_tokens,
            "cached_input_tokens",
        )?;
        within(
            self.cached_audio_tokens,
            "cached_audio_tokens",
            self.input_audio_tokens,
            "input_audio_tokens",
        )?;
        within(
            self.cached_image_tokens,
            "cached_image_tokens",
            self.cached_input_tokens,
            "cached_input_tokens",
        )?;
        within(
            self.cached_image_tokens,
            "cached_image_tokens",
            self.input_image_tokens,
            "input_image_tokens",
        )?;
        // Cached and audio (or image) tokens overlap in the cached audio (image) tokens only.
        within(
            (self
                .cached_input_tokens
                .saturating_add(self.input_audio_tokens))
            .saturating_sub(self.cached_audio_tokens),
            "cached_input_tokens + input_audio_tokens - cached_audio_tokens",
            self.input_tokens,
            "input_tokens",
        )?;
        within(
            (self
                .cached_input_tokens
                .saturating_add(self.input_image_tokens))
            .saturating_sub(self.cached_image_tokens),
            "cached_input_tokens + input_image_tokens - cached_image_tokens",
            self.input_tokens,
            "input_tokens",
        )?;
        within(
            self.input_audio_tokens
                .saturating_add(self.input_image_tokens),
            "input_audio_tokens + input_image_tokens",
            self.input_tokens,
            "input_tokens",
        )?;
        within(
            self.cached_audio_tokens
                .saturating_add(self.cached_image_tokens),
            "cached_audio_tokens + cached_image_tokens",
            self.cached_input_tokens,
            "cached_input_tokens",
        )?;
        within(
            self.reasoning_tokens
                .saturating_add(self.output_audio_tokens)
                .saturating_add(self.output_image_tokens),
            "reasoning_tokens + output_audio_tokens + output_image_tokens",
            self.output_tokens,
            "output_tokens",
        )?;
        within(
            self.reasoning_tokens,
            "reasoning_tokens",
            self.output_tokens,
            "output_tokens",
        )?;
        within(
            self.output_audio_tokens,
            "output_audio_tokens",
            self.output_tokens,
            "output_tokens",
        )?;
        within(
            self.output_image_tokens,
            "output_image_tokens",
            self.output_tokens,
            "output_tokens",
        )?;
        Ok(())
    }

    /// The counts per metered unit (`requests` is always one call).
    pub(crate) fn by_unit(&self) -> UnitMap<u64> {
        let mut map = [0; UNIT_COUNT];
        map[Unit::Input.index()] = self.input_tokens;
        map[Unit::CacheRead.index()] = self.cached_input_tokens;
        map[Unit::CacheWrite.index()] = self.cache_write_tokens;
        map[Unit::CacheWrite1h.index()] = self.cache_write_1h_tokens;
        map[Unit::InputAudio.index()] = self.input_audio_tokens;
        map[Unit::CacheAudioRead.index()] = self.cached_audio_tokens;
        map[Unit::InputImage.index()] = self.input_image_tokens;
        map[Unit::CacheImageRead.index()] = self.cached_image_tokens;
        map[Unit::Output.index()] = self.output_tokens;
        map[Unit::OutputReasoning.index()] = self.reasoning_tokens;
        map[Unit::OutputAudio.index()] = self.output_audio_tokens;
        map[Unit::OutputImage.index()] = self.output_image_tokens;
        map[Unit::Requests.index()] = 1;
        map[Unit::WebSearches.index()] = self.web_searches;
        map
    }
}

/// The count at `path` in `usage`: `None` when absent or `null`.
fn count(usage: &Value, path: &[&str]) -> Result<Option<u64>> {
    let mut value = usage;
    for key in path {
        match value.get(key) {
            Some(next) if !next.is_null() => value = next,
            _ => return Ok(None),
        }
    }
    value.as_u64().map(Some).ok_or_else(|| {
        Error::invalid(format!(
            "usage.{} must be a non-negative integer, got {value}",
            path.join(".")
        ))
    })
}

fn web_search_calls(response: &Value) -> u64 {
    response
        .get("output")
        .and_then(Value::as_array)
        .map_or(0, |items| {
            let calls = items
                .iter()
                .filter(|item| item.get("type").and_then(Value::as_str) == Some("web_search_call"));
            u64::try_from(calls.count()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    /// What the JS layer does: read each path off the usage object (`undefined` below a parent
    /// that is absent or not an object) and classify the value by its JS type.
    fn as_js_reads(usage: &serde_json::Value) -> [CountValue; CHAT_USAGE_FIELDS.len()] {
        CHAT_USAGE_FIELDS.map(|path| {
            let mut v = Some(usage);
            for key in path {
                v = v.filter(|x| x.is_object()).and_then(|x| x.get(key));
            }
            match v {
                None | Some(serde_json::Value::Null) => CountValue::Absent,
                Some(serde_json::Value::Number(n)) => CountValue::Number(n.as_f64().unwrap()),
                Some(_) => CountValue::Other,
            }
        })
    }

    #[test]
    fn chat_counts_read_like_the_json_text() {
        let corpus = [
            json!({ "prompt_tokens": 31, "completion_tokens": 2, "total_tokens": 33 }),
            json!({
                "prompt_tokens": 1200, "completion_tokens": 300,
                "prompt_tokens_details": { "cached_tokens": 1024, "audio_tokens": 0, "cache_write_tokens": 10, "image_tokens": 5 },
                "completion_tokens_details": { "reasoning_tokens": 200, "audio_tokens": 7, "accepted_prediction_tokens": 1, "rejected_prediction_tokens": 2 }
            }),
            json!({ "prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": null, "completion_tokens_details": { "reasoning_tokens": null } }),
            json!({ "prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": 7, "completion_tokens_details": "x" }),
            json!({ "prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": [1, 2] }),
            json!({ "prompt_tokens": 1_152_921_504_606_846_976_u64, "completion_tokens": 0 }),
            json!({ "prompt_tokens": 0, "completion_tokens": 0 }),
            json!({ "prompt_tokens": 1.5, "completion_tokens": 1 }),
            json!({ "prompt_tokens": -1, "completion_tokens": 1 }),
            json!({ "prompt_tokens": "5", "completion_tokens": 1 }),
            json!({ "prompt_tokens": 5, "completion_tokens": true }),
            json!({ "prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": { "cached_tokens": 2.5 } }),
            json!({ "prompt_tokens": 5, "completion_tokens": 1, "completion_tokens_details": { "audio_tokens": {} } }),
            json!({ "prompt_tokens": 5 }),
            json!({ "completion_tokens": 5 }),
            json!({ "prompt_tokens": null, "completion_tokens": 5 }),
            json!({ "prompt_tokens": 1e300, "completion_tokens": 5 }),
            json!({}),
        ];
        for usage in corpus {
            let from_json = TokenUsage::from_openai(UsageShape::Chat, &json!({ "usage": usage }))
                .map(|(u, _)| u)
                .map_err(|e| e.to_string());
            let from_counts =
                TokenUsage::from_chat_counts(&as_js_reads(&usage)).map_err(|e| e.to_string());
            match (&from_json, &from_counts) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{usage}"),
                (Err(a), Err(b)) => {
                    // The same field is named (the JSON text's message also quotes the value).
                    let field = |m: &str| m.split_whitespace().next().unwrap_or("").to_owned();
                    assert_eq!(field(a), field(b), "{usage}: {a} / {b}");
                }
                _ => panic!("{usage}: {from_json:?} vs {from_counts:?}"),
            }
        }
        // What JSON cannot hold reads as JSON.stringify writes it: NaN and infinities as null,
        // -0 as 0.
        let mut reads = as_js_reads(&json!({ "prompt_tokens": 3, "completion_tokens": 1 }));
        reads[1] = CountValue::Number(f64::NAN);
        reads[6] = CountValue::Number(f64::INFINITY);
        reads[5] = CountValue::Number(-0.0);
        let u = TokenUsage::from_chat_counts(&reads).unwrap();
        assert_eq!(
            (
                u.input_tokens,
                u.cached_input_tokens,
                u.output_tokens,
                u.reasoning_tokens
            ),
            (3, 0, 0, 0)
        );
    }

    use super::*;

    #[test]
    fn reads_chat_usage() {
        let response = json!({
            "object": "chat.completion",
            "service_tier": "default",
            "usage": {
                "prompt_tokens": 1000, "completion_tokens": 300, "total_tokens": 1300,
                "prompt_tokens_details": {"cached_tokens": 400, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 200, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
                }
            }
        });
        let (usage, tier) = TokenUsage::from_openai(UsageShape::Chat, &response).unwrap();
        assert_eq!(tier.as_deref(), Some("default"));
        assert_eq!(
            usage,
            TokenUsage {
                input_tokens: 1000,
                cached_input_tokens: 400,
                output_tokens: 300,
                reasoning_tokens: 200,
                ..TokenUsage::default()
            }
        );
    }

    #[test]
    fn reads_responses_usage_and_searches() {
        let response = json!({
            "object": "response",
            "service_tier": "flex",
            "output": [{"type": "web_search_call"}, {"type": "message"}, {"type": "web_search_call"}],
            "usage": {
                "input_tokens": 50, "output_tokens": 70, "total_tokens": 120,
                "input_tokens_details": {"cached_tokens": 10},
                "output_tokens_details": {"reasoning_tokens": 64}
            }
        });
        let (usage, tier) = TokenUsage::from_openai(UsageShape::Responses, &response).unwrap();
        assert_eq!(tier.as_deref(), Some("flex"));
        assert_eq!(
            usage,
            TokenUsage {
                input_tokens: 50,
                cached_input_tokens: 10,
                output_tokens: 70,
                reasoning_tokens: 64,
                web_searches: 2,
                ..TokenUsage::default()
            }
        );
    }

    #[test]
    fn reads_embeddings_usage() {
        let response = json!({"object": "list", "usage": {"prompt_tokens": 8, "total_tokens": 8}});
        let (usage, tier) = TokenUsage::from_openai(UsageShape::Embeddings, &response).unwrap();
        assert_eq!(tier, None);
        assert_eq!(
            usage,
            TokenUsage {
                input_tokens: 8,
                ..TokenUsage::default()
            }
        );
        let only_total = json!({"usage": {"total_tokens": 9}});
        assert_eq!(
            TokenUsage::from_openai(UsageShape::Embeddings, &only_total)
                .unwrap()
                .0
                .input_tokens,
            9
        );
    }

    #[test]
    fn rejects_malformed_usage() {
        for response in [
            json!({}),
            json!({"usage": null}),
            json!({"usage": {"completion_tokens": 1}}),
            json!({"usage": {"prompt_tokens": -1, "completion_tokens": 1}}),
            json!({"usage": {"prompt_tokens": 1.5, "completion_tokens": 1}}),
            json!({"usage": {"prompt_tokens": 1, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": "2"}}}),
        ] {
            let err = TokenUsage::from_openai(UsageShape::Chat, &response).unwrap_err();
            assert_eq!(err.code(), "invalid_input", "{response}");
        }
    }

    #[test]
    fn validates_nesting() {
        let ok = TokenUsage {
            input_tokens: 10,
            cached_input_tokens: 10,
            output_tokens: 5,
            ..TokenUsage::default()
        };
        assert!(ok.validate().is_ok());
        let bad = TokenUsage {
            input_tokens: 10,
            cached_input_tokens: 11,
            ..TokenUsage::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("cached_input_tokens (11)")
        );
        let bad = TokenUsage {
            output_tokens: 1,
            reasoning_tokens: 2,
            ..TokenUsage::default()
        };
        assert!(bad.validate().is_err());
        // All input cached, but only part of the audio input: contradictory.
        let bad = TokenUsage {
            input_tokens: 10,
            cached_input_tokens: 10,
            input_audio_tokens: 4,
            cached_audio_tokens: 2,
            ..TokenUsage::default()
        };
        assert!(bad.validate().is_err());
        let ok = TokenUsage {
            cached_audio_tokens: 4,
            ..bad
        };
        assert!(ok.validate().is_ok());
    }
}
