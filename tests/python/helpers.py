"""Helpers for the StreamCell end-to-end tests (imported by conftest.py and the tests).

Every test talks to the real `streamcell` binary over gRPC, either through the official
Python client `hstreamdb==0.5.0` or through raw stubs generated from the `hstreamdb-api`
package (module `HStream.Server.HStreamApi_pb2` / `_pb2_grpc`).

The binary is `$STREAMCELL_BIN` if set, else `$CARGO_TARGET_DIR/debug/streamcell`, else
`<repo>/target/debug/streamcell`. `scripts/test.sh` builds it first.

No pytest plugins are used: async code runs through `run()` (asyncio.run + a timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Iterable, List, Optional

import grpc
from google.protobuf import empty_pb2

import hstreamdb
from hstreamdb.utils import decode_records, encode_records
from HStream.Server import HStreamApi_pb2 as pb
from HStream.Server import HStreamApi_pb2_grpc as pb_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
# Default upper bound for one `run(...)` of a test coroutine.
RUN_TIMEOUT = 60.0
# Short reader timeout (ms): a ReadShard with no data available returns after this.
READER_TIMEOUT_MS = 200
MAX_KEY = 2**128 - 1


# --------------------------------------------------------------------------------------
# Locating the binary, picking ports


def server_binary() -> Path:
    env = os.environ.get("STREAMCELL_BIN")
    if env:
        return Path(env).resolve()
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        tdir = Path(target)
        if not tdir.is_absolute():
            tdir = REPO_ROOT / tdir
    else:
        tdir = REPO_ROOT / "target"
    return tdir / "debug" / "streamcell"


def free_ports(n: int) -> List[int]:
    """n distinct free TCP ports on 127.0.0.1 (bound to port 0 together, then closed)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------------------
# The server process


def _aio_ready(target: str, timeout: float):
    """DescribeCluster over a fresh grpc.aio channel with wait_for_ready; None or the error."""

    async def probe():
        async with grpc.aio.insecure_channel(target) as ch:
            await pb_grpc.HStreamApiStub(ch).DescribeCluster(empty_pb2.Empty(), timeout=timeout,
                                                             wait_for_ready=True)

    try:
        asyncio.run(probe())
        return None
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.UNAUTHENTICATED:
            return None  # a locked server answered: it is up
        return f"{e.code()} {e.details()}"


