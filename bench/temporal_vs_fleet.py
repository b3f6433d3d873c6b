"""keel on Temporal against keel's own Postgres fleet and plain in-process runs.

The workload: ``--runs`` concurrent runs (default 64) of an agent whose model answers at
once (a FunctionModel: ``--tools`` turns each calling the ``lookup`` tool, then the answer),
so what is measured is the engine, not a model. A *step* is a model request or a tool call:
``2 * tools + 1`` per run. Three engines, in this process, on one keel store on Postgres (a
fresh schema each, dropped afterwards):

* **in-process**: ``agent.run`` for every run, ``asyncio.gather``-ed (the baseline);
* **fleet**: the runs' records are queued (status ``running``, no lease, as ``keel serve``'s
  workers mode does) and a ``keel.runtime.Worker`` with ``concurrency = runs`` claims and
  continues them (``claim_runs``, leases, the journal);
* **stepwise**: each run driven as keel.temporal drives it, one new step per execution
  (``execute(..., Launch(step_allowance=1))`` in a loop, replaying the journal each time),
  without Temporal: what the step-at-a-time seam costs by itself;
* **temporal**: a ``keel.temporal.TemporalWorker`` (``max_concurrent_activities = runs``)
  serves the runs started with ``start_run``; each step is one ``keel.advance`` activity of
  the ``keel.run`` workflow, on the Temporal dev server.

Figures: the wall time of the batch and steps per second, and the time of one run of
``--long`` tool steps alone (per-step latency: what one step costs end to end). Ratios are
against in-process. Every run must complete with the expected answer; exit status 1 if not.

    python -m bench.temporal_vs_fleet [--runs 64] [--tools 3] [--long 20] [--rounds 2]
        [--temporal-address HOST:PORT] [--json]

With no ``--temporal-address`` it uses 127.0.0.1:7233 if a server answers there, else it
starts ``temporal server start-dev`` (in memory) on a free port and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from keel import Agent, Budget, tool
from keel.core import Message, ModelSettings, ToolSpec
from keel.runtime import Launch, Paused, Worker, execute
from keel.store import RunRecord, RunStore, open_store
from keel.testing import FunctionModel, call

ENGINES = ("in-process", "fleet", "stepwise", "temporal")
PG_URL = os.environ.get("KEEL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
ANSWER = "done"


# ------------------------------------------------------------------------------ workload


@tool(risk="read")
def lookup(n: int) -> int:
    """Look a number up."""
    return n * 2


def make_agent(tools: int) -> Agent[Any]:
    def answer(messages: list[Message], specs: list[ToolSpec], settings: ModelSettings) -> Any:
        turn = sum(1 for m in messages if m.role == "assistant")
        return call("lookup", {"n": turn}) if turn < tools else ANSWER

    return Agent(f"bench{tools}", model=FunctionModel(answer), tools=[lookup],
                 budget=Budget(max_steps=4 * tools + 10))


# ------------------------------------------------------------------------------ services


def _answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1):
        return True
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def temporal_server(address: str | None) -> Iterator[str]:
    """``address``, or 127.0.0.1:7233 if it answers, or a dev server of our own."""
    if address is not None:
        yield address
        return
    if _answers("127.0.0.1:7233"):
        yield "127.0.0.1:7233"
        return
    port = _free_port()
    proc = subprocess.Popen(["temporal", "server", "start-dev", "--ip", "127.0.0.1", "--port",
                             str(port), "--ui-port", str(_free_port()), "--headless",
                             "--log-level", "error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"127.0.0.1:{port}"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the Temporal dev server did not start")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.asynccontextmanager
async def fresh_store() -> AsyncIterator[tuple[str, RunStore]]:
    """An empty keel store in a new Postgres schema (dropped afterwards)."""
    import psycopg

    schema = f"keel_bench_tf_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    sep = "&" if "?" in PG_URL else "?"
    url = f"{PG_URL}{sep}schema={schema}"
    store = open_store(url)
    try:
        yield url, store
    finally:
        await store.close()
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -------------------------------------------------------------------------------- engines

Engine = Callable[[Agent[Any], list[str]], Awaitable[list[Any]]]


async def in_process(agent: Agent[Any], run_ids: list[str], store: RunStore) -> list[Any]:
    results = await asyncio.gather(*(agent.run("go", store=store, run_id=r) for r in run_ids))
    return [r.output for r in results]


async def fleet(agent: Agent[Any], run_ids: list[str], store: RunStore) -> list[Any]:
    now = time.time()
    for run_id in run_ids:
        await store.create_run(RunRecord(run_id=run_id, agent=agent.name, status="running",
                                         input="go", created_at=now, updated_at=now,
                                         metadata=agent.run_metadata()))
    worker = Worker([agent], store=store, concurrency=len(run_ids), poll_seconds=0.05)
    await worker.run_until_idle()
    return [(await store.get_run(r)).output for r in run_ids]


async def stepwise(agent: Agent[Any], run_ids: list[str], store: RunStore) -> list[Any]:
    async def one(run_id: str) -> Any:
        launch = Launch(input="go", run_id=run_id, step_allowance=1)
        while True:
            try:
                return (await execute(agent, store, launch)).output
            except Paused:
                launch = Launch(resume_id=run_id, step_allowance=1)

    return list(await asyncio.gather(*(one(r) for r in run_ids)))


async def on_temporal(agent: Agent[Any], run_ids: list[str], client: Any, url: str,
                      queue: str) -> list[Any]:
    from keel.temporal import TemporalWorker, run_result, start_run

    async with TemporalWorker(client, [agent], store=url, task_queue=queue,
                              max_concurrent_activities=max(len(run_ids), 4)):
        for run_id in run_ids:
            await start_run(client, agent.name, "go", task_queue=queue, run_id=run_id)
        results = await asyncio.gather(*(run_result(client, r) for r in run_ids))
    return [r.output for r in results]


async def measure(name: str, runs: int, tools: int, go: Callable[..., Awaitable[list[Any]]],
                  *args: Any) -> float:
    """Seconds for ``runs`` concurrent runs of ``tools`` tool steps; checks every answer."""
    agent = make_agent(tools)
    run_ids = [f"{name}-{uuid.uuid4().hex[:10]}" for _ in range(runs)]
    start = time.perf_counter()
    outputs = await go(agent, run_ids, *args)
    elapsed = time.perf_counter() - start
    bad = [o for o in outputs if o != ANSWER]
    if bad:
        raise SystemExit(f"{name}: {len(bad)} of {runs} runs did not complete: {bad[:3]}")
    return elapsed


async def bench_engine(name: str, args: argparse.Namespace, client: Any) -> dict[str, Any]:
    batch, single = [], []
    for _ in range(args.rounds):
        async with fresh_store() as (url, store):
            queue = f"bench-{uuid.uuid4().hex[:8]}"
            extra: tuple[Any, ...] = ((client, url, queue) if name == "temporal" else (store,))
            go = {"in-process": in_process, "fleet": fleet, "stepwise": stepwise,
                  "temporal": on_temporal}[name]
            batch.append(await measure(name, args.runs, args.tools, go, *extra))
            single.append(await measure(name, 1, args.long, go, *extra))
    steps = args.runs * (2 * args.tools + 1)
    wall, one = min(batch), min(single)
    return {"wall_s": wall, "steps_per_s": steps / wall,
            "step_ms": 1000 * one / (2 * args.long + 1), "steps": steps}


# ---------------------------------------------------------------------------------- report


def table(figures: dict[str, dict[str, Any]]) -> str:
    base = figures["in-process"]
    lines = [f"{'engine':<12}{'wall s':>10}{'steps/s':>12}{'x slower':>9}"
             f"{'ms/step (1 run)':>17}{'x slower':>9}"]
    for name, f in figures.items():
        lines.append(f"{name:<12}{f['wall_s']:>10.3f}{f['steps_per_s']:>12.0f}"
                     f"{base['steps_per_s'] / f['steps_per_s']:>8.1f}x"
                     f"{f['step_ms']:>17.2f}{f['step_ms'] / base['step_ms']:>8.1f}x")
    return "\n".join(lines)


async def run_all(args: argparse.Namespace, address: str) -> dict[str, Any]:
    from keel.temporal import connect

    client = await connect(address)
    figures = {name: await bench_engine(name, args, client)
               for name in ENGINES}
    return {"runs": args.runs, "tools": args.tools, "long": args.long, "rounds": args.rounds,
            "temporal": address, "python": platform.python_version(),
            "cpus": os.cpu_count(), "engines": figures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=64)
    parser.add_argument("--tools", type=int, default=3)
    parser.add_argument("--long", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--temporal-address")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(), temporal_server(args.temporal_address) as address:
        report = asyncio.run(run_all(args, address))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.runs} concurrent runs of {args.tools} tool steps "
              f"({2 * args.tools + 1} steps each), zero-latency model, keel store on Postgres;"
              f" one run of {args.long} tool steps for ms/step; best of {args.rounds}")
        print(table(report["engines"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
