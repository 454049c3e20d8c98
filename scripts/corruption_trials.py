#!/usr/bin/env python3
"""Corruption trials: damage a StreamCell data directory on purpose and check what the server
makes of it (issue 19).

What a run proves. For each trial, the real `streamcell server` binary is started on a fresh
data directory (free 127.0.0.1 ports for gRPC, pg and HTTP); a stream of 1-4 shards is created
with small segments (--segment-bytes 4 KiB - 64 KiB, so that every shard has sealed segments
with index files besides its active one); batches of known contents are appended with record
keys (each batch's exact bytes and acknowledged RecordIds are kept); and the server is stopped:
SIGTERM, kill -9 when idle, or kill -9 while an appender thread is still sending. Then ONE
damage is applied:

  seg-bitflip   one bit flipped at a random offset of a segment (in its header 15% of the time)
  seg-truncate  a segment cut to a random shorter length (the active, last one half the time)
  seg-zero      a random range (up to 4 KiB) of a segment overwritten with zeros
  seg-delete    a segment file removed (the last one half the time)
  idx-bitflip / idx-truncate / idx-zero   the same on a sealed segment's index file
  cat-bitflip / cat-truncate / cat-zero   the same on catalog.redb (mostly on its used bytes)

The kinds take turns in an order shuffled by the seed (40 trials apply each one 4 times); the
file, the offset and the length are random. The server is restarted on the damaged directory
and then:

  * the stream's settings and shards (ids, key ranges) must be what they were;
  * every shard is read from batchId 1 with shard readers (CreateShardReader/ReadShard, 100
    batches a read). A DATA_LOSS does not end the check: the same position is read again one
    batch at a time to find the batch that is damaged (batches served before it were refused
    needlessly: an "over-report", noted), then a new reader continues after the range the
    error names (or after that one batch), up to the shard's tail. An acknowledged batch
    refused with DATA_LOSS whose frame was still intact on disk (its exact bytes and a valid
    CRC32C, in the copy taken before the restart) is also noted as an over-report;
  * one new batch per shard is appended (its batchId must be above every acknowledged one:
    numbers are never reused) and read back; ListStreams and DescribeCluster must answer.

The outcome of a trial is one of:

  refused            the server exited non-zero at start, with its message on stderr (recorded)
  intact             every acknowledged record came back exactly (damage repaired or harmless)
  reported           some acknowledged records did not come back, and each of them lies in a
                     range a read refused with DATA_LOSS (or in a shard refused as UNAVAILABLE
                     because its log is corrupt, or, noted as "log only", in a range the
                     server's log names as DATA LOSS)
  FAIL silent loss   an acknowledged record is missing and nothing reported it (this includes
                     a stream that is no longer listed)
  FAIL wrong result  a batch came back with other bytes or RecordIds, twice, at a reused
                     batchId, or was never written; or the catalog changed silently
  FAIL crash         the server panicked (also at start: a panic is not a clear refusal), died,
                     or hung after start or while being read

The issue's "done means" is 0 silent losses, 0 wrong results, and every damage repaired,
refused at start with a clear message, or reported as DATA_LOSS: a run exits 1 if any trial
FAILs. Each trial is reproducible on its own from (seed, trial number), except for the exact
timing of the "kill9-load" stop:

    .venv/bin/python scripts/corruption_trials.py --bin target/debug/streamcell --trials 40 --seed 1
    .venv/bin/python scripts/corruption_trials.py --seed 1 --trial 36 --keep all   # one trial

A failed trial's directory is kept (server.log; data/ as the server left it; damaged-data/, a
copy of the data directory just before the restart). tests/python/test_corruption.py runs
`run_trials` under pytest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "python"))

import grpc  # noqa: E402
from google.protobuf import empty_pb2  # noqa: E402
from hstreamdb.utils import encode_records  # noqa: E402

from helpers import ServerProcess, pb, pb_grpc  # noqa: E402

# --------------------------------------------------------------------------------------
# Outcomes and damage kinds

INTACT = "intact"
REPORTED = "reported"
REFUSED = "refused"
FAIL_SILENT = "FAIL silent loss"
FAIL_WRONG = "FAIL wrong result"
FAIL_CRASH = "FAIL crash"
OUTCOMES = [INTACT, REPORTED, REFUSED, FAIL_SILENT, FAIL_WRONG, FAIL_CRASH]

DAMAGE_KINDS = [
    "seg-bitflip", "seg-truncate", "seg-zero", "seg-delete",
    "idx-bitflip", "idx-truncate", "idx-zero",
    "cat-bitflip", "cat-truncate", "cat-zero",
]
STOP_MODES = ["sigterm", "kill9", "kill9-load"]

RPC_TIMEOUT = 10.0          # seconds, every gRPC call
START_TIMEOUT = 20.0        # seconds, server start after damage
MAX_READERS_PER_SHARD = 400  # bound on reader (re)creations while stepping over damage
BATCHES_PER_READ = 100

DATA_LOSS_RANGE_RE = re.compile(r"batches (\d+)\.\.=(\d+) of shard (\d+)")
LOG_DATA_LOSS_RE = re.compile(r"DATA LOSS: acknowledged batches (\d+)\.\.=(\d+) of shard (\d+)")


def is_fail(outcome: str) -> bool:
    return outcome.startswith("FAIL")


# --------------------------------------------------------------------------------------
# What was written


@dataclass
class SentBatch:
    """One Append as sent: the exact BatchedRecord bytes, and its RecordIds if acknowledged."""
    shard: int
    tag: str                       # unique, also inside every payload
    records: pb.BatchedRecord
    rids: Optional[List[Tuple[int, int, int]]] = None  # (shardId, batchId, batchIndex)

    @property
    def seq(self) -> int:
        assert self.rids
        return self.rids[0][1]


@dataclass
class Written:
    """Everything appended in one trial, thread-safe (the load thread adds to it)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    batches: List[SentBatch] = field(default_factory=list)

    def add(self, b: SentBatch) -> None:
        with self.lock:
            self.batches.append(b)

    def acked(self) -> Dict[int, Dict[int, SentBatch]]:
        """{shard: {batchId: SentBatch}} of the acknowledged batches."""
        out: Dict[int, Dict[int, SentBatch]] = {}
        with self.lock:
            for b in self.batches:
                if b.rids:
                    out.setdefault(b.shard, {})[b.seq] = b
        return out

    def by_payload(self) -> Dict[bytes, SentBatch]:
        with self.lock:
            return {b.records.payload: b for b in self.batches}


