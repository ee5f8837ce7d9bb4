//! Budgets, the tags of a call, and how a budget's selector picks the counter a call lands in
//! (SPEC §1).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::money::NanoUsd;
use crate::window::Window;

/// Most tags one call may carry.
pub const MAX_TAGS: usize = 32;
/// Longest tag key, in bytes.
pub const MAX_TAG_KEY_BYTES: usize = 64;
/// Longest tag value, in bytes.
pub const MAX_TAG_VALUE_BYTES: usize = 256;
/// Longest budget name, in bytes.
pub const MAX_BUDGET_NAME_BYTES: usize = 128;

/// Checks one tag key: 1–64 bytes of `[A-Za-z0-9_.:-]`.
///
/// # Errors
/// [`Error::InvalidInput`] naming the key and the rule.
pub fn validate_tag_key(key: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-');
    if key.is_empty() || key.len() > MAX_TAG_KEY_BYTES || !key.chars().all(ok_char) {
        return Err(Error::invalid(format!(
            "invalid tag key {key:?}: keys are 1-{MAX_TAG_KEY_BYTES} characters of A-Z, a-z, 0-9, '_', '.', ':' or '-'"
        )));
    }
    Ok(())
}

/// Checks one tag value: at most 256 bytes.
///
/// # Errors
/// [`Error::InvalidInput`] naming the key.
pub fn validate_tag_value(key: &str, value: &str) -> Result<()> {
    if value.len() > MAX_TAG_VALUE_BYTES {
        return Err(Error::invalid(format!(
            "tag {key:?} has a value of {} bytes; values are at most {MAX_TAG_VALUE_BYTES} bytes",
            value.len()
        )));
    }
    Ok(())
}

/// A validated set of tags, sorted by key, each key once. Shared, not copied, by clones: every
/// call made in a tag scope carries the scope's tags into its reservation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tags(Arc<[(String, String)]>);

impl Tags {
    /// Validates and sorts tags. A repeated key keeps its last value (later scopes win).
    ///
    /// # Errors
    /// A key or value breaking SPEC §1's rules, or more than 32 distinct keys.
    pub fn new<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<Self>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let mut tags: Vec<(String, String)> = Vec::new();
        for (k, v) in pairs {
            let (k, v) = (k.into(), v.into());
            validate_tag_key(&k)?;
            validate_tag_value(&k, &v)?;
            match tags.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => tags.push((k, v)),
            }
        }
        if tags.len() > MAX_TAGS {
            return Err(Error::invalid(format!(
                "{} tags given; a call carries at most {MAX_TAGS}",
                tags.len()
            )));
        }
        tags.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(Self(tags.into()))
    }

    /// These tags with `inner` laid over them (inner wins on the same key).
    ///
    /// # Errors
    /// If the merge has more than 32 keys.
    pub fn merged(&self, inner: &Self) -> Result<Self> {
        Self::new(self.0.iter().chain(inner.0.iter()).cloned())
    }

    /// The value of `key`, if present.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// The tags in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of tags.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a budget selector sees of a call: its tags, plus `provider` and `model`, which are always
/// matchable as if they were tags (and take precedence over user tags of the same name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallTags {
    /// The merged user tags.
    pub tags: Tags,
    /// Resolved provider id, e.g. `openai`.
    pub provider: String,
    /// The model as the request named it.
    pub model: String,
}

impl CallTags {
    /// The value a selector key sees.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        match key {
            "provider" => Some(self.provider.as_str()),
            "model" => Some(self.model.as_str()),
            _ => self.tags.get(key),
        }
    }
}

/// One term of a selector.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MatchValue {
    /// The tag must equal this value.
    Exact(String),
    /// `*`: the tag must be present; each distinct value gets its own counter.
    Each,
}

/// A budget's `match`: all terms must hold. Empty matches every call of the project.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Selector(Vec<(String, MatchValue)>);

