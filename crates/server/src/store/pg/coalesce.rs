//! Group commit for Postgres reservations: concurrent reserves of one project share one
//! statement, and the usual reservation is **one round trip**.
//!
//! While one group of a project runs, the next reserves queue; the one that gets the turn takes
//! the whole queue (≤ [`MAX_GROUP`]). Its group is decided in Rust by the core's [`decide`], in
//! arrival order, each request against the figures the previous ones left (exactly as if they
//! had run one after another), then written by one statement that
//! - locks the group's counters (`SELECT ... FOR UPDATE`, in the global counter order),
//! - checks that what the decisions were made on is still true: the project's budgets are the
//!   version this replica cached (`projects.budgets_version`, moved by a trigger on every budget
//!   change), every counter holds exactly the `(spent, reserved)` it was decided on (or is still
//!   absent), and no client-chosen id of the group names a row already;
//! - only then adds the group's amounts to `reserved` (creating the counter rows an admitted
//!   call is the first to land in) and inserts its reservation and refusal rows, and commits (a
//!   single statement is its own transaction);
//! - answers the counters' current figures either way.
//!
//! The figures come from what this replica saw last (the previous group's answer, a settlement's
//! `RETURNING`); they are a guess the statement verifies, never trusted. When they were stale
//! (another replica moved the counter, a usage batch, the sweeper), nothing was written and the
//! answer holds the true figures: the group is decided again on them. After [`OPTIMISTIC`]
//! misses the group takes the locks in a transaction first, so it cannot starve: the statement
//! that misses then holds the locks, and the next one, decided on its answer, cannot miss.
//!
//! Nobody is answered before the commit, so every admitted reservation is as durable as a plain
//! one; the group runs in its own task, so a caller that goes away cancels nobody else's.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use bursora_core::budget::Budget;
use bursora_core::ledger::history::{RefusedBy, new_refusal_id, tags_json};
use bursora_core::ledger::{CounterState, Decision, Reservation, decide, exceeded, plan_counters};
use bursora_core::{Error, NanoUsd, Result};
use sqlx::Row;
use sqlx::postgres::PgConnection;
use tokio::sync::oneshot;

use super::{CounterId, Fail, PgStore, load_budgets, retryable, storage};
use crate::store::{ReserveInput, new_id, now_ms};

/// Most reservations one statement takes; the rest wait for the next turn.
const MAX_GROUP: usize = 512;
/// Statements a group tries without holding locks in between.
const OPTIMISTIC: usize = 6;
/// Statements, all in all, before a group gives up.
const MAX_STEPS: usize = 64;
/// Counters (and projects) a replica remembers before it starts over.
const MAX_REMEMBERED: usize = 100_000;
/// Project queues kept at most before the idle ones are dropped: one per project that reserved
/// on this replica, so without this a long-lived replica keeps one for every project ever seen.
const MAX_QUEUES: usize = 1_024;

/// Expected figures meaning "not known": never equal to a counter's (they are ≥ 0).
const UNKNOWN: i64 = -1;
/// Expected figures meaning "the row does not exist".
const ABSENT: i64 = -2;

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

/// A counter as this replica last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Seen {
    Absent,
    At { spent: i64, reserved: i64 },
}

/// A project's budgets as read at one `budgets_version`.
type Versioned = (i64, Arc<Vec<Budget>>);

