//! The guard: the reservation protocol of SPEC §2 end to end, for one configuration.
//!
//! [`Guard::admit`] runs on the caller's path before dispatch: estimate the request's upper
//! bound, price it, reserve it against every matching budget. [`Guard::finish`] hands how the
//! call ended to the background [`Reporter`], which prices the real usage and settles.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::Value;

use crate::budget::{BudgetSpec, CallTags, Mode, Selector, Tags};
use crate::clock::{SharedClock, SystemClock};
use crate::error::{Error, Result};
use crate::estimate::{Endpoint, RequestEstimate, estimate};
use crate::ledger::{
    BudgetStatus, DEFAULT_TTL_MS, Ledger, MemoryLedger, Policy, ReserveRequest, SqliteLedger,
};
use crate::money::NanoUsd;
use crate::pricing::{
    ModelPrice, ModelRef, PriceContext, Pricer, ResolvedModel, TokenUsage, UnknownModelPolicy,
    UsageShape,
};
use crate::reporter::{Ending, Job, Reporter};
use crate::warn::{SharedSink, Warning, WarningSink};

/// Under the `fit` policy, the least output a capped call must still be allowed, in tokens: a
/// call that cannot afford this much is refused rather than cut to nothing.
pub const MIN_FIT_OUTPUT_TOKENS: u64 = 16;

/// What to do with a call that does not fit (SPEC §2.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// Refuse it.
    #[default]
    Block,
    /// Reserve the headroom and cap the call.
    Fit,
}

/// A budget as the SDK options give it (`BudgetSpec` of SPEC §7).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BudgetOption {
    /// Unique name.
    pub name: String,
    /// Tag selector; `"*"` values make templates.
    #[serde(default, rename = "match")]
    pub selector: std::collections::BTreeMap<String, String>,
    /// USD per window.
    pub limit_usd: f64,
    /// `minute | hour | day | week | month | total`.
    pub window: String,
    /// `block` (default) or `notify`.
    #[serde(default)]
    pub mode: Option<String>,
}

/// A model price as the SDK options give it (`ModelPrice` of SPEC §7).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PriceOption {
    /// USD per million input tokens.
    #[serde(rename = "inputPerMTok")]
    pub input_per_mtok: f64,
    /// USD per million output tokens.
    #[serde(rename = "outputPerMTok")]
    pub output_per_mtok: f64,
    /// USD per million cached input tokens.
    #[serde(default, rename = "cachedInputPerMTok")]
    pub cached_input_per_mtok: Option<f64>,
    /// Largest completion.
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
}

/// The embedded-mode options of SPEC §7 that reach the core, as JSON.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GuardOptions {
    /// Budgets declared in code.
    #[serde(default)]
    pub budgets: Vec<BudgetOption>,
    /// SQLite file shared by processes; in memory when absent.
    #[serde(default)]
    pub db: Option<String>,
    /// `block` (default) or `fit`.
    #[serde(default)]
    pub policy: PolicyKind,
    /// `fallback` (default) or `block`.
    #[serde(default)]
    pub unknown_model: Option<String>,
    /// Price overrides and additions.
    #[serde(default)]
    pub prices: HashMap<String, PriceOption>,
    /// Reservation TTL in ms (default 10 minutes).
    #[serde(default)]
    pub reservation_ttl_ms: Option<i64>,
}

impl GuardOptions {
    /// Parses options from JSON text.
    ///
    /// # Errors
    /// [`Error::Config`] naming what is wrong.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text)
            .map_err(|e| Error::config(format!("invalid Bursora options: {e}")))
    }
}

/// A call admitted by the guard: the reservation to finish when the call ends.
#[derive(Clone, Debug)]
pub struct Admission {
    /// The reservation id.
    pub id: String,
    /// What was reserved.
    pub reserved: NanoUsd,
    /// The upper bound the call was estimated at.
    pub estimated: NanoUsd,
    /// `fit` lowered the reservation: the call must be capped to `max_output_tokens`.
    pub capped: bool,
    /// Under `fit`, the output tokens per choice the call may still produce.
    pub max_output_tokens: Option<u64>,
    /// The upper bound of input tokens (settles an interrupted stream).
    pub input_tokens: u64,
    /// Budgets the reservation was taken from.
    pub budgets: usize,
}