impl Selector {
    /// Builds a selector from `key → value` pairs, `"*"` meaning one counter per value.
    ///
    /// # Errors
    /// Invalid keys or values (same rules as tags).
    pub fn new<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<Self>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let mut terms: Vec<(String, MatchValue)> = Vec::new();
        for (k, v) in pairs {
            let (k, v) = (k.into(), v.into());
            validate_tag_key(&k)?;
            validate_tag_value(&k, &v)?;
            if terms.iter().any(|(key, _)| *key == k) {
                return Err(Error::invalid(format!(
                    "budget match names key {k:?} twice"
                )));
            }
            let value = if v == "*" {
                MatchValue::Each
            } else {
                MatchValue::Exact(v)
            };
            terms.push((k, value));
        }
        if terms.len() > MAX_TAGS {
            return Err(Error::invalid(format!(
                "budget match has {} keys; at most {MAX_TAGS}",
                terms.len()
            )));
        }
        terms.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(Self(terms))
    }

    /// Whether any term is `*` (one counter per distinct value).
    #[must_use]
    pub fn is_template(&self) -> bool {
        self.0.iter().any(|(_, v)| *v == MatchValue::Each)
    }

    /// The terms in key order.
    pub fn terms(&self) -> impl Iterator<Item = (&str, &MatchValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The counter key for `call`, or `None` if the call does not match. The key is empty for a
    /// plain budget and `key=value` (joined by `&`, percent-escaped) for a template.
    #[must_use]
    pub fn counter_key(&self, call: &CallTags) -> Option<String> {
        let mut key = String::new();
        for (k, term) in &self.0 {
            let actual = call.get(k)?;
            match term {
                MatchValue::Exact(v) if v == actual => {}
                MatchValue::Exact(_) => return None,
                MatchValue::Each => {
                    if !key.is_empty() {
                        key.push('&');
                    }
                    key.push_str(k);
                    key.push('=');
                    escape_into(&mut key, actual);
                }
            }
        }
        Some(key)
    }

    /// The selector as `key → value` pairs (`*` for templates), e.g. for JSON.
    #[must_use]
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    MatchValue::Exact(v) => v.clone(),
                    MatchValue::Each => "*".to_owned(),
                };
                (k.clone(), v)
            })
            .collect()
    }

    /// The selector as a JSON object string, in key order (stable, for storage).
    #[must_use]
    pub fn to_json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .to_pairs()
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        serde_json::Value::Object(map).to_string()
    }

    /// Parses [`Selector::to_json`]'s output.
    ///
    /// # Errors
    /// Not a JSON object of strings, or invalid keys.
    pub fn from_json(text: &str) -> Result<Self> {
        let map: std::collections::BTreeMap<String, String> =
            serde_json::from_str(text).map_err(|e| {
                Error::invalid(format!("budget match must be an object of strings: {e}"))
            })?;
        Self::new(map)
    }
}

fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '%' => out.push_str("%25"),
            '&' => out.push_str("%26"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
}

/// `block` refuses calls that do not fit; `notify` only counts (and alerts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Hard cap, enforced before dispatch.
    #[default]
    Block,
    /// Counted, never blocks.
    Notify,
}

impl Mode {
    /// `block` or `notify`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Notify => "notify",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "block" => Ok(Self::Block),
            "notify" => Ok(Self::Notify),
            _ => Err(Error::invalid(format!(
                "unknown budget mode {s:?}: use \"block\" or \"notify\""
            ))),
        }
    }
}

/// A budget as declared: identified by its name within a ledger.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BudgetSpec {
    /// Unique name; processes declaring the same name share its counters.
    pub name: String,
    /// Which calls it covers.
    pub selector: Selector,
    /// The cap per window.
    pub limit: NanoUsd,
    /// How often it resets.
    pub window: Window,
    /// Block or notify.
    pub mode: Mode,
}

