//! What happened to calls, and what they cost over time: usage delivery (`POST /v1/usage`), the
//! call history (`GET /v1/events`), spend queries (`GET /v1/spend/breakdown|series`,
//! `GET /v1/budgets/{id}/windows`), and listing and revoking keys.
//!
//! Times in queries are Unix milliseconds; a range is `[from, to)` and defaults to the last 30
//! days up to now.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use bursora_core::NanoUsd;
use bursora_core::ledger::history::{
    Event, EventKind, EventQuery, GroupBy, SpendQuery, SpendRow, UsageItem, UsageOutcome,
};
use bursora_core::ledger::validate_reservation_id;
use bursora_core::window::{Window, format_utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    BudgetView, MAX_SETTLE_BATCH, Path, ProjectParam, amount, budget_view, call_of, find_budget,
    scope, tokens, usd,
};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{AppError, ErrorBody, Json, Query};
use crate::store::{Revoked, now_ms};

/// Default range of history and spend queries: the last 30 days.
pub const DEFAULT_RANGE_MS: i64 = 30 * 24 * 3_600_000;
/// Most events one page lists.
pub const MAX_EVENTS_PAGE: usize = 500;
/// Most buckets a series may span: a week of minutes.
pub const MAX_SERIES_BUCKETS: i64 = 10_080;
/// Most points one series answer holds (buckets × groups).
pub const MAX_SERIES_POINTS: usize = 100_000;

fn invalid(message: impl Into<String>) -> AppError {
    AppError::Client {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid_input",
        message: message.into(),
    }
}

fn bad_query(message: impl Into<String>) -> AppError {
    AppError::bad_request("invalid_query", message)
}

/// `[from, to)` from optional query bounds: the last 30 days up to now by default.
fn range(from: Option<i64>, to: Option<i64>) -> Result<(i64, i64), AppError> {
    // `to` is exclusive: a call made this millisecond is in the default range.
    let to = to.unwrap_or_else(|| now_ms().saturating_add(1));
    let from = from.unwrap_or_else(|| to.saturating_sub(DEFAULT_RANGE_MS).max(0));
    if from < 0 || to <= from {
        return Err(bad_query(format!(
            "the range from={from} to={to} is empty or negative: give Unix milliseconds with from < to"
        )));
    }
    Ok((from, to))
}

// ---------------------------------------------------------------------------------------------
// Usage

/// Usage of one call: a reservation's id settles it; any other id is recorded once.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct UsageItemBody {
    /// The call's id (8-64 characters of `[A-Za-z0-9_-]`): the reservation it settles, or the
    /// usage event's own id, which makes a repeat change nothing.
    id: String,
    /// The call's tags (at most 32).
    #[serde(default)]
    tags: BTreeMap<String, String>,
    provider: String,
    model: String,
    /// The call's true cost, 0 to 10^15 nano-USD.
    actual_nanos: i64,
    /// When the call was made (Unix ms, default now; later than now counts as now): its spend
    /// lands in the budgets' windows of that time.
    at_ms: Option<i64>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
}

/// A batch of 1 to 1000 usage items.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct UsageBody {
    items: Vec<UsageItemBody>,
}

/// What one usage item did.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UsageResult {
    id: String,
    /// `false` when this id had been delivered before: nothing changed.
    applied: bool,
    /// `settled` (the id named a reservation) or `recorded` (a usage event).
    kind: String,
}

/// `POST /v1/usage`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UsageResults {
    results: Vec<UsageResult>,
}

/// Delivers the usage of calls, exactly once per id: an id naming a reservation settles it
/// (as `/v1/settle` would); any other id is recorded once as spend in every matching budget's
/// window at `at_ms`. Never refuses: the calls already happened (the SDK's fail-open path).
#[utoipa::path(post, path = "/v1/usage", tag = "reservations", params(ProjectParam),
    request_body = UsageBody, security(("bearer" = [])),
    responses((status = 200, description = "one result per item, in order", body = UsageResults)))]
