//! The guard: the reservation protocol of SPEC §2 end to end, for one configuration.
//!
//! Admission runs on the caller's path before dispatch: estimate the request's upper bound,
//! price it, reserve it against every matching budget — in a local ledger ([`Guard::admit`],
//! synchronous) or on bursora-server ([`Guard::admit_async`], one round trip on the network
//! thread, with the fail mode deciding when the server cannot). Both share the estimate and
//! pricing ([`Guard::prepare`]) and the bookkeeping of admitted calls. [`Guard::finish`] hands
//! how the call ended to the background [`Reporter`], which prices the real usage and settles.

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
    BudgetStatus, DEFAULT_TTL_MS, IdGen, Ledger, MemoryLedger, Policy, Reservation, ReserveRequest,
    SqliteLedger,
};
use crate::money::NanoUsd;
use crate::pricing::{
    ModelPrice, ModelRef, PriceContext, Pricer, ResolvedModel, TokenUsage, UnknownModelPolicy,
    UsageShape,
};
use crate::remote::{Remote, RemoteOptions, RemoteReserve, ReserveOutcome};
use crate::reporter::{Destination, Ending, Job, LedgerDestination, Reporter};
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
    /// Server mode: bursora-server's URL (several replicas: comma-separated).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Server mode: the project key.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Server mode: `open` (default) or `closed` when the server cannot decide in time.
    #[serde(default)]
    pub fail_mode: Option<String>,
    /// Server mode: how long a decision may wait on the server (default 1000 ms).
    #[serde(default)]
    pub decision_timeout_ms: Option<u64>,
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
    /// Server mode, fail-open: the server could not decide, so the call goes out without a
    /// reservation; its usage is delivered (under `id`) when the server is back.
    pub unreserved: bool,
}

struct InFlight {
    model: Arc<ResolvedModel>,
    context: PriceContext,
    reserved: NanoUsd,
    shape: UsageShape,
    input_tokens: u64,
    unreserved: Option<Box<CallTags>>,
    at_ms: i64,
}

/// A call estimated and priced, ready to be reserved.
#[derive(Debug)]
pub struct Prepared {
    call: CallTags,
    amount: NanoUsd,
    policy: Policy,
    model: Arc<ResolvedModel>,
    context: PriceContext,
    input_tokens: u64,
    output_tokens: u64,
    choices: u32,
    shape: UsageShape,
    now_ms: i64,
}

/// Where reservations are kept.
enum Backend {
    /// In this process or a SQLite file.
    Local(Arc<dyn Ledger>),
    /// On bursora-server.
    Remote {
        remote: Arc<Remote>,
        fail_open: bool,
    },
}

