//! Resolving a request's provider and model to prices, with a cache for the hot path.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use parking_lot::{Mutex, RwLock};

use super::custom::{FALLBACK_PRICE, ModelPrice};
use super::limits::{DEFAULT_MAX_OUTPUT_TOKENS, MAX_OUTPUT};
use super::model::{PriceSource, ResolvedModel};
use super::table::{ModelPrices, PriceTable};
use super::{BUNDLED_PRICES_JSON, PRICE_DATA_VERSION};
use crate::error::{Error, Result};
use crate::warn::{SharedSink, Warning};

/// How genai-prices is asked to pick the provider.
#[derive(Clone, Copy)]
enum Selector<'a> {
    Provider(&'a str),
    Url(&'a str),
    ModelName,
}

/// One snapshot of price data: the integer table, and genai-prices' matcher built from the same
/// bytes, so a model is matched and priced by one version.
pub struct PriceData {
    version: Arc<str>,
    table: PriceTable,
    matcher: genai_prices::Calculator,
}

impl std::fmt::Debug for PriceData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriceData")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

static BUNDLED: LazyLock<Arc<PriceData>> = LazyLock::new(|| {
    // The bundled data is decoded by a test (`bundled_data_decodes`); failing here means this
    // build of the crate is broken, not that the host did something wrong.
    #[allow(clippy::expect_used)]
    let data = PriceData::from_json(BUNDLED_PRICES_JSON, PRICE_DATA_VERSION)
        .expect("the bundled genai-prices data decodes (checked by the test suite)");
    Arc::new(data)
});

impl PriceData {
    /// The data bundled with this build ([`PRICE_DATA_VERSION`]), decoded once on first use
    /// (tens of milliseconds: call it at startup to keep that off the first request).
    #[must_use]
    pub fn bundled() -> Arc<Self> {
        Arc::clone(&BUNDLED)
    }

    /// Decodes a genai-prices v2 data file, e.g. a newer snapshot.
    ///
    /// # Errors
    /// [`Error::PriceData`] when either decoder rejects it.
    pub fn from_json(json: &str, version: impl Into<String>) -> Result<Self> {
        let table = PriceTable::from_json(json)?;
        let matcher = genai_prices::Calculator::from_json(json)
            .map_err(|e| Error::price_data(format!("genai-prices rejects the data: {e}")))?;
        Ok(Self {
            version: Arc::from(version.into()),
            table,
            matcher,
        })
    }

    /// The data's version, recorded with every decision.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }

    pub(crate) fn table(&self) -> &PriceTable {
        &self.table
    }
}

/// What to do with a model that has no price (SPEC §3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnknownModelPolicy {
    /// Reserve and settle at [`FALLBACK_PRICE`], with one `unknown_model` warning per model.
    #[default]
    Fallback,
    /// Refuse the call with [`Error::UnknownModel`].
    Block,
}

/// The model a request names, and what identifies its provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelRef<'a> {
    /// A provider id or alias given explicitly (`openai`, `azure`, `anthropic`, ...).
    pub provider: Option<&'a str>,
    /// The client's base URL, matched against the providers' API URL patterns.
    pub base_url: Option<&'a str>,
    /// The model name as the request gives it.
    pub model: &'a str,
    /// The provider whose API dialect the client speaks (`openai` for the OpenAI client), tried
    /// last: a client pointed at a gateway or a local server still prices `text-embedding-3-small`
    /// as OpenAI's when nothing else identifies it.
    pub dialect: Option<&'a str>,
}

impl<'a> ModelRef<'a> {
    /// A model name alone (the provider is then found from the name).
    #[must_use]
    pub fn new(model: &'a str) -> Self {
        Self {
            provider: None,
            base_url: None,
            model,
            dialect: None,
        }
    }

    /// The same reference with the provider whose API dialect the client speaks, tried after
    /// every other way of finding the provider.
    #[must_use]
    pub fn with_dialect(mut self, provider: &'a str) -> Self {
        self.dialect = Some(provider);
        self
    }

