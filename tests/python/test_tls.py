"""TLS on the gRPC port (`--tls-cert/--tls-key`, optionally `--tls-ca` for client
certificates), with the official client's secure_client(...) and hstreams:// URLs.

The certificates come from the session fixture `tls_files` (openssl CLI, throwaway CA). The
server certificate has SAN IP:127.0.0.1 and DNS:localhost: the client connects to the host
the server advertises, 127.0.0.1, and hstreamdb 0.5.0 opens *insecure* channels for any
advertised target that differs from the one it was created with."""

import asyncio

import grpc
import pytest
from google.protobuf import empty_pb2

import hstreamdb
from helpers import ConsumerRun, pb, pb_grpc, read_all, rid_tuple, run, uid


def _read(p) -> bytes:
    return p.read_bytes()


def _server_flags(f, mutual: bool):
    flags = ["--tls-cert", str(f["server_cert"]), "--tls-key", str(f["server_key"])]
    if mutual:
        flags += ["--tls-ca", str(f["ca"])]
    return flags


def _client_creds(f, with_cert: bool = True) -> dict:
    creds = {"root_certificates": _read(f["ca"])}
    if with_cert:
        creds.update(private_key=_read(f["client_key"]), certificate_chain=_read(f["client_cert"]))
    return creds


async def _round_trip(client, tag: str):
    """Create a stream, append (plain and gzip), read back, subscribe and consume."""
    stream = uid(tag)
    await client.create_stream(stream, shard_count=2)
    assert stream in {s.name for s in await client.list_streams()}
    rids = list(await client.append(stream, [f"{tag}-{i}" for i in range(5)], key="a"))
    rids += list(await client.append(stream, [{"n": 1, "tag": tag}], key="a", compresstype="gzip"))
    shard = rids[0].shard_id
    got = await read_all(client, stream, shard)
    assert [r.id for r in got] == rids
    assert [r.payload for r in got] == [f"{tag}-{i}".encode() for i in range(5)] + [{"n": 1.0, "tag": tag}]
    sub = uid("sub")
    await client.create_subscription(sub, stream, ack_timeout=30, offset=hstreamdb.SpecialOffset.EARLIEST)
    c = ConsumerRun(client, sub).start()
    try:
        await c.wait_count(len(rids))
        assert sorted(c.ids()) == sorted(rid_tuple(r) for r in rids)
        await c.close()
        assert c.error is None
    finally:
        if not c.finished:
            await c.cancel()
    await client.delete_subscription(sub)
    await client.delete_stream(stream)


@pytest.fixture
def mtls_server(start_server, tls_files):
    return start_server(*_server_flags(tls_files, mutual=True), tls_client=_client_creds(tls_files))


def test_mutual_tls_secure_client_and_url(mtls_server, tls_files):
    srv = mtls_server
    creds = _client_creds(tls_files)
    # The harness' raw stub goes over TLS too.
    assert srv.stub().Echo(pb.EchoRequest(msg="tls"), timeout=10).msg == "tls"

    async def main():
        client = await hstreamdb.secure_client(host=srv.host, port=srv.port, **creds)
        async with client:
            await _round_trip(client, "hostport")
        client = await hstreamdb.secure_client(url=f"hstreams://127.0.0.1:{srv.port}", **creds)
        async with client:
            await _round_trip(client, "url")
        # File paths instead of contents.
        client = await hstreamdb.secure_client(
            host=srv.host, port=srv.port, is_creds_file=True, root_certificates=str(tls_files["ca"]),
            private_key=str(tls_files["client_key"]), certificate_chain=str(tls_files["client_cert"]))
        async with client:
            await _round_trip(client, "files")

    run(main())


def test_server_side_tls_only(start_server, tls_files):
    """Without --tls-ca no client certificate is needed (one is still accepted)."""
    # TLS without credentials is half-locked: the server refuses it unless told.
    srv = start_server(*_server_flags(tls_files, mutual=False), "--allow-partial-security",
                       tls_client=_client_creds(tls_files, with_cert=False))

    async def main():
        client = await hstreamdb.secure_client(host=srv.host, port=srv.port,
                                               root_certificates=_read(tls_files["ca"]))
        async with client:
            await _round_trip(client, "servertls")
        client = await hstreamdb.secure_client(url=f"hstreams://127.0.0.1:{srv.port}", **_client_creds(tls_files))
        async with client:
            await _round_trip(client, "withcert")

    run(main())


