#!/usr/bin/env bash
# Runs every test busrpc has, on a fresh machine as on a developer's:
# formatting, lints, unit, protocol and conformance tests, doc tests,
# a smoke run of the benches, and the examples with their output checked.
# It installs and starts whatever broker the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step says how long the run has taken so far, so that a slow one
# shows in CI's log, and the run ends (passed or not) with each step's own
# time: CI must stay well inside its 90 minutes (the aim is 45 on a fresh
# machine).
STEP_NAMES=()
STEP_STARTS=()
step() {
  STEP_NAMES+=("$*")
  STEP_STARTS+=("$SECONDS")
  printf '\n==> [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"
}
step_times() {
  local i end took
  [ ${#STEP_NAMES[@]} -gt 0 ] || return 0
  printf '\n==> time per step\n'
  for i in "${!STEP_NAMES[@]}"; do
    end=${STEP_STARTS[$((i + 1))]:-$SECONDS}
    took=$((end - STEP_STARTS[i]))
    printf '%4dm%02ds  %s\n' $((took / 60)) $((took % 60)) "${STEP_NAMES[$i]}"
  done
  printf '%4dm%02ds  total\n' $((SECONDS / 60)) $((SECONDS % 60))
}
# A test that lacks its helper (a redis-server to start, Tansu, Python)
# fails here instead of printing `skipped:` and passing: this run installs
# every helper, so a skip would be a green run that proved nothing.
export BUSRPC_REQUIRE_HELPERS=1

TANSU_PID=""
TANSU_BUILD_PID=""
on_exit() {
  local status=$?
  [ -z "$TANSU_PID" ] || kill "$TANSU_PID" 2>/dev/null || true
  [ -z "$TANSU_BUILD_PID" ] || kill "$TANSU_BUILD_PID" 2>/dev/null || true
  step_times
  return $status
}
trap on_exit EXIT

# Installs Debian packages when a command is missing (as root, or with sudo).
apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# A Redis on 127.0.0.1:6379: the one already there, or one installed and
# started here. The tests also start private redis-servers (restart, TLS).
ensure_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server redis-tools
  command -v openssl >/dev/null || apt_install openssl
  if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    echo "using the Redis on 127.0.0.1:6379"
    return
  fi
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --logfile "${TMPDIR:-/tmp}/busrpc-test-redis.log"
  for _ in $(seq 50); do
    redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG && { echo "started Redis on 127.0.0.1:6379"; return; }
    sleep 0.1
  done
  echo "Redis did not start; see ${TMPDIR:-/tmp}/busrpc-test-redis.log" >&2
  exit 1
}

# Runs an example and checks that its output contains each expected line.
check_example() {
  local name=$1; shift
  local out
  out=$(cargo run --quiet --all-features --example "$name" -- "${EXAMPLE_ARGS[@]}")
  printf '%s\n' "$out"
  for expected in "$@"; do
    if ! grep -qxF -- "$expected" <<<"$out"; then
      printf 'example %s: expected a line %q\n' "$name" "$expected" >&2
      exit 1
    fi
  done
}

# A Kafka-protocol broker on 127.0.0.1:9092: Tansu, built once with cargo
# (about 13 minutes the first time on two cores, then kept in ~/.cargo/bin),
# started here with in-memory storage and stopped when this script ends.
# Only the storage engines the tests use: memory:// (dynostore) and
# sqlite:// (libsql, the chaos harness's durable restart); postgres added
# about ten minutes to the build.
#
# Nothing before `cargo test` needs Kafka, so a first build runs in the
# background from the start (filling the cores the lints and the cargo
# tools' builds leave idle in their serial stretches) and is waited for
# only there.
TANSU_VERSION=0.6.0
TANSU_BUILD_LOG="${TMPDIR:-/tmp}/busrpc-test-tansu-build.log"
kafka_listening() {
  (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null
}
tansu_installed() {
  command -v tansu >/dev/null && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"
}
start_tansu_build() {
  if kafka_listening || tansu_installed; then
    return
  fi
  echo "building Tansu $TANSU_VERSION in the background (log: $TANSU_BUILD_LOG)"
  cargo install "tansu@$TANSU_VERSION" --locked --features dynostore,libsql \
    >"$TANSU_BUILD_LOG" 2>&1 &
  TANSU_BUILD_PID=$!
}
ensure_kafka() {
  if kafka_listening; then
    echo "using the Kafka broker on 127.0.0.1:9092"
    return
  fi
  if [ -n "$TANSU_BUILD_PID" ]; then
    echo "waiting for Tansu's build"
    if ! wait "$TANSU_BUILD_PID"; then
      TANSU_BUILD_PID=""
      tail -n 40 "$TANSU_BUILD_LOG" >&2
      echo "Tansu's build failed; the whole log is $TANSU_BUILD_LOG" >&2
      exit 1
    fi
    TANSU_BUILD_PID=""
  fi
  if ! tansu_installed; then
    echo "installing Tansu $TANSU_VERSION (slow the first time; cached afterwards)"
    cargo install "tansu@$TANSU_VERSION" --locked --features dynostore,libsql
  fi
  tansu broker --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
    --storage-engine memory://tansu/ >"${TMPDIR:-/tmp}/busrpc-test-tansu.log" 2>&1 &
  TANSU_PID=$!
  for _ in $(seq 100); do
    kafka_listening && { echo "started Tansu on 127.0.0.1:9092"; return; }
    sleep 0.1
  done
  echo "Tansu did not start; see ${TMPDIR:-/tmp}/busrpc-test-tansu.log" >&2
  exit 1
}

# Headers for librdkafka's TLS and SASL (the kafka backend's ssl and sasl
# features, built by --all-features).
ensure_build_deps() {
  local missing=()
  for pkg in libssl-dev libsasl2-dev pkg-config; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}

# A Python with kafka-python and msgpack, for the tests of a client written
# from docs/PROTOCOL.md alone and of the original library's callers and
# receivers (the pipeline dialect); kept in target/ between runs.
ensure_python_kafka() {
  local venv=target/test-venv
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; }
  fi
  "$venv/bin/python" -c "import kafka, msgpack" 2>/dev/null || "$venv/bin/pip" install -q kafka-python msgpack
  export BUSRPC_PYTHON="$PWD/$venv/bin/python"
}

# docker-compose (Debian's), only to validate docker-compose.yml: no Docker
# engine runs on the test machines.
ensure_compose() {
  command -v docker-compose >/dev/null || apt_install docker-compose
}

# cargo-hack, cargo-machete, cargo-deny and cargo-fuzz, built once (about
# ten minutes the first time) and kept in ~/.cargo/bin.
ensure_cargo_tools() {
  local tool
  for tool in cargo-hack cargo-machete cargo-deny cargo-fuzz; do
    command -v "$tool" >/dev/null || cargo install --locked "$tool"
  done
}

step "build dependencies, Redis, Python, cargo tools (Tansu builds meanwhile)"
ensure_build_deps
start_tansu_build
ensure_redis
ensure_python_kafka
ensure_compose
ensure_cargo_tools

step "docker-compose.yml is a valid compose file"
docker-compose -f docker-compose.yml config -q

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "layers: every import points down, no module cycle"
scripts/check-layers.sh

step "rust-version is true of every locked dependency"
scripts/check-msrv.sh

step "licenses, bans and sources (cargo deny; advisories need GitHub, see deny.toml)"
cargo deny --locked check --hide-inclusion-graph licenses bans sources

step "no unused dependencies (cargo machete)"
cargo machete

step "each crate builds with each feature on its own, and with none (cargo hack)"
# Without --no-dev-deps, which would rewrite Cargo.lock: resolver 3 builds a
# library without its dev-dependencies' features anyway.
# busrpc-kafka's ssl and sasl only turn on librdkafka's, and each alone
# would build librdkafka once more (two minutes each); clippy and the tests
# build them, together, with --all-features.
cargo hack check --workspace --each-feature --exclude-features ssl,sasl,kafka-ssl,kafka-sasl --locked

step "the testcontainers runner builds, lints and takes its skip path (no Docker engine here)"
# A workspace of its own (the Docker client stays out of the builds above);
# the same target directory, so what the two share is built once.
tc=(--manifest-path crates/busrpc-testcontainers/Cargo.toml --target-dir target --locked)
cargo fmt --manifest-path crates/busrpc-testcontainers/Cargo.toml -- --check
cargo clippy "${tc[@]}" --all-targets -- -D warnings
cargo test "${tc[@]}"
cargo deny --manifest-path crates/busrpc-testcontainers/Cargo.toml --locked check --hide-inclusion-graph licenses bans sources

step "docs build without a warning"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked

step "every published crate packages and builds from its package"
# The verification builds each crate against its siblings' packages, served
# from a local registry that cargo takes for immutable: the sources it
# unpacked into CARGO_HOME and the builds of them left by an earlier run would
# be used as they are, stale. Remove both first (the unpacked sources of such
# host-less local registries live under registry/src/-*).
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/busrpc* "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/-*/busrpc*
cargo clean -p busrpc-core -p busrpc-auth -p busrpc-macros -p busrpc-bench -p busrpc-redis -p busrpc-kafka -p busrpc -p busrpc-cli
# --allow-dirty: a developer's uncommitted changes are checked too; CI has none.
cargo package --workspace --exclude busrpc-conformance --exclude busrpc-chaos --locked --allow-dirty

step "a Kafka broker (Tansu) on 127.0.0.1:9092"
ensure_kafka

step "cargo test (unit, protocol, conformance; benches once as smoke tests)"
# Eight tests at a time, not one per core: the integration tests wait on
# brokers (group joins, session timeouts, restarts), not on the CPU.
# busrpc-kafka's took 779 s with two at a time (61 s of CPU), 250 s with
# eight, each test as long as before; Redis's 41 s and 14 s.
RUST_TEST_THREADS=8 cargo test --workspace --all-targets --all-features --locked

step "doc tests"
cargo test --workspace --doc --all-features --locked

step "a new project of the README's Cargo.toml lines and first example runs"
scripts/check-readme-project.sh

for broker in memory:// "redis://127.0.0.1:6379?prefix=busrpc-example-$$" kafka-mock:// \
  "kafka://127.0.0.1:9092?prefix=busrpc-example-$$"; do
  step "examples on $broker"
  EXAMPLE_ARGS=(--broker "$broker")
  check_example simple 'reply: RPC hello!'
  for class in class class_plain; do
    check_example "$class" \
      'set apples = 3 (previous: None)' \
      'incr apples by 2 -> 5' \
      'keys -> ["apples", "pears"]' \
      'get plums -> error 1: no such key'
  done
  check_example billing \
    'without a token: JSON-RPC error 1003: unauthorized' \
    'server: balance 1 failed: 1003 unauthorized' \
    "billing: the ledger's deadline is the caller's: true" \
    'charging 1000 more: insufficient funds, balance 300' \
    'balance of bob: unknown account' \
    'rpc.discover lists: audit, balance, charge, whoami' \
    'charge may answer: 1001 insufficient funds, 1002 unknown account, 1003 unauthorized'
  check_example signed \
    'signed call: RPC hello!' \
    'unsigned call: no reply (1s)' \
    'the server rejected 1 request(s)' \
    'the waiting call got: RPC again!' \
    'the client rejected 1 reply(ies)'
done
# The original library's topics (S_method_requests, method_results).
for broker in 'kafka-mock://?dialect=pipeline' 'kafka://127.0.0.1:9092?dialect=pipeline'; do
  step "examples in the pipeline dialect on $broker"
  EXAMPLE_ARGS=(--broker "$broker")
  check_example simple 'reply: RPC hello!'
  check_example class 'incr apples by 2 -> 5' 'get plums -> error 1: no such key'
done
redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "busrpc-example-$$:*" | xargs -r redis-cli -h 127.0.0.1 -p 6379 del >/dev/null

step "chaos, short (servers and clients as processes; faults; every call counted)"
scripts/chaos.sh

step "fuzz targets, 10 s each"
scripts/fuzz.sh 10

printf '\n==> all tests passed\n'
