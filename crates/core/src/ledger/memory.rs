//! The in-process ledger: one mutex over plain maps. A reservation is a handful of hash lookups
//! under the lock, so contention stays short even with many threads.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

/// Hash maps on the hot path use foldhash: several times faster than SipHash on these short
/// keys, and still seeded per process so tag values cannot be chosen to collide.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use super::{
    CounterRef, CounterState, Decision, EndPlan, IdGen, Ledger, Outcome, Reservation,
    ReserveRequest, SettleMath, Settlement, UpsertOutcome, decide, exceeded, new_budget_id,
    plan_counters, ttl,
};
use crate::budget::{Budget, BudgetSpec, CallTags};
use crate::clock::{SharedClock, SystemClock};
use crate::error::{Error, Result};
use crate::ledger::BudgetStatus;
use crate::money::NanoUsd;

/// How often, at most, a reserve sweeps expired reservations and stale counters.
const SWEEP_EVERY_MS: i64 = 1_000;
/// How long an ended reservation is remembered, so a duplicate settle is recognised (the guard
/// finishes each call once; duplicates come from retries within seconds). Five minutes keeps a
/// process making 100 calls a second at about 30,000 remembered ids.
const KEEP_ENDED_MS: i64 = 5 * 60_000;
/// Ended reservations remembered at most, whatever their age: a very busy process keeps the
/// last 50,000 (a few MiB) rather than five minutes' worth.
const MAX_ENDED: usize = 50_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CounterKey {
    budget: Arc<str>,
    key: Arc<str>,
    window_start_ms: i64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counter {
    spent: NanoUsd,
    reserved: NanoUsd,
    overrun: NanoUsd,
    /// When this counter's window ends (`i64::MAX` for total): after that, and with nothing
    /// reserved, it is history and may be dropped from memory.
    ends_at_ms: i64,
}

/// A reservation id, shared by the maps that index it (no copy per index, nor per ending).
type Id = Arc<str>;

#[derive(Debug)]
struct Held {
    /// The id, as the maps below hold it.
    id: Id,
    amount: NanoUsd,
    /// True when `fit` held less than was asked (a replay answers with it).
    capped: bool,
    /// How many counters it was taken from (`counters` is emptied once it ends).
    budgets: usize,
    counters: Vec<CounterKey>,
    expires_at_ms: i64,
    /// `None` while active.
    ended: Option<(Outcome, NanoUsd)>,
}

#[derive(Debug, Default)]
struct State {
    budgets: Vec<Budget>,
    counters: HashMap<CounterKey, Counter>,
    reservations: HashMap<Id, Held>,
    expiry: BTreeSet<(i64, Id)>,
    /// Ended reservations in the order they ended, for forgetting them later.
    ended: VecDeque<(i64, Id)>,
    next_sweep_ms: i64,
}

/// A ledger held in process memory. Fast and exact; forgotten when the process exits.
pub struct MemoryLedger {
    state: Mutex<State>,
    clock: SharedClock,
    ids: IdGen,
}

impl std::fmt::Debug for MemoryLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLedger").finish_non_exhaustive()
    }
}

impl Default for MemoryLedger {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLedger {
    /// An empty ledger on the system clock.
    #[must_use]
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty ledger on the given clock.
    #[must_use]
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            state: Mutex::new(State::default()),
            clock,
            ids: IdGen::new(),
        }
    }
}

impl State {
    fn sweep(&mut self, now_ms: i64) -> usize {
        let mut expired = 0;
        while let Some((at, _)) = self.expiry.first() {
            if *at > now_ms {
                break;
            }
            let Some((_, id)) = self.expiry.pop_first() else {
                break;
            };
            if let Some(held) = self.reservations.get_mut(&*id)
                && held.ended.is_none()
            {
                let math = SettleMath::settle(held.amount, held.amount);
                apply(&mut self.counters, &held.counters, math);
                held.ended = Some((Outcome::Expired, held.amount));
                self.ended.push_back((now_ms, id));
                expired += 1;
            }
        }
        // Ended reservations are remembered for a while so a duplicate settle is recognised,
        // then forgotten so memory stays bounded.
        self.forget_ended(now_ms);
        // Windows that ended with nothing held are history; the in-memory ledger keeps only
        // what can still change a decision.
        self.counters
            .retain(|_, c| c.ends_at_ms > now_ms || !c.reserved.is_zero());
        self.next_sweep_ms = now_ms + SWEEP_EVERY_MS;
        expired
    }

