"""The outbox conformance suite on every backend, and the upgrade from schema 4."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from keel.core import ConfigError, StoreError, UserError
from keel.store import SCHEMA_VERSION, PostgresStore, RunStore, SQLiteStore, open_store
from keel.store import _postgres_sql as pg_sql
from keel.store import _sqlite_schema as sqlite_schema
from keel.testing import OutboxConformance, StoreConformance
from keel.testing._store_conformance import sample_entry, sample_run
from tests._stores import BACKENDS, PG_URL, fresh_store
from tests.store._old_postgres import TASK, TASK_ROW, create_old_store, entry_row, fresh_schema, sql


@pytest.mark.parametrize("backend", BACKENDS)
class TestOutbox(OutboxConformance):
    @pytest.fixture
    async def outbox_store(self, backend: str, tmp_path: Path) -> AsyncIterator[RunStore]:
        async with fresh_store(backend, tmp_path, "keel_outbox", outbox=True) as store:
            yield store

    @pytest.fixture
    async def plain_store(self, backend: str, tmp_path: Path) -> AsyncIterator[RunStore]:
        async with fresh_store(backend, tmp_path / "plain", "keel_plain") as store:
            yield store


@pytest.mark.parametrize("backend", BACKENDS)
class TestStoreConformanceWithTheOutboxOn(StoreConformance):
    """Switching the outbox on changes nothing else a store does."""

    @pytest.fixture
    async def store(self, backend: str, tmp_path: Path) -> AsyncIterator[RunStore]:
        async with fresh_store(backend, tmp_path, "keel_outbox_on", outbox=True) as store:
            yield store


# ------------------------------------------------------------------- upgrade from schema 4

V4_RUNS = [
    sample_run("old-done", status="completed", output={"answer": "shipped"},
               usage={"input_tokens": 3}, updated_at=1_700_000_100.0, schema_version=4,
               tenant="acme", user="alice", conversation="chat-1"),
    sample_run("old-susp", status="suspended", created_at=1_700_000_001.0,
               error={"type": "ApprovalRequired"}, schema_version=4, deadline_at=1.8e9),
]
V4_ENTRIES = [sample_entry(0, "k", "intent", schema_version=4),
              sample_entry(1, "k", "result", schema_version=4)]
V4_RUN_COLUMNS = ("run_id, agent, status, target, input, output, error, usage, metadata, "
                  "created_at, updated_at, schema_version, lease_owner, lease_expires_at, "
                  'deadline_at, cancel_requested, tenant, "user", conversation')


def _v4_row(r: Any) -> tuple[Any, ...]:
    return (r.run_id, r.agent, r.status, r.target, json.dumps(r.input), json.dumps(r.output),
            None if r.error is None else json.dumps(r.error), json.dumps(r.usage),
            json.dumps(r.metadata), r.created_at, r.updated_at, 4, None, None, r.deadline_at,
            False, r.tenant, r.user, r.conversation)


async def _check_upgraded(store: RunStore) -> None:
    """The schema-4 data reads back unchanged, and the outbox works on it."""
    for want in V4_RUNS:
        assert await store.get_run(want.run_id) == want
    assert await store.read_journal("old-done") == V4_ENTRIES
    assert (await store.get_task("ap-old")).data == TASK.data
    assert await store.read_outbox(0, 10) == []  # nothing made up for the old writes
    await store.resolve_task("ap-old", {"approved": True}, by="ann",
                             entry=sample_entry(5, "ap/approval", kind="approval"))
    rows = await store.read_outbox(0, 10)
    assert [(e.type, e.run_id, e.tenant) for _, e in rows] == [
        ("approval.decided", "old-susp", None)]


def _make_sqlite_v4(path: Path) -> None:
    """A schema-4 file as keel 0.4 wrote it: schema 1 and the upgrades to 4."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for statement in sqlite_schema._SCHEMA_V1:
            conn.execute(statement)
        for version in (1, 2, 3):
            for statement in sqlite_schema.UPGRADES[version]:
                conn.execute(statement)
        conn.executemany(f"INSERT INTO runs ({V4_RUN_COLUMNS}) VALUES "
                         f"({', '.join('?' * 19)})", [_v4_row(r) for r in V4_RUNS])
        conn.executemany("INSERT INTO journal (run_id, seq, key, phase, kind, name, "
                         "input_hash, data, created_at, latency_ms, schema_version) VALUES "
                         f"({', '.join('?' * 11)})",
                         [entry_row("old-done", e, 4) for e in V4_ENTRIES])
        conn.execute(f"INSERT INTO tasks VALUES ({', '.join('?' * 14)})", TASK_ROW)
        assert conn.execute("SELECT value FROM keel_meta").fetchone() == ("4",)


