"""Schema 3 (a tenant and a user on every run): stores written with schema 2 open, are upgraded
in place keeping their runs, journals and tasks, and then store and filter tenants; on SQLite
and on Postgres. (The schema-1 fixture of tests/golden goes through both upgrades.)"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest

from keel.store import SCHEMA_VERSION, RunFilter, RunStore
from keel.store import _postgres_sql as pg_sql
from keel.store import _sqlite_schema as sqlite_schema
from keel.store._postgres import PostgresStore
from keel.store._sqlite import SQLiteStore
from keel.testing._store_conformance import sample_entry, sample_run
from tests.store._old_postgres import (
    TASK,
    TASK_ROW,
    URL,
    create_old_store,
    entry_row,
    fresh_schema,
    sql,
)

schema = pytest.fixture(fresh_schema, name="schema")

#: Two runs as a schema-2 keel stored them (no tenant, no user).
V2_RUNS = [
    sample_run("old-done", status="completed", output={"answer": "shipped"},
               usage={"input_tokens": 3}, updated_at=1_700_000_100.0, schema_version=2),
    sample_run("old-susp", status="suspended", created_at=1_700_000_001.0,
               error={"type": "ApprovalRequired"}, schema_version=2, deadline_at=1.8e9),
]
V2_ENTRIES = [sample_entry(0, "k", "intent", schema_version=2),
              sample_entry(1, "k", "result", schema_version=2)]
V2_RUN_COLUMNS = ("run_id, agent, status, target, input, output, error, usage, metadata, "
                  "created_at, updated_at, schema_version, lease_owner, lease_expires_at, "
                  "deadline_at, cancel_requested")


def _run_row(r: Any) -> tuple[Any, ...]:
    return (r.run_id, r.agent, r.status, r.target, json.dumps(r.input), json.dumps(r.output),
            None if r.error is None else json.dumps(r.error), json.dumps(r.usage),
            json.dumps(r.metadata), r.created_at, r.updated_at, 2, None, None, r.deadline_at,
            False)





async def _check_upgraded(store: RunStore) -> None:
    """The schema-2 data reads back unchanged (no tenant), and the store now keeps tenants."""
    for want in V2_RUNS:
        got = await store.get_run(want.run_id)
        assert got == want.__class__(**{**_fields(want), "tenant": None, "user": None})
    assert await store.read_journal("old-done") == V2_ENTRIES
    assert (await store.get_task("ap-old")).data == TASK.data
    await store.create_run(sample_run("new-acme", created_at=1_700_000_200.0, tenant="acme",
                                      user="alice"))
    await store.create_run(sample_run("new-globex", created_at=1_700_000_300.0,
                                      tenant="globex", user="bob"))
    acme = await store.list_runs(RunFilter(tenant="acme"))
    assert [(r.run_id, r.tenant, r.user) for r in acme] == [("new-acme", "acme", "alice")]
    assert [r.run_id for r in await store.list_runs()] == [
        "new-globex", "new-acme", "old-susp", "old-done"]
    # an old run's writes still work and leave it without a tenant
    await store.resolve_task("ap-old", {"approved": True}, by="ann",
                             entry=sample_entry(2, "old/approval"))
    assert (await store.get_run("old-susp")).tenant is None


def _fields(record: Any) -> dict[str, Any]:
    return {f: getattr(record, f) for f in record.__dataclass_fields__}


# ---------------------------------------------------------------------------------- SQLite


def make_sqlite_v2(path: Path) -> None:
    """A schema-2 file, built with the released (frozen) steps: schema 1, then 1 -> 2."""
    with closing(sqlite3.connect(path)) as conn, conn:
        for statement in (*sqlite_schema._SCHEMA_V1, *sqlite_schema.UPGRADES[1]):
            conn.execute(statement)
        conn.executemany(f"INSERT INTO runs ({V2_RUN_COLUMNS}) VALUES "
                         f"({', '.join('?' * 16)})", [_run_row(r) for r in V2_RUNS])
        conn.executemany(
            "INSERT INTO journal (run_id, seq, key, phase, kind, name, input_hash, data, "
            "created_at, latency_ms, schema_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [entry_row("old-done", e, 2) for e in V2_ENTRIES])
        conn.execute(f"INSERT INTO tasks VALUES ({', '.join('?' * 14)})", TASK_ROW)


def _meta(path: Path) -> str:
    with closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("SELECT value FROM keel_meta").fetchone()[0])


async def test_a_schema_2_sqlite_store_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    make_sqlite_v2(path)
    assert _meta(path) == "2"
    async with SQLiteStore(path) as store:
        await _check_upgraded(store)
    assert _meta(path) == str(SCHEMA_VERSION) == "6"
    with closing(sqlite3.connect(path)) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(runs)")]
        assert columns[-3:] == ["tenant", "user", "conversation"]
        indexes = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "runs_by_tenant" in indexes
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # an upgraded file has the layout of a new one
    fresh = tmp_path / "fresh.db"
    async with SQLiteStore(fresh):
        pass
    assert _layout(fresh) == _layout(path)


def _layout(path: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                            "ORDER BY name").fetchall()
    return [(n, " ".join(sql.split())) for n, sql in rows]


# -------------------------------------------------------------------------------- Postgres





def make_postgres_v2(schema: str) -> None:
    """The schema-2 tables as keel 0.2 created them (today's DDL without the two columns and
    their index), with two runs, a journal and a task."""
    v2 = [st.replace(',\n        tenant           text,\n        "user"           text,\n'
                     '        conversation     text', "")
          for st in pg_sql.DDL
          if "keel_runs_by_tenant" not in st and "keel_runs_by_conversation" not in st
          and "keel_outbox" not in st
          and "keel_feedback" not in st and "keel_settings" not in st]
    assert not any("tenant" in st or "conversation" in st for st in v2)
    create_old_store(schema, version=2, ddl=v2, run_columns=V2_RUN_COLUMNS,
                     runs=[_run_row(r) for r in V2_RUNS], entries=V2_ENTRIES)


async def test_a_schema_2_postgres_store_is_upgraded_in_place(schema: str) -> None:
    make_postgres_v2(schema)
    async with PostgresStore(URL, schema=schema) as store:
        await _check_upgraded(store)
    assert sql(f'SELECT value FROM "{schema}".keel_meta') == [(str(SCHEMA_VERSION),)]
    indexes = {r[0] for r in sql("SELECT indexname FROM pg_indexes WHERE schemaname = %s",
                                  (schema,))}
    assert "keel_runs_by_tenant" in indexes


async def test_stores_opening_one_schema_2_store_at_once_upgrade_it_once(schema: str) -> None:
    make_postgres_v2(schema)
    stores = [PostgresStore(URL, schema=schema) for _ in range(5)]
    try:
        await asyncio.gather(*(s.__aenter__() for s in stores))
        for s in stores:
            assert len(await s.list_runs()) == 2
    finally:
        for s in stores:
            await s.close()
    assert sql(f'SELECT value FROM "{schema}".keel_meta') == [(str(SCHEMA_VERSION),)]
    columns = [r[0] for r in sql(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND "
        "table_name = 'keel_runs' ORDER BY ordinal_position", (schema,))]
    assert columns[-3:] == ["tenant", "user", "conversation"]


async def test_postgres_lists_one_tenants_runs_through_its_index(schema: str) -> None:
    """The tenant filter is part of the query, served by keel_runs_by_tenant (newest first
    without a sort), not a filter applied to rows read for every tenant."""
    async with PostgresStore(URL, schema=schema) as store:
        for i in range(30):
            await store.create_run(sample_run(f"r{i}", created_at=1.7e9 + i, tenant=f"t{i % 3}"))
        assert [r.run_id for r in await store.list_runs(RunFilter(tenant="t1", limit=2))] == [
            "r28", "r25"]
    with psycopg.connect(URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(str(r[0]) for r in conn.execute(
            f'EXPLAIN SELECT {pg_sql.RUN_COLUMNS} FROM "{schema}".keel_runs WHERE tenant = %s '
            "ORDER BY created_at DESC, run_id DESC LIMIT 50", ("t1",)).fetchall())
    assert "keel_runs_by_tenant" in plan and "Sort" not in plan, plan
