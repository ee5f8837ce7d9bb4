//! The reservation ledger (SPEC §2): reserve an upper bound atomically against every budget a
//! call matches, settle it to the real cost once, refund the rest into the window it was taken
//! from, expire what is never settled.
//!
//! [`MemoryLedger`] keeps the books in the process; [`SqliteLedger`] in a file several processes
//! share. Both run the same decisions from this module ([`plan_counters`], [`decide`],
//! [`SettleMath`]), so the two stores cannot disagree on what fits.

pub mod history;
mod memory;
mod sqlite;

use std::fmt;
use std::sync::Arc;

pub use memory::MemoryLedger;
pub use sqlite::{SqliteLedger, SqliteOptions};

use crate::budget::{Budget, BudgetSpec, CallTags, Mode};
use crate::error::{Error, Result};
use crate::money::NanoUsd;
use crate::window::{Window, format_utc};

/// How long a reservation may stay unsettled before it is settled at its reserved amount.
pub const DEFAULT_TTL_MS: i64 = 10 * 60 * 1000;

/// What to do when a call does not fit (SPEC §2.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// Refuse the call.
    #[default]
    Block,
    /// Reserve the tightest headroom instead, if it covers at least `min`; the caller must then
    /// cap the call so it cannot cost more than what was reserved.
    Fit {
        /// The least a useful call can cost (input plus a minimum output).
        min: NanoUsd,
    },
}

/// A request to reserve money for one call.
#[derive(Clone, Debug)]
pub struct ReserveRequest<'a> {
    /// The call's tags, provider and model.
    pub call: &'a CallTags,
    /// The upper bound of the call's cost.
    pub amount: NanoUsd,
    /// What to do if it does not fit.
    pub policy: Policy,
    /// Time to live before it is settled at its reserved amount; `None` is [`DEFAULT_TTL_MS`].
    pub ttl_ms: Option<i64>,
    /// A client-chosen id ([`validate_reservation_id`]), which makes the reserve idempotent: if
    /// it already names a reservation, nothing is reserved again and that reservation is
    /// returned with `replayed: true`. `None`: the ledger generates one.
    pub id: Option<&'a str>,
}

/// Money held for one call until it is settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// Id to settle, release or extend it with.
    pub id: String,
    /// Amount held in every matching budget.
    pub amount: NanoUsd,
    /// True when the `fit` policy reserved less than requested: the call must be capped.
    pub capped: bool,
    /// How many budgets (counters) it was taken from.
    pub budgets: usize,
    /// When it expires unless settled or extended.
    pub expires_at_ms: i64,
    /// True when the request's id already named this reservation: nothing was reserved now.
    pub replayed: bool,
    /// How it ended, if it did (a replayed reservation may have); `None` while active.
    pub ended: Option<Outcome>,
}

/// How a reservation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Settled to the provider's usage.
    Settled,
    /// Released: the call cost nothing (provider error before generation).
    Released,
    /// Not settled within its TTL: counted at its reserved amount.
    Expired,
}

impl Outcome {
    /// `settled`, `released` or `expired`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Settled => "settled",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    /// The outcome named `s` (`settled`, `released`, `expired`).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "settled" => Some(Self::Settled),
            "released" => Some(Self::Released),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }
}

/// The result of settling (or releasing) a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// What the reservation held.
    pub reserved: NanoUsd,
    /// What was counted as spent.
    pub actual: NanoUsd,
    /// `reserved - actual` when positive: given back to the reservation's window.
    pub refunded: NanoUsd,
    /// `actual - reserved` when positive: the provider billed more than was reserved.
    pub overrun: NanoUsd,
    /// How it ended.
    pub outcome: Outcome,
    /// False when this id had already been settled or released: nothing changed this time and
    /// the figures are those of the first settlement.
    pub applied: bool,
}

/// What upserting a budget did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpsertOutcome {
    /// The budget's id.
    pub id: Arc<str>,
    /// True if no budget had this name.
    pub created: bool,
    /// The declaration it replaced, if it differed.
    pub previous: Option<BudgetSpec>,
}