@dataclass
class TrialResult:
    seed: int
    trial: int
    shards: int = 0
    segment_bytes: int = 0
    stop: str = ""
    damage_kind: str = ""
    damage: str = ""
    outcome: str = ""
    detail: str = ""
    acked_batches: int = 0
    acked_records: int = 0
    seconds: float = 0.0
    kept_dir: Optional[str] = None
    # Intact acknowledged batches refused with DATA_LOSS: by a multi-batch read because of
    # damage further on, or although their frames were whole on disk (not a FAIL by the
    # issue's definition: reported, but more than what was damaged).
    over_reports: List[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return is_fail(self.outcome)


# --------------------------------------------------------------------------------------
# Keys and payloads


def key_hash(key: str) -> int:
    return int.from_bytes(hashlib.md5(key.encode()).digest(), "big")


def keys_for_shards(shards: List[pb.Shard], per_shard: int = 3) -> Dict[int, List[str]]:
    """A few record keys per shard that the MD5 key mapping puts on that shard."""
    out: Dict[int, List[str]] = {s.shardId: [] for s in shards}
    i = 0
    while any(len(v) < per_shard for v in out.values()):
        k = f"key-{i}"
        h = key_hash(k)
        for s in shards:
            if int(s.startHashRangeKey) <= h <= int(s.endHashRangeKey) and len(out[s.shardId]) < per_shard:
                out[s.shardId].append(k)
        i += 1
        assert i < 100000
    return out


def make_batch(rng: random.Random, shard: int, tag: str, key: str, max_record: int) -> SentBatch:
    """A batch of 1-8 self-describing records (tag, index, then deterministic filler)."""
    payloads = []
    for i in range(rng.randint(1, 8)):
        head = f"{tag}-{i}-".encode()
        filler = hashlib.sha256(head).digest() * (max_record // 32 + 1)
        payloads.append(head + filler[: rng.randint(1, max_record)])
    comp = "gzip" if rng.random() < 0.25 else None
    return SentBatch(shard, tag, encode_records(payloads, key=key, compresstype=comp))


def append(stub, stream: str, b: SentBatch, timeout: float = RPC_TIMEOUT) -> None:
    resp = stub.Append(pb.AppendRequest(streamName=stream, shardId=b.shard, records=b.records), timeout=timeout)
    b.rids = [(r.shardId, r.batchId, r.batchIndex) for r in resp.recordIds]


# --------------------------------------------------------------------------------------
# Damage


def data_files(data_dir: Path) -> Dict[str, List[Path]]:
    shards = data_dir / "shards"
    return {
        "seg": sorted(shards.glob("*/*.log")),
        "idx": sorted(shards.glob("*/*.idx")),
        "cat": [p for p in [data_dir / "catalog.redb"] if p.exists()],
    }


def last_segments(segs: List[Path]) -> List[Path]:
    """The active (highest-base) segment of each shard."""
    last: Dict[Path, Path] = {}
    for p in segs:
        if p.parent not in last or p.name > last[p.parent].name:
            last[p.parent] = p
    return sorted(last.values())


def pick_offset(rng: random.Random, data: bytes, area: str) -> int:
    """A random offset. For the catalog (1 MiB, mostly free pages) usually a non-zero byte; for a
    segment sometimes one in its 32-byte header (else too rare to come up)."""
    if area == "seg" and rng.random() < 0.15:
        return rng.randrange(min(32, len(data)))
    if area == "cat" and rng.random() < 0.8:
        used = [i for i in range(0, len(data)) if data[i]]
        if used:
            return rng.choice(used)
    return rng.randrange(len(data))


def apply_damage(rng: random.Random, data_dir: Path, kind: str) -> str:
    """Apply one damage of `kind` (falls back to a segment damage if there is no target);
    returns its description."""
    files = data_files(data_dir)
    area, op = kind.split("-")
    targets = [p for p in files[area] if p.stat().st_size > 0]
    if not targets:
        area, targets = "seg", files["seg"]
        kind = f"seg-{op}" if op != "delete" else kind
    if area == "seg" and op in ("truncate", "delete") and rng.random() < 0.5:
        target = rng.choice(last_segments(targets))  # the active segment
    else:
        target = rng.choice(targets)
    rel = target.relative_to(data_dir)
    data = bytearray(target.read_bytes())
    n = len(data)
    if op == "delete":
        target.unlink()
        return f"{kind} {rel} (removed, {n} bytes)"
    if op == "truncate":
        new_len = rng.randrange(n)
        with open(target, "r+b") as f:
            f.truncate(new_len)
        return f"{kind} {rel} {n} -> {new_len} bytes"
    if op == "bitflip":
        at = pick_offset(rng, bytes(data), area)
        bit = rng.randrange(8)
        data[at] ^= 1 << bit
        target.write_bytes(bytes(data))
        return f"{kind} {rel} byte {at} bit {bit} (of {n} bytes)"
    if op == "zero":
        at = pick_offset(rng, bytes(data), area)
        length = min(n - at, rng.randint(1, 4096 if area != "idx" else 64))
        data[at:at + length] = bytes(length)
        target.write_bytes(bytes(data))
        return f"{kind} {rel} bytes {at}..{at + length} zeroed (of {n} bytes)"
    raise ValueError(kind)


# --------------------------------------------------------------------------------------
# The damaged files (docs/storage-format.md §3)

FRAME_HEADER = struct.Struct("<IIQqIHH")  # body_len, crc, seq, publish ms, records, flags, reserved


def _crc32c_table() -> List[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def frame_intact(segments: List[bytes], seq: int, payload: bytes) -> bool:
    """Whether a valid frame of batch `seq` holding exactly `payload` is in one of these
    segment files (as they were before the restart): its bytes are all still there."""
    for data in segments:
        at = data.find(payload)
        while at >= 0:
            start = at - FRAME_HEADER.size
            if start >= 0:
                body_len, crc, fseq, _, _, _, reserved = FRAME_HEADER.unpack_from(data, start)
                if (fseq == seq and reserved == 0 and body_len == 24 + len(payload)
                        and crc32c(data[start:start + 4] + data[start + 8:start + 8 + body_len]) == crc):
                    return True
            at = data.find(payload, at + 1)
    return False


# --------------------------------------------------------------------------------------
# Reading back


@dataclass
class ShardRead:
    """What reading one shard from its start returned."""
    batches: List[pb.ReceivedRecord] = field(default_factory=list)
    data_loss: Set[int] = field(default_factory=set)         # batchIds a read refused
    data_loss_msgs: List[str] = field(default_factory=list)
    unavailable: Optional[str] = None                          # shard not served, and why
    over_reports: List[str] = field(default_factory=list)      # intact batches refused
    anomalies: List[str] = field(default_factory=list)


def error_message(e: grpc.RpcError) -> str:
    details = e.details() or ""
    try:
        body = json.loads(details)
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return body["message"]
    except ValueError:
        pass
    return details


def read_shard(stub, stream: str, shard: int, upto: int) -> ShardRead:
    """Read `shard` from batchId 1 with shard readers, BATCHES_PER_READ batches per ReadShard.

    A DATA_LOSS on such a read may be about any batch it would have returned, so the same
    position is read again one batch per ReadShard: the batch that then fails is the damaged
    one, and the batches served before it were refused needlessly (recorded as an
    over-report). After a DATA_LOSS, a new reader continues after the range the error names
    (or after the one batch it failed on). After an empty read below `upto` (the highest
    batchId known to exist), the next batchId is tried the same way, so that a range skipped
    without an error shows up as missing, not as the end of the shard.
    """
    out = ShardRead()
    pos = 1
    per_read = BATCHES_PER_READ
    refused_from: Optional[int] = None  # where a multi-batch read failed, while narrowing down
    readers = 0
    while pos <= upto or readers == 0:
        if readers >= MAX_READERS_PER_SHARD:
            out.anomalies.append(f"gave up after {readers} readers at batchId {pos}")
            break
        readers += 1
        rid = f"ct_{shard}_{pos}_{random.getrandbits(32):08x}"
        try:
            stub.CreateShardReader(pb.CreateShardReaderRequest(
                streamName=stream, shardId=shard, readerId=rid, timeout=0,
                shardOffset=pb.ShardOffset(recordOffset=pb.RecordId(shardId=shard, batchId=pos, batchIndex=0))),
                timeout=RPC_TIMEOUT)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                out.unavailable = error_message(e)
                return out
            raise
        try:
            while True:
                try:
                    resp = stub.ReadShard(pb.ReadShardRequest(readerId=rid, maxRecords=per_read),
                                          timeout=RPC_TIMEOUT)
                except grpc.RpcError as e:
                    if e.code() == grpc.StatusCode.UNAVAILABLE:
                        out.unavailable = error_message(e)
                        return out
                    if e.code() != grpc.StatusCode.DATA_LOSS:
                        raise
                    if per_read > 1:
                        # Narrow it down: read from here again, one batch at a time.
                        per_read, refused_from = 1, pos
                        break
                    if refused_from is not None and refused_from < pos:
                        out.over_reports.append(
                            f"a read of {BATCHES_PER_READ} batches from batchId {refused_from} failed with "
                            f"DATA_LOSS, but batches {refused_from}..={pos - 1} read one at a time are intact")
                    per_read, refused_from = BATCHES_PER_READ, None
                    # Refused: note what, and continue after it with a new reader.
                    msg = error_message(e)
                    out.data_loss_msgs.append(msg)
                    m = DATA_LOSS_RANGE_RE.search(msg)
                    if m and int(m.group(3)) == shard and int(m.group(1)) <= pos <= int(m.group(2)):
                        out.data_loss.update(range(pos, int(m.group(2)) + 1))
                        pos = int(m.group(2)) + 1
                    else:
                        out.data_loss.add(pos)
                        pos += 1
                    break
                if not resp.receivedRecords:
                    if refused_from is not None:
                        out.anomalies.append(f"a read from batchId {refused_from} failed with DATA_LOSS, "
                                             f"but read one at a time the batches up to {pos - 1} are fine")
                        per_read, refused_from = BATCHES_PER_READ, None
                    if pos <= upto:
                        # Nothing served at `pos` and no error, below the tail: step over it
                        # (it is judged as missing) to see whether later batches exist.
                        out.anomalies.append(f"read at batchId {pos} returned nothing below the tail {upto}")
                        pos += 1
                    break
                for rr in resp.receivedRecords:
                    if not rr.recordIds:
                        out.anomalies.append(f"a batch without RecordIds after batchId {pos - 1}")
                        continue
                    seq = rr.recordIds[0].batchId
                    if seq < pos:
                        out.anomalies.append(f"batchId {seq} returned after {pos - 1} (not increasing)")
                    out.batches.append(rr)
                    pos = max(pos, seq + 1)
                if refused_from is not None and pos >= refused_from + BATCHES_PER_READ:
                    out.anomalies.append(f"a read from batchId {refused_from} failed with DATA_LOSS, but read "
                                         f"one at a time the next {BATCHES_PER_READ} batches are fine")
                    per_read, refused_from = BATCHES_PER_READ, None
        finally:
            try:
                stub.DeleteShardReader(pb.DeleteShardReaderRequest(readerId=rid), timeout=RPC_TIMEOUT)
            except grpc.RpcError:
                pass
    return out


def tail_batch_id(stub, stream: str, shard: int) -> Optional[int]:
    try:
        r = stub.GetTailRecordId(pb.GetTailRecordIdRequest(streamName=stream, shardId=shard), timeout=RPC_TIMEOUT)
        return r.tailRecordId.batchId
    except grpc.RpcError:
        return None


# --------------------------------------------------------------------------------------
# One trial


class Crash(Exception):
    """The server process died, panicked or hung."""


def server_log_problem(srv: ServerProcess) -> Optional[str]:
    """A crash sign in the current run's log: a panic."""
    log = srv.last_run_log()
    i = log.find("panicked at")
    if i >= 0:
        where, _, rest = log[i:].partition("\n")
        return f"{where.strip()} {rest.partition(chr(10))[0].strip()!r}"
    return None


def check_alive(srv: ServerProcess, when: str) -> None:
    if srv.proc is None or srv.proc.poll() is not None:
        rc = None if srv.proc is None else srv.proc.returncode
        raise Crash(f"server exited (code {rc}) {when}: {last_lines(srv.last_run_log())}")
    problem = server_log_problem(srv)
    if problem:
        raise Crash(f"{problem} ({when})")


def last_lines(text: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def refusal_message(log: str) -> str:
    """The server's own final error line ("streamcell: ...") or its last lines."""
    for ln in reversed(log.strip().splitlines()):
        if ln.startswith("streamcell:"):
            return ln.strip()
    return last_lines(log)


def workload(rng: random.Random, srv: ServerProcess, stream: str, nshards: int, seg_bytes: int,
             written: Written) -> List[pb.Shard]:
    stub = srv.stub()
    stub.CreateStream(pb.Stream(streamName=stream, replicationFactor=1, shardCount=nshards), timeout=RPC_TIMEOUT)
    shards = sorted(stub.ListShards(pb.ListShardsRequest(streamName=stream), timeout=RPC_TIMEOUT).shards,
                    key=lambda s: s.shardId)
    keys = keys_for_shards(shards)
    max_record = max(64, min(1500, seg_bytes // 40))
    target = seg_bytes * rng.uniform(2.3, 4.5)  # bytes per shard: 2-4 sealed segments and an active one
    stored = {s.shardId: 0 for s in shards}
    n = 0
    while min(stored.values()) < target:
        shard = rng.choice([s for s, v in stored.items() if v < target])
        b = make_batch(rng, shard, f"b{n}", rng.choice(keys[shard]), max_record)
        n += 1
        written.add(b)
        append(stub, stream, b)
        stored[shard] += len(b.records.payload) + 32
    return shards


def load_thread(srv: ServerProcess, stream: str, shards: List[pb.Shard], seed: int, written: Written,
                stop: threading.Event) -> threading.Thread:
    """Appends until stopped or the server dies (the kill -9 hits it in mid-flight)."""
    rng = random.Random(seed)
    keys = keys_for_shards(shards)

    def run():
        ch = grpc.insecure_channel(srv.target)
        stub = pb_grpc.HStreamApiStub(ch)
        n = 0
        try:
            while not stop.is_set():
                shard = rng.choice(shards).shardId
                b = make_batch(rng, shard, f"l{n}", rng.choice(keys[shard]), 400)
                n += 1
                written.add(b)
                try:
                    append(stub, stream, b, timeout=5)
                except grpc.RpcError:
                    return
        finally:
            ch.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def stream_layout(stub, stream: str) -> tuple:
    """What the catalog says about the stream: its settings and its shards' key ranges."""
    st = stub.GetStream(pb.GetStreamRequest(name=stream), timeout=RPC_TIMEOUT).stream
    shards = stub.ListShards(pb.ListShardsRequest(streamName=stream), timeout=RPC_TIMEOUT).shards
    return ((st.replicationFactor, st.backlogDuration, st.shardCount),
            sorted((s.shardId, s.startHashRangeKey, s.endHashRangeKey) for s in shards))


def classify(srv: ServerProcess, stream: str, layout: tuple, written: Written,
             damaged_dir: Path) -> Tuple[str, str, List[str]]:
    """Restarted server, damaged data: read everything back and judge it. Returns the outcome,
    its detail, and the over-reports (intact acknowledged batches that a read refused).
    `damaged_dir` is a copy of the data directory as it was just before the restart."""
    stub = srv.stub()
    names = [s.streamName for s in stub.ListStreams(pb.ListStreamsRequest(), timeout=RPC_TIMEOUT).streams]
    acked = written.acked()
    n_acked = sum(len(v) for v in acked.values())
    if stream not in names:
        return (FAIL_SILENT, f"stream {stream} no longer listed (ListStreams: {names}); "
                             f"{n_acked} acked batches gone", [])
    now = stream_layout(stub, stream)
    if now != layout:
        return FAIL_WRONG, f"the catalog changed silently: stream/shards {layout} -> {now}", []
    shard_ids = [s[0] for s in layout[1]]
    over_reports: List[str] = []

    by_payload = written.by_payload()
    wrong: List[str] = []
    silent: List[str] = []
    reported: List[str] = []
    notes: List[str] = []
    log_loss = [(int(a), int(b), int(s)) for a, b, s in LOG_DATA_LOSS_RE.findall(srv.last_run_log())]
    seen_payloads: Dict[bytes, Tuple[int, int]] = {}
    highest: Dict[int, int] = {}  # per shard: the highest batchId acknowledged or returned
    for shard in shard_ids:
        mine = acked.get(shard, {})
        tail = tail_batch_id(stub, stream, shard)
        upto = max([tail or 0, *mine.keys()])
        r = read_shard(stub, stream, shard, upto)
        check_alive(srv, f"while reading shard {shard}")
        notes.extend(f"shard {shard}: {a}" for a in r.anomalies)
        over_reports.extend(f"shard {shard}: {a}" for a in r.over_reports)
        returned: Dict[int, pb.ReceivedRecord] = {}
        for rr in r.batches:
            seq = rr.recordIds[0].batchId
            rids = [(x.shardId, x.batchId, x.batchIndex) for x in rr.recordIds]
            payload = rr.record.payload
            if seq in returned:
                wrong.append(f"shard {shard} batch {seq} returned twice")
                continue
            returned[seq] = rr
            sent = by_payload.get(payload)
            if sent is None:
                wrong.append(f"shard {shard} batch {seq}: bytes never written ({len(payload)} bytes)")
                continue
            if payload in seen_payloads:
                wrong.append(f"batch {sent.tag} stored twice: {seen_payloads[payload]} and {(shard, seq)}")
                continue
            seen_payloads[payload] = (shard, seq)
            if sent.shard != shard:
                wrong.append(f"batch {sent.tag} of shard {sent.shard} returned by shard {shard}")
            elif sent.rids is not None and sent.rids != rids:
                wrong.append(f"batch {sent.tag} acked at {sent.rids[0]} but returned at {rids[0]}")
            elif sent.rids is None and (seq in mine or rids != [(shard, seq, i) for i in range(len(rids))]):
                wrong.append(f"unacknowledged batch {sent.tag} returned at {rids[0]} (reused or bad ids)")
            elif rr.record.compressionType != sent.records.compressionType or \
                    len(rids) != sent.records.batchSize:
                wrong.append(f"batch {sent.tag} at {rids[0]}: compression or record count differ")
        highest[shard] = max([0, *mine.keys(), *returned.keys()])
        missing = sorted(seq for seq in mine if seq not in returned)
        segs = [p.read_bytes() for p in sorted((damaged_dir / "shards" / str(shard)).glob("*.log"))]
        if r.unavailable is not None:
            if missing:
                whole = [seq for seq in missing[:500] if frame_intact(segs, seq, mine[seq].records.payload)]
                if whole:
                    over_reports.append(f"shard {shard} not served at all: acked batches {compact(whole)} "
                                        f"unreadable, but their frames were intact on disk")
                if "corrupt" in r.unavailable:
                    reported.append(f"shard {shard} not served (UNAVAILABLE: {r.unavailable[:160]}); "
                                    f"{len(missing)} acked batches unreadable")
                else:
                    silent.append(f"shard {shard} UNAVAILABLE without naming damage: {r.unavailable[:160]}")
            continue
        by_error = [s for s in missing if s in r.data_loss]
        by_log = [s for s in missing if s not in r.data_loss
                  and any(a <= s <= b and sh == shard for a, b, sh in log_loss)]
        unexplained = [s for s in missing if s not in r.data_loss and s not in by_log]
        if by_error:
            whole = [seq for seq in by_error[:500] if frame_intact(segs, seq, mine[seq].records.payload)]
            if whole:
                over_reports.append(f"shard {shard}: acked batches {compact(whole)} refused with DATA_LOSS, "
                                    f"but their frames were intact on disk")
            reported.append(f"shard {shard}: {len(by_error)} acked batches refused with DATA_LOSS "
                            f"({compact(by_error)}; {r.data_loss_msgs[0][-90:]!r})")
        if by_log:
            reported.append(f"shard {shard}: {len(by_log)} acked batches named DATA LOSS in the log only "
                            f"({compact(by_log)})")
        if unexplained:
            silent.append(f"shard {shard}: acked batches {compact(unexplained)} missing, no DATA_LOSS "
                          f"(data_loss seen for {compact(sorted(r.data_loss)) or 'nothing'})")
        if r.data_loss and not missing:
            notes.append(f"shard {shard}: DATA_LOSS for {compact(sorted(r.data_loss))} (no acked batch there)")

    # The server goes on: new appends get fresh batchIds and read back; ListStreams answers.
    for shard in shard_ids:
        b = SentBatch(shard, f"after-{shard}", encode_records([f"after-{shard}".encode()], key="after"))
        try:
            append(stub, stream, b)
        except grpc.RpcError as e:
            notes.append(f"shard {shard}: append after damage refused: {e.code().name}")
            continue
        if b.seq <= highest.get(shard, 0):
            wrong.append(f"shard {shard}: new append got batchId {b.seq}, not above {highest[shard]} (reused)")
            continue
        back = read_from(stub, stream, shard, b.seq)
        if [x.record.payload for x in back[:1]] != [b.records.payload]:
            wrong.append(f"shard {shard}: batch appended after damage at {b.seq} did not read back")
    stub.ListStreams(pb.ListStreamsRequest(), timeout=RPC_TIMEOUT)
    stub.DescribeCluster(empty_pb2.Empty(), timeout=RPC_TIMEOUT)
    check_alive(srv, "after the checks")

    note = ("; notes: " + "; ".join(notes)) if notes else ""
    if over_reports:
        note += "; OVER-REPORT: " + "; ".join(over_reports)
    if wrong:
        return FAIL_WRONG, "; ".join(wrong[:4]) + note, over_reports
    if silent:
        return (FAIL_SILENT, "; ".join(silent) + ("; " + "; ".join(reported) if reported else "") + note,
                over_reports)
    if reported:
        return REPORTED, "; ".join(reported) + note, over_reports
    return INTACT, f"all {n_acked} acked batches read back exactly" + note, over_reports


def read_from(stub, stream: str, shard: int, seq: int) -> List[pb.ReceivedRecord]:
    rid = f"ct_after_{shard}_{random.getrandbits(32):08x}"
    stub.CreateShardReader(pb.CreateShardReaderRequest(
        streamName=stream, shardId=shard, readerId=rid, timeout=0,
        shardOffset=pb.ShardOffset(recordOffset=pb.RecordId(shardId=shard, batchId=seq, batchIndex=0))),
        timeout=RPC_TIMEOUT)
    try:
        return list(stub.ReadShard(pb.ReadShardRequest(readerId=rid, maxRecords=10), timeout=RPC_TIMEOUT)
                    .receivedRecords)
    finally:
        stub.DeleteShardReader(pb.DeleteShardReaderRequest(readerId=rid), timeout=RPC_TIMEOUT)


def compact(seqs: List[int]) -> str:
    """[1,2,3,7] -> '1..=3,7'."""
    parts, i = [], 0
    while i < len(seqs):
        j = i
        while j + 1 < len(seqs) and seqs[j + 1] == seqs[j] + 1:
            j += 1
        parts.append(f"{seqs[i]}..={seqs[j]}" if j > i else str(seqs[i]))
        i = j + 1
    return ",".join(parts)


def trial_rng(seed: int, trial: int) -> random.Random:
    return random.Random(f"corruption-{seed}-{trial}")


def trial_damage_kind(seed: int, trial: int) -> str:
    """The damage kinds in an order shuffled by the seed, trial after trial: every kind comes
    up equally often (4 times in 40 trials; each at least once in 10)."""
    order = random.Random(f"corruption-kinds-{seed}").sample(DAMAGE_KINDS, len(DAMAGE_KINDS))
    return order[trial % len(order)]


def run_trial(binary: Path, seed: int, trial: int, workdir: Path, keep: str = "failed",
              damage_kind: Optional[str] = None) -> TrialResult:
    """One trial in `workdir`/seed<s>-trial<n>. Its directory (server.log, data/ as the server
    left it, damaged-data/ as it was just before the restart) is kept if `keep` is "all", or
    "failed" and the trial FAILed; otherwise removed."""
    rng = trial_rng(seed, trial)
    res = TrialResult(seed=seed, trial=trial)
    res.shards = rng.randint(1, 4)
    res.segment_bytes = rng.choice([4096, 8192, 16384, 32768, 65536])
    res.stop = rng.choice(STOP_MODES)
    res.damage_kind = damage_kind or trial_damage_kind(seed, trial)
    started = time.monotonic()
    tdir = workdir / f"seed{seed}-trial{trial}"
    shutil.rmtree(tdir, ignore_errors=True)
    data_dir = tdir / "data"
    data_dir.mkdir(parents=True)
    srv = ServerProcess(binary, data_dir, tdir / "server.log", ["--segment-bytes", str(res.segment_bytes)])
    stream = f"ct_{seed}_{trial}"
    written = Written()
    try:
        # 1. Write, then stop.
        srv.start(START_TIMEOUT)
        shards = workload(rng, srv, stream, res.shards, res.segment_bytes, written)
        layout = stream_layout(srv.stub(), stream)
        if res.stop == "sigterm":
            srv.stop()
        elif res.stop == "kill9":
            srv.kill()
        else:
            stop = threading.Event()
            t = load_thread(srv, stream, shards, rng.getrandbits(32), written, stop)
            time.sleep(rng.uniform(0.02, 0.3))
            srv.kill()
            stop.set()
            t.join(10)
        acked = written.acked()
        res.acked_batches = sum(len(v) for v in acked.values())
        res.acked_records = sum(len(b.rids) for v in acked.values() for b in v.values())

        # 2. Damage.
        res.damage = apply_damage(rng, data_dir, res.damage_kind)
        # A copy of the damaged directory as it was before the restart (kept with a failure).
        shutil.copytree(data_dir, tdir / "damaged-data", ignore=shutil.ignore_patterns("LOCK"))

        # 3. Restart and judge.
        srv.spawn()
        try:
            srv.wait_ready(START_TIMEOUT)
        except AssertionError as e:
            rc = srv.proc.poll()
            if rc is None:
                raise Crash(f"server did not become ready within {START_TIMEOUT}s: {str(e)[:200]}")
            log = srv.last_run_log()
            problem = server_log_problem(srv)
            if rc < 0 or problem:
                # A panic is not a clear refusal, whatever the process prints after it.
                raise Crash(f"server {'panicked' if problem else 'was killed'} at start (exit {rc}): "
                            f"{problem or last_lines(log)}; last line: {refusal_message(log)}")
            msg = refusal_message(log)
            if not msg:
                raise Crash(f"server exited with code {rc} at start without a message")
            res.outcome, res.detail = REFUSED, f"exit {rc}: {msg}"
            return res
        try:
            res.outcome, res.detail, res.over_reports = classify(srv, stream, layout, written,
                                                                 tdir / "damaged-data")
        except grpc.RpcError as e:
            check_alive(srv, f"after a failed call ({e.code().name}: {error_message(e)[:160]})")
            raise Crash(f"unexpected gRPC error {e.code().name}: {error_message(e)[:300]}")
    except Crash as e:
        res.outcome, res.detail = FAIL_CRASH, str(e)
    finally:
        srv.teardown()
        res.seconds = time.monotonic() - started
        if keep == "all" or (keep == "failed" and res.failed):
            res.kept_dir = str(tdir)
        else:
            shutil.rmtree(tdir, ignore_errors=True)
    return res


def run_trials(binary: Path, trials: int, seed: int, workdir: Optional[Path] = None,
               only: Optional[List[int]] = None, damage_kind: Optional[str] = None, keep: str = "failed",
               progress: Optional[Callable[[TrialResult], None]] = None) -> List[TrialResult]:
    """Run trials 0..trials-1 (or only those listed) of `seed`. Trial directories go under
    `workdir` (default: a new temporary directory), kept as `keep` says (see run_trial)."""
    binary = Path(binary).resolve()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise FileNotFoundError(f"streamcell binary not found at {binary}")
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="streamcell-corruption-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for t in (only if only is not None else range(trials)):
        r = run_trial(binary, seed, t, workdir, keep=keep, damage_kind=damage_kind)
        results.append(r)
        if progress:
            progress(r)
    if not any(r.kept_dir for r in results):
        shutil.rmtree(workdir, ignore_errors=True)
    return results


# --------------------------------------------------------------------------------------
# Report


def format_row(r: TrialResult) -> str:
    setup = f"{r.shards}sh {r.segment_bytes // 1024}K {r.stop}"
    line = (f"{r.trial:>3} {setup:<20} {r.acked_batches:>4}b/{r.acked_records:<5} {r.damage:<70.70} "
            f"{r.outcome:<17} {r.detail}")
    if r.kept_dir:
        line += f"  [data kept: {r.kept_dir}]"
    return line


def summary(results: List[TrialResult]) -> str:
    lines = []
    counts = {o: sum(1 for r in results if r.outcome == o) for o in OUTCOMES}
    lines.append("outcomes: " + ", ".join(f"{o}: {n}" for o, n in counts.items()))
    for kind in DAMAGE_KINDS:
        rs = [r for r in results if r.damage_kind == kind]
        if rs:
            c = {}
            for r in rs:
                c[r.outcome] = c.get(r.outcome, 0) + 1
            lines.append(f"  {kind:<13} " + ", ".join(f"{o} {n}" for o, n in sorted(c.items())))
    failed = [r for r in results if r.failed]
    over = [r for r in results if r.over_reports]
    lines.append(f"{len(results)} trials, {len(failed)} FAIL, {len(over)} with DATA_LOSS over-reports, "
                 f"{sum(r.seconds for r in results):.1f}s")
    for r in failed:
        lines.append(f"  reproduce: --seed {r.seed} --trial {r.trial} --damage {r.damage_kind}   "
                     f"({r.damage}: {r.outcome})")
    for r in over:
        lines.append(f"  over-report: --seed {r.seed} --trial {r.trial} --damage {r.damage_kind}   ({r.damage}: {'; '.join(r.over_reports)})")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(REPO_ROOT / "target" / "debug" / "streamcell"),
                    help="the streamcell binary (default: target/debug/streamcell)")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--trial", type=int, action="append",
                    help="run only this trial number of the seed (repeatable): a reproducer")
    ap.add_argument("--damage", choices=DAMAGE_KINDS, help="force this damage kind in every trial")
    ap.add_argument("--workdir", help="where trial directories go (default: a new temporary directory)")
    ap.add_argument("--keep", choices=["failed", "all", "none"], default="failed",
                    help="which trial directories to keep (server log, data dir, damaged copy)")
    args = ap.parse_args(argv)

    print(f"corruption trials: seed {args.seed}, binary {args.bin}")
    print(f"{'#':>3} {'setup':<20} {'acked':<11} {'damage':<70} {'outcome':<17} detail", flush=True)
    results = run_trials(Path(args.bin), args.trials, args.seed,
                         Path(args.workdir) if args.workdir else None, only=args.trial,
                         damage_kind=args.damage, keep=args.keep, progress=lambda r: print(format_row(r), flush=True))
    print()
    print(summary(results))
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