class ServerProcess:
    """One `streamcell server` process. Restartable on the same data dir and ports."""

    def __init__(self, binary: Path, data_dir: Path, log_path: Path, extra_args: Iterable[str] = ()):
        self.binary = binary
        self.host = HOST
        self.port, self.pg_port, self.http_port = free_ports(3)
        self.data_dir = data_dir
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0
        self._run_log_offset = 0
        self._channels: List[grpc.Channel] = []

    # -- process control ---------------------------------------------------------------

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def argv(self) -> List[str]:
        return [
            str(self.binary),
            "server",
            "--data-dir", str(self.data_dir),
            "--bind", self.host,
            "--port", str(self.port),
            "--pg-port", str(self.pg_port),
            "--http-port", str(self.http_port),
            *self.extra_args,
        ]

    def spawn(self) -> subprocess.Popen:
        """Start the process without waiting for readiness."""
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.argv())}\n".encode())
            log.flush()
            self._run_log_offset = log.tell()
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=str(self.data_dir.parent),
                env={**os.environ, "RUST_BACKTRACE": "1"},
            )
        return self.proc

    def start(self, timeout: float = STARTUP_TIMEOUT) -> "ServerProcess":
        self.spawn()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Poll (bounded) until the port accepts and DescribeCluster answers."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"streamcell exited with code {self.proc.returncode} during startup\n"
                    + self.log_tail()
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"streamcell did not accept connections on {self.target} within {timeout}s\n"
                    + self.log_tail()
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.05)
        # The port is open: now the gRPC service must answer.
        remaining = max(1.0, deadline - time.monotonic())
        with grpc.insecure_channel(self.target) as ch:
            stub = pb_grpc.HStreamApiStub(ch)
            try:
                stub.DescribeCluster(empty_pb2.Empty(), timeout=remaining, wait_for_ready=True)
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                    return  # a locked server answered: it is up (callers bring credentials)
                raise AssertionError(
                    f"DescribeCluster failed after startup: {e.code()} {e.details()}\n" + self.log_tail()
                ) from e
        # Same through grpc.aio, which the official client uses. gRPC keeps per-address
        # reconnect backoff in a process-wide subchannel pool: after the previous process died,
        # a new aio channel can fail fast with UNAVAILABLE ("Connection refused") for ~1 s
        # although the new server is up. wait_for_ready rides out that backoff here, once.
        remaining = max(1.0, deadline - time.monotonic())
        err = []
        t = threading.Thread(target=lambda: err.append(_aio_ready(self.target, remaining)))
        t.start()
        t.join()
        if err[0] is not None:
            raise AssertionError(f"DescribeCluster via grpc.aio failed after startup: {err[0]}\n" + self.log_tail())

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int, timeout: float = STOP_TIMEOUT) -> int:
        """Send `sig` and wait for exit; returns the exit code (negative = killed by signal)."""
        assert self.proc is not None, "server never started"
        self.close_channels()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"streamcell did not exit within {timeout}s of signal {sig}\n" + self.log_tail()
                )
        return self.proc.returncode

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM and wait; the contract is a clean shutdown with exit code 0."""
        rc = self.signal(signal.SIGTERM, timeout)
        assert rc == 0, f"streamcell exited with {rc} after SIGTERM (expected 0)\n" + self.log_tail()

    def kill(self) -> None:
        """SIGKILL (crash) and reap."""
        self.signal(signal.SIGKILL)

    def restart(self, timeout: float = STARTUP_TIMEOUT) -> "ServerProcess":
        """Clean stop if running, then start again on the same data dir and ports."""
        if self.running:
            self.stop()
        return self.start(timeout)

    def teardown(self) -> None:
        self.close_channels()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    # -- logs ----------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def last_run_log(self) -> str:
        """What the most recent process wrote (without the header line naming argv)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._run_log_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, max_chars: int = 6000) -> str:
        text = self.log_text()
        if len(text) > max_chars:
            text = "...\n" + text[-max_chars:]
        return f"--- streamcell stderr ({self.log_path}) ---\n{text}"

    # -- raw gRPC ------------------------------------------------------------------------

    def channel(self) -> grpc.Channel:
        ch = grpc.insecure_channel(self.target)
        self._channels.append(ch)
        return ch

    def stub(self) -> pb_grpc.HStreamApiStub:
        """A synchronous raw stub for `hstream.server.HStreamApi` (closed at teardown/stop)."""
        return pb_grpc.HStreamApiStub(self.channel())

    def close_channels(self) -> None:
        for ch in self._channels:
            ch.close()
        self._channels.clear()


# --------------------------------------------------------------------------------------
# Async helpers


def run(coro, timeout: float = RUN_TIMEOUT):
    """Run a coroutine to completion in a fresh event loop, bounded by `timeout` seconds."""

    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def connect(srv: ServerProcess):
    """`async with connect(server) as client:` an `hstreamdb.insecure_client`, closed after."""
    client = await hstreamdb.insecure_client(host=srv.host, port=srv.port)
    try:
        yield client
    finally:
        await client.__aexit__(None, None, None)


def uid(prefix: str = "s") -> str:
    """A unique valid object name (letter first, then [A-Za-z0-9_-])."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------------------
# Offsets, shards


def earliest() -> pb.ShardOffset:
    return pb.ShardOffset(specialOffset=pb.SpecialOffset.EARLIEST)


def latest() -> pb.ShardOffset:
    return pb.ShardOffset(specialOffset=pb.SpecialOffset.LATEST)


def record_offset(rid) -> pb.ShardOffset:
    """ShardOffset at a RecordId (hstreamdb.RecordId namedtuple or pb.RecordId)."""
    if isinstance(rid, pb.RecordId):
        return pb.ShardOffset(recordOffset=rid)
    return pb.ShardOffset(
        recordOffset=pb.RecordId(shardId=rid.shard_id, batchId=rid.batch_id, batchIndex=rid.batch_index)
    )


def timestamp_offset(ms: int, strict: bool = True) -> pb.ShardOffset:
    return pb.ShardOffset(timestampOffset=pb.TimestampOffset(timestampInMs=ms, strictAccuracy=strict))


def expected_ranges(n: int):
    """HStream's devideKeySpace(n): [(start, end)] over [0, 2^128-1] (reference §1.6)."""
    cnt = MAX_KEY // n
    ranges = [(i * cnt, i * cnt + cnt - 1) for i in range(n)]
    ranges[-1] = (ranges[-1][0], MAX_KEY)
    return ranges


