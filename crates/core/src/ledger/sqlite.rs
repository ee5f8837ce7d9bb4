//! The ledger in a SQLite file that several processes on one machine share.
//!
//! Every change is one `BEGIN IMMEDIATE` transaction: it takes the file's write lock before it
//! reads a counter, so two processes can never both see the same headroom. The file runs in WAL
//! mode with `synchronous=NORMAL`: a committed reservation survives a crash of the process (not
//! necessarily a power cut of the machine), and readers never block the writer. Reserves and
//! settlements from several threads at once share transactions (`group`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};

mod group;
mod history;

use group::{Group, Op};

use super::history::{EventKind, RefusedBy, Tokens, new_refusal_id, tags_json};
use super::{
    BudgetStatus, CounterRef, CounterState, Decision, EndPlan, IdGen, Ledger, Outcome, Reservation,
    ReserveRequest, SettleMath, Settlement, UpsertOutcome, decide, exceeded, new_budget_id,
    plan_counters, ttl,
};
use crate::budget::{Budget, BudgetSpec, CallTags, Selector};
use crate::clock::{SharedClock, SystemClock};
use crate::error::{Error, Result};
use crate::money::NanoUsd;

/// The schema this code writes (`PRAGMA user_version`). It changes only when older code could no
/// longer read or write the file safely; additive changes go by [`HISTORY_VERSION`] instead.
const SCHEMA_VERSION: i64 = 1;
/// Additive schema revisions (`bursora_meta.schema_version`), applied in place on open. Older
/// code keeps working on a migrated file: it names its columns and leaves the new ones NULL.
/// - 2: call history: tags, provider, model, requested amount, tokens and refusals on
///   `reservations`, and an index by creation time for listing and spend queries.
const HISTORY_VERSION: i64 = 2;
/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often, at most, a reserve also settles expired reservations.
const SWEEP_EVERY_MS: i64 = 1_000;
/// Ended reservations are kept this long by default, so a late duplicate settle is still
/// recognised ([`SqliteOptions::keep_ended_ms`]).
const KEEP_ENDED_MS: i64 = 7 * 24 * 3_600_000;
/// How often, at most, ended reservations past their retention are deleted.
const PRUNE_EVERY_MS: i64 = 3_600_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bursora_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO bursora_meta (key, value) VALUES ('budgets_version', 0);
CREATE TABLE IF NOT EXISTS budgets (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    match_json    TEXT NOT NULL,
    limit_nanos   INTEGER NOT NULL CHECK (limit_nanos >= 0),
    window        TEXT NOT NULL,
    mode          TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    budget_id       TEXT NOT NULL,
    key             TEXT NOT NULL,
    window_start_ms INTEGER NOT NULL,
    spent           INTEGER NOT NULL DEFAULT 0 CHECK (spent >= 0),
    reserved        INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    overrun         INTEGER NOT NULL DEFAULT 0 CHECK (overrun >= 0),
    PRIMARY KEY (budget_id, key, window_start_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reservations (
    id            TEXT PRIMARY KEY,
    amount        INTEGER NOT NULL CHECK (amount >= 0),
    state         TEXT NOT NULL,
    actual        INTEGER,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    ended_at_ms   INTEGER,
    counters      TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reservations_due ON reservations (expires_at_ms) WHERE state = 'active';
";

/// [`HISTORY_VERSION`] 2. Refusals and usage events are rows too (`state` `refused`, `usage`),
/// so reservation and usage ids share one namespace. The index is by creation time only (the
/// primary key rides along): written once per insert, never moved by a settlement.
const HISTORY_V2: &str = "
ALTER TABLE reservations ADD COLUMN tags TEXT;
ALTER TABLE reservations ADD COLUMN provider TEXT;
ALTER TABLE reservations ADD COLUMN model TEXT;
ALTER TABLE reservations ADD COLUMN requested INTEGER;
ALTER TABLE reservations ADD COLUMN input_tokens INTEGER;
ALTER TABLE reservations ADD COLUMN output_tokens INTEGER;
ALTER TABLE reservations ADD COLUMN refused_by TEXT;
INSERT OR REPLACE INTO bursora_meta (key, value) VALUES ('schema_version', 2);
";

/// With [`SqliteOptions::history_indexes`] (the server): the events listing reads by creation
/// time, and the spend queries (breakdowns, series) read only
/// spent rows in a time range and only these columns: a partial covering index answers them
/// without touching the table (whose primary key is a random id): 1.86 s → 0.50 s for the
/// dashboard's overview over 200k calls. Active reservations are not in the second, so a
/// reserve writes nothing more for it; a settlement adds one entry. The embedded SDK never runs
/// these queries and goes without both: each costs the hot path an index write.
const HISTORY_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS reservations_at ON reservations (created_at_ms);
CREATE INDEX IF NOT EXISTS reservations_spent
    ON reservations (created_at_ms, model, provider, actual, state, tags)
    WHERE state IN ('settled', 'expired', 'usage');
";

/// How a [`SqliteLedger`] keeps its history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqliteOptions {
    /// How long ended reservations, refusals and usage events are kept (ms). The embedded
    /// default is 7 days (long enough to recognise a late duplicate settle); the server keeps
    /// history for its dashboard much longer.
    pub keep_ended_ms: i64,
    /// Whether a refused reserve leaves a `refused` event (the server's dashboard lists blocked
    /// calls). Off by default: embedded, a refusal stays a read that writes nothing.
    pub record_refusals: bool,
    /// Keep the indexes the events listing and the spend queries read ([`HISTORY_INDEXES`]);
    /// off by default (they cost reservations and settlements index writes).
    pub history_indexes: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            keep_ended_ms: KEEP_ENDED_MS,
            record_refusals: false,
            history_indexes: false,
        }
    }
}

