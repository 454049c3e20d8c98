"""Consumers (StreamingFetch through the official client's new_consumer/start): consumer
groups and shard ownership, consumers leaving (stop, cancel, vanished process), ack-timeout
redelivery, maxUnackedRecords back-pressure, duplicate names, bad acks, ListConsumers, and a
flood of consumers joining and leaving."""

import asyncio
import random
import sys
import time

import grpc
import pytest
from google.protobuf import empty_pb2

from helpers import (ConsumerRun, DeliveryLog, append_spread, assert_rpc_error, connect, consumer_names,
                     create_subscription_raw, keys_covering_shards, pb, rid_tuple, run, shard_for_key, stop_all,
                     subscription_offsets, uid, wait_until)

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _per_shard_first_deliveries_in_order(log: DeliveryLog):
    """Per consumer and shard, records delivered there for the first time (not redeliveries)
    arrive in increasing RecordId order."""
    seen = set()
    seqs = {}
    for _, who, rid, kind in log.events:
        if kind != "deliver" or rid in seen:
            continue
        seen.add(rid)
        seqs.setdefault((who, rid[0]), []).append(rid)
    for (who, shard), seq in seqs.items():
        assert seq == sorted(seq), f"{who}: shard {shard} first deliveries out of order: {seq}"


def _owners(log: DeliveryLog, rids) -> dict:
    """shard -> set of consumers that received (first deliveries of) these records."""
    out = {}
    for rid in rids:
        out.setdefault(rid[0], set()).update(log.receivers(rid)[:1])
    return out


async def _all_acked_on_server(stub, sub_id, records, timeout=10):
    """Wait until GetSubscription offsets are past the last batch of every shard in `records`
    (so the server has every ack for them)."""
    last = {}
    for rid in records:
        last[rid[0]] = max(last.get(rid[0], 0), rid[1])
    await wait_until(lambda: all(subscription_offsets(stub, sub_id).get(s, 0) > b for s, b in last.items()),
                     timeout, lambda: f"acks on the server: offsets {subscription_offsets(stub, sub_id)}, last {last}")


# --------------------------------------------------------------------------------------
# Consumer group


