"""The CLI and stores that cannot be used: a store outage is a failed attempt (exit 1,
retryable), not a usage error (exit 2); reading commands never create or alter a store."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from keel.store import _sqlite_schema
from tests.cli.conftest import TOOL_USE, InvokeResult

Keel = Callable[..., InvokeResult]
PG = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _sql(statement: str, params: Any = None, url: str = PG) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"keel_cli_{uuid.uuid4().hex[:12]}"
    yield name
    _sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


# ------------------------------------------------------------------------------ outages


def test_an_unreachable_postgres_exits_1_not_2(keel: Keel) -> None:
    r = keel("--store", "postgresql://postgres@127.0.0.1:1/test", "runs", "list")
    assert r.exit_code == 1, r
    assert "StoreUnavailable" in r.stderr and "pg_isready -h 127.0.0.1 -p 1" in r.stderr
    assert "usage" not in r.output.lower()


CUTTER = '''
    """An agent whose tool cuts the run store's connections (as a database restart would)."""
    import psycopg
    from keel import Agent, tool
    from keel.core import ModelResponse, TextPart, ToolCallPart
    from keel.testing import FunctionModel

    @tool(risk="read")
    def outage() -> str:
        """Terminate the store's server connections."""
        with psycopg.connect({admin!r}, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE application_name = %s AND pid <> pg_backend_pid()", ({app!r},))
        return "cut"

    def reply(messages, tools, settings):
        if not any(m.role == "assistant" for m in messages):
            return ModelResponse(parts=(ToolCallPart(call_id="c0", tool_name="outage",
                                                     arguments="{{}}"),))
        return "done"

    agent = Agent("cutter", model=FunctionModel(reply), tools=[outage])
'''


def test_a_postgres_connection_lost_mid_run_exits_1_retryable(
        keel: Keel, write_module: Callable[[str, str], Path], schema: str) -> None:
    app = f"keel_outage_{uuid.uuid4().hex[:8]}"
    target = write_module("cutter", CUTTER.format(admin=PG, app=app))
    url = f"{PG}?schema={schema}&application_name={app}"
    r = keel("--store", url, "run", f"{target}:agent", "go", "--json")
    assert r.exit_code == 1, r
    assert "StoreUnavailable" in r.output and "lost the connection" in r.output
    assert '"retryable": true' in r.stdout


def test_an_sqlite_store_locked_past_the_busy_timeout_exits_1(
        keel: Keel, store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert keel("--store", store, "run", TOOL_USE, "q").exit_code == 0
    monkeypatch.setattr(_sqlite_schema, "BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        r = keel("--store", store, "run", TOOL_USE, "q")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert r.exit_code == 1, r
    assert "StoreUnavailable" in r.stderr and "stayed locked" in r.stderr


# --------------------------------------------------------------------- reading creates nothing


READERS = [("runs", "list"), ("runs", "show", "r1"), ("approvals", "list"),
           ("approvals", "show", "a1"), ("escalations", "list"), ("escalations", "show", "e1"),
           ("replay", "r1"), ("diff", "r1", "r2"), ("runs", "export", "r1")]


@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_reading_an_empty_file_leaves_it_empty(keel: Keel, tmp_path: Path,
                                               args: tuple[str, ...]) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    r = keel("--store", str(empty), *args)
    assert r.exit_code == 2, r
    assert f"no keel run store in {empty} (an empty file)" in r.stderr
    assert empty.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


def test_reading_a_missing_file_creates_no_directory(keel: Keel, tmp_path: Path) -> None:
    r = keel("--store", str(tmp_path / "nowhere" / "runs.db"), "runs", "list")
    assert r.exit_code == 0 and "no run store there yet" in r.stdout
    assert not (tmp_path / "nowhere").exists()


def test_reading_a_typo_schema_fails_and_creates_nothing(keel: Keel, schema: str) -> None:
    for args in (("runs", "list"), ("approvals", "list"), ("runs", "show", "r1")):
        r = keel("--store", f"{PG}?schema={schema}", *args)
        assert r.exit_code == 2, r
        assert f"no keel store in schema {schema!r}" in r.stderr
    assert _sql("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)) == []


def test_reading_a_url_without_a_database_creates_no_tables(keel: Keel) -> None:
    """libpq's default database (the user's name) is not made into a keel store."""
    no_db = PG.rsplit("/", 1)[0]
    default_db = no_db + "/postgres"
    query = "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'keel%%'"
    before = _sql(query, url=default_db)
    r = keel("--store", no_db, "runs", "list")
    assert r.exit_code == 2, r
    assert "no keel store in schema 'public'" in r.stderr
    assert _sql(query, url=default_db) == before


def test_writing_still_creates_the_store(keel: Keel, schema: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    assert keel("--store", str(empty), "run", TOOL_USE, "q").exit_code == 0
    assert keel("--store", str(empty), "runs", "list").exit_code == 0
    url = f"{PG}?schema={schema}"
    assert keel("--store", url, "run", TOOL_USE, "q").exit_code == 0
    listed = keel("--store", url, "runs", "list")
    assert listed.exit_code == 0 and "weather" in listed.stdout


# ------------------------------------------------------------------------- damaged files


def _store_with_runs(path: Path, count: int = 300) -> None:
    """A real store with enough runs and journal entries to fill many pages."""
    import asyncio

    from keel.store import JournalEntry, RunRecord, SQLiteStore

    async def fill() -> None:
        async with SQLiteStore(path) as store:
            for i in range(count):
                run_id = f"run{i:04d}"
                await store.create_run(RunRecord(
                    run_id=run_id, agent="a", status="completed", input="x" * 200,
                    created_at=float(i), updated_at=float(i)))
                await store.append(run_id, [JournalEntry(
                    seq=j, key=f"a/s{j}", phase="result", kind="model", name="m",
                    input_hash="h", created_at=1.0, data={"t": "y" * 300}) for j in range(5)])

    asyncio.run(fill())
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _leaves(path: Path, name: str) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [p for (p,) in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno",
            (name,))]


def _overwrite(path: Path, page: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek((page - 1) * 4096)
        f.write(data)


def _page(path: Path, page: int) -> bytes:
    with path.open("rb") as f:
        f.seek((page - 1) * 4096)
        return f.read(4096)


def test_a_run_lost_from_a_damaged_index_is_reported_as_damage(keel: Keel,
                                                               tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    _store_with_runs(path)
    first, last = _leaves(path, "sqlite_autoindex_runs_1")[-2:]
    _overwrite(path, last, _page(path, first))  # a well-formed page with the wrong keys
    listed = keel("--store", str(path), "runs", "list", "--limit", "1", "--json")
    assert '"run0299"' in listed.stdout
    r = keel("--store", str(path), "runs", "show", "run0299")
    assert r.exit_code == 2, r
    assert f"the run store {path} is damaged" in r.stderr and "no run" not in r.stderr
    assert keel("--store", str(path), "runs", "show", "nope").stderr.startswith(
        "error: no run 'nope'")


def test_a_journal_lost_from_a_damaged_index_is_not_shown_as_empty(keel: Keel,
                                                                   tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    _store_with_runs(path)
    first, second = _leaves(path, "sqlite_autoindex_journal_1")[:2]
    _overwrite(path, first, _page(path, second))
    r = keel("--store", str(path), "runs", "show", "run0000")
    assert r.exit_code == 2, r
    assert f"the run store {path} is damaged" in r.stderr
    assert "journal is empty" not in r.output


@pytest.mark.parametrize("table", ["runs", "journal"])
def test_garbage_in_a_table_page_is_reported_as_damage(keel: Keel, tmp_path: Path,
                                                       table: str) -> None:
    path = tmp_path / "runs.db"
    _store_with_runs(path)
    _overwrite(path, _leaves(path, table)[3], bytes(range(256)) * 16)
    import asyncio

    from keel.core import StoreError
    from keel.store import SQLiteStore

    async def sweep() -> dict[str, str]:
        """run id -> the error reading it gave (runs read back whole are left out)."""
        broken = {}
        async with SQLiteStore(path, create=False) as store:
            for i in range(300):
                run_id = f"run{i:04d}"
                try:
                    await store.get_run(run_id)
                    assert len(await store.read_journal(run_id)) == 5, run_id
                except StoreError as exc:
                    broken[run_id] = str(exc)
        return broken

    broken = asyncio.run(sweep())
    assert broken, "the damaged page held no run"
    assert all(f"the run store {path} is damaged" in e for e in broken.values()), broken
    r = keel("--store", str(path), "runs", "show", next(iter(broken)))
    assert r.exit_code == 2 and f"the run store {path} is damaged" in r.stderr, r