struct Conn {
    db: Connection,
    budgets: Vec<Budget>,
    budgets_version: i64,
    next_sweep_ms: i64,
    next_prune_ms: i64,
}

/// A ledger in a SQLite file, safe to share between threads and between processes.
pub struct SqliteLedger {
    conn: Mutex<Conn>,
    /// Reserves and settlements waiting to share a transaction.
    group: Group,
    clock: SharedClock,
    ids: IdGen,
    path: PathBuf,
    options: SqliteOptions,
}

impl std::fmt::Debug for SqliteLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLedger")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A stored counter reference inside a reservation row: `[budget_id, key, window_start_ms]`.
type StoredCounter = (String, String, i64);

impl SqliteLedger {
    /// Opens (creating if needed) the ledger file at `path` on the system clock. A path that
    /// starts with `file:` is read as a SQLite URI.
    ///
    /// # Errors
    /// [`Error::Storage`] when the file cannot be opened or written, is not a SQLite database,
    /// is corrupt, or was written by a newer Bursora.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_clock(path, Arc::new(SystemClock))
    }

    /// Like [`SqliteLedger::open`] with the given clock.
    ///
    /// # Errors
    /// As [`SqliteLedger::open`].
    pub fn open_with_clock(path: impl AsRef<Path>, clock: SharedClock) -> Result<Self> {
        Self::open_with_options(path, clock, SqliteOptions::default())
    }

    /// Like [`SqliteLedger::open_with_clock`] with the given options.
    ///
    /// # Errors
    /// As [`SqliteLedger::open`].
    pub fn open_with_options(
        path: impl AsRef<Path>,
        clock: SharedClock,
        options: SqliteOptions,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let fail = |e: rusqlite::Error| storage_error(&path, &e);
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if path.to_string_lossy().starts_with("file:") {
            flags |= OpenFlags::SQLITE_OPEN_URI;
        }
        let db = Connection::open_with_flags(&path, flags).map_err(fail)?;
        if db.is_readonly(rusqlite::MAIN_DB).map_err(fail)? {
            return Err(Error::Storage {
                message: format!(
                    "{} is read-only; Bursora must write its budgets there: fix the file's permissions or choose another path (BURSORA_DB)",
                    path.display()
                ),
            });
        }
        db.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
        db.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        db.pragma_update(None, "synchronous", "NORMAL")
            .map_err(fail)?;
        // Fewer, larger checkpoints: each one syncs the file, and a hot ledger commits often.
        db.pragma_update(None, "wal_autocheckpoint", 8_000)
            .map_err(fail)?;
        let mut conn = Conn {
            db,
            budgets: Vec::new(),
            budgets_version: -1,
            next_sweep_ms: 0,
            next_prune_ms: 0,
        };
        migrate(&mut conn.db).map_err(fail)?;
        if options.history_indexes {
            conn.db.execute_batch(HISTORY_INDEXES).map_err(fail)?;
        }
        let ledger = Self {
            conn: Mutex::new(conn),
            group: Group::default(),
            clock,
            ids: IdGen::new(),
            path,
            options,
        };
        ledger.write(|_, _| Ok(()))?;
        Ok(ledger)
    }

    /// The file this ledger writes.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one write transaction with the budgets loaded, committing if it returns `Ok`.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>, &mut Cache<'_>) -> Result<T>) -> Result<T> {
        self.transaction(TransactionBehavior::Immediate, f)
    }

    /// Like [`Self::write`] for reads: a deferred transaction, one consistent snapshot that
    /// does not take the file's write lock from other processes.
    fn read<T>(&self, f: impl FnOnce(&Transaction<'_>, &mut Cache<'_>) -> Result<T>) -> Result<T> {
        self.transaction(TransactionBehavior::Deferred, f)
    }

    fn transaction<T>(
        &self,
        behavior: TransactionBehavior,
        f: impl FnOnce(&Transaction<'_>, &mut Cache<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self.conn.lock();
        let (tx, mut cache) = self.begin(&mut guard, behavior)?;
        let out = f(&tx, &mut cache)?;
        tx.commit().map_err(|e| storage_error(&self.path, &e))?;
        Ok(out)
    }

    /// Begins a transaction on `conn`, with the budgets reloaded if another writer changed them.
    fn begin<'c>(
        &'c self,
        conn: &'c mut Conn,
        behavior: TransactionBehavior,
    ) -> Result<(Transaction<'c>, Cache<'c>)> {
        let tx = conn
            .db
            .transaction_with_behavior(behavior)
            .map_err(|e| storage_error(&self.path, &e))?;
        let version: i64 = tx
            .prepare_cached("SELECT value FROM bursora_meta WHERE key = 'budgets_version'")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(|e| storage_error(&self.path, &e))?;
        if version != conn.budgets_version {
            conn.budgets = load_budgets(&tx, &self.path)?;
            conn.budgets_version = version;
        }
        let cache = Cache {
            budgets: &mut conn.budgets,
            version: &mut conn.budgets_version,
            next_sweep_ms: &mut conn.next_sweep_ms,
            next_prune_ms: &mut conn.next_prune_ms,
            path: &self.path,
        };
        Ok((tx, cache))
    }

    fn err(&self, e: &rusqlite::Error) -> Error {
        storage_error(&self.path, e)
    }
}

