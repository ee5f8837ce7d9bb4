//! Message content, shared by Chat Completions and Responses: a string, or an array of parts
//! (`text`/`input_text`/`output_text`, images, audio, files, refusals).

use serde_json::{Map, Value};

use super::tally::{PART_SEAM, Tally};
use super::{kind, opt_str};
use crate::error::{Error, Result};

/// Adds a message's `content`. `at` names it for error messages (e.g. `messages[3].content`).
pub(super) fn content<'a>(
    value: Option<&'a Value>,
    t: &mut Tally<'a>,
    at: &dyn Fn() -> String,
) -> Result<()> {
    match value {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) => {
            t.text(s);
            Ok(())
        }
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                if j > 0 {
                    t.text += PART_SEAM;
                }
                self::part(part, t, &|| format!("{}[{j}]", at()))?;
            }
            Ok(())
        }
        Some(other) => Err(Error::invalid(format!(
            "{} must be a string, an array of content parts or null, not {}; send text as a \
             string or as [{{\"type\":\"text\",\"text\":\"...\"}}]",
            at(),
            kind(other)
        ))),
    }
}

/// Adds one content part. Unknown part types are counted as their JSON, which bounds any
/// rendering that does not expand them.
fn part<'a>(value: &'a Value, t: &mut Tally<'a>, at: &dyn Fn() -> String) -> Result<()> {
    let Value::Object(part) = value else {
        return Err(Error::invalid(format!(
            "{} must be a content part object such as {{\"type\":\"text\",\"text\":\"...\"}}, \
             not {}",
            at(),
            kind(value)
        )));
    };
    let text_field = |key: &str| opt_str(part, key, at);
    match part.get("type").and_then(Value::as_str) {
        Some("text" | "input_text" | "output_text" | "summary_text" | "reasoning_text") => {
            t.text(text_field("text")?.unwrap_or(""));
        }
        Some("refusal") => t.text(text_field("refusal")?.unwrap_or("")),
        Some("image_url") => {
            // `image_url` is `{url, detail}`, or a bare URL string in older clients.
            let detail = match part.get("image_url") {
                Some(Value::Object(image)) => opt_str(image, "detail", at)?,
                _ => None,
            };
            t.image(detail);
        }
        Some("input_image") => t.image(text_field("detail")?),
        Some("input_audio") => {
            let data = match part.get("input_audio") {
                Some(Value::Object(audio)) => opt_str(audio, "data", at)?,
                _ => None,
            };
            t.audio(data);
        }
        Some("file") => match part.get("file") {
            Some(Value::Object(file)) => file_fields(file, t, at)?,
            _ => t.file(None, None),
        },
        Some("input_file") => file_fields(part, t, at)?,
        _ => t.json(value)?,
    }
    Ok(())
}

fn file_fields(
    file: &Map<String, Value>,
    t: &mut Tally<'_>,
    at: &dyn Fn() -> String,
) -> Result<()> {
    let data = opt_str(file, "file_data", at)?;
    let filename = opt_str(file, "filename", at)?;
    t.file(data, filename);
    Ok(())
}
