//! Server mode (SPEC §4): the client of `bursora-server`.
//!
//! - Reservations are one HTTP round trip each ([`Remote::reserve`]), bounded by the decision
//!   timeout, on a keep-alive connection pool. Reservation ids are chosen here, so a retry on
//!   another replica replays instead of reserving twice, and a reservation whose answer was lost
//!   can still be released or settled by id.
//! - Settlements and the usage of calls that went out unreserved wait in a bounded [`outbox`]
//!   that one background task delivers in batches, with retry.
//! - A [`circuit`] breaker: after one failure no decision waits on the server until a background
//!   probe finds it back.
//!
//! All network work runs on this module's own small tokio runtime (one worker thread), so the
//! host's threads never block on the network and the crate stays independent of N-API.

mod circuit;
mod outbox;
mod wire;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use tokio::runtime::Runtime;

use self::circuit::{Circuit, FIRST_BACKOFF, next_backoff};
use self::outbox::{Outbox, Pushed, QueuedSettle, Taken};
use self::wire::{
    BatchResults, ErrorBody, ExtendBody, ReserveBody, Reserved, SettleItem, SpendList, UsageItem,
};
use crate::budget::{Budget, BudgetSpec, CallTags, Selector};
use crate::error::{Error, Result};
use crate::ledger::{BudgetStatus, Exceeded, Reservation};
use crate::money::NanoUsd;
use crate::reporter::{Destination, Priced, warn_overrun};
use crate::warn::{SharedSink, Warning};

/// Default time a decision may wait on the server before the fail mode decides.
pub const DEFAULT_DECISION_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Default bound of the outbox (settlements + usage events waiting for the server).
pub const DEFAULT_OUTBOX_CAPACITY: usize = 100_000;
/// How long `flush()` waits for a reachable server to take everything.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach bursora-server.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// Base URLs of the server's replicas (`http://host:8787`), tried in turn.
    pub endpoints: Vec<String>,
    /// A project key (`bsk_...`).
    pub api_key: String,
    /// How long a reservation may wait for the server.
    pub decision_timeout: Duration,
    /// Most settlements and usage events held while the server is away.
    pub outbox_capacity: usize,
}

impl RemoteOptions {
    /// Parses `endpoint` (one URL, or several separated by commas) and checks the key.
    ///
    /// # Errors
    /// [`Error::Config`] naming what is wrong.
    pub fn new(endpoint: &str, api_key: &str) -> Result<Self> {
        let mut endpoints = Vec::new();
        for part in endpoint.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let url = reqwest::Url::parse(part).map_err(|e| {
                Error::config(format!(
                    "BURSORA_ENDPOINT {part:?} is not a URL ({e}); use e.g. http://127.0.0.1:8787"
                ))
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err(Error::config(format!(
                    "BURSORA_ENDPOINT {part:?} must be an http:// or https:// URL of bursora-server"
                )));
            }
            endpoints.push(part.trim_end_matches('/').to_owned());
        }
        if endpoints.is_empty() {
            return Err(Error::config(
                "BURSORA_ENDPOINT is empty; give the URL of bursora-server, e.g. http://127.0.0.1:8787",
            ));
        }
        if api_key.trim().is_empty() {
            return Err(Error::config(
                "server mode needs an API key: set BURSORA_API_KEY (or the apiKey option) to a project key from bursora-server",
            ));
        }
        if HeaderValue::from_str(&format!("Bearer {api_key}")).is_err() {
            return Err(Error::config(
                "the Bursora API key contains characters that cannot go in an HTTP header",
            ));
        }
        Ok(Self {
            endpoints,
            api_key: api_key.to_owned(),
            decision_timeout: DEFAULT_DECISION_TIMEOUT,
            outbox_capacity: DEFAULT_OUTBOX_CAPACITY,
        })
    }
}

