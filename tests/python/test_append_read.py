"""Append and read back: payload kinds, keys -> shards, RecordIds, gzip, publishTime,
BufferedProducer, GetTailRecordId, TrimShard."""

import gzip
import random
import time

import hstreamdb
from hstreamdb.utils import encode_records, find_shard_id

from helpers import (connect, create_stream_raw, decode, earliest, pb, raw_append, read_all,
                     read_all_raw, record_offset, rid_tuple, run, shard_for_key, uid)


def _assert_batch_ids(rids, shard_id, n):
    assert len(rids) == n
    assert all(r.shard_id == shard_id for r in rids), rids
    assert len({r.batch_id for r in rids}) == 1, f"one append is one batch: {rids}"
    assert [r.batch_index for r in rids] == list(range(n))


def test_append_bytes_str_dict_roundtrip(server):
    name = uid()
    doc = {"a": 1, "b": "x", "c": [1, 2.5, "y"], "d": {"e": True, "f": None}, "g": -3}
    payloads = [b"raw\x00\xff\x01bytes", "text \u00e9\u4e2d", doc]

    async def main():
        async with connect(server) as client:
            await client.create_stream(name)
            (shard,) = await client.list_shards(name)
            before = time.time()
            rids = list(await client.append(name, payloads))
            after = time.time()
            _assert_batch_ids(rids, shard.id, 3)
            records = await read_all(client, name, shard.id)
            return rids, records, before, after

    rids, records, before, after = run(main())
    assert [r.id for r in records] == rids
    assert records[0].payload == payloads[0]
    assert records[1].payload == payloads[1].encode("utf-8")  # str is sent as RAW utf-8
    got = records[2].payload
    assert isinstance(got, dict), "JSON-flag records come back as dicts"
    assert got == {"a": 1.0, "b": "x", "c": [1.0, 2.5, "y"], "d": {"e": True, "f": None}, "g": -3.0}
    assert isinstance(got["a"], float) and isinstance(got["c"][0], float)
    for r in records:
        assert r.header.key is None
        ts = r.header.publish_time.seconds + r.header.publish_time.nanos / 1e9
        assert before - 2 <= ts <= after + 2, f"publishTime {ts} not within [{before}, {after}]"


def test_record_ids_strictly_increasing(server):
    name = uid()
    sizes = [1, 5, 2, 17, 1, 100, 3]

    async def main():
        async with connect(server) as client:
            await client.create_stream(name)
            (shard,) = await client.list_shards(name)
            all_rids = []
            last = None
            for i, n in enumerate(sizes):
                rids = list(await client.append(name, [f"b{i}-r{j}".encode() for j in range(n)]))
                _assert_batch_ids(rids, shard.id, n)
                if last is not None:
                    assert rids[0].batch_id > last, "batchId must strictly increase within a shard"
                last = rids[0].batch_id
                all_rids += rids
            records = await read_all(client, name, shard.id)
            return all_rids, records

    all_rids, records = run(main())
    assert [r.id for r in records] == all_rids
    expected = [f"b{i}-r{j}".encode() for i, n in enumerate(sizes) for j in range(n)]
    assert [r.payload for r in records] == expected


def test_keyed_appends_land_on_md5_shard(server):
    name = uid()
    keys = [f"key-{i}" for i in range(40)] + ["", "\u00fcnicode-\u4e2d", "x" * 300]

    async def main():
        async with connect(server) as client:
            await client.create_stream(name, shard_count=3)
            shards = await client.list_shards(name)
            placed = {}
            for k in keys:
                expect = shard_for_key(shards, k)
                assert find_shard_id(shards, k) == expect  # the client agrees with our MD5 math
                rids = list(await client.append(name, [f"payload of {k}".encode()], key=k))
                assert rids[0].shard_id == expect, f"key {k!r} landed on {rids[0].shard_id}, expected {expect}"
                placed[k] = rids[0]
            # no key == the empty key
            rids = list(await client.append(name, [b"no key"]))
            assert rids[0].shard_id == shard_for_key(shards, "")
            found = {}
            for sh in shards:
                for rec in await read_all(client, name, sh.id):
                    assert rec.id.shard_id == sh.id
                    found[rec.payload] = rec
            return shards, placed, found

    shards, placed, found = run(main())
    used = {rid.shard_id for rid in placed.values()}
    assert len(used) == 3, "40 random-ish keys should hit all 3 shards"
    for k, rid in placed.items():
        rec = found[f"payload of {k}".encode()]
        assert rec.id == rid
        assert rec.header.key == (k or None)  # the client maps "" back to None
    assert found[b"no key"].header.key is None


