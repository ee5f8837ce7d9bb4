//! Alert routes: webhooks per project, thresholds per budget, and the alerts sent
//! ([`crate::alerts`] evaluates and delivers them).
//!
//! | route | who | what |
//! |---|---|---|
//! | `POST /v1/webhooks` | admin | add a webhook `{url, format: "json"\|"slack", name?}` |
//! | `GET /v1/webhooks` | project, admin | the project's webhooks (URLs shown as `scheme://host/…`) |
//! | `DELETE /v1/webhooks/{id}` | admin | remove one |
//! | `PUT /v1/budgets/{id}/alerts` | admin | set the budget's thresholds `{thresholds: [50, 80, 100]}` |
//! | `GET /v1/budgets/{id}/alerts` | project, admin | read them |
//! | `GET /v1/alerts` | project, admin | alerts sent, newest first, with delivery status |

use axum::extract::State;
use axum::http::StatusCode;
use bursora_core::window::format_utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Path, ProjectParam, find_budget, scope, usd};
use crate::AppState;
use crate::alerts::host_of;
use crate::auth::Caller;
use crate::error::{AppError, ErrorBody, Json, Query};
use crate::store::{Alert, Webhook, WebhookFormat, new_id, now_ms};

/// Most webhooks of one project: each alert is POSTed to every one of them.
pub const MAX_WEBHOOKS: usize = 10;
/// Longest webhook URL accepted.
pub const MAX_URL_BYTES: usize = 2048;
/// Most thresholds on one budget.
pub const MAX_THRESHOLDS: usize = 10;
/// Highest threshold, percent: a `notify` budget may run far past its limit.
pub const MAX_THRESHOLD_PCT: u16 = 1000;

fn invalid(message: impl Into<String>) -> AppError {
    AppError::bad_request("invalid_input", message)
}

/// A webhook to add.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct WebhookBody {
    /// `http://` or `https://`. It may carry a secret (Slack's do): the server never shows it
    /// back whole nor logs more than its host.
    url: String,
    /// `json` (the generic document) or `slack` (`{text}`, for Slack-compatible webhooks).
    format: String,
    /// A label (default: the URL's host).
    name: Option<String>,
}

/// A webhook, its URL reduced to scheme and host.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct WebhookView {
    id: String,
    name: String,
    /// `scheme://host/…`: the path, which may be a secret, is never shown.
    url: String,
    /// `json` or `slack`.
    format: String,
    created_at: String,
    created_at_ms: i64,
}

fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), host_of(url)),
        Err(_) => "…".into(),
    }
}

fn webhook_view(w: &Webhook) -> WebhookView {
    WebhookView {
        id: w.id.clone(),
        name: w.name.clone(),
        url: redacted(&w.url),
        format: w.format.as_str().to_owned(),
        created_at: format_utc(w.created_at_ms),
        created_at_ms: w.created_at_ms,
    }
}

/// The project's webhooks.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct WebhookList {
    webhooks: Vec<WebhookView>,
}

fn check_url(url: &str) -> Result<(), AppError> {
    if url.len() > MAX_URL_BYTES {
        return Err(invalid(format!(
            "a webhook URL is at most {MAX_URL_BYTES} bytes"
        )));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        invalid(format!(
            "the webhook URL does not parse ({e}): give http(s)://host/path"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid(
            "a webhook URL must be http:// or https:// with a host",
        ));
    }
    Ok(())
}

/// Adds a webhook to the project: every alert of its budgets is POSTed to it.
#[utoipa::path(post, path = "/v1/webhooks", tag = "alerts", params(ProjectParam),
    request_body = WebhookBody, security(("bearer" = [])),
    responses((status = 201, description = "added", body = WebhookView),
        (status = 403, description = "needs an admin key", body = ErrorBody)))]
