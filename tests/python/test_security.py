"""One lock on every door (docs/security.md): users with passwords, an access token and client
certificates, and TLS from the same certificate, on gRPC, PostgreSQL and HTTP, checked with
the real clients: the official hstreamdb client with call credentials, psql with
sslmode=verify-full (and SCRAM channel binding), psycopg, curl with a token, grpc stubs.

Before this, with --pg-password set, anyone who reached the gRPC or HTTP port ran any SQL and
deleted streams; TLS covered gRPC only and pgwire answered `N` to SSLRequest."""

import asyncio
import base64
import json
import os
import shutil
import subprocess

import grpc
import psycopg
import pytest
from google.protobuf import empty_pb2

from helpers import HOST, free_ports, pb, pb_grpc, read_all, server_binary, uid
from hstreamdb.aio.client import HStreamDBClient

TOKEN = "t0ken-for-tests-0123456789"
PSQL = shutil.which("psql") or "/usr/bin/psql"
CURL = shutil.which("curl")


def locked_flags(f, *extra):
    return ["--tls-cert", str(f["server_cert"]), "--tls-key", str(f["server_key"]),
            "--user", "robot:s3cret:x", "--user", "viewer:pw2", "--auth-token", TOKEN, *extra]


@pytest.fixture
def locked(start_server, tls_files):
    return start_server(*locked_flags(tls_files), tls_client={"root_certificates": tls_files["ca"].read_bytes()},
                        token=TOKEN)


