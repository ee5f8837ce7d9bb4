//! Client-chosen reservation ids on both ledgers, and the SQLite ledger's call history: an
//! existing (schema 1) file migrated in place, usage delivered once, refusals remembered,
//! retention.

use std::sync::Arc;

use bursora_core::budget::{BudgetSpec, CallTags, Mode, Selector, Tags};
use bursora_core::clock::ManualClock;
use bursora_core::ledger::history::{
    EventKind, EventQuery, GroupBy, SettleWith, SpendQuery, Tokens, UsageItem, UsageOutcome,
};
use bursora_core::ledger::{
    Ledger, MemoryLedger, Outcome, Policy, ReserveRequest, SqliteLedger, SqliteOptions,
};
use bursora_core::window::Window;
use bursora_core::{Error, NanoUsd};

/// 2026-11-25T12:00:00.000Z.
const NOON: i64 = 1_795_608_000_000;
const DAY: i64 = 86_400_000;

fn n(x: i64) -> NanoUsd {
    NanoUsd::from_nanos(x).unwrap()
}

fn daily(limit: i64) -> BudgetSpec {
    BudgetSpec::new(
        "daily",
        Selector::default(),
        n(limit),
        Window::Day,
        Mode::Block,
    )
    .unwrap()
}

fn call(tenant: &str) -> CallTags {
    CallTags {
        tags: Tags::new([("tenant_id", tenant)]).unwrap(),
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
    }
}

fn req<'a>(call: &'a CallTags, amount: i64, id: Option<&'a str>) -> ReserveRequest<'a> {
    ReserveRequest {
        call,
        amount: n(amount),
        policy: Policy::Block,
        ttl_ms: None,
        id,
    }
}

fn sqlite(dir: &tempfile::TempDir, clock: &ManualClock, keep_ms: Option<i64>) -> SqliteLedger {
    // As the server opens its ledgers.
    let mut options = SqliteOptions {
        record_refusals: true,
        history_indexes: true,
        ..SqliteOptions::default()
    };
    if let Some(k) = keep_ms {
        options.keep_ended_ms = k;
    }
    SqliteLedger::open_with_options(
        dir.path().join("ledger.db"),
        Arc::new(clock.clone()),
        options,
    )
    .unwrap()
}

#[test]
fn a_client_chosen_id_makes_reserve_idempotent_on_both_ledgers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOON);
    let ledgers: Vec<Box<dyn Ledger>> = vec![
        Box::new(MemoryLedger::with_clock(Arc::new(clock.clone()))),
        Box::new(sqlite(&dir, &clock, None)),
    ];
    for l in &ledgers {
        l.upsert_budget(&daily(1000)).unwrap();
        let c = call("acme");
        let first = l.reserve(&req(&c, 600, Some("call-00001"))).unwrap();
        assert_eq!((first.id.as_str(), first.replayed), ("call-00001", false));
        let again = l.reserve(&req(&c, 900, Some("call-00001"))).unwrap();
        assert!(again.replayed);
        assert_eq!(
            (again.amount, again.budgets, again.ended),
            (n(600), 1, None)
        );
        assert_eq!(l.status().unwrap()[0].reserved, n(600));
        l.settle("call-00001", n(500)).unwrap();
        let again = l.reserve(&req(&c, 600, Some("call-00001"))).unwrap();
        assert_eq!(
            (again.replayed, again.ended),
            (true, Some(Outcome::Settled))
        );
        assert_eq!(
            (
                l.status().unwrap()[0].spent,
                l.status().unwrap()[0].reserved
            ),
            (n(500), n(0))
        );
        // A refusal leaves nothing: the repeat decides anew, and fits once there is room.
        for _ in 0..2 {
            assert!(matches!(
                l.reserve(&req(&c, 600, Some("call-00002"))),
                Err(Error::BudgetExceeded(_))
            ));
        }
        l.upsert_budget(&daily(2000)).unwrap();
        let r = l.reserve(&req(&c, 600, Some("call-00002"))).unwrap();
        assert!(!r.replayed);
        // Generated ids still work; bad ids are refused before anything is reserved.
        assert!(!l.reserve(&req(&c, 1, None)).unwrap().replayed);
        for bad in ["short", "has a space", &"x".repeat(65), "ünicode-id"] {
            assert!(matches!(
                l.reserve(&req(&c, 1, Some(bad))),
                Err(Error::InvalidInput { .. })
            ));
        }
    }
}

/// Schema 1 as the first released SQLite ledger wrote it.
const SCHEMA_V1: &str = "
CREATE TABLE bursora_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO bursora_meta (key, value) VALUES ('budgets_version', 1);
CREATE TABLE budgets (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, match_json TEXT NOT NULL,
    limit_nanos INTEGER NOT NULL CHECK (limit_nanos >= 0), window TEXT NOT NULL, mode TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL);
