"""Durable runs: what the journal costs per step on SQLite and Postgres in each durability mode,
and how long a 1,000-step run takes to resume from its journal and to replay.

    python -m bench.bench_durable                      # the full sizes, tables on stdout
    python -m bench.bench_durable --quick              # tiny sizes (a smoke run)
    python -m bench.bench_durable --update-doc docs/benchmarks.md

The workload is bench_keel's step run: a zero-latency model
(:class:`~bench.bench_keel.BenchModel`) answers N times with one call of the read-only
``lookup`` tool, then with the final text. A *step* is one model turn plus one tool call.

* **Journal write cost**: for each concurrency c, store and durability mode, c runs of N steps
  start at once (``asyncio.gather``) on one agent and one store; µs per step = batch wall time
  / (c × N), steps per second its inverse. The memory store is the baseline, measured
  interleaved with the others in the same process. Each run's own time / N is its step
  latency as that run sees it.
* **Resume**: a run holding the journal of a completed 1,000-step run minus its final model
  turn, ``running`` with no lease (as a worker that died just before that turn leaves it);
  ``agent.resume(run_id)`` is timed until the run completes: lease, journal read, 1,000
  steps replayed, one live model turn, the final write.
* **Replay**: ``keel.replay_run`` of a completed 1,000-step run.

Postgres: ``KEEL_BENCH_POSTGRES_URL`` (default ``postgresql://127.0.0.1:5432/test``); the bench
works in a fresh schema ``keel_bench_<random>`` and drops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import keel
from bench.bench_keel import BenchModel
from bench.common import FINAL_TEXT, check, lookup
from bench.timing import settle
from keel.core import new_run_id

STORES = ("memory", "sqlite", "postgres")
MODES = ("always", "balanced", "batched")
BATCH_SIZE = 20
DEFAULT_POSTGRES_URL = "postgresql://127.0.0.1:5432/test"


@dataclass
class DurableConfig:
    """Sizes of the durable-runs bench (the defaults are the published figures)."""

    steps: int = 100  #: steps per run in the write-cost batches
    concurrency: tuple[int, ...] = (1, 8, 64)
    stores: tuple[str, ...] = STORES
    modes: tuple[str, ...] = MODES
    rounds: int = 5  #: timed batches per cell (median taken), interleaved across cells
    min_batch_s: float = 0.2  #: a batch repeats its c runs until it lasts this long
    long_steps: int = 1000  #: steps of the run that is resumed and replayed
    repeats: int = 5  #: timed resumes and replays per store (median taken)
    settle_gc: bool = True  #: a full collection before each timed batch (off: --quick)
    postgres_url: str = field(
        default_factory=lambda: os.environ.get("KEEL_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL))


def durable_config(quick: bool) -> DurableConfig:
    if quick:
        return DurableConfig(steps=3, concurrency=(1, 8), rounds=2, min_batch_s=0.0,
                             long_steps=20, repeats=2, settle_gc=False)
    return DurableConfig()


def durability(mode: str) -> keel.Durability:
    return keel.Durability(mode, batch_size=BATCH_SIZE)  # type: ignore[arg-type]


def make_agent(steps: int, mode: str = "balanced") -> keel.Agent[str]:
    """bench_keel's agent for a ``steps``-step run, in durability ``mode``."""
    model = BenchModel([[("lookup", {"i": k})] for k in range(steps)] + [FINAL_TEXT])
    agent: keel.Agent[str] = keel.Agent("bench", model=model, tools=[keel.tool(lookup)],
                                        budget=keel.Budget.unlimited(),
                                        durability=durability(mode))
    return agent


# --------------------------------------------------------------------------------- stores


def _with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def _drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@asynccontextmanager
async def open_stores(cfg: DurableConfig, skipped: dict[str, str]
                      ) -> AsyncIterator[dict[str, keel.RunStore | None]]:
    """One open store per kind: ``memory`` is ``None`` (a fresh ``MemoryStore`` per batch),
    SQLite a file in a temporary directory, Postgres a fresh schema dropped afterwards. A
    store that cannot be opened is left out, with the reason in ``skipped``."""
    stores: dict[str, keel.RunStore | None] = {}
    async with AsyncExitStack() as stack:
        if "memory" in cfg.stores:
            stores["memory"] = None
        if "sqlite" in cfg.stores:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="keel-bench-"))
            sqlite = keel.open_store("sqlite:///" + os.path.join(tmp, "runs.db"))
            stores["sqlite"] = await stack.enter_async_context(sqlite)
        if "postgres" in cfg.stores:
            schema = f"keel_bench_{uuid.uuid4().hex[:10]}"
            pg = keel.open_store(_with_schema(cfg.postgres_url, schema))
            try:
                await pg.__aenter__()
            except (keel.StoreError, keel.UserError) as exc:
                skipped["postgres"] = str(exc)
                await pg.close()
            else:
                stores["postgres"] = pg
                stack.callback(_drop_schema, cfg.postgres_url, schema)
                stack.push_async_callback(pg.close)
        yield stores


