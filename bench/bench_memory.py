"""Long-term memory search latency (keel.context): ``search`` on an SQLite memory file with
``--items`` items (10,000 by default), embedded with the default WordLlama embedder.

Two shapes of the same number of items:

* **one user, all items**: the worst case, every item is a candidate of every search (the
  cosine is computed in process over all of that user's vectors);
* **100 users**: the items spread over 100 users, a search sees its user's ~1% only.

Each search embeds the query, reads the user's live vectors, scores and ranks them and reads
the top ``k`` rows. Latencies are per search (p50 and p95 over ``--queries`` searches, after a
warm-up; ``first_ms`` is the first search after the writes, which reads the vectors from the
database). ``--postgres URL`` measures the Postgres backend (plain arrays, or pgvector when
the database has it) the same way, in a scratch schema it drops afterwards.

    python -m bench.bench_memory [--items 10000] [--queries 200] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from keel.context import MemoryBackend, PostgresMemory, SQLiteMemory

SUBJECTS = ("dog", "cat", "flat", "car", "bank", "office", "phone", "order", "tea", "garden",
            "holiday", "daughter", "doctor", "laptop", "invoice", "bike", "train", "gym")
VERBS = ("prefers", "dislikes", "mentioned", "asked about", "is worried about", "bought",
         "cancelled", "lost", "renewed", "wants to change")
QUERIES = ("What is my dog called?", "How should you contact me?", "Where did I go on "
           "holiday?", "Is my order late?", "Which tea do I like?", "When is the doctor?")


def facts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"The user {rng.choice(VERBS)} their {rng.choice(SUBJECTS)} "
            f"({rng.choice(SUBJECTS)}, note {i})." for i in range(n)]


async def fill(memory: MemoryBackend, texts: list[str], users: int) -> float:
    """Remember ``texts`` round-robin over ``users`` users; seconds per item."""
    start = time.perf_counter()
    for i, text in enumerate(texts):
        await memory.remember(text, tenant="bench", user=f"user-{i % users}",
                              importance=(i % 10) / 10)
    return (time.perf_counter() - start) / len(texts)


async def latencies(memory: MemoryBackend, queries: int, users: int) -> dict[str, float]:
    """p50/p95 milliseconds of ``search`` (k=5) for user-0, and the first search after the
    writes (``first_ms``: the user's vectors are read from the database, not the cache)."""
    start = time.perf_counter()
    await memory.search(QUERIES[0], tenant="bench", user="user-0")
    first = (time.perf_counter() - start) * 1000
    for q in QUERIES:  # warm-up
        await memory.search(q, tenant="bench", user="user-0")
    samples: list[float] = []
    for i in range(queries):
        start = time.perf_counter()
        hits = await memory.search(QUERIES[i % len(QUERIES)], tenant="bench", user="user-0")
        samples.append((time.perf_counter() - start) * 1000)
        assert hits, "a user with items always gets hits"
    samples.sort()
    return {"first_ms": round(first, 3), "p50_ms": round(statistics.median(samples), 3),
            "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 3)}


async def measure(make: Any, items: int, queries: int) -> dict[str, Any]:
    texts = facts(items)
    out: dict[str, Any] = {"items": items}
    for users in (1, 100):
        memory = make(f"u{users}")
        async with memory:
            per_item = await fill(memory, texts, users)
            out[f"users_{users}"] = {"items_per_user": items // users,
                                     "remember_ms": round(per_item * 1000, 3),
                                     **await latencies(memory, queries, users)}
            out["vectors"] = getattr(memory, "vectors", None) or "float32 blob"
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        results["sqlite"] = await measure(
            lambda tag: SQLiteMemory(Path(folder) / f"{tag}.db"), args.items, args.queries)
    if args.postgres:
        schemas: list[str] = []

        def make(tag: str) -> PostgresMemory:
            schemas.append(f"keel_bench_{tag}_{uuid.uuid4().hex[:8]}")
            return PostgresMemory(args.postgres, schema=schemas[-1])

        try:
            results["postgres"] = await measure(make, args.items, args.queries)
        finally:
            import psycopg

            with psycopg.connect(args.postgres, autocommit=True) as conn:
                for schema in schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--postgres", default=None, help="a Postgres URL to measure too")
    args = parser.parse_args(argv)
    results = asyncio.run(main_async(args))
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
