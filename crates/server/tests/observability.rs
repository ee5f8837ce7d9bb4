//! `GET /metrics` and `GET /v1/openapi.json`, on the SQLite store and, with
//! `scripts/pg-test.sh`, on Postgres.

#[macro_use]
mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use std::collections::{BTreeMap, BTreeSet};

use common::{Server, budget, project, reserve_body, send, sqlite_server};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

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

    // Clients choose methods freely; none becomes a label.
    let req = Request::builder()
        .method("FROB")
        .uri("/v1/reserve")
        .body(Body::empty())
        .unwrap();
    let st = s.app.clone().oneshot(req).await.unwrap().status();
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);

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
    for secret in [p.as_str(), key.as_str(), "acme", "bud_nope", "FROB"] {
        assert!(!text.contains(secret), "{secret} leaked into:\n{text}");
    }
    // Every sample line is `name{labels} value` with a numeric value.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}

/// Every route the router serves and its methods. A route added to the router but not to the
/// document (or the other way round) fails `openapi_describes_every_route`.
const ROUTES: &[(&str, &[&str])] = &[
    ("/healthz", &["get"]),
    ("/metrics", &["get"]),
    ("/v1/openapi.json", &["get"]),
    ("/v1/reserve", &["post"]),
    ("/v1/settle", &["post"]),
    ("/v1/release", &["post"]),
    ("/v1/extend", &["post"]),
    ("/v1/budgets", &["get", "post"]),
    ("/v1/budgets/{id}", &["get", "put", "delete"]),
    ("/v1/budgets/{id}/windows", &["get"]),
    ("/v1/spend", &["get"]),
    ("/v1/spend/breakdown", &["get"]),
    ("/v1/spend/series", &["get"]),
    ("/v1/usage", &["post"]),
    ("/v1/events", &["get"]),
    ("/v1/projects", &["get", "post"]),
    ("/v1/projects/{id}/keys", &["get", "post"]),
    ("/v1/keys/{id}", &["delete"]),
    ("/v1/webhooks", &["get", "post"]),
    ("/v1/webhooks/{id}", &["delete"]),
    ("/v1/budgets/{id}/alerts", &["get", "put"]),
    ("/v1/alerts", &["get"]),
];

/// Routes anyone may call; every other operation must require the bearer scheme.
const OPEN: &[&str] = &["/healthz", "/metrics", "/v1/openapi.json"];

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// Every `$ref` in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r);
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let s = sqlite_server().await;
    let (st, ct, text) = get_text(&s, "/v1/openapi.json").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(ct, "application/json");
    let doc: Value = serde_json::from_str(&text).expect("the document is JSON");
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    // The document's paths and methods are exactly the router's.
    let documented: BTreeMap<&str, BTreeSet<&str>> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| {
            let methods = METHODS
                .into_iter()
                .filter(|m| item.get(*m).is_some())
                .collect();
            (path.as_str(), methods)
        })
        .collect();
    let served: BTreeMap<&str, BTreeSet<&str>> = ROUTES
        .iter()
        .map(|(path, methods)| (*path, methods.iter().copied().collect()))
        .collect();
    assert_eq!(documented, served);

    // ... and the router really serves each of them, and no other method on those paths.
    for (path, methods) in ROUTES {
        let uri = path.replace("{id}", "x");
        for m in METHODS {
            let req = Request::builder()
                .method(m.to_uppercase().as_str())
                .uri(&uri)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))
                .unwrap();
            let st = s.app.clone().oneshot(req).await.unwrap().status();
            if methods.contains(&m) {
                assert!(
                    st != StatusCode::NOT_FOUND && st != StatusCode::METHOD_NOT_ALLOWED,
                    "{m} {path}: {st}"
                );
            } else {
                assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
            }
        }
    }

    // Bearer auth: declared, and required by every operation but the open ones.
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"]),
        (&json!("http"), &json!("bearer"))
    );
    for (path, methods) in ROUTES {
        for m in *methods {
            let op = &doc["paths"][path][m];
            let secured = op["security"] == json!([{ "bearer": [] }]);
            assert_eq!(secured, !OPEN.contains(path), "{m} {path}: {op}");
            // Every operation documents its success answer and the error shape.
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.keys().any(|k| k.starts_with('2')), "{m} {path}");
            for (status, r) in responses {
                assert!(
                    r["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{m} {path} {status}: no description"
                );
            }
            assert_eq!(
                responses["default"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{m} {path}"
            );
        }
    }

    // The error shape `{error: {code, message}}`, and request and response bodies.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["ErrorBody"]["properties"]["error"]["$ref"],
        "#/components/schemas/ErrorDetail"
    );
    let required = |name: &str| -> BTreeSet<String> {
        serde_json::from_value(schemas[name]["required"].clone()).unwrap()
    };
    assert!(required("ErrorDetail").is_superset(&["code".into(), "message".into()].into()));
    assert!(required("SettleItemBody").contains("actual_nanos"));
    assert_eq!(
        doc["paths"]["/v1/reserve"]["post"]["requestBody"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/ReserveBody"
    );
    assert_eq!(
        doc["paths"]["/v1/reserve"]["post"]["responses"]["409"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/ErrorBody"
    );
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r}"));
        assert!(schemas.get(name).is_some(), "dangling {r}");
    }

    // A response matches its schema's properties: the document describes what is sent.
    let (p, key) = project(&s).await;
    budget(
        &s,
        &p,
        json!({"name": "daily", "limit_nanos": 1000, "window": "day"}),
    )
    .await;
    let (st, r) = send(
        &s.app,
        "POST",
        "/v1/reserve",
        Some(&key),
        Some(&reserve_body(1)),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let sent: BTreeSet<&String> = r.as_object().unwrap().keys().collect();
    let declared: BTreeSet<&String> = schemas["Reserved"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(sent, declared);
}
