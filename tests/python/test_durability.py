"""Durability across restarts: clean stop (SIGTERM) and crash (SIGKILL).

Acknowledged = the RecordIds an append returned. A SIGKILL kills the process, not the
machine, so every acknowledged record must survive it whatever the --sync mode is: an ack
means the batch has at least reached the operating system."""

import asyncio
import time

import grpc
import pytest

from helpers import connect, pb, read_all, run, shard_for_key, uid


def _workload(tag: str):
    """Deterministic batches: (stream, payloads, key, compresstype)."""
    out = []
    for i in range(24):
        stream = f"{tag}_multi" if i % 3 else f"{tag}_single"
        n = 1 + (i * 7) % 20
        payloads = [f"{tag}-{i}-{j}-".encode() + bytes([j % 256]) * (j * 13 % 200) for j in range(n)]
        if i % 5 == 0:
            payloads.append({"batch": i, "tag": tag, "nested": {"ok": True}})
        out.append((stream, payloads, f"key{i % 6}" if i % 4 else None, "gzip" if i % 4 == 1 else None))
    return out


def _norm(p):
    if isinstance(p, dict):
        return {k: (float(v) if isinstance(v, int) and not isinstance(v, bool) else _norm(v) if isinstance(v, dict) else v)
                for k, v in p.items()}
    return p


async def _append_workload(client, tag):
    """Append the workload; returns {stream: {shard_id: [(RecordId, payload, key)...]}} in append order."""
    expected = {}
    for stream, payloads, key, comp in _workload(tag):
        if stream not in expected:
            await client.create_stream(stream, replication_factor=1,
                                       shard_count=3 if stream.endswith("multi") else 1)
            expected[stream] = {s.id: [] for s in await client.list_shards(stream)}
        rids = list(await client.append(stream, payloads, key=key, compresstype=comp))
        assert len(rids) == len(payloads)
        shards = await client.list_shards(stream)
        assert rids[0].shard_id == shard_for_key(shards, key)
        expected[stream][rids[0].shard_id] += [(rid, _norm(p), key) for rid, p in zip(rids, payloads)]
    return expected


async def _verify(client, expected):
    listed = {s.name for s in await client.list_streams()}
    for stream, per_shard in expected.items():
        assert stream in listed, f"stream {stream} lost"
        shards = await client.list_shards(stream)
        assert {s.id for s in shards} == set(per_shard), "shard ids changed across restart"
        for sid, want in per_shard.items():
            got = await read_all(client, stream, sid)
            assert [r.id for r in got] == [w[0] for w in want], f"{stream}/{sid}: RecordIds differ"
            assert [r.payload for r in got] == [w[1] for w in want], f"{stream}/{sid}: payloads differ"
            assert [r.header.key for r in got] == [w[2] for w in want], f"{stream}/{sid}: keys differ"


def _max_batch_ids(expected):
    return {sid: max((w[0].batch_id for w in want), default=0)
            for per_shard in expected.values() for sid, want in per_shard.items()}


def _shutdown(srv, how):
    if how == "sigterm":
        srv.stop()  # asserts exit code 0
    else:
        srv.kill()


@pytest.mark.parametrize("how,sync", [("sigterm", None), ("sigkill", None), ("sigkill", "always"),
                                      ("sigkill", "interval"), ("sigkill", "never")])
