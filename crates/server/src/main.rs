//! `bursora-server serve`: the budget server (SPEC §6); `budgets`, `keys`, `projects` and
//! `spend`: the admin CLI over its HTTP API ([`admin_cli`]).

mod admin_cli;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bursora_server::auth::{ADMIN_PREFIX, MIN_ADMIN_KEY_LEN, key_record, new_secret};
use bursora_server::store::{DEFAULT_RETENTION_DAYS, PgStore, SqliteStore};
use bursora_server::{AppState, Store, alerts, router, sweeper};
use clap::{Parser, Subcommand};
use tokio::sync::watch;

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
    /// Most Postgres connections per replica.
    #[arg(long, default_value_t = 16)]
    max_connections: u32,
    /// How long ended reservations, refusals and usage events are kept, in days (the history
    /// `GET /v1/events` and the spend queries read).
    #[arg(long, env = "BURSORA_RETENTION_DAYS", default_value_t = DEFAULT_RETENTION_DAYS)]
    retention_days: u32,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match Cli::parse().command {
        Command::Serve(args) => args,
        Command::Budgets(c) => return admin_cli::run(admin_cli::AdminCommand::Budgets(c)).await,
        Command::Keys(c) => return admin_cli::run(admin_cli::AdminCommand::Keys(c)).await,
        Command::Projects(c) => return admin_cli::run(admin_cli::AdminCommand::Projects(c)).await,
        Command::Spend(c) => return admin_cli::run(admin_cli::AdminCommand::Spend(c)).await,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match serve(args).await {
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
            PgStore::connect(url, args.max_connections)
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
    let state = AppState::new(store);
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
