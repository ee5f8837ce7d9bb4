//! The Postgres group commit behind `PgStore::reserve`: two replicas, 64 concurrent callers on
//! a budget that admits exactly K, a template budget per tenant, `fit` in a group, and a caller
//! that goes away mid-group. Skipped without `BURSORA_TEST_DATABASE_URL`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bursora_core::budget::{BudgetSpec, CallTags, Mode, Selector, Tags};
use bursora_core::ledger::Policy;
use bursora_core::ledger::history::{SettleWith, Tokens};
use bursora_core::window::Window;
use bursora_core::{Error, NanoUsd};
use bursora_server::Store;
use bursora_server::store::{PgStore, ReserveInput};

const CLIENTS: usize = 64;
const CALLS_PER_CLIENT: usize = 8;
const K: i64 = 100;
const AMOUNT: i64 = 1_000;

fn nanos(n: i64) -> NanoUsd {
    NanoUsd::from_nanos(n).unwrap()
}

fn input(tenant: &str, amount: i64, policy: Policy) -> ReserveInput {
    ReserveInput {
        call: CallTags {
            tags: Tags::new([("tenant_id", tenant)]).unwrap(),
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
        },
        amount: nanos(amount),
        policy,
        ttl_ms: None,
        id: None,
    }
}

/// Two replicas on one database; the first is also the one the checks read through.
async fn stores(url: &str) -> (Arc<Store>, [Arc<Store>; 2]) {
    let a = Arc::new(Store::Postgres(PgStore::connect(url, 8).await.unwrap()));
    let b = Arc::new(Store::Postgres(PgStore::connect(url, 8).await.unwrap()));
    (a.clone(), [a, b])
}

async fn project_with(store: &Store, specs: &[(&str, Selector, i64)]) -> String {
    let p = store.create_project("coalesce").await.unwrap().id;
    for (name, selector, limit) in specs {
        let spec = BudgetSpec::new(
            *name,
            selector.clone(),
            nanos(*limit),
            Window::Total,
            Mode::Block,
        )
        .unwrap();
        store.upsert_budget(&p, spec).await.unwrap();
    }
    p
}

/// `(spent, reserved)` of every counter, by budget name and key.
async fn figures(store: &Store, project: &str) -> Vec<(String, Option<String>, i64, i64)> {
    let mut out: Vec<_> = store
        .status(project)
        .await
        .unwrap()
        .into_iter()
        .map(|s| {
            (
                s.budget.spec.name.clone(),
                s.key,
                s.spent.nanos(),
                s.reserved.nanos(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_k_of_many_concurrent_reserves_across_two_replicas() {
    let Some(url) = common::pg_url() else { return };
    let (store, coalescers) = stores(&url).await;
    let p = project_with(
        &store,
        &[
            ("hot", Selector::default(), K * AMOUNT),
            (
                "per-tenant",
                Selector::new([("tenant_id", "*")]).unwrap(),
                i64::MAX / 4,
            ),
        ],
    )
    .await;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let c = coalescers[client % 2].clone();
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let tenant = format!("t{}", client % 4);
            let mut admitted = Vec::new();
            for _ in 0..CALLS_PER_CLIENT {
                match c.reserve(&p, input(&tenant, AMOUNT, Policy::Block)).await {
                    Ok(r) => {
                        assert_eq!((r.amount, r.capped, r.budgets), (nanos(AMOUNT), false, 2));
                        admitted.push((tenant.clone(), r.id));
                    }
                    Err(Error::BudgetExceeded(e)) => assert_eq!(e.name, "hot"),
                    Err(e) => panic!("reserve failed: {e}"),
                }
            }
            admitted
        }));
    }
    let mut admitted = Vec::new();
    for t in tasks {
        admitted.extend(t.await.unwrap());
    }
    assert_eq!(admitted.len() as i64, K, "exactly K reservations fit");
    let mut per_tenant = std::collections::BTreeMap::<String, i64>::new();
    for (tenant, _) in &admitted {
        *per_tenant.entry(tenant.clone()).or_default() += AMOUNT;
    }
    let mut expected = vec![("hot".to_owned(), None, 0, K * AMOUNT)];
    for (tenant, reserved) in &per_tenant {
        expected.push((
            "per-tenant".to_owned(),
            Some(format!("tenant_id={tenant}")),
            0,
            *reserved,
        ));
    }
    expected.sort();
    assert_eq!(figures(&store, &p).await, expected);

    // Settling ends grouped reservations like any other.
    let items = admitted
        .iter()
        .map(|(_, id)| SettleWith {
            id: id.clone(),
            actual: Some(nanos(AMOUNT / 4)),
            tokens: Tokens::default(),
        })
        .collect();
    let results = store.settle_batch(&p, items).await.unwrap();
    assert!(results.iter().all(|r| r.as_ref().is_ok_and(|s| s.applied)));
    let hot = figures(&store, &p).await;
    assert_eq!(hot[0], ("hot".to_owned(), None, K * AMOUNT / 4, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fit_in_a_group_takes_what_the_earlier_ones_left() {
    let Some(url) = common::pg_url() else { return };
    let (store, [c, _]) = stores(&url).await;
    let p = project_with(&store, &[("hot", Selector::default(), 2_500)]).await;
    // Submitted together, so they very likely share one transaction; either way the outcome of
    // the serial order is the only one allowed: 1000, 1000, then 500 capped, then refused.
    let fit = Policy::Fit { min: nanos(100) };
    let calls = (0..4).map(|_| {
        let c = c.clone();
        let p = p.clone();
        async move { c.reserve(&p, input("t", 1_000, fit)).await }
    });
    let mut results: Vec<_> = futures_join(calls).await;
    results.sort_by_key(|r| r.as_ref().map_or(0, |r| -r.amount.nanos()));
    let amounts: Vec<_> = results
        .iter()
        .map(|r| r.as_ref().map(|r| (r.amount.nanos(), r.capped)).ok())
        .collect();
    assert_eq!(
        amounts,
        vec![
            Some((1_000, false)),
            Some((1_000, false)),
            Some((500, true)),
            None
        ]
    );
    assert!(matches!(results[3], Err(Error::BudgetExceeded(_))));
    assert_eq!(
        figures(&store, &p).await,
        vec![("hot".to_owned(), None, 0, 2_500)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_that_goes_away_does_not_cancel_the_others() {
    let Some(url) = common::pg_url() else { return };
    let (store, [c, _]) = stores(&url).await;
    let p = project_with(&store, &[("hot", Selector::default(), i64::MAX / 4)]).await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let c = c.clone();
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            c.reserve(&p, input("t", AMOUNT, Policy::Block))
                .await
                .map(|_| i)
        }));
    }
    // Abort every other caller, whatever it was doing (waiting, or running a group).
    tokio::time::sleep(Duration::from_millis(1)).await;
    for t in tasks.iter().step_by(2) {
        t.abort();
    }
    let mut kept = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await {
            Ok(r) => {
                r.unwrap();
                kept += 1;
            }
            Err(e) => assert!(e.is_cancelled() && i % 2 == 0, "task {i}: {e}"),
        }
    }
    assert!(kept >= 16, "every caller not aborted got its reservation");
    // An aborted caller's reservation may or may not have been taken; the counter holds exactly
    // the reservations stored, no more and no less.
    let held = figures(&store, &p).await[0].3;
    assert_eq!(held % AMOUNT, 0);
    assert!(held >= kept * AMOUNT && held <= 32 * AMOUNT, "held {held}");
}

/// Runs futures concurrently on this runtime (tokio has no `join_all`).
async fn futures_join<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
