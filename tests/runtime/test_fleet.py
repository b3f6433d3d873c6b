"""Leases, workers, cancellation, whole-run deadlines and durability modes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from keel import (
    Agent,
    ApprovalRequired,
    ConfigError,
    DeadlineExceeded,
    LeaseLost,
    MemoryStore,
    RunCancelled,
    RunLeased,
    UserError,
    tool,
)
from keel.runtime import Durability, Worker, cancel_run, decide_approval, worker_id
from keel.runtime._lease import keeper_for
from keel.store import JournalEntry, SQLiteStore
from keel.testing import ScriptedModel, call


def slow_agent(name: str = "slow", *, delay: float = 0.05, turns: int = 3,
               started: asyncio.Event | None = None,
               release: asyncio.Event | None = None) -> Agent[Any]:
    """An agent whose tool takes ``delay`` seconds (or, with ``release``, until it is set);
    ``started`` is set when a tool call begins, i.e. the run is in flight."""

    @tool
    async def wait(n: int) -> int:
        """Wait a little."""
        if started is not None:
            started.set()
        if release is not None:
            await release.wait()
        else:
            await asyncio.sleep(delay)
        return n

    script: list[Any] = [call("wait", {"n": i}) for i in range(turns)] + ["finished"]
    return Agent(name, model=ScriptedModel(script), tools=[wait])


async def test_two_executions_of_one_run_never_overlap() -> None:
    store = MemoryStore()
    started, release = asyncio.Event(), asyncio.Event()
    agent = slow_agent(turns=1, started=started, release=release)
    first = asyncio.create_task(agent.run("go", store=store, run_id="r1"))
    await asyncio.wait_for(started.wait(), 5)  # the first execution is inside its tool call
    with pytest.raises(RunLeased, match="already being continued"):
        await agent.resume("r1", store=store)
    release.set()
    assert (await first).output == "finished"
    record = await store.get_run("r1")
    assert record.status == "completed" and record.lease_owner is None


async def test_a_live_lease_of_another_worker_blocks_resume() -> None:
    store = MemoryStore()
    agent = slow_agent(turns=0)
    with pytest.raises(ApprovalRequired):
        await Agent("slow", model=ScriptedModel([call("wire", {})]),
                    tools=[_irreversible()]).run("go", store=store, run_id="r2")
    await store.acquire_lease("r2", "otherhost:1:abc", 60)
    with pytest.raises(RunLeased) as info:
        await agent.resume("r2", store=store)
    assert info.value.holder == "otherhost:1:abc" and "otherhost" in str(info.value)


def _irreversible() -> Any:
    @tool(risk="irreversible")
    def wire() -> str:
        """Wire."""
        return "ok"

    return wire


async def test_a_dead_local_holder_is_taken_over_at_once() -> None:
    store = MemoryStore()
    with pytest.raises(ApprovalRequired):
        await Agent("slow", model=ScriptedModel([call("wire", {})]),
                    tools=[_irreversible()]).run("go", store=store, run_id="r3")
    import socket

    dead = f"{socket.gethostname()}:999999:dead"  # no such pid
    await store.acquire_lease("r3", dead, 600)
    [task] = await store.list_tasks()
    await store.release_lease("r3", dead)
    await decide_approval(task.task_id, store=store, approve=True, by="ann")
    await store.acquire_lease("r3", dead, 600)
    resumed = Agent("slow", model=ScriptedModel([call("wire", {}), "done"]),
                    tools=[_irreversible()])
    assert (await resumed.resume("r3", store=store)).output == "done"
    assert (await store.get_run("r3")).lease_owner is None


async def test_losing_the_lease_stops_the_run_without_writing() -> None:
    store = MemoryStore()
    keeper = keeper_for(store, 0.3)
    started = asyncio.Event()
    agent = slow_agent(delay=0.3, turns=4, started=started)
    task = asyncio.create_task(agent.run("go", store=store, run_id="r4"))
    await asyncio.wait_for(started.wait(), 5)
    await store.acquire_lease("r4", "thief:1:x", 60, steal_from=worker_id())
    with pytest.raises(LeaseLost):
        await task
    journal = await store.read_journal("r4")
    record = await store.get_run("r4")
    assert record.lease_owner == "thief:1:x" and record.status == "running"
    assert all(e.key != "slow/turn:3/model" for e in journal)
    assert keeper.held == {}


async def test_cancel_a_live_run_through_its_worker() -> None:
    store = MemoryStore()
    keeper_for(store, 0.3)
    started = asyncio.Event()
    agent = slow_agent(delay=0.2, turns=20, started=started)
    task = asyncio.create_task(agent.run("go", store=store, run_id="r5"))
    await asyncio.wait_for(started.wait(), 5)
    assert await cancel_run("r5", store=store, reason="customer hung up") == "requested"
    with pytest.raises(RunCancelled):
        await asyncio.wait_for(task, 5)
    record = await store.get_run("r5")
    assert record.status == "cancelled"
    journal = await store.read_journal("r5")
    assert journal[-1].kind == "cancel"
    with pytest.raises(UserError, match="already cancelled"):
        await cancel_run("r5", store=store)
    with pytest.raises(Exception, match="cancelled"):
        await agent.resume("r5", store=store)


async def test_cancel_an_idle_run_calls_the_end_hook() -> None:
    from keel import Middleware
    from keel.runtime import RunEndInput

    ended: list[str] = []

    class Compensate(Middleware):
        async def on_run_end(self, inp: RunEndInput) -> None:
            ended.append(inp.status)

    store = MemoryStore()
    agent = Agent("slow", model=ScriptedModel([call("wire", {})]), tools=[_irreversible()],
                  middleware=[Compensate()])
    with pytest.raises(ApprovalRequired):
        await agent.run("go", store=store, run_id="r6")
    assert ended == ["suspended"]
    assert await cancel_run("r6", store=store, agent=agent, by="ops") == "cancelled"
    assert ended == ["suspended", "cancelled"]
    record = await store.get_run("r6")
    assert record.status == "cancelled" and record.error is not None
    with pytest.raises(Exception, match="no run"):
        await cancel_run("nope", store=store)


async def test_whole_run_deadline_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    agent = slow_agent(delay=0.05, turns=2)
    async with SQLiteStore(path) as store:
        with pytest.raises(ApprovalRequired):
            await Agent("slow", model=ScriptedModel([call("wire", {})]),
                        tools=[_irreversible()]).run("go", store=store, run_id="r7",
                                                     deadline=0.3)
        deadline_at = (await store.get_run("r7")).deadline_at
        assert deadline_at is not None and deadline_at <= time.time() + 0.3
    await asyncio.sleep(max(0.0, deadline_at - time.time()) + 0.01)  # the deadline passes
    async with SQLiteStore(path) as store:
        with pytest.raises(DeadlineExceeded):
            await agent.resume("r7", store=store)
        record = await store.get_run("r7")
        assert record.status == "failed" and record.error is not None
        assert record.error["type"] == "DeadlineExceeded"


async def test_deadline_stops_a_run_in_flight() -> None:
    store = MemoryStore()
    agent = slow_agent(delay=0.2, turns=50)
    with pytest.raises(DeadlineExceeded):
        await agent.run("go", store=store, run_id="r8", deadline=0.5)
    assert (await store.get_run("r8")).status == "failed"
    with pytest.raises(ConfigError, match="deadline"):
        await agent.run("go", store=store, deadline=-1)


async def test_worker_continues_approved_runs_and_leaves_the_rest(tmp_path: Path) -> None:
    effects: list[str] = []

    @tool(risk="irreversible")
    def ship(order: str) -> str:
        """Ship an order."""
        effects.append(order)
        return "shipped"

    def agent() -> Agent[Any]:
        return Agent("ship", model=ScriptedModel([call("ship", {"order": "A"}), "done"]),
                     tools=[ship])

    async with SQLiteStore(tmp_path / "runs.db") as store:
        for i in range(3):
            with pytest.raises(ApprovalRequired):
                await agent().run("ship A", store=store, run_id=f"s{i}")
        tasks = await store.list_tasks()
        for t in tasks[:2]:
            await decide_approval(t.task_id, store=store, approve=True, by="ann")
        worker = Worker([agent()], store=store, concurrency=4)
        outcomes = await worker.run_until_idle()
        assert sorted(o.run_id for o in outcomes) == sorted(t.run_id for t in tasks[:2])
        assert all(o.status == "completed" for o in outcomes)
        assert effects == ["A", "A"]
        assert (await store.get_run(tasks[2].run_id)).status == "suspended"
        assert await worker.run_until_idle() == []
    with pytest.raises(ConfigError, match="concurrency"):
        Worker([agent()], store=MemoryStore(), concurrency=0)
    with pytest.raises(ConfigError, match="agents"):
        Worker([], store=MemoryStore())


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.commits: list[list[str]] = []

    async def append(self, run_id: str, entries: Any, *, lease: str | None = None) -> None:
        await super().append(run_id, entries, lease=lease)
        self.commits.append([e.key for e in entries])

    async def finish_run(self, record: Any, entries: Any, *, lease: str | None = None) -> None:
        await super().finish_run(record, entries, lease=lease)
        self.commits.append(["finish", *(e.key for e in entries)])


@pytest.mark.parametrize(("mode", "expected"), [
    ("always", 10), ("balanced", 5), (Durability("batched", batch_size=3), 4)])
async def test_durability_modes_commit_as_documented(mode: Any, expected: int) -> None:
    store = CountingStore()
    agent = Agent("d", model=ScriptedModel([call("look", {"n": i}) for i in range(4)] + ["ok"]),
                  tools=[_look()], durability=mode)
    await agent.run("go", store=store)
    # always: one commit per step, then the status; balanced: a model response rides with
    # the next record; batched: three records per commit
    assert len(store.commits) == expected, store.commits
    journal: list[JournalEntry] = await store.read_journal((await store.list_runs())[0].run_id)
    assert len(journal) == 9, "every mode records every step in the end"


def _look() -> Any:
    @tool
    def look(n: int) -> int:
        """Look."""
        return n

    return look


def test_bad_durability_is_refused() -> None:
    with pytest.raises(ConfigError, match="durability"):
        Agent("a", model=ScriptedModel(["x"]), durability="sometimes")
    with pytest.raises(ConfigError, match="batch_size"):
        Durability("batched", batch_size=0)


async def test_a_renewal_during_the_final_write_does_not_hide_the_runs_error() -> None:
    """The final status write releases the lease; a renewal tick due at that moment must not
    take the run for lost and cancel it (the caller must get the run's own error)."""
    import time as _time

    from keel import ModelError

    store = MemoryStore()
    keeper_for(store, 0.3)  # a renewal every 0.1 s
    agent = Agent("f", model=ScriptedModel([ModelError("model down", retryable=False)] * 4))
    for _ in range(3):
        with pytest.raises(ModelError):
            await agent.run("go", store=store)
        _time.sleep(0.15)  # noqa: ASYNC251 - busy without awaiting: the tick falls due
    assert [r.status for r in await store.list_runs()] == ["failed"] * 3
