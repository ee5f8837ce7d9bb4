//! Estimation benchmarks.
fn main() {}