/// What one replica keeps between reservations: the queues, and guesses the database checks.
#[derive(Default)]
pub(super) struct Groups {
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    /// Per project: `budgets_version` and the budgets read at that version.
    budgets: Mutex<HashMap<String, Versioned>>,
    figures: Mutex<HashMap<CounterId, Seen>>,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Groups {
    fn queue(&self, project: &str) -> Arc<Queue> {
        let mut queues = lock(&self.queues);
        if queues.len() >= MAX_QUEUES && !queues.contains_key(project) {
            // Idle: no caller holds it (every caller keeps its queue until it is answered), so
            // nothing is pending but requests whose callers went away; reserving those would
            // only hold budget until their TTL.
            queues.retain(|_, q| Arc::strong_count(q) > 1);
        }
        queues.entry(project.to_owned()).or_default().clone()
    }

    /// Records figures seen in the database (a hint for the next reservation).
    pub(super) fn remember(&self, seen: impl IntoIterator<Item = (CounterId, Seen)>) {
        let mut figures = lock(&self.figures);
        if figures.len() > MAX_REMEMBERED {
            figures.clear();
        }
        figures.extend(seen);
    }
}

/// Reserves against every matching budget of `project`, all or nothing: queues the request and
/// runs the project's next group when it is this caller's turn.
pub(super) async fn reserve(
    pg: &PgStore,
    project: &str,
    input: ReserveInput,
    ttl_ms: i64,
) -> Result<Reservation> {
    let queue = pg.groups.queue(project);
    let (reply, mut answer) = oneshot::channel();
    lock(&queue.pending).push(Waiting {
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
            let mut pending = lock(&queue.pending);
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
        let pg = pg.clone();
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

async fn run_group(pg: &PgStore, project: &str, group: Vec<Waiting>) {
    let (items, replies): (Vec<_>, Vec<_>) = group
        .into_iter()
        .map(|w| ((w.input, w.ttl_ms), w.reply))
        .unzip();
    match reserve_group(pg, project, &items).await {
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

/// A group on its way: the answers found so far (replays are found before the rest commit).
struct Group<'a> {
    project: &'a str,
    items: &'a [(ReserveInput, i64)],
    answers: Vec<Option<Result<Reservation>>>,
    now: i64,
}

impl Group<'_> {
    fn finish(self) -> Vec<Result<Reservation>> {
        self.answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(storage("a reservation went unanswered"))))
            .collect()
    }
}

fn unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "23505")
}

/// Runs a group to its answers: a refusal is one item's result, not the group's.
async fn reserve_group(
    pg: &PgStore,
    project: &str,
    items: &[(ReserveInput, i64)],
) -> Result<Vec<Result<Reservation>>> {
    let mut g = Group {
        project,
        items,
        answers: items.iter().map(|_| None).collect(),
        now: now_ms(),
    };
    let mut steps = 0;
    {
        let mut conn = pg.reserve_pool.acquire().await.map_err(storage)?;
        while steps < OPTIMISTIC {
            steps += 1;
            match step(pg, &mut conn, &mut g).await {
                Ok(true) => return Ok(g.finish()),
                Ok(false) => {}
                // A concurrent insert of one of our ids (the next statement lists it as
                // taken), a deadlock: nothing was written, try again.
                Err(Fail::Db(e)) if retryable(&e) || unique_violation(&e) => {}
                Err(Fail::Retry) => {}
                Err(Fail::Db(e)) => return Err(storage(e)),
                Err(Fail::Core(e)) => return Err(e),
            }
        }
    }
    // Contended: in a transaction, the statement that misses keeps the counters locked for the
    // next one, decided on what it answered.
    while steps < MAX_STEPS {
        let mut tx = pg.reserve_pool.begin().await.map_err(storage)?;
        while steps < MAX_STEPS {
            steps += 1;
            match step(pg, &mut tx, &mut g).await {
                Ok(true) => {
                    tx.commit().await.map_err(storage)?;
                    return Ok(g.finish());
                }
                Ok(false) => {}
                // The transaction is aborted: start another.
                Err(Fail::Db(e)) if retryable(&e) || unique_violation(&e) => break,
                Err(Fail::Retry) => break,
                Err(Fail::Db(e)) => return Err(storage(e)),
                Err(Fail::Core(e)) => return Err(e),
            }
        }
    }
    Err(storage("a budget kept changing concurrently"))
}

/// How one item of the group is to be answered if the statement goes through.
enum Planned {
    Admit(Reservation),
    Refuse(Error),
    /// The same client-chosen id as an earlier item of the group, which is admitted.
    Same(usize),
}

/// A counter in the statement: what it must hold, what the group adds.
struct Want {
    expected: Option<Seen>,
    /// Figures for the decisions: the expected ones plus what earlier items added.
    spent: i64,
    reserved: i64,
    add: i64,
}

/// The rows the statement inserts, column by column.
#[derive(Default)]
struct Rows<'a> {
    id: Vec<String>,
    amount: Vec<i64>,
    state: Vec<&'static str>,
    expires: Vec<Option<i64>>,
    ended: Vec<Option<i64>>,
    counters: Vec<String>,
    tags: Vec<String>,
    provider: Vec<&'a str>,
    model: Vec<&'a str>,
    requested: Vec<i64>,
    refused_by: Vec<Option<String>>,
}