def key_hash(key: Optional[str]) -> int:
    return int.from_bytes(hashlib.md5((key or "").encode("utf-8")).digest(), "big")


def shard_for_key(shards, key: Optional[str]) -> int:
    """Independent re-implementation of the client's key -> shard mapping (MD5, big-endian)."""
    h = key_hash(key)
    hits = [s.id for s in shards if s.start <= h <= s.end]
    assert len(hits) == 1, f"key {key!r} (hash {h}) is covered by {len(hits)} shards: {shards}"
    return hits[0]


# --------------------------------------------------------------------------------------
# Reading everything


async def read_all(client, stream: str, shard_id: int, offset=None, batches_per_read: int = 100,
                   max_reads: int = 100000):
    """All records of one shard via the official client (create_reader/read_reader) until a
    read returns nothing. Returns a list of hstreamdb.Record."""
    rid = uid("reader")
    await client.create_reader(stream, rid, offset if offset is not None else earliest(),
                               READER_TIMEOUT_MS, shard_id=shard_id)
    out = []
    try:
        for _ in range(max_reads):
            got = list(await client.read_reader(rid, batches_per_read))
            if not got:
                return out
            out.extend(got)
        raise AssertionError(f"read_all: still reading after {max_reads} reads")
    finally:
        await client.delete_reader(rid)


def read_all_raw(stub, stream: str, shard_id: int, offset=None, batches_per_read: int = 100,
                 max_reads: int = 100000) -> List[pb.ReceivedRecord]:
    """All batches (pb.ReceivedRecord) of one shard via raw CreateShardReader/ReadShard."""
    rid = uid("rawreader")
    stub.CreateShardReader(pb.CreateShardReaderRequest(
        streamName=stream, shardId=shard_id, shardOffset=offset if offset is not None else earliest(),
        readerId=rid, timeout=READER_TIMEOUT_MS), timeout=30)
    out: List[pb.ReceivedRecord] = []
    try:
        for _ in range(max_reads):
            resp = stub.ReadShard(pb.ReadShardRequest(readerId=rid, maxRecords=batches_per_read), timeout=30)
            if not resp.receivedRecords:
                return out
            out.extend(resp.receivedRecords)
        raise AssertionError(f"read_all_raw: still reading after {max_reads} reads")
    finally:
        stub.DeleteShardReader(pb.DeleteShardReaderRequest(readerId=rid), timeout=30)


# --------------------------------------------------------------------------------------
# Errors


def assert_rpc_error(err: grpc.RpcError, code: grpc.StatusCode, error_code: Optional[int] = None):
    """Check a gRPC error's status code and the JSON body {"error": int, "message": str}.

    Works for both sync `grpc.RpcError` and `grpc.aio.AioRpcError` (both have code()/details()).
    """
    assert err.code() == code, f"expected {code}, got {err.code()}: {err.details()!r}"
    details = err.details()
    try:
        body = json.loads(details)
    except (TypeError, ValueError):
        raise AssertionError(f"status message is not JSON: {details!r}")
    assert isinstance(body, dict), f"status message is not a JSON object: {details!r}"
    assert isinstance(body.get("error"), int), f"status JSON has no integer 'error': {details!r}"
    assert isinstance(body.get("message"), str), f"status JSON has no string 'message': {details!r}"
    if error_code is not None:
        assert body["error"] == error_code, f"expected ErrorCode {error_code}, got {body['error']}: {details!r}"
    return body


def rpc_error(fn, *args, **kwargs) -> grpc.RpcError:
    """Call a sync (raw stub) function that must fail with a gRPC error; return the error."""
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as e:
        return e
    raise AssertionError(f"{getattr(fn, '__name__', fn)} succeeded, expected a gRPC error")


