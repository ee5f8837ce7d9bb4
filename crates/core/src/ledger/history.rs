//! What a ledger remembers about calls after deciding them: each reservation's tags, provider,
//! model and tokens, usage recorded without a reservation, and refusals. The server lists them
//! (`GET /v1/events`) and sums spend over time from them (`GET /v1/spend/breakdown|series`).
//!
//! The types here are shared by [`SqliteLedger`](super::SqliteLedger) and the server's Postgres
//! store, so both answer the same questions the same way. Every row lives in the one
//! `reservations` table, its `state` being the event's kind: ids of reservations and usage
//! events share one namespace per ledger, which is what makes a usage item naming a
//! reservation settle it instead of counting twice.

use std::collections::BTreeMap;

use crate::budget::CallTags;
use crate::error::{Error, Result};
use crate::money::NanoUsd;

use super::Settlement;

/// What an event is: a reservation in its current state, a refusal, or usage recorded without a
/// reservation. `as_str` is both the wire name and the stored `state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A reservation not yet settled.
    Active,
    /// A reservation settled to the provider's usage.
    Settled,
    /// A reservation released (the call cost nothing).
    Released,
    /// A reservation counted at its reserved amount after its TTL.
    Expired,
    /// A reserve refused with `budget_exceeded`: nothing was reserved.
    Refused,
    /// Spend recorded without a reservation (usage of calls made while the server was away).
    Usage,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [Self; 6] = [
        Self::Active,
        Self::Settled,
        Self::Released,
        Self::Expired,
        Self::Refused,
        Self::Usage,
    ];

    /// `active`, `settled`, `released`, `expired`, `refused` or `usage`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Settled => "settled",
            Self::Released => "released",
            Self::Expired => "expired",
            Self::Refused => "refused",
            Self::Usage => "usage",
        }
    }

    /// The kind named `s`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the kinds there are.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown event kind {s:?}: use active, settled, released, expired, refused or usage"
                ))
            })
    }

    /// True for the states of a reservation (the rows a settle may end).
    #[must_use]
    pub const fn is_reservation(self) -> bool {
        matches!(
            self,
            Self::Active | Self::Settled | Self::Released | Self::Expired
        )
    }
}

/// The budget that refused a call, as a refusal event keeps it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RefusedBy {
    /// Budget id.
    pub id: String,
    /// Budget name.
    pub name: String,
    /// The template counter (`tenant_id=acme`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// One remembered call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The reservation's id, the usage item's id, or a generated `ref_...` for a refusal.
    pub id: String,
    /// What it is now.
    pub kind: EventKind,
    /// When the call was reserved, refused or (for usage) made, Unix ms.
    pub at_ms: i64,
    /// The call's tags; `None` for rows written before history was kept.
    pub tags: Option<BTreeMap<String, String>>,
    /// Provider; `None` for rows written before history was kept.
    pub provider: Option<String>,
    /// Model; `None` for rows written before history was kept.
    pub model: Option<String>,
    /// What the call asked to reserve (for usage: its cost), when known.
    pub requested: Option<NanoUsd>,
    /// What was held (zero for refusals and usage).
    pub reserved: NanoUsd,
    /// What was counted as spent; `None` while active and for refusals.
    pub actual: Option<NanoUsd>,
    /// Tokens the settlement reported, if any.
    pub input_tokens: Option<i64>,
    /// Tokens the settlement reported, if any.
    pub output_tokens: Option<i64>,
    /// For refusals: the budget that refused.
    pub refused_by: Option<RefusedBy>,
}

impl Event {
    /// Spend beyond the reservation (reservations only; usage was never reserved).
    #[must_use]
    pub fn overrun(&self) -> NanoUsd {
        match (self.kind.is_reservation(), self.actual) {
            (true, Some(actual)) => actual.saturating_sub(self.reserved),
            _ => NanoUsd::ZERO,
        }
    }
}

/// Which events to list, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Only these kinds; empty is every kind.
    pub kinds: Vec<EventKind>,
    /// Only reservations whose actual cost exceeded what they held.
    pub overrun_only: bool,
    /// At or after (Unix ms).
    pub from_ms: Option<i64>,
    /// Before (Unix ms, exclusive).
    pub to_ms: Option<i64>,
    /// Strictly older than this `(at_ms, id)`: the last event of the previous page.
    pub before: Option<(i64, String)>,
    /// At most this many.
    pub limit: usize,
}

/// How spend is grouped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// By model.
    Model,
    /// By provider.
    Provider,
    /// By the value of one tag (calls without it form the `None` group).
    Tag(String),
}

impl GroupBy {
    /// `model`, `provider` or `tag:<key>`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for anything else or an invalid tag key.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "model" => Ok(Self::Model),
            "provider" => Ok(Self::Provider),
            _ => match s.strip_prefix("tag:") {
                Some(key) => {
                    crate::budget::validate_tag_key(key)?;
                    Ok(Self::Tag(key.to_owned()))
                }
                None => Err(Error::invalid(format!(
                    "cannot group by {s:?}: use model, provider or tag:<key>"
                ))),
            },
        }
    }

    /// The wire name.
    #[must_use]
    pub fn name(&self) -> String {
        match self {
            Self::Model => "model".into(),
            Self::Provider => "provider".into(),
            Self::Tag(k) => format!("tag:{k}"),
        }
    }
}

