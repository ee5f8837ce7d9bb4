#!/usr/bin/env bash
# Copies the genai-prices data file of the crate version pinned in the workspace into
# crates/core/data/genai-prices.json, and records that version in genai-prices.version.
#
# The pricing module embeds that copy with `include_str!`, and hands the very same bytes to
# `genai_prices::Calculator::from_json` for model matching, so matching and integer prices always
# come from one snapshot. To move to newer prices: bump the `genai-prices` pin in the root
# Cargo.toml, run this script, run `cargo test -p bursora-core`, and commit the data with the pin.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# The manifest path of the genai-prices package that this workspace actually resolves to, from
# cargo's own resolution (this also downloads the crate into the registry if it is missing).
manifest="$(cargo metadata --format-version 1 --locked | python3 -c '
import json, sys
meta = json.load(sys.stdin)
found = [p for p in meta["packages"] if p["name"] == "genai-prices"]
if len(found) != 1:
    sys.exit("expected exactly one genai-prices package in the resolved workspace, found %d" % len(found))
print(found[0]["version"])
print(found[0]["manifest_path"])
')"
version="$(printf '%s\n' "$manifest" | sed -n 1p)"
crate_dir="$(dirname "$(printf '%s\n' "$manifest" | sed -n 2p)")"
source_file="$crate_dir/data/prices.json"

if [[ ! -f "$source_file" ]]; then
    echo "error: $source_file not found; the genai-prices $version package ships no data file" >&2
    exit 1
fi
python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$source_file"

dest_dir="crates/core/data"
if [[ "${1:-}" == "--check" ]]; then
    if cmp -s "$source_file" "$dest_dir/genai-prices.json" \
        && [[ "$(cat "$dest_dir/genai-prices.version")" == "genai-prices $version" ]]; then
        echo "price data matches genai-prices $version"
        exit 0
    fi
    echo "error: crates/core/data/genai-prices.json is not the data of the pinned genai-prices $version; run scripts/update-prices.sh" >&2
    exit 1
fi
mkdir -p "$dest_dir"
cp "$source_file" "$dest_dir/genai-prices.json"
printf 'genai-prices %s\n' "$version" > "$dest_dir/genai-prices.version"
echo "copied genai-prices $version data ($(wc -c < "$dest_dir/genai-prices.json") bytes) to $dest_dir/genai-prices.json"
