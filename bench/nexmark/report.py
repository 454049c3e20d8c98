"""Prints the side-by-side table of bench/nexmark/run.sh from the two JSON reports.

`--streamcell` is the JSON of `target/release/nexmark`, `--flink` the JSON of flink_job.py
(missing when Flink could not be installed or run: then `--flink-error` says why). Both have
the same `queries` member (see the comment at the top of each):
  {"system": ..., "events": N, "queries": {"<name>": {"events_per_s": median,
   "events_per_s_per_core": ..., "cpu_cores": ..., "seconds": [..], "check": "ok" | ...,
   "shape": "..."}}}
and this script reads only that (plus the per-run details it prints at the end). Each side
checked its own results against the ones `nexmark` computed from the bids. Exits 1 when a
check says `mismatch` or `error`. Only the standard library is used.
"""

import argparse
import json
import sys

ORDER = ["win", "filter", "q0", "q1", "q2", "q5", "q7"]


def fmt_rate(v):
    return "-" if v is None else f"{v:,.0f}"


def fmt_cores(v):
    return "-" if v is None else f"{v:.2f}"


def fmt_ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def bad(check):
    return check.startswith("mismatch") or check.startswith("error")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streamcell", required=True)
    p.add_argument("--flink")
    p.add_argument("--flink-error", default="")
    args = p.parse_args()

    with open(args.streamcell) as f:
        sc = json.load(f)
    fl = None
    if args.flink:
        try:
            with open(args.flink) as f:
                fl = json.load(f)
        except (OSError, ValueError) as e:
            args.flink_error = args.flink_error or f"no Flink results ({e})"
    n = sc["events"]
    expected = sc.get("expected", {})
    windows = expected.get("windows", {})
    totals = expected.get("totals", {})
    print()
    span = (expected.get("last_event_ms", 0) - expected.get("first_event_ms", 0)) / 1000
    print(
        f"Nexmark bids: {n:,} events, event time {span:.0f} s, {len(windows)} windows of 10 s, "
        f"{sum(w['groups'] for w in windows.values()):,} (auction, window) rows, "
        f"filter/q2 keep {totals.get('filter', {}).get('rows', 0):,} bids, "
        f"q5 {totals.get('q5', {}).get('rows', '?')} rows, "
        f"q7 {totals.get('q7', {}).get('rows', '?')} rows"
    )
    if sc.get("load_events_per_sec"):
        print(
            f"StreamCell load (not part of the comparison): {sc['load_seconds']:.1f} s, "
            f"{sc['load_events_per_sec']:,.0f} events/s"
        )
    if fl is None:
        print(f"Flink: NOT RUN: {args.flink_error or 'no --flink report'}")
    else:
        print(
            f"Flink: parallelism {fl.get('parallelism')}; per core = events / JVM CPU seconds "
            "from the job's submission to its result (planning and cluster start excluded)"
        )

    scq = sc.get("queries", {})
    flq = fl.get("queries", {}) if fl else {}
    names = [q for q in ORDER if q in scq or q in flq]
    names += [q for q in list(scq) + list(flq) if q not in names]
    print()
    header = (
        f"{'query':<7} {'SC ev/s':>11} {'SC cores':>8} {'SC ev/s/core':>12} "
        f"{'Flink ev/s':>11} {'wall':>10} {'cores':>6} {'ev/s/core':>10} "
        f"{'ratio':>7} {'/core':>7}"
    )
    print(header)
    print("-" * len(header))
    failed = False
    for q in names:
        s = scq.get(q, {})
        f = flq.get(q, {})
        print(
            f"{q:<7} {fmt_rate(s.get('events_per_s')):>11} {fmt_cores(s.get('cpu_cores')):>8} "
            f"{fmt_rate(s.get('events_per_s_per_core')):>12} "
            f"{fmt_rate(f.get('events_per_s')):>11} {fmt_rate(f.get('events_per_s_wall')):>10} "
            f"{fmt_cores(f.get('cpu_cores')):>6} {fmt_rate(f.get('events_per_s_per_core')):>10} "
            f"{fmt_ratio(s.get('events_per_s'), f.get('events_per_s')):>7} "
            f"{fmt_ratio(s.get('events_per_s_per_core'), f.get('events_per_s_per_core')):>7}"
        )
    print()
    print("Results against the values computed from the bids:")
    for q in names:
        s_check = scq.get(q, {}).get("check", "not run")
        f_check = flq.get(q, {}).get("check", "not run") if fl else "not run"
        failed |= bad(s_check) or bad(f_check)
        print(f"  {q:<7} StreamCell: {s_check}; Flink: {f_check}")
    print()
    print("Medians of the runs. ratio = StreamCell events/s / Flink (job) events/s; /core = the")
    print("same per core (above 1: StreamCell faster). SC cores = the server's CPU seconds over")
    print("the timed interval per second (StreamCell runs each continuous query on one thread).")
    print("Flink ev/s = JobExecutionResult.getNetRuntime(); wall = execute_sql(INSERT) until the")
    print("job result is back, with planning and the per-job local mini cluster start.")
    print()
    print("What is timed in StreamCell:")
    for q in names:
        if q in scq:
            print(f"  {q:<7} {scq[q].get('shape', '')}")
    print()
    print("Every run:")
    for r in sc.get("runs", []):
        cores = r.get("server_cpu_cores")
        pull = r.get("pull_seconds")
        print(
            f"  StreamCell {r['query']:<7} run {r['run']}: {r['seconds']:8.3f} s "
            f"{r['events_per_sec']:>12,.0f} events/s, server CPU {fmt_cores(cores)} cores"
            + (f" (pull query {pull:.3f} s)" if pull is not None else "")
        )
    if fl:
        for r in fl.get("runs", []):
            print(
                f"  Flink      {r['query']:<7} run {r['run']}: {r['net_seconds']:8.3f} s job, "
                f"{r['wall_seconds']:8.3f} s wall  {r['events_per_sec_net']:>12,.0f} / "
                f"{r['events_per_sec_wall']:,.0f} events/s, JVM CPU "
                f"{fmt_cores(r.get('jvm_cpu_cores'))} cores"
            )
    if failed:
        print("\nRESULT CHECK FAILED (see above)")
        sys.exit(1)


if __name__ == "__main__":
    main()
