"""Errors: gRPC status codes + JSON status messages, and the server keeps serving after each."""

import os

import grpc
import pytest

from helpers import (READER_TIMEOUT_MS, arpc_error, assert_rpc_error, connect, create_stream_raw, earliest,
                     pb, raw_append, read_all_raw, rpc_error, run, uid)

E = pb.ErrorCode.Value
INVALID, NOT_FOUND, EXISTS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                              grpc.StatusCode.ALREADY_EXISTS)


def still_serves(srv):
    """After an error: Echo answers and a fresh stream takes and returns an append."""
    stub = srv.stub()
    assert stub.Echo(pb.EchoRequest(msg="alive"), timeout=10).msg == "alive"
    name = uid("canary")
    (shard,) = create_stream_raw(stub, name)
    raw_append(stub, name, shard.shardId, [b"canary"])
    (got,) = read_all_raw(stub, name, shard.shardId)
    assert got.record.batchSize == 1


@pytest.mark.parametrize("bad", ["", "1abc", "a b", "a" * 256, "_abc", "-abc", "a.b", "a/b"],
                         ids=["empty", "digit-first", "space", "256-chars", "underscore-first", "dash-first",
                              "dot", "slash"])
def test_invalid_stream_name(server, bad):
    async def main():
        async with connect(server) as client:
            err = await arpc_error(client.create_stream(bad))
            assert_rpc_error(err, INVALID, E("StreamInvalidObjectIdentifier"))
            assert bad not in {s.name for s in await client.list_streams()}

    run(main())
    still_serves(server)


@pytest.mark.parametrize("factor", [0, 6, 1_000_000, 2**32 - 1])
def test_replication_factor_is_bounded(server, factor):
    name = uid()
    err = rpc_error(server.stub().CreateStream,
                    pb.Stream(streamName=name, replicationFactor=factor, shardCount=1), timeout=10)
    assert_rpc_error(err, INVALID, E("StreamInvalidReplicaFactor"))
    assert "between 1 and 5" in err.details()
    still_serves(server)


def test_shard_count_zero(server):
    name = uid()

    async def main():
        async with connect(server) as client:
            err = await arpc_error(client.create_stream(name, shard_count=0))
            assert_rpc_error(err, INVALID, E("StreamInvalidShardCount"))
            assert name not in {s.name for s in await client.list_streams()}

    run(main())
    still_serves(server)


def test_unknown_stream_append_list_shards_delete(server):
    async def main():
        async with connect(server) as client:
            err = await arpc_error(client.append(uid("missing"), [b"x"]))  # ListShards fails first
            assert_rpc_error(err, NOT_FOUND, E("StreamNotFound"))
            err = await arpc_error(client.list_shards(uid("missing")))
            assert_rpc_error(err, NOT_FOUND, E("StreamNotFound"))
            err = await arpc_error(client.delete_stream(uid("missing")))
            assert_rpc_error(err, NOT_FOUND, E("StreamNotFound"))
            err = await arpc_error(client.create_reader(uid("missing"), uid("r"), earliest(), 100))
            assert_rpc_error(err, NOT_FOUND, E("StreamNotFound"))

    run(main())
    # Raw Append to an unknown stream (bypassing the client's ListShards).
    stub = server.stub()
    err = rpc_error(raw_append, stub, uid("missing"), 1, [b"x"])
    assert_rpc_error(err, NOT_FOUND)
    still_serves(server)


def test_unknown_shard(server):
    stub = server.stub()
    name, other = uid(), uid()
    (shard,) = create_stream_raw(stub, name)
    (other_shard,) = create_stream_raw(stub, other)
    bogus = max(shard.shardId, other_shard.shardId) + 1_000_000

    assert_rpc_error(rpc_error(raw_append, stub, name, bogus, [b"x"]), NOT_FOUND)
    # A shard of another stream is not a shard of this one.
    assert_rpc_error(rpc_error(raw_append, stub, name, other_shard.shardId, [b"x"]), NOT_FOUND)
    assert_rpc_error(rpc_error(stub.GetTailRecordId, pb.GetTailRecordIdRequest(streamName=name, shardId=bogus),
                               timeout=10), NOT_FOUND)
    assert_rpc_error(rpc_error(stub.CreateShardReader, pb.CreateShardReaderRequest(
        streamName=name, shardId=bogus, shardOffset=earliest(), readerId=uid("r"), timeout=100), timeout=10),
        NOT_FOUND)
    assert_rpc_error(rpc_error(stub.TrimShard, pb.TrimShardRequest(
        streamName=name, shardId=bogus, trimPoint=earliest()), timeout=10), NOT_FOUND)
    # Nothing was written anywhere.
    assert read_all_raw(stub, name, shard.shardId) == []
    assert read_all_raw(stub, other, other_shard.shardId) == []
    still_serves(server)


def test_unknown_reader(server):
    async def main():
        async with connect(server) as client:
            err = await arpc_error(client.read_reader(uid("nope"), 10))  # LookupShardReader
            assert_rpc_error(err, NOT_FOUND)
            err = await arpc_error(client.delete_reader(uid("nope")))
            assert_rpc_error(err, NOT_FOUND)

    run(main())
    stub = server.stub()
    assert_rpc_error(rpc_error(stub.ReadShard, pb.ReadShardRequest(readerId=uid("nope"), maxRecords=1),
                               timeout=10), NOT_FOUND)
    assert_rpc_error(rpc_error(stub.DeleteShardReader, pb.DeleteShardReaderRequest(readerId=uid("nope")),
                               timeout=10), NOT_FOUND)
    still_serves(server)