@pytest.mark.parametrize("how", ["stop", "cancel"])
def test_group_of_three_then_one_leaves(server, how):
    """3 consumers on 6 shards: 2 shards each, one owner per shard. One leaves while holding
    unacked records (client stop() = call.cancel(), or its task cancelled): its shards and
    its unacked records go to the other two at once (ack timeout is 60 s), every record is
    delivered at least once and acked exactly once."""
    stub = server.stub()

    async def main():
        async with connect(server) as client:
            stream = uid("st")
            await client.create_stream(stream, shard_count=6)
            shards = await client.list_shards(stream)
            keys = [f"key-{i}" for i in range(40)]
            assert len({shard_for_key(shards, k) for k in keys}) == 6
            sub_id = uid("sub")
            create_subscription_raw(stub, sub_id, stream, ack_timeout=60, offset="EARLIEST")
            log = DeliveryLog()
            group = [ConsumerRun(client, sub_id, name=f"member{i}", log=log) for i in range(3)]
            try:
                for c in group:
                    c.start()
                    await wait_until(lambda: c.name in consumer_names(stub, sub_id), 5, f"{c.name} joined")
                assert consumer_names(stub, sub_id) == ["member0", "member1", "member2"]

                # Phase 1: every shard has exactly one owner, 2 shards per consumer.
                p1 = [r for r, _ in await append_spread(client, stream, 60, 5, tag="p1", keys=keys)]
                assert {r[0] for r in p1} == {s.id for s in shards}
                await wait_until(lambda: log.acked_ids() >= set(p1), 10,
                                 lambda: f"phase 1 acked: {len(log.acked_ids() & set(p1))}/{len(p1)}")
                owners = _owners(log, p1)
                assert all(len(o) == 1 for o in owners.values()), f"shards with several owners: {owners}"
                per_consumer = {c.name: {s for s, o in owners.items() if c.name in o} for c in group}
                assert sorted(len(v) for v in per_consumer.values()) == [2, 2, 2], per_consumer
                await _all_acked_on_server(stub, sub_id, p1)

                # Phase 2: the victim stops acking, receives its share, then leaves.
                victim, rest = group[0], group[1:]
                victim.freeze()
                await victim.drain()
                p2 = [r for r, _ in await append_spread(client, stream, 60, 5, tag="p2", keys=keys)]
                await wait_until(lambda: log.delivered_ids() >= set(p2), 10,
                                 lambda: f"phase 2 delivered: {len(log.delivered_ids() & set(p2))}/{len(p2)}")
                held = [r for r in victim.unacked() if r in set(p2)]
                assert held and {r[0] for r in held} == per_consumer[victim.name], \
                    f"victim holds {len(held)} records of shards {({r[0] for r in held})}"
                assert all(log.receivers(r) == [victim.name] for r in held)
                t0 = time.monotonic()
                if how == "stop":
                    await victim.stop()
                else:
                    await victim.cancel()
                assert victim.error is None and victim.exception is None, (victim.error, victim.exception)
                await wait_until(lambda: log.acked_ids() >= set(p1 + p2), 10,
                                 lambda: f"victim's records acked by the others: "
                                         f"{len(set(held) & log.acked_ids())}/{len(held)}")
                moved_after = time.monotonic() - t0
                assert moved_after < 5, f"the victim's unacked records took {moved_after:.1f}s to move"
                for r in held:
                    assert log.receivers(r)[0] == victim.name and len(log.receivers(r)) == 2, \
                        (r, log.receivers(r))
                    assert log.receivers(r)[1] in {c.name for c in rest}
                await wait_until(lambda: consumer_names(stub, sub_id) == sorted(c.name for c in rest), 3,
                                 lambda: f"victim gone from ListConsumers: {consumer_names(stub, sub_id)}")

                # Phase 3: the two survivors own 3 shards each.
                p3 = [r for r, _ in await append_spread(client, stream, 30, 3, tag="p3", keys=keys)]
                await wait_until(lambda: log.acked_ids() >= set(p3), 10, "phase 3 acked")
                owners3 = _owners(log, p3)
                assert all(len(o) == 1 for o in owners3.values()), owners3
                assert victim.name not in set().union(*owners3.values())
                counts = sorted(sum(1 for o in owners3.values() if c.name in o) for c in rest)
                assert counts == [3, 3], owners3

                # At least once, acked exactly once, duplicates only for what the victim held.
                everything = set(p1 + p2 + p3)
                assert log.delivered_ids() == everything
                dup = {r for r, n in log.deliveries.items() if n > 1}
                assert dup == set(held), f"unexpected redeliveries: {sorted(dup - set(held))[:10]}"
                twice = {r: n for r, n in log.acks.items() if n != 1}
                assert not twice, f"records acked more than once: {list(twice.items())[:10]}"
                assert set(log.acks) == everything
                _per_shard_first_deliveries_in_order(log)
            finally:
                await stop_all(group)

    run(main())


