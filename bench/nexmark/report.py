"""Prints the side-by-side table of bench/nexmark/run.sh from the two JSON reports.

`--streamcell` is the JSON of `target/release/nexmark` (StreamCell runs and the results expected
from the bids themselves), `--flink` the JSON of flink_job.py (missing when Flink could not be
installed or run: then `--flink-error` says why). Only the standard library is used.
"""

import argparse
import json
import statistics
import sys


def median(values):
    return statistics.median(values) if values else None


def fmt_rate(v):
    return "-" if v is None else f"{v:,.0f}"


def fmt_ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def compare_windows(got, want):
    """Differences between two {window_start: {n_groups/bids/sum_max_price}} maps."""
    diffs = []
    for start, w in want.items():
        g = got.get(start)
        if g is None:
            diffs.append(f"window {start} missing")
        elif any(int(g[k]) != int(w[k]) for k in ("groups", "bids", "sum_max_price")):
            diffs.append(f"window {start}: {g} != {w}")
    for start in got:
        if start not in want:
            diffs.append(f"window {start} not expected")
    return diffs


def compare_filter(got, want):
    close = abs(got["sum_price_eur"] - want["sum_price_eur"]) <= 1e-9 * max(
        abs(want["sum_price_eur"]), 1.0
    )
    if got["rows"] == want["rows"] and got["sum_auction"] == want["sum_auction"] and close:
        return []
    return [f"filter: {got} != {want}"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streamcell", required=True)
    p.add_argument("--flink")
    p.add_argument("--flink-error", default="")
    args = p.parse_args()

    sc = json.load(open(args.streamcell))
    fl = None
    if args.flink:
        try:
            fl = json.load(open(args.flink))
        except (OSError, ValueError) as e:
            args.flink_error = args.flink_error or f"no Flink results ({e})"
    expected = sc["expected"]
    n = sc["events"]
    windows = expected["windows"]
    print()
    print(
        f"Nexmark bids: {n:,} events, event time {(expected['last_event_ms'] - expected['first_event_ms']) / 1000:.0f} s, "
        f"{len(windows)} windows of 10 s, "
        f"{sum(w['groups'] for w in windows.values()):,} (auction, window) rows, "
        f"filter keeps {expected['filter']['rows']:,} bids"
    )
    if sc.get("load_events_per_sec"):
        print(
            f"StreamCell load (not part of the comparison): {sc['load_seconds']:.1f} s, "
            f"{sc['load_events_per_sec']:,.0f} events/s"
        )
    if fl is None:
        print(f"Flink: NOT RUN: {args.flink_error or 'no --flink report'}")

    print()
    header = (
        f"{'query':<8} {'StreamCell ev/s':>16} {'Flink ev/s (job)':>17} {'ratio':>7} "
        f"{'Flink ev/s (wall)':>18} {'ratio':>7}  {'runs':>4}  results"
    )
    print(header)
    print("-" * len(header))
    failed = False
    for q in ["win", "filter"]:
        sc_runs = [r for r in sc["runs"] if r["query"] == q]
        if not sc_runs:
            continue
        sc_rate = median([r["events_per_sec"] for r in sc_runs])
        fl_runs = [r for r in fl["runs"] if r["query"] == q] if fl else []
        fl_net = median([r["events_per_sec_net"] for r in fl_runs])
        fl_wall = median([r["events_per_sec_wall"] for r in fl_runs])
        notes = []
        sc_ok = all(r["matches_expected"] for r in sc_runs)
        notes.append("StreamCell = expected" if sc_ok else "StreamCell DIFFERS from expected")
        failed |= not sc_ok
        if fl and q in fl.get("checks", {}):
            c = fl["checks"][q]
            if q == "win":
                diffs = compare_windows(c["windows"], windows)
            else:
                diffs = compare_filter(c, expected["filter"])
            notes.append("Flink = expected" if not diffs else "Flink DIFFERS: " + "; ".join(diffs[:3]))
            failed |= bool(diffs)
        print(
            f"{q:<8} {fmt_rate(sc_rate):>16} {fmt_rate(fl_net):>17} {fmt_ratio(sc_rate, fl_net):>7} "
            f"{fmt_rate(fl_wall):>18} {fmt_ratio(sc_rate, fl_wall):>7}  {len(sc_runs):>4}  "
            + ", ".join(notes)
        )
    print()
    print("Median of the runs. ratio = StreamCell events/s / Flink events/s (above 1: StreamCell faster).")
    print("StreamCell: CREATE of the query until FLUSH returns, on the preloaded stream.")
    print("Flink (job): JobExecutionResult.getNetRuntime(); Flink (wall): execute_sql(INSERT) until")
    print("the job result is back, with planning and the per-job local mini cluster start.")
    print()
    print("Every run:")
    for r in sc["runs"]:
        print(
            f"  StreamCell {r['query']:<7} run {r['run']}: {r['seconds']:8.3f} s "
            f"{r['events_per_sec']:>12,.0f} events/s, server CPU {r.get('server_cpu_cores') or 0:.2f} cores"
        )
    if fl:
        for r in fl["runs"]:
            print(
                f"  Flink      {r['query']:<7} run {r['run']}: {r['net_seconds']:8.3f} s job, "
                f"{r['wall_seconds']:8.3f} s wall  {r['events_per_sec_net']:>12,.0f} / "
                f"{r['events_per_sec_wall']:,.0f} events/s"
            )
    if failed:
        print("\nRESULT CHECK FAILED (see above)")
        sys.exit(1)


if __name__ == "__main__":
    main()
