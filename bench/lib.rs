//! Shared helpers for the benchmarks in `benches/`: time a closure over many iterations in a few
//! rounds and print a Markdown table a person can paste into a note.

use std::time::{Duration, Instant};

/// One measured row.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Median time per operation over the rounds.
    pub per_op: Duration,
    /// Fastest round's time per operation.
    pub best: Duration,
    /// Operations per second at the median.
    pub ops_per_sec: f64,
    /// The target, as text, and whether the median meets it.
    pub target: Option<(String, bool)>,
}

/// Runs `op` `iters` times per round for `rounds` rounds (after one warm-up round) and returns
/// the median and best time per operation.
pub fn measure(name: &str, rounds: usize, iters: u64, mut op: impl FnMut(u64)) -> Row {
    let mut per_op: Vec<Duration> = Vec::with_capacity(rounds);
    for round in 0..=rounds {
        let start = Instant::now();
        for i in 0..iters {
            op(i);
        }
        let elapsed = start.elapsed();
        if round > 0 {
            per_op.push(elapsed / u32::try_from(iters).unwrap_or(u32::MAX));
        }
    }
    per_op.sort();
    let median = per_op[per_op.len() / 2];
    Row {
        name: name.to_owned(),
        per_op: median,
        best: per_op[0],
        ops_per_sec: 1.0 / median.as_secs_f64(),
        target: None,
    }
}

impl Row {
    /// Marks the row against a maximum time per operation.
    #[must_use]
    pub fn max_per_op(mut self, limit: Duration) -> Self {
        self.target = Some((format!("≤ {limit:?}/op"), self.per_op <= limit));
        self
    }

    /// Marks the row against a minimum rate.
    #[must_use]
    pub fn min_ops_per_sec(mut self, rate: f64) -> Self {
        self.target = Some((format!("≥ {rate:.0}/s"), self.ops_per_sec >= rate));
        self
    }
}

/// Renders rows as a Markdown table.
#[must_use]
pub fn table(title: &str, rows: &[Row]) -> String {
    let mut out = format!(
        "\n### {title}\n\n| benchmark | median / op | best / op | ops/s | target | met |\n|---|---:|---:|---:|---|---|\n"
    );
    for r in rows {
        let (target, met) = r.target.as_ref().map_or(("-".to_owned(), "-"), |(t, ok)| {
            (t.clone(), if *ok { "yes" } else { "NO" })
        });
        out.push_str(&format!(
            "| {} | {:.2?} | {:.2?} | {:.0} | {} | {} |\n",
            r.name, r.per_op, r.best, r.ops_per_sec, target, met
        ));
    }
    out
}