/// One budget's counter in its current window (one per distinct value for templates).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetStatus {
    /// The budget.
    pub budget: Budget,
    /// For templates, `key=value` of this counter; `None` for plain budgets.
    pub key: Option<String>,
    /// Settled spend in the current window.
    pub spent: NanoUsd,
    /// Held by unsettled reservations.
    pub reserved: NanoUsd,
    /// Spend beyond what was reserved (providers that ignored their limit).
    pub overrun: NanoUsd,
    /// Start of the current window (Unix ms).
    pub window_start_ms: i64,
    /// When it resets (Unix ms); `None` for `total`.
    pub resets_at_ms: Option<i64>,
}

/// Why a reservation was refused: the tightest `block` budget that could not take it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exceeded {
    /// Budget id.
    pub id: Arc<str>,
    /// Budget name.
    pub name: String,
    /// The template counter (`tenant_id=acme`), if the budget is a template.
    pub key: Option<String>,
    /// The budget's window.
    pub window: Window,
    /// Its limit.
    pub limit: NanoUsd,
    /// Spent in the current window.
    pub spent: NanoUsd,
    /// Reserved in the current window.
    pub reserved: NanoUsd,
    /// What the call asked for.
    pub requested: NanoUsd,
    /// When the window resets, if ever.
    pub resets_at_ms: Option<i64>,
}

impl Exceeded {
    /// What is left in the window.
    #[must_use]
    pub fn remaining(&self) -> NanoUsd {
        self.limit
            .saturating_sub(self.spent.saturating_add(self.reserved))
    }
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "budget {:?}", self.name)?;
        if let Some(key) = &self.key {
            write!(f, " [{key}]")?;
        }
        write!(
            f,
            " ({} per {}) cannot take this call: it needs up to {}, {} is left ({} spent, {} reserved).",
            self.limit,
            self.window,
            self.requested,
            self.remaining(),
            self.spent,
            self.reserved
        )?;
        match self.resets_at_ms {
            Some(at) => write!(f, " It resets at {}.", format_utc(at))?,
            None => f.write_str(" It never resets.")?,
        }
        f.write_str(
            " Raise the budget's limit, lower the call's max output tokens, or use policy \"fit\".",
        )
    }
}

/// The books of budgets and reservations.
///
/// Every method is atomic: a reservation is taken from all matching budgets or from none, and
/// concurrent callers (threads, or processes sharing a SQLite file) never see a state where
/// `spent + reserved` of a `block` budget exceeds its limit because of a reservation.
pub trait Ledger: Send + Sync {
    /// Creates the budget named `spec.name`, or updates it to `spec`.
    ///
    /// # Errors
    /// Storage failures.
    fn upsert_budget(&self, spec: &BudgetSpec) -> Result<UpsertOutcome>;

    /// Removes a budget by name; its counters stay in storage but no longer apply.
    ///
    /// # Errors
    /// Storage failures.
    fn remove_budget(&self, name: &str) -> Result<bool>;

    /// Every budget.
    ///
    /// # Errors
    /// Storage failures.
    fn budgets(&self) -> Result<Vec<Budget>>;

    /// Reserves `req.amount` against every budget matching `req.call`, all or nothing.
    ///
    /// # Errors
    /// [`Error::BudgetExceeded`] when a `block` budget cannot take it (and `fit` cannot help);
    /// storage failures.
    fn reserve(&self, req: &ReserveRequest<'_>) -> Result<Reservation>;

    /// Settles a reservation to `actual`, refunding the difference into the window it was
    /// reserved in. Idempotent: settling again changes nothing and returns the first result.
    /// Settling an expired reservation replaces the reserved amount by `actual`.
    ///
    /// # Errors
    /// [`Error::UnknownReservation`]; storage failures.
    fn settle(&self, id: &str, actual: NanoUsd) -> Result<Settlement>;

    /// Settles (`Some(actual)`) or releases (`None`) many reservations in one atomic step, as
    /// the background reporter delivers them. Each item gets its own result (an unknown id
    /// does not spoil the rest); a storage failure fails the whole batch and changes nothing.
    ///
    /// # Errors
    /// Storage failures.
    fn settle_batch(&self, items: &[(&str, Option<NanoUsd>)]) -> Result<Vec<Result<Settlement>>>;

    /// Gives the whole reservation back (the call cost nothing). Idempotent like `settle`.
    ///
    /// # Errors
    /// [`Error::UnknownReservation`]; storage failures.
    fn release(&self, id: &str) -> Result<Settlement>;

    /// Pushes an active reservation's expiry to `ttl_ms` from now (a live stream renews it).
    /// Returns false if it is no longer active.
    ///
    /// # Errors
    /// [`Error::UnknownReservation`]; storage failures.
    fn extend(&self, id: &str, ttl_ms: i64) -> Result<bool>;

    /// Counts spend that was never reserved (usage recorded while a server was away) into the
    /// current windows of every matching budget. Never refuses.
    ///
    /// # Errors
    /// Storage failures.
    fn record(&self, call: &CallTags, actual: NanoUsd) -> Result<usize>;

    /// Settles every reservation past its expiry at its reserved amount; returns how many.
    ///
    /// # Errors
    /// Storage failures.
    fn expire(&self) -> Result<usize>;

    /// Every budget's counters in their current window: one entry per plain budget, one per
    /// distinct value seen this window for templates.
    ///
    /// # Errors
    /// Storage failures.
    fn status(&self) -> Result<Vec<BudgetStatus>>;
}

/// A counter: one budget, one template key, one window.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CounterRef {
    /// Index of the budget in the slice given to [`plan_counters`].
    pub budget: usize,
    /// Template key, empty for plain budgets.
    pub key: String,
    /// Start of the window (Unix ms).
    pub window_start_ms: i64,
}

