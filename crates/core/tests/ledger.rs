//! The ledger's contract (SPEC §1, §2), run against both stores: the in-memory ledger and a real
//! SQLite file.

use std::sync::Arc;

use bursora_core::budget::{BudgetSpec, CallTags, Mode, Selector, Tags};
use bursora_core::clock::ManualClock;
use bursora_core::ledger::{Ledger, MemoryLedger, Outcome, Policy, ReserveRequest, SqliteLedger};
use bursora_core::window::Window;
use bursora_core::{Error, NanoUsd};

/// 2026-11-25T23:59:59.000Z, a Wednesday, one second before a day boundary.
const BEFORE_MIDNIGHT: i64 = 1_795_651_199_000;

fn n(x: i64) -> NanoUsd {
    NanoUsd::from_nanos(x).unwrap()
}

fn spec(name: &str, pairs: &[(&str, &str)], limit: i64, window: Window, mode: Mode) -> BudgetSpec {
    BudgetSpec::new(
        name,
        Selector::new(pairs.iter().copied()).unwrap(),
        n(limit),
        window,
        mode,
    )
    .unwrap()
}

fn call(pairs: &[(&str, &str)]) -> CallTags {
    CallTags {
        tags: Tags::new(pairs.iter().copied()).unwrap(),
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
    }
}

fn req(call: &CallTags, amount: i64) -> ReserveRequest<'_> {
    ReserveRequest {
        call,
        amount: n(amount),
        policy: Policy::Block,
        ttl_ms: None,
        id: None,
    }
}

struct Store {
    name: &'static str,
    ledger: Box<dyn Ledger>,
    clock: ManualClock,
    _dir: Option<tempfile::TempDir>,
}

fn stores() -> Vec<Store> {
    let mem_clock = ManualClock::new(BEFORE_MIDNIGHT);
    let sql_clock = ManualClock::new(BEFORE_MIDNIGHT);
    let dir = tempfile::tempdir().unwrap();
    let sqlite =
        SqliteLedger::open_with_clock(dir.path().join("ledger.db"), Arc::new(sql_clock.clone()))
            .unwrap();
    vec![
        Store {
            name: "memory",
            ledger: Box::new(MemoryLedger::with_clock(Arc::new(mem_clock.clone()))),
            clock: mem_clock,
            _dir: None,
        },
        Store {
            name: "sqlite",
            ledger: Box::new(sqlite),
            clock: sql_clock,
            _dir: Some(dir),
        },
    ]
}

fn status_of(l: &dyn Ledger, name: &str, key: Option<&str>) -> (i64, i64, i64) {
    let s = l.status().unwrap();
    s.iter()
        .find(|s| s.budget.spec.name == name && s.key.as_deref() == key)
        .map_or((0, 0, 0), |s| {
            (s.spent.nanos(), s.reserved.nanos(), s.overrun.nanos())
        })
}

fn exceeded(e: Error) -> Box<bursora_core::ledger::Exceeded> {
    match e {
        Error::BudgetExceeded(x) => x,
        other => panic!("expected BudgetExceeded, got {other:?}"),
    }
}

#[test]
fn reserve_settle_refund_and_idempotency() {
    for s in stores() {
        let l = &*s.ledger;
        l.upsert_budget(&spec("daily", &[], 1_000, Window::Day, Mode::Block))
            .unwrap();
        let c = call(&[]);
        let r = l.reserve(&req(&c, 600)).unwrap();
        assert_eq!(
            (r.amount, r.capped, r.budgets),
            (n(600), false, 1),
            "{}",
            s.name
        );
        assert_eq!(status_of(l, "daily", None), (0, 600, 0), "{}", s.name);
        // Does not fit: 600 held + 500 > 1000. Nothing changes.
        let e = exceeded(l.reserve(&req(&c, 500)).unwrap_err());
        assert_eq!(
            (e.limit, e.spent, e.reserved, e.requested),
            (n(1_000), n(0), n(600), n(500)),
            "{}",
            s.name
        );
        assert!(e.to_string().contains("\"daily\""), "{e}");
        assert!(
            e.to_string().contains("resets at 2026-11-26T00:00:00Z"),
            "{e}"
        );
        let st = l.settle(&r.id, n(250)).unwrap();
        assert_eq!(
            (st.refunded, st.overrun, st.outcome, st.applied),
            (n(350), n(0), Outcome::Settled, true)
        );
        assert_eq!(status_of(l, "daily", None), (250, 0, 0), "{}", s.name);
        // Settling again changes nothing and reports the first settlement.
        let again = l.settle(&r.id, n(999)).unwrap();
        assert_eq!((again.actual, again.applied), (n(250), false), "{}", s.name);
        assert!(!l.release(&r.id).unwrap().applied);
        assert_eq!(status_of(l, "daily", None), (250, 0, 0), "{}", s.name);
        // Now 500 fits.
        let r2 = l.reserve(&req(&c, 500)).unwrap();
        let rel = l.release(&r2.id).unwrap();
        assert_eq!(
            (rel.actual, rel.refunded, rel.outcome),
            (n(0), n(500), Outcome::Released)
        );
        assert_eq!(status_of(l, "daily", None), (250, 0, 0), "{}", s.name);
        assert!(matches!(
            l.settle("res_nope", n(1)),
            Err(Error::UnknownReservation { .. })
        ));
    }
}

