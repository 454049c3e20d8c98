"""Apache Flink SQL (PyFlink, local mini cluster) on the Nexmark bids that `nexmark` wrote.

The Flink half of bench/nexmark/run.sh. It reads the JSON-lines files of
`target/release/nexmark --events-dir DIR` through Flink's filesystem connector and runs the
same queries as the StreamCell side, in streaming mode with event time (`ts` is
`TO_TIMESTAMP_LTZ(date_time, 3)` with `WATERMARK FOR ts AS ts - INTERVAL '1' SECOND`;
StreamCell's allowed lateness is also 1 s; session time zone UTC):

- win:    SELECT auction, window_start, window_end, COUNT(*) AS bids, MAX(price) AS max_price
          FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND))
          GROUP BY auction, window_start, window_end
- filter: SELECT auction, price * 0.908 AS price_eur, bidder, date_time FROM bid
          WHERE auction % 123 = 0
- q0..q7: the nexmark-flink SQL of Nexmark q0 (pass-through), q1 (price * 0.908), q2
          (MOD(auction, 123) = 0), q5 (hot items: HOP 10 s every 2 s, the auctions whose
          count is the window's largest; Flink plans it as a window join) and q7 (highest bid:
          bids joined with each 10 s window's MAX(price), a regular join). Two deviations
          from the nexmark-flink text: `date_time` (BIGINT ms) instead of `dateTime`, and q7
          takes the window's bids as [window_end - 10 s, window_end) where the text says
          BETWEEN (which also takes a bid at exactly window_end, i.e. of the next window).

Timed runs write into a `blackhole` sink. For each, it records
- `wall_seconds`: from `execute_sql(INSERT ...)` until the job's result is back: SQL planning,
  job graph, the start of a local mini cluster (PyFlink starts one per job), deployment, the
  run, shutdown;
- `net_seconds`: Flink's own `JobExecutionResult.getNetRuntime()`, the job's time in the
  cluster (from its creation to its end), without planning and cluster start;
- `jvm_cpu_seconds`: CPU time (user + system, /proc/<pid>/stat) of the JVM that PyFlink
  started, from the return of `execute_sql` (the job submitted to the started mini cluster)
  until the job's result is back (`job_interval_seconds`, close to `net_seconds`);
  `jvm_cpu_seconds_wall` is the same over the whole wall interval (with planning).
JVM start and the Python/Java gateway are in neither (they happen once before).

Then, untimed, each query runs once more and its output is totalled inside Flink (per 10 s
window, so that few rows come back through collect(), which is slow in PyFlink) or, for q5
and q7 whose output is small, collected whole; the totals are compared with the ones
`nexmark` computed from the bids themselves (DIR/_expected.json, or `--expected`).

JSON (`--json PATH`), stable; the top-level orchestrator bench/run.sh reads it:

  {"system": "flink", "events": N, "parallelism": P,
   "queries": {"<name>": {
       "events": N,
       "seconds": [net seconds of each run],
       "wall_seconds": [wall seconds of each run],
       "events_per_s": median of events / net seconds (the job's rate),
       "events_per_s_wall": median of events / wall seconds,
       "cpu_cores": median of the JVM's CPU seconds / seconds over the job (from execute_sql's
           return, i.e. job submitted, until the result is back),
       "events_per_s_per_core": median of events / those JVM CPU seconds (= events/s over that
           interval divided by the cores used in it; CPU measured, not events/s / P),
       "per_core_basis": "jvm_cpu" (or "parallelism" when /proc could not be read: then
           events_per_s / P),
       "check": "ok" | "mismatch: ..." | "unsupported: <Flink's error>" | "error: ..."
                | "unchecked: <why>",
       "shape": "<what runs, in words>",
       "sql": ["<the SELECT of the timed INSERT INTO blackhole>"]}},
   ... plus "runs" (every run), "checks" (the totals read back), "benchmark", "pyflink",
   "python", "java", "events_dir", "setup_seconds"}
"""

import argparse
import calendar
import datetime
import json
import os
import platform
import statistics
import sys
import time

from pyflink.table import EnvironmentSettings, TableEnvironment

ALL_QUERIES = ["win", "filter", "q0", "q1", "q2", "q5", "q7"]

WIN_SELECT = """
SELECT auction, window_start, window_end, COUNT(*) AS bids, MAX(price) AS max_price
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end
"""

FILTER_SELECT = """
SELECT auction, price * 0.908 AS price_eur, bidder, date_time FROM bid
WHERE auction % 123 = 0
"""

Q0_SELECT = "SELECT auction, bidder, price, date_time, extra FROM bid"

Q1_SELECT = "SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid"