def test_joining_consumer_takes_shards_from_the_busiest(server):
    """Consumers join one by one on a 4-shard stream: 4 -> 2/2 -> 2/1/1 -> 1/1/1/1, and a
    5th consumer gets nothing (each shard has exactly one owner)."""
    stub = server.stub()

    async def main():
        async with connect(server) as client:
            stream = uid("st")
            await client.create_stream(stream, shard_count=4)
            keys = keys_covering_shards(await client.list_shards(stream))
            sub_id = uid("sub")
            create_subscription_raw(stub, sub_id, stream, ack_timeout=60, offset="LATEST")
            log = DeliveryLog()
            group = []
            try:
                for n, want in [(1, [4]), (2, [2, 2]), (3, [1, 1, 2]), (4, [1, 1, 1, 1]), (5, [0, 1, 1, 1, 1])]:
                    c = ConsumerRun(client, sub_id, name=f"j{n}", log=log).start()
                    group.append(c)
                    await wait_until(lambda: len(consumer_names(stub, sub_id)) == n, 5, f"{n} consumers")
                    probe = [r for r, _ in await append_spread(client, stream, 8, 1, tag=f"probe{n}", keys=keys)]
                    await wait_until(lambda: log.acked_ids() >= set(probe), 10, f"probe {n} acked")
                    owners = _owners(log, probe)
                    assert all(len(o) == 1 for o in owners.values()), owners
                    counts = sorted(sum(1 for o in owners.values() if g.name in o) for g in group)
                    assert counts == want, f"after {n} joined: {owners}"
            finally:
                await stop_all(group)

    run(main())


# --------------------------------------------------------------------------------------
# Ack timeout


def test_ack_timeout_redelivers_only_unacked_records_with_original_ids(server):
    stub = server.stub()

    async def main():
        async with connect(server) as client:
            stream = uid("st")
            await client.create_stream(stream, shard_count=1)
            a = [rid_tuple(r) for r in await client.append(stream, [f"a{i}" for i in range(5)])]
            b = [rid_tuple(r) for r in await client.append(stream, [f"b{i}" for i in range(3)])]
            sub_id = uid("sub")
            create_subscription_raw(stub, sub_id, stream, ack_timeout=1, offset="EARLIEST")
            log = DeliveryLog()

            def policy(record, _c):
                rid = rid_tuple(record.id)
                n = log.deliveries[rid]
                if rid in b:
                    return True
                return {1: rid[2] in (0, 2), 2: False, 3: rid[2] == 3}.get(n, True)

            c = ConsumerRun(client, sub_id, ack=policy, log=log).start()
            try:
                await wait_until(lambda: len(c.batches) >= 5, 10, lambda: f"redeliveries: {c.batches}")
                assert c.batches[:2] == [a, b]
                # Only the unacked records of batch a, with their original ids; again and again
                # until acked.
                assert c.batches[2:] == [[a[1], a[3], a[4]], [a[1], a[3], a[4]], [a[1], a[4]]], c.batches
                gaps = [t2 - t1 for t1, t2 in zip(c.batch_times[1:], c.batch_times[2:])]
                assert all(g >= 0.8 for g in gaps), f"redelivered before the 1 s ack timeout: {gaps}"
                assert all(g < 4 for g in gaps), f"redelivery too late for a 1 s ack timeout: {gaps}"
                want = {rid: f"a{rid[2]}".encode() for rid in a}
                for r in c.records:
                    if rid_tuple(r.id) in want:
                        assert r.payload == want[rid_tuple(r.id)]
                # Everything acked now: nothing more comes (observe > 1 ack timeout).
                await asyncio.sleep(1.6)
                assert len(c.batches) == 5, c.batches[5:]
                assert subscription_offsets(stub, sub_id) == {a[0][0]: b[0][1] + 1}
            finally:
                await stop_all([c])

    run(main())


