"""The PostgreSQL wire protocol with real clients: psql (simple queries, a script, errors,
Ctrl-C's cancel request), psycopg 3 (extended protocol: server-side parameters, typed
results, push queries streamed and cancelled, SQLSTATEs), SCRAM passwords, and bad input
(garbage bytes, a client vanishing mid-query) that must not disturb the server."""

import datetime
import os
import socket
import subprocess
import threading

import psycopg
import pytest

from helpers import uid, wait_until_sync

PSQL = "psql"


def dsn(srv, user="streamcell", password=None):
    d = f"host={srv.host} port={srv.pg_port} user={user} dbname=streamcell connect_timeout=10"
    if password is not None:
        d += f" password={password}"
    return d


def connect(srv, **kw):
    return psycopg.connect(dsn(srv, **kw), autocommit=True)


def psql(srv, *args, input=None, password=None, check=True):
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    if password is not None:
        env["PGPASSWORD"] = password
    r = subprocess.run(
        [PSQL, "-X", "-h", srv.host, "-p", str(srv.pg_port), "-U", "streamcell", "-d", "streamcell",
         *args],
        input=input, capture_output=True, text=True, timeout=60, env=env)
    if check:
        assert r.returncode == 0, f"psql failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


def test_psql_runs_a_script(start_server):
    srv = start_server()
    s = uid("readings")
    script = f"""
\\set ON_ERROR_STOP 1
CREATE STREAM {s} (robot STRING, temp DOUBLE, ok BOOLEAN);
INSERT INTO {s} (robot, temp, ok) VALUES ('r1', 20.5, TRUE);
INSERT INTO {s} (robot, temp, ok) VALUES ('r2', 31.0, FALSE), ('r1', 22.5, TRUE);
SET application_name = 'telemetry';
SHOW application_name;
SELECT robot, count(*) AS n, max(temp) AS hottest FROM {s} GROUP BY robot ORDER BY robot;
SHOW STREAMS;
"""
    r = psql(srv, "-A", "-F", "|", input=script)
    out = r.stdout
    assert "CREATE STREAM" in out
    assert "INSERT 0 2" in out
    assert "telemetry" in out
    assert "robot|n|hottest" in out
    assert "r1|2|22.5" in out and "r2|1|31" in out
    assert s in out


def test_psql_errors_point_at_the_problem_and_the_server_keeps_serving(start_server):
    srv = start_server()
    r = psql(srv, "-c", "SELEC 1", check=False)
    assert r.returncode != 0
    assert "ERROR" in r.stderr
    r = psql(srv, "-c", "SELECT * FROM no_such_stream", check=False)
    assert "no_such_stream" in r.stderr and r.returncode != 0
    r = psql(srv, "-c", "COPY x FROM STDIN", check=False)
    assert "not supported" in r.stderr
    # psql shows the SQLSTATE with VERBOSITY verbose.
    r = psql(srv, "-v", "VERBOSITY=verbose", "-c", "UPDATE x SET a = 1", check=False)
    assert "0A000" in r.stderr
    assert psql(srv, "-A", "-t", "-c", "SELECT 1 + 1").stdout.strip() == "2"


