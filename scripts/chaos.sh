#!/usr/bin/env bash
# The chaos harness (crates/busrpc-chaos): a service's servers and clients as
# processes on private brokers, one fault per scenario, every call counted.
#
#   scripts/chaos.sh           the short run scripts/test.sh makes (seconds
#                              per scenario; fails on any broken promise)
#   scripts/chaos.sh --long    the full run behind docs/RELIABILITY.md's
#                              figures (20 clients x 1,000 calls, the broker
#                              away 30 s, ...); writes target/chaos-long.json
#
# Needs redis-server and tansu on PATH (scripts/test.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--long" ]; then
  shift
  cargo build --quiet --release --locked -p busrpc-chaos
  exec target/release/busrpc-chaos run --long --json target/chaos-long.json "$@"
fi
# The short run counts calls, never times them: the debug build, which
# `cargo test` in scripts/test.sh has built already, does (a release build
# cost CI about five minutes).
cargo build --quiet --locked -p busrpc-chaos
chaos=target/debug/busrpc-chaos
# Short: every scenario on Redis and the mock cluster; on Tansu, whose
# group protocol answers calls twice in any rebalance and lost one call in
# a long SIGTERM run (docs/RELIABILITY.md), the kill of a server with its
# replacement.
"$chaos" run --json target/chaos-short.json redis kafka-mock "$@"
"$chaos" run --json target/chaos-short-tansu.json --scenario kill-one tansu "$@"
# With every default, as a new user's service runs: a killed server's calls
# answered within the clients' default timeout. (Not sigterm-one on Kafka:
# the default eager assignment answers calls twice; docs/RELIABILITY.md.)
"$chaos" run --defaults --json target/chaos-short-defaults.json \
  --scenario kill-one --scenario sigterm-one redis "$@"
"$chaos" run --defaults --json target/chaos-short-defaults-kafka.json \
  --scenario kill-one kafka-mock "$@"
