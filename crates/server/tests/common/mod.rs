//! Test servers (the router driven with `oneshot`, no socket) on SQLite or Postgres, and helpers.
#![allow(dead_code, unused_macros, clippy::print_stderr)]

/// Runs each named `async fn(&Server)` test on both stores: `mod sqlite` and `mod postgres` (which
/// says nothing and passes when `BURSORA_TEST_DATABASE_URL` is unset; `scripts/pg-test.sh` sets it).
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(&crate::common::sqlite_server().await).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                if let Some(s) = crate::common::pg_server().await {
                    super::$name(&s).await;
                }
            })*
        }
    };
}

use std::path::Path;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bursora_server::auth::{ADMIN_PREFIX, key_record, new_secret};
use bursora_server::store::{PgStore, SqliteStore};
use bursora_server::{AppState, Store, router};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Where the Postgres half of the suite connects; `scripts/pg-test.sh` sets it.
pub const PG_ENV: &str = "BURSORA_TEST_DATABASE_URL";

/// One server instance and its admin key.
pub struct Server {
    pub app: Router,
    pub state: AppState,
    pub admin: String,
    _dir: Option<tempfile::TempDir>,
}

async fn with_admin(store: Store, dir: Option<tempfile::TempDir>) -> Server {
    let admin = new_secret(ADMIN_PREFIX);
    store
        .add_key(&key_record(&admin, None, "test"))
        .await
        .unwrap();
    let state = AppState::new(store);
    Server {
        app: router(state.clone()),
        state,
        admin,
        _dir: dir,
    }
}

/// A server on a fresh SQLite data directory.
pub async fn sqlite_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::Sqlite(SqliteStore::open(dir.path()).unwrap());
    with_admin(store, Some(dir)).await
}

/// A server on an existing data directory (a second process sharing it).
pub async fn sqlite_server_in(dir: &Path) -> Server {
    with_admin(Store::Sqlite(SqliteStore::open(dir).unwrap()), None).await
}

/// The Postgres URL, or `None` with a note that the Postgres half is skipped.
pub fn pg_url() -> Option<String> {
    let url = std::env::var(PG_ENV).ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!(
            "skipped: {PG_ENV} is not set; run scripts/pg-test.sh to test against a throwaway Postgres"
        );
    }
    url
}

/// A server on the test Postgres, if there is one. Tests share the database and stay apart by
/// working in projects of their own.
pub async fn pg_server() -> Option<Server> {
    let url = pg_url()?;
    Some(pg_server_at(&url).await)
}

/// A server (replica) on the Postgres at `url`.
pub async fn pg_server_at(url: &str) -> Server {
    let store = Store::Postgres(PgStore::connect(url, 8).await.unwrap());
    with_admin(store, None).await
}

/// Sends a request; the answer must be JSON (or empty).
pub async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
    send_raw(app, method, uri, key, Some("application/json"), bytes).await
}

/// Sends raw bytes with an optional content type.
pub async fn send_raw(
    app: &Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    content_type: Option<&str>,
    body: Option<Vec<u8>>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(k) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
    }
    if body.is_some()
        && let Some(ct) = content_type
    {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let req = req.body(body.map_or_else(Body::empty, Body::from)).unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {uri}: {status} answered non-JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    (status, value)
}

/// A new project and a key of it.
pub async fn project(s: &Server) -> (String, String) {
    let (st, p) = send(
        &s.app,
        "POST",
        "/v1/projects",
        Some(&s.admin),
        Some(&json!({ "name": "test" })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    let id = p["id"].as_str().unwrap().to_owned();
    let (st, k) = send(
        &s.app,
        "POST",
        &format!("/v1/projects/{id}/keys"),
        Some(&s.admin),
        Some(&json!({})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{k}");
    (id, k["key"].as_str().unwrap().to_owned())
}

/// Creates a budget in `project` (as admin) and returns it.
pub async fn budget(s: &Server, project: &str, body: Value) -> Value {
    let (st, b) = send(
        &s.app,
        "POST",
        &format!("/v1/budgets?project={project}"),
        Some(&s.admin),
        Some(&body),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    b
}

/// A reservation request body.
pub fn reserve_body(amount_nanos: i64) -> Value {
    json!({ "provider": "openai", "model": "gpt-4o-mini", "tags": { "tenant_id": "acme" }, "amount_nanos": amount_nanos })
}

/// The `/v1/spend` entry of budget `name` (and template `key`).
pub async fn spend_of(s: &Server, key: &str, name: &str, counter: Option<&str>) -> Value {
    let (st, v) = send(&s.app, "GET", "/v1/spend", Some(key), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name && b["key"].as_str() == counter)
        .cloned()
        .unwrap_or_else(|| panic!("no spend entry for {name} {counter:?} in {v}"))
}
