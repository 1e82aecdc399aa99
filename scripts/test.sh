#!/usr/bin/env bash
# Runs every test busrpc has, on a fresh machine as on a developer's:
# formatting, lints, unit, protocol and conformance tests, doc tests,
# a smoke run of the benches, and the examples with their output checked.
# It installs and starts whatever broker the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Runs an example and checks that its output contains each expected line.
check_example() {
  local name=$1; shift
  local out
  out=$(cargo run --quiet --example "$name" -- "${EXAMPLE_ARGS[@]}")
  printf '%s\n' "$out"
  for expected in "$@"; do
    if ! grep -qxF -- "$expected" <<<"$out"; then
      printf 'example %s: expected a line %q\n' "$name" "$expected" >&2
      exit 1
    fi
  done
}

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (unit, protocol, conformance; benches once as smoke tests)"
cargo test --workspace --all-targets --locked

step "doc tests"
cargo test --workspace --doc --locked

step "examples on the in-memory broker"
EXAMPLE_ARGS=(--broker memory://)
check_example simple 'reply: RPC hello!'
check_example class \
  'set apples = 3 (previous: None)' \
  'incr apples by 2 -> 5' \
  'keys -> ["apples", "pears"]' \
  'get plums -> error 1: no such key'

step "all tests passed"
