//! Budget alerts: the background task (one per replica) that notices counters crossing their
//! budget's thresholds and delivers each crossing to the project's webhooks, exactly once per
//! `(budget, key, window, threshold)` (issue #5, part 3).
//!
//! Every tick it reads each budget with thresholds, looks at every counter in its current window
//! (one per value for `*` templates) and, for each threshold its *settled* spend reached, claims
//! the alert in the store (a unique row; see [`crate::store::Alert`]): only the replica whose
//! insert wins delivers it. Then it takes due retries and deliveries that a dead replica left
//! (their lease ran out). A failed attempt is retried with doubling delays, up to
//! [`AlertConfig::max_attempts`]; a retry only sends to the webhooks that have not taken it.
//!
//! Webhook URLs may be secrets (Slack's are), so logs and stored errors name the host only.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bursora_core::window::format_utc;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::Store;
use crate::store::{Alert, AlertStatus, AttemptRecord, NewAlert, Webhook, WebhookFormat};

/// How the evaluator runs.
#[derive(Clone, Debug)]
pub struct AlertConfig {
    /// How often counters are looked at (`--alert-every-ms`).
    pub every: Duration,
    /// Delay before the first retry; each further retry waits twice as long.
    pub retry_base: Duration,
    /// Attempts before an alert is marked `failed`.
    pub max_attempts: u32,
    /// How long a replica holds an alert it is delivering; another takes it once this ran out.
    /// Longer than a delivery can take (`timeout` times the webhooks of a project).
    pub lease: Duration,
    /// Longest one webhook request may take.
    pub timeout: Duration,
}

impl Default for AlertConfig {
    /// Every second; 5 attempts over about a minute (4 + 8 + 16 + 32 s).
    fn default() -> Self {
        Self {
            every: Duration::from_secs(1),
            retry_base: Duration::from_secs(4),
            max_attempts: 5,
            lease: Duration::from_secs(120),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Most alerts taken for retry in one tick; the rest wait for the next.
const TAKE_BATCH: u32 = 100;

/// Starts evaluating every `config.every` until `stop` changes; join the handle to wait for the
/// last tick (its deliveries included).
#[must_use]
pub fn spawn(
    store: Arc<Store>,
    config: AlertConfig,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // TLS-ready (rustls, ring, the platform's certificates): Slack webhooks are https.
        let client = match bursora_core::remote::http_client()
            .timeout(config.timeout)
            .user_agent(concat!("bursora-server/", env!("CARGO_PKG_VERSION")))
            // A redirect could send the alert (and a secret URL's path) somewhere unexpected.
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the webhook client; alerts are off");
                return;
            }
        };
        let mut evaluator = Evaluator {
            store,
            config,
            client,
            claimed: HashSet::new(),
        };
        let mut tick = tokio::time::interval(evaluator.config.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = evaluator.tick().await {
                        tracing::warn!(error = %e, "evaluating budget alerts failed; will retry");
                    }
                }
                _ = stop.changed() => break,
            }
        }
    })
}

/// `(project, budget, key, window_start, threshold)`: one alert.
type AlertKey = (String, String, String, i64, u16);

struct Evaluator {
    store: Arc<Store>,
    config: AlertConfig,
    client: reqwest::Client,
    /// Alerts this replica already saw claimed (by anyone), so it does not insert them again
    /// every tick; only keys still crossing in the current windows are kept.
    claimed: HashSet<AlertKey>,
}

