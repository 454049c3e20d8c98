"""Hostile SQL on every door: no statement reaches the file system, and no statement, however
deep, crashes the server (now or at its next start).

Each case reproduces a finding of the adversarial review (issue 19): `COPY … TO` through the
PostgreSQL catalog path wrote any file; a 2 KB `SELECT 1+1+…` overflowed the stack and aborted
the process from pgwire, HTTP and gRPC; a view whose expression was deep enough to crash at
its first record was saved and crashed every restart (that case is in Rust:
tests/sql_limits.rs, which writes the catalog directly)."""

import json
import urllib.error
import urllib.request

import grpc
import psycopg
import pytest
from google.protobuf import json_format

from helpers import create_stream_raw, pb, rpc_error, uid


def pg(srv):
    return psycopg.connect(
        f"host={srv.host} port={srv.pg_port} user=streamcell dbname=streamcell connect_timeout=10",
        autocommit=True)


def grpc_sql(stub, text):
    resp = stub.ExecuteQuery(pb.CommandQuery(stmt_text=text), timeout=60)
    return [json_format.MessageToDict(s) for s in resp.result_set]


def http_sql(srv, text):
    req = urllib.request.Request(
        f"http://{srv.host}:{srv.http_port}/api/v1/sql", method="POST",
        data=json.dumps({"sql": text}).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def alive(srv):
    assert srv.proc.poll() is None, "the server died"
    with pg(srv) as c:
        assert c.execute("SELECT 1 + 1 AS two").fetchone()[0] == 2


@pytest.mark.parametrize("statement", [
    "EXPLAIN ANALYZE COPY (SELECT 'X' AS pg_class) TO '{path}' STORED AS CSV",
    "COPY (SELECT 'X' AS pg_class) TO '{path}' STORED AS CSV",
    "SELECT 1 FROM pg_class; COPY (SELECT 1) TO '{path}'",
    "CREATE EXTERNAL TABLE pg_class_x STORED AS CSV LOCATION '{path}'",
    "EXPLAIN COPY (SELECT current_database()) TO '{path}'",
    "INSERT INTO pg_class VALUES (1)",
])
def test_no_sql_reaches_the_file_system(start_server, tmp_path, statement):
    srv = start_server()
    target = tmp_path / "written-by-sql.csv"
    text = statement.format(path=target)
    with pg(srv) as c:
        with pytest.raises(psycopg.Error) as e:
            c.execute(text)
        assert e.value.sqlstate in ("0A000", "42601", "42000", "42P01"), (e.value.sqlstate, str(e.value))
    assert not target.exists(), f"{text!r} wrote {target}"
    # Nor over the other doors.
    stub = srv.stub()
    rpc_error(stub.ExecuteQuery, pb.CommandQuery(stmt_text=text), timeout=30)
    status, _ = http_sql(srv, text)
    assert status >= 400
    assert not target.exists()
    alive(srv)


def chain(op, n, term="1"):
    return f" {op} ".join([term] * n)


DEEP = [
    f"SELECT {chain('+', 5000)}",
    f"SELECT 1 WHERE {chain('AND', 5000, 'TRUE')}",
    f"SELECT 1 WHERE {chain('OR', 5000, 'FALSE')}",
    "SELECT " + "(" * 5000 + "1" + ")" * 5000,
    "SELECT " + "-" * 5000 + "1",
    "SELECT " + "abs(" * 3000 + "1" + ")" * 3000,
    f"SELECT {chain('||', 5000, chr(39) + 'a' + chr(39))}",
]


@pytest.mark.parametrize("statement", DEEP, ids=["plus", "and", "or", "parens", "minus", "calls", "concat"])
def test_deep_statements_are_refused_on_every_door(start_server, statement):
    srv = start_server()
    with pg(srv) as c:
        with pytest.raises(psycopg.Error) as e:
            c.execute(statement)
        assert e.value.sqlstate in ("54001", "42601"), (e.value.sqlstate, str(e.value))
        # The extended protocol (Parse) too.
        with pytest.raises(psycopg.Error):
            c.execute(statement + " WHERE 1 = %s", (1,), prepare=True)
    err = rpc_error(srv.stub().ExecuteQuery, pb.CommandQuery(stmt_text=statement), timeout=60)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    status, body = http_sql(srv, statement)
    assert status == 400, (status, body)
    alive(srv)


def test_expressions_up_to_the_limit_run_everywhere(start_server):
    """Deep, but within the limit: pull, push, view and persistent query all evaluate it."""
    srv = start_server()
    stub = srv.stub()
    s = uid("deep")
    create_stream_raw(stub, s)
    terms = 900
    expr = chain("+", terms, "x")
    grpc_sql(stub, f"INSERT INTO {s} (k, x) VALUES ('a', 1);")
    grpc_sql(stub, f"CREATE VIEW {s}_v AS SELECT k, SUM({expr}) AS total FROM {s} GROUP BY k;")
    grpc_sql(stub, f"CREATE STREAM {s}_out AS SELECT {expr} AS total FROM {s};")
    grpc_sql(stub, "FLUSH;")
    assert grpc_sql(stub, f"SELECT {expr} AS total FROM {s};") == [{"total": float(terms)}]
    assert grpc_sql(stub, f"SELECT total FROM {s}_v;") == [{"total": float(terms)}]
    assert grpc_sql(stub, f"SELECT total FROM {s}_out;") == [{"total": float(terms)}]
    with pg(srv) as c:
        assert c.execute(f"SELECT {chain('+', terms)} AS n").fetchone()[0] == terms
    alive(srv)
