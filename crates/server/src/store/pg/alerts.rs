//! Alerts on Postgres (`migrations/20261201120000_alerts.sql`); see [`crate::store::Alert`].

use bursora_core::Result;
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PgStore, storage};
use crate::store::alerts::{ids_from_json, ids_to_json, thresholds_from_json};
use crate::store::{
    Alert, AlertRule, AlertStatus, AttemptRecord, NewAlert, Webhook, WebhookFormat, new_id, now_ms,
};

/// The columns [`alert_from_row`] reads; a macro so queries stay `&'static str` (sqlx's
/// `SqlSafeStr`) through `concat!`.
macro_rules! alert_columns {
    () => {
        "id, project_id, budget_id, budget_name, key, window_kind, window_start_ms,
        resets_at_ms, threshold_pct, limit_nanos, spent_nanos, created_at_ms, status, attempts,
        last_error, delivered_at_ms, delivered_to"
    };
}

impl PgStore {
    pub(in crate::store) async fn create_webhook(&self, w: &Webhook) -> Result<()> {
        sqlx::query(
            "INSERT INTO webhooks (id, project_id, name, url, format, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&w.id)
        .bind(&w.project)
        .bind(&w.name)
        .bind(&w.url)
        .bind(w.format.as_str())
        .bind(w.created_at_ms)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(storage)
    }

    pub(in crate::store) async fn webhooks(&self, project: &str) -> Result<Vec<Webhook>> {
        sqlx::query(
            "SELECT id, project_id, name, url, format, created_at_ms FROM webhooks
             WHERE project_id = $1 ORDER BY created_at_ms, id",
        )
        .bind(project)
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?
        .iter()
        .map(webhook_from_row)
        .collect()
    }

    pub(in crate::store) async fn delete_webhook(&self, project: &str, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM webhooks WHERE project_id = $1 AND id = $2")
            .bind(project)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(storage)?;
        Ok(done.rows_affected() > 0)
    }

    pub(in crate::store) async fn set_alert_thresholds(
        &self,
        project: &str,
        budget_id: &str,
        thresholds: &[u16],
    ) -> Result<()> {
        if thresholds.is_empty() {
            sqlx::query("DELETE FROM alert_rules WHERE project_id = $1 AND budget_id = $2")
                .bind(project)
                .bind(budget_id)
                .execute(&self.pool)
                .await
                .map_err(storage)?;
            return Ok(());
        }
        let json = serde_json::to_string(thresholds).map_err(storage)?;
        sqlx::query(
            "INSERT INTO alert_rules (project_id, budget_id, thresholds, updated_at_ms)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (project_id, budget_id)
             DO UPDATE SET thresholds = EXCLUDED.thresholds, updated_at_ms = EXCLUDED.updated_at_ms",
        )
        .bind(project)
        .bind(budget_id)
        .bind(json)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(storage)
    }

    pub(in crate::store) async fn alert_thresholds(
        &self,
        project: &str,
        budget_id: &str,
    ) -> Result<Vec<u16>> {
        let text: Option<String> = sqlx::query_scalar(
            "SELECT thresholds FROM alert_rules WHERE project_id = $1 AND budget_id = $2",
        )
        .bind(project)
        .bind(budget_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(storage)?;
        text.map_or_else(|| Ok(Vec::new()), |t| thresholds_from_json(&t))
    }

    pub(in crate::store) async fn alert_rules(&self) -> Result<Vec<AlertRule>> {
        let rows = sqlx::query(
            "SELECT project_id, budget_id, thresholds FROM alert_rules ORDER BY project_id, budget_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        rows.iter()
            .map(|r| {
                Ok(AlertRule {
                    project: r.try_get(0).map_err(storage)?,
                    budget_id: r.try_get(1).map_err(storage)?,
                    thresholds: thresholds_from_json(&r.try_get::<String, _>(2).map_err(storage)?)?,
                })
            })
            .collect()
    }

    pub(in crate::store) async fn claim_alert(
        &self,
        a: &NewAlert,
        lease_until_ms: i64,
    ) -> Result<Option<Alert>> {
        let now = now_ms();
        let row = sqlx::query(concat!(
            "INSERT INTO alerts (id, project_id, budget_id, budget_name, key, window_kind,
                window_start_ms, resets_at_ms, threshold_pct, limit_nanos, spent_nanos,
                created_at_ms, status, next_attempt_ms, lease_until_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending', $12, $13)
             ON CONFLICT (project_id, budget_id, key, window_start_ms, threshold_pct) DO NOTHING
             RETURNING ",
            alert_columns!(),
            ""
        ))
        .bind(new_id("alr_", 24))
        .bind(&a.project)
        .bind(&a.budget_id)
        .bind(&a.budget_name)
        .bind(a.key.as_deref().unwrap_or(""))
        .bind(&a.window)
        .bind(a.window_start_ms)
        .bind(a.resets_at_ms)
        .bind(i32::from(a.threshold_pct))
        .bind(a.limit_nanos)
        .bind(a.spent_nanos)
        .bind(now)
        .bind(lease_until_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(storage)?;
        row.map(|r| alert_from_row(&r)).transpose()
    }

    pub(in crate::store) async fn take_due_alerts(
        &self,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<Alert>> {
        let now = now_ms();
        // SKIP LOCKED: two replicas taking at once split the due rows instead of both taking
        // (the lease update itself then keeps them apart until it runs out).
        let rows = sqlx::query(concat!(
            "UPDATE alerts SET lease_until_ms = $2 WHERE id IN (
                SELECT id FROM alerts
                WHERE status = 'pending' AND next_attempt_ms <= $1 AND lease_until_ms <= $1
                ORDER BY next_attempt_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING ",
            alert_columns!(),
            ""
        ))
        .bind(now)
        .bind(lease_until_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        rows.iter().map(alert_from_row).collect()
    }

    pub(in crate::store) async fn record_alert_attempt(
        &self,
        id: &str,
        a: &AttemptRecord,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE alerts SET status = $2, attempts = $3, last_error = $4, delivered_at_ms = $5,
                delivered_to = $6, next_attempt_ms = $7, lease_until_ms = 0
             WHERE id = $1 AND lease_until_ms = $8",
        )
        .bind(id)
        .bind(a.status.as_str())
        .bind(i32::try_from(a.attempts).unwrap_or(i32::MAX))
        .bind(&a.last_error)
        .bind(a.delivered_at_ms)
        .bind(ids_to_json(&a.delivered_to))
        .bind(a.next_attempt_ms)
        .bind(a.lease_until_ms)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(storage)
    }

    pub(in crate::store) async fn alerts(&self, project: &str, limit: u32) -> Result<Vec<Alert>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            alert_columns!(),
            " FROM alerts WHERE project_id = $1
             ORDER BY created_at_ms DESC, id DESC LIMIT $2"
        ))
        .bind(project)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        rows.iter().map(alert_from_row).collect()
    }
}

fn webhook_from_row(r: &PgRow) -> Result<Webhook> {
    let format: String = r.try_get("format").map_err(storage)?;
    Ok(Webhook {
        id: r.try_get("id").map_err(storage)?,
        project: r.try_get("project_id").map_err(storage)?,
        name: r.try_get("name").map_err(storage)?,
        url: r.try_get("url").map_err(storage)?,
        format: WebhookFormat::parse(&format)
            .ok_or_else(|| storage(format!("a webhook has an unknown format {format:?}")))?,
        created_at_ms: r.try_get("created_at_ms").map_err(storage)?,
    })
}

fn alert_from_row(r: &PgRow) -> Result<Alert> {
    let get = |r: &PgRow| -> sqlx::Result<_> {
        Ok((
            r.try_get::<String, _>("key")?,
            r.try_get::<i32, _>("threshold_pct")?,
            r.try_get::<String, _>("status")?,
            r.try_get::<i32, _>("attempts")?,
            r.try_get::<String, _>("delivered_to")?,
        ))
    };
    let (key, threshold, status, attempts, delivered_to) = get(r).map_err(storage)?;
    Ok(Alert {
        id: r.try_get("id").map_err(storage)?,
        what: NewAlert {
            project: r.try_get("project_id").map_err(storage)?,
            budget_id: r.try_get("budget_id").map_err(storage)?,
            budget_name: r.try_get("budget_name").map_err(storage)?,
            key: (!key.is_empty()).then_some(key),
            window: r.try_get("window_kind").map_err(storage)?,
            window_start_ms: r.try_get("window_start_ms").map_err(storage)?,
            resets_at_ms: r.try_get("resets_at_ms").map_err(storage)?,
            threshold_pct: u16::try_from(threshold).map_err(storage)?,
            limit_nanos: r.try_get("limit_nanos").map_err(storage)?,
            spent_nanos: r.try_get("spent_nanos").map_err(storage)?,
        },
        created_at_ms: r.try_get("created_at_ms").map_err(storage)?,
        status: AlertStatus::parse(&status)?,
        attempts: u32::try_from(attempts).map_err(storage)?,
        last_error: r.try_get("last_error").map_err(storage)?,
        delivered_at_ms: r.try_get("delivered_at_ms").map_err(storage)?,
        delivered_to: ids_from_json(&delivered_to)?,
    })
}
