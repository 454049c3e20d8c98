"""Shard readers (official client: create_reader / read_reader / with_reader / delete_reader)
and the streaming reads ReadShardStream / ReadStream (raw stubs)."""

import time

import grpc

from helpers import (READER_TIMEOUT_MS, arpc_error, assert_rpc_error, connect, create_stream_raw, decode,
                     earliest, latest, pb, raw_append, record_offset, rid_tuple, run, shard_for_key,
                     timestamp_offset, uid)


async def _setup(client, name, batches):
    """Create a single-shard stream and append `batches` batches (batch i has i+1 records).
    Returns (shard_id, [[RecordId...] per batch])."""
    await client.create_stream(name)
    (shard,) = await client.list_shards(name)
    shard_id = shard.id
    out = []
    for i in range(batches):
        out.append(await _append(client, name, shard_id, i))
    return shard_id, out


async def _append(client, name, shard_id, i, n=None):
    """Append batch number i (n records, default i+1) to a single-shard stream."""
    n = i + 1 if n is None else n
    rids = list(await client.append(name, [f"b{i}-{j}".encode() for j in range(n)]))
    assert len(rids) == n and {r.shard_id for r in rids} == {shard_id}
    return rids


def _payloads(batch_numbers):
    return [f"b{i}-{j}".encode() for i in batch_numbers for j in range(i + 1)]


def test_reader_from_earliest(server):
    name = uid()

    async def main():
        async with connect(server) as client:
            shard_id, batches = await _setup(client, name, 5)
            rid = uid("reader")
            await client.create_reader(name, rid, earliest(), READER_TIMEOUT_MS, shard_id=shard_id)
            got = list(await client.read_reader(rid, 100))
            rest = list(await client.read_reader(rid, 100))
            await client.delete_reader(rid)
            return batches, got, rest

    batches, got, rest = run(main())
    assert [r.id for r in got] == [x for b in batches for x in b]
    assert [r.payload for r in got] == _payloads(range(5))
    assert rest == [], "a drained reader returns nothing after its timeout"


def test_read_reader_max_records_counts_batches(server):
    name = uid()

    async def main():
        async with connect(server) as client:
            shard_id, batches = await _setup(client, name, 0)
            for i in range(4):
                batches.append(await _append(client, name, shard_id, i, n=5))
            rid = uid("reader")
            await client.create_reader(name, rid, earliest(), READER_TIMEOUT_MS, shard_id=shard_id)
            reads = [list(await client.read_reader(rid, n)) for n in (2, 1, 10, 10)]
            await client.delete_reader(rid)
            return batches, reads

    batches, reads = run(main())
    assert [len(r) for r in reads] == [10, 5, 5, 0], "maxRecords counts batches, not records"
    assert [r.id for r in reads[0]] == batches[0] + batches[1]
    assert [r.id for r in reads[1]] == batches[2]
    assert [r.id for r in reads[2]] == batches[3]


def test_reader_from_latest_sees_only_new_records(server):
    name = uid()

    async def main():
        async with connect(server) as client:
            shard_id, _ = await _setup(client, name, 3)
            rid = uid("reader")
            await client.create_reader(name, rid, latest(), READER_TIMEOUT_MS, shard_id=shard_id)
            first = list(await client.read_reader(rid, 100))
            new = [await _append(client, name, shard_id, i) for i in (7, 8)]
            second = list(await client.read_reader(rid, 100))
            await client.delete_reader(rid)
            return first, new, second

    first, new, second = run(main())
    assert first == []
    assert [r.id for r in second] == new[0] + new[1]
    assert [r.payload for r in second] == _payloads([7, 8])


def test_reader_from_record_id(server):
    name = uid()

    async def main():
        async with connect(server) as client:
            shard_id, batches = await _setup(client, name, 5)
            rid = uid("reader")
            await client.create_reader(name, rid, record_offset(batches[2][0]), READER_TIMEOUT_MS,
                                       shard_id=shard_id)
            got = list(await client.read_reader(rid, 100))
            await client.delete_reader(rid)
            return batches, got

    batches, got = run(main())
    assert [r.id for r in got] == [x for b in batches[2:] for x in b]
    assert [r.payload for r in got] == _payloads([2, 3, 4])


def _now_ms() -> int:
    return int(time.time() * 1000)


def _wait_ms_past(t: int, limit_s: float = 5.0) -> None:
    """Bounded wait until the wall clock (shared with the server) is at or past t ms."""
    deadline = time.monotonic() + limit_s
    while _now_ms() < t:
        assert time.monotonic() < deadline, "clock did not advance"
        time.sleep(0.001)


