"""Cancelling a live run journals the reason and who asked, as cancelling an idle run does
(docs/journal.md promises both), on a real SQLite store shared by two store objects (as a
`keel runs cancel` in another process shares the file with the worker)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from keel import Agent, RunCancelled, tool
from keel.runtime import _worker, cancel_run
from keel.runtime._lease import keeper_for
from keel.store import CANCEL_REQUEST, MemoryStore, SQLiteStore
from keel.testing import ScriptedModel, call


def _blocked_agent(started: asyncio.Event) -> Agent[Any]:
    @tool
    async def wait(n: int) -> int:
        """Wait for ever."""
        started.set()
        await asyncio.Event().wait()
        return n

    return Agent("slow", model=ScriptedModel([call("wait", {"n": 1}), "finished"]),
                 tools=[wait])


async def _cancel_live(worker_store: Any, cancel: Callable[[], Awaitable[Any]]) -> Any:
    """Start a run that blocks in a tool, call ``cancel`` while it is live, and return the
    RunCancelled the run ends with."""
    keeper_for(worker_store, 0.3)  # renew and look for cancel requests every 0.1 s
    started = asyncio.Event()
    task = asyncio.create_task(_blocked_agent(started).run("go", store=worker_store,
                                                             run_id="live"))
    await asyncio.wait_for(started.wait(), 10)
    await cancel()
    with pytest.raises(RunCancelled) as info:
        await asyncio.wait_for(task, 15)
    return info.value


async def test_keel_runs_cancel_of_a_live_run_journals_reason_and_who(
        tmp_path: Path) -> None:
    """`keel runs cancel --reason` from another process, while this one holds the lease."""
    path = tmp_path / "runs.db"
    env = {**os.environ, "USER": "alice",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}

    async def cli_cancel() -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "keel.cli", "--store", str(path), "runs", "cancel", "live",
            "--reason", "customer hung up", "--json", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert json.loads(out)["status"] == "cancelled"

    async with SQLiteStore(path) as worker:
        exc = await _cancel_live(worker, cli_cancel)
        assert exc.message == "customer hung up" and exc.by == "alice"
        record = await worker.get_run("live")
        journal = await worker.read_journal("live")
    assert record.status == "cancelled" and record.error is not None
    assert record.error["message"] == "customer hung up"
    step = journal[-1]
    assert step.kind == "cancel" and step.key == "slow/cancelled"
    assert step.data == {"reason": "customer hung up", "by": "alice"}


async def test_the_live_and_the_idle_cancel_journal_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteStore(path) as store:
        await store.create_run(_idle_record("idle"))
        assert await cancel_run("idle", store=store, reason="dup", by="bob") == "cancelled"
        idle = (await store.read_journal("idle"))[-1]
    # The canceller is another worker (as another process would be) on the same file.
    monkeypatch.setattr(_worker, "worker_id", lambda: "elsewhere:1:abc")
    async with SQLiteStore(path) as worker, SQLiteStore(path) as canceller:

        async def cancel() -> None:
            assert await cancel_run("live", store=canceller, reason="dup", by="bob") == "requested"

        await _cancel_live(worker, cancel)
        live = (await canceller.read_journal("live"))[-1]
    assert (live.kind, live.data) == (idle.kind, idle.data) == ("cancel",
                                                                {"reason": "dup", "by": "bob"})


async def test_a_cancel_in_the_same_process_journals_reason_and_who() -> None:
    store = MemoryStore()

    async def cancel() -> None:
        assert await cancel_run("live", store=store, reason="wrong customer", by="carol") == \
            "requested"

    exc = await _cancel_live(store, cancel)
    assert (exc.message, exc.by) == ("wrong customer", "carol")
    assert (await store.read_journal("live"))[-1].data == {"reason": "wrong customer",
                                                            "by": "carol"}


async def test_request_cancel_keeps_the_request_in_the_record(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "runs.db") as sqlite:
        for store in (sqlite, MemoryStore()):
            await store.create_run(_idle_record("r", metadata={"team": "a"}))
            record = await store.request_cancel("r", reason="why", by="who")
            assert record.cancel_requested
            assert record.metadata == {"team": "a", CANCEL_REQUEST: {"reason": "why",
                                                                     "by": "who"}}
            assert (await store.get_run("r")).metadata == record.metadata
            await store.create_run(_idle_record("plain"))
            assert (await store.request_cancel("plain")).metadata == {}


def _idle_record(run_id: str, **fields: Any) -> Any:
    from keel.store import RunRecord

    return RunRecord(run_id=run_id, agent="slow", status="suspended", input="go",
                     created_at=1.0, updated_at=1.0, **fields)


async def test_postgres_request_cancel_keeps_the_request_in_the_record() -> None:
    import uuid

    import psycopg

    from keel.store import PostgresStore

    url = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    schema = f"keel_cancel_{uuid.uuid4().hex[:10]}"
    try:
        async with PostgresStore(url, schema=schema) as store:
            await store.create_run(_idle_record("r", metadata={"team": "a"}))
            record = await store.request_cancel("r", reason="why", by="who")
            assert record.cancel_requested
            assert record.metadata == {"team": "a", CANCEL_REQUEST: {"reason": "why",
                                                                     "by": "who"}}
            await store.create_run(_idle_record("plain"))
            assert (await store.request_cancel("plain")).metadata == {}
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
