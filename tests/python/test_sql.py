"""SQL through the official protocol: HStreamDB's ExecuteQuery RPC (raw stub), records
appended as dicts by the official `hstreamdb` client feeding views and persistent queries,
and a persistent query's output stream read back as dicts by the official client."""

import grpc
from google.protobuf import json_format

from helpers import (
    assert_rpc_error,
    connect,
    create_stream_raw,
    pb,
    read_all,
    rpc_error,
    run,
    shards_of,
    uid,
)


def sql(stub, text):
    """ExecuteQuery -> list of dicts."""
    resp = stub.ExecuteQuery(pb.CommandQuery(stmt_text=text), timeout=60)
    return [json_format.MessageToDict(s) for s in resp.result_set]


def test_execute_query_runs_the_seed_statements_and_pull_queries(server):
    stub = server.stub()
    assert sql(stub, "CREATE STREAM visit;") == []
    for user, length in [("Alice", 10), ("Bob", 20), ("Caleb", 10)]:
        # The seed's double-quoted values are strings.
        sql(stub, f'INSERT INTO visit (product, user, length) VALUES ("Apple", "{user}", {length});')
    rows = sql(stub, "SELECT product, MAX(length) AS max_len, COUNT(*) AS n FROM visit GROUP BY product;")
    assert rows == [{"product": "Apple", "max_len": 20.0, "n": 3.0}]
    names = [r["stream_name"] for r in sql(stub, "SHOW STREAMS;")]
    assert "visit" in names


def test_execute_query_errors_have_the_right_codes(server):
    stub = server.stub()
    err = rpc_error(stub.ExecuteQuery, pb.CommandQuery(stmt_text="SELEKT 1;"), timeout=30)
    assert_rpc_error(err, grpc.StatusCode.INVALID_ARGUMENT)
    assert "line 1, column 1" in err.details()
    err = rpc_error(stub.ExecuteQuery, pb.CommandQuery(stmt_text="SELECT * FROM nowhere;"), timeout=30)
    assert_rpc_error(err, grpc.StatusCode.NOT_FOUND)
    sql(stub, "CREATE STREAM s;")
    err = rpc_error(stub.ExecuteQuery, pb.CommandQuery(stmt_text="SELECT * FROM s EMIT CHANGES;"), timeout=30)
    assert_rpc_error(err, grpc.StatusCode.INVALID_ARGUMENT)
    # The server keeps serving.
    assert sql(stub, "SHOW VIEWS;") == []


def test_client_dicts_feed_a_view_and_a_query_whose_output_the_client_reads_as_dicts(server):
    stub = server.stub()
    stream, hot = uid("robots"), uid("hot")
    create_stream_raw(stub, stream)
    readings = [
        {"robot": "r1", "temp": 20.5, "ok": True},
        {"robot": "r2", "temp": 35.0, "ok": False},
        {"robot": "r1", "temp": 40.25, "ok": True},
        {"robot": "r3", "temp": 12.0},  # no "ok": NULL there
    ]

    async def append():
        async with connect(server) as client:
            await client.append(stream, readings)

    run(append())
    sql(stub, f"CREATE VIEW temps AS SELECT robot, COUNT(*) AS n, MAX(temp) AS hottest FROM {stream} GROUP BY robot;")
    sql(stub, f"CREATE STREAM {hot} AS SELECT robot, temp, ok FROM {stream} WHERE temp > 30;")
    sql(stub, "FLUSH;")
    rows = sorted(sql(stub, "SELECT * FROM temps;"), key=lambda r: r["robot"])
    assert rows == [
        {"robot": "r1", "n": 2.0, "hottest": 40.25},
        {"robot": "r2", "n": 1.0, "hottest": 35.0},
        {"robot": "r3", "n": 1.0, "hottest": 12.0},
    ]

    # More records after the view exists are folded in.
    run(append())
    sql(stub, "FLUSH;")
    rows = {r["robot"]: r["n"] for r in sql(stub, "SELECT robot, n FROM temps WHERE n >= 2;")}
    assert rows == {"r1": 4.0, "r2": 2.0, "r3": 2.0}

    async def read_hot():
        async with connect(server) as client:
            shard = shards_of(stub, hot)[0].shardId
            return await read_all(client, hot, shard)

    got = [r.payload for r in run(read_hot())]
    hot_rows = [{"robot": "r2", "temp": 35.0, "ok": False}, {"robot": "r1", "temp": 40.25, "ok": True}]
    assert got == hot_rows * 2
    queries = {r["query_id"]: r["status"] for r in sql(stub, "SHOW QUERIES;")}
    assert queries.get(hot) == "RUNNING"
    assert queries.get("temps") == "RUNNING"