/// What a transaction may read and update of the connection's cached state.
struct Cache<'a> {
    budgets: &'a mut Vec<Budget>,
    version: &'a mut i64,
    next_sweep_ms: &'a mut i64,
    next_prune_ms: &'a mut i64,
    path: &'a Path,
}

impl Cache<'_> {
    fn sweep(&mut self, tx: &Transaction<'_>, now: i64, keep_ms: i64) -> Result<usize> {
        let prune = now >= *self.next_prune_ms;
        let n = sweep(tx, now, prune.then_some(keep_ms), self.path)?;
        *self.next_sweep_ms = now + SWEEP_EVERY_MS;
        if prune {
            *self.next_prune_ms = now + PRUNE_EVERY_MS;
        }
        Ok(n)
    }

    /// Records a budget change: bump the shared version so other processes reload.
    fn budgets_changed(&mut self, tx: &Transaction<'_>) -> Result<()> {
        tx.execute(
            "UPDATE bursora_meta SET value = value + 1 WHERE key = 'budgets_version'",
            [],
        )
        .map_err(|e| storage_error(self.path, &e))?;
        *self.version = -1; // reload on next use
        Ok(())
    }
}

fn migrate(db: &mut Connection) -> rusqlite::Result<()> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "schema version {version} is newer than this Bursora understands ({SCHEMA_VERSION}); upgrade @bursora/sdk"
        )));
    }
    if version < SCHEMA_VERSION {
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    let history: i64 = tx
        .query_row(
            "SELECT value FROM bursora_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(1);
    if history > HISTORY_VERSION {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "schema version {history} is newer than this Bursora understands ({HISTORY_VERSION}); upgrade @bursora/sdk"
        )));
    }
    if history < 2 {
        tx.execute_batch(HISTORY_V2)?;
    }
    tx.commit()
}