    /// The same reference with an explicit provider.
    #[must_use]
    pub fn with_provider(mut self, provider: &'a str) -> Self {
        self.provider = Some(provider);
        self
    }

    /// The same reference with the client's base URL.
    #[must_use]
    pub fn with_base_url(mut self, base_url: &'a str) -> Self {
        self.base_url = Some(base_url);
        self
    }
}

/// Resolved models kept at most; past this the cache starts over (model names come from
/// requests, so an unbounded map could be grown by a caller).
const CACHE_CAPACITY: usize = 4096;

/// Resolves models to prices: the bundled table, the user's overrides, the unknown-model policy.
pub struct Pricer {
    data: Arc<PriceData>,
    /// Lowercase `model` or `provider/model` → price.
    overrides: HashMap<String, ModelPrice>,
    policy: UnknownModelPolicy,
    sink: SharedSink,
    /// foldhash, seeded per process: several times cheaper than SipHash on these keys, and
    /// model names (which come from requests) still cannot be chosen to collide.
    cache: RwLock<HashMap<String, Arc<ResolvedModel>, foldhash::fast::RandomState>>,
    /// Models already warned about, so each warning is given once.
    warned: Mutex<HashSet<(&'static str, String)>>,
}

impl std::fmt::Debug for Pricer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pricer")
            .field("data", &self.data)
            .field("overrides", &self.overrides.len())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Pricer {
    /// A pricer over the bundled data. `overrides` are keyed by model name, or
    /// `provider/model`, compared case-insensitively; they win over the table.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty override key.
    pub fn new(
        overrides: impl IntoIterator<Item = (String, ModelPrice)>,
        policy: UnknownModelPolicy,
        sink: SharedSink,
    ) -> Result<Self> {
        Self::with_data(PriceData::bundled(), overrides, policy, sink)
    }

    /// A pricer over other price data.
    ///
    /// # Errors
    /// As [`Pricer::new`].
    pub fn with_data(
        data: Arc<PriceData>,
        overrides: impl IntoIterator<Item = (String, ModelPrice)>,
        policy: UnknownModelPolicy,
        sink: SharedSink,
    ) -> Result<Self> {
        let mut map = HashMap::new();
        for (key, price) in overrides {
            let key = key.trim().to_lowercase();
            if key.is_empty() || key.ends_with('/') {
                return Err(Error::invalid(format!(
                    "prices: {key:?} is not a model name"
                )));
            }
            map.insert(key, price);
        }
        Ok(Self {
            data,
            overrides: map,
            policy,
            sink,
            cache: RwLock::new(HashMap::default()),
            warned: Mutex::new(HashSet::new()),
        })
    }

    /// The version of the price data every decision uses.
    #[must_use]
    pub fn price_data_version(&self) -> &str {
        self.data.version()
    }

    /// The prices for a model, in this order:
    ///
    /// 1. an override for the name as given (`provider/model`, then `model`);
    /// 2. the table, through genai-prices' matching: the provider named by the explicit id (or
    ///    alias), else the one whose API pattern matches the base URL, else the one whose model
    ///    pattern matches the name. Each is tried with the name as given, then its `ft:` base,
    ///    then without a trailing snapshot date; a provider that lacks the model falls through to
    ///    the next way of choosing one (a gateway at its own URL serving `gpt-4o` is priced as
    ///    OpenAI's). An override keyed by the matched model id still wins;
    /// 3. an override for the `ft:` base or undated name;
    /// 4. the unknown-model policy.
    ///
    /// Cached per (provider, base URL, model): a cached call is a read lock and a hash lookup.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty model name; [`Error::UnknownModel`] for an unknown
    /// model under [`UnknownModelPolicy::Block`].
    pub fn resolve(&self, model: &ModelRef<'_>) -> Result<Arc<ResolvedModel>> {
        // The key is built in a buffer kept per thread: a hit allocates nothing.
        let cached = KEY.with_borrow_mut(|key| {
            cache_key_into(key, model);
            let hit = self.cache.read().get(key.as_str()).cloned();
            // A model name comes from the request: keep no huge buffer around.
            if key.capacity() > 1024 {
                *key = String::new();
            }
            hit
        });
        let resolved = match cached {
            Some(resolved) => resolved,
            None => {
                let key = cache_key(model);
                if model.model.trim().is_empty() {
                    return Err(Error::invalid("the request names no model"));
                }
                let resolved = Arc::new(self.resolve_uncached(model));
                let mut cache = self.cache.write();
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
                cache.entry(key).or_insert(resolved).clone()
            }
        };
        if !resolved.known && self.policy == UnknownModelPolicy::Block {
            return Err(Error::UnknownModel {
                model: model.model.to_owned(),
                provider: resolved.provider_id.clone(),
            });
        }
        Ok(resolved)
    }

    fn resolve_uncached(&self, model: &ModelRef<'_>) -> ResolvedModel {
        let provider = model.provider.map(str::trim).filter(|p| !p.is_empty());
        let base_url = model.base_url.map(str::trim).filter(|u| !u.is_empty());
        let names = candidate_names(model.model.trim());

        // 1. An override for the name as given wins over everything.
        if let Some((key, price)) = self.find_override(provider, model.model.trim()) {
            return self.overridden(model.model, provider.map(str::to_owned), key, price, None);
        }

        // 2. The table, through genai-prices' provider and model matching.
        let empty = genai_prices::Usage::new();
        // Provider by what the caller said (explicit id, then base URL), then by model name.
        let selectors = [
            provider.map(Selector::Provider),
            base_url.map(Selector::Url),
            Some(Selector::ModelName),
            model.dialect.map(Selector::Provider),
        ];
        for selector in selectors.into_iter().flatten() {
            for name in &names {
                let request = genai_prices::PriceRequest::new(name, &empty);
                let request = match selector {
                    Selector::Provider(id) => request.with_provider_id(id),
                    Selector::Url(url) => request.with_provider_api_url(url),
                    Selector::ModelName => request,
                };
                let Ok(matched) = self.data.matcher.calculate(&request) else {
                    continue;
                };
                let Some(found) = self
                    .data
                    .table()
                    .find(&matched.provider_id, &matched.model_id)
                else {
                    continue;
                };
                if let Some((key, price)) =
                    self.find_override(Some(&matched.provider_id), &matched.model_id)
                {
                    return self.overridden(
                        model.model,
                        Some(matched.provider_id),
                        key,
                        price,
                        found.prices.context_window,
                    );
                }
                if !found.prices.meters_tokens() {
                    return self.unknown(
                        model.model,
                        Some(matched.provider_id.clone()),
                        &format!(
                            "model {:?} of {} is priced in units Bursora does not meter (audio hours, pages, ...)",
                            model.model, matched.provider_id
                        ),
                    );
                }
                if model.model.trim().to_ascii_lowercase().starts_with("ft:")
                    && !matched.model_id.starts_with("ft:")
                {
                    self.warn_once(
                        "fine_tuned_model",
                        model.model,
                        format!(
                            "fine-tuned model {:?} is priced at its base model {:?}'s rates, which may be below what \
                             the provider bills for fine-tuned inference; add its price with the `prices` option",
                            model.model, matched.model_id
                        ),
                    );
                }
                let max_output_tokens = MAX_OUTPUT
                    .lookup(
                        names
                            .iter()
                            .map(String::as_str)
                            .chain([matched.model_id.as_str()]),
                    )
                    .or(found.prices.context_window)
                    .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
                return ResolvedModel {
                    model_ref: model.model.to_owned(),
                    provider_id: Some(matched.provider_id),
                    model_id: matched.model_id,
                    known: true,
                    source: PriceSource::Table,
                    max_output_tokens,
                    context_window: found.prices.context_window,
                    price_data_version: Arc::clone(&self.data.version),
                    prices: Arc::clone(found.prices),
                    variants_apply: found.variants_apply,
                };
            }
        }

        // 3. An override for a normalised name (a dated snapshot or fine-tune of an added model).
        let provider_id = self.provider_hint(provider, base_url);
        for name in names.iter().skip(1) {
            if let Some((key, price)) = self.find_override(provider_id.as_deref(), name) {
                return self.overridden(model.model, provider_id, key, price, None);
            }
        }

        // 4. Unknown.
        self.unknown(
            model.model,
            provider_id,
            &format!("no price is known for model {:?}", model.model),
        )
    }

    /// The provider the caller identified, for records and errors about an unknown model.
    fn provider_hint(&self, provider: Option<&str>, base_url: Option<&str>) -> Option<String> {
        let known = self
            .data
            .matcher
            .find_provider(provider, base_url)
            .ok()
            .flatten();
        known
            .map(|info| info.id().to_owned())
            .or_else(|| provider.map(str::to_owned))
    }

    fn find_override(&self, provider: Option<&str>, model: &str) -> Option<(String, ModelPrice)> {
        if self.overrides.is_empty() {
            return None;
        }
        let model = model.to_lowercase();
        let qualified = provider.map(|provider| format!("{}/{model}", provider.to_lowercase()));
        qualified
            .into_iter()
            .chain([model])
            .find_map(|key| self.overrides.get(&key).map(|price| (key, *price)))
    }

    fn overridden(
        &self,
        model_ref: &str,
        provider_id: Option<String>,
        key: String,
        price: ModelPrice,
        context_window: Option<u64>,
    ) -> ResolvedModel {
        let max_output_tokens = price
            .max_output_tokens
            .or_else(|| MAX_OUTPUT.lookup([model_ref, key.as_str()]))
            .or(context_window)
            .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
        ResolvedModel {
            model_ref: model_ref.to_owned(),
            provider_id,
            model_id: key,
            known: true,
            source: PriceSource::Override,
            max_output_tokens,
            context_window,
            price_data_version: Arc::clone(&self.data.version),
            prices: Arc::new(price.to_prices(context_window)),
            variants_apply: false,
        }
    }

    fn unknown(&self, model_ref: &str, provider_id: Option<String>, why: &str) -> ResolvedModel {
        if self.policy == UnknownModelPolicy::Fallback {
            self.warn_once(
                "unknown_model",
                model_ref,
                format!(
                    "{why}; reserving and settling it at the fallback price of {} in / {} out per million tokens. \
                     Add its price with the `prices` option, or set unknownModel: \"block\" to refuse such calls",
                    FALLBACK_PRICE.input_per_mtok, FALLBACK_PRICE.output_per_mtok
                ),
            );
        }
        static FALLBACK: LazyLock<Arc<ModelPrices>> =
            LazyLock::new(|| Arc::new(FALLBACK_PRICE.to_prices(None)));
        ResolvedModel {
            model_ref: model_ref.to_owned(),
            provider_id,
            model_id: model_ref.to_owned(),
            known: false,
            source: PriceSource::Fallback,
            max_output_tokens: MAX_OUTPUT
                .lookup([model_ref])
                .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS),
            context_window: None,
            price_data_version: Arc::clone(&self.data.version),
            prices: Arc::clone(&FALLBACK),
            variants_apply: false,
        }
    }

