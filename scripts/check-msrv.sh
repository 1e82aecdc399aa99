#!/usr/bin/env bash
# Checks that the workspace's rust-version is true of what it locks: no
# package in Cargo.lock (normal, build or dev dependency, any feature)
# declares a higher rust-version than ours. Only one toolchain can be had
# where CI runs, so the workspace is not also built with that older one;
# clippy's incompatible_msrv lint, which reads rust-version, flags our own
# use of newer standard-library items.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --locked --format-version 1 --all-features | python3 -c '
import json, sys

def version(text):
    return tuple(int(part) for part in text.split("."))

meta = json.load(sys.stdin)
members = set(meta["workspace_members"])
ours = {p["rust_version"] for p in meta["packages"] if p["id"] in members}
if len(ours) != 1 or None in ours:
    sys.exit(f"workspace members disagree on rust-version: {sorted(map(str, ours))}")
ours = ours.pop()
above = sorted(
    (p["name"], p["version"], p["rust_version"])
    for p in meta["packages"]
    if p["id"] not in members and p["rust_version"] and version(p["rust_version"]) > version(ours)
)
for name, v, needs in above:
    print(f"{name} {v} needs Rust {needs}, above our rust-version {ours}", file=sys.stderr)
if above:
    sys.exit(1)
highest = max(
    (version(p["rust_version"]), p["name"])
    for p in meta["packages"]
    if p["id"] not in members and p["rust_version"]
)
needs = ".".join(map(str, highest[0]))
print(f"rust-version {ours}: no locked dependency needs more (highest: {highest[1]}, {needs})")
'