Q2_SELECT = "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0"

# {extra} is empty for the timed run; the check adds the window start.
Q5_TEMPLATE = """
SELECT AuctionBids.auction, AuctionBids.num{extra}
FROM (
  SELECT auction, COUNT(*) AS num, window_start AS starttime, window_end AS endtime
  FROM TABLE(HOP(TABLE bid, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
  GROUP BY auction, window_start, window_end
) AS AuctionBids
JOIN (
  SELECT MAX(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime
  FROM (
    SELECT COUNT(*) AS num, window_start AS starttime, window_end AS endtime
    FROM TABLE(HOP(TABLE bid, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
    GROUP BY auction, window_start, window_end
  ) AS CountBids
  GROUP BY CountBids.starttime, CountBids.endtime
) AS MaxBids
ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime
  AND AuctionBids.num >= MaxBids.maxn
"""

Q7_SELECT = """
SELECT B.auction, B.price, B.bidder, B.date_time, B.extra
FROM bid B
JOIN (
  SELECT MAX(price) AS maxprice, window_end AS wend
  FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND))
  GROUP BY window_start, window_end
) B1
ON B.price = B1.maxprice
WHERE B.ts >= B1.wend - INTERVAL '10' SECOND AND B.ts < B1.wend
"""

QUERIES = {
    "win": WIN_SELECT,
    "filter": FILTER_SELECT,
    "q0": Q0_SELECT,
    "q1": Q1_SELECT,
    "q2": Q2_SELECT,
    "q5": Q5_TEMPLATE.format(extra=""),
    "q7": Q7_SELECT,
}

SHAPES = {
    "win": "one streaming job: window TVF TUMBLE 10 s aggregation -> blackhole",
    "filter": "one streaming job: filter + projection -> blackhole",
    "q0": "one streaming job: projection of every bid -> blackhole",
    "q1": "one streaming job: projection with price * 0.908 -> blackhole",
    "q2": "one streaming job: filter MOD(auction, 123) = 0 -> blackhole",
    "q5": "one streaming job: HOP 10 s/2 s counts per auction, per-window MAX of them, "
    "window join (num >= max) -> blackhole",
    "q7": "one streaming job: TUMBLE 10 s MAX(price), regular join with the bids on price "
    "and window bounds -> blackhole",
}


def source_ddl(events_dir):
    path = "file://" + os.path.abspath(events_dir)
    return f"""
CREATE TABLE bid (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel STRING,
  url STRING,
  date_time BIGINT,
  extra STRING,
  ts AS TO_TIMESTAMP_LTZ(date_time, 3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (
  'connector' = 'filesystem',
  'path' = '{path}',
  'format' = 'json'
)
"""


def make_env(events_dir, parallelism):
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    conf.set("parallelism.default", str(parallelism))
    # Window bounds in UTC, as StreamCell's (epoch-aligned) windows.
    conf.set("table.local-time-zone", "UTC")
    t_env.execute_sql(source_ddl(events_dir))
    return t_env


def blackhole_sink(t_env, name, select):
    """A blackhole table with the columns (and types) of `select`."""
    schema = t_env.sql_query(select).get_resolved_schema()
    cols = []
    for c in schema.get_columns():
        # The column's SQL type as Flink spells it: `BIGINT NOT NULL`, `DECIMAL(23, 3)`, ...
        sql_type = c._j_column.getDataType().getLogicalType().asSerializableString()
        cols.append(f"`{c.get_name()}` {sql_type}")
    t_env.execute_sql(f"DROP TEMPORARY TABLE IF EXISTS {name}")
    t_env.execute_sql(
        f"CREATE TEMPORARY TABLE {name} ({', '.join(cols)}) WITH ('connector' = 'blackhole')"
    )


def find_jvm():
    """The pid of the JVM PyFlink started (a `java` child of this process), or None."""
    me = os.getpid()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces, so split after the last ')'.
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2 :].split()
        if comm == "java" and len(fields) > 1 and fields[1] == str(me):
            return pid
    return None


