//! Budget alerts in the store: webhooks, per-budget thresholds and the alert rows that make a
//! delivery happen exactly once per `(budget, key, window, threshold)` whatever the number of
//! replicas (issue #5, part 3; the evaluator is [`crate::alerts`]).
//!
//! An alert row is *claimed* by inserting it under a unique constraint (`INSERT ... ON CONFLICT
//! DO NOTHING RETURNING`): one inserter wins, every other replica sees the row exists. Delivery
//! attempts are then serialized by a lease (`lease_until_ms`): a replica takes a due row by
//! pushing its lease forward in one statement, so a replica that dies mid-delivery only delays
//! the alert until its lease runs out, when another one takes it.
//!
//! Both stores keep these tables next to projects and keys (`server.db` on SQLite, the shared
//! schema on Postgres), not in the per-project ledgers: the evaluator scans every project.

use super::{Result, Store};

/// How an alert reaches a webhook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookFormat {
    /// Our JSON document (`type: "budget.threshold"`, ...).
    Json,
    /// `{text}`: Slack incoming webhooks, and the many tools that copy them.
    Slack,
}

impl WebhookFormat {
    /// `json` or `slack`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Slack => "slack",
        }
    }

    /// Parses `json` or `slack`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "json" => Some(Self::Json),
            "slack" => Some(Self::Slack),
            _ => None,
        }
    }
}

/// A webhook of a project. The URL may carry a secret (Slack's do): it is stored as given,
/// used to deliver, and never logged or answered back whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// `whk_...`.
    pub id: String,
    /// The project it belongs to.
    pub project: String,
    /// A human label.
    pub name: String,
    /// Where alerts are POSTed.
    pub url: String,
    /// What they look like.
    pub format: WebhookFormat,
    /// Creation time (Unix ms).
    pub created_at_ms: i64,
}

/// A budget's thresholds, in percent of its limit, for the evaluator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertRule {
    /// The budget's project.
    pub project: String,
    /// The budget.
    pub budget_id: String,
    /// Sorted, distinct, each in `1..=1000`.
    pub thresholds: Vec<u16>,
}

/// Where an alert stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertStatus {
    /// Not yet delivered to every webhook; attempts remain.
    Pending,
    /// Every webhook of the project answered 2xx.
    Delivered,
    /// Gave up after the last attempt (`last_error` says why).
    Failed,
    /// The project had no webhook when it fired: recorded, sent nowhere.
    NoWebhooks,
}

impl AlertStatus {
    /// `pending`, `delivered`, `failed` or `no_webhooks`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::NoWebhooks => "no_webhooks",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self> {
        [
            Self::Pending,
            Self::Delivered,
            Self::Failed,
            Self::NoWebhooks,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| bursora_core::Error::Storage {
            message: format!("an alert row has an unknown status {text:?}"),
        })
    }
}

/// What crossed: the counter's figures when the evaluator saw it cross, kept in the row so
/// every retry sends the same document (and a deleted budget's alerts still read well).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAlert {
    /// The budget's project.
    pub project: String,
    /// The budget.
    pub budget_id: String,
    /// Its name then.
    pub budget_name: String,
    /// `key=value` of a template's counter; `None` for plain budgets.
    pub key: Option<String>,
    /// `minute`, `hour`, ...
    pub window: String,
    /// Start of the window it crossed in (Unix ms).
    pub window_start_ms: i64,
    /// When that window resets; `None` for `total`.
    pub resets_at_ms: Option<i64>,
    /// The threshold crossed, percent of the limit.
    pub threshold_pct: u16,
    /// The budget's limit then (nano-USD).
    pub limit_nanos: i64,
    /// Settled spend when it was seen crossing (nano-USD).
    pub spent_nanos: i64,
}

