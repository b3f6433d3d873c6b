"""Schema 4 (a conversation id on every run): stores written with schema 3 open, are upgraded in
place keeping their runs (tenants included), journals and tasks, and then store, filter and
delete conversations; on SQLite (the golden file tests/fixtures/stores/schema-3.db, as a
schema-3 keel wrote it) and on Postgres."""

from __future__ import annotations

import asyncio
import json
import shutil
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

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "stores" / "schema-3.db"

#: Two runs as a schema-3 keel stored them (a tenant and a user, no conversation).
V3_RUNS = [
    sample_run("old-done", status="completed", output={"answer": "shipped"},
               usage={"input_tokens": 3}, updated_at=1_700_000_100.0, schema_version=3,
               tenant="acme", user="alice"),
    sample_run("old-susp", status="suspended", created_at=1_700_000_001.0,
               error={"type": "ApprovalRequired"}, schema_version=3, deadline_at=1.8e9),
]
V3_ENTRIES = [sample_entry(0, "k", "intent", schema_version=3),
              sample_entry(1, "k", "result", schema_version=3)]
V3_RUN_COLUMNS = ("run_id, agent, status, target, input, output, error, usage, metadata, "
                  "created_at, updated_at, schema_version, lease_owner, lease_expires_at, "
                  'deadline_at, cancel_requested, tenant, "user"')


def _run_row(r: Any) -> tuple[Any, ...]:
    return (r.run_id, r.agent, r.status, r.target, json.dumps(r.input), json.dumps(r.output),
            None if r.error is None else json.dumps(r.error), json.dumps(r.usage),
            json.dumps(r.metadata), r.created_at, r.updated_at, 3, None, None, r.deadline_at,
            False, r.tenant, r.user)



async def _check_upgraded(store: RunStore) -> None:
    """The schema-3 data reads back unchanged (no conversation); conversations now work."""
    for want in V3_RUNS:
        got = await store.get_run(want.run_id)
        assert got == want and got.conversation is None
    assert await store.read_journal("old-done") == V3_ENTRIES
    assert (await store.get_task("ap-old")).data == TASK.data
    for i, tenant in enumerate(("acme", "globex")):
        await store.create_run(sample_run(f"new-{tenant}", created_at=1_700_000_200.0 + i,
                                          tenant=tenant, conversation="c-1"))
    assert [r.run_id for r in await store.list_runs(RunFilter(conversation="c-1"))] == [
        "new-globex", "new-acme"]
    assert await store.delete_conversation("c-1", tenant="acme") == 1
    assert [r.run_id for r in await store.list_runs()] == ["new-globex", "old-susp", "old-done"]
    await store.resolve_task("ap-old", {"approved": True}, by="ann",
                             entry=sample_entry(2, "old/approval"))
    assert (await store.get_run("old-susp")).conversation is None


# ---------------------------------------------------------------------------------- SQLite


def make_sqlite_v3(path: Path) -> None:
    """A schema-3 file, built with the released (frozen) steps: schema 1, 1 -> 2, 2 -> 3."""
    with closing(sqlite3.connect(path)) as conn, conn:
        for statement in (*sqlite_schema._SCHEMA_V1, *sqlite_schema.UPGRADES[1],
                          *sqlite_schema.UPGRADES[2]):
            conn.execute(statement)
        conn.executemany(f"INSERT INTO runs ({V3_RUN_COLUMNS}) VALUES "
                         f"({', '.join('?' * 18)})", [_run_row(r) for r in V3_RUNS])
        conn.executemany(
            "INSERT INTO journal (run_id, seq, key, phase, kind, name, input_hash, data, "
            "created_at, latency_ms, schema_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [entry_row("old-done", e, 3) for e in V3_ENTRIES])
        conn.execute(f"INSERT INTO tasks VALUES ({', '.join('?' * 14)})", TASK_ROW)


def _meta(path: Path) -> str:
    with closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("SELECT value FROM keel_meta").fetchone()[0])


def _layout(path: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                            "ORDER BY name").fetchall()
    return [(n, " ".join(sql.split())) for n, sql in rows]