pub(super) async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Query(param): Query<ProjectParam>,
    Json(body): Json<UsageBody>,
) -> Result<Json<UsageResults>, AppError> {
    let project = scope(&state, &caller, param).await?;
    if body.items.is_empty() || body.items.len() > MAX_SETTLE_BATCH {
        return Err(AppError::bad_request(
            "invalid_input",
            format!("a batch holds 1 to {MAX_SETTLE_BATCH} items"),
        ));
    }
    let mut items = Vec::with_capacity(body.items.len());
    for mut item in body.items {
        validate_reservation_id(&item.id).map_err(|e| invalid(e.to_string()))?;
        if item.at_ms.is_some_and(|t| t < 0) {
            return Err(invalid("at_ms must be Unix milliseconds (0 or more)"));
        }
        items.push(UsageItem {
            call: call_of(&mut item.tags, &mut item.provider, &mut item.model)?,
            actual: amount(Some(item.actual_nanos), None, "actual")?,
            at_ms: item.at_ms,
            tokens: tokens(item.input_tokens, item.output_tokens)?,
            id: item.id,
        });
    }
    let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
    let outcomes = state.store.usage(&project, items).await?;
    let settled: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            UsageOutcome::Settled(s) => Some(Ok(*s)),
            UsageOutcome::Recorded(_) => None,
        })
        .collect();
    state.metrics.settlements(&settled);
    let results = ids
        .into_iter()
        .zip(outcomes)
        .map(|(id, o)| UsageResult {
            id,
            applied: o.applied(),
            kind: match o {
                UsageOutcome::Settled(_) => "settled",
                UsageOutcome::Recorded(_) => "recorded",
            }
            .to_owned(),
        })
        .collect();
    Ok(Json(UsageResults { results }))
}

// ---------------------------------------------------------------------------------------------
// Events

/// `GET /v1/events`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsParams {
    /// The project an admin key acts in.
    project: Option<String>,
    /// 1 to 500 (default 100).
    limit: Option<usize>,
    /// `next_cursor` of the previous page, unchanged.
    cursor: Option<String>,
    /// Comma list of `active`, `settled`, `released`, `expired`, `refused`, `usage`.
    kind: Option<String>,
    /// Only settled or expired reservations that cost more than they held.
    overrun: Option<bool>,
    /// At or after (Unix ms).
    from: Option<i64>,
    /// Before (Unix ms).
    to: Option<i64>,
}

/// The budget that refused a call.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RefusedByView {
    id: String,
    name: String,
    /// The template counter (`tenant_id=acme`), if the budget is a template.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

/// One call: a reservation in its current state, a refusal, or recorded usage.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EventView {
    /// The reservation's or usage item's id; `ref_...` for refusals.
    id: String,
    /// `active`, `settled`, `released`, `expired`, `refused` or `usage`.
    kind: String,
    /// When the call was reserved, refused or (usage) made: Unix ms.
    at_ms: i64,
    /// The same, RFC 3339 UTC.
    at: String,
    /// The call's tags (`{}` for calls recorded before history was kept).
    tags: BTreeMap<String, String>,
    /// `null` for calls recorded before history was kept.
    provider: Option<String>,
    /// `null` for calls recorded before history was kept.
    model: Option<String>,
    /// What was held (0 for refusals and usage).
    reserved_nanos: i64,
    /// What the call asked to reserve (usage: its cost); absent when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    requested_nanos: Option<i64>,
    /// What was counted as spent; `null` while active and for refusals.
    actual_nanos: Option<i64>,
    /// Spend beyond what was reserved (reservations only).
    overrun_nanos: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_tokens: Option<i64>,
    /// Refusals: the budget that refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<RefusedByView>,
}

fn event_view(e: Event) -> EventView {
    EventView {
        overrun_nanos: e.overrun().nanos(),
        kind: e.kind.as_str().to_owned(),
        at: format_utc(e.at_ms),
        at_ms: e.at_ms,
        tags: e.tags.unwrap_or_default(),
        provider: e.provider,
        model: e.model,
        reserved_nanos: e.reserved.nanos(),
        requested_nanos: e.requested.map(NanoUsd::nanos),
        actual_nanos: e.actual.map(NanoUsd::nanos),
        input_tokens: e.input_tokens,
        output_tokens: e.output_tokens,
        budget: e.refused_by.map(|b| RefusedByView {
            id: b.id,
            name: b.name,
            key: b.key,
        }),
        id: e.id,
    }
}

/// A page of events.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EventPage {
    /// Newest first.
    events: Vec<EventView>,
    /// Pass as `?cursor=` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// The cursor after `(at_ms, id)`: opaque to clients (hex of `at_ms:id`).
