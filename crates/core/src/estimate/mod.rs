//! Upper bounds of a request's tokens, computed before dispatch (SPEC §2.1).
//!
//! [`estimate`] walks an OpenAI request body once and returns a [`RequestEstimate`]: the input
//! tokens it can be billed for (text counted with the model's tokenizer, message framing, tool
//! schemas, images and audio at their worst case) and the output it may produce. Every choice
//! here rounds towards more tokens, by as little as the evidence allows: a reservation that is
//! too small lets a call overrun its budget, one that is too large refuses calls that would fit.
//!
//! Where the numbers come from:
//! - Text: `o200k_base`/`cl100k_base` via `bpe-openai`, identical to `tiktoken`.
//! - Message framing: OpenAI's cookbook "How to count tokens with tiktoken" (3 per message,
//!   1 per `name`, 3 to prime the reply) plus the small margins documented in `tally.rs`.
//! - Tools: an upper bound of the TypeScript-like rendering OpenAI gives the model, never below
//!   the cookbook's `num_tokens_for_tools` (constants in `tally.rs`).
//! - Images, audio, files: the worst cases documented in `media.rs`.
//!
//! What a request cannot tell us is flagged, never guessed:
//! [`RequestEstimate::unbounded_context`].

mod chat;
mod content;
mod embeddings;
mod fast;
mod media;
mod pieces;
mod responses;
mod tally;
mod tokenizer;

use serde_json::{Map, Value};

pub use tokenizer::{Encoding, clear_count_cache, count_tokens, encoding_for_model, preload};

use crate::error::{Error, Result};
use tally::Tally;

/// The OpenAI endpoint a request body is meant for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/responses`.
    Responses,
    /// `POST /v1/embeddings`.
    Embeddings,
}

/// Upper bounds of what one request can be billed for, in tokens.
///
/// `input_tokens` is the total; `image_tokens`, `audio_tokens` and `file_tokens` are the parts
/// of it that are worst cases by design (and audio is priced apart by most models).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestEstimate {
    /// The `model` of the request, as given.
    pub model: String,
    /// The vocabulary text was counted with. [`Encoding::Conservative`] means the model was not
    /// recognised: the count bounds both OpenAI vocabularies but is only an approximation for a
    /// non-OpenAI tokenizer, which the caller may want to cover with a margin of its own.
    pub encoding: Encoding,
    /// All input tokens: text, framing, tools and the media parts below.
    pub input_tokens: u64,
    /// Of `input_tokens`: images at their worst case for the model and `detail`.
    pub image_tokens: u64,
    /// Of `input_tokens`: audio input, bounded from the size of the base64 data.
    pub audio_tokens: u64,
    /// Of `input_tokens`: inline files, by a size heuristic (files also set
    /// `unbounded_context`).
    pub file_tokens: u64,
    /// The output the request allows: its explicit limit (`max_completion_tokens`, else
    /// `max_tokens`, or `max_output_tokens`) × `choices`, plus predicted-output tokens ×
    /// `choices`. `None` when the request sets no limit: use [`Self::output_bound`] with the
    /// model's maximum.
    pub output_tokens: Option<u64>,
    /// Of the output: tokens of the `prediction` content, × `choices`. Predicted tokens that the
    /// model rejects are billed as output on top of what it writes.
    pub prediction_tokens: u64,
    /// `n`: how many choices are generated (1 unless the request says otherwise).
    pub choices: u32,
    /// The request asks for a stream.
    pub stream: bool,
    /// The `service_tier` asked for, if any (`"flex"`, `"priority"`, ...), which selects prices.
    pub service_tier: Option<String>,
    /// The request asks for audio output (`modalities` includes `"audio"`), priced apart.
    pub audio_output: bool,
    /// Number of images in the input.
    pub images: u32,
    /// The request makes the provider bill input that the request does not contain, so no
    /// count of it is an upper bound: `previous_response_id`, `conversation`, a stored `prompt`,
    /// item references, files (their pages become text and images), previous audio by id, and
    /// hosted tools that feed results back to the model (web search, file search, code
    /// interpreter, MCP, image generation). The only sound bound on input is then the model's
    /// context window; the caller decides whether to reserve that or to refuse.
    pub unbounded_context: bool,
}

impl RequestEstimate {
    /// Upper bound of the output tokens: [`Self::output_tokens`] when the request set a limit,
    /// else `model_max_output` × `choices` plus predicted-output tokens. Saturates at `u64::MAX`.
    #[must_use]
    pub fn output_bound(&self, model_max_output: u64) -> u64 {
        self.output_tokens.unwrap_or_else(|| {
            model_max_output
                .saturating_mul(u64::from(self.choices))
                .saturating_add(self.prediction_tokens)
        })
    }
}

