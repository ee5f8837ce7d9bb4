//! The default store: SQLite files in a data directory.
//!
//! - `server.db` holds projects and key hashes.
//! - `projects/<project id>.db` is one core `SqliteLedger` per project: the very ledger the
//!   embedded SDK uses, so the server adds no second copy of the reservation logic. Isolation
//!   between projects is structural: a project's key only ever reaches its own file, and a
//!   reservation id issued in one file is unknown in every other.
//!
//! SQLite calls block, so each runs on tokio's blocking pool. Several server processes may share
//! one data directory: every ledger write is a `BEGIN IMMEDIATE` transaction on the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bursora_core::budget::{Budget, BudgetSpec};
use bursora_core::clock::SystemClock;
use bursora_core::ledger::history::{
    Event, EventQuery, SettleWith, SpendQuery, SpendRow, UsageItem, UsageOutcome, WindowFigures,
};
use bursora_core::ledger::{
    BudgetStatus, Ledger, Reservation, ReserveRequest, Settlement, SqliteLedger, SqliteOptions,
    UpsertOutcome,
};
use bursora_core::{Error, Result};
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    DEFAULT_RETENTION_MS, KeyRecord, Principal, Project, ReserveInput, Revoked, new_id, now_ms,
};

mod alerts;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS projects (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    hash          TEXT PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    project_id    TEXT REFERENCES projects (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
";

/// Projects and keys in `server.db`, one ledger file per project.
pub struct SqliteStore {
    dir: PathBuf,
    meta: Arc<Mutex<Connection>>,
    ledgers: Mutex<HashMap<String, Arc<SqliteLedger>>>,
    options: SqliteOptions,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage {
        message: e.to_string(),
    }
}

/// Runs blocking SQLite work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| storage(format!("a storage task failed: {e}")))?
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir`.
    ///
    /// # Errors
    /// The directory or `server.db` cannot be created or opened.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(dir.join("projects")).map_err(|e| {
            storage(format!(
                "cannot create the data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join("server.db");
        let fail = |e: rusqlite::Error| storage(format!("{}: {e}", path.display()));
        let db = Connection::open(&path).map_err(fail)?;
        db.busy_timeout(Duration::from_secs(10)).map_err(fail)?;
        db.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        db.pragma_update(None, "foreign_keys", "ON").map_err(fail)?;
        db.execute_batch(SCHEMA).map_err(fail)?;
        db.execute_batch(alerts::SCHEMA).map_err(fail)?;
        Ok(Self {
            dir,
            meta: Arc::new(Mutex::new(db)),
            ledgers: Mutex::new(HashMap::new()),
            options: SqliteOptions {
                keep_ended_ms: DEFAULT_RETENTION_MS,
                record_refusals: true,
                history_indexes: true,
            },
        })
    }

    /// Keeps ended reservations, refusals and usage events for `ms` (default
    /// [`DEFAULT_RETENTION_MS`]).
    #[must_use]
    pub fn with_retention_ms(mut self, ms: i64) -> Self {
        self.options.keep_ended_ms = ms;
        self
    }

    async fn meta<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let meta = self.meta.clone();
        blocking(move || {
            let db = meta.lock().unwrap_or_else(PoisonError::into_inner);
            f(&db).map_err(storage)
        })
        .await
    }

    /// The ledger of `project`, opened on first use. Callers have already checked the project
    /// exists (it came from a key or was looked up), so ids are our own `prj_<hex>` names.
    async fn ledger(&self, project: &str) -> Result<Arc<SqliteLedger>> {
        if let Some(l) = self
            .ledgers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(project)
        {
            return Ok(l.clone());
        }
        if !project
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(storage(format!("invalid project id {project:?}")));
        }
        let path = self.dir.join("projects").join(format!("{project}.db"));
        let options = self.options;
        let ledger = Arc::new(
            blocking(move || SqliteLedger::open_with_options(path, Arc::new(SystemClock), options))
                .await?,
        );
        Ok(self
            .ledgers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(project.to_owned())
            .or_insert(ledger)
            .clone())
    }

    async fn with_ledger<T: Send + 'static>(
        &self,
        project: &str,
        f: impl FnOnce(&SqliteLedger) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let ledger = self.ledger(project).await?;
        blocking(move || f(&ledger)).await
    }

    pub(super) async fn ping(&self) -> Result<()> {
        self.meta(|db| db.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }

    pub(super) async fn create_project(&self, name: &str) -> Result<Project> {
        let project = Project {
            id: new_id("prj_", 20),
            name: name.to_owned(),
            created_at_ms: now_ms(),
        };
        let p = project.clone();
        self.meta(move |db| {
            db.execute(
                "INSERT INTO projects (id, name, created_at_ms) VALUES (?1, ?2, ?3)",
                params![p.id, p.name, p.created_at_ms],
            )
        })
        .await?;
        Ok(project)
    }

    pub(super) async fn project(&self, id: &str) -> Result<Option<Project>> {
        let id = id.to_owned();
        self.meta(move |db| {
            db.query_row(
                "SELECT id, name, created_at_ms FROM projects WHERE id = ?1",
                [id],
                |r| {
                    Ok(Project {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        created_at_ms: r.get(2)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    pub(super) async fn projects(&self) -> Result<Vec<Project>> {
        self.meta(|db| {
            db.prepare("SELECT id, name, created_at_ms FROM projects ORDER BY created_at_ms, id")?
                .query_map([], |r| {
                    Ok(Project {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        created_at_ms: r.get(2)?,
                    })
                })?
                .collect()
        })
        .await
    }

    pub(super) async fn add_key(&self, key: &KeyRecord) -> Result<()> {
        let k = key.clone();
        self.meta(move |db| {
            db.execute(
                "INSERT INTO api_keys (hash, id, project_id, name, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (hash) DO NOTHING",
                params![k.hash, k.id, k.project, k.name, k.created_at_ms],
            )
            .map(drop)
        })
        .await
    }

    pub(super) async fn has_admin_key(&self) -> Result<bool> {
        self.meta(|db| {
            db.query_row(
                "SELECT EXISTS (SELECT 1 FROM api_keys WHERE project_id IS NULL)",
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    pub(super) async fn principal(&self, hash: &str) -> Result<Option<Principal>> {
        let hash = hash.to_owned();
        let row: Option<Option<String>> = self
            .meta(move |db| {
                db.query_row(
                    "SELECT project_id FROM api_keys WHERE hash = ?1",
                    [hash],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?;
        Ok(row.map(|p| p.map_or(Principal::Admin, Principal::Project)))
    }

    pub(super) async fn upsert_budget(
        &self,
        project: &str,
        spec: BudgetSpec,
    ) -> Result<UpsertOutcome> {
        self.with_ledger(project, move |l| l.upsert_budget(&spec))
            .await
    }

    pub(super) async fn remove_budget(&self, project: &str, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.with_ledger(project, move |l| l.remove_budget(&name))
            .await
    }

    pub(super) async fn budgets(&self, project: &str) -> Result<Vec<Budget>> {
        self.with_ledger(project, |l| l.budgets()).await
    }

    pub(super) async fn reserve(&self, project: &str, input: ReserveInput) -> Result<Reservation> {
        self.with_ledger(project, move |l| {
            l.reserve(&ReserveRequest {
                call: &input.call,
                amount: input.amount,
                policy: input.policy,
                ttl_ms: input.ttl_ms,
                id: input.id.as_deref(),
            })
        })
        .await
    }

    pub(super) async fn settle_batch(
        &self,
        project: &str,
        items: Vec<SettleWith>,
    ) -> Result<Vec<Result<Settlement>>> {
        self.with_ledger(project, move |l| l.settle_batch_with(&items))
            .await
    }

    pub(super) async fn usage(
        &self,
        project: &str,
        items: Vec<UsageItem>,
    ) -> Result<Vec<UsageOutcome>> {
        self.with_ledger(project, move |l| l.usage_batch(&items))
            .await
    }

    pub(super) async fn events(&self, project: &str, query: EventQuery) -> Result<Vec<Event>> {
        self.with_ledger(project, move |l| l.events(&query)).await
    }

    pub(super) async fn spend(&self, project: &str, query: SpendQuery) -> Result<Vec<SpendRow>> {
        self.with_ledger(project, move |l| l.spend(&query)).await
    }

    pub(super) async fn windows(
        &self,
        project: &str,
        budget_id: &str,
        (from_ms, to_ms): (i64, i64),
        limit: usize,
    ) -> Result<Vec<WindowFigures>> {
        let budget_id = budget_id.to_owned();
        self.with_ledger(project, move |l| {
            l.windows(&budget_id, from_ms, to_ms, limit)
        })
        .await
    }

    pub(super) async fn keys(&self, project: &str) -> Result<Vec<KeyRecord>> {
        let project = project.to_owned();
        self.meta(move |db| {
            db.prepare(
                "SELECT id, hash, project_id, name, created_at_ms FROM api_keys
                 WHERE project_id = ?1 ORDER BY created_at_ms, id",
            )?
            .query_map([project], |r| {
                Ok(KeyRecord {
                    id: r.get(0)?,
                    hash: r.get(1)?,
                    project: r.get(2)?,
                    name: r.get(3)?,
                    created_at_ms: r.get(4)?,
                })
            })?
            .collect()
        })
        .await
    }

    pub(super) async fn revoke_key(&self, id: &str) -> Result<Revoked> {
        let id = id.to_owned();
        self.meta(move |db| {
            let tx =
                rusqlite::Transaction::new_unchecked(db, rusqlite::TransactionBehavior::Immediate)?;
            let project: Option<Option<String>> = tx
                .query_row(
                    "SELECT project_id FROM api_keys WHERE id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()?;
            let outcome = match project {
                None => Revoked::NotFound,
                Some(None)
                    if tx.query_row(
                        "SELECT COUNT(*) FROM api_keys WHERE project_id IS NULL",
                        [],
                        |r| r.get::<_, i64>(0),
                    )? <= 1 =>
                {
                    Revoked::LastAdmin
                }
                Some(_) => {
                    tx.execute("DELETE FROM api_keys WHERE id = ?1", [&id])?;
                    Revoked::Revoked
                }
            };
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }

    pub(super) async fn extend(&self, project: &str, id: &str, ttl_ms: i64) -> Result<bool> {
        let id = id.to_owned();
        self.with_ledger(project, move |l| l.extend(&id, ttl_ms))
            .await
    }

    pub(super) async fn status(&self, project: &str) -> Result<Vec<BudgetStatus>> {
        self.with_ledger(project, |l| l.status()).await
    }

    /// Expires overdue reservations in every project's file, including projects this process
    /// has not served yet (another process sharing the directory may have).
    pub(super) async fn expire(&self) -> Result<usize> {
        let mut total = 0;
        for p in self.projects().await? {
            total += self.with_ledger(&p.id, |l| l.expire()).await?;
        }
        Ok(total)
    }
}
