#!/usr/bin/env bash
# The suites `npm test` runs (scripts/test.sh wraps them in a throwaway Postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked
node --test --test-concurrency=1 tests/
