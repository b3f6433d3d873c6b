"""The outbox's price: per-step cost with the outbox off (the default) and on, and how fast
the relay drains it.

**Per step.** A ``keel.Agent`` with every default on (a FunctionModel that calls a plain
``def`` tool once per turn) runs ``--steps`` tool steps on a store with the outbox off and
on: the in-memory store and an SQLite file. Configurations take turns within each round
(every other round in reverse order) and each figure is the best of ``--rounds`` rounds
(the machine is shared; the best round is the least disturbed one). A tool step writes
one ``tool.called`` event; the run writes ``run.started`` and ``run.completed``.

**The store alone.** ``append`` of one tool result (what the journal writes for each tool
step), outbox off against on, best of the rounds of ``--appends`` appends, on the memory
store, an SQLite file and (unless ``--no-postgres``) Postgres: the outbox's cost without
the noise of a whole step.

**Relay throughput.** ``--events`` events in an SQLite file's (and Postgres's, unless
``--no-postgres``) outbox, drained by ``keel.events.Relay`` (batches of 500) to a
``MemoryBus``: events per second, read + publish + mark.

    python -m bench.outbox [--steps 40] [--rounds 5] [--appends 2000] [--events 20000]
                           [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import keel
from keel import tool
from keel.core import Message, ModelSettings, ToolSpec
from keel.events import MemoryBus, Relay
from keel.store import JournalEntry, MemoryStore, PostgresStore, RunRecord, RunStore, SQLiteStore
from keel.testing import FunctionModel, call

PG_URL = os.environ.get("KEEL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@tool
def lookup(order: str) -> str:
    """Find an order."""
    return f"order {order} shipped"


@functools.lru_cache(maxsize=8)
def agent(steps: int) -> keel.Agent[Any]:
    """One agent per size (built once: its construction is not what is measured)."""
    def fn(messages: list[Message], tools: list[ToolSpec], settings: ModelSettings) -> Any:
        turn = sum(1 for m in messages if m.role == "assistant")
        return "done" if turn >= steps else call("lookup", {"order": f"A{turn}"})

    return keel.Agent("bench", model=FunctionModel(fn), tools=[lookup])


StoreMaker = Callable[[bool], RunStore]


def makers(directory: Path) -> dict[str, StoreMaker]:
    def sqlite(on: bool) -> RunStore:
        return SQLiteStore(directory / f"{uuid.uuid4().hex}.db", outbox=on)

    return {"memory": lambda on: MemoryStore(outbox=on), "sqlite": sqlite}


async def per_step(make: StoreMaker, on: bool, steps: int) -> float:
    async with make(on) as store:
        t0 = time.perf_counter()
        result = await agent(steps).run("go", store=store)
        elapsed = time.perf_counter() - t0
        assert result.output == "done"
        if on:  # the events really were written: started, one per step, completed
            assert len(await store.read_outbox(0, 10_000)) == steps + 2
    return elapsed / steps


async def steps_table(directory: Path, steps: int, rounds: int) -> dict[str, float]:
    configs = {f"{name}, outbox {'on' if on else 'off'}": (make, on)
               for name, make in makers(directory).items() for on in (False, True)}
    for make, on in configs.values():  # warm up
        await per_step(make, on, steps)
    best = dict.fromkeys(configs, float("inf"))
    for r in range(rounds):  # every other round in reverse order: no config always first
        for label in (list(configs) if r % 2 == 0 else list(reversed(configs))):
            make, on = configs[label]
            best[label] = min(best[label], await per_step(make, on, steps))
    return best


def tool_entry(seq: int) -> JournalEntry:
    return JournalEntry(seq=seq, key=f"bench/turn:{seq}/tool:lookup#0", phase="result",
                        kind="tool", name="lookup", input_hash="h", data={"output": "x"},
                        created_at=time.time())


def new_run(run_id: str) -> RunRecord:
    now = time.time()
    return RunRecord(run_id=run_id, agent="bench", status="running", input="go",
                     created_at=now, updated_at=now, tenant="acme")


async def appends(make: StoreMaker, on: bool, n: int) -> float:
    async with make(on) as store:
        await store.create_run(new_run("r"))
        t0 = time.perf_counter()
        for i in range(n):
            await store.append("r", [tool_entry(i)])
        return (time.perf_counter() - t0) / n


async def appends_table(directory: Path, n: int, rounds: int, *,
                        postgres: bool = False) -> dict[str, float]:
    schemas: list[str] = []

    def pg(on: bool) -> RunStore:
        schemas.append(f"keel_bench_outbox_{uuid.uuid4().hex[:10]}")
        return PostgresStore(PG_URL, schema=schemas[-1], outbox=on)

    chosen = {**makers(directory), **({"postgres": pg} if postgres else {})}
    configs = {f"{name}, outbox {'on' if on else 'off'}": (make, on)
               for name, make in chosen.items() for on in (False, True)}
    best = dict.fromkeys(configs, float("inf"))
    try:
        for r in range(rounds):
            for label in (list(configs) if r % 2 == 0 else list(reversed(configs))):
                make, on = configs[label]
                best[label] = min(best[label], await appends(make, on, n))
    finally:
        if schemas:
            _drop(schemas)
    return best


def _drop(schemas: list[str]) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
        for schema in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def fill(store: RunStore, events: int) -> None:
    """``events`` tool.called events (runs of 100 tool results, appended in batches)."""
    run = 0
    while events > 0:
        run_id = f"run-{run:06d}"
        await store.create_run(new_run(run_id))
        count = min(99, events - 1)
        for start in range(0, count, 20):
            await store.append(run_id, [tool_entry(i) for i in
                                        range(start, min(count, start + 20))])
        events -= count + 1
        run += 1


async def throughput(store: RunStore, events: int) -> float:
    await fill(store, events)
    bus = MemoryBus()
    relay = Relay(store, bus, batch=500)
    t0 = time.perf_counter()
    while await relay.run_once():
        pass
    elapsed = time.perf_counter() - t0
    assert len(bus.events) >= events, (len(bus.events), events)
    return len(bus.events) / elapsed


@asynccontextmanager
async def postgres_store() -> AsyncIterator[RunStore]:
    schema = f"keel_bench_outbox_{uuid.uuid4().hex[:10]}"
    try:
        async with PostgresStore(PG_URL, schema=schema, outbox=True) as store:
            yield store
    finally:
        _drop([schema])


async def relay_table(directory: Path, events: int, postgres: bool) -> dict[str, float]:
    out: dict[str, float] = {}
    async with SQLiteStore(directory / "relay.db", outbox=True) as sqlite:
        out["SQLite file -> MemoryBus"] = await throughput(sqlite, events)
    if postgres:
        async with postgres_store() as pg:
            out["Postgres -> MemoryBus"] = await throughput(pg, events)
    return out


def _pairs(best: dict[str, float], what: str) -> None:
    for backend in ("memory", "sqlite", "postgres"):
        if f"{backend}, outbox off" not in best:
            continue
        off, on = best[f"{backend}, outbox off"], best[f"{backend}, outbox on"]
        print(f"  {backend:<7} off {off * 1e6:9.1f} us   on {on * 1e6:9.1f} us   "
              f"overhead {(on - off) * 1e6:+8.1f} us {what}   ratio on/off {on / off:5.2f}")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        print(f"per tool step (agent, every default on; best of {args.rounds} rounds of "
              f"{args.steps} steps)")
        _pairs(await steps_table(directory, args.steps, args.rounds), "per step")
        print(f"store.append of one tool result (best of {args.rounds} rounds of "
              f"{args.appends})")
        _pairs(await appends_table(directory, args.appends, args.rounds,
                                   postgres=not args.no_postgres), "per append")
        print(f"relay throughput ({args.events} events, batches of 500)")
        for label, rate in (await relay_table(directory, args.events,
                                              not args.no_postgres)).items():
            print(f"  {label:<26} {rate:10,.0f} events/s")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.outbox")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--no-postgres", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
