//! `GET /metrics` and `GET /v1/openapi.json`, on the SQLite store and, with
//! `scripts/pg-test.sh`, on Postgres.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Server, budget, project, reserve_body, send};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

/// Runs each test on both stores.
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

on_both_stores!(metrics_count_decisions_settlements_and_latency);

/// A `GET` without a key: status, content type and body text.
async fn get_text(s: &Server, uri: &str) -> (StatusCode, String, String) {
    let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let res = s.app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let ct = res
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, ct, String::from_utf8(bytes.to_vec()).unwrap())
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .unwrap()
}

async fn metrics_count_decisions_settlements_and_latency(s: &Server) {
    let (p, key) = project(s).await;
    budget(
        s,
        &p,
        json!({"name": "daily", "limit_nanos": 1000, "window": "day"}),
    )
    .await;
    let reserve = async |body: serde_json::Value| {
        send(&s.app, "POST", "/v1/reserve", Some(&key), Some(&body)).await
    };

    let (st, r) = reserve(reserve_body(600)).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    let (st, v) = reserve(reserve_body(600)).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let settle = json!({"items": [{"id": r["id"], "actual_nanos": 500}]});
    for _ in 0..2 {
        let (st, v) = send(&s.app, "POST", "/v1/settle", Some(&key), Some(&settle)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    // 500 left: `fit` takes it and caps the call.
    let mut fit = reserve_body(600);
    fit["policy"] = json!("fit");
    let (st, v) = reserve(fit).await;
    assert_eq!((st, &v["capped"]), (StatusCode::OK, &json!(true)), "{v}");
    // A budget read by id: its latency is filed under the template, not the id.
    let (st, _) = send(&s.app, "GET", "/v1/budgets/bud_nope", Some(&key), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let (st, ct, text) = get_text(s, "/metrics").await;
    assert_eq!(st, StatusCode::OK);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    for (series, want) in [
        (r#"bursora_reservations_total{outcome="admitted"}"#, 1.0),
        (r#"bursora_reservations_total{outcome="capped"}"#, 1.0),
        (r#"bursora_reservations_total{outcome="refused"}"#, 1.0),
        (r#"bursora_settlements_total{result="applied"}"#, 1.0),
        (r#"bursora_settlements_total{result="duplicate"}"#, 1.0),
        ("bursora_settled_nanos_total", 500.0),
        (
            r#"bursora_http_request_duration_seconds_count{method="POST",route="/v1/reserve"}"#,
            3.0,
        ),
        (
            r#"bursora_http_request_duration_seconds_bucket{method="POST",route="/v1/reserve",le="+Inf"}"#,
            3.0,
        ),
        (
            r#"bursora_http_request_duration_seconds_count{method="POST",route="/v1/settle"}"#,
            2.0,
        ),
        (
            r#"bursora_http_request_duration_seconds_count{method="GET",route="/v1/budgets/{id}"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, series), want, "{series}");
    }
    assert!(
        sample(
            &text,
            r#"bursora_http_request_duration_seconds_sum{method="POST",route="/v1/reserve"}"#
        ) > 0.0
    );
    // Bounded labels only: no tenant, project, key or raw path.
    for secret in [p.as_str(), key.as_str(), "acme", "bud_nope"] {
        assert!(!text.contains(secret), "{secret} leaked into:\n{text}");
    }
    // Every sample line is `name{labels} value` with a numeric value.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}
