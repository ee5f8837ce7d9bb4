//! `bursora-server serve`: the budget server (SPEC §6); `budgets`, `keys`, `projects` and
//! `spend`: the admin CLI over its HTTP API ([`admin_cli`]).

mod admin_cli;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use bursora_server::auth::{ADMIN_PREFIX, KeyCache, MIN_ADMIN_KEY_LEN, key_record, new_secret};
use bursora_server::store::{DEFAULT_RETENTION_DAYS, PgStore, SqliteStore};
use bursora_server::{AppState, Store, alerts, router, sweeper};
use clap::{Parser, Subcommand};
use tokio::sync::watch;

// The same allocator as the SDK's addon: glibc's malloc and free were a seventh of a
// reservation's instructions in the server (callgrind, `bench/README.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "bursora-server", version, about = "The Bursora budget server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API until SIGTERM or ctrl-c, then drain in-flight requests.
    Serve(Serve),
    /// Budgets of a project: list, create, update, delete.
    Budgets(admin_cli::Budgets),
    /// Project keys: list, create, revoke.
    Keys(admin_cli::Keys),
    /// Projects: list, create.
    Projects(admin_cli::Projects),
    /// Spend of a project grouped by model, provider or a tag over a time range.
    Spend(admin_cli::Spend),
}

#[derive(Debug, clap::Args)]
struct Serve {
    /// Directory of the SQLite store (used unless --database-url is given).
    #[arg(long, env = "BURSORA_DATA_DIR", default_value = "bursora-data")]
    data_dir: PathBuf,
    /// `postgres://...`: keep everything in Postgres; any number of replicas may share it.
    #[arg(long, env = "BURSORA_DATABASE_URL")]
    database_url: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "BURSORA_LISTEN", default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// An admin key to accept (at least 32 characters). Without it, and with no admin key
    /// stored yet, one is generated and printed once on stdout.
    #[arg(long, env = "BURSORA_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// How often overdue reservations are expired, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    sweep_every_ms: u64,
    /// How often budgets are checked against their alert thresholds, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    alert_every_ms: u64,
    /// Most Postgres connections per replica: a quarter of them (at least one) run the
    /// reservation statement (on generic plans), the rest everything else.
    #[arg(long, default_value_t = 16)]
    max_connections: u32,
    /// How long ended reservations, refusals and usage events are kept, in days (the history
    /// `GET /v1/events` and the spend queries read).
    #[arg(long, env = "BURSORA_RETENTION_DAYS", default_value_t = DEFAULT_RETENTION_DAYS)]
    retention_days: u32,
    /// How long a verified API key is trusted before the store is asked again, in
    /// milliseconds (0: ask on every request). Unknown keys always reach the store; a key
    /// revoked through this replica stops working at once, through another within this time.
    #[arg(long, default_value_t = 2_000)]
    key_cache_ms: u64,
    /// Most threads running SQLite calls at once. Each ledger file takes one writer at a
    /// time: more threads only queue on its lock and wake each other, which cost as much CPU as
    /// the calls themselves (tokio's default is 512; see `bench/README.md`).
    #[arg(long, default_value_t = 8)]
    blocking_threads: usize,
}

fn main() -> ExitCode {
    let command = Cli::parse().command;
    let blocking = match &command {
        Command::Serve(args) => args.blocking_threads.max(1),
        _ => 16,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot start the async runtime: {e}"
            );
            return ExitCode::FAILURE;
        }
    };
    let args = match command {
        Command::Serve(args) => args,
        Command::Budgets(c) => {
            return runtime.block_on(admin_cli::run(admin_cli::AdminCommand::Budgets(c)));
        }
        Command::Keys(c) => {
            return runtime.block_on(admin_cli::run(admin_cli::AdminCommand::Keys(c)));
        }
        Command::Projects(c) => {
            return runtime.block_on(admin_cli::run(admin_cli::AdminCommand::Projects(c)));
        }
        Command::Spend(c) => {
            return runtime.block_on(admin_cli::run(admin_cli::AdminCommand::Spend(c)));
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Serve) -> Result<(), String> {
    if args.retention_days == 0 {
        return Err("--retention-days must be at least 1".into());
    }
    let retention_ms = i64::from(args.retention_days) * 24 * 3_600_000;
    let store = match &args.database_url {
        Some(url) => Store::Postgres(
            PgStore::connect_for_serving(url, args.max_connections)
                .await
                .map_err(|e| e.to_string())?
                .with_retention_ms(retention_ms),
        ),
        None => Store::Sqlite(
            SqliteStore::open(&args.data_dir)
                .map_err(|e| e.to_string())?
                .with_retention_ms(retention_ms),
        ),
    };
    bootstrap_admin(&store, args.admin_key.as_deref()).await?;
    let mut state = AppState::new(store);
    state.keys = Arc::new(KeyCache::new(Duration::from_millis(args.key_cache_ms)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let sweeper = sweeper::spawn(
        state.store.clone(),
        Duration::from_millis(args.sweep_every_ms.max(100)),
        stop_rx.clone(),
    );
    let alerter = alerts::spawn(
        state.store.clone(),
        alerts::AlertConfig {
            every: Duration::from_millis(args.alert_every_ms.max(100)),
            ..alerts::AlertConfig::default()
        },
        stop_rx,
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(
        listen = %args.listen,
        store = if args.database_url.is_some() { "postgres" } else { "sqlite" },
        "bursora-server is serving"
    );
    // Stops accepting on the signal and returns once every in-flight request is answered.
    // Answers are small and written whole: never hold one back waiting for an ACK (Nagle).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("cannot set TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("server failed: {e}"))?;
    let _ = stop_tx.send(true);
    let _ = sweeper.await;
    let _ = alerter.await;
    tracing::info!("bursora-server stopped");
    Ok(())
}

/// Makes sure an admin key exists: the one given, or a new one printed once.
async fn bootstrap_admin(store: &Store, given: Option<&str>) -> Result<(), String> {
    if let Some(key) = given {
        if key.len() < MIN_ADMIN_KEY_LEN {
            return Err(format!(
                "--admin-key must be at least {MIN_ADMIN_KEY_LEN} characters of random text"
            ));
        }
        return store
            .add_key(&key_record(key, None, "bootstrap"))
            .await
            .map_err(|e| e.to_string());
    }
    if store.has_admin_key().await.map_err(|e| e.to_string())? {
        return Ok(());
    }
    let secret = new_secret(ADMIN_PREFIX);
    store
        .add_key(&key_record(&secret, None, "bootstrap"))
        .await
        .map_err(|e| e.to_string())?;
    // The one place the key is ever shown: stdout, not the log, so log shipping never sees it.
    let mut out = std::io::stdout().lock();
    writeln!(out, "admin key (shown once, store it now): {secret}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot print the admin key: {e}"))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}