#[test]
fn overruns_are_recorded_and_later_calls_see_true_spend() {
    for s in stores() {
        let l = &*s.ledger;
        l.upsert_budget(&spec("cap", &[], 1_000, Window::Total, Mode::Block))
            .unwrap();
        let c = call(&[]);
        let r = l.reserve(&req(&c, 100)).unwrap();
        let st = l.settle(&r.id, n(900)).unwrap();
        assert_eq!(st.overrun, n(800), "{}", s.name);
        assert_eq!(status_of(l, "cap", None), (900, 0, 800), "{}", s.name);
        assert!(l.reserve(&req(&c, 101)).is_err(), "{}", s.name);
        assert!(l.reserve(&req(&c, 100)).is_ok(), "{}", s.name);
    }
}

#[test]
fn ttl_expiry_settles_at_reserved_amount_and_late_settle_corrects_it() {
    for s in stores() {
        let l = &*s.ledger;
        l.upsert_budget(&spec("cap", &[], 1_000, Window::Total, Mode::Block))
            .unwrap();
        let c = call(&[]);
        let r = l
            .reserve(&ReserveRequest {
                ttl_ms: Some(5_000),
                id: None,
                ..req(&c, 300)
            })
            .unwrap();
        let kept = l
            .reserve(&ReserveRequest {
                ttl_ms: Some(5_000),
                id: None,
                ..req(&c, 100)
            })
            .unwrap();
        s.clock.advance(4_000);
        assert!(l.extend(&kept.id, 5_000).unwrap(), "{}", s.name);
        assert_eq!(l.expire().unwrap(), 0, "{}", s.name);
        s.clock.advance(1_001);
        assert_eq!(l.expire().unwrap(), 1, "{}", s.name);
        assert_eq!(status_of(l, "cap", None), (300, 100, 0), "{}", s.name);
        assert!(!l.extend(&r.id, 5_000).unwrap(), "{}", s.name);
        // The caller's settlement arrives late: the truth replaces the reserved amount.
        let late = l.settle(&r.id, n(120)).unwrap();
        assert_eq!(
            (late.actual, late.outcome, late.applied),
            (n(120), Outcome::Settled, true)
        );
        assert_eq!(status_of(l, "cap", None), (120, 100, 0), "{}", s.name);
        assert!(!l.settle(&r.id, n(120)).unwrap().applied);
        // The extended one expires later, through the sweep that a reserve runs.
        s.clock.advance(10_000);
        l.reserve(&req(&c, 1)).unwrap();
        assert_eq!(status_of(l, "cap", None), (220, 1, 0), "{}", s.name);
    }
}

