"""What spend caps cost per agent step, against the same agent without them, in the same
process (interleaved rounds, medians).

A step is one model turn and one tool call, on keel's defaults. Configurations: ``caps
off``; ``caps on, memory`` (a tenant cap and an agent cap, daily, in this process); ``caps
on, SQLite`` (the same caps in an SQLite file: two transactions a model call); ``caps on,
Redis`` (two Lua scripts a model call on 127.0.0.1:6379, skipped when no Redis answers).
The caps are large enough never to stop a run: this is the price of the bookkeeping.

    python -m bench.bench_caps [--steps 50] [--rounds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import keel
from bench.bench_keel import BenchModel
from keel.models import ModelInfo, register_model_info
from keel.observe import CapStore, MemoryCapStore, RedisCapStore, SpendCap, SpendCaps, SQLCapStore

# priced like a small hosted model, so the money caps count (the bench model reports no cost)
register_model_info(ModelInfo(provider="bench", model="fake", input_per_mtok=0.15,
                              output_per_mtok=0.6, priced=True))
USER = "Hi, my order 4411 has not arrived yet. Can you check?"


def make_agent(steps: int, store: CapStore | None) -> keel.Agent[str]:
    async def lookup(i: int) -> str:
        """Look an order up."""
        return '{"order": 4411, "status": "in transit"}'

    turns: list[Any] = [[("lookup", {"i": k})] for k in range(steps)] + ["done"]
    middleware: list[keel.Middleware] = []
    if store is not None:
        middleware.append(SpendCaps([
            SpendCap(scope="tenant", window="daily", max_usd=1e9, max_tokens=10**15),
            SpendCap(scope="agent", window="daily", max_usd=1e9)], store=store))
    return keel.Agent("bench", model=BenchModel(turns), tools=[keel.tool(lookup)],
                      budget=keel.Budget.unlimited(), middleware=middleware)


async def time_run(agent: keel.Agent[str]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    result = await agent.run(USER, store=keel.MemoryStore(), tenant="acme")
    elapsed = time.perf_counter() - t0
    if result.output != "done":
        raise SystemExit(f"bench run failed: {result.output!r}")
    return elapsed


async def _redis() -> RedisCapStore | None:
    store = RedisCapStore(prefix=f"keel:bench:caps:{uuid.uuid4().hex}:")
    try:
        await store.spent("probe")
    except keel.StoreError:
        return None
    return store


async def measure(steps: int, rounds: int, folder: Path) -> dict[str, float]:
    stores: dict[str, CapStore | None] = {
        "caps off": None, "caps on, memory": MemoryCapStore(),
        "caps on, SQLite": SQLCapStore(folder / "caps.db")}
    redis = await _redis()
    if redis is not None:
        stores["caps on, Redis"] = redis
    agents = {name: make_agent(steps, store) for name, store in stores.items()}
    samples: dict[str, list[float]] = {name: [] for name in agents}
    for agent in agents.values():  # warm up
        await time_run(agent)
    for _ in range(rounds):
        for name, agent in agents.items():
            samples[name].append(await time_run(agent) / steps * 1e6)
    if redis is not None:
        await redis.aclose()
    return {name: statistics.median(v) for name, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        results = asyncio.run(measure(args.steps, args.rounds, Path(folder)))
    base = results["caps off"]
    print("| configuration | µs per step | over caps off |")
    print("|---|---:|---:|")
    for name, us in results.items():
        extra = "" if name == "caps off" else f"+{us - base:.1f} µs ({us / base:.2f}×)"
        print(f"| {name} | {us:.1f} | {extra} |")


if __name__ == "__main__":
    main()
