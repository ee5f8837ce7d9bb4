//! The background reporter: settles reservations off the caller's path.
//!
//! A caller hands over "this reservation ended like so" and returns at once; one thread prices
//! the usage and hands whatever has queued up, as one batch, to its [`Destination`]: the local
//! ledger ([`LedgerDestination`], one transaction) or bursora-server's outbox
//! ([`crate::remote`]). `flush()` waits until everything handed over before it has been handed
//! on; `shutdown()` flushes and stops the thread.

use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::budget::CallTags;
use crate::clock::SharedClock;
use crate::estimate::{count_tokens, encoding_for_model};
use crate::ledger::Ledger;
use crate::money::NanoUsd;
use crate::pricing::{PriceContext, ResolvedModel, TokenUsage, UsageShape};
use crate::warn::{SharedSink, Warning};

/// Most settlements applied in one ledger transaction.
const MAX_BATCH: usize = 512;

/// How a call ended, as the caller saw it.
#[derive(Debug)]
pub enum Ending {
    /// The provider reported usage: settle to its exact cost.
    Usage {
        /// What the response reported.
        usage: TokenUsage,
        /// The `service_tier` the response reported.
        service_tier: Option<String>,
    },
    /// The response as JSON text (`{ usage, service_tier, ... }`), read on the reporter thread
    /// rather than on the caller's: settles like [`Ending::Usage`], or like
    /// [`Ending::Unknown`] when it holds no readable usage.
    Response {
        /// The response (or the parts of it that carry usage), as JSON.
        json: String,
        /// Which API's usage object it holds.
        shape: UsageShape,
    },
    /// A stream ended early (consumer `break`, abort, network error) with this output text
    /// seen: settle input plus those tokens.
    Partial {
        /// Upper bound of the input tokens (the estimate).
        input_tokens: u64,
        /// Output text received so far (content, tool-call arguments, refusals).
        output_text: String,
    },
    /// The provider refused before generating (4xx/5xx with no usage): release.
    Failed,
    /// The outcome is unknown (no response at all): settle at the reservation.
    Unknown,
}

/// One settlement to apply.
#[derive(Debug)]
pub struct Job {
    /// The reservation.
    pub id: String,
    /// The model it was priced with.
    pub model: Arc<ResolvedModel>,
    /// The request's price context (service tier, batch).
    pub context: PriceContext,
    /// What it reserved.
    pub reserved: NanoUsd,
    /// How it ended.
    pub ending: Ending,
    /// For a call that went out without a reservation (the server was unreachable and
    /// `failMode` is open): what to record its usage against. `None` for reserved calls.
    pub unreserved: Option<Box<CallTags>>,
    /// When the call was admitted (Unix ms): unreserved usage counts in that window.
    pub at_ms: i64,
}

/// A priced ending, as a [`Destination`] receives it.
#[derive(Debug)]
pub struct Priced {
    /// The reservation (or, for unreserved calls, the usage event) id.
    pub id: String,
    /// `Some(cost)` settles; `None` releases (the call cost nothing).
    pub amount: Option<NanoUsd>,
    /// What it reserved.
    pub reserved: NanoUsd,
    /// The model it was priced with (for messages).
    pub model: Arc<ResolvedModel>,
    /// Tokens the provider reported (or that were counted), when known.
    pub tokens: Option<(u64, u64)>,
    /// See [`Job::unreserved`].
    pub unreserved: Option<Box<CallTags>>,
    /// See [`Job::at_ms`].
    pub at_ms: i64,
}

/// Where priced endings go. Called on the reporter thread only; may block there.
pub trait Destination: Send + Sync {
    /// Applies (or queues for delivery) one batch; failures become warnings on `sink`.
    fn deliver(&self, batch: Vec<Priced>, sink: &SharedSink);
}

/// Settles into a local ledger, one transaction per batch.
pub struct LedgerDestination(pub Arc<dyn Ledger>);

enum Message {
    Settle(Box<Job>),
    Flush(Sender<()>),
}

/// The queue between callers and the reporter thread. A caller wakes the thread only when it is
/// parked with nothing to do (a futex wake costs more than the rest of a call, and on a busy
/// host the woken thread can preempt the caller). After each batch the thread itself polls the
/// queue once more after [`LINGER`] before it parks, so a steady stream of calls is collected
/// by the thread without any caller waking it, and a burst settles as one batch.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    messages: Vec<Message>,
    /// The thread is applying a batch it took off the queue.
    busy: bool,
    /// The thread waits without a timeout: only a notify brings it back.
    parked: bool,
    closed: bool,
}