    fn forget_ended(&mut self, now_ms: i64) {
        while let Some((at, _)) = self.ended.front() {
            if *at > now_ms.saturating_sub(KEEP_ENDED_MS) && self.ended.len() <= MAX_ENDED {
                break;
            }
            if let Some((_, id)) = self.ended.pop_front() {
                self.reservations.remove(&*id);
            }
        }
    }

    fn end(&mut self, id: &str, actual: Option<NanoUsd>, now_ms: i64) -> Result<Settlement> {
        let held = self
            .reservations
            .get_mut(id)
            .ok_or_else(|| Error::UnknownReservation { id: id.to_owned() })?;
        match EndPlan::new(held.amount, held.ended, actual) {
            EndPlan::Unchanged(report) => Ok(report),
            EndPlan::Apply {
                math,
                outcome,
                actual,
            } => {
                apply(&mut self.counters, &held.counters, math);
                let first_end = held.ended.is_none();
                held.ended = Some((outcome, actual));
                // Only an expired reservation can still move its counters (a late settlement).
                if outcome != Outcome::Expired {
                    held.counters = Vec::new();
                }
                let report = SettleMath::report(held.amount, actual, outcome, true);
                if first_end {
                    self.expiry.remove(&(held.expires_at_ms, held.id.clone()));
                    self.ended.push_back((now_ms, held.id.clone()));
                    if self.ended.len() > MAX_ENDED {
                        self.forget_ended(now_ms);
                    }
                }
                Ok(report)
            }
        }
    }

    fn key_of(&self, c: &CounterRef) -> CounterKey {
        CounterKey {
            budget: self.budgets[c.budget].id.clone(),
            key: Arc::from(c.key.as_str()),
            window_start_ms: c.window_start_ms,
        }
    }

    fn counter(&mut self, c: &CounterRef) -> (CounterKey, Counter) {
        let key = self.key_of(c);
        let ends_at_ms = self.budgets[c.budget]
            .spec
            .window
            .end_ms(c.window_start_ms)
            .unwrap_or(i64::MAX);
        let counter = *self.counters.entry(key.clone()).or_insert(Counter {
            ends_at_ms,
            ..Counter::default()
        });
        (key, counter)
    }
}

fn apply(counters: &mut HashMap<CounterKey, Counter>, keys: &[CounterKey], math: SettleMath) {
    for k in keys {
        // A counter can be gone only if its budget was removed; its books no longer matter.
        if let Some(c) = counters.get_mut(k) {
            (c.spent, c.reserved, c.overrun) = math.apply(c.spent, c.reserved, c.overrun);
        }
    }
}

impl Ledger for MemoryLedger {
    fn upsert_budget(&self, spec: &BudgetSpec) -> Result<UpsertOutcome> {
        let mut st = self.state.lock();
        if let Some(b) = st.budgets.iter_mut().find(|b| b.spec.name == spec.name) {
            let previous = (b.spec != *spec).then(|| std::mem::replace(&mut b.spec, spec.clone()));
            return Ok(UpsertOutcome {
                id: b.id.clone(),
                created: false,
                previous,
            });
        }
        let id = new_budget_id();
        st.budgets.push(Budget {
            id: id.clone(),
            spec: spec.clone(),
        });
        Ok(UpsertOutcome {
            id,
            created: true,
            previous: None,
        })
    }

    fn remove_budget(&self, name: &str) -> Result<bool> {
        let mut st = self.state.lock();
        let before = st.budgets.len();
        st.budgets.retain(|b| b.spec.name != name);
        Ok(st.budgets.len() != before)
    }

    fn budgets(&self) -> Result<Vec<Budget>> {
        Ok(self.state.lock().budgets.clone())
    }

