#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 60), seeded with
# the JSON-RPC specification's examples and the hostile-input catalogue, and
# prints each target's executions. A crash stops it, with the input saved
# under fuzz/artifacts/TARGET/ and the command that replays it printed.
#
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# cargo fuzz passes nightly-only flags (the sanitizer, coverage): a nightly
# toolchain if there is one, else the stable one allowed to take them.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi

cargo run --quiet --locked -p busrpc-conformance --example fuzz_seeds -- fuzz/corpus
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <("${fuzz[@]}" list --fuzz-dir fuzz)

for target in "${targets[@]}"; do
  printf '\n==> fuzz %s for %ss\n' "$target" "$seconds"
  log="fuzz/artifacts/$target.log"
  mkdir -p fuzz/artifacts
  # -rss_limit_mb: the default 2 GiB, said out loud; -timeout: one input
  # taking 10 s is a hang worth a report.
  if ! "${fuzz[@]}" run --fuzz-dir fuzz "$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz target $target failed; its log: $log" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|peak_rss_mb|new_units_added)' "$log" | sed "s/^/$target /"
done
