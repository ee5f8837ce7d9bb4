//! The Postgres store: every replica is stateless, the database is the only source of truth.
//!
//! Exactness across replicas comes from row locks taken in one global order:
//! - **reserve** goes through group commit (`coalesce`): concurrent reserves of a project are
//!   decided together by the core's `decide` and written by one statement that locks their
//!   counters with `SELECT ... FOR UPDATE` ordered by `(budget_id, key, window_start_ms)`,
//!   checks they still hold the figures the decisions were made on, and only then adds to
//!   `reserved` and inserts the rows. Two replicas racing for the last headroom serialize on the
//!   rows; the one whose figures went stale decides again on the true ones.
//! - **settle/release** (batched) locks the batch's reservation rows in id order, then every
//!   counter they touch in counter order, and moves them by the core's [`EndPlan`]; the row lock
//!   on the reservation makes a duplicate settle see the first one's result (idempotent).
//! - **expire** takes overdue reservations with `FOR UPDATE SKIP LOCKED`, so sweepers on several
//!   replicas split the work instead of waiting on each other, then locks counters in order.
//!
//! Locks are always reservations before counters, each in sorted order, so transactions cannot
//! wait on each other in a cycle; a deadlock or serialization failure reported anyway is retried.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bursora_core::budget::{Budget, BudgetSpec, Selector};
use bursora_core::ledger::DEFAULT_TTL_MS;
use bursora_core::ledger::history::{
    Event, EventKind, EventQuery, GroupBy, SettleWith, SpendQuery, SpendRow, StoredEvent,
    UsageItem, UsageOutcome, WindowFigures, kind_filter_sql, tags_json,
};
use bursora_core::ledger::{
    BudgetStatus, EndPlan, Outcome, Reservation, SettleMath, Settlement, UpsertOutcome,
    plan_counters, validate_reservation_id, validate_ttl,
};
use bursora_core::{Error, NanoUsd, Result};
use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};

use super::{
    DEFAULT_RETENTION_MS, KeyRecord, Principal, Project, ReserveInput, Revoked, new_id, now_ms,
};

mod alerts;

mod coalesce;
mod pool;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The states whose actual cost is spend.
const SPENT_STATES: &str = "('settled', 'expired', 'usage')";
/// Most reservations one sweep transaction expires (or prunes); the sweeper runs again soon.
const SWEEP_BATCH: i64 = 1_000;
/// Attempts of a transaction that Postgres aborted as a deadlock or serialization failure.
const ATTEMPTS: u32 = 8;

/// A counter as stored in a reservation row: `[budget_id, key, window_start_ms]`.
type CounterId = (String, String, i64);

/// Why one attempt of a transaction failed.
enum Fail {
    /// A database error; retried when Postgres says the transaction may simply be re-run.
    Db(sqlx::Error),
    /// A decision (budget exceeded, unknown reservation...), returned as is.
    Core(Error),
    /// A concurrent insert won a race; re-run to see its row.
    Retry,
}

impl From<sqlx::Error> for Fail {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Self::Core(e)
    }
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage {
        message: format!("postgres: {e}"),
    }
}

fn retryable(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "40P01" || c == "40001")
}

/// The pool the reservation statement runs on: connections that always use a generic plan.
///
/// The statement takes its rows as arrays (`UNNEST($n)`). Planned for the values at hand (a
/// custom plan, Postgres's default choice here because a generic plan guesses 10 rows per array)
/// it cost about as much planning as executing on every call; its generic plan, made once per
/// connection, is the same index lookups. `plan_cache_mode` is set on these connections only:
/// the history and spend queries keep Postgres's own choice.
fn reserve_pool(options: PgPoolOptions, max_connections: u32) -> PgPoolOptions {
    options
        .max_connections(max_connections)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("SET plan_cache_mode = force_generic_plan")
                    .execute(conn)
                    .await
                    .map(drop)
            })
        })
}

/// Runs one transaction attempt until it succeeds, fails for good, or runs out of attempts.
async fn retry<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, Fail>>,
{
    let mut n = 0;
    loop {
        n += 1;
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(Fail::Core(e)) => return Err(e),
            Err(Fail::Db(e)) if retryable(&e) && n < ATTEMPTS => {
                tracing::debug!(error = %e, attempt = n, "transaction aborted by postgres; retrying");
            }
            Err(Fail::Db(e)) => return Err(storage(e)),
            Err(Fail::Retry) if n < ATTEMPTS => {}
            Err(Fail::Retry) => return Err(storage("a budget kept changing concurrently")),
        }
    }
}

/// Projects, keys and every project's ledger in one Postgres database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The reservation statement's own connections, which plan it once (generic plans): see
    /// [`reserve_pool`].
    reserve_pool: PgPool,
    /// How long ended reservations, refusals and usage events are kept (ms).
    keep_ms: i64,
    /// Group commit queues and the figures this replica saw last (hints the database checks).
    groups: Arc<coalesce::Groups>,
}

