#!/usr/bin/env bash
# A newcomer's first project, as the README tells it: a new crate whose
# [dependencies] are exactly the README's first `toml` block and whose
# main.rs is its first `rust` block, built and run (on memory://, no broker
# needed). busrpc comes from this checkout through [patch.crates-io], so
# the README's version line is resolved as a user's would be; the other
# crates from the registry, at the versions of our Cargo.lock.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
project=target/readme-project

# The body of the first fenced block of a language in README.md.
first_block() {
  awk -v fence="\`\`\`$1" '
    $0 == fence && !done { inside = 1; next }
    inside && $0 == "```" { inside = 0; done = 1; next }
    inside { print }
  ' README.md
}

dependencies=$(first_block toml)
code=$(first_block rust)
[ -n "$dependencies" ] || { echo "README.md has no toml block" >&2; exit 1; }
[ -n "$code" ] || { echo "README.md has no rust block" >&2; exit 1; }

rm -rf "$project"
mkdir -p "$project/src"
cat >"$project/Cargo.toml" <<EOF
[package]
name = "readme-project"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

$dependencies

[patch.crates-io]
busrpc = { path = "$root" }
EOF
printf '%s\n' "$code" >"$project/src/main.rs"
cp Cargo.lock "$project/"

# The workspace's target directory: dependencies built already with the
# same features are not built again.
out=$(cd "$project" && CARGO_TARGET_DIR="$root/target" cargo run --quiet)
printf '%s\n' "$out"
# What the README's code prints.
grep -qxF 'RPC hello! 5' <<<"$out" || {
  echo "the README's example printed $(printf '%q' "$out"), not 'RPC hello! 5'" >&2
  exit 1
}
