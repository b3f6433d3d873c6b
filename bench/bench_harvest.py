"""Harvesting datasets and recording feedback on a SQLite store, against baselines measured in
the same process on the same store:

* **list**: paging ``list_runs`` over every run (what any harvest must read at least);
* **harvest**: ``keel.evals.harvest`` of every run, personal data masked (the default);
* **harvest, no redact**: the same with ``redact=False`` (what masking costs);
* **harvest, negative**: only runs with negative feedback;
* **get_run** against **record_feedback**: one feedback record against reading one run.

A share of the runs carry feedback, an escalation task and a conversation, and inputs hold an
email address, so every path of a case is taken. Figures are medians of the rounds.

    python -m bench.bench_harvest [--runs 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import keel
from keel.evals import HarvestFilter, harvest
from keel.store import Feedback, HumanTask, RunFilter, RunRecord, RunStore, SQLiteStore


async def fill(store: RunStore, runs: int) -> list[str]:
    now = time.time() - runs
    ids = []
    for i in range(runs):
        run_id = f"run-{i:06d}"
        ids.append(run_id)
        await store.create_run(RunRecord(
            run_id=run_id, agent="desk" if i % 3 else "billing", status="completed",
            input=f"Where is order {i}? Mail me at user{i}@example.com",
            output=f"Order {i} ships Monday.", created_at=now + i, updated_at=now + i + 1,
            tenant="acme", conversation=f"c-{i // 2}" if i % 5 == 0 else None))
        if i % 10 == 0:
            await store.put_task(HumanTask(task_id=f"esc-{i}", run_id=run_id,
                                           kind="escalation", step_key="desk/escalate",
                                           queue="support", status="open",
                                           created_at=now + i, data={"reason": "asked"}))
        if i % 4 == 0:
            await store.put_feedback(Feedback(
                feedback_id=f"fb-{i}", run_id=run_id, created_at=now + i + 2,
                thumbs="down" if i % 8 == 0 else "up", by=f"user-{i}",
                comment="wrong, write to me at someone@example.com" if i % 8 == 0 else None))
    return ids


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def main(runs: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with SQLiteStore(Path(tmp) / "runs.db") as store:
            ids = await fill(store, runs)

            async def list_all() -> None:
                offset = 0
                while True:
                    page = await store.list_runs(RunFilter(limit=200, offset=offset))
                    offset += len(page)
                    if len(page) < 200:
                        return

            every = HarvestFilter(limit=min(runs, 10_000))
            cases = {
                "list (baseline)": list_all,
                "harvest": lambda: harvest(store, every),
                "harvest, no redact": lambda: harvest(store, every, redact=False),
                "harvest, negative": lambda: harvest(store, HarvestFilter(
                    feedback="negative", limit=min(runs, 10_000))),
            }
            figures: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(rounds):
                for name, fn in cases.items():
                    figures[name].append(await timed(fn))
            base = statistics.median(figures["list (baseline)"])
            print(f"{runs:,} runs on SQLite, median of {rounds} rounds")
            for name, values in figures.items():
                took = statistics.median(values)
                print(f"  {name:22} {took * 1000:9.1f} ms  {took / runs * 1e6:8.1f} us/run  "
                      f"x{took / base:6.1f}")

            n = min(500, runs)
            read = await timed(lambda: asyncio.gather(*(store.get_run(r) for r in ids[:n])))
            write = await timed(lambda: _record(store, ids[:n]))
            print(f"  get_run (baseline)     {read / n * 1e6:8.1f} us/call")
            print(f"  record_feedback        {write / n * 1e6:8.1f} us/call  "
                  f"x{write / read:6.1f}")


async def _record(store: RunStore, ids: list[str]) -> None:
    for run_id in ids:
        await keel.record_feedback(run_id, thumbs="up", by="bench", store=store)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.rounds))