def test_psycopg_parameters_types_and_sqlstates(start_server):
    srv = start_server()
    s = uid("telemetry")
    with connect(srv) as conn:
        conn.execute(f"CREATE STREAM {s} (robot STRING, n INTEGER, temp DOUBLE, at TIMESTAMP)")
        rows = [("r1", 1, 20.25, "2026-11-22T10:00:00Z"), ("r'2", 2, -3.5, "2026-11-22T10:00:01Z"),
                ("r3", 3, None, "2026-11-22T10:00:02Z")]
        with conn.cursor() as cur:
            for r in rows:
                # Server-side parameters (extended protocol), one of them a quote.
                cur.execute(f"INSERT INTO {s} (robot, n, temp, at) VALUES (%s, %s, %s, %s)", r)
        cur = conn.execute(f"SELECT robot, n, temp, at FROM {s} WHERE n >= %s ORDER BY n", (2,))
        got = cur.fetchall()
        assert [c.name for c in cur.description] == ["robot", "n", "temp", "at"]
        assert got[0][0] == "r'2" and got[0][1] == 2 and got[0][2] == -3.5
        assert got[1][2] is None
        assert isinstance(got[0][3], datetime.datetime)
        assert got[0][3].replace(tzinfo=None) == datetime.datetime(2026, 11, 22, 10, 0, 1)
        # Binary results too.
        with conn.cursor(binary=True) as bcur:
            bcur.execute(f"SELECT n, temp, robot FROM {s} WHERE robot = %s", ("r1",))
            assert bcur.fetchall() == [(1, 20.25, "r1")]
        # The same prepared statement, many times.
        for n in (1, 2, 3):
            assert conn.execute(f"SELECT count(*) FROM {s} WHERE n <= %s", (n,), prepare=True).fetchone()[0] == n
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_stream")
        with pytest.raises(psycopg.errors.SyntaxError):
            conn.execute("SELEC 1")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute(f"DELETE FROM {s}")
        with pytest.raises(psycopg.errors.DuplicateTable):
            conn.execute(f"CREATE STREAM {s}")
        # Still usable after every error.
        assert conn.execute("SELECT 40 + %s", (2,)).fetchone()[0] == 42
        # Listings over the extended protocol: described, then sent as text.
        cur = conn.execute("SHOW STREAMS")
        assert cur.description[0].name == "stream_name" and (s,) in [r[:1] for r in cur.fetchall()]
        conn.execute("CREATE TABLE datacell.box (id INTEGER)")
        cur = conn.execute("CALL datacell.dump()")
        assert [d.name for d in cur.description] == ["dump"]
        assert any("datacell.box" in r[0] for r in cur.fetchall())


def test_query_errors_have_precise_sqlstates(start_server):
    """A column that does not exist, types that do not go together and a division by zero
    each get PostgreSQL's own SQLSTATE (not the catch-all 42000), over both protocols, and
    the connection goes on."""
    srv = start_server()
    s = uid("precise")
    with connect(srv) as conn:
        conn.execute(f"CREATE STREAM {s} (n INTEGER, name STRING)")
        conn.execute(f"INSERT INTO {s} (n, name) VALUES (1, 'a')")
        for prepare in (False, True):
            with pytest.raises(psycopg.errors.UndefinedColumn):
                conn.execute(f"SELECT nope FROM {s}", prepare=prepare)
            with pytest.raises(psycopg.errors.DatatypeMismatch):
                conn.execute(f"SELECT n FROM {s} WHERE n = make_array(1)", prepare=prepare)
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute(f"SELECT n / (n - 1) FROM {s}", prepare=prepare)
        assert conn.execute(f"SELECT n FROM {s}").fetchall() == [(1,)]
    # psql shows the same codes (VERBOSITY verbose prints them).
    r = psql(srv, "-v", "VERBOSITY=verbose", "-c", f"SELECT nope FROM {s}", check=False)
    assert r.returncode != 0 and "42703" in r.stderr, r.stderr


def test_psycopg_transactions_are_accepted(start_server):
    srv = start_server()
    s = uid("tx")
    # psycopg's default: BEGIN before the first statement, COMMIT/ROLLBACK at the end.
    with psycopg.connect(dsn(srv)) as conn:
        conn.execute(f"CREATE STREAM {s} (a INTEGER)")
        conn.execute(f"INSERT INTO {s} (a) VALUES (%s)", (1,))
        conn.commit()
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM nothing_here")
        # In a failed transaction, statements are refused until it ends.
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute(f"SELECT count(*) FROM {s}").fetchone()[0] == 1