/// The counters a call lands in at `now_ms`, in the budgets' order.
#[must_use]
pub fn plan_counters(budgets: &[Budget], call: &CallTags, now_ms: i64) -> Vec<CounterRef> {
    budgets
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            b.spec.selector.counter_key(call).map(|key| CounterRef {
                budget: i,
                key,
                window_start_ms: b.spec.window.start_ms(now_ms),
            })
        })
        .collect()
}

/// A counter's figures as read inside the reservation's transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterState {
    /// Settled spend.
    pub spent: NanoUsd,
    /// Held by reservations.
    pub reserved: NanoUsd,
}

/// The verdict on a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Reserve `amount` in every planned counter; `capped` when `fit` lowered it.
    Reserve {
        /// The amount to hold.
        amount: NanoUsd,
        /// Whether it is less than requested.
        capped: bool,
    },
    /// Refuse; `counter` is the index (into the plan) of the tightest blocking budget.
    Refuse {
        /// Which planned counter refused.
        counter: usize,
    },
}

/// Decides a reservation from the planned counters' current figures: every `block` budget must
/// keep `spent + reserved + amount ≤ limit`. This is the one rule both stores and the server use.
#[must_use]
pub fn decide(
    budgets: &[Budget],
    plan: &[CounterRef],
    states: &[CounterState],
    amount: NanoUsd,
    policy: Policy,
) -> Decision {
    // The tightest block counter: least headroom.
    let mut tightest: Option<(usize, NanoUsd)> = None;
    for (i, (c, s)) in plan.iter().zip(states).enumerate() {
        let spec = &budgets[c.budget].spec;
        if spec.mode != Mode::Block {
            continue;
        }
        let headroom = spec
            .limit
            .saturating_sub(s.spent.saturating_add(s.reserved));
        if tightest.is_none_or(|(_, h)| headroom < h) {
            tightest = Some((i, headroom));
        }
    }
    match tightest {
        None => Decision::Reserve {
            amount,
            capped: false,
        },
        Some((_, headroom)) if amount <= headroom => Decision::Reserve {
            amount,
            capped: false,
        },
        Some((_, headroom)) if matches!(policy, Policy::Fit { min } if headroom >= min && !headroom.is_zero()) => {
            Decision::Reserve {
                amount: headroom,
                capped: true,
            }
        }
        Some((counter, _)) => Decision::Refuse { counter },
    }
}

/// Builds the refusal error for a planned counter.
#[must_use]
pub fn exceeded(
    budgets: &[Budget],
    plan: &[CounterRef],
    states: &[CounterState],
    counter: usize,
    requested: NanoUsd,
) -> Error {
    let c = &plan[counter];
    let b = &budgets[c.budget];
    Error::BudgetExceeded(Box::new(Exceeded {
        id: b.id.clone(),
        name: b.spec.name.clone(),
        key: (!c.key.is_empty()).then(|| c.key.clone()),
        window: b.spec.window,
        limit: b.spec.limit,
        spent: states[counter].spent,
        reserved: states[counter].reserved,
        requested,
        resets_at_ms: b.spec.window.end_ms(c.window_start_ms),
    }))
}

