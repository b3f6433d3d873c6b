"""Triggers on the memory bus and a real SQLite store: a burst starts each run exactly once,
within the concurrency limit; duplicates, a crashed consumer and bad payloads are handled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keel.events import MemoryBus, Triggers
from keel.store import RunFilter, RunRecord, RunStore, SQLiteStore
from tests.events.triggerkit import Effects, Gauge, make_agent, order_trigger, orders

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
        tmp_path: Path, store: SQLiteStore) -> None:
    bus, effects, gauge = MemoryBus(), Effects(tmp_path / "effects.db"), Gauge()
    triggers = Triggers([order_trigger(make_agent(effects, gauge, pause=0.001))], bus=bus,
                        store=store, concurrency=16, start="all")
    async with consuming(triggers):
        await bus.publish(orders(N))
        await bus.publish(orders(N))  # every event again: a re-publish after a relay crash
        await until(lambda: triggers.stats.started + triggers.stats.duplicates >= 2 * N)
    runs = await all_runs(store)
    assert len(runs) == N and {r.status for r in runs} == {"completed"}
    assert sorted(r.metadata["event_id"] for r in runs) == sorted(e.id for e in orders(N))
    rows = effects.rows()
    assert len(rows) == N and len({order for _, order in rows}) == N
    assert effects.calls == N  # no tool ran twice
    assert triggers.stats.started == N and triggers.stats.duplicates == N
    assert 1 < gauge.high <= 16 and triggers.stats.high_water <= 16


async def all_runs(store: RunStore) -> list[RunRecord]:
    out: list[RunRecord] = []
    offset = 0
    while True:
        page = await store.list_runs(RunFilter(limit=500, offset=offset))
        out.extend(page)
        if len(page) < 500:
            return out
        offset += 500
