//! The running count of one request, and the counters the three endpoints share: message
//! framing, media, JSON values and tool schemas.

use serde_json::Value;

use super::media::{self, ImageCost};
use super::tokenizer::{Encoding, count_tokens, count_tokens_of_all};
use crate::error::{Error, Result};

/// Framing of every message: `<|start|>{role}<|message|>…<|end|>` less the role (OpenAI cookbook,
/// "How to count tokens with tiktoken": 3 per message).
pub(crate) const TOKENS_PER_MESSAGE: u64 = 3;
/// A `name` on a message costs its tokens plus one (same source).
pub(crate) const TOKENS_PER_NAME: u64 = 1;
/// Every reply is primed with `<|start|>assistant<|message|>` (same source).
pub(crate) const REPLY_PRIMING: u64 = 3;
/// Once per request, for framing the cookbook does not see (a model-specific header). Small on
/// purpose: the cookbook's figures are exact for the models it was measured on.
pub(crate) const REQUEST_MARGIN: u64 = 2;
/// Parts of one message are joined before tokenizing; a join can merge or split a token at the
/// seam, so each part after the first may cost one more than counted alone.
pub(crate) const PART_SEAM: u64 = 1;
/// A tool call in an assistant message: recipient (`to=functions.name`) and delimiters. The
/// cookbook counts 1; parallel calls are wrapped with a recipient per call, hence more.
pub(crate) const TOOL_CALL_OVERHEAD: u64 = 4;

/// Function tools are shown to the model as a TypeScript-like namespace:
///
/// ```text
/// # Tools
///
/// ## functions
///
/// namespace functions {
///
/// // {description}
/// type {name} = (_: {
/// // {property description}
/// {key}?: "a" | "b",
/// }) => any;
///
/// } // namespace functions
/// ```
///
/// Each constant below is the larger of two costs, measured with `o200k_base` on that
/// rendering (`tests/estimate.rs` renders every tool of its corpus and checks the bound) and
/// charged by the cookbook's `num_tokens_for_tools`, which was fitted to billed usage: 12 once,
/// 7 per function, 3 per property list, 3 per property, on top of the texts
/// `{name}:{description}` and `{key}:{type}:{description}`.
///
/// Once per request with function tools: the header and the namespace (rendering 13, cookbook 12).
pub(crate) const TOOLS_PREAMBLE: u64 = 13;
/// Per function, besides its name, description and property list: `type … = (_: {` …
/// `}) => any;` and the description's `//` line. With the list's 3 this is 11: rendering 9 + 2
/// for the description line, cookbook 7 + 1 for the `:` + 3 per list. Without parameters:
/// rendering `type … = () => any;` 6 + 2, cookbook 7 + 1.
pub(crate) const FUNCTION_OVERHEAD: u64 = 8;
/// The cookbook charges 3 more per function for the `cl100k_base` models (GPT-4, GPT-3.5).
pub(crate) const CL100K_FUNCTION_EXTRA: u64 = 3;
/// `{\n` … `}` of a property list (cookbook: 3 per list).
pub(crate) const PROPERTIES_OVERHEAD: u64 = 3;
/// Per property, besides its key, type and description, at the top level: `?: ,\n` and its
/// description's `//` line (rendering 2 + 2; cookbook 3 + 2 for the `:`s). One more per level of
/// nesting, for the indentation.
pub(crate) const PROPERTY_OVERHEAD: u64 = 4;
/// Per enum member besides its quoted JSON text: the ` |` (rendering 1 + quotes; cookbook 3).
pub(crate) const ENUM_MEMBER_OVERHEAD: u64 = 1;
/// Keywords without TypeScript syntax become trailing comments, ` // {keyword}: {json}` as in
/// the `openai-harmony` renderer's `// default: …` (rendering 3 besides keyword and value; the
/// cookbook ignores them).
pub(crate) const KEYWORD_OVERHEAD: u64 = 3;
/// A structured-output schema: `# Response Formats\n\n## {name}\n\n{schema}` and delimiters.
pub(crate) const RESPONSE_FORMAT_OVERHEAD: u64 = 10;

/// Texts at least this long are counted after the walk, all together.
const DEFER_MIN_BYTES: usize = 1024;

/// Deepest nesting we walk. OpenAI rejects schemas nested beyond 10 levels, and `serde_json`
/// stops parsing at 128, so this only stops a hand-built `Value` from exhausting the stack.
const MAX_DEPTH: usize = 128;

