//! The API contract (SPEC §2, §6), run on the SQLite store and, when
//! `BURSORA_TEST_DATABASE_URL` is set (`scripts/pg-test.sh`), on Postgres.

#[macro_use]
mod common;

use axum::http::StatusCode;
use common::{Server, budget, project, reserve_body, send, send_raw, spend_of};
use serde_json::{Value, json};

on_both_stores!(
    auth_401_403_404,
    projects_are_isolated,
    client_mistakes_are_4xx_json,
    reserve_refuse_settle_idempotent,
    fit_release_batch_overrun,
    budgets_crud,
    templates_count_per_value,
    expiry_settles_at_reserved_amount,
);

fn code(v: &Value) -> &str {
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {v}"))
}

async fn auth_401_403_404(s: &Server) {
    let (_, key) = project(s).await;
    for bad in [None, Some("nope"), Some("bsk_0000000000000000")] {
        let (st, v) = send(&s.app, "GET", "/v1/budgets", bad, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
        assert_eq!(code(&v), "unauthorized");
        let (st, _) = send(&s.app, "POST", "/v1/reserve", bad, Some(&reserve_body(1))).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    // A project key cannot administer.
    let (st, v) = send(
        &s.app,
        "POST",
        "/v1/projects",
        Some(&key),
        Some(&json!({"name": "x"})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, v) = send(
        &s.app,
        "POST",
        "/v1/budgets",
        Some(&key),
        Some(&json!({"name": "b", "limit_usd": 1, "window": "day"})),
    )
    .await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    // An admin key names the project; an unknown one is 404.
    let (st, v) = send(&s.app, "GET", "/v1/spend", Some(&s.admin), None).await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "missing_project"));
    let (st, v) = send(
        &s.app,
        "GET",
        "/v1/spend?project=prj_nope",
        Some(&s.admin),
        None,
    )
    .await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (st, v) = send(
        &s.app,
        "POST",
        "/v1/projects/prj_nope/keys",
        Some(&s.admin),
        Some(&json!({})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v) = send(&s.app, "GET", "/healthz", None, None).await;
    assert_eq!((st, &v["status"]), (StatusCode::OK, &json!("ok")));
}

async fn projects_are_isolated(s: &Server) {
    let (a, key_a) = project(s).await;
    let (b, key_b) = project(s).await;
    let bud_b = budget(
        s,
        &b,
        json!({"name": "daily", "limit_nanos": 1000, "window": "day"}),
    )
    .await;
    budget(
        s,
        &a,
        json!({"name": "daily", "limit_nanos": 1000, "window": "day"}),
    )
    .await;
    let bid = bud_b["id"].as_str().unwrap();

    // A cannot see B's budget, by id or by naming B.
    let (st, _) = send(
        &s.app,
        "GET",
        &format!("/v1/budgets/{bid}"),
        Some(&key_a),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    for path in ["/v1/budgets", "/v1/spend"] {
        let (st, v) = send(
            &s.app,
            "GET",
            &format!("{path}?project={b}"),
            Some(&key_a),
            None,
        )
        .await;
        assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    }
    let (st, _) = send(
        &s.app,
        "POST",
        &format!("/v1/reserve?project={b}"),
        Some(&key_a),
        Some(&reserve_body(1)),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // A's reservations land in A's budget only.
    let (st, r) = send(
        &s.app,
        "POST",
        "/v1/reserve",
        Some(&key_a),
        Some(&reserve_body(600)),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(
        spend_of(s, &key_a, "daily", None).await["reserved_nanos"],
        600
    );
    assert_eq!(
        spend_of(s, &key_b, "daily", None).await["reserved_nanos"],
        0
    );

    // B's reservation cannot be settled or released with A's key.
    let (_, rb) = send(
        &s.app,
        "POST",
        "/v1/reserve",
        Some(&key_b),
        Some(&reserve_body(300)),
    )
    .await;
    let rid = rb["id"].as_str().unwrap();
    let (st, v) = send(
        &s.app,
        "POST",
        "/v1/settle",
        Some(&key_a),
        Some(&json!({"items": [{"id": rid, "actual_nanos": 0}]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["results"][0]["error"]["code"], "not_found", "{v}");
    for path in ["/v1/release", "/v1/extend"] {
        let (st, _) = send(
            &s.app,
            "POST",
            path,
            Some(&key_a),
            Some(&json!({"id": rid})),
        )
        .await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(
        spend_of(s, &key_b, "daily", None).await["reserved_nanos"],
        300
    );
    // A's own listing shows only A's budget.
    let (_, list) = send(&s.app, "GET", "/v1/budgets", Some(&key_a), None).await;
    assert_eq!(list["budgets"].as_array().unwrap().len(), 1);
    assert_ne!(list["budgets"][0]["id"], bud_b["id"]);
}

async fn client_mistakes_are_4xx_json(s: &Server) {
    let (p, key) = project(s).await;
    budget(
        s,
        &p,
        json!({"name": "daily", "limit_usd": 5, "window": "day"}),
    )
    .await;
    let post = |body: Vec<u8>| {
        send_raw(
            &s.app,
            "POST",
            "/v1/reserve",
            Some(&key),
            Some("application/json"),
            Some(body),
        )
    };

    let (st, v) = post(b"{not json".to_vec()).await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "malformed_json"));
    let (st, v) = post(br#"{"provider":"openai","model":"m","amount_usd":NaN}"#.to_vec()).await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "malformed_json"));
    let (st, v) = post(br#"{"provider":"openai","model":"m","amount_nanos":"10"}"#.to_vec()).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
    );
    let (st, v) = send_raw(
        &s.app,
        "POST",
        "/v1/reserve",
        Some(&key),
        None,
        Some(b"{}".to_vec()),
    )
    .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );

    let bad_bodies = [
        json!({"provider": "openai", "model": "m", "amount_nanos": -1}),
        json!({"provider": "openai", "model": "m", "amount_usd": -0.5}),
        json!({"provider": "openai", "model": "m", "amount_usd": 1e300}),
        json!({"provider": "openai", "model": "m"}),
        json!({"provider": "openai", "model": "m", "amount_nanos": 1, "amount_usd": 1}),
        json!({"provider": "openai", "model": "m", "amount_nanos": 1, "ttl_ms": 0}),
        json!({"provider": "openai", "model": "m", "amount_nanos": 1, "tags": {"bad key": "x"}}),
        json!({"provider": "openai", "model": "m", "amount_nanos": 1, "tags": {"k": "v".repeat(300)}}),
        json!({"provider": "openai", "model": "x".repeat(300), "amount_nanos": 1}),
        json!({"provider": "openai", "model": "m", "amount_nanos": 1,
               "tags": (0..33).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
        json!({"provider": "openai", "model": "m", "amount_nanos": 1,
               "tags": (0..10_000).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
    ];
    for body in &bad_bodies {
        let (st, v) = send(&s.app, "POST", "/v1/reserve", Some(&key), Some(body)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body:.200} -> {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
    }
    let (st, v) = send(
        &s.app,
        "POST",
        "/v1/reserve",
        Some(&key),
        Some(&json!({"provider": 1})),
    )
    .await;
    assert!(st.is_client_error(), "{v}");

    // Bodies over 1 MiB.
    let huge = format!(
        r#"{{"provider":"openai","model":"m","amount_nanos":1,"x":"{}"}}"#,
        "a".repeat(2 << 20)
    );
    let (st, v) = post(huge.into_bytes()).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );

    // Settlements: a missing actual is not a release; negative amounts; empty or huge batches.
    for body in [
        json!({"items": [{"id": "res_x"}]}),
        json!({"items": [{"id": "res_x", "actual_nanos": 1.5}]}),
        json!([{"id": "res_x", "actual_nanos": 1}]),
    ] {
        let (st, v) = send(&s.app, "POST", "/v1/settle", Some(&key), Some(&body)).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {v}");
    }
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"id": format!("r{i}"), "actual_nanos": 1}))
        .collect();
    for body in [
        json!({"items": [{"id": "res_x", "actual_nanos": -5}]}),
        json!({"items": []}),
        json!({"items": many}),
    ] {
        let (st, v) = send(&s.app, "POST", "/v1/settle", Some(&key), Some(&body)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    }

    // Budgets.
    for body in [
        json!({"name": "b", "limit_usd": -1, "window": "day"}),
        json!({"name": "b", "limit_usd": 1, "window": "daily"}),
        json!({"name": "b", "limit_usd": 1, "window": "day", "mode": "warn"}),
        json!({"name": "", "limit_usd": 1, "window": "day"}),
        json!({"limit_usd": 1, "window": "day"}),
        json!({"name": "b", "window": "day"}),
        json!({"name": "b", "limit_usd": 1, "window": "day", "match": {"bad key": "x"}}),
    ] {
        let (st, v) = send(
            &s.app,
            "POST",
            &format!("/v1/budgets?project={p}"),
            Some(&s.admin),
            Some(&body),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body} -> {v}");
    }

    // Garbage on every route that takes a body: never a 5xx, and a refusal has our error shape.
    // (serde reads `[]` as a struct with every field absent, which `{name?}` bodies accept.)
    let routes = [
        ("POST", "/v1/reserve".to_owned()),
        ("POST", "/v1/settle".to_owned()),
        ("POST", "/v1/release".to_owned()),
        ("POST", "/v1/extend".to_owned()),
        ("POST", "/v1/usage".to_owned()),
        ("POST", format!("/v1/budgets?project={p}")),
        ("PUT", format!("/v1/budgets/bud_x?project={p}")),
        ("POST", "/v1/projects".to_owned()),
        ("POST", format!("/v1/projects/{p}/keys")),
    ];
    let garbage: [&[u8]; 6] = [
        b"\x00\xff\xfe",
        b"",
        b"null",
        b"[]",
        b"{\"id\": {}}",
        b"1e999999",
    ];
    for (method, path) in &routes {
        for body in garbage {
            let key = if path.contains("project") {
                &s.admin
            } else {
                &key
            };
            let (st, v) = send_raw(
                &s.app,
                method,
                path,
                Some(key),
                Some("application/json"),
                Some(body.to_vec()),
            )
            .await;
            assert!(
                !st.is_server_error(),
                "{method} {path} {body:?} -> {st} {v}"
            );
            if !st.is_success() {
                assert!(
                    v["error"]["code"].is_string(),
                    "{method} {path} {body:?} -> {v}"
                );
            }
        }
    }

    // Unknown routes and methods.
    let (st, v) = send(&s.app, "GET", "/v1/nope", Some(&key), None).await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (st, v) = send(&s.app, "GET", "/v1/reserve", Some(&key), None).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );

    // Still serving, and nothing was reserved by any of it.
    let (st, _) = send(
        &s.app,
        "POST",
        "/v1/reserve",
        Some(&key),
        Some(&reserve_body(1)),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(spend_of(s, &key, "daily", None).await["reserved_nanos"], 1);
}

async fn reserve_refuse_settle_idempotent(s: &Server) {
    let (p, key) = project(s).await;
    let b = budget(
        s,
        &p,
        json!({"name": "daily", "limit_nanos": 1000, "window": "day"}),
    )
    .await;
    budget(
        s,
        &p,
        json!({"name": "watch", "limit_nanos": 1, "window": "day", "mode": "notify"}),
    )
    .await;

    let (st, r) = send(
        &s.app,
        "POST",
        "/v1/reserve",
        Some(&key),
        Some(&reserve_body(600)),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(
        (
            r["amount_nanos"].as_i64(),
            r["capped"].as_bool(),
            r["budgets"].as_i64()
        ),
        (Some(600), Some(false), Some(2))
    );
    assert!(r["expires_at_ms"].as_i64().unwrap() > 0);
    let id = r["id"].as_str().unwrap().to_owned();

    // Does not fit: 409 with the budget that refused, nothing reserved.
    let (st, v) = send(
        &s.app,
        "POST",
        "/v1/reserve",
        Some(&key),
        Some(&reserve_body(401)),
    )
    .await;
    assert_eq!((st, code(&v)), (StatusCode::CONFLICT, "budget_exceeded"));
    let refused = &v["error"]["budget"];
    assert_eq!(refused["id"], b["id"]);
    assert_eq!(refused["name"], "daily");
    assert_eq!(
        (
            refused["limit_nanos"].as_i64(),
            refused["reserved_nanos"].as_i64()
        ),
        (Some(1000), Some(600))
    );
    assert_eq!(refused["requested_nanos"], 401);
    assert!(refused["resets_at"].as_str().is_some());
    assert!(v["error"]["message"].as_str().unwrap().contains("daily"));
    let spend = spend_of(s, &key, "daily", None).await;
    assert_eq!(
        (
            spend["spent_nanos"].as_i64(),
            spend["reserved_nanos"].as_i64()
        ),
        (Some(0), Some(600))
    );

    // Settle, then settle again: the second changes nothing and reports the first.
    let settle = |actual: i64| json!({"items": [{"id": id, "actual_nanos": actual}]});
    let (st, v) = send(&s.app, "POST", "/v1/settle", Some(&key), Some(&settle(400))).await;
    assert_eq!(st, StatusCode::OK);
    let first = &v["results"][0];
    assert_eq!(
        (first["status"].as_str(), first["applied"].as_bool()),
        (Some("settled"), Some(true))
    );
    assert_eq!(
        (
            first["refunded_nanos"].as_i64(),
            first["actual_nanos"].as_i64()
        ),
        (Some(200), Some(400))
    );
    let (_, v) = send(&s.app, "POST", "/v1/settle", Some(&key), Some(&settle(999))).await;
    let again = &v["results"][0];
    assert_eq!(
        (again["applied"].as_bool(), again["actual_nanos"].as_i64()),
        (Some(false), Some(400))
    );
    let (st, v) = send(
        &s.app,
        "POST",
        "/v1/release",
        Some(&key),
        Some(&json!({"id": id})),
    )
    .await;
    assert_eq!(
        (st, v["status"].as_str(), v["applied"].as_bool()),
        (StatusCode::OK, Some("settled"), Some(false))
    );

    let spend = spend_of(s, &key, "daily", None).await;
    assert_eq!(
        (
            spend["spent_nanos"].as_i64(),
            spend["reserved_nanos"].as_i64()
        ),
        (Some(400), Some(0))
    );
    let watch = spend_of(s, &key, "watch", None).await;
    assert_eq!(
        watch["spent_nanos"], 400,
        "notify budgets count but never block"
    );

    // The refund is usable: 600 fits again.
    let (st, _) = send(
        &s.app,
        "POST",
        "/v1/reserve",
        Some(&key),
        Some(&reserve_body(600)),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
}

async fn fit_release_batch_overrun(s: &Server) {
    let (p, key) = project(s).await;
    budget(
        s,
        &p,
        json!({"name": "daily", "limit_usd": 0.000001, "window": "day"}),
    )
    .await; // 1000 nanos
    let (_, first) = send(
        &s.app,
        "POST",
        "/v1/reserve",
        Some(&key),
        Some(&reserve_body(400)),
    )
    .await;

    // fit: reserves the headroom (600) and says the call must be capped.
    let mut body = reserve_body(1000);
    body["policy"] = json!("fit");
    body["min_nanos"] = json!(100);
    let (st, fit) = send(&s.app, "POST", "/v1/reserve", Some(&key), Some(&body)).await;
    assert_eq!(st, StatusCode::OK, "{fit}");
    assert_eq!(
        (fit["amount_nanos"].as_i64(), fit["capped"].as_bool()),
        (Some(600), Some(true))
    );
    // ...but not when the headroom is under the minimum.
    body["min_nanos"] = json!(1);
    let (st, _) = send(&s.app, "POST", "/v1/reserve", Some(&key), Some(&body)).await;
    assert_eq!(st, StatusCode::CONFLICT);

    // One batch: release one, overrun another, an unknown id; each gets its own result.
    let (st, v) = send(
        &s.app,
        "POST",
        "/v1/settle",
        Some(&key),
        Some(&json!({"items": [
            {"id": fit["id"], "actual_nanos": null},
            {"id": "res_unknown", "actual_nanos": 5},
            {"id": first["id"], "actual_nanos": 450},
        ]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let r = v["results"].as_array().unwrap();
    assert_eq!(
        (r[0]["status"].as_str(), r[0]["actual_nanos"].as_i64()),
        (Some("released"), Some(0))
    );
    assert_eq!(r[1]["error"]["code"], "not_found");
    assert_eq!(
        (r[2]["status"].as_str(), r[2]["overrun_nanos"].as_i64()),
        (Some("settled"), Some(50))
    );
    let spend = spend_of(s, &key, "daily", None).await;
    assert_eq!(
        (
            spend["spent_nanos"].as_i64(),
            spend["reserved_nanos"].as_i64(),
            spend["overrun_nanos"].as_i64()
        ),
        (Some(450), Some(0), Some(50))
    );
    // Extending: a live reservation renews; an ended one says so; bad TTLs and unknown ids fail.
    let (_, live) = send(
        &s.app,
        "POST",
        "/v1/reserve",
        Some(&key),
        Some(&reserve_body(1)),
    )
    .await;
    let (st, v) = send(
        &s.app,
        "POST",
        "/v1/extend",
        Some(&key),
        Some(&json!({"id": live["id"], "ttl_ms": 60_000})),
    )
    .await;
    assert_eq!(
        (st, v["active"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{v}"
    );
    let (st, v) = send(
        &s.app,
        "POST",
        "/v1/extend",
        Some(&key),
        Some(&json!({"id": first["id"]})),
    )
    .await;
    assert_eq!(
        (st, v["active"].as_bool()),
        (StatusCode::OK, Some(false)),
        "{v}"
    );
    let (st, _) = send(
        &s.app,
        "POST",
        "/v1/extend",
        Some(&key),
        Some(&json!({"id": live["id"], "ttl_ms": -1})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = send(
        &s.app,
        "POST",
        "/v1/extend",
        Some(&key),
        Some(&json!({"id": "res_unknown"})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Releasing an unknown id is 404.
    let (st, v) = send(
        &s.app,
        "POST",
        "/v1/release",
        Some(&key),
        Some(&json!({"id": "res_unknown"})),
    )
    .await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
}

async fn budgets_crud(s: &Server) {
    let (p, key) = project(s).await;
    let q = format!("?project={p}");
    let created = budget(
        s,
        &p,
        json!({"name": "daily", "limit_usd": 5, "window": "day", "match": {"team": "search"}}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["limit_nanos"], 5_000_000_000_i64);
    assert_eq!(created["match"], json!({"team": "search"}));
    assert_eq!(created["mode"], "block");

    // POST of an existing name updates it (200, same id).
    let (st, v) = send(
        &s.app,
        "POST",
        &format!("/v1/budgets{q}"),
        Some(&s.admin),
        Some(&json!({"name": "daily", "limit_usd": 6, "window": "day"})),
    )
    .await;
    assert_eq!((st, v["id"].as_str()), (StatusCode::OK, Some(id.as_str())));

    // Project keys read; admins read with ?project=.
    let (st, v) = send(
        &s.app,
        "GET",
        &format!("/v1/budgets/{id}"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(
        (st, v["limit_nanos"].as_i64()),
        (StatusCode::OK, Some(6_000_000_000))
    );
    let (st, v) = send(
        &s.app,
        "GET",
        &format!("/v1/budgets{q}"),
        Some(&s.admin),
        None,
    )
    .await;
    assert_eq!(
        (st, v["budgets"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(1))
    );

    // PUT replaces the declaration; the name stays.
    let (st, v) = send(
        &s.app,
        "PUT",
        &format!("/v1/budgets/{id}{q}"),
        Some(&s.admin),
        Some(&json!({"limit_nanos": 7, "window": "week", "mode": "notify"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (v["name"].as_str(), v["window"].as_str(), v["mode"].as_str()),
        (Some("daily"), Some("week"), Some("notify"))
    );
    let (st, v) = send(
        &s.app,
        "PUT",
        &format!("/v1/budgets/{id}{q}"),
        Some(&s.admin),
        Some(&json!({"name": "renamed", "limit_nanos": 7, "window": "week"})),
    )
    .await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "invalid_input"));
    let (st, _) = send(
        &s.app,
        "PUT",
        &format!("/v1/budgets/{id}"),
        Some(&key),
        Some(&json!({"limit_nanos": 1, "window": "day"})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = send(
        &s.app,
        "PUT",
        &format!("/v1/budgets/bud_nope{q}"),
        Some(&s.admin),
        Some(&json!({"limit_nanos": 1, "window": "day"})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // DELETE, then it is gone.
    let (st, _) = send(
        &s.app,
        "DELETE",
        &format!("/v1/budgets/{id}"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, v) = send(
        &s.app,
        "DELETE",
        &format!("/v1/budgets/{id}{q}"),
        Some(&s.admin),
        None,
    )
    .await;
    assert_eq!((st, v), (StatusCode::NO_CONTENT, Value::Null));
    let (st, _) = send(
        &s.app,
        "GET",
        &format!("/v1/budgets/{id}"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = send(
        &s.app,
        "DELETE",
        &format!("/v1/budgets/{id}{q}"),
        Some(&s.admin),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, v) = send(&s.app, "GET", "/v1/budgets", Some(&key), None).await;
    assert_eq!(v["budgets"], json!([]));
}

async fn templates_count_per_value(s: &Server) {
    let (p, key) = project(s).await;
    budget(s, &p, json!({"name": "per-tenant", "limit_nanos": 100, "window": "month", "match": {"tenant_id": "*"}})).await;
    let call = |tenant: &str, amount: i64| json!({"provider": "openai", "model": "gpt-4o", "tags": {"tenant_id": tenant}, "amount_nanos": amount});
    let (st, _) = send(
        &s.app,
        "POST",
        "/v1/reserve",
        Some(&key),
        Some(&call("acme", 100)),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = send(
        &s.app,
        "POST",
        "/v1/reserve",
        Some(&key),
        Some(&call("acme", 1)),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _) = send(
        &s.app,
        "POST",
        "/v1/reserve",
        Some(&key),
        Some(&call("globex", 60)),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    // Calls without the key do not match the template.
    let (st, _) = send(
        &s.app,
        "POST",
        "/v1/reserve",
        Some(&key),
        Some(&json!({"provider": "openai", "model": "gpt-4o", "amount_nanos": 1000})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        spend_of(s, &key, "per-tenant", Some("tenant_id=acme")).await["reserved_nanos"],
        100
    );
    let globex = spend_of(s, &key, "per-tenant", Some("tenant_id=globex")).await;
    assert_eq!(globex["reserved_nanos"], 60);
    assert_eq!(globex["window"], "month");
    assert!(globex["resets_at"].as_str().is_some());
}

async fn expiry_settles_at_reserved_amount(s: &Server) {
    let (p, key) = project(s).await;
    budget(
        s,
        &p,
        json!({"name": "daily", "limit_nanos": 1000, "window": "day"}),
    )
    .await;
    let mut body = reserve_body(300);
    body["ttl_ms"] = json!(1);
    let (st, r) = send(&s.app, "POST", "/v1/reserve", Some(&key), Some(&body)).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // What the background sweeper runs (other tests' overdue reservations may expire too).
    assert!(s.state.store.expire().await.unwrap() >= 1);
    let spend = spend_of(s, &key, "daily", None).await;
    assert_eq!(
        (
            spend["spent_nanos"].as_i64(),
            spend["reserved_nanos"].as_i64()
        ),
        (Some(300), Some(0))
    );
    // A late settlement replaces what expiry counted by the truth.
    let (_, v) = send(
        &s.app,
        "POST",
        "/v1/settle",
        Some(&key),
        Some(&json!({"items": [{"id": r["id"], "actual_nanos": 120}]})),
    )
    .await;
    assert_eq!(
        (
            v["results"][0]["status"].as_str(),
            v["results"][0]["applied"].as_bool()
        ),
        (Some("settled"), Some(true))
    );
    assert_eq!(spend_of(s, &key, "daily", None).await["spent_nanos"], 120);
}