    fn reserve(&self, req: &ReserveRequest<'_>) -> Result<Reservation> {
        let ttl_ms = ttl(req.ttl_ms)?;
        if let Some(id) = req.id {
            super::validate_reservation_id(id)?;
        }
        let now = self.clock.now_ms();
        let mut st = self.state.lock();
        if now >= st.next_sweep_ms {
            st.sweep(now);
        }
        if let Some(held) = req.id.and_then(|id| st.reservations.get(id)) {
            return Ok(Reservation {
                id: req.id.unwrap_or_default().to_owned(),
                amount: held.amount,
                capped: held.capped,
                budgets: held.budgets,
                expires_at_ms: held.expires_at_ms,
                replayed: true,
                ended: held.ended.map(|(o, _)| o),
            });
        }
        let plan = plan_counters(&st.budgets, req.call, now);
        let mut keys = Vec::with_capacity(plan.len());
        let mut states = Vec::with_capacity(plan.len());
        for c in &plan {
            let (key, counter) = st.counter(c);
            keys.push(key);
            states.push(CounterState {
                spent: counter.spent,
                reserved: counter.reserved,
            });
        }
        let (amount, capped) = match decide(&st.budgets, &plan, &states, req.amount, req.policy) {
            Decision::Reserve { amount, capped } => (amount, capped),
            Decision::Refuse { counter } => {
                return Err(exceeded(&st.budgets, &plan, &states, counter, req.amount));
            }
        };
        for k in &keys {
            if let Some(c) = st.counters.get_mut(k) {
                c.reserved = c.reserved.saturating_add(amount);
            }
        }
        let id = req.id.map_or_else(|| self.ids.next(), str::to_owned);
        let shared: Id = Arc::from(id.as_str());
        let expires_at_ms = now.saturating_add(ttl_ms);
        st.expiry.insert((expires_at_ms, shared.clone()));
        let budgets = keys.len();
        st.reservations.insert(
            shared.clone(),
            Held {
                id: shared,
                amount,
                capped,
                budgets,
                counters: keys,
                expires_at_ms,
                ended: None,
            },
        );
        Ok(Reservation {
            id,
            amount,
            capped,
            budgets,
            expires_at_ms,
            replayed: false,
            ended: None,
        })
    }

    fn settle(&self, id: &str, actual: NanoUsd) -> Result<Settlement> {
        let now = self.clock.now_ms();
        self.state.lock().end(id, Some(actual), now)
    }

    fn release(&self, id: &str) -> Result<Settlement> {
        let now = self.clock.now_ms();
        self.state.lock().end(id, None, now)
    }

    fn settle_batch(&self, items: &[(&str, Option<NanoUsd>)]) -> Result<Vec<Result<Settlement>>> {
        let now = self.clock.now_ms();
        let mut st = self.state.lock();
        Ok(items
            .iter()
            .map(|(id, actual)| st.end(id, *actual, now))
            .collect())
    }

    fn extend(&self, id: &str, ttl_ms: i64) -> Result<bool> {
        let ttl_ms = ttl(Some(ttl_ms))?;
        let now = self.clock.now_ms();
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let held = st
            .reservations
            .get_mut(id)
            .ok_or_else(|| Error::UnknownReservation { id: id.to_owned() })?;
        if held.ended.is_some() {
            return Ok(false);
        }
        st.expiry.remove(&(held.expires_at_ms, held.id.clone()));
        held.expires_at_ms = now.saturating_add(ttl_ms);
        st.expiry.insert((held.expires_at_ms, held.id.clone()));
        Ok(true)
    }

    fn record(&self, call: &CallTags, actual: NanoUsd) -> Result<usize> {
        let now = self.clock.now_ms();
        let mut st = self.state.lock();
        let plan = plan_counters(&st.budgets, call, now);
        for c in &plan {
            let (key, _) = st.counter(c);
            if let Some(counter) = st.counters.get_mut(&key) {
                counter.spent = counter.spent.saturating_add(actual);
            }
        }
        Ok(plan.len())
    }

    fn expire(&self) -> Result<usize> {
        let now = self.clock.now_ms();
        Ok(self.state.lock().sweep(now))
    }