def test_ack_timeout_redelivers_to_the_current_owner(server):
    """A holds unacked records of both shards; B joins and takes one shard; after the ack
    timeout the records of B's shard are redelivered to B, the others to A."""
    stub = server.stub()

    async def main():
        async with connect(server) as client:
            stream = uid("st")
            await client.create_stream(stream, shard_count=2)
            keys = keys_covering_shards(await client.list_shards(stream))
            sub_id = uid("sub")
            create_subscription_raw(stub, sub_id, stream, ack_timeout=2, offset="LATEST")
            log = DeliveryLog()
            first = set()
            ca = ConsumerRun(client, sub_id, name="A", log=log,
                             ack=lambda r, c: not (r.payload.startswith(b"first-") and log.deliveries[rid_tuple(r.id)] == 1))
            ca.start()
            cb = ConsumerRun(client, sub_id, name="B", log=log)
            try:
                await wait_until(lambda: consumer_names(stub, sub_id) == ["A"], 5, "A joined")
                for k in keys:
                    first.update(rid_tuple(r) for r in await client.append(stream, [f"first-{k}-{i}" for i in range(3)], key=k))
                await ca.wait_count(6)
                t_first = time.monotonic()
                cb.start()
                await wait_until(lambda: consumer_names(stub, sub_id) == ["A", "B"], 5, "B joined")
                probe = [r for r, _ in await append_spread(client, stream, 2, 1, tag="probe", keys=keys)]
                await wait_until(lambda: log.acked_ids() >= set(probe), 5, "probes acked")
                owner = {s: o.pop() for s, o in _owners(log, probe).items()}
                assert sorted(owner.values()) == ["A", "B"], owner
                await wait_until(lambda: log.acked_ids() >= first, 10, "first records redelivered and acked")
                assert time.monotonic() - t_first >= 1.5
                for rid in first:
                    recv = log.receivers(rid)
                    assert recv[0] == "A" and len(recv) == 2, (rid, recv)
                    assert recv[1] == owner[rid[0]], f"{rid} redelivered to {recv[1]}, shard owner is {owner[rid[0]]}"
            finally:
                await stop_all([ca, cb])

    run(main())


# --------------------------------------------------------------------------------------
# maxUnackedRecords


def test_max_unacked_records_back_pressure(server):
    stub = server.stub()

    async def quiet(cond_now, secs=0.4):
        """Nothing changes for `secs` (the paused state is stable)."""
        before = cond_now()
        await asyncio.sleep(secs)
        assert cond_now() == before, f"delivery did not pause: {before} -> {cond_now()}"

    async def main():
        async with connect(server) as client:
            # One consumer, batches of 1: exactly 10 outstanding.
            stream = uid("st")
            await client.create_stream(stream, shard_count=1)
            for i in range(30):
                await client.append(stream, [f"r{i}"])
            sub_id = uid("sub")
            create_subscription_raw(stub, sub_id, stream, ack_timeout=600, max_unacks=10, offset="EARLIEST")
            c = ConsumerRun(client, sub_id, ack=False).start()
            try:
                await c.wait_count(10)
                await quiet(lambda: len(c.records))
                assert len(c.records) == 10
                await c.ack(c.ids()[:4])
                await c.wait_count(14)
                await quiet(lambda: len(c.records))
                assert len(c.records) == 14
                await c.ack(c.ids()[4:14])
                await c.wait_count(24)
                await quiet(lambda: len(c.records))
                assert len(c.records) == 24
                await c.ack(c.ids()[14:])
                await c.wait_count(30)
                ids = c.ids()
                assert len(ids) == len(set(ids)) == 30 and ids == sorted(ids)
                assert [r.payload for r in c.records] == [f"r{i}".encode() for i in range(30)]
            finally:
                await stop_all([c])

            # Two consumers on two shards: the limit is per subscription (both together).
            stream2 = uid("st")
            await client.create_stream(stream2, shard_count=2)
            keys = keys_covering_shards(await client.list_shards(stream2))
            sub2 = uid("sub")
            create_subscription_raw(stub, sub2, stream2, ack_timeout=600, max_unacks=10, offset="EARLIEST")
            recs = [r for r, _ in await append_spread(client, stream2, 40, 1, keys=keys)]
            log = DeliveryLog()
            c1 = ConsumerRun(client, sub2, name="one", ack=False, log=log)
            c2 = ConsumerRun(client, sub2, name="two", ack=False, log=log)
            try:
                c1.start()
                await wait_until(lambda: consumer_names(stub, sub2) == ["one"], 5, "one joined")
                c2.start()
                await wait_until(lambda: consumer_names(stub, sub2) == ["one", "two"], 5, "two joined")
                await wait_until(lambda: len(c1.records) + len(c2.records) >= 10, 10, "10 delivered")
                total = lambda: len(c1.records) + len(c2.records)  # noqa: E731
                await quiet(total)
                assert total() == 10, f"{len(c1.records)} + {len(c2.records)} delivered with max 10 unacked"
                # Acking on one consumer lets more through (to whoever owns the shards).
                acker = c1 if c1.records else c2
                n = len(acker.ids())
                await acker.ack(acker.ids())
                await wait_until(lambda: total() >= 10 + n, 10, "more after the ack")
                await quiet(total)
                assert total() == 10 + n
                # Ack everything as it comes: all 40 arrive once.
                c1.ack_policy = c2.ack_policy = True
                for c in (c1, c2):
                    if c.unacked():
                        await c.ack(c.unacked())
                await wait_until(lambda: log.delivered_ids() >= set(recs), 10, "all 40 delivered")
                assert all(n == 1 for n in log.deliveries.values())
            finally:
                await stop_all([c1, c2])

            # Batches larger than the rest of the limit are sent whole: max 10, batches of 4.
            stream3 = uid("st")
            await client.create_stream(stream3, shard_count=1)
            for i in range(10):
                await client.append(stream3, [f"x{i}-{j}" for j in range(4)])
            sub3 = uid("sub")
            create_subscription_raw(stub, sub3, stream3, ack_timeout=600, max_unacks=10, offset="EARLIEST")
            c3 = ConsumerRun(client, sub3, ack=False).start()
            try:
                await c3.wait_count(10)
                await quiet(lambda: len(c3.records))
                assert 10 <= len(c3.records) < 14 and len(c3.records) % 4 == 0, len(c3.records)
            finally:
                await stop_all([c3])

    run(main())