@pytest.mark.parametrize("outbox", [True, False])
async def test_a_schema_4_sqlite_store_is_upgraded_in_place(tmp_path: Path,
                                                            outbox: bool) -> None:
    path = tmp_path / "runs.db"
    _make_sqlite_v4(path)
    async with SQLiteStore(path, outbox=True) as store:
        await _check_upgraded(store)
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT value FROM keel_meta").fetchone() == (str(SCHEMA_VERSION),)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    fresh = tmp_path / "fresh.db"
    async with SQLiteStore(fresh, outbox=outbox):
        pass

    def layout(p: Path) -> list[tuple[str, str]]:
        with closing(sqlite3.connect(p)) as conn:
            rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                                "AND name != 'sqlite_sequence' ORDER BY name").fetchall()
        return [(n, " ".join(s.split())) for n, s in rows]

    assert layout(path) == layout(fresh), "an upgraded file differs from a new one"


@pytest.fixture
def schema() -> Iterator[str]:
    yield from fresh_schema()


async def test_a_schema_4_postgres_store_is_upgraded_in_place(schema: str) -> None:
    v4 = [st for st in pg_sql.DDL if "keel_outbox" not in st
          and "keel_feedback" not in st and "keel_settings" not in st]
    create_old_store(schema, version=4, ddl=v4, run_columns=V4_RUN_COLUMNS,
                     runs=[_v4_row(r) for r in V4_RUNS], entries=V4_ENTRIES)
    stores = [PostgresStore(PG_URL, schema=schema, outbox=True) for _ in range(3)]
    try:  # three processes opening it at once upgrade it once
        await asyncio.gather(*(s.__aenter__() for s in stores))
        await _check_upgraded(stores[0])
    finally:
        for s in stores:
            await s.close()
    assert sql(f'SELECT value FROM "{schema}".keel_meta') == [(str(SCHEMA_VERSION),)]
    indexes = {r[0] for r in sql("SELECT indexname FROM pg_indexes WHERE schemaname = %s",
                                  (schema,))}
    assert {"keel_outbox_unpublished", "keel_outbox_published"} <= indexes


async def test_a_failed_postgres_upgrade_changes_nothing(
        schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    v4 = [st for st in pg_sql.DDL if "keel_outbox" not in st
          and "keel_feedback" not in st and "keel_settings" not in st]
    create_old_store(schema, version=4, ddl=v4, run_columns=V4_RUN_COLUMNS,
                     runs=[_v4_row(r) for r in V4_RUNS], entries=V4_ENTRIES)
    monkeypatch.setitem(pg_sql.UPGRADES, 4, (*pg_sql.UPGRADES[4], "SELECT * FROM no_such"))
    with pytest.raises(StoreError):
        async with PostgresStore(PG_URL, schema=schema):
            pass
    assert sql(f'SELECT value FROM "{schema}".keel_meta') == [("4",)]
    assert sql("SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'keel_outbox'",
               (schema,)) == []


# ------------------------------------------------------------------------- open_store


@pytest.mark.parametrize(("url", "on"), [
    ("memory:?outbox=1", True), ("memory:?outbox=0", False), ("memory:", False),
    ("runs.db?outbox=true", True), ("sqlite:///runs.db?outbox=on", True),
    ("runs.db?outbox=off", False),
])
def test_open_store_reads_the_outbox_option(url: str, on: bool, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store(url)
    assert store.outbox is on
    if isinstance(store, SQLiteStore):
        assert store.path == tmp_path / "runs.db", "the option is not part of the path"


async def test_open_store_takes_the_option_off_a_postgres_url(schema: str) -> None:
    store = open_store(f"{PG_URL}?schema={schema}&outbox=1&application_name=keel-test")
    assert isinstance(store, PostgresStore) and store.outbox
    async with store:
        await store.create_run(sample_run("run-1"))
        assert [e.id for _, e in await store.read_outbox(0, 10)] == ["run-1:started"]
    assert open_store(f"{PG_URL}?schema={schema}", outbox=True).outbox


@pytest.mark.parametrize(("url", "kwargs"), [
    ("memory:?outbox=maybe", {}), ("memory:?outbox=1&outbox=1", {}),
    ("memory:?outbox=" + "1" * 10_000, {}), ("runs.db?outbox=1", {"outbox": False}),
    ("memory:?outbox=0", {"outbox": True}), ("memory:", {"outbox": "yes"}),
    ("memory:", {"outbox": 1}),
])
def test_bad_outbox_options_are_config_errors(url: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="outbox"):
        open_store(url, **kwargs)


def test_a_store_url_that_is_not_a_string_is_a_user_error() -> None:
    with pytest.raises(UserError):
        open_store(None)  # type: ignore[arg-type]