/// How settling moves a counter: `reserved -= unreserve`, `spent += spend - unspend`,
/// `overrun += overrun`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettleMath {
    /// Taken off `reserved`.
    pub unreserve: NanoUsd,
    /// Taken off `spent` (a late settlement replacing what expiry counted).
    pub unspend: NanoUsd,
    /// Added to `spent`.
    pub spend: NanoUsd,
    /// Added to `overrun`.
    pub overrun: NanoUsd,
}

impl SettleMath {
    /// For settling an active reservation of `held` at `actual`.
    #[must_use]
    pub fn settle(held: NanoUsd, actual: NanoUsd) -> Self {
        Self {
            unreserve: held,
            unspend: NanoUsd::ZERO,
            spend: actual,
            overrun: actual.saturating_sub(held),
        }
    }

    /// For a late settlement of a reservation of `held` that expiry already counted as spent.
    #[must_use]
    pub fn correct_expired(held: NanoUsd, actual: NanoUsd) -> Self {
        Self {
            unreserve: NanoUsd::ZERO,
            unspend: held,
            spend: actual,
            overrun: actual.saturating_sub(held),
        }
    }

    /// Applies this to a counter's `(spent, reserved, overrun)`.
    #[must_use]
    pub fn apply(
        self,
        spent: NanoUsd,
        reserved: NanoUsd,
        overrun: NanoUsd,
    ) -> (NanoUsd, NanoUsd, NanoUsd) {
        (
            spent
                .saturating_sub(self.unspend)
                .saturating_add(self.spend),
            reserved.saturating_sub(self.unreserve),
            overrun.saturating_add(self.overrun),
        )
    }

    /// The [`Settlement`] reported for it.
    #[must_use]
    pub const fn report(
        held: NanoUsd,
        actual: NanoUsd,
        outcome: Outcome,
        applied: bool,
    ) -> Settlement {
        Settlement {
            reserved: held,
            actual,
            refunded: held.saturating_sub(actual),
            overrun: actual.saturating_sub(held),
            outcome,
            applied,
        }
    }
}

/// What ending a reservation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndPlan {
    /// Move the counters by `math` and mark the reservation `outcome` at `actual`.
    Apply {
        /// How the counters move.
        math: SettleMath,
        /// The new state.
        outcome: Outcome,
        /// The amount now counted.
        actual: NanoUsd,
    },
    /// It already ended; report the first ending and change nothing.
    Unchanged(Settlement),
}

impl EndPlan {
    /// Decides how to settle (`Some(actual)`) or release (`None`) a reservation of `held` that
    /// has ended as `ended` (`None` while active). A late settlement of an expired reservation
    /// replaces the amount expiry counted by the truth; anything else that already ended stays.
    #[must_use]
    pub fn new(held: NanoUsd, ended: Option<(Outcome, NanoUsd)>, actual: Option<NanoUsd>) -> Self {
        match (ended, actual) {
            (None, Some(actual)) => Self::Apply {
                math: SettleMath::settle(held, actual),
                outcome: Outcome::Settled,
                actual,
            },
            (None, None) => Self::Apply {
                math: SettleMath::settle(held, NanoUsd::ZERO),
                outcome: Outcome::Released,
                actual: NanoUsd::ZERO,
            },
            (Some((Outcome::Expired, counted)), Some(actual)) => Self::Apply {
                math: SettleMath::correct_expired(counted, actual),
                outcome: Outcome::Settled,
                actual,
            },
            (Some((outcome, counted)), _) => {
                Self::Unchanged(SettleMath::report(held, counted, outcome, false))
            }
        }
    }
}

/// A budget id: short, random, unique across processes sharing a file.
pub(crate) fn new_budget_id() -> Arc<str> {
    let u = uuid::Uuid::new_v4().simple().to_string();
    Arc::from(format!("bud_{}", &u[..20]))
}

/// Reservation ids: a random per-ledger prefix and a sequence, so issuing one costs no syscall
/// and ids never collide between processes sharing a file.
#[derive(Debug)]
pub(crate) struct IdGen {
    prefix: String,
    next: std::sync::atomic::AtomicU64,
}

