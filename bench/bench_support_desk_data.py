"""The support desk's data layer: how long seeding takes, and what a keel tool call over the
desk database costs against calling the same look-up or write function directly, in the
same process (interleaved rounds, the median of each).

* **generate**: ``create_database`` (520 customers, 2,400 orders, ...), against copying the
  finished file (the cheapest way to get a database);
* **order_status**: the keel tool (argument validation, a worker thread, the result
  rendered) against ``lookups.order_status`` called directly;
* **refund_order**: the keel tool (a refund and its effect row in one write transaction)
  against ``actions.refund`` called directly, one refund per delivered order.

    python -m bench.bench_support_desk_data [--rounds 7] [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from examples.support_desk import actions, lookups
from examples.support_desk import tools as T
from examples.support_desk.db import SCENARIOS, Database, create_database

from keel import ToolContext


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def generation(folder: Path, rounds: int) -> tuple[float, float]:
    made, copied = [], []
    seed = create_database(folder / "seed.db")
    for i in range(rounds):
        target, copy = folder / f"g{i}.db", folder / f"c{i}.db"
        made.append(timed(lambda: create_database(target)))  # noqa: B023 (called at once)
        copied.append(timed(lambda: shutil.copyfile(seed, copy)))  # noqa: B023
    return statistics.median(made), statistics.median(copied)


def ctx(db: Database, user: str, key: str) -> ToolContext:
    return ToolContext(run_id="bench", step_key=key, agent="bench", idempotency_key=key,
                       deps=db, user=user)


async def lookups_cost(db: Database, calls: int) -> tuple[float, float]:
    s = SCENARIOS["in_transit"]
    assert s.order_id is not None
    order_id = s.order_id
    start = time.perf_counter()
    for _ in range(calls):
        lookups.order_status(db, s.customer_id, order_id)
    direct = (time.perf_counter() - start) / calls
    start = time.perf_counter()
    for i in range(calls):
        await T.order_status.call({"order_id": order_id}, ctx(db, s.customer_id, f"o{i}"))
    tool = (time.perf_counter() - start) / calls
    return tool, direct


async def refund_cost(db: Database, orders: list[tuple[str, str]]) -> tuple[float, float]:
    """One refund of 0.01 per order: half of them directly, half through the tool."""
    half = len(orders) // 2
    start = time.perf_counter()
    for order_id, customer in orders[:half]:
        actions.refund(db, actions.Call(customer_id=customer, idempotency_key=f"d{order_id}"),
                       order_id=order_id, amount_cents=1, reason="bench")
    direct = (time.perf_counter() - start) / half
    start = time.perf_counter()
    for order_id, customer in orders[half:]:
        await T.refund_order.call({"order_id": order_id, "amount": 0.01, "reason": "bench"},
                                  ctx(db, customer, f"t{order_id}"))
    tool = (time.perf_counter() - start) / (len(orders) - half)
    return tool, direct


def delivered(db: Database) -> list[tuple[str, str]]:
    with db.read() as conn:
        return [(r[0], r[1]) for r in conn.execute(
            "SELECT o.id, o.customer_id FROM orders o JOIN payments p ON p.order_id = o.id "
            "WHERE o.status = 'delivered' AND p.refunded_cents = 0 ORDER BY o.id")]


async def main(rounds: int, calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        made, copied = generation(folder, rounds)
        print(f"generate: {made * 1000:.0f} ms median ({made / copied:.0f}x copying the "
              f"finished file, {copied * 1000:.1f} ms)")
        db = Database(create_database(folder / "desk.db"))
        looks = [await lookups_cost(db, calls) for _ in range(rounds)]
        tool, direct = (statistics.median(x) for x in zip(*looks, strict=True))
        print(f"order_status: tool {tool * 1e3:.2f} ms, direct {direct * 1e3:.2f} ms "
              f"(ratio {tool / direct:.2f})")
        pool, per = delivered(db), max(calls // 4, 10)
        refunds = [await refund_cost(db, pool[r * per:(r + 1) * per]) for r in range(rounds)]
        tool, direct = (statistics.median(x) for x in zip(*refunds, strict=True))
        print(f"refund_order: tool {tool * 1e3:.2f} ms, direct {direct * 1e3:.2f} ms "
              f"(ratio {tool / direct:.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.calls))