async def arpc_error(awaitable) -> grpc.aio.AioRpcError:
    """Await something that must fail with a gRPC error (the official client raises
    grpc.aio.AioRpcError unchanged); return the error."""
    try:
        result = await awaitable
    except grpc.aio.AioRpcError as e:
        return e
    raise AssertionError(f"call succeeded with {result!r}, expected a gRPC error")


# --------------------------------------------------------------------------------------
# Raw append / decode


def shards_of(stub, stream: str) -> List[pb.Shard]:
    """ListShards via a raw stub, sorted by start key."""
    shards = stub.ListShards(pb.ListShardsRequest(streamName=stream), timeout=30).shards
    return sorted(shards, key=lambda s: int(s.startHashRangeKey))


def create_stream_raw(stub, stream: str, shard_count: int = 1) -> List[pb.Shard]:
    stub.CreateStream(pb.Stream(streamName=stream, replicationFactor=1, shardCount=shard_count), timeout=30)
    return shards_of(stub, stream)


def raw_append(stub, stream: str, shard_id: int, payloads, key: Optional[str] = None,
               compresstype: Optional[str] = None) -> List[pb.RecordId]:
    """Append one batch encoded exactly as the official client encodes it."""
    resp = stub.Append(pb.AppendRequest(
        streamName=stream, shardId=shard_id,
        records=encode_records(payloads, key=key, compresstype=compresstype)), timeout=30)
    assert resp.shardId == shard_id
    return list(resp.recordIds)


def decode(received: Iterable[pb.ReceivedRecord]):
    """Decode raw ReceivedRecords with the official client's decoder -> list of hstreamdb.Record."""
    out = []
    for r in received:
        out.extend(decode_records(r))
    return out


def rid_tuple(rid) -> tuple:
    """(shardId, batchId, batchIndex) of a pb.RecordId or an hstreamdb.RecordId."""
    if isinstance(rid, pb.RecordId):
        return (rid.shardId, rid.batchId, rid.batchIndex)
    return (rid.shard_id, rid.batch_id, rid.batch_index)


# --------------------------------------------------------------------------------------
# Polling


def wait_until_sync(pred, timeout: float, what, interval: float = 0.02):
    """Poll `pred()` until it returns a truthy value (returned) or fail after `timeout` s.
    `what` is a string or a callable giving the failure message (evaluated on failure)."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what() if callable(what) else what}")
        time.sleep(interval)


async def wait_until(pred, timeout: float, what, interval: float = 0.02):
    """Async `wait_until_sync`: `pred` may be a plain or an async function."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what() if callable(what) else what}")
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------------------
# Subscriptions and consumers (official client: client.new_consumer + consumer.start)
#
# hstreamdb 0.5.0's Consumer: `processing_func(ack, stop, records)` is awaited once per
# StreamingFetchResponse (one batch, decoded lazily: records with falsy payloads are
# skipped), strictly one at a time; `await ack(ids)` only queues a StreamingFetchRequest
# (the request iterator sends it later); `stop()` is `call.cancel()`, which drops acks still
# queued. `start()` returns normally when the call is cancelled and raises
# grpc.aio.AioRpcError when the server ends the stream with an error.


def special_offset(name: str) -> int:
    """pb.SpecialOffset value: "EARLIEST" or "LATEST"."""
    return pb.SpecialOffset.Value(name.upper())


def create_subscription_raw(stub, sub_id: str, stream: str, ack_timeout: int = 600, max_unacks: int = 10000,
                            offset: str = "EARLIEST") -> pb.Subscription:
    """CreateSubscription via a raw stub; returns the server's Subscription (with creationTime)."""
    return stub.CreateSubscription(pb.Subscription(
        subscriptionId=sub_id, streamName=stream, ackTimeoutSeconds=ack_timeout,
        maxUnackedRecords=max_unacks, offset=special_offset(offset)), timeout=30)


def subscription_offsets(stub, sub_id: str) -> dict:
    """GetSubscription offsets as {shardId: batchId} (first batchId not fully acked)."""
    resp = stub.GetSubscription(pb.GetSubscriptionRequest(id=sub_id), timeout=30)
    return {o.shardId: o.batchId for o in resp.offsets}


