//! The SQLite ledger's history: settlements with tokens, usage events, and the queries over
//! remembered calls ([`super::super::history`]). Everything reads the `reservations` table
//! through its creation-time index.

use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params, params_from_iter};

use super::{SqliteLedger, StoredCounter, read_counter, storage_error, write_counter};
use crate::error::{Error, Result};
use crate::ledger::history::{
    Event, EventKind, EventQuery, GroupBy, SettleWith, SpendQuery, SpendRow, StoredEvent,
    UsageItem, UsageOutcome, WindowFigures, kind_filter_sql, tags_json,
};
use crate::ledger::{Settlement, plan_counters};
use crate::money::NanoUsd;

/// The states whose actual cost is spend.
const SPENT_STATES: &str = "('settled', 'expired', 'usage')";

impl SqliteLedger {
    /// Like [`Ledger::settle_batch`](crate::ledger::Ledger::settle_batch), also remembering the
    /// tokens each settlement reports (a repeat changes nothing, tokens included).
    ///
    /// # Errors
    /// Storage failures (then nothing changed).
    pub fn settle_batch_with(&self, items: &[SettleWith]) -> Result<Vec<Result<Settlement>>> {
        let now = self.clock.now_ms();
        self.write(|tx, _| {
            items
                .iter()
                .map(
                    |item| match self.end_in(tx, &item.id, item.actual, now, item.tokens) {
                        Err(e @ Error::Storage { .. }) => Err(e),
                        other => Ok(other),
                    },
                )
                .collect()
        })
    }

