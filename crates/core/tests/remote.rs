//! Server mode in Rust, against a small stand-in for bursora-server (axum on loopback) whose
//! behaviour the test switches: answering, failing with 503, or hanging. Checks what reaches the
//! server — settlements, usage of calls admitted fail-open — and that nothing waits on it once
//! the circuit is open.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bursora_core::Error;
use bursora_core::budget::Tags;
use bursora_core::estimate::Endpoint;
use bursora_core::guard::{Admission, CallEnding, Guard, GuardOptions};
use parking_lot::Mutex;
use serde_json::{Value, json};

const UP: u8 = 0;
const FAILING: u8 = 1;
const HUNG: u8 = 2;

#[derive(Default)]
struct Fake {
    mode: AtomicU8,
    reserves: Mutex<Vec<Value>>,
    settles: Mutex<Vec<Value>>,
    usage: Mutex<Vec<Value>>,
}

async fn gate(fake: &Fake) -> Option<Response> {
    match fake.mode.load(Ordering::SeqCst) {
        FAILING => Some(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": {"code": "unavailable", "message": "store down"}})),
            )
                .into_response(),
        ),
        HUNG => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            None
        }
        _ => None,
    }
}

async fn reserve(State(f): State<Arc<Fake>>, Json(body): Json<Value>) -> Response {
    if let Some(r) = gate(&f).await {
        return r;
    }
    f.reserves.lock().push(body.clone());
    Json(json!({"id": body["id"], "amount_nanos": body["amount_nanos"], "capped": false, "budgets": 1,
        "expires_at_ms": 0, "replayed": false, "status": "active"}))
    .into_response()
}

async fn batch(f: &Fake, body: Value, into: &Mutex<Vec<Value>>) -> Response {
    if let Some(r) = gate(f).await {
        return r;
    }
    let items = body["items"].as_array().cloned().unwrap_or_default();
    let results: Vec<Value> = items
        .iter()
        .map(|i| json!({"id": i["id"], "applied": true}))
        .collect();
    into.lock().extend(items);
    Json(json!({ "results": results })).into_response()
}

async fn settle(State(f): State<Arc<Fake>>, Json(body): Json<Value>) -> Response {
    batch(&f, body, &f.settles).await
}

async fn usage(State(f): State<Arc<Fake>>, Json(body): Json<Value>) -> Response {
    batch(&f, body, &f.usage).await
}

async fn budgets(State(f): State<Arc<Fake>>) -> Response {
    if let Some(r) = gate(&f).await {
        return r;
    }
    Json(json!({"budgets": []})).into_response()
}

/// Starts the fake on its own runtime thread; returns its URL.
fn start_fake(fake: Arc<Fake>) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = Router::new()
                .route("/v1/reserve", post(reserve))
                .route("/v1/settle", post(settle))
                .route("/v1/usage", post(usage))
                .route("/v1/budgets", get(budgets))
                .with_state(fake);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

fn remote_guard(url: &str, fail_mode: &str) -> Arc<Guard> {
    let options = GuardOptions::from_json(
        &json!({"endpoint": url, "apiKey": "bsk_test", "failMode": fail_mode, "decisionTimeoutMs": 300}).to_string(),
    )
    .unwrap();
    Arc::new(Guard::new(&options).unwrap())
}

fn chat() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}], "max_completion_tokens": 20})
}

/// Admits one call and waits for the decision; returns it and how long it took.
fn admit(g: &Arc<Guard>) -> (bursora_core::Result<Admission>, Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    let start = Instant::now();
    g.admit_async(
        Endpoint::ChatCompletions,
        &chat(),
        &Tags::new([("tenant_id", "acme")]).unwrap(),
        None,
        None,
        move |r| {
            let _ = tx.send(r);
        },
    );
    let r = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a decision");
    (r, start.elapsed())
}

fn usage_response() -> Value {
    json!({"usage": {"prompt_tokens": 10, "completion_tokens": 5}})
}

/// gpt-4o-mini: 10 × 150 + 5 × 600 nano-USD.
const COST: i64 = 4_500;

#[test]
fn reserved_calls_settle_on_the_server_with_their_exact_cost() {
    let fake = Arc::new(Fake::default());
    let url = start_fake(fake.clone());
    let g = remote_guard(&url, "closed");
    let (a, _) = admit(&g);
    let a = a.unwrap();
    assert!(!a.unreserved);
    let sent = fake.reserves.lock()[0].clone();
    assert_eq!(sent["id"], a.id.as_str(), "the id is chosen by the SDK");
    assert_eq!(sent["tags"], json!({"tenant_id": "acme"}));
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(sent["amount_nanos"], a.reserved.nanos());
    g.finish(&a.id, CallEnding::Response(&usage_response()));
    assert_eq!(g.flush(), 0);
    let settles = fake.settles.lock().clone();
    assert_eq!(settles.len(), 1);
    assert_eq!(settles[0]["id"], a.id.as_str());
    assert_eq!(settles[0]["actual_nanos"], COST);
    assert_eq!(settles[0]["input_tokens"], 10);
    g.shutdown();
}

