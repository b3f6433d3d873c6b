"""A worker process for the shared spend-cap test: runs one tenant's runs concurrently
against a daily cap in a shared store, and prints what it spent as JSON.

    python caps_worker.py STORE_KIND TARGET PREFIX CAP_USD RUNS NOTIFY_FILE
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from caps_helpers import FileNotifier, agent, priced_model  # type: ignore[import-not-found]

from keel import BudgetExceeded, MemoryStore
from keel.observe import RedisCapStore, SpendCap, SpendCaps, SQLCapStore


def ready(notify: str) -> None:
    Path(f"{notify}.ready.{os.getpid()}").touch()


def go(notify: str) -> bool:
    return Path(f"{notify}.go").exists()


async def main(kind: str, target: str, prefix: str, cap_usd: float, runs: int,
               notify: str) -> None:
    store = RedisCapStore(target, prefix=prefix) if kind == "redis" else SQLCapStore(target)
    caps = SpendCaps([SpendCap(scope="tenant", window="daily", max_usd=cap_usd,
                               name=f"tenant-daily{'' if prefix == '-' else prefix}")], store=store,
                     notifier=FileNotifier(notify))
    a = agent([caps], model=priced_model(delay=0.005))
    ready(notify)
    for _ in range(3000):  # the test starts both workers at once
        if go(notify):
            break
        await asyncio.sleep(0.02)
    spent, refused = [], 0

    async def one(i: int) -> None:
        nonlocal refused
        await asyncio.sleep(i * 0.02)  # a steady stream of runs, not one burst
        try:
            result = await a.run(f"question {i} " + "x" * (i % 7), tenant="acme",
                               store=MemoryStore())
            spent.append(result.usage.cost_usd)
        except BudgetExceeded:
            refused += 1

    await asyncio.gather(*(one(i) for i in range(runs)))
    await caps.drain(10)
    print(json.dumps({"spent": spent, "refused": refused}))


if __name__ == "__main__":
    k, t, p, c, n, f = sys.argv[1:7]
    asyncio.run(main(k, t, p, float(c), int(n), f))