struct InFlight {
    model: Arc<ResolvedModel>,
    context: PriceContext,
    reserved: NanoUsd,
    shape: UsageShape,
    input_tokens: u64,
}

/// One configured guard: a ledger, a pricer and a reporter.
pub struct Guard {
    ledger: Arc<dyn Ledger>,
    pricer: Pricer,
    clock: SharedClock,
    policy: PolicyKind,
    ttl_ms: i64,
    reporter: Reporter,
    inflight: Mutex<HashMap<String, InFlight, foldhash::fast::RandomState>>,
    warnings: Arc<QueuedWarnings>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Warnings waiting for the host to take them.
#[derive(Debug, Default)]
pub struct QueuedWarnings(Mutex<Vec<Warning>>);

impl WarningSink for QueuedWarnings {
    fn warn(&self, warning: Warning) {
        let mut q = self.0.lock();
        // A host that never drains must not grow without bound; one per code is what it shows.
        if q.len() < 1_000 {
            q.push(warning);
        }
    }
}

impl QueuedWarnings {
    /// Takes every queued warning.
    pub fn take(&self) -> Vec<Warning> {
        std::mem::take(&mut *self.0.lock())
    }

    /// Whether any warning waits (cheap).
    pub fn is_empty(&self) -> bool {
        self.0.lock().is_empty()
    }
}

fn endpoint_shape(endpoint: Endpoint) -> UsageShape {
    match endpoint {
        Endpoint::ChatCompletions => UsageShape::Chat,
        Endpoint::Responses => UsageShape::Responses,
        Endpoint::Embeddings => UsageShape::Embeddings,
    }
}

impl Guard {
    /// Builds a guard from options on the system clock.
    ///
    /// # Errors
    /// [`Error::Config`] / [`Error::InvalidInput`] for bad options, [`Error::Storage`] when the
    /// SQLite file cannot be used.
    pub fn new(options: &GuardOptions) -> Result<Self> {
        Self::with_clock(options, Arc::new(SystemClock))
    }

    /// Like [`Guard::new`] with the given clock.
    ///
    /// # Errors
    /// As [`Guard::new`].
    pub fn with_clock(options: &GuardOptions, clock: SharedClock) -> Result<Self> {
        let warnings = Arc::new(QueuedWarnings::default());
        let sink: SharedSink = warnings.clone();
        let unknown = match options.unknown_model.as_deref() {
            None | Some("fallback") => UnknownModelPolicy::Fallback,
            Some("block") => UnknownModelPolicy::Block,
            Some(other) => {
                return Err(Error::config(format!(
                    "unknownModel must be \"fallback\" or \"block\", not {other:?}"
                )));
            }
        };
        let mut prices = Vec::new();
        for (model, p) in &options.prices {
            let mut price = ModelPrice::from_usd_f64(
                p.input_per_mtok,
                p.output_per_mtok,
                p.cached_input_per_mtok,
            )
            .map_err(|e| Error::config(format!("prices[{model:?}]: {e}")))?;
            if let Some(max) = p.max_output_tokens {
                price = price.with_max_output_tokens(max);
            }
            prices.push((model.clone(), price));
        }
        let pricer = Pricer::new(prices, unknown, sink.clone())?;
        let specs = options
            .budgets
            .iter()
            .map(budget_spec)
            .collect::<Result<Vec<_>>>()?;
        let mut names = std::collections::HashSet::new();
        for s in &specs {
            if !names.insert(s.name.as_str()) {
                return Err(Error::config(format!(
                    "two budgets are named {:?}; names must be unique",
                    s.name
                )));
            }
        }
        let ledger: Arc<dyn Ledger> = match &options.db {
            Some(path) => Arc::new(SqliteLedger::open_with_clock(
                PathBuf::from(path),
                clock.clone(),
            )?),
            None => Arc::new(MemoryLedger::with_clock(clock.clone())),
        };
        for spec in &specs {
            let outcome = ledger.upsert_budget(spec)?;
            if let Some(previous) = outcome.previous {
                sink.warn(Warning {
                    code: "budget_changed",
                    message: format!(
                        "budget {:?} changed: limit {} per {} (was {} per {}); every process sharing {} now uses the new declaration",
                        spec.name,
                        spec.limit,
                        spec.window,
                        previous.limit,
                        previous.window,
                        options.db.as_deref().unwrap_or("this ledger")
                    ),
                });
            }
        }
        let ttl_ms = options.reservation_ttl_ms.unwrap_or(DEFAULT_TTL_MS);
        crate::ledger::validate_ttl(ttl_ms)?;
        let reporter = Reporter::start(ledger.clone(), clock.clone(), sink);
        Ok(Self {
            ledger,
            pricer,
            clock,
            policy: options.policy,
            ttl_ms,
            reporter,
            inflight: Mutex::new(HashMap::default()),
            warnings,
        })
    }