def test_gzip_append_reads_back(server):
    name = uid()
    payloads = [f"compressible record {i} ".encode() * 20 for i in range(200)] + [{"json": "in gzip", "n": 7}]

    async def main():
        async with connect(server) as client:
            await client.create_stream(name)
            (shard,) = await client.list_shards(name)
            rids = list(await client.append(name, payloads, key="gz", compresstype="gzip"))
            _assert_batch_ids(rids, shard.id, len(payloads))
            plain = list(await client.append(name, [b"plain after gzip"]))
            return shard.id, rids + plain, await read_all(client, name, shard.id)

    shard_id, rids, records = run(main())
    assert [r.id for r in records] == rids
    assert [r.payload for r in records[:-2]] == payloads[:-1]
    assert records[-2].payload == {"json": "in gzip", "n": 7.0}
    assert records[-1].payload == b"plain after gzip"
    assert all(r.header.key == "gz" for r in records[:-1])

    # Stored as sent: the raw read returns the gzip batch still compressed.
    raw = read_all_raw(server.stub(), name, shard_id)
    assert [b.record.compressionType for b in raw] == [pb.CompressionType.Value("Gzip"),
                                                        pb.CompressionType.Value("None")]


def test_gzip_batch_bytes_stored_as_sent(server):
    stub = server.stub()
    name = uid()
    (shard,) = create_stream_raw(stub, name)
    records = [pb.HStreamRecord(header=pb.HStreamRecordHeader(flag=pb.HStreamRecordHeader.Flag.RAW, key="k"),
                                payload=f"r{i}".encode() * 50) for i in range(10)]
    body = gzip.compress(pb.BatchHStreamRecords(records=records).SerializeToString(), mtime=0)
    resp = stub.Append(pb.AppendRequest(streamName=name, shardId=shard.shardId, records=pb.BatchedRecord(
        compressionType=pb.CompressionType.Value("Gzip"), batchSize=10, payload=body)), timeout=10)
    assert [r.batchIndex for r in resp.recordIds] == list(range(10))
    (got,) = read_all_raw(stub, name, shard.shardId)
    assert got.record.compressionType == pb.CompressionType.Value("Gzip")
    assert got.record.batchSize == 10
    assert got.record.payload == body
    assert [rid_tuple(r) for r in got.recordIds] == [rid_tuple(r) for r in resp.recordIds]
    assert [r.payload for r in decode([got])] == [rec.payload for rec in records]


def test_publish_time_is_set_by_server(server):
    stub = server.stub()
    name = uid()
    (shard,) = create_stream_raw(stub, name)
    batch = encode_records([b"old clock"])
    batch.publishTime.seconds = 12345  # a client-provided time must be replaced
    before = time.time()
    stub.Append(pb.AppendRequest(streamName=name, shardId=shard.shardId, records=batch), timeout=10)
    after = time.time()
    (got,) = read_all_raw(stub, name, shard.shardId)
    ts = got.record.publishTime.seconds + got.record.publishTime.nanos / 1e9
    assert before - 2 <= ts <= after + 2, f"publishTime {ts} should be the server's append time"


def test_large_batch_is_one_batch(server):
    name = uid()
    payloads = [f"{i:06d}".encode() + bytes(random.Random(i).getrandbits(8) for _ in range(50))
                for i in range(2000)]

    async def main():
        async with connect(server) as client:
            await client.create_stream(name)
            (shard,) = await client.list_shards(name)
            rids = list(await client.append(name, payloads))
            _assert_batch_ids(rids, shard.id, 2000)
            # maxRecords counts batches: one read of 1 batch returns all 2000 records.
            rid = uid("reader")
            await client.create_reader(name, rid, earliest(), 200, shard_id=shard.id)
            got = list(await client.read_reader(rid, 1))
            await client.delete_reader(rid)
            return rids, got

    rids, got = run(main())
    assert [r.id for r in got] == rids
    assert [r.payload for r in got] == payloads