/// One pass: decide the unanswered items on the figures at hand and try to write them.
/// `Ok(true)` when every item is answered.
async fn step(
    pg: &PgStore,
    conn: &mut PgConnection,
    g: &mut Group<'_>,
) -> std::result::Result<bool, Fail> {
    let project = g.project;
    let cached = lock(&pg.groups.budgets).get(project).cloned();
    let (version, budgets) = match cached {
        Some(c) => c,
        None => {
            // Version first: budgets newer than their version only cost one more pass.
            let v: Option<i64> =
                sqlx::query_scalar("SELECT budgets_version FROM projects WHERE id = $1")
                    .bind(project)
                    .fetch_optional(&mut *conn)
                    .await?;
            let Some(v) = v else {
                return Err(Fail::Core(storage(format!(
                    "project {project:?} does not exist"
                ))));
            };
            let budgets = Arc::new(load_budgets(&mut *conn, project).await?);
            let mut all = lock(&pg.groups.budgets);
            if all.len() > MAX_REMEMBERED {
                all.clear();
            }
            all.insert(project.to_owned(), (v, budgets.clone()));
            (v, budgets)
        }
    };
    let pending: Vec<usize> = (0..g.items.len())
        .filter(|&i| g.answers[i].is_none())
        .collect();
    if pending.is_empty() {
        return Ok(true);
    }
    let plans: Vec<_> = pending
        .iter()
        .map(|&i| plan_counters(&budgets, &g.items[i].0.call, g.now))
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
    let mut want: BTreeMap<CounterId, Want> = BTreeMap::new();
    {
        let figures = lock(&pg.groups.figures);
        for c in counters.iter().flatten() {
            want.entry(c.clone()).or_insert_with(|| {
                let expected = figures.get(c).copied();
                let (spent, reserved) = match expected {
                    Some(Seen::At { spent, reserved }) => (spent, reserved),
                    _ => (0, 0),
                };
                Want {
                    expected,
                    spent,
                    reserved,
                    add: 0,
                }
            });
        }
    }

    // Decide in arrival order, each on what the earlier ones left.
    let mut planned: Vec<(usize, Planned)> = Vec::with_capacity(pending.len());
    let mut admitted_ids: HashMap<&str, usize> = HashMap::new();
    let mut rows = Rows::default();
    for ((&i, plan), mine) in pending.iter().zip(&plans).zip(&counters) {
        let (input, ttl_ms) = &g.items[i];
        if let Some(id) = &input.id
            && let Some(&first) = admitted_ids.get(id.as_str())
        {
            planned.push((i, Planned::Same(first)));
            continue;
        }
        let states: Vec<CounterState> = mine
            .iter()
            .map(|c| CounterState {
                spent: NanoUsd::from_nanos_clamped(want[c].spent),
                reserved: NanoUsd::from_nanos_clamped(want[c].reserved),
            })
            .collect();
        match decide(&budgets, plan, &states, input.amount, input.policy) {
            Decision::Reserve { amount, capped } => {
                for c in mine {
                    let w = want.get_mut(c).expect("every counter is wanted");
                    w.reserved = w.reserved.saturating_add(amount.nanos());
                    w.add = w.add.saturating_add(amount.nanos());
                }
                let id = input.id.clone().unwrap_or_else(|| new_id("res_", 32));
                let expires_at_ms = g.now.saturating_add(*ttl_ms);
                rows.id.push(id.clone());
                rows.amount.push(amount.nanos());
                rows.state.push("active");
                rows.expires.push(Some(expires_at_ms));
                rows.ended.push(None);
                rows.counters
                    .push(serde_json::to_string(mine).map_err(storage)?);
                rows.tags.push(tags_json(&input.call));
                rows.provider.push(&input.call.provider);
                rows.model.push(&input.call.model);
                rows.requested.push(input.amount.nanos());
                rows.refused_by.push(None);
                if let Some(id) = &input.id {
                    admitted_ids.insert(id, i);
                }
                planned.push((
                    i,
                    Planned::Admit(Reservation {
                        id,
                        amount,
                        capped,
                        budgets: mine.len(),
                        expires_at_ms,
                        replayed: false,
                        ended: None,
                    }),
                ));
            }
            Decision::Refuse { counter } => {
                let e = exceeded(&budgets, plan, &states, counter, input.amount);
                let Error::BudgetExceeded(x) = &e else {
                    unreachable!("exceeded() builds a BudgetExceeded")
                };
                let by = serde_json::to_string(&RefusedBy {
                    id: x.id.to_string(),
                    name: x.name.clone(),
                    key: x.key.clone(),
                })
                .map_err(storage)?;
                // A refusal is remembered under an id of its own: a refused reserve leaves
                // nothing, so its repeat decides anew.
                rows.id.push(new_refusal_id());
                rows.amount.push(0);
                rows.state.push("refused");
                rows.expires.push(None);
                rows.ended.push(Some(g.now));
                rows.counters.push("[]".to_owned());
                rows.tags.push(tags_json(&input.call));
                rows.provider.push(&input.call.provider);
                rows.model.push(&input.call.model);
                rows.requested.push(input.amount.nanos());
                rows.refused_by.push(Some(by));
                planned.push((i, Planned::Refuse(e)));
            }
        }
    }

    let (mut b, mut k, mut w) = (Vec::new(), Vec::new(), Vec::new());
    let (mut es, mut er, mut add) = (Vec::new(), Vec::new(), Vec::new());
    for ((budget, key, start), x) in &want {
        b.push(budget.as_str());
        k.push(key.as_str());
        w.push(*start);
        let (s, r) = match x.expected {
            None => (UNKNOWN, UNKNOWN),
            Some(Seen::Absent) => (ABSENT, ABSENT),
            Some(Seen::At { spent, reserved }) => (spent, reserved),
        };
        es.push(s);
        er.push(r);
        add.push(x.add);
    }
    let client_ids: Vec<&str> = pending
        .iter()
        .filter_map(|&i| g.items[i].0.id.as_deref())
        .collect();
    let answer = sqlx::query(
        "WITH want AS (
             SELECT * FROM UNNEST($3::text[], $4::text[], $5::int8[], $6::int8[], $7::int8[], $8::int8[])
                 AS u (b, k, w, es, er, d)
         ), cur AS MATERIALIZED (
             SELECT c.budget_id AS b, c.key AS k, c.window_start_ms AS w, c.spent, c.reserved
             FROM counters c JOIN want ON c.budget_id = want.b AND c.key = want.k AND c.window_start_ms = want.w
             ORDER BY c.budget_id, c.key, c.window_start_ms
             FOR UPDATE OF c
         ), s AS MATERIALIZED (
             SELECT (SELECT budgets_version FROM projects WHERE id = $1) AS v,
                    CASE WHEN cardinality($9::text[]) > 0 THEN
                        (SELECT array_agg(r.id::text) FROM UNNEST($9::text[]) AS x (id)
                         JOIN reservations r ON r.project_id = $1 AND r.id = x.id)
                    END AS taken
         ), go AS MATERIALIZED (
             SELECT s.v, s.taken, s.v = $2 AND s.taken IS NULL AND (
                 SELECT count(*) FROM want LEFT JOIN cur ON cur.b = want.b AND cur.k = want.k AND cur.w = want.w
                 WHERE (cur.b IS NULL AND want.es = -2) OR (cur.spent = want.es AND cur.reserved = want.er)
             ) = cardinality($3::text[]) AS ok
             FROM s
         ), upd AS (
             UPDATE counters c SET reserved = c.reserved + want.d FROM want, go
             WHERE go.ok AND want.d <> 0
               AND c.budget_id = want.b AND c.key = want.k AND c.window_start_ms = want.w
         ), mk AS (
             -- Counters an admitted call lands in first: still absent (checked above), so they
             -- are created holding the group's amount; a concurrent creation fails the statement.
             INSERT INTO counters (budget_id, key, window_start_ms, reserved)
             SELECT want.b, want.k, want.w, want.d FROM want, go
             WHERE go.ok AND want.es = -2 AND want.d <> 0
             ORDER BY want.b, want.k, want.w
         ), ins AS (
             INSERT INTO reservations (id, project_id, amount, state, created_at_ms, expires_at_ms, ended_at_ms,
                 counters, tags, provider, model, requested, refused_by)
             SELECT r.id, $1, r.a, r.s, $10, COALESCE(r.e, $10), r.x, r.c, r.t::jsonb, r.p, r.m, r.q, r.rb
             FROM UNNEST($11::text[], $12::int8[], $13::text[], $14::int8[], $15::int8[], $16::text[],
                         $17::text[], $18::text[], $19::text[], $20::int8[], $21::text[])
                 AS r (id, a, s, e, x, c, t, p, m, q, rb), go
             WHERE go.ok
         )
         SELECT go.v, COALESCE(go.ok, false), go.taken, cur.b, cur.k, cur.w, cur.spent, cur.reserved
         FROM go LEFT JOIN cur ON true",
    )
    .bind(project)
    .bind(version)
    .bind(&b)
    .bind(&k)
    .bind(&w)
    .bind(&es)
    .bind(&er)
    .bind(&add)
    .bind(&client_ids)
    .bind(g.now)
    .bind(&rows.id)
    .bind(&rows.amount)
    .bind(&rows.state)
    .bind(&rows.expires)
    .bind(&rows.ended)
    .bind(&rows.counters)
    .bind(&rows.tags)
    .bind(&rows.provider)
    .bind(&rows.model)
    .bind(&rows.requested)
    .bind(&rows.refused_by)
    .fetch_all(&mut *conn)
    .await?;

    let first = answer
        .first()
        .ok_or_else(|| Fail::Core(storage("the reservation statement answered nothing")))?;
    let v: Option<i64> = first.try_get(0)?;
    let ok: bool = first.try_get(1)?;
    let taken: Option<Vec<String>> = first.try_get(2)?;
    let mut now_at: HashMap<CounterId, (i64, i64)> = HashMap::with_capacity(answer.len());
    for r in &answer {
        if let Some(budget) = r.try_get::<Option<String>, _>(3)? {
            now_at.insert(
                (budget, r.try_get(4)?, r.try_get(5)?),
                (r.try_get(6)?, r.try_get(7)?),
            );
        }
    }
    pg.groups.remember(want.iter().map(|(c, x)| {
        let seen = match now_at.get(c) {
            Some(&(spent, reserved)) => Seen::At {
                spent,
                reserved: if ok {
                    reserved.saturating_add(x.add)
                } else {
                    reserved
                },
            },
            // Created by this statement.
            None if ok && x.add != 0 => Seen::At {
                spent: 0,
                reserved: x.add,
            },
            None => Seen::Absent,
        };
        (c.clone(), seen)
    }));
    let Some(v) = v else {
        return Err(Fail::Core(storage(format!(
            "project {project:?} does not exist"
        ))));
    };
    if v != version {
        lock(&pg.groups.budgets).remove(project);
        return Ok(false);
    }
    if let Some(taken) = taken {
        // Ids that already name a row: those items reserve nothing and answer what it holds.
        for &i in &pending {
            if let Some(id) = &g.items[i].0.id
                && taken.contains(id)
            {
                g.answers[i] = Some(match pg.replay(project, id).await {
                    Ok(Some(r)) => Ok(r),
                    Ok(None) => Err(storage(format!(
                        "reservation {id:?} vanished while replayed"
                    ))),
                    Err(e) => Err(e),
                });
            }
        }
        return Ok(false);
    }
    if !ok {
        return Ok(false);
    }
    let mut firsts: HashMap<usize, Reservation> = HashMap::new();
    let mut same = Vec::new();
    for (i, p) in planned {
        match p {
            Planned::Admit(r) => {
                if g.items[i].0.id.is_some() {
                    firsts.insert(i, r.clone());
                }
                g.answers[i] = Some(Ok(r));
            }
            Planned::Refuse(e) => g.answers[i] = Some(Err(e)),
            Planned::Same(first) => same.push((i, first)),
        }
    }
    for (i, first) in same {
        let mut r = firsts[&first].clone();
        r.replayed = true;
        g.answers[i] = Some(Ok(r));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    //! One group exactly as the queue would hand it over (a test cannot make concurrent callers
    //! land in one group for sure). Against `BURSORA_TEST_DATABASE_URL`; skipped without it.

    use bursora_core::budget::{BudgetSpec, CallTags, Mode, Selector, Tags};
    use bursora_core::ledger::Policy;
    use bursora_core::window::Window;

    use super::*;

    #[test]
    fn idle_project_queues_are_dropped_and_busy_ones_kept() {
        let groups = Groups::default();
        let busy = groups.queue("busy");
        for i in 0..3 * MAX_QUEUES {
            drop(groups.queue(&format!("p{i}")));
            assert!(
                lock(&groups.queues).len() <= MAX_QUEUES,
                "after {i} projects"
            );
        }
        // The queue a caller holds survives every pruning: later callers of its project join it.
        assert!(Arc::ptr_eq(&busy, &groups.queue("busy")));
        drop(busy);
        for i in 0..MAX_QUEUES {
            drop(groups.queue(&format!("q{i}")));
        }
        assert!(!lock(&groups.queues).contains_key("busy"));
    }

    /// `(state, amount, requested, model, tenant, refused_by is set)` of a stored row.
    type StoredRow = (
        String,
        i64,
        Option<i64>,
        Option<String>,
        Option<String>,
        bool,
    );

    fn nanos(n: i64) -> NanoUsd {
        NanoUsd::from_nanos(n).unwrap()
    }

    fn call(tenant: &str, amount: i64, policy: Policy, id: Option<&str>) -> (ReserveInput, i64) {
        let input = ReserveInput {
            call: CallTags {
                tags: Tags::new([("tenant_id", tenant)]).unwrap(),
                provider: "openai".into(),
                model: "gpt-4o-mini".into(),
            },
            amount: nanos(amount),
            policy,
            ttl_ms: None,
            id: id.map(str::to_owned),
        };
        (input, 60_000)
    }

    async fn store() -> Option<PgStore> {
        let url = std::env::var("BURSORA_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())?;
        Some(PgStore::connect(&url, 4).await.unwrap())
    }

    async fn project(pg: &PgStore, budgets: &[(&str, Selector, i64, Mode)]) -> String {
        let p = pg.create_project("group").await.unwrap().id;
        for (name, selector, limit, mode) in budgets {
            let spec =
                BudgetSpec::new(*name, selector.clone(), nanos(*limit), Window::Total, *mode)
                    .unwrap();
            pg.upsert_budget(&p, spec).await.unwrap();
        }
        p
    }

    /// `(budget name, key, spent, reserved, overrun)`, sorted.
    async fn figures(pg: &PgStore, p: &str) -> Vec<(String, Option<String>, i64, i64, i64)> {
        let mut out: Vec<_> = pg
            .status(p)
            .await
            .unwrap()
            .into_iter()
            .map(|s| {
                (
                    s.budget.spec.name,
                    s.key,
                    s.spent.nanos(),
                    s.reserved.nanos(),
                    s.overrun.nanos(),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn row(
        name: &str,
        key: Option<&str>,
        spent: i64,
        reserved: i64,
    ) -> (String, Option<String>, i64, i64, i64) {
        (name.to_owned(), key.map(str::to_owned), spent, reserved, 0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_group_replays_a_repeated_id_and_mixes_admitted_and_refused() {
        let Some(pg) = store().await else { return };
        let budgets = [
            ("hot", Selector::default(), 2_500, Mode::Block),
            (
                "per-tenant",
                Selector::new([("tenant_id", "*")]).unwrap(),
                1_500,
                Mode::Block,
            ),
            ("watch", Selector::default(), 1, Mode::Notify),
        ];
        let (p1, p2) = (project(&pg, &budgets).await, project(&pg, &budgets).await);
        let fit = Policy::Fit { min: nanos(100) };
        let group = vec![
            call("a", 1_000, Policy::Block, Some("same-id-0001")),
            call("a", 1_000, Policy::Block, Some("same-id-0001")),
            call("a", 1_000, Policy::Block, None), // per-tenant a: 2000 > 1500
            call("b", 1_000, Policy::Block, None),
            call("c", 1_000, Policy::Block, None), // hot: 3000 > 2500
            call("c", 1_000, fit, None),           // hot has 500 left: capped
        ];
        // Two projects' groups at once, with the same client id: ids are per project.
        let (r1, r2) = tokio::join!(
            reserve_group(&pg, &p1, &group),
            reserve_group(&pg, &p2, &group[..1])
        );
        let (r1, r2) = (r1.unwrap(), r2.unwrap());
        let first = r1[0].as_ref().unwrap();
        assert_eq!(
            (first.id.as_str(), first.amount, first.replayed),
            ("same-id-0001", nanos(1_000), false)
        );
        let again = r1[1].as_ref().unwrap();
        assert_eq!(
            (again.id.as_str(), again.amount, again.replayed),
            ("same-id-0001", nanos(1_000), true)
        );
        let refused = |r: &Result<Reservation>| match r {
            Err(Error::BudgetExceeded(x)) => (x.name.clone(), x.key.clone(), x.spent, x.reserved),
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(
            refused(&r1[2]),
            (
                "per-tenant".into(),
                Some("tenant_id=a".into()),
                nanos(0),
                nanos(1_000)
            )
        );
        assert!(r1[3].as_ref().is_ok_and(|r| !r.capped && r.budgets == 3));
        assert_eq!(
            refused(&r1[4]),
            ("hot".into(), None, nanos(0), nanos(2_000))
        );
        let capped = r1[5].as_ref().unwrap();
        assert_eq!((capped.amount, capped.capped), (nanos(500), true));
        assert_eq!(
            figures(&pg, &p1).await,
            vec![
                row("hot", None, 0, 2_500),
                row("per-tenant", Some("tenant_id=a"), 0, 1_000),
                row("per-tenant", Some("tenant_id=b"), 0, 1_000),
                row("per-tenant", Some("tenant_id=c"), 0, 500),
                row("watch", None, 0, 2_500),
            ]
        );
        let other = r2[0].as_ref().unwrap();
        assert_eq!((other.id.as_str(), other.replayed), ("same-id-0001", false));
        assert_eq!(
            figures(&pg, &p2).await,
            vec![
                row("hot", None, 0, 1_000),
                row("per-tenant", Some("tenant_id=a"), 0, 1_000),
                row("watch", None, 0, 1_000),
            ]
        );
        // The history: refusals recorded with what they asked; admitted rows keep their call.
        let stored: Vec<StoredRow> =
            sqlx::query_as(
                "SELECT state, amount, requested, model, tags ->> 'tenant_id', refused_by IS NOT NULL
                 FROM reservations WHERE project_id = $1 ORDER BY state, amount, tags ->> 'tenant_id'",
            )
            .bind(&p1)
            .fetch_all(&pg.pool)
            .await
            .unwrap();
        let model = Some("gpt-4o-mini".to_owned());
        let t = |s: &str| Some(s.to_owned());
        assert_eq!(
            stored,
            vec![
                (
                    "active".into(),
                    500,
                    Some(1_000),
                    model.clone(),
                    t("c"),
                    false
                ),
                (
                    "active".into(),
                    1_000,
                    Some(1_000),
                    model.clone(),
                    t("a"),
                    false
                ),
                (
                    "active".into(),
                    1_000,
                    Some(1_000),
                    model.clone(),
                    t("b"),
                    false
                ),
                (
                    "refused".into(),
                    0,
                    Some(1_000),
                    model.clone(),
                    t("a"),
                    true
                ),
                (
                    "refused".into(),
                    0,
                    Some(1_000),
                    model.clone(),
                    t("c"),
                    true
                ),
            ]
        );

        // The id again, in a later group (and twice in it): the stored answer, nothing reserved.
        let later = reserve_group(&pg, &p1, &group[..2]).await.unwrap();
        for r in &later {
            let r = r.as_ref().unwrap();
            assert_eq!(
                (r.id.as_str(), r.amount, r.replayed),
                ("same-id-0001", nanos(1_000), true)
            );
        }
        assert_eq!(figures(&pg, &p1).await[0], row("hot", None, 0, 2_500));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_reservation_statement_runs_on_generic_plans_and_stays_exact() {
        let Some(pg) = store().await else { return };
        // `connect(url, 4)`: one reserving connection, so every group below runs on it.
        assert_eq!(pg.reserve_pool.options().get_max_connections(), 1);
        let p = project(&pg, &[("hot", Selector::default(), 10_500, Mode::Block)]).await;
        for n in 0..12 {
            let r = reserve_group(&pg, &p, &[call("t", 1_000, Policy::Block, None)])
                .await
                .unwrap();
            assert_eq!(r[0].is_ok(), n < 10, "reservation {n}: {:?}", r[0]);
        }
        let fit = [call("t", 1_000, Policy::Fit { min: nanos(100) }, None)];
        let capped = reserve_group(&pg, &p, &fit).await.unwrap();
        assert_eq!(capped[0].as_ref().unwrap().amount, nanos(500));
        assert_eq!(figures(&pg, &p).await, vec![row("hot", None, 0, 10_500)]);

        let mut conn = pg.reserve_pool.acquire().await.unwrap();
        let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(mode, "force_generic_plan");
        let (generic, custom): (i64, i64) = sqlx::query_as(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements
             WHERE statement LIKE 'WITH want AS%'",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!(
            (generic >= 13, custom),
            (true, 0),
            "{generic} generic plans"
        );
        // Every other query keeps Postgres's own choice.
        let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
            .fetch_one(&pg.pool)
            .await
            .unwrap();
        assert_eq!(mode, "auto");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_figures_and_budgets_of_another_replica_are_never_decided_on() {
        let Some(a) = store().await else { return };
        let b = store().await.unwrap();
        let p = project(&a, &[("hot", Selector::default(), 3_000, Mode::Block)]).await;
        let one = [call("t", 1_000, Policy::Block, None)];
        // a remembers (0, 1000); b moves the counter; a's next guess is stale.
        assert!(reserve_group(&a, &p, &one).await.unwrap()[0].is_ok());
        assert!(reserve_group(&b, &p, &one).await.unwrap()[0].is_ok());
        assert!(reserve_group(&a, &p, &one).await.unwrap()[0].is_ok());
        assert!(matches!(
            reserve_group(&a, &p, &one).await.unwrap()[0],
            Err(Error::BudgetExceeded(_))
        ));
        assert_eq!(figures(&a, &p).await, vec![row("hot", None, 0, 3_000)]);
        // b raises the limit: a, which cached the budgets, admits at once.
        let spec = BudgetSpec::new(
            "hot",
            Selector::default(),
            nanos(4_000),
            Window::Total,
            Mode::Block,
        )
        .unwrap();
        b.upsert_budget(&p, spec).await.unwrap();
        assert!(reserve_group(&a, &p, &one).await.unwrap()[0].is_ok());
        assert_eq!(figures(&a, &p).await, vec![row("hot", None, 0, 4_000)]);
        // b settles (a's figures go stale again) and removes the budget: nothing to reserve in.
        let ids: Vec<_> =
            sqlx::query_scalar::<_, String>("SELECT id FROM reservations WHERE project_id = $1")
                .bind(&p)
                .fetch_all(&b.pool)
                .await
                .unwrap();
        let items = ids
            .iter()
            .map(|id| bursora_core::ledger::history::SettleWith {
                id: id.clone(),
                actual: Some(nanos(100)),
                tokens: Default::default(),
            })
            .collect();
        b.settle_batch(&p, items).await.unwrap();
        assert!(b.remove_budget(&p, "hot").await.unwrap());
        let free = reserve_group(&a, &p, &one).await.unwrap();
        assert_eq!(free[0].as_ref().unwrap().budgets, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_settle_batch_moves_each_counter_once_by_the_sum_of_the_items() {
        let Some(pg) = store().await else { return };
        let p = project(
            &pg,
            &[
                ("all", Selector::default(), 1_000_000, Mode::Block),
                (
                    "per-tenant",
                    Selector::new([("tenant_id", "*")]).unwrap(),
                    1_000_000,
                    Mode::Block,
                ),
            ],
        )
        .await;
        let group = vec![
            call("a", 1_000, Policy::Block, None),
            call("a", 2_000, Policy::Block, None),
            call("b", 3_000, Policy::Block, None),
            call("b", 4_000, Policy::Block, None),
        ];
        let ids: Vec<String> = reserve_group(&pg, &p, &group)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap().id)
            .collect();
        let before = figures(&pg, &p).await;
        // Under, over (an overrun), a release, and the first id again (a repeat: unchanged).
        let actuals = [Some(400), Some(2_600), None, Some(4_000), Some(999)];
        let targets = [0, 1, 2, 3, 0];
        let items = targets
            .iter()
            .zip(actuals)
            .map(|(&i, a)| bursora_core::ledger::history::SettleWith {
                id: ids[i].clone(),
                actual: a.map(nanos),
                tokens: Default::default(),
            })
            .collect();
        let results = pg.settle_batch(&p, items).await.unwrap();
        assert!(results.iter().all(Result::is_ok));
        // The same batch item by item with the core's math.
        let mut expected = before;
        let held = [1_000, 2_000, 3_000, 4_000];
        let tenant = ["a", "a", "b", "b"];
        for (n, (&i, a)) in targets.iter().zip(actuals).enumerate() {
            if n == 4 {
                break; // the repeat moves nothing
            }
            let math =
                bursora_core::ledger::SettleMath::settle(nanos(held[i]), nanos(a.unwrap_or(0)));
            let key = format!("tenant_id={}", tenant[i]);
            for e in expected
                .iter_mut()
                .filter(|e| e.0 == "all" || e.1.as_deref() == Some(key.as_str()))
            {
                let (s, r, o) = math.apply(nanos(e.2), nanos(e.3), nanos(e.4));
                (e.2, e.3, e.4) = (s.nanos(), r.nanos(), o.nanos());
            }
        }
        assert_eq!(figures(&pg, &p).await, expected);
        assert_eq!(expected[0], ("all".into(), None, 7_000, 0, 600));
    }
}
