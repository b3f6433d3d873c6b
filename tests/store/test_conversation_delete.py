"""Deleting a conversation (a data-protection request) leaves nothing of the user's text in the
run store: every table is read back row by row (and, for SQLite, the file's raw bytes, free
pages and write-ahead log included), on every backend. Another conversation's text, stored
the same way, is still found: the scan would see it."""

from __future__ import annotations

import os
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest

from keel import (
    Agent,
    ApprovalRequired,
    Conversation,
    Escalate,
    MemoryStore,
    RunStore,
    tool,
)
from keel.store import PostgresStore, SQLiteStore
from keel.testing import ScriptedModel, call

PG_URL = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@tool(risk="irreversible")
def close_account(reason: str) -> str:
    """Close the customer's account."""
    return f"closed, because: {reason}"


@tool(risk="read")
def note(text: str) -> str:
    """Keep a note."""
    return f"noted: {text}"


async def _chat(store: RunStore, conversation: str, secret: str) -> None:
    """A conversation whose every kind of record holds ``secret``: inputs, model text, tool
    arguments and results, an approval request, an escalation packet and its answer."""
    chat = Conversation(conversation, store=store, tenant="acme", user="alice")
    talk = Agent("support", model=ScriptedModel([
        call("note", {"text": secret}), f"I noted {secret}.",
        call("close_account", {"reason": secret}), "closing"]),
        tools=[note, close_account])
    await chat.send(talk, f"please remember {secret}")
    with pytest.raises(ApprovalRequired):
        await chat.send(talk, f"close my account, {secret}")
    with pytest.raises(Escalate):
        await chat.send(Agent("support", model=ScriptedModel(["x"])),
                        f"I want to talk to a human about {secret}")
    from keel import resolve_escalation
    from keel.store import TaskFilter

    for task in await store.list_tasks(TaskFilter(kind="escalation", status="open")):
        await resolve_escalation(task.task_id, store=store, by="ann", action="answer",
                                 answer=f"a person says {secret}")


async def _fill(store: RunStore) -> tuple[str, str]:
    gone, kept = f"GONE-{uuid.uuid4().hex}", f"KEPT-{uuid.uuid4().hex}"
    await _chat(store, "c-gone", gone)
    await _chat(store, "c-kept", kept)
    assert await Conversation("c-gone", store=store, tenant="acme").delete() == 3
    return gone, kept


async def test_memory_store_keeps_nothing_of_a_deleted_conversation() -> None:
    store = MemoryStore()
    gone, kept = await _fill(store)
    everything = repr(vars(store))
    assert kept in everything and gone not in everything


async def test_sqlite_store_keeps_nothing_of_a_deleted_conversation(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteStore(path) as store:
        gone, kept = await _fill(store)
        rows = _sqlite_rows(path)
        assert kept in rows and gone not in rows
        assert gone.encode() not in _raw(path)  # free pages and the log too
    raw = _raw(path)
    assert kept.encode() in raw and gone.encode() not in raw


def _sqlite_rows(path: Path) -> str:
    with closing(sqlite3.connect(path)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = "
                                             "'table'")]
        return repr({t: conn.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables})


def _raw(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


@pytest.fixture
def schema() -> Any:
    name = f"keel_del_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


async def test_postgres_store_keeps_nothing_of_a_deleted_conversation(schema: str) -> None:
    async with PostgresStore(PG_URL, schema=schema) as store:
        gone, kept = await _fill(store)
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,)).fetchall()]
        rows = repr({t: conn.execute(f'SELECT t::text FROM "{schema}"."{t}" t').fetchall()
                     for t in tables})
    assert {"keel_runs", "keel_journal", "keel_tasks"} <= set(tables)
    assert kept in rows and gone not in rows
