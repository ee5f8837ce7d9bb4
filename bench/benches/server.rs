//! `bursora-server` over loopback HTTP, on SQLite and on Postgres:
//! - the round trip of `POST /v1/reserve` from one sequential client (p50, p99);
//! - sustained reserve + settle with 64 concurrent clients on one hot budget, settlements
//!   batched (up to 1,000 items per `POST /v1/settle`) by one background task, as the SDK does;
//!   at the end `GET /v1/spend` must show exactly what was settled, or the bench fails;
//! - the same two measurements on the store alone, in process (no HTTP, no auth), and the
//!   server's own handler time from `GET /metrics`: where the round trip goes.
//!
//! `cargo bench -p bursora-bench --bench server`. The server is the release binary, built here by
//! cargo (or `BURSORA_SERVER_BIN`), started on a free loopback port with a temp data dir, or on
//! `BURSORA_TEST_DATABASE_URL` (`scripts/pg-test.sh --run cargo bench ...`) for the Postgres rows.
//! Knobs: `BENCH_RTT_CALLS` (5,000), `BENCH_CLIENTS` (64), `BENCH_SECS` (5), `BENCH_WARMUP_SECS` (1),
//! `BENCH_SERVER_ARGS` (extra `serve` flags, to compare settings), `BENCH_SKIP_INPROC=1` (HTTP only).
//! On a durable Postgres (`fsync=on`) the notes also count the cluster's WAL flushes per pair.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bursora_core::NanoUsd;
use bursora_core::budget::{BudgetSpec, CallTags, Mode, Selector, Tags};
use bursora_core::ledger::Policy;
use bursora_core::ledger::history::{SettleWith, Tokens};
use bursora_core::window::Window;
use bursora_server::Store;
use bursora_server::store::{PgStore, ReserveInput, SqliteStore};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const PG_ENV: &str = "BURSORA_TEST_DATABASE_URL";
/// Long enough for `--admin-key`; only ever used on a throwaway loopback server.
const ADMIN_KEY: &str = "bsa_bench0000000000000000000000000000000000000000000000000000000000";
const RESERVE_NANOS: i64 = 10_000;
const ACTUAL_NANOS: i64 = 7_000;
/// What the SDK sends for a call (pre-serialised: the client's JSON is not what is measured).
const RESERVE_BODY: &str = r#"{"tags":{"agent_id":"bench","tenant_id":"acme"},"provider":"openai","model":"gpt-4o-mini","amount_nanos":10000}"#;
const MAX_BATCH: usize = 1_000;
const RTT_TARGET: Duration = Duration::from_micros(300);
const RATE_TARGET: f64 = 10_000.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// CPU time (user + system) a process has used so far: `/proc/<pid>/stat`, in clock ticks of
/// 10 ms (`USER_HZ` is 100 on Linux).
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// CPU time of the test Postgres cluster (its postmaster and every process it started), when
/// `scripts/pg-test.sh` named its data directory in `BURSORA_TEST_PG_DATA`.
fn postgres_cpu_time() -> Option<Duration> {
    let data = std::env::var("BURSORA_TEST_PG_DATA").ok()?;
    let pidfile = std::fs::read_to_string(Path::new(&data).join("postmaster.pid")).ok()?;
    let postmaster = pidfile.lines().next()?.trim().to_owned();
    let mut total = cpu_time(&postmaster);
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The parent pid is the second field after the command name.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1));
        if parent == Some(postmaster.as_str()) {
            total += cpu_time(&pid);
        }
    }
    Some(total)
}

/// WAL flushes the Postgres cluster has made so far (`pg_stat_wal.wal_sync`: 0 unless `fsync` is
/// on; the figures lag by up to a second, alike at both ends of a window).
async fn wal_flushes(conn: Option<&mut sqlx::PgConnection>) -> Option<i64> {
    sqlx::query_scalar("SELECT wal_sync FROM pg_stat_wal")
        .fetch_one(conn?)
        .await
        .ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One line of the table.
struct Row {
    store: &'static str,
    scenario: String,
    p50: Option<Duration>,
    p99: Option<Duration>,
    ops: f64,
    target: String,
    met: Option<bool>,
    errors: u64,
    load: String,
}

fn us(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".into(),
        |d| format!("{:.0} µs", d.as_secs_f64() * 1e6),
    )
}