    fn status(&self) -> Result<Vec<BudgetStatus>> {
        let now = self.clock.now_ms();
        let st = self.state.lock();
        let mut out = Vec::new();
        for b in &st.budgets {
            let start = b.spec.window.start_ms(now);
            let resets_at_ms = b.spec.window.end_ms(start);
            let mut found = false;
            let mut rows: Vec<BudgetStatus> = st
                .counters
                .iter()
                .filter(|(k, _)| k.budget == b.id && k.window_start_ms == start)
                .map(|(k, c)| {
                    found = true;
                    BudgetStatus {
                        budget: b.clone(),
                        key: (!k.key.is_empty()).then(|| k.key.to_string()),
                        spent: c.spent,
                        reserved: c.reserved,
                        overrun: c.overrun,
                        window_start_ms: start,
                        resets_at_ms,
                    }
                })
                .collect();
            if !found && !b.spec.selector.is_template() {
                rows.push(BudgetStatus {
                    budget: b.clone(),
                    key: None,
                    spent: NanoUsd::ZERO,
                    reserved: NanoUsd::ZERO,
                    overrun: NanoUsd::ZERO,
                    window_start_ms: start,
                    resets_at_ms,
                });
            }
            rows.sort_by(|a, b| a.key.cmp(&b.key));
            out.extend(rows);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{Mode, Selector, Tags};
    use crate::clock::ManualClock;
    use crate::ledger::Policy;
    use crate::window::Window;

    fn call(tenant: &str) -> CallTags {
        CallTags {
            tags: Tags::new([("tenant", tenant)]).unwrap(),
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
        }
    }

    #[test]
    fn ids_are_shared_by_the_maps_and_forgotten_in_time() {
        let clock = ManualClock::new(1_795_651_199_000);
        let ledger = MemoryLedger::with_clock(Arc::new(clock.clone()));
        let spec = BudgetSpec::new(
            "per-tenant",
            Selector::new([("tenant", "*")]).unwrap(),
            NanoUsd::from_nanos(1_000).unwrap(),
            Window::Day,
            Mode::Block,
        )
        .unwrap();
        ledger.upsert_budget(&spec).unwrap();
        let mut ids = Vec::new();
        for tenant in ["a", "b", "a"] {
            let c = call(tenant);
            let request = ReserveRequest {
                call: &c,
                amount: NanoUsd::from_nanos(10).unwrap(),
                policy: Policy::Block,
                ttl_ms: None,
                id: None,
            };
            ids.push(ledger.reserve(&request).unwrap().id);
        }
        {
            let st = ledger.state.lock();
            // Each id is one allocation, shared by the maps.
            for id in &ids {
                let (key, held) = st.reservations.get_key_value(id.as_str()).unwrap();
                assert_eq!(&*held.id, id.as_str());
                assert!(Arc::ptr_eq(key, &held.id));
                let (_, in_expiry) = st
                    .expiry
                    .get(&(held.expires_at_ms, held.id.clone()))
                    .unwrap();
                assert!(Arc::ptr_eq(in_expiry, &held.id));
            }
        }
        let seven = NanoUsd::from_nanos(7).unwrap();
        for id in &ids {
            assert!(ledger.settle(id, seven).unwrap().applied);
        }
        // A duplicate settle is recognised.
        assert!(!ledger.settle(&ids[0], seven).unwrap().applied);
        {
            let st = ledger.state.lock();
            assert!(st.expiry.is_empty());
            assert_eq!(st.ended.len(), 3);
            for (_, id) in &st.ended {
                assert!(Arc::ptr_eq(id, &st.reservations[&**id].id));
            }
        }
        // Forgotten after KEEP_ENDED_MS: a later settle is of an unknown reservation.
        clock.advance(KEEP_ENDED_MS + SWEEP_EVERY_MS);
        ledger.expire().unwrap();
        assert!(ledger.state.lock().reservations.is_empty());
        assert!(matches!(
            ledger.settle(&ids[0], seven),
            Err(Error::UnknownReservation { .. })
        ));
    }
}
