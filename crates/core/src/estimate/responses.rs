//! `POST /v1/responses` bodies.

use serde_json::{Map, Value};

use super::content::content;
use super::tally::{
    REPLY_PRIMING, REQUEST_MARGIN, RESPONSE_FORMAT_OVERHEAD, TOOLS_PREAMBLE, Tally,
};
use super::{RequestOptions, kind, opt_str, opt_u64};
use crate::error::{Error, Result};

/// Hosted tools whose results the provider feeds back to the model as more input, in amounts
/// the request does not bound.
const CONTEXT_FEEDING_TOOLS: &[&str] = &[
    "web_search",
    "file_search",
    "code_interpreter",
    "mcp",
    "image_generation",
];

pub(super) fn walk<'a>(body: &'a Map<String, Value>, t: &mut Tally<'a>) -> Result<RequestOptions> {
    match body.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(instructions)) => {
            t.message("developer");
            t.text(instructions);
        }
        // A stored prompt echoes its instructions as input items.
        Some(Value::Array(items)) => items_of(items, "instructions", t)?,
        Some(other) => {
            return Err(Error::invalid(format!(
                "response \"instructions\" must be a string, not {}",
                kind(other)
            )));
        }
    }
    match body.get("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => {
            t.message("user");
            t.text(text);
        }
        Some(Value::Array(items)) => items_of(items, "input", t)?,
        Some(other) => {
            return Err(Error::invalid(format!(
                "response \"input\" must be a string or an array of input items, not {}; send \
                 text as a string or as [{{\"role\":\"user\",\"content\":\"...\"}}]",
                kind(other)
            )));
        }
    }
    t.text += REPLY_PRIMING + REQUEST_MARGIN;

    tools(body, t)?;
    if let Some(choice @ Value::Object(_)) = body.get("tool_choice") {
        t.json(choice)?;
    }
    if let Some(Value::Object(format)) = body.get("text").and_then(|text| text.get("format")) {
        match format.get("type").and_then(Value::as_str) {
            Some("json_schema") => {
                t.text += RESPONSE_FORMAT_OVERHEAD;
                // Name, description, schema and strict sit side by side here; count them all.
                for (key, value) in format {
                    if key != "type" {
                        t.text += t.count(key) + t.json_tokens(value, 0)?;
                    }
                }
            }
            Some("json_object") => t.text += RESPONSE_FORMAT_OVERHEAD,
            _ => {}
        }
    }
    // Earlier turns, a stored conversation or a stored prompt are billed but not in the body.
    if ["previous_response_id", "conversation", "prompt"]
        .iter()
        .any(|key| body.get(*key).is_some_and(|v| !v.is_null()))
    {
        t.unbounded_context = true;
    }

    let mut options = RequestOptions::common(body)?;
    options.output_limit = opt_u64(body, "max_output_tokens")?;
    Ok(options)
}

fn items_of<'a>(items: &'a [Value], field: &str, t: &mut Tally<'a>) -> Result<()> {
    for (i, item) in items.iter().enumerate() {
        self::item(item, t, &|| format!("{field}[{i}]"))?;
    }
    Ok(())
}

fn item<'a>(value: &'a Value, t: &mut Tally<'a>, at: &dyn Fn() -> String) -> Result<()> {
    let Value::Object(item) = value else {
        return Err(Error::invalid(format!(
            "{} must be an input item object such as {{\"role\":\"user\",\"content\":\"...\"}}, \
             not {}",
            at(),
            kind(value)
        )));
    };
    match item.get("type").and_then(Value::as_str) {
        None | Some("message") => {
            let Some(Value::String(role)) = item.get("role") else {
                return Err(Error::invalid(format!(
                    "{} needs a \"role\" string: \"user\", \"assistant\", \"system\" or \
                     \"developer\" (or a \"type\" for other items)",
                    at()
                )));
            };
            t.message(role);
            content(item.get("content"), t, &|| format!("{}.content", at()))?;
        }
        Some(kind @ ("function_call" | "custom_tool_call")) => {
            let input_key = if kind == "function_call" {
                "arguments"
            } else {
                "input"
            };
            t.message("assistant");
            t.tool_call(
                opt_str(item, "name", at)?.unwrap_or(""),
                opt_str(item, input_key, at)?.unwrap_or(""),
            );
        }
        Some("function_call_output" | "custom_tool_call_output") => {
            t.message("tool");
            if let Some(id) = opt_str(item, "call_id", at)? {
                t.text(id);
            }
            content(item.get("output"), t, &|| format!("{}.output", at()))?;
        }
        Some("reasoning") => {
            t.message("assistant");
            for key in ["summary", "content"] {
                if let Some(parts @ Value::Array(_)) = item.get(key) {
                    content(Some(parts), t, &|| format!("{}.{key}", at()))?;
                }
            }
            // Encrypted reasoning is billed as the reasoning tokens it hides. Its base64 text
            // is longer than that reasoning unless heavily compressed; one token per two
            // characters keeps well above what such text tokenizes to.
            if let Some(encrypted) = opt_str(item, "encrypted_content", at)? {
                t.text += (encrypted.len() as u64).div_ceil(2);
            }
        }
        Some("computer_call_output") => {
            t.message("tool");
            t.image(None);
        }
        // The referenced item is stored server-side; its size is unknown here.
        Some("item_reference") => t.unbounded_context = true,
        // Hosted tool calls and their results, shell calls, ...: their JSON.
        Some(_) => {
            t.message("assistant");
            t.json(value)?;
        }
    }
    Ok(())
}

fn tools(body: &Map<String, Value>, t: &mut Tally<'_>) -> Result<()> {
    let list = match body.get("tools") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(Error::invalid(format!(
                "response \"tools\" must be an array, not {}",
                kind(other)
            )));
        }
    };
    let mut functions = 0usize;
    for (j, value) in list.iter().enumerate() {
        let at = || format!("tools[{j}]");
        let Value::Object(tool) = value else {
            return Err(Error::invalid(format!(
                "tools[{j}] must be an object, not {}",
                kind(value)
            )));
        };
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {
                functions += 1;
                t.function_tool(
                    opt_str(tool, "name", at)?,
                    opt_str(tool, "description", at)?,
                    tool.get("parameters"),
                )?;
            }
            Some(kind) => {
                if CONTEXT_FEEDING_TOOLS
                    .iter()
                    .any(|hosted| kind.starts_with(hosted))
                {
                    t.unbounded_context = true;
                }
                t.json(value)?;
            }
            None => t.json(value)?,
        }
    }
    if functions > 0 {
        t.text += TOOLS_PREAMBLE;
    }
    Ok(())
}
