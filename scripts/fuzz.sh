#!/usr/bin/env bash
# Runs StreamCell's fuzz targets (fuzz/, docs/fuzzing.md) one after another with libFuzzer.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 60); TARGETs default to all of them. Installs cargo-fuzz if it is
# missing; needs the nightly toolchain (rustup toolchain install nightly). Builds and runs at
# the lowest priority (nice 19) with one build job, in CARGO_TARGET_DIR (default: target-fuzz
# next to the checkout, outside it). Corpora grow in fuzz/corpus/<target>/ (only the seed-*
# files are committed), crashes land in fuzz/artifacts/<target>/, each run's log in
# fuzz/artifacts/<target>/last-run.log. Exits 1 if any target found a crash, timeout or
# out-of-memory input, after printing each such artifact's path.
set -euo pipefail

secs=${1:-60}
shift || true
case $secs in
  '' | *[!0-9]*) echo "usage: bash scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(dirname "$root")/target-fuzz}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
NICE=(nice -n 19)

all_targets=(store_segment store_marker store_shard sql_parse proto_batch proto_records_agree
  proto_append pgwire_frontend pgwire_scram datacell_csv)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  "${NICE[@]}" cargo install cargo-fuzz --locked
fi
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "the nightly toolchain is needed: rustup toolchain install nightly" >&2
  exit 2
fi

echo "== building the fuzz targets (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
"${NICE[@]}" cargo +nightly fuzz build --fuzz-dir fuzz

failed=()
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  artifacts=fuzz/artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  log=$artifacts/last-run.log
  before=$(ls "$artifacts" | grep -E '^(crash|timeout|oom|leak)-' || true)
  echo "== $t: ${secs}s"
  rc=0
  "${NICE[@]}" cargo +nightly fuzz run --fuzz-dir fuzz "$t" "$corpus" -- \
    -max_total_time="$secs" -rss_limit_mb=4096 -timeout=60 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 || true)
  echo "   exit $rc, ${runs:-?} executions, ${cov:-cov: ?}, log $log"
  new=$(comm -13 <(echo "$before" | sort) <(ls "$artifacts" | grep -E '^(crash|timeout|oom|leak)-' | sort) || true)
  if [ "$rc" -ne 0 ] || [ -n "$new" ]; then
    grep -E "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY" "$log" | head -5 | sed 's/^/   /' || true
    for a in $new; do
      echo "   artifact: $artifacts/$a"
      echo "   reproduce: cargo +nightly fuzz run --fuzz-dir fuzz $t $artifacts/$a"
    done
    [ -z "$new" ] && echo "   (no artifact: see the log)"
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "== crashes found by: ${failed[*]}"
  exit 1
fi
echo "== no crash in ${#targets[@]} target(s)"
