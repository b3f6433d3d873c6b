"""What a shadow costs production: the same production traffic with the shadow off, at 5% and
at 100%, in the same process (interleaved rounds, medians), on an SQLite run store.

A production run is one read (``lookup_order``), one refund (an ``irreversible`` tool,
exempt from approval below 100) and a final answer: three model turns on keel's defaults.
The candidate does the same (its refund becomes a would-call, its read is served from the
production run's recorded result). ``--delay`` makes every model turn await that many
seconds, as a hosted model would; 0 is the CPU-bound worst case.

Figures: production latency per run (mean and p95, measured around ``shadow.run``, which
returns as soon as production is done), the wall time of a batch of ``--runs`` concurrent
production runs, and the time the shadows then need to drain.

    python -m bench.shadow [--runs 200] [--rounds 5] [--delay 0.02]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import keel
from keel.core import Message
from keel.evals import Shadow
from keel.runtime import ApprovalPolicy, ApprovalRule
from keel.store import SQLiteStore
from keel.testing import FunctionModel, call


def make_tools() -> list[keel.Tool]:
    @keel.tool(risk="read")
    async def lookup_order(order: str) -> dict[str, Any]:
        """Look an order up."""
        return {"order": order, "total": 42}

    @keel.tool(risk="irreversible")
    async def issue_refund(order: str, amount: int) -> str:
        """Refund an order."""
        return f"refunded {amount} on {order}"

    return [lookup_order, issue_refund]


def make_model(delay: float, amount: int) -> FunctionModel:
    async def answer(messages: list[Message], tools: Any, settings: Any) -> Any:
        if delay:
            await asyncio.sleep(delay)
        first = next(m.text for m in messages if m.role == "user")
        found = re.search(r"\d+", first)
        number = found.group() if found else "0"
        turn = sum(1 for m in messages if m.role == "assistant")
        if turn == 0:
            return call("lookup_order", {"order": number})
        if turn == 1:
            return call("issue_refund", {"order": number, "amount": amount})
        return f"Refunded {amount} on order {number}."

    return FunctionModel(answer)


def agents(delay: float) -> tuple[keel.Agent[str], keel.Agent[str]]:
    small = ApprovalRule("issue_refund", lambda a: a["amount"] <= 100, "small", exempt=True)
    tools = make_tools()
    production = keel.Agent("support", model=make_model(delay, 10), tools=tools,
                            approval=ApprovalPolicy(rules=(small,)))
    candidate = keel.Agent("support-v2", model=make_model(delay, 25), tools=tools)
    return production, candidate


async def batch(store: SQLiteStore, production: keel.Agent[str], shadow: Shadow | None,
                runs: int, offset: int) -> tuple[list[float], float, float]:
    """Per-run production latencies, the batch's wall time and the drain time."""
    latencies: list[float] = []

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        if shadow is None:
            await production.run(f"refund order {offset + i}", store=store)
        else:
            await shadow.run(production, f"refund order {offset + i}", store=store)
        latencies.append(time.perf_counter() - t0)

    gc.collect()
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(runs)))
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    if shadow is not None:
        await shadow.drain()
    return latencies, wall, time.perf_counter() - t1


def p95(values: list[float]) -> float:
    data = sorted(values)
    return data[max(0, -(-95 * len(data) // 100) - 1)]


async def measure(runs: int, rounds: int, delay: float, folder: Path) -> dict[str, dict[str,
                                                                                         float]]:
    production, candidate = agents(delay)
    configs: dict[str, Shadow | None] = {
        "shadow off": None,
        "shadow 5%": Shadow(candidate, sample=0.05, max_pending=runs),
        "shadow 100%": Shadow(candidate, sample=1.0, max_pending=runs)}
    samples: dict[str, dict[str, list[float]]] = {
        name: {"mean": [], "p95": [], "wall": [], "drain": []} for name in configs}
    async with SQLiteStore(folder / "runs.db") as store:
        await batch(store, production, configs["shadow 100%"], 20, 10**9)  # warm up
        offset = 0
        for _ in range(rounds):
            for name, shadow in configs.items():
                lat, wall, drain = await batch(store, production, shadow, runs, offset)
                offset += runs
                s = samples[name]
                s["mean"].append(statistics.fmean(lat))
                s["p95"].append(p95(lat))
                s["wall"].append(wall)
                s["drain"].append(drain)
    return {name: {k: statistics.median(v) for k, v in s.items()}
            for name, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--delay", type=float, nargs="*", default=[0.0, 0.02])
    args = parser.parse_args()
    for delay in args.delay:
        with tempfile.TemporaryDirectory() as folder:
            figures = asyncio.run(measure(args.runs, args.rounds, delay, Path(folder)))
        base = figures["shadow off"]
        print(f"\n{args.runs} concurrent production runs, model turn delay {delay * 1000:.0f} ms"
              f" (median of {args.rounds} interleaved rounds)")
        print(f"{'':<13}{'mean/run':>10}{'p95/run':>10}{'batch':>9}{'ratio':>7}"
              f"{'drain':>9}")
        for name, f in figures.items():
            print(f"{name:<13}{f['mean'] * 1000:>8.1f}ms{f['p95'] * 1000:>8.1f}ms"
                  f"{f['wall']:>8.2f}s{f['mean'] / base['mean']:>7.2f}"
                  f"{f['drain']:>8.2f}s")


if __name__ == "__main__":
    main()
