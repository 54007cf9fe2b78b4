#!/usr/bin/env bash
# Runs every Go fuzz target of the repository (each `func FuzzX` of a _test.go file) for FUZZTIME
# each (default 20s), one after the other. A target that fails prints the failing input and
# writes it to its package's testdata/fuzz/FuzzX/: commit that file with the fix, so that every
# `go test` runs it from then on. Exits non-zero when any target failed.
#
# A run that ends in "context deadline exceeded" without writing a failing input is not a finding:
# Go's fuzzing coordinator (up to at least Go 1.26) can report its own -fuzztime deadline as an
# error when a starved worker answers late. That target runs once more, and if it happens again it
# is reported, not failed.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-20s}
targets=$(grep -rE --include='*_test.go' -o '^func Fuzz[A-Za-z0-9_]+' . | sed -E 's|^\./||; s|:func | |' | sort)
if [ -z "$targets" ]; then
  echo "make fuzz: no fuzz targets found" >&2
  exit 1
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# fuzz_once runs one target; it returns 0 when it passed, 2 when it hit the deadline race (no
# failing input written), 1 otherwise.
fuzz_once() {
  local pkg=$1 name=$2 inputs before after
  inputs="$pkg/testdata/fuzz/$name"
  before=$(ls "$inputs" 2>/dev/null | wc -l)
  if go test "$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" 2>&1 | tee "$log"; [ "${PIPESTATUS[0]}" -eq 0 ]; then
    return 0
  fi
  after=$(ls "$inputs" 2>/dev/null | wc -l)
  if [ "$after" -eq "$before" ] && grep -q 'context deadline exceeded' "$log"; then
    return 2
  fi
  return 1
}

failed=()
raced=()
start=$SECONDS
while read -r file name; do
  pkg=./$(dirname "$file")
  echo "make fuzz: $pkg $name for $fuzztime"
  rc=0
  fuzz_once "$pkg" "$name" || rc=$?
  if [ "$rc" -eq 2 ]; then
    echo "make fuzz: $pkg $name hit Go's fuzztime deadline race without a failing input; once more"
    rc=0
    fuzz_once "$pkg" "$name" || rc=$?
  fi
  case $rc in
    1) failed+=("$pkg $name") ;;
    2) raced+=("$pkg $name") ;;
  esac
done <<<"$targets"
echo "make fuzz: $(wc -l <<<"$targets") targets in $((SECONDS - start)) s"
if [ ${#raced[@]} -gt 0 ]; then
  printf 'make fuzz: deadline race twice, no failing input (not a finding): %s\n' "${raced[@]}" >&2
fi
if [ ${#failed[@]} -gt 0 ]; then
  printf 'make fuzz: failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
