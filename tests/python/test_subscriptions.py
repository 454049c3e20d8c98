"""Subscriptions: CRUD with its error codes, EARLIEST vs LATEST, GetSubscription offsets as
records are acked, DeleteSubscription with and without force, and DeleteStream(force) on a
stream that still has subscriptions."""

import asyncio
import time

import grpc
import pytest
from google.protobuf import empty_pb2

from helpers import (ConsumerRun, append_spread, arpc_error, assert_rpc_error, connect, consumer_names,
                     create_subscription_raw, pb, read_all, rid_tuple, rpc_error, run, stop_all, subscription_offsets,
                     uid, wait_until)

E = pb.ErrorCode.Value
INVALID, NOT_FOUND, EXISTS, PRECONDITION = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                            grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION)


def _sub(stub, sub_id) -> pb.GetSubscriptionResponse:
    return stub.GetSubscription(pb.GetSubscriptionRequest(id=sub_id), timeout=30)


# --------------------------------------------------------------------------------------
# Create / get / list / check / lookup


def test_create_returns_subscription_and_crud_calls_see_it(server):
    stub = server.stub()
    stream = uid("st")
    stub.CreateStream(pb.Stream(streamName=stream, replicationFactor=1, shardCount=3), timeout=30)
    sub_id = uid("sub")
    before = time.time()
    got = create_subscription_raw(stub, sub_id, stream, ack_timeout=17, max_unacks=123, offset="LATEST")
    after = time.time()
    assert (got.subscriptionId, got.streamName, got.ackTimeoutSeconds, got.maxUnackedRecords, got.offset) == \
        (sub_id, stream, 17, 123, pb.SpecialOffset.LATEST)
    assert got.HasField("creationTime")
    created = got.creationTime.seconds + got.creationTime.nanos / 1e9
    assert before - 2 <= created <= after + 2, (before, created, after)

    # GetSubscription: the same subscription, one offset per shard.
    resp = _sub(stub, sub_id)
    s = resp.subscription
    assert (s.subscriptionId, s.streamName, s.ackTimeoutSeconds, s.maxUnackedRecords, s.offset) == \
        (sub_id, stream, 17, 123, pb.SpecialOffset.LATEST)
    assert s.creationTime == got.creationTime
    shard_ids = {sh.shardId for sh in stub.ListShards(pb.ListShardsRequest(streamName=stream), timeout=30).shards}
    assert {o.shardId for o in resp.offsets} == shard_ids
    assert len(resp.offsets) == 3

    # ListSubscriptions (also with the client's None request), with prefix, check, lookup.
    other = uid("other")
    create_subscription_raw(stub, other, stream)
    listed = {x.subscriptionId: x for x in stub.ListSubscriptions(pb.ListSubscriptionsRequest(), timeout=30).subscription}
    assert {sub_id, other} <= set(listed)
    assert listed[sub_id].streamName == stream and listed[sub_id].ackTimeoutSeconds == 17
    assert listed[sub_id].maxUnackedRecords == 123
    pref = stub.ListSubscriptionsWithPrefix(pb.ListSubscriptionsWithPrefixRequest(prefix="sub_"), timeout=30)
    ids = [x.subscriptionId for x in pref.subscription]
    assert sub_id in ids and other not in ids and all(i.startswith("sub_") for i in ids)
    none = stub.ListSubscriptionsWithPrefix(pb.ListSubscriptionsWithPrefixRequest(prefix="zzz_nothing"), timeout=30)
    assert list(none.subscription) == []

    assert stub.CheckSubscriptionExist(pb.CheckSubscriptionExistRequest(subscriptionId=sub_id), timeout=30).exists
    assert not stub.CheckSubscriptionExist(pb.CheckSubscriptionExistRequest(subscriptionId="nope_x"), timeout=30).exists

    (node,) = stub.DescribeCluster(empty_pb2.Empty(), timeout=30).serverNodes
    look = stub.LookupSubscription(pb.LookupSubscriptionRequest(subscriptionId=sub_id), timeout=30)
    assert look.subscriptionId == sub_id
    assert (look.serverNode.host, look.serverNode.port) == (server.host, server.port)
    assert look.serverNode.id == node.id
    err = rpc_error(stub.LookupSubscription, pb.LookupSubscriptionRequest(subscriptionId="nope_x"), timeout=30)
    assert_rpc_error(err, NOT_FOUND)
    err = rpc_error(stub.GetSubscription, pb.GetSubscriptionRequest(id="nope_x"), timeout=30)
    assert_rpc_error(err, NOT_FOUND, E("SubscriptionNotFound"))
    err = rpc_error(stub.ListConsumers, pb.ListConsumersRequest(subscriptionId="nope_x"), timeout=30)
    assert_rpc_error(err, NOT_FOUND)

    # The official client's calls.
    async def main():
        async with connect(server) as client:
            subs = {s.subscription_id: s for s in await client.list_subscriptions()}
            assert subs[sub_id].stream_name == stream
            assert (subs[sub_id].ack_timeout, subs[sub_id].max_unacks) == (17, 123)
            assert await client.does_subscription_exist(sub_id)
            assert not await client.does_subscription_exist(uid("missing"))
            third = uid("sub")
            await client.create_subscription(third, stream)  # client defaults: 600 s, 10000, LATEST
            s3 = _sub(stub, third).subscription
            assert (s3.ackTimeoutSeconds, s3.maxUnackedRecords, s3.offset) == (600, 10000, pb.SpecialOffset.LATEST)
            await client.delete_subscription(third)
            assert not await client.does_subscription_exist(third)

    run(main())


