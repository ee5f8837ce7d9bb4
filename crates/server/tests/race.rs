//! Two server instances on one store, 64 concurrent clients hammering one budget that admits
//! exactly K reservations: exactly K are admitted and the counters are exact to the nano.
//! SQLite: two stores on one data directory (as two processes would share it). Postgres (when
//! `BURSORA_TEST_DATABASE_URL` is set): two replicas with their own connection pools.

mod common;

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