def cpu_seconds(pid):
    """User + system CPU seconds of `pid` (all its threads), or None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rfind(")") + 2 :].split()
        # utime and stime are fields 14 and 15 of stat(5), i.e. 11 and 12 after comm/state.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def timed_run(t_env, jvm, query, run, events):
    select = QUERIES[query]
    sink = f"sink_{query}"
    blackhole_sink(t_env, sink, select)
    cpu0 = cpu_seconds(jvm)
    t0 = time.perf_counter()
    result = t_env.execute_sql(f"INSERT INTO {sink} {select}")
    # execute_sql returns once the job is submitted (planned, mini cluster started): from here
    # to the result is the job itself (`job_interval_seconds`), which the CPU figure is over.
    cpu1 = cpu_seconds(jvm)
    t1 = time.perf_counter()
    job = result.get_job_client().get_job_execution_result().result()
    t2 = time.perf_counter()
    cpu2 = cpu_seconds(jvm)
    wall = t2 - t0
    net = job.get_net_runtime() / 1000.0
    have_cpu = None not in (cpu0, cpu1, cpu2)
    cpu = cpu2 - cpu1 if have_cpu else None
    return {
        "query": query,
        "run": run,
        "wall_seconds": wall,
        "net_seconds": net,
        "job_interval_seconds": t2 - t1,
        "events_per_sec_wall": events / wall,
        "events_per_sec_net": events / net,
        "jvm_cpu_seconds": cpu,
        "jvm_cpu_cores": cpu / (t2 - t1) if cpu is not None and t2 > t1 else None,
        "jvm_cpu_seconds_wall": cpu2 - cpu0 if have_cpu else None,
    }


def epoch_ms(ts):
    """A TIMESTAMP(3) from Flink (a naive datetime in the UTC session zone) as epoch ms."""
    if isinstance(ts, datetime.datetime):
        return calendar.timegm(ts.utctimetuple()) * 1000 + ts.microsecond // 1000
    raise TypeError(f"unexpected window_start {ts!r}")


# The cross-checks total each query's output per 10 s window inside Flink (a cascaded tumbling
# window on the first query's `window_time`, or on the output's `ts`), so that only a few rows
# come back through collect(), which is slow in PyFlink (about 100 rows/s here).
WIN_CHECK_VIEW = """
CREATE TEMPORARY VIEW IF NOT EXISTS win_out AS
SELECT auction, window_time, COUNT(*) AS bids, MAX(price) AS max_price
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end, window_time
"""

WIN_CHECK = """
SELECT window_start, COUNT(*) AS n_groups, SUM(bids) AS bids, SUM(max_price) AS sum_max_price
FROM TABLE(TUMBLE(TABLE win_out, DESCRIPTOR(window_time), INTERVAL '10' SECOND))
GROUP BY window_start, window_end
"""

# Per projection query: the view (its SELECT plus `ts`) and the totals, in the names and order
# of `nexmark`'s expected totals; `{base}` is the generator's base time.
PROJECTION_CHECKS = {
    "filter": (
        "SELECT auction, price * 0.908 AS price_eur, bidder, date_time, ts FROM bid "
        "WHERE auction % 123 = 0",
        [
            ("rows", "COUNT(*)"),
            ("sum_auction", "SUM(auction)"),
            ("sum_price_eur", "SUM(CAST(price_eur AS DOUBLE))"),
        ],
    ),
    "q0": (
        "SELECT auction, bidder, price, date_time, extra, ts FROM bid",
        [
            ("rows", "COUNT(*)"),
            ("sum_auction", "SUM(auction)"),
            ("sum_bidder", "SUM(bidder)"),
            ("sum_price", "SUM(price)"),
            ("sum_date_time_minus_base", "SUM(date_time - {base})"),
            ("sum_extra_chars", "SUM(CAST(CHAR_LENGTH(extra) AS BIGINT))"),
        ],
    ),
    "q1": (
        "SELECT auction, bidder, 0.908 * price AS price, date_time, extra, ts FROM bid",
        [
            ("rows", "COUNT(*)"),
            ("sum_auction", "SUM(auction)"),
            ("sum_bidder", "SUM(bidder)"),
            ("sum_price", "SUM(CAST(price AS DOUBLE))"),
        ],
    ),
    "q2": (
        "SELECT auction, price, ts FROM bid WHERE MOD(auction, 123) = 0",
        [("rows", "COUNT(*)"), ("sum_auction", "SUM(auction)"), ("sum_price", "SUM(price)")],
    ),
}


def collect(t_env, select):
    """The final rows of `select`, applying its changelog (+I/+U add a row, -U/-D remove one)."""
    from pyflink.common import RowKind

    rows = {}
    with t_env.execute_sql(select).collect() as it:
        for row in it:
            key = tuple(row)
            kind = row.get_row_kind()
            if kind in (RowKind.INSERT, RowKind.UPDATE_AFTER):
                rows[key] = rows.get(key, 0) + 1
            else:
                rows[key] = rows.get(key, 0) - 1
    out = []
    for key, n in rows.items():
        out.extend([key] * max(n, 0))
    return out


def check_win(t_env):
    windows = {}
    t_env.execute_sql(WIN_CHECK_VIEW)
    with t_env.execute_sql(WIN_CHECK).collect() as it:
        for row in it:
            windows[epoch_ms(row[0])] = {
                "groups": row[1],
                "bids": row[2],
                "sum_max_price": row[3],
            }
    return {
        "rows": sum(w["groups"] for w in windows.values()),
        "windows": {str(k): v for k, v in sorted(windows.items())},
    }


def check_projection(t_env, query, base):
    select, totals = PROJECTION_CHECKS[query]
    view = f"{query}_out"
    t_env.execute_sql(f"CREATE TEMPORARY VIEW IF NOT EXISTS {view} AS {select}")
    # Positional aliases: `rows` is a reserved word in Flink SQL.
    exprs = ", ".join(f"{e.format(base=base)} AS c{i}" for i, (_, e) in enumerate(totals))
    stmt = (
        f"SELECT window_start, {exprs} FROM TABLE(TUMBLE(TABLE {view}, DESCRIPTOR(ts), "
        "INTERVAL '10' SECOND)) GROUP BY window_start, window_end"
    )
    out = {name: 0 for name, _ in totals}
    with t_env.execute_sql(stmt).collect() as it:
        for row in it:
            for i, (name, _) in enumerate(totals):
                out[name] += row[i + 1]
    return out


def check_q5(t_env):
    rows = collect(t_env, Q5_TEMPLATE.format(extra=", AuctionBids.starttime"))
    return {
        "rows": len(rows),
        "windows": len({r[2] for r in rows}),
        "sum_auction": sum(r[0] for r in rows),
        "sum_num": sum(r[1] for r in rows),
    }


def check_q7(t_env):
    rows = collect(t_env, Q7_SELECT)
    return {
        "rows": len(rows),
        "sum_auction": sum(r[0] for r in rows),
        "sum_price": sum(r[1] for r in rows),
        "sum_bidder": sum(r[2] for r in rows),
    }


def run_check(t_env, query, base):
    if query == "win":
        return check_win(t_env)
    if query in PROJECTION_CHECKS:
        return check_projection(t_env, query, base)
    if query == "q5":
        return check_q5(t_env)
    return check_q7(t_env)


def compare_totals(got, want):
    """Differences between totals: integers exactly, floats within 1e-9 relative."""
    diffs = []
    for k, w in want.items():
        g = got.get(k)
        if g is None:
            diffs.append(f"{k} missing (expected {w})")
        elif isinstance(w, int) and not isinstance(w, bool):
            if float(g) != float(w) or int(g) != w:
                diffs.append(f"{k} {g} != {w}")
        elif abs(float(g) - float(w)) > 1e-9 * max(abs(float(w)), 1.0):
            diffs.append(f"{k} {g} != {w}")
    return diffs


def compare_windows(got, want):
    """Differences between two {window_start: {groups/bids/sum_max_price}} maps."""
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


def check_result(query, got, expected):
    if expected is None:
        return "unchecked: no expected results (_expected.json)"
    if query == "win":
        diffs = compare_windows(got["windows"], expected["windows"])
    else:
        want = expected["totals"].get(query)
        if want is None:
            return f"unchecked: the expected results have no totals for {query}"
        diffs = compare_totals(got, want)
    return "ok" if not diffs else "mismatch: " + "; ".join(diffs[:3])


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def short_error(e):
    """The first line of a (Java) exception that says what went wrong."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for line in lines:
        if "Exception:" in line or "Error:" in line:
            return line[:500]
    return (lines[0] if lines else repr(e))[:500]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events-dir", required=True, help="the JSON-lines files of `nexmark`")
    p.add_argument("--events", type=int, required=True, help="how many bids they hold")
    p.add_argument(
        "--queries", default=",".join(ALL_QUERIES), help="comma list of " + ",".join(ALL_QUERIES)
    )
    p.add_argument("--runs", type=int, default=1, help="timed runs of each query")
    p.add_argument("--parallelism", type=int, default=2)
    p.add_argument("--no-check", action="store_true", help="skip the collect() cross-check")
    p.add_argument(
        "--expected",
        help="the expected results (default: EVENTS_DIR/_expected.json, written by nexmark; "
        "Flink's file source skips names starting with _)",
    )
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    queries = [q for q in args.queries.split(",") if q]
    for q in queries:
        if q not in QUERIES:
            sys.exit(f"unknown query {q!r} ({', '.join(ALL_QUERIES)})")
    if args.runs < 1 or args.parallelism < 1:
        sys.exit("--runs and --parallelism must be at least 1")

    expected = None
    expected_path = args.expected or os.path.join(args.events_dir, "_expected.json")
    try:
        with open(expected_path) as f:
            expected = json.load(f)
    except (OSError, ValueError) as e:
        print(f"flink: no expected results ({e}); results are not checked", file=sys.stderr)
    if expected is not None and expected.get("events") != args.events:
        sys.exit(f"{expected_path} is for {expected.get('events')} events, not {args.events}")
    base = expected["base_time"] if expected else 0

    t_start = time.perf_counter()
    t_env = make_env(args.events_dir, args.parallelism)
    setup = time.perf_counter() - t_start
    jvm = find_jvm()
    import pyflink

    print(
        f"flink: PyFlink {pyflink.version.__version__}, parallelism {args.parallelism}, "
        f"{args.events} bid events from {args.events_dir} (JVM + gateway start {setup:.1f} s, "
        f"JVM pid {jvm})",
        flush=True,
    )
    print(
        f"{'query':<8} {'run':>4} {'wall_s':>8} {'net_s':>8} {'ev/s wall':>12} {'ev/s net':>12} "
        f"{'jvm_cpu':>8}"
    )
    runs = []
    failed = {}
    for run in range(1, args.runs + 1):
        for q in queries:
            if q in failed:
                continue
            try:
                r = timed_run(t_env, jvm, q, run, args.events)
            except Exception as e:  # Py4JJavaError and friends: planning or the job failed
                msg = short_error(e)
                planner = ("ValidationException", "TableException", "SqlParserException")
                kind = "unsupported" if any(x in str(e) for x in planner) else "error"
                failed[q] = f"{kind}: {msg}"
                print(f"{q:<8} {run:>4} FAILED: {msg}", flush=True)
                continue
            runs.append(r)
            cores = "-" if r["jvm_cpu_cores"] is None else f"{r['jvm_cpu_cores']:.2f}"
            print(
                f"{q:<8} {run:>4} {r['wall_seconds']:>8.3f} {r['net_seconds']:>8.3f} "
                f"{r['events_per_sec_wall']:>12.0f} {r['events_per_sec_net']:>12.0f} "
                f"{cores:>8}",
                flush=True,
            )
    checks, check_results = {}, {}
    for q in queries:
        if q in failed:
            continue
        if args.no_check:
            check_results[q] = "unchecked: --no-check"
            continue
        t0 = time.perf_counter()
        try:
            checks[q] = run_check(t_env, q, base)
        except Exception as e:
            check_results[q] = f"error: the check query failed: {short_error(e)}"
            print(f"check {q}: {check_results[q]}", flush=True)
            continue
        check_results[q] = check_result(q, checks[q], expected)
        print(
            f"check {q}: {checks[q].get('rows')} rows ({time.perf_counter() - t0:.1f} s): "
            f"{check_results[q]}",
            flush=True,
        )

    summary = {}
    for q in queries:
        q_runs = [r for r in runs if r["query"] == q]
        cpu = [r["jvm_cpu_seconds"] for r in q_runs]
        measured = bool(q_runs) and all(c for c in cpu)
        net_rate = median([r["events_per_sec_net"] for r in q_runs])
        summary[q] = {
            "events": args.events,
            "seconds": [r["net_seconds"] for r in q_runs],
            "wall_seconds": [r["wall_seconds"] for r in q_runs],
            "events_per_s": net_rate,
            "events_per_s_wall": median([r["events_per_sec_wall"] for r in q_runs]),
            "cpu_cores": median([r["jvm_cpu_cores"] for r in q_runs]) if measured else None,
            "events_per_s_per_core": (
                median([args.events / c for c in cpu])
                if measured
                else (net_rate / args.parallelism if net_rate else None)
            ),
            "per_core_basis": "jvm_cpu" if measured else "parallelism",
            "check": failed.get(q) or check_results.get(q, "unchecked"),
            "shape": SHAPES[q],
            "sql": [" ".join(QUERIES[q].split())],
        }
    report = {
        "system": "flink",
        "benchmark": "nexmark-flink",
        "pyflink": pyflink.version.__version__,
        "python": platform.python_version(),
        "java": os.environ.get("JAVA_HOME", ""),
        "parallelism": args.parallelism,
        "events": args.events,
        "events_dir": os.path.abspath(args.events_dir),
        "setup_seconds": setup,
        "queries": summary,
        "sql": {q: " ".join(QUERIES[q].split()) for q in queries},
        "runs": runs,
        "checks": checks,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    bad = [q for q, s in summary.items() if s["check"] not in ("ok",) and "unchecked" not in s["check"]]
    if bad:
        print("flink: not ok: " + "; ".join(f"{q}: {summary[q]['check']}" for q in bad))


if __name__ == "__main__":
    main()