def curl(srv, path, *args, ca=None, method="GET", scheme="https"):
    assert CURL, "curl is needed (scripts/test.sh installs it)"
    cmd = [CURL, "-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, "--max-time", "20"]
    if ca is not None:
        cmd += ["--cacert", str(ca)]
    r = subprocess.run([*cmd, *args, f"{scheme}://127.0.0.1:{srv.http_port}{path}"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return None, r.stderr
    body, _, code = r.stdout.rpartition("\n")
    return int(code), body


def psql(srv, user, password, *conn, args=("-c", "SELECT 1")):
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    env.pop("PGPASSWORD", None)
    if password is not None:
        env["PGPASSWORD"] = password
    dsn = " ".join([f"host=127.0.0.1 port={srv.pg_port} user={user} dbname=streamcell", *conn])
    return subprocess.run([PSQL, "-X", "-A", "-t", dsn, *args], capture_output=True, text=True,
                          timeout=60, env=env)


def official(srv, f, call_creds):
    creds = grpc.ssl_channel_credentials(root_certificates=f["ca"].read_bytes())
    if call_creds is not None:
        creds = grpc.composite_channel_credentials(creds, call_creds)
    return HStreamDBClient(host="127.0.0.1", port=srv.port, credentials=creds)


def basic_call_creds(user, password):
    value = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return grpc.metadata_call_credentials(lambda _ctx, cb: cb((("authorization", value),), None))


# ---- the policy at start -----------------------------------------------------------------

def start_fails(start_server, *args):
    srv = start_server(*args, wait=False)
    srv.spawn()
    rc = srv.proc.wait(30)
    assert rc == 2, (rc, srv.last_run_log())  # a usage error, before anything is opened
    return srv.last_run_log()


def test_half_locked_configurations_are_refused(start_server, tls_files):
    f = tls_files
    log = start_fails(start_server, "--user", "robot:pw")
    assert "TLS is not" in log and "--allow-partial-security" in log, log
    log = start_fails(start_server, "--tls-cert", str(f["server_cert"]), "--tls-key", str(f["server_key"]))
    assert "no credentials" in log and "--allow-partial-security" in log, log
    log = start_fails(start_server, "--auth-token", "short", "--allow-partial-security")
    assert "at least 16" in log, log
    log = start_fails(start_server, "--user", "nocolon")
    assert "NAME:PASSWORD" in log, log
    log = start_fails(start_server, "--user", ":pw", "--allow-partial-security")
    assert "not valid" in log, log
    assert "s3cret" not in start_fails(start_server, "--user", "robot:s3cret")
    # An empty secret (an unset variable) is refused, not taken as "no password".
    log = start_fails(start_server, "--auth-token", "", "--allow-partial-security")
    assert "--auth-token is empty" in log, log
    log = start_fails(start_server, "--pg-password", "", "--allow-partial-security")
    assert "--pg-password is empty" in log, log
    log = start_fails(start_server, "--auth-token", "é" * 20, "--allow-partial-security")
    assert "visible ASCII" in log, log
    log = start_fails(start_server, "--auth-token", TOKEN, "--user", "token:pw", "--allow-partial-security")
    assert "access token's" in log, log


def test_unlocked_beyond_loopback_warns(tmp_path):
    ports = free_ports(3)
    p = subprocess.Popen([str(server_binary()), "server", "--data-dir", str(tmp_path / "d"),
                          "--bind", "0.0.0.0", "--port", str(ports[0]), "--pg-port", str(ports[1]),
                          "--http-port", str(ports[2])], stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            line = p.stderr.readline()
            if "no credentials: anyone" in line:
                assert "WARN" in line
                break
            assert line, "the server ended without warning"
        else:
            raise AssertionError("no warning")
    finally:
        p.kill()
        p.wait(30)


# ---- gRPC ----------------------------------------------------------------------------------

def test_grpc_takes_the_token_or_a_user_and_nothing_else(locked, tls_files):
    f = tls_files
    stream = uid("sec")

    async def main():
        good = official(locked, f, grpc.access_token_call_credentials(TOKEN))
        await good.init_cluster_info()
        await good.create_stream(stream, shard_count=1)
        rids = list(await good.append(stream, ["a", "b"]))
        assert [r.payload for r in await read_all(good, stream, rids[0].shard_id)] == [b"a", b"b"]
        # Basic user:password (the password itself holds a ':').
        viewer = official(locked, f, basic_call_creds("robot", "s3cret:x"))
        await viewer.init_cluster_info()
        assert stream in {s.name for s in await viewer.list_streams()}
        for creds in [None, grpc.access_token_call_credentials("x" * 30),
                      basic_call_creds("robot", "wrong"), basic_call_creds("nobody", "s3cret:x")]:
            bad = official(locked, f, creds)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await bad.init_cluster_info()
                await bad.list_streams()
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, e.value
        return True

    assert asyncio.run(main())
    # Raw stubs: every service (HStreamApi, StreamCell's SQL) and every call is checked.
    creds = grpc.ssl_channel_credentials(root_certificates=f["ca"].read_bytes())
    with grpc.secure_channel(locked.target, creds) as ch:
        stub = pb_grpc.HStreamApiStub(ch)
        for call in [lambda: stub.DescribeCluster(empty_pb2.Empty(), timeout=10),
                     lambda: stub.ExecuteQuery(pb.CommandQuery(stmt_text="SELECT 1;"), timeout=10),
                     lambda: stub.DeleteStream(pb.DeleteStreamRequest(streamName=stream), timeout=10)]:
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "credentials required" in e.value.details()
    # The stream is still there.
    with grpc.secure_channel(locked.target, locked.credentials()) as ch:
        names = {s.streamName for s in pb_grpc.HStreamApiStub(ch).ListStreams(pb.ListStreamsRequest(), timeout=10).streams}
        assert stream in names
    # StreamCell's own shell, with a token and with a user.
    sh = [str(server_binary()), "sql", "--host", "127.0.0.1", "--port", str(locked.port),
          "--tls-ca", str(f["ca"]), "-e", "SELECT 1 AS one;"]
    r = subprocess.run(sh + ["--token", TOKEN], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and '"one":1' in r.stdout.replace(" ", ""), r
    r = subprocess.run(sh + ["--user", "viewer", "--password", "pw2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    r = subprocess.run(sh, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "UNAUTHENTICATED" in r.stderr, r


# ---- HTTP ----------------------------------------------------------------------------------

def test_http_is_https_and_needs_credentials(locked, tls_files):
    ca = tls_files["ca"]
    code, body = curl(locked, "/api/v1/streams", "-H", f"Authorization: Bearer {TOKEN}", ca=ca)
    assert code == 200 and "streams" in json.loads(body), body
    code, body = curl(locked, "/api/v1/streams", "-u", "viewer:pw2", ca=ca)
    assert code == 200, body
    for extra in [[], ["-H", "Authorization: Bearer nope"], ["-u", "viewer:wrong"]]:
        code, body = curl(locked, "/api/v1/streams", *extra, ca=ca)
        assert code == 401 and json.loads(body)["error"] == "unauthenticated", (extra, body)
    # Health and metrics are closed too unless --open-health; so is a route that does not exist.
    assert curl(locked, "/health", ca=ca)[0] == 401
    assert curl(locked, "/metrics", ca=ca)[0] == 401
    assert curl(locked, "/nope", ca=ca)[0] == 401
    # Nothing changes without credentials.
    stream = uid("h")
    code, _ = curl(locked, "/api/v1/streams", "-H", f"Authorization: Bearer {TOKEN}",
                   "-H", "content-type: application/json", "-d", json.dumps({"name": stream}),
                   ca=ca, method="POST")
    assert code == 201
    assert curl(locked, f"/api/v1/streams/{stream}", ca=ca, method="DELETE")[0] == 401
    code, _ = curl(locked, "/api/v1/sql", "-d", json.dumps({"sql": f"DROP STREAM {stream};"}), ca=ca,
                   method="POST")
    assert code == 401
    assert curl(locked, f"/api/v1/streams/{stream}", "-u", "viewer:pw2", ca=ca)[0] == 200
    # Plain HTTP to the HTTPS port gets nothing; an unknown CA fails verification.
    assert curl(locked, "/health", scheme="http")[0] is None
    assert curl(locked, "/health", ca=tls_files["rogue_ca"])[0] is None


def test_open_health_leaves_only_health_and_metrics_open(start_server, tls_files):
    f = tls_files
    srv = start_server(*locked_flags(f, "--open-health"),
                       tls_client={"root_certificates": f["ca"].read_bytes()}, token=TOKEN)
    assert curl(srv, "/health", ca=f["ca"])[0] == 200
    code, body = curl(srv, "/metrics", ca=f["ca"])
    assert code == 200 and "streamcell_" in body
    assert curl(srv, "/api/v1/streams", ca=f["ca"])[0] == 401


# ---- PostgreSQL ----------------------------------------------------------------------------

def test_psql_verify_full_scram_and_channel_binding(locked, tls_files):
    ca = tls_files["ca"]
    full = [f"sslmode=verify-full", f"sslrootcert={ca}"]
    r = psql(locked, "robot", "s3cret:x", *full)
    assert r.returncode == 0 and r.stdout.strip() == "1", r
    r = psql(locked, "viewer", "pw2", *full, "channel_binding=require")
    assert r.returncode == 0, r
    # The token is the password of the user "token" (and of no other name).
    r = psql(locked, "token", TOKEN, *full)
    assert r.returncode == 0, r
    r = psql(locked, "grafana", TOKEN, *full)
    assert r.returncode != 0, r
    r = psql(locked, "robot", "wrong", *full)
    assert r.returncode != 0 and 'password authentication failed for user "robot"' in r.stderr.lower(), r
    r = psql(locked, "intruder", "s3cret:x", *full)
    assert r.returncode != 0 and 'for user "intruder"' in r.stderr, r
    # TLS is required: a client that does not ask for it is refused, with the reason.
    r = psql(locked, "robot", "s3cret:x", "sslmode=disable")
    assert r.returncode != 0 and "requires TLS" in r.stderr, r
    # psycopg (libpq 17 in the wheel) too.
    with psycopg.connect(f"host=127.0.0.1 port={locked.pg_port} user=robot password=s3cret:x dbname=streamcell "
                         f"sslmode=verify-full sslrootcert={ca}", autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.pgconn.ssl_in_use


def test_client_certificates_alone_lock_every_door(start_server, tls_files):
    f = tls_files
    srv = start_server("--tls-cert", str(f["server_cert"]), "--tls-key", str(f["server_key"]),
                       "--tls-ca", str(f["ca"]),
                       tls_client={"root_certificates": f["ca"].read_bytes(),
                                   "private_key": f["client_key"].read_bytes(),
                                   "certificate_chain": f["client_cert"].read_bytes()})
    cert = ["--cert", str(f["client_cert"]), "--key", str(f["client_key"])]
    assert curl(srv, "/api/v1/streams", *cert, ca=f["ca"])[0] == 200
    assert curl(srv, "/api/v1/streams", ca=f["ca"])[0] is None  # no certificate: no handshake
    rogue = ["--cert", str(f["rogue_client_cert"]), "--key", str(f["rogue_client_key"])]
    assert curl(srv, "/api/v1/streams", *rogue, ca=f["ca"])[0] is None
    full = ["sslmode=verify-full", f"sslrootcert={f['ca']}"]
    r = psql(srv, "anyone", None, *full, f"sslcert={f['client_cert']}", f"sslkey={f['client_key']}")
    assert r.returncode == 0 and r.stdout.strip() == "1", r
    r = psql(srv, "anyone", None, *full)
    assert r.returncode != 0, r
