//! The running count of one request, and the counters the three endpoints share: message
//! framing, media, JSON values and tool schemas.

use serde_json::{Map, Value};

use super::media::{self, ImageCost};
use super::tokenizer::{Encoding, count_tokens};
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

/// Function tools are rendered as a TypeScript-like namespace:
/// `# Tools\n\n## functions\n\nnamespace functions {\n\n… } // namespace functions`. The
/// cookbook's published counting (`num_tokens_for_tools`) charges 12 once, 7 per function, 3 per
/// property list and 3 per property on top of the `name:description` / `key:type:description`
/// texts; the constants below are at least those, and at least the rendering's punctuation,
/// which `tests/estimate.rs` checks against a rendering of every tool in the corpus.
pub(crate) const TOOLS_PREAMBLE: u64 = 13;
/// `// {description}\ntype {name} = (_: {` … `}) => any;\n\n`
pub(crate) const FUNCTION_OVERHEAD: u64 = 8;
/// `// {description}\n` around a description.
pub(crate) const DESCRIPTION_OVERHEAD: u64 = 2;
/// `{key}?: …,\n` of one property.
pub(crate) const PROPERTY_OVERHEAD: u64 = 3;
/// `"value" | ` of one enum member, quotes included.
pub(crate) const ENUM_MEMBER_OVERHEAD: u64 = 3;
/// A structured-output schema: `# Response Formats\n\n## {name}\n\n{schema}` and delimiters.
pub(crate) const RESPONSE_FORMAT_OVERHEAD: u64 = 10;

/// Deepest nesting we walk. OpenAI rejects schemas nested beyond 10 levels, and `serde_json`
/// stops parsing at 128, so this only stops a hand-built `Value` from exhausting the stack.
const MAX_DEPTH: usize = 128;

/// Where a request's tokens come from, added up while walking it once.
pub(crate) struct Tally {
    pub encoding: Encoding,
    image_cost: ImageCost,
    /// Text tokens, message framing included.
    pub text: u64,
    pub image_tokens: u64,
    pub audio_tokens: u64,
    pub file_tokens: u64,
    pub images: u32,
    pub unbounded_context: bool,
}