def test_duplicate_stream_and_reader(server):
    stub = server.stub()
    name = uid()
    (shard,) = create_stream_raw(stub, name)
    assert_rpc_error(rpc_error(stub.CreateStream, pb.Stream(streamName=name, replicationFactor=1, shardCount=1),
                               timeout=10), EXISTS, E("StreamExists"))
    rid = uid("r")
    req = pb.CreateShardReaderRequest(streamName=name, shardId=shard.shardId, shardOffset=earliest(),
                                      readerId=rid, timeout=READER_TIMEOUT_MS)
    stub.CreateShardReader(req, timeout=10)
    assert_rpc_error(rpc_error(stub.CreateShardReader, req, timeout=10), EXISTS)
    still_serves(server)


def test_oversized_record(start_server):
    srv = start_server("--max-record-size", "1024")

    async def main():
        async with connect(srv) as client:
            name = uid()
            await client.create_stream(name)
            (shard,) = await client.list_shards(name)
            err = await arpc_error(client.append(name, [os.urandom(2048)]))
            assert_rpc_error(err, INVALID, E("StreamInvalidRecordSize"))
            # Many small records that add up to more than the limit are one oversized batch too.
            err = await arpc_error(client.append(name, [os.urandom(100) for _ in range(20)]))
            assert_rpc_error(err, INVALID, E("StreamInvalidRecordSize"))
            ok = list(await client.append(name, [os.urandom(512)]))
            assert len(ok) == 1
            return name, shard.id

    name, shard_id = run(main())
    got = read_all_raw(srv.stub(), name, shard_id)
    assert len(got) == 1 and got[0].record.batchSize == 1, "rejected batches must not be stored"
    still_serves(srv)


def _raw_batch(stub, name, shard_id, batched: pb.BatchedRecord):
    return rpc_error(stub.Append, pb.AppendRequest(streamName=name, shardId=shard_id, records=batched), timeout=10)


def test_bad_batches_rejected(server):
    stub = server.stub()
    name = uid()
    (shard,) = create_stream_raw(stub, name)
    sid = shard.shardId
    none = pb.CompressionType.Value("None")
    one = pb.BatchHStreamRecords(records=[pb.HStreamRecord(
        header=pb.HStreamRecordHeader(flag=pb.HStreamRecordHeader.Flag.RAW), payload=b"one")]).SerializeToString()

    # Undecodable payload.
    err = _raw_batch(stub, name, sid, pb.BatchedRecord(compressionType=none, batchSize=1, payload=b"\xff\xff\xff"))
    assert_rpc_error(err, INVALID)
    # batchSize 0 (with and without a payload) and an empty payload.
    err = _raw_batch(stub, name, sid, pb.BatchedRecord(compressionType=none, batchSize=0, payload=b""))
    assert_rpc_error(err, INVALID, E("StreamEmptyBatchedRecord"))
    err = _raw_batch(stub, name, sid, pb.BatchedRecord(compressionType=none, batchSize=0, payload=one))
    assert_rpc_error(err, INVALID)
    err = _raw_batch(stub, name, sid, pb.BatchedRecord(compressionType=none, batchSize=1, payload=b""))
    assert_rpc_error(err, INVALID)
    # No records field at all.
    err = rpc_error(stub.Append, pb.AppendRequest(streamName=name, shardId=sid), timeout=10)
    assert_rpc_error(err, INVALID)
    # batchSize disagreeing with the records in the payload: readers (the official client)
    # raise on such a batch, so it must not be stored.
    err = _raw_batch(stub, name, sid, pb.BatchedRecord(compressionType=none, batchSize=2, payload=one))
    assert_rpc_error(err, INVALID)

    assert read_all_raw(stub, name, sid) == [], "rejected batches must not be stored"
    raw_append(stub, name, sid, [b"good"])
    assert len(read_all_raw(stub, name, sid)) == 1
    still_serves(server)


def test_empty_append_from_client(server):
    async def main():
        async with connect(server) as client:
            name = uid()
            await client.create_stream(name)
            err = await arpc_error(client.append(name, []))
            assert_rpc_error(err, INVALID, E("StreamEmptyBatchedRecord"))

    run(main())
    still_serves(server)


@pytest.mark.parametrize("method,body", [
    ("CreateStream", b"\xff\xff\xff\xff"),          # a varint that never ends
    ("Append", b"\x1a\x7f\x00"),                     # field 3 claims 127 bytes, has 1
    ("CreateShardReader", b"\x0b\x0c"),              # group wire types
    ("ListShards", bytes(range(256))),
])
def test_garbage_request_bodies_are_invalid_argument(server, method, body):
    """A body that is not protobuf is a bad request (INVALID_ARGUMENT), not a server fault
    (INTERNAL); the server keeps serving."""
    ch = server.channel()
    call = ch.unary_unary(f"/hstream.server.HStreamApi/{method}",
                          request_serializer=lambda raw: raw,
                          response_deserializer=lambda raw: raw)
    with pytest.raises(grpc.RpcError) as err:
        call(body, timeout=10)
    assert err.value.code() == INVALID, (err.value.code(), err.value.details())
    assert "protobuf" in err.value.details()
    assert server.stub().Echo(pb.EchoRequest(msg="still here"), timeout=10).msg == "still here"