fn storage_error(path: &Path, e: &rusqlite::Error) -> Error {
    let p = path.display();
    let message = match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => format!(
            "{p} is not a Bursora ledger or is corrupt ({e}); move it aside or point BURSORA_DB at another file"
        ),
        Some(ErrorCode::ReadOnly) => {
            format!(
                "{p} is read-only ({e}); fix its permissions or choose another path (BURSORA_DB)"
            )
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => format!(
            "{p} stayed locked by another process for over {}s ({e}); check for a stuck process holding it",
            BUSY_TIMEOUT.as_secs()
        ),
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            format!("cannot open {p} ({e}); check that its directory exists and is writable")
        }
        Some(ErrorCode::DiskFull) => format!("the disk holding {p} is full ({e})"),
        _ => format!("{p}: {e}"),
    };
    Error::Storage { message }
}

fn load_budgets(tx: &Transaction<'_>, path: &Path) -> Result<Vec<Budget>> {
    let fail = |e: rusqlite::Error| storage_error(path, &e);
    let mut stmt = tx
        .prepare_cached(
            "SELECT id, name, match_json, limit_nanos, window, mode FROM budgets ORDER BY created_at_ms, id",
        )
        .map_err(fail)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })
        .map_err(fail)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, name, match_json, limit, window, mode) = row.map_err(fail)?;
        let bad = |e: Error| Error::Storage {
            message: format!(
                "{}: budget {name:?} is stored malformed ({e}); fix or delete its row",
                path.display()
            ),
        };
        let spec = BudgetSpec::new(
            name.clone(),
            Selector::from_json(&match_json).map_err(bad)?,
            NanoUsd::from_nanos(limit).map_err(bad)?,
            window.parse().map_err(bad)?,
            mode.parse().map_err(bad)?,
        )
        .map_err(bad)?;
        out.push(Budget {
            id: Arc::from(id),
            spec,
        });
    }
    Ok(out)
}

fn read_counter(
    tx: &Transaction<'_>,
    budget_id: &str,
    c: &CounterRef,
) -> rusqlite::Result<Option<(i64, i64, i64)>> {
    tx.prepare_cached(
        "SELECT spent, reserved, overrun FROM counters WHERE budget_id = ?1 AND key = ?2 AND window_start_ms = ?3",
    )?
    .query_row(params![budget_id, c.key, c.window_start_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
    .optional()
}

fn write_counter(
    tx: &Transaction<'_>,
    (budget_id, key, window_start_ms): (&str, &str, i64),
    (spent, reserved, overrun): (NanoUsd, NanoUsd, NanoUsd),
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO counters (budget_id, key, window_start_ms, spent, reserved, overrun) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (budget_id, key, window_start_ms) DO UPDATE SET spent = ?4, reserved = ?5, overrun = ?6",
    )?
    .execute(params![budget_id, key, window_start_ms, spent.nanos(), reserved.nanos(), overrun.nanos()])?;
    Ok(())
}

/// Applies `math` to every stored counter of a reservation: [`SettleMath::apply`] in one
/// statement per counter (saturating at zero the same way).
fn apply(
    tx: &Transaction<'_>,
    counters: &[StoredCounter],
    math: SettleMath,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "UPDATE counters SET spent = MAX(spent - ?4, 0) + ?5, reserved = MAX(reserved - ?6, 0), overrun = overrun + ?7
         WHERE budget_id = ?1 AND key = ?2 AND window_start_ms = ?3",
    )?;
    for (budget_id, key, start) in counters {
        // A counter row can be missing only if it was deleted by hand; nothing to move then.
        stmt.execute(params![
            budget_id,
            key,
            start,
            math.unspend.nanos(),
            math.spend.nanos(),
            math.unreserve.nanos(),
            math.overrun.nanos()
        ])?;
    }
    Ok(())
}

