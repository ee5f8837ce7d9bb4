//! Benchmarks of bursora-core.
fn main() {}
