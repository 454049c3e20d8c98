#!/usr/bin/env bash
# Nexmark: StreamCell's continuous SQL side by side with Apache Flink SQL on the same bids.
#
#   bench/nexmark/run.sh [--events N] [--runs R] [--queries win,filter,q0,q1,q2,q5,q7]
#                        [--flink-queries Q] [--skip-flink] [--no-build] [--keep] [--work DIR]
#
# 1. builds target/release/streamcell and target/release/nexmark (cargo, release profile);
# 2. sets up PyFlink (PyPI apache-flink) in bench/nexmark/.venv if it is not there yet; Java 17+
#    must be installed (JAVA_HOME is derived from `java` on PATH when unset);
# 3. runs target/release/nexmark: a fresh StreamCell server, N bids loaded into stream `bid`,
#    each query (--queries, default all) timed from its CREATE until FLUSH returns (plus the
#    pull query that finishes q5 and q7); it also writes the same bids as JSON lines for Flink
#    (WORK/events) and the expected results (WORK/events/_expected.json);
# 4. runs flink_job.py on those files (--flink-queries, default the same as --queries;
#    parallelism 2, blackhole sinks, then a cross-check against the expected results);
# 5. prints the table (report.py): events/s and events/s per core of both, the ratios, and
#    whether every result equals the one computed from the bids.
#
# Quick form (well under 90 s here): --events 200000 --runs 1 --flink-queries win
#
# Both sides run one after the other, never at the same time. WORK (default: a new directory
# under /tmp) holds the events (about 245 bytes per bid) and the JSON reports (streamcell.json,
# flink.json; their schema is at the top of src/bin/nexmark.rs and flink_job.py); it is deleted
# at the end unless --keep or --work is given.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
EVENTS=2000000
RUNS=3
QUERIES=win,filter,q0,q1,q2,q5,q7
FLINK_QUERIES=""
SKIP_FLINK=0
BUILD=1
KEEP=0
WORK=""
FLINK_VERSION=2.3.0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --events) EVENTS="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --queries) QUERIES="$2"; shift 2 ;;
        --flink-queries) FLINK_QUERIES="$2"; shift 2 ;;
        --skip-flink) SKIP_FLINK=1; shift ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        --work) WORK="$2"; KEEP=1; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

FLINK_QUERIES="${FLINK_QUERIES:-$QUERIES}"

if [[ -z "$WORK" ]]; then
    WORK="$(mktemp -d /tmp/nexmark-XXXXXX)"
fi
mkdir -p "$WORK"
cleanup() {
    if [[ "$KEEP" == 0 ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

cd "$ROOT"
if [[ "$BUILD" == 1 ]]; then
    echo "== building release binaries (a first build takes 10+ minutes)"
    cargo build --release -p streamcell
    cargo build --release -p streamcell-bench --bin nexmark
fi
for bin in target/release/streamcell target/release/nexmark; do
    [[ -x "$bin" ]] || { echo "run.sh: $bin missing (run without --no-build)" >&2; exit 1; }
done

# PyFlink. Any failure here is reported and the StreamCell side still runs.
FLINK_ERROR=""
VENV="$HERE/.venv"
setup_flink() {
    if [[ -z "${JAVA_HOME:-}" ]]; then
        if command -v java >/dev/null; then
            JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")"
            export JAVA_HOME
        else
            FLINK_ERROR="no java on PATH (Flink needs Java 11/17); install e.g. openjdk-17-jre-headless"
            return 1
        fi
    fi
    if "$VENV/bin/python" -c "import pyflink" 2>/dev/null; then
        return 0
    fi
    echo "== installing apache-flink==$FLINK_VERSION into $VENV (about 850 MB)"
    if ! python3 -m venv "$VENV"; then
        FLINK_ERROR="python3 -m venv failed (on Debian: apt-get install python3-venv)"
        return 1
    fi
    if ! "$VENV/bin/pip" install --quiet "apache-flink==$FLINK_VERSION"; then
        FLINK_ERROR="pip install apache-flink==$FLINK_VERSION failed (see the pip output above)"
        return 1
    fi
}
if [[ "$SKIP_FLINK" == 1 ]]; then
    FLINK_ERROR="skipped (--skip-flink)"
elif ! setup_flink; then
    echo "run.sh: Flink side not available: $FLINK_ERROR" >&2
fi

echo "== machine"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores;" \
     "memory: $(free -g | awk '/Mem:/ {print $2}') GiB; kernel $(uname -r)"
echo "rustc: $(rustc --version 2>/dev/null || echo '?'); commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
if [[ -z "$FLINK_ERROR" ]]; then
    echo "java: $("$JAVA_HOME/bin/java" -version 2>&1 | head -1); python: $("$VENV/bin/python" --version)"
fi

echo "== StreamCell ($EVENTS bids, $RUNS run(s) per query: $QUERIES)"
EVENTS_DIR=()
if [[ -z "$FLINK_ERROR" ]]; then
    EVENTS_DIR=(--events-dir "$WORK/events")
fi
# A query whose results differ makes nexmark exit 1 after writing its JSON: Flink and the table
# still run, and this script exits 1 at the end.
SC_STATUS=0
target/release/nexmark --events "$EVENTS" --runs "$RUNS" --queries "$QUERIES" \
    "${EVENTS_DIR[@]}" --json "$WORK/streamcell.json" || SC_STATUS=$?
if [[ ! -s "$WORK/streamcell.json" ]]; then
    echo "run.sh: target/release/nexmark failed (exit $SC_STATUS) without writing its report" >&2
    exit 1
fi

FLINK_JSON=()
if [[ -z "$FLINK_ERROR" ]]; then
    echo "== Flink ($EVENTS bids, $RUNS run(s) per query: $FLINK_QUERIES)"
    if "$VENV/bin/python" "$HERE/flink_job.py" --events-dir "$WORK/events" --events "$EVENTS" \
        --runs "$RUNS" --queries "$FLINK_QUERIES" --parallelism 2 --json "$WORK/flink.json" \
        2> "$WORK/flink.stderr"; then
        FLINK_JSON=(--flink "$WORK/flink.json")
    else
        FLINK_ERROR="flink_job.py failed; last lines of its stderr: $(tail -5 "$WORK/flink.stderr")"
        echo "run.sh: $FLINK_ERROR" >&2
    fi
fi

echo "== results"
REPORT_STATUS=0
python3 "$HERE/report.py" --streamcell "$WORK/streamcell.json" "${FLINK_JSON[@]}" \
    --flink-error "$FLINK_ERROR" || REPORT_STATUS=$?
if [[ "$KEEP" == 1 ]]; then
    echo "kept $WORK (events, streamcell.json, flink.json)"
fi
if [[ "$SC_STATUS" != 0 || "$REPORT_STATUS" != 0 ]]; then
    exit 1
fi