/// What a reservation attempt came to.
#[derive(Debug)]
pub enum ReserveOutcome {
    /// Reserved (possibly capped under `fit`).
    Reserved(Reservation),
    /// A block budget cannot take it.
    Refused(Box<Exceeded>),
    /// The request itself is wrong (a bug or a version mismatch): not a fail-mode matter.
    Invalid(String),
    /// The server did not decide. `maybe_reserved`: the request may have reached it, so a
    /// reservation with this id may exist and must be released or settled by id.
    Unavailable {
        /// Why, for the warning and the error message.
        reason: String,
        /// Whether the request was sent at all.
        maybe_reserved: bool,
    },
}

/// One reservation request (the guard has estimated and priced the call).
#[derive(Debug)]
pub struct RemoteReserve<'a> {
    /// Client-chosen id.
    pub id: &'a str,
    /// The call's tags, provider and model.
    pub call: &'a CallTags,
    /// Upper bound of its cost.
    pub amount: NanoUsd,
    /// Under `fit`, the least worth reserving.
    pub fit_min: Option<NanoUsd>,
    /// Time to live.
    pub ttl_ms: i64,
}

struct Shared {
    http: reqwest::Client,
    endpoints: Vec<String>,
    current: AtomicUsize,
    auth: HeaderValue,
    timeout: Duration,
    circuit: Circuit,
    outbox: Outbox,
    sink: SharedSink,
}

/// The connection to bursora-server: its runtime, circuit and outbox.
pub struct Remote {
    shared: Arc<Shared>,
    runtime: Mutex<Option<Runtime>>,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("endpoints", &self.shared.endpoints)
            .finish_non_exhaustive()
    }
}

/// A failed request: the error's text, never the key.
fn transport(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "no answer within the decision timeout".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// An HTTP answer: status and body.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn error(&self) -> Option<wire::ErrorDetail> {
        serde_json::from_slice::<ErrorBody>(&self.body)
            .ok()
            .map(|b| b.error)
    }

    fn describe(&self) -> String {
        match self.error() {
            Some(e) => format!("HTTP {} {}: {}", self.status, e.code, e.message),
            None => format!("HTTP {}", self.status),
        }
    }
}

/// Why a request got no answer, and whether it may have been processed.
struct NoAnswer {
    reason: String,
    sent: bool,
}

