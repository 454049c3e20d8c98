"""Apache Flink SQL (PyFlink, local mini cluster) on the Nexmark bids that `nexmark` wrote.

The Flink half of bench/nexmark/run.sh. It reads the JSON-lines files of
`target/release/nexmark --events-dir DIR` through Flink's filesystem connector and runs the
same two queries as the StreamCell side, in streaming mode with event time:

- win:    SELECT auction, window_start, window_end, COUNT(*) AS bids, MAX(price) AS max_price
          FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND))
          GROUP BY auction, window_start, window_end
- filter: SELECT auction, price * 0.908 AS price_eur, bidder, date_time FROM bid
          WHERE auction % 123 = 0

where `ts` is `TO_TIMESTAMP_LTZ(date_time, 3)` with `WATERMARK FOR ts AS ts - INTERVAL '1'
SECOND` (StreamCell's allowed lateness is also 1 s).

Timed runs write into a `blackhole` sink. For each, it records
- `wall_seconds`: from `execute_sql(INSERT ...)` until the job's result is back: SQL planning,
  job graph, the start of a local mini cluster (PyFlink starts one per job), deployment, the
  run, shutdown;
- `net_seconds`: Flink's own `JobExecutionResult.getNetRuntime()`, the job's time in the
  cluster (from its creation to its end), without planning and cluster start.
JVM start and the Python/Java gateway are in neither (they happen once before).

Then, untimed, each query runs once more with its output totalled per 10 s window inside Flink
(win: rows, sum of bids, sum of max_price; filter: rows, sum of auction, sum of price_eur) and
collected, for the cross-check against StreamCell and the values `nexmark` computed from the
bids themselves.

Writes everything as JSON (`--json`).
"""

import argparse
import calendar
import datetime
import json
import os
import platform
import sys
import time

from pyflink.table import EnvironmentSettings, TableEnvironment

WIN_SELECT = """
SELECT auction, window_start, window_end, COUNT(*) AS bids, MAX(price) AS max_price
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end
"""

FILTER_SELECT = """
SELECT auction, price * 0.908 AS price_eur, bidder, date_time FROM bid
WHERE auction % 123 = 0
"""

QUERIES = {"win": WIN_SELECT, "filter": FILTER_SELECT}


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


def timed_run(t_env, query, run, events):
    select = QUERIES[query]
    sink = f"sink_{query}"
    blackhole_sink(t_env, sink, select)
    t0 = time.perf_counter()
    result = t_env.execute_sql(f"INSERT INTO {sink} {select}")
    job = result.get_job_client().get_job_execution_result().result()
    wall = time.perf_counter() - t0
    net = job.get_net_runtime() / 1000.0
    return {
        "query": query,
        "run": run,
        "wall_seconds": wall,
        "net_seconds": net,
        "events_per_sec_wall": events / wall,
        "events_per_sec_net": events / net,
    }


def epoch_ms(ts):
    """A TIMESTAMP(3) from Flink (a naive datetime in the UTC session zone) as epoch ms."""
    if isinstance(ts, datetime.datetime):
        return calendar.timegm(ts.utctimetuple()) * 1000 + ts.microsecond // 1000
    raise TypeError(f"unexpected window_start {ts!r}")


# The cross-checks total each query's output per 10 s window inside Flink (a cascaded tumbling
# window on the first query's `window_time`, or on the filter output's `ts`), so that only a
# few rows come back through collect(), which is slow in PyFlink (about 100 rows/s here).
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

FILTER_CHECK_VIEW = """
CREATE TEMPORARY VIEW IF NOT EXISTS filter_out AS
SELECT auction, price * 0.908 AS price_eur, bidder, date_time, ts FROM bid
WHERE auction % 123 = 0
"""

FILTER_CHECK = """
SELECT window_start, COUNT(*) AS n, SUM(auction) AS sum_auction,
  SUM(CAST(price_eur AS DOUBLE)) AS sum_price_eur
FROM TABLE(TUMBLE(TABLE filter_out, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY window_start, window_end
"""


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


def check_filter(t_env):
    rows, sum_auction, sum_price = 0, 0, 0.0
    t_env.execute_sql(FILTER_CHECK_VIEW)
    with t_env.execute_sql(FILTER_CHECK).collect() as it:
        for row in it:
            rows += row[1]
            sum_auction += row[2]
            sum_price += row[3]
    return {"rows": rows, "sum_auction": sum_auction, "sum_price_eur": sum_price}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events-dir", required=True, help="the JSON-lines files of `nexmark`")
    p.add_argument("--events", type=int, required=True, help="how many bids they hold")
    p.add_argument("--queries", default="win,filter")
    p.add_argument("--runs", type=int, default=1, help="timed runs of each query")
    p.add_argument("--parallelism", type=int, default=2)
    p.add_argument("--no-check", action="store_true", help="skip the collect() cross-check")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    queries = [q for q in args.queries.split(",") if q]
    for q in queries:
        if q not in QUERIES:
            sys.exit(f"unknown query {q!r} (win, filter)")

    t_start = time.perf_counter()
    t_env = make_env(args.events_dir, args.parallelism)
    setup = time.perf_counter() - t_start
    import pyflink

    print(
        f"flink: PyFlink {pyflink.version.__version__}, parallelism {args.parallelism}, "
        f"{args.events} bid events from {args.events_dir} (JVM + gateway start {setup:.1f} s)",
        flush=True,
    )
    print(f"{'query':<8} {'run':>4} {'wall_s':>8} {'net_s':>8} {'ev/s wall':>12} {'ev/s net':>12}")
    runs = []
    for run in range(1, args.runs + 1):
        for q in queries:
            r = timed_run(t_env, q, run, args.events)
            runs.append(r)
            print(
                f"{q:<8} {run:>4} {r['wall_seconds']:>8.3f} {r['net_seconds']:>8.3f} "
                f"{r['events_per_sec_wall']:>12.0f} {r['events_per_sec_net']:>12.0f}",
                flush=True,
            )
    checks = {}
    if not args.no_check:
        for q in queries:
            t0 = time.perf_counter()
            checks[q] = check_win(t_env) if q == "win" else check_filter(t_env)
            print(f"check {q}: {checks[q]['rows']} rows ({time.perf_counter() - t0:.1f} s)")
    report = {
        "benchmark": "nexmark-flink",
        "pyflink": pyflink.version.__version__,
        "python": platform.python_version(),
        "java": os.environ.get("JAVA_HOME", ""),
        "parallelism": args.parallelism,
        "events": args.events,
        "events_dir": os.path.abspath(args.events_dir),
        "setup_seconds": setup,
        "sql": {q: " ".join(QUERIES[q].split()) for q in queries},
        "runs": runs,
        "checks": checks,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
