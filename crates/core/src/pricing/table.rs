//! genai-prices data decoded into integer prices.
//!
//! Every price becomes a `u64` of **nano-USD per `per` units** (per million tokens, per thousand
//! requests): `0.0375` $/MTok is 37,500,000. A JSON number is read through its shortest
//! round-trip decimal text (`format!("{f64}")`, what the JSON file says for any number written
//! with at most 17 significant digits) and [`Decimal::parse`], so no float arithmetic touches a
//! price. Digits beyond the ninth decimal of USD (float artefacts such as `0.18000000000000002`,
//! or repeating fractions such as `0.0833333333333333`) round **up** to the next nano-USD per
//! million, so a stored price is never below the published one, by less than $10^-9 per million
//! tokens.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::units::{UNIT_COUNT, Unit, UnitMap};
use crate::error::{Error, Result};
use crate::money::Decimal;

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// One price, flat or tiered by the request's total input tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rate {
    /// Nano-USD per `per` units when no tier applies.
    pub(crate) base: u64,
    /// Sorted by `start`, ascending.
    pub(crate) tiers: Box<[Tier]>,
}

/// A tier: from (strictly) more than `start` input tokens, the whole request is charged `rate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tier {
    pub(crate) start: u64,
    pub(crate) rate: u64,
}

impl Rate {
    /// A flat rate.
    pub(crate) fn flat(rate: u64) -> Self {
        Self {
            base: rate,
            tiers: Box::new([]),
        }
    }

    /// The rate for a request with `input_tokens` input tokens in all: the highest tier whose
    /// start is below it, as genai-prices selects it.
    pub(crate) fn at(&self, input_tokens: u64) -> u64 {
        self.tiers
            .iter()
            .rev()
            .find(|tier| input_tokens > tier.start)
            .map_or(self.base, |tier| tier.rate)
    }
}

/// The prices of one model at one moment: one optional rate per metered unit.
pub(crate) type PriceSet = UnitMap<Option<Rate>>;

/// Borrowed prices, assembled per calculation without allocating.
pub(crate) type PriceRefs<'a> = UnitMap<Option<&'a Rate>>;

fn empty_set() -> PriceSet {
    std::array::from_fn(|_| None)
}

/// When a price applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Constraint {
    /// From this instant (midnight UTC of the date), Unix milliseconds.
    StartDate(i64),
    /// Between two times of day, milliseconds since midnight UTC; wraps past midnight when
    /// `end < start`.
    TimeOfDay { start: i64, end: i64 },
}

impl Constraint {
    pub(crate) fn is_active(constraint: Option<&Self>, now_ms: i64) -> bool {
        match constraint {
            None => true,
            Some(Self::StartDate(start)) => now_ms >= *start,
            Some(Self::TimeOfDay { start, end }) => {
                let t = now_ms.rem_euclid(DAY_MS);
                if end < start {
                    t >= *start || t < *end
                } else {
                    t >= *start && t < *end
                }
            }
        }
    }

    /// Instants in `(now, until]` at which this constraint turns on or off.
    fn transitions(self, now_ms: i64, until_ms: i64, out: &mut Vec<i64>) {
        let mut push = |t: i64| {
            if t > now_ms && t <= until_ms {
                out.push(t);
            }
        };
        match self {
            Self::StartDate(start) => push(start),
            Self::TimeOfDay { start, end } => {
                let midnight = now_ms - now_ms.rem_euclid(DAY_MS);
                for day in [midnight, midnight.saturating_add(DAY_MS)] {
                    push(day.saturating_add(start));
                    push(day.saturating_add(end));
                }
            }
        }
    }
}

/// A standard price and the constraint under which it applies.
#[derive(Clone, Debug)]
pub(crate) struct Conditional {
    pub(crate) constraint: Option<Constraint>,
    pub(crate) prices: PriceSet,
}

/// Prices that replace some standard ones for matching requests (`service_tier: flex`,
/// `processing: batch`). A variant sets only the units it lists.
#[derive(Clone, Debug)]
pub(crate) struct Variant {
    pub(crate) when: Box<[(String, String)]>,
    pub(crate) prices: PriceSet,
    pub(crate) constraint: Option<Constraint>,
}

