"""How long ``RunStore.stats`` (``keel stats``) takes on a generated store of 100,000 runs, on
SQLite and Postgres, and that every figure equals a brute-force count over the same data.

The store is :func:`keel.testing._stats_data.stats_dataset` (deterministic: 4 agents, 5
tenants, 5 models, 30 days, every status, usage totals, escalation tasks on ~4% of the runs,
journals with tool results on a tenth of them), written through the store's API. Each query
is timed ``--rounds`` times (median and max reported); the first answer is checked against
:func:`keel.testing._stats_data.brute_force` before any timing counts. The query plan of a
filtered query is printed to show which index finds its runs.

    python -m bench.bench_stats [--runs 100000] [--rounds 5] [--no-postgres] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from keel.store import PostgresStore, RunStore, SQLiteStore, StatsQuery
from keel.testing._stats_data import (
    T0,
    GeneratedRun,
    assert_stats_match,
    brute_force,
    load_dataset,
    stats_dataset,
)

PG_URL = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
DAY = 86_400.0

QUERIES: dict[str, StatsQuery] = {
    "all runs, by agent": StatsQuery(),
    "all runs, total only": StatsQuery(by=()),
    "by tenant and model": StatsQuery(by=("tenant", "model")),
    "by day (cost per day)": StatsQuery(by=("day",)),
    "one tenant, 7 days, by agent": StatsQuery(tenant="acme", since=T0 + 10 * DAY,
                                               until=T0 + 17 * DAY),
    "one agent, 1 day, by model": StatsQuery(agent="billing", since=T0 + 20 * DAY,
                                             until=T0 + 21 * DAY, by=("model",)),
}


async def _time(store: RunStore, runs: list[GeneratedRun], rounds: int
                ) -> dict[str, dict[str, float]]:
    out = {}
    for name, query in QUERIES.items():
        assert_stats_match(await store.stats(query), brute_force(runs, query))
        took = []
        for _ in range(rounds):
            start = time.perf_counter()
            await store.stats(query)
            took.append(time.perf_counter() - start)
        out[name] = {"median_ms": statistics.median(took) * 1e3, "max_ms": max(took) * 1e3}
    return out


async def bench_sqlite(runs: list[GeneratedRun], rounds: int, path: Path) -> dict[str, Any]:
    async with SQLiteStore(path) as store:
        start = time.perf_counter()
        await load_dataset(store, runs)
        load = time.perf_counter() - start
        timings = await _time(store, runs, rounds)
    import sqlite3

    from keel.store import _stats_sql as sql

    query = QUERIES["one tenant, 7 days, by agent"]
    text, params = sql.figures(sql.SQLITE, query, query.by)
    with sqlite3.connect(path) as conn:
        plan = [row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {text}", params)]
    return {"load_s": load, "queries": timings, "plan": plan}


async def bench_postgres(runs: list[GeneratedRun], rounds: int) -> dict[str, Any]:
    import psycopg

    from keel.store import _stats_sql as sql
    from keel.store._postgres_sql import _prefix

    schema = f"keel_bench_stats_{uuid.uuid4().hex[:10]}"
    try:
        async with PostgresStore(PG_URL, schema=schema, max_size=8) as store:
            start = time.perf_counter()
            await load_dataset(store, runs, concurrency=8)
            load = time.perf_counter() - start
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f'ANALYZE "{schema}".keel_runs')
                conn.execute(f'ANALYZE "{schema}".keel_journal')
                conn.execute(f'ANALYZE "{schema}".keel_tasks')
            timings = await _time(store, runs, rounds)
        query = QUERIES["one tenant, 7 days, by agent"]
        text, params = sql.figures(sql.postgres(_prefix(schema)), query, query.by)
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            plan = [row[0] for row in conn.execute(f"EXPLAIN {text}", params)]
        return {"load_s": load, "queries": timings,
                "plan": [line for line in plan if "Scan" in line]}
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _print(name: str, n: int, report: dict[str, Any]) -> None:
    print(f"\n{name}: {n:,} runs, loaded in {report['load_s']:.1f}s through the store API")
    print(f"  {'query':34} {'median':>10} {'max':>10}")
    for query, t in report["queries"].items():
        print(f"  {query:34} {t['median_ms']:8.0f}ms {t['max_ms']:8.0f}ms")
    print("  plan of 'one tenant, 7 days': " + " | ".join(p.strip() for p in report["plan"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    runs = stats_dataset(args.runs, seed=100, journal_fraction=0.1)
    entries = sum(len(r.entries) for r in runs)
    results: dict[str, Any] = {"runs": args.runs, "journal_entries": entries,
                               "generate_s": time.perf_counter() - start}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = asyncio.run(bench_sqlite(runs, args.rounds, Path(tmp) / "runs.db"))
    if not args.no_postgres:
        results["postgres"] = asyncio.run(bench_postgres(runs, args.rounds))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{args.runs:,} runs, {entries:,} journal entries; every figure checked against "
          "a brute-force count")
    for backend in ("sqlite", "postgres"):
        if backend in results:
            _print(backend, args.runs, results[backend])
    return 0


if __name__ == "__main__":
    sys.exit(main())