    /// Delivers usage, exactly once per id: an id naming a reservation settles it (as
    /// [`SqliteLedger::settle_batch_with`] would); any other id is recorded once as a usage
    /// event whose cost counts as spent in every matching budget's window at its time. Never
    /// refuses: the calls already happened. One transaction for the batch.
    ///
    /// # Errors
    /// Storage failures (then nothing changed).
    pub fn usage_batch(&self, items: &[UsageItem]) -> Result<Vec<UsageOutcome>> {
        let now = self.clock.now_ms();
        self.write(|tx, cache| {
            let fail = |e: rusqlite::Error| storage_error(&self.path, &e);
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let state: Option<String> = tx
                    .prepare_cached("SELECT state FROM reservations WHERE id = ?1")
                    .and_then(|mut s| s.query_row([&item.id], |r| r.get(0)).optional())
                    .map_err(fail)?;
                match state.as_deref().map(EventKind::parse) {
                    Some(Ok(kind)) if kind.is_reservation() => {
                        let s =
                            self.end_in(tx, &item.id, Some(item.actual), now, item.tokens)?;
                        out.push(UsageOutcome::Settled(s));
                    }
                    Some(_) => out.push(UsageOutcome::Recorded(false)),
                    None => {
                        let at = item.at_ms.unwrap_or(now).min(now);
                        let plan = plan_counters(cache.budgets, &item.call, at);
                        let mut stored: Vec<StoredCounter> = Vec::with_capacity(plan.len());
                        for c in &plan {
                            let id = &*cache.budgets[c.budget].id;
                            let (spent, reserved, overrun) =
                                read_counter(tx, id, c).map_err(fail)?.unwrap_or_default();
                            write_counter(
                                tx,
                                (id, &c.key, c.window_start_ms),
                                (
                                    NanoUsd::from_nanos_clamped(spent).saturating_add(item.actual),
                                    NanoUsd::from_nanos_clamped(reserved),
                                    NanoUsd::from_nanos_clamped(overrun),
                                ),
                            )
                            .map_err(fail)?;
                            stored.push((id.to_owned(), c.key.clone(), c.window_start_ms));
                        }
                        let counters = serde_json::to_string(&stored).map_err(|e| {
                            Error::Storage {
                                message: e.to_string(),
                            }
                        })?;
                        tx.prepare_cached(
                            "INSERT INTO reservations (id, amount, state, actual, created_at_ms, expires_at_ms, ended_at_ms,
                             counters, tags, provider, model, requested, input_tokens, output_tokens)
                             VALUES (?1, 0, 'usage', ?2, ?3, ?3, ?4, ?5, ?6, ?7, ?8, ?2, ?9, ?10)",
                        )
                        .and_then(|mut s| {
                            s.execute(params![
                                item.id,
                                item.actual.nanos(),
                                at,
                                now,
                                counters,
                                tags_json(&item.call),
                                item.call.provider,
                                item.call.model,
                                item.tokens.input,
                                item.tokens.output
                            ])
                        })
                        .map_err(fail)?;
                        out.push(UsageOutcome::Recorded(true));
                    }
                }
            }
            Ok(out)
        })
    }

    /// Remembered calls, newest first (by time, then id, descending).
    ///
    /// # Errors
    /// Storage failures.
    pub fn events(&self, q: &EventQuery) -> Result<Vec<Event>> {
        let mut sql = String::from(
            "SELECT id, state, created_at_ms, tags, provider, model, requested, amount, actual,
             input_tokens, output_tokens, refused_by FROM reservations
             WHERE created_at_ms >= ?1 AND created_at_ms < ?2",
        );
        let mut args = vec![
            Value::Integer(q.from_ms.unwrap_or(0)),
            Value::Integer(q.to_ms.unwrap_or(i64::MAX)),
        ];
        if let Some((at, id)) = &q.before {
            sql.push_str(" AND (created_at_ms, id) < (?3, ?4)");
            args.push(Value::Integer(*at));
            args.push(Value::Text(id.clone()));
        }
        sql.push_str(&kind_filter_sql(&q.kinds, q.overrun_only));
        sql.push_str(&format!(
            " ORDER BY created_at_ms DESC, id DESC LIMIT {}",
            q.limit
        ));
        self.read(|tx, _| {
            let fail = |e: rusqlite::Error| storage_error(&self.path, &e);
            let mut stmt = tx.prepare_cached(&sql).map_err(fail)?;
            let rows = stmt
                .query_map(params_from_iter(args), |r| {
                    Ok(StoredEvent {
                        id: r.get(0)?,
                        state: r.get(1)?,
                        at_ms: r.get(2)?,
                        tags: r.get(3)?,
                        provider: r.get(4)?,
                        model: r.get(5)?,
                        requested: r.get(6)?,
                        amount: r.get(7)?,
                        actual: r.get(8)?,
                        input_tokens: r.get(9)?,
                        output_tokens: r.get(10)?,
                        refused_by: r.get(11)?,
                    })
                })
                .map_err(fail)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row.map_err(fail)?.into_event()?);
            }
            Ok(out)
        })
    }

    /// Spend over `[from, to)`, grouped and bucketed as asked ([`SpendQuery`]).
    ///
    /// # Errors
    /// Storage failures.
    pub fn spend(&self, q: &SpendQuery) -> Result<Vec<SpendRow>> {
        let bucket = q.bucket_ms.map_or_else(
            || "?1".to_owned(),
            |b| format!("(created_at_ms / {b}) * {b}"),
        );
        let group = match &q.group_by {
            None => "NULL".to_owned(),
            Some(GroupBy::Model) => "model".to_owned(),
            Some(GroupBy::Provider) => "provider".to_owned(),
            // The key is validated ([A-Za-z0-9_.:-]), so quoting it as a JSON path is safe.
            Some(GroupBy::Tag(key)) => format!("json_extract(tags, '$.\"{key}\"')"),
        };
        let order = if q.bucket_ms.is_some() {
            "b, s DESC, g"
        } else {
            "s DESC, g"
        };
        let sql = format!(
            "SELECT {bucket} AS b, {group} AS g, SUM(actual) AS s, COUNT(*) FROM reservations
             WHERE created_at_ms >= ?1 AND created_at_ms < ?2 AND state IN {SPENT_STATES}
             GROUP BY b, g ORDER BY {order} LIMIT {}",
            q.limit
        );
        self.read(|tx, _| {
            let fail = |e: rusqlite::Error| storage_error(&self.path, &e);
            let mut stmt = tx.prepare_cached(&sql).map_err(fail)?;
            let rows = stmt
                .query_map(params![q.from_ms, q.to_ms], |r| {
                    Ok(SpendRow {
                        start_ms: r.get(0)?,
                        value: r.get(1)?,
                        spent: NanoUsd::from_nanos_clamped(r.get(2)?),
                        calls: r.get::<_, i64>(3)?.try_into().unwrap_or(0),
                    })
                })
                .map_err(fail)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(fail)
        })
    }

    /// A budget's counters in windows starting in `[from_ms, to_ms)`, newest first.
    ///
    /// # Errors
    /// Storage failures.
    pub fn windows(
        &self,
        budget_id: &str,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<WindowFigures>> {
        self.read(|tx, _| {
            let fail = |e: rusqlite::Error| storage_error(&self.path, &e);
            let mut stmt = tx
                .prepare_cached(
                    "SELECT key, window_start_ms, spent, reserved, overrun FROM counters
                     WHERE budget_id = ?1 AND window_start_ms >= ?2 AND window_start_ms < ?3
                     ORDER BY window_start_ms DESC, key LIMIT ?4",
                )
                .map_err(fail)?;
            let rows = stmt
                .query_map(
                    params![
                        budget_id,
                        from_ms,
                        to_ms,
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    |r| {
                        let key: String = r.get(0)?;
                        Ok(WindowFigures {
                            key: (!key.is_empty()).then_some(key),
                            window_start_ms: r.get(1)?,
                            spent: NanoUsd::from_nanos_clamped(r.get(2)?),
                            reserved: NanoUsd::from_nanos_clamped(r.get(3)?),
                            overrun: NanoUsd::from_nanos_clamped(r.get(4)?),
                        })
                    },
                )
                .map_err(fail)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(fail)
        })
    }
}