    /// Estimates, prices and reserves one call (SPEC §2.1–2.2). `provider` and `base_url`
    /// select prices; `policy` overrides the guard's.
    ///
    /// # Errors
    /// [`Error::BudgetExceeded`] when it does not fit; [`Error::UnknownModel`] under
    /// `unknownModel: "block"`; [`Error::InvalidInput`] for a malformed body; storage failures.
    pub fn admit(
        &self,
        endpoint: Endpoint,
        body: &Value,
        tags: &Tags,
        provider: Option<&str>,
        base_url: Option<&str>,
    ) -> Result<Admission> {
        let est = estimate(endpoint, body)?;
        // Every endpoint here speaks OpenAI's API: price by OpenAI's table when nothing else
        // (explicit provider, base URL, model name) identifies the provider.
        let mut model_ref = ModelRef::new(&est.model).with_dialect("openai");
        if let Some(p) = provider {
            model_ref = model_ref.with_provider(p);
        }
        if let Some(u) = base_url {
            model_ref = model_ref.with_base_url(u);
        }
        let model = self.pricer.resolve(&model_ref)?;
        let now = self.clock.now_ms();
        let context = price_context(&est);
        let input_tokens = input_bound(&est, &model);
        let output_tokens = est.output_bound(model.max_output_tokens);
        let estimated = model.upper_bound(input_tokens, output_tokens, &context, now);
        let policy = match self.policy {
            PolicyKind::Block => Policy::Block,
            PolicyKind::Fit => {
                let min_output = MIN_FIT_OUTPUT_TOKENS
                    .min(output_tokens)
                    .saturating_mul(u64::from(est.choices.max(1)));
                Policy::Fit {
                    min: model.upper_bound(input_tokens, min_output, &context, now),
                }
            }
        };
        let call = CallTags {
            tags: tags.clone(),
            provider: model
                .provider_id
                .clone()
                .or_else(|| provider.map(str::to_owned))
                .unwrap_or_default(),
            model: est.model.clone(),
        };
        let request = ReserveRequest {
            call: &call,
            amount: estimated,
            policy,
            ttl_ms: Some(self.ttl_ms),
            id: None,
        };
        let mut r = self.ledger.reserve(&request);
        // Settlements still queued hold money the ledger will refund in a moment. Before refusing
        // (or capping) a call because of them, apply them and look again: a sequential agent
        // must not be refused for its previous call's unsettled reservation. Only this path
        // waits, and only when something is queued.
        let short =
            matches!(r, Err(Error::BudgetExceeded(_))) || r.as_ref().is_ok_and(|r| r.capped);
        if short && self.reporter.has_pending() {
            if let Ok(capped) = &r {
                self.ledger.release(&capped.id)?;
            }
            self.reporter.flush();
            r = self.ledger.reserve(&request);
        }
        let r = r?;
        let max_output_tokens = if r.capped {
            model
                .max_output_within(input_tokens, r.amount, &context, now)
                .map(|total| (total / u64::from(est.choices.max(1))).min(output_tokens))
        } else {
            None
        };
        self.inflight.lock().insert(
            r.id.clone(),
            InFlight {
                model,
                context,
                reserved: r.amount,
                shape: endpoint_shape(endpoint),
                input_tokens,
            },
        );
        Ok(Admission {
            id: r.id,
            reserved: r.amount,
            estimated,
            capped: r.capped,
            max_output_tokens,
            input_tokens,
            budgets: r.budgets,
        })
    }

