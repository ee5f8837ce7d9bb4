//! Max output tokens per model, from LiteLLM's maintained table
//! (`crates/core/data/max-output-tokens.json`, made by `scripts/gen-max-output-tokens.py`).

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The output bound of a request to a model with no known output limit and no context window:
/// large enough for any current chat model's completion, so a bound built on it is not low.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 128_000;

const BUNDLED: &str = include_str!("../../data/max-output-tokens.json");

#[derive(Deserialize)]
struct File {
    source: String,
    models: HashMap<String, u64>,
}

/// The decoded table: lowercase model name → max output tokens.
pub(crate) struct MaxOutputTable {
    pub(crate) source: String,
    models: HashMap<String, u64>,
}

impl MaxOutputTable {
    pub(crate) fn from_json(json: &str) -> Result<Self> {
        let file: File = serde_json::from_str(json)
            .map_err(|e| Error::price_data(format!("max-output-tokens table: {e}")))?;
        Ok(Self {
            source: file.source,
            models: file.models,
        })
    }

    /// The limit for the first name that has one (names are compared lowercase).
    pub(crate) fn lookup<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Option<u64> {
        names
            .into_iter()
            .find_map(|name| self.models.get(&name.to_lowercase()).copied())
    }
}

/// Where the max output tokens come from, e.g. `litellm 1.109.1 (...)`.
#[must_use]
pub fn max_output_tokens_source() -> &'static str {
    &MAX_OUTPUT.source
}

pub(crate) static MAX_OUTPUT: LazyLock<MaxOutputTable> = LazyLock::new(|| {
    // The bundled file is checked by a test; failing here means a broken build of this crate.
    #[allow(clippy::expect_used)]
    MaxOutputTable::from_json(BUNDLED).expect("bundled max-output-tokens.json is valid (tested)")
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_table_decodes() {
        let table = MaxOutputTable::from_json(BUNDLED).unwrap();
        assert!(table.source.starts_with("litellm "), "{}", table.source);
        assert_eq!(table.lookup(["GPT-4o"]), Some(16_384));
        assert_eq!(table.lookup(["no-such-model", "gpt-5"]), Some(128_000));
        assert_eq!(table.lookup(["no-such-model"]), None);
        assert!(MaxOutputTable::from_json("{}").is_err());
    }
}
