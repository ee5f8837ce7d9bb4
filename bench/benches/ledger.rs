//! Reserve + settle per operation for the in-memory and SQLite ledgers, on one hot budget and
//! across 1,000 tenants of a template budget. `cargo bench -p bursora-bench --bench ledger`.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use bursora_bench::{Row, measure, table};
use bursora_core::NanoUsd;
use bursora_core::budget::{BudgetSpec, CallTags, Mode, Selector, Tags};
use bursora_core::ledger::{Ledger, MemoryLedger, Policy, ReserveRequest, SqliteLedger};
use bursora_core::window::Window;

fn setup(ledger: &dyn Ledger) {
    let huge = NanoUsd::from_nanos(i64::MAX / 4).unwrap();
    ledger
        .upsert_budget(
            &BudgetSpec::new("org", Selector::default(), huge, Window::Month, Mode::Block).unwrap(),
        )
        .unwrap();
    ledger
        .upsert_budget(
            &BudgetSpec::new(
                "per-tenant",
                Selector::new([("tenant_id", "*")]).unwrap(),
                huge,
                Window::Day,
                Mode::Block,
            )
            .unwrap(),
        )
        .unwrap();
}

fn calls(tenants: usize) -> Vec<CallTags> {
    (0..tenants)
        .map(|i| CallTags {
            tags: Tags::new([
                ("tenant_id", format!("tenant-{i}")),
                ("agent_id", "bench".to_owned()),
            ])
            .unwrap(),
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
        })
        .collect()
}

fn reserve_settle(ledger: &dyn Ledger, call: &CallTags) {
    let amount = NanoUsd::from_nanos(1_000).unwrap();
    let r = ledger
        .reserve(&ReserveRequest {
            call,
            amount,
            policy: Policy::Block,
            ttl_ms: None,
            id: None,
        })
        .unwrap();
    ledger
        .settle(&r.id, NanoUsd::from_nanos(700).unwrap())
        .unwrap();
}

/// Reserves on the caller's path and settles in batches of `batch`, as the SDK's background
/// reporter does.
fn run_batched(name: &str, ledger: &dyn Ledger, tenants: usize, iters: u64, batch: usize) -> Row {
    setup(ledger);
    let calls = calls(tenants);
    let amount = NanoUsd::from_nanos(1_000).unwrap();
    let actual = Some(NanoUsd::from_nanos(700).unwrap());
    let mut pending: Vec<String> = Vec::with_capacity(batch);
    measure(name, 5, iters, |i| {
        let call = &calls[(i as usize) % calls.len()];
        let r = ledger
            .reserve(&ReserveRequest {
                call,
                amount,
                policy: Policy::Block,
                ttl_ms: None,
                id: None,
            })
            .unwrap();
        pending.push(r.id);
        if pending.len() == batch {
            let items: Vec<(&str, Option<NanoUsd>)> =
                pending.iter().map(|id| (id.as_str(), actual)).collect();
            for result in ledger.settle_batch(&items).unwrap() {
                result.unwrap();
            }
            pending.clear();
        }
    })
}

fn run(name: &str, ledger: &dyn Ledger, tenants: usize, iters: u64) -> Row {
    setup(ledger);
    let calls = calls(tenants);
    measure(name, 5, iters, |i| {
        reserve_settle(ledger, &calls[(i as usize) % calls.len()])
    })
}

fn threaded(name: &str, ledger: Arc<dyn Ledger>, threads: usize, per_thread: u64) -> Row {
    setup(&*ledger);
    let calls = Arc::new(calls(1_000));
    measure(name, 3, 1, |_| {
        std::thread::scope(|s| {
            for t in 0..threads {
                let (ledger, calls) = (ledger.clone(), calls.clone());
                s.spawn(move || {
                    for i in 0..per_thread {
                        reserve_settle(&*ledger, &calls[(t * 7 + i as usize) % calls.len()]);
                    }
                });
            }
        });
    })
    .per_op_of(threads as u64 * per_thread)
}

trait PerOp {
    fn per_op_of(self, ops: u64) -> Row;
}

impl PerOp for Row {
    fn per_op_of(mut self, ops: u64) -> Row {
        let ops32 = u32::try_from(ops).unwrap_or(u32::MAX);
        self.per_op /= ops32;
        self.best /= ops32;
        self.ops_per_sec = 1.0 / self.per_op.as_secs_f64();
        self
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mem_target = Duration::from_micros(2);
    let rows = vec![
        run(
            "memory: reserve+settle, 1 hot tenant",
            &MemoryLedger::new(),
            1,
            200_000,
        )
        .max_per_op(mem_target),
        run(
            "memory: reserve+settle, 1,000 tenants",
            &MemoryLedger::new(),
            1_000,
            200_000,
        )
        .max_per_op(mem_target),
        threaded(
            "memory: reserve+settle, 8 threads, 1,000 tenants",
            Arc::new(MemoryLedger::new()),
            8,
            25_000,
        ),
        run(
            "sqlite: reserve+settle, 1 hot tenant",
            &SqliteLedger::open(dir.path().join("a.db")).unwrap(),
            1,
            20_000,
        )
        .min_ops_per_sec(10_000.0),
        run(
            "sqlite: reserve+settle, 1,000 tenants",
            &SqliteLedger::open(dir.path().join("b.db")).unwrap(),
            1_000,
            20_000,
        )
        .min_ops_per_sec(10_000.0),
        run_batched(
            "sqlite: reserve, settle batched by 64, 1,000 tenants",
            &SqliteLedger::open(dir.path().join("d.db")).unwrap(),
            1_000,
            20_480,
            64,
        )
        .min_ops_per_sec(10_000.0),
        threaded(
            "sqlite: reserve+settle, 8 threads, 1,000 tenants",
            Arc::new(SqliteLedger::open(dir.path().join("c.db")).unwrap()),
            8,
            2_500,
        )
        .min_ops_per_sec(10_000.0),
    ];
    println!(
        "{}",
        table(
            "bursora-core ledger (each op = one reserve + one settle; every call matches 2 budgets)",
            &rows
        )
    );
}