# --------------------------------------------------------------------------------------
# Names, bad acks, ListConsumers, vanished consumers


def test_duplicate_consumer_name(server):
    stub = server.stub()

    async def main():
        async with connect(server) as client:
            stream = uid("st")
            await client.create_stream(stream, shard_count=1)
            sub_id = uid("sub")
            create_subscription_raw(stub, sub_id, stream, offset="EARLIEST")
            a = ConsumerRun(client, sub_id, name="same").start()
            dup = None
            try:
                await wait_until(lambda: consumer_names(stub, sub_id) == ["same"], 5, "first joined")
                dup = ConsumerRun(client, sub_id, name="same").start()
                await dup.wait(10)
                assert dup.error is not None, "a second live consumer with the same name was accepted"
                assert_rpc_error(dup.error, grpc.StatusCode.ALREADY_EXISTS)
                assert dup.records == []
                # The first one is undisturbed.
                assert consumer_names(stub, sub_id) == ["same"]
                await client.append(stream, ["x", "y"])
                await a.wait_count(2)
                assert not a.finished
                # The same name on another subscription is a different consumer.
                sub_b = uid("sub")
                create_subscription_raw(stub, sub_b, stream, offset="EARLIEST")
                elsewhere = ConsumerRun(client, sub_b, name="same").start()
                await elsewhere.wait_count(2)
                assert consumer_names(stub, sub_b) == ["same"] and consumer_names(stub, sub_id) == ["same"]
                await elsewhere.close()
                assert elsewhere.error is None
                # Another name is fine; after the first leaves, its name is free again.
                other = ConsumerRun(client, sub_id, name="other").start()
                await wait_until(lambda: consumer_names(stub, sub_id) == ["other", "same"], 5, "other joined")
                await a.close()
                await wait_until(lambda: consumer_names(stub, sub_id) == ["other"], 3, "first left")
                again = ConsumerRun(client, sub_id, name="same").start()
                await wait_until(lambda: consumer_names(stub, sub_id) == ["other", "same"], 5, "name reused")
                await other.close()
                await client.append(stream, ["z"])
                await again.wait_count(1)
                await again.close()
                assert again.error is None
            finally:
                await stop_all([a] + ([dup] if dup else []))

    run(main())