fn encode_cursor(at_ms: i64, id: &str) -> String {
    format!("{at_ms}:{id}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_cursor(cursor: &str) -> Result<(i64, String), AppError> {
    let bad = || bad_query("invalid cursor: pass next_cursor from the previous page unchanged");
    if !cursor.len().is_multiple_of(2) || cursor.len() > 400 {
        return Err(bad());
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (at, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((at.parse().map_err(|_| bad())?, id.to_owned()))
}

/// Lists the project's calls newest first: reservations (in their current state), refusals
/// and recorded usage, with cursor paging.
#[utoipa::path(get, path = "/v1/events", tag = "history", params(EventsParams),
    security(("bearer" = [])),
    responses((status = 200, description = "a page of events, newest first", body = EventPage)))]
pub(super) async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<EventsParams>,
) -> Result<Json<EventPage>, AppError> {
    let project = scope(&state, &caller, ProjectParam { project: p.project }).await?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=MAX_EVENTS_PAGE).contains(&limit) {
        return Err(bad_query(format!("limit is 1 to {MAX_EVENTS_PAGE}")));
    }
    let mut kinds = Vec::new();
    for k in p.kind.iter().flat_map(|k| k.split(',')) {
        let k = k.trim();
        if !k.is_empty() {
            kinds.push(EventKind::parse(k).map_err(|e| bad_query(e.to_string()))?);
        }
    }
    let before = p.cursor.as_deref().map(decode_cursor).transpose()?;
    let mut events = state
        .store
        .events(
            &project,
            EventQuery {
                kinds,
                overrun_only: p.overrun.unwrap_or(false),
                from_ms: p.from,
                to_ms: p.to,
                before,
                // One more than the page: whether there is a next one.
                limit: limit + 1,
            },
        )
        .await?;
    let next_cursor = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|e| encode_cursor(e.at_ms, &e.id))
    } else {
        None
    };
    Ok(Json(EventPage {
        events: events.into_iter().map(event_view).collect(),
        next_cursor,
    }))
}

// ---------------------------------------------------------------------------------------------
// Spend over time

/// `GET /v1/spend/breakdown`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct BreakdownParams {
    /// The project an admin key acts in.
    project: Option<String>,
    /// `model`, `provider` or `tag:<key>`.
    group_by: String,
    /// At or after (Unix ms); default 30 days before `to`.
    from: Option<i64>,
    /// Before (Unix ms); default now.
    to: Option<i64>,
    /// Most groups, biggest first: 1 to 1000 (default 100).
    limit: Option<usize>,
}

/// One group's spend.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct GroupView {
    /// The model, provider or tag value; `null` for calls without that tag.
    value: Option<String>,
    spent_nanos: i64,
    spent_usd: f64,
    /// Calls counted (settled and expired reservations, usage events).
    calls: u64,
}

/// `GET /v1/spend/breakdown`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Breakdown {
    group_by: String,
    from_ms: i64,
    to_ms: i64,
    /// By spend, biggest first.
    groups: Vec<GroupView>,
}

fn group_by(text: &str) -> Result<GroupBy, AppError> {
    GroupBy::parse(text).map_err(|e| bad_query(e.to_string()))
}

/// Spend over a range by model, provider or tag value: the actual cost of settled and expired
/// reservations (at their creation time) and of usage events (at their time).
#[utoipa::path(get, path = "/v1/spend/breakdown", tag = "history", params(BreakdownParams),
    security(("bearer" = [])),
    responses((status = 200, description = "spend per group, biggest first", body = Breakdown)))]
pub(super) async fn breakdown(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<BreakdownParams>,
) -> Result<Json<Breakdown>, AppError> {
    let project = scope(&state, &caller, ProjectParam { project: p.project }).await?;
    let group = group_by(&p.group_by)?;
    let (from_ms, to_ms) = range(p.from, p.to)?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(bad_query("limit is 1 to 1000"));
    }
    let rows = state
        .store
        .spend(
            &project,
            SpendQuery {
                from_ms,
                to_ms,
                bucket_ms: None,
                group_by: Some(group.clone()),
                limit,
            },
        )
        .await?;
    Ok(Json(Breakdown {
        group_by: group.name(),
        from_ms,
        to_ms,
        groups: rows
            .into_iter()
            .map(|r| GroupView {
                value: r.value,
                spent_nanos: r.spent.nanos(),
                spent_usd: usd(r.spent),
                calls: r.calls,
            })
            .collect(),
    }))
}