fn print_table(rows: &[Row]) {
    println!(
        "\n| store | scenario | p50 | p99 | ops/s | target | met | errors | load avg |\n|---|---|---:|---:|---:|---|---|---:|---|"
    );
    for r in rows {
        let met = match r.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "-",
        };
        println!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            r.store,
            r.scenario,
            us(r.p50),
            us(r.p99),
            r.ops,
            r.target,
            met,
            r.errors,
            r.load
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The server process

/// The release binary: `BURSORA_SERVER_BIN`, or built now by cargo (a no-op when up to date).
fn server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BURSORA_SERVER_BIN") {
        return p.into();
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "bursora-server",
            "--bin",
            "bursora-server",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("cannot run cargo to build bursora-server");
    assert!(out.status.success(), "building bursora-server failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "bursora-server")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo named no bursora-server executable")
}

/// A running `bursora-server serve`, killed on drop.
struct ServerProcess {
    child: Child,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    async fn start(bin: &Path, database_url: Option<&str>, http: &reqwest::Client) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // A port nothing listens on now; the server binds it a moment later.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = dir.path().join("server.log");
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--admin-key")
            .arg(ADMIN_KEY)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        // To compare server settings, e.g. `BENCH_SERVER_ARGS="--key-cache-ms 0"`.
        if let Ok(extra) = std::env::var("BENCH_SERVER_ARGS") {
            cmd.args(extra.split_whitespace());
        }
        let child = cmd.spawn().expect("cannot start bursora-server");
        let mut server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("bursora-server exited ({status}):\n{}", server.log_text());
            }
            let up = http
                .get(format!("{}/healthz", server.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "bursora-server did not answer /healthz within 30 s:\n{}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The API, as a client sees it

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request failed");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("response body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// A fresh project with one hot budget (every call, `total` window so no reset mid-run) and
    /// a project key for it.
    async fn project(admin: &Self) -> Self {
        let (s, p) = admin
            .send(
                reqwest::Method::POST,
                "/v1/projects",
                Some(json!({"name": "bench"})),
            )
            .await;
        assert_eq!(s, 201, "create project: {p}");
        let id = p["id"].as_str().expect("project id").to_owned();
        let (s, k) = admin
            .send(
                reqwest::Method::POST,
                &format!("/v1/projects/{id}/keys"),
                Some(json!({"name": "bench"})),
            )
            .await;
        assert_eq!(s, 201, "create key: {k}");
        let (s, b) = admin
            .send(
                reqwest::Method::POST,
                &format!("/v1/budgets?project={id}"),
                Some(json!({"name": "hot", "limit_nanos": 1_000_000_000_000_000_i64, "window": "total"})),
            )
            .await;
        assert_eq!(s, 201, "create budget: {b}");
        Self {
            http: admin.http.clone(),
            base: admin.base.clone(),
            key: k["key"].as_str().expect("key").to_owned(),
        }
    }

    /// One reservation: its id, or `None` on any error.
    async fn reserve(&self) -> Option<String> {
        let resp = self
            .http
            .post(format!("{}/v1/reserve", self.base))
            .bearer_auth(&self.key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(RESERVE_BODY)
            .send()
            .await
            .ok()?;
        if resp.status() != 200 {
            return None;
        }
        let body: Value = resp.json().await.ok()?;
        body["id"].as_str().map(str::to_owned)
    }

    /// Settles `ids` at [`ACTUAL_NANOS`] each: how many were applied.
    async fn settle(&self, ids: &[String]) -> Option<u64> {
        let items: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "actual_nanos": ACTUAL_NANOS}))
            .collect();
        let resp = self
            .http
            .post(format!("{}/v1/settle", self.base))
            .bearer_auth(&self.key)
            .json(&json!({ "items": items }))
            .send()
            .await
            .ok()?;
        if resp.status() != 200 {
            return None;
        }
        let body: Value = resp.json().await.ok()?;
        let results = body["results"].as_array()?;
        Some(
            results
                .iter()
                .filter(|r| r["status"] == "settled" && r["applied"] == true)
                .count() as u64,
        )
    }

    /// `(spent, reserved)` of the hot budget.
    async fn spend(&self) -> (i64, i64) {
        let (s, v) = self.send(reqwest::Method::GET, "/v1/spend", None).await;
        assert_eq!(s, 200, "spend: {v}");
        let b = &v["budgets"][0];
        (
            b["spent_nanos"].as_i64().expect("spent_nanos"),
            b["reserved_nanos"].as_i64().expect("reserved_nanos"),
        )
    }

    /// The server's own time in `POST /v1/reserve` so far: (sum seconds, count).
    async fn reserve_handler_time(&self) -> (f64, f64) {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        let series = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name) && l.contains("route=\"/v1/reserve\""))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (
            series("bursora_http_request_duration_seconds_sum"),
            series("bursora_http_request_duration_seconds_count"),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios over HTTP

struct RoundTrip {
    sorted: Vec<Duration>,
    errors: u64,
    /// Mean time the server spent in the handler (its `/metrics` histogram).
    handler: Duration,
    settled: u64,
}

async fn round_trip(api: &Api, calls: usize) -> RoundTrip {
    let mut ids = Vec::with_capacity(calls + calls / 10);
    let mut errors = 0;
    for _ in 0..calls / 10 {
        match api.reserve().await {
            Some(id) => ids.push(id),
            None => errors += 1,
        }
    }
    let (sum0, n0) = api.reserve_handler_time().await;
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        let r = api.reserve().await;
        times.push(start.elapsed());
        match r {
            Some(id) => ids.push(id),
            None => errors += 1,
        }
    }
    let (sum1, n1) = api.reserve_handler_time().await;
    let mut settled = 0;
    for chunk in ids.chunks(MAX_BATCH) {
        match api.settle(chunk).await {
            Some(n) => settled += n,
            None => errors += 1,
        }
    }
    times.sort_unstable();
    RoundTrip {
        sorted: times,
        errors,
        handler: Duration::from_secs_f64(((sum1 - sum0) / (n1 - n0).max(1.0)).max(0.0)),
        settled,
    }
}