@pytest.mark.parametrize("kind", ["beyond-tail", "foreign-shard", "index-out-of-batch"])
def test_bad_ack_ends_only_that_consumer(server, kind):
    stub = server.stub()

    async def main():
        async with connect(server) as client:
            stream, other_stream = uid("st"), uid("st")
            await client.create_stream(stream, shard_count=1)
            await client.create_stream(other_stream, shard_count=1)
            (other_shard,) = [s.id for s in await client.list_shards(other_stream)]
            await client.append(other_stream, ["elsewhere"])
            sub_id = uid("sub")
            create_subscription_raw(stub, sub_id, stream, ack_timeout=60, offset="EARLIEST")
            recs = []
            for i in range(3):
                recs += [rid_tuple(r) for r in await client.append(stream, [f"r{i}-{j}" for j in range(2)])]
            shard, first_batch = recs[0][0], recs[0][1]
            assert other_shard != shard
            log = DeliveryLog()
            a = ConsumerRun(client, sub_id, name="bad", ack=False, log=log).start()
            b = ConsumerRun(client, sub_id, name="good", log=log)
            try:
                await a.wait_count(6)
                b.start()
                await wait_until(lambda: consumer_names(stub, sub_id) == ["bad", "good"], 5, "both joined")
                bad = {"beyond-tail": pb.RecordId(shardId=shard, batchId=first_batch + 10**9, batchIndex=0),
                       "foreign-shard": pb.RecordId(shardId=other_shard, batchId=1, batchIndex=0),
                       "index-out-of-batch": pb.RecordId(shardId=shard, batchId=first_batch, batchIndex=99)}[kind]
                await a.raw_request(pb.StreamingFetchRequest(subscriptionId=sub_id, consumerName="bad", ackIds=[bad]))
                await a.wait(5)
                assert a.error is not None, f"stream ended without error after a {kind} ack"
                assert_rpc_error(a.error, INVALID)
                # The good consumer gets the bad one's (unacked) records at once and keeps working.
                await wait_until(lambda: log.acked_ids() >= set(recs), 5, "records moved to the good consumer")
                assert sorted(b.ids()) == sorted(recs)
                assert consumer_names(stub, sub_id) == ["good"]
                more = [rid_tuple(r) for r in await client.append(stream, ["after"])]
                await wait_until(lambda: log.acked_ids() >= set(more), 5, "good consumer keeps receiving")
                assert not b.finished
                # Nothing was acked by the bad request: offsets cover exactly what "good" acked.
                await _all_acked_on_server(stub, sub_id, recs + more)
            finally:
                await stop_all([a, b])

    run(main())


def test_acking_twice_is_harmless(server):
    """Acks for records that were delivered are fine even when repeated (also after a
    redelivery acked from both deliveries): the stream goes on and nothing is redelivered."""
    stub = server.stub()

    async def main():
        async with connect(server) as client:
            stream = uid("st")
            await client.create_stream(stream, shard_count=1)
            sub_id = uid("sub")
            create_subscription_raw(stub, sub_id, stream, ack_timeout=1, offset="EARLIEST")
            first = [rid_tuple(r) for r in await client.append(stream, ["a", "b", "c"])]
            c = ConsumerRun(client, sub_id, ack=False).start()
            try:
                await c.wait_count(3)
                await c.ack(first[:1])
                await c.ack(first[:1])
                await c.ack(first[:2])
                await c.wait_count(4)  # c once more after the 1 s ack timeout
                assert c.batches[1] == first[2:]
                await c.ack(first[1:] + first)
                more = [rid_tuple(r) for r in await client.append(stream, ["d"])]
                await c.wait_count(5)
                await c.ack(more + more)
                await _all_acked_on_server(stub, sub_id, first + more)
                await asyncio.sleep(1.5)  # longer than the ack timeout: nothing comes back
                assert len(c.records) == 5 and not c.finished, (c.batches, c.error)
            finally:
                await stop_all([c])

    run(main())


