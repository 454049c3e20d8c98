"""Every port caps its open connections (`--max-connections`): a client that opens and holds
connections without a word (no start-up, no TLS handshake, no request) takes at most the cap;
the connections over it are closed at once instead of holding file descriptors, and once the
holder lets go every door serves again without a restart.

Before, 1,224 idle connections exhausted the file descriptors, and a shard that met
"Too many open files" stayed failed until a restart."""

import socket
import subprocess
import urllib.request

import grpc
import psycopg
from google.protobuf import empty_pb2

from helpers import pb, pb_grpc, uid

CAP = 16


def hold(port, n):
    socks = []
    for _ in range(n):
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
    return socks


def closed_by_server(sock) -> bool:
    """True if the server closed this connection (EOF or reset) within a few seconds."""
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_each_port_turns_away_connections_over_its_cap(start_server):
    srv = start_server("--max-connections", str(CAP))
    stream = uid("cap")
    for port in (srv.port, srv.pg_port, srv.http_port):
        held = hold(port, CAP)
        extra = hold(port, 4)
        try:
            # The ones over the cap are closed by the server; the held ones are not.
            assert all(closed_by_server(s) for s in extra), port
            assert not closed_by_server(held[-1]), port
        finally:
            for s in held + extra:
                s.close()
    # Every door serves again once the holder let go.
    with grpc.insecure_channel(srv.target) as ch:
        stub = pb_grpc.HStreamApiStub(ch)
        stub.DescribeCluster(empty_pb2.Empty(), timeout=30, wait_for_ready=True)
        stub.CreateStream(pb.Stream(streamName=stream, replicationFactor=1, shardCount=1), timeout=30)
    with psycopg.connect(f"host=127.0.0.1 port={srv.pg_port} user=u dbname=streamcell connect_timeout=10",
                         autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.http_port}/health", timeout=30) as r:
        assert r.status == 200
    assert srv.running
    assert "at its --max-connections" in srv.log_text()


def test_max_connections_is_checked():
    from helpers import server_binary
    r = subprocess.run([str(server_binary()), "server", "--max-connections", "0"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "max-connections" in r.stderr, r
