//! Racing tests: many threads, and several OS processes on one SQLite file, reserve against one
//! budget whose cap admits exactly K calls. Every admitted call and every nano-USD is counted.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use bursora_core::NanoUsd;
use bursora_core::budget::{BudgetSpec, CallTags, Mode, Selector, Tags};
use bursora_core::ledger::{Ledger, MemoryLedger, Policy, ReserveRequest, SqliteLedger};
use bursora_core::window::Window;

const AMOUNT: i64 = 1_000;

fn budget(limit: i64) -> BudgetSpec {
    BudgetSpec::new(
        "hot",
        Selector::default(),
        NanoUsd::from_nanos(limit).unwrap(),
        Window::Total,
        Mode::Block,
    )
    .unwrap()
}

fn call() -> CallTags {
    CallTags {
        tags: Tags::new([("agent_id", "loop")]).unwrap(),
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
    }
}

/// Runs `threads × per_thread` reservations; settles every other admitted one at its full
/// amount (so refunds cannot reopen room) and leaves the rest held. An observer checks the cap
/// at every moment it looks. Returns (admitted, settled nanos).
fn hammer(ledger: &Arc<dyn Ledger>, threads: usize, per_thread: usize, limit: i64) -> (usize, i64) {
    let admitted = Arc::new(AtomicUsize::new(0));
    let settled = Arc::new(AtomicI64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let observer = {
        let (ledger, done) = (ledger.clone(), done.clone());
        std::thread::spawn(move || {
            let mut looks = 0u64;
            while !done.load(Ordering::Acquire) {
                for s in ledger.status().unwrap() {
                    let used = s.spent.nanos() + s.reserved.nanos();
                    assert!(
                        used <= limit,
                        "observed spent+reserved {used} above the cap {limit}"
                    );
                }
                looks += 1;
            }
            looks
        })
    };
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (ledger, admitted, settled) = (ledger.clone(), admitted.clone(), settled.clone());
            scope.spawn(move || {
                let c = call();
                for i in 0..per_thread {
                    let req = ReserveRequest {
                        call: &c,
                        amount: NanoUsd::from_nanos(AMOUNT).unwrap(),
                        policy: Policy::Block,
                        ttl_ms: None,
                        id: None,
                    };
                    match ledger.reserve(&req) {
                        Ok(r) => {
                            admitted.fetch_add(1, Ordering::Relaxed);
                            if (t + i) % 2 == 0 {
                                ledger.settle(&r.id, r.amount).unwrap();
                                settled.fetch_add(r.amount.nanos(), Ordering::Relaxed);
                            }
                        }
                        Err(e) => assert_eq!(e.code(), "budget_exceeded", "{e}"),
                    }
                }
            });
        }
    });
    done.store(true, Ordering::Release);
    let looks = observer.join().unwrap();
    assert!(looks > 0, "the observer never looked");
    (
        admitted.load(Ordering::Relaxed),
        settled.load(Ordering::Relaxed),
    )
}

fn check_books(ledger: &dyn Ledger, k: i64, settled: i64) {
    let status = ledger.status().unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(
        status[0].spent.nanos(),
        settled,
        "settled money lost or counted twice"
    );
    assert_eq!(
        status[0].spent.nanos() + status[0].reserved.nanos(),
        k * AMOUNT,
        "money lost"
    );
}

#[test]
fn threads_memory_exactly_k_admitted() {
    const K: i64 = 20_000;
    let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::new());
    ledger.upsert_budget(&budget(K * AMOUNT)).unwrap();
    let (admitted, settled) = hammer(&ledger, 64, 1_000, K * AMOUNT);
    assert_eq!(admitted as i64, K);
    check_books(&*ledger, K, settled);
}

#[test]
fn threads_sqlite_exactly_k_admitted() {
    const K: i64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let ledger: Arc<dyn Ledger> = Arc::new(SqliteLedger::open(dir.path().join("race.db")).unwrap());
    ledger.upsert_budget(&budget(K * AMOUNT)).unwrap();
    let (admitted, settled) = hammer(&ledger, 64, 1_000, K * AMOUNT);
    assert_eq!(admitted as i64, K);
    check_books(&*ledger, K, settled);
}

const CHILD_DB: &str = "BURSORA_RACE_DB";
const CHILD_OUT: &str = "BURSORA_RACE_OUT";
const CHILD_LIMIT: &str = "BURSORA_RACE_LIMIT";

/// One of the racing processes. Run only by `processes_sqlite_exactly_k_admitted`, which starts
/// this test binary with `--ignored --exact` and the environment below.
#[test]
#[ignore = "a child process of processes_sqlite_exactly_k_admitted"]
fn race_child() {
    let db = std::env::var(CHILD_DB).expect("started by the parent test with BURSORA_RACE_DB");
    let out = std::env::var(CHILD_OUT).expect("BURSORA_RACE_OUT");
    let limit: i64 = std::env::var(CHILD_LIMIT)
        .expect("BURSORA_RACE_LIMIT")
        .parse()
        .unwrap();
    let ledger: Arc<dyn Ledger> = Arc::new(SqliteLedger::open(&db).unwrap());
    // Every process declares the same budget by name: they share one counter.
    ledger.upsert_budget(&budget(limit)).unwrap();
    let (admitted, settled) = hammer(&ledger, 8, 500, limit);
    std::fs::write(out, format!("{admitted} {settled}")).unwrap();
}

#[test]
fn processes_sqlite_exactly_k_admitted() {
    const K: i64 = 5_000; // of 4 processes × 8 threads × 500 = 16,000 attempts
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..4)
        .map(|i| {
            let out = dir.path().join(format!("child-{i}.out"));
            let child = Command::new(&exe)
                .args(["--ignored", "--exact", "race_child", "--test-threads=1"])
                .env(CHILD_DB, &db)
                .env(CHILD_OUT, &out)
                .env(CHILD_LIMIT, (K * AMOUNT).to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            (child, out)
        })
        .collect();
    let mut admitted = 0i64;
    let mut settled = 0i64;
    for (mut child, out) in children {
        assert!(child.wait().unwrap().success(), "a racing process failed");
        let text = std::fs::read_to_string(out).unwrap();
        let (a, s) = text.split_once(' ').unwrap();
        admitted += a.parse::<i64>().unwrap();
        settled += s.parse::<i64>().unwrap();
    }
    assert_eq!(admitted, K, "exactly K calls admitted across 4 processes");
    let ledger = SqliteLedger::open(&db).unwrap();
    check_books(&ledger, K, settled);
}