impl Tally {
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
        }
    }

    /// Tokens of `text`.
    pub fn count(&self, text: &str) -> u64 {
        count_tokens(self.encoding, text)
    }

    /// Adds the tokens of `text`.
    pub fn text(&mut self, text: &str) {
        self.text += self.count(text);
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
        self.text += filename.map_or(0, |f| self.count(f)) + DESCRIPTION_OVERHEAD;
    }

    /// Adds an arbitrary JSON value as if rendered as compact JSON; see [`Self::json_tokens`].
    pub fn json(&mut self, value: &Value) -> Result<()> {
        self.text += self.json_tokens(value, 0)?;
        Ok(())
    }

    /// Tokens of `value`'s compact JSON text, bounded from above without serializing it: every
    /// string's own tokens plus its quotes and escapes, every key likewise with its colon and
    /// comma, every number one token per character, and brackets. BPE merges across this
    /// punctuation only ever lower the true count.
    pub fn json_tokens(&self, value: &Value, depth: usize) -> Result<u64> {
        check_depth(depth)?;
        Ok(match value {
            Value::Null | Value::Bool(_) => 1,
            Value::Number(n) => number_chars(n),
            Value::String(s) => self.json_string_tokens(s),
            Value::Array(items) => {
                let mut sum = 2;
                for item in items {
                    sum += 1 + self.json_tokens(item, depth + 1)?;
                }
                sum
            }
            Value::Object(map) => {
                let mut sum = 2;
                for (key, item) in map {
                    sum += self.json_string_tokens(key) + 2 + self.json_tokens(item, depth + 1)?;
                }
                sum
            }
        })
    }

    fn json_string_tokens(&self, s: &str) -> u64 {
        // An escape (`\"`, `\n`, `\u0001`) adds a backslash token and may split the next token.
        let escapes = s
            .bytes()
            .filter(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .count() as u64;
        self.count(s) + 2 + 2 * escapes
    }

    /// Adds one function tool: the cookbook's per-function cost, upper-bounded.
    pub fn function_tool(
        &mut self,
        name: Option<&str>,
        description: Option<&str>,
        parameters: Option<&Value>,
    ) -> Result<()> {
        let mut sum = FUNCTION_OVERHEAD + name.map_or(0, |n| self.count(n));
        sum += description.map_or(0, |d| self.count(d) + DESCRIPTION_OVERHEAD);
        if let Some(parameters) = parameters {
            sum += self.schema_tokens(parameters, 0)?;
        }
        self.text += sum;
        Ok(())
    }

    /// Upper bound of a JSON schema as OpenAI renders it for the model (TypeScript-like types
    /// with comments). Keywords the rendering is known to spell more briefly than JSON (`type`,
    /// `properties`, `enum`, `items`, unions, `description`) are counted as rendered, plus margin;
    /// every other keyword is counted as its JSON plus a comment's delimiters, which covers
    /// spelling it as `// key: value`.
    pub fn schema_tokens(&self, schema: &Value, depth: usize) -> Result<u64> {
        check_depth(depth)?;
        let Value::Object(map) = schema else {
            return self.json_tokens(schema, depth);
        };
        let mut sum = 0;
        for (key, value) in map {
            sum += match (key.as_str(), value) {
                ("type", Value::String(t)) => self.count(t),
                ("type", Value::Array(types)) => {
                    let mut s = 0;
                    for t in types {
                        s += 1 + self.json_tokens(t, depth + 1)?;
                    }
                    s
                }
                ("description", Value::String(d)) => self.count(d) + DESCRIPTION_OVERHEAD,
                ("properties", Value::Object(props)) => self.properties_tokens(props, depth)?,
                ("enum", Value::Array(members)) => {
                    let mut s = 0;
                    for m in members {
                        s += ENUM_MEMBER_OVERHEAD + self.json_tokens(m, depth + 1)?;
                    }
                    s
                }
                ("items" | "additionalProperties" | "not", Value::Object(_)) => {
                    2 + self.schema_tokens(value, depth + 1)?
                }
                ("anyOf" | "oneOf" | "allOf" | "prefixItems", Value::Array(branches)) => {
                    let mut s = 0;
                    for b in branches {
                        s += 2 + self.schema_tokens(b, depth + 1)?;
                    }
                    s
                }
                ("$defs" | "definitions", Value::Object(defs)) => {
                    let mut s = 0;
                    for (name, def) in defs {
                        s += FUNCTION_OVERHEAD
                            + self.count(name)
                            + self.schema_tokens(def, depth + 1)?;
                    }
                    s
                }
                // Rendered as `?` on the other properties and `{}` braces, both in the overheads.
                ("required", Value::Array(_))
                | ("additionalProperties" | "strict", Value::Bool(_)) => 0,
                _ => {
                    self.count(key)
                        + DESCRIPTION_OVERHEAD
                        + 1
                        + self.json_tokens(value, depth + 1)?
                }
            };
        }
        Ok(sum)
    }

    fn properties_tokens(&self, props: &Map<String, Value>, depth: usize) -> Result<u64> {
        // `{\n` … `}` around the list.
        let mut sum = 3;
        for (key, prop) in props {
            sum += PROPERTY_OVERHEAD + self.count(key) + self.schema_tokens(prop, depth + 1)?;
        }
        Ok(sum)
    }
}

/// Characters of a number's JSON text (each at most one token).
fn number_chars(n: &serde_json::Number) -> u64 {
    if let Some(u) = n.as_u64() {
        u64::from(u.checked_ilog10().unwrap_or(0)) + 1
    } else if let Some(i) = n.as_i64() {
        u64::from(i.unsigned_abs().checked_ilog10().unwrap_or(0)) + 2
    } else {
        // The longest shortest-round-trip f64 text, e.g. `-1.2345678901234567e-308`.
        24
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
