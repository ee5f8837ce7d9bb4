//! The Postgres store: every replica is stateless, the database is the only source of truth.
//!
//! Exactness across replicas comes from row locks taken in one global order:
//! - **reserve** is one transaction: insert the call's missing counter rows (`ON CONFLICT DO
//!   NOTHING`), lock every counter it lands in with `SELECT ... FOR UPDATE` ordered by
//!   `(budget_id, key, window_start_ms)`, decide with the core's [`decide`], add to `reserved`,
//!   insert the reservation. Two replicas racing for the last headroom serialize on the rows.
//! - **settle/release** (batched) locks the batch's reservation rows in id order, then every
//!   counter they touch in counter order, and moves them by the core's [`EndPlan`]; the row lock
//!   on the reservation makes a duplicate settle see the first one's result (idempotent).
//! - **expire** takes overdue reservations with `FOR UPDATE SKIP LOCKED`, so sweepers on several
//!   replicas split the work instead of waiting on each other, then locks counters in order.
//!
//! Locks are always reservations before counters, each in sorted order, so transactions cannot
//! wait on each other in a cycle; a deadlock or serialization failure reported anyway is retried.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bursora_core::budget::{Budget, BudgetSpec, Selector};
use bursora_core::ledger::DEFAULT_TTL_MS;
use bursora_core::ledger::{
    BudgetStatus, CounterState, Decision, EndPlan, Outcome, Reservation, SettleMath, Settlement,
    UpsertOutcome, decide, exceeded, plan_counters, validate_ttl,
};
use bursora_core::{Error, NanoUsd, Result};
use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};

use super::{KeyRecord, Principal, Project, ReserveInput, SettleItem, new_id, now_ms};

mod coalesce;
mod pool;

pub use coalesce::ReserveCoalescer;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Ended reservations are kept this long so a late duplicate settle is still recognised.
const KEEP_ENDED_MS: i64 = 7 * 24 * 3_600_000;
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
}

