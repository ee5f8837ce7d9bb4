//! Group commit for Postgres reservations: concurrent reserves of one project share one
//! transaction.
//!
//! A plain reserve holds its counters' row locks from `SELECT ... FOR UPDATE` until `COMMIT`
//! (four round trips and the commit), so a hot budget admits at most one reservation per lock
//! hold, however many replicas and connections there are. Here, while one project's transaction
//! runs, the next reserves queue; the one that gets the turn takes the whole queue into one
//! transaction that locks the union of their counters once, decides each request in arrival order
//! against the figures the previous ones left (exactly as if they had run one after another),
//! writes one `UPDATE` and one multi-row `INSERT`, and commits. Nobody is answered before that
//! commit, so every admitted reservation is as durable as a plain one; refusals are decided
//! inside the same transaction and roll nothing back for the others.
//!
//! The batch runs in its own task: a caller that goes away (client disconnected) cannot cancel
//! the others' reservations. Not wired into the API yet (see `bench/README.md`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bursora_core::ledger::{
    CounterState, DEFAULT_TTL_MS, Decision, Reservation, decide, exceeded, plan_counters,
    validate_ttl,
};
use bursora_core::{Error, NanoUsd, Result};
use tokio::sync::oneshot;

use super::{CounterId, Fail, PgStore, load_budgets, lock_counters, retry, storage};
use crate::store::{ReserveInput, new_id, now_ms};

/// Most reservations one transaction takes; the rest wait for the next turn.
const MAX_GROUP: usize = 512;

struct Waiting {
    input: ReserveInput,
    ttl_ms: i64,
    reply: oneshot::Sender<Result<Reservation>>,
}

#[derive(Default)]
struct Queue {
    pending: Mutex<Vec<Waiting>>,
    /// Held by the caller whose turn it is to run a group.
    turn: tokio::sync::Mutex<()>,
}

/// Reserves on a [`PgStore`], grouping concurrent reserves of a project into one transaction.
#[derive(Clone)]
pub struct ReserveCoalescer {
    pg: PgStore,
    queues: Arc<Mutex<HashMap<String, Arc<Queue>>>>,
}

impl std::fmt::Debug for ReserveCoalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReserveCoalescer").finish_non_exhaustive()
    }
}

impl ReserveCoalescer {
    /// Coalesces reserves on `pg`.
    #[must_use]
    pub fn new(pg: PgStore) -> Self {
        Self {
            pg,
            queues: Arc::default(),
        }
    }

    fn queue(&self, project: &str) -> Arc<Queue> {
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(project.to_owned())
            .or_default()
            .clone()
    }

    /// Reserves against every matching budget of `project`, all or nothing: the same contract
    /// as `Store::reserve`.
    ///
    /// # Errors
    /// `BudgetExceeded`, invalid TTLs, storage failures.
    pub async fn reserve(&self, project: &str, input: ReserveInput) -> Result<Reservation> {
        let ttl_ms = match input.ttl_ms {
            Some(t) => validate_ttl(t)?,
            None => DEFAULT_TTL_MS,
        };
        let queue = self.queue(project);
        let (reply, mut answer) = oneshot::channel();
        queue
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Waiting {
                input,
                ttl_ms,
                reply,
            });
        loop {
            let turn = queue.turn.lock().await;
            // The group that ran while this caller waited for its turn may have taken it.
            match answer.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(storage("the reservation's group was dropped"));
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let group: Vec<Waiting> = {
                let mut pending = queue.pending.lock().unwrap_or_else(PoisonError::into_inner);
                let n = pending.len().min(MAX_GROUP);
                pending.drain(..n).collect()
            };
            if group.is_empty() {
                // Ours is in a group still running (its caller went away mid-way): wait for it.
                drop(turn);
                return answer
                    .await
                    .unwrap_or_else(|_| Err(storage("the reservation's group was dropped")));
            }
            let pg = self.pg.clone();
            let project = project.to_owned();
            // Its own task: if this caller is dropped, the group still commits and answers.
            let _ = tokio::spawn(async move { run_group(&pg, &project, group).await }).await;
            drop(turn);
            // Ours was in that group (answered) or, past MAX_GROUP, waits for the next turn.
            if let Ok(result) = answer.try_recv() {
                return result;
            }
        }
    }
}