def _store(stores: dict[str, keel.RunStore | None], kind: str) -> keel.RunStore:
    store = stores[kind]
    return keel.MemoryStore() if store is None else store


# -------------------------------------------------------------------------- write cost


@dataclass
class _Cell:
    """One (store, mode, concurrency) cell: its agent and the samples of its batches."""

    store: str
    mode: str
    agent: keel.Agent[str]
    times: int = 1  #: how often a batch repeats its c concurrent runs
    walls: list[float] = field(default_factory=list)  #: s per step, aggregate
    cpus: list[float] = field(default_factory=list)  #: process CPU s per step
    run_means: list[float] = field(default_factory=list)  #: mean over runs of s per step
    run_maxes: list[float] = field(default_factory=list)  #: slowest run's s per step

    def figures(self, steps: int, concurrency: int) -> dict[str, float]:
        wall = statistics.median(self.walls)
        return {"us_per_step": wall * 1e6, "steps_per_s": 1.0 / wall,
                "cpu_us_per_step": statistics.median(self.cpus) * 1e6,
                "run_ms_per_step": statistics.median(self.run_means) * 1e3,
                "run_ms_per_step_max": statistics.median(self.run_maxes) * 1e3,
                "samples": len(self.walls), "steps": steps, "runs": concurrency}


async def _batch(cell: _Cell, store: keel.RunStore, c: int, steps: int, times: int,
                 settle_gc: bool = True) -> tuple[float, float, list[float]]:
    """``times`` rounds of ``c`` concurrent runs: (wall s, CPU s, each run's seconds)."""
    lat: list[float] = []

    async def one() -> None:
        t0 = time.perf_counter()
        result = await cell.agent.run("go", store=store)
        lat.append(time.perf_counter() - t0)
        check(result.output == FINAL_TEXT and result.steps == 2 * steps + 1,
              f"durable {cell.store}/{cell.mode}: {result.output!r}, {result.steps}")

    settle(settle_gc)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(times):
        await asyncio.gather(*(one() for _ in range(c)))
    return time.perf_counter() - start, time.process_time() - cpu, lat


async def write_cost(cfg: DurableConfig, stores: dict[str, keel.RunStore | None],
                     progress: Callable[[str], None] = print
                     ) -> dict[str, dict[str, dict[int, dict[str, float]]]]:
    """{store: {mode: {concurrency: figures}}}; cells of one concurrency are interleaved."""
    out: dict[str, dict[str, dict[int, dict[str, float]]]] = {
        s: {m: {} for m in cfg.modes} for s in stores}
    n = cfg.steps
    for c in cfg.concurrency:
        started = time.perf_counter()
        cells = [_Cell(s, m, make_agent(n, m)) for s in stores for m in cfg.modes]
        for cell in cells:  # untimed: warm-up, and it decides the batch size
            wall, _, _ = await _batch(cell, _store(stores, cell.store), c, n, 1,
                                      cfg.settle_gc)
            cell.times = max(1, math.ceil(cfg.min_batch_s / max(wall, 1e-9)))
        for _ in range(cfg.rounds):
            for cell in cells:
                wall, cpu, lat = await _batch(cell, _store(stores, cell.store), c, n,
                                              cell.times, cfg.settle_gc)
                total = c * n * cell.times
                cell.walls.append(wall / total)
                cell.cpus.append(cpu / total)
                cell.run_means.append(statistics.fmean(lat) / n)
                cell.run_maxes.append(max(lat) / n)
        for cell in cells:
            out[cell.store][cell.mode][c] = cell.figures(n, c)
        progress(f"[durable] {c} concurrent run(s) of {n} steps: "
                 f"{time.perf_counter() - started:.1f} s")
    return out


# ------------------------------------------------------------------------ resume, replay


async def _dead_worker_run(store: keel.RunStore, done: keel.store.RunRecord,
                           entries: Sequence[keel.store.JournalEntry]) -> str:
    """A new run holding the journal of the completed run ``done`` minus its final model
    turn, left as a worker that died just before that turn leaves it: ``running``, no
    lease."""
    run_id = new_run_id()
    now = time.time()
    await store.create_run(done.with_status(
        "running", run_id=run_id, output=None, error=None, created_at=now, updated_at=now,
        lease_owner=None, lease_expires_at=None))
    await store.append(run_id, entries[:-1])
    return run_id


