#!/usr/bin/env bash
# Fails when the committed price data is not the data of the pinned genai-prices crate.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/update-prices.sh --check
