"""The HTTP endpoint (--http-port): /health, /metrics scraped over real HTTP and parsed with
the official Prometheus client's parser (counters checked against what the official
hstreamdb client appended, read and consumed), the JSON REST API under /api/v1, and
clients that send garbage or leave mid-request (the server keeps serving)."""

import json
import socket
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from helpers import (
    HOST,
    STARTUP_TIMEOUT,
    ConsumerRun,
    append_spread,
    connect,
    pb,
    raw_append,
    read_all,
    run,
    shards_of,
    special_offset,
    stop_all,
    uid,
    wait_until,
    wait_until_sync,
)

# urllib without proxies: the server is on 127.0.0.1 whatever the environment says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(srv, method, path, body=None, raw=None):
    """(status, headers, body bytes) of one request; errors are answers too."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json"} if data is not None else {}
    req = urllib.request.Request(f"http://{srv.host}:{srv.http_port}{path}", data=data,
                                 method=method, headers=headers)
    try:
        with _OPENER.open(req, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def http_json(srv, method, path, body=None, raw=None):
    status, headers, data = http(srv, method, path, body, raw)
    if status == 204:
        return status, None
    assert headers.get("Content-Type", "").startswith("application/json"), (status, headers, data)
    return status, json.loads(data)


def assert_error(answer, status, kind=None, contains=None):
    got_status, body = answer
    assert got_status == status, answer
    assert set(body) == {"error", "message"}, body
    if kind is not None:
        assert body["error"] == kind, body
    if contains is not None:
        assert contains in body["message"], body


def scrape(srv):
    """{family name: prometheus_client Metric} from GET /metrics."""
    status, headers, data = http(srv, "GET", "/metrics")
    assert status == 200, data
    assert headers.get("Content-Type", "").startswith("text/plain; version=0.0.4"), headers
    return {m.name: m for m in text_string_to_metric_families(data.decode())}


def value(families, family, sample_name=None, **labels):
    """The value of the one sample of `family` with these labels (None if there is none)."""
    m = families.get(family)
    if m is None:
        return None
    found = [s.value for s in m.samples
             if (sample_name is None or s.name == sample_name)
             and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, (family, labels, found)
    return found[0] if found else None


def sql(srv, text):
    status, body = http_json(srv, "POST", "/api/v1/sql", {"sql": text})
    assert status == 200, body
    return body["results"]


# --------------------------------------------------------------------------------------


def test_health_answers_json(server):
    status, body = http_json(server, "GET", "/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["version"]
    assert body["uptimeSeconds"] >= 0


def test_metrics_count_what_the_official_client_appended_read_and_consumed(server):
    stream, sub = uid("m"), uid("sub")
    n_batches, batch_size = 6, 5
    total = n_batches * batch_size

    async def work():
        async with connect(server) as client:
            await client.create_stream(stream, shard_count=2)
            appended = await append_spread(client, stream, n_batches, batch_size, tag="m")
            assert len(appended) == total
            # Every record once through shard readers.
            read = []
            for shard in await client.list_shards(stream):
                read.extend(await read_all(client, stream, shard.id))
            assert len(read) == total
            # And once through a subscription, all acknowledged.
            await client.create_subscription(sub, stream, ack_timeout=600, max_unacks=1000,
                                             offset=special_offset("EARLIEST"))
            c = ConsumerRun(client, sub).start()
            try:
                await c.wait_count(total, timeout=30)
                await c.drain()

                def settled():
                    f = scrape(server)
                    return (value(f, "streamcell_subscription_acked_records", subscription=sub) == total
                            and value(f, "streamcell_subscription_unacked_records", subscription=sub) == 0
                            and f)
                families = await wait_until(settled, 30, "all acks counted")
                assert value(families, "streamcell_subscription_consumers", subscription=sub) == 1
            finally:
                await stop_all([c])
            return families

    f = run(work())

    # Appends: records, batches and bytes per stream.
    assert f["streamcell_stream_appended_records"].type == "counter"
    assert value(f, "streamcell_stream_appended_records", stream=stream) == total
    assert value(f, "streamcell_stream_appended_batches", stream=stream) == n_batches
    assert value(f, "streamcell_stream_appended_bytes", stream=stream) > total
    # The latency histogram: one observation per batch, cumulative buckets ending in +Inf.
    h = f["streamcell_stream_append_latency_seconds"]
    assert h.type == "histogram"
    buckets = [(float(s.labels["le"]), s.value) for s in h.samples
               if s.name.endswith("_bucket") and s.labels["stream"] == stream]
    assert buckets[-1][0] == float("inf") and buckets[-1][1] == n_batches
    assert [b[0] for b in buckets] == sorted(b[0] for b in buckets)
    assert [b[1] for b in buckets] == sorted(b[1] for b in buckets)
    assert value(f, "streamcell_stream_append_latency_seconds", "streamcell_stream_append_latency_seconds_count",
                 stream=stream) == n_batches
    assert value(f, "streamcell_stream_append_latency_seconds", "streamcell_stream_append_latency_seconds_sum",
                 stream=stream) > 0
    # Reads, by how.
    assert value(f, "streamcell_stream_read_records", stream=stream, via="shard_reader") == total
    assert value(f, "streamcell_stream_read_records", stream=stream, via="subscription") == total
    assert value(f, "streamcell_stream_read_records", stream=stream, via="streaming_read") == 0
    # The subscription.
    assert value(f, "streamcell_subscription_delivered_records", subscription=sub, stream=stream) == total
    assert value(f, "streamcell_subscription_acked_records", subscription=sub) == total
    assert value(f, "streamcell_subscription_redelivered_records", subscription=sub) == 0
    assert f["streamcell_subscription_unacked_records"].type == "gauge"
    # Storage and process.
    on_disk = value(f, "streamcell_stream_storage_bytes", stream=stream)
    assert on_disk >= value(f, "streamcell_stream_appended_bytes", stream=stream)
    assert value(f, "streamcell_storage_bytes") >= on_disk
    assert value(f, "streamcell_process_resident_memory_bytes") > 1 << 20
    assert value(f, "streamcell_uptime_seconds") >= 0
    assert value(f, "streamcell_build_info") == 1


def test_metrics_list_the_busiest_streams_and_sum_the_rest(server):
    """Past 200 streams, per-stream series list the 200 busiest and one `_other` series holds
    the sum of the rest, so a scrape stays small however many streams there are."""
    stub = server.stub()
    names = [uid(f"many{i}_") for i in range(230)]
    for n in names:
        stub.CreateStream(pb.Stream(streamName=n, replicationFactor=1, shardCount=1), timeout=30)
    busy, quiet = names[:3], names[3:]
    for n in busy:
        raw_append(stub, n, shards_of(stub, n)[0].shardId, [b"x"] * 5)
    raw_append(stub, quiet[-1], shards_of(stub, quiet[-1])[0].shardId, [b"y"])
    families = scrape(server)
    assert value(families, "streamcell_streams") >= 230
    appended = families["streamcell_stream_appended_records"]
    listed = {s.labels["stream"] for s in appended.samples if s.name.endswith("_total")}
    assert len(listed) == 201 and "_other" in listed, len(listed)
    for n in busy + [quiet[-1]]:
        assert n in listed, n
        assert value(families, "streamcell_stream_appended_records", "streamcell_stream_appended_records_total",
                     stream=n) == (5 if n in busy else 1)
    # Every series of a stream family adds up to the same total as before the folding.
    total = sum(s.value for s in appended.samples if s.name.endswith("_total"))
    assert total >= 16
    assert value(families, "streamcell_stream_storage_bytes", stream="_other") > 0
    count = families["streamcell_stream_append_latency_seconds"]
    assert {s.labels["stream"] for s in count.samples if s.name.endswith("_count")} == listed


def test_metrics_follow_a_view_and_a_persistent_query(server):
    src, hot = uid("robots"), uid("hot")
    readings = [{"robot": f"r{i % 3}", "temp": 20.0 + i} for i in range(12)]

    async def append():
        async with connect(server) as client:
            await client.create_stream(src)
            for i in range(0, len(readings), 4):
                await client.append(src, readings[i:i + 4])

    run(append())
    sql(server, f"CREATE VIEW temps AS SELECT robot, COUNT(*) AS n FROM {src} GROUP BY robot;")
    sql(server, f"CREATE STREAM {hot} AS SELECT robot, temp FROM {src} WHERE temp > 25;")
    sql(server, "FLUSH;")

    def caught_up():
        f = scrape(server)
        ok = (value(f, "streamcell_query_records_in", query="temps", kind="view") == len(readings)
              and value(f, "streamcell_query_records_in", query=hot, kind="stream") == len(readings)
              and value(f, "streamcell_query_lag_batches", query="temps") == 0
              and value(f, "streamcell_query_lag_batches", query=hot) == 0)
        return ok and f

    f = wait_until_sync(caught_up, 30, "queries caught up in /metrics")
    hot_rows = sum(1 for r in readings if r["temp"] > 25)
    assert value(f, "streamcell_query_rows_out", query=hot, kind="stream") == hot_rows
    assert value(f, "streamcell_query_lag_seconds", query=hot) == 0
    assert value(f, "streamcell_query_status", query="temps", kind="view", status="RUNNING") == 1
    # The query's output stream counts its appends like any stream.
    assert value(f, "streamcell_stream_appended_records", stream=hot) == hot_rows

    # Paused, the query falls behind: lag in batches and in time.
    sql(server, f"PAUSE QUERY {hot};")
    run(append_more(server, src, [{"robot": "r9", "temp": 99.0}]))
    f = wait_until_sync(lambda: (lambda f: value(f, "streamcell_query_lag_batches", query=hot) == 1 and f)(scrape(server)),
                        30, "lag of the paused query")
    assert value(f, "streamcell_query_lag_seconds", query=hot) >= 0
    assert value(f, "streamcell_query_status", query=hot, status="PAUSED") == 1


async def append_more(server, stream, rows):
    async with connect(server) as client:
        await client.append(stream, rows)


def test_metrics_show_datacell_receptors_emitters_and_baskets(server):
    # A passive TCP receptor on a free port; one good line and one that does not parse.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        rport = s.getsockname()[1]
    sql(server, "create table datacell.mbin (id integer, payload integer);")
    sql(server, f"call datacell.receptor('datacell.mbin', '127.0.0.1', {rport});")
    sql(server, "call datacell.resume();")
    with socket.create_connection(("127.0.0.1", rport), timeout=10) as c:
        c.sendall(b"1,10\n2,20\nnot,a,row\n")

    def counted():
        f = scrape(server)
        return (value(f, "streamcell_datacell_receptor_events", basket="datacell.mbin") == 2
                and value(f, "streamcell_datacell_receptor_rejected", basket="datacell.mbin") == 1
                and f)

    f = wait_until_sync(counted, 30, "receptor counters")
    assert value(f, "streamcell_datacell_basket_rows", basket="datacell.mbin") == 2
    assert f["streamcell_datacell_emitter_events"].type == "counter"


def test_rest_api_streams(server):
    name = uid("rest")
    status, body = http_json(server, "POST", "/api/v1/streams",
                             {"name": name, "shardCount": 3, "replicationFactor": 1,
                              "backlogDurationSeconds": 3600})
    assert status == 201, body
    assert body["name"] == name and body["shardCount"] == 3 and body["backlogDurationSeconds"] == 3600

    status, body = http_json(server, "GET", "/api/v1/streams")
    assert status == 200
    assert name in [s["name"] for s in body["streams"]]
    status, body = http_json(server, "GET", f"/api/v1/streams/{name}")
    assert status == 200
    assert len(body["shards"]) == 3 and body["replicationFactor"] == 1

    # The official client sees it (a new client: list_shards is cached per client).
    async def client_view():
        async with connect(server) as client:
            return [s.name for s in await client.list_streams()], len(await client.list_shards(name))
    names, shards = run(client_view())
    assert name in names and shards == 3

    # Errors: exists, bad name, bad bodies, unknown objects and routes, wrong method.
    assert_error(http_json(server, "POST", "/api/v1/streams", {"name": name}), 409, "already_exists", "exists")
    assert_error(http_json(server, "POST", "/api/v1/streams", {"name": "9lives"}), 400, "bad_request", "start with a letter")
    assert_error(http_json(server, "POST", "/api/v1/streams", {"name": uid("s"), "shardCount": 0}), 400, "bad_request", "shard count")
    assert_error(http_json(server, "POST", "/api/v1/streams", raw=b"{not json"), 400, "bad_request", "not the JSON")
    assert_error(http_json(server, "POST", "/api/v1/streams", {"name": uid("s"), "shards": 2}), 400, "bad_request", "unknown field")
    assert_error(http_json(server, "POST", "/api/v1/streams", {"shardCount": 2}), 400, "bad_request", "missing field")
    assert_error(http_json(server, "POST", "/api/v1/streams", {"name": 5}), 400, "bad_request", "invalid type")
    assert_error(http_json(server, "GET", "/api/v1/streams/nope"), 404, "not_found", "nope")
    assert_error(http_json(server, "GET", "/api/v1/nothing"), 404, "not_found")
    assert_error(http_json(server, "PUT", "/api/v1/streams"), 405, "method_not_allowed")

    status, _ = http_json(server, "DELETE", f"/api/v1/streams/{name}")
    assert status == 204
    assert_error(http_json(server, "GET", f"/api/v1/streams/{name}"), 404, "not_found")
    assert_error(http_json(server, "DELETE", f"/api/v1/streams/{name}"), 404, "not_found")


def test_rest_api_delete_stream_with_subscriptions_needs_force(server):
    name, sub = uid("rest"), uid("sub")
    assert http_json(server, "POST", "/api/v1/streams", {"name": name})[0] == 201

    async def subscribe():
        async with connect(server) as client:
            await client.create_subscription(sub, name)
    run(subscribe())
    assert_error(http_json(server, "DELETE", f"/api/v1/streams/{name}"), 409, "conflict", "subscription")
    assert http_json(server, "DELETE", f"/api/v1/streams/{name}?force=true")[0] == 204
    assert_error(http_json(server, "GET", f"/api/v1/streams/{name}"), 404)


def test_rest_api_queries_views_and_sql(server):
    src, hot = uid("visit"), uid("long")
    results = sql(server, f"CREATE STREAM {src}; "
                          f"INSERT INTO {src} (product, user, length) VALUES (\"Apple\", \"Alice\", 10); "
                          f"INSERT INTO {src} (product, user, length) VALUES (\"Apple\", \"Bob\", 20);")
    assert results == [{"message": "Done."}] * 3
    sql(server, f"CREATE VIEW per_product AS SELECT product, COUNT(*) AS visits FROM {src} GROUP BY product;")
    sql(server, f"CREATE STREAM {hot} AS SELECT user, length FROM {src} WHERE length > 15;")
    sql(server, "FLUSH;")

    status, body = http_json(server, "GET", "/api/v1/views")
    assert status == 200
    assert [v["name"] for v in body["views"]] == ["per_product"]
    status, body = http_json(server, "GET", "/api/v1/views/per_product")
    assert status == 200
    assert body["columns"] == ["product", "visits"]
    assert body["rows"] == [{"product": "Apple", "visits": 2}]
    assert body["source"] == src

    status, body = http_json(server, "GET", "/api/v1/queries")
    assert status == 200
    by_name = {q["name"]: q for q in body["queries"]}
    assert by_name[hot]["kind"] == "stream" and by_name["per_product"]["kind"] == "view"
    status, q = http_json(server, "GET", f"/api/v1/queries/{hot}")
    assert status == 200
    assert q["status"] == "RUNNING" and q["source"] == src and q["result"] == hot
    assert q["recordsIn"] == 2 and q["rowsOut"] == 1

    # A pull query's rows.
    [res] = sql(server, f"SELECT user, length FROM {hot};")
    assert res == {"columns": ["user", "length"], "rows": [{"user": "Bob", "length": 20.0}]}

    # Errors.
    assert_error(http_json(server, "GET", "/api/v1/views/nope"), 404, "not_found")
    assert_error(http_json(server, "GET", "/api/v1/queries/nope"), 404, "not_found")
    assert_error(http_json(server, "POST", "/api/v1/sql", {"sql": "SELEKT 1;"}), 400, "bad_request", "line 1")
    assert_error(http_json(server, "POST", "/api/v1/sql", {"sql": "SELECT * FROM nowhere;"}), 404, "not_found")
    assert_error(http_json(server, "POST", "/api/v1/sql", {"sql": f"SELECT * FROM {src} EMIT CHANGES;"}),
                 400, "bad_request", "psql")
    assert_error(http_json(server, "POST", "/api/v1/sql", {"sql": "CREATE VIEW per_product AS SELECT product, "
                                                                  f"COUNT(*) AS n FROM {src} GROUP BY product;"}),
                 409, "already_exists")
    assert_error(http_json(server, "POST", "/api/v1/sql", {"query": "SHOW STREAMS;"}), 400, "bad_request", "unknown field")
    assert_error(http_json(server, "POST", "/api/v1/sql", raw=b"SHOW STREAMS;"), 400, "bad_request")
    assert_error(http_json(server, "POST", "/api/v1/sql", {"sql": "  "}), 400, "bad_request")
    assert_error(http_json(server, "GET", "/api/v1/sql"), 405, "method_not_allowed")
    # The second statement fails: the message says which.
    assert_error(http_json(server, "POST", "/api/v1/sql", {"sql": "SHOW STREAMS; DROP VIEW nope;"}),
                 404, "not_found", "statement 2")


def raw_exchange(srv, data: bytes, read_reply=True) -> bytes:
    """Send bytes on a fresh connection; return what the server answers before closing.
    The server may answer and close before it has read everything (a 400 for garbage): a
    reset while sending is an answer too."""
    with socket.create_connection((srv.host, srv.http_port), timeout=10) as s:
        try:
            s.sendall(data)
            if not read_reply:
                return b""
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # broken pipe, reset, or "not connected": the server closed first
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)


def test_garbage_and_clients_leaving_mid_request_do_not_stop_the_server(server):
    # Not HTTP at all: a 400 (or a closed connection), nothing else.
    reply = raw_exchange(server, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
    assert reply == b"" or reply.startswith(b"HTTP/1.1 400"), reply
    reply = raw_exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
    assert reply == b"" or reply.startswith(b"HTTP/1.1 400"), reply
    # A huge header, binary noise, a request line cut short.
    raw_exchange(server, b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\n\r\n")
    raw_exchange(server, bytes(range(256)) * 64)
    raw_exchange(server, b"GET /metr", read_reply=False)
    # A body announced longer than what is sent, then the client leaves.
    raw_exchange(server, b"POST /api/v1/sql HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"sql\": \"SH",
                 read_reply=False)
    # Statements sent whole; the client leaves once the first has run, without reading the
    # answer: the rest still run to the end. (A request the client abandons before the
    # server has read it is dropped unprocessed, so the test waits for the first effect.)
    first, second = uid("left"), uid("left")
    body = json.dumps({"sql": f"CREATE STREAM {first}; CREATE STREAM {second};"}).encode()
    with socket.create_connection((server.host, server.http_port), timeout=10) as s:
        s.sendall(b"POST /api/v1/sql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_until_sync(lambda: http_json(server, "GET", f"/api/v1/streams/{first}")[0] == 200, 30,
                        "the first statement's stream")
    wait_until_sync(lambda: http_json(server, "GET", f"/api/v1/streams/{second}")[0] == 200, 30,
                    "the abandoned request's second stream")
    # A scrape abandoned half-way.
    raw_exchange(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", read_reply=False)

    # Still serving, over HTTP and gRPC.
    status, body = http_json(server, "GET", "/health")
    assert status == 200 and body["status"] == "ok"
    assert scrape(server)["streamcell_uptime_seconds"].type == "gauge"

    async def grpc_still_works():
        async with connect(server) as client:
            return [s.name for s in await client.list_streams()]
    assert {first, second} <= set(run(grpc_still_works()))


def test_http_port_in_use_is_a_clear_startup_error(start_server):
    srv = start_server(wait=False)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        blocker.bind((HOST, srv.http_port))
        blocker.listen(1)
        rc = srv.spawn().wait(timeout=STARTUP_TIMEOUT)
        assert rc != 0, "the server must exit non-zero when its HTTP port is taken"
        log = srv.last_run_log()
        assert "--http-port" in log and "in use" in log.lower(), srv.log_tail()
    finally:
        blocker.close()
    # Once the port is free the same server starts and answers over HTTP.
    srv.start()
    assert http_json(srv, "GET", "/health")[0] == 200