    /// Hands how a call ended to the reporter; returns at once. Unknown ids are ignored (already
    /// finished).
    pub fn finish(&self, id: &str, ending: CallEnding<'_>) {
        let Some(f) = self.inflight.lock().remove(id) else {
            return;
        };
        let ending = match ending {
            CallEnding::Response(response) => match TokenUsage::from_openai(f.shape, response) {
                Ok((usage, service_tier)) => Ending::Usage {
                    usage,
                    service_tier,
                },
                Err(_) => Ending::Unknown,
            },
            CallEnding::Usage(usage, service_tier) => Ending::Usage {
                usage,
                service_tier,
            },
            CallEnding::Partial(output_text) => Ending::Partial {
                input_tokens: f.input_tokens,
                output_text: output_text.to_owned(),
            },
            CallEnding::Failed => Ending::Failed,
            CallEnding::Unknown => Ending::Unknown,
        };
        let job = Job {
            id: id.to_owned(),
            model: f.model,
            context: f.context,
            reserved: f.reserved,
            ending,
        };
        if !self.reporter.send(job) {
            self.warnings.warn(Warning {
                code: "shut_down",
                message: "a call finished after shutdown(); its reservation expires at its reserved amount".into(),
            });
        }
    }

    /// Renews a live stream's reservation for another TTL.
    ///
    /// # Errors
    /// Storage failures.
    pub fn keep_alive(&self, id: &str) -> Result<bool> {
        match self.ledger.extend(id, self.ttl_ms) {
            Err(Error::UnknownReservation { .. }) => Ok(false),
            other => other,
        }
    }

    /// Every budget's current window (SPEC §7 `spend()`), after applying queued settlements.
    ///
    /// # Errors
    /// Storage failures.
    pub fn spend(&self) -> Result<Vec<BudgetStatus>> {
        self.reporter.flush();
        // Reservations past their TTL count as spent now, not at the next reservation.
        self.ledger.expire()?;
        self.ledger.status()
    }

    /// Applies every settlement handed over so far.
    pub fn flush(&self) {
        self.reporter.flush();
    }

    /// Flushes and stops the reporter.
    pub fn shutdown(&self) {
        self.reporter.shutdown();
    }

    /// Takes the warnings raised since the last call.
    pub fn take_warnings(&self) -> Vec<Warning> {
        self.warnings.take()
    }

    /// Whether warnings wait to be taken.
    pub fn has_warnings(&self) -> bool {
        !self.warnings.is_empty()
    }

    /// The ledger behind this guard.
    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.reporter.shutdown();
    }
}

/// How a call ended, as the host saw it.
#[derive(Debug)]
pub enum CallEnding<'a> {
    /// The full response object (or the final stream chunk) with `usage`.
    Response(&'a Value),
    /// Usage already read.
    Usage(TokenUsage, Option<String>),
    /// A stream ended early with this output text seen.
    Partial(&'a str),
    /// The provider refused before generating.
    Failed,
    /// No response at all.
    Unknown,
}

fn price_context(est: &RequestEstimate) -> PriceContext {
    PriceContext {
        service_tier: est.service_tier.clone(),
        batch: false,
        text_only: est.images == 0 && est.audio_tokens == 0 && !est.audio_output,
    }
}

/// Input tokens to reserve for: the estimate, or the model's whole context window when the
/// request makes the provider bill input it does not contain (`previous_response_id`, ...).
fn input_bound(est: &RequestEstimate, model: &ResolvedModel) -> u64 {
    if est.unbounded_context {
        est.input_tokens.max(
            model
                .context_window
                .unwrap_or(crate::pricing::DEFAULT_MAX_OUTPUT_TOKENS * 8),
        )
    } else {
        est.input_tokens
    }
}

fn budget_spec(b: &BudgetOption) -> Result<BudgetSpec> {
    let limit = BudgetSpec::limit_from_usd(&b.name, b.limit_usd)
        .map_err(|e| Error::config(e.to_string()))?;
    let window = b
        .window
        .parse()
        .map_err(|e| Error::config(format!("budget {:?}: {e}", b.name)))?;
    let mode: Mode = b
        .mode
        .as_deref()
        .unwrap_or("block")
        .parse()
        .map_err(|e| Error::config(format!("budget {:?}: {e}", b.name)))?;
    let selector = Selector::new(b.selector.iter().map(|(k, v)| (k.clone(), v.clone())))
        .map_err(|e| Error::config(format!("budget {:?} match: {e}", b.name)))?;
    BudgetSpec::new(b.name.clone(), selector, limit, window, mode)
        .map_err(|e| Error::config(e.to_string()))
}
