//! The background reporter: settles reservations off the caller's path.
//!
//! A caller hands over "this reservation ended like so" and returns at once; one thread prices
//! the usage and settles whatever has queued up in a single ledger batch. `flush()` waits until
//! everything handed over before it has been applied; `shutdown()` flushes and stops the thread.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use crate::clock::SharedClock;
use crate::estimate::{count_tokens, encoding_for_model};
use crate::ledger::Ledger;
use crate::money::NanoUsd;
use crate::pricing::{PriceContext, ResolvedModel, TokenUsage};
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
}

enum Message {
    Settle(Box<Job>),
    Flush(Sender<()>),
}

/// Handle to the reporter thread.
pub struct Reporter {
    tx: Mutex<Option<Sender<Message>>>,
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
    pub fn start(ledger: Arc<dyn Ledger>, clock: SharedClock, sink: SharedSink) -> Self {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("bursora-reporter".into())
            .spawn(move || run(&rx, &*ledger, &clock, &sink))
            .expect("the OS could not start the bursora reporter thread");
        Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Queues a settlement; never blocks. Returns false after shutdown (the caller then settles
    /// inline or drops it; the reservation's TTL covers it either way).
    pub fn send(&self, job: Job) -> bool {
        self.tx
            .lock()
            .as_ref()
            .is_some_and(|tx| tx.send(Message::Settle(Box::new(job))).is_ok())
    }

    /// Waits until every settlement queued before this call has been applied.
    pub fn flush(&self) {
        let (done_tx, done_rx) = mpsc::channel();
        let sent = self
            .tx
            .lock()
            .as_ref()
            .is_some_and(|tx| tx.send(Message::Flush(done_tx)).is_ok());
        if sent {
            let _ = done_rx.recv();
        }
    }

    /// Flushes, then stops the thread. Idempotent.
    pub fn shutdown(&self) {
        self.flush();
        drop(self.tx.lock().take());
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

fn run(rx: &Receiver<Message>, ledger: &dyn Ledger, clock: &SharedClock, sink: &SharedSink) {
    let mut jobs: Vec<Job> = Vec::new();
    let mut waiting: Vec<Sender<()>> = Vec::new();
    loop {
        // Block for the first message, then take whatever else is already queued.
        match rx.recv_timeout(Duration::from_secs(3600)) {
            Ok(m) => take(m, &mut jobs, &mut waiting),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => take(m, &mut jobs, &mut waiting),
                Err(_) => break,
            }
        }
        apply(&mut jobs, ledger, clock, sink);
        for w in waiting.drain(..) {
            let _ = w.send(());
        }
    }
    apply(&mut jobs, ledger, clock, sink);
}

fn take(m: Message, jobs: &mut Vec<Job>, waiting: &mut Vec<Sender<()>>) {
    match m {
        Message::Settle(job) => jobs.push(*job),
        Message::Flush(done) => waiting.push(done),
    }
}

/// The amount a job settles at (`None`: release).
#[must_use]
pub fn settle_amount(job: &Job, now_ms: i64, sink: &SharedSink) -> Option<NanoUsd> {
    match &job.ending {
        Ending::Usage {
            usage,
            service_tier,
        } => {
            let ctx = PriceContext {
                service_tier: service_tier.clone(),
                ..job.context.clone()
            };
            match job.model.cost(usage, &ctx, now_ms) {
                Ok(cost) => Some(cost),
                Err(e) => {
                    sink.warn(Warning {
                        code: "usage_unpriceable",
                        message: format!(
                            "could not price the usage reported for {} ({e}); settled at the reserved {}",
                            job.model.model_ref, job.reserved
                        ),
                    });
                    Some(job.reserved)
                }
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
            Some(
                job.model
                    .cost(&usage, &job.context, now_ms)
                    .unwrap_or(job.reserved),
            )
        }
        Ending::Failed => None,
        Ending::Unknown => Some(job.reserved),
    }
}

fn apply(jobs: &mut Vec<Job>, ledger: &dyn Ledger, clock: &SharedClock, sink: &SharedSink) {
    if jobs.is_empty() {
        return;
    }
    let now = clock.now_ms();
    let amounts: Vec<Option<NanoUsd>> = jobs.iter().map(|j| settle_amount(j, now, sink)).collect();
    let items: Vec<(&str, Option<NanoUsd>)> = jobs
        .iter()
        .zip(&amounts)
        .map(|(j, a)| (j.id.as_str(), *a))
        .collect();
    match ledger.settle_batch(&items) {
        Ok(results) => {
            for (job, result) in jobs.iter().zip(results) {
                match result {
                    Ok(s) if !s.overrun.is_zero() && s.applied => sink.warn(Warning {
                        code: "overrun",
                        message: format!(
                            "a call to {} cost {} but reserved {}: the provider billed beyond the request's limit; the overrun of {} is recorded",
                            job.model.model_ref, s.actual, s.reserved, s.overrun
                        ),
                    }),
                    Ok(_) => {}
                    Err(e) => sink.warn(Warning { code: "settle_failed", message: format!("settling {}: {e}", job.id) }),
                }
            }
        }
        Err(e) => sink.warn(Warning {
            code: "settle_failed",
            message: format!(
                "could not settle {} reservations ({e}); they will expire at their reserved amount",
                jobs.len()
            ),
        }),
    }
    jobs.clear();
}