    fn warn_once(&self, code: &'static str, model: &str, message: String) {
        let mut warned = self.warned.lock();
        if warned.len() >= CACHE_CAPACITY {
            // Bounded like the cache: past this many distinct models, warnings may repeat.
            warned.clear();
        }
        if warned.insert((code, model.to_lowercase())) {
            self.sink.warn(Warning { code, message });
        }
    }
}

thread_local! {
    /// [`Pricer::resolve`]'s key buffer (at most 1 KiB is kept).
    static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// The cache key: the three parts, with `None` distinct from any string.
fn cache_key(model: &ModelRef<'_>) -> String {
    let mut key = String::new();
    cache_key_into(&mut key, model);
    key
}

/// [`cache_key`] written into `key`, which is cleared first.
fn cache_key_into(key: &mut String, model: &ModelRef<'_>) {
    key.clear();
    key.reserve(
        model.model.len()
            + model.provider.map_or(1, str::len)
            + model.base_url.map_or(1, str::len)
            + 4,
    );
    for part in [model.provider, model.base_url, model.dialect] {
        match part {
            Some(text) => {
                key.push('=');
                key.push_str(text);
            }
            None => key.push('-'),
        }
        key.push('\u{1f}');
    }
    key.push_str(model.model);
}

/// The names to try for a model, most specific first: as given, the `ft:` base model
/// (`ft:gpt-4o-mini-2024-07-18:org::id` → `gpt-4o-mini-2024-07-18`), and each without a trailing
/// date (`-2024-08-06`, `-20240806`, `-0613`).
fn candidate_names(model: &str) -> Vec<String> {
    let mut names = vec![model.to_owned()];
    if let Some(rest) = model
        .get(..3)
        .filter(|p| p.eq_ignore_ascii_case("ft:"))
        .and(model.get(3..))
    {
        let base = rest.split(':').next().unwrap_or_default();
        if !base.is_empty() {
            names.push(base.to_owned());
        }
    }
    for index in 0..names.len() {
        if let Some(undated) = strip_date_suffix(&names[index])
            && !names.iter().any(|name| name == undated)
        {
            names.push(undated.to_owned());
        }
    }
    names
}

/// `name` without a trailing `-YYYY-MM-DD`, `-YYYYMMDD` or `-MMDD` snapshot date.
fn strip_date_suffix(name: &str) -> Option<&str> {
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let month_day = |s: &str| {
        let (month, day) = (s[..2].parse::<u32>().ok()?, s[2..].parse::<u32>().ok()?);
        ((1..=12).contains(&month) && (1..=31).contains(&day)).then_some(())
    };
    // -YYYY-MM-DD
    if name.len() > 11 && name.is_char_boundary(name.len() - 11) {
        let (stem, tail) = name.split_at(name.len() - 11);
        let parts: Vec<&str> = tail.split('-').collect();
        if let ["", year, month, day] = parts[..]
            && year.len() == 4
            && month.len() == 2
            && day.len() == 2
            && all_digits(year)
            && year.starts_with("20")
            && month_day(&format!("{month}{day}")).is_some()
        {
            return Some(stem);
        }
    }
    let (stem, tail) = name.rsplit_once('-')?;
    if stem.is_empty() || !all_digits(tail) {
        return None;
    }
    match tail.len() {
        8 if tail.starts_with("20") && month_day(&tail[4..]).is_some() => Some(stem),
        4 if month_day(tail).is_some() => Some(stem),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_names_strip_ft_and_dates() {
        assert_eq!(candidate_names("gpt-4o"), ["gpt-4o"]);
        assert_eq!(
            candidate_names("gpt-4o-2099-01-31"),
            ["gpt-4o-2099-01-31", "gpt-4o"]
        );
        assert_eq!(
            candidate_names("claude-x-20991231"),
            ["claude-x-20991231", "claude-x"]
        );
        assert_eq!(candidate_names("gpt-4-0613"), ["gpt-4-0613", "gpt-4"]);
        assert_eq!(
            candidate_names("ft:gpt-4.1-mini-2025-04-14:acme::abc123"),
            [
                "ft:gpt-4.1-mini-2025-04-14:acme::abc123",
                "gpt-4.1-mini-2025-04-14",
                "gpt-4.1-mini"
            ]
        );
        // Not dates: version numbers and sizes stay.
        assert_eq!(candidate_names("llama-3-70b"), ["llama-3-70b"]);
        assert_eq!(candidate_names("model-1399"), ["model-1399"]);
        assert_eq!(candidate_names("-0613"), ["-0613"]);
        assert_eq!(candidate_names("ft:"), ["ft:"]);
        assert_eq!(candidate_names("é-2024-01-01"), ["é-2024-01-01", "é"]);
    }

    #[test]
    fn cache_keys_keep_parts_apart() {
        let a = cache_key(&ModelRef::new("m").with_provider("p"));
        let b = cache_key(&ModelRef::new("m").with_base_url("p"));
        let c = cache_key(&ModelRef::new("m"));
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(b, c);
    }
}