#[test]
fn windows_split_at_utc_boundary_and_refunds_go_to_the_old_window() {
    for s in stores() {
        let l = &*s.ledger;
        l.upsert_budget(&spec("daily", &[], 1_000, Window::Day, Mode::Block))
            .unwrap();
        let c = call(&[]);
        s.clock.set(BEFORE_MIDNIGHT + 999); // 23:59:59.999
        let before = l.reserve(&req(&c, 800)).unwrap();
        s.clock.set(BEFORE_MIDNIGHT + 1_000); // 00:00:00.000 next day
        let after = l.reserve(&req(&c, 900)).unwrap(); // a fresh window: fits
        assert_eq!(status_of(l, "daily", None), (0, 900, 0), "{}", s.name);
        l.settle(&before.id, n(100)).unwrap(); // refund of 700 after the boundary
        l.settle(&after.id, n(50)).unwrap();
        assert_eq!(status_of(l, "daily", None), (50, 0, 0), "{}", s.name);
        s.clock.set(BEFORE_MIDNIGHT + 999);
        assert_eq!(
            status_of(l, "daily", None),
            (100, 0, 0),
            "{} old window keeps its own books",
            s.name
        );
        let st = l.status().unwrap();
        assert_eq!(st[0].resets_at_ms, Some(BEFORE_MIDNIGHT + 1_000));
    }
}

#[test]
fn every_window_resets_at_its_boundary() {
    for window in Window::ALL {
        for s in stores() {
            let l = &*s.ledger;
            l.upsert_budget(&spec("w", &[], 100, window, Mode::Block))
                .unwrap();
            let c = call(&[]);
            let start = window.start_ms(BEFORE_MIDNIGHT);
            let r = l.reserve(&req(&c, 100)).unwrap();
            l.settle(&r.id, n(100)).unwrap();
            assert!(l.reserve(&req(&c, 1)).is_err(), "{} {window}", s.name);
            match window.end_ms(start) {
                Some(end) => {
                    s.clock.set(end - 1);
                    assert!(
                        l.reserve(&req(&c, 1)).is_err(),
                        "{} {window} just before reset",
                        s.name
                    );
                    s.clock.set(end);
                    assert!(
                        l.reserve(&req(&c, 100)).is_ok(),
                        "{} {window} right after reset",
                        s.name
                    );
                }
                None => {
                    s.clock.advance(400 * 24 * 3_600_000);
                    assert!(
                        l.reserve(&req(&c, 1)).is_err(),
                        "{} total never resets",
                        s.name
                    );
                }
            }
        }
    }
}

#[test]
fn templates_give_each_value_its_own_counter() {
    for s in stores() {
        let l = &*s.ledger;
        l.upsert_budget(&spec(
            "per-tenant",
            &[("tenant_id", "*")],
            100,
            Window::Day,
            Mode::Block,
        ))
        .unwrap();
        let a = call(&[("tenant_id", "acme")]);
        let b = call(&[("tenant_id", "globex")]);
        let none = call(&[("agent", "x")]);
        l.reserve(&req(&a, 100)).unwrap();
        assert!(l.reserve(&req(&a, 1)).is_err(), "{}", s.name);
        l.reserve(&req(&b, 100)).unwrap();
        // No tenant_id: the template does not apply.
        let r = l.reserve(&req(&none, 1_000_000)).unwrap();
        assert_eq!(r.budgets, 0);
        let e = exceeded(l.reserve(&req(&b, 1)).unwrap_err());
        assert_eq!(e.key.as_deref(), Some("tenant_id=globex"));
        assert_eq!(
            status_of(l, "per-tenant", Some("tenant_id=acme")),
            (0, 100, 0),
            "{}",
            s.name
        );
        assert_eq!(
            status_of(l, "per-tenant", Some("tenant_id=globex")),
            (0, 100, 0),
            "{}",
            s.name
        );
        assert_eq!(l.status().unwrap().len(), 2, "{}", s.name);
    }
}

#[test]
fn all_or_nothing_across_matching_budgets() {
    for s in stores() {
        let l = &*s.ledger;
        l.upsert_budget(&spec("org", &[], 10_000, Window::Month, Mode::Block))
            .unwrap();
        l.upsert_budget(&spec(
            "tenant",
            &[("tenant_id", "*")],
            5_000,
            Window::Day,
            Mode::Block,
        ))
        .unwrap();
        l.upsert_budget(&spec(
            "model",
            &[("model", "gpt-4o-mini")],
            300,
            Window::Hour,
            Mode::Block,
        ))
        .unwrap();
        l.upsert_budget(&spec("watch", &[], 1, Window::Day, Mode::Notify))
            .unwrap();
        let c = call(&[("tenant_id", "acme")]);
        let r = l.reserve(&req(&c, 300)).unwrap();
        assert_eq!(r.budgets, 4, "{}", s.name);
        // The third budget is full: the call is refused and reserves in none.
        let e = exceeded(l.reserve(&req(&c, 200)).unwrap_err());
        assert_eq!(e.name, "model");
        assert_eq!(status_of(l, "org", None), (0, 300, 0), "{}", s.name);
        assert_eq!(
            status_of(l, "tenant", Some("tenant_id=acme")),
            (0, 300, 0),
            "{}",
            s.name
        );
        assert_eq!(status_of(l, "model", None), (0, 300, 0), "{}", s.name);
        // The notify budget counts beyond its limit but never blocks.
        assert_eq!(status_of(l, "watch", None), (0, 300, 0), "{}", s.name);
    }
}