def test_buffered_producer_appends_are_readable(server):
    name = uid()
    keys = [f"pk{i}" for i in range(10)]
    items = []
    for i in range(300):
        k = keys[i % len(keys)]
        p = {"i": i, "k": k} if i % 7 == 0 else (f"str-{i}" if i % 3 == 0 else f"bytes-{i}".encode())
        items.append((p, k))

    class Callback(hstreamdb.BufferedProducer.AppendCallback):
        def __init__(self):
            self.ok = 0
            self.batches = 0
            self.failures = []

        def on_success(self, stream_name, payloads, stream_keyid):
            assert stream_name == name
            self.ok += len(payloads)
            self.batches += 1

        def on_fail(self, stream_name, payloads, stream_keyid, e):
            self.failures.append(e)

    cb = Callback()

    async def main():
        async with connect(server) as client:
            await client.create_stream(name, shard_count=3)
            shards = await client.list_shards(name)
            producer = client.new_producer(append_callback=cb, size_trigger=512, workers=2)
            for p, k in items:
                await producer.append(name, p, key=k)
            await producer.wait_and_close()
            per_shard = {sh.id: await read_all(client, name, sh.id) for sh in shards}
            return shards, per_shard

    shards, per_shard = run(main())
    assert cb.failures == []
    assert cb.ok == len(items)
    assert cb.batches > 3, "size_trigger=512 should have produced several batches"

    def norm(p):
        return p.encode() if isinstance(p, str) else (
            {kk: float(v) if isinstance(v, int) else v for kk, v in p.items()} if isinstance(p, dict) else p)

    for sh in shards:
        want = [norm(p) for p, k in items if shard_for_key(shards, k) == sh.id]
        got = per_shard[sh.id]
        assert [r.payload for r in got] == want, f"shard {sh.id}: records missing, extra or out of order"
        for r in got:
            assert shard_for_key(shards, r.header.key) == sh.id
        bids = [r.id.batch_id for r in got]
        assert bids == sorted(bids)


def test_get_tail_record_id(server):
    stub = server.stub()
    name = uid()
    shards = create_stream_raw(stub, name, shard_count=2)
    target = shards[0].shardId
    last = None
    for i in range(4):
        last = raw_append(stub, name, target, [f"t{i}-{j}".encode() for j in range(i + 1)])
    tail = stub.GetTailRecordId(pb.GetTailRecordIdRequest(streamName=name, shardId=target), timeout=10).tailRecordId
    assert tail.shardId == target
    assert tail.batchId == last[0].batchId, "tail = the last batch's batchId"
    assert tail.batchIndex == 0
    raw_append(stub, name, target, [b"one more"])
    tail2 = stub.GetTailRecordId(pb.GetTailRecordIdRequest(streamName=name, shardId=target), timeout=10).tailRecordId
    assert tail2.batchId > tail.batchId


def test_trim_shard(server):
    stub = server.stub()
    name = uid()
    (shard,) = create_stream_raw(stub, name)
    sid = shard.shardId
    batches = [raw_append(stub, name, sid, [f"b{i}-{j}".encode() for j in range(3)]) for i in range(6)]
    trim_at = batches[3][0]
    stub.TrimShard(pb.TrimShardRequest(streamName=name, shardId=sid, trimPoint=record_offset(trim_at)), timeout=10)

    records = decode(read_all_raw(stub, name, sid))
    got_batches = sorted({r.id.batch_id for r in records})
    bid = [b[0].batchId for b in batches]
    assert not set(bid[:3]) & set(got_batches), "records before the trim point must no longer be read"
    assert set(bid[4:]) <= set(got_batches), "records after the trim point must survive"
    # The trim point's own batch may be trimmed (LogDevice trims inclusively) or kept, but whole.
    assert got_batches in (bid[3:], bid[4:])
    for r in records:
        i = bid.index(r.id.batch_id)
        assert r.payload == f"b{i}-{r.id.batch_index}".encode()

    # Appends continue with higher batchIds and are readable.
    after = raw_append(stub, name, sid, [b"after trim"])
    assert after[0].batchId > bid[-1]
    records = decode(read_all_raw(stub, name, sid))
    assert records[-1].payload == b"after trim"
