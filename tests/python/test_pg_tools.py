"""The tools people arrive with, driven for real over the PostgreSQL port: SQLAlchemy 2 with
psycopg (connect, reflection, Core inserts with typed parameters, pandas read_sql/to_sql),
pgcli non-interactively (`-c`, `\\dt`, `\\dv`, `\\d name`), asyncpg (a pool's acquire/release
cycles with its reset query, array parameters), and the session statements they send
(savepoints, SHOW's special forms, time zones, CLOSE ALL/UNLISTEN *)."""

import asyncio
import datetime
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa

from helpers import uid


def url(srv, driver="postgresql+psycopg"):
    return f"{driver}://streamcell@{srv.host}:{srv.pg_port}/streamcell"


def connect(srv):
    return psycopg.connect(
        f"host={srv.host} port={srv.pg_port} user=streamcell dbname=streamcell connect_timeout=10",
        autocommit=True)


def test_sqlalchemy_connects_reflects_inserts_and_pandas_round_trips(server):
    s, t = f"sa_{uid()}", f"df_{uid()}"
    engine = sa.create_engine(url(server))
    with engine.connect() as c:
        c.execute(sa.text(f"CREATE STREAM {s}"))
        c.execute(sa.text(f"INSERT INTO {s} (a, b) VALUES (:a, :b)"), {"a": 1, "b": "x"})
        # Core renders typed parameters (`%(a)s::INTEGER`) in VALUES.
        table = sa.Table(s, sa.MetaData(), sa.Column("a", sa.Integer), sa.Column("b", sa.String))
        c.execute(table.insert(), [{"a": 2, "b": "y"}, {"a": 3, "b": "z"}])
        insp = sa.inspect(c)
        assert s in insp.get_table_names()
        assert insp.has_table(s)
        assert [col["name"] for col in insp.get_columns(s)] == ["a", "b"]
        md = sa.MetaData()
        md.reflect(c, only=[s])
        assert s in md.tables
        rows = c.execute(sa.select(table.c.a, table.c.b).where(table.c.a > 1)).all()
        assert sorted((int(a), b) for a, b in rows) == [(2, "y"), (3, "z")]
    frame = pd.read_sql(f"SELECT a, b FROM {s}", engine)
    assert sorted(frame["b"]) == ["x", "y", "z"]
    pd.DataFrame({"a": [10, 11], "b": ["p", "q"]}).to_sql(t, engine, if_exists="append", index=False)
    back = pd.read_sql(f"SELECT a, b FROM {t}", engine)
    assert sorted(zip(back["a"].astype(int), back["b"])) == [(10, "p"), (11, "q")]
    engine.dispose()