/// Where a request's tokens come from, added up while walking it once.
pub(crate) struct Tally<'a> {
    pub encoding: Encoding,
    image_cost: ImageCost,
    /// Text tokens, message framing included.
    pub text: u64,
    pub image_tokens: u64,
    pub audio_tokens: u64,
    pub file_tokens: u64,
    pub images: u32,
    pub unbounded_context: bool,
    /// Long texts, counted together by [`Self::finish`] (in parallel when large).
    deferred: Vec<&'a str>,
}

impl<'a> Tally<'a> {
    pub fn new(model: &str, encoding: Encoding) -> Self {
        Self {
            encoding,
            image_cost: media::image_cost(model),
            text: 0,
            image_tokens: 0,
            audio_tokens: 0,
            file_tokens: 0,
            images: 0,
            unbounded_context: false,
            deferred: Vec::new(),
        }
    }

    /// Tokens of `text`.
    pub fn count(&self, text: &str) -> u64 {
        count_tokens(self.encoding, text)
    }

    /// Adds the tokens of `text`, a text of the request. Long texts are set aside and counted
    /// together by [`Self::finish`], which can spread a large prompt over several cores.
    pub fn text(&mut self, text: &'a str) {
        if text.len() >= DEFER_MIN_BYTES {
            self.deferred.push(text);
        } else {
            self.text += self.count(text);
        }
    }

    /// Counts the texts set aside by [`Self::text`]. Call once, after the walk.
    pub fn finish(&mut self) {
        self.text += count_tokens_of_all(self.encoding, &self.deferred);
        self.deferred.clear();
    }

    /// Adds a message's framing and its role.
    pub fn message(&mut self, role: &str) {
        self.text += TOKENS_PER_MESSAGE + self.count(role);
    }

    /// Adds a message's `name`.
    pub fn name(&mut self, name: &str) {
        self.text += TOKENS_PER_NAME + self.count(name);
    }

    /// Adds a tool call made by the assistant.
    pub fn tool_call(&mut self, name: &str, arguments: &str) {
        self.text += TOOL_CALL_OVERHEAD + self.count(name) + self.count(arguments);
    }

    /// Adds one image at its worst case for `detail`.
    pub fn image(&mut self, detail: Option<&str>) {
        let cost = match detail {
            Some(d) if d.eq_ignore_ascii_case("low") => self.image_cost.low,
            _ => self.image_cost.high,
        };
        self.images = self.images.saturating_add(1);
        self.image_tokens += cost + media::IMAGE_FRAMING;
    }

    /// Adds an audio clip given as base64 `data`.
    pub fn audio(&mut self, data: Option<&str>) {
        match data {
            Some(data) => self.audio_tokens += media::audio_tokens(data.len()),
            None => self.unbounded_context = true,
        }
    }

    /// Adds an input file: inline `file_data` by the heuristic of [`media::file_tokens`]; any
    /// file makes the context unbounded, since its tokens are not bounded by what the request says.
    pub fn file(&mut self, file_data: Option<&str>, filename: Option<&str>) {
        self.unbounded_context = true;
        self.file_tokens += file_data.map_or(0, media::file_tokens);
        // The file name is shown to the model with the file.
        self.text += filename.map_or(0, |f| self.count(f)) + 2;
    }

    /// Adds an arbitrary JSON value as its compact JSON text; see [`Self::json_tokens`].
    pub fn json(&mut self, value: &Value) -> Result<()> {
        self.text += self.json_tokens(value, 0)?;
        Ok(())
    }

