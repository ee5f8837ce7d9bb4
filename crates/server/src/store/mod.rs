//! Where the server keeps projects, keys and each project's ledger.
//!
//! The HTTP layer is async and the core's [`Ledger`](bursora_core::ledger::Ledger) trait is
//! synchronous, so the server talks to an async [`Store`] enum instead of the trait:
//! - [`SqliteStore`] (default) runs the core's own `SqliteLedger` on tokio's blocking pool: one
//!   ledger file per project, so the embedded SDK and the server share one implementation.
//! - [`PgStore`] is native async sqlx on Postgres, for any number of replicas.
//!
//! Both decide with the core's shared functions (`plan_counters`, `decide`, `exceeded`,
//! `EndPlan`, `SettleMath`): one ledger logic, not two copies. An enum rather than a trait
//! object keeps the dispatch static and avoids boxing every future.
//!
//! Every ledger operation takes the project it acts in; the caller's project comes from its API
//! key, so one project's key cannot name another project's budgets or reservations.

mod pg;
mod sqlite;

pub use pg::PgStore;
pub use sqlite::SqliteStore;

use bursora_core::NanoUsd;
use bursora_core::budget::{Budget, BudgetSpec, CallTags};
use bursora_core::ledger::history::{
    Event, EventQuery, SettleWith, SpendQuery, SpendRow, UsageItem, UsageOutcome, WindowFigures,
};
use bursora_core::ledger::{BudgetStatus, Policy, Reservation, Settlement, UpsertOutcome};

/// How long the server keeps ended reservations, refusals and usage events by default (days):
/// over a year, so the dashboard can compare a month with the same month last year.
pub const DEFAULT_RETENTION_DAYS: u32 = 400;

/// [`DEFAULT_RETENTION_DAYS`] in milliseconds.
pub const DEFAULT_RETENTION_MS: i64 = DEFAULT_RETENTION_DAYS as i64 * 24 * 3_600_000;

/// A project: the unit that owns budgets, reservations and keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    /// `prj_...`.
    pub id: String,
    /// A human label.
    pub name: String,
    /// Creation time (Unix ms).
    pub created_at_ms: i64,
}

/// An API key as stored: its hash, never the key itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// `key_...`, to list or revoke it by.
    pub id: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    /// `None` for an admin key.
    pub project: Option<String>,
    /// A human label.
    pub name: String,
    /// Creation time (Unix ms).
    pub created_at_ms: i64,
}

/// Who a valid key belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// Manages projects, budgets and keys of every project.
    Admin,
    /// Reserves, settles and reads within one project.
    Project(String),
}

/// A reservation request, owned so it can move onto a blocking thread.
#[derive(Clone, Debug)]
pub struct ReserveInput {
    /// Tags, provider and model of the call.
    pub call: CallTags,
    /// Upper bound of its cost.
    pub amount: NanoUsd,
    /// What to do if it does not fit.
    pub policy: Policy,
    /// Time to live; `None` is the core's default.
    pub ttl_ms: Option<i64>,
    /// A client-chosen id, making the reserve idempotent; `None` generates one.
    pub id: Option<String>,
}

/// What revoking a key did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoked {
    /// The key is gone; it answers 401 from now on.
    Revoked,
    /// No key has that id.
    NotFound,
    /// It is the last admin key: revoking it would lock everyone out.
    LastAdmin,
}

/// The budget store behind the API.
#[derive(Debug)]
pub enum Store {
    /// SQLite files in a data directory.
    Sqlite(SqliteStore),
    /// One Postgres database shared by every replica.
    Postgres(PgStore),
}

type Result<T> = bursora_core::Result<T>;

macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Sqlite(s) => s.$method($($arg),*).await,
            Store::Postgres(s) => s.$method($($arg),*).await,
        }
    };
}

// After the macro: `alerts` dispatches with it.
mod alerts;

pub use alerts::{Alert, AlertRule, AlertStatus, AttemptRecord, NewAlert, Webhook, WebhookFormat};