/// Everything known about one model's prices.
#[derive(Clone, Debug)]
pub(crate) struct ModelPrices {
    pub(crate) context_window: Option<u64>,
    /// In data order; exactly one entry has no constraint. The last active one applies.
    pub(crate) standard: Box<[Conditional]>,
    pub(crate) variants: Box<[Variant]>,
    /// Whether any price depends on time (so bounds look at price changes just ahead).
    pub(crate) time_dependent: bool,
}

impl ModelPrices {
    /// A model with one set of flat prices.
    pub(crate) fn fixed(prices: PriceSet, context_window: Option<u64>) -> Self {
        Self {
            context_window,
            standard: Box::new([Conditional {
                constraint: None,
                prices,
            }]),
            variants: Box::new([]),
            time_dependent: false,
        }
    }

    /// The standard prices at `now_ms`, with the variants that match `context` applied on top
    /// (the first active matching variant wins for each unit, as in genai-prices).
    pub(crate) fn prices_at<'a>(
        &'a self,
        now_ms: i64,
        context: Option<&VariantKeys<'_>>,
    ) -> PriceRefs<'a> {
        let standard = self
            .standard
            .iter()
            .rev()
            .find(|candidate| Constraint::is_active(candidate.constraint.as_ref(), now_ms))
            .or_else(|| self.standard.first());
        let mut refs: PriceRefs<'a> = [None; UNIT_COUNT];
        if let Some(standard) = standard {
            for unit in Unit::ALL {
                refs[unit.index()] = standard.prices[unit.index()].as_ref();
            }
        }
        let Some(context) = context else { return refs };
        let mut overridden = [false; UNIT_COUNT];
        for variant in &self.variants {
            if !Constraint::is_active(variant.constraint.as_ref(), now_ms)
                || !variant
                    .when
                    .iter()
                    .all(|(key, value)| context.get(key) == Some(value.as_str()))
            {
                continue;
            }
            for unit in Unit::ALL {
                if let Some(rate) = &variant.prices[unit.index()]
                    && !overridden[unit.index()]
                {
                    refs[unit.index()] = Some(rate);
                    overridden[unit.index()] = true;
                }
            }
        }
        refs
    }

    /// `now_ms` and every instant in `(now, now + horizon]` at which some price changes.
    pub(crate) fn instants(&self, now_ms: i64, horizon_ms: i64) -> Vec<i64> {
        let mut out = vec![now_ms];
        if self.time_dependent {
            let until = now_ms.saturating_add(horizon_ms);
            let constraints = self
                .standard
                .iter()
                .filter_map(|price| price.constraint)
                .chain(
                    self.variants
                        .iter()
                        .filter_map(|variant| variant.constraint),
                );
            for constraint in constraints {
                constraint.transitions(now_ms, until, &mut out);
            }
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    /// Whether the standard prices ever price input or output tokens (a model priced only per
    /// audio hour or per page cannot be metered from token usage).
    pub(crate) fn meters_tokens(&self) -> bool {
        self.standard.iter().any(|price| {
            price.prices[Unit::Input.index()].is_some()
                || price.prices[Unit::Output.index()].is_some()
        })
    }
}

/// The request-specific keys variants are selected by (`service_tier`, `processing`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct VariantKeys<'a> {
    pub(crate) service_tier: Option<&'a str>,
    pub(crate) batch: bool,
}

impl VariantKeys<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "service_tier" => self.service_tier,
            "processing" if self.batch => Some("batch"),
            _ => None,
        }
    }
}

/// One provider's models.
#[derive(Debug, Default)]
pub(crate) struct ProviderPrices {
    /// Providers whose models this one also serves, at their standard prices (Azure → OpenAI).
    pub(crate) fallbacks: Vec<String>,
    pub(crate) models: HashMap<String, Arc<ModelPrices>>,
}

/// The whole price table, by provider id and model id.
#[derive(Debug, Default)]
pub struct PriceTable {
    pub(crate) providers: HashMap<String, ProviderPrices>,
}