#[test]
fn fail_open_usage_waits_for_the_server_and_arrives_once() {
    let fake = Arc::new(Fake::default());
    let url = start_fake(fake.clone());
    let g = remote_guard(&url, "open");
    fake.mode.store(FAILING, Ordering::SeqCst);
    let (first, _) = admit(&g);
    let first = first.unwrap();
    assert!(
        first.unreserved,
        "503: fail-open admits the call unreserved"
    );
    let mut ids = vec![first.id.clone()];
    for _ in 0..5 {
        let (a, took) = admit(&g);
        let a = a.unwrap();
        assert!(a.unreserved);
        assert!(
            took < Duration::from_millis(100),
            "the circuit is open: no wait ({took:?})"
        );
        ids.push(a.id);
    }
    for id in &ids {
        g.finish(id, CallEnding::Response(&usage_response()));
    }
    // The server is away: flush resolves without delivering.
    assert!(g.flush() > 0);
    assert!(fake.usage.lock().is_empty());
    fake.mode.store(UP, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(15);
    while fake.usage.lock().len() < ids.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(g.flush(), 0);
    let usage = fake.usage.lock().clone();
    assert_eq!(usage.len(), ids.len(), "each call's usage exactly once");
    for (u, id) in usage.iter().zip(&ids) {
        assert_eq!(u["id"], id.as_str());
        assert_eq!(u["actual_nanos"], COST);
        assert_eq!(u["tags"], json!({"tenant_id": "acme"}));
    }
    // Back up: the next call is reserved again.
    let (a, _) = admit(&g);
    assert!(!a.unwrap().unreserved);
    g.shutdown();
}

#[test]
fn hung_server_costs_one_timeout_then_fail_closed_answers_at_once() {
    let fake = Arc::new(Fake::default());
    let url = start_fake(fake.clone());
    fake.mode.store(HUNG, Ordering::SeqCst);
    let g = remote_guard(&url, "closed");
    let (r, took) = admit(&g);
    assert!(matches!(r, Err(Error::Unavailable { .. })), "{r:?}");
    assert!(
        took >= Duration::from_millis(290),
        "the first decision waited the timeout ({took:?})"
    );
    for _ in 0..5 {
        let (r, took) = admit(&g);
        let Err(Error::Unavailable { message }) = r else {
            panic!("{r:?}")
        };
        assert!(message.contains("failMode is \"closed\""), "{message}");
        assert!(took < Duration::from_millis(100), "{took:?}");
    }
    // The release of the reservation the first reserve may have made waits for the server.
    fake.mode.store(UP, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(15);
    while fake.settles.lock().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let settles = fake.settles.lock().clone();
    assert_eq!(settles.len(), 1);
    assert_eq!(settles[0]["actual_nanos"], Value::Null, "released");
    g.shutdown();
}

#[test]
fn server_mode_options_are_checked() {
    for (options, needle) in [
        (json!({"endpoint": "http://127.0.0.1:1"}), "API key"),
        (json!({"endpoint": "nope", "apiKey": "k"}), "not a URL"),
        (
            json!({"endpoint": "http://127.0.0.1:1", "apiKey": "k", "failMode": "maybe"}),
            "failMode",
        ),
        (
            json!({"endpoint": "http://127.0.0.1:1", "apiKey": "k", "db": "x.db"}),
            "embedded",
        ),
        (
            json!({"endpoint": "http://127.0.0.1:1", "apiKey": "k", "decisionTimeoutMs": 0}),
            "decisionTimeoutMs",
        ),
    ] {
        let o = GuardOptions::from_json(&options.to_string()).unwrap();
        let err = Guard::new(&o).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
        assert!(
            err.to_string().contains(needle),
            "{err} should mention {needle}"
        );
    }
}

/// HTTPS works: a TLS server with a certificate nobody trusts is rejected for exactly that
/// reason (the handshake ran), not for a missing TLS stack. Uses the `openssl` command.
#[test]
fn https_endpoints_verify_the_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let g = remote_guard(&format!("https://127.0.0.1:{port}"), "closed");
    let (r, _) = admit(&g);
    let _ = server.kill();
    let _ = server.wait();
    let Err(Error::Unavailable { message }) = r else {
        panic!("{r:?}")
    };
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    g.shutdown();
}
