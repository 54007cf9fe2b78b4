#!/usr/bin/env bash
# Runs every Go fuzz target of the repository (each `func FuzzX` of a _test.go file) for FUZZTIME
# each (default 20s), one after the other. A target that fails prints the failing input and
# writes it to its package's testdata/fuzz/FuzzX/: commit that file with the fix, so that every
# `go test` runs it from then on. Exits non-zero when any target failed.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-20s}
targets=$(grep -rE --include='*_test.go' -o '^func Fuzz[A-Za-z0-9_]+' . | sed -E 's|^\./||; s|:func | |' | sort)
if [ -z "$targets" ]; then
  echo "make fuzz: no fuzz targets found" >&2
  exit 1
fi
failed=()
start=$SECONDS
while read -r file name; do
  pkg=./$(dirname "$file")
  echo "make fuzz: $pkg $name for $fuzztime"
  if ! go test "$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime"; then
    failed+=("$pkg $name")
  fi
done <<<"$targets"
echo "make fuzz: $(wc -l <<<"$targets") targets in $((SECONDS - start)) s"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'make fuzz: failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