fn parse_counters(text: &str, path: &Path) -> Result<Vec<StoredCounter>> {
    serde_json::from_str(text).map_err(|e| Error::Storage {
        message: format!("{}: a reservation row is malformed ({e})", path.display()),
    })
}

struct Row {
    amount: NanoUsd,
    state: String,
    actual: Option<i64>,
    counters: Vec<StoredCounter>,
}

fn read_reservation(tx: &Transaction<'_>, id: &str, path: &Path) -> Result<Row> {
    let row: Option<(i64, String, Option<i64>, String)> = tx
        .prepare_cached("SELECT amount, state, actual, counters FROM reservations WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()
        })
        .map_err(|e| storage_error(path, &e))?;
    let (amount, state, actual, counters) = row
        .filter(|(_, state, _, _)| EventKind::parse(state).is_ok_and(EventKind::is_reservation))
        .ok_or_else(|| Error::UnknownReservation { id: id.to_owned() })?;
    Ok(Row {
        amount: NanoUsd::from_nanos_clamped(amount),
        state,
        actual,
        counters: parse_counters(&counters, path)?,
    })
}

fn end_reservation(
    tx: &Transaction<'_>,
    id: &str,
    outcome: Outcome,
    actual: NanoUsd,
    now: i64,
    tokens: Tokens,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE reservations SET state = ?2, actual = ?3, ended_at_ms = ?4,
         input_tokens = COALESCE(?5, input_tokens), output_tokens = COALESCE(?6, output_tokens) WHERE id = ?1",
    )?
    .execute(params![id, outcome.as_str(), actual.nanos(), now, tokens.input, tokens.output])?;
    Ok(())
}