/// Estimates the tokens of one OpenAI request `body` for `endpoint`.
///
/// Walks the body once. Texts are counted exactly with the model's vocabulary; a prompt with
/// more than 1 MiB of text (512 KiB for an unknown model, counted with both vocabularies) is cut
/// at places where the count cannot change and counted on up to four scoped threads, joined
/// before this returns.
///
/// # Errors
/// [`Error::InvalidInput`] when the body is not a request of that endpoint: no `model` string,
/// `messages`/`input` of the wrong shape, a limit that is not a non-negative integer, a value
/// nested deeper than 128 levels. The message names the field and what it should be.
pub fn estimate(endpoint: Endpoint, body: &Value) -> Result<RequestEstimate> {
    let Value::Object(body) = body else {
        return Err(Error::invalid(format!(
            "request body must be a JSON object, not {}; pass the body you would send to OpenAI",
            kind(body)
        )));
    };
    let model = model(body)?;
    let encoding = encoding_for_model(model);
    let mut tally = Tally::new(model, encoding);
    let request = match endpoint {
        Endpoint::ChatCompletions => chat::walk(body, &mut tally)?,
        Endpoint::Responses => responses::walk(body, &mut tally)?,
        Endpoint::Embeddings => embeddings::walk(body, &mut tally)?,
    };
    tally.finish();
    let choices = request.choices;
    let n = u64::from(choices);
    let prediction_tokens = request.prediction.saturating_mul(n);
    Ok(RequestEstimate {
        model: model.to_owned(),
        encoding,
        input_tokens: tally.text + tally.image_tokens + tally.audio_tokens + tally.file_tokens,
        image_tokens: tally.image_tokens,
        audio_tokens: tally.audio_tokens,
        file_tokens: tally.file_tokens,
        output_tokens: request
            .output_limit
            .map(|limit| limit.saturating_mul(n).saturating_add(prediction_tokens)),
        prediction_tokens,
        choices,
        stream: request.stream,
        service_tier: request.service_tier,
        audio_output: request.audio_output,
        images: tally.images,
        unbounded_context: tally.unbounded_context,
    })
}

/// [`estimate`] of a body given as JSON text (what the N-API layer receives).
///
/// # Errors
/// [`Error::InvalidInput`] when `body` is not valid JSON, and as for [`estimate`].
pub fn estimate_json(endpoint: Endpoint, body: &str) -> Result<RequestEstimate> {
    if let Some(est) = estimate_plain(endpoint, body) {
        return Ok(est);
    }
    let value: Value = serde_json::from_str(body).map_err(|e| {
        Error::invalid(format!(
            "request body is not valid JSON ({e}); pass the exact JSON text of the request body"
        ))
    })?;
    estimate(endpoint, &value)
}

/// [`estimate_json`] of a plain chat completion body (text messages, sampling options), read
/// without building a `Value` tree; `None` for any other body or endpoint, which
/// [`estimate`] then reads (and, if it is invalid, explains). When it answers, the answer is
/// [`estimate`]'s.
#[must_use]
pub fn estimate_plain(endpoint: Endpoint, body: &str) -> Option<RequestEstimate> {
    match endpoint {
        Endpoint::ChatCompletions => fast::chat(body),
        Endpoint::Responses | Endpoint::Embeddings => None,
    }
}

/// What an endpoint walker found besides tokens.
#[derive(Default)]
struct RequestOptions {
    output_limit: Option<u64>,
    prediction: u64,
    choices: u32,
    stream: bool,
    service_tier: Option<String>,
    audio_output: bool,
}

impl RequestOptions {
    /// The options every endpoint reads the same way.
    fn common(body: &Map<String, Value>) -> Result<Self> {
        Ok(Self {
            choices: 1,
            stream: opt_bool(body, "stream")?.unwrap_or(false),
            service_tier: opt_str(body, "service_tier", || "request".to_owned())?
                .map(str::to_owned),
            ..Self::default()
        })
    }
}

fn model(body: &Map<String, Value>) -> Result<&str> {
    match body.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => Ok(m),
        Some(Value::String(_)) => Err(Error::invalid(
            "request \"model\" is empty; set it to the model name, e.g. \"gpt-4o\"",
        )),
        None | Some(Value::Null) => Err(Error::invalid(
            "request body has no \"model\"; set it to the model name, e.g. \"gpt-4o\"",
        )),
        Some(other) => Err(Error::invalid(format!(
            "request \"model\" must be a string, not {}; set it to the model name, e.g. \"gpt-4o\"",
            kind(other)
        ))),
    }
}

/// An optional string field; `null` counts as absent. `at` names the object for the error
/// message, and is only called on error, so the walk allocates nothing for it.
fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    at: impl FnOnce() -> String,
) -> Result<Option<&'a str>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Error::invalid(format!(
            "{}.{key} must be a string, not {}",
            at(),
            kind(other)
        ))),
    }
}

/// An optional non-negative integer field; `null` counts as absent.
fn opt_u64(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(other) => Err(Error::invalid(format!(
            "request \"{key}\" must be a non-negative integer, not {other}; remove it or set a \
             whole number of tokens"
        ))),
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(Error::invalid(format!(
            "request \"{key}\" must be true or false, not {}",
            kind(other)
        ))),
    }
}

/// The larger of two optional limits: when a request sets both (which the API refuses), the
/// larger is the safe one.
fn max_limit(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// A JSON type's name, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