def test_the_golden_schema_3_file_is_what_the_frozen_steps_write(tmp_path: Path) -> None:
    """The committed file is a schema-3 store; rebuilding it gives the same layout and rows
    (so the fixture stays honest if someone regenerates it)."""
    rebuilt = tmp_path / "rebuilt.db"
    make_sqlite_v3(rebuilt)
    assert _meta(GOLDEN) == "3"
    assert _layout(GOLDEN) == _layout(rebuilt)
    with closing(sqlite3.connect(GOLDEN)) as a, closing(sqlite3.connect(rebuilt)) as b:
        for table in ("runs", "journal", "tasks"):
            query = f"SELECT * FROM {table} ORDER BY 1, 2"
            assert a.execute(query).fetchall() == b.execute(query).fetchall(), table


async def test_the_golden_schema_3_sqlite_store_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    shutil.copyfile(GOLDEN, path)
    async with SQLiteStore(path) as store:
        await _check_upgraded(store)
    assert _meta(path) == str(SCHEMA_VERSION) == "6"
    with closing(sqlite3.connect(path)) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(runs)")]
        assert columns[-3:] == ["tenant", "user", "conversation"]
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    fresh = tmp_path / "fresh.db"
    async with SQLiteStore(fresh):
        pass
    assert _layout(fresh) == _layout(path)


# -------------------------------------------------------------------------------- Postgres





def make_postgres_v3(schema: str) -> None:
    """The schema-3 tables as keel 0.3 created them (today's DDL without the conversation
    column and its index), with two runs, a journal and a task."""
    v3 = [st.replace(',\n        conversation     text', "")
          for st in pg_sql.DDL
          if "keel_runs_by_conversation" not in st and "keel_outbox" not in st
          and "keel_feedback" not in st and "keel_settings" not in st]
    assert not any("conversation" in st for st in v3)
    create_old_store(schema, version=3, ddl=v3, run_columns=V3_RUN_COLUMNS,
                     runs=[_run_row(r) for r in V3_RUNS], entries=V3_ENTRIES)


async def test_a_schema_3_postgres_store_is_upgraded_in_place(schema: str) -> None:
    make_postgres_v3(schema)
    async with PostgresStore(URL, schema=schema) as store:
        await _check_upgraded(store)
    assert sql(f'SELECT value FROM "{schema}".keel_meta') == [(str(SCHEMA_VERSION),)]
    indexes = {r[0] for r in sql("SELECT indexname FROM pg_indexes WHERE schemaname = %s",
                                  (schema,))}
    assert "keel_runs_by_conversation" in indexes


async def test_stores_opening_one_schema_3_store_at_once_upgrade_it_once(schema: str) -> None:
    make_postgres_v3(schema)
    stores = [PostgresStore(URL, schema=schema) for _ in range(4)]
    try:
        await asyncio.gather(*(s.__aenter__() for s in stores))
        for s in stores:
            assert len(await s.list_runs()) == 2
    finally:
        for s in stores:
            await s.close()
    columns = [r[0] for r in sql(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND "
        "table_name = 'keel_runs' ORDER BY ordinal_position", (schema,))]
    assert columns[-3:] == ["tenant", "user", "conversation"]


async def test_postgres_lists_one_conversation_through_its_index(schema: str) -> None:
    async with PostgresStore(URL, schema=schema) as store:
        for i in range(30):
            await store.create_run(sample_run(f"r{i}", created_at=1.7e9 + i,
                                              conversation=f"c{i % 3}"))
        assert [r.run_id for r in await store.list_runs(
            RunFilter(conversation="c1", limit=2))] == ["r28", "r25"]
    with psycopg.connect(URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(str(r[0]) for r in conn.execute(
            f'EXPLAIN SELECT {pg_sql.RUN_COLUMNS} FROM "{schema}".keel_runs WHERE '
            "conversation = %s ORDER BY created_at DESC, run_id DESC LIMIT 50",
            ("c1",)).fetchall())
    assert "keel_runs_by_conversation" in plan and "Sort" not in plan, plan