def pgcli(srv, tmp_path, command):
    env = {**os.environ, "HOME": str(tmp_path), "PGCONNECT_TIMEOUT": "10", "TZ": "Europe/Madrid"}
    exe = Path(sys.executable).with_name("pgcli")
    r = subprocess.run(
        [str(exe), "-h", srv.host, "-p", str(srv.pg_port), "-U", "streamcell", "-w",
         "streamcell", "-c", command],
        capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and "Traceback" not in r.stderr, f"pgcli {command}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_pgcli_starts_lists_and_describes(server, tmp_path):
    s = f"cli_{uid()}"
    with connect(server) as c:
        c.execute(f"CREATE STREAM {s}")
        c.execute(f"INSERT INTO {s} (k, n) VALUES ('a', 1)")
        c.execute(f"CREATE VIEW {s}_v AS SELECT k, COUNT(*) AS c FROM {s} GROUP BY k")
    # pgcli sets the machine's time zone at start (here Europe/Madrid) and shows it.
    assert "1" in pgcli(server, tmp_path, "SELECT 1")
    tables = pgcli(server, tmp_path, "\\dt")
    assert s in tables and "table" in tables
    views = pgcli(server, tmp_path, "\\dv")
    assert f"{s}_v" in views and "view" in views
    described = pgcli(server, tmp_path, f"\\d {s}")
    assert "k" in described and "n" in described


def test_asyncpg_pool_cycles_and_array_parameters(server):
    s = f"apg_{uid()}"

    async def run():
        pool = await asyncpg.create_pool(url(server, "postgresql"), min_size=1, max_size=2)
        try:
            # Each release runs the pool's reset (pg_advisory_unlock_all(); CLOSE ALL;
            # UNLISTEN *; RESET ALL) over the simple protocol.
            for _ in range(4):
                async with pool.acquire() as c:
                    assert await c.fetchval("SELECT 1") == 1
            async with pool.acquire() as c:
                await c.execute(f"CREATE STREAM {s}")
                await c.execute(f"INSERT INTO {s} (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z')")
                # A list bound as text[] (binary format), used with = ANY.
                rows = await c.fetch(f"SELECT a FROM {s} WHERE b = ANY($1::text[]) ORDER BY a",
                                     ["x", "z", None])
                assert [int(r["a"]) for r in rows] == [1, 3]
        finally:
            await pool.close()

    asyncio.run(run())


def test_savepoints_follow_the_transaction_block(server):
    with connect(server) as c:
        with pytest.raises(psycopg.errors.NoActiveSqlTransaction):
            c.execute("SAVEPOINT a")
        c.execute("BEGIN")
        c.execute("SAVEPOINT a")
        c.execute("SAVEPOINT b")
        c.execute("RELEASE SAVEPOINT b")
        with pytest.raises(psycopg.errors.InvalidSavepointSpecification):
            c.execute("ROLLBACK TO SAVEPOINT b")
        # The failed block is usable again after ROLLBACK TO a savepoint that exists.
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            c.execute("SELECT 1")
        c.execute("ROLLBACK TO SAVEPOINT a")
        assert c.execute("SELECT 1").fetchone() == (1,)
        c.execute("COMMIT")
        with pytest.raises(psycopg.errors.NoActiveSqlTransaction):
            c.execute("RELEASE a")
    # The same through SQLAlchemy's nested transactions (its begin_nested is a SAVEPOINT).
    engine = sa.create_engine(url(server))
    with engine.connect() as c:
        with c.begin():
            with c.begin_nested():
                assert c.execute(sa.text("SELECT 2")).scalar() == 2
    engine.dispose()


def test_session_statements_drivers_send(server):
    with connect(server) as c:
        assert c.execute("SHOW TRANSACTION ISOLATION LEVEL").fetchone() == ("read committed",)
        assert c.execute("SHOW TIME ZONE").fetchone() == ("UTC",)
        c.execute("CLOSE ALL")
        c.execute("UNLISTEN *")
        c.execute("RESET ALL")
        assert c.execute("SELECT pg_advisory_unlock_all()").fetchone() == (None,)
        with pytest.raises(psycopg.errors.InvalidCursorName):
            c.execute("CLOSE nosuch")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            c.execute("SET TIME ZONE 'Mars/Olympus_Mons'")


def test_time_zones_are_accepted_as_postgresql_names_them(server):
    with connect(server) as c:
        c.execute("SET TIME ZONE 'Europe/Madrid'")
        assert c.execute("SHOW timezone").fetchone() == ("Europe/Madrid",)
        c.execute('SET TIME ZONE "Etc/UTC"')  # pgcli's spelling
        assert c.execute("SHOW TIME ZONE").fetchone() == ("Etc/UTC",)
        c.execute("SET timezone TO 'america/new_york'")
        assert c.execute("SHOW timezone").fetchone() == ("America/New_York",)
        c.execute("SET TIME ZONE '+05'")
        assert c.execute("SHOW timezone").fetchone() == ("Etc/GMT-5",)
        c.execute("SET TIME ZONE LOCAL")
        assert c.execute("SHOW timezone").fetchone() == ("UTC",)