pub(super) async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Query(param): Query<ProjectParam>,
    Json(body): Json<WebhookBody>,
) -> Result<(StatusCode, Json<WebhookView>), AppError> {
    caller.require_admin()?;
    let project = scope(&state, &caller, param).await?;
    check_url(&body.url)?;
    let format = WebhookFormat::parse(&body.format)
        .ok_or_else(|| invalid("a webhook's format is \"json\" or \"slack\""))?;
    let name = super::label(body.name, &host_of(&body.url))?;
    if state.store.webhooks(&project).await?.len() >= MAX_WEBHOOKS {
        return Err(invalid(format!(
            "a project has at most {MAX_WEBHOOKS} webhooks: delete one first"
        )));
    }
    let webhook = Webhook {
        id: new_id("whk_", 20),
        project,
        name,
        url: body.url,
        format,
        created_at_ms: now_ms(),
    };
    state.store.create_webhook(&webhook).await?;
    Ok((StatusCode::CREATED, Json(webhook_view(&webhook))))
}

/// Lists the project's webhooks.
#[utoipa::path(get, path = "/v1/webhooks", tag = "alerts", params(ProjectParam),
    security(("bearer" = [])),
    responses((status = 200, description = "the project's webhooks, oldest first", body = WebhookList)))]
pub(super) async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
    Query(param): Query<ProjectParam>,
) -> Result<Json<WebhookList>, AppError> {
    let project = scope(&state, &caller, param).await?;
    let webhooks = state.store.webhooks(&project).await?;
    Ok(Json(WebhookList {
        webhooks: webhooks.iter().map(webhook_view).collect(),
    }))
}

/// Removes a webhook.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "alerts",
    params(("id" = String, Path, description = "the webhook's id"), ProjectParam),
    security(("bearer" = [])),
    responses((status = 204, description = "removed"),
        (status = 403, description = "needs an admin key", body = ErrorBody),
        (status = 404, description = "no such webhook in this project", body = ErrorBody)))]
pub(super) async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(param): Query<ProjectParam>,
) -> Result<StatusCode, AppError> {
    caller.require_admin()?;
    let project = scope(&state, &caller, param).await?;
    if state.store.delete_webhook(&project, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound(format!("no webhook {id:?}")))
    }
}

/// A budget's alert thresholds.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct ThresholdsBody {
    /// Percent of the limit, each 1 to 1000, at most 10 (`[]` turns alerts off). Each alerts
    /// once per window (per counter for `*` templates) when settled spend reaches it.
    thresholds: Vec<u16>,
}

/// A budget's alert thresholds, sorted.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ThresholdsView {
    budget_id: String,
    thresholds: Vec<u16>,
}

/// Sets a budget's alert thresholds (replaces them; `[]` turns its alerts off).
#[utoipa::path(put, path = "/v1/budgets/{id}/alerts", tag = "alerts",
    params(("id" = String, Path, description = "the budget's id"), ProjectParam),
    request_body = ThresholdsBody, security(("bearer" = [])),
    responses((status = 200, description = "the thresholds now", body = ThresholdsView),
        (status = 403, description = "needs an admin key", body = ErrorBody),
        (status = 404, description = "no such budget in this project", body = ErrorBody)))]
pub(super) async fn put_thresholds(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(param): Query<ProjectParam>,
    Json(body): Json<ThresholdsBody>,
) -> Result<Json<ThresholdsView>, AppError> {
    caller.require_admin()?;
    let project = scope(&state, &caller, param).await?;
    let mut thresholds = body.thresholds;
    if thresholds.len() > MAX_THRESHOLDS {
        return Err(invalid(format!(
            "a budget has at most {MAX_THRESHOLDS} thresholds"
        )));
    }
    if let Some(bad) = thresholds
        .iter()
        .find(|t| !(1..=MAX_THRESHOLD_PCT).contains(t))
    {
        return Err(invalid(format!(
            "threshold {bad} is out of range: give percents of the limit from 1 to {MAX_THRESHOLD_PCT}"
        )));
    }
    thresholds.sort_unstable();
    thresholds.dedup();
    let budget = find_budget(&state, &project, &id).await?;
    state
        .store
        .set_alert_thresholds(&project, &budget.id, &thresholds)
        .await?;
    Ok(Json(ThresholdsView {
        budget_id: budget.id.to_string(),
        thresholds,
    }))
}

/// Reads a budget's alert thresholds (`[]` when it has none).
#[utoipa::path(get, path = "/v1/budgets/{id}/alerts", tag = "alerts",
    params(("id" = String, Path, description = "the budget's id"), ProjectParam),
    security(("bearer" = [])),
    responses((status = 200, description = "the thresholds", body = ThresholdsView),
        (status = 404, description = "no such budget in this project", body = ErrorBody)))]