impl Shared {
    /// Sends one request to the current replica, moving on to the next one on a failure when
    /// `retry` allows it (idempotent requests) and time remains.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
        retry: bool,
    ) -> std::result::Result<Answer, NoAnswer> {
        let deadline = Instant::now() + timeout;
        let n = self.endpoints.len();
        let mut failure = NoAnswer {
            reason: "no replica was tried".into(),
            sent: false,
        };
        for attempt in 0..n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let i = self.current.load(Ordering::Relaxed) % n;
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.endpoints[i]))
                .header(AUTHORIZATION, self.auth.clone())
                .timeout(left);
            if let Some(b) = &body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            let rotate = || {
                let _ = self.current.compare_exchange(
                    i,
                    (i + 1) % n,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            };
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    match response.bytes().await {
                        Ok(bytes) => {
                            let answer = Answer {
                                status,
                                body: bytes.to_vec(),
                            };
                            // A replica whose store fails may be alone in failing.
                            if status >= 500 && retry && attempt + 1 < n {
                                rotate();
                                failure = NoAnswer {
                                    reason: answer.describe(),
                                    sent: true,
                                };
                                continue;
                            }
                            return Ok(answer);
                        }
                        Err(e) => {
                            failure = NoAnswer {
                                reason: transport(&e),
                                sent: true,
                            };
                            rotate();
                            if !retry || e.is_timeout() {
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    // A refused connection never reached the server; anything else may have.
                    let sent = failure.sent || !e.is_connect();
                    failure = NoAnswer {
                        reason: transport(&e),
                        sent,
                    };
                    rotate();
                    if e.is_timeout() || (!retry && !e.is_connect()) {
                        break;
                    }
                }
            }
        }
        Err(failure)
    }

    fn warn(&self, code: &'static str, message: String) {
        self.sink.warn(Warning { code, message });
    }

    fn endpoint_list(&self) -> String {
        self.endpoints.join(", ")
    }

    /// Opens the circuit after a failure; starts the probe if none runs.
    fn trip(self: &Arc<Self>, reason: &str) {
        if self.circuit.trip() {
            self.warn(
                "server_unavailable",
                format!(
                    "bursora-server ({}) did not answer ({reason}). Until it is back, decisions follow failMode without waiting on it, and settlements wait in memory to be delivered",
                    self.endpoint_list()
                ),
            );
            let shared = self.clone();
            tokio::spawn(async move { shared.probe().await });
        }
    }

    /// One authenticated, cheap request per backoff period until the server answers.
    async fn probe(self: Arc<Self>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            tokio::time::sleep(backoff).await;
            if self.outbox.state.lock().stopping {
                self.circuit.probe_ended();
                return;
            }
            match self
                .send(Method::GET, "/v1/budgets", None, self.timeout, true)
                .await
            {
                Ok(a) if a.status < 300 => {
                    self.circuit.close();
                    self.outbox.wake.notify_one();
                    self.outbox.changed.notify_waiters();
                    return;
                }
                Ok(a) if a.status == 401 || a.status == 403 => self.warn(
                    "server_unauthorized",
                    format!(
                        "bursora-server refused the API key ({}): set BURSORA_API_KEY to a valid project key",
                        a.describe()
                    ),
                ),
                _ => {}
            }
            backoff = next_backoff(backoff);
        }
    }

    async fn reserve(self: &Arc<Self>, r: &RemoteReserve<'_>) -> ReserveOutcome {
        if self.circuit.is_open() {
            return ReserveOutcome::Unavailable {
                reason: "bursora-server is unreachable (circuit open)".into(),
                maybe_reserved: false,
            };
        }
        let body = ReserveBody {
            id: r.id,
            tags: &r.call.tags,
            provider: &r.call.provider,
            model: &r.call.model,
            amount_nanos: r.amount.nanos(),
            policy: if r.fit_min.is_some() { "fit" } else { "block" },
            min_nanos: r.fit_min.map(NanoUsd::nanos),
            ttl_ms: r.ttl_ms,
        };
        let bytes = match serde_json::to_vec(&body) {
            Ok(b) => b,
            Err(e) => return ReserveOutcome::Invalid(e.to_string()),
        };
        // The id makes the reserve idempotent: retrying it on another replica is safe.
        let answer = match self
            .send(Method::POST, "/v1/reserve", Some(bytes), self.timeout, true)
            .await
        {
            Ok(a) => a,
            Err(f) => {
                self.trip(&f.reason);
                return ReserveOutcome::Unavailable {
                    reason: f.reason,
                    maybe_reserved: f.sent,
                };
            }
        };
        match answer.status {
            200 => match serde_json::from_slice::<Reserved>(&answer.body) {
                // A retry replayed a reservation that has already ended (released or expired
                // meanwhile): no money is held for this call any more.
                Ok(r) if r.status != "active" => ReserveOutcome::Unavailable {
                    reason: format!("reservation {} had already ended ({})", r.id, r.status),
                    maybe_reserved: false,
                },
                Ok(r) => match NanoUsd::from_nanos(r.amount_nanos) {
                    Ok(amount) => ReserveOutcome::Reserved(Reservation {
                        id: r.id,
                        amount,
                        capped: r.capped,
                        budgets: r.budgets,
                        expires_at_ms: r.expires_at_ms,
                        replayed: r.replayed,
                        ended: None,
                    }),
                    Err(e) => ReserveOutcome::Invalid(format!("bad amount from the server: {e}")),
                },
                Err(e) => ReserveOutcome::Unavailable {
                    reason: format!("unreadable answer from bursora-server: {e}"),
                    maybe_reserved: true,
                },
            },
            409 => match answer.error().and_then(|e| e.budget).map(exceeded) {
                Some(Ok(x)) => ReserveOutcome::Refused(Box::new(x)),
                _ => ReserveOutcome::Unavailable {
                    reason: format!(
                        "unexpected refusal from bursora-server: {}",
                        answer.describe()
                    ),
                    maybe_reserved: false,
                },
            },
            401 | 403 | 404 => {
                let reason = format!(
                    "bursora-server refused the API key ({}): set BURSORA_API_KEY to a project key of this server",
                    answer.describe()
                );
                self.warn("server_unauthorized", reason.clone());
                self.trip(&reason);
                ReserveOutcome::Unavailable {
                    reason,
                    maybe_reserved: false,
                }
            }
            400..=499 => ReserveOutcome::Invalid(answer.describe()),
            _ => {
                let reason = answer.describe();
                self.trip(&reason);
                ReserveOutcome::Unavailable {
                    reason,
                    maybe_reserved: true,
                }
            }
        }
    }

    /// The delivery task: drains the outbox while the circuit is closed.
    async fn deliver_forever(self: Arc<Self>) {
        loop {
            let batch = loop {
                let wake = self.outbox.wake.notified();
                {
                    let mut st = self.outbox.state.lock();
                    if st.stopping && (st.len() == 0 || self.circuit.is_open()) {
                        return;
                    }
                    if !self.circuit.is_open()
                        && let Some(batch) = st.take()
                    {
                        st.in_flight = true;
                        break batch;
                    }
                }
                wake.await;
            };
            let back = self.deliver(batch).await;
            let dropped = {
                let mut st = self.outbox.state.lock();
                st.in_flight = false;
                let delivered = back.is_none();
                if let Some(batch) = back {
                    st.put_back(batch);
                }
                if delivered {
                    std::mem::take(&mut st.dropped)
                } else {
                    0
                }
            };
            if dropped > 0 {
                self.warn(
                    "outbox_dropped",
                    format!(
                        "{dropped} settlements or usage events were dropped while bursora-server was away (the outbox holds {}): reserved calls among them expired at their reserved amount; the usage of unreserved ones is not counted",
                        self.outbox.capacity
                    ),
                );
            }
            self.outbox.changed.notify_waiters();
        }
    }

    /// Sends one batch; returns it if it must be retried.
    async fn deliver(self: &Arc<Self>, batch: Taken) -> Option<Taken> {
        let (path, bytes) = match &batch {
            Taken::Settles(items) => {
                let items: Vec<&SettleItem> = items.iter().map(|q| &q.item).collect();
                (
                    "/v1/settle",
                    serde_json::to_vec(&wire::Batch { items: &items }),
                )
            }
            Taken::Usage(items) => ("/v1/usage", serde_json::to_vec(&wire::Batch { items })),
        };
        let Ok(bytes) = bytes else {
            return None;
        };
        // Settlements and usage are idempotent by id: safe to resend anywhere.
        let answer = match self
            .send(Method::POST, path, Some(bytes), FLUSH_TIMEOUT, true)
            .await
        {
            Ok(a) if a.status < 500 && a.status != 401 && a.status != 403 => a,
            Ok(a) => {
                self.trip(&a.describe());
                return Some(batch);
            }
            Err(f) => {
                self.trip(&f.reason);
                return Some(batch);
            }
        };
        if answer.status != 200 {
            // The server understood and refused the batch itself: resending cannot help.
            self.warn(
                "settle_rejected",
                format!(
                    "bursora-server rejected {} {} ({}); they were dropped: reserved calls among them expire at their reserved amount",
                    batch_len(&batch),
                    if path == "/v1/settle" { "settlements" } else { "usage events" },
                    answer.describe()
                ),
            );
            return None;
        }
        let results = serde_json::from_slice::<BatchResults>(&answer.body)
            .map(|r| r.results)
            .unwrap_or_default();
        if let Taken::Settles(items) = &batch {
            for (q, r) in items.iter().zip(&results) {
                if let Some(e) = &r.error {
                    if !(q.may_be_unknown && e.code == "not_found") {
                        self.warn(
                            "settle_failed",
                            format!("settling {}: {} ({})", q.item.id, e.message, e.code),
                        );
                    }
                } else if r.applied == Some(true)
                    && r.overrun_nanos.unwrap_or(0) > 0
                    && let (Some(model), Some(actual), Some(reserved)) =
                        (&q.model, r.actual_nanos, r.reserved_nanos)
                {
                    warn_overrun(
                        &self.sink,
                        model,
                        NanoUsd::from_nanos(actual).unwrap_or(NanoUsd::ZERO),
                        NanoUsd::from_nanos(reserved).unwrap_or(NanoUsd::ZERO),
                    );
                }
            }
        } else if let Taken::Usage(items) = &batch {
            for (u, r) in items.iter().zip(&results) {
                if let Some(e) = &r.error {
                    self.warn(
                        "usage_failed",
                        format!(
                            "recording the usage of {}: {} ({})",
                            u.id, e.message, e.code
                        ),
                    );
                }
            }
        }
        None
    }

    /// Waits until everything queued so far is delivered, the server is unreachable, or
    /// `deadline`; returns how many items still wait.
    async fn flush(&self, deadline: Instant) -> usize {
        loop {
            let changed = self.outbox.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let st = self.outbox.state.lock();
                if st.len() == 0 && !st.in_flight {
                    return 0;
                }
                if self.circuit.is_open() && !st.in_flight {
                    return st.len();
                }
            }
            self.outbox.wake.notify_one();
            if tokio::time::timeout_at(deadline.into(), changed)
                .await
                .is_err()
            {
                return self.outbox.pending();
            }
        }
    }

    fn queue(&self, pushed: Pushed) {
        if pushed == Pushed::DroppedFirst {
            self.warn(
                "outbox_full",
                format!(
                    "{} settlements and usage events wait for bursora-server ({}); new ones are dropped until it is back (their reservations expire at their reserved amount)",
                    self.outbox.capacity,
                    self.endpoint_list()
                ),
            );
        }
    }
}