CONSUMER_PROCESS = r"""
import asyncio, sys
import hstreamdb

async def main(port, sub, name):
    client = await hstreamdb.insecure_client(host="127.0.0.1", port=int(port))
    async def process(ack, stop, records):
        for r in records:
            print("got", r.id.shard_id, r.id.batch_id, r.id.batch_index, flush=True)
    print("starting", flush=True)
    await client.new_consumer(name, sub, process).start()

asyncio.run(main(*sys.argv[1:]))
"""


def test_list_consumers_and_a_consumer_process_that_vanishes(server):
    """ListConsumers shows name/uri/userAgent. A consumer in another process killed with
    SIGKILL disappears from ListConsumers within ~1 s and its unacked records go to the
    remaining consumer at once (ack timeout is 60 s)."""
    stub = server.stub()

    async def main():
        async with connect(server) as client:
            stream = uid("st")
            await client.create_stream(stream, shard_count=1)
            sub_id = uid("sub")
            create_subscription_raw(stub, sub_id, stream, ack_timeout=60, offset="LATEST")
            assert consumer_names(stub, sub_id) == []
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CONSUMER_PROCESS, str(server.port), sub_id, "ghost",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
            survivor = ConsumerRun(client, sub_id, name="survivor")
            try:
                await wait_until(lambda: consumer_names(stub, sub_id) == ["ghost"], 15, "ghost joined")
                listed = stub.ListConsumers(pb.ListConsumersRequest(subscriptionId=sub_id), timeout=30).consumers
                assert listed[0].uri.startswith("127.0.0.1:"), listed
                assert "grpc-python" in listed[0].userAgent, listed
                recs = []
                for i in range(4):
                    recs += [rid_tuple(r) for r in await client.append(stream, [f"g{i}-{j}" for j in range(3)])]
                got = set()
                while got != set(recs):
                    line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().split()
                    assert line, "consumer process exited"
                    if line[0] == "got":
                        got.add(tuple(map(int, line[1:])))
                survivor.start()
                await wait_until(lambda: consumer_names(stub, sub_id) == ["ghost", "survivor"], 5, "survivor joined")
                mine = [c for c in stub.ListConsumers(pb.ListConsumersRequest(subscriptionId=sub_id)).consumers
                        if c.name == "survivor"][0]
                assert mine.uri.startswith("127.0.0.1:") and "grpc-python" in mine.userAgent
                assert survivor.records == []  # the only shard belongs to the ghost

                proc.kill()
                await proc.wait()
                t0 = time.monotonic()
                await wait_until(lambda: consumer_names(stub, sub_id) == ["survivor"], 5, "ghost removed")
                gone_after = time.monotonic() - t0
                assert gone_after < 2.0, f"vanished consumer listed for {gone_after:.2f}s"
                await wait_until(lambda: set(survivor.ids()) >= set(recs), 5, "ghost's records moved")
                more = [rid_tuple(r) for r in await client.append(stream, ["after"])]
                await survivor.wait_count(len(recs) + 1)
                assert sorted(survivor.ids()) == sorted(recs + more)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                await stop_all([survivor])

    run(main())


# --------------------------------------------------------------------------------------
# Flood


