"""What an evaluation costs over the runs it is made of: ``keel.evals.evaluate`` on the
110-case proof dataset (tests/evals/data/support_110.jsonl, the scripted support agent of
tests/evals/proof_agent.py: 160 model requests and 50 tool calls, keel's default middleware
on) against the same 110 cases run with ``agent.run`` at the same concurrency and nothing
else (the baseline), both into one SQLite store, in the same process.

The difference is the evaluation's own work: reading each case's run records and journal
back, extracting the tool calls, scoring (exact and fuzzy match, trajectory) and building
the report. The rounds alternate between the two (this machine is shared); the figures are
medians.

    python -m bench.bench_eval [--rounds 5] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from tests.evals.proof_agent import agent_v1

from keel.evals import Dataset, evaluate, load_dataset
from keel.store import RunStore, open_store

DATA = Path(__file__).resolve().parents[1] / "tests" / "evals" / "data" / "support_110.jsonl"


async def plain(store: RunStore, dataset: Dataset, concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(text: str) -> None:
        async with gate:
            await agent_v1.run(text, store=store)

    await asyncio.gather(*(one(c.turns[0]) for c in dataset.cases))


async def main(rounds: int, concurrency: int) -> None:
    dataset = load_dataset(DATA)
    took: dict[str, list[float]] = {"runs only": [], "evaluate": []}
    with tempfile.TemporaryDirectory() as tmp:
        async with open_store(f"sqlite:///{tmp}/runs.db") as store:
            await evaluate(agent_v1, dataset, store=store, concurrency=concurrency)  # warm up
            for _ in range(rounds):
                start = time.perf_counter()
                await plain(store, dataset, concurrency)
                took["runs only"].append(time.perf_counter() - start)
                start = time.perf_counter()
                await evaluate(agent_v1, dataset, store=store, concurrency=concurrency)
                took["evaluate"].append(time.perf_counter() - start)
    base = statistics.median(took["runs only"])
    print(f"{len(dataset)} cases, concurrency {concurrency}, {rounds} rounds (medians)")
    for name, times in took.items():
        median = statistics.median(times)
        print(f"  {name:<10} {median:7.3f} s  {median / len(dataset) * 1000:6.2f} ms/case  "
              f"x{median / base:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.concurrency))