impl BudgetSpec {
    /// A validated spec.
    ///
    /// # Errors
    /// An empty or over-long name.
    pub fn new(
        name: impl Into<String>,
        selector: Selector,
        limit: NanoUsd,
        window: Window,
        mode: Mode,
    ) -> Result<Self> {
        let name = name.into();
        if name.trim().is_empty() || name.len() > MAX_BUDGET_NAME_BYTES {
            return Err(Error::invalid(format!(
                "budget name {name:?} must be 1-{MAX_BUDGET_NAME_BYTES} bytes and not blank"
            )));
        }
        Ok(Self {
            name,
            selector,
            limit,
            window,
            mode,
        })
    }

    /// Parses a limit given as a float number of USD (JS, JSON), rejecting negative, NaN and
    /// infinite values with a message that names the budget.
    ///
    /// # Errors
    /// [`Error::InvalidInput`].
    pub fn limit_from_usd(name: &str, limit_usd: f64) -> Result<NanoUsd> {
        NanoUsd::from_usd_f64(limit_usd).map_err(|_| {
            Error::invalid(format!(
                "budget {name:?} has limitUsd {limit_usd}: a limit must be a finite number of USD >= 0"
            ))
        })
    }
}

/// A budget stored in a ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Stable id assigned by the ledger.
    pub id: Arc<str>,
    /// The declaration.
    pub spec: BudgetSpec,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(pairs: &[(&str, &str)]) -> CallTags {
        CallTags {
            tags: Tags::new(pairs.iter().copied()).unwrap(),
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
        }
    }

    #[test]
    fn tags_validate_per_spec() {
        assert!(Tags::new([("tenant_id", "acme")]).is_ok());
        assert!(Tags::new([("bad key", "x")]).is_err());
        assert!(Tags::new([("", "x")]).is_err());
        assert!(Tags::new([("k".repeat(65), "x".to_owned())]).is_err());
        assert!(Tags::new([("k", "v".repeat(257))]).is_err());
        let many: Vec<(String, String)> = (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(
            Tags::new(many)
                .unwrap_err()
                .to_string()
                .contains("at most 32")
        );
    }

    #[test]
    fn merge_inner_wins() {
        let outer = Tags::new([("a", "1"), ("b", "1")]).unwrap();
        let inner = Tags::new([("b", "2"), ("c", "2")]).unwrap();
        let m = outer.merged(&inner).unwrap();
        assert_eq!(m.get("a"), Some("1"));
        assert_eq!(m.get("b"), Some("2"));
        assert_eq!(m.get("c"), Some("2"));
    }

    #[test]
    fn selectors_match_exact_template_and_builtins() {
        let empty = Selector::default();
        assert_eq!(empty.counter_key(&call(&[])), Some(String::new()));
        let exact = Selector::new([("tenant_id", "acme")]).unwrap();
        assert_eq!(
            exact.counter_key(&call(&[("tenant_id", "acme")])),
            Some(String::new())
        );
        assert_eq!(exact.counter_key(&call(&[("tenant_id", "other")])), None);
        assert_eq!(exact.counter_key(&call(&[])), None);
        let each = Selector::new([("tenant_id", "*"), ("model", "gpt-4o-mini")]).unwrap();
        assert!(each.is_template());
        assert_eq!(
            each.counter_key(&call(&[("tenant_id", "a&b=c")])),
            Some("tenant_id=a%26b%3Dc".into())
        );
        assert_eq!(each.counter_key(&call(&[])), None);
        let by_provider = Selector::new([("provider", "*")]).unwrap();
        assert_eq!(
            by_provider.counter_key(&call(&[])),
            Some("provider=openai".into())
        );
    }

    #[test]
    fn selector_json_round_trips() {
        let s = Selector::new([("tenant_id", "*"), ("agent", "bot")]).unwrap();
        assert_eq!(Selector::from_json(&s.to_json()).unwrap(), s);
        assert!(Selector::from_json("[1]").is_err());
    }

    #[test]
    fn limits_reject_bad_numbers() {
        for bad in [-1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = BudgetSpec::limit_from_usd("daily", bad).unwrap_err();
            assert!(err.to_string().contains("daily"), "{err}");
        }
        assert_eq!(
            BudgetSpec::limit_from_usd("d", 5.0).unwrap().nanos(),
            5_000_000_000
        );
    }
}