/// Settles every due reservation at its reserved amount; with `prune = Some(keep_ms)`, also
/// forgets what ended longer ago than that.
fn sweep(tx: &Transaction<'_>, now: i64, prune: Option<i64>, path: &Path) -> Result<usize> {
    let fail = |e: rusqlite::Error| storage_error(path, &e);
    let due: Vec<(String, i64, String)> = tx
        .prepare_cached(
            "SELECT id, amount, counters FROM reservations WHERE state = 'active' AND expires_at_ms <= ?1 LIMIT 10000",
        )
        .and_then(|mut s| {
            s.query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(fail)?;
    for (id, amount, counters) in &due {
        let amount = NanoUsd::from_nanos_clamped(*amount);
        apply(
            tx,
            &parse_counters(counters, path)?,
            SettleMath::settle(amount, amount),
        )
        .map_err(fail)?;
        end_reservation(tx, id, Outcome::Expired, amount, now, Tokens::default()).map_err(fail)?;
    }
    if let Some(keep_ms) = prune {
        // Through the creation-time index: a row ends at most a TTL after it was created, and
        // rows created long ago but ended recently (late settlements) stay until they age too.
        tx.prepare_cached(
            "DELETE FROM reservations WHERE created_at_ms < ?1 AND state <> 'active' AND COALESCE(ended_at_ms, 0) < ?1",
        )
        .and_then(|mut s| s.execute([now.saturating_sub(keep_ms)]))
        .map_err(fail)?;
    }
    Ok(due.len())
}

/// The reservation a client-chosen id already names, if any, as a replayed answer.
fn replay(tx: &Transaction<'_>, id: &str, path: &Path) -> Result<Option<Reservation>> {
    let row: Option<(i64, String, Option<i64>, i64, String)> = tx
        .prepare_cached(
            "SELECT amount, state, requested, expires_at_ms, counters FROM reservations WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                .optional()
        })
        .map_err(|e| storage_error(path, &e))?;
    let Some((amount, state, requested, expires_at_ms, counters)) = row else {
        return Ok(None);
    };
    let kind = EventKind::parse(&state).map_err(|_| Error::Storage {
        message: format!(
            "{}: reservation {id:?} has an unknown state {state:?}",
            path.display()
        ),
    })?;
    if !kind.is_reservation() {
        return Err(Error::invalid(format!(
            "id {id:?} already names a {} event of this project; choose another id",
            kind.as_str()
        )));
    }
    Ok(Some(Reservation {
        id: id.to_owned(),
        amount: NanoUsd::from_nanos_clamped(amount),
        capped: requested.is_some_and(|r| amount < r),
        budgets: parse_counters(&counters, path)?.len(),
        expires_at_ms,
        replayed: true,
        ended: Outcome::parse(&state),
    }))
}

impl SqliteLedger {
    fn end(&self, id: &str, actual: Option<NanoUsd>) -> Result<Settlement> {
        let now = self.clock.now_ms();
        self.grouped(Op::End {
            id: id.to_owned(),
            actual,
            now,
        })
        .into_settlement()
    }

    /// One reservation inside the caller's transaction. The outer `Err` is a failure (undo
    /// what it wrote); the inner one a refusal, whose event (if recorded) is kept.
    fn reserve_in(
        &self,
        tx: &Transaction<'_>,
        cache: &mut Cache<'_>,
        req: &ReserveRequest<'_>,
        ttl_ms: i64,
        now: i64,
    ) -> Result<Result<Reservation>> {
        if now >= *cache.next_sweep_ms {
            cache.sweep(tx, now, self.options.keep_ended_ms)?;
        }
        if let Some(id) = req.id
            && let Some(r) = replay(tx, id, &self.path)?
        {
            return Ok(Ok(r));
        }
        let budgets = &*cache.budgets;
        let plan = plan_counters(budgets, req.call, now);
        let mut rows = Vec::with_capacity(plan.len());
        for c in &plan {
            rows.push(read_counter(tx, &budgets[c.budget].id, c).map_err(|e| self.err(&e))?);
        }
        let states: Vec<CounterState> = rows
            .iter()
            .map(|r| {
                let (spent, reserved, _) = r.unwrap_or_default();
                CounterState {
                    spent: NanoUsd::from_nanos_clamped(spent),
                    reserved: NanoUsd::from_nanos_clamped(reserved),
                }
            })
            .collect();
        let (amount, capped) = match decide(budgets, &plan, &states, req.amount, req.policy) {
            Decision::Reserve { amount, capped } => (amount, capped),
            Decision::Refuse { counter } => {
                let refusal = exceeded(budgets, &plan, &states, counter, req.amount);
                if let (true, Error::BudgetExceeded(x)) = (self.options.record_refusals, &refusal) {
                    let by = RefusedBy {
                        id: x.id.to_string(),
                        name: x.name.clone(),
                        key: x.key.clone(),
                    };
                    let by = serde_json::to_string(&by).map_err(|e| Error::Storage {
                        message: e.to_string(),
                    })?;
                    tx.prepare_cached(
                        "INSERT INTO reservations (id, amount, state, created_at_ms, expires_at_ms, ended_at_ms, counters,
                         tags, provider, model, requested, refused_by) VALUES (?1, 0, 'refused', ?2, ?2, ?2, '[]', ?3, ?4, ?5, ?6, ?7)",
                    )
                    .and_then(|mut s| s.execute(params![new_refusal_id(), now, tags_json(req.call), req.call.provider, req.call.model, req.amount.nanos(), by]))
                    .map_err(|e| self.err(&e))?;
                }
                return Ok(Err(refusal));
            }
        };
        let mut stored: Vec<StoredCounter> = Vec::with_capacity(plan.len());
        for (c, row) in plan.iter().zip(&rows) {
            let id = &*budgets[c.budget].id;
            let (spent, reserved, overrun) = row.unwrap_or_default();
            write_counter(
                tx,
                (id, &c.key, c.window_start_ms),
                (
                    NanoUsd::from_nanos_clamped(spent),
                    NanoUsd::from_nanos_clamped(reserved).saturating_add(amount),
                    NanoUsd::from_nanos_clamped(overrun),
                ),
            )
            .map_err(|e| self.err(&e))?;
            stored.push((id.to_owned(), c.key.clone(), c.window_start_ms));
        }
        let id = req.id.map_or_else(|| self.ids.next(), str::to_owned);
        let expires_at_ms = now.saturating_add(ttl_ms);
        let counters = serde_json::to_string(&stored).map_err(|e| Error::Storage {
            message: e.to_string(),
        })?;
        tx.prepare_cached(
            "INSERT INTO reservations (id, amount, state, created_at_ms, expires_at_ms, counters, tags, provider, model, requested)
             VALUES (?1, ?2, 'active', ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .and_then(|mut s| {
            s.execute(params![
                id, amount.nanos(), now, expires_at_ms, counters,
                tags_json(req.call), req.call.provider, req.call.model, req.amount.nanos()
            ])
        })
        .map_err(|e| self.err(&e))?;
        Ok(Ok(Reservation {
            id,
            amount,
            capped,
            budgets: stored.len(),
            expires_at_ms,
            replayed: false,
            ended: None,
        }))
    }

    fn end_in(
        &self,
        tx: &Transaction<'_>,
        id: &str,
        actual: Option<NanoUsd>,
        now: i64,
        tokens: Tokens,
    ) -> Result<Settlement> {
        let row = read_reservation(tx, id, &self.path)?;
        let ended = Outcome::parse(&row.state)
            .map(|o| (o, NanoUsd::from_nanos_clamped(row.actual.unwrap_or(0))));
        match EndPlan::new(row.amount, ended, actual) {
            EndPlan::Unchanged(report) => Ok(report),
            EndPlan::Apply {
                math,
                outcome,
                actual,
            } => {
                apply(tx, &row.counters, math).map_err(|e| self.err(&e))?;
                end_reservation(tx, id, outcome, actual, now, tokens).map_err(|e| self.err(&e))?;
                Ok(SettleMath::report(row.amount, actual, outcome, true))
            }
        }
    }
}

impl Ledger for SqliteLedger {
    fn upsert_budget(&self, spec: &BudgetSpec) -> Result<UpsertOutcome> {
        let now = self.clock.now_ms();
        self.write(|tx, cache| {
            let existing = cache.budgets.iter().find(|b| b.spec.name == spec.name).cloned();
            let (outcome, changed) = match existing {
                Some(b) if b.spec == *spec => (UpsertOutcome { id: b.id, created: false, previous: None }, false),
                Some(b) => {
                    tx.execute(
                        "UPDATE budgets SET match_json = ?2, limit_nanos = ?3, window = ?4, mode = ?5, updated_at_ms = ?6 WHERE id = ?1",
                        params![&*b.id, spec.selector.to_json(), spec.limit.nanos(), spec.window.as_str(), spec.mode.as_str(), now],
                    )
                    .map_err(|e| self.err(&e))?;
                    (UpsertOutcome { id: b.id, created: false, previous: Some(b.spec) }, true)
                }
                None => {
                    let id = new_budget_id();
                    tx.execute(
                        "INSERT INTO budgets (id, name, match_json, limit_nanos, window, mode, created_at_ms, updated_at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                        params![&*id, spec.name, spec.selector.to_json(), spec.limit.nanos(), spec.window.as_str(), spec.mode.as_str(), now],
                    )
                    .map_err(|e| self.err(&e))?;
                    (UpsertOutcome { id, created: true, previous: None }, true)
                }
            };
            if changed {
                cache.budgets_changed(tx)?;
            }
            Ok(outcome)
        })
    }

    fn remove_budget(&self, name: &str) -> Result<bool> {
        self.write(|tx, cache| {
            let n = tx
                .execute("DELETE FROM budgets WHERE name = ?1", [name])
                .map_err(|e| self.err(&e))?;
            if n > 0 {
                cache.budgets_changed(tx)?;
            }
            Ok(n > 0)
        })
    }

    fn budgets(&self) -> Result<Vec<Budget>> {
        self.read(|_, cache| Ok(cache.budgets.clone()))
    }

    fn reserve(&self, req: &ReserveRequest<'_>) -> Result<Reservation> {
        let ttl_ms = ttl(req.ttl_ms)?;
        if let Some(id) = req.id {
            super::validate_reservation_id(id)?;
        }
        let now = self.clock.now_ms();
        self.grouped(Op::Reserve {
            call: req.call.clone(),
            amount: req.amount,
            policy: req.policy,
            ttl_ms,
            id: req.id.map(str::to_owned),
            now,
        })
        .into_reservation()
    }

    fn settle(&self, id: &str, actual: NanoUsd) -> Result<Settlement> {
        self.end(id, Some(actual))
    }

    fn release(&self, id: &str) -> Result<Settlement> {
        self.end(id, None)
    }

    fn settle_batch(&self, items: &[(&str, Option<NanoUsd>)]) -> Result<Vec<Result<Settlement>>> {
        let now = self.clock.now_ms();
        self.write(|tx, _| {
            items
                .iter()
                .map(
                    |(id, actual)| match self.end_in(tx, id, *actual, now, Tokens::default()) {
                        Err(e @ Error::Storage { .. }) => Err(e),
                        other => Ok(other),
                    },
                )
                .collect()
        })
    }

    fn extend(&self, id: &str, ttl_ms: i64) -> Result<bool> {
        let ttl_ms = ttl(Some(ttl_ms))?;
        let now = self.clock.now_ms();
        self.write(|tx, _| {
            let row = read_reservation(tx, id, &self.path)?;
            if row.state != "active" {
                return Ok(false);
            }
            tx.prepare_cached("UPDATE reservations SET expires_at_ms = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![id, now.saturating_add(ttl_ms)]))
                .map_err(|e| self.err(&e))?;
            Ok(true)
        })
    }

    fn record(&self, call: &CallTags, actual: NanoUsd) -> Result<usize> {
        let now = self.clock.now_ms();
        self.write(|tx, cache| {
            let plan = plan_counters(cache.budgets, call, now);
            for c in &plan {
                let id = &*cache.budgets[c.budget].id;
                let (spent, reserved, overrun) = read_counter(tx, id, c)
                    .map_err(|e| self.err(&e))?
                    .unwrap_or_default();
                write_counter(
                    tx,
                    (id, &c.key, c.window_start_ms),
                    (
                        NanoUsd::from_nanos_clamped(spent).saturating_add(actual),
                        NanoUsd::from_nanos_clamped(reserved),
                        NanoUsd::from_nanos_clamped(overrun),
                    ),
                )
                .map_err(|e| self.err(&e))?;
            }
            Ok(plan.len())
        })
    }

    fn expire(&self) -> Result<usize> {
        let now = self.clock.now_ms();
        self.write(|tx, cache| cache.sweep(tx, now, self.options.keep_ended_ms))
    }

    fn status(&self) -> Result<Vec<BudgetStatus>> {
        let now = self.clock.now_ms();
        self.read(|tx, cache| {
            let mut out = Vec::new();
            let mut stmt = tx
                .prepare_cached(
                    "SELECT key, spent, reserved, overrun FROM counters WHERE budget_id = ?1 AND window_start_ms = ?2 ORDER BY key",
                )
                .map_err(|e| self.err(&e))?;
            for b in cache.budgets.iter() {
                let start = b.spec.window.start_ms(now);
                let resets_at_ms = b.spec.window.end_ms(start);
                let rows: Vec<(String, i64, i64, i64)> = stmt
                    .query_map(params![&*b.id, start], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .and_then(Iterator::collect)
                    .map_err(|e| self.err(&e))?;
                let status = |key: Option<String>, spent: i64, reserved: i64, overrun: i64| BudgetStatus {
                    budget: b.clone(),
                    key,
                    spent: NanoUsd::from_nanos_clamped(spent),
                    reserved: NanoUsd::from_nanos_clamped(reserved),
                    overrun: NanoUsd::from_nanos_clamped(overrun),
                    window_start_ms: start,
                    resets_at_ms,
                };
                if rows.is_empty() && !b.spec.selector.is_template() {
                    out.push(status(None, 0, 0, 0));
                }
                for (key, spent, reserved, overrun) in rows {
                    out.push(status((!key.is_empty()).then_some(key), spent, reserved, overrun));
                }
            }
            Ok(out)
        })
    }
}