async fn run_group(pg: &PgStore, project: &str, group: Vec<Waiting>) {
    let (inputs, replies): (Vec<_>, Vec<_>) = group
        .into_iter()
        .map(|w| ((w.input, w.ttl_ms), w.reply))
        .unzip();
    match retry(|| reserve_group(pg, project, &inputs)).await {
        Ok(results) => {
            for (reply, r) in replies.into_iter().zip(results) {
                let _ = reply.send(r);
            }
        }
        Err(e) => {
            let message = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(Error::Storage {
                    message: message.clone(),
                }));
            }
        }
    }
}

/// One transaction for the whole group; a refusal is one item's result, not the group's.
async fn reserve_group(
    pg: &PgStore,
    project: &str,
    inputs: &[(ReserveInput, i64)],
) -> std::result::Result<Vec<Result<Reservation>>, Fail> {
    let mut tx = pg.pool.begin().await?;
    let budgets = load_budgets(&mut tx, project).await?;
    let now = now_ms();
    let plans: Vec<_> = inputs
        .iter()
        .map(|(input, _)| plan_counters(&budgets, &input.call, now))
        .collect();
    let counters: Vec<Vec<CounterId>> = plans
        .iter()
        .map(|plan| {
            plan.iter()
                .map(|c| {
                    (
                        budgets[c.budget].id.to_string(),
                        c.key.clone(),
                        c.window_start_ms,
                    )
                })
                .collect()
        })
        .collect();
    let all: Vec<CounterId> = counters.iter().flatten().cloned().collect();
    // (spent, reserved) as this transaction moves them, request by request.
    let mut figures = lock_counters(&mut tx, &all, true).await?;
    let mut added: HashMap<CounterId, i64> = HashMap::new();
    let mut results = Vec::with_capacity(inputs.len());
    let (mut ids, mut amounts, mut expiries, mut stored) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (((input, ttl_ms), plan), mine) in inputs.iter().zip(&plans).zip(&counters) {
        let states: Vec<CounterState> = mine
            .iter()
            .map(|c| {
                let (spent, reserved) = figures.get(c).copied().unwrap_or_default();
                CounterState {
                    spent: NanoUsd::from_nanos_clamped(spent),
                    reserved: NanoUsd::from_nanos_clamped(reserved),
                }
            })
            .collect();
        let (amount, capped) = match decide(&budgets, plan, &states, input.amount, input.policy) {
            Decision::Reserve { amount, capped } => (amount, capped),
            Decision::Refuse { counter } => {
                results.push(Err(exceeded(
                    &budgets,
                    plan,
                    &states,
                    counter,
                    input.amount,
                )));
                continue;
            }
        };
        let mut distinct = mine.clone();
        distinct.sort_unstable();
        distinct.dedup();
        for c in distinct {
            figures.entry(c.clone()).or_default().1 += amount.nanos();
            *added.entry(c).or_default() += amount.nanos();
        }
        let id = new_id("res_", 32);
        let expires_at_ms = now.saturating_add(*ttl_ms);
        ids.push(id.clone());
        amounts.push(amount.nanos());
        expiries.push(expires_at_ms);
        stored.push(serde_json::to_string(mine).map_err(storage)?);
        results.push(Ok(Reservation {
            id,
            amount,
            capped,
            budgets: mine.len(),
            expires_at_ms,
            replayed: false,
            ended: None,
        }));
    }
    if !added.is_empty() {
        let (mut b, mut k, mut w, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((budget, key, start), n) in &added {
            b.push(budget.as_str());
            k.push(key.as_str());
            w.push(*start);
            d.push(*n);
        }
        sqlx::query(
            "UPDATE counters c SET reserved = c.reserved + u.d
             FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[]) AS u (b, k, w, d)
             WHERE c.budget_id = u.b AND c.key = u.k AND c.window_start_ms = u.w",
        )
        .bind(b)
        .bind(k)
        .bind(w)
        .bind(d)
        .execute(&mut *tx)
        .await?;
    }
    if !ids.is_empty() {
        sqlx::query(
            "INSERT INTO reservations (id, project_id, amount, state, created_at_ms, expires_at_ms, counters)
             SELECT u.id, $1, u.a, 'active', $2, u.e, u.c
             FROM UNNEST($3::text[], $4::int8[], $5::int8[], $6::text[]) AS u (id, a, e, c)",
        )
        .bind(project)
        .bind(now)
        .bind(&ids)
        .bind(&amounts)
        .bind(&expiries)
        .bind(&stored)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(results)
}
