//! The HTTP/JSON API under `/v1` (SPEC §6).
//!
//! Money crosses the wire as exact integer nano-USD (`*_nanos`); USD floats (`*_usd`) are
//! accepted where a person types a number and returned alongside for display.
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /healthz` | anyone | the store answers |
//! | `GET /metrics` | anyone | Prometheus counters and latency histograms ([`crate::metrics`]) |
//! | `POST /v1/reserve` | project | reserve; `409 budget_exceeded` when a block budget cannot take it |
//! | `POST /v1/settle` | project | settle/release a batch, idempotent by id, one result per item |
//! | `POST /v1/release` | project | release one reservation |
//! | `POST /v1/extend` | project | renew a live reservation's TTL (`active: false` once it ended) |
//! | `GET /v1/budgets`, `GET /v1/budgets/{id}` | project, admin | read budgets |
//! | `POST /v1/budgets`, `PUT/DELETE /v1/budgets/{id}` | admin | upsert by name, update, delete |
//! | `GET /v1/spend` | project, admin | every counter in its current window |
//! | `GET/POST /v1/projects`, `POST /v1/projects/{id}/keys` | admin | projects, project keys |
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
use bursora_core::ledger::{BudgetStatus, DEFAULT_TTL_MS, Policy, Settlement};
use bursora_core::window::{Window, format_utc};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{Caller, PROJECT_PREFIX, key_record, new_secret};
use crate::error::{AppError, Json, Query};
use crate::store::{Principal, ReserveInput};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Most items in one settlement batch.
pub const MAX_SETTLE_BATCH: usize = 1_000;
/// Largest amount one call may reserve: $1,000,000. No LLM call costs that; the bound keeps
/// counters far from `i64` overflow however many calls a window holds.
pub const MAX_AMOUNT_NANOS: i64 = 1_000_000 * 1_000_000_000;

/// The API's router over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
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
        .route("/v1/spend", get(spend))
        .route("/v1/projects", get(list_projects).post(create_project))
        .route("/v1/projects/{id}/keys", post(create_key))
        .route("/metrics", get(metrics))
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

async fn healthz(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    state.store.ping().await?;
    Ok(Json(json!({ "status": "ok" })))
}

/// Prometheus text; no key, like `/healthz` (it holds no tenant data).
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
#[derive(Debug, Default, Deserialize)]
struct ProjectParam {
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

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PolicyName {
    #[default]
    Block,
    Fit,
}

#[derive(Debug, Deserialize)]
struct ReserveBody {
    #[serde(default)]
    tags: BTreeMap<String, String>,
    provider: String,
    model: String,
    amount_nanos: Option<i64>,
    amount_usd: Option<f64>,
    #[serde(default)]
    policy: PolicyName,
    /// For `fit`: the least worth reserving (input plus a minimum output).
    min_nanos: Option<i64>,
    ttl_ms: Option<i64>,
}

fn call_tags(body: &mut ReserveBody) -> Result<CallTags, AppError> {
    if body.tags.len() > MAX_TAGS {
        return Err(AppError::bad_request(
            "invalid_input",
            format!(
                "{} tags given; a call carries at most {MAX_TAGS}",
                body.tags.len()
            ),
        ));
    }
    validate_tag_value("provider", &body.provider)?;
    validate_tag_value("model", &body.model)?;
    Ok(CallTags {
        tags: Tags::new(std::mem::take(&mut body.tags))?,
        provider: std::mem::take(&mut body.provider),
        model: std::mem::take(&mut body.model),
    })
}

async fn reserve(
    State(state): State<AppState>,
    caller: Caller,
    Query(param): Query<ProjectParam>,
    Json(mut body): Json<ReserveBody>,
) -> Result<Json<Value>, AppError> {
    let project = scope(&state, &caller, param).await?;
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
            },
        )
        .await;
    state.metrics.reservation(&result);
    let r = result?;
    Ok(Json(json!({
        "id": r.id,
        "amount_nanos": r.amount.nanos(),
        "amount_usd": usd(r.amount),
        "capped": r.capped,
        "budgets": r.budgets,
        "expires_at": format_utc(r.expires_at_ms),
        "expires_at_ms": r.expires_at_ms,
    })))
}

/// A present field that may be `null`: serde would otherwise read a missing `actual_nanos` as
/// `null` and silently release a call that was meant to be settled.
fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::deserialize(d)
}

#[derive(Debug, Deserialize)]
struct SettleItemBody {
    id: String,
    /// The call's true cost; `null` releases the reservation (the call cost nothing).
    #[serde(deserialize_with = "nullable")]
    actual_nanos: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct SettleBody {
    items: Vec<SettleItemBody>,
}

fn settlement_json(id: &str, s: &Settlement) -> Value {
    json!({
        "id": id,
        "status": s.outcome.as_str(),
        "applied": s.applied,
        "reserved_nanos": s.reserved.nanos(),
        "actual_nanos": s.actual.nanos(),
        "refunded_nanos": s.refunded.nanos(),
        "overrun_nanos": s.overrun.nanos(),
    })
}

async fn settle(
    State(state): State<AppState>,
    caller: Caller,
    Query(param): Query<ProjectParam>,
    Json(body): Json<SettleBody>,
) -> Result<Json<Value>, AppError> {
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
        items.push((item.id, actual));
    }
    let ids: Vec<String> = items.iter().map(|(id, _)| id.clone()).collect();
    let results = state.store.settle_batch(&project, items).await?;
    state.metrics.settlements(&results);
    let results: Vec<Value> = ids
        .iter()
        .zip(results)
        .map(|(id, r)| match r {
            Ok(s) => settlement_json(id, &s),
            Err(bursora_core::Error::UnknownReservation { .. }) => json!({
                "id": id,
                "error": { "code": "not_found", "message": format!("no reservation {id:?}") },
            }),
            Err(e) => json!({ "id": id, "error": { "code": e.code(), "message": e.to_string() } }),
        })
        .collect();
    Ok(Json(json!({ "results": results })))
}

#[derive(Debug, Deserialize)]
struct ReleaseBody {
    id: String,
}

async fn release(
    State(state): State<AppState>,
    caller: Caller,
    Query(param): Query<ProjectParam>,
    Json(body): Json<ReleaseBody>,
) -> Result<Json<Value>, AppError> {
    let project = scope(&state, &caller, param).await?;
    let mut results = state
        .store
        .settle_batch(&project, vec![(body.id.clone(), None)])
        .await?;
    state.metrics.settlements(&results);
    let s = results.pop().unwrap_or_else(|| {
        Err(bursora_core::Error::UnknownReservation {
            id: body.id.clone(),
        })
    })?;
    Ok(Json(settlement_json(&body.id, &s)))
}

#[derive(Debug, Deserialize)]
struct ExtendBody {
    id: String,
    /// From now; the core's default (10 minutes) if absent.
    ttl_ms: Option<i64>,
}

/// Renews a live reservation (a stream still running) so the sweeper does not expire it.
async fn extend(
    State(state): State<AppState>,
    caller: Caller,
    Query(param): Query<ProjectParam>,
    Json(body): Json<ExtendBody>,
) -> Result<Json<Value>, AppError> {
    let project = scope(&state, &caller, param).await?;
    let ttl_ms = body.ttl_ms.unwrap_or(DEFAULT_TTL_MS);
    let active = state.store.extend(&project, &body.id, ttl_ms).await?;
    Ok(Json(json!({ "id": body.id, "active": active })))
}

// ---------------------------------------------------------------------------------------------
// Budgets and spend

#[derive(Debug, Deserialize)]
struct BudgetBody {
    /// Required on POST; on PUT it may be omitted but not changed.
    name: Option<String>,
    #[serde(default, rename = "match")]
    selector: BTreeMap<String, String>,
    limit_usd: Option<f64>,
    limit_nanos: Option<i64>,
    window: String,
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

fn selector_json(s: &Selector) -> Value {
    Value::Object(
        s.to_pairs()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

fn budget_json(b: &Budget) -> Value {
    json!({
        "id": &*b.id,
        "name": b.spec.name,
        "match": selector_json(&b.spec.selector),
        "limit_nanos": b.spec.limit.nanos(),
        "limit_usd": usd(b.spec.limit),
        "window": b.spec.window.as_str(),
        "mode": b.spec.mode.as_str(),
    })
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

async fn list_budgets(
    State(state): State<AppState>,
    caller: Caller,
    Query(param): Query<ProjectParam>,
) -> Result<Json<Value>, AppError> {
    let project = scope(&state, &caller, param).await?;
    let budgets = state.store.budgets(&project).await?;
    Ok(Json(
        json!({ "budgets": budgets.iter().map(budget_json).collect::<Vec<_>>() }),
    ))
}

async fn get_budget(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(param): Query<ProjectParam>,
) -> Result<Json<Value>, AppError> {
    let project = scope(&state, &caller, param).await?;
    Ok(Json(budget_json(
        &find_budget(&state, &project, &id).await?,
    )))
}

/// Creates the budget named in the body, or updates the one of that name (like the embedded
/// SDK's declarations): 201 when created, 200 when it existed.
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
        Json(budget_json(&Budget {
            id: outcome.id,
            spec,
        })),
    ))
}

async fn put_budget(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(param): Query<ProjectParam>,
    Json(mut body): Json<BudgetBody>,
) -> Result<Json<Value>, AppError> {
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
    Ok(Json(budget_json(&Budget {
        id: outcome.id,
        spec,
    })))
}

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

fn status_json(s: &BudgetStatus) -> Value {
    json!({
        "id": &*s.budget.id,
        "name": s.budget.spec.name,
        "match": selector_json(&s.budget.spec.selector),
        "key": s.key,
        "window": s.budget.spec.window.as_str(),
        "mode": s.budget.spec.mode.as_str(),
        "limit_nanos": s.budget.spec.limit.nanos(),
        "limit_usd": usd(s.budget.spec.limit),
        "spent_nanos": s.spent.nanos(),
        "spent_usd": usd(s.spent),
        "reserved_nanos": s.reserved.nanos(),
        "reserved_usd": usd(s.reserved),
        "overrun_nanos": s.overrun.nanos(),
        "window_start": format_utc(s.window_start_ms),
        "window_start_ms": s.window_start_ms,
        "resets_at": s.resets_at_ms.map(format_utc),
        "resets_at_ms": s.resets_at_ms,
    })
}

async fn spend(
    State(state): State<AppState>,
    caller: Caller,
    Query(param): Query<ProjectParam>,
) -> Result<Json<Value>, AppError> {
    let project = scope(&state, &caller, param).await?;
    let status = state.store.status(&project).await?;
    Ok(Json(
        json!({ "budgets": status.iter().map(status_json).collect::<Vec<_>>() }),
    ))
}

// ---------------------------------------------------------------------------------------------
// Projects and keys (admin)

#[derive(Debug, Deserialize)]
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

async fn create_project(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NameBody>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    caller.require_admin()?;
    let name = label(body.name, "")?;
    let p = state.store.create_project(&name).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": p.id, "name": p.name, "created_at_ms": p.created_at_ms })),
    ))
}

async fn list_projects(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, AppError> {
    caller.require_admin()?;
    let projects: Vec<Value> = state
        .store
        .projects()
        .await?
        .into_iter()
        .map(|p| json!({ "id": p.id, "name": p.name, "created_at_ms": p.created_at_ms }))
        .collect();
    Ok(Json(json!({ "projects": projects })))
}

/// Issues a project key. The key is in this response only; the server keeps its hash.
async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    Json(body): Json<NameBody>,
) -> Result<(StatusCode, Json<Value>), AppError> {
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
        Json(json!({
            "id": record.id,
            "key": secret,
            "project": project.id,
            "name": record.name,
            "created_at_ms": record.created_at_ms,
        })),
    ))
}