fn batch_len(batch: &Taken) -> usize {
    match batch {
        Taken::Settles(v) => v.len(),
        Taken::Usage(v) => v.len(),
    }
}

fn nanos(n: i64) -> Result<NanoUsd> {
    NanoUsd::from_nanos(n)
}

fn exceeded(b: wire::ExceededBudget) -> Result<Exceeded> {
    Ok(Exceeded {
        id: Arc::from(b.id),
        name: b.name,
        key: b.key,
        window: b.window.parse()?,
        limit: nanos(b.limit_nanos)?,
        spent: nanos(b.spent_nanos)?,
        reserved: nanos(b.reserved_nanos)?,
        requested: nanos(b.requested_nanos)?,
        resets_at_ms: b.resets_at_ms,
    })
}

fn counter_status(c: wire::Counter) -> Result<BudgetStatus> {
    let selector = Selector::new(c.selector)?;
    let spec = BudgetSpec::new(
        c.name,
        selector,
        nanos(c.limit_nanos)?,
        c.window.parse()?,
        c.mode.parse()?,
    )?;
    Ok(BudgetStatus {
        budget: Budget {
            id: Arc::from(c.id),
            spec,
        },
        key: c.key,
        spent: nanos(c.spent_nanos)?,
        reserved: nanos(c.reserved_nanos)?,
        overrun: nanos(c.overrun_nanos)?,
        window_start_ms: c.window_start_ms,
        resets_at_ms: c.resets_at_ms,
    })
}

