//! Prometheus metrics served at `GET /metrics` (text exposition format 0.0.4).
//!
//! Hand-formatted: a handful of counters and one histogram do not need a registry crate. Labels
//! take bounded values only (outcomes, HTTP methods, route templates such as `/v1/budgets/{id}`),
//! never tenant ids, keys or raw paths. Figures are per process: Prometheus sums replicas.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use bursora_core::ledger::{Reservation, Settlement};

use crate::AppState;

/// Upper bounds (seconds) of the latency histogram's buckets: loopback reservations take
/// hundreds of microseconds, a struggling store seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The server's counters and latency histograms.
#[derive(Debug, Default)]
pub struct Metrics {
    admitted: AtomicU64,
    capped: AtomicU64,
    refused: AtomicU64,
    settle_applied: AtomicU64,
    settle_duplicate: AtomicU64,
    settled_nanos: AtomicU64,
    /// route template → method → histogram. Bounded by the router's routes.
    latency: Mutex<HashMap<String, HashMap<&'static str, Histogram>>>,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Non-cumulative counts per bucket of [`LATENCY_BUCKETS`], then `+Inf`.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    sum_seconds: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }
}

/// A method as a label: the standard ones, else `other` (clients choose methods freely).
fn method_label(m: &Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// Counts a reservation decision: `admitted`, `capped` (admitted for less under `fit`) or
    /// `refused` (a block budget could not take it). Other failures are not decisions.
    pub fn reservation(&self, result: &Result<Reservation, bursora_core::Error>) {
        match result {
            // A replay reserved nothing: it is not a decision.
            Ok(r) if r.replayed => {}
            Ok(r) if r.capped => add(&self.capped, 1),
            Ok(_) => add(&self.admitted, 1),
            Err(bursora_core::Error::BudgetExceeded(_)) => add(&self.refused, 1),
            Err(_) => {}
        }
    }

    /// Counts settlements and releases: applied or duplicate, and the spend they applied.
    pub fn settlements<'a>(
        &self,
        results: impl IntoIterator<Item = &'a Result<Settlement, bursora_core::Error>>,
    ) {
        for s in results.into_iter().flatten() {
            if s.applied {
                add(&self.settle_applied, 1);
                add(
                    &self.settled_nanos,
                    u64::try_from(s.actual.nanos()).unwrap_or(0),
                );
            } else {
                add(&self.settle_duplicate, 1);
            }
        }
    }

    /// Records one request's latency under its route template.
    pub fn observe(&self, route: &str, method: &Method, took: Duration) {
        let mut latency = self
            .latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let by_method = match latency.get_mut(route) {
            Some(m) => m,
            None => latency.entry(route.to_owned()).or_default(),
        };
        by_method
            .entry(method_label(method))
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// The exposition text.
    #[must_use]
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::with_capacity(4096);
        out.push_str(
            "# HELP bursora_reservations_total Reservation decisions by outcome.\n\
             # TYPE bursora_reservations_total counter\n",
        );
        for (outcome, c) in [
            ("admitted", &self.admitted),
            ("capped", &self.capped),
            ("refused", &self.refused),
        ] {
            let _ = writeln!(
                out,
                "bursora_reservations_total{{outcome=\"{outcome}\"}} {}",
                get(c)
            );
        }
        out.push_str(
            "# HELP bursora_settlements_total Settlements and releases: applied, or a duplicate of one already applied.\n\
             # TYPE bursora_settlements_total counter\n",
        );
        for (result, c) in [
            ("applied", &self.settle_applied),
            ("duplicate", &self.settle_duplicate),
        ] {
            let _ = writeln!(
                out,
                "bursora_settlements_total{{result=\"{result}\"}} {}",
                get(c)
            );
        }
        let _ = write!(
            out,
            "# HELP bursora_settled_nanos_total Spend applied by settlements, in nano-USD (1 USD = 1e9).\n\
             # TYPE bursora_settled_nanos_total counter\n\
             bursora_settled_nanos_total {}\n",
            get(&self.settled_nanos)
        );
        out.push_str(
            "# HELP bursora_http_request_duration_seconds Request latency by route template and method.\n\
             # TYPE bursora_http_request_duration_seconds histogram\n",
        );
        let latency = self
            .latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut series: Vec<_> = latency
            .iter()
            .flat_map(|(route, m)| m.iter().map(move |(method, h)| (route, method, h)))
            .collect();
        series.sort_unstable_by_key(|&(route, method, _)| (route, method));
        for (route, method, h) in series {
            let labels = format!("method=\"{method}\",route=\"{route}\"");
            let mut cumulative = 0;
            for (i, n) in h.buckets.iter().enumerate() {
                cumulative += n;
                let le = LATENCY_BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), f64::to_string);
                let _ = writeln!(
                    out,
                    "bursora_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "bursora_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum_seconds
            );
            let _ = writeln!(
                out,
                "bursora_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        out
    }
}

/// Middleware (a route layer, so the route template is known) that times each request.
pub async fn track_latency(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let start = Instant::now();
    let response = next.run(req).await;
    if let Some(route) = route {
        state
            .metrics
            .observe(route.as_str(), &method, start.elapsed());
    }
    response
}