def test_restart_reads_everything_back(start_server, how, sync):
    srv = start_server(*(["--sync", sync] if sync else []))
    tag = uid("dur")

    async def before():
        async with connect(srv) as client:
            exp = await _append_workload(client, tag)
            await _verify(client, exp)  # sanity before the restart
            return exp

    expected = run(before())
    shard_info = {s: srv.stub().ListShards(pb.ListShardsRequest(streamName=s), timeout=10).shards
                  for s in expected}
    _shutdown(srv, how)
    srv.start()

    async def after():
        async with connect(srv) as client:
            await _verify(client, expected)
            # New appends continue above every batchId handed out before the restart.
            top = _max_batch_ids(expected)
            for stream, per_shard in expected.items():
                for key in (None, "key1", "key2", "key3"):
                    (rid,) = list(await client.append(stream, [f"after-{key}".encode()], key=key))
                    assert rid.batch_id > top[rid.shard_id], "batchId went backwards after restart"
                    top[rid.shard_id] = rid.batch_id
                    per_shard[rid.shard_id].append((rid, f"after-{key}".encode(), key))
            await _verify(client, expected)

    run(after())
    for s, shards in shard_info.items():
        again = srv.stub().ListShards(pb.ListShardsRequest(streamName=s), timeout=10).shards
        assert sorted((x.shardId, x.startHashRangeKey, x.endHashRangeKey) for x in again) == \
            sorted((x.shardId, x.startHashRangeKey, x.endHashRangeKey) for x in shards)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_metadata_survives_restart(start_server, how):
    srv = start_server()
    stub = srv.stub()
    keep, gone = uid("keep"), uid("gone")
    stub.CreateStream(pb.Stream(streamName=keep, replicationFactor=2, backlogDuration=120, shardCount=2), timeout=10)
    stub.CreateStream(pb.Stream(streamName=gone, replicationFactor=1, shardCount=1), timeout=10)
    stub.DeleteStream(pb.DeleteStreamRequest(streamName=gone), timeout=10)
    _shutdown(srv, how)
    srv.start()
    stub = srv.stub()
    names = {s.streamName for s in stub.ListStreams(pb.ListStreamsRequest(), timeout=10).streams}
    assert keep in names and gone not in names
    got = stub.GetStream(pb.GetStreamRequest(name=keep), timeout=10).stream
    assert (got.replicationFactor, got.backlogDuration, got.shardCount) == (2, 120, 2)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_trim_survives_restart(start_server, how):
    srv = start_server()
    name = uid()

    async def before():
        async with connect(srv) as client:
            await client.create_stream(name)
            (shard,) = await client.list_shards(name)
            rids = [list(await client.append(name, [f"t{i}".encode()]))[0] for i in range(6)]
            return shard.id, rids

    sid, rids = run(before())
    stub = srv.stub()
    stub.TrimShard(pb.TrimShardRequest(streamName=name, shardId=sid, trimPoint=pb.ShardOffset(
        recordOffset=pb.RecordId(shardId=sid, batchId=rids[2].batch_id, batchIndex=0))), timeout=10)
    _shutdown(srv, how)
    srv.start()

    async def after():
        async with connect(srv) as client:
            return await read_all(client, name, sid)

    got = run(after())
    payloads = [r.payload for r in got]
    assert payloads in ([b"t3", b"t4", b"t5"], [b"t2", b"t3", b"t4", b"t5"]), payloads
    assert [r.id for r in got] == rids[6 - len(got):]


def test_repeated_crashes(start_server):
    """Three crash/restart cycles on one data dir; everything acknowledged so far is always there."""
    srv = start_server()
    expected = {}
    for cycle in range(3):
        tag = uid(f"c{cycle}")

        async def load():
            async with connect(srv) as client:
                return await _append_workload(client, tag)

        expected.update(run(load()))
        srv.kill()
        srv.start()

        async def check():
            async with connect(srv) as client:
                await _verify(client, expected)

        run(check())


def test_sigterm_under_load(start_server):
    """SIGTERM while appends are in flight: exit code 0 within the stop timeout, and after a
    restart every acknowledged record is there at its RecordId."""
    srv = start_server()
    name = uid("load")
    acked = {}

    async def main():
        async with connect(srv) as client:
            await client.create_stream(name, shard_count=2)
            stop = asyncio.Event()

            async def appender(task):
                seq = 0
                while not stop.is_set():
                    payloads = [f"t{task}-{seq}-{i}".encode() for i in range(1 + seq % 10)]
                    try:
                        rids = list(await client.append(name, payloads, key=f"k{task}-{seq % 5}"))
                    except grpc.aio.AioRpcError:
                        return
                    acked.update(zip(rids, payloads))
                    seq += 1

            tasks = [asyncio.create_task(appender(t)) for t in range(3)]
            deadline = time.monotonic() + 15
            while len(acked) < 200:
                assert time.monotonic() < deadline, "no load within 15 s"
                await asyncio.sleep(0.01)
            # SIGTERM from a worker thread, so the appenders keep running into the shutdown.
            await asyncio.get_running_loop().run_in_executor(None, srv.stop)
            stop.set()
            await asyncio.gather(*tasks)

    run(main())
    srv.start()

    async def check():
        async with connect(srv) as client:
            found = {}
            for sh in await client.list_shards(name):
                for r in await read_all(client, name, sh.id, batches_per_read=500):
                    found[r.id] = r.payload
            return found

    found = run(check())
    missing = [rid for rid in acked if found.get(rid) != acked[rid]]
    assert not missing, f"{len(missing)} acknowledged records lost or changed, e.g. {missing[:3]}"
