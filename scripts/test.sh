#!/usr/bin/env bash
# `npm test`: every Rust test of the workspace, then the JS tests against the built addon with
# the real openai client (and the real bursora-server binary for server mode). Run `npm install`
# (or `npm run build`) first so the addon is current.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f dist/index.mjs ] || [ ! -f bursora.linux-x64-gnu.node ]; then
  echo "the package is not built: run 'npm install' (or 'npm run build') first" >&2
  exit 1
fi
# Both halves run against a throwaway Postgres (bursora-server's stores, server-mode replicas):
# pg-test.sh installs Postgres with apt when it is missing, starts a cluster and sets
# BURSORA_TEST_DATABASE_URL. Without root to install it, the Postgres cases say they skipped.
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ "$(id -u)" = 0 ]; then
  exec bash scripts/pg-test.sh --run bash scripts/test-suites.sh
else
  echo "note: no PostgreSQL and not root: the Postgres tests will skip" >&2
  exec bash scripts/test-suites.sh
fi
