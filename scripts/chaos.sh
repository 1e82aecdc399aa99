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
# The short run counts calls, never times them: the debug build does (a
# release build cost CI about five minutes). Built with the workspace's
# features, as `cargo test` in scripts/test.sh built its dependencies: with
# `-p busrpc-chaos` alone librdkafka was built again without TLS and SASL
# (about 90 s); this way 17 s.
cargo build --quiet --locked --workspace --all-features --bin busrpc-chaos
chaos=target/debug/busrpc-chaos
# The short run's three chains share nothing (each run starts its own
# brokers on free ports) and mostly wait, for a death to be noticed, a
# rebalance, a restart (141 s of CPU in 524 s when they ran one after
# another), so they run side by side; each chain's tables are printed when
# it ends.
#
# Redis: every scenario, then with every default as a new user's service
# runs (a killed server's calls answered within the clients' default
# timeout).
redis_runs() {
  "$chaos" run --json target/chaos-short-redis.json redis "$@"
  "$chaos" run --defaults --json target/chaos-short-defaults.json \
    --scenario kill-one --scenario sigterm-one redis "$@"
}
# The mock cluster: every scenario.
kafka_mock_runs() {
  "$chaos" run --json target/chaos-short-kafka-mock.json kafka-mock "$@"
}
# Tansu, whose group protocol answers calls twice in any rebalance and lost
# one call in a long SIGTERM run (docs/RELIABILITY.md): the kill of a server
# with its replacement, and a 0.5 s cut of the network (through the proxy
# it advertises; its 5 s cut lost 11 calls in one run of two, a rebalance
# of Tansu's, so only in --long). Then the mock cluster with every default (not
# sigterm-one: the default eager assignment answers calls twice;
# docs/RELIABILITY.md).
tansu_and_defaults_runs() {
  "$chaos" run --json target/chaos-short-tansu.json --scenario kill-one \
    --scenario cut-0.5s tansu "$@"
  "$chaos" run --defaults --json target/chaos-short-defaults-kafka.json \
    --scenario kill-one kafka-mock "$@"
}
pids=()
logs=()
for chain in redis_runs kafka_mock_runs tansu_and_defaults_runs; do
  logs+=("target/chaos-short-$chain.log")
  "$chain" "$@" >"${logs[-1]}" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || status=1
  cat "${logs[$i]}"
done
exit "$status"
