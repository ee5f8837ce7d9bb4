#!/usr/bin/env bash
# `npm test`: every Rust test of the workspace, then the JS tests against the built addon with
# the real openai client. Run `npm install` (or `npm run build`) first so the addon is current.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Rust suite runs against a throwaway Postgres too (bursora-server's stores): pg-test.sh
# installs Postgres with apt when it is missing, starts a cluster and sets
# BURSORA_TEST_DATABASE_URL. Without root to install it, the Postgres half says it skipped.
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ "$(id -u)" = 0 ]; then
  bash scripts/pg-test.sh --run cargo test --workspace --locked
else
  echo "note: no PostgreSQL and not root: bursora-server's Postgres tests will skip" >&2
  cargo test --workspace --locked
fi
if [ ! -f dist/index.mjs ] || [ ! -f bursora.linux-x64-gnu.node ]; then
  echo "the package is not built: run 'npm install' (or 'npm run build') first" >&2
  exit 1
fi
node --test --test-concurrency=1 tests/