#[test]
fn fit_policy_reserves_the_tightest_headroom() {
    for s in stores() {
        let l = &*s.ledger;
        l.upsert_budget(&spec("a", &[], 1_000, Window::Day, Mode::Block))
            .unwrap();
        l.upsert_budget(&spec("b", &[], 700, Window::Day, Mode::Block))
            .unwrap();
        let c = call(&[]);
        l.reserve(&req(&c, 400)).unwrap();
        let fit = |amount, min| ReserveRequest {
            call: &c,
            amount: n(amount),
            policy: Policy::Fit { min: n(min) },
            ttl_ms: None,
            id: None,
        };
        let r = l.reserve(&fit(500, 100)).unwrap();
        assert_eq!((r.amount, r.capped), (n(300), true), "{}", s.name);
        assert!(
            l.reserve(&fit(500, 1)).is_err(),
            "{} no headroom left",
            s.name
        );
        assert_eq!(status_of(l, "a", None), (0, 700, 0));
        l.release(&r.id).unwrap();
        assert!(
            l.reserve(&fit(500, 301)).is_err(),
            "{} headroom below the minimum",
            s.name
        );
        let whole = l.reserve(&fit(200, 100)).unwrap();
        assert_eq!((whole.amount, whole.capped), (n(200), false));
    }
}

#[test]
fn upsert_by_name_updates_limits_and_remove_stops_matching() {
    for s in stores() {
        let l = &*s.ledger;
        let first = l
            .upsert_budget(&spec("daily", &[], 100, Window::Day, Mode::Block))
            .unwrap();
        assert!(first.created);
        let same = l
            .upsert_budget(&spec("daily", &[], 100, Window::Day, Mode::Block))
            .unwrap();
        assert_eq!(
            (same.created, same.previous.is_none(), &same.id),
            (false, true, &first.id)
        );
        let c = call(&[]);
        l.reserve(&req(&c, 100)).unwrap();
        assert!(l.reserve(&req(&c, 50)).is_err());
        let raised = l
            .upsert_budget(&spec("daily", &[], 150, Window::Day, Mode::Block))
            .unwrap();
        assert_eq!(raised.previous.map(|p| p.limit), Some(n(100)), "{}", s.name);
        l.reserve(&req(&c, 50)).unwrap();
        assert!(l.remove_budget("daily").unwrap());
        assert!(!l.remove_budget("daily").unwrap());
        assert_eq!(l.reserve(&req(&c, 1_000_000)).unwrap().budgets, 0);
        assert!(l.budgets().unwrap().is_empty());
    }
}

#[test]
fn unreserved_usage_is_recorded_into_current_windows() {
    for s in stores() {
        let l = &*s.ledger;
        l.upsert_budget(&spec(
            "daily",
            &[("tenant_id", "*")],
            1_000,
            Window::Day,
            Mode::Block,
        ))
        .unwrap();
        let c = call(&[("tenant_id", "t1")]);
        assert_eq!(l.record(&c, n(990)).unwrap(), 1);
        assert_eq!(
            status_of(l, "daily", Some("tenant_id=t1")),
            (990, 0, 0),
            "{}",
            s.name
        );
        assert!(l.reserve(&req(&c, 11)).is_err(), "{}", s.name);
    }
}

#[test]
fn bad_input_gives_typed_errors() {
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        let e = BudgetSpec::limit_from_usd("daily", bad).unwrap_err();
        assert_eq!(e.code(), "invalid_input");
    }
    let e = "fortnight".parse::<Window>().unwrap_err();
    assert!(e.to_string().contains("use one of"), "{e}");
    assert!(BudgetSpec::new("  ", Selector::default(), n(1), Window::Day, Mode::Block).is_err());
    assert!(Selector::new([("tenant id", "*")]).is_err());
    for s in stores() {
        let c = call(&[]);
        let e = s
            .ledger
            .reserve(&ReserveRequest {
                ttl_ms: Some(0),
                id: None,
                ..req(&c, 1)
            })
            .unwrap_err();
        assert_eq!(e.code(), "invalid_input", "{}", s.name);
    }
}