@pytest.mark.parametrize("bad", ["", "1abc", "a b", "a" * 256, "_abc", "a.b", "a/b"],
                         ids=["empty", "digit-first", "space", "256-chars", "underscore-first", "dot", "slash"])
def test_invalid_subscription_id(server, bad):
    stub = server.stub()
    stream = uid("st")
    stub.CreateStream(pb.Stream(streamName=stream, replicationFactor=1, shardCount=1), timeout=30)
    err = rpc_error(create_subscription_raw, stub, bad, stream)
    assert_rpc_error(err, INVALID, E("SubscriptionInvalidObjectIdentifier"))
    assert bad not in {s.subscriptionId for s in stub.ListSubscriptions(pb.ListSubscriptionsRequest()).subscription}


def test_create_errors(server):
    stub = server.stub()
    stream = uid("st")
    stub.CreateStream(pb.Stream(streamName=stream, replicationFactor=1, shardCount=1), timeout=30)

    err = rpc_error(create_subscription_raw, stub, uid("sub"), uid("nostream"))
    assert_rpc_error(err, PRECONDITION, E("SubscriptionCreationOnNonExistentStream"))

    sub_id = uid("sub")
    create_subscription_raw(stub, sub_id, stream, ack_timeout=5)
    err = rpc_error(create_subscription_raw, stub, sub_id, stream, ack_timeout=9)
    assert_rpc_error(err, EXISTS, E("SubscriptionExists"))
    assert _sub(stub, sub_id).subscription.ackTimeoutSeconds == 5, "a failed re-create changed the subscription"

    for ack_timeout in (0, -1, 36001, 2**31 - 1):
        err = rpc_error(create_subscription_raw, stub, uid("sub"), stream, ack_timeout=ack_timeout)
        assert_rpc_error(err, INVALID)
    for max_unacks in (0, -5):
        err = rpc_error(create_subscription_raw, stub, uid("sub"), stream, max_unacks=max_unacks)
        assert_rpc_error(err, INVALID)
    # Bounds that are fine.
    for ack_timeout, max_unacks in ((1, 1), (36000, 2**31 - 1)):
        s = create_subscription_raw(stub, uid("sub"), stream, ack_timeout=ack_timeout, max_unacks=max_unacks)
        assert (s.ackTimeoutSeconds, s.maxUnackedRecords) == (ack_timeout, max_unacks)
    # Only the valid ones exist.
    ids = [s.subscriptionId for s in stub.ListSubscriptions(pb.ListSubscriptionsRequest()).subscription]
    assert len(ids) == 3 and len(set(ids)) == 3

    # Through the official client: its errors are grpc.aio.AioRpcError unchanged.
    async def main():
        async with connect(server) as client:
            e = await arpc_error(client.create_subscription(sub_id, stream))
            assert_rpc_error(e, EXISTS, E("SubscriptionExists"))
            e = await arpc_error(client.create_subscription(uid("sub"), uid("nostream")))
            assert_rpc_error(e, PRECONDITION, E("SubscriptionCreationOnNonExistentStream"))

    run(main())


# --------------------------------------------------------------------------------------
# Offsets