impl PgStore {
    /// Connects with a pool of at most `max_connections` and runs pending migrations (under
    /// sqlx's advisory lock, so replicas starting together migrate once).
    ///
    /// # Errors
    /// The database cannot be reached or migrated.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(storage)?;
        MIGRATOR.run(&pool).await.map_err(storage)?;
        Ok(Self { pool })
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
        retry(|| self.reserve_once(project, &input, ttl_ms)).await
    }

    async fn reserve_once(
        &self,
        project: &str,
        input: &ReserveInput,
        ttl_ms: i64,
    ) -> std::result::Result<Reservation, Fail> {
        let mut tx = self.pool.begin().await?;
        let budgets = load_budgets(&mut tx, project).await?;
        let now = now_ms();
        let plan = plan_counters(&budgets, &input.call, now);
        let counters: Vec<CounterId> = plan
            .iter()
            .map(|c| {
                (
                    budgets[c.budget].id.to_string(),
                    c.key.clone(),
                    c.window_start_ms,
                )
            })
            .collect();
        let figures = lock_counters(&mut tx, &counters, true).await?;
        let states: Vec<CounterState> = counters
            .iter()
            .map(|c| {
                let (spent, reserved) = figures.get(c).copied().unwrap_or_default();
                CounterState {
                    spent: NanoUsd::from_nanos_clamped(spent),
                    reserved: NanoUsd::from_nanos_clamped(reserved),
                }
            })
            .collect();
        let (amount, capped) = match decide(&budgets, &plan, &states, input.amount, input.policy) {
            Decision::Reserve { amount, capped } => (amount, capped),
            // Dropping the transaction rolls it back: nothing was reserved.
            Decision::Refuse { counter } => {
                return Err(exceeded(&budgets, &plan, &states, counter, input.amount).into());
            }
        };
        if !counters.is_empty() {
            let (b, k, w) = columns(&counters);
            sqlx::query(
                "UPDATE counters c SET reserved = c.reserved + $4
                 FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS u (b, k, w)
                 WHERE c.budget_id = u.b AND c.key = u.k AND c.window_start_ms = u.w",
            )
            .bind(b)
            .bind(k)
            .bind(w)
            .bind(amount.nanos())
            .execute(&mut *tx)
            .await?;
        }
        let id = new_id("res_", 32);
        let expires_at_ms = now.saturating_add(ttl_ms);
        let stored = serde_json::to_string(&counters).map_err(storage)?;
        sqlx::query(
            "INSERT INTO reservations (id, project_id, amount, state, created_at_ms, expires_at_ms, counters)
             VALUES ($1, $2, $3, 'active', $4, $5, $6)",
        )
        .bind(&id)
        .bind(project)
        .bind(amount.nanos())
        .bind(now)
        .bind(expires_at_ms)
        .bind(stored)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Reservation {
            id,
            amount,
            capped,
            budgets: counters.len(),
            expires_at_ms,
        })
    }

    pub(super) async fn settle_batch(
        &self,
        project: &str,
        items: Vec<SettleItem>,
    ) -> Result<Vec<Result<Settlement>>> {
        retry(|| self.settle_once(project, &items)).await
    }

    async fn settle_once(
        &self,
        project: &str,
        items: &[SettleItem],
    ) -> std::result::Result<Vec<Result<Settlement>>, Fail> {
        struct Held {
            amount: NanoUsd,
            ended: Option<(Outcome, NanoUsd)>,
            counters: Vec<CounterId>,
            changed: bool,
        }
        let now = now_ms();
        let mut ids: Vec<&str> = items.iter().map(|(id, _)| id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT id, amount, state, actual, counters FROM reservations
             WHERE project_id = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
        )
        .bind(project)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut held: HashMap<String, Held> = HashMap::with_capacity(rows.len());
        for r in &rows {
            let state: String = r.try_get("state")?;
            let actual: Option<i64> = r.try_get("actual")?;
            let ended = parse_outcome(&state)
                .map(|o| (o, NanoUsd::from_nanos_clamped(actual.unwrap_or(0))));
            held.insert(
                r.try_get("id")?,
                Held {
                    amount: NanoUsd::from_nanos_clamped(r.try_get("amount")?),
                    ended,
                    counters: parse_counters(&r.try_get::<String, _>("counters")?)?,
                    changed: false,
                },
            );
        }
        // Decide every item first (a batch may name one id twice: the second sees the first).
        let mut results = Vec::with_capacity(items.len());
        let mut moves: Vec<(Vec<CounterId>, SettleMath)> = Vec::new();
        for (id, actual) in items {
            let Some(h) = held.get_mut(id) else {
                results.push(Err(Error::UnknownReservation { id: id.clone() }));
                continue;
            };
            results.push(Ok(match EndPlan::new(h.amount, h.ended, *actual) {
                EndPlan::Unchanged(report) => report,
                EndPlan::Apply {
                    math,
                    outcome,
                    actual,
                } => {
                    moves.push((h.counters.clone(), math));
                    h.ended = Some((outcome, actual));
                    h.changed = true;
                    SettleMath::report(h.amount, actual, outcome, true)
                }
            }));
        }
        let touched: Vec<CounterId> = moves.iter().flat_map(|(c, _)| c.clone()).collect();
        lock_counters(&mut tx, &touched, false).await?;
        for (counters, math) in &moves {
            apply(&mut tx, counters, *math).await?;
        }
        let (mut ended_ids, mut states, mut actuals) = (Vec::new(), Vec::new(), Vec::new());
        for (id, h) in &held {
            if let (true, Some((outcome, actual))) = (h.changed, h.ended) {
                ended_ids.push(id.as_str());
                states.push(outcome.as_str());
                actuals.push(actual.nanos());
            }
        }
        if !ended_ids.is_empty() {
            sqlx::query(
                "UPDATE reservations r SET state = u.s, actual = u.a, ended_at_ms = $4
                 FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS u (id, s, a) WHERE r.id = u.id",
            )
            .bind(&ended_ids)
            .bind(&states)
            .bind(&actuals)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(results)
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
            "SELECT id, amount, counters FROM reservations
             WHERE state = 'active' AND expires_at_ms <= $1
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .bind(SWEEP_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let mut ids = Vec::with_capacity(due.len());
        let mut moves = Vec::with_capacity(due.len());
        for r in &due {
            let amount = NanoUsd::from_nanos_clamped(r.try_get("amount")?);
            ids.push(r.try_get::<String, _>("id")?);
            moves.push((
                parse_counters(&r.try_get::<String, _>("counters")?)?,
                SettleMath::settle(amount, amount),
            ));
        }
        let touched: Vec<CounterId> = moves.iter().flat_map(|(c, _)| c.clone()).collect();
        lock_counters(&mut tx, &touched, false).await?;
        for (counters, math) in &moves {
            apply(&mut tx, counters, *math).await?;
        }
        if !ids.is_empty() {
            sqlx::query(
                "UPDATE reservations SET state = 'expired', actual = amount, ended_at_ms = $2
                 WHERE id = ANY($1)",
            )
            .bind(&ids)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        // Forget reservations that ended long ago, a bounded slice per sweep.
        sqlx::query(
            "DELETE FROM reservations WHERE id IN (
                SELECT id FROM reservations WHERE state <> 'active' AND ended_at_ms < $1
                LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(now.saturating_sub(KEEP_ENDED_MS))
        .bind(SWEEP_BATCH)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids.len())
    }
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

/// Moves every counter of one reservation by `math` ([`SettleMath::apply`] in SQL, saturating at
/// zero the same way). The rows are already locked.
async fn apply(
    conn: &mut PgConnection,
    counters: &[CounterId],
    math: SettleMath,
) -> std::result::Result<(), Fail> {
    if counters.is_empty() {
        return Ok(());
    }
    let (b, k, w) = columns(counters);
    sqlx::query(
        "UPDATE counters c SET spent = GREATEST(c.spent - $4, 0) + $5,
             reserved = GREATEST(c.reserved - $6, 0), overrun = c.overrun + $7
         FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS u (b, k, w)
         WHERE c.budget_id = u.b AND c.key = u.k AND c.window_start_ms = u.w",
    )
    .bind(b)
    .bind(k)
    .bind(w)
    .bind(math.unspend.nanos())
    .bind(math.spend.nanos())
    .bind(math.unreserve.nanos())
    .bind(math.overrun.nanos())
    .execute(&mut *conn)
    .await?;
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
