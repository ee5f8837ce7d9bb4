//! Two server instances on one store, 64 concurrent clients hammering one budget that admits
//! exactly K reservations: exactly K are admitted and the counters are exact to the nano.
//! SQLite: two stores on one data directory (as two processes would share it). Postgres (when
//! `BURSORA_TEST_DATABASE_URL` is set): two replicas with their own connection pools.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use common::{Server, budget, project, reserve_body, send, spend_of};
use serde_json::json;

const CLIENTS: usize = 64;
const CALLS_PER_CLIENT: usize = 12;
const K: i64 = 100;
const AMOUNT: i64 = 1_000;

async fn race(a: &Server, b: &Server) {
    let (p, key) = project(a).await;
    budget(
        a,
        &p,
        json!({"name": "hot", "limit_nanos": K * AMOUNT, "window": "total"}),
    )
    .await;
    let apps = [a.app.clone(), b.app.clone()];

    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let apps = apps.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut admitted = Vec::new();
            for call in 0..CALLS_PER_CLIENT {
                let app = &apps[(client + call) % 2];
                let (st, v) = send(
                    app,
                    "POST",
                    "/v1/reserve",
                    Some(&key),
                    Some(&reserve_body(AMOUNT)),
                )
                .await;
                match st {
                    StatusCode::OK => admitted.push(v["id"].as_str().unwrap().to_owned()),
                    StatusCode::CONFLICT => assert_eq!(v["error"]["code"], "budget_exceeded"),
                    other => panic!("reserve answered {other}: {v}"),
                }
            }
            admitted
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    assert_eq!(ids.len() as i64, K, "exactly K reservations fit");
    let hot = spend_of(a, &key, "hot", None).await;
    assert_eq!(
        (hot["reserved_nanos"].as_i64(), hot["spent_nanos"].as_i64()),
        (Some(K * AMOUNT), Some(0))
    );

    // Settle every admitted call at a third of its reservation, each twice, from both replicas
    // at once: duplicates change nothing.
    let mut tasks = Vec::new();
    for (i, chunk) in ids.chunks(10).enumerate() {
        for replica in 0..2 {
            let app = apps[(i + replica) % 2].clone();
            let key = key.clone();
            let items: Vec<_> = chunk
                .iter()
                .map(|id| json!({"id": id, "actual_nanos": AMOUNT / 3}))
                .collect();
            tasks.push(tokio::spawn(async move {
                let (st, v) = send(
                    &app,
                    "POST",
                    "/v1/settle",
                    Some(&key),
                    Some(&json!({ "items": items })),
                )
                .await;
                assert_eq!(st, StatusCode::OK, "{v}");
                v["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| r["applied"] == true)
                    .count()
            }));
        }
    }
    let mut applied = 0;
    for t in tasks {
        applied += t.await.unwrap();
    }
    assert_eq!(applied as i64, K, "each reservation settles exactly once");
    for s in [a, b] {
        let hot = spend_of(s, &key, "hot", None).await;
        assert_eq!(
            (hot["reserved_nanos"].as_i64(), hot["spent_nanos"].as_i64()),
            (Some(0), Some(K * (AMOUNT / 3)))
        );
    }
}

/// Reservations with a short TTL, settled early, late (after expiry) or never, while both
/// instances' sweepers run: every reservation ends once, and the books come out exact whatever
/// the timing: settled calls count their actual cost, unsettled ones their reserved amount.
async fn settle_and_expire_race(a: &Server, b: &Server) {
    let (p, key) = project(a).await;
    budget(
        a,
        &p,
        json!({"name": "all", "limit_usd": 1000, "window": "total"}),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let sweepers: Vec<_> = [a.state.store.clone(), b.state.store.clone()]
        .into_iter()
        .map(|store| {
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    store.expire().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    let apps = [a.app.clone(), b.app.clone()];
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let apps = apps.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut expected = 0;
            for call in 0..4 {
                let app = &apps[(client + call) % 2];
                let mut body = reserve_body(AMOUNT);
                body["ttl_ms"] = json!(30);
                let (st, r) = send(app, "POST", "/v1/reserve", Some(&key), Some(&body)).await;
                assert_eq!(st, StatusCode::OK, "{r}");
                let settle = json!({"items": [{"id": r["id"], "actual_nanos": AMOUNT / 4}]});
                match (client + call) % 3 {
                    0 => expected += AMOUNT, // never settled: expires at its amount
                    1 => {
                        let (st, v) = send(
                            &apps[call % 2],
                            "POST",
                            "/v1/settle",
                            Some(&key),
                            Some(&settle),
                        )
                        .await;
                        assert_eq!(st, StatusCode::OK, "{v}");
                        expected += AMOUNT / 4;
                    }
                    _ => {
                        // Late: usually after expiry, which the settlement then corrects.
                        tokio::time::sleep(Duration::from_millis(40)).await;
                        let (st, v) = send(
                            &apps[call % 2],
                            "POST",
                            "/v1/settle",
                            Some(&key),
                            Some(&settle),
                        )
                        .await;
                        assert_eq!(st, StatusCode::OK, "{v}");
                        assert_eq!(v["results"][0]["applied"], true, "{v}");
                        expected += AMOUNT / 4;
                    }
                }
            }
            expected
        }));
    }
    let mut expected = 0;
    for t in tasks {
        expected += t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    stop.store(true, Ordering::Relaxed);
    for s in sweepers {
        s.await.unwrap();
    }
    a.state.store.expire().await.unwrap();
    let all = spend_of(a, &key, "all", None).await;
    assert_eq!(
        (all["reserved_nanos"].as_i64(), all["spent_nanos"].as_i64()),
        (Some(0), Some(expected))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_instances_settle_and_expire_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::sqlite_server_in(dir.path()).await;
    let b = common::sqlite_server_in(dir.path()).await;
    settle_and_expire_race(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_replicas_settle_and_expire_exactly() {
    let Some(url) = common::pg_url() else { return };
    let a = common::pg_server_at(&url).await;
    let b = common::pg_server_at(&url).await;
    settle_and_expire_race(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_instances_admit_exactly_k() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::sqlite_server_in(dir.path()).await;
    let b = common::sqlite_server_in(dir.path()).await;
    race(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_replicas_admit_exactly_k() {
    let Some(url) = common::pg_url() else { return };
    let a = common::pg_server_at(&url).await;
    let b = common::pg_server_at(&url).await;
    race(&a, &b).await;
}
