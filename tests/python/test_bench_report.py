"""bench/report.py turns a run's part files into results JSON and a report of ratios.

No server runs here: the inputs are small part files shaped like the ones target/release/peers,
bench/nexmark and bench/datacell write, so a change to either side that breaks the report
shows up in the test suite rather than at the end of a 20-minute benchmark run.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "bench" / "report.py"


def append_case(system, durability, rps, p99, rss=30.0):
    return {
        "system": system, "durability": durability, "setting": f"{system} {durability}",
        "record_size": 100, "batch_size": 100, "records": int(rps * 5), "records_per_s": rps,
        "payload_mb_per_s": rps * 100 / 1e6,
        "ack_latency_ms": {"p50": p99 / 3, "p99": p99, "p999": p99 * 2, "max": p99 * 3, "mean": p99 / 2},
        "server_cpu_cores": 0.5, "client_cpu_cores": 0.4, "server_peak_rss_mib": rss,
        "data_bytes": 1, "error": None,
    }


def write_parts(work: Path):
    (work / "nexmark").mkdir(parents=True)
    (work / "append.json").write_text(json.dumps({
        "benchmark": "append", "seconds": 5, "warmup_seconds": 1.0, "concurrency": 8, "connections": 2,
        "versions": {},
        "cases": [
            append_case("streamcell", "fsync", 400_000, 6.0, rss=28),
            append_case("redis", "fsync", 100_000, 18.0, rss=90),
            append_case("nats", "fsync", 800_000, 3.0, rss=40),
            {**append_case("nats", "os", 0, 0), "error": "nats publish: timed out"},
        ],
    }))
    (work / "consume.json").write_text(json.dumps({
        "benchmark": "consume", "records": 1000, "record_size": 100, "batch": 100, "window": 1000,
        "versions": {},
        "cases": [
            {"system": "streamcell", "durability": "os", "setting": "s", "records": 1000,
             "fill_records_per_s": 1e6, "records_per_s": 1_000_000, "payload_mb_per_s": 100,
             "seconds": 0.001, "confirmed_seconds": 0.002, "server_cpu_cores": 0.5,
             "client_cpu_cores": 0.3, "error": None},
            {"system": "redis", "durability": "os", "setting": "r", "records": 1000,
             "fill_records_per_s": 1e6, "records_per_s": 250_000, "payload_mb_per_s": 25,
             "seconds": 0.004, "confirmed_seconds": 0.004, "server_cpu_cores": 0.5,
             "client_cpu_cores": 0.3, "error": None},
        ],
    }))
    (work / "nexmark" / "streamcell.json").write_text(json.dumps({
        "system": "streamcell", "events": 1000,
        "queries": {"win": {"events_per_s": 500_000, "events_per_s_per_core": 500_000, "cpu_cores": 1.0,
                            "seconds": [0.002], "check": "ok", "shape": "a view"}},
    }))
    (work / "nexmark" / "flink.json").write_text(json.dumps({
        "system": "flink", "events": 1000,
        "queries": {"win": {"events_per_s": 1_000_000, "events_per_s_per_core": 500_000, "cpu_cores": 2.0,
                            "seconds": [0.001], "check": "ok"}},
    }))
    (work / "footprint.json").write_text(json.dumps({
        "benchmark": "footprint", "log_mib": 1, "idle_seconds": 1, "versions": {},
        "systems": [
            {"system": "streamcell", "binary": "s", "binary_bytes": 100e6, "stripped_bytes": 50e6,
             "cold_start_ms": [20, 21, 22], "cold_start_ms_median": 21, "idle_rss_mib": 25,
             "recovery": {"durability": "os", "setting": "s", "records_acked": 1000, "payload_bytes": 1048576,
                          "fill_seconds": 1, "data_bytes": 1048576, "rss_after_fill_mib": 30,
                          "ready_seconds": 0.02, "recovered_seconds": 0.03, "check": "ok",
                          "rss_after_recovery_mib": 26}, "error": None},
            {"system": "redis", "binary": "r", "binary_bytes": 2e6, "stripped_bytes": 2e6,
             "cold_start_ms": [15, 15, 15], "cold_start_ms_median": 15, "idle_rss_mib": 12,
             "recovery": {"durability": "os", "setting": "r", "records_acked": 1000, "payload_bytes": 1048576,
                          "fill_seconds": 1, "data_bytes": 2097152, "rss_after_fill_mib": 90,
                          "ready_seconds": 0.5, "recovered_seconds": 0.5, "check": "ok",
                          "rss_after_recovery_mib": 91}, "error": None},
        ],
    }))


def test_collect_and_render_report_ratios_losses_and_failures(tmp_path):
    work = tmp_path / "work"
    write_parts(work)
    out = tmp_path / "results" / "run.json"
    subprocess.run([sys.executable, str(REPORT), "collect", "--work", str(work), "--mode", "full",
                    "--seconds", "60", "--out", str(out)], check=True, cwd=ROOT)
    res = json.loads(out.read_text())
    assert res["mode"] == "full"
    assert res["machine"]["cores"] >= 1
    assert res["datacell"] is None  # not run: no part file
    assert res["nexmark"]["flink"]["queries"]["win"]["events_per_s"] == 1_000_000

    md = tmp_path / "RESULTS.md"
    subprocess.run([sys.executable, str(REPORT), "render", "--results", str(out), "--md", str(md),
                    "--charts", str(tmp_path / "charts")], check=True, cwd=ROOT)
    text = md.read_text()
    # Ratios are StreamCell / peer, bold where StreamCell is ahead.
    assert "| append 100 B × 100, fsync before ack: vs Redis Streams | 400,000 vs 100,000 rec/s | **4.00×** | **0.33×** |" in text
    assert "| append 100 B × 100, fsync before ack: vs NATS JetStream | 400,000 vs 800,000 rec/s | 0.50× | 2.00× |" in text
    assert "consume with acks, ack from OS buffers: vs Redis Streams | 1,000,000 vs 250,000 rec/s | **4.00×**" in text
    assert "| Nexmark win: vs Flink SQL | 500,000 vs 1,000,000 events/s | 0.50× | per core **1.00×** |" in text
    # Every place StreamCell is behind is listed, the largest gap first.
    losses = text.split("## Where StreamCell loses")[1].split("##")[0]
    lines = [l for l in losses.splitlines() if l.startswith("- ")]
    assert lines[0] == "- binary size (stripped) vs Redis Streams: 25.00× behind"
    assert "- append 100 B × 100, fsync before ack: vs NATS JetStream (records/s): 2.00× behind" in lines
    assert "- Nexmark win: vs Flink SQL (events/s): 2.00× behind" in lines
    # A failed case is shown as failed, not dropped, and not counted as a ratio.
    assert "failed: nats publish: timed out" in text
    assert "ack from OS buffers: vs NATS" not in text
    assert "## DataCell pipeline\n\nNot run." in text