/// How long the reporter lets a burst accumulate before it settles it.
const LINGER: Duration = Duration::from_millis(1);

/// Handle to the reporter thread.
pub struct Reporter {
    queue: Arc<Queue>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter").finish_non_exhaustive()
    }
}

impl Reporter {
    /// Starts the reporter thread for `ledger`.
    ///
    /// # Panics
    /// If the OS cannot start a thread.
    #[must_use]
    pub fn start(destination: Arc<dyn Destination>, clock: SharedClock, sink: SharedSink) -> Self {
        let queue = Arc::new(Queue::default());
        let q = queue.clone();
        let thread = std::thread::Builder::new()
            .name("bursora-reporter".into())
            .spawn(move || run(&q, &*destination, &clock, &sink))
            .expect("the OS could not start the bursora reporter thread");
        Self {
            queue,
            thread: Mutex::new(Some(thread)),
        }
    }

    fn push(&self, message: Message) -> bool {
        let mut st = self.queue.state.lock();
        if st.closed {
            return false;
        }
        let wake = st.parked || matches!(message, Message::Flush(_));
        st.messages.push(message);
        drop(st);
        if wake {
            self.queue.ready.notify_one();
        }
        true
    }

    /// Queues a settlement; never blocks on the ledger. Returns false after shutdown (the
    /// reservation's TTL then settles it at its reserved amount).
    pub fn send(&self, job: Job) -> bool {
        self.push(Message::Settle(Box::new(job)))
    }

    /// Whether settlements are queued or being applied.
    #[must_use]
    pub fn has_pending(&self) -> bool {
        let st = self.queue.state.lock();
        !st.messages.is_empty() || st.busy
    }

    /// Waits until every settlement queued before this call has been applied.
    pub fn flush(&self) {
        let (done_tx, done_rx) = mpsc::channel();
        if self.push(Message::Flush(done_tx)) {
            let _ = done_rx.recv();
        }
    }