def test_earliest_vs_latest(server):
    stub = server.stub()

    async def main():
        async with connect(server) as client:
            stream = uid("st")
            await client.create_stream(stream, shard_count=3)
            old = await append_spread(client, stream, 6, 2, tag="old")
            early, late = uid("early"), uid("late")
            create_subscription_raw(stub, early, stream, offset="EARLIEST")
            create_subscription_raw(stub, late, stream, offset="LATEST")
            new = await append_spread(client, stream, 6, 2, tag="new")
            ce = ConsumerRun(client, early).start()
            cl = ConsumerRun(client, late).start()
            try:
                await ce.wait_count(len(old) + len(new))
                await cl.wait_count(len(new))
                more = await append_spread(client, stream, 3, 1, tag="more")
                await ce.wait_count(len(old) + len(new) + len(more))
                await cl.wait_count(len(new) + len(more))
                # Nothing else arrives (everything acked, no redelivery, no old records).
                await asyncio.sleep(0.3)
                assert sorted(ce.ids()) == sorted(r for r, _ in old + new + more)
                assert sorted(cl.ids()) == sorted(r for r, _ in new + more)
                payload = dict(old + new + more)
                assert all(r.payload == payload[rid_tuple(r.id)] for r in ce.records + cl.records)
                # Per shard, in order.
                for c in (ce, cl):
                    for shard in c.shards():
                        seq = [i for i in c.ids() if i[0] == shard]
                        assert seq == sorted(seq), f"shard {shard} out of order: {seq}"
            finally:
                await stop_all([ce, cl])

    run(main())


def test_offsets_advance_as_records_are_acked(server):
    stub = server.stub()

    async def main():
        async with connect(server) as client:
            stream = uid("st")
            await client.create_stream(stream, shard_count=1)
            batches = [[rid_tuple(r) for r in await client.append(stream, [f"b{b}-{i}" for i in range(3)])]
                       for b in range(4)]
            shard = batches[0][0][0]
            bids = [b[0][1] for b in batches]
            assert bids == sorted(bids) and len(set(bids)) == 4
            sub_id = uid("sub")
            create_subscription_raw(stub, sub_id, stream, offset="EARLIEST", ack_timeout=600)
            assert subscription_offsets(stub, sub_id) == {shard: bids[0]}

            c = ConsumerRun(client, sub_id, ack=False).start()
            try:
                await c.wait_count(12)

                async def offset_becomes(want):
                    await wait_until(lambda: subscription_offsets(stub, sub_id).get(shard) == want, 5,
                                     lambda: f"offset {want}, have {subscription_offsets(stub, sub_id)}")

                # Partial ack of batch 0: no progress.
                await c.ack(batches[0][:2])
                await c.ack([batches[2][0], batches[2][1], batches[2][2]])  # batch 2 fully, out of order
                await c.drain()
                await asyncio.sleep(0.3)
                assert subscription_offsets(stub, sub_id) == {shard: bids[0]}
                # Finish batch 0 -> batch 1 is the first not fully acked.
                await c.ack(batches[0][2:])
                await offset_becomes(bids[1])
                # Batch 1 index 1 and 0 -> still batch 1; then the last one -> jumps past batch 2.
                await c.ack([batches[1][1], batches[1][0]])
                await c.drain()
                await asyncio.sleep(0.3)
                assert subscription_offsets(stub, sub_id) == {shard: bids[1]}
                await c.ack([batches[1][2]])
                await offset_becomes(bids[3])
                await c.ack(batches[3])
                await wait_until(lambda: subscription_offsets(stub, sub_id)[shard] > bids[3], 5,
                                 lambda: f"offset past {bids[3]}: {subscription_offsets(stub, sub_id)}")
                # The next batch appended is the first one not fully acked.
                (nxt,) = [rid_tuple(r) for r in await client.append(stream, ["next"])]
                assert subscription_offsets(stub, sub_id) == {shard: nxt[1]}
                await c.wait_count(13)
                await c.ack([nxt])
                await wait_until(lambda: subscription_offsets(stub, sub_id)[shard] > nxt[1], 5, "offset past next")
            finally:
                await stop_all([c])

    run(main())