#[test]
fn corrupt_or_read_only_sqlite_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(&corrupt, b"this is not a sqlite database, just some text that is long enough to look like a header....").unwrap();
    let e = SqliteLedger::open(&corrupt).unwrap_err();
    assert_eq!(e.code(), "storage");
    assert!(
        e.to_string().contains("not a Bursora ledger or is corrupt"),
        "{e}"
    );

    // A valid database whose pages were damaged after the header.
    let damaged = dir.path().join("damaged.db");
    {
        let l = SqliteLedger::open(&damaged).unwrap();
        l.upsert_budget(&spec("x", &[], 1, Window::Day, Mode::Block))
            .unwrap();
    }
    let mut bytes = std::fs::read(&damaged).unwrap();
    for b in bytes.iter_mut().skip(100) {
        *b = 0xA5;
    }
    std::fs::write(&damaged, &bytes).unwrap();
    let _ = std::fs::remove_file(dir.path().join("damaged.db-wal"));
    let _ = std::fs::remove_file(dir.path().join("damaged.db-shm"));
    let e = SqliteLedger::open(&damaged)
        .and_then(|l| l.status())
        .unwrap_err();
    assert_eq!(e.code(), "storage", "{e}");

    // Read-only: through SQLite's own read-only mode (root ignores file permissions).
    let ro = dir.path().join("ro.db");
    drop(SqliteLedger::open(&ro).unwrap());
    let uri = format!("file:{}?mode=ro", ro.display());
    let e = SqliteLedger::open(&uri).unwrap_err();
    assert_eq!(e.code(), "storage");
    assert!(e.to_string().contains("read-only"), "{e}");

    let e = SqliteLedger::open(dir.path().join("missing-dir/ledger.db")).unwrap_err();
    assert!(e.to_string().contains("cannot open"), "{e}");
}

#[test]
fn a_sqlite_file_keeps_its_books_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let c = call(&[]);
    let id = {
        let l = SqliteLedger::open(&path).unwrap();
        l.upsert_budget(&spec("cap", &[], 1_000, Window::Total, Mode::Block))
            .unwrap();
        l.reserve(&req(&c, 400)).unwrap().id
    };
    let l = SqliteLedger::open(&path).unwrap();
    assert_eq!(status_of(&l, "cap", None), (0, 400, 0));
    l.settle(&id, n(10)).unwrap();
    assert_eq!(status_of(&l, "cap", None), (10, 0, 0));
}

#[test]
fn batched_settlements_are_each_judged_and_applied_once() {
    for s in stores() {
        let l = &*s.ledger;
        l.upsert_budget(&spec("cap", &[], 10_000, Window::Total, Mode::Block))
            .unwrap();
        let c = call(&[]);
        let a = l.reserve(&req(&c, 1_000)).unwrap();
        let b = l.reserve(&req(&c, 1_000)).unwrap();
        let items = [
            (a.id.as_str(), Some(n(400))),
            ("res_unknown", Some(n(5))),
            (b.id.as_str(), None),
            (a.id.as_str(), Some(n(900))), // a duplicate delivery in the same batch
        ];
        let results = l.settle_batch(&items).unwrap();
        assert_eq!(results.len(), 4);
        assert_eq!(results[0].as_ref().unwrap().actual, n(400), "{}", s.name);
        assert_eq!(
            results[1].as_ref().unwrap_err().code(),
            "unknown_reservation"
        );
        assert_eq!(results[2].as_ref().unwrap().outcome, Outcome::Released);
        assert!(!results[3].as_ref().unwrap().applied, "{}", s.name);
        assert_eq!(status_of(l, "cap", None), (400, 0, 0), "{}", s.name);
        // Delivered again as a whole (a retry after a lost answer): nothing changes.
        l.settle_batch(&items).unwrap();
        assert_eq!(status_of(l, "cap", None), (400, 0, 0), "{}", s.name);
    }
}