impl IdGen {
    pub(crate) fn new() -> Self {
        let u = uuid::Uuid::new_v4().simple().to_string();
        Self {
            prefix: format!("res_{}_", &u[..16]),
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }

    pub(crate) fn next(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // `prefix` + `n` in lowercase hex, without the formatting machinery (once per call).
        let digits = (u64::BITS - n.leading_zeros()).div_ceil(4).max(1);
        let mut id = String::with_capacity(self.prefix.len() + digits as usize);
        id.push_str(&self.prefix);
        for i in (0..digits).rev() {
            id.push(char::from(HEX[((n >> (i * 4)) & 0xf) as usize]));
        }
        id
    }
}

/// Shortest client-chosen reservation id.
pub const MIN_RESERVATION_ID_BYTES: usize = 8;
/// Longest client-chosen reservation id.
pub const MAX_RESERVATION_ID_BYTES: usize = 64;

/// Checks a client-chosen reservation (or usage event) id: 8 to 64 bytes of `[A-Za-z0-9_-]`.
///
/// # Errors
/// [`Error::InvalidInput`] naming the rule.
pub fn validate_reservation_id(id: &str) -> Result<()> {
    let ok = (MIN_RESERVATION_ID_BYTES..=MAX_RESERVATION_ID_BYTES).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid id {id:?}: ids are {MIN_RESERVATION_ID_BYTES}-{MAX_RESERVATION_ID_BYTES} characters of A-Z, a-z, 0-9, '_' or '-'"
        )))
    }
}

/// Validates a TTL given by a caller.
pub(crate) fn ttl(ttl_ms: Option<i64>) -> Result<i64> {
    match ttl_ms {
        None => Ok(DEFAULT_TTL_MS),
        Some(t) => validate_ttl(t),
    }
}

/// Checks a reservation TTL: 1 ms to 7 days.
///
/// # Errors
/// [`Error::InvalidInput`] outside that range.
pub fn validate_ttl(ttl_ms: i64) -> Result<i64> {
    if ttl_ms > 0 && ttl_ms <= 7 * 24 * 3_600_000 {
        Ok(ttl_ms)
    } else {
        Err(Error::invalid(format!(
            "reservation TTL {ttl_ms} ms is out of range: use 1 ms to 7 days"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Selector;

    #[test]
    fn ids_are_the_prefix_and_the_sequence_number_in_hex() {
        let ids = IdGen::new();
        for n in [
            1u64,
            9,
            10,
            15,
            16,
            255,
            256,
            0xdead_beef,
            u64::MAX - 1,
            u64::MAX,
        ] {
            ids.next.store(n, std::sync::atomic::Ordering::Relaxed);
            let id = ids.next();
            assert_eq!(id, format!("{}{n:x}", ids.prefix));
            validate_reservation_id(&id).unwrap();
        }
        ids.next.store(0, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(ids.next(), format!("{}0", ids.prefix));
    }

    fn budget(name: &str, limit: i64, mode: Mode) -> Budget {
        Budget {
            id: Arc::from(name),
            spec: BudgetSpec::new(
                name,
                Selector::default(),
                NanoUsd::from_nanos(limit).unwrap(),
                Window::Day,
                mode,
            )
            .unwrap(),
        }
    }

    fn n(x: i64) -> NanoUsd {
        NanoUsd::from_nanos(x).unwrap()
    }

    #[test]
    fn decide_is_all_or_nothing_and_fit_takes_tightest_headroom() {
        let budgets = vec![
            budget("a", 100, Mode::Block),
            budget("b", 50, Mode::Block),
            budget("n", 1, Mode::Notify),
        ];
        let plan = plan_counters(&budgets, &CallTags::default(), 0);
        assert_eq!(plan.len(), 3);
        let states = [
            CounterState {
                spent: n(10),
                reserved: n(10),
            },
            CounterState {
                spent: n(20),
                reserved: n(0),
            },
            CounterState {
                spent: n(100),
                reserved: n(0),
            },
        ];
        assert_eq!(
            decide(&budgets, &plan, &states, n(30), Policy::Block),
            Decision::Reserve {
                amount: n(30),
                capped: false
            }
        );
        assert_eq!(
            decide(&budgets, &plan, &states, n(31), Policy::Block),
            Decision::Refuse { counter: 1 }
        );
        assert_eq!(
            decide(&budgets, &plan, &states, n(31), Policy::Fit { min: n(5) }),
            Decision::Reserve {
                amount: n(30),
                capped: true
            }
        );
        assert_eq!(
            decide(&budgets, &plan, &states, n(31), Policy::Fit { min: n(31) }),
            Decision::Refuse { counter: 1 }
        );
    }
}