impl PgStore {
    /// Connects with a pool of at most `max_connections` and runs pending migrations (under
    /// sqlx's advisory lock, so replicas starting together migrate once).
    ///
    /// # Errors
    /// The database cannot be reached or migrated.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let options = PgPoolOptions::new().acquire_timeout(Duration::from_secs(5));
        Self::connect_with(url, max_connections, options).await
    }

    /// Connects both pools with `options`: of `max_connections`, a quarter (at least one) go to
    /// the reservation statement's pool, the rest (at least one) to everything else.
    async fn connect_with(url: &str, max_connections: u32, options: PgPoolOptions) -> Result<Self> {
        let reserving = (max_connections / 4).max(1);
        let pool = options
            .clone()
            .max_connections(max_connections.saturating_sub(reserving).max(1))
            .connect(url)
            .await
            .map_err(storage)?;
        MIGRATOR.run(&pool).await.map_err(storage)?;
        let reserve_pool = reserve_pool(options, reserving)
            .connect(url)
            .await
            .map_err(storage)?;
        Ok(Self {
            pool,
            reserve_pool,
            keep_ms: DEFAULT_RETENTION_MS,
            groups: Arc::default(),
        })
    }

    /// Keeps ended reservations, refusals and usage events for `ms` (default
    /// [`DEFAULT_RETENTION_MS`]).
    #[must_use]
    pub fn with_retention_ms(mut self, ms: i64) -> Self {
        self.keep_ms = ms;
        self
    }

    pub(super) async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(storage)
    }

    pub(super) async fn create_project(&self, name: &str) -> Result<Project> {
        let project = Project {
            id: new_id("prj_", 20),
            name: name.to_owned(),
            created_at_ms: now_ms(),
        };
        sqlx::query("INSERT INTO projects (id, name, created_at_ms) VALUES ($1, $2, $3)")
            .bind(&project.id)
            .bind(&project.name)
            .bind(project.created_at_ms)
            .execute(&self.pool)
            .await
            .map_err(storage)?;
        Ok(project)
    }

    pub(super) async fn project(&self, id: &str) -> Result<Option<Project>> {
        let row = sqlx::query("SELECT id, name, created_at_ms FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(storage)?;
        row.map(|r| project_from_row(&r)).transpose()
    }

    pub(super) async fn projects(&self) -> Result<Vec<Project>> {
        sqlx::query("SELECT id, name, created_at_ms FROM projects ORDER BY created_at_ms, id")
            .fetch_all(&self.pool)
            .await
            .map_err(storage)?
            .iter()
            .map(project_from_row)
            .collect()
    }

    pub(super) async fn add_key(&self, key: &KeyRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (hash, id, project_id, name, created_at_ms) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (hash) DO NOTHING",
        )
        .bind(&key.hash)
        .bind(&key.id)
        .bind(&key.project)
        .bind(&key.name)
        .bind(key.created_at_ms)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(storage)
    }

    pub(super) async fn has_admin_key(&self) -> Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys WHERE project_id IS NULL)")
            .fetch_one(&self.pool)
            .await
            .map_err(storage)
    }

    pub(super) async fn principal(&self, hash: &str) -> Result<Option<Principal>> {
        let row: Option<Option<String>> =
            sqlx::query_scalar("SELECT project_id FROM api_keys WHERE hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(storage)?;
        Ok(row.map(|p| p.map_or(Principal::Admin, Principal::Project)))
    }

    pub(super) async fn upsert_budget(
        &self,
        project: &str,
        spec: BudgetSpec,
    ) -> Result<UpsertOutcome> {
        retry(|| self.upsert_once(project, &spec)).await
    }

    async fn upsert_once(
        &self,
        project: &str,
        spec: &BudgetSpec,
    ) -> std::result::Result<UpsertOutcome, Fail> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let existing = sqlx::query(
            "SELECT id, name, match_json, limit_nanos, window_kind, mode FROM budgets
             WHERE project_id = $1 AND name = $2 FOR UPDATE",
        )
        .bind(project)
        .bind(&spec.name)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| budget_from_row(&r))
        .transpose()?;
        let outcome = match existing {
            Some(b) if b.spec == *spec => UpsertOutcome {
                id: b.id,
                created: false,
                previous: None,
            },
            Some(b) => {
                sqlx::query(
                    "UPDATE budgets SET match_json = $2, limit_nanos = $3, window_kind = $4, mode = $5,
                     updated_at_ms = $6 WHERE id = $1",
                )
                .bind(&*b.id)
                .bind(spec.selector.to_json())
                .bind(spec.limit.nanos())
                .bind(spec.window.as_str())
                .bind(spec.mode.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                UpsertOutcome {
                    id: b.id,
                    created: false,
                    previous: Some(b.spec),
                }
            }
            None => {
                let id = new_id("bud_", 20);
                let inserted = sqlx::query(
                    "INSERT INTO budgets (id, project_id, name, match_json, limit_nanos, window_kind, mode,
                     created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
                     ON CONFLICT (project_id, name) DO NOTHING",
                )
                .bind(&id)
                .bind(project)
                .bind(&spec.name)
                .bind(spec.selector.to_json())
                .bind(spec.limit.nanos())
                .bind(spec.window.as_str())
                .bind(spec.mode.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() == 0 {
                    return Err(Fail::Retry);
                }
                UpsertOutcome {
                    id: Arc::from(id),
                    created: true,
                    previous: None,
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    pub(super) async fn remove_budget(&self, project: &str, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM budgets WHERE project_id = $1 AND name = $2")
            .bind(project)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(storage)?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn budgets(&self, project: &str) -> Result<Vec<Budget>> {
        let mut conn = self.pool.acquire().await.map_err(storage)?;
        match load_budgets(&mut conn, project).await {
            Ok(b) => Ok(b),
            Err(Fail::Core(e)) => Err(e),
            Err(Fail::Db(e)) => Err(storage(e)),
            Err(Fail::Retry) => Err(storage("unexpected retry")),
        }
    }

    pub(super) async fn reserve(&self, project: &str, input: ReserveInput) -> Result<Reservation> {
        let ttl_ms = match input.ttl_ms {
            Some(t) => validate_ttl(t)?,
            None => DEFAULT_TTL_MS,
        };
        if let Some(id) = &input.id {
            validate_reservation_id(id)?;
        }
        coalesce::reserve(self, project, input, ttl_ms).await
    }

    /// The reservation a client-chosen id names, as a replayed answer; an error if it names a
    /// usage event or refusal instead.
    async fn replay(&self, project: &str, id: &str) -> Result<Option<Reservation>> {
        let row = sqlx::query(
            "SELECT amount, state, requested, expires_at_ms, counters FROM reservations
             WHERE project_id = $1 AND id = $2",
        )
        .bind(project)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(storage)?;
        let Some(r) = row else { return Ok(None) };
        let get = || -> sqlx::Result<(i64, String, Option<i64>, i64, String)> {
            Ok((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
            ))
        };
        let (amount, state, requested, expires_at_ms, counters) = get().map_err(storage)?;
        let kind = EventKind::parse(&state).map_err(storage)?;
        if !kind.is_reservation() {
            return Err(Error::InvalidInput {
                message: format!(
                    "id {id:?} already names a {} event of this project; choose another id",
                    kind.as_str()
                ),
            });
        }
        Ok(Some(Reservation {
            id: id.to_owned(),
            amount: NanoUsd::from_nanos_clamped(amount),
            capped: requested.is_some_and(|r| amount < r),
            budgets: parse_counters(&counters)?.len(),
            expires_at_ms,
            replayed: true,
            ended: Outcome::parse(&state),
        }))
    }

    pub(super) async fn settle_batch(
        &self,
        project: &str,
        items: Vec<SettleWith>,
    ) -> Result<Vec<Result<Settlement>>> {
        let items = &items;
        retry(|| async move {
            let mut tx = self.pool.begin().await?;
            let results = settle_in(&mut tx, project, items, &[], now_ms(), &self.groups).await?;
            tx.commit().await?;
            Ok(results)
        })
        .await
    }

    pub(super) async fn usage(
        &self,
        project: &str,
        items: Vec<UsageItem>,
    ) -> Result<Vec<UsageOutcome>> {
        let items = &items;
        retry(|| self.usage_once(project, items)).await
    }

    /// One attempt at a usage batch, in one transaction: lock the rows the ids already name
    /// (reservations before counters, like a settlement), settle the reservations, count the
    /// new usage into its counters, insert the usage rows. An id another transaction inserts
    /// meanwhile makes the insert skip it, and the batch is re-run to see that row.
    async fn usage_once(
        &self,
        project: &str,
        items: &[UsageItem],
    ) -> std::result::Result<Vec<UsageOutcome>, Fail> {
        let now = now_ms();
        let mut ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT id, state FROM reservations WHERE project_id = $1 AND id = ANY($2)
             ORDER BY id FOR UPDATE",
        )
        .bind(project)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut known: HashMap<String, EventKind> = HashMap::with_capacity(rows.len());
        for r in &rows {
            let state: String = r.try_get(1)?;
            known.insert(r.try_get(0)?, EventKind::parse(&state)?);
        }
        let budgets = load_budgets(&mut tx, project).await?;
        // Decide each item: settle, repeat, or new usage (an id twice in the batch: once).
        enum Plan {
            Settle,
            Repeat,
            Record,
        }
        let mut plans = Vec::with_capacity(items.len());
        let mut settles = Vec::new();
        let mut new_ids: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let mut spend: HashMap<CounterId, i64> = HashMap::new();
        let mut new_rows = Vec::new();
        for item in items {
            match known.get(&item.id) {
                Some(kind) if kind.is_reservation() => {
                    plans.push(Plan::Settle);
                    settles.push(SettleWith {
                        id: item.id.clone(),
                        actual: Some(item.actual),
                        tokens: item.tokens,
                    });
                }
                Some(_) => plans.push(Plan::Repeat),
                None if !new_ids.insert(item.id.as_str()) => plans.push(Plan::Repeat),
                None => {
                    let at = item.at_ms.unwrap_or(now).min(now);
                    let counters: Vec<CounterId> = plan_counters(&budgets, &item.call, at)
                        .iter()
                        .map(|c| {
                            (
                                budgets[c.budget].id.to_string(),
                                c.key.clone(),
                                c.window_start_ms,
                            )
                        })
                        .collect();
                    for c in &counters {
                        let n = spend.entry(c.clone()).or_default();
                        *n = n.saturating_add(item.actual.nanos());
                    }
                    new_rows.push((item, at, counters));
                    plans.push(Plan::Record);
                }
            }
        }
        let extra: Vec<CounterId> = spend.keys().cloned().collect();
        let settled = settle_in(&mut tx, project, &settles, &extra, now, &self.groups).await?;
        if !spend.is_empty() {
            let counters: Vec<CounterId> = spend.keys().cloned().collect();
            let amounts: Vec<i64> = counters.iter().map(|c| spend[c]).collect();
            let (b, k, w) = columns(&counters);
            sqlx::query(
                "UPDATE counters c SET spent = c.spent + u.a
                 FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[]) AS u (b, k, w, a)
                 WHERE c.budget_id = u.b AND c.key = u.k AND c.window_start_ms = u.w",
            )
            .bind(b)
            .bind(k)
            .bind(w)
            .bind(amounts)
            .execute(&mut *tx)
            .await?;
        }
        if !new_rows.is_empty() {
            /// The new usage rows, column by column, for one `UNNEST` insert.
            #[derive(Default)]
            struct Columns<'a> {
                id: Vec<&'a str>,
                actual: Vec<i64>,
                at: Vec<i64>,
                counters: Vec<String>,
                tags: Vec<String>,
                provider: Vec<&'a str>,
                model: Vec<&'a str>,
                input: Vec<Option<i64>>,
                output: Vec<Option<i64>>,
            }
            let mut cols = Columns::default();
            for (item, at, counters) in &new_rows {
                cols.id.push(&item.id);
                cols.actual.push(item.actual.nanos());
                cols.at.push(*at);
                cols.counters
                    .push(serde_json::to_string(counters).map_err(storage)?);
                cols.tags.push(tags_json(&item.call));
                cols.provider.push(&item.call.provider);
                cols.model.push(&item.call.model);
                cols.input.push(item.tokens.input);
                cols.output.push(item.tokens.output);
            }
            let done = sqlx::query(
                "INSERT INTO reservations (id, project_id, amount, state, actual, created_at_ms, expires_at_ms,
                 ended_at_ms, counters, tags, provider, model, requested, input_tokens, output_tokens)
                 SELECT u.id, $1, 0, 'usage', u.a, u.at, u.at, $2, u.c, u.t::jsonb, u.p, u.m, u.a, u.it, u.ot
                 FROM UNNEST($3::text[], $4::int8[], $5::int8[], $6::text[], $7::text[], $8::text[], $9::text[],
                             $10::int8[], $11::int8[]) AS u (id, a, at, c, t, p, m, it, ot)
                 ON CONFLICT (project_id, id) DO NOTHING",
            )
            .bind(project)
            .bind(now)
            .bind(&cols.id)
            .bind(&cols.actual)
            .bind(&cols.at)
            .bind(&cols.counters)
            .bind(&cols.tags)
            .bind(&cols.provider)
            .bind(&cols.model)
            .bind(&cols.input)
            .bind(&cols.output)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != new_rows.len() as u64 {
                return Err(Fail::Retry);
            }
        }
        tx.commit().await?;
        let mut settled = settled.into_iter();
        plans
            .into_iter()
            .map(|p| match p {
                Plan::Settle => match settled.next() {
                    Some(Ok(s)) => Ok(UsageOutcome::Settled(s)),
                    Some(Err(e)) => Err(Fail::Core(e)),
                    None => Err(Fail::Core(storage("a settlement went missing"))),
                },
                Plan::Repeat => Ok(UsageOutcome::Recorded(false)),
                Plan::Record => Ok(UsageOutcome::Recorded(true)),
            })
            .collect()
    }

    pub(super) async fn events(&self, project: &str, q: EventQuery) -> Result<Vec<Event>> {
        let mut sql = String::from(
            "SELECT id, state, created_at_ms, tags::text, provider, model, requested, amount, actual,
             input_tokens, output_tokens, refused_by FROM reservations
             WHERE project_id = $1 AND created_at_ms >= $2 AND created_at_ms < $3",
        );
        if q.before.is_some() {
            sql.push_str(" AND (created_at_ms, id) < ($4, $5)");
        }
        sql.push_str(&kind_filter_sql(&q.kinds, q.overrun_only));
        sql.push_str(&format!(
            " ORDER BY created_at_ms DESC, id DESC LIMIT {}",
            q.limit
        ));
        // Audited: only our own constants and integers are spliced in; values are bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(project)
            .bind(q.from_ms.unwrap_or(0))
            .bind(q.to_ms.unwrap_or(i64::MAX));
        if let Some((at, id)) = &q.before {
            query = query.bind(*at).bind(id.as_str());
        }
        let rows = query.fetch_all(&self.pool).await.map_err(storage)?;
        rows.iter()
            .map(|r| {
                let e = StoredEvent {
                    id: r.try_get(0).map_err(storage)?,
                    state: r.try_get(1).map_err(storage)?,
                    at_ms: r.try_get(2).map_err(storage)?,
                    tags: r.try_get(3).map_err(storage)?,
                    provider: r.try_get(4).map_err(storage)?,
                    model: r.try_get(5).map_err(storage)?,
                    requested: r.try_get(6).map_err(storage)?,
                    amount: r.try_get(7).map_err(storage)?,
                    actual: r.try_get(8).map_err(storage)?,
                    input_tokens: r.try_get(9).map_err(storage)?,
                    output_tokens: r.try_get(10).map_err(storage)?,
                    refused_by: r.try_get(11).map_err(storage)?,
                };
                e.into_event()
            })
            .collect()
    }

    pub(super) async fn spend(&self, project: &str, q: SpendQuery) -> Result<Vec<SpendRow>> {
        let bucket = q.bucket_ms.map_or_else(
            || "$2::int8".to_owned(),
            |b| format!("(created_at_ms / {b}) * {b}"),
        );
        let group = match &q.group_by {
            None => "NULL::text",
            Some(GroupBy::Model) => "model",
            Some(GroupBy::Provider) => "provider",
            Some(GroupBy::Tag(_)) => "tags ->> $4",
        };
        let order = if q.bucket_ms.is_some() {
            "b, s DESC, g"
        } else {
            "s DESC, g"
        };
        let sql = format!(
            "SELECT {bucket} AS b, {group} AS g, SUM(actual)::int8 AS s, COUNT(*)::int8 FROM reservations
             WHERE project_id = $1 AND created_at_ms >= $2 AND created_at_ms < $3 AND state IN {SPENT_STATES}
             GROUP BY b, g ORDER BY {order} LIMIT {}",
            q.limit
        );
        // Audited: only our own constants and integers are spliced in; values are bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(project)
            .bind(q.from_ms)
            .bind(q.to_ms);
        if let Some(GroupBy::Tag(key)) = &q.group_by {
            query = query.bind(key.as_str());
        }
        let rows = query.fetch_all(&self.pool).await.map_err(storage)?;
        rows.iter()
            .map(|r| {
                Ok(SpendRow {
                    start_ms: r.try_get(0).map_err(storage)?,
                    value: r.try_get(1).map_err(storage)?,
                    spent: NanoUsd::from_nanos_clamped(r.try_get(2).map_err(storage)?),
                    calls: r
                        .try_get::<i64, _>(3)
                        .map_err(storage)?
                        .try_into()
                        .unwrap_or(0),
                })
            })
            .collect()
    }

    pub(super) async fn windows(
        &self,
        _project: &str,
        budget_id: &str,
        (from_ms, to_ms): (i64, i64),
        limit: usize,
    ) -> Result<Vec<WindowFigures>> {
        let rows = sqlx::query(
            "SELECT key, window_start_ms, spent, reserved, overrun FROM counters
             WHERE budget_id = $1 AND window_start_ms >= $2 AND window_start_ms < $3
             ORDER BY window_start_ms DESC, key LIMIT $4",
        )
        .bind(budget_id)
        .bind(from_ms)
        .bind(to_ms)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        rows.iter()
            .map(|r| {
                let key: String = r.try_get(0).map_err(storage)?;
                Ok(WindowFigures {
                    key: (!key.is_empty()).then_some(key),
                    window_start_ms: r.try_get(1).map_err(storage)?,
                    spent: NanoUsd::from_nanos_clamped(r.try_get(2).map_err(storage)?),
                    reserved: NanoUsd::from_nanos_clamped(r.try_get(3).map_err(storage)?),
                    overrun: NanoUsd::from_nanos_clamped(r.try_get(4).map_err(storage)?),
                })
            })
            .collect()
    }

    pub(super) async fn keys(&self, project: &str) -> Result<Vec<KeyRecord>> {
        let rows = sqlx::query(
            "SELECT id, hash, project_id, name, created_at_ms FROM api_keys
             WHERE project_id = $1 ORDER BY created_at_ms, id",
        )
        .bind(project)
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        rows.iter()
            .map(|r| {
                Ok(KeyRecord {
                    id: r.try_get(0).map_err(storage)?,
                    hash: r.try_get(1).map_err(storage)?,
                    project: r.try_get(2).map_err(storage)?,
                    name: r.try_get(3).map_err(storage)?,
                    created_at_ms: r.try_get(4).map_err(storage)?,
                })
            })
            .collect()
    }

    pub(super) async fn revoke_key(&self, id: &str) -> Result<Revoked> {
        let mut tx = self.pool.begin().await.map_err(storage)?;
        let project: Option<Option<String>> =
            sqlx::query_scalar("SELECT project_id FROM api_keys WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(storage)?;
        let outcome = match project {
            None => Revoked::NotFound,
            Some(admin) => {
                if admin.is_none() {
                    // Lock every admin key so two replicas cannot each revoke "another" one.
                    let admins: Vec<String> = sqlx::query_scalar(
                        "SELECT id FROM api_keys WHERE project_id IS NULL ORDER BY id FOR UPDATE",
                    )
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(storage)?;
                    if admins.len() <= 1 {
                        return Ok(Revoked::LastAdmin);
                    }
                }
                sqlx::query("DELETE FROM api_keys WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(storage)?;
                Revoked::Revoked
            }
        };
        tx.commit().await.map_err(storage)?;
        Ok(outcome)
    }

    pub(super) async fn extend(&self, project: &str, id: &str, ttl_ms: i64) -> Result<bool> {
        let ttl_ms = validate_ttl(ttl_ms)?;
        // One statement: the row lock orders it against a concurrent settle or sweep.
        let state: Option<String> = sqlx::query_scalar(
            "UPDATE reservations SET expires_at_ms = CASE WHEN state = 'active' THEN $3 ELSE expires_at_ms END
             WHERE id = $1 AND project_id = $2 RETURNING state",
        )
        .bind(id)
        .bind(project)
        .bind(now_ms().saturating_add(ttl_ms))
        .fetch_optional(&self.pool)
        .await
        .map_err(storage)?;
        match state {
            Some(s) => Ok(s == "active"),
            None => Err(Error::UnknownReservation { id: id.to_owned() }),
        }
    }

    pub(super) async fn status(&self, project: &str) -> Result<Vec<BudgetStatus>> {
        let budgets = self.budgets(project).await?;
        let now = now_ms();
        let starts: Vec<i64> = budgets
            .iter()
            .map(|b| b.spec.window.start_ms(now))
            .collect();
        let ids: Vec<&str> = budgets.iter().map(|b| &*b.id).collect();
        let rows = sqlx::query(
            "SELECT c.budget_id, c.key, c.spent, c.reserved, c.overrun FROM counters c
             JOIN UNNEST($1::text[], $2::int8[]) AS u (b, w) ON c.budget_id = u.b AND c.window_start_ms = u.w
             ORDER BY c.budget_id, c.key",
        )
        .bind(&ids)
        .bind(&starts)
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        let mut by_budget: HashMap<String, Vec<(String, i64, i64, i64)>> = HashMap::new();
        for r in &rows {
            let get = |r: &PgRow| -> sqlx::Result<_> {
                Ok((
                    r.try_get::<String, _>(0)?,
                    r.try_get::<String, _>(1)?,
                    r.try_get::<i64, _>(2)?,
                    r.try_get::<i64, _>(3)?,
                    r.try_get::<i64, _>(4)?,
                ))
            };
            let (b, key, spent, reserved, overrun) = get(r).map_err(storage)?;
            by_budget
                .entry(b)
                .or_default()
                .push((key, spent, reserved, overrun));
        }
        let mut out = Vec::new();
        for (b, start) in budgets.iter().zip(starts) {
            let status = |key: Option<String>, spent, reserved, overrun| BudgetStatus {
                budget: b.clone(),
                key,
                spent: NanoUsd::from_nanos_clamped(spent),
                reserved: NanoUsd::from_nanos_clamped(reserved),
                overrun: NanoUsd::from_nanos_clamped(overrun),
                window_start_ms: start,
                resets_at_ms: b.spec.window.end_ms(start),
            };
            match by_budget.remove(&*b.id) {
                Some(rows) => out.extend(
                    rows.into_iter()
                        .map(|(k, s, r, o)| status((!k.is_empty()).then_some(k), s, r, o)),
                ),
                None if !b.spec.selector.is_template() => out.push(status(None, 0, 0, 0)),
                None => {}
            }
        }
        Ok(out)
    }

    pub(super) async fn expire(&self) -> Result<usize> {
        retry(|| self.expire_once()).await
    }

    async fn expire_once(&self) -> std::result::Result<usize, Fail> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // SKIP LOCKED: a reservation being settled right now is not due work, and another
        // replica's sweeper takes the rows this one skips.
        let due = sqlx::query(
            "SELECT project_id, id, amount, counters FROM reservations
             WHERE state = 'active' AND expires_at_ms <= $1
             ORDER BY project_id, id LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .bind(SWEEP_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let mut projects = Vec::with_capacity(due.len());
        let mut ids = Vec::with_capacity(due.len());
        let mut moves = Vec::with_capacity(due.len());
        for r in &due {
            let amount = NanoUsd::from_nanos_clamped(r.try_get("amount")?);
            projects.push(r.try_get::<String, _>("project_id")?);
            ids.push(r.try_get::<String, _>("id")?);
            moves.push((
                parse_counters(&r.try_get::<String, _>("counters")?)?,
                SettleMath::settle(amount, amount),
            ));
        }
        apply_sums(&mut tx, &moves, &self.groups).await?;
        if !ids.is_empty() {
            sqlx::query(
                "UPDATE reservations r SET state = 'expired', actual = r.amount, ended_at_ms = $3
                 FROM UNNEST($1::text[], $2::text[]) AS u (p, id)
                 WHERE r.project_id = u.p AND r.id = u.id",
            )
            .bind(&projects)
            .bind(&ids)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        // Forget reservations that ended long ago, a bounded slice per sweep.
        sqlx::query(
            "DELETE FROM reservations WHERE (project_id, id) IN (
                SELECT project_id, id FROM reservations WHERE state <> 'active' AND ended_at_ms < $1
                LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(now.saturating_sub(self.keep_ms))
        .bind(SWEEP_BATCH)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids.len())
    }
}

/// Settles (or releases) reservations of `project` inside `conn`'s transaction: locks the rows
/// in id order, decides each item with the core's [`EndPlan`], then locks every counter the
/// settlements move together with `extra` (created when missing: a usage batch's counters)
/// in the global order, moves them and marks the rows. One result per item.
async fn settle_in(
    conn: &mut PgConnection,
    project: &str,
    items: &[SettleWith],
    extra: &[CounterId],
    now: i64,
    groups: &coalesce::Groups,
) -> std::result::Result<Vec<Result<Settlement>>, Fail> {
    struct Held {
        amount: NanoUsd,
        ended: Option<(Outcome, NanoUsd)>,
        counters: Vec<CounterId>,
        changed: Option<(Option<i64>, Option<i64>)>,
    }
    let mut ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = if ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query(
            "SELECT id, amount, state, actual, counters FROM reservations
             WHERE project_id = $1 AND id = ANY($2)
               AND state IN ('active', 'settled', 'released', 'expired')
             ORDER BY id FOR UPDATE",
        )
        .bind(project)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?
    };
    let mut held: HashMap<String, Held> = HashMap::with_capacity(rows.len());
    for r in &rows {
        let state: String = r.try_get("state")?;
        let actual: Option<i64> = r.try_get("actual")?;
        let ended =
            parse_outcome(&state).map(|o| (o, NanoUsd::from_nanos_clamped(actual.unwrap_or(0))));
        held.insert(
            r.try_get("id")?,
            Held {
                amount: NanoUsd::from_nanos_clamped(r.try_get("amount")?),
                ended,
                counters: parse_counters(&r.try_get::<String, _>("counters")?)?,
                changed: None,
            },
        );
    }
    // Decide every item first (a batch may name one id twice: the second sees the first).
    let mut results = Vec::with_capacity(items.len());
    let mut moves: Vec<(Vec<CounterId>, SettleMath)> = Vec::new();
    for item in items {
        let Some(h) = held.get_mut(&item.id) else {
            results.push(Err(Error::UnknownReservation {
                id: item.id.clone(),
            }));
            continue;
        };
        results.push(Ok(match EndPlan::new(h.amount, h.ended, item.actual) {
            EndPlan::Unchanged(report) => report,
            EndPlan::Apply {
                math,
                outcome,
                actual,
            } => {
                moves.push((h.counters.clone(), math));
                h.ended = Some((outcome, actual));
                h.changed = Some((item.tokens.input, item.tokens.output));
                SettleMath::report(h.amount, actual, outcome, true)
            }
        }));
    }
    // The reservation rows first (already locked): the counters, which every reserve of the
    // budget waits on, stay locked only for one statement and the commit.
    let mut ended_ids = Vec::new();
    let mut states = Vec::new();
    let mut actuals = Vec::new();
    let mut input_tokens: Vec<Option<i64>> = Vec::new();
    let mut output_tokens: Vec<Option<i64>> = Vec::new();
    for (id, h) in &held {
        if let (Some((input, output)), Some((outcome, actual))) = (h.changed, h.ended) {
            ended_ids.push(id.as_str());
            states.push(outcome.as_str());
            actuals.push(actual.nanos());
            input_tokens.push(input);
            output_tokens.push(output);
        }
    }
    if !ended_ids.is_empty() {
        sqlx::query(
            "UPDATE reservations r SET state = u.s, actual = u.a, ended_at_ms = $4,
                 input_tokens = COALESCE(u.it, r.input_tokens), output_tokens = COALESCE(u.ot, r.output_tokens)
             FROM UNNEST($1::text[], $2::text[], $3::int8[], $5::int8[], $6::int8[]) AS u (id, s, a, it, ot)
             WHERE r.project_id = $7 AND r.id = u.id",
        )
        .bind(&ended_ids)
        .bind(&states)
        .bind(&actuals)
        .bind(now)
        .bind(&input_tokens)
        .bind(&output_tokens)
        .bind(project)
        .execute(&mut *conn)
        .await?;
    }
    if !extra.is_empty() {
        // A usage batch's counters: created when missing, locked with the settlements' in order.
        let mut touched: Vec<CounterId> = moves.iter().flat_map(|(c, _)| c.clone()).collect();
        touched.extend_from_slice(extra);
        lock_counters(&mut *conn, &touched, true).await?;
    }
    apply_sums(&mut *conn, &moves, groups).await?;
    Ok(results)
}

fn columns(counters: &[CounterId]) -> (Vec<&str>, Vec<&str>, Vec<i64>) {
    let mut b = Vec::with_capacity(counters.len());
    let mut k = Vec::with_capacity(counters.len());
    let mut w = Vec::with_capacity(counters.len());
    for (budget, key, start) in counters {
        b.push(budget.as_str());
        k.push(key.as_str());
        w.push(*start);
    }
    (b, k, w)
}

/// Locks `counters` (any order, duplicates allowed) in the global order and returns their
/// `(spent, reserved)`. With `create`, missing rows are inserted first, in the same order.
async fn lock_counters(
    conn: &mut PgConnection,
    counters: &[CounterId],
    create: bool,
) -> std::result::Result<HashMap<CounterId, (i64, i64)>, Fail> {
    if counters.is_empty() {
        return Ok(HashMap::new());
    }
    // Rust's `String` order is byte order, the order of the columns' "C" collation.
    let mut sorted = counters.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let (b, k, w) = columns(&sorted);
    if create {
        sqlx::query(
            "INSERT INTO counters (budget_id, key, window_start_ms)
             SELECT b, k, w FROM UNNEST($1::text[], $2::text[], $3::int8[]) WITH ORDINALITY AS u (b, k, w, n)
             ORDER BY n
             ON CONFLICT DO NOTHING",
        )
        .bind(&b)
        .bind(&k)
        .bind(&w)
        .execute(&mut *conn)
        .await?;
    }
    let rows = sqlx::query(
        "SELECT c.budget_id, c.key, c.window_start_ms, c.spent, c.reserved FROM counters c
         JOIN UNNEST($1::text[], $2::text[], $3::int8[]) AS u (b, k, w)
           ON c.budget_id = u.b AND c.key = u.k AND c.window_start_ms = u.w
         ORDER BY c.budget_id, c.key, c.window_start_ms
         FOR UPDATE OF c",
    )
    .bind(&b)
    .bind(&k)
    .bind(&w)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in &rows {
        out.insert(
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?),
            (r.try_get(3)?, r.try_get(4)?),
        );
    }
    Ok(out)
}

/// Moves the counters of many endings at once: per counter, the sum of the endings'
/// [`SettleMath`], in one `UPDATE` that first locks the rows in the global order. Equal to
/// applying each ending in turn ([`SettleMath::apply`] in SQL), since consistent counters never
/// go below zero on the way; the clamps are the same. Tells `groups` the new figures.
async fn apply_sums(
    conn: &mut PgConnection,
    moves: &[(Vec<CounterId>, SettleMath)],
    groups: &coalesce::Groups,
) -> std::result::Result<(), Fail> {
    let mut sums: BTreeMap<&CounterId, [i64; 4]> = BTreeMap::new();
    for (counters, math) in moves {
        for c in counters {
            let s = sums.entry(c).or_default();
            s[0] = s[0].saturating_add(math.unspend.nanos());
            s[1] = s[1].saturating_add(math.spend.nanos());
            s[2] = s[2].saturating_add(math.unreserve.nanos());
            s[3] = s[3].saturating_add(math.overrun.nanos());
        }
    }
    if sums.is_empty() {
        return Ok(());
    }
    let (mut b, mut k, mut w) = (Vec::new(), Vec::new(), Vec::new());
    let mut d: [Vec<i64>; 4] = Default::default();
    for ((budget, key, start), s) in &sums {
        b.push(budget.as_str());
        k.push(key.as_str());
        w.push(*start);
        for (col, x) in d.iter_mut().zip(s) {
            col.push(*x);
        }
    }
    let rows = sqlx::query(
        "WITH u AS (
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[])
                 AS u (b, k, w, us, sp, ur, ov)
         ), l AS MATERIALIZED (
             SELECT c.budget_id AS b, c.key AS k, c.window_start_ms AS w FROM counters c
             JOIN u ON c.budget_id = u.b AND c.key = u.k AND c.window_start_ms = u.w
             ORDER BY c.budget_id, c.key, c.window_start_ms
             FOR UPDATE OF c
         )
         UPDATE counters c SET spent = GREATEST(c.spent - u.us, 0) + u.sp,
             reserved = GREATEST(c.reserved - u.ur, 0), overrun = c.overrun + u.ov
         FROM l JOIN u ON l.b = u.b AND l.k = u.k AND l.w = u.w
         WHERE c.budget_id = l.b AND c.key = l.k AND c.window_start_ms = l.w
         RETURNING c.budget_id, c.key, c.window_start_ms, c.spent, c.reserved",
    )
    .bind(&b)
    .bind(&k)
    .bind(&w)
    .bind(&d[0])
    .bind(&d[1])
    .bind(&d[2])
    .bind(&d[3])
    .fetch_all(&mut *conn)
    .await?;
    let mut seen = Vec::with_capacity(rows.len());
    for r in &rows {
        seen.push((
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?),
            coalesce::Seen::At {
                spent: r.try_get(3)?,
                reserved: r.try_get(4)?,
            },
        ));
    }
    groups.remember(seen);
    Ok(())
}