def test_flood_of_consumers_joining_and_leaving(server):
    """30 consumers join one subscription at once and leave after random short lifetimes
    (stop, cancel or graceful close) while records are appended; 2 consumers stay. Every
    record is delivered, everything ends acked, ListConsumers shows the 2, the server serves."""
    stub = server.stub()
    rng = random.Random(1234)

    async def main():
        async with connect(server) as client:
            stream = uid("st")
            await client.create_stream(stream, shard_count=6)
            keys = [f"fk{i}" for i in range(24)]
            sub_id = uid("sub")
            create_subscription_raw(stub, sub_id, stream, ack_timeout=30, offset="EARLIEST")
            recs = [r for r, _ in await append_spread(client, stream, 60, 5, tag="pre", keys=keys)]
            log = DeliveryLog()
            stay = [ConsumerRun(client, sub_id, name=f"stay{i}", log=log, delay=0.01).start() for i in range(2)]
            flood = [ConsumerRun(client, sub_id, name=f"flood{i}", log=log, delay=0.01) for i in range(30)]

            async def life(i, c):
                await asyncio.sleep(rng.uniform(0, 0.5))
                c.start()
                await asyncio.sleep(rng.uniform(0.05, 1.0))
                if c.finished:
                    return
                await [c.stop, c.cancel, c.close][i % 3]()

            async def producer():
                out = []
                for r in range(6):
                    out += [x for x, _ in await append_spread(client, stream, 10, 3, tag=f"live{r}", keys=keys)]
                    await asyncio.sleep(0.1)
                return out

            try:
                results = await asyncio.wait_for(
                    asyncio.gather(producer(), *(life(i, c) for i, c in enumerate(flood))), 20)
                recs += results[0]
                errors = [(c.name, c.error, c.exception) for c in flood if c.error or c.exception]
                assert not errors, errors
                await wait_until(lambda: consumer_names(stub, sub_id) == ["stay0", "stay1"], 5,
                                 lambda: f"only the stayers left: {consumer_names(stub, sub_id)}")
                await wait_until(lambda: log.delivered_ids() >= set(recs), 15,
                                 lambda: f"delivered {len(log.delivered_ids() & set(recs))}/{len(recs)}")
                await _all_acked_on_server(stub, sub_id, recs, timeout=15)
                assert log.delivered_ids() == set(recs)
                assert sum(1 for c in flood if c.records) >= 3, "the flood consumers never got any shard"
                # Healthy afterwards: Echo, and a new consumer on a new subscription.
                assert stub.Echo(pb.EchoRequest(msg="ok"), timeout=10).msg == "ok"
                stub.DescribeCluster(empty_pb2.Empty(), timeout=10)
                sub2 = uid("sub")
                create_subscription_raw(stub, sub2, stream, offset="EARLIEST")
                last = ConsumerRun(client, sub2).start()
                await last.wait_count(len(recs))
                assert sorted(last.ids()) == sorted(recs)
                await last.close()
            finally:
                await stop_all(stay + flood)

    run(main(), timeout=90)


def test_partial_redelivery_of_a_compressed_batch_fits_the_client(server):
    """A gzip batch that is small on the wire but large once decompressed (1000 records of 7 KB:
    ~0.9 MB gzipped, 7 MB plain), partly acked: the redelivery of the other records must reach
    the official client (whose limit is 4 MiB a message) with their original ids, again and
    again, and never kill the consumer."""
    stream, sub = uid("gz"), uid("sub")
    stub = server.stub()

    async def main():
        async with connect(server) as client:
            await client.create_stream(stream, shard_count=1)
            payloads = [f"{i:06d}".encode() + bytes(str(i % 10), "ascii") * 6994 for i in range(1000)]
            ids = [rid_tuple(r) for r in await client.append(stream, payloads, compresstype="gzip")]
            create_subscription_raw(stub, sub, stream, ack_timeout=1, max_unacks=10_000)
            first_ten = set(ids[:10])
            c = ConsumerRun(client, sub, ack=lambda r, _run: rid_tuple(r.id) in first_ten).start()
            try:
                # 1000 on first delivery, then the 990 unacked again (possibly in several
                # messages) after the 1 s timeout.
                await c.wait_count(1990, timeout=30)
                assert c.error is None, c.error
                again = c.ids()[1000:1990]
                assert set(again) == set(ids[10:]), "exactly the unacked records, original ids"
                by_id = dict(zip(ids, payloads))
                assert all(r.payload == by_id[rid_tuple(r.id)] for r in c.records[:1990])
            finally:
                await stop_all([c])

    run(main())