impl Evaluator {
    async fn tick(&mut self) -> bursora_core::Result<()> {
        let lease_until = crate::store::now_ms() + millis(self.config.lease);
        let mut by_project: HashMap<String, HashMap<String, Vec<u16>>> = HashMap::new();
        for rule in self.store.alert_rules().await? {
            by_project
                .entry(rule.project)
                .or_default()
                .insert(rule.budget_id, rule.thresholds);
        }
        let mut deliver = Vec::new();
        let mut seen = HashSet::new();
        for (project, rules) in &by_project {
            for s in self.store.status(project).await? {
                let Some(thresholds) = rules.get(&*s.budget.id) else {
                    continue;
                };
                for &t in thresholds {
                    if !crossed(s.spent.nanos(), s.budget.spec.limit.nanos(), t) {
                        continue;
                    }
                    let key: AlertKey = (
                        project.clone(),
                        s.budget.id.to_string(),
                        s.key.clone().unwrap_or_default(),
                        s.window_start_ms,
                        t,
                    );
                    seen.insert(key.clone());
                    if self.claimed.contains(&key) {
                        continue;
                    }
                    let new = NewAlert {
                        project: project.clone(),
                        budget_id: s.budget.id.to_string(),
                        budget_name: s.budget.spec.name.clone(),
                        key: s.key.clone(),
                        window: s.budget.spec.window.as_str().to_owned(),
                        window_start_ms: s.window_start_ms,
                        resets_at_ms: s.resets_at_ms,
                        threshold_pct: t,
                        limit_nanos: s.budget.spec.limit.nanos(),
                        spent_nanos: s.spent.nanos(),
                    };
                    if let Some(alert) = self.store.claim_alert(&new, lease_until).await? {
                        deliver.push(alert);
                    }
                    self.claimed.insert(key);
                }
            }
        }
        // Forget keys of windows that ended (or budgets whose thresholds changed).
        self.claimed.retain(|k| seen.contains(k));
        deliver.extend(self.store.take_due_alerts(lease_until, TAKE_BATCH).await?);
        let mut running = JoinSet::new();
        for alert in deliver {
            let (store, client, config) =
                (self.store.clone(), self.client.clone(), self.config.clone());
            running.spawn(async move {
                deliver_one(&store, &client, &config, alert, lease_until).await
            });
        }
        while let Some(done) = running.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "recording an alert delivery failed"),
                Err(e) => tracing::warn!(error = %e, "an alert delivery task failed"),
            }
        }
        Ok(())
    }
}

/// Whether `spent` reached `pct` percent of `limit`. Nothing spent crosses nothing, even on a
/// zero limit.
fn crossed(spent: i64, limit: i64, pct: u16) -> bool {
    spent > 0 && i128::from(spent) * 100 >= i128::from(limit) * i128::from(pct)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One attempt, under the lease until `lease_until_ms`: POST to every webhook that has not taken
/// the alert yet, then record the result.
async fn deliver_one(
    store: &Store,
    client: &reqwest::Client,
    config: &AlertConfig,
    alert: Alert,
    lease_until_ms: i64,
) -> bursora_core::Result<()> {
    let webhooks = store.webhooks(&alert.what.project).await?;
    let now = crate::store::now_ms();
    if webhooks.is_empty() && alert.delivered_to.is_empty() {
        tracing::info!(alert = %alert.id, "a budget threshold was crossed; the project has no webhook");
        return store
            .record_alert_attempt(
                &alert.id,
                &AttemptRecord {
                    status: AlertStatus::NoWebhooks,
                    attempts: alert.attempts,
                    last_error: None,
                    delivered_at_ms: None,
                    delivered_to: Vec::new(),
                    next_attempt_ms: now,
                    lease_until_ms,
                },
            )
            .await;
    }
    let mut delivered_to = alert.delivered_to.clone();
    let mut errors = Vec::new();
    for w in webhooks
        .iter()
        .filter(|w| !alert.delivered_to.contains(&w.id))
    {
        match post(client, w, &alert).await {
            Ok(()) => {
                tracing::info!(alert = %alert.id, webhook = %w.id, host = %host_of(&w.url), "alert delivered");
                delivered_to.push(w.id.clone());
            }
            Err(e) => {
                tracing::warn!(alert = %alert.id, webhook = %w.id, error = %e, "alert delivery failed");
                errors.push(e);
            }
        }
    }
    let attempts = alert.attempts + 1;
    let done_at = crate::store::now_ms();
    let record = if errors.is_empty() {
        AttemptRecord {
            status: AlertStatus::Delivered,
            attempts,
            last_error: None,
            delivered_at_ms: Some(done_at),
            delivered_to,
            next_attempt_ms: done_at,
            lease_until_ms,
        }
    } else {
        let backoff = config
            .retry_base
            .saturating_mul(1 << (attempts - 1).min(16));
        AttemptRecord {
            status: if attempts >= config.max_attempts {
                AlertStatus::Failed
            } else {
                AlertStatus::Pending
            },
            attempts,
            last_error: Some(errors.join("; ")),
            delivered_at_ms: None,
            delivered_to,
            next_attempt_ms: done_at + millis(backoff),
            lease_until_ms,
        }
    };
    store.record_alert_attempt(&alert.id, &record).await
}

/// POSTs the alert to one webhook; the error names the host, never the URL.
async fn post(client: &reqwest::Client, w: &Webhook, alert: &Alert) -> Result<(), String> {
    let host = host_of(&w.url);
    let body = match w.format {
        WebhookFormat::Json => json_document(alert),
        WebhookFormat::Slack => json!({ "text": slack_text(alert) }),
    };
    let res = client
        .post(&w.url)
        .header("x-bursora-alert-id", &alert.id)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("{host}: {}", error_chain(e.without_url(), &w.url, &host)))?;
    let status = res.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{host}: answered HTTP {}", status.as_u16()))
    }
}

