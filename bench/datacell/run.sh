#!/usr/bin/env bash
# DataCell end to end: sensor -> receptor -> pass-through query -> emitter -> actuator, all TCP.
#
#   bench/datacell/run.sh [--events N] [--rate-events N] [--rate-batch B] [--no-build] [--keep]
#                         [--json FILE]
#
# 1. builds target/release/streamcell (unless --no-build);
# 2. starts a fresh server (release, default settings) on free 127.0.0.1 ports and sets up the
#    seed's pipeline with a TCP passive receptor and a TCP active emitter:
#      create table datacell.bsktin (id bigint, tag timestamp, payload integer);
#      create table datacell.bsktout (like datacell.bsktin);
#      call datacell.receptor('datacell.bsktin', '127.0.0.1', RP);
#      call datacell.emitter('datacell.bsktout', '127.0.0.1', AP, 'tcp', 'active');
#      call datacell.query('datacell.pass', 'insert into datacell.bsktout select * from datacell.bsktin;');
#      call datacell.resume();
# 3. throughput: `streamcell actuator --protocol tcp` listens on AP; `streamcell sensor` sends
#    N events (default 2,000,000) as fast as it can (batches of 1000, no delay); the actuator's
#    events/s is first to last event received, its latency is receive time minus the event's
#    timestamp (the sensor's send time, epoch µs);
# 4. latency at a fixed rate: the sensor sends --rate-events (default 100,000) events in
#    batches of --rate-batch (default 10) every millisecond: nominally 10,000 events/s, in
#    practice a little less (the sensor's sleeps overshoot; it prints the rate it achieved);
#    the actuator reports p50/p90/p99/max.
#
# Sensor, server and actuator share the machine's cores; every figure is end to end.
# --json FILE writes both cases as {"benchmark": "datacell", "cases": [{"case", "events",
# "batch", "delay_ms", "events_per_s" (actuator, first to last event), "events_per_s_end_to_end"
# (sensor start to last event), "latency_us": {"p50", "p90", "p99", "max"}, "server_cpu_cores"}]}
# (bench/run.sh reads it).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
EVENTS=2000000
RATE_EVENTS=100000
RATE_BATCH=10
BUILD=1
KEEP=0
JSON=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --events) EVENTS="$2"; shift 2 ;;
        --rate-events) RATE_EVENTS="$2"; shift 2 ;;
        --rate-batch) RATE_BATCH="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        --json) JSON="$2"; shift 2 ;;
        -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

cd "$ROOT"
if [[ "$BUILD" == 1 ]]; then
    cargo build --release -p streamcell
fi
BIN="$ROOT/target/release/streamcell"
[[ -x "$BIN" ]] || { echo "run.sh: $BIN missing (run without --no-build)" >&2; exit 1; }

WORK="$(mktemp -d /tmp/datacell-bench-XXXXXX)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ "$KEEP" == 0 ]]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
GRPC=$(free_port); RP=$(free_port); AP=$(free_port)

"$BIN" server --data-dir "$WORK/data" --bind 127.0.0.1 --port "$GRPC" \
    --pg-port "$(free_port)" --http-port "$(free_port)" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
cpu_seconds() {  # user + system CPU seconds of the server so far
    awk '{ sub(/.*\) /, ""); print ($12 + $13) / 100 }' "/proc/$SERVER_PID/stat"
}
for _ in $(seq 1 100); do
    "$BIN" sql --port "$GRPC" -e "SHOW STREAMS;" >/dev/null 2>&1 && break
    sleep 0.1
done

run_case() {
    local label="$1" events="$2" batch="$3" delay="$4"
    timeout 300 "$BIN" actuator --protocol tcp --host 127.0.0.1 --port "$AP" --events "$events" \
        --actuator "$label" >"$WORK/$label.actuator" 2>"$WORK/$label.actuator.err" &
    local apid=$!
    PIDS+=("$apid")
    # The emitter connects (retrying every second) once the actuator listens.
    sleep 1.5
    local t0 t1 c0 c1
    c0=$(cpu_seconds)
    t0=$(date +%s.%N)
    "$BIN" sensor --host 127.0.0.1 --port "$RP" --events "$events" --batch "$batch" \
        --delay "$delay" --columns 3 --sensor "$label" </dev/null >/dev/null 2>"$WORK/$label.sensor"
    wait "$apid" || echo "run.sh: the actuator did not get all $events events (see $WORK)" >&2
    t1=$(date +%s.%N)
    c1=$(cpu_seconds)
    echo "== $label: $events events, batches of $batch, delay $delay ms"
    tail -n 1 "$WORK/$label.sensor"
    cat "$WORK/$label.actuator"
    python3 - "$events" "$t0" "$t1" "$c0" "$c1" "$label" "$batch" "$delay" "$WORK/$label.actuator" \
        >>"$WORK/cases.jsonl" <<'EOF'
import json, re, sys
n, t0, t1, c0, c1 = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
label, batch, delay, actuator = sys.argv[6], int(sys.argv[7]), float(sys.argv[8]), sys.argv[9]
print(f"sensor start to last event at the actuator: {t1 - t0:.2f} s, {n / (t1 - t0):,.0f} events/s",
      file=sys.stderr)
line = open(actuator).read()
m = re.search(r"(\d+) events in ([\d.]+) s, ([\d.]+|n/a) events/s, latency us p50 (\d+) p90 (\d+) p99 (\d+) max (\d+)", line)
case = {"case": label, "events": n, "batch": batch, "delay_ms": delay,
        "events_per_s_end_to_end": n / (t1 - t0), "server_cpu_cores": (c1 - c0) / (t1 - t0)}
if m:
    case["events_received"] = int(m.group(1))
    case["events_per_s"] = float(m.group(3)) if m.group(3) != "n/a" else None
    case["latency_us"] = dict(zip(["p50", "p90", "p99", "max"], map(int, m.groups()[3:])))
else:
    case["error"] = f"cannot read the actuator's report: {line.strip()!r}"
print(json.dumps(case))
EOF
}

"$BIN" sql --port "$GRPC" -e "
create table datacell.bsktin (id bigint, tag timestamp, payload integer);
create table datacell.bsktout (like datacell.bsktin);
call datacell.receptor('datacell.bsktin', '127.0.0.1', $RP);
call datacell.emitter('datacell.bsktout', '127.0.0.1', $AP, 'tcp', 'active');
call datacell.query('datacell.pass', 'insert into datacell.bsktout select * from datacell.bsktin;');
call datacell.resume();" >/dev/null

run_case throughput "$EVENTS" 1000 0
run_case rate10k "$RATE_EVENTS" "$RATE_BATCH" 1

echo "== catalog"
"$BIN" sql --port "$GRPC" -e "select nme, received, pending from datacell.receptors();
select nme, sent, pending from datacell.emitters();
select nme, cycles, events, time from datacell.queries();
select count(*) as errors from datacell.errors();"

if [[ -n "$JSON" ]]; then
    python3 - "$WORK/cases.jsonl" "$JSON" <<'EOF'
import json, sys
cases = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
json.dump({"benchmark": "datacell", "cases": cases}, open(sys.argv[2], "w"), indent=2)
EOF
fi
