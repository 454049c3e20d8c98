"""Crash test: SIGKILL the server under concurrent load, restart it on the same data dir, and
check what the readers see.

Each round: 4 asyncio tasks append batches of 1-50 records with the official client to one
4-shard stream (keyed, some gzip); after a random 0.3-1.5 s the server is SIGKILLed; it is
restarted on the same data dir and every shard is read from EARLIEST. Then:
  * every acknowledged record is present exactly once, at the RecordId its append returned,
    with identical bytes and key;
  * a batch that was sent but not acknowledged is absent or present whole and intact;
  * nothing else is present (no garbage), and batchIds strictly increase within each shard.
The data dir accumulates over the rounds, so each check covers all earlier rounds too.

Set STREAMCELL_CRASH_SEED to replay a particular sequence of sizes, keys and kill times
(the thread timing still differs from run to run).
"""

import asyncio
import hashlib
import os
import random
import re
import time

import grpc

from helpers import connect, read_all, run, shard_for_key, uid

ROUNDS = 5
TASKS = 4
SHARDS = 4
KEYS = [f"key-{i}" for i in range(16)]
PAYLOAD_RE = re.compile(rb"^w(\d+)-(\d+)-(\d+)-(\d+)-")


def payload(rnd: int, task: int, bseq: int, i: int) -> bytes:
    """Unique, self-verifying record bytes: a parsable prefix plus padding derived from it."""
    prefix = f"w{rnd}-{task}-{bseq}-{i}-".encode()
    digest = hashlib.sha256(prefix).digest()
    return prefix + (digest * 4)[: digest[0] % 120]


def batch_key(tag) -> str:
    rnd, task, bseq = tag
    return KEYS[(rnd * 31 + task * 7 + bseq * 3) % len(KEYS)]


async def load_and_kill(srv, stream, rnd, delay, rng, sent, acked):
    """Run the appenders, SIGKILL the server after `delay` seconds (and at least one ack)."""
    async with connect(srv) as client:
        await client.list_shards(stream)  # warm the client's shard cache
        stop = asyncio.Event()
        errors = []

        async def appender(task):
            bseq = 0
            while not stop.is_set():
                tag = (rnd, task, bseq)
                n = rng.randint(1, 50)
                sent[tag] = n
                try:
                    rids = list(await client.append(
                        stream, [payload(rnd, task, bseq, i) for i in range(n)], key=batch_key(tag),
                        compresstype="gzip" if bseq % 3 == 2 else None))
                except grpc.aio.AioRpcError as e:
                    if not stop.is_set():
                        errors.append(e)
                    return
                acked[tag] = rids
                bseq += 1

        tasks = [asyncio.create_task(appender(t)) for t in range(TASKS)]
        await asyncio.sleep(delay)
        deadline = time.monotonic() + 15
        while not any(tag[0] == rnd for tag in acked):
            assert time.monotonic() < deadline, "no append was acknowledged within 15 s"
            await asyncio.sleep(0.01)
        # Mark the kill before it happens, so failures from here on are expected.
        stop.set()
        srv.kill()
        await asyncio.gather(*tasks)
        assert not errors, f"appends failed before the kill: {errors[:3]}"


async def verify(srv, stream, sent, acked):
    """Read every shard from EARLIEST and check it; returns (records found, unacked batches found)."""
    async with connect(srv) as client:
        shards = await client.list_shards(stream)
        assert len(shards) == SHARDS
        where = {}  # tag -> [RecordId...]
        found = 0
        for sh in shards:
            records = await read_all(client, stream, sh.id, batches_per_read=500)
            found += len(records)
            last_batch = None
            group = []

            def close_group():
                if not group:
                    return
                tags = set()
                for idx, r in enumerate(group):
                    m = PAYLOAD_RE.match(r.payload) if isinstance(r.payload, bytes) else None
                    assert m, f"garbage record at {r.id}: {r.payload[:80]!r}"
                    rnd, task, bseq, i = map(int, m.groups())
                    assert r.payload == payload(rnd, task, bseq, i), f"corrupted record at {r.id}"
                    assert i == idx == r.id.batch_index, f"record {i} of its batch found at {r.id}"
                    tags.add((rnd, task, bseq))
                assert len(tags) == 1, f"batch {group[0].id.batch_id} on shard {sh.id} mixes appends {tags}"
                (tag,) = tags
                assert tag in sent, f"found a batch that was never sent: {tag}"
                assert len(group) == sent[tag], f"batch {tag} has {len(group)} of {sent[tag]} records"
                assert tag not in where, f"batch {tag} stored twice: {where[tag][0]} and {group[0].id}"
                key = batch_key(tag)
                assert all(r.header.key == key for r in group), f"batch {tag}: wrong key"
                assert sh.id == shard_for_key(shards, key), f"batch {tag} on the wrong shard"
                where[tag] = [r.id for r in group]

            for r in records:
                assert r.id.shard_id == sh.id
                if r.id.batch_id != last_batch:
                    close_group()
                    if last_batch is not None:
                        assert r.id.batch_id > last_batch, (
                            f"shard {sh.id}: batchId {r.id.batch_id} after {last_batch}")
                    last_batch = r.id.batch_id
                    group = []
                group.append(r)
            close_group()

        for tag, rids in acked.items():
            assert tag in where, f"acknowledged batch {tag} ({len(rids)} records at {rids[0]}) is lost"
            assert where[tag] == rids, f"acknowledged batch {tag} moved: acked {rids[0]}, found {where[tag][0]}"
        return found, len(set(where) - set(acked))


def test_crash_recovery(start_server, capsys):
    seed = int(os.environ.get("STREAMCELL_CRASH_SEED", "20240611"))
    rng = random.Random(seed)
    srv = start_server()
    stream = uid("crash")
    sent, acked = {}, {}

    async def create():
        async with connect(srv) as client:
            await client.create_stream(stream, shard_count=SHARDS)

    run(create())
    started = time.monotonic()
    for rnd in range(ROUNDS):
        delay = rng.uniform(0.3, 1.5)
        run(load_and_kill(srv, stream, rnd, delay, rng, sent, acked), timeout=40)
        srv.start()
        found, extra = run(verify(srv, stream, sent, acked), timeout=60)
        acked_records = sum(len(r) for r in acked.values())
        sent_records = sum(sent.values())
        with capsys.disabled():
            print(f"\n[crash seed={seed}] round {rnd}: killed after {delay:.2f}s; cumulative: "
                  f"sent {sent_records} records in {len(sent)} batches, acked {acked_records} in "
                  f"{len(acked)} batches, found {found} records ({extra} unacked batches present)",
                  flush=True)
    srv.stop()
    with capsys.disabled():
        print(f"[crash] {ROUNDS} rounds in {time.monotonic() - started:.1f}s", flush=True)
