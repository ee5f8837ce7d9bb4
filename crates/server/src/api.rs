//! The HTTP/JSON API under `/v1` (SPEC §6).
//!
//! Money crosses the wire as exact integer nano-USD (`*_nanos`); USD floats (`*_usd`) are
//! accepted where a person types a number and returned alongside for display.
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /healthz` | anyone | the store answers |
//! | `GET /v1/openapi.json` | anyone | this table in OpenAPI 3.1, generated from the handlers ([`ApiDoc`]) |
//! | `GET /metrics` | anyone | Prometheus counters and latency histograms ([`crate::metrics`]) |
//! | `POST /v1/reserve` | project | reserve; `409 budget_exceeded` when a block budget cannot take it |
//! | `POST /v1/settle` | project | settle/release a batch, idempotent by id, one result per item |
//! | `POST /v1/release` | project | release one reservation |
//! | `POST /v1/extend` | project | renew a live reservation's TTL (`active: false` once it ended) |
//! | `GET /v1/budgets`, `GET /v1/budgets/{id}` | project, admin | read budgets |
//! | `POST /v1/budgets`, `PUT/DELETE /v1/budgets/{id}` | admin | upsert by name, update, delete |
//! | `GET /v1/budgets/{id}/windows` | project, admin | a budget's counters in past windows |
//! | `GET /v1/spend` | project, admin | every counter in its current window |
//! | `GET /v1/spend/breakdown`, `GET /v1/spend/series` | project, admin | spend over a range by group / bucket |
//! | `POST /v1/usage` | project | deliver usage exactly once per id (settles or records) |
//! | `GET /v1/events` | project, admin | the call history, newest first, cursor paging |
//! | `GET/POST /v1/projects`, `GET/POST /v1/projects/{id}/keys` | admin | projects, project keys |
//! | `DELETE /v1/keys/{id}` | admin | revoke a key |
//!
//! A project key acts in its own project. An admin key names the project with `?project=<id>`.
//! Anything outside the caller's project answers 404, exactly like something that does not exist.

use std::collections::BTreeMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Router, extract, middleware};
use bursora_core::NanoUsd;
use bursora_core::budget::{
    Budget, BudgetSpec, CallTags, MAX_BUDGET_NAME_BYTES, MAX_TAGS, Mode, Selector, Tags,
    validate_tag_value,
};
use bursora_core::ledger::history::{SettleWith, Tokens};
use bursora_core::ledger::{BudgetStatus, DEFAULT_TTL_MS, Policy, Settlement};
use bursora_core::window::{Window, format_utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

mod alerts;
mod history;
mod openapi;

pub use openapi::ApiDoc;

use crate::AppState;
use crate::auth::{Caller, PROJECT_PREFIX, key_record, new_secret};
use crate::error::{AppError, ErrorBody, ErrorDetail, Json, Query};
use crate::store::{Principal, Project, ReserveInput};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Most items in one settlement batch.
pub const MAX_SETTLE_BATCH: usize = 1_000;
/// Largest amount one call may reserve: $1,000,000. No LLM call costs that; the bound keeps
/// counters far from `i64` overflow however many calls a window holds.
pub const MAX_AMOUNT_NANOS: i64 = 1_000_000 * 1_000_000_000;

/// The API's router over `state`.
pub fn router(state: AppState) -> Router {
    alerts::routes(Router::new())
        .route("/healthz", get(healthz))
        .route("/v1/reserve", post(reserve))
        .route("/v1/settle", post(settle))
        .route("/v1/release", post(release))
        .route("/v1/extend", post(extend))
        .route("/v1/budgets", get(list_budgets).post(upsert_budget))
        .route(
            "/v1/budgets/{id}",
            get(get_budget).put(put_budget).delete(delete_budget),
        )
        .route("/v1/budgets/{id}/windows", get(history::budget_windows))
        .route("/v1/spend", get(spend))
        .route("/v1/spend/breakdown", get(history::breakdown))
        .route("/v1/spend/series", get(history::series))
        .route("/v1/usage", post(history::usage))
        .route("/v1/events", get(history::events))
        .route("/v1/projects", get(list_projects).post(create_project))
        .route(
            "/v1/projects/{id}/keys",
            get(history::list_keys).post(create_key),
        )
        .route("/v1/keys/{id}", axum::routing::delete(history::revoke_key))
        .route("/v1/openapi.json", get(openapi::serve))
        .route("/metrics", get(metrics))
        .merge(crate::dashboard::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track_latency,
        ))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// `axum::extract::Path` whose rejection is our error shape.
#[derive(Debug, FromRequestParts)]
#[from_request(via(extract::Path), rejection(AppError))]
struct Path<T>(T);

impl From<PathRejection> for AppError {
    fn from(r: PathRejection) -> Self {
        Self::bad_request("invalid_path", r.body_text())
    }
}

async fn no_route() -> AppError {
    AppError::NotFound("no such route; the API lives under /v1".into())
}

async fn wrong_method() -> AppError {
    AppError::Client {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: "this route does not take that method".into(),
    }
}

/// `GET /healthz`'s answer.
#[derive(Debug, Serialize, ToSchema)]
struct Health {
    /// Always `ok`: a failing store answers 503 instead.
    status: String,
}

/// Whether the store answers.
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "the store answers", body = Health), (status = 503, description = "the store failed", body = ErrorBody)))]
async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, AppError> {
    state.store.ping().await?;
    Ok(Json(Health {
        status: "ok".into(),
    }))
}

/// Prometheus text; no key, like `/healthz` (it holds no tenant data).
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text format 0.0.4: reservation decisions, settlements, settled nano-USD, latency per route", body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// `?project=<id>`: which project an admin key acts in.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ProjectParam {
    /// The project an admin key acts in; a project key may omit it or name its own.
    project: Option<String>,
}

/// The project the request acts in: the key's own, or the one an admin names.
async fn scope(state: &AppState, caller: &Caller, param: ProjectParam) -> Result<String, AppError> {
    match (&caller.0, param.project) {
        (Principal::Project(own), None) => Ok(own.clone()),
        (Principal::Project(own), Some(p)) if *own == p => Ok(p),
        (Principal::Project(_), Some(p)) => Err(AppError::NotFound(format!("no project {p:?}"))),
        (Principal::Admin, None) => Err(AppError::bad_request(
            "missing_project",
            "an admin key must name the project: add ?project=<id>",
        )),
        (Principal::Admin, Some(p)) => match state.store.project(&p).await? {
            Some(project) => Ok(project.id),
            None => Err(AppError::NotFound(format!("no project {p:?}"))),
        },
    }
}

fn usd(n: NanoUsd) -> f64 {
    n.to_usd_f64()
}

fn amount(nanos: Option<i64>, usd: Option<f64>, what: &str) -> Result<NanoUsd, AppError> {
    let value = match (nanos, usd) {
        (Some(n), None) => NanoUsd::from_nanos(n).ok(),
        (None, Some(u)) => NanoUsd::from_usd_f64(u).ok(),
        _ => {
            return Err(AppError::bad_request(
                "invalid_input",
                format!("give exactly one of {what}_nanos or {what}_usd"),
            ));
        }
    };
    value
        .filter(|v| v.nanos() <= MAX_AMOUNT_NANOS)
        .ok_or_else(|| {
            AppError::bad_request(
                "invalid_input",
                format!("{what} must be a finite amount from 0 to 1000000 USD"),
            )
        })
}

// ---------------------------------------------------------------------------------------------
// Reservations

/// `block` refuses what does not fit; `fit` reserves what is left (at least `min_nanos`) and
/// answers `capped: true`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum PolicyName {
    #[default]
    Block,
    Fit,
}

/// A reservation request: give exactly one of `amount_nanos` and `amount_usd`.
#[derive(Debug, Deserialize, ToSchema)]
struct ReserveBody {
    /// A client-chosen id (8-64 characters of `[A-Za-z0-9_-]`, unique in the project) that
    /// makes the reserve idempotent: repeating it reserves nothing again and answers with the
    /// reservation it names (`replayed: true`). Without it the server picks an id.
    id: Option<String>,
    /// The call's tags (at most 32).
    #[serde(default)]
    tags: BTreeMap<String, String>,
    provider: String,
    model: String,
    /// The estimated cost, 0 to 10^15 nano-USD.
    amount_nanos: Option<i64>,
    /// The estimated cost in USD.
    amount_usd: Option<f64>,
    #[serde(default)]
    policy: PolicyName,
    /// For `fit`: the least worth reserving (input plus a minimum output).
    min_nanos: Option<i64>,
    /// How long the reservation lives unless settled or extended (default 10 minutes).
    ttl_ms: Option<i64>,
}

/// An admitted reservation.
#[derive(Debug, Serialize, ToSchema)]
struct Reserved {
    /// Settle, release or extend with this id.
    id: String,
    /// Held in every matching budget; less than requested when `capped`.
    amount_nanos: i64,
    amount_usd: f64,
    /// `fit` reserved less than requested: cap the call's output.
    capped: bool,
    /// How many budget counters hold it.
    budgets: usize,
    /// RFC 3339 UTC.
    expires_at: String,
    /// Unix milliseconds.
    expires_at_ms: i64,
    /// True when the request's `id` already named this reservation: nothing was reserved now.
    replayed: bool,
    /// `active`, `settled`, `released` or `expired` (a replayed reservation may have ended).
    status: String,
}

fn call_tags(body: &mut ReserveBody) -> Result<CallTags, AppError> {
    call_of(&mut body.tags, &mut body.provider, &mut body.model)
}

/// A call's tags, provider and model, validated (at most 32 tags, the tag rules).
fn call_of(
    tags: &mut BTreeMap<String, String>,
    provider: &mut String,
    model: &mut String,
) -> Result<CallTags, AppError> {
    if tags.len() > MAX_TAGS {
        return Err(AppError::bad_request(
            "invalid_input",
            format!(
                "{} tags given; a call carries at most {MAX_TAGS}",
                tags.len()
            ),
        ));
    }
    validate_tag_value("provider", provider)?;
    validate_tag_value("model", model)?;
    Ok(CallTags {
        tags: Tags::new(std::mem::take(tags))?,
        provider: std::mem::take(provider),
        model: std::mem::take(model),
    })
}

/// Token counts a client reports: absent, or 0 to 10^12.
fn tokens(input: Option<i64>, output: Option<i64>) -> Result<Tokens, AppError> {
    for (n, what) in [(input, "input_tokens"), (output, "output_tokens")] {
        if n.is_some_and(|n| !(0..=1_000_000_000_000).contains(&n)) {
            return Err(AppError::bad_request(
                "invalid_input",
                format!("{what} must be an integer from 0 to 10^12"),
            ));
        }
    }
    Ok(Tokens { input, output })
}

/// Reserves an estimated cost against every matching budget before a call is dispatched.
#[utoipa::path(post, path = "/v1/reserve", tag = "reservations", params(ProjectParam),
    request_body = ReserveBody, security(("bearer" = [])),
    responses((status = 200, description = "reserved: dispatch the call (capped to `amount_nanos` when `capped`)", body = Reserved),
        (status = 409, description = "`budget_exceeded`: a block budget cannot take it; `error.budget` says which", body = ErrorBody)))]
async fn reserve(
    State(state): State<AppState>,
    caller: Caller,
    Query(param): Query<ProjectParam>,
    Json(mut body): Json<ReserveBody>,
) -> Result<Json<Reserved>, AppError> {
    let project = scope(&state, &caller, param).await?;
    if let Some(id) = &body.id {
        bursora_core::ledger::validate_reservation_id(id).map_err(|e| AppError::Client {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_input",
            message: e.to_string(),
        })?;
    }
    let call = call_tags(&mut body)?;
    let requested = amount(body.amount_nanos, body.amount_usd, "amount")?;
    let policy = match body.policy {
        PolicyName::Block => Policy::Block,
        PolicyName::Fit => Policy::Fit {
            min: amount(Some(body.min_nanos.unwrap_or(0)), None, "min")?,
        },
    };
    let result = state
        .store
        .reserve(
            &project,
            ReserveInput {
                call,
                amount: requested,
                policy,
                ttl_ms: body.ttl_ms,
                id: body.id.take(),
            },
        )
        .await;
    state.metrics.reservation(&result);
    let r = result?;
    Ok(Json(Reserved {
        amount_nanos: r.amount.nanos(),
        amount_usd: usd(r.amount),
        capped: r.capped,
        budgets: r.budgets,
        expires_at: format_utc(r.expires_at_ms),
        expires_at_ms: r.expires_at_ms,
        replayed: r.replayed,
        status: r.ended.map_or("active", |o| o.as_str()).to_owned(),
        id: r.id,
    }))
}

/// A present field that may be `null`: serde would otherwise read a missing `actual_nanos` as
/// `null` and silently release a call that was meant to be settled.
fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::deserialize(d)
}

/// One settlement.
#[derive(Debug, Deserialize, ToSchema)]
struct SettleItemBody {
    /// The reservation's id.
    id: String,
    /// The call's true cost; `null` releases the reservation (the call cost nothing). Required.
    #[serde(deserialize_with = "nullable")]
    #[schema(required = true)]
    actual_nanos: Option<i64>,
    /// Input tokens the provider reported, kept with the call's history.
    input_tokens: Option<i64>,
    /// Output tokens the provider reported.
    output_tokens: Option<i64>,
}

/// A batch of 1 to 1000 settlements.
#[derive(Debug, Deserialize, ToSchema)]
struct SettleBody {
    items: Vec<SettleItemBody>,
}

/// How a reservation ended.
#[derive(Debug, Serialize, ToSchema)]
struct SettlementView {
    id: String,
    /// `settled`, `released` or `expired`.
    status: String,
    /// `false` when it had already ended: nothing changed, the figures are the first ones.
    applied: bool,
    reserved_nanos: i64,
    actual_nanos: i64,
    /// Given back to the budgets: `reserved - actual` when positive.
    refunded_nanos: i64,
    /// Billed beyond the reservation: `actual - reserved` when positive.
    overrun_nanos: i64,
}

fn settlement_view(id: &str, s: &Settlement) -> SettlementView {
    SettlementView {
        id: id.to_owned(),
        status: s.outcome.as_str().to_owned(),
        applied: s.applied,
        reserved_nanos: s.reserved.nanos(),
        actual_nanos: s.actual.nanos(),
        refunded_nanos: s.refunded.nanos(),
        overrun_nanos: s.overrun.nanos(),
    }
}

/// An item of a batch that could not be settled (`not_found` for ids this project never issued).
#[derive(Debug, Serialize, ToSchema)]
struct SettleItemError {
    id: String,
    error: ErrorDetail,
}

/// One batch item's result, in the order given.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
enum SettleItemResult {
    Settled(SettlementView),
    Failed(SettleItemError),
}

/// `POST /v1/settle`'s answer.
#[derive(Debug, Serialize, ToSchema)]
struct SettleResults {
    results: Vec<SettleItemResult>,
}

/// Settles (or, with `actual_nanos: null`, releases) a batch; idempotent by id.
#[utoipa::path(post, path = "/v1/settle", tag = "reservations", params(ProjectParam),
    request_body = SettleBody, security(("bearer" = [])),
    responses((status = 200, description = "one result per item, in order", body = SettleResults)))]
async fn settle(
    State(state): State<AppState>,
    caller: Caller,
    Query(param): Query<ProjectParam>,
    Json(body): Json<SettleBody>,
) -> Result<Json<SettleResults>, AppError> {
    let project = scope(&state, &caller, param).await?;
    if body.items.is_empty() || body.items.len() > MAX_SETTLE_BATCH {
        return Err(AppError::bad_request(
            "invalid_input",
            format!("a batch holds 1 to {MAX_SETTLE_BATCH} items"),
        ));
    }
    // Validate the whole batch before touching any of it.
    let mut items = Vec::with_capacity(body.items.len());
    for item in body.items {
        let actual = match item.actual_nanos {
            None => None,
            Some(n) => Some(amount(Some(n), None, "actual")?),
        };
        items.push(SettleWith {
            id: item.id,
            actual,
            tokens: tokens(item.input_tokens, item.output_tokens)?,
        });
    }
    let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
    let results = state.store.settle_batch(&project, items).await?;
    state.metrics.settlements(&results);
    let results = ids
        .into_iter()
        .zip(results)
        .map(|(id, r)| match r {
            Ok(s) => SettleItemResult::Settled(settlement_view(&id, &s)),
            Err(e) => {
                let error = match e {
                    bursora_core::Error::UnknownReservation { .. } => {
                        ErrorDetail::new("not_found", format!("no reservation {id:?}"))
                    }
                    e => ErrorDetail::new(e.code(), e.to_string()),
                };
                SettleItemResult::Failed(SettleItemError { id, error })
            }
        })
        .collect();
    Ok(Json(SettleResults { results }))
}

/// A reservation to release.
#[derive(Debug, Deserialize, ToSchema)]
struct ReleaseBody {
    id: String,
}

/// Releases one reservation: the call cost nothing.
#[utoipa::path(post, path = "/v1/release", tag = "reservations", params(ProjectParam),
    request_body = ReleaseBody, security(("bearer" = [])),
    responses((status = 200, description = "released, or how it had already ended", body = SettlementView),
        (status = 404, description = "no such reservation in this project", body = ErrorBody)))]
async fn release(
    State(state): State<AppState>,
    caller: Caller,
    Query(param): Query<ProjectParam>,
    Json(body): Json<ReleaseBody>,
) -> Result<Json<SettlementView>, AppError> {
    let project = scope(&state, &caller, param).await?;
    let mut results = state
        .store
        .settle_batch(
            &project,
            vec![SettleWith {
                id: body.id.clone(),
                actual: None,
                tokens: Tokens::default(),
            }],
        )
        .await?;
    state.metrics.settlements(&results);
    let s = results.pop().unwrap_or_else(|| {
        Err(bursora_core::Error::UnknownReservation {
            id: body.id.clone(),
        })
    })?;
    Ok(Json(settlement_view(&body.id, &s)))
}

/// A reservation to renew.
#[derive(Debug, Deserialize, ToSchema)]
struct ExtendBody {
    id: String,
    /// From now; the core's default (10 minutes) if absent.
    ttl_ms: Option<i64>,
}

/// `POST /v1/extend`'s answer.
#[derive(Debug, Serialize, ToSchema)]
struct Extended {
    id: String,
    /// `false` once the reservation ended (settled, released or expired): nothing renewed.
    active: bool,
}

/// Renews a live reservation (a stream still running) so the sweeper does not expire it.
#[utoipa::path(post, path = "/v1/extend", tag = "reservations", params(ProjectParam),
    request_body = ExtendBody, security(("bearer" = [])),
    responses((status = 200, description = "renewed, or `active: false` once it ended", body = Extended),
        (status = 404, description = "no such reservation in this project", body = ErrorBody)))]
async fn extend(
    State(state): State<AppState>,
    caller: Caller,
    Query(param): Query<ProjectParam>,
    Json(body): Json<ExtendBody>,
) -> Result<Json<Extended>, AppError> {
    let project = scope(&state, &caller, param).await?;
    let ttl_ms = body.ttl_ms.unwrap_or(DEFAULT_TTL_MS);
    let active = state.store.extend(&project, &body.id, ttl_ms).await?;
    Ok(Json(Extended {
        id: body.id,
        active,
    }))
}

// ---------------------------------------------------------------------------------------------
// Budgets and spend

/// A budget: give exactly one of `limit_usd` and `limit_nanos`.
#[derive(Debug, Deserialize, ToSchema)]
struct BudgetBody {
    /// Required on POST; on PUT it may be omitted but not changed.
    name: Option<String>,
    /// The tags a call must carry to count; a `*` value keeps one counter per distinct value.
    #[serde(default, rename = "match")]
    selector: BTreeMap<String, String>,
    limit_usd: Option<f64>,
    limit_nanos: Option<i64>,
    /// `minute`, `hour`, `day`, `week`, `month` or `total`.
    window: String,
    /// `block` (default) or `notify`.
    mode: Option<String>,
}

impl BudgetBody {
    fn spec(self, name: String) -> Result<BudgetSpec, AppError> {
        let limit = amount(self.limit_nanos, self.limit_usd, "limit")?;
        let window: Window = self.window.parse()?;
        let mode: Mode = self.mode.as_deref().unwrap_or("block").parse()?;
        Ok(BudgetSpec::new(
            name,
            Selector::new(self.selector)?,
            limit,
            window,
            mode,
        )?)
    }
}

fn selector_map(s: &Selector) -> BTreeMap<String, String> {
    s.to_pairs().into_iter().collect()
}

/// A budget.
#[derive(Debug, Serialize, ToSchema)]
struct BudgetView {
    id: String,
    name: String,
    /// The tags a call must carry to count; `*` keeps one counter per distinct value.
    #[serde(rename = "match")]
    selector: BTreeMap<String, String>,
    limit_nanos: i64,
    limit_usd: f64,
    /// `minute`, `hour`, `day`, `week`, `month` or `total`.
    window: String,
    /// `block` or `notify`.
    mode: String,
}

fn budget_view(b: &Budget) -> BudgetView {
    BudgetView {
        id: b.id.to_string(),
        name: b.spec.name.clone(),
        selector: selector_map(&b.spec.selector),
        limit_nanos: b.spec.limit.nanos(),
        limit_usd: usd(b.spec.limit),
        window: b.spec.window.as_str().to_owned(),
        mode: b.spec.mode.as_str().to_owned(),
    }
}

/// The project's budgets.
#[derive(Debug, Serialize, ToSchema)]
struct BudgetList {
    budgets: Vec<BudgetView>,
}

async fn find_budget(state: &AppState, project: &str, id: &str) -> Result<Budget, AppError> {
    state
        .store
        .budgets(project)
        .await?
        .into_iter()
        .find(|b| &*b.id == id)
        .ok_or_else(|| AppError::NotFound(format!("no budget {id:?}")))
}

/// Lists the project's budgets.
#[utoipa::path(get, path = "/v1/budgets", tag = "budgets", params(ProjectParam),
    security(("bearer" = [])), responses((status = 200, description = "the project's budgets", body = BudgetList)))]
async fn list_budgets(
    State(state): State<AppState>,
    caller: Caller,
    Query(param): Query<ProjectParam>,
) -> Result<Json<BudgetList>, AppError> {
    let project = scope(&state, &caller, param).await?;
    let budgets = state.store.budgets(&project).await?;
    Ok(Json(BudgetList {
        budgets: budgets.iter().map(budget_view).collect(),
    }))
}

/// Reads one budget.
#[utoipa::path(get, path = "/v1/budgets/{id}", tag = "budgets",
    params(("id" = String, Path, description = "the budget's id"), ProjectParam),
    security(("bearer" = [])),
    responses((status = 200, description = "the budget", body = BudgetView),
        (status = 404, description = "no such budget in this project", body = ErrorBody)))]
async fn get_budget(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(param): Query<ProjectParam>,
) -> Result<Json<BudgetView>, AppError> {
    let project = scope(&state, &caller, param).await?;
    Ok(Json(budget_view(
        &find_budget(&state, &project, &id).await?,
    )))
}

/// Creates the budget named in the body, or updates the one of that name (like the embedded
/// SDK's declarations): 201 when created, 200 when it existed.
#[utoipa::path(post, path = "/v1/budgets", tag = "budgets", params(ProjectParam),
    request_body = BudgetBody, security(("bearer" = [])),
    responses((status = 201, description = "created", body = BudgetView),
        (status = 200, description = "the budget of that name, updated", body = BudgetView),
        (status = 403, description = "needs an admin key", body = ErrorBody)))]
async fn upsert_budget(
    State(state): State<AppState>,
    caller: Caller,
    Query(param): Query<ProjectParam>,
    Json(mut body): Json<BudgetBody>,
) -> Result<impl IntoResponse, AppError> {
    caller.require_admin()?;
    let project = scope(&state, &caller, param).await?;
    let name = body
        .name
        .take()
        .ok_or_else(|| AppError::bad_request("invalid_input", "a budget needs a name"))?;
    let spec = body.spec(name)?;
    let outcome = state.store.upsert_budget(&project, spec.clone()).await?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(budget_view(&Budget {
            id: outcome.id,
            spec,
        })),
    ))
}

/// Replaces a budget's match, limit, window and mode; its name cannot change.
#[utoipa::path(put, path = "/v1/budgets/{id}", tag = "budgets",
    params(("id" = String, Path, description = "the budget's id"), ProjectParam),
    request_body = BudgetBody, security(("bearer" = [])),
    responses((status = 200, description = "the budget, replaced", body = BudgetView),
        (status = 403, description = "needs an admin key", body = ErrorBody),
        (status = 404, description = "no such budget in this project", body = ErrorBody)))]
async fn put_budget(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(param): Query<ProjectParam>,
    Json(mut body): Json<BudgetBody>,
) -> Result<Json<BudgetView>, AppError> {
    caller.require_admin()?;
    let project = scope(&state, &caller, param).await?;
    let current = find_budget(&state, &project, &id).await?;
    let name = body
        .name
        .take()
        .unwrap_or_else(|| current.spec.name.clone());
    if name != current.spec.name {
        // Names are how SDK declarations find their budget; a rename would orphan them.
        return Err(AppError::bad_request(
            "invalid_input",
            "a budget's name cannot change: create a new budget and delete this one",
        ));
    }
    let spec = body.spec(name)?;
    let outcome = state.store.upsert_budget(&project, spec.clone()).await?;
    Ok(Json(budget_view(&Budget {
        id: outcome.id,
        spec,
    })))
}

/// Deletes a budget and its counters.
#[utoipa::path(delete, path = "/v1/budgets/{id}", tag = "budgets",
    params(("id" = String, Path, description = "the budget's id"), ProjectParam),
    security(("bearer" = [])),
    responses((status = 204, description = "deleted"),
        (status = 403, description = "needs an admin key", body = ErrorBody),
        (status = 404, description = "no such budget in this project", body = ErrorBody)))]
async fn delete_budget(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(param): Query<ProjectParam>,
) -> Result<StatusCode, AppError> {
    caller.require_admin()?;
    let project = scope(&state, &caller, param).await?;
    let budget = find_budget(&state, &project, &id).await?;
    state
        .store
        .remove_budget(&project, &budget.spec.name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A budget counter in its current window.
#[derive(Debug, Serialize, ToSchema)]
struct CounterView {
    /// The budget's id.
    id: String,
    name: String,
    #[serde(rename = "match")]
    selector: BTreeMap<String, String>,
    /// The tag value of a `*` template's counter; `null` otherwise.
    key: Option<String>,
    window: String,
    mode: String,
    limit_nanos: i64,
    limit_usd: f64,
    spent_nanos: i64,
    spent_usd: f64,
    /// Held by live reservations.
    reserved_nanos: i64,
    reserved_usd: f64,
    /// Settled beyond what was reserved.
    overrun_nanos: i64,
    /// RFC 3339 UTC.
    window_start: String,
    window_start_ms: i64,
    /// `null` for `total`.
    resets_at: Option<String>,
    resets_at_ms: Option<i64>,
}

fn counter_view(s: &BudgetStatus) -> CounterView {
    CounterView {
        id: s.budget.id.to_string(),
        name: s.budget.spec.name.clone(),
        selector: selector_map(&s.budget.spec.selector),
        key: s.key.clone(),
        window: s.budget.spec.window.as_str().to_owned(),
        mode: s.budget.spec.mode.as_str().to_owned(),
        limit_nanos: s.budget.spec.limit.nanos(),
        limit_usd: usd(s.budget.spec.limit),
        spent_nanos: s.spent.nanos(),
        spent_usd: usd(s.spent),
        reserved_nanos: s.reserved.nanos(),
        reserved_usd: usd(s.reserved),
        overrun_nanos: s.overrun.nanos(),
        window_start: format_utc(s.window_start_ms),
        window_start_ms: s.window_start_ms,
        resets_at: s.resets_at_ms.map(format_utc),
        resets_at_ms: s.resets_at_ms,
    }
}

/// `GET /v1/spend`'s answer.
#[derive(Debug, Serialize, ToSchema)]
struct SpendList {
    budgets: Vec<CounterView>,
}

/// Every counter of the project's budgets in its current window (one per value for templates).
#[utoipa::path(get, path = "/v1/spend", tag = "budgets", params(ProjectParam),
    security(("bearer" = [])), responses((status = 200, description = "every counter in its current window", body = SpendList)))]
async fn spend(
    State(state): State<AppState>,
    caller: Caller,
    Query(param): Query<ProjectParam>,
) -> Result<Json<SpendList>, AppError> {
    let project = scope(&state, &caller, param).await?;
    let status = state.store.status(&project).await?;
    Ok(Json(SpendList {
        budgets: status.iter().map(counter_view).collect(),
    }))
}

// ---------------------------------------------------------------------------------------------
// Projects and keys (admin)

/// A name: required for a project, optional for a key (`default`).
#[derive(Debug, Deserialize, ToSchema)]
struct NameBody {
    #[serde(default)]
    name: Option<String>,
}

fn label(name: Option<String>, default: &str) -> Result<String, AppError> {
    let name = name.unwrap_or_else(|| default.to_owned());
    if name.trim().is_empty() || name.len() > MAX_BUDGET_NAME_BYTES {
        return Err(AppError::bad_request(
            "invalid_input",
            format!("a name is 1-{MAX_BUDGET_NAME_BYTES} bytes and not blank"),
        ));
    }
    Ok(name)
}

/// A project.
#[derive(Debug, Serialize, ToSchema)]
struct ProjectView {
    id: String,
    name: String,
    created_at_ms: i64,
}

impl From<Project> for ProjectView {
    fn from(p: Project) -> Self {
        Self {
            id: p.id,
            name: p.name,
            created_at_ms: p.created_at_ms,
        }
    }
}

/// Every project.
#[derive(Debug, Serialize, ToSchema)]
struct ProjectList {
    projects: Vec<ProjectView>,
}

/// A new project key: `key` is shown here only.
#[derive(Debug, Serialize, ToSchema)]
struct NewKey {
    /// The key's id (not a secret).
    id: String,
    /// The secret, for `Authorization: Bearer`; the server keeps only its hash.
    key: String,
    /// The project it acts in.
    project: String,
    name: String,
    created_at_ms: i64,
}

/// Creates a project.
#[utoipa::path(post, path = "/v1/projects", tag = "projects", request_body = NameBody,
    security(("bearer" = [])),
    responses((status = 201, description = "created", body = ProjectView),
        (status = 403, description = "needs an admin key", body = ErrorBody)))]
async fn create_project(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NameBody>,
) -> Result<(StatusCode, Json<ProjectView>), AppError> {
    caller.require_admin()?;
    let name = label(body.name, "")?;
    let p = state.store.create_project(&name).await?;
    Ok((StatusCode::CREATED, Json(p.into())))
}

/// Lists every project.
#[utoipa::path(get, path = "/v1/projects", tag = "projects", security(("bearer" = [])),
    responses((status = 200, description = "every project", body = ProjectList),
        (status = 403, description = "needs an admin key", body = ErrorBody)))]
async fn list_projects(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ProjectList>, AppError> {
    caller.require_admin()?;
    let projects = state.store.projects().await?;
    Ok(Json(ProjectList {
        projects: projects.into_iter().map(ProjectView::from).collect(),
    }))
}

/// Issues a project key. The key is in this response only; the server keeps its hash.
#[utoipa::path(post, path = "/v1/projects/{id}/keys", tag = "projects",
    params(("id" = String, Path, description = "the project's id")),
    request_body = NameBody, security(("bearer" = [])),
    responses((status = 201, description = "the new key, shown this once", body = NewKey),
        (status = 403, description = "needs an admin key", body = ErrorBody),
        (status = 404, description = "no such project", body = ErrorBody)))]
async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    Json(body): Json<NameBody>,
) -> Result<(StatusCode, Json<NewKey>), AppError> {
    caller.require_admin()?;
    let project = state
        .store
        .project(&project)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no project {project:?}")))?;
    let name = label(body.name, "default")?;
    let secret = new_secret(PROJECT_PREFIX);
    let record = key_record(&secret, Some(&project.id), &name);
    state.store.add_key(&record).await?;
    Ok((
        StatusCode::CREATED,
        Json(NewKey {
            id: record.id,
            key: secret,
            project: project.id,
            name: record.name,
            created_at_ms: record.created_at_ms,
        }),
    ))
}
