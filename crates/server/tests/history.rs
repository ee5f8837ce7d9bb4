//! Idempotent reserves, usage delivery, the call history and spend queries, run on the SQLite
//! store and, when `BURSORA_TEST_DATABASE_URL` is set (`scripts/pg-test.sh`), on Postgres.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use common::{Server, budget, project, send, spend_of};
use serde_json::{Value, json};

on_both_stores!(
    replayed_reserve,
    usage_is_delivered_exactly_once,
    refusals_are_listed,
    paging_covers_every_event_once,
    spend_queries_equal_the_settled_truth,
    projects_never_see_each_others_history,
    bad_history_input_is_4xx_json,
    keys_are_listed_and_revoked,
);

fn code(v: &Value) -> &str {
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {v}"))
}

/// A unique id with a readable prefix (Postgres tests share one database).
fn uid(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn call(id: Option<&str>, amount: i64, model: &str, tenant: Option<&str>) -> Value {
    let mut v = json!({ "provider": "openai", "model": model, "amount_nanos": amount, "tags": {} });
    if let Some(t) = tenant {
        v["tags"]["tenant_id"] = json!(t);
    }
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    v
}

async fn reserve(s: &Server, key: &str, body: &Value) -> (StatusCode, Value) {
    send(&s.app, "POST", "/v1/reserve", Some(key), Some(body)).await
}

async fn settle(s: &Server, key: &str, id: &str, actual: Option<i64>) -> Value {
    let (st, v) = send(
        &s.app,
        "POST",
        "/v1/settle",
        Some(key),
        Some(&json!({"items": [{"id": id, "actual_nanos": actual, "input_tokens": 11, "output_tokens": 7}]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["results"][0].clone()
}

async fn usage(s: &Server, key: &str, items: Value) -> Vec<(String, bool, String)> {
    let (st, v) = send(
        &s.app,
        "POST",
        "/v1/usage",
        Some(key),
        Some(&json!({ "items": items })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["applied"].as_bool().unwrap(),
                r["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Every event of the project's history (all pages of `query`), checking no id repeats.
async fn all_events(s: &Server, key: &str, query: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut uri = format!("/v1/events?limit={limit}{query}");
        if let Some(c) = &cursor {
            uri.push_str(&format!("&cursor={c}"));
        }
        let (st, v) = send(&s.app, "GET", &uri, Some(key), None).await;
        assert_eq!(st, StatusCode::OK, "{uri}: {v}");
        let page = v["events"].as_array().unwrap();
        assert!(page.len() <= limit);
        out.extend(page.iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let ids: BTreeSet<&str> = out.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), out.len(), "an event was listed twice");
    out
}

fn event<'a>(events: &'a [Value], id: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("no event {id}"))
}

async fn replayed_reserve(s: &Server) {
    let (p, key) = project(s).await;
    budget(
        s,
        &p,
        json!({"name": "daily", "limit_nanos": 1000, "window": "day"}),
    )
    .await;
    let id = uid("call");
    let (st, first) = reserve(s, &key, &call(Some(&id), 600, "gpt-4o-mini", None)).await;
    assert_eq!(st, StatusCode::OK, "{first}");
    assert_eq!(
        (&first["id"], &first["replayed"], &first["status"]),
        (&json!(id), &json!(false), &json!("active"))
    );
    // The repeat (even with another amount) reserves nothing again.
    for amount in [600, 900] {
        let (st, again) = reserve(s, &key, &call(Some(&id), amount, "gpt-4o-mini", None)).await;
        assert_eq!(st, StatusCode::OK, "{again}");
        assert_eq!(again["replayed"], true);
        assert_eq!(again["status"], "active");
        for field in ["amount_nanos", "budgets", "expires_at_ms", "capped"] {
            assert_eq!(again[field], first[field], "{field}");
        }
    }
    assert_eq!(
        spend_of(s, &key, "daily", None).await["reserved_nanos"],
        600
    );
    // Once settled, a repeat says so and still reserves nothing.
    settle(s, &key, &id, Some(500)).await;
    let (st, again) = reserve(s, &key, &call(Some(&id), 600, "gpt-4o-mini", None)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (&again["replayed"], &again["status"]),
        (&json!(true), &json!("settled"))
    );
    let spend = spend_of(s, &key, "daily", None).await;
    assert_eq!(
        (&spend["spent_nanos"], &spend["reserved_nanos"]),
        (&json!(500), &json!(0))
    );

    // A refusal leaves no reservation: repeating it decides anew.
    let other = uid("call");
    let (st, v) = reserve(s, &key, &call(Some(&other), 600, "gpt-4o-mini", None)).await;
    assert_eq!((st, code(&v)), (StatusCode::CONFLICT, "budget_exceeded"));
    let (st, _) = reserve(s, &key, &call(Some(&other), 600, "gpt-4o-mini", None)).await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _) = send(
        &s.app,
        "POST",
        &format!("/v1/budgets?project={p}"),
        Some(&s.admin),
        Some(&json!({"name": "daily", "limit_nanos": 2000, "window": "day"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = reserve(s, &key, &call(Some(&other), 600, "gpt-4o-mini", None)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["replayed"], false);

    // Ids are unique per project: another project may use the same one.
    let (_, key_b) = project(s).await;
    let (st, v) = reserve(s, &key_b, &call(Some(&id), 100, "gpt-4o-mini", None)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["replayed"], false);

    // Bad ids are 422.
    for bad in [
        json!("short"),
        json!("x".repeat(65)),
        json!("has space 123"),
        json!("ünïcödé-id"),
        json!(""),
    ] {
        let mut body = call(None, 1, "gpt-4o-mini", None);
        body["id"] = bad.clone();
        let (st, v) = reserve(s, &key, &body).await;
        assert_eq!(
            (st, code(&v)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
            "{bad}"
        );
    }
}

async fn usage_is_delivered_exactly_once(s: &Server) {
    let (p, key) = project(s).await;
    let daily = budget(
        s,
        &p,
        json!({"name": "daily", "limit_nanos": 1_000_000, "window": "day"}),
    )
    .await;
    let reserved = uid("res");
    let (st, v) = reserve(s, &key, &call(Some(&reserved), 1000, "gpt-4o", None)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let fresh = uid("use");
    let yesterday = uid("old");
    let future = uid("future");
    let now = bursora_server::store::now_ms();
    let day = 86_400_000;
    let items = json!([
        {"id": reserved, "tags": {}, "provider": "openai", "model": "gpt-4o", "actual_nanos": 700, "input_tokens": 10, "output_tokens": 20},
        {"id": fresh, "tags": {"tenant_id": "acme"}, "provider": "openai", "model": "gpt-4o-mini", "actual_nanos": 300, "output_tokens": 5},
        {"id": fresh, "tags": {"tenant_id": "acme"}, "provider": "openai", "model": "gpt-4o-mini", "actual_nanos": 300},
        {"id": yesterday, "tags": {}, "provider": "openai", "model": "gpt-4o-mini", "actual_nanos": 40, "at_ms": now - day},
        {"id": future, "tags": {}, "provider": "openai", "model": "gpt-4o-mini", "actual_nanos": 2, "at_ms": now + 10 * day},
    ]);
    let first = usage(s, &key, items.clone()).await;
    let kinds: Vec<(bool, &str)> = first.iter().map(|(_, a, k)| (*a, k.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (true, "settled"),
            (true, "recorded"),
            (false, "recorded"),
            (true, "recorded"),
            (true, "recorded")
        ]
    );
    // The SDK retries: nothing changes however often it delivers.
    for _ in 0..3 {
        let again = usage(s, &key, items.clone()).await;
        let kinds: Vec<(bool, &str)> = again.iter().map(|(_, a, k)| (*a, k.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (false, "settled"),
                (false, "recorded"),
                (false, "recorded"),
                (false, "recorded"),
                (false, "recorded")
            ]
        );
    }
    // A settle of the reservation after its usage is a duplicate too.
    let r = settle(s, &key, &reserved, Some(999)).await;
    assert_eq!(
        (&r["applied"], &r["actual_nanos"]),
        (&json!(false), &json!(700))
    );

    // Today: 700 + 300 + 2 (the future time counted as now); yesterday's 40 in its own window
    // (unless "now" is so close to midnight that the windows differ: checked by window start).
    let spend = spend_of(s, &key, "daily", None).await;
    let today_start = spend["window_start_ms"].as_i64().unwrap();
    let (st, w) = send(
        &s.app,
        "GET",
        &format!(
            "/v1/budgets/{}/windows?from={}",
            daily["id"].as_str().unwrap(),
            now - 2 * day
        ),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{w}");
    let windows: BTreeMap<i64, i64> = w["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["window_start_ms"].as_i64().unwrap(),
                w["spent_nanos"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(windows.get(&today_start), Some(&1002), "{w}");
    assert_eq!(windows.get(&(today_start - day)), Some(&40), "{w}");
    assert_eq!(spend["spent_nanos"], 1002);
    assert_eq!(w["budget"]["name"], "daily");

    // The history shows each once, with its tokens.
    let events = all_events(s, &key, "", 100).await;
    assert_eq!(events.len(), 4);
    let r = event(&events, &reserved);
    assert_eq!(
        (
            &r["kind"],
            &r["actual_nanos"],
            &r["input_tokens"],
            &r["output_tokens"]
        ),
        (&json!("settled"), &json!(700), &json!(10), &json!(20))
    );
    let u = event(&events, &fresh);
    assert_eq!(
        (
            &u["kind"],
            &u["actual_nanos"],
            &u["reserved_nanos"],
            &u["overrun_nanos"]
        ),
        (&json!("usage"), &json!(300), &json!(0), &json!(0))
    );
    assert_eq!(u["tags"], json!({"tenant_id": "acme"}));
    assert_eq!(u["output_tokens"], 5);
    assert!(u.get("input_tokens").is_none(), "{u}");
    assert!(event(&events, &future)["at_ms"].as_i64().unwrap() <= bursora_server::store::now_ms());
    assert_eq!(event(&events, &yesterday)["at_ms"], now - day);

    // A reserve naming a usage event's id is a client mistake, not a replay.
    let (st, v) = reserve(s, &key, &call(Some(&fresh), 10, "gpt-4o", None)).await;
    assert!(st.is_client_error(), "{st} {v}");
    assert_eq!(code(&v), "invalid_input");
}

async fn refusals_are_listed(s: &Server) {
    let (p, key) = project(s).await;
    let b = budget(
        s,
        &p,
        json!({"name": "per-tenant", "match": {"tenant_id": "*"}, "limit_nanos": 100, "window": "day"}),
    )
    .await;
    let (st, _) = reserve(s, &key, &call(None, 80, "gpt-4o", Some("acme"))).await;
    assert_eq!(st, StatusCode::OK);
    // A later millisecond, so "newest first" has one answer (ties are broken by id).
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let (st, v) = reserve(
        s,
        &key,
        &call(Some(&uid("blocked")), 50, "gpt-4o", Some("acme")),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (st, v) = send(&s.app, "GET", "/v1/events?kind=refused", Some(&key), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let refused = v["events"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{v}");
    let e = &refused[0];
    assert_eq!(e["kind"], "refused");
    assert_eq!(e["model"], "gpt-4o");
    assert_eq!(e["provider"], "openai");
    assert_eq!(e["tags"], json!({"tenant_id": "acme"}));
    assert_eq!(e["requested_nanos"], 50);
    assert_eq!(e["reserved_nanos"], 0);
    assert_eq!(e["actual_nanos"], Value::Null);
    assert_eq!(e["budget"]["id"], b["id"]);
    assert_eq!(e["budget"]["name"], "per-tenant");
    assert_eq!(e["budget"]["key"], "tenant_id=acme");
    assert!(e["at"].as_str().unwrap().ends_with('Z'));
    // Listed with everything else too, and not as spend.
    let all = all_events(s, &key, "", 100).await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["kind"], "refused", "newest first");
    let (_, v) = send(
        &s.app,
        "GET",
        "/v1/events?kind=active,refused",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    let (_, v) = send(&s.app, "GET", "/v1/events?kind=settled", Some(&key), None).await;
    assert_eq!(v["events"], json!([]));
}

async fn paging_covers_every_event_once(s: &Server) {
    let (p, key) = project(s).await;
    budget(
        s,
        &p,
        json!({"name": "small", "limit_nanos": 10_000, "window": "day"}),
    )
    .await;
    let mut ids = BTreeSet::new();
    for i in 0..9 {
        let (st, r) = reserve(s, &key, &call(None, 100 + i, "gpt-4o", None)).await;
        assert_eq!(st, StatusCode::OK, "{r}");
        let id = r["id"].as_str().unwrap().to_owned();
        match i % 3 {
            0 => {
                settle(s, &key, &id, Some(50)).await;
            }
            1 => {
                settle(s, &key, &id, None).await;
            }
            _ => {}
        }
        ids.insert(id);
    }
    // Refusals, and usage events sharing one timestamp (ties broken by id).
    for _ in 0..3 {
        let (st, _) = reserve(s, &key, &call(None, 1_000_000, "gpt-4o", None)).await;
        assert_eq!(st, StatusCode::CONFLICT);
    }
    let at = bursora_server::store::now_ms() - 5_000;
    let items: Vec<Value> = (0..12)
        .map(|_| {
            let id = uid("tie");
            ids.insert(id.clone());
            json!({"id": id, "provider": "openai", "model": "gpt-4o", "actual_nanos": 1, "at_ms": at})
        })
        .collect();
    usage(s, &key, Value::Array(items)).await;
    for limit in [1, 5, 7, 100] {
        let events = all_events(s, &key, "", limit).await;
        assert_eq!(events.len(), 24, "limit {limit}");
        let listed: BTreeSet<String> = events
            .iter()
            .filter(|e| e["kind"] != "refused")
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(listed, ids, "limit {limit}");
        // Newest first: (at_ms, id) never increases.
        for w in events.windows(2) {
            let key = |e: &Value| {
                (
                    e["at_ms"].as_i64().unwrap(),
                    e["id"].as_str().unwrap().to_owned(),
                )
            };
            assert!(key(&w[0]) > key(&w[1]), "{} then {}", w[0], w[1]);
        }
    }
    let usage_only = all_events(s, &key, "&kind=usage", 5).await;
    assert_eq!(usage_only.len(), 12);
    let by_kind = |kind: &str| {
        let kind = kind.to_owned();
        move |e: &&Value| e["kind"] == kind
    };
    let all = all_events(s, &key, "", 100).await;
    assert_eq!(all.iter().filter(by_kind("settled")).count(), 3);
    assert_eq!(all.iter().filter(by_kind("released")).count(), 3);
    assert_eq!(all.iter().filter(by_kind("active")).count(), 3);
    assert_eq!(all.iter().filter(by_kind("refused")).count(), 3);
    for e in all.iter().filter(by_kind("active")) {
        assert_eq!(e["actual_nanos"], Value::Null);
    }
    // A time range: only the usage events at `at`.
    let ranged = all_events(s, &key, &format!("&from={at}&to={}", at + 1), 4).await;
    assert_eq!(ranged.len(), 12);
}

async fn spend_queries_equal_the_settled_truth(s: &Server) {
    let (p, key) = project(s).await;
    budget(
        s,
        &p,
        json!({"name": "all", "limit_nanos": 1_000_000_000_000i64, "window": "month"}),
    )
    .await;
    // (model, tenant, reserved, actual: None = release, Some(-1) = leave active)
    let calls: [(&str, Option<&str>, i64, Option<i64>); 9] = [
        ("gpt-4o", Some("acme"), 1_000, Some(900)),
        ("gpt-4o", Some("globex"), 2_000, Some(2_500)), // an overrun
        ("gpt-4o-mini", Some("acme"), 300, Some(123)),
        ("gpt-4o-mini", None, 300, Some(77)),
        ("o3", None, 5_000, Some(4_321)),
        ("o3", Some("acme"), 5_000, None),     // released: no spend
        ("o3", Some("acme"), 5_000, Some(-1)), // active: no spend yet
        ("gpt-4o", Some("initech"), 10, Some(0)),
        ("gpt-4o", Some("acme"), 999_999, Some(999_999)),
    ];
    let mut truth_by_model: BTreeMap<&str, (i64, u64)> = BTreeMap::new();
    let mut truth_by_tenant: BTreeMap<Option<&str>, (i64, u64)> = BTreeMap::new();
    let mut overrun_id = String::new();
    for (model, tenant, reserved, actual) in calls {
        let (st, r) = reserve(s, &key, &call(None, reserved, model, tenant)).await;
        assert_eq!(st, StatusCode::OK, "{r}");
        let id = r["id"].as_str().unwrap();
        match actual {
            Some(-1) => {}
            None => {
                settle(s, &key, id, None).await;
            }
            Some(a) => {
                settle(s, &key, id, Some(a)).await;
                let m = truth_by_model.entry(model).or_default();
                *m = (m.0 + a, m.1 + 1);
                let t = truth_by_tenant.entry(tenant).or_default();
                *t = (t.0 + a, t.1 + 1);
                if a > reserved {
                    overrun_id = id.to_owned();
                }
            }
        }
    }
    // An expired reservation counts at its reserved amount.
    let mut body = call(None, 4_444, "o3", Some("globex"));
    body["ttl_ms"] = json!(1);
    let (st, _) = reserve(s, &key, &body).await;
    assert_eq!(st, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(s.state.store.expire().await.unwrap() >= 1);
    let m = truth_by_model.entry("o3").or_default();
    *m = (m.0 + 4_444, m.1 + 1);
    let t = truth_by_tenant.entry(Some("globex")).or_default();
    *t = (t.0 + 4_444, t.1 + 1);
    // And usage without a reservation.
    usage(
        s,
        &key,
        json!([{"id": uid("usage"), "tags": {"tenant_id": "acme"}, "provider": "anthropic", "model": "claude", "actual_nanos": 5_555}]),
    )
    .await;
    truth_by_model.insert("claude", (5_555, 1));
    let t = truth_by_tenant.entry(Some("acme")).or_default();
    *t = (t.0 + 5_555, t.1 + 1);
    let total: i64 = truth_by_model.values().map(|v| v.0).sum();
    let calls_total: u64 = truth_by_model.values().map(|v| v.1).sum();

    let groups = |v: &Value| -> BTreeMap<Option<String>, (i64, u64)> {
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["value"].as_str().map(str::to_owned),
                    (
                        g["spent_nanos"].as_i64().unwrap(),
                        g["calls"].as_u64().unwrap(),
                    ),
                )
            })
            .collect()
    };
    let (st, v) = send(
        &s.app,
        "GET",
        "/v1/spend/breakdown?group_by=model",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let want: BTreeMap<Option<String>, (i64, u64)> = truth_by_model
        .iter()
        .map(|(k, v)| (Some((*k).to_owned()), *v))
        .collect();
    assert_eq!(groups(&v), want, "{v}");
    assert_eq!(v["group_by"], "model");
    let spent: Vec<i64> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["spent_nanos"].as_i64().unwrap())
        .collect();
    assert!(spent.windows(2).all(|w| w[0] >= w[1]), "biggest first: {v}");
    assert!(v["to_ms"].as_i64().unwrap() - v["from_ms"].as_i64().unwrap() == 30 * 86_400_000);

    let (_, v) = send(
        &s.app,
        "GET",
        "/v1/spend/breakdown?group_by=tag:tenant_id",
        Some(&key),
        None,
    )
    .await;
    let want: BTreeMap<Option<String>, (i64, u64)> = truth_by_tenant
        .iter()
        .map(|(k, v)| (k.map(str::to_owned), *v))
        .collect();
    assert_eq!(groups(&v), want, "{v}");
    let (_, v) = send(
        &s.app,
        "GET",
        "/v1/spend/breakdown?group_by=provider&limit=1",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(v["groups"].as_array().unwrap().len(), 1);
    assert_eq!(v["groups"][0]["value"], "openai");

    // Series: every bucket size sums to the truth; grouped series too.
    for bucket in ["minute", "hour", "day"] {
        let from = bursora_server::store::now_ms() - 3 * 86_400_000;
        for group in ["", "&group_by=model", "&group_by=tag:tenant_id"] {
            if bucket == "minute" && !group.is_empty() {
                continue;
            }
            let uri = format!("/v1/spend/series?bucket={bucket}&from={from}{group}");
            let (st, v) = send(&s.app, "GET", &uri, Some(&key), None).await;
            assert_eq!(st, StatusCode::OK, "{uri}: {v}");
            let points = v["points"].as_array().unwrap();
            let sum: i64 = points
                .iter()
                .map(|p| p["spent_nanos"].as_i64().unwrap())
                .sum();
            let calls: u64 = points.iter().map(|p| p["calls"].as_u64().unwrap()).sum();
            assert_eq!((sum, calls), (total, calls_total), "{uri}: {v}");
            let size = match bucket {
                "minute" => 60_000,
                "hour" => 3_600_000,
                _ => 86_400_000,
            };
            for p in points {
                assert_eq!(p["start_ms"].as_i64().unwrap() % size, 0, "UTC-aligned");
                assert_eq!(p.get("value").is_some(), !group.is_empty(), "{p}");
            }
        }
    }
    // Overruns.
    let (_, v) = send(&s.app, "GET", "/v1/events?overrun=true", Some(&key), None).await;
    let over = v["events"].as_array().unwrap();
    assert_eq!(over.len(), 1, "{v}");
    assert_eq!(over[0]["id"], json!(overrun_id));
    assert_eq!(over[0]["overrun_nanos"], 500);
    // A range with nothing in it.
    let (_, v) = send(
        &s.app,
        "GET",
        "/v1/spend/breakdown?group_by=model&from=0&to=1000",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(v["groups"], json!([]));
}

async fn projects_never_see_each_others_history(s: &Server) {
    let (a, key_a) = project(s).await;
    let (b, key_b) = project(s).await;
    let bud_b = budget(
        s,
        &b,
        json!({"name": "daily", "limit_nanos": 1_000_000, "window": "day"}),
    )
    .await;
    budget(
        s,
        &a,
        json!({"name": "daily", "limit_nanos": 1_000_000, "window": "day"}),
    )
    .await;
    let rid = uid("b-res");
    let (st, _) = reserve(
        s,
        &key_b,
        &call(Some(&rid), 1_000, "gpt-4o", Some("secret")),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let uid_b = uid("b-use");
    usage(
        s,
        &key_b,
        json!([{"id": uid_b, "provider": "openai", "model": "gpt-4o", "actual_nanos": 77}]),
    )
    .await;

    // A sees none of it.
    let events_a = all_events(s, &key_a, "", 100).await;
    assert!(events_a.is_empty(), "{events_a:?}");
    let (st, v) = send(
        &s.app,
        "GET",
        "/v1/spend/breakdown?group_by=model",
        Some(&key_a),
        None,
    )
    .await;
    assert_eq!((st, &v["groups"]), (StatusCode::OK, &json!([])));
    for uri in [
        format!("/v1/events?project={b}"),
        format!("/v1/spend/breakdown?group_by=model&project={b}"),
        format!("/v1/spend/series?bucket=day&project={b}"),
        format!("/v1/budgets/{}/windows", bud_b["id"].as_str().unwrap()),
    ] {
        let (st, v) = send(&s.app, "GET", &uri, Some(&key_a), None).await;
        assert_eq!(
            (st, code(&v)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{uri}"
        );
    }
    // A's usage naming B's ids settles nothing of B's: it is A's own usage.
    let r = usage(
        s,
        &key_a,
        json!([
            {"id": rid, "provider": "openai", "model": "gpt-4o", "actual_nanos": 5},
            {"id": uid_b, "provider": "openai", "model": "gpt-4o", "actual_nanos": 6}
        ]),
    )
    .await;
    assert_eq!(
        r.iter()
            .map(|(_, a, k)| (*a, k.as_str()))
            .collect::<Vec<_>>(),
        [(true, "recorded"), (true, "recorded")]
    );
    // B's books are untouched.
    let events_b = all_events(s, &key_b, "", 100).await;
    assert_eq!(event(&events_b, &rid)["kind"], "active");
    assert_eq!(event(&events_b, &uid_b)["actual_nanos"], 77);
    assert_eq!(spend_of(s, &key_b, "daily", None).await["spent_nanos"], 77);
    assert_eq!(spend_of(s, &key_a, "daily", None).await["spent_nanos"], 11);
    // The admin sees B's with ?project=.
    let (st, v) = send(
        &s.app,
        "GET",
        &format!("/v1/events?project={b}"),
        Some(&s.admin),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    let (st, v) = send(&s.app, "GET", "/v1/events", Some(&s.admin), None).await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "missing_project"));
}

async fn bad_history_input_is_4xx_json(s: &Server) {
    let (p, key) = project(s).await;
    let b = budget(
        s,
        &p,
        json!({"name": "daily", "limit_nanos": 1000, "window": "day"}),
    )
    .await;
    let bid = b["id"].as_str().unwrap();
    let gets = [
        "/v1/events?limit=0".to_owned(),
        "/v1/events?limit=501".to_owned(),
        "/v1/events?limit=-1".to_owned(),
        "/v1/events?cursor=zz".to_owned(),
        "/v1/events?cursor=abc".to_owned(),
        format!("/v1/events?cursor={}", "41".repeat(300)),
        "/v1/events?cursor=3a".to_owned(),
        "/v1/events?kind=bogus".to_owned(),
        "/v1/events?kind=settled,nope".to_owned(),
        "/v1/events?overrun=maybe".to_owned(),
        "/v1/events?from=abc".to_owned(),
        "/v1/events?from=99999999999999999999999".to_owned(),
        "/v1/spend/breakdown".to_owned(),
        "/v1/spend/breakdown?group_by=color".to_owned(),
        "/v1/spend/breakdown?group_by=tag:bad%20key".to_owned(),
        "/v1/spend/breakdown?group_by=tag:".to_owned(),
        "/v1/spend/breakdown?group_by=model&from=10&to=5".to_owned(),
        "/v1/spend/breakdown?group_by=model&from=-5".to_owned(),
        "/v1/spend/breakdown?group_by=model&limit=0".to_owned(),
        "/v1/spend/series".to_owned(),
        "/v1/spend/series?bucket=week".to_owned(),
        "/v1/spend/series?bucket=minute".to_owned(), // 30 days of minutes: too many buckets
        "/v1/spend/series?bucket=minute&from=0&to=9223372036854775807".to_owned(),
        "/v1/spend/series?bucket=day&group_by=nope".to_owned(),
        format!("/v1/budgets/{bid}/windows?limit=0"),
        format!("/v1/budgets/{bid}/windows?from=5&to=1"),
    ];
    for uri in &gets {
        let (st, v) = send(&s.app, "GET", uri, Some(&key), None).await;
        assert!(st.is_client_error(), "{uri}: {st} {v}");
        assert!(v["error"]["code"].is_string(), "{uri}: {v}");
        assert!(v["error"]["message"].is_string(), "{uri}: {v}");
    }
    // Extreme but valid ranges answer.
    for uri in [
        "/v1/events?from=0&to=9223372036854775807",
        "/v1/spend/series?bucket=day&from=0&to=864000000",
        "/v1/spend/breakdown?group_by=model&from=0&to=9223372036854775807",
    ] {
        let (st, v) = send(&s.app, "GET", uri, Some(&key), None).await;
        assert_eq!(st, StatusCode::OK, "{uri}: {v}");
    }
    let item = |patch: Value| -> Value {
        let mut v =
            json!({"id": "usage-0001", "provider": "openai", "model": "m", "actual_nanos": 1});
        for (k, val) in patch.as_object().unwrap() {
            v[k] = val.clone();
        }
        v
    };
    let many_tags: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    let bodies = [
        json!({"items": []}),
        json!({"items": (0..1001).map(|i| item(json!({"id": format!("usage-{i:05}")}))).collect::<Vec<_>>()}),
        json!({"items": [item(json!({"id": "short"}))]}),
        json!({"items": [item(json!({"id": "bad id with spaces"}))]}),
        json!({"items": [item(json!({"actual_nanos": -1}))]}),
        json!({"items": [item(json!({"actual_nanos": 1_000_000_000_000_001i64}))]}),
        json!({"items": [item(json!({"actual_nanos": 1.5}))]}),
        json!({"items": [item(json!({"actual_nanos": null}))]}),
        json!({"items": [item(json!({"at_ms": -1}))]}),
        json!({"items": [item(json!({"input_tokens": -1}))]}),
        json!({"items": [item(json!({"tags": many_tags}))]}),
        json!({"items": [item(json!({"tags": {"bad key": "v"}}))]}),
        json!({"items": [item(json!({"tags": {"k": "v".repeat(257)}}))]}),
        json!({"items": [{"id": "usage-0001"}]}),
        json!({"items": "nope"}),
    ];
    for body in &bodies {
        let (st, v) = send(&s.app, "POST", "/v1/usage", Some(&key), Some(body)).await;
        assert!(st.is_client_error(), "{st} {v}");
        assert!(v["error"]["code"].is_string(), "{v}");
    }
    // Nothing was recorded by any of them.
    assert!(all_events(s, &key, "", 100).await.is_empty());
    // Settle tokens are validated too.
    let (st, v) = send(
        &s.app,
        "POST",
        "/v1/settle",
        Some(&key),
        Some(&json!({"items": [{"id": "res_x", "actual_nanos": 1, "output_tokens": -5}]})),
    )
    .await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "invalid_input"));
}

async fn keys_are_listed_and_revoked(s: &Server) {
    let (p, key1) = project(s).await;
    let (st, k2) = send(
        &s.app,
        "POST",
        &format!("/v1/projects/{p}/keys"),
        Some(&s.admin),
        Some(&json!({"name": "ci"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let key2 = k2["key"].as_str().unwrap();
    let (st, v) = send(
        &s.app,
        "GET",
        &format!("/v1/projects/{p}/keys"),
        Some(&s.admin),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{v}");
    for k in keys {
        let fields: BTreeSet<&str> = k.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            BTreeSet::from(["id", "name", "project", "created_at", "created_at_ms"]),
            "never the secret or its hash: {k}"
        );
        assert_eq!(k["project"], json!(p));
    }
    assert!(!v.to_string().contains(&key1[4..]) && !v.to_string().contains(&key2[4..]));
    // Both made in the same millisecond, possibly: their order is not the point.
    assert!(keys.iter().any(|k| k["name"] == "ci"), "{v}");

    // A project key may not list or revoke.
    let (st, _) = send(
        &s.app,
        "GET",
        &format!("/v1/projects/{p}/keys"),
        Some(&key1),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let kid = k2["id"].as_str().unwrap();
    let (st, _) = send(
        &s.app,
        "DELETE",
        &format!("/v1/keys/{kid}"),
        Some(&key1),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // Revoked: 401 at once; the other key still works; a second revoke is 404.
    let (st, _) = send(&s.app, "GET", "/v1/budgets", Some(key2), None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = send(
        &s.app,
        "DELETE",
        &format!("/v1/keys/{kid}"),
        Some(&s.admin),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (st, v) = send(&s.app, "GET", "/v1/budgets", Some(key2), None).await;
    assert_eq!((st, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (st, _) = send(&s.app, "GET", "/v1/budgets", Some(&key1), None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = send(
        &s.app,
        "DELETE",
        &format!("/v1/keys/{kid}"),
        Some(&s.admin),
        None,
    )
    .await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (st, v) = send(
        &s.app,
        "GET",
        "/v1/projects/prj_nope/keys",
        Some(&s.admin),
        None,
    )
    .await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (_, v) = send(
        &s.app,
        "GET",
        &format!("/v1/projects/{p}/keys"),
        Some(&s.admin),
        None,
    )
    .await;
    assert_eq!(v["keys"].as_array().unwrap().len(), 1);
}

/// The only admin key cannot be revoked: that would lock everyone out.
#[tokio::test]
async fn the_last_admin_key_stays() {
    use bursora_server::auth::{ADMIN_PREFIX, key_record, new_secret};
    use bursora_server::store::SqliteStore;
    use bursora_server::{AppState, Store, router};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::Sqlite(SqliteStore::open(dir.path()).unwrap());
    let first = new_secret(ADMIN_PREFIX);
    let first_record = key_record(&first, None, "first");
    store.add_key(&first_record).await.unwrap();
    let second = new_secret(ADMIN_PREFIX);
    let second_record = key_record(&second, None, "second");
    store.add_key(&second_record).await.unwrap();
    let app = router(AppState::new(store));
    let revoke = |id: &str| format!("/v1/keys/{id}");
    let (st, _) = send(
        &app,
        "DELETE",
        &revoke(&second_record.id),
        Some(&first),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = send(&app, "GET", "/v1/projects", Some(&second), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, v) = send(
        &app,
        "DELETE",
        &revoke(&first_record.id),
        Some(&first),
        None,
    )
    .await;
    assert_eq!((st, code(&v)), (StatusCode::CONFLICT, "last_admin_key"));
    let (st, _) = send(&app, "GET", "/v1/projects", Some(&first), None).await;
    assert_eq!(st, StatusCode::OK);
}