CREATE TABLE counters (
    budget_id TEXT NOT NULL, key TEXT NOT NULL, window_start_ms INTEGER NOT NULL,
    spent INTEGER NOT NULL DEFAULT 0 CHECK (spent >= 0), reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    overrun INTEGER NOT NULL DEFAULT 0 CHECK (overrun >= 0),
    PRIMARY KEY (budget_id, key, window_start_ms)) WITHOUT ROWID;
CREATE TABLE reservations (
    id TEXT PRIMARY KEY, amount INTEGER NOT NULL CHECK (amount >= 0), state TEXT NOT NULL, actual INTEGER,
    created_at_ms INTEGER NOT NULL, expires_at_ms INTEGER NOT NULL, ended_at_ms INTEGER, counters TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX reservations_due ON reservations (expires_at_ms) WHERE state = 'active';
PRAGMA user_version = 1;
";

#[test]
fn a_schema_1_file_is_migrated_in_place_and_keeps_its_books() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let day_start = Window::Day.start_ms(NOON);
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(SCHEMA_V1).unwrap();
        db.execute(
            "INSERT INTO budgets VALUES ('bud_old', 'daily', '{}', 1000, 'day', 'block', 0, 0)",
            [],
        )
        .unwrap();
        db.execute(
            "INSERT INTO counters VALUES ('bud_old', '', ?1, 100, 300, 0)",
            [day_start],
        )
        .unwrap();
        db.execute(
            "INSERT INTO reservations VALUES ('res_old_1', 300, 'active', NULL, ?1, ?2, NULL, ?3)",
            rusqlite::params![
                NOON - 1000,
                NOON + 600_000,
                format!("[[\"bud_old\",\"\",{day_start}]]")
            ],
        )
        .unwrap();
    }
    let clock = ManualClock::new(NOON);
    for _ in 0..2 {
        // Twice: the migration is applied once, then recognised.
        let l = SqliteLedger::open_with_clock(&path, Arc::new(clock.clone())).unwrap();
        assert_eq!(l.status().unwrap()[0].reserved.nanos() % 300, 0);
    }
    let l = SqliteLedger::open_with_clock(&path, Arc::new(clock.clone())).unwrap();
    let s = l
        .settle_batch_with(&[SettleWith {
            id: "res_old_1".into(),
            actual: Some(n(250)),
            tokens: Tokens {
                input: Some(12),
                output: Some(34),
            },
        }])
        .unwrap();
    assert!(s[0].as_ref().unwrap().applied);
    let c = call("acme");
    l.reserve(&req(&c, 100, Some("new-call-1"))).unwrap();
    let st = &l.status().unwrap()[0];
    assert_eq!((st.spent, st.reserved), (n(350), n(100)));
    let events = l
        .events(&EventQuery {
            limit: 10,
            ..EventQuery::default()
        })
        .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].id, "new-call-1");
    assert_eq!(events[0].model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(events[0].requested, Some(n(100)));
    let old = &events[1];
    assert_eq!(
        (old.id.as_str(), old.kind),
        ("res_old_1", EventKind::Settled)
    );
    assert_eq!((old.tags.as_ref(), old.model.as_ref()), (None, None));
    assert_eq!((old.input_tokens, old.output_tokens), (Some(12), Some(34)));
    drop(l);
    let db = rusqlite::Connection::open(&path).unwrap();
    let (user, history): (i64, i64) = db
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version), (SELECT value FROM bursora_meta WHERE key = 'schema_version')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    // Older code still opens the file: the additive version is in bursora_meta.
    assert_eq!((user, history), (1, 2));
}