/// One configured guard: a ledger (local or remote), a pricer and a reporter.
pub struct Guard {
    backend: Backend,
    pricer: Pricer,
    clock: SharedClock,
    policy: PolicyKind,
    ttl_ms: i64,
    reporter: Reporter,
    inflight: Mutex<HashMap<String, InFlight, foldhash::fast::RandomState>>,
    warnings: Arc<QueuedWarnings>,
    /// Server mode: reservation ids are chosen here (see [`crate::remote`]).
    ids: IdGen,
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
        let ttl_ms = options.reservation_ttl_ms.unwrap_or(DEFAULT_TTL_MS);
        crate::ledger::validate_ttl(ttl_ms)?;
        let (backend, destination) = match &options.endpoint {
            Some(endpoint) => remote_backend(options, endpoint, &specs, sink.clone())?,
            None => {
                let ledger = local_ledger(options, &specs, &clock, &sink)?;
                let destination: Arc<dyn Destination> = Arc::new(LedgerDestination(ledger.clone()));
                (Backend::Local(ledger), destination)
            }
        };
        let reporter = Reporter::start(destination, clock.clone(), sink);
        Ok(Self {
            backend,
            pricer,
            clock,
            policy: options.policy,
            ttl_ms,
            reporter,
            inflight: Mutex::new(HashMap::default()),
            warnings,
            ids: IdGen::new(),
        })
    }

    /// Estimates and prices one call (SPEC §2.1): everything admission needs before it asks a
    /// ledger. Cheap; runs on the caller's thread.
    ///
    /// # Errors
    /// [`Error::UnknownModel`] under `unknownModel: "block"`; [`Error::InvalidInput`] for a
    /// malformed body.
    pub fn prepare(
        &self,
        endpoint: Endpoint,
        body: &Value,
        tags: &Tags,
        provider: Option<&str>,
        base_url: Option<&str>,
    ) -> Result<Prepared> {
        let est = estimate(endpoint, body)?;
        self.prepare_estimate(endpoint, est, tags, provider, base_url)
    }

    /// [`Guard::prepare`] of a request already estimated (e.g. by
    /// [`crate::estimate::estimate_plain`], straight from its JSON text).
    ///
    /// # Errors
    /// [`Error::UnknownModel`] under `unknownModel: "block"`.
    pub fn prepare_estimate(
        &self,
        endpoint: Endpoint,
        est: RequestEstimate,
        tags: &Tags,
        provider: Option<&str>,
        base_url: Option<&str>,
    ) -> Result<Prepared> {
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
        let amount = model.upper_bound(input_tokens, output_tokens, &context, now);
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
            model: est.model,
        };
        Ok(Prepared {
            call,
            amount,
            policy,
            model,
            context,
            input_tokens,
            output_tokens,
            choices: est.choices.max(1),
            shape: endpoint_shape(endpoint),
            now_ms: now,
        })
    }

    /// Books an admitted call so that [`Guard::finish`] can settle it.
    fn commit(&self, p: Prepared, r: Reservation, unreserved: bool) -> Admission {
        let max_output_tokens = if r.capped {
            p.model
                .max_output_within(p.input_tokens, r.amount, &p.context, p.now_ms)
                .map(|total| (total / u64::from(p.choices)).min(p.output_tokens))
        } else {
            None
        };
        let admission = Admission {
            id: r.id,
            reserved: r.amount,
            estimated: p.amount,
            capped: r.capped,
            max_output_tokens,
            input_tokens: p.input_tokens,
            budgets: r.budgets,
            unreserved,
        };
        self.inflight.lock().insert(
            admission.id.clone(),
            InFlight {
                model: p.model,
                context: p.context,
                reserved: r.amount,
                shape: p.shape,
                input_tokens: p.input_tokens,
                unreserved: unreserved.then(|| Box::new(p.call)),
                at_ms: p.now_ms,
            },
        );
        admission
    }

    /// Estimates, prices and reserves one call in the local ledger (SPEC §2.1–2.2).
    /// `provider` and `base_url` select prices.
    ///
    /// # Errors
    /// [`Error::BudgetExceeded`] when it does not fit; [`Error::UnknownModel`] under
    /// `unknownModel: "block"`; [`Error::InvalidInput`] for a malformed body; storage failures;
    /// [`Error::Config`] in server mode (use [`Guard::admit_async`]).
    pub fn admit(
        &self,
        endpoint: Endpoint,
        body: &Value,
        tags: &Tags,
        provider: Option<&str>,
        base_url: Option<&str>,
    ) -> Result<Admission> {
        let ledger = self.local_only()?;
        let p = self.prepare(endpoint, body, tags, provider, base_url)?;
        self.reserve_local(ledger, p)
    }

    /// [`Guard::admit`] of a request already estimated (e.g. by
    /// [`crate::estimate::estimate_plain`], straight from its JSON text).
    ///
    /// # Errors
    /// As [`Guard::admit`], less the malformed body.
    pub fn admit_estimate(
        &self,
        endpoint: Endpoint,
        est: RequestEstimate,
        tags: &Tags,
        provider: Option<&str>,
        base_url: Option<&str>,
    ) -> Result<Admission> {
        let ledger = self.local_only()?;
        let p = self.prepare_estimate(endpoint, est, tags, provider, base_url)?;
        self.reserve_local(ledger, p)
    }

    /// The local ledger, or the error a synchronous admission gets in server mode.
    fn local_only(&self) -> Result<&Arc<dyn Ledger>> {
        match &self.backend {
            Backend::Local(ledger) => Ok(ledger),
            Backend::Remote { .. } => Err(Error::config(
                "this guard reserves on bursora-server: admissions are asynchronous (admit_async)",
            )),
        }
    }

    fn reserve_local(&self, ledger: &Arc<dyn Ledger>, p: Prepared) -> Result<Admission> {
        let request = ReserveRequest {
            call: &p.call,
            amount: p.amount,
            policy: p.policy,
            ttl_ms: Some(self.ttl_ms),
            id: None,
        };
        let mut r = ledger.reserve(&request);
        // Settlements still queued hold money the ledger will refund in a moment. Before refusing
        // (or capping) a call because of them, apply them and look again: a sequential agent
        // must not be refused for its previous call's unsettled reservation. Only this path
        // waits, and only when something is queued.
        if short(&r) && self.reporter.has_pending() {
            if let Ok(capped) = &r {
                ledger.release(&capped.id)?;
            }
            self.reporter.flush();
            r = ledger.reserve(&request);
        }
        let r = r?;
        Ok(self.commit(p, r, false))
    }

    /// Whether reservations go to bursora-server (admissions are then asynchronous).
    #[must_use]
    pub fn is_remote(&self) -> bool {
        matches!(self.backend, Backend::Remote { .. })
    }

    /// Admits one call in server mode: prepares it here, reserves it on the network thread, and
    /// calls `done` there with the admission or the refusal. When the server cannot decide, the
    /// fail mode does: `open` admits the call unreserved, `closed` answers
    /// [`Error::Unavailable`]. Local guards answer synchronously through `done`.
    pub fn admit_async(
        self: &Arc<Self>,
        endpoint: Endpoint,
        body: &Value,
        tags: &Tags,
        provider: Option<&str>,
        base_url: Option<&str>,
        done: impl FnOnce(Result<Admission>) + Send + 'static,
    ) {
        let Backend::Remote { remote, fail_open } = &self.backend else {
            return done(self.admit(endpoint, body, tags, provider, base_url));
        };
        let p = match self.prepare(endpoint, body, tags, provider, base_url) {
            Ok(p) => p,
            Err(e) => return done(Err(e)),
        };
        let (remote, fail_open, guard) = (remote.clone(), *fail_open, self.clone());
        if remote.circuit_open() {
            // Decided here and now: the server is known to be away.
            return done(guard.unavailable(p, fail_open, "bursora-server is unreachable".into()));
        }
        remote.clone().spawn(async move {
            let result = guard.reserve_remote(&remote, p, fail_open).await;
            done(result);
        });
    }

    async fn reserve_remote(
        self: &Arc<Self>,
        remote: &Remote,
        p: Prepared,
        fail_open: bool,
    ) -> Result<Admission> {
        let fit_min = match p.policy {
            Policy::Fit { min } => Some(min),
            Policy::Block => None,
        };
        let mut id = self.ids.next();
        let mut outcome = remote.reserve(&self.remote_request(&id, &p, fit_min)).await;
        // As in `admit`: refunds still on their way may be what makes the call not fit.
        let short = matches!(outcome, ReserveOutcome::Refused(_))
            || matches!(&outcome, ReserveOutcome::Reserved(r) if r.capped);
        if short && (self.reporter.has_pending() || remote.pending() > 0) {
            if let ReserveOutcome::Reserved(r) = &outcome {
                remote.release_maybe(&r.id);
            }
            let guard = self.clone();
            let _ = tokio::task::spawn_blocking(move || guard.reporter.flush()).await;
            remote
                .flush_async(crate::remote::DEFAULT_DECISION_TIMEOUT)
                .await;
            id = self.ids.next();
            outcome = remote.reserve(&self.remote_request(&id, &p, fit_min)).await;
        }
        match outcome {
            ReserveOutcome::Reserved(r) => Ok(self.commit(p, r, false)),
            ReserveOutcome::Refused(x) => Err(Error::BudgetExceeded(x)),
            ReserveOutcome::Invalid(message) => Err(Error::InvalidInput {
                message: format!("bursora-server rejected the reservation: {message}"),
            }),
            ReserveOutcome::Unavailable {
                reason,
                maybe_reserved,
            } => {
                if fail_open {
                    // The call goes out under this id: its usage settles the reservation if the
                    // lost reserve made one, and is recorded as usage otherwise.
                    Ok(self.unreserved(p, id))
                } else {
                    if maybe_reserved {
                        remote.release_maybe(&id);
                    }
                    self.unavailable(p, false, reason)
                }
            }
        }
    }

    fn remote_request<'a>(
        &self,
        id: &'a str,
        p: &'a Prepared,
        fit_min: Option<NanoUsd>,
    ) -> RemoteReserve<'a> {
        RemoteReserve {
            id,
            call: &p.call,
            amount: p.amount,
            fit_min,
            ttl_ms: self.ttl_ms,
        }
    }

    fn unreserved(&self, p: Prepared, id: String) -> Admission {
        let r = Reservation {
            id,
            amount: NanoUsd::ZERO,
            capped: false,
            budgets: 0,
            expires_at_ms: p.now_ms,
            replayed: false,
            ended: None,
        };
        self.commit(p, r, true)
    }

    fn unavailable(&self, p: Prepared, fail_open: bool, reason: String) -> Result<Admission> {
        if fail_open {
            let id = self.ids.next();
            return Ok(self.unreserved(p, id));
        }
        Err(Error::Unavailable {
            message: format!(
                "{reason}, and failMode is \"closed\", so the call was not sent. Check that bursora-server is running and reachable at BURSORA_ENDPOINT, or use failMode \"open\""
            ),
        })
    }

    /// Hands how a call ended to the reporter; returns at once. Unknown ids are ignored (already
    /// finished).
    pub fn finish(&self, id: &str, ending: CallEnding<'_>) {
        // The map's own key becomes the job's id: no copy of it per call.
        let Some((id, f)) = self.inflight.lock().remove_entry(id) else {
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
            CallEnding::ResponseJson(json) => Ending::Response {
                json,
                shape: f.shape,
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
            id,
            model: f.model,
            context: f.context,
            reserved: f.reserved,
            ending,
            unreserved: f.unreserved,
            at_ms: f.at_ms,
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
        match &self.backend {
            Backend::Local(ledger) => match ledger.extend(id, self.ttl_ms) {
                Err(Error::UnknownReservation { .. }) => Ok(false),
                other => other,
            },
            Backend::Remote { remote, .. } => {
                remote.extend(id, self.ttl_ms);
                Ok(true)
            }
        }
    }

    /// Every budget's current window (SPEC §7 `spend()`), after applying queued settlements.
    /// In server mode this blocks the calling thread on the server (call it off the host's
    /// main thread).
    ///
    /// # Errors
    /// Storage failures; [`Error::Unavailable`] when the server does not answer.
    pub fn spend(&self) -> Result<Vec<BudgetStatus>> {
        self.reporter.flush();
        match &self.backend {
            Backend::Local(ledger) => {
                // Reservations past their TTL count as spent now, not at the next reservation.
                ledger.expire()?;
                ledger.status()
            }
            Backend::Remote { remote, .. } => {
                let _ = remote.flush(crate::remote::FLUSH_TIMEOUT);
                remote.status()
            }
        }
    }

    /// Applies (locally) or delivers (server mode) every settlement handed over so far. In
    /// server mode it waits while the server is reachable, at most [`crate::remote::FLUSH_TIMEOUT`];
    /// returns how many still wait for it (0 locally).
    pub fn flush(&self) -> usize {
        self.reporter.flush();
        match &self.backend {
            Backend::Local(_) => 0,
            Backend::Remote { remote, .. } => remote.flush(crate::remote::FLUSH_TIMEOUT),
        }
    }

    /// Flushes and stops the background work (the reporter; in server mode the network thread,
    /// after delivering what it can).
    pub fn shutdown(&self) {
        self.reporter.shutdown();
        if let Backend::Remote { remote, .. } = &self.backend {
            remote.shutdown();
        }
    }

    /// Takes the warnings raised since the last call.
    pub fn take_warnings(&self) -> Vec<Warning> {
        self.warnings.take()
    }

    /// Whether warnings wait to be taken.
    pub fn has_warnings(&self) -> bool {
        !self.warnings.is_empty()
    }

    /// The local ledger behind this guard (`None` in server mode).
    pub fn ledger(&self) -> Option<&Arc<dyn Ledger>> {
        match &self.backend {
            Backend::Local(ledger) => Some(ledger),
            Backend::Remote { .. } => None,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn short(r: &Result<Reservation>) -> bool {
    matches!(r, Err(Error::BudgetExceeded(_))) || r.as_ref().is_ok_and(|r| r.capped)
}

/// The embedded ledger (in memory, or the SQLite file `db`) with the declared budgets upserted.
fn local_ledger(
    options: &GuardOptions,
    specs: &[BudgetSpec],
    clock: &SharedClock,
    sink: &SharedSink,
) -> Result<Arc<dyn Ledger>> {
    let ledger: Arc<dyn Ledger> = match &options.db {
        Some(path) => Arc::new(SqliteLedger::open_with_clock(
            PathBuf::from(path),
            clock.clone(),
        )?),
        None => Arc::new(MemoryLedger::with_clock(clock.clone())),
    };
    for spec in specs {
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
    Ok(ledger)
}

fn remote_backend(
    options: &GuardOptions,
    endpoint: &str,
    specs: &[BudgetSpec],
    sink: SharedSink,
) -> Result<(Backend, Arc<dyn Destination>)> {
    if !specs.is_empty() {
        return Err(Error::config(
            "budgets live in bursora-server in server mode: create them with the dashboard or `bursora-server budgets create`, and remove the `budgets` option (or unset BURSORA_ENDPOINT to run embedded)",
        ));
    }
    if options.db.is_some() {
        return Err(Error::config(
            "`db` (BURSORA_DB) is for embedded mode; in server mode bursora-server keeps the ledger. Set one or the other",
        ));
    }
    let fail_open = match options.fail_mode.as_deref() {
        None | Some("open") => true,
        Some("closed") => false,
        Some(other) => {
            return Err(Error::config(format!(
                "failMode must be \"open\" or \"closed\", not {other:?}"
            )));
        }
    };
    let mut remote = RemoteOptions::new(endpoint, options.api_key.as_deref().unwrap_or(""))?;
    if let Some(ms) = options.decision_timeout_ms {
        if ms == 0 || ms > 60_000 {
            return Err(Error::config(format!(
                "decisionTimeoutMs must be 1 to 60000, not {ms}"
            )));
        }
        remote.decision_timeout = std::time::Duration::from_millis(ms);
    }
    let remote = Arc::new(Remote::new(remote, sink)?);
    let destination: Arc<dyn Destination> = remote.clone();
    Ok((Backend::Remote { remote, fail_open }, destination))
}

/// How a call ended, as the host saw it.
#[derive(Debug)]
pub enum CallEnding<'a> {
    /// The full response object (or the final stream chunk) with `usage`.
    Response(&'a Value),
    /// The same as JSON text, read on the reporter thread (off the caller's path); text that
    /// is not JSON or holds no usage settles as [`CallEnding::Unknown`].
    ResponseJson(String),
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
