"""A subscription that meets damaged data: it tells its consumer, never loops silently and
never moves past an undelivered record on its own; an operator skips the damaged batches and
everything readable after them is delivered.

A byte of a sealed segment of one shard is flipped while the server is down. After the
restart the subscription delivers every record before the damage and every record of the other
shard; the shard's owner sees its fetch stream end with DATA_LOSS (once); GetSubscription (a
StreamCell extension field), `GET /api/v1/subscriptions/{id}` and /metrics show the held shard.
`POST /api/v1/subscriptions/{id}/skip-damaged` then releases it: exactly the batches readers
refuse are skipped, and the rest arrives."""

import asyncio
import json
import urllib.error
import urllib.request

import grpc

from helpers import (ConsumerRun, append_spread, connect, create_subscription_raw, pb, run, uid,
                     wait_until)

HELD_FIELD = 1000  # GetSubscriptionResponse.streamcellHeldShards


def _varint(buf: bytes, i: int):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def _fields(buf: bytes):
    """(field number, wire type, value) of a serialized message (varint and length-delimited)."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        yield number, wire, value


def held_via_grpc(stub, sub_id):
    """{shard: batch} from GetSubscription's extension field (unknown to the official stubs,
    so read from the re-serialized message, which keeps unknown fields)."""
    resp = stub.GetSubscription(pb.GetSubscriptionRequest(id=sub_id), timeout=30)
    held = {}
    for number, _, value in _fields(resp.SerializeToString()):
        if number == HELD_FIELD:
            f = {n: v for n, _, v in _fields(value)}
            held[f.get(1, 0)] = f.get(2, 0)
    return held


def read_batch(stub, stream, shard, batch):
    """The records of one batch via a shard reader (raises the RpcError a read gets)."""
    rid = uid("reader")
    stub.CreateShardReader(pb.CreateShardReaderRequest(
        streamName=stream, shardId=shard, readerId=rid, timeout=1000,
        shardOffset=pb.ShardOffset(recordOffset=pb.RecordId(
            shardId=shard, batchId=batch, batchIndex=0))), timeout=30)
    try:
        return list(stub.ReadShard(pb.ReadShardRequest(readerId=rid, maxRecords=1),
                                   timeout=30).receivedRecords)
    finally:
        stub.DeleteShardReader(pb.DeleteShardReaderRequest(readerId=rid), timeout=30)


def http(srv, method, path):
    req = urllib.request.Request(f"http://127.0.0.1:{srv.http_port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read().decode()
            return r.status, (json.loads(body) if body.startswith("{") else body)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


def metric(srv, name, sub_id):
    _, text = http(srv, "GET", "/metrics")
    for line in text.splitlines():
        if line.startswith(name + "{") and f'subscription="{sub_id}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def flip_middle_of_sealed_segment(data_dir, shard):
    segs = sorted((data_dir / "shards" / str(shard)).glob("*.log"))
    assert len(segs) >= 3, f"want sealed segments to damage, have {segs}"
    victim = segs[1]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    victim.write_bytes(bytes(raw))


def test_held_at_damage_then_skipped_by_the_operator(start_server, tmp_path):
    data_dir = tmp_path / "data"
    srv = start_server("--segment-bytes", "4096", data_dir=data_dir)
    stream, sub_id = uid("st"), uid("sub")

    async def load():
        async with connect(srv) as c:
            await c.create_stream(stream, shard_count=2)
            return await append_spread(c, stream, n_batches=300, batch_size=2, tag="d")

    records = run(load())
    stub = srv.stub()
    create_subscription_raw(stub, sub_id, stream, ack_timeout=600)
    shards = sorted({rid[0] for rid, _ in records})
    damaged_shard, other_shard = shards
    srv.stop()
    flip_middle_of_sealed_segment(data_dir, damaged_shard)
    srv.start()
    stub = srv.stub()

    # What readers can serve of the damaged shard: up to the first DATA_LOSS.
    readable = {rid for rid, _ in records if rid[0] == other_shard}

    async def consume_until_held():
        async with connect(srv) as c:
            run1 = ConsumerRun(c, sub_id).start()
            await wait_until(lambda: run1.finished, 60, "the consumer's stream to end")
            return run1

    run1 = run(consume_until_held())
    assert run1.error is not None, f"the consumer was not told: {run1.exception!r}"
    assert run1.error.code() == grpc.StatusCode.DATA_LOSS, run1.error
    message = run1.error.details()
    assert f"shard {damaged_shard}" in message and "skip-damaged" in message, message
    got1 = set(run1.log.deliveries)
    held = held_via_grpc(stub, sub_id)
    assert list(held) == [damaged_shard], held
    hold_at = held[damaged_shard]
    before = {rid for rid, _ in records if rid[0] == damaged_shard and rid[1] < hold_at}
    assert before <= got1, "records before the damage were not all delivered"
    assert not {r for r in got1 if r[0] == damaged_shard and r[1] >= hold_at}, \
        "a record at or after the hold was delivered"
    # The batch it holds at really is unreadable.
    try:
        read_batch(stub, stream, damaged_shard, hold_at)
        raise AssertionError("the held batch is readable")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.DATA_LOSS, e

    status, body = http(srv, "GET", f"/api/v1/subscriptions/{sub_id}")
    assert status == 200 and [h["shard"] for h in body["held"]] == [damaged_shard], body
    assert body["held"][0]["batch"] == hold_at and "corrupt" in body["held"][0]["reason"], body
    assert metric(srv, "streamcell_subscription_held_shards", sub_id) == 1
    assert metric(srv, "streamcell_subscription_damage_holds_total", sub_id) == 1

    # A consumer that joins again gets the rest of the other shard and nothing of the held
    # one, and its stream is not ended again for the same hold.
    async def consume_rest(expect, seen):
        async with connect(srv) as c:
            r = ConsumerRun(c, sub_id).start()
            await wait_until(lambda: expect <= (seen | set(r.log.deliveries)) or r.finished,
                             60, "the remaining records")
            await asyncio.sleep(0.3)
            finished = r.finished
            await r.stop()
            return r, finished

    run2, ended = run(consume_rest(readable | before, got1))
    assert not ended, f"the stream ended again: {run2.error!r}"
    assert readable <= got1 | set(run2.log.deliveries)
    assert not {r for r in run2.log.deliveries if r[0] == damaged_shard and r[1] >= hold_at}

    # The operator accepts the loss; delivery resumes after the unreadable batches.
    status, body = http(srv, "POST", f"/api/v1/subscriptions/{sub_id}/skip-damaged")
    assert status == 200, body
    [skip] = body["skipped"]
    assert skip["shard"] == damaged_shard and skip["from"] == hold_at, body
    assert skip["to"] > hold_at, body
    # Every skipped batch is one readers refuse; the first one after them is readable.
    assert read_batch(stub, stream, damaged_shard, skip["to"])
    for batch in range(skip["from"], skip["to"]):
        try:
            read_batch(stub, stream, damaged_shard, batch)
            raise AssertionError(f"skipped batch {batch} is readable")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.DATA_LOSS, e
    lost = {rid for rid, _ in records
            if rid[0] == damaged_shard and skip["from"] <= rid[1] < skip["to"]}
    everything_else = {rid for rid, _ in records} - lost
    assert http(srv, "GET", f"/api/v1/subscriptions/{sub_id}")[1]["held"] == []
    assert held_via_grpc(stub, sub_id) == {}
    assert metric(srv, "streamcell_subscription_held_shards", sub_id) == 0
    assert metric(srv, "streamcell_subscription_skipped_batches_total", sub_id) == \
        skip["to"] - skip["from"]

    run3, ended = run(consume_rest(everything_else, got1 | set(run2.log.deliveries)))
    delivered = got1 | set(run2.log.deliveries) | set(run3.log.deliveries)
    assert everything_else <= delivered, sorted(everything_else - delivered)[:10]
    assert not delivered & lost

    # The skip is durable: after a crash nothing of the held range comes back and nothing is
    # held again.
    srv.kill()
    srv.start()
    stub = srv.stub()
    assert held_via_grpc(stub, sub_id) == {}
    status, body = http(srv, "POST", f"/api/v1/subscriptions/{sub_id}/skip-damaged")
    assert (status, body) == (200, {"skipped": []})


def test_skip_damaged_errors(start_server):
    srv = start_server()
    stream, sub_id = uid("st"), uid("sub")

    async def load():
        async with connect(srv) as c:
            await c.create_stream(stream, shard_count=1)

    run(load())
    create_subscription_raw(srv.stub(), sub_id, stream)
    status, body = http(srv, "POST", "/api/v1/subscriptions/nope/skip-damaged")
    assert status == 404 and "nope" in body["message"], body
    status, body = http(srv, "POST", f"/api/v1/subscriptions/{sub_id}/skip-damaged?shard=x")
    assert status == 400 and "shard" in body["message"], body
    status, body = http(srv, "POST", f"/api/v1/subscriptions/{sub_id}/skip-damaged?shard=999999")
    assert status == 400 and "999999" in body["message"], body
    status, body = http(srv, "POST", f"/api/v1/subscriptions/{sub_id}/skip-damaged")
    assert (status, body) == (200, {"skipped": []})
    status, body = http(srv, "GET", f"/api/v1/subscriptions/{sub_id}/skip-damaged")
    assert status == 405, body