def test_reader_from_timestamp(server):
    name = uid()

    async def main():
        async with connect(server) as client:
            shard_id, old = await _setup(client, name, 2)
            # Every old batch got its publishTime before `t`; every later one at or after `t`.
            t = _now_ms() + 1
            _wait_ms_past(t)
            new = [await _append(client, name, shard_id, i) for i in (5, 6)]
            results = {}
            for label, off in (("strict", timestamp_offset(t, True)), ("approx", timestamp_offset(t, False)),
                               ("zero", timestamp_offset(0, True))):
                rid = uid("reader")
                await client.create_reader(name, rid, off, READER_TIMEOUT_MS, shard_id=shard_id)
                results[label] = list(await client.read_reader(rid, 100))
                await client.delete_reader(rid)
            return t, old, new, results

    t, old, new, results = run(main())
    new_ids = new[0] + new[1]
    all_ids = [x for b in old for x in b] + new_ids
    assert [r.id for r in results["strict"]] == new_ids
    for r in results["strict"]:
        assert r.header.publish_time.seconds * 1000 + r.header.publish_time.nanos // 1_000_000 >= t - 1
    # Approximate may start earlier, but never after the first matching batch.
    approx = [r.id for r in results["approx"]]
    assert approx == all_ids[len(all_ids) - len(approx):] and len(approx) >= len(new_ids)
    assert [r.id for r in results["zero"]] == all_ids


def test_with_reader(server):
    name = uid()
    rid = uid("reader")

    async def main():
        async with connect(server) as client:
            shard_id, batches = await _setup(client, name, 3)
            async with client.with_reader(name, rid, earliest(), READER_TIMEOUT_MS, shard_id=shard_id) as r:
                first = list(await r.read(2))
                second = list(await r.read(2))
            return batches, first, second

    batches, first, second = run(main())
    assert [r.id for r in first] == batches[0] + batches[1]
    assert [r.id for r in second] == batches[2]
    listed = server.stub().ListShardReaders(pb.ListShardReadersRequest(), timeout=10).readerId
    assert rid not in listed, "with_reader deletes its reader on exit"


def test_create_reader_by_stream_key(server):
    name = uid()

    async def main():
        async with connect(server) as client:
            await client.create_stream(name, shard_count=3)
            shards = await client.list_shards(name)
            for k in ("alpha", "beta", "gamma", "delta"):
                await client.append(name, [f"{k}-payload".encode()], key=k)
            out = {}
            for k in ("alpha", "beta", "gamma", "delta"):
                rid = uid("reader")
                await client.create_reader(name, rid, earliest(), READER_TIMEOUT_MS, stream_key=k)
                out[k] = list(await client.read_reader(rid, 100))
                await client.delete_reader(rid)
            return shards, out

    shards, out = run(main())
    for k, recs in out.items():
        assert f"{k}-payload".encode() in [r.payload for r in recs]
        assert {r.id.shard_id for r in recs} == {shard_for_key(shards, k)}


def test_readers_are_independent(server):
    name = uid()

    async def main():
        async with connect(server) as client:
            shard_id, batches = await _setup(client, name, 4)
            a, b = uid("ra"), uid("rb")
            for rid in (a, b):
                await client.create_reader(name, rid, earliest(), READER_TIMEOUT_MS, shard_id=shard_id)
            a1 = list(await client.read_reader(a, 3))
            b1 = list(await client.read_reader(b, 1))
            a2 = list(await client.read_reader(a, 3))
            b2 = list(await client.read_reader(b, 3))
            for rid in (a, b):
                await client.delete_reader(rid)
            return batches, a1, a2, b1, b2

    batches, a1, a2, b1, b2 = run(main())
    flat = [x for bt in batches for x in bt]
    assert [r.id for r in a1 + a2] == flat
    assert [r.id for r in b1 + b2] == flat
    assert [r.id for r in b1] == batches[0]


def test_list_and_delete_readers(server):
    name = uid()
    rids = [uid("reader") for _ in range(3)]

    async def main():
        async with connect(server) as client:
            shard_id, _ = await _setup(client, name, 1)
            for rid in rids:
                await client.create_reader(name, rid, earliest(), READER_TIMEOUT_MS, shard_id=shard_id)
            listed = set(server.stub().ListShardReaders(pb.ListShardReadersRequest(), timeout=10).readerId)
            assert set(rids) <= listed
            await client.delete_reader(rids[0])
            listed = set(server.stub().ListShardReaders(pb.ListShardReadersRequest(), timeout=10).readerId)
            assert rids[0] not in listed and set(rids[1:]) <= listed
            # The deleted reader is gone: reading or deleting it again is NOT_FOUND.
            err = await arpc_error(client.read_reader(rids[0], 1))
            assert_rpc_error(err, grpc.StatusCode.NOT_FOUND)
            err = await arpc_error(client.delete_reader(rids[0]))
            assert_rpc_error(err, grpc.StatusCode.NOT_FOUND)
            # The others still work.
            assert [r.payload for r in await client.read_reader(rids[1], 10)] == [b"b0-0"]

    run(main())


def test_duplicate_reader_id_already_exists(server):
    name = uid()
    rid = uid("reader")

    async def main():
        async with connect(server) as client:
            shard_id, _ = await _setup(client, name, 1)
            await client.create_reader(name, rid, earliest(), READER_TIMEOUT_MS, shard_id=shard_id)
            err = await arpc_error(client.create_reader(name, rid, latest(), READER_TIMEOUT_MS, shard_id=shard_id))
            assert_rpc_error(err, grpc.StatusCode.ALREADY_EXISTS)
            # The original reader is untouched (still at EARLIEST).
            assert [r.payload for r in await client.read_reader(rid, 10)] == [b"b0-0"]

    run(main())


