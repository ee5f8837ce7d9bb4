//! Budget alerts (issue #5, part 3) against a real HTTP webhook receiver in the test: exactly one
//! delivery per threshold per window, also with two replicas (two stores on one SQLite directory;
//! two Postgres replicas when `BURSORA_TEST_DATABASE_URL` is set), retries, a replica dying
//! mid-delivery, a new window, and bad input.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use bursora_server::alerts::{self, AlertConfig};
use common::{Server, budget, project, send};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the receiver got: `(path, body)` of every request it answered 2xx.
#[derive(Clone, Default)]
struct Inbox {
    got: Arc<Mutex<Vec<(String, Value)>>>,
    /// Requests of any outcome.
    hits: Arc<AtomicUsize>,
    /// The next this many requests answer 500.
    fail: Arc<AtomicUsize>,
    /// The next this many requests hang (a replica dying mid-delivery never hears back).
    hang: Arc<AtomicUsize>,
}

impl Inbox {
    fn on(&self, path: &str) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn take_one(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

async fn receive(
    State(inbox): State<Inbox>,
    uri: Uri,
    axum::Json(body): axum::Json<Value>,
) -> StatusCode {
    inbox.hits.fetch_add(1, Ordering::SeqCst);
    if take_one(&inbox.hang) {
        tokio::time::sleep(Duration::from_secs(120)).await;
    }
    if take_one(&inbox.fail) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    inbox
        .got
        .lock()
        .unwrap()
        .push((uri.path().to_owned(), body));
    StatusCode::NO_CONTENT
}

/// A webhook receiver on a free local port: its base URL and inbox.
async fn receiver() -> (String, Inbox) {
    let inbox = Inbox::default();
    let app = axum::Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), inbox)
}

fn fast() -> AlertConfig {
    AlertConfig {
        every: Duration::from_millis(100),
        retry_base: Duration::from_millis(200),
        max_attempts: 5,
        lease: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
    }
}

/// An evaluator on `s`'s store; dropping the sender stops it.
fn evaluator(s: &Server, config: AlertConfig) -> (watch::Sender<bool>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let handle = alerts::spawn(s.state.store.clone(), config, rx);
    (tx, handle)
}