/// An error and its causes (reqwest's own message is only "error sending request"), with the
/// URL replaced by its host should a cause quote it.
fn error_chain(e: reqwest::Error, url: &str, host: &str) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text.replace(url, host)
}

/// The host (and port) of a URL: what logs and errors may say about a webhook.
#[must_use]
pub fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
        })
        .unwrap_or_else(|| "webhook".into())
}

fn usd(nanos: i64) -> f64 {
    bursora_core::NanoUsd::from_nanos_clamped(nanos).to_usd_f64()
}

/// The generic JSON document (`format: "json"`).
#[must_use]
pub fn json_document(alert: &Alert) -> Value {
    let a = &alert.what;
    json!({
        "type": "budget.threshold",
        "id": alert.id,
        "project": a.project,
        "budget": {
            "id": a.budget_id,
            "name": a.budget_name,
            "key": a.key,
            "window": a.window,
            "limit_nanos": a.limit_nanos,
            "limit_usd": usd(a.limit_nanos),
            "spent_nanos": a.spent_nanos,
            "spent_usd": usd(a.spent_nanos),
        },
        "threshold_pct": a.threshold_pct,
        "window_start": format_utc(a.window_start_ms),
        "window_start_ms": a.window_start_ms,
        "resets_at": a.resets_at_ms.map(format_utc),
        "resets_at_ms": a.resets_at_ms,
        "created_at": format_utc(alert.created_at_ms),
        "created_at_ms": alert.created_at_ms,
    })
}

/// One line for Slack-compatible webhooks (`format: "slack"`).
#[must_use]
pub fn slack_text(alert: &Alert) -> String {
    let a = &alert.what;
    let key = a
        .key
        .as_deref()
        .map(|k| format!(" ({k})"))
        .unwrap_or_default();
    let resets = a.resets_at_ms.map_or_else(
        || "never resets".to_owned(),
        |r| format!("resets {}", format_utc(r)),
    );
    format!(
        "Bursora: budget *{name}*{key} reached {pct}% of its {window} limit: ${spent:.2} of ${limit:.2} spent ({resets}; project {project})",
        name = a.budget_name,
        pct = a.threshold_pct,
        window = a.window,
        spent = usd(a.spent_nanos),
        limit = usd(a.limit_nanos),
        project = a.project,
    )
}