def consumer_names(stub, sub_id: str) -> List[str]:
    """ListConsumers names, sorted."""
    resp = stub.ListConsumers(pb.ListConsumersRequest(subscriptionId=sub_id), timeout=30)
    return sorted(c.name for c in resp.consumers)


class DeliveryLog:
    """What a group of consumers saw, shared between them (one event loop).

    `deliveries[rid]` / `acks[rid]` count deliveries and acks per RecordId tuple
    (shardId, batchId, batchIndex); `events` lists (monotonic time, consumer, rid, kind)
    with kind "deliver" or "ack"."""

    def __init__(self):
        from collections import Counter
        self.deliveries = Counter()
        self.acks = Counter()
        self.events: List[tuple] = []
        self.payloads: dict = {}

    def delivered_ids(self) -> set:
        return set(self.deliveries)

    def acked_ids(self) -> set:
        return set(self.acks)

    def receivers(self, rid) -> List[str]:
        return [e[1] for e in self.events if e[2] == rid and e[3] == "deliver"]

    def ack_times(self) -> dict:
        """rid -> time of its last ack (client side: when it was queued)."""
        out = {}
        for t, _, rid, kind in self.events:
            if kind == "ack":
                out[rid] = t
        return out


class ConsumerRun:
    """One official-client consumer running in an asyncio task, recording what it receives.

    `ack`: True (ack every record as it arrives), False (never ack automatically) or a
    callable(record, consumer_run) -> bool. `freeze()` stops automatic acking. Several
    ConsumerRuns can share one DeliveryLog. Use `start()` inside a running event loop;
    end it with `stop()` (the client's stop = cancel), `cancel()` (cancel the task and the
    call, no goodbye), or `close()` (half-close the request stream: the graceful leave)."""

    def __init__(self, client, subscription: str, name: Optional[str] = None, ack=True,
                 log: Optional[DeliveryLog] = None, delay: float = 0.0):
        self.client = client
        self.subscription = subscription
        self.name = name or uid("consumer")
        self.ack_policy = ack
        self.log = log if log is not None else DeliveryLog()
        self.delay = delay
        self.records: list = []           # hstreamdb.Record, in arrival order
        self.batches: List[List[tuple]] = []  # rid tuples of each StreamingFetchResponse
        self.batch_times: List[float] = []
        self.acked: List[tuple] = []
        self.frozen = False
        self.error: Optional[grpc.aio.AioRpcError] = None
        self.exception: Optional[BaseException] = None
        self.task: Optional[asyncio.Task] = None
        self.consumer = client.new_consumer(self.name, subscription, self._process)

    # -- running -------------------------------------------------------------------------

    def start(self) -> "ConsumerRun":
        self.task = asyncio.ensure_future(self._run())
        return self

    async def _run(self):
        try:
            await self.consumer.start()
        except grpc.aio.AioRpcError as e:
            self.error = e
        except Exception as e:  # noqa: BLE001 - recorded for the test to assert on
            self.exception = e

    @property
    def finished(self) -> bool:
        return self.task is not None and self.task.done()

    async def _process(self, ack, stop, records):
        now = time.monotonic()
        recs = list(records)
        self.batches.append([rid_tuple(r.id) for r in recs])
        self.batch_times.append(now)
        for r in recs:
            rid = rid_tuple(r.id)
            self.records.append(r)
            self.log.deliveries[rid] += 1
            self.log.events.append((now, self.name, rid, "deliver"))
            self.log.payloads.setdefault(rid, r.payload)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.frozen or self.ack_policy is False:
            return
        if self.ack_policy is True:
            ids = [r.id for r in recs]
        else:
            ids = [r.id for r in recs if self.ack_policy(r, self)]
        if ids:
            await self.ack(ids)

    async def ack(self, ids) -> None:
        """Queue an ack for these RecordIds (hstreamdb.RecordId or tuples) on this stream."""
        from hstreamdb.types import RecordId
        ids = [i if isinstance(i, RecordId) else RecordId(*rid_tuple(i) if isinstance(i, pb.RecordId) else i)
               for i in ids]
        now = time.monotonic()
        for i in ids:
            rid = rid_tuple(i)
            self.acked.append(rid)
            self.log.acks[rid] += 1
            self.log.events.append((now, self.name, rid, "ack"))
        await self.consumer._ack(ids)

    async def raw_request(self, req: pb.StreamingFetchRequest) -> None:
        """Send an arbitrary StreamingFetchRequest on this consumer's stream."""
        await self.consumer._requests.put(req)

    def freeze(self) -> None:
        """Stop acking automatically from now on (records keep arriving)."""
        self.frozen = True

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until every queued ack was taken by the request iterator (written to gRPC)."""
        await wait_until(lambda: self.consumer._requests.empty(), timeout, f"{self.name}: ack queue drained")

    async def wait(self, timeout: float = 10.0) -> None:
        """Wait for start() to return (stream ended)."""
        assert self.task is not None
        await asyncio.wait_for(asyncio.shield(self.task), timeout)

    async def stop(self, timeout: float = 10.0) -> None:
        """The client's own stop(): cancels the call."""
        await self.consumer._stop()
        await self.wait(timeout)

    async def cancel(self, timeout: float = 10.0) -> None:
        """Kill it: cancel the task running start() and the call, without any goodbye."""
        self.task.cancel()
        call = getattr(self.consumer, "_call", None)
        if call is not None:
            call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, timeout)

    async def close(self, timeout: float = 10.0) -> None:
        """Graceful leave: end the request stream (half-close); the server then ends the
        response stream, so start() returns."""
        await self.consumer._requests.put(None)
        await self.wait(timeout)

    # -- inspection ----------------------------------------------------------------------

    def ids(self) -> List[tuple]:
        return [rid_tuple(r.id) for r in self.records]

    def shards(self) -> set:
        return {rid[0] for rid in self.ids()}

    def unacked(self) -> List[tuple]:
        acked = set(self.acked)
        return [rid for rid in self.ids() if rid not in acked]

    async def wait_count(self, n: int, timeout: float = 10.0) -> None:
        """Wait until at least n records arrived here (fails early if the stream ended)."""
        def ok():
            if self.finished and len(self.records) < n:
                raise AssertionError(f"{self.name}: stream ended after {len(self.records)}/{n} records: "
                                     f"{self.error or self.exception}")
            return len(self.records) >= n
        await wait_until(ok, timeout, lambda: f"{self.name}: {len(self.records)}/{n} records")