/// A spend question: the calls made in `[from_ms, to_ms)`, optionally bucketed and grouped.
///
/// Spend is the actual cost of settled and expired reservations, counted at the reservation's
/// creation (the window its counters use), plus usage events at their time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpendQuery {
    /// Start, inclusive (Unix ms).
    pub from_ms: i64,
    /// End, exclusive (Unix ms).
    pub to_ms: i64,
    /// Bucket length in ms (UTC-aligned from the epoch); `None` is one bucket for the range.
    pub bucket_ms: Option<i64>,
    /// Grouping; `None` is one group.
    pub group_by: Option<GroupBy>,
    /// At most this many rows, biggest spend first when not bucketed, by time when bucketed.
    pub limit: usize,
}

/// One row of a spend answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpendRow {
    /// Bucket start (Unix ms); the range's start when not bucketed.
    pub start_ms: i64,
    /// The group's value; `None` for calls without it (or when not grouped).
    pub value: Option<String>,
    /// Summed actual cost.
    pub spent: NanoUsd,
    /// How many calls.
    pub calls: u64,
}

/// A budget's counter in one window, past or current.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowFigures {
    /// For templates, `key=value`; `None` for plain budgets.
    pub key: Option<String>,
    /// Window start (Unix ms).
    pub window_start_ms: i64,
    /// Settled spend.
    pub spent: NanoUsd,
    /// Held by live reservations.
    pub reserved: NanoUsd,
    /// Spend beyond what was reserved.
    pub overrun: NanoUsd,
}

/// Tokens a settlement or usage report carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Input tokens, if reported.
    pub input: Option<i64>,
    /// Output tokens, if reported.
    pub output: Option<i64>,
}

/// A settlement (`Some(actual)`) or release (`None`) with the tokens the provider reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettleWith {
    /// The reservation's id.
    pub id: String,
    /// The true cost; `None` releases.
    pub actual: Option<NanoUsd>,
    /// Tokens to remember.
    pub tokens: Tokens,
}

/// Usage of a call that may or may not have been reserved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageItem {
    /// The call's id: a reservation's (then it is settled) or a new usage event's.
    pub id: String,
    /// Tags, provider and model.
    pub call: CallTags,
    /// The true cost.
    pub actual: NanoUsd,
    /// When the call was made (Unix ms); later than now counts as now.
    pub at_ms: Option<i64>,
    /// Tokens to remember.
    pub tokens: Tokens,
}

/// What a usage item did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageOutcome {
    /// Its id named a reservation, which was settled (or had been: see `applied`).
    Settled(Settlement),
    /// It was recorded as a usage event now (`true`) or had been already (`false`).
    Recorded(bool),
}

impl UsageOutcome {
    /// False when this item had been delivered before and nothing changed.
    #[must_use]
    pub const fn applied(&self) -> bool {
        match self {
            Self::Settled(s) => s.applied,
            Self::Recorded(applied) => *applied,
        }
    }
}

/// Tags as stored: a JSON object.
#[must_use]
pub fn tags_json(call: &CallTags) -> String {
    let map: BTreeMap<&str, &str> = call.tags.iter().collect();
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
}

/// Stored tags back into a map; malformed text reads as no tags rather than failing a listing.
#[must_use]
pub fn parse_tags(text: &str) -> BTreeMap<String, String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// A refusal's id: random, so it never names a reservation a client could repeat.
#[must_use]
pub fn new_refusal_id() -> String {
    format!("ref_{}", uuid::Uuid::new_v4().simple())
}

/// The SQL (`AND ...`, or nothing) that keeps only `kinds` (all when empty) and, with
/// `overrun_only`, reservations that cost more than they held. Only our own constants go in.
#[must_use]
pub fn kind_filter_sql(kinds: &[EventKind], overrun_only: bool) -> String {
    let mut sql = String::new();
    if !kinds.is_empty() {
        let list: Vec<String> = kinds.iter().map(|k| format!("'{}'", k.as_str())).collect();
        sql.push_str(&format!(" AND state IN ({})", list.join(", ")));
    }
    if overrun_only {
        sql.push_str(" AND state IN ('settled', 'expired') AND actual > amount");
    }
    sql
}

/// An event row as both stores read it, before its text columns are parsed.
#[derive(Debug)]
#[allow(missing_docs)]
pub struct StoredEvent {
    pub id: String,
    pub state: String,
    pub at_ms: i64,
    pub tags: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub requested: Option<i64>,
    pub amount: i64,
    pub actual: Option<i64>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub refused_by: Option<String>,
}

impl StoredEvent {
    /// The event.
    ///
    /// # Errors
    /// [`Error::Storage`] for a state no Bursora writes.
    pub fn into_event(self) -> Result<Event> {
        let kind = EventKind::parse(&self.state).map_err(|_| Error::Storage {
            message: format!("event {:?} has an unknown state {:?}", self.id, self.state),
        })?;
        let actual = match kind {
            EventKind::Active | EventKind::Refused => None,
            _ => self.actual.map(NanoUsd::from_nanos_clamped),
        };
        Ok(Event {
            id: self.id,
            kind,
            at_ms: self.at_ms,
            tags: self.tags.as_deref().map(parse_tags),
            provider: self.provider,
            model: self.model,
            requested: self.requested.map(NanoUsd::from_nanos_clamped),
            reserved: NanoUsd::from_nanos_clamped(self.amount),
            actual,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            refused_by: self
                .refused_by
                .as_deref()
                .and_then(|t| serde_json::from_str::<RefusedBy>(t).ok()),
        })
    }
}
