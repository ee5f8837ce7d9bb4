//! `POST /v1/embeddings` bodies: `input` is a string, an array of strings, an array of token ids
//! or an array of such arrays. Embeddings bill the input's tokens only, with no framing.

use serde_json::{Map, Value};

use super::tally::Tally;
use super::{RequestOptions, kind};
use crate::error::{Error, Result};

pub(super) fn walk<'a>(body: &'a Map<String, Value>, t: &mut Tally<'a>) -> Result<RequestOptions> {
    match body.get("input") {
        Some(Value::String(text)) => t.text(text),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(text) => t.text(text),
                    Value::Number(_) => t.text += token_id(item, || format!("input[{i}]"))?,
                    Value::Array(ids) => {
                        for (j, id) in ids.iter().enumerate() {
                            t.text += token_id(id, || format!("input[{i}][{j}]"))?;
                        }
                    }
                    other => {
                        return Err(Error::invalid(format!(
                            "embedding input[{i}] must be a string, a token id or an array of \
                             token ids, not {}",
                            kind(other)
                        )));
                    }
                }
            }
        }
        None | Some(Value::Null) => {
            return Err(Error::invalid(
                "embedding request has no \"input\"; send the text to embed as a string or an \
                 array of strings",
            ));
        }
        Some(other) => {
            return Err(Error::invalid(format!(
                "embedding \"input\" must be a string or an array, not {}; send the text to \
                 embed as a string or an array of strings",
                kind(other)
            )));
        }
    }
    let mut options = RequestOptions::common(body)?;
    // Embeddings produce no output tokens.
    options.output_limit = Some(0);
    Ok(options)
}

/// A token id is one token; anything else in a token array is a mistake.
fn token_id(value: &Value, at: impl FnOnce() -> String) -> Result<u64> {
    if value.as_u64().is_some() {
        Ok(1)
    } else {
        Err(Error::invalid(format!(
            "embedding {} must be a token id (a non-negative integer), not {value}",
            at()
        )))
    }
}
