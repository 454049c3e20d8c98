"""Process contract and cluster RPCs: Echo, DescribeCluster (incl. the client's empty body),
LookupShard / LookupShardReader, shutdown on signals, data-dir lock, port in use."""

import signal
import socket
import subprocess

from google.protobuf import empty_pb2

from helpers import HOST, STARTUP_TIMEOUT, connect, pb, run, uid


def test_echo(server):
    stub = server.stub()
    assert stub.Echo(pb.EchoRequest(msg="hello streamcell"), timeout=10).msg == "hello streamcell"
    assert stub.Echo(pb.EchoRequest(msg=""), timeout=10).msg == ""


def _check_cluster(resp: pb.DescribeClusterResponse, srv):
    assert resp.protocolVersion, "protocolVersion must be set"
    assert len(resp.serverNodes) == 1
    node = resp.serverNodes[0]
    assert node.host == srv.host
    assert node.port == srv.port
    for st in resp.serverNodesStatus:
        assert st.node.port == srv.port
        assert st.state == pb.NodeState.Value("Running")
    assert resp.clusterUpTime < 3600


def test_describe_cluster(server):
    _check_cluster(server.stub().DescribeCluster(empty_pb2.Empty(), timeout=10), server)


def test_describe_cluster_empty_body(server):
    """The official client calls DescribeCluster(None): grpc-python fails to serialize None and
    sends a zero-length body (reference §1.9). Send exactly that, byte for byte."""
    ch = server.channel()
    call = ch.unary_unary(
        "/hstream.server.HStreamApi/DescribeCluster",
        request_serializer=lambda raw: raw,
        response_deserializer=pb.DescribeClusterResponse.FromString,
    )
    _check_cluster(call(b"", timeout=10), server)


def test_official_client_connects(server):
    async def main():
        async with connect(server) as client:
            # insecure_client() issued DescribeCluster(None) and learnt the node list.
            assert f"{server.host}:{server.port}" in client._channels
            return [s.name for s in await client.list_streams()]

    assert isinstance(run(main()), list)


def test_official_client_connects_by_url(server):
    """insecure_client(url="hstream://host:port") is the URL form of the same connection."""
    import hstreamdb

    async def main():
        client = await hstreamdb.insecure_client(url=f"hstream://{HOST}:{server.port}")
        async with client:
            name = uid("url")
            await client.create_stream(name)
            assert name in {s.name for s in await client.list_streams()}
            ids = list(await client.append(name, ["via url"]))
            assert len(ids) == 1

    run(main())


def test_lookup_resource_and_key_return_this_server(server):
    stub = server.stub()
    for res in ("ResStream", "ResSubscription", "ResShard", "ResShardReader"):
        node = stub.LookupResource(
            pb.LookupResourceRequest(resType=pb.ResourceType.Value(res), resId="anything"), timeout=10)
        assert (node.host, node.port) == (server.host, server.port), res
    node = stub.LookupKey(pb.LookupKeyRequest(partitionKey="robot-7"), timeout=10)
    assert (node.host, node.port) == (server.host, server.port)


def test_lookup_shard_returns_this_server(server):
    stub = server.stub()
    name = uid()
    stub.CreateStream(pb.Stream(streamName=name, replicationFactor=1, shardCount=3), timeout=10)
    shards = stub.ListShards(pb.ListShardsRequest(streamName=name), timeout=10).shards
    assert len(shards) == 3
    for sh in shards:
        resp = stub.LookupShard(pb.LookupShardRequest(shardId=sh.shardId), timeout=10)
        assert resp.shardId == sh.shardId
        assert resp.serverNode.host == server.host
        assert resp.serverNode.port == server.port


def test_lookup_shard_reader_returns_this_server(server):
    stub = server.stub()
    name = uid()
    stub.CreateStream(pb.Stream(streamName=name, replicationFactor=1, shardCount=1), timeout=10)
    shard = stub.ListShards(pb.ListShardsRequest(streamName=name), timeout=10).shards[0]
    rid = uid("reader")
    stub.CreateShardReader(pb.CreateShardReaderRequest(
        streamName=name, shardId=shard.shardId, readerId=rid, timeout=100,
        shardOffset=pb.ShardOffset(specialOffset=pb.SpecialOffset.EARLIEST)), timeout=10)
    resp = stub.LookupShardReader(pb.LookupShardReaderRequest(readerId=rid), timeout=10)
    assert resp.readerId == rid
    assert (resp.serverNode.host, resp.serverNode.port) == (server.host, server.port)


def test_sigterm_exits_zero(server):
    server.stop()  # asserts exit code 0
    assert not server.running


def test_sigint_exits_zero(server):
    assert server.signal(signal.SIGINT) == 0, server.log_tail()


def test_restart_keeps_serving(server):
    server.restart()
    assert server.stub().Echo(pb.EchoRequest(msg="again"), timeout=10).msg == "again"


def _wait_exit(proc: subprocess.Popen, timeout: float = STARTUP_TIMEOUT) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"second server did not exit within {timeout}s")


def test_data_dir_locked_by_running_server(start_server):
    first = start_server()
    second = start_server(data_dir=first.data_dir, name="second", wait=False)
    proc = second.spawn()
    rc = _wait_exit(proc)
    assert rc != 0, "a second server on a locked data dir must exit non-zero"
    log = second.last_run_log()
    assert "lock" in log.lower() or str(first.data_dir) in log, (
        "the error must say the data dir is locked\n" + second.log_tail())
    # The first server is unaffected.
    assert first.stub().Echo(pb.EchoRequest(msg="still here"), timeout=10).msg == "still here"


def test_port_in_use(start_server):
    srv = start_server(wait=False)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        blocker.bind((HOST, srv.port))
        blocker.listen(1)
        rc = _wait_exit(srv.spawn())
        assert rc != 0, "the server must exit non-zero when its gRPC port is taken"
        log = srv.last_run_log().lower()
        assert str(srv.port) in log or "in use" in log or "address" in log, (
            "the error must name the port or say it is in use\n" + srv.log_tail())
    finally:
        blocker.close()
    # Once the port is free the same server starts fine.
    srv.start()
    assert srv.stub().Echo(pb.EchoRequest(msg="ok"), timeout=10).msg == "ok"
