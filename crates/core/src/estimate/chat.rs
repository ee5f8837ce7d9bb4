//! `POST /v1/chat/completions` bodies.

use serde_json::{Map, Value};

use super::content::content;
use super::tally::{
    REPLY_PRIMING, REQUEST_MARGIN, RESPONSE_FORMAT_OVERHEAD, TOOLS_PREAMBLE, Tally,
};
use super::{RequestOptions, kind, max_limit, opt_str, opt_u64};
use crate::error::{Error, Result};

pub(super) fn walk<'a>(body: &'a Map<String, Value>, t: &mut Tally<'a>) -> Result<RequestOptions> {
    let messages = match body.get("messages") {
        Some(Value::Array(messages)) => messages,
        None | Some(Value::Null) => {
            return Err(Error::invalid(
                "chat completion request has no \"messages\"; send an array such as \
                 [{\"role\":\"user\",\"content\":\"Hello\"}]",
            ));
        }
        Some(other) => {
            return Err(Error::invalid(format!(
                "chat completion \"messages\" must be an array of messages, not {}; send an \
                 array such as [{{\"role\":\"user\",\"content\":\"Hello\"}}]",
                kind(other)
            )));
        }
    };
    for (i, message) in messages.iter().enumerate() {
        self::message(i, message, t)?;
    }
    t.text += REPLY_PRIMING + REQUEST_MARGIN;

    tools(body, t)?;
    if let Some(choice @ Value::Object(_)) = body.get("tool_choice") {
        t.json(choice)?;
    }
    if let Some(Value::Object(format)) = body.get("response_format") {
        match format.get("type").and_then(Value::as_str) {
            Some("json_schema") => {
                let schema = format.get("json_schema").unwrap_or(&Value::Null);
                t.text += RESPONSE_FORMAT_OVERHEAD;
                t.json(schema)?;
            }
            Some("json_object") => t.text += RESPONSE_FORMAT_OVERHEAD,
            _ => {}
        }
    }
    // Search results are added to the prompt by the provider.
    if body.get("web_search_options").is_some_and(|v| !v.is_null()) {
        t.unbounded_context = true;
    }

    let mut options = RequestOptions::common(body)?;
    options.choices = choices(body)?;
    options.output_limit = max_limit(
        opt_u64(body, "max_completion_tokens")?,
        opt_u64(body, "max_tokens")?,
    );
    options.prediction = prediction(body, t)?;
    options.audio_output = body.get("audio").is_some_and(Value::is_object)
        || matches!(body.get("modalities"), Some(Value::Array(m)) if m.iter().any(|m| m == "audio"));
    Ok(options)
}

fn message<'a>(i: usize, value: &'a Value, t: &mut Tally<'a>) -> Result<()> {
    let at = || format!("messages[{i}]");
    let Value::Object(message) = value else {
        return Err(Error::invalid(format!(
            "messages[{i}] must be an object with \"role\" and \"content\", not {}",
            kind(value)
        )));
    };
    let Some(Value::String(role)) = message.get("role") else {
        return Err(Error::invalid(format!(
            "messages[{i}] needs a \"role\" string: \"system\", \"developer\", \"user\", \
             \"assistant\" or \"tool\""
        )));
    };
    t.message(role);
    content(message.get("content"), t, &|| {
        format!("messages[{i}].content")
    })?;
    if let Some(name) = opt_str(message, "name", at)? {
        t.name(name);
    }
    // The cookbook counts every string field of a message, the tool call id included.
    if let Some(id) = opt_str(message, "tool_call_id", at)? {
        t.text(id);
    }
    if let Some(refusal) = opt_str(message, "refusal", at)? {
        t.text(refusal);
    }
    match message.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (j, call) in calls.iter().enumerate() {
                tool_call(call, t, &|| format!("messages[{i}].tool_calls[{j}]"))?;
            }
        }
        Some(other) => {
            return Err(Error::invalid(format!(
                "messages[{i}].tool_calls must be an array, not {}",
                kind(other)
            )));
        }
    }
    if let Some(Value::Object(call)) = message.get("function_call") {
        let at = || format!("messages[{i}].function_call");
        t.tool_call(
            opt_str(call, "name", at)?.unwrap_or(""),
            opt_str(call, "arguments", at)?.unwrap_or(""),
        );
    }
    // A previous audio answer referenced by id is billed as audio input of unknown length.
    if message.get("audio").is_some_and(Value::is_object) {
        t.unbounded_context = true;
    }
    Ok(())
}

fn tool_call(value: &Value, t: &mut Tally<'_>, at: &dyn Fn() -> String) -> Result<()> {
    let Value::Object(call) = value else {
        return Err(Error::invalid(format!(
            "{} must be an object such as {{\"type\":\"function\",\"function\":{{\"name\":...,\
             \"arguments\":...}}}}, not {}",
            at(),
            kind(value)
        )));
    };
    let (inner, input_key) = match call.get("type").and_then(Value::as_str) {
        Some("custom") => (call.get("custom"), "input"),
        _ => (call.get("function"), "arguments"),
    };
    match inner {
        Some(Value::Object(f)) => t.tool_call(
            opt_str(f, "name", at)?.unwrap_or(""),
            opt_str(f, input_key, at)?.unwrap_or(""),
        ),
        _ => t.json(value)?,
    }
    Ok(())
}

/// `tools` (and the legacy `functions`): function schemas as rendered for the model; any other
/// tool type as its JSON.
fn tools(body: &Map<String, Value>, t: &mut Tally<'_>) -> Result<()> {
    let mut functions = 0usize;
    for (key, nested) in [("tools", true), ("functions", false)] {
        let list = match body.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(list)) => list,
            Some(other) => {
                return Err(Error::invalid(format!(
                    "chat completion \"{key}\" must be an array, not {}",
                    kind(other)
                )));
            }
        };
        for (j, value) in list.iter().enumerate() {
            let at = || format!("{key}[{j}]");
            let Value::Object(tool) = value else {
                return Err(Error::invalid(format!(
                    "{key}[{j}] must be an object, not {}",
                    kind(value)
                )));
            };
            let function = if nested {
                match (
                    tool.get("type").and_then(Value::as_str),
                    tool.get("function"),
                ) {
                    (None | Some("function"), Some(Value::Object(f))) => Some(f),
                    _ => None,
                }
            } else {
                Some(tool)
            };
            match function {
                Some(f) => {
                    functions += 1;
                    t.function_tool(
                        opt_str(f, "name", at)?,
                        opt_str(f, "description", at)?,
                        f.get("parameters"),
                    )?;
                }
                None => t.json(value)?,
            }
        }
    }
    if functions > 0 {
        t.text += TOOLS_PREAMBLE;
    }
    Ok(())
}

fn choices(body: &Map<String, Value>) -> Result<u32> {
    match opt_u64(body, "n")? {
        None => Ok(1),
        Some(n @ 1..=128) => Ok(n as u32),
        Some(n) => Err(Error::invalid(format!(
            "chat completion \"n\" must be between 1 and 128, not {n}; it is the number of \
             choices to generate"
        ))),
    }
}

/// Tokens of the predicted output (`prediction.content`, a string or text parts).
fn prediction(body: &Map<String, Value>, t: &Tally<'_>) -> Result<u64> {
    let Some(Value::Object(prediction)) = body.get("prediction") else {
        return Ok(0);
    };
    Ok(match prediction.get("content") {
        Some(Value::String(s)) => t.count(s),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(|s| t.count(s) + 1)
            .sum(),
        Some(other) => t.json_tokens(other, 0)?,
        None => 0,
    })
}
