"""Triggers' price: events turned into runs per second, against calling ``agent.run``
directly.

A ``keel.Agent`` with every default on (a FunctionModel that calls a plain ``def`` tool once,
then answers) runs once per event on an SQLite file store. **Triggers**: ``--events``
events are published to a ``MemoryBus`` and consumed by ``keel.events.Triggers`` at
concurrency 1, 16 and 64 (each event: validation against a pydantic payload, the de-dup
look-up of its run id, the run, the ack). **Direct**: the same number of
``agent.run(...)`` calls, at most ``concurrency`` at a time (a semaphore), no bus. The ratio
direct/triggers is the triggers' overhead. Configurations take turns within each round; each
figure is the best of ``--rounds`` (the machine is shared).

    python -m bench.triggers [--events 400] [--rounds 3] [--concurrency 1 16 64]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import keel
from keel import tool
from keel.core import Message, ModelSettings, ToolSpec
from keel.events import Event, MemoryBus, Trigger, Triggers
from keel.store import SQLiteStore
from keel.testing import FunctionModel, call


class Signup(BaseModel):
    user: str


@tool(risk="read")
def lookup(user: str) -> str:
    """Find a user."""
    return f"user {user} found"


@functools.lru_cache(maxsize=1)
def agent() -> keel.Agent[Any]:
    """Built once: its construction is not what is measured."""
    def fn(messages: list[Message], tools: list[ToolSpec], settings: ModelSettings) -> Any:
        if any(m.role == "tool" for m in messages):
            return "done"
        return call("lookup", {"user": "u"})

    return keel.Agent("bench", model=FunctionModel(fn), tools=[lookup])


def events(n: int) -> list[Event]:
    tag = uuid.uuid4().hex[:8]
    return [Event(id=f"{tag}-{i}", type="user_signed_up", data={"user": f"u{i}"})
            for i in range(n)]


async def via_triggers(directory: Path, n: int, concurrency: int) -> float:
    """Runs per second through a bus and Triggers."""
    async with SQLiteStore(directory / f"{uuid.uuid4().hex}.db") as store:
        bus = MemoryBus()
        triggers = Triggers([Trigger("user_signed_up", agent=agent(), payload=Signup)],
                            bus=bus, store=store, concurrency=concurrency, start="all")
        await bus.publish(events(n))
        stop = asyncio.Event()
        t0 = time.perf_counter()
        task = asyncio.create_task(triggers.run(stop))
        while triggers.stats.started < n:
            if task.done():
                task.result()
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - t0
        stop.set()
        await task
        assert len(await store.list_runs(keel.store.RunFilter(limit=n + 1))) == n
    return n / elapsed


async def direct(directory: Path, n: int, concurrency: int) -> float:
    """Runs per second calling ``agent.run`` directly, ``concurrency`` at a time."""
    async with SQLiteStore(directory / f"{uuid.uuid4().hex}.db") as store:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                await agent().run(f"user u{i} signed up", store=store)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - t0)


async def table(directory: Path, n: int, rounds: int,
                levels: list[int]) -> dict[int, tuple[float, float]]:
    """``{concurrency: (direct runs/s, triggers runs/s)}``, best of ``rounds``."""
    best = dict.fromkeys(levels, (0.0, 0.0))
    for r in range(rounds):
        for c in levels:
            d_best, t_best = best[c]
            if r % 2:  # alternate which goes first
                t = await via_triggers(directory, n, c)
                d = await direct(directory, n, c)
            else:
                d = await direct(directory, n, c)
                t = await via_triggers(directory, n, c)
            best[c] = (max(d_best, d), max(t_best, t))
    return best


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print(f"events -> runs per second (SQLite file store, {args.events} runs, best of "
              f"{args.rounds} rounds)")
        for c, (d, t) in (await table(Path(tmp), args.events, args.rounds,
                                      args.concurrency)).items():
            print(f"  concurrency {c:>3}   direct agent.run {d:8,.0f} runs/s   triggers "
                  f"{t:8,.0f} runs/s   ratio direct/triggers {d / t:5.2f}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.triggers")
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
