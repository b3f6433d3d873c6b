"""Triggers across processes on Redis and NATS: a consumer SIGKILLed mid-burst leaves runs running
with a dead lease; a consumer started afterwards resumes them from their journals and starts
the rest, every run completing once and every effect applied once. Two consumers of one
group share a burst without a run starting twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from keel.events import RedisBus, Triggers
from keel.store import SQLiteStore
from tests.events._services import REDIS_URL, drop_nats_stream, drop_redis_stream, unique
from tests.events.test_triggers import all_runs, consuming, count_completed, until_completed
from tests.events.trigger_child import bus_for
from tests.events.triggerkit import Effects, make_agent, order_trigger, orders

ROOT = Path(__file__).resolve().parents[2]
N = 1_000


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_a_consumer_sigkilled_mid_burst_and_replaced_completes_every_run_once(
        tmp_path: Path, kind: str) -> None:
    name = unique()
    store_path, effects_path = tmp_path / "runs.db", tmp_path / "effects.db"
    effects = Effects(effects_path)
    store = SQLiteStore(str(store_path))
    bus = bus_for(kind, name)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    child = subprocess.Popen(  # noqa: ASYNC220 - killed below, not waited on for long
        [sys.executable, "-m", "tests.events.trigger_child", kind, name, str(store_path),
         str(effects_path)], cwd=ROOT, env=env)
    try:
        await bus.publish(orders(N))
        async with asyncio.timeout(120):
            while await count_completed(store) < N // 3:  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        cut = [r for r in await all_runs(store) if r.status == "running"]
        assert cut, "the kill left no run mid-way"
        assert {r.lease_owner for r in cut} != {None}  # still leased by the dead process
        triggers = Triggers([order_trigger(make_agent(effects))], bus=bus, store=store,
                            concurrency=32, ack_wait=1.0, retry_delay=0.2)
        async with consuming(triggers):
            await until_completed(store, N)
        runs = await all_runs(store)
        assert len(runs) == N and {r.status for r in runs} == {"completed"}
        rows = effects.rows()
        assert len(rows) == N and len({order for _, order in rows}) == N
        assert triggers.stats.resumed >= len(cut)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        await bus.close()
        await store.close()
        await (drop_nats_stream(f"KEEL_T_{name}") if kind == "nats"
               else drop_redis_stream(f"keel:test:{name}"))


async def test_two_consumers_of_one_group_share_a_burst_each_run_once(
        tmp_path: Path) -> None:
    stream = f"keel:test:two:{unique()}"
    effects = Effects(tmp_path / "effects.db")
    store = SQLiteStore(str(tmp_path / "runs.db"))
    buses = [RedisBus(REDIS_URL, stream=stream, maxlen=None)
             for _ in range(2)]
    try:
        pair = [Triggers([order_trigger(make_agent(effects, pause=0.001))], bus=bus,
                         store=store, concurrency=8, start="all") for bus in buses]
        await buses[0].publish(orders(300))
        await buses[1].publish(orders(300))  # a second publisher repeats every event
        async with consuming(pair[0]), consuming(pair[1]):
            await until_completed(store, 300)
        assert len(await all_runs(store)) == 300 and len(effects.rows()) == 300
        assert pair[0].stats.started + pair[1].stats.started == 300
        assert pair[0].stats.started > 0 and pair[1].stats.started > 0
    finally:
        for bus in buses:
            await bus.close()
        await store.close()
        await drop_redis_stream(stream)