def test_offsets_on_multi_shard_stream_with_latest(server):
    stub = server.stub()

    async def main():
        async with connect(server) as client:
            stream = uid("st")
            await client.create_stream(stream, shard_count=4)
            before = await append_spread(client, stream, 8, 1)
            sub_id = uid("sub")
            create_subscription_raw(stub, sub_id, stream, offset="LATEST")
            last = {}
            for rid, _ in before:
                last[rid[0]] = max(last.get(rid[0], 0), rid[1])
            offs = subscription_offsets(stub, sub_id)
            assert set(offs) == set(last)
            # LATEST: starts after the current tail of every shard.
            assert all(offs[s] > last[s] for s in last), (offs, last)
            after = await append_spread(client, stream, 4, 2)
            first_new = {}
            for rid, _ in after:
                first_new.setdefault(rid[0], rid[1])
            assert subscription_offsets(stub, sub_id) == {s: first_new.get(s, offs[s]) for s in offs}
            c = ConsumerRun(client, sub_id).start()
            try:
                await c.wait_count(len(after))
                last_new = {}
                for rid, _ in after:
                    last_new[rid[0]] = max(last_new.get(rid[0], 0), rid[1])
                await wait_until(lambda: all(subscription_offsets(stub, sub_id)[s] > last_new[s] for s in last_new),
                                 5, lambda: f"offsets past {last_new}: {subscription_offsets(stub, sub_id)}")
                assert sorted(c.ids()) == sorted(r for r, _ in after)
            finally:
                await stop_all([c])

    run(main())


# --------------------------------------------------------------------------------------
# Delete


def test_delete_subscription(server):
    stub = server.stub()

    async def main():
        async with connect(server) as client:
            stream = uid("st")
            await client.create_stream(stream, shard_count=2)
            sub_id = uid("sub")
            create_subscription_raw(stub, sub_id, stream)
            # No consumers: plain delete works.
            stub.DeleteSubscription(pb.DeleteSubscriptionRequest(subscriptionId=sub_id), timeout=30)
            assert not stub.CheckSubscriptionExist(pb.CheckSubscriptionExistRequest(subscriptionId=sub_id)).exists
            assert_rpc_error(rpc_error(stub.GetSubscription, pb.GetSubscriptionRequest(id=sub_id), timeout=30),
                             NOT_FOUND, E("SubscriptionNotFound"))
            err = rpc_error(stub.DeleteSubscription, pb.DeleteSubscriptionRequest(subscriptionId=sub_id), timeout=30)
            assert_rpc_error(err, NOT_FOUND, E("SubscriptionNotFound"))
            err = rpc_error(stub.DeleteSubscription,
                            pb.DeleteSubscriptionRequest(subscriptionId=uid("never"), force=True), timeout=30)
            assert_rpc_error(err, NOT_FOUND, E("SubscriptionNotFound"))
            # The id can be used again.
            create_subscription_raw(stub, sub_id, stream)

            records = await append_spread(client, stream, 4, 2)
            c1 = ConsumerRun(client, sub_id, ack=False).start()
            c2 = ConsumerRun(client, sub_id, ack=False).start()
            try:
                await wait_until(lambda: len(consumer_names(stub, sub_id)) == 2, 5, "2 consumers")
                await wait_until(lambda: len(c1.records) + len(c2.records) >= len(records), 10, "records delivered")
                err = rpc_error(stub.DeleteSubscription, pb.DeleteSubscriptionRequest(subscriptionId=sub_id),
                                timeout=30)
                assert_rpc_error(err, PRECONDITION, E("SubscriptionFoundActiveConsumers"))
                e = await arpc_error(client.delete_subscription(sub_id))
                assert_rpc_error(e, PRECONDITION, E("SubscriptionFoundActiveConsumers"))
                # Nothing happened to the consumers: they still receive.
                assert not c1.finished and not c2.finished
                more = await append_spread(client, stream, 2, 1, tag="more")
                await wait_until(lambda: len(c1.records) + len(c2.records) >= len(records) + len(more), 10,
                                 "records after the refused delete")
                assert stub.CheckSubscriptionExist(pb.CheckSubscriptionExistRequest(subscriptionId=sub_id)).exists

                # force: the fetch streams end with CANCELLED and the subscription is gone.
                await client.delete_subscription(sub_id, force=True)
                await c1.wait(10)
                await c2.wait(10)
                for c in (c1, c2):
                    assert c.exception is None, c.exception
                    assert c.error is not None, f"{c.name}: stream ended without an error"
                    assert c.error.code() == grpc.StatusCode.CANCELLED, (c.error.code(), c.error.details())
                assert not stub.CheckSubscriptionExist(pb.CheckSubscriptionExistRequest(subscriptionId=sub_id)).exists
                assert sub_id not in {s.subscription_id for s in await client.list_subscriptions()}
                assert_rpc_error(rpc_error(stub.ListConsumers, pb.ListConsumersRequest(subscriptionId=sub_id)),
                                 NOT_FOUND)
                # A consumer for the deleted subscription is refused.
                c3 = ConsumerRun(client, sub_id).start()
                await c3.wait(10)
                assert c3.error is not None and c3.error.code() == NOT_FOUND, c3.error
            finally:
                await stop_all([c1, c2])
            # With no consumer left, the stream can be deleted without force.
            await client.delete_stream(stream)

    run(main())


