"""Stream metadata: create / list / get / delete, shards and their key ranges."""

import time

import grpc
import pytest

from helpers import (MAX_KEY, arpc_error, assert_rpc_error, connect, expected_ranges, pb, read_all,
                     rpc_error, run, uid)

STREAM_NOT_FOUND = pb.ErrorCode.Value("StreamNotFound")
STREAM_EXISTS = pb.ErrorCode.Value("StreamExists")


def test_create_list_delete(server):
    name = uid()

    async def main():
        async with connect(server) as client:
            await client.create_stream(name)
            listed = {s.name: s for s in await client.list_streams()}
            assert name in listed
            assert listed[name].replication_factor == 1
            await client.delete_stream(name)
            assert name not in {s.name for s in await client.list_streams()}

    run(main())


def test_create_returns_stream_with_creation_time(server):
    name = uid()
    before = int(time.time())
    resp = server.stub().CreateStream(
        pb.Stream(streamName=name, replicationFactor=2, backlogDuration=600, shardCount=2), timeout=10)
    assert resp.streamName == name
    assert resp.replicationFactor == 2
    assert resp.backlogDuration == 600
    assert resp.shardCount == 2
    assert before - 5 <= resp.creationTime.seconds <= time.time() + 5


def test_replication_factor_backlog_and_shard_count_shown_back(server):
    name = uid()

    async def main():
        async with connect(server) as client:
            await client.create_stream(name, replication_factor=3, backlog=3600, shard_count=4)
            listed = {s.name: s for s in await client.list_streams()}
            assert listed[name].replication_factor == 3

    run(main())
    stub = server.stub()
    got = stub.GetStream(pb.GetStreamRequest(name=name), timeout=10).stream
    assert got.streamName == name
    assert got.replicationFactor == 3
    assert got.backlogDuration == 3600
    assert got.shardCount == 4
    assert got.creationTime.seconds > 0
    (listed,) = [s for s in stub.ListStreams(pb.ListStreamsRequest(), timeout=10).streams if s.streamName == name]
    assert (listed.replicationFactor, listed.backlogDuration, listed.shardCount) == (3, 3600, 4)


def test_backlog_zero_means_unlimited(server):
    name = uid()
    run(_create(server, name, backlog=0))
    got = server.stub().GetStream(pb.GetStreamRequest(name=name), timeout=10).stream
    assert got.backlogDuration == 0


async def _create(server, name, **kw):
    async with connect(server) as client:
        await client.create_stream(name, **kw)


def test_list_many_streams(server):
    names = [uid() for _ in range(10)]

    async def main():
        async with connect(server) as client:
            for n in names:
                await client.create_stream(n)
            listed = [s.name for s in await client.list_streams()]
            assert sorted(set(listed) & set(names)) == sorted(names)
            assert len(listed) == len(set(listed)), "ListStreams returned duplicates"

    run(main())


def test_create_existing_stream_already_exists(server):
    name = uid()

    async def main():
        async with connect(server) as client:
            await client.create_stream(name)
            err = await arpc_error(client.create_stream(name))
            assert_rpc_error(err, grpc.StatusCode.ALREADY_EXISTS, STREAM_EXISTS)

    run(main())


def test_delete_unknown_stream(server):
    async def main():
        async with connect(server) as client:
            err = await arpc_error(client.delete_stream(uid("missing")))
            assert_rpc_error(err, grpc.StatusCode.NOT_FOUND, STREAM_NOT_FOUND)
            # ignore_non_exist turns it into a no-op.
            await client.delete_stream(uid("missing"), ignore_non_exist=True)

    run(main())


def test_delete_twice_and_ignore_non_exist(server):
    name = uid()

    async def main():
        async with connect(server) as client:
            await client.create_stream(name)
            await client.delete_stream(name)
            err = await arpc_error(client.delete_stream(name))
            assert_rpc_error(err, grpc.StatusCode.NOT_FOUND, STREAM_NOT_FOUND)
            await client.delete_stream(name, ignore_non_exist=True)

    run(main())