#[test]
fn usage_is_recorded_once_and_refusals_are_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOON);
    let l = sqlite(&dir, &clock, None);
    l.upsert_budget(&daily(1000)).unwrap();
    let c = call("acme");
    l.reserve(&req(&c, 400, Some("reserved-1"))).unwrap();
    let items = vec![
        UsageItem {
            id: "reserved-1".into(),
            call: c.clone(),
            actual: n(300),
            at_ms: None,
            tokens: Tokens::default(),
        },
        UsageItem {
            id: "offline-1".into(),
            call: call("globex"),
            actual: n(50),
            at_ms: Some(NOON - DAY),
            tokens: Tokens::default(),
        },
        UsageItem {
            id: "offline-2".into(),
            call: call("globex"),
            actual: n(5_000),
            at_ms: Some(NOON + DAY),
            tokens: Tokens::default(),
        },
    ];
    let first = l.usage_batch(&items).unwrap();
    assert!(first.iter().all(UsageOutcome::applied));
    assert!(matches!(first[0], UsageOutcome::Settled(_)));
    let again = l.usage_batch(&items).unwrap();
    assert!(again.iter().all(|o| !o.applied()));
    // Today: 300 + 5000 (a future time counts as now: never refused, even over the limit).
    assert_eq!(l.status().unwrap()[0].spent, n(5_300));
    let windows = l
        .windows(&l.budgets().unwrap()[0].id, 0, i64::MAX, 10)
        .unwrap();
    assert_eq!(windows.len(), 2);
    assert_eq!(
        (windows[1].window_start_ms, windows[1].spent),
        (Window::Day.start_ms(NOON - DAY), n(50))
    );
    // Over the limit now: refused, and remembered with the refusing budget.
    assert!(l.reserve(&req(&c, 1, None)).is_err());
    let refused = l
        .events(&EventQuery {
            kinds: vec![EventKind::Refused],
            limit: 10,
            ..EventQuery::default()
        })
        .unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].refused_by.as_ref().unwrap().name, "daily");
    assert_eq!(refused[0].requested, Some(n(1)));
    let by_tenant = l
        .spend(&SpendQuery {
            from_ms: 0,
            to_ms: i64::MAX,
            bucket_ms: None,
            group_by: Some(GroupBy::Tag("tenant_id".into())),
            limit: 10,
        })
        .unwrap();
    let got: Vec<(Option<&str>, i64, u64)> = by_tenant
        .iter()
        .map(|r| (r.value.as_deref(), r.spent.nanos(), r.calls))
        .collect();
    assert_eq!(got, [(Some("globex"), 5_050, 2), (Some("acme"), 300, 1)]);
}

#[test]
fn history_is_kept_for_the_retention_then_forgotten() {
    let dir_short = tempfile::tempdir().unwrap();
    let dir_default = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOON);
    let short = sqlite(&dir_short, &clock, Some(DAY));
    let default = sqlite(&dir_default, &clock, None);
    for l in [&short, &default] {
        l.upsert_budget(&daily(1000)).unwrap();
        let c = call("acme");
        let r = l.reserve(&req(&c, 10, None)).unwrap();
        l.settle(&r.id, n(5)).unwrap();
    }
    clock.set(NOON + 3 * DAY);
    let all = EventQuery {
        limit: 10,
        ..EventQuery::default()
    };
    for l in [&short, &default] {
        l.expire().unwrap();
    }
    assert!(short.events(&all).unwrap().is_empty());
    assert_eq!(default.events(&all).unwrap().len(), 1);
    clock.set(NOON + 8 * DAY);
    default.expire().unwrap();
    assert!(default.events(&all).unwrap().is_empty());
}

#[test]
fn embedded_refusals_write_nothing_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOON);
    let l = SqliteLedger::open_with_clock(dir.path().join("ledger.db"), Arc::new(clock)).unwrap();
    l.upsert_budget(&daily(10)).unwrap();
    let c = call("acme");
    assert!(matches!(
        l.reserve(&req(&c, 11, None)),
        Err(Error::BudgetExceeded(_))
    ));
    let events = l
        .events(&EventQuery {
            limit: 10,
            ..EventQuery::default()
        })
        .unwrap();
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn spend_queries_read_a_covering_index_on_the_server_only() {
    let dir = tempfile::tempdir().unwrap();
    drop(sqlite(&dir, &ManualClock::new(NOON), None));
    let db = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
    // Spend queries (the dashboard's breakdowns and series) are answered from the partial
    // covering index alone, never from the table's random-id primary key.
    for group in ["model", "provider", "json_extract(tags, '$.\"tenant_id\"')"] {
        let plan: Vec<String> = db
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT (created_at_ms / 3600000) * 3600000 AS b, {group} AS g, SUM(actual) AS s, COUNT(*)
                 FROM reservations WHERE created_at_ms >= 0 AND created_at_ms < 1 AND state IN ('settled', 'expired', 'usage')
                 GROUP BY b, g"
            ))
            .unwrap()
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|d| d.contains("COVERING INDEX reservations_spent")),
            "{group}: {plan:?}"
        );
    }
    // The embedded SDK (default options) never runs these queries and goes without the index:
    // it would cost every settlement an index write.
    let embedded = dir.path().join("embedded.db");
    drop(
        SqliteLedger::open_with_options(
            &embedded,
            Arc::new(ManualClock::new(NOON)),
            SqliteOptions::default(),
        )
        .unwrap(),
    );
    let count: i64 = rusqlite::Connection::open(&embedded)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'reservations_spent'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(count, 0);
}