async def resume_time(store: keel.RunStore, steps: int, repeats: int,
                      settle_gc: bool = True) -> dict[str, float]:
    """Median seconds of ``agent.resume`` of a ``steps``-step run whose worker died before
    the final answer turn (one untimed first), and of reading its journal alone."""
    agent = make_agent(steps)
    done = await agent.run("go", store=store)
    record = await store.get_run(done.run_id)
    entries = await store.read_journal(done.run_id)
    check(entries[-1].kind == "model" and len(entries) == 2 * steps + 1,
          f"resume: the recorded journal ends with {entries[-1].key} ({len(entries)} entries)")
    walls: list[float] = []
    cpus: list[float] = []
    reads: list[float] = []
    for k in range(repeats + 1):
        run_id = await _dead_worker_run(store, record, entries)
        settle(settle_gc)
        t0 = time.perf_counter()
        read = len(await store.read_journal(run_id))
        reads.append(time.perf_counter() - t0)
        t0, c0 = time.perf_counter(), time.process_time()
        result = await agent.resume(run_id, store=store)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        check(result.output == FINAL_TEXT and result.replayed_steps == 2 * steps
              and read == 2 * steps, f"resume: {result.output!r}, replayed "
              f"{result.replayed_steps} of {read} entries")
        if k:
            walls.append(wall)
            cpus.append(cpu)
    return {"seconds": statistics.median(walls), "cpu_seconds": statistics.median(cpus),
            "read_journal_s": statistics.median(reads[1:]), "entries": 2 * steps,
            "samples": len(walls), "steps": steps}


async def replay_time(store: keel.RunStore, steps: int, repeats: int,
                      settle_gc: bool = True) -> dict[str, float]:
    """Median seconds of ``keel.replay_run`` of a completed ``steps``-step run."""
    agent = make_agent(steps)
    result = await agent.run("go", store=store)
    walls: list[float] = []
    cpus: list[float] = []
    for k in range(repeats + 1):
        settle(settle_gc)
        t0, c0 = time.perf_counter(), time.process_time()
        report = await keel.replay_run(agent, result.run_id, store=store)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        check(report.identical and report.steps_replayed >= 2 * steps,
              f"replay: {report.reason}")
        if k:
            walls.append(wall)
            cpus.append(cpu)
    return {"seconds": statistics.median(walls), "cpu_seconds": statistics.median(cpus),
            "samples": len(walls), "steps": steps}


# ---------------------------------------------------------------------------------- all


async def measure_durable(cfg: DurableConfig, progress: Callable[[str], None] = print
                          ) -> dict[str, Any]:
    """Every durable figure: ``write`` ({store: {mode: {c: figures}}}), ``resume`` and
    ``replay`` ({store: figures}), ``skipped`` (stores that could not be opened) and
    ``errors``."""
    import gc

    out: dict[str, Any] = {"config": dataclasses.asdict(cfg), "skipped": {}, "errors": {},
                           "write": {}, "resume": {}, "replay": {}}
    out["config"].pop("postgres_url")
    try:
        async with open_stores(cfg, out["skipped"]) as stores:
            try:
                out["write"] = await write_cost(cfg, stores, progress)
            except Exception as exc:  # report it, go on with resume and replay
                out["errors"]["write"] = f"{type(exc).__name__}: {exc}"
            for kind in stores:
                for what, fn in (("resume", resume_time), ("replay", replay_time)):
                    started = time.perf_counter()
                    try:
                        out[what][kind] = await fn(_store(stores, kind), cfg.long_steps,
                                                   cfg.repeats, cfg.settle_gc)
                    except Exception as exc:
                        out["errors"][f"{what} {kind}"] = f"{type(exc).__name__}: {exc}"
                        continue
                    progress(f"[durable] {what} of a {cfg.long_steps}-step run on {kind}: "
                             f"{time.perf_counter() - started:.1f} s")
    finally:
        gc.unfreeze()
    return out


def update_doc(path: str, section: str, *, markers: tuple[str, str] | None = None) -> None:
    """Replace a section of the doc at ``path`` (between its markers: the durable section's
    unless ``markers`` says otherwise), or insert it before ``## Caveats`` (at the end if
    there is none)."""
    from bench.report_durable import END, START

    start, end = markers or (START, END)
    with open(path) as f:
        text = f.read()
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section.strip("\n") + rest.split(end, 1)[1]
    elif "\n## Caveats" in text:
        head, tail = text.split("\n## Caveats", 1)
        text = head + "\n" + section + "\n## Caveats" + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_durable",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--json", metavar="PATH", help="save the raw results as JSON")
    parser.add_argument("--update-doc", metavar="PATH",
                        help="write the durable section into this markdown file")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from bench.report_durable import durable_section, durable_text
    from bench.run_all import meta

    started = time.perf_counter()
    info = meta()
    results = asyncio.run(measure_durable(durable_config(args.quick)))
    info["load_end"] = os.getloadavg()
    info["total_s"] = time.perf_counter() - started
    results["meta"], results["quick"] = info, args.quick
    print(durable_text(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    if args.update_doc:
        update_doc(args.update_doc, durable_section(results, standalone=True))
        print(f"updated {args.update_doc}")
    return results


if __name__ == "__main__":
    main()
