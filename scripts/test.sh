#!/usr/bin/env bash
# `npm test`: every Rust test of the workspace, then the JS tests against the built addon with
# the real openai client. Run `npm install` (or `npm run build`) first so the addon is current.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked
if [ ! -f dist/index.mjs ] || [ ! -f bursora.linux-x64-gnu.node ]; then
  echo "the package is not built: run 'npm install' (or 'npm run build') first" >&2
  exit 1
fi
node --test --test-concurrency=1 tests/