async fn webhook(s: &Server, project: &str, url: &str, format: &str) -> Value {
    let (st, v) = send(
        &s.app,
        "POST",
        &format!("/v1/webhooks?project={project}"),
        Some(&s.admin),
        Some(&json!({ "url": url, "format": format })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v
}

async fn thresholds(s: &Server, project: &str, budget_id: &str, t: Value) {
    let (st, v) = send(
        &s.app,
        "PUT",
        &format!("/v1/budgets/{budget_id}/alerts?project={project}"),
        Some(&s.admin),
        Some(&json!({ "thresholds": t })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

/// Spends `nanos` for `tenant` through reserve + settle.
async fn spend(s: &Server, key: &str, tenant: &str, nanos: i64) {
    let body = json!({ "provider": "openai", "model": "gpt-4o-mini", "tags": { "tenant_id": tenant }, "amount_nanos": nanos });
    let (st, r) = send(&s.app, "POST", "/v1/reserve", Some(key), Some(&body)).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    let items = json!({ "items": [{ "id": r["id"], "actual_nanos": nanos }] });
    let (st, v) = send(&s.app, "POST", "/v1/settle", Some(key), Some(&items)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["results"][0]["applied"], true, "{v}");
}

async fn wait_until(what: &str, secs: u64, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Long enough for several evaluator ticks on every replica: a duplicate would have arrived.
async fn settle_down() {
    tokio::time::sleep(Duration::from_millis(1_500)).await;
}

fn pcts(alerts: &[Value]) -> Vec<u64> {
    let mut p: Vec<u64> = alerts
        .iter()
        .map(|a| a["threshold_pct"].as_u64().unwrap())
        .collect();
    p.sort_unstable();
    p
}

const USD: i64 = 1_000_000_000;

/// 50/80/100% on a $1 daily budget and 100% per tenant on a $0.50 template, JSON and Slack
/// webhooks, spend pushed through `a` and `b` alternately (two replicas, or one twice).
async fn one_alert_per_threshold(a: &Server, b: &Server) {
    let (url, inbox) = receiver().await;
    let (p, key) = project(a).await;
    webhook(a, &p, &format!("{url}/json/secret-path"), "json").await;
    webhook(a, &p, &format!("{url}/slack/T000/B000/XXXX"), "slack").await;
    let daily = budget(
        a,
        &p,
        json!({"name": "daily", "limit_nanos": USD, "window": "day", "mode": "notify"}),
    )
    .await;
    thresholds(a, &p, daily["id"].as_str().unwrap(), json!([100, 50, 80])).await;
    let tenants = budget(
        a,
        &p,
        json!({"name": "per-tenant", "match": {"tenant_id": "*"}, "limit_nanos": USD / 2, "window": "day", "mode": "notify"}),
    )
    .await;
    thresholds(a, &p, tenants["id"].as_str().unwrap(), json!([100])).await;

    let (stop_a, run_a) = evaluator(a, fast());
    let (stop_b, run_b) = evaluator(b, fast());
    let daily_alerts = || -> Vec<Value> {
        inbox
            .on("/json/secret-path")
            .into_iter()
            .filter(|v| v["budget"]["name"] == "daily")
            .collect()
    };

    // 40%: nothing.
    spend(a, &key, "acme", USD * 4 / 10).await;
    settle_down().await;
    assert!(daily_alerts().is_empty(), "{:?}", daily_alerts());
    // 55%: the 50% alert.
    spend(b, &key, "acme", USD * 15 / 100).await;
    wait_until("the 50% alert", 10, || daily_alerts().len() == 1).await;
    let first = &daily_alerts()[0];
    assert_eq!(first["type"], "budget.threshold");
    assert_eq!(first["threshold_pct"], 50);
    assert_eq!(first["project"], p.as_str());
    assert_eq!(first["budget"]["id"], daily["id"]);
    assert_eq!(first["budget"]["window"], "day");
    assert_eq!(first["budget"]["key"], Value::Null);
    assert_eq!(first["budget"]["limit_usd"], 1.0);
    assert_eq!(first["budget"]["spent_nanos"], USD * 55 / 100);
    assert!(first["window_start"].as_str().unwrap().ends_with('Z'));
    assert!(first["resets_at"].is_string());
    // 105% in one step crosses 80 and 100 together: two alerts.
    spend(a, &key, "acme", USD / 2).await;
    wait_until("the 80% and 100% alerts", 10, || daily_alerts().len() == 3).await;
    // Another tenant crosses its own counter of the template.
    spend(b, &key, "globex", USD * 6 / 10).await;
    let tenant_alerts = || -> Vec<Value> {
        inbox
            .on("/json/secret-path")
            .into_iter()
            .filter(|v| v["budget"]["name"] == "per-tenant")
            .collect()
    };
    wait_until("one 100% alert per tenant", 10, || {
        tenant_alerts().len() == 2
    })
    .await;
    settle_down().await;

    assert_eq!(pcts(&daily_alerts()), [50, 80, 100], "exactly once each");
    let mut keys: Vec<String> = tenant_alerts()
        .iter()
        .map(|v| v["budget"]["key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, ["tenant_id=acme", "tenant_id=globex"]);
    let slack = inbox.on("/slack/T000/B000/XXXX");
    assert_eq!(
        slack.len(),
        5,
        "the Slack webhook got every alert once: {slack:?}"
    );
    for m in &slack {
        let text = m["text"].as_str().unwrap();
        assert!(text.contains('%') && text.contains("Bursora"), "{text}");
    }
    assert!(
        slack
            .iter()
            .any(|m| m["text"].as_str().unwrap().contains("*daily* reached 80%"))
    );
    assert_eq!(
        inbox.hits.load(Ordering::SeqCst),
        10,
        "no request beyond one per alert per webhook"
    );

    // The dashboard's view, on either replica.
    let (st, v) = send(&b.app, "GET", "/v1/alerts", Some(&key), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let list = v["alerts"].as_array().unwrap();
    assert_eq!(list.len(), 5, "{v}");
    for a in list {
        assert_eq!(a["status"], "delivered", "{a}");
        assert_eq!(a["attempts"], 1, "{a}");
        assert!(a["delivered_at"].is_string(), "{a}");
        assert_eq!(a["last_error"], Value::Null);
    }
    let created: Vec<i64> = list
        .iter()
        .map(|a| a["created_at_ms"].as_i64().unwrap())
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {created:?}"
    );
    let (st, v) = send(&a.app, "GET", "/v1/alerts?limit=2", Some(&key), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["alerts"].as_array().unwrap().len(), 2);

    let _ = (stop_a.send(true), stop_b.send(true));
    run_a.await.unwrap();
    run_b.await.unwrap();
}

/// A webhook failing twice is retried and takes the alert once; the row says 3 attempts.
async fn retried_until_delivered(s: &Server) {
    let (url, inbox) = receiver().await;
    inbox.fail.store(2, Ordering::SeqCst);
    let (p, key) = project(s).await;
    webhook(s, &p, &format!("{url}/hook"), "json").await;
    let b = budget(
        s,
        &p,
        json!({"name": "flaky", "limit_nanos": USD, "window": "month"}),
    )
    .await;
    thresholds(s, &p, b["id"].as_str().unwrap(), json!([10])).await;
    let (stop, run) = evaluator(s, fast());
    spend(s, &key, "acme", USD / 5).await;
    wait_until("the retried alert", 15, || inbox.on("/hook").len() == 1).await;
    settle_down().await;
    assert_eq!(inbox.on("/hook").len(), 1);
    assert_eq!(
        inbox.hits.load(Ordering::SeqCst),
        3,
        "two failures, one success"
    );
    let (_, v) = send(&s.app, "GET", "/v1/alerts", Some(&key), None).await;
    let a = &v["alerts"][0];
    assert_eq!(a["status"], "delivered", "{v}");
    assert_eq!(a["attempts"], 3, "{v}");
    assert_eq!(v["alerts"].as_array().unwrap().len(), 1);
    let _ = stop.send(true);
    run.await.unwrap();
}

/// A webhook that never answers 2xx and an https one nothing listens on: `failed` after the
/// last attempt, with the hosts (never the URLs' secret paths) in `last_error`.
async fn gives_up_after_max_attempts(s: &Server) {
    let (url, inbox) = receiver().await;
    inbox.fail.store(usize::MAX, Ordering::SeqCst);
    let (p, key) = project(s).await;
    webhook(s, &p, &format!("{url}/services/SECRET"), "slack").await;
    webhook(s, &p, "https://127.0.0.1:9/services/SECRET2", "json").await;
    let b = budget(
        s,
        &p,
        json!({"name": "down", "limit_nanos": USD, "window": "day"}),
    )
    .await;
    thresholds(s, &p, b["id"].as_str().unwrap(), json!([1])).await;
    // Every evaluator on a shared Postgres may take the retries: all of them use `fast()`.
    let (stop, run) = evaluator(s, fast());
    spend(s, &key, "acme", USD / 10).await;
    wait_until("five attempts", 15, || {
        inbox.hits.load(Ordering::SeqCst) >= 5
    })
    .await;
    settle_down().await;
    assert_eq!(inbox.hits.load(Ordering::SeqCst), 5);
    let (_, v) = send(&s.app, "GET", "/v1/alerts", Some(&key), None).await;
    let a = &v["alerts"][0];
    assert_eq!(a["status"], "failed", "{v}");
    assert_eq!(a["attempts"], 5, "{v}");
    let err = a["last_error"].as_str().unwrap();
    assert!(err.contains("500") && err.contains("127.0.0.1"), "{err}");
    assert!(!err.contains("SECRET"), "{err}");
    let _ = stop.send(true);
    run.await.unwrap();
}

/// The replica delivering dies before the webhook answers: another replica takes the alert once
/// its lease ran out, and the webhook gets it once.
async fn dead_replica_handed_over(a: &Server, b: &Server) {
    let (url, inbox) = receiver().await;
    inbox.hang.store(1, Ordering::SeqCst);
    let (p, key) = project(a).await;
    webhook(a, &p, &format!("{url}/hook"), "json").await;
    let bud = budget(
        a,
        &p,
        json!({"name": "handover", "limit_nanos": USD, "window": "day"}),
    )
    .await;
    thresholds(a, &p, bud["id"].as_str().unwrap(), json!([50])).await;
    let slow = AlertConfig {
        timeout: Duration::from_secs(60),
        ..fast()
    };
    let (_stop_a, run_a) = evaluator(a, slow);
    spend(a, &key, "acme", USD).await;
    wait_until("replica A's hanging delivery", 10, || {
        inbox.hits.load(Ordering::SeqCst) == 1
    })
    .await;
    run_a.abort(); // replica A dies mid-delivery
    let _ = run_a.await;
    let (stop_b, run_b) = evaluator(b, fast());
    wait_until("replica B's delivery", 15, || inbox.on("/hook").len() == 1).await;
    settle_down().await;
    assert_eq!(inbox.on("/hook").len(), 1);
    assert_eq!(inbox.hits.load(Ordering::SeqCst), 2);
    let (_, v) = send(&b.app, "GET", "/v1/alerts", Some(&key), None).await;
    assert_eq!(v["alerts"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["alerts"][0]["status"], "delivered", "{v}");
    assert_eq!(v["alerts"][0]["attempts"], 1, "{v}");
    let _ = stop_b.send(true);
    run_b.await.unwrap();
}

/// A minute window: the threshold alerts in one minute and again in the next.
async fn new_window_alerts_again(s: &Server) {
    let (url, inbox) = receiver().await;
    let (p, key) = project(s).await;
    webhook(s, &p, &format!("{url}/hook"), "json").await;
    let b = budget(
        s,
        &p,
        json!({"name": "per-minute", "limit_nanos": USD, "window": "minute", "mode": "notify"}),
    )
    .await;
    thresholds(s, &p, b["id"].as_str().unwrap(), json!([50])).await;
    let (stop, run) = evaluator(s, fast());
    // Start early in a minute so the spend and the evaluator see the same window.
    let into_minute = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 60_000
    };
    if into_minute() > 50_000 {
        tokio::time::sleep(Duration::from_millis(
            u64::try_from(60_500 - into_minute()).unwrap(),
        ))
        .await;
    }
    spend(s, &key, "acme", USD * 6 / 10).await;
    wait_until("the first window's alert", 10, || {
        inbox.on("/hook").len() == 1
    })
    .await;
    spend(s, &key, "acme", USD / 10).await;
    settle_down().await;
    assert_eq!(inbox.on("/hook").len(), 1, "once per window");
    // Into the next minute.
    tokio::time::sleep(Duration::from_millis(
        u64::try_from(60_300 - into_minute()).unwrap(),
    ))
    .await;
    spend(s, &key, "acme", USD * 6 / 10).await;
    wait_until("the next window's alert", 10, || {
        inbox.on("/hook").len() == 2
    })
    .await;
    settle_down().await;
    let got = inbox.on("/hook");
    assert_eq!(got.len(), 2);
    let starts: Vec<i64> = got
        .iter()
        .map(|v| v["window_start_ms"].as_i64().unwrap())
        .collect();
    assert_eq!(starts[1] - starts[0], 60_000, "{got:?}");
    let _ = stop.send(true);
    run.await.unwrap();
}

/// Bad webhooks and thresholds answer 4xx JSON; keys stay in their project; URLs never come
/// back whole.
async fn config_validation_and_isolation(s: &Server) {
    let (p, key) = project(s).await;
    let (q, key_q) = project(s).await;
    let b = budget(
        s,
        &p,
        json!({"name": "cfg", "limit_nanos": USD, "window": "day"}),
    )
    .await;
    let bid = b["id"].as_str().unwrap();
    let hooks = format!("/v1/webhooks?project={p}");
    for bad in [
        json!({"url": "ftp://example.com/x", "format": "json"}),
        json!({"url": "javascript:alert(1)", "format": "json"}),
        json!({"url": "not a url", "format": "json"}),
        json!({"url": "http://example.com/x", "format": "xml"}),
        json!({"url": "http://example.com/x"}),
        json!({"format": "json"}),
        json!({"url": format!("http://example.com/{}", "a".repeat(3000)), "format": "json"}),
        json!({"url": "http://example.com/x", "format": "json", "name": ""}),
    ] {
        let (st, v) = send(&s.app, "POST", &hooks, Some(&s.admin), Some(&bad)).await;
        assert!(st.is_client_error(), "{bad}: {st} {v}");
        assert!(v["error"]["code"].is_string(), "{v}");
    }
    let (st, _) = send(
        &s.app,
        "POST",
        "/v1/webhooks",
        Some(&key),
        Some(&json!({"url": "http://example.com/x", "format": "json"})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "configuring needs an admin key");
    let w = webhook(
        s,
        &p,
        "https://hooks.slack.com/services/T0/B0/SECRET",
        "slack",
    )
    .await;
    assert_eq!(w["url"], "https://hooks.slack.com/…");
    assert_eq!(w["name"], "hooks.slack.com");
    assert_eq!(w["format"], "slack");
    let (st, v) = send(&s.app, "GET", "/v1/webhooks", Some(&key), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["webhooks"].as_array().unwrap().len(), 1);
    assert!(!v.to_string().contains("SECRET"), "{v}");
    // Project Q sees none of P's webhooks, budgets or alerts.
    let (_, v) = send(&s.app, "GET", "/v1/webhooks", Some(&key_q), None).await;
    assert_eq!(v["webhooks"], json!([]));
    let wid = w["id"].as_str().unwrap();
    let (st, _) = send(
        &s.app,
        "DELETE",
        &format!("/v1/webhooks/{wid}?project={q}"),
        Some(&s.admin),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = send(
        &s.app,
        "GET",
        &format!("/v1/budgets/{bid}/alerts"),
        Some(&key_q),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, v) = send(&s.app, "GET", "/v1/alerts", Some(&key_q), None).await;
    assert_eq!(v["alerts"], json!([]));

    // Thresholds.
    let path = format!("/v1/budgets/{bid}/alerts?project={p}");
    for bad in [
        json!({"thresholds": [0]}),
        json!({"thresholds": [1001]}),
        json!({"thresholds": [-5]}),
        json!({"thresholds": [50.5]}),
        json!({"thresholds": "50"}),
        json!({"thresholds": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]}),
        json!({}),
    ] {
        let (st, v) = send(&s.app, "PUT", &path, Some(&s.admin), Some(&bad)).await;
        assert!(st.is_client_error(), "{bad}: {st} {v}");
        assert!(v["error"]["code"].is_string(), "{v}");
    }
    let (st, _) = send(
        &s.app,
        "PUT",
        &path,
        Some(&key),
        Some(&json!({"thresholds": [50]})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = send(
        &s.app,
        "PUT",
        &format!("/v1/budgets/bud_nope/alerts?project={p}"),
        Some(&s.admin),
        Some(&json!({"thresholds": [50]})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = send(
        &s.app,
        "PUT",
        &path,
        Some(&s.admin),
        Some(&json!({"thresholds": [100, 50, 80, 50]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"budget_id": bid, "thresholds": [50, 80, 100]}));
    let (_, v) = send(
        &s.app,
        "GET",
        &format!("/v1/budgets/{bid}/alerts"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(v["thresholds"], json!([50, 80, 100]));
    let (_, v) = send(
        &s.app,
        "PUT",
        &path,
        Some(&s.admin),
        Some(&json!({"thresholds": []})),
    )
    .await;
    assert_eq!(v["thresholds"], json!([]));
    let (st, _) = send(&s.app, "GET", "/v1/alerts?limit=0", Some(&key), None).await;
    assert!(st.is_client_error());
    let (st, _) = send(&s.app, "GET", "/v1/alerts?limit=x", Some(&key), None).await;
    assert!(st.is_client_error());

    let (st, _) = send(
        &s.app,
        "DELETE",
        &format!("/v1/webhooks/{wid}"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = send(
        &s.app,
        "DELETE",
        &format!("/v1/webhooks/{wid}?project={p}"),
        Some(&s.admin),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, v) = send(&s.app, "GET", "/v1/webhooks", Some(&key), None).await;
    assert_eq!(v["webhooks"], json!([]));
}

/// The store's claim and lease directly: a second claim of the same alert loses, a due alert is
/// taken by one caller only, and a writer whose lease was taken over cannot overwrite the row.
/// SQLite only: on the shared test Postgres, other tests' evaluators would take the due alert
/// first (the replica tests cover Postgres' claim and lease end to end).
async fn claim_and_lease(s: &Server) {
    use bursora_server::store::{AlertStatus, AttemptRecord, NewAlert};
    let store = &s.state.store;
    let (p, _) = project(s).await;
    let now = now_ms();
    let new = NewAlert {
        project: p.clone(),
        budget_id: "bud_x".into(),
        budget_name: "x".into(),
        key: None,
        window: "day".into(),
        window_start_ms: 0,
        resets_at_ms: Some(86_400_000),
        threshold_pct: 80,
        limit_nanos: 100,
        spent_nanos: 80,
    };
    // A lease already over: the claimer "died" at once.
    let stale = now - 1;
    let a = store
        .claim_alert(&new, stale)
        .await
        .unwrap()
        .expect("first claim wins");
    assert_eq!((a.status, a.attempts), (AlertStatus::Pending, 0));
    assert!(
        store
            .claim_alert(&new, now + 60_000)
            .await
            .unwrap()
            .is_none()
    );
    let templated = NewAlert {
        key: Some("tenant_id=acme".into()),
        ..new.clone()
    };
    let b = store.claim_alert(&templated, now + 60_000).await.unwrap();
    assert!(
        b.is_some(),
        "another counter of the template is another alert"
    );

    let lease = now_ms() + 60_000;
    let taken = store.take_due_alerts(lease, 100).await.unwrap();
    let ours: Vec<_> = taken.iter().filter(|t| t.what.project == p).collect();
    assert_eq!(
        ours.len(),
        1,
        "only the alert whose lease ran out is due: {taken:?}"
    );
    assert_eq!(ours[0].id, a.id);
    assert!(
        store
            .take_due_alerts(lease, 100)
            .await
            .unwrap()
            .iter()
            .all(|t| t.id != a.id),
        "leased: nobody else takes it"
    );
    let record = |lease_until_ms| AttemptRecord {
        status: AlertStatus::Delivered,
        attempts: 1,
        last_error: None,
        delivered_at_ms: Some(now_ms()),
        delivered_to: vec!["whk_1".into()],
        next_attempt_ms: now_ms(),
        lease_until_ms,
    };
    // The first claimer comes back late: its lease is gone, its write is dropped.
    store
        .record_alert_attempt(&a.id, &record(stale))
        .await
        .unwrap();
    let row =
        |all: Vec<bursora_server::store::Alert>| all.into_iter().find(|x| x.id == a.id).unwrap();
    assert_eq!(
        row(store.alerts(&p, 10).await.unwrap()).status,
        AlertStatus::Pending
    );
    store
        .record_alert_attempt(&a.id, &record(lease))
        .await
        .unwrap();
    let done = row(store.alerts(&p, 10).await.unwrap());
    assert_eq!(done.status, AlertStatus::Delivered);
    assert_eq!(done.delivered_to, ["whk_1"]);
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

mod sqlite {
    use crate::common::{sqlite_server, sqlite_server_in};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_alert_per_threshold() {
        let s = sqlite_server().await;
        super::one_alert_per_threshold(&s, &s).await;
    }

    /// Two processes sharing one data directory, each with its evaluator.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_alert_per_threshold_two_replicas() {
        let dir = tempfile::tempdir().unwrap();
        let a = sqlite_server_in(dir.path()).await;
        let b = sqlite_server_in(dir.path()).await;
        super::one_alert_per_threshold(&a, &b).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retried_until_delivered() {
        super::retried_until_delivered(&sqlite_server().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gives_up_after_max_attempts() {
        super::gives_up_after_max_attempts(&sqlite_server().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dead_replica_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let a = sqlite_server_in(dir.path()).await;
        let b = sqlite_server_in(dir.path()).await;
        super::dead_replica_handed_over(&a, &b).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn new_window_alerts_again() {
        super::new_window_alerts_again(&sqlite_server().await).await;
    }

    #[tokio::test]
    async fn config_validation_and_isolation() {
        super::config_validation_and_isolation(&sqlite_server().await).await;
    }

    #[tokio::test]
    async fn claim_and_lease() {
        super::claim_and_lease(&sqlite_server().await).await;
    }
}

mod postgres {
    use crate::common::{pg_server, pg_server_at, pg_url};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_alert_per_threshold_two_replicas() {
        if let Some(url) = pg_url() {
            let a = pg_server_at(&url).await;
            let b = pg_server_at(&url).await;
            super::one_alert_per_threshold(&a, &b).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retried_until_delivered() {
        if let Some(s) = pg_server().await {
            super::retried_until_delivered(&s).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gives_up_after_max_attempts() {
        if let Some(s) = pg_server().await {
            super::gives_up_after_max_attempts(&s).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dead_replica_handed_over() {
        if let Some(url) = pg_url() {
            let a = pg_server_at(&url).await;
            let b = pg_server_at(&url).await;
            super::dead_replica_handed_over(&a, &b).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn new_window_alerts_again() {
        if let Some(s) = pg_server().await {
            super::new_window_alerts_again(&s).await;
        }
    }

    #[tokio::test]
    async fn config_validation_and_isolation() {
        if let Some(s) = pg_server().await {
            super::config_validation_and_isolation(&s).await;
        }
    }
}