def test_delete_force_and_recreate(server):
    name = uid()

    async def main():
        async with connect(server) as client:
            await client.create_stream(name, shard_count=2)
            rids = list(await client.append(name, [b"before delete"]))
            assert len(rids) == 1
            await client.delete_stream(name, force=True)
            assert name not in {s.name for s in await client.list_streams()}
            err = await arpc_error(client.delete_stream(name, force=True))
            assert_rpc_error(err, grpc.StatusCode.NOT_FOUND, STREAM_NOT_FOUND)

        # A new client (the old one caches shards forever): the name is free again and the
        # recreated stream starts empty.
        async with connect(server) as client:
            await client.create_stream(name, shard_count=1)
            shards = await client.list_shards(name)
            assert len(shards) == 1
            assert await read_all(client, name, shards[0].id) == []

    run(main())


def test_get_stream_unknown(server):
    err = rpc_error(server.stub().GetStream, pb.GetStreamRequest(name=uid("missing")), timeout=10)
    assert_rpc_error(err, grpc.StatusCode.NOT_FOUND, STREAM_NOT_FOUND)


def test_list_streams_with_prefix(server):
    tag = uid("pfx")
    wanted = [f"{tag}_a", f"{tag}_b", f"{tag}_c"]
    others = [f"other_{tag}", uid()]
    stub = server.stub()
    for n in wanted + others:
        stub.CreateStream(pb.Stream(streamName=n, replicationFactor=1, shardCount=1), timeout=10)
    got = stub.ListStreamsWithPrefix(pb.ListStreamsWithPrefixRequest(prefix=tag), timeout=10).streams
    assert sorted(s.streamName for s in got) == sorted(wanted)
    assert all(s.replicationFactor == 1 and s.shardCount == 1 for s in got)
    none = stub.ListStreamsWithPrefix(pb.ListStreamsWithPrefixRequest(prefix=uid("nothing")), timeout=10)
    assert list(none.streams) == []


@pytest.mark.parametrize("shard_count", [1, 2, 3])
def test_shard_ranges_are_decimal_key_space_split(server, shard_count):
    name = uid()

    async def main():
        async with connect(server) as client:
            await client.create_stream(name, shard_count=shard_count)
            return await client.list_shards(name)

    shards = run(main())
    assert len(shards) == shard_count
    assert len({s.id for s in shards}) == shard_count, "shard ids must be distinct"
    assert all(s.stream_name == name for s in shards)
    got = sorted((s.start, s.end) for s in shards)
    assert got == expected_ranges(shard_count)
    assert got[0][0] == 0 and got[-1][1] == MAX_KEY

    # Raw view: decimal strings, active.
    raw = server.stub().ListShards(pb.ListShardsRequest(streamName=name), timeout=10).shards
    for sh in raw:
        assert sh.startHashRangeKey == str(int(sh.startHashRangeKey))
        assert sh.endHashRangeKey == str(int(sh.endHashRangeKey))
        assert sh.isActive
        assert sh.streamName == name


def test_shard_ids_distinct_across_streams(server):
    stub = server.stub()
    ids = []
    for _ in range(3):
        name = uid()
        stub.CreateStream(pb.Stream(streamName=name, replicationFactor=1, shardCount=2), timeout=10)
        ids += [s.shardId for s in stub.ListShards(pb.ListShardsRequest(streamName=name), timeout=10).shards]
    assert len(ids) == len(set(ids)) == 6


def test_valid_name_edge_cases(server):
    names = ["a", "A-b_9", "x" * 255, uid("Mixed-Case_")]

    async def main():
        async with connect(server) as client:
            for n in names:
                await client.create_stream(n)
            listed = {s.name for s in await client.list_streams()}
            assert set(names) <= listed

    run(main())
