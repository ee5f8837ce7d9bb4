//! bursora-server's JSON shapes, as the SDK sends and reads them (`crates/server/src/api.rs`
//! is the other side; its OpenAPI document at `/v1/openapi.json` describes them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};

use crate::budget::Tags;

/// Tags on the wire: a JSON object.
pub(crate) fn tags<S: Serializer>(tags: &Tags, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(tags.iter())
}

/// `POST /v1/reserve`.
#[derive(Debug, Serialize)]
pub(crate) struct ReserveBody<'a> {
    /// Chosen here, so a retry (on this replica or another) replays instead of reserving twice,
    /// and a reservation whose answer was lost can still be settled or released by id.
    pub id: &'a str,
    #[serde(serialize_with = "tags")]
    pub tags: &'a Tags,
    pub provider: &'a str,
    pub model: &'a str,
    pub amount_nanos: i64,
    pub policy: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_nanos: Option<i64>,
    pub ttl_ms: i64,
}

/// `POST /v1/reserve` → 200.
#[derive(Debug, Deserialize)]
pub(crate) struct Reserved {
    pub id: String,
    pub amount_nanos: i64,
    pub capped: bool,
    #[serde(default)]
    pub budgets: usize,
    pub expires_at_ms: i64,
    /// The id already named this reservation (a retry): nothing was reserved again.
    #[serde(default)]
    pub replayed: bool,
    /// `active`, or how a replayed reservation already ended.
    #[serde(default = "active")]
    pub status: String,
}

fn active() -> String {
    "active".to_owned()
}

/// Every error answer: `{ error: { code, message, budget? } }`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub budget: Option<ExceededBudget>,
}

/// The budget that refused a reservation (409 `budget_exceeded`).
#[derive(Debug, Deserialize)]
pub(crate) struct ExceededBudget {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub key: Option<String>,
    pub window: String,
    pub limit_nanos: i64,
    pub spent_nanos: i64,
    pub reserved_nanos: i64,
    pub requested_nanos: i64,
    #[serde(default)]
    pub resets_at_ms: Option<i64>,
}

/// One item of `POST /v1/settle`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SettleItem {
    pub id: String,
    /// `null` releases; the field is always present.
    pub actual_nanos: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
}

/// One item of `POST /v1/usage`: spend of a call that went out without a reservation. If a
/// reservation with this id exists (the reserve reached the server but its answer did not come
/// back), the server settles it instead; either way it counts once.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct UsageItem {
    pub id: String,
    pub tags: BTreeMap<String, String>,
    pub provider: String,
    pub model: String,
    pub actual_nanos: i64,
    pub at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Batch<'a, T> {
    pub items: &'a [T],
}

/// `POST /v1/settle` / `POST /v1/usage` → 200: one result per item, in order.
#[derive(Debug, Deserialize)]
pub(crate) struct BatchResults {
    pub results: Vec<ItemResult>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ItemResult {
    #[serde(default)]
    pub applied: Option<bool>,
    #[serde(default)]
    pub reserved_nanos: Option<i64>,
    #[serde(default)]
    pub actual_nanos: Option<i64>,
    #[serde(default)]
    pub overrun_nanos: Option<i64>,
    #[serde(default)]
    pub error: Option<ItemError>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ItemError {
    pub code: String,
    pub message: String,
}

/// `POST /v1/extend`.
#[derive(Debug, Serialize)]
pub(crate) struct ExtendBody<'a> {
    pub id: &'a str,
    pub ttl_ms: i64,
}

/// `GET /v1/spend` → 200.
#[derive(Debug, Deserialize)]
pub(crate) struct SpendList {
    pub budgets: Vec<Counter>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Counter {
    pub id: String,
    pub name: String,
    #[serde(rename = "match", default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub key: Option<String>,
    pub window: String,
    pub mode: String,
    pub limit_nanos: i64,
    pub spent_nanos: i64,
    pub reserved_nanos: i64,
    #[serde(default)]
    pub overrun_nanos: i64,
    pub window_start_ms: i64,
    #[serde(default)]
    pub resets_at_ms: Option<i64>,
}