/// Where a model's prices were found.
pub(crate) struct Found<'a> {
    pub(crate) prices: &'a Arc<ModelPrices>,
    /// False when the model came from a fallback provider: variants belong to the provider that
    /// defines them, so such a model is priced at its standard rates (as genai-prices does).
    pub(crate) variants_apply: bool,
}

impl PriceTable {
    /// Decodes a genai-prices v2 data file (a JSON array of providers).
    ///
    /// # Errors
    /// [`Error::PriceData`] naming the provider, model and key at fault.
    pub fn from_json(json: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(json)
            .map_err(|e| Error::price_data(format!("not valid JSON: {e}")))?;
        let Value::Array(items) = value else {
            return Err(Error::price_data("expected an array of providers"));
        };
        let mut providers = HashMap::with_capacity(items.len());
        for item in &items {
            let (id, provider) = decode_provider(item)?;
            if providers.insert(id.clone(), provider).is_some() {
                return Err(Error::price_data(format!("duplicate provider {id:?}")));
            }
        }
        Ok(Self { providers })
    }

    /// The prices of `model_id` as `provider_id` serves it, looking through the provider's
    /// fallback providers as genai-prices matching does.
    pub(crate) fn find(&self, provider_id: &str, model_id: &str) -> Option<Found<'_>> {
        let provider = self.providers.get(provider_id)?;
        if let Some(prices) = provider.models.get(model_id) {
            return Some(Found {
                prices,
                variants_apply: true,
            });
        }
        provider.fallbacks.iter().find_map(|fallback| {
            let prices = self.providers.get(fallback)?.models.get(model_id)?;
            Some(Found {
                prices,
                variants_apply: false,
            })
        })
    }

    /// Every model, as `(provider id, model id, prices)`.
    #[cfg(test)]
    pub(crate) fn models(&self) -> impl Iterator<Item = (&str, &str, &ModelPrices)> {
        self.providers.iter().flat_map(|(provider, entry)| {
            entry
                .models
                .iter()
                .map(move |(model, prices)| (provider.as_str(), model.as_str(), &**prices))
        })
    }
}

/// The fields of a JSON object; `null` reads as absent (as genai-prices reads it).
fn object<'a>(value: &'a Value, what: &str) -> Result<Option<&'a Map<String, Value>>> {
    match value {
        Value::Null => Ok(None),
        Value::Object(map) => Ok(Some(map)),
        _ => Err(Error::price_data(format!("{what} must be an object"))),
    }
}

fn field<'a>(map: Option<&'a Map<String, Value>>, key: &str) -> Option<&'a Value> {
    map?.get(key).filter(|value| !value.is_null())
}

fn string_field<'a>(
    map: Option<&'a Map<String, Value>>,
    key: &str,
    what: &str,
) -> Result<Option<&'a str>> {
    match field(map, key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(Error::price_data(format!("{what}: {key} must be a string"))),
    }
}

fn array_field<'a>(
    map: Option<&'a Map<String, Value>>,
    key: &str,
    what: &str,
) -> Result<&'a [Value]> {
    match field(map, key) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(Error::price_data(format!("{what}: {key} must be an array"))),
    }
}

