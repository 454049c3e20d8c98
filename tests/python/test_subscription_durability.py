"""Subscription progress across restarts. Acks are checkpointed within milliseconds as exact
per-record state, so after SIGKILL or SIGTERM and a restart a new consumer gets exactly the
records not yet acknowledged: nothing acked again and nothing skipped. Killed in the middle of
consumption, delivery stays at-least-once and the only duplicates are records whose acks were
in flight.

No timing is assumed: GetSubscription answers once the progress it reports (and every ack
applied before it) is committed, and acks on one fetch stream are applied in the order sent,
so the tests know which acks must have survived without waiting for them."""

import asyncio

import pytest

from helpers import (ConsumerRun, append_spread, connect, consumer_names, create_subscription_raw,
                     pb, run, subscription_offsets, uid, wait_until)


def _down(srv, how):
    if how == "sigterm":
        srv.stop()  # asserts exit code 0
    else:
        srv.kill()


def _expected_offsets(records, acked):
    """{shard: first batchId not fully acked} (or last batchId + 1)."""
    batches = {}
    for rid in records:
        batches.setdefault((rid[0], rid[1]), []).append(rid)
    out = {}
    for (shard, bid) in sorted(batches):
        if shard in out:
            continue
        if not all(r in acked for r in batches[(shard, bid)]):
            out[shard] = bid
    for (shard, bid) in sorted(batches):
        out.setdefault(shard, max(b for s, b in batches if s == shard) + 1)
    return out


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_exact_progress_survives_restart(start_server, how):
    srv = start_server()
    stream, sub_id = uid("st"), uid("sub")

    first_batch = {}  # shard -> its first batch id

    def acked_by_policy(rid):
        # Per-record state, not a frontier: whole batches acked, whole batches not, and
        # batches acked in part (every 4th record missing), on every shard. Each shard's first
        # batch is acked whole, but last (below), so that the offsets move only once every
        # earlier ack was applied.
        if rid[1] == first_batch[rid[0]]:
            return True
        if rid[1] % 5 == 1:
            return False
        return (rid[1] * 7 + rid[2]) % 4 != 0

    def acked_on_arrival(r, _c):
        rid = (r.id.shard_id, r.id.batch_id, r.id.batch_index)
        return rid[1] != first_batch[rid[0]] and acked_by_policy(rid)

    async def first_life():
        async with connect(srv) as client:
            await client.create_stream(stream, shard_count=3)
            records = [r for r, _ in await append_spread(client, stream, 45, 5)]
            for shard, bid, _ in records:
                first_batch[shard] = min(bid, first_batch.get(shard, bid))
            stub = srv.stub()
            create_subscription_raw(stub, sub_id, stream, ack_timeout=600, max_unacks=10000, offset="EARLIEST")
            c = ConsumerRun(client, sub_id, name="c", ack=acked_on_arrival)
            c.start()
            await c.wait_count(len(records))
            # Nothing has moved the offsets yet: each shard's first batch is unacked.
            assert subscription_offsets(stub, sub_id) == first_batch
            await c.ack([r for r in records if r[1] == first_batch[r[0]]])
            acked = set(c.acked)
            assert acked == {r for r in records if acked_by_policy(r)}
            want = _expected_offsets(records, acked)
            assert all(want[s] > first_batch[s] for s in first_batch)
            # Once the offsets show the last acks applied, every ack is applied and durable.
            await wait_until(lambda: subscription_offsets(stub, sub_id) == want, 5,
                             lambda: f"offsets {want}, have {subscription_offsets(stub, sub_id)}")
            # Down with the consumer still attached (in a thread: the client keeps running).
            await asyncio.to_thread(_down, srv, how)
            await c.wait(10)
            return records, acked, want, dict(c.log.payloads)

    records, acked, want, payloads = run(first_life())
    unacked = [r for r in records if r not in acked]
    assert 0 < len(unacked) < len(records)

    srv.start()
    stub = srv.stub()
    s = stub.GetSubscription(pb.GetSubscriptionRequest(id=sub_id), timeout=30)
    assert (s.subscription.streamName, s.subscription.ackTimeoutSeconds, s.subscription.maxUnackedRecords) == \
        (stream, 600, 10000)
    assert {o.shardId: o.batchId for o in s.offsets} == want
    assert consumer_names(stub, sub_id) == []

    async def second_life():
        async with connect(srv) as client:
            c = ConsumerRun(client, sub_id, name="c", ack=False).start()
            await c.wait_count(len(unacked))
            await asyncio.sleep(0.3)
            got = c.ids()
            again = sorted(set(got) & acked)
            assert not again, f"{len(again)} acked records delivered again after {how}: {again[:10]}"
            assert len(got) == len(set(got)), "duplicates after restart"
            assert sorted(got) == sorted(unacked), f"skipped: {sorted(set(unacked) - set(got))[:10]}"
            assert all(r.payload == payloads[(r.id.shard_id, r.id.batch_id, r.id.batch_index)] for r in c.records)
            for shard in {r[0] for r in got}:
                seq = [r for r in got if r[0] == shard]
                assert seq == sorted(seq)
            # Ack the rest; after another restart only new records arrive.
            await c.ack(got)
            await wait_until(lambda: subscription_offsets(stub, sub_id) == _expected_offsets(records, set(records)),
                             5, "everything acked")
            await c.close()

    run(second_life())
    _down(srv, how)
    srv.start()
    stub = srv.stub()

    async def third_life():
        async with connect(srv) as client:
            c = ConsumerRun(client, sub_id, name="c2").start()
            new = [r for r, _ in await append_spread(client, stream, 3, 2, tag="new")]
            await c.wait_count(len(new))
            await asyncio.sleep(0.3)
            assert sorted(c.ids()) == sorted(new)
            await c.close()

    run(third_life())


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_restart_in_the_middle_of_consumption(start_server, how):
    """Two rounds of: consume (acking everything as it arrives), take the server down while
    records and acks are flowing, restart. Then consume the rest. At-least-once overall, and
    no record is delivered again whose ack the server had provably applied before it went
    down: right before the kill, GetSubscription's (durable) offsets show which acks were
    applied, and with them every ack the consumer had sent before those."""
    srv = start_server()
    stream, sub_id = uid("st"), uid("sub")
    rounds = []  # (ConsumerRun, {shard: durable offset just before the server went down})

    async def setup():
        async with connect(srv) as client:
            await client.create_stream(stream, shard_count=3)
            recs = [r for r, _ in await append_spread(client, stream, 80, 5)]
            create_subscription_raw(srv.stub(), sub_id, stream, ack_timeout=600, offset="EARLIEST")
            return recs

    records = run(setup())
    delivered = set()

    async def consume_round(stop_at):
        async with connect(srv) as client:
            c = ConsumerRun(client, sub_id, name="c", delay=0.04).start()
            await wait_until(lambda: len(delivered | set(c.ids())) >= stop_at or c.finished, 20,
                             lambda: f"{len(delivered | set(c.ids()))}/{stop_at} delivered")
            assert not c.finished, (c.error, c.exception)
            durable = subscription_offsets(srv.stub(), sub_id)
            await asyncio.to_thread(_down, srv, how)
            await c.wait(10)
            return c, durable

    for stop_at in (130, 270):
        c, durable = run(consume_round(stop_at))
        delivered |= set(c.ids())
        rounds.append((c, durable))
        srv.start()

    async def last_round():
        async with connect(srv) as client:
            stub = srv.stub()
            c = ConsumerRun(client, sub_id, name="c").start()
            await wait_until(lambda: delivered | set(c.ids()) >= set(records), 20,
                             lambda: f"{len(delivered | set(c.ids()))}/{len(records)} delivered")
            await wait_until(lambda: subscription_offsets(stub, sub_id) == _expected_offsets(records, set(records)),
                             5, "everything acked")
            await asyncio.sleep(0.3)
            await c.close()
            return c

    final = run(last_round())
    runs = [c for c, _ in rounds] + [final]
    assert set().union(*(set(c.ids()) for c in runs)) == set(records), "records skipped"

    # Duplicates: only records whose acks may not have been applied. A record below a shard's
    # durable offset was acked and applied; acks on one stream are applied in the order sent,
    # so every ack this round's consumer sent before the last such one was applied as well.
    for k, (c, durable) in enumerate(rounds):
        acks = [rid for _, _, rid, kind in c.log.events if kind == "ack"]
        applied_upto = max((i for i, rid in enumerate(acks) if rid[1] < durable.get(rid[0], 0)),
                           default=-1)
        applied = set(acks[:applied_upto + 1])
        later = set().union(*(set(x.ids()) for x in runs[k + 1:]))
        bad = sorted(later & applied)
        assert not bad, (f"round {k}: {len(bad)} records whose acks the server had applied before "
                         f"{how} were delivered again: {bad[:10]}")
    for c in runs:
        ids = c.ids()
        assert len(ids) == len(set(ids)), "a record delivered twice within one server life"