def test_query_and_view_management_rpcs(server):
    stub = server.stub()
    src = uid("src")
    create_stream_raw(stub, src)
    sql(stub, f"INSERT INTO {src} (k, v) VALUES ('a', 1), ('b', 2), ('a', 3);")
    q = stub.CreateQuery(pb.CreateQueryRequest(sql=f"CREATE STREAM big_{src} AS SELECT k, v FROM {src} WHERE v > 1;",
                                               queryName=f"q_{src}"), timeout=30)
    assert q.id == f"q_{src}" and q.resultName == f"big_{src}" and list(q.sources) == [src]
    assert q.type == pb.CreateStreamAs
    v = stub.CreateQuery(pb.CreateQueryRequest(sql=f"CREATE VIEW sums AS SELECT k, SUM(v) AS total FROM {src} GROUP BY k;"),
                         timeout=30)
    assert v.id == "sums" and v.type == pb.CreateViewAs
    sql(stub, "FLUSH;")
    ids = {x.id for x in stub.ListQueries(pb.ListQueriesRequest(), timeout=30).queries}
    assert {f"q_{src}", "sums"} <= ids
    assert stub.GetQuery(pb.GetQueryRequest(id=f"q_{src}"), timeout=30).status == pb.TASK_RUNNING
    views = stub.ListViews(pb.ListViewsRequest(), timeout=30).views
    assert [x.viewId for x in views] == ["sums"] and list(views[0].schema) == ["k", "total"]
    res = stub.ExecuteViewQuery(pb.ExecuteViewQueryRequest(sql="SELECT * FROM sums WHERE k = 'a';"), timeout=30)
    assert [json_format.MessageToDict(s) for s in res.results] == [{"k": "a", "total": 4.0}]

    # ParseSql names the view a pull query reads; anything else is refused.
    parsed = stub.ParseSql(pb.ParseSqlRequest(sql="SELECT k, total FROM sums WHERE total > 1;"), timeout=30)
    assert parsed.WhichOneof("sql") == "evqSql" and parsed.evqSql.view == "sums"
    err = rpc_error(stub.ParseSql, pb.ParseSqlRequest(sql=f"SELECT * FROM {src} EMIT CHANGES;"), timeout=30)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    err = rpc_error(stub.ParseSql, pb.ParseSqlRequest(sql="SELECT * FROM no_such_view;"), timeout=30)
    assert err.code() == grpc.StatusCode.NOT_FOUND, err
    err = rpc_error(stub.ParseSql, pb.ParseSqlRequest(sql="SELEC * FROM sums;"), timeout=30)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "line 1" in err.details(), err.details()
    stub.PauseQuery(pb.PauseQueryRequest(id=f"q_{src}"), timeout=30)
    assert stub.GetQuery(pb.GetQueryRequest(id=f"q_{src}"), timeout=30).status == pb.TASK_PAUSED
    stub.ResumeQuery(pb.ResumeQueryRequest(id=f"q_{src}"), timeout=30)
    stub.TerminateQuery(pb.TerminateQueryRequest(queryId=f"q_{src}"), timeout=30)
    assert stub.GetQuery(pb.GetQueryRequest(id=f"q_{src}"), timeout=30).status == pb.TASK_TERMINATED
    stub.DeleteQuery(pb.DeleteQueryRequest(id=f"q_{src}"), timeout=30)
    err = rpc_error(stub.GetQuery, pb.GetQueryRequest(id=f"q_{src}"), timeout=30)
    assert_rpc_error(err, grpc.StatusCode.NOT_FOUND, 400)
    err = rpc_error(stub.DeleteQuery, pb.DeleteQueryRequest(id="sums"), timeout=30)
    assert_rpc_error(err, grpc.StatusCode.FAILED_PRECONDITION)
    stub.DeleteView(pb.DeleteViewRequest(viewId="sums"), timeout=30)
    stub.DeleteView(pb.DeleteViewRequest(viewId="sums", ignoreNonExist=True), timeout=30)
    err = rpc_error(stub.GetView, pb.GetViewRequest(viewId="sums"), timeout=30)
    assert_rpc_error(err, grpc.StatusCode.NOT_FOUND, 500)