# ---------------------------------------------------------------------------------------------
# ReadShardStream / ReadStream


def _collect(responses):
    out = []
    for resp in responses:
        out.extend(resp.receivedRecords)
    return out


def _ids(received):
    return [rid_tuple(r) for rec in received for r in rec.recordIds]


def test_read_shard_stream_until(server):
    stub = server.stub()
    name = uid()
    (shard,) = create_stream_raw(stub, name)
    sid = shard.shardId
    batches = [raw_append(stub, name, sid, [f"b{i}-{j}".encode() for j in range(i + 1)]) for i in range(6)]
    flat = lambda bs: [rid_tuple(r) for b in bs for r in b]  # noqa: E731

    def read(**kw):
        return _collect(stub.ReadShardStream(
            pb.ReadShardStreamRequest(readerId=uid("rss"), shardId=sid, **kw), timeout=30))

    # until a RecordId is inclusive of that batch; the stream ends there.
    got = read(**{"from": earliest(), "until": record_offset(batches[3][0])})
    assert _ids(got) == flat(batches[:4])
    assert [r.payload for r in decode(got)] == _payloads(range(4))

    got = read(**{"from": record_offset(batches[1][0]), "until": latest()})
    assert _ids(got) == flat(batches[1:])

    got = read(**{"from": earliest(), "until": latest(), "maxReadBatches": 2})
    assert _ids(got) == flat(batches[:2])


def test_read_stream_all_shards_until_latest(server):
    stub = server.stub()
    name = uid()
    shards = create_stream_raw(stub, name, shard_count=3)
    appended = {}
    for i, sh in enumerate(shards):
        for j in range(3):
            rids = raw_append(stub, name, sh.shardId, [f"s{i}-b{j}-r{k}".encode() for k in range(j + 2)])
            for k, r in enumerate(rids):
                appended[rid_tuple(r)] = f"s{i}-b{j}-r{k}".encode()

    got = _collect(stub.ReadStream(pb.ReadStreamRequest(
        readerId=uid("rs"), streamName=name, **{"from": pb.StreamOffset(specialOffset=pb.SpecialOffset.EARLIEST),
                                                "until": pb.StreamOffset(specialOffset=pb.SpecialOffset.LATEST)}),
        timeout=30))
    records = decode(got)
    assert len(records) == len(appended), "every record of every shard exactly once"
    assert {tuple(r.id): r.payload for r in records} == appended
    # Within each shard, batches arrive in order.
    for sh in shards:
        bids = [r.id.batch_id for r in records if r.id.shard_id == sh.shardId]
        assert bids == sorted(bids)


def test_read_stream_max_batches(server):
    stub = server.stub()
    name = uid()
    (shard,) = create_stream_raw(stub, name)
    for i in range(5):
        raw_append(stub, name, shard.shardId, [f"x{i}".encode()])
    got = _collect(stub.ReadStream(pb.ReadStreamRequest(
        readerId=uid("rs"), streamName=name, maxReadBatches=3,
        **{"from": pb.StreamOffset(specialOffset=pb.SpecialOffset.EARLIEST),
           "until": pb.StreamOffset(specialOffset=pb.SpecialOffset.LATEST)}), timeout=30))
    assert [r.payload for r in decode(got)] == [b"x0", b"x1", b"x2"]


def test_deleting_a_reader_ends_a_read_waiting_on_it(server):
    """A ReadShard waiting (up to its 20 s timeout) for appends ends at once, NOT_FOUND, when its
    reader is deleted, whichever of the two reaches the server first."""
    import threading
    import time

    import grpc

    stub = server.stub()
    stream = uid("wait")
    (shard,) = create_stream_raw(stub, stream)
    stub.CreateShardReader(pb.CreateShardReaderRequest(
        streamName=stream, shardId=shard.shardId, shardOffset=earliest(), readerId="waiter", timeout=20_000),
        timeout=10)
    outcome = {}

    def read():
        start = time.monotonic()
        try:
            stub.ReadShard(pb.ReadShardRequest(readerId="waiter", maxRecords=10), timeout=30)
            outcome["code"] = "OK"
        except grpc.RpcError as e:
            outcome["code"] = e.code()
        outcome["secs"] = time.monotonic() - start

    t = threading.Thread(target=read)
    t.start()
    time.sleep(0.3)  # let the read start waiting (either order must give NOT_FOUND)
    stub.DeleteShardReader(pb.DeleteShardReaderRequest(readerId="waiter"), timeout=10)
    t.join(timeout=15)
    assert not t.is_alive(), "the read did not end after its reader was deleted"
    assert outcome["code"] == grpc.StatusCode.NOT_FOUND, outcome
    assert outcome["secs"] < 5, outcome
