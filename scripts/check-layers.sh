#!/usr/bin/env bash
# Keeps the arrows pointing down: fails on an import that points to a
# higher layer (or across to a sibling of the same layer), on a path that
# hides its layer behind a crate-root re-export, and on a cycle between
# modules. Test code (tests.rs files, and everything from a file's
# `#[cfg(test)]` on) is not checked. See docs/ARCHITECTURE.md for the map.
set -euo pipefail
cd "$(dirname "$0")/.."

# One line per crate: its source folder, then NAME=RANK for each layer (a
# top-level folder or file of src/). An import may point only to a layer of
# a lower rank. lib.rs, and anything not listed, is the top.
LAYERS=(
  "crates/busrpc-core/src wire=0 transport=1 error=2 service=3 telemetry=3 memory=3 engine=4 client=5 server=5 macro_support=6 testing=6 fuzzing=6"
  "crates/busrpc-auth/src keys=0 signature=1 transport=2"
  "crates/busrpc-redis/src config=0 entries=0 connection=1 broadcast=2 inbox=2 publish=2 settle=2 consumer=3 transport=4 admin=5 raw=5"
  "crates/busrpc-kafka/src mock=0 record=0 config=1 connection=2 topics=3 members=3 consumer=4 native=5 pipeline=5 admin=6 raw=6"
  "crates/busrpc-conformance/src harness=0 catalogue=0 fixture=1 cases=2"
)

failed=0
fail() { printf 'check-layers: %s\n' "$*" >&2; failed=1; }

# The code of a file: not its test module (from a `#[cfg(test)]` at the
# start of a line followed by `mod`), no comments.
code_of() {
  awk '/^#\[cfg\(test\)\]$/ { held = $0; next }
       held != "" && /^(pub(\([a-z]+\))? )?mod [a-z_]+ \{/ { exit }
       held != "" { print held; held = "" }
       { print }' "$1" | sed -e 's@//.*$@@'
}

for spec in "${LAYERS[@]}"; do
  read -r src ranks <<<"$spec"
  declare -A rank=()
  for pair in $ranks; do rank[${pair%%=*}]=${pair##*=}; done
  top=$(( ${#rank[@]} + 100 ))
  edges=$(mktemp)
  while IFS= read -r file; do
    rel=${file#"$src"/}
    case "$rel" in */tests.rs | tests.rs | */tests/*) continue ;; esac
    layer=${rel%%/*}
    layer=${layer%.rs}
    mine=${rank[$layer]:-$top}
    # This file's module path, as crate::a::b (mod.rs is its folder).
    module=${rel%.rs}
    module=${module%/mod}
    module=${module//\//::}
    code=$(code_of "$file")
    if grep -q 'crate::{' <<<"$code"; then
      fail "$file: write one \`use crate::layer::...\` per layer, not \`use crate::{...}\`, so that each import names its layer"
    fi
    for used in $(grep -o 'crate::[A-Za-z_][A-Za-z0-9_]*\(::[a-z_][a-z0-9_]*\)*' <<<"$code" | sort -u); do
      path=${used#crate::}
      name=${path%%::*}
      # Exported macros live at the crate root by necessity.
      case "$name" in __*) continue ;; esac
      if [ "$layer" != lib ] && [ -z "${rank[$name]+x}" ]; then
        fail "$file: \`crate::$path\` does not name a layer; import it from the layer it lives in"
        continue
      fi
      [ -n "${rank[$name]+x}" ] || continue
      theirs=${rank[$name]}
      if [ "$name" != "$layer" ] && [ "$theirs" -ge "$mine" ]; then
        fail "$file: imports \`crate::$path\` ($name, rank $theirs) from $layer (rank $mine): imports point to lower layers only"
      fi
      # The module the path reaches: its longest prefix that is a file.
      target=""
      probe=""
      IFS=: read -ra parts <<<"${path//::/:}"
      for part in "${parts[@]}"; do
        probe=${probe:+$probe/}$part
        if [ -f "$src/$probe.rs" ] || [ -f "$src/$probe/mod.rs" ]; then
          target=${probe//\//::}
        else
          break
        fi
      done
      [ -n "$target" ] && [ "$target" != "$module" ] && echo "$module $target" >>"$edges"
    done
    # super:: paths, resolved against this module.
    parent=${module%::*}
    [ "$parent" = "$module" ] && parent=lib
    for used in $(grep -o '\bsuper::[a-z_][a-z0-9_]*' <<<"$code" | sort -u); do
      child=${used#super::}
      dir=${parent//:://}
      [ "$parent" = lib ] && dir=""
      if [ -f "$src/${dir:+$dir/}$child.rs" ] || [ -f "$src/${dir:+$dir/}$child/mod.rs" ]; then
        echo "$module ${dir:+$parent::}$child" >>"$edges"
      else
        echo "$module $parent" >>"$edges"
      fi
    done
  done < <(find "$src" -name '*.rs' | sort)
  # A parent module declares and re-exports its children: those edges are
  # structure, not dependence. Every other edge counts towards a cycle.
  awk '{ p = $1; c = $2; if (p == "lib" || index(c, p "::") == 1) next; print }' "$edges" | sort -u >"$edges.deps"
  if ! loop=$(tsort <"$edges.deps" 2>&1 >/dev/null) || [ -n "$loop" ]; then
    fail "$src: modules import each other in a cycle:
$(sed -n 's/^tsort: //p' <<<"$loop")"
  fi
  rm -f "$edges" "$edges.deps"
  unset rank
done

if [ "$failed" -ne 0 ]; then
  exit 1
fi
echo "layers: every import points down, no module cycle"