async fn load_budgets(
    conn: &mut PgConnection,
    project: &str,
) -> std::result::Result<Vec<Budget>, Fail> {
    let rows = sqlx::query(
        "SELECT id, name, match_json, limit_nanos, window_kind, mode FROM budgets
         WHERE project_id = $1 ORDER BY created_at_ms, id",
    )
    .bind(project)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .iter()
        .map(budget_from_row)
        .collect::<Result<Vec<_>>>()?)
}

fn budget_from_row(r: &PgRow) -> Result<Budget> {
    let text = |c: &str| r.try_get::<String, _>(c).map_err(storage);
    let name = text("name")?;
    let bad = |e: Error| storage(format!("budget {name:?} is stored malformed ({e})"));
    let spec = BudgetSpec::new(
        name.clone(),
        Selector::from_json(&text("match_json")?).map_err(bad)?,
        NanoUsd::from_nanos(r.try_get("limit_nanos").map_err(storage)?).map_err(bad)?,
        text("window_kind")?.parse().map_err(bad)?,
        text("mode")?.parse().map_err(bad)?,
    )
    .map_err(bad)?;
    Ok(Budget {
        id: Arc::from(text("id")?),
        spec,
    })
}

fn project_from_row(r: &PgRow) -> Result<Project> {
    Ok(Project {
        id: r.try_get("id").map_err(storage)?,
        name: r.try_get("name").map_err(storage)?,
        created_at_ms: r.try_get("created_at_ms").map_err(storage)?,
    })
}

fn parse_counters(text: &str) -> Result<Vec<CounterId>> {
    serde_json::from_str(text).map_err(|e| storage(format!("a reservation row is malformed ({e})")))
}

fn parse_outcome(state: &str) -> Option<Outcome> {
    [Outcome::Settled, Outcome::Released, Outcome::Expired]
        .into_iter()
        .find(|o| o.as_str() == state)
}