    /// Tokens of `value`'s compact JSON text, counted exactly. Used for what has no known
    /// rendering (structured-output schemas, hosted tools, unknown parts and items): whatever
    /// the model is shown of it is at most what JSON spells out. These values are small next to
    /// the messages, so serializing them costs little.
    pub fn json_tokens(&self, value: &Value, depth: usize) -> Result<u64> {
        if let Value::String(s) = value {
            // The common case (enum members), without serializing: quotes and escapes cost at
            // most a token each beyond the text's own.
            let escapes = s
                .bytes()
                .filter(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .count();
            return Ok(self.count(s) + 2 + 2 * escapes as u64);
        }
        check_nesting(value, depth)?;
        let text = serde_json::to_string(value)
            .map_err(|e| Error::invalid(format!("request body cannot be serialized: {e}")))?;
        Ok(self.count(&text))
    }

    /// Adds one function tool (see [`FUNCTION_OVERHEAD`] and its neighbours).
    pub fn function_tool(
        &mut self,
        name: Option<&str>,
        description: Option<&str>,
        parameters: Option<&Value>,
    ) -> Result<()> {
        let mut sum = FUNCTION_OVERHEAD;
        if self.encoding != Encoding::O200kBase {
            sum += CL100K_FUNCTION_EXTRA;
        }
        sum += name.map_or(0, |n| self.count(n)) + description.map_or(0, |d| self.count(d));
        if let Some(parameters) = parameters {
            sum += self.schema_tokens(parameters, 0, 0)?;
        }
        self.text += sum;
        Ok(())
    }

    /// Upper bound of a JSON schema as rendered for the model, `level` being how deep in
    /// property lists it sits. What the rendering spells more briefly than JSON (`type`,
    /// `properties`, `enum`, `items`, unions, `description`) is counted as rendered; any other
    /// keyword as its JSON in a comment.
    fn schema_tokens(&self, schema: &Value, depth: usize, level: u64) -> Result<u64> {
        check_depth(depth)?;
        let Value::Object(map) = schema else {
            return self.json_tokens(schema, depth);
        };
        let mut sum = 0;
        for (key, value) in map {
            sum += match (key.as_str(), value) {
                // An object with properties is rendered as its braces, counted with them.
                ("type", Value::String(t)) if t == "object" && map.contains_key("properties") => 0,
                ("type", Value::String(t)) => self.count(t),
                // A union: `string | null`.
                ("type", Value::Array(types)) => {
                    let mut s = 0;
                    for t in types {
                        s += 1 + match t {
                            Value::String(t) => self.count(t),
                            other => self.json_tokens(other, depth + 1)?,
                        };
                    }
                    s
                }
                ("description", Value::String(d)) => self.count(d),
                ("properties", Value::Object(props)) => {
                    let mut s = PROPERTIES_OVERHEAD;
                    for (key, prop) in props {
                        s += PROPERTY_OVERHEAD
                            + level
                            + self.count(key)
                            + self.schema_tokens(prop, depth + 1, level + 1)?;
                    }
                    s
                }
                ("enum", Value::Array(members)) => {
                    let mut s = 0;
                    for m in members {
                        s += ENUM_MEMBER_OVERHEAD + self.json_tokens(m, depth + 1)?;
                    }
                    s
                }
                // `T[]`.
                ("items", Value::Object(_)) => 1 + self.schema_tokens(value, depth + 1, level)?,
                // `{[key: string]: T}`, `not T`.
                ("additionalProperties" | "not", Value::Object(_)) => {
                    3 + self.schema_tokens(value, depth + 1, level)?
                }
                ("anyOf" | "oneOf" | "allOf" | "prefixItems", Value::Array(branches)) => {
                    let mut s = 0;
                    for b in branches {
                        s += 2 + self.schema_tokens(b, depth + 1, level)?;
                    }
                    s
                }
                // Named types: `type {name} = {schema};`.
                ("$defs" | "definitions", Value::Object(defs)) => {
                    let mut s = 0;
                    for (name, def) in defs {
                        s += FUNCTION_OVERHEAD
                            + self.count(name)
                            + self.schema_tokens(def, depth + 1, level)?;
                    }
                    s
                }
                // Rendered as `?` on optional properties and as braces, both in the overheads.
                ("required", Value::Array(_))
                | ("additionalProperties" | "strict", Value::Bool(_)) => 0,
                _ => self.count(key) + KEYWORD_OVERHEAD + self.json_tokens(value, depth + 1)?,
            };
        }
        Ok(sum)
    }
}

/// Refuses values nested deeper than [`MAX_DEPTH`] before anything recursive (including
/// `serde_json`'s serializer) walks them.
fn check_nesting(value: &Value, depth: usize) -> Result<()> {
    check_depth(depth)?;
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| check_nesting(v, depth + 1)),
        Value::Object(map) => map.values().try_for_each(|v| check_nesting(v, depth + 1)),
        _ => Ok(()),
    }
}

fn check_depth(depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::invalid(format!(
            "request body is nested more than {MAX_DEPTH} levels deep; OpenAI rejects such \
             schemas too, so flatten the schema or move parts into \"$defs\""
        )));
    }
    Ok(())
}