struct Throughput {
    /// Reserves completed in the measured window, per second.
    reserves_per_sec: f64,
    /// Settlements applied in the measured window, per second.
    settles_per_sec: f64,
    /// Reserve latency under load.
    sorted: Vec<Duration>,
    errors: u64,
    settled: u64,
    batches: u64,
    /// CPU the server process used in the window.
    server_cpu: Duration,
    /// CPU this process (the 64 clients and the settler) used in the window.
    client_cpu: Duration,
    /// CPU the test Postgres cluster used in the window, when it is known.
    db_cpu: Option<Duration>,
    /// WAL flushes the cluster made in the window, when it is known.
    wal_flushes: Option<i64>,
}

/// `clients` tasks reserve in a loop for `warmup + secs`; one background task settles what they
/// reserved in batches of up to [`MAX_BATCH`], one request at a time, like the SDK's reporter.
async fn throughput(
    api: &Api,
    database_url: Option<&str>,
    server_pid: u32,
    clients: usize,
    warmup: Duration,
    secs: Duration,
) -> Throughput {
    let t0 = Instant::now() + warmup;
    let end = t0 + secs;
    // CPU used by the server and by this process (the clients) over the measured window.
    let mut pg = match database_url {
        Some(url) => {
            use sqlx::Connection as _;
            sqlx::PgConnection::connect(url).await.ok()
        }
        None => None,
    };
    let cpu = tokio::spawn(async move {
        let pid = server_pid.to_string();
        tokio::time::sleep_until(t0.into()).await;
        let (s0, c0, d0) = (cpu_time(&pid), cpu_time("self"), postgres_cpu_time());
        let w0 = wal_flushes(pg.as_mut()).await;
        tokio::time::sleep_until(end.into()).await;
        let db = postgres_cpu_time()
            .zip(d0)
            .map(|(d1, d0)| d1.saturating_sub(d0));
        let (server, client) = (cpu_time(&pid) - s0, cpu_time("self") - c0);
        let wal = wal_flushes(pg.as_mut())
            .await
            .zip(w0)
            .map(|(w1, w0)| w1 - w0);
        (server, client, db, wal)
    });
    let errors = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let settler = {
        let api = api.clone();
        let errors = errors.clone();
        tokio::spawn(async move {
            let (mut settled, mut in_window, mut batches) = (0u64, 0u64, 0u64);
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(id) => batch.push(id),
                        Err(_) => break,
                    }
                }
                match api.settle(&batch).await {
                    Some(n) => {
                        settled += n;
                        errors.fetch_add(batch.len() as u64 - n, Ordering::Relaxed);
                        let now = Instant::now();
                        if now >= t0 && now <= end {
                            in_window += n;
                        }
                    }
                    None => {
                        errors.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    }
                }
                batches += 1;
                batch.clear();
            }
            (settled, in_window, batches)
        })
    };
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let api = api.clone();
        let tx = tx.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let start = Instant::now();
                if start >= end {
                    break;
                }
                match api.reserve().await {
                    Some(id) => {
                        if start >= t0 {
                            times.push(start.elapsed());
                        }
                        let _ = tx.send(id);
                    }
                    None => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            times
        }));
    }
    drop(tx);
    let mut sorted = Vec::new();
    for t in tasks {
        sorted.extend(t.await.expect("client task"));
    }
    let (settled, in_window, batches) = settler.await.expect("settler task");
    let (server_cpu, client_cpu, db_cpu, wal_flushes) = cpu.await.expect("cpu sampler");
    sorted.sort_unstable();
    Throughput {
        server_cpu,
        client_cpu,
        db_cpu,
        wal_flushes,
        reserves_per_sec: sorted.len() as f64 / secs.as_secs_f64(),
        settles_per_sec: in_window as f64 / secs.as_secs_f64(),
        sorted,
        errors: errors.load(Ordering::Relaxed),
        settled,
        batches,
    }
}