pub(super) async fn get_thresholds(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(param): Query<ProjectParam>,
) -> Result<Json<ThresholdsView>, AppError> {
    let project = scope(&state, &caller, param).await?;
    let budget = find_budget(&state, &project, &id).await?;
    let thresholds = state.store.alert_thresholds(&project, &budget.id).await?;
    Ok(Json(ThresholdsView {
        budget_id: budget.id.to_string(),
        thresholds,
    }))
}

/// `GET /v1/alerts`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AlertsQuery {
    /// The project an admin key acts in; a project key may omit it or name its own.
    project: Option<String>,
    /// How many, 1 to 500 (default 100).
    limit: Option<u32>,
}

/// The budget an alert is about, as it was when the threshold was crossed.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AlertBudget {
    id: String,
    name: String,
    /// The tag value of a `*` template's counter; `null` otherwise.
    key: Option<String>,
    window: String,
    limit_nanos: i64,
    limit_usd: f64,
    /// Settled spend when the crossing was seen.
    spent_nanos: i64,
    spent_usd: f64,
}

/// An alert and where its delivery stands.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AlertView {
    id: String,
    budget: AlertBudget,
    /// The threshold crossed, percent of the limit.
    threshold_pct: u16,
    window_start: String,
    window_start_ms: i64,
    /// `null` for `total`.
    resets_at: Option<String>,
    resets_at_ms: Option<i64>,
    created_at: String,
    created_at_ms: i64,
    /// `pending` (retrying), `delivered` (every webhook took it), `failed` (gave up) or
    /// `no_webhooks` (the project had none).
    status: String,
    /// Delivery attempts so far.
    attempts: u32,
    /// Why the last attempt failed (hosts only).
    last_error: Option<String>,
    delivered_at: Option<String>,
    delivered_at_ms: Option<i64>,
}

fn alert_view(a: &Alert) -> AlertView {
    let w = &a.what;
    AlertView {
        id: a.id.clone(),
        budget: AlertBudget {
            id: w.budget_id.clone(),
            name: w.budget_name.clone(),
            key: w.key.clone(),
            window: w.window.clone(),
            limit_nanos: w.limit_nanos,
            limit_usd: usd(bursora_core::NanoUsd::from_nanos_clamped(w.limit_nanos)),
            spent_nanos: w.spent_nanos,
            spent_usd: usd(bursora_core::NanoUsd::from_nanos_clamped(w.spent_nanos)),
        },
        threshold_pct: w.threshold_pct,
        window_start: format_utc(w.window_start_ms),
        window_start_ms: w.window_start_ms,
        resets_at: w.resets_at_ms.map(format_utc),
        resets_at_ms: w.resets_at_ms,
        created_at: format_utc(a.created_at_ms),
        created_at_ms: a.created_at_ms,
        status: a.status.as_str().to_owned(),
        attempts: a.attempts,
        last_error: a.last_error.clone(),
        delivered_at: a.delivered_at_ms.map(format_utc),
        delivered_at_ms: a.delivered_at_ms,
    }
}

/// `GET /v1/alerts`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AlertList {
    alerts: Vec<AlertView>,
}

/// The project's alerts, newest first, with their delivery status (for the dashboard).
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts", params(AlertsQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "alerts, newest first", body = AlertList)))]
pub(super) async fn list_alerts(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AlertsQuery>,
) -> Result<Json<AlertList>, AppError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(invalid("limit is 1 to 500"));
    }
    let project = scope(&state, &caller, ProjectParam { project: q.project }).await?;
    let alerts = state.store.alerts(&project, limit).await?;
    Ok(Json(AlertList {
        alerts: alerts.iter().map(alert_view).collect(),
    }))
}

/// Adds the alert routes to the API's router.
pub(super) fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    use axum::routing::{delete, get, put};
    router
        .route("/v1/webhooks", get(list_webhooks).post(create_webhook))
        .route("/v1/webhooks/{id}", delete(delete_webhook))
        .route(
            "/v1/budgets/{id}/alerts",
            put(put_thresholds).get(get_thresholds),
        )
        .route("/v1/alerts", get(list_alerts))
}
