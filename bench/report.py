#!/usr/bin/env python3
"""Collects one bench/run.sh run into bench/results/<date>.json and renders it.

    report.py collect --work DIR --mode full|quick --seconds S --out FILE [--redis-bin B --nats-bin B]
    report.py render --results FILE --md bench/RESULTS.md --charts bench/results/charts

`collect` reads the parts' JSON files from the run's work directory (append.json, consume.json,
footprint.json from target/release/peers; nexmark/streamcell.json and nexmark/flink.json from
bench/nexmark; datacell.json from bench/datacell) and adds the machine, the versions and the
date. `render` writes the Markdown report (ratios first, then every figure, then
bench/ANALYSIS.md, the hand-written reading of the figures, if present) and PNG charts
(matplotlib; skipped with a note if it is not installed). Ratios are StreamCell / peer, so
above 1 means StreamCell is ahead for throughputs; for latencies, memory and times the
report says "lower is better" and gives the ratio the same way (below 1 is StreamCell ahead).
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys

SYSTEMS = ["streamcell", "redis", "nats"]
LABEL = {"streamcell": "StreamCell", "redis": "Redis Streams", "nats": "NATS JetStream",
         "flink": "Flink SQL"}
# Gaps smaller than this are within run-to-run noise here and not listed as losses.
LOSS_THRESHOLD = 1.10
DURABILITY = {"fsync": "fsync before ack", "os": "ack from OS buffers", "memory": "no persistence"}


# --------------------------------------------------------------------------------------------
# collect

def sh(*cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else ""
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"


def machine():
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    osname = ""
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    fs = ""
    try:
        out = subprocess.run(["df", "-T", "/tmp"], capture_output=True, text=True).stdout.splitlines()
        if len(out) > 1:
            fs = out[1].split()[1]
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 1048576, 1),
            "os": osname, "kernel": platform.release(), "tmp_filesystem": fs}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return {"error": f"cannot read {path}: {e}"}


def collect(args):
    w = args.work
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": args.mode,
        "duration_s": args.seconds,
        "machine": machine(),
        "versions": {
            "streamcell": sh("git", "describe", "--always", "--dirty", "--abbrev=10"),
            "rustc": sh("rustc", "--version"),
            "redis": sh(args.redis_bin, "--version"),
            "nats": sh(args.nats_bin, "--version"),
            "java": sh("java", "-version"),
            "python": platform.python_version(),
        },
        "append": load(os.path.join(w, "append.json")),
        "consume": load(os.path.join(w, "consume.json")),
        "nexmark": {
            "streamcell": load(os.path.join(w, "nexmark", "streamcell.json")),
            "flink": load(os.path.join(w, "nexmark", "flink.json")),
        },
        "datacell": load(os.path.join(w, "datacell.json")),
        "footprint": load(os.path.join(w, "footprint.json")),
    }
    flink = result["nexmark"]["flink"] or {}
    if isinstance(flink, dict) and flink.get("pyflink"):
        result["versions"]["flink"] = f"{flink['pyflink']} (PyFlink, parallelism {flink.get('parallelism')})"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")


# --------------------------------------------------------------------------------------------
# render: helpers

def num(v, digits=0):
    if v is None:
        return "–"
    if isinstance(v, (int, float)):
        if digits == 0:
            return f"{v:,.0f}"
        return f"{v:,.{digits}f}"
    return str(v)


def ratio(a, b):
    if not a or not b:
        return None
    return a / b


def fmt_ratio(r, higher_better=True):
    if r is None:
        return "–"
    text = f"{r:.2f}×"
    ahead = r >= 1 if higher_better else r <= 1
    return f"**{text}**" if ahead else text


def table(header, rows):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def cases_by(part, *keys):
    index = {}
    for c in (part or {}).get("cases", []) or []:
        index[tuple(c.get(k) for k in keys)] = c
    return index


# --------------------------------------------------------------------------------------------
# render: sections

class Report:
    def __init__(self, res):
        self.res = res
        self.losses = []  # (how far behind, text)

    def note_loss(self, what, r, higher_better):
        if r is None:
            return
        behind = (1 / r) if higher_better else r
        if behind > LOSS_THRESHOLD:
            self.losses.append((behind, what))

    # -- summary ratios
    def summary(self):
        rows = []
        app = cases_by(self.res.get("append"), "system", "durability", "record_size", "batch_size")
        for (sysname, dur, size, batch), c in sorted(app.items(), key=lambda kv: (kv[0][2], kv[0][3], kv[0][1])):
            if sysname != "streamcell" or c.get("error"):
                continue
            for peer in ("redis", "nats"):
                p = app.get((peer, dur, size, batch))
                if not p or p.get("error"):
                    continue
                r = ratio(c["records_per_s"], p["records_per_s"])
                lr = ratio(c["ack_latency_ms"]["p99"], p["ack_latency_ms"]["p99"])
                what = f"append {size} B × {batch}, {DURABILITY.get(dur, dur)}: vs {LABEL[peer]}"
                rows.append([what, f"{num(c['records_per_s'])} vs {num(p['records_per_s'])} rec/s",
                             fmt_ratio(r), fmt_ratio(lr, higher_better=False)])
                self.note_loss(f"{what} (records/s)", r, True)
                self.note_loss(f"{what} (p99 ack latency)", lr, False)
        con = cases_by(self.res.get("consume"), "system", "durability")
        for (sysname, dur), c in sorted(con.items(), key=lambda kv: kv[0][1]):
            if sysname != "streamcell" or c.get("error"):
                continue
            for peer in ("redis", "nats"):
                p = con.get((peer, dur))
                if not p or p.get("error"):
                    continue
                r = ratio(c["records_per_s"], p["records_per_s"])
                what = f"consume with acks, {DURABILITY.get(dur, dur)}: vs {LABEL[peer]}"
                rows.append([what, f"{num(c['records_per_s'])} vs {num(p['records_per_s'])} rec/s",
                             fmt_ratio(r), "–"])
                self.note_loss(f"{what} (records/s)", r, True)
        nx = self.res.get("nexmark") or {}
        sc = (nx.get("streamcell") or {}).get("queries") or {}
        fl = (nx.get("flink") or {}).get("queries") or {}
        for q, c in sc.items():
            f = fl.get(q)
            if not f or not c.get("events_per_s") or not f.get("events_per_s"):
                continue
            r = ratio(c["events_per_s"], f["events_per_s"])
            rc = ratio(c.get("events_per_s_per_core"), f.get("events_per_s_per_core"))
            what = f"Nexmark {q}: vs Flink SQL"
            rows.append([what, f"{num(c['events_per_s'])} vs {num(f['events_per_s'])} events/s",
                         fmt_ratio(r), f"per core {fmt_ratio(rc)}"])
            self.note_loss(f"{what} (events/s)", r, True)
        fp = {s.get("system"): s for s in ((self.res.get("footprint") or {}).get("systems") or [])}
        c = fp.get("streamcell")
        if c and not c.get("error"):
            for peer in ("redis", "nats"):
                p = fp.get(peer)
                if not p or p.get("error"):
                    continue
                for key, what in (("idle_rss_mib", "idle RSS"), ("cold_start_ms_median", "cold start")):
                    r = ratio(c.get(key), p.get(key))
                    rows.append([f"{what}: vs {LABEL[peer]}", f"{num(c.get(key), 1)} vs {num(p.get(key), 1)}",
                                 "–", fmt_ratio(r, higher_better=False)])
                    self.note_loss(f"{what} vs {LABEL[peer]}", r, False)
                cb = c.get("stripped_bytes") or c.get("binary_bytes")
                pb = p.get("stripped_bytes") or p.get("binary_bytes")
                r = ratio(cb, pb)
                if r is not None:
                    rows.append([f"binary size (stripped): vs {LABEL[peer]}", f"{num(cb / 1e6, 1)} vs {num(pb / 1e6, 1)} MB",
                                 "–", fmt_ratio(r, higher_better=False)])
                    self.note_loss(f"binary size (stripped) vs {LABEL[peer]}", r, False)
                peak = self.peak_rss()
                r = ratio(peak.get("streamcell"), peak.get(peer))
                if r is not None:
                    rows.append([f"peak RSS under append load: vs {LABEL[peer]}",
                                 f"{num(peak['streamcell'])} vs {num(peak[peer])} MiB", "–",
                                 fmt_ratio(r, higher_better=False)])
                    self.note_loss(f"peak RSS under append load vs {LABEL[peer]}", r, False)
                cr, pr = c.get("recovery") or {}, p.get("recovery") or {}
                r = ratio(cr.get("recovered_seconds"), pr.get("recovered_seconds"))
                if r is not None:
                    rows.append([f"recovery after kill -9 ({num(cr.get('payload_bytes', 0) / 1048576)} MiB): vs {LABEL[peer]}",
                                 f"{num(cr.get('recovered_seconds'), 2)} vs {num(pr.get('recovered_seconds'), 2)} s",
                                 "–", fmt_ratio(r, higher_better=False)])
                    self.note_loss(f"recovery after kill -9 vs {LABEL[peer]}", r, False)
        return table(["what", "StreamCell vs peer", "throughput ratio (higher: StreamCell ahead)",
                      "latency/footprint ratio (lower: StreamCell ahead)"], rows)

    def peak_rss(self):
        """The highest server RSS of each system over the append cases (MiB)."""
        peak = {}
        for c in (self.res.get("append") or {}).get("cases", []):
            if not c.get("error"):
                peak[c["system"]] = max(peak.get(c["system"], 0), c["server_peak_rss_mib"])
        return peak

    # -- detail sections
    def append_section(self):
        part = self.res.get("append")
        if not part:
            return "Not run."
        if part.get("error") and not part.get("cases"):
            return f"Failed: {part['error']}"
        rows = []
        for c in part.get("cases", []):
            if c.get("error"):
                rows.append([LABEL.get(c["system"], c["system"]), c["setting"], c["record_size"], c["batch_size"],
                             f"failed: {c['error']}", "", "", "", "", ""])
                continue
            l = c["ack_latency_ms"]
            rows.append([LABEL.get(c["system"], c["system"]), c["setting"], c["record_size"], c["batch_size"],
                         num(c["records_per_s"]), num(c["payload_mb_per_s"], 1), num(l["p50"], 2), num(l["p99"], 2),
                         num(c["server_cpu_cores"], 2), num(c["server_peak_rss_mib"])])
        return (f"{part.get('concurrency')} batches in flight over {part.get('connections')} connections, "
                f"{part.get('seconds')} s measured after {part.get('warmup_seconds')} s of warm-up, a fresh "
                "server per case; latency is a batch's send to its last record's acknowledgement.\n\n"
                + table(["system", "setting", "record B", "batch", "records/s", "MB/s", "p50 ms", "p99 ms",
                         "server cores", "peak RSS MiB"], rows))

    def consume_section(self):
        part = self.res.get("consume")
        if not part:
            return "Not run."
        rows = []
        for c in part.get("cases", []):
            if c.get("error"):
                rows.append([LABEL.get(c["system"], c["system"]), c["setting"], f"failed: {c['error']}", "", "", "", ""])
                continue
            rows.append([LABEL.get(c["system"], c["system"]), c["setting"], num(c["records_per_s"]),
                         num(c["payload_mb_per_s"], 1), num(c["confirmed_seconds"], 2), num(c["server_cpu_cores"], 2),
                         num(c["fill_records_per_s"])])
        return (f"{num(part.get('records'))} records of {part.get('record_size')} B filled in batches of "
                f"{part.get('batch')} (not timed), then one consumer reads them all from the start and "
                f"acknowledges each delivery; at most {num(part.get('window'))} unacknowledged (StreamCell "
                "maxUnackedRecords, NATS max_ack_pending; Redis has no such limit).\n\n"
                + table(["system", "setting", "records/s", "MB/s", "all acked after s", "server cores",
                         "fill records/s"], rows))

    def nexmark_section(self):
        nx = self.res.get("nexmark") or {}
        sc = nx.get("streamcell") or {}
        fl = nx.get("flink") or {}
        if not sc and not fl:
            return "Not run."
        rows = []
        names = list((sc.get("queries") or {}).keys())
        for q in (fl.get("queries") or {}):
            if q not in names:
                names.append(q)
        for q in names:
            c = (sc.get("queries") or {}).get(q) or {}
            f = (fl.get("queries") or {}).get(q) or {}
            rows.append([q, num(c.get("events_per_s")), num(c.get("events_per_s_per_core")), num(c.get("cpu_cores"), 2),
                         c.get("check", "–"), num(f.get("events_per_s")), num(f.get("events_per_s_per_core")),
                         f.get("check", "–") if f else "not run",
                         fmt_ratio(ratio(c.get("events_per_s"), f.get("events_per_s")))])
        shapes = [f"- `{q}`: {((sc.get('queries') or {}).get(q) or {}).get('shape', '')}" for q in names
                  if ((sc.get('queries') or {}).get(q) or {}).get('shape')]
        notes = []
        for side, d in (("StreamCell", sc), ("Flink", fl)):
            if d.get("error"):
                notes.append(f"{side}: {d['error']}")
        return (f"{num(sc.get('events') or fl.get('events'))} Nexmark bids, the same events on both sides, "
                "medians of the runs (the header of bench/nexmark/run.sh says how each side is timed; bench/HISTORY.md has earlier runs).\n\n"
                + table(["query", "StreamCell events/s", "per core", "cores", "check", "Flink events/s",
                         "Flink per core", "Flink check", "ratio"], rows)
                + ("\n\nWhat each StreamCell query is:\n" + "\n".join(shapes) if shapes else "")
                + ("\n\n" + "\n".join(notes) if notes else ""))

    def datacell_section(self):
        part = self.res.get("datacell")
        if not part:
            return "Not run."
        rows = []
        for c in part.get("cases", []):
            l = c.get("latency_us") or {}
            rows.append([c.get("case"), num(c.get("events")), c.get("batch"), num(c.get("events_per_s")),
                         num(c.get("events_per_s_end_to_end")), num(l.get("p50")), num(l.get("p90")),
                         num(l.get("p99")), num(l.get("max")), num(c.get("server_cpu_cores"), 2)])
        return ("sensor → TCP receptor → pass-through continuous query → TCP emitter → actuator, all "
                "processes on this machine; no peer runs this pipeline.\n\n"
                + table(["case", "events", "batch", "events/s", "end to end events/s", "p50 µs", "p90 µs",
                         "p99 µs", "max µs", "server cores"], rows))

    def footprint_section(self):
        part = self.res.get("footprint")
        if not part:
            return "Not run."
        rows, rec = [], []
        for s in part.get("systems", []):
            name = LABEL.get(s.get("system"), s.get("system"))
            if s.get("error"):
                rows.append([name, f"failed: {s['error']}", "", "", "", ""])
                continue
            stripped = s.get("stripped_bytes")
            rows.append([name, num(s["binary_bytes"] / 1e6, 1), num(stripped / 1e6, 1) if stripped else "–",
                         num(s["cold_start_ms_median"], 1),
                         ", ".join(num(v, 1) for v in s["cold_start_ms"]), num(s["idle_rss_mib"], 1)])
            r = s.get("recovery")
            if r:
                rec.append([name, r["setting"], num(r["payload_bytes"] / 1048576), num(r["data_bytes"] / 1048576),
                            num(r["fill_seconds"], 1), num(r["rss_after_fill_mib"]), num(r["ready_seconds"], 2),
                            num(r["recovered_seconds"], 2), num(r["rss_after_recovery_mib"]), r["check"]])
        peak = self.peak_rss()
        peak_line = ", ".join(f"{LABEL[s]} {num(v)} MiB" for s, v in peak.items())
        return ("Cold start: spawning the server on an empty data directory until it answers its first "
                "request (StreamCell gRPC Echo, Redis PING, NATS JetStream account info), 3 times. Idle RSS "
                f"after {part.get('idle_seconds')} s. Binary: the file on disk (Redis is Debian's dynamically "
                "linked build; NATS is a static Go binary; StreamCell is linked to glibc only and its release "
                "profile keeps line tables for profiling: \"stripped\" is a stripped copy of each).\n\n"
                + table(["system", "binary MB", "stripped MB", "cold start ms (median)", "runs ms", "idle RSS MiB"], rows)
                + (f"\n\nPeak RSS under load (the highest of the append cases): {peak_line}." if peak_line else "")
                + "\n\nRecovery: the log filled with 1 KiB records in batches of 1000, then `kill -9` and a "
                "restart on the same directory; \"ready\" is the first answer, \"all visible\" is when the "
                "restarted server shows every acknowledged record (count, or StreamCell's tail batch).\n\n"
                + table(["system", "setting", "acked MiB", "on disk MiB", "fill s", "RSS after fill MiB",
                         "ready s", "all visible s", "RSS after restart MiB", "check"], rec))


# --------------------------------------------------------------------------------------------
# render: charts

def charts(res, outdir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed: no charts (bench/run.sh installs it in bench/.venv)"
    os.makedirs(outdir, exist_ok=True)
    made = []
    colors = {"streamcell": "#1f77b4", "redis": "#d62728", "nats": "#2ca02c", "flink": "#9467bd"}

    def grouped(ax, groups, series, values, ylabel, log=False):
        width = 0.8 / max(1, len(series))
        for i, s in enumerate(series):
            xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
            ax.bar(xs, [values.get((grp, s)) or 0 for grp in groups], width, label=LABEL.get(s, s),
                   color=colors.get(s))
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)

    app = (res.get("append") or {}).get("cases") or []
    if app:
        groups, thr, p99 = [], {}, {}
        for c in app:
            g = f"{c['record_size']} B×{c['batch_size']} {c['durability']}"
            if g not in groups:
                groups.append(g)
            if not c.get("error"):
                thr[(g, c["system"])] = c["records_per_s"]
                p99[(g, c["system"])] = c["ack_latency_ms"]["p99"]
        fig, (a1, a2) = plt.subplots(2, 1, figsize=(11, 8))
        grouped(a1, groups, SYSTEMS, thr, "records/s (log)", log=True)
        a1.set_title("Append: records/s acknowledged")
        grouped(a2, groups, SYSTEMS, p99, "p99 ack latency, ms (log)", log=True)
        a2.set_title("Append: p99 acknowledgement latency (lower is better)")
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, "append.png"), dpi=90)
        plt.close(fig)
        made.append("append.png")

    con = (res.get("consume") or {}).get("cases") or []
    nx = res.get("nexmark") or {}
    sc = ((nx.get("streamcell") or {}).get("queries")) or {}
    fl = ((nx.get("flink") or {}).get("queries")) or {}
    if con or sc:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
        if con:
            groups = sorted({c["durability"] for c in con})
            vals = {(c["durability"], c["system"]): c.get("records_per_s") for c in con if not c.get("error")}
            grouped(a1, groups, SYSTEMS, vals, "records/s")
            a1.set_title("Consume with acks: records/s")
        if sc:
            groups = list(sc.keys())
            vals = {}
            for q in groups:
                vals[(q, "streamcell")] = sc[q].get("events_per_s")
                if q in fl:
                    vals[(q, "flink")] = fl[q].get("events_per_s")
            grouped(a2, groups, ["streamcell", "flink"], vals, "events/s")
            a2.set_title("Nexmark: events/s")
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, "consume-nexmark.png"), dpi=90)
        plt.close(fig)
        made.append("consume-nexmark.png")

    fp = [s for s in ((res.get("footprint") or {}).get("systems") or []) if not s.get("error")]
    if fp:
        fig, axes = plt.subplots(1, 4, figsize=(14, 3.8))
        metrics = [("idle_rss_mib", "idle RSS, MiB"), ("cold_start_ms_median", "cold start, ms"),
                   ("binary_bytes", "binary (stripped), MB"), ("recovered_seconds", "recovery after kill -9, s")]
        for ax, (key, title) in zip(axes, metrics):
            names, vals = [], []
            for s in fp:
                v = (s.get("recovery") or {}).get(key) if key == "recovered_seconds" else s.get(key)
                if key == "binary_bytes":
                    v = (s.get("stripped_bytes") or v or 0) / 1e6
                names.append(LABEL.get(s["system"], s["system"]))
                vals.append(v or 0)
            ax.bar(names, vals, color=[colors.get(s["system"]) for s in fp])
            ax.set_title(title + " (lower is better)", fontsize=9)
            ax.tick_params(axis="x", labelsize=8, rotation=20)
            ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, "footprint.png"), dpi=90)
        plt.close(fig)
        made.append("footprint.png")
    return made, None


# --------------------------------------------------------------------------------------------
# render

def render(args):
    with open(args.results) as f:
        res = json.load(f)
    flink = (res.get("nexmark") or {}).get("flink") or {}
    if "flink" not in res.get("versions", {}) and flink.get("pyflink"):
        res.setdefault("versions", {})["flink"] = f"{flink['pyflink']} (PyFlink, parallelism {flink.get('parallelism')})"
    rep = Report(res)
    m, v = res.get("machine", {}), res.get("versions", {})
    summary = rep.summary()
    sections = [
        ("Durable append", "append", rep.append_section()),
        ("Consume with acknowledgements", "consume", rep.consume_section()),
        ("Nexmark: continuous SQL against Flink SQL", "nexmark", rep.nexmark_section()),
        ("DataCell pipeline", "datacell", rep.datacell_section()),
        ("Footprint", "footprint", rep.footprint_section()),
    ]
    made, chart_note = charts(res, args.charts)
    md_dir = os.path.dirname(os.path.abspath(args.md))
    rel = os.path.relpath(os.path.abspath(args.charts), md_dir)
    results_rel = os.path.relpath(os.path.abspath(args.results), md_dir)
    out = [
        "# Benchmark results",
        "",
        f"<!-- Generated by bench/report.py from {results_rel}; edit bench/ANALYSIS.md or the "
        "script, not this file. -->",
        "",
        f"One run of `bench/run.sh{' --quick' if res.get('mode') == 'quick' else ''}` "
        f"({res.get('mode')} mode, {num(res.get('duration_s'))} s), {res.get('date')}. "
        f"Every figure below is in [{results_rel}]({results_rel}). "
        "StreamCell and its peers ran on the same machine in the same run, one at a time, each "
        "server on a fresh data directory; clients share the machine's cores with the server.",
        "",
        f"- **Machine:** {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB, {m.get('os')}, "
        f"Linux {m.get('kernel')}, data on {m.get('tmp_filesystem')}.",
        f"- **Versions:** StreamCell {v.get('streamcell')} ({v.get('rustc')}); {v.get('redis')}; "
        f"{v.get('nats')}; Flink {v.get('flink', '(see Nexmark)')} on {v.get('java')}.",
        "- **Settings:** every peer setting is listed in bench/README.md; the durability modes are "
        "`fsync` (each ack follows an fsync: StreamCell's default, Redis `appendfsync always`, NATS "
        "`sync_interval: always`), `os` (ack once written to the OS: StreamCell `--sync interval:1000`, "
        "Redis `appendfsync everysec` — Redis's recommended mode —, NATS file storage with its default "
        "2-minute sync) and `memory` (Redis without persistence, NATS memory storage; StreamCell "
        "`--sync never`, which still writes files).",
        "",
    ]
    if res.get("mode") == "quick":
        out += ["**Quick mode:** small inputs and one run per case, a smoke test of the suite. "
                "Ratios here are not results (Flink's short jobs, for one, are mostly JVM warm-up); "
                "bench/RESULTS.md holds a full run.", ""]
    out += [
        "## Ratios",
        "",
        "StreamCell's figure divided by the peer's. Bold: StreamCell ahead.",
        "",
        summary,
        "",
        "## Where StreamCell loses",
        "",
    ]
    if rep.losses:
        out += [f"Every ratio above with StreamCell more than {LOSS_THRESHOLD - 1:.0%} behind, "
                "largest gap first.", ""]
        for behind, what in sorted(rep.losses, reverse=True):
            out.append(f"- {what}: {behind:.2f}× behind")
    else:
        out.append("Nowhere in this run.")
    out.append("")
    if made:
        out += ["## Charts", ""] + [f"![{c}]({rel}/{c})" for c in made] + [""]
    elif chart_note:
        out += [f"_{chart_note}_", ""]
    for title, _, body in sections:
        out += [f"## {title}", "", body, ""]
    analysis = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ANALYSIS.md")
    if res.get("mode") == "full" and os.path.exists(analysis):
        out += [open(analysis).read().rstrip(), ""]
    with open(args.md, "w") as f:
        f.write("\n".join(out))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--work", required=True)
    c.add_argument("--mode", choices=["full", "quick"], required=True)
    c.add_argument("--seconds", type=int, default=0)
    c.add_argument("--out", required=True)
    c.add_argument("--redis-bin", default="redis-server")
    c.add_argument("--nats-bin", default="nats-server")
    r = sub.add_parser("render")
    r.add_argument("--results", required=True)
    r.add_argument("--md", required=True)
    r.add_argument("--charts", required=True)
    args = p.parse_args()
    if args.cmd == "collect":
        collect(args)
    else:
        render(args)


if __name__ == "__main__":
    sys.exit(main())
