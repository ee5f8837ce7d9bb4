//! Alerts on SQLite, in `server.db` (every process sharing the data directory sees the same
//! rows; each statement below is atomic under SQLite's write lock); see [`crate::store::Alert`].

use bursora_core::Result;
use rusqlite::{OptionalExtension, Row, params};

use super::SqliteStore;
use crate::store::alerts::{ids_from_json, ids_to_json, thresholds_from_json};
use crate::store::{
    Alert, AlertRule, AlertStatus, AttemptRecord, NewAlert, Webhook, WebhookFormat, new_id, now_ms,
};

/// The same tables as `migrations/20261201120000_alerts.sql`.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS webhooks (
    id            TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    url           TEXT NOT NULL,
    format        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhooks_project ON webhooks (project_id, created_at_ms);
CREATE TABLE IF NOT EXISTS alert_rules (
    project_id    TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    budget_id     TEXT NOT NULL,
    thresholds    TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (project_id, budget_id)
);
CREATE TABLE IF NOT EXISTS alerts (
    id              TEXT PRIMARY KEY,
    project_id      TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    budget_id       TEXT NOT NULL,
    budget_name     TEXT NOT NULL,
    key             TEXT NOT NULL,
    window_kind     TEXT NOT NULL,
    window_start_ms INTEGER NOT NULL,
    resets_at_ms    INTEGER,
    threshold_pct   INTEGER NOT NULL,
    limit_nanos     INTEGER NOT NULL,
    spent_nanos     INTEGER NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    delivered_at_ms INTEGER,
    delivered_to    TEXT NOT NULL DEFAULT '[]',
    next_attempt_ms INTEGER NOT NULL,
    lease_until_ms  INTEGER NOT NULL,
    UNIQUE (project_id, budget_id, key, window_start_ms, threshold_pct)
);
CREATE INDEX IF NOT EXISTS alerts_recent ON alerts (project_id, created_at_ms DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_due ON alerts (next_attempt_ms) WHERE status = 'pending';
";

const ALERT_COLUMNS: &str =
    "id, project_id, budget_id, budget_name, key, window_kind, window_start_ms,
    resets_at_ms, threshold_pct, limit_nanos, spent_nanos, created_at_ms, status, attempts,
    last_error, delivered_at_ms, delivered_to";

/// A row read in `rusqlite`'s callback, parsed further outside it (JSON, status).
struct RawAlert {
    alert: Alert,
    status: String,
    delivered_to: String,
}

fn raw_alert(r: &Row<'_>) -> rusqlite::Result<RawAlert> {
    let key: String = r.get(4)?;
    Ok(RawAlert {
        alert: Alert {
            id: r.get(0)?,
            what: NewAlert {
                project: r.get(1)?,
                budget_id: r.get(2)?,
                budget_name: r.get(3)?,
                key: (!key.is_empty()).then_some(key),
                window: r.get(5)?,
                window_start_ms: r.get(6)?,
                resets_at_ms: r.get(7)?,
                threshold_pct: r.get(8)?,
                limit_nanos: r.get(9)?,
                spent_nanos: r.get(10)?,
            },
            created_at_ms: r.get(11)?,
            status: AlertStatus::Pending,
            attempts: r.get(13)?,
            last_error: r.get(14)?,
            delivered_at_ms: r.get(15)?,
            delivered_to: Vec::new(),
        },
        status: r.get(12)?,
        delivered_to: r.get(16)?,
    })
}

fn finish(raw: RawAlert) -> Result<Alert> {
    let mut a = raw.alert;
    a.status = AlertStatus::parse(&raw.status)?;
    a.delivered_to = ids_from_json(&raw.delivered_to)?;
    Ok(a)
}

impl SqliteStore {
    pub(in crate::store) async fn create_webhook(&self, w: &Webhook) -> Result<()> {
        let w = w.clone();
        self.meta(move |db| {
            db.execute(
                "INSERT INTO webhooks (id, project_id, name, url, format, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    w.id,
                    w.project,
                    w.name,
                    w.url,
                    w.format.as_str(),
                    w.created_at_ms
                ],
            )
            .map(drop)
        })
        .await
    }

    pub(in crate::store) async fn webhooks(&self, project: &str) -> Result<Vec<Webhook>> {
        let project = project.to_owned();
        let rows: Vec<(Webhook, String)> = self
            .meta(move |db| {
                db.prepare(
                    "SELECT id, project_id, name, url, format, created_at_ms FROM webhooks
                     WHERE project_id = ?1 ORDER BY created_at_ms, id",
                )?
                .query_map([project], |r| {
                    Ok((
                        Webhook {
                            id: r.get(0)?,
                            project: r.get(1)?,
                            name: r.get(2)?,
                            url: r.get(3)?,
                            format: WebhookFormat::Json,
                            created_at_ms: r.get(5)?,
                        },
                        r.get(4)?,
                    ))
                })?
                .collect()
            })
            .await?;
        rows.into_iter()
            .map(|(mut w, format)| {
                w.format = WebhookFormat::parse(&format).ok_or_else(|| {
                    super::storage(format!("a webhook has an unknown format {format:?}"))
                })?;
                Ok(w)
            })
            .collect()
    }

    pub(in crate::store) async fn delete_webhook(&self, project: &str, id: &str) -> Result<bool> {
        let (project, id) = (project.to_owned(), id.to_owned());
        self.meta(move |db| {
            db.execute(
                "DELETE FROM webhooks WHERE project_id = ?1 AND id = ?2",
                params![project, id],
            )
            .map(|n| n > 0)
        })
        .await
    }

    pub(in crate::store) async fn set_alert_thresholds(
        &self,
        project: &str,
        budget_id: &str,
        thresholds: &[u16],
    ) -> Result<()> {
        let (project, budget_id) = (project.to_owned(), budget_id.to_owned());
        let json = (!thresholds.is_empty())
            .then(|| serde_json::to_string(thresholds).map_err(super::storage))
            .transpose()?;
        self.meta(move |db| match json {
            None => db
                .execute(
                    "DELETE FROM alert_rules WHERE project_id = ?1 AND budget_id = ?2",
                    params![project, budget_id],
                )
                .map(drop),
            Some(json) => db
                .execute(
                    "INSERT INTO alert_rules (project_id, budget_id, thresholds, updated_at_ms)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (project_id, budget_id)
                     DO UPDATE SET thresholds = excluded.thresholds, updated_at_ms = excluded.updated_at_ms",
                    params![project, budget_id, json, now_ms()],
                )
                .map(drop),
        })
        .await
    }

    pub(in crate::store) async fn alert_thresholds(
        &self,
        project: &str,
        budget_id: &str,
    ) -> Result<Vec<u16>> {
        let (project, budget_id) = (project.to_owned(), budget_id.to_owned());
        let text: Option<String> = self
            .meta(move |db| {
                db.query_row(
                    "SELECT thresholds FROM alert_rules WHERE project_id = ?1 AND budget_id = ?2",
                    params![project, budget_id],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?;
        text.map_or_else(|| Ok(Vec::new()), |t| thresholds_from_json(&t))
    }

    pub(in crate::store) async fn alert_rules(&self) -> Result<Vec<AlertRule>> {
        let rows: Vec<(String, String, String)> = self
            .meta(|db| {
                db.prepare(
                    "SELECT project_id, budget_id, thresholds FROM alert_rules
                     ORDER BY project_id, budget_id",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
            })
            .await?;
        rows.into_iter()
            .map(|(project, budget_id, t)| {
                Ok(AlertRule {
                    project,
                    budget_id,
                    thresholds: thresholds_from_json(&t)?,
                })
            })
            .collect()
    }

    pub(in crate::store) async fn claim_alert(
        &self,
        a: &NewAlert,
        lease_until_ms: i64,
    ) -> Result<Option<Alert>> {
        let a = a.clone();
        let id = new_id("alr_", 24);
        let raw = self
            .meta(move |db| {
                db.query_row(
                    &format!(
                        "INSERT INTO alerts (id, project_id, budget_id, budget_name, key, window_kind,
                            window_start_ms, resets_at_ms, threshold_pct, limit_nanos, spent_nanos,
                            created_at_ms, status, next_attempt_ms, lease_until_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'pending', ?12, ?13)
                         ON CONFLICT (project_id, budget_id, key, window_start_ms, threshold_pct) DO NOTHING
                         RETURNING {ALERT_COLUMNS}"
                    ),
                    params![
                        id,
                        a.project,
                        a.budget_id,
                        a.budget_name,
                        a.key.as_deref().unwrap_or(""),
                        a.window,
                        a.window_start_ms,
                        a.resets_at_ms,
                        a.threshold_pct,
                        a.limit_nanos,
                        a.spent_nanos,
                        now_ms(),
                        lease_until_ms
                    ],
                    raw_alert,
                )
                .optional()
            })
            .await?;
        raw.map(finish).transpose()
    }

    pub(in crate::store) async fn take_due_alerts(
        &self,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<Alert>> {
        let now = now_ms();
        // One statement: atomic under the write lock, so two processes never take one row.
        let raws: Vec<RawAlert> = self
            .meta(move |db| {
                db.prepare(&format!(
                    "UPDATE alerts SET lease_until_ms = ?2 WHERE id IN (
                        SELECT id FROM alerts
                        WHERE status = 'pending' AND next_attempt_ms <= ?1 AND lease_until_ms <= ?1
                        ORDER BY next_attempt_ms, id LIMIT ?3)
                     RETURNING {ALERT_COLUMNS}"
                ))?
                .query_map(params![now, lease_until_ms, limit], raw_alert)?
                .collect()
            })
            .await?;
        raws.into_iter().map(finish).collect()
    }

    pub(in crate::store) async fn record_alert_attempt(
        &self,
        id: &str,
        a: &AttemptRecord,
    ) -> Result<()> {
        let (id, a) = (id.to_owned(), a.clone());
        self.meta(move |db| {
            db.execute(
                "UPDATE alerts SET status = ?2, attempts = ?3, last_error = ?4, delivered_at_ms = ?5,
                    delivered_to = ?6, next_attempt_ms = ?7, lease_until_ms = 0
                 WHERE id = ?1 AND lease_until_ms = ?8",
                params![
                    id,
                    a.status.as_str(),
                    a.attempts,
                    a.last_error,
                    a.delivered_at_ms,
                    ids_to_json(&a.delivered_to),
                    a.next_attempt_ms,
                    a.lease_until_ms
                ],
            )
            .map(drop)
        })
        .await
    }

    pub(in crate::store) async fn alerts(&self, project: &str, limit: u32) -> Result<Vec<Alert>> {
        let project = project.to_owned();
        let raws: Vec<RawAlert> = self
            .meta(move |db| {
                db.prepare(&format!(
                    "SELECT {ALERT_COLUMNS} FROM alerts WHERE project_id = ?1
                     ORDER BY created_at_ms DESC, id DESC LIMIT ?2"
                ))?
                .query_map(params![project, limit], raw_alert)?
                .collect()
            })
            .await?;
        raws.into_iter().map(finish).collect()
    }
}
