"""Malformed extended-protocol messages on the PostgreSQL port, sent raw: each gets an error
or its connection closed, never a panic, and the server keeps serving everyone else.

pgwire 0.42.1's decoder panicked on several of them (more parameter types announced than sent,
a value longer than its message); vendor/pgwire carries the bounds checks.

Before, `Parse` of `SELECT $2147483647` made the server reserve room for two billion
parameter types (48 GiB): the allocation failed and the whole process aborted."""

import socket
import struct

import psycopg

from helpers import uid


def msg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def cstr(s) -> bytes:
    return (s if isinstance(s, bytes) else s.encode()) + b"\0"


def h(*v):
    return struct.pack("!" + "h" * len(v), *v)


def parse(name, sql, *oids):
    return msg(b"P", cstr(name) + cstr(sql) + h(len(oids)) + b"".join(struct.pack("!I", o) for o in oids))


def bind(stmt, values=(), formats=()):
    body = cstr("") + cstr(stmt) + h(len(formats), *formats) + h(len(values))
    for v in values:
        body += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v
    return msg(b"B", body + h(0))


EXECUTE_SYNC = msg(b"E", cstr("") + struct.pack("!i", 0)) + msg(b"S", b"")

CASES = {
    "a parameter number past 65535": parse("p1", "SELECT $2147483647") + bind("p1"),
    "more parameter types than sent": msg(b"P", cstr("p2") + cstr("SELECT $1") + h(3) + struct.pack("!I", 23)),
    "a negative parameter-type count": msg(b"P", cstr("p3") + cstr("SELECT 1") + h(-5)),
    "bind to no statement": bind("ghost"),
    "too many values": parse("p4", "SELECT $1::int") + bind("p4", [b"1", b"2", b"3"]),
    "too few values": parse("p5", "SELECT $1::int, $2::int") + bind("p5", [b"1"]),
    "a value longer than the message": parse("p6", "SELECT $1::text") + msg(
        b"B", cstr("") + cstr("p6") + h(0) + h(1) + struct.pack("!i", 100000) + b"x" + h(0)),
    "a negative value length": parse("p7", "SELECT $1::text") + msg(
        b"B", cstr("") + cstr("p7") + h(0) + h(1) + struct.pack("!i", -7) + h(0)),
    "binary garbage for an int4": parse("p8", "SELECT $1::int", 23) + bind("p8", [b"abc"], [1]),
    "a short binary int8": parse("p9", "SELECT $1::bigint", 20) + bind("p9", [b"\x00\x01"], [1]),
    "an out-of-range binary timestamp": parse("pa", "SELECT $1::timestamp", 1114) + bind(
        "pa", [b"\x7f\xff\xff\xff\xff\xff\xff\xff"], [1]),
    "an unknown type oid": parse("pb", "SELECT $1", 4294967295) + bind("pb", [b"\x00\x00\x00\x01"], [1]),
    "execute no portal": msg(b"E", cstr("nope") + struct.pack("!i", 0)),
    "describe a bad kind": msg(b"D", b"X" + cstr("p1")),
    "invalid UTF-8 in the SQL": msg(b"P", cstr("pc") + b"SELECT '\xff\xfe'\0" + h(0)),
}


def session(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    body = struct.pack("!I", 196608) + b"user\0u\0database\0streamcell\0\0"
    s.sendall(struct.pack("!I", len(body) + 4) + body)
    got = b""
    while not got.endswith(b"Z\0\0\0\x05I"):
        chunk = s.recv(65536)
        assert chunk, "closed during start-up"
        got += chunk
    return s


def answer(s) -> bytes:
    """Everything the server sends until ReadyForQuery or the end of the connection."""
    s.settimeout(10)
    got = b""
    try:
        while not got.endswith(b"Z\0\0\0\x05I"):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return got


def test_malformed_extended_messages_get_errors_and_harm_no_one(server):
    stream = uid("m")
    with psycopg.connect(f"host=127.0.0.1 port={server.pg_port} user=u dbname=streamcell", autocommit=True) as other:
        other.execute(f"CREATE STREAM {stream} (a INTEGER)")
        for name, message in CASES.items():
            s = session(server.pg_port)
            s.sendall(message + EXECUTE_SYNC)
            answer(s)  # an ErrorResponse, or the connection closed (pgwire's decoder)
            s.close()
            assert server.running, f"{name}: the server died\n{server.log_tail()}"
            other.execute(f"INSERT INTO {stream} (a) VALUES (%s)", (1,))
        assert other.execute(f"SELECT count(*) FROM {stream}").fetchone() == (len(CASES),)
    assert "panicked" not in server.log_text(), server.log_tail()
    # The parameter bound is a clear error, on the extended protocol as on the simple one.
    s = session(server.pg_port)
    s.sendall(CASES["a parameter number past 65535"] + EXECUTE_SYNC)
    got = answer(s)
    s.close()
    assert b"C54000" in got and b"at most 65535 parameters" in got, got


def test_malformed_sasl_messages_before_login_get_errors_not_panics(start_server):
    """A client that sends a short or overlong SASLInitialResponse (the first `p` message of
    SCRAM) before logging in: pgwire's decoder panicked on both (fuzz regression K2)."""
    server = start_server("--user", "robot:pw", "--allow-partial-security")
    bad = {
        "no data length": msg(b"p", cstr("SCRAM-SHA-256") + b"\x00\x01"),
        "a length past the end": msg(b"p", cstr("SCRAM-SHA-256") + struct.pack("!i", 100) + b"x"),
        "a negative length": msg(b"p", cstr("SCRAM-SHA-256") + struct.pack("!i", -5)),
    }
    for name, message in bad.items():
        s = socket.create_connection(("127.0.0.1", server.pg_port), timeout=10)
        body = struct.pack("!I", 196608) + b"user\0robot\0database\0streamcell\0\0"
        s.sendall(struct.pack("!I", len(body) + 4) + body)
        got = s.recv(65536)
        assert got[:1] == b"R", f"{name}: expected an authentication request, got {got!r}"
        s.sendall(message)
        answer(s)  # an ErrorResponse, or the connection closed
        s.close()
        assert server.running, f"{name}: the server died\n{server.log_tail()}"
    assert "panicked" not in server.log_text(), server.log_tail()
    with psycopg.connect(
        f"host=127.0.0.1 port={server.pg_port} user=robot password=pw dbname=streamcell"
    ) as ok:
        assert ok.execute("SELECT 1").fetchone() == (1,)
