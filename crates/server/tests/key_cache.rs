//! The cache of verified API keys: an unknown key always reaches the store (a key added a moment
//! ago works at once), and a key removed from the store stops working once the TTL has passed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use bursora_server::auth::{KeyCache, PROJECT_PREFIX, key_record, new_secret};
use bursora_server::store::SqliteStore;
use bursora_server::{AppState, Store, router};
use common::send;

const TTL: Duration = Duration::from_millis(300);

#[tokio::test]
async fn unknown_keys_are_not_cached_and_removed_keys_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::Sqlite(SqliteStore::open(dir.path()).unwrap());
    let project = store.create_project("p").await.unwrap();
    let mut state = AppState::new(store);
    state.keys = Arc::new(KeyCache::new(TTL));
    let app = router(state.clone());

    let key = new_secret(PROJECT_PREFIX);
    let (st, _) = send(&app, "GET", "/v1/budgets", Some(&key), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // Added after a refusal: works at once, the refusal was not remembered.
    state
        .store
        .add_key(&key_record(&key, Some(&project.id), "k"))
        .await
        .unwrap();
    let (st, v) = send(&app, "GET", "/v1/budgets", Some(&key), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");

    // Removed behind the server's back (another process sharing the directory): trusted at
    // most for the TTL.
    let db = rusqlite::Connection::open(dir.path().join("server.db")).unwrap();
    let removed = db
        .execute(
            "DELETE FROM api_keys WHERE hash = ?1",
            [bursora_server::auth::hash_key(&key)],
        )
        .unwrap();
    assert_eq!(removed, 1);
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    let (st, _) = send(&app, "GET", "/v1/budgets", Some(&key), None).await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "a removed key outlived the TTL"
    );
}

#[tokio::test]
async fn a_zero_ttl_asks_the_store_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::Sqlite(SqliteStore::open(dir.path()).unwrap());
    let project = store.create_project("p").await.unwrap();
    let mut state = AppState::new(store);
    state.keys = Arc::new(KeyCache::new(Duration::ZERO));
    let app = router(state.clone());
    let key = new_secret(PROJECT_PREFIX);
    state
        .store
        .add_key(&key_record(&key, Some(&project.id), "k"))
        .await
        .unwrap();
    let (st, _) = send(&app, "GET", "/v1/budgets", Some(&key), None).await;
    assert_eq!(st, StatusCode::OK);
    rusqlite::Connection::open(dir.path().join("server.db"))
        .unwrap()
        .execute("DELETE FROM api_keys", [])
        .unwrap();
    let (st, _) = send(&app, "GET", "/v1/budgets", Some(&key), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}