def test_push_query_streams_until_cancelled(start_server):
    srv = start_server()
    s = uid("live")
    with connect(srv) as admin:
        admin.execute(f"CREATE STREAM {s} (robot STRING, temp DOUBLE)")
        admin.execute(f"INSERT INTO {s} (robot, temp) VALUES ('r0', 1.0)")

    conn = connect(srv)
    got = []
    errors = []

    def consume():
        try:
            with conn.cursor() as cur:
                for row in cur.stream(f"SELECT robot, temp FROM {s} WHERE temp > 0 EMIT CHANGES"):
                    got.append(row)
        except Exception as e:  # noqa: BLE001 - the test asserts on it
            errors.append(e)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    wait_until_sync(lambda: len(got) >= 1, 20, "the first pushed row")
    with connect(srv) as admin:
        for i in range(1, 4):
            admin.execute(f"INSERT INTO {s} (robot, temp) VALUES (%s, %s)", (f"r{i}", float(i)))
        admin.execute(f"INSERT INTO {s} (robot, temp) VALUES ('cold', -1.0)")
    wait_until_sync(lambda: len(got) >= 4, 20, lambda: f"pushed rows: {got}")
    assert got == [("r0", 1.0), ("r1", 1.0), ("r2", 2.0), ("r3", 3.0)]
    conn.cancel()
    t.join(20)
    assert not t.is_alive()
    assert errors and isinstance(errors[0], psycopg.errors.QueryCanceled), errors
    # The connection serves the next statement.
    assert conn.execute("SELECT 1").fetchone() == (1,)
    conn.close()