async def stop_all(runs: Iterable[ConsumerRun]) -> None:
    """Cancel every still-running ConsumerRun (test cleanup)."""
    for c in runs:
        if c.task is not None and not c.task.done():
            with contextlib.suppress(Exception):
                await c.cancel(5)


async def append_spread(client, stream: str, n_batches: int, batch_size: int, tag: str = "r",
                        keys: Optional[List[str]] = None) -> List[tuple]:
    """Append n_batches batches of batch_size str payloads, keys cycling over `keys`
    (default: one key per shard of the stream, so every shard gets batches).
    Returns [(rid tuple, payload bytes)] in append order."""
    if keys is None:
        keys = keys_covering_shards(await client.list_shards(stream))
    out = []
    for b in range(n_batches):
        payloads = [f"{tag}-{b}-{i}" for i in range(batch_size)]
        rids = list(await client.append(stream, payloads, key=keys[b % len(keys)]))
        assert len(rids) == batch_size
        out.extend((rid_tuple(r), p.encode()) for r, p in zip(rids, payloads))
    return out


def keys_covering_shards(shards) -> List[str]:
    """One key per shard (in shard order) that the MD5 mapping puts on that shard."""
    want = {s.id: None for s in shards}
    i = 0
    while any(v is None for v in want.values()):
        k = f"k{i}"
        sid = shard_for_key(shards, k)
        if want[sid] is None:
            want[sid] = k
        i += 1
        assert i < 100000
    return [want[s.id] for s in shards]


# --------------------------------------------------------------------------------------
# TLS


