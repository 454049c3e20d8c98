"""A server that runs out of file descriptors says so (RESOURCE_EXHAUSTED, not INTERNAL),
keeps serving what it has, and recovers by itself once descriptors are free again.

The server runs under a hard open-file limit of 400 (so it cannot raise it); streams are
created until the limit is hit (each shard keeps its active segment and its ACKED marker open).
"""

import stat

import grpc
import pytest

from helpers import ServerProcess, pb, raw_append, server_binary, shards_of, uid

LIMIT = 400


@pytest.fixture
def limited(tmp_path):
    wrapper = tmp_path / "streamcell-limited"
    wrapper.write_text(f"#!/bin/sh\nulimit -n {LIMIT}\nexec {server_binary()} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    srv = ServerProcess(wrapper, tmp_path / "data", tmp_path / "server.log")
    srv.data_dir.mkdir()
    srv.start()
    yield srv
    srv.teardown()


def test_out_of_file_descriptors_is_resource_exhausted_and_passes(limited):
    stub = limited.stub()
    first = uid("fd")
    stub.CreateStream(pb.Stream(streamName=first, replicationFactor=1, shardCount=1), timeout=30)
    created = []
    err = None
    for i in range(LIMIT):
        name = uid(f"fd{i}_")
        try:
            stub.CreateStream(pb.Stream(streamName=name, replicationFactor=1, shardCount=1), timeout=30)
            created.append(name)
        except grpc.RpcError as e:
            err = e
            break
    assert err is not None, f"{len(created)} streams and no limit hit"
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
    assert "Too many open files" in err.details(), err.details()
    # What exists is still served.
    shard = shards_of(stub, first)[0].shardId
    # Descriptors come back when streams go; then creating works again, without a restart.
    for name in created[: len(created) // 2]:
        stub.DeleteStream(pb.DeleteStreamRequest(streamName=name, force=True), timeout=30)
    again = uid("fdagain")
    stub.CreateStream(pb.Stream(streamName=again, replicationFactor=1, shardCount=1), timeout=30)
    raw_append(stub, again, shards_of(stub, again)[0].shardId, [b"back"])
    raw_append(stub, first, shard, [b"still"])
    assert limited.running