/// `GET /v1/spend/series`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SeriesParams {
    /// The project an admin key acts in.
    project: Option<String>,
    /// `minute`, `hour` or `day` (UTC-aligned).
    bucket: String,
    /// At or after (Unix ms); default 30 days before `to`.
    from: Option<i64>,
    /// Before (Unix ms); default now.
    to: Option<i64>,
    /// Optional: `model`, `provider` or `tag:<key>`: one point per bucket and value.
    group_by: Option<String>,
}

/// One bucket's spend (per group value when grouped).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PointView {
    /// Bucket start, Unix ms (UTC-aligned).
    start_ms: i64,
    /// With `group_by` only: the value (`null` for calls without that tag).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    value: Option<Option<String>>,
    spent_nanos: i64,
    spent_usd: f64,
    calls: u64,
}

/// `GET /v1/spend/series`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Series {
    bucket: String,
    from_ms: i64,
    to_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_by: Option<String>,
    /// Buckets with spend, oldest first (empty buckets are left out).
    points: Vec<PointView>,
}

/// Spend over time in UTC-aligned buckets, optionally per model, provider or tag value.
#[utoipa::path(get, path = "/v1/spend/series", tag = "history", params(SeriesParams),
    security(("bearer" = [])),
    responses((status = 200, description = "spend per bucket, oldest first", body = Series)))]
pub(super) async fn series(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<SeriesParams>,
) -> Result<Json<Series>, AppError> {
    let project = scope(&state, &caller, ProjectParam { project: p.project }).await?;
    let bucket_ms: i64 = match p.bucket.as_str() {
        "minute" => 60_000,
        "hour" => 3_600_000,
        "day" => 86_400_000,
        other => {
            return Err(bad_query(format!(
                "unknown bucket {other:?}: use minute, hour or day"
            )));
        }
    };
    let group = p.group_by.as_deref().map(group_by).transpose()?;
    let (from_ms, to_ms) = range(p.from, p.to)?;
    let buckets = (to_ms - from_ms).saturating_add(bucket_ms - 1) / bucket_ms;
    if buckets > MAX_SERIES_BUCKETS {
        return Err(bad_query(format!(
            "{buckets} {} buckets asked; a series spans at most {MAX_SERIES_BUCKETS}: narrow from/to or use a coarser bucket",
            p.bucket
        )));
    }
    let grouped = group.is_some();
    let rows: Vec<SpendRow> = state
        .store
        .spend(
            &project,
            SpendQuery {
                from_ms,
                to_ms,
                bucket_ms: Some(bucket_ms),
                group_by: group.clone(),
                limit: MAX_SERIES_POINTS + 1,
            },
        )
        .await?;
    if rows.len() > MAX_SERIES_POINTS {
        return Err(bad_query(format!(
            "more than {MAX_SERIES_POINTS} points: narrow from/to, use a coarser bucket, or group by something with fewer values"
        )));
    }
    Ok(Json(Series {
        bucket: p.bucket,
        from_ms,
        to_ms,
        group_by: group.map(|g| g.name()),
        points: rows
            .into_iter()
            .map(|r| PointView {
                start_ms: r.start_ms,
                value: grouped.then_some(r.value),
                spent_nanos: r.spent.nanos(),
                spent_usd: usd(r.spent),
                calls: r.calls,
            })
            .collect(),
    }))
}

/// `GET /v1/budgets/{id}/windows`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct WindowsParams {
    /// The project an admin key acts in.
    project: Option<String>,
    /// Windows containing or after this time (Unix ms); default 30 days before `to`.
    from: Option<i64>,
    /// Windows starting before this time (Unix ms); default now.
    to: Option<i64>,
    /// Most counters, newest first: 1 to 10000 (default 1000).
    limit: Option<usize>,
}

/// A budget counter in one window.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct WindowView {
    /// The tag value of a `*` template's counter; `null` otherwise.
    key: Option<String>,
    window_start_ms: i64,
    /// RFC 3339 UTC.
    window_start: String,
    /// `null` for `total`.
    resets_at_ms: Option<i64>,
    resets_at: Option<String>,
    spent_nanos: i64,
    spent_usd: f64,
    /// Held by live reservations (0 once a window's calls all ended).
    reserved_nanos: i64,
    reserved_usd: f64,
    overrun_nanos: i64,
}

/// `GET /v1/budgets/{id}/windows`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct WindowList {
    budget: BudgetView,
    /// Newest window first; per template value within a window.
    windows: Vec<WindowView>,
}