async def _must_fail(coro, what: str) -> grpc.RpcError:
    try:
        client = await asyncio.wait_for(coro, 20)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAVAILABLE, (what, e.code(), e.details())
        return e
    await client.__aexit__(None, None, None)
    raise AssertionError(f"{what}: the connection was accepted")


def test_plaintext_client_is_refused(mtls_server, tls_files):
    srv = mtls_server

    async def main():
        await _must_fail(hstreamdb.insecure_client(host=srv.host, port=srv.port), "insecure_client")
        await _must_fail(hstreamdb.insecure_client(url=f"hstream://127.0.0.1:{srv.port}"), "hstream:// URL")

    run(main())
    with grpc.insecure_channel(srv.target) as ch:
        try:
            pb_grpc.HStreamApiStub(ch).DescribeCluster(empty_pb2.Empty(), timeout=10)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, (e.code(), e.details())
        else:
            raise AssertionError("a plaintext DescribeCluster was answered on the TLS port")
    # The server is fine and still serves TLS clients.
    assert srv.running
    assert srv.stub().Echo(pb.EchoRequest(msg="still"), timeout=10).msg == "still"


def test_client_certificate_required_and_checked(mtls_server, tls_files):
    srv = mtls_server
    f = tls_files

    async def main():
        # No client certificate.
        await _must_fail(hstreamdb.secure_client(host=srv.host, port=srv.port, root_certificates=_read(f["ca"])),
                         "no client certificate")
        # A client certificate from another CA.
        await _must_fail(hstreamdb.secure_client(host=srv.host, port=srv.port, root_certificates=_read(f["ca"]),
                                                 private_key=_read(f["rogue_client_key"]),
                                                 certificate_chain=_read(f["rogue_client_cert"])),
                         "client certificate from an unknown CA")
        # The client does not trust the server's CA.
        await _must_fail(hstreamdb.secure_client(host=srv.host, port=srv.port, root_certificates=_read(f["rogue_ca"]),
                                                 private_key=_read(f["client_key"]),
                                                 certificate_chain=_read(f["client_cert"])),
                         "server certificate from an untrusted CA")
        # A good client still works.
        client = await hstreamdb.secure_client(host=srv.host, port=srv.port, **_client_creds(f))
        async with client:
            stream = uid("ok")
            await client.create_stream(stream)
            assert stream in {s.name for s in await client.list_streams()}

    run(main())
    assert srv.running


@pytest.mark.parametrize("case", ["missing-cert", "missing-key", "missing-ca", "cert-is-a-directory",
                                  "garbage-cert", "garbage-key", "key-without-cert"])
def test_bad_tls_files_make_the_server_exit(start_server, tls_files, tmp_path, case):
    f = tls_files
    missing = tmp_path / "no-such-dir" / "nothing.pem"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not a PEM file\n")
    cert, key, ca = str(f["server_cert"]), str(f["server_key"]), None
    named = None  # the path the error message must name
    if case == "missing-cert":
        cert = named = str(missing)
    elif case == "missing-key":
        key = named = str(missing)
    elif case == "missing-ca":
        ca = named = str(missing)
    elif case == "cert-is-a-directory":
        cert = named = str(tmp_path)
    elif case == "garbage-cert":
        cert = str(garbage)
    elif case == "garbage-key":
        key = str(garbage)
    args = ["--tls-cert", cert, "--tls-key", key, "--allow-partial-security"] + (["--tls-ca", ca] if ca else [])
    if case == "key-without-cert":
        args = ["--tls-key", key]
    srv = start_server(*args, wait=False)
    srv.spawn()
    try:
        rc = srv.proc.wait(20)
    except Exception:
        raise AssertionError(f"{case}: the server kept running\n" + srv.log_tail())
    log = srv.last_run_log()
    assert rc != 0, f"{case}: exit code 0\n{log}"
    if named:
        assert named in log, f"{case}: the message does not name {named}:\n{log}"
    elif case.startswith("garbage"):
        assert "TLS" in log or "tls" in log or "certificate" in log or "key" in log, log
    else:
        assert "--tls-cert" in log, log