def test_psql_cancel_ends_a_push_query(start_server):
    srv = start_server()
    s = uid("live")
    psql(srv, "-c", f"CREATE STREAM {s} (a INTEGER)")
    psql(srv, "-c", f"INSERT INTO {s} (a) VALUES (1)")
    p = subprocess.Popen(
        [PSQL, "-X", "-h", srv.host, "-p", str(srv.pg_port), "-U", "streamcell", "-d", "streamcell",
         "-c", f"SELECT a FROM {s} EMIT CHANGES"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # psql sends a CancelRequest on SIGINT (Ctrl-C), as a user at a terminal would; the
        # server logs when a push query starts streaming to a PostgreSQL client.
        wait_until_sync(lambda: "push query streaming" in srv.log_path.read_text(), 20, "the push query running")
        p.send_signal(2)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert "canceling statement due to user request" in err, (out, err)
    assert psql(srv, "-A", "-t", "-c", f"SELECT count(*) FROM {s}").stdout.strip() == "1"


def test_scram_password(start_server):
    # Credentials without TLS are half-locked: refused unless told (test_security.py).
    srv = start_server("--pg-password", "s3cret", "--pg-user", "robot", "--allow-partial-security")
    with psycopg.connect(dsn(srv, user="robot", password="s3cret"), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(dsn(srv, user="robot", password="wrong"))
    assert 'password authentication failed for user "robot"' in str(e.value).lower(), e.value
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn(srv, user="intruder", password="s3cret"))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn(srv, user="robot"))


def test_garbage_and_vanishing_clients_do_not_disturb_the_server(start_server):
    srv = start_server()
    s = uid("g")
    with connect(srv) as conn:
        conn.execute(f"CREATE STREAM {s} (a INTEGER)")
    # Not the PostgreSQL protocol at all.
    with socket.create_connection((srv.host, srv.pg_port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(4096))
        sock.settimeout(10)
        try:
            sock.recv(1024)
        except OSError:
            pass
    # A startup packet that claims to be huge, then silence and a close.
    with socket.create_connection((srv.host, srv.pg_port), timeout=10) as sock:
        sock.sendall((2**30).to_bytes(4, "big") + b"\x00\x03\x00\x00")
    # A client that starts a push query and disappears without a goodbye.
    conn = connect(srv)
    conn.pgconn.send_query(f"SELECT a FROM {s} EMIT CHANGES".encode())
    conn.pgconn.flush()
    socket.socket(fileno=os.dup(conn.fileno())).shutdown(socket.SHUT_RDWR)
    with connect(srv) as conn2:
        conn2.execute(f"INSERT INTO {s} (a) VALUES (%s)", (7,))
        assert conn2.execute(f"SELECT a FROM {s}").fetchall() == [(7,)]
    assert srv.proc.poll() is None


def test_psql_describes_streams_views_and_baskets(start_server):
    srv = start_server()
    s = uid("sensors")
    psql(srv, "-c", f"CREATE STREAM {s} (robot STRING, temp DOUBLE, at TIMESTAMP)",
         "-c", f"INSERT INTO {s} (robot, temp, at) VALUES ('a', 1.5, '2026-11-22T10:00:00Z')",
         "-c", f"CREATE VIEW {s}_hot AS SELECT robot, max(temp) AS hottest FROM {s} GROUP BY robot",
         "-c", "CREATE TABLE datacell.inbox (id INTEGER, v DOUBLE)")
    listing = psql(srv, "-A", "-F", "|", "-c", "\\d").stdout
    assert f"public|{s}|table|streamcell" in listing
    assert f"public|{s}_hot|view|streamcell" in listing
    table = psql(srv, "-A", "-F", "|", "-c", f"\\d {s}").stdout
    assert f'Table "public.{s}"' in table
    for line in ("robot|text", "temp|double precision", "at|timestamp without time zone"):
        assert line in table, table
    view = psql(srv, "-A", "-F", "|", "-c", f"\\d {s}_hot").stdout
    assert "robot|text" in view and "hottest|double precision" in view, view
    baskets = psql(srv, "-A", "-F", "|", "-c", "\\dt datacell.*").stdout
    assert "datacell|inbox|table|streamcell" in baskets
    assert "streamcell|streamcell|UTF8" in psql(srv, "-A", "-F", "|", "-c", "\\l").stdout
    r = psql(srv, "-c", "\\d no_such_thing", check=False)
    assert "Did not find any relation" in r.stderr


def test_information_schema_for_query_editors(start_server):
    """What Grafana's query editor and drivers' metadata calls ask."""
    srv = start_server()
    s = uid("telemetry")
    with connect(srv) as conn:
        conn.execute(f"CREATE STREAM {s} (robot STRING, temp DOUBLE, at TIMESTAMP)")
        tables = conn.execute(
            "SELECT quote_ident(table_name) AS \"table\" FROM information_schema.tables "
            "WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog') "
            "AND table_type = 'BASE TABLE' ORDER BY 1").fetchall()
        assert (s,) in tables
        cols = conn.execute(
            "SELECT quote_ident(column_name) AS \"column\", data_type AS \"type\" "
            "FROM information_schema.columns WHERE quote_ident(table_name) = %s ORDER BY ordinal_position",
            (s,)).fetchall()
        assert cols == [("robot", "text"), ("temp", "double precision"), ("at", "timestamp without time zone")]
        cur = conn.execute("SELECT current_database(), current_user, current_setting('search_path')")
        assert [d.name for d in cur.description] == ["current_database", "current_user", "current_setting"]
        assert cur.fetchone() == ("streamcell", "streamcell", "public")
        assert conn.execute("SELECT version()").fetchone()[0].startswith("PostgreSQL 16")


def test_catalog_names_in_strings_are_data(start_server):
    """A statement is routed to the catalogs by the names it reads, not by its text: a value
    or a comment that mentions a catalog is stored like any other."""
    srv = start_server()
    s = uid("notes")
    with connect(srv) as c:
        c.execute(f"CREATE STREAM {s} (note STRING)")
        c.execute(f"INSERT INTO {s} (note) VALUES ('see pg_type and current_user') -- pg_class")
        c.execute(f"INSERT INTO {s} (note) VALUES (%s)", ("information_schema.tables",))
        rows = c.execute(f"SELECT note FROM {s} ORDER BY note").fetchall()
        assert rows == [("information_schema.tables",), ("see pg_type and current_user",)]


HEAVY = ("SELECT count(*) FROM (SELECT unnest(generate_series(1,30000)) a) x "
         "CROSS JOIN (SELECT unnest(generate_series(1,30000)) b) y WHERE (a * b) % 7 = 3")


def test_statement_timeout_stops_a_long_statement(server):
    with connect(server) as conn:
        with pytest.raises(psycopg.errors.QueryCanceled) as e:
            conn.execute("SET statement_timeout = '300ms'")
            conn.execute(HEAVY)
        assert "statement timeout" in str(e.value)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("300",)
        # The session goes on; short statements run; a bad value is refused.
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.DataError):
            conn.execute("SET statement_timeout = 'soon'")
        conn.execute("RESET statement_timeout")
        assert conn.execute("SELECT count(*) FROM (SELECT unnest(generate_series(1, 10)) a) t").fetchone() == (10,)