def make_tls_files(directory: Path) -> dict:
    """Throwaway PKI made with the `openssl` CLI (EC P-256, valid 2 days) in `directory`:
    a CA; a server certificate it signs with SAN IP:127.0.0.1 and DNS:localhost (the client
    connects to the advertised host 127.0.0.1); a client certificate it signs; and an
    unrelated "rogue" CA with its own client certificate. Returns {name: Path} for ca, ca_key,
    server_cert, server_key, client_cert, client_key, rogue_ca, rogue_client_cert,
    rogue_client_key."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)

    def ossl(*args):
        r = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"openssl {' '.join(args)} failed:\n{r.stderr}"

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def ca(name, cn):
        ossl("req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def leaf(name, cn, ca_name, ext):
        (d / f"{name}.ext").write_text(ext)
        ossl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        ossl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca_name}.pem", "-CAkey", f"{ca_name}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")

    ca("ca", "StreamCell test CA")
    leaf("server", "localhost", "ca",
         "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
         "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    leaf("client", "streamcell-test-client", "ca",
         "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
    ca("rogue", "Rogue CA")
    leaf("rogue_client", "rogue-client", "rogue",
         "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
    return {
        "ca": d / "ca.pem", "ca_key": d / "ca.key",
        "server_cert": d / "server.pem", "server_key": d / "server.key",
        "client_cert": d / "client.pem", "client_key": d / "client.key",
        "rogue_ca": d / "rogue.pem",
        "rogue_client_cert": d / "rogue_client.pem", "rogue_client_key": d / "rogue_client.key",
    }


def _aio_ready_tls(target: str, make_creds, timeout: float):
    async def probe():
        async with grpc.aio.secure_channel(target, make_creds()) as ch:
            await pb_grpc.HStreamApiStub(ch).DescribeCluster(empty_pb2.Empty(), timeout=timeout,
                                                             wait_for_ready=True)

    try:
        asyncio.run(probe())
        return None
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.UNAUTHENTICATED:
            return None  # a locked server answered: it is up
        return f"{e.code()} {e.details()}"


class TlsServerProcess(ServerProcess):
    """A ServerProcess whose gRPC port speaks TLS only. `client_creds` are the keyword
    arguments of grpc.ssl_channel_credentials (root_certificates, private_key,
    certificate_chain; PEM bytes) used by wait_ready() and stub()."""

    def __init__(self, binary: Path, data_dir: Path, log_path: Path, extra_args: Iterable[str] = (),
                 client_creds: Optional[dict] = None, token: Optional[str] = None):
        super().__init__(binary, data_dir, log_path, extra_args)
        self.client_creds = dict(client_creds or {})
        self.token = token

    def credentials(self) -> grpc.ChannelCredentials:
        """TLS channel credentials, with the access token as call credentials if given
        (what the official client takes as `credentials=`)."""
        tls = grpc.ssl_channel_credentials(**self.client_creds)
        if self.token is None:
            return tls
        return grpc.composite_channel_credentials(tls, grpc.access_token_call_credentials(self.token))

    def channel(self) -> grpc.Channel:
        ch = grpc.secure_channel(self.target, self.credentials())
        self._channels.append(ch)
        return ch

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"streamcell exited with code {self.proc.returncode} during startup\n"
                                     + self.log_tail())
            if time.monotonic() > deadline:
                raise AssertionError(f"streamcell did not accept connections on {self.target} within {timeout}s\n"
                                     + self.log_tail())
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.05)
        remaining = max(1.0, deadline - time.monotonic())
        with grpc.secure_channel(self.target, self.credentials()) as ch:
            try:
                pb_grpc.HStreamApiStub(ch).DescribeCluster(empty_pb2.Empty(), timeout=remaining, wait_for_ready=True)
            except grpc.RpcError as e:
                raise AssertionError(f"DescribeCluster over TLS failed after startup: {e.code()} {e.details()}\n"
                                     + self.log_tail()) from e
        remaining = max(1.0, deadline - time.monotonic())
        err = []
        t = threading.Thread(target=lambda: err.append(_aio_ready_tls(self.target, self.credentials, remaining)))
        t.start()
        t.join()
        if err[0] is not None:
            raise AssertionError(f"DescribeCluster over TLS via grpc.aio failed after startup: {err[0]}\n"
                                 + self.log_tail())
