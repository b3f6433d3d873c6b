"""Triggers on the memory bus and a real SQLite store: a burst starts each run exactly once,
within the concurrency limit; duplicates, a crashed consumer and bad payloads are handled."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keel.events import DEAD_LETTER_TYPE, Event, EventBus, Fired, MemoryBus, NatsBus, Triggers
from keel.store import RunFilter, RunRecord, RunStore, SQLiteStore
from tests.events.triggerkit import (
    Effects,
    Gauge,
    OrderProcessed,
    make_agent,
    order_trigger,
    orders,
)

N = 1_000


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(str(tmp_path / "runs.db"))
    yield opened
    await opened.close()


async def until(check: object, *, limit: float = 120.0) -> None:
    """Wait (polling) until ``check()`` is true; a safety net, not a timing assertion."""
    async with asyncio.timeout(limit):
        while not check():  # type: ignore[operator]  # noqa: ASYNC110 - counters, no event
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def consuming(triggers: Triggers) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(triggers.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await task


async def test_a_burst_published_twice_starts_each_run_once_within_the_concurrency(
        tmp_path: Path, store: SQLiteStore, any_bus: EventBus) -> None:
    bus, effects, gauge = any_bus, Effects(tmp_path / "effects.db"), Gauge()
    triggers = Triggers([order_trigger(make_agent(effects, gauge, pause=0.001))], bus=bus,
                        store=store, concurrency=16, start="all")
    async with consuming(triggers):
        await bus.publish(orders(N))
        await bus.publish(orders(N))  # every event again: a re-publish after a relay crash
        # NATS drops the re-publish itself (its duplicate window); the others deliver it
        dropped = N if isinstance(bus, NatsBus) else 0
        await until(lambda: triggers.stats.started + triggers.stats.duplicates >= 2 * N - dropped)
    runs = await all_runs(store)
    assert len(runs) == N and {r.status for r in runs} == {"completed"}
    assert sorted(r.metadata["event_id"] for r in runs) == sorted(e.id for e in orders(N))
    rows = effects.rows()
    assert len(rows) == N and len({order for _, order in rows}) == N
    assert effects.calls == N  # no tool ran twice
    assert triggers.stats.started == N and triggers.stats.duplicates == N - dropped
    assert 1 < gauge.high <= 16 and triggers.stats.high_water <= 16


async def until_completed(store: RunStore, n: int, *, limit: float = 120.0) -> None:
    """Wait (polling the store) until ``n`` runs are completed; a safety net, not timing."""
    async with asyncio.timeout(limit):
        while await count_completed(store) < n:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.1)


async def count_completed(store: RunStore) -> int:
    return len([r for r in await all_runs(store) if r.status == "completed"])


async def all_runs(store: RunStore) -> list[RunRecord]:
    out: list[RunRecord] = []
    offset = 0
    while True:
        page = await store.list_runs(RunFilter(limit=500, offset=offset))
        out.extend(page)
        if len(page) < 500:
            return out
        offset += 500


async def test_a_consumer_cancelled_mid_burst_and_restarted_completes_every_run_once(
        tmp_path: Path, store: SQLiteStore) -> None:
    bus, effects = MemoryBus(), Effects(tmp_path / "effects.db")
    agent = make_agent(effects, pause=0.002)
    first = Triggers([order_trigger(agent)], bus=bus, store=store, concurrency=32,
                     ack_wait=2.0, start="all", retry_delay=0.1)
    await bus.publish(orders(N))
    task = asyncio.create_task(first.run())
    await until(lambda: first.stats.started >= N // 3)
    task.cancel()  # the crash: runs in flight stop where they are, nothing is acknowledged
    with contextlib.suppress(asyncio.CancelledError):
        await task
    stopped = [r for r in await all_runs(store) if r.status != "completed"]
    assert stopped  # some runs were cut off mid-way
    second = Triggers([order_trigger(agent)], bus=bus, store=store, concurrency=32,
                      ack_wait=2.0, retry_delay=0.1)
    async with consuming(second):
        await until_completed(store, N)
    runs = await all_runs(store)
    assert len(runs) == N and {r.status for r in runs} == {"completed"}
    rows = effects.rows()
    assert len(rows) == N and sorted(o for _, o in rows) == sorted(f"o{i}" for i in range(N))
    # the runs cut off were resumed from their journals, the others started once
    assert second.stats.resumed == len(stopped)
    assert first.stats.started + len(stopped) + second.stats.started == N


async def test_bad_payloads_are_dead_lettered_acknowledged_and_start_no_run(
        store: SQLiteStore, tmp_path: Path) -> None:
    bus, effects = MemoryBus(), Effects(tmp_path / "effects.db")
    letters = await bus.subscribe("ops", types=[DEAD_LETTER_TYPE], start="all")
    bad = [Event(id="bad-1", type="order_processed", data={"order_id": "o1"}),  # no total
           Event(id="bad-2", type="order_processed", data={"order_id": 5, "total": "lots"}),
           Event(id="bad-3", type="order_processed", data={})]
    triggers = Triggers([order_trigger(make_agent(effects))], bus=bus, store=store,
                        start="all")
    await bus.publish([*bad, *orders(3)])
    async with consuming(triggers):
        await until(lambda: triggers.stats.started + triggers.stats.rejected >= 6)
    runs = await all_runs(store)
    assert sorted(r.metadata["event_id"] for r in runs) == ["evt-0", "evt-1", "evt-2"]
    got = await letters.fetch(10, wait=0.1)
    assert [d.event.data["event"]["id"] for d in got] == ["bad-1", "bad-2", "bad-3"]
    assert "bad-1" in got[0].event.data["reason"] and "total" in got[0].event.data["reason"]
    assert "order_id" in got[1].event.data["reason"]
    assert triggers.stats.rejected == 3 and len(effects.rows()) == 3
    # acknowledged: the group holds nothing back, so a new consumer of it gets nothing
    again = await bus.subscribe("keel-triggers", types=["order_processed"])
    assert await again.fetch(10, wait=0.6) == []


async def test_an_input_that_cannot_be_made_is_rejected_not_half_run(
        store: SQLiteStore, tmp_path: Path) -> None:
    bus, effects = MemoryBus(), Effects(tmp_path / "effects.db")
    agent = make_agent(effects)

    def broken(fired: Fired[OrderProcessed]) -> str:
        if fired.payload.total > 1:
            raise ValueError("no such customer")
        return "" if fired.payload.total == 1 else "x" * 200_000

    triggers = Triggers([order_trigger(agent, input=broken)], bus=bus, store=store,
                        start="all")
    await bus.publish(orders(3))
    async with consuming(triggers):
        await until(lambda: triggers.stats.rejected >= 3)
    assert await all_runs(store) == []
    reasons = "\n".join(triggers.stats.last_rejections)
    assert "no such customer" in reasons and "non-empty text" in reasons
    assert all(f"evt-{i}" in reasons for i in range(3))


async def test_the_run_records_the_event_and_its_tenant_and_user(
        store: SQLiteStore, tmp_path: Path) -> None:
    bus, effects = MemoryBus(), Effects(tmp_path / "effects.db")
    trigger = order_trigger(make_agent(effects), user=lambda fired: f"u-{fired.payload.order_id}")
    triggers = Triggers([trigger], bus=bus, store=store, start="all")
    await bus.publish([Event(id="e-1", type="order_processed", tenant="acme",
                             data={"order_id": "o1", "total": 3})])
    async with consuming(triggers):
        await until(lambda: triggers.stats.started >= 1)
    (run,) = await all_runs(store)
    assert run.run_id == trigger.run_id("e-1")
    assert run.metadata["event_id"] == "e-1" and run.metadata["event_type"] == "order_processed"
    assert run.metadata["trigger"] == trigger.name
    assert (run.tenant, run.user) == ("acme", "u-o1")
    assert '"order_id": "o1"' in run.input


async def test_a_run_live_in_another_worker_is_left_to_it_and_looked_at_again(
        store: SQLiteStore, tmp_path: Path) -> None:
    bus, effects = MemoryBus(), Effects(tmp_path / "effects.db")
    trigger = order_trigger(make_agent(effects))
    run_id = trigger.run_id("evt-0")
    now = time.time()
    await store.create_run(RunRecord(  # another host's worker is continuing it right now
        run_id=run_id, agent="followup", status="running", input="x", created_at=now,
        updated_at=now, lease_owner="elsewhere:1:abc", lease_expires_at=now + 600))
    triggers = Triggers([trigger], bus=bus, store=store, start="all", retry_delay=0.05)
    await bus.publish(orders(1))
    async with consuming(triggers):
        await until(lambda: triggers.stats.retried >= 2)
    (run,) = await all_runs(store)
    assert run.status == "running" and run.lease_owner == "elsewhere:1:abc"
    assert triggers.stats.started == 0 and effects.rows() == []