/// An alert row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// `alr_...`.
    pub id: String,
    /// What crossed.
    pub what: NewAlert,
    /// When it was claimed (Unix ms).
    pub created_at_ms: i64,
    /// Where delivery stands.
    pub status: AlertStatus,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// The last failed attempt's reason (hosts only, never a URL).
    pub last_error: Option<String>,
    /// When the last webhook took it (Unix ms).
    pub delivered_at_ms: Option<i64>,
    /// Webhooks that already took it: a retry only sends to the others.
    pub delivered_to: Vec<String>,
}

/// What one delivery attempt left, written back by the replica holding the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The new status.
    pub status: AlertStatus,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// Why it failed, if it did.
    pub last_error: Option<String>,
    /// When the last webhook took it.
    pub delivered_at_ms: Option<i64>,
    /// Webhooks that took it so far.
    pub delivered_to: Vec<String>,
    /// When to try again (`Pending` only).
    pub next_attempt_ms: i64,
    /// The lease the attempt ran under: the record is dropped if another replica has taken
    /// the alert since (this one overran its lease), so a late writer never rolls it back.
    pub lease_until_ms: i64,
}

impl Store {
    /// Adds a webhook to `project`.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn create_webhook(&self, webhook: &Webhook) -> Result<()> {
        dispatch!(self.create_webhook(webhook))
    }

    /// The project's webhooks, oldest first.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn webhooks(&self, project: &str) -> Result<Vec<Webhook>> {
        dispatch!(self.webhooks(project))
    }

    /// Removes a webhook of `project`; false if it has none by that id.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn delete_webhook(&self, project: &str, id: &str) -> Result<bool> {
        dispatch!(self.delete_webhook(project, id))
    }

    /// Sets a budget's thresholds (`[]` removes them). The caller checked the budget exists.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn set_alert_thresholds(
        &self,
        project: &str,
        budget_id: &str,
        thresholds: &[u16],
    ) -> Result<()> {
        dispatch!(self.set_alert_thresholds(project, budget_id, thresholds))
    }

    /// A budget's thresholds (`[]` when none).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn alert_thresholds(&self, project: &str, budget_id: &str) -> Result<Vec<u16>> {
        dispatch!(self.alert_thresholds(project, budget_id))
    }

    /// Every budget with thresholds, in every project.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn alert_rules(&self) -> Result<Vec<AlertRule>> {
        dispatch!(self.alert_rules())
    }

    /// Claims an alert: inserts its row, leased to the caller until `lease_until_ms`, unless a
    /// row for the same `(project, budget, key, window, threshold)` exists. `Some` only for the
    /// one caller that inserted it.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn claim_alert(
        &self,
        alert: &NewAlert,
        lease_until_ms: i64,
    ) -> Result<Option<Alert>> {
        dispatch!(self.claim_alert(alert, lease_until_ms))
    }

    /// Takes up to `limit` pending alerts whose next attempt is due and whose lease ran out
    /// (a retry, or a delivery a dead replica left), leasing them until `lease_until_ms`.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn take_due_alerts(&self, lease_until_ms: i64, limit: u32) -> Result<Vec<Alert>> {
        dispatch!(self.take_due_alerts(lease_until_ms, limit))
    }

    /// Writes an attempt's outcome and ends the caller's lease, if it still holds it.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn record_alert_attempt(&self, id: &str, attempt: &AttemptRecord) -> Result<()> {
        dispatch!(self.record_alert_attempt(id, attempt))
    }

    /// The project's alerts, newest first, at most `limit`.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn alerts(&self, project: &str, limit: u32) -> Result<Vec<Alert>> {
        dispatch!(self.alerts(project, limit))
    }
}

/// `delivered_to` as stored: a JSON list of webhook ids.
pub(crate) fn ids_to_json(ids: &[String]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn ids_from_json(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| bursora_core::Error::Storage {
        message: format!("an alert row's delivered_to is malformed ({e})"),
    })
}

/// Thresholds as stored: a JSON list of percents.
pub(crate) fn thresholds_from_json(text: &str) -> Result<Vec<u16>> {
    serde_json::from_str(text).map_err(|e| bursora_core::Error::Storage {
        message: format!("an alert rule is malformed ({e})"),
    })
}