/// An HTTP client builder with TLS ready (rustls with the ring provider, the platform's
/// certificate store). Every HTTP client of the workspace starts here.
pub fn http_client() -> reqwest::ClientBuilder {
    // reqwest is built without a bundled crypto provider; install ring's once for this copy of
    // rustls (a provider already installed, by us or the host binary, is kept).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

impl Remote {
    /// Connects lazily (nothing is sent until the first call) and starts the delivery task.
    ///
    /// # Errors
    /// [`Error::Config`] if the HTTP client or the runtime cannot be built.
    pub fn new(options: RemoteOptions, sink: SharedSink) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bursora-remote")
            .enable_all()
            .build()
            .map_err(|e| Error::config(format!("cannot start Bursora's network thread: {e}")))?;
        let http = http_client()
            .connect_timeout(options.decision_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("bursora-sdk/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::config(format!("cannot build the HTTP client: {e}")))?;
        let auth = HeaderValue::from_str(&format!("Bearer {}", options.api_key))
            .map_err(|_| Error::config("the Bursora API key cannot go in an HTTP header"))?;
        let mut auth = auth;
        auth.set_sensitive(true);
        let shared = Arc::new(Shared {
            http,
            endpoints: options.endpoints,
            current: AtomicUsize::new(0),
            auth,
            timeout: options.decision_timeout,
            circuit: Circuit::default(),
            outbox: Outbox::new(options.outbox_capacity.max(1)),
            sink,
        });
        let handle = runtime.handle().clone();
        handle.spawn(shared.clone().deliver_forever());
        Ok(Self {
            shared,
            runtime: Mutex::new(Some(runtime)),
            handle,
        })
    }

    /// Runs `future` on the network thread.
    pub fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        self.handle.spawn(future);
    }

    /// Whether the circuit is open (decisions are made without the server).
    #[must_use]
    pub fn circuit_open(&self) -> bool {
        self.shared.circuit.is_open()
    }

    /// Reserves over HTTP. Must run on the network thread (inside [`Remote::spawn`]).
    pub async fn reserve(&self, request: &RemoteReserve<'_>) -> ReserveOutcome {
        self.shared.reserve(request).await
    }

    /// Renews a live reservation in the background; best effort.
    pub fn extend(&self, id: &str, ttl_ms: i64) {
        if self.shared.circuit.is_open() {
            return;
        }
        let shared = self.shared.clone();
        let id = id.to_owned();
        self.handle.spawn(async move {
            if let Ok(body) = serde_json::to_vec(&ExtendBody { id: &id, ttl_ms }) {
                let _ = shared
                    .send(Method::POST, "/v1/extend", Some(body), shared.timeout, true)
                    .await;
            }
        });
    }

    /// Queues the release of a reservation whose reserve got no answer (it may exist).
    pub fn release_maybe(&self, id: &str) {
        let pushed = self.shared.outbox.push_settle(QueuedSettle {
            item: SettleItem {
                id: id.to_owned(),
                actual_nanos: None,
                input_tokens: None,
                output_tokens: None,
            },
            model: None,
            may_be_unknown: true,
        });
        self.shared.queue(pushed);
    }

    /// Settlements and usage events waiting or in flight.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.shared.outbox.pending()
    }

    /// Delivers what is queued now; resolves when done, when the server is unreachable, or at
    /// `timeout`. Returns how many items still wait. Must run on the network thread.
    pub async fn flush_async(&self, timeout: Duration) -> usize {
        self.shared.flush(Instant::now() + timeout).await
    }

    /// [`Remote::flush_async`] for a thread outside the runtime (blocks it).
    #[must_use]
    pub fn flush(&self, timeout: Duration) -> usize {
        let shared = self.shared.clone();
        let deadline = Instant::now() + timeout;
        self.block_on(async move { shared.flush(deadline).await })
            .unwrap_or_else(|| self.pending())
    }

    fn block_on<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        // Run on the network thread and wait here: works from any thread that is not itself a
        // runtime thread (the host's threads, libuv's pool).
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv().ok()
    }

    /// Every budget's counters in the current window (`GET /v1/spend`). Blocks the calling
    /// thread for at most the decision timeout.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server does not answer; [`Error::Config`] for a refused
    /// key.
    pub fn status(&self) -> Result<Vec<BudgetStatus>> {
        let shared = self.shared.clone();
        let answer = self
            .block_on(async move {
                shared
                    .send(Method::GET, "/v1/spend", None, shared.timeout, true)
                    .await
            })
            .ok_or_else(|| Error::Unavailable {
                message: "Bursora's network thread has stopped (after shutdown())".into(),
            })?;
        let answer = answer.map_err(|f| Error::Unavailable {
            message: format!(
                "bursora-server ({}) did not answer: {}",
                self.shared.endpoint_list(),
                f.reason
            ),
        })?;
        match answer.status {
            200 => {
                let list: SpendList =
                    serde_json::from_slice(&answer.body).map_err(|e| Error::Unavailable {
                        message: format!("unreadable answer from bursora-server: {e}"),
                    })?;
                list.budgets.into_iter().map(counter_status).collect()
            }
            401 | 403 | 404 => Err(Error::config(format!(
                "bursora-server refused the API key ({}): set BURSORA_API_KEY to a project key of this server",
                answer.describe()
            ))),
            _ => Err(Error::Unavailable {
                message: format!("bursora-server could not answer: {}", answer.describe()),
            }),
        }
    }

    /// Delivers what it can within [`FLUSH_TIMEOUT`], then stops the network thread. What could
    /// not be delivered is counted in a warning. Idempotent.
    pub fn shutdown(&self) {
        let Some(runtime) = self.runtime.lock().take() else {
            return;
        };
        let shared = self.shared.clone();
        let work = move || {
            let s = shared.clone();
            let left = runtime.block_on(async move {
                let left = s.flush(Instant::now() + FLUSH_TIMEOUT).await;
                s.outbox.state.lock().stopping = true;
                s.outbox.wake.notify_one();
                left
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
            if left > 0 {
                shared.warn(
                    "undelivered",
                    format!(
                        "shutdown(): {left} settlements or usage events could not be delivered to bursora-server ({}): reserved calls among them expire there at their reserved amount; the usage of calls made while it was away is lost",
                        shared.endpoint_list()
                    ),
                );
            }
        };
        // The last owner may let go on the network thread itself (an admission still in flight
        // when the host dropped the guard): a runtime cannot be waited on or dropped from its own
        // thread, so the shutdown moves to a thread of its own.
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::Builder::new()
                .name("bursora-remote-shutdown".into())
                .spawn(work);
        } else {
            work();
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Destination for Remote {
    fn deliver(&self, batch: Vec<Priced>, _sink: &SharedSink) {
        for p in batch {
            let tokens = p.tokens;
            let pushed = match (p.unreserved, p.amount) {
                (Some(call), Some(amount)) => self.shared.outbox.push_usage(UsageItem {
                    id: p.id,
                    tags: call
                        .tags
                        .iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect::<BTreeMap<_, _>>(),
                    provider: call.provider,
                    model: call.model,
                    actual_nanos: amount.nanos(),
                    at_ms: p.at_ms,
                    input_tokens: tokens.map(|t| t.0),
                    output_tokens: tokens.map(|t| t.1),
                }),
                // An unreserved call that cost nothing: release the reservation its lost
                // reserve may have made.
                (Some(_), None) => self.shared.outbox.push_settle(QueuedSettle {
                    item: SettleItem {
                        id: p.id,
                        actual_nanos: None,
                        input_tokens: None,
                        output_tokens: None,
                    },
                    model: None,
                    may_be_unknown: true,
                }),
                (None, amount) => self.shared.outbox.push_settle(QueuedSettle {
                    item: SettleItem {
                        id: p.id,
                        actual_nanos: amount.map(NanoUsd::nanos),
                        input_tokens: tokens.map(|t| t.0),
                        output_tokens: tokens.map(|t| t.1),
                    },
                    model: Some(p.model),
                    may_be_unknown: false,
                }),
            };
            self.shared.queue(pushed);
        }
    }
}