impl Store {
    /// Checks the store answers (for `/healthz`).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn ping(&self) -> Result<()> {
        dispatch!(self.ping())
    }

    /// Creates a project.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn create_project(&self, name: &str) -> Result<Project> {
        dispatch!(self.create_project(name))
    }

    /// A project by id.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn project(&self, id: &str) -> Result<Option<Project>> {
        dispatch!(self.project(id))
    }

    /// Every project, oldest first.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn projects(&self) -> Result<Vec<Project>> {
        dispatch!(self.projects())
    }

    /// Stores a key (by hash). A hash already stored is left as it is.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn add_key(&self, key: &KeyRecord) -> Result<()> {
        dispatch!(self.add_key(key))
    }

    /// Whether any admin key exists.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn has_admin_key(&self) -> Result<bool> {
        dispatch!(self.has_admin_key())
    }

    /// Who holds the key with this hash, if anyone.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn principal(&self, hash: &str) -> Result<Option<Principal>> {
        dispatch!(self.principal(hash))
    }

    /// Creates the budget named `spec.name` in `project`, or updates it to `spec`.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn upsert_budget(&self, project: &str, spec: BudgetSpec) -> Result<UpsertOutcome> {
        dispatch!(self.upsert_budget(project, spec))
    }

    /// Removes a budget by name.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn remove_budget(&self, project: &str, name: &str) -> Result<bool> {
        dispatch!(self.remove_budget(project, name))
    }

    /// The project's budgets.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn budgets(&self, project: &str) -> Result<Vec<Budget>> {
        dispatch!(self.budgets(project))
    }

    /// Reserves against every matching budget of `project`, all or nothing.
    ///
    /// # Errors
    /// `BudgetExceeded`, invalid TTLs, storage failures.
    pub async fn reserve(&self, project: &str, input: ReserveInput) -> Result<Reservation> {
        dispatch!(self.reserve(project, input))
    }

    /// Settles or releases reservations of `project` in one atomic step; one result per item
    /// (`UnknownReservation` for ids this project never issued).
    ///
    /// # Errors
    /// Storage failures (then nothing changed).
    pub async fn settle_batch(
        &self,
        project: &str,
        items: Vec<SettleWith>,
    ) -> Result<Vec<Result<Settlement>>> {
        dispatch!(self.settle_batch(project, items))
    }

    /// Delivers usage exactly once per id: settles the reservation an id names, or records a
    /// usage event once (counted as spent at its time, never refused).
    ///
    /// # Errors
    /// Storage failures (then nothing changed).
    pub async fn usage(&self, project: &str, items: Vec<UsageItem>) -> Result<Vec<UsageOutcome>> {
        dispatch!(self.usage(project, items))
    }

    /// The project's remembered calls, newest first.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn events(&self, project: &str, query: EventQuery) -> Result<Vec<Event>> {
        dispatch!(self.events(project, query))
    }

    /// The project's spend over a range, grouped and bucketed as asked.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn spend(&self, project: &str, query: SpendQuery) -> Result<Vec<SpendRow>> {
        dispatch!(self.spend(project, query))
    }

    /// A budget's counters in windows starting in `[from_ms, to_ms)`, newest first. The caller
    /// has checked the budget belongs to `project`.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn windows(
        &self,
        project: &str,
        budget_id: &str,
        (from_ms, to_ms): (i64, i64),
        limit: usize,
    ) -> Result<Vec<WindowFigures>> {
        dispatch!(self.windows(project, budget_id, (from_ms, to_ms), limit))
    }

    /// The keys of a project, oldest first (hashes included: callers must not show them).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn keys(&self, project: &str) -> Result<Vec<KeyRecord>> {
        dispatch!(self.keys(project))
    }

    /// Revokes a key by id; refuses to revoke the last admin key.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn revoke_key(&self, id: &str) -> Result<Revoked> {
        dispatch!(self.revoke_key(id))
    }

    /// Pushes an active reservation's expiry to `ttl_ms` from now (a live stream renews it);
    /// false if it already ended.
    ///
    /// # Errors
    /// `UnknownReservation` for ids this project never issued; invalid TTLs; storage failures.
    pub async fn extend(&self, project: &str, id: &str, ttl_ms: i64) -> Result<bool> {
        dispatch!(self.extend(project, id, ttl_ms))
    }

    /// The project's counters in their current windows.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn status(&self, project: &str) -> Result<Vec<BudgetStatus>> {
        dispatch!(self.status(project))
    }

    /// Settles every overdue reservation (all projects) at its reserved amount.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn expire(&self) -> Result<usize> {
        dispatch!(self.expire())
    }
}

/// A fresh id: `prefix` and `len` random hex digits.
pub(crate) fn new_id(prefix: &str, len: usize) -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &u[..len.min(32)])
}

/// Milliseconds since the Unix epoch.
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