    /// Flushes, then stops the thread. Idempotent.
    pub fn shutdown(&self) {
        self.flush();
        self.queue.state.lock().closed = true;
        self.queue.ready.notify_one();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(queue: &Queue, destination: &dyn Destination, clock: &SharedClock, sink: &SharedSink) {
    let mut jobs: Vec<Job> = Vec::new();
    let mut waiting: Vec<Sender<()>> = Vec::new();
    loop {
        let batch = {
            let mut st = queue.state.lock();
            let mut lingered = false;
            if st.messages.is_empty() && !st.closed {
                // Look once more after a moment before parking: callers settling steadily then
                // never have to wake this thread (see `Queue`).
                queue.ready.wait_for(&mut st, LINGER);
                lingered = true;
            }
            while st.messages.is_empty() && !st.closed {
                st.parked = true;
                queue.ready.wait(&mut st);
                st.parked = false;
                lingered = false;
            }
            if st.messages.is_empty() && st.closed {
                break;
            }
            let flushing = st.messages.iter().any(|m| matches!(m, Message::Flush(_)));
            if !flushing && !st.closed && !lingered {
                // Let the rest of a burst arrive: one batch, one ledger transaction.
                queue.ready.wait_for(&mut st, LINGER);
            }
            st.busy = true;
            std::mem::take(&mut st.messages)
        };
        for m in batch {
            match m {
                Message::Settle(job) => {
                    jobs.push(*job);
                    if jobs.len() >= MAX_BATCH {
                        apply(&mut jobs, destination, clock, sink);
                    }
                }
                Message::Flush(done) => waiting.push(done),
            }
        }
        apply(&mut jobs, destination, clock, sink);
        queue.state.lock().busy = false;
        for w in waiting.drain(..) {
            let _ = w.send(());
        }
    }
}

/// The amount a job settles at (`None`: release) and the tokens it was settled from.
#[must_use]
pub fn settle_amount(
    job: &Job,
    now_ms: i64,
    sink: &SharedSink,
) -> (Option<NanoUsd>, Option<(u64, u64)>) {
    match &job.ending {
        Ending::Usage {
            usage,
            service_tier,
        } => usage_amount(job, usage, service_tier.clone(), now_ms, sink),
        Ending::Response { json, shape } => {
            match serde_json::from_str::<serde_json::Value>(json)
                .ok()
                .and_then(|v| TokenUsage::from_openai(*shape, &v).ok())
            {
                Some((usage, service_tier)) => {
                    usage_amount(job, &usage, service_tier, now_ms, sink)
                }
                None => (Some(job.reserved), None),
            }
        }
        Ending::Partial {
            input_tokens,
            output_text,
        } => {
            let output = count_tokens(encoding_for_model(&job.model.model_ref), output_text);
            let usage = TokenUsage {
                input_tokens: *input_tokens,
                output_tokens: output,
                ..TokenUsage::default()
            };
            (
                Some(
                    job.model
                        .cost(&usage, &job.context, now_ms)
                        .unwrap_or(job.reserved),
                ),
                Some((*input_tokens, output)),
            )
        }
        Ending::Failed => (None, None),
        Ending::Unknown => (Some(job.reserved), None),
    }
}

/// What reported `usage` costs (the reservation, with a warning, when it cannot be priced).
fn usage_amount(
    job: &Job,
    usage: &TokenUsage,
    service_tier: Option<String>,
    now_ms: i64,
    sink: &SharedSink,
) -> (Option<NanoUsd>, Option<(u64, u64)>) {
    let ctx = PriceContext {
        service_tier,
        ..job.context.clone()
    };
    let tokens = Some((usage.input_tokens, usage.output_tokens));
    match job.model.cost(usage, &ctx, now_ms) {
        Ok(cost) => (Some(cost), tokens),
        Err(e) => {
            sink.warn(Warning {
                code: "usage_unpriceable",
                message: format!(
                    "could not price the usage reported for {} ({e}); settled at the reserved {}",
                    job.model.model_ref, job.reserved
                ),
            });
            (Some(job.reserved), tokens)
        }
    }
}

fn apply(
    jobs: &mut Vec<Job>,
    destination: &dyn Destination,
    clock: &SharedClock,
    sink: &SharedSink,
) {
    if jobs.is_empty() {
        return;
    }
    let now = clock.now_ms();
    let batch = jobs
        .drain(..)
        .map(|job| {
            let (amount, tokens) = settle_amount(&job, now, sink);
            Priced {
                id: job.id,
                amount,
                reserved: job.reserved,
                model: job.model,
                tokens,
                unreserved: job.unreserved,
                at_ms: job.at_ms,
            }
        })
        .collect();
    destination.deliver(batch, sink);
}

/// Warns about an applied settlement that cost more than it reserved.
pub(crate) fn warn_overrun(
    sink: &SharedSink,
    model: &ResolvedModel,
    actual: NanoUsd,
    reserved: NanoUsd,
) {
    sink.warn(Warning {
        code: "overrun",
        message: format!(
            "a call to {} cost {actual} but reserved {reserved}: the provider billed beyond the request's limit; the overrun of {} is recorded",
            model.model_ref,
            actual.saturating_sub(reserved)
        ),
    });
}

impl Destination for LedgerDestination {
    fn deliver(&self, batch: Vec<Priced>, sink: &SharedSink) {
        let (unreserved, reserved): (Vec<Priced>, Vec<Priced>) =
            batch.into_iter().partition(|p| p.unreserved.is_some());
        for p in &unreserved {
            if let (Some(call), Some(amount)) = (&p.unreserved, p.amount)
                && let Err(e) = self.0.record(call, amount)
            {
                sink.warn(Warning {
                    code: "settle_failed",
                    message: format!("recording the usage of {}: {e}", p.id),
                });
            }
        }
        if reserved.is_empty() {
            return;
        }
        let items: Vec<(&str, Option<NanoUsd>)> =
            reserved.iter().map(|p| (p.id.as_str(), p.amount)).collect();
        match self.0.settle_batch(&items) {
            Ok(results) => {
                for (p, result) in reserved.iter().zip(results) {
                    match result {
                        Ok(s) if !s.overrun.is_zero() && s.applied => {
                            warn_overrun(sink, &p.model, s.actual, s.reserved);
                        }
                        Ok(_) => {}
                        Err(e) => sink.warn(Warning {
                            code: "settle_failed",
                            message: format!("settling {}: {e}", p.id),
                        }),
                    }
                }
            }
            Err(e) => sink.warn(Warning {
                code: "settle_failed",
                message: format!(
                    "could not settle {} reservations ({e}); they will expire at their reserved amount",
                    reserved.len()
                ),
            }),
        }
    }
}