/// A budget's counters in past and current windows.
#[utoipa::path(get, path = "/v1/budgets/{id}/windows", tag = "budgets",
    params(("id" = String, Path, description = "the budget's id"), WindowsParams),
    security(("bearer" = [])),
    responses((status = 200, description = "the budget's counters per window, newest first", body = WindowList),
        (status = 404, description = "no such budget in this project", body = ErrorBody)))]
pub(super) async fn budget_windows(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(p): Query<WindowsParams>,
) -> Result<Json<WindowList>, AppError> {
    let project = scope(&state, &caller, ProjectParam { project: p.project }).await?;
    let budget = find_budget(&state, &project, &id).await?;
    let (from_ms, to_ms) = range(p.from, p.to)?;
    let limit = p.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(bad_query("limit is 1 to 10000"));
    }
    let window: Window = budget.spec.window;
    // The window that contains `from` counts too.
    let start = window.start_ms(from_ms);
    let rows = state
        .store
        .windows(&project, &budget.id, (start, to_ms), limit)
        .await?;
    Ok(Json(WindowList {
        budget: budget_view(&budget),
        windows: rows
            .into_iter()
            .map(|w| {
                let resets_at_ms = window.end_ms(w.window_start_ms);
                WindowView {
                    key: w.key,
                    window_start: format_utc(w.window_start_ms),
                    window_start_ms: w.window_start_ms,
                    resets_at: resets_at_ms.map(format_utc),
                    resets_at_ms,
                    spent_nanos: w.spent.nanos(),
                    spent_usd: usd(w.spent),
                    reserved_nanos: w.reserved.nanos(),
                    reserved_usd: usd(w.reserved),
                    overrun_nanos: w.overrun.nanos(),
                }
            })
            .collect(),
    }))
}

// ---------------------------------------------------------------------------------------------
// Keys (admin)

/// A key as listed: never its secret or hash.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct KeyView {
    id: String,
    name: String,
    /// The project it acts in.
    project: String,
    /// RFC 3339 UTC.
    created_at: String,
    created_at_ms: i64,
}

/// A project's keys.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct KeyList {
    keys: Vec<KeyView>,
}

/// Lists a project's keys (ids and names; secrets are never shown again).
#[utoipa::path(get, path = "/v1/projects/{id}/keys", tag = "projects",
    params(("id" = String, Path, description = "the project's id")),
    security(("bearer" = [])),
    responses((status = 200, description = "the project's keys, oldest first", body = KeyList),
        (status = 403, description = "needs an admin key", body = ErrorBody),
        (status = 404, description = "no such project", body = ErrorBody)))]
pub(super) async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
) -> Result<Json<KeyList>, AppError> {
    caller.require_admin()?;
    let project = state
        .store
        .project(&project)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no project {project:?}")))?;
    let keys = state.store.keys(&project.id).await?;
    Ok(Json(KeyList {
        keys: keys
            .into_iter()
            .map(|k| KeyView {
                id: k.id,
                name: k.name,
                project: project.id.clone(),
                created_at: format_utc(k.created_at_ms),
                created_at_ms: k.created_at_ms,
            })
            .collect(),
    }))
}

/// Revokes a key: from now on it answers 401. The last admin key cannot be revoked.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "projects",
    params(("id" = String, Path, description = "the key's id (`key_...`)")),
    security(("bearer" = [])),
    responses((status = 204, description = "revoked"),
        (status = 403, description = "needs an admin key", body = ErrorBody),
        (status = 404, description = "no such key", body = ErrorBody),
        (status = 409, description = "`last_admin_key`: the only admin key cannot be revoked", body = ErrorBody)))]
pub(super) async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    caller.require_admin()?;
    match state.store.revoke_key(&id).await? {
        Revoked::Revoked => {
            // Revoked through this replica: it stops working here at once (other replicas
            // forget it within their key cache's TTL, `--key-cache-ms`).
            state.keys.clear();
            Ok(StatusCode::NO_CONTENT)
        }
        Revoked::NotFound => Err(AppError::NotFound(format!("no key {id:?}"))),
        Revoked::LastAdmin => Err(AppError::Client {
            status: StatusCode::CONFLICT,
            code: "last_admin_key",
            message:
                "this is the only admin key: add another admin key (--admin-key) before revoking it"
                    .into(),
        }),
    }
}