def test_delete_stream_with_subscriptions(server):
    stub = server.stub()

    async def main():
        stream = uid("st")
        async with connect(server) as client:
            await client.create_stream(stream, shard_count=2)
            old = await append_spread(client, stream, 6, 2, tag="old")
            sub_id, sub2 = uid("sub"), uid("sub")
            create_subscription_raw(stub, sub_id, stream, offset="EARLIEST")
            create_subscription_raw(stub, sub2, stream, offset="EARLIEST")

            err = await arpc_error(client.delete_stream(stream))
            assert_rpc_error(err, PRECONDITION, E("StreamFoundSubscription"))
            assert stream in {s.name for s in await client.list_streams()}

            # Consume part of the old stream before the forced delete.
            c = ConsumerRun(client, sub_id).start()
            await c.wait_count(4)
            c.freeze()
            done = set(c.acked)
            await c.close()  # graceful: the acks queued before it reach the server first

            await client.delete_stream(stream, force=True)
            assert stream not in {s.name for s in await client.list_streams()}
            assert_rpc_error(rpc_error(stub.GetStream, pb.GetStreamRequest(name=stream), timeout=30), NOT_FOUND)
            # The subscriptions survive; like HStreamDB they now name the archived stream
            # (GetSubscription and ListSubscriptions agree).
            archived = _sub(stub, sub_id).subscription.streamName
            assert archived.startswith("__deleted_stream__") and stream in archived
            listed = {s.subscriptionId: s.streamName
                      for s in stub.ListSubscriptions(pb.ListSubscriptionsRequest(), timeout=30).subscription}
            assert listed[sub_id] == archived
            # New subscriptions on the name fail while it does not exist.
            err = rpc_error(create_subscription_raw, stub, uid("sub"), stream)
            assert_rpc_error(err, PRECONDITION, E("SubscriptionCreationOnNonExistentStream"))

        # Re-create: a NEW, empty stream (new client: list_shards is cached per client).
        async with connect(server) as client:
            await client.create_stream(stream, shard_count=3)
            assert len(await client.list_shards(stream)) == 3
            for shard in await client.list_shards(stream):
                assert await read_all(client, stream, shard.id) == [], "the re-created stream is not empty"
            new_sub = uid("sub")
            create_subscription_raw(stub, new_sub, stream, offset="EARLIEST")
            new = await append_spread(client, stream, 3, 2, tag="new")
            new_ids = {r for r, _ in new}
            old_ids = {r for r, _ in old}
            assert not {r[0] for r in old_ids} & {r[0] for r in new_ids}, "the new stream reuses old shard ids"

            # The old subscriptions deliver exactly the old stream's records not yet acked.
            c1 = ConsumerRun(client, sub_id).start()
            c2 = ConsumerRun(client, sub2).start()
            cn = ConsumerRun(client, new_sub).start()
            try:
                await c1.wait_count(len(old_ids - done))
                await c2.wait_count(len(old_ids))
                await cn.wait_count(len(new_ids))
                await asyncio.sleep(0.3)
                assert set(c1.ids()) == old_ids - done and len(c1.ids()) == len(old_ids - done)
                assert set(c2.ids()) == old_ids and len(c2.ids()) == len(old_ids)
                assert set(cn.ids()) == new_ids and len(cn.ids()) == len(new_ids)
                payload = dict(old)
                assert all(r.payload == payload[rid_tuple(r.id)] for r in c1.records + c2.records)
                payload = dict(new)
                assert all(r.payload == payload[rid_tuple(r.id)] for r in cn.records)
            finally:
                await stop_all([c1, c2, cn])
            # A cancel reaches the server asynchronously: wait until it saw the consumers go.
            for sid in (sub_id, sub2, new_sub):
                await wait_until(lambda: not consumer_names(stub, sid), 10, f"consumers of {sid} gone")
            # Deleting the old subscriptions works; the new stream is untouched.
            await client.delete_subscription(sub_id)
            await client.delete_subscription(sub2)
            assert stream in {s.name for s in await client.list_streams()}
            err = await arpc_error(client.delete_stream(stream))
            assert_rpc_error(err, PRECONDITION, E("StreamFoundSubscription"))
            await client.delete_subscription(new_sub)
            await client.delete_stream(stream)
            assert stream not in {s.name for s in await client.list_streams()}

    run(main())