// ---------------------------------------------------------------------------------------------
// The store alone, in process

fn call_tags() -> CallTags {
    CallTags {
        tags: Tags::new([("agent_id", "bench"), ("tenant_id", "acme")]).expect("tags"),
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
    }
}

async fn store_project(store: &Store) -> String {
    let project = store.create_project("bench-inproc").await.expect("project");
    let spec = BudgetSpec::new(
        "hot",
        Selector::default(),
        NanoUsd::from_nanos(1_000_000_000_000_000).expect("limit"),
        Window::Total,
        Mode::Block,
    )
    .expect("spec");
    store
        .upsert_budget(&project.id, spec)
        .await
        .expect("budget");
    project.id
}

/// The store in this process.
#[derive(Clone)]
struct InProcess {
    store: Arc<Store>,
}

impl InProcess {
    async fn reserve(&self, project: &str) -> Option<String> {
        let input = ReserveInput {
            call: call_tags(),
            amount: NanoUsd::from_nanos(RESERVE_NANOS).expect("amount"),
            policy: Policy::Block,
            ttl_ms: None,
            id: None,
        };
        self.store.reserve(project, input).await.ok().map(|r| r.id)
    }

    async fn settle(&self, project: &str, ids: Vec<String>) -> u64 {
        let items = ids
            .into_iter()
            .map(|id| SettleWith {
                id,
                actual: Some(NanoUsd::from_nanos(ACTUAL_NANOS).expect("actual")),
                tokens: Tokens::default(),
            })
            .collect();
        self.store
            .settle_batch(project, items)
            .await
            .map(|r| {
                r.iter()
                    .filter(|s| s.as_ref().is_ok_and(|s| s.applied))
                    .count() as u64
            })
            .unwrap_or(0)
    }
}