fn decode_provider(value: &Value) -> Result<(String, ProviderPrices)> {
    let map = object(value, "a provider")?;
    let id = string_field(map, "id", "a provider")?
        .filter(|id| !id.is_empty())
        .ok_or_else(|| Error::price_data("a provider has no id"))?;
    let what = format!("provider {id:?}");
    let fallbacks = array_field(map, "fallback_model_providers", &what)?
        .iter()
        .map(|item| {
            item.as_str().map(str::to_owned).ok_or_else(|| {
                Error::price_data(format!("{what}: fallback_model_providers must be strings"))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut models = HashMap::new();
    for item in array_field(map, "models", &what)? {
        let (model_id, prices) = decode_model(item, &what)?;
        if models.insert(model_id.clone(), Arc::new(prices)).is_some() {
            return Err(Error::price_data(format!(
                "{what}: duplicate model {model_id:?}"
            )));
        }
    }
    Ok((id.to_owned(), ProviderPrices { fallbacks, models }))
}

fn decode_model(value: &Value, provider: &str) -> Result<(String, ModelPrices)> {
    let map = object(value, &format!("{provider}: a model"))?;
    let id = string_field(map, "id", provider)?
        .filter(|id| !id.is_empty())
        .ok_or_else(|| Error::price_data(format!("{provider}: a model has no id")))?;
    let what = format!("{provider} model {id:?}");
    let context_window = match field(map, "context_window") {
        None => None,
        Some(value) => Some(value.as_u64().ok_or_else(|| {
            Error::price_data(format!(
                "{what}: context_window must be a non-negative integer"
            ))
        })?),
    };
    let standard: Box<[Conditional]> = match map.and_then(|map| map.get("prices")) {
        None | Some(Value::Null) => Box::new([Conditional {
            constraint: None,
            prices: empty_set(),
        }]),
        Some(Value::Array(items)) => {
            let conditional = items
                .iter()
                .map(|item| {
                    let entry = object(item, &format!("{what}: a conditional price"))?;
                    let constraint = match entry.and_then(|entry| entry.get("constraint")) {
                        None => None,
                        Some(constraint) => Some(decode_constraint(constraint, &what)?),
                    };
                    let prices = field(entry, "prices").ok_or_else(|| {
                        Error::price_data(format!("{what}: a conditional price has no prices"))
                    })?;
                    Ok(Conditional {
                        constraint,
                        prices: decode_price_set(prices, &what)?,
                    })
                })
                .collect::<Result<Box<[_]>>>()?;
            if conditional
                .iter()
                .filter(|price| price.constraint.is_none())
                .count()
                != 1
            {
                return Err(Error::price_data(format!(
                    "{what}: conditional prices need exactly one entry without a constraint"
                )));
            }
            conditional
        }
        Some(prices) => Box::new([Conditional {
            constraint: None,
            prices: decode_price_set(prices, &what)?,
        }]),
    };
    let variants = array_field(map, "price_variants", &what)?
        .iter()
        .map(|item| decode_variant(item, &what))
        .collect::<Result<Box<[_]>>>()?;
    let time_dependent = standard.iter().any(|price| price.constraint.is_some())
        || variants.iter().any(|variant| variant.constraint.is_some());
    Ok((
        id.to_owned(),
        ModelPrices {
            context_window,
            standard,
            variants,
            time_dependent,
        },
    ))
}

fn decode_variant(value: &Value, what: &str) -> Result<Variant> {
    let what = format!("{what}: a price variant");
    let map = object(value, &what)?;
    let when = match field(map, "when") {
        Some(Value::Object(when)) if !when.is_empty() => when
            .iter()
            .map(|(key, value)| match value {
                Value::String(text) => Ok((key.clone(), text.clone())),
                _ => Err(Error::price_data(format!(
                    "{what}: `when` values must be strings"
                ))),
            })
            .collect::<Result<Box<[_]>>>()?,
        _ => {
            return Err(Error::price_data(format!(
                "{what}: needs a non-empty `when` object"
            )));
        }
    };
    let prices =
        field(map, "prices").ok_or_else(|| Error::price_data(format!("{what}: has no prices")))?;
    let constraint = field(map, "constraint")
        .map(|c| decode_constraint(c, &what))
        .transpose()?;
    Ok(Variant {
        when,
        prices: decode_price_set(prices, &what)?,
        constraint,
    })
}

/// Decodes a price object. Keys for units Bursora does not meter (audio hours, pages, ...) are
/// skipped: their usage is never reported through token usage.
fn decode_price_set(value: &Value, what: &str) -> Result<PriceSet> {
    let Value::Object(map) = value else {
        return Err(Error::price_data(format!(
            "{what}: prices must be an object"
        )));
    };
    let mut set = empty_set();
    for (key, value) in map {
        if value.is_null() {
            continue;
        }
        let Some(unit) = Unit::from_price_key(key) else {
            // Still check it is a well-formed price, so bad data is reported whatever the key.
            decode_rate(value, &format!("{what}: {key}"))?;
            continue;
        };
        set[unit.index()] = Some(decode_rate(value, &format!("{what}: {key}"))?);
    }
    Ok(set)
}

fn decode_rate(value: &Value, what: &str) -> Result<Rate> {
    match value {
        Value::Number(_) => Ok(Rate::flat(nanos_per_unit(value, what)?)),
        Value::Object(map) => {
            let base = map
                .get("base")
                .ok_or_else(|| Error::price_data(format!("{what}: a tiered price needs `base`")))?;
            let Some(Value::Array(tiers)) = map.get("tiers") else {
                return Err(Error::price_data(format!(
                    "{what}: a tiered price needs a `tiers` array"
                )));
            };
            let mut tiers = tiers
                .iter()
                .map(|tier| {
                    let (Some(start), Some(price)) = (tier.get("start"), tier.get("price")) else {
                        return Err(Error::price_data(format!(
                            "{what}: a tier needs `start` and `price`"
                        )));
                    };
                    let start = start.as_u64().ok_or_else(|| {
                        Error::price_data(format!(
                            "{what}: a tier start must be a non-negative integer"
                        ))
                    })?;
                    Ok(Tier {
                        start,
                        rate: nanos_per_unit(price, what)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            tiers.sort_by_key(|tier| tier.start);
            Ok(Rate {
                base: nanos_per_unit(base, what)?,
                tiers: tiers.into_boxed_slice(),
            })
        }
        _ => Err(Error::price_data(format!(
            "{what}: must be a number or a tiered price"
        ))),
    }
}

/// A JSON number of USD as nano-USD, exactly (rounded up past the ninth decimal).
fn nanos_per_unit(value: &Value, what: &str) -> Result<u64> {
    let Value::Number(number) = value else {
        return Err(Error::price_data(format!(
            "{what}: a price must be a number"
        )));
    };
    // Integers are read as written; floats through their shortest round-trip text.
    let text = match (number.as_u64(), number.as_f64()) {
        (Some(integer), _) => integer.to_string(),
        (None, Some(float)) if float.is_finite() => format!("{float}"),
        _ => {
            return Err(Error::price_data(format!(
                "{what}: {number} is not a finite number"
            )));
        }
    };
    let nanos = Decimal::parse(&text)
        .and_then(|decimal| decimal.scaled_ceil(9))
        .map_err(|e| Error::price_data(format!("{what}: {e}")))?;
    u64::try_from(nanos).map_err(|_| Error::price_data(format!("{what}: {text} is negative")))
}

fn decode_constraint(value: &Value, what: &str) -> Result<Constraint> {
    let map = object(value, &format!("{what}: a constraint"))?
        .ok_or_else(|| Error::price_data(format!("{what}: a constraint must be an object")))?;
    let text = |key: &str| string_field(Some(map), key, what);
    match (text("start_date")?, text("start_time")?, text("end_time")?) {
        (Some(date), None, None) => {
            let date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
                .map_err(|e| Error::price_data(format!("{what}: start_date {date:?}: {e}")))?;
            let midnight = date.and_time(chrono::NaiveTime::MIN).and_utc();
            Ok(Constraint::StartDate(midnight.timestamp_millis()))
        }
        (None, Some(start), Some(end)) => Ok(Constraint::TimeOfDay {
            start: parse_time_of_day(start)
                .map_err(|e| Error::price_data(format!("{what}: {e}")))?,
            end: parse_time_of_day(end).map_err(|e| Error::price_data(format!("{what}: {e}")))?,
        }),
        _ => Err(Error::price_data(format!(
            "{what}: a constraint needs either start_date, or start_time and end_time"
        ))),
    }
}

/// `HH:MM:SS[.fraction](Z|±HH:MM)` as milliseconds since midnight UTC (fractions below a
/// millisecond are dropped: the clock we compare with counts milliseconds).
fn parse_time_of_day(text: &str) -> std::result::Result<i64, String> {
    let bad = || format!("invalid time of day {text:?} (expected HH:MM:SS with Z or ±HH:MM)");
    let (clock, offset_ms) = if let Some(clock) = text.strip_suffix('Z') {
        (clock, 0)
    } else {
        let split = text.len().checked_sub(6).ok_or_else(bad)?;
        let (clock, offset) = (
            text.get(..split).ok_or_else(bad)?,
            text.get(split..).ok_or_else(bad)?,
        );
        let sign = match offset.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err(bad()),
        };
        let offset = chrono::NaiveTime::parse_from_str(&offset[1..], "%H:%M").map_err(|_| bad())?;
        (
            clock,
            sign * i64::from(chrono::Timelike::num_seconds_from_midnight(&offset)) * 1000,
        )
    };
    let time = chrono::NaiveTime::parse_from_str(clock, "%H:%M:%S%.f").map_err(|_| bad())?;
    let local_ms = i64::from(chrono::Timelike::num_seconds_from_midnight(&time)) * 1000
        + i64::from(chrono::Timelike::nanosecond(&time) / 1_000_000);
    Ok((local_ms - offset_ms).rem_euclid(DAY_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_become_exact_nanos() {
        let nanos =
            |json: &str| nanos_per_unit(&serde_json::from_str(json).unwrap(), "test").unwrap();
        assert_eq!(nanos("0.0375"), 37_500_000);
        assert_eq!(nanos("0.15"), 150_000_000);
        assert_eq!(nanos("2.5"), 2_500_000_000);
        assert_eq!(nanos("15"), 15_000_000_000);
        assert_eq!(nanos("1e-9"), 1);
        // Float artefacts and repeating fractions round up, never down.
        assert_eq!(nanos("1.0399999999999998"), 1_040_000_000);
        assert_eq!(nanos("0.18000000000000002"), 180_000_001);
        assert_eq!(nanos("0.0833333333333333"), 83_333_334);
        assert!(nanos_per_unit(&serde_json::json!(-1.5), "test").is_err());
        assert!(nanos_per_unit(&serde_json::json!("1"), "test").is_err());
    }

    #[test]
    fn times_of_day() {
        assert_eq!(parse_time_of_day("00:30:00Z"), Ok(1_800_000));
        assert_eq!(parse_time_of_day("16:30:00Z"), Ok(59_400_000));
        assert_eq!(parse_time_of_day("01:00:00+02:00"), Ok(82_800_000));
        assert_eq!(parse_time_of_day("23:30:00-01:00"), Ok(1_800_000));
        assert_eq!(parse_time_of_day("12:00:00.5Z"), Ok(43_200_500));
        for bad in ["", "Z", "24:00:00Z", "12:00:00", "12:00:00+0100", "noon"] {
            assert!(parse_time_of_day(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn time_of_day_windows_wrap() {
        let day = Constraint::TimeOfDay {
            start: 1_800_000,
            end: 59_400_000,
        };
        assert!(!Constraint::is_active(Some(&day), 0));
        assert!(Constraint::is_active(Some(&day), 1_800_000));
        assert!(!Constraint::is_active(Some(&day), 59_400_000));
        let night = Constraint::TimeOfDay {
            start: 79_200_000,
            end: 3_600_000,
        };
        assert!(Constraint::is_active(Some(&night), 0));
        assert!(Constraint::is_active(Some(&night), 80_000_000 + DAY_MS * 3));
        assert!(!Constraint::is_active(Some(&night), 3_600_000));
        // Before 1970 too.
        assert!(Constraint::is_active(Some(&night), -1));
    }

    #[test]
    fn tiers_pick_the_highest_start_below_the_input() {
        let rate = Rate {
            base: 1,
            tiers: Box::new([
                Tier {
                    start: 100,
                    rate: 2,
                },
                Tier {
                    start: 200,
                    rate: 3,
                },
            ]),
        };
        assert_eq!(rate.at(0), 1);
        assert_eq!(rate.at(100), 1);
        assert_eq!(rate.at(101), 2);
        assert_eq!(rate.at(200), 2);
        assert_eq!(rate.at(201), 3);
    }
}