/// `reserve` alone: sequential p50/p99, then `clients` concurrent tasks for `secs` (reserves
/// per second; settled afterwards, unmeasured, and the counter checked like over HTTP).
async fn store_alone(
    name: &str,
    store: InProcess,
    calls: usize,
    clients: usize,
    secs: Duration,
) -> (Vec<Duration>, f64) {
    let project = store_project(&store.store).await;
    let mut ids = Vec::new();
    let mut times = Vec::with_capacity(calls);
    for i in 0..calls + calls / 10 {
        let start = Instant::now();
        let id = store.reserve(&project).await.expect("reserve");
        if i >= calls / 10 {
            times.push(start.elapsed());
        }
        ids.push(id);
    }
    times.sort_unstable();
    let end = Instant::now() + secs;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let store = store.clone();
        let project = project.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            while Instant::now() < end {
                ids.extend(store.reserve(&project).await);
            }
            ids
        }));
    }
    let mut concurrent = 0;
    for t in tasks {
        let got = t.await.expect("store task");
        concurrent += got.len();
        ids.extend(got);
    }
    let mut settled = 0;
    for chunk in ids.chunks(MAX_BATCH) {
        settled += store.settle(&project, chunk.to_vec()).await;
    }
    let status = store.store.status(&project).await.expect("status");
    let expected = i64::try_from(settled).expect("count") * ACTUAL_NANOS;
    assert!(
        settled == ids.len() as u64
            && status[0].spent.nanos() == expected
            && status[0].reserved.is_zero(),
        "{name}: {} reserved, {settled} settled; the counter shows spent {:?}, reserved {:?}",
        ids.len(),
        status[0].spent,
        status[0].reserved
    );
    (times, concurrent as f64 / secs.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------

struct Config {
    calls: usize,
    clients: usize,
    warmup: Duration,
    secs: Duration,
}

async fn run_store(
    name: &'static str,
    bin: &Path,
    database_url: Option<&str>,
    cfg: &Config,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    let http = // The workspace's builder: reqwest is built without a TLS provider of its own.
    bursora_core::remote::http_client()
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .expect("http client");
    let server = ServerProcess::start(bin, database_url, &http).await;
    let admin = Api {
        http,
        base: server.base.clone(),
        key: ADMIN_KEY.to_owned(),
    };
    let api = Api::project(&admin).await;
    // For `perf record -p` while it runs.
    eprintln!("{name}: bursora-server pid {}", server.child.id());

    let rt = round_trip(&api, cfg.calls).await;
    let p50 = percentile(&rt.sorted, 0.50);
    let mean =
        rt.sorted.iter().sum::<Duration>() / u32::try_from(rt.sorted.len().max(1)).unwrap_or(1);
    rows.push(Row {
        store: name,
        scenario: "`POST /v1/reserve` round trip, 1 client".into(),
        p50: Some(p50),
        p99: Some(percentile(&rt.sorted, 0.99)),
        ops: 1.0 / mean.as_secs_f64(),
        target: "p50 ≤ 300 µs".into(),
        met: Some(p50 <= RTT_TARGET),
        errors: rt.errors,
        load: load_avg(),
    });

    let tp = throughput(
        &api,
        database_url,
        server.child.id(),
        cfg.clients,
        cfg.warmup,
        cfg.secs,
    )
    .await;
    let pairs = tp.reserves_per_sec.min(tp.settles_per_sec);
    rows.push(Row {
        store: name,
        scenario: format!(
            "reserve + settle, {} clients, 1 hot budget, {:?}",
            cfg.clients, cfg.secs
        ),
        p50: Some(percentile(&tp.sorted, 0.50)),
        p99: Some(percentile(&tp.sorted, 0.99)),
        ops: pairs,
        target: "≥ 10,000 pairs/s".into(),
        met: Some(pairs >= RATE_TARGET),
        errors: tp.errors,
        load: load_avg(),
    });

    // Every settlement the server applied, and nothing else, is in the budget.
    let expected = i64::try_from(rt.settled + tp.settled).expect("count") * ACTUAL_NANOS;
    let (spent, reserved) = api.spend().await;
    assert!(
        spent == expected && reserved == 0,
        "{name}: GET /v1/spend shows spent {spent} and reserved {reserved} nano-USD; the client settled {expected} and left nothing reserved"
    );
    let window_pairs = pairs * cfg.secs.as_secs_f64();
    let per_pair = |d: Duration| d.as_secs_f64() * 1e6 / window_pairs.max(1.0);
    let (server_us, client_us) = (per_pair(tp.server_cpu), per_pair(tp.client_cpu));
    notes.push(format!(
        "{name}: reserves {:.0}/s, settlements {:.0}/s in {} batches (mean {:.0} items); \
         spend check: spent {spent} = settled {expected} nano-USD, reserved 0. \
         Round trip: the server's own time in `POST /v1/reserve` (its `/metrics`) is {:.0} µs of \
         a {:.0} µs mean. Under load, CPU per reserve+settle pair: server {server_us:.0} µs, \
         clients {client_us:.0} µs; 2 cores would carry at most {:.0} pairs/s with the clients on \
         the same machine, {:.0}/s for the server alone",
        tp.reserves_per_sec,
        tp.settles_per_sec,
        tp.batches,
        tp.settled as f64 / tp.batches.max(1) as f64,
        rt.handler.as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6,
        2e6 / (server_us + client_us).max(1.0),
        2e6 / server_us.max(1.0),
    ));
    if let Some(db) = tp.db_cpu.filter(|_| database_url.is_some()) {
        let db_us = per_pair(db);
        notes.push(format!(
            "{name}: the database ({}) used {db_us:.0} µs of CPU per pair under that load; \
             server + database + clients {:.0} µs, so 2 cores carry at most {:.0} pairs/s with \
             all three on them",
            std::env::var("BURSORA_TEST_PG_DURABILITY")
                .unwrap_or_else(|_| "settings unknown".into()),
            server_us + db_us + client_us,
            2e6 / (server_us + db_us + client_us).max(1.0),
        ));
    }
    if let Some(wal) = tp.wal_flushes.filter(|&w| w > 0) {
        notes.push(format!(
            "{name}: {wal} WAL flushes in the measured window, {:.3} per pair (`pg_stat_wal`)",
            wal as f64 / window_pairs.max(1.0),
        ));
    }
    drop(server);

    if std::env::var_os("BENCH_SKIP_INPROC").is_some() {
        return;
    }
    // The same store code in this process: what HTTP, auth and JSON add.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut variants: Vec<(&str, Arc<Store>)> = Vec::new();
    match database_url {
        Some(url) => {
            let sqlx_default = PgStore::connect(url, 16).await.expect("postgres");
            let serving = PgStore::connect_for_serving(url, 16)
                .await
                .expect("postgres");
            variants.push((
                "store alone, sqlx's default pool (pings every connection it hands out)",
                Arc::new(Store::Postgres(sqlx_default)),
            ));
            variants.push((
                "store alone, the server's pool",
                Arc::new(Store::Postgres(serving)),
            ));
        }
        None => variants.push((
            "store alone",
            Arc::new(Store::Sqlite(
                SqliteStore::open(dir.path()).expect("sqlite"),
            )),
        )),
    }
    for (label, store) in variants {
        let mut pings = Vec::with_capacity(cfg.calls);
        for _ in 0..cfg.calls {
            let start = Instant::now();
            store.ping().await.expect("ping");
            pings.push(start.elapsed());
        }
        pings.sort_unstable();
        let mean = pings.iter().sum::<Duration>() / u32::try_from(pings.len().max(1)).unwrap_or(1);
        rows.push(Row {
            store: name,
            scenario: format!("{label}: `ping` (`SELECT 1`), sequential"),
            p50: Some(percentile(&pings, 0.50)),
            p99: Some(percentile(&pings, 0.99)),
            ops: 1.0 / mean.as_secs_f64(),
            target: "-".into(),
            met: None,
            errors: 0,
            load: load_avg(),
        });
        let inproc = InProcess {
            store: store.clone(),
        };
        let (times, rate) = store_alone(name, inproc, cfg.calls, cfg.clients, cfg.secs).await;
        rows.push(Row {
            store: name,
            scenario: format!(
                "{label}: `reserve` p50/p99 sequential; reserves/s with {} tasks",
                cfg.clients
            ),
            p50: Some(percentile(&times, 0.50)),
            p99: Some(percentile(&times, 0.99)),
            ops: rate,
            target: "-".into(),
            met: None,
            errors: 0,
            load: load_avg(),
        });
    }
}

#[tokio::main]
async fn main() {
    let cfg = Config {
        calls: env_or("BENCH_RTT_CALLS", 5_000),
        clients: env_or("BENCH_CLIENTS", 64),
        warmup: Duration::from_secs_f64(env_or("BENCH_WARMUP_SECS", 1.0)),
        secs: Duration::from_secs_f64(env_or("BENCH_SECS", 5.0)),
    };
    let bin = server_binary();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!(
        "bursora-server bench: {} · {cores} cores · load average {} at start",
        bin.display(),
        load_avg()
    );
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    run_store("SQLite", &bin, None, &cfg, &mut rows, &mut notes).await;
    match std::env::var(PG_ENV).ok().filter(|u| !u.is_empty()) {
        Some(url) => run_store("Postgres", &bin, Some(&url), &cfg, &mut rows, &mut notes).await,
        None => notes.push(format!(
            "Postgres rows skipped: {PG_ENV} is not set (run `scripts/pg-test.sh --run cargo bench -p bursora-bench --bench server`)"
        )),
    }
    print_table(&rows);
    println!();
    for n in &notes {
        println!("- {n}");
    }
    println!("\nload average at the end: {}", load_avg());
}
