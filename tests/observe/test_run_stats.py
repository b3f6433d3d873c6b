"""Run analytics on a generated store of 5,000 runs (a tenth with journals): every figure
that ``keel.observe.run_stats`` gives on SQLite and on Postgres equals a brute-force count
over the same data; the Python API's arguments; the fallback for stores without ``stats``.
(The 100,000-run timing is bench/bench_stats.py.)"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from keel.core import UserError
from keel.observe import run_stats
from keel.store import MemoryStore, PostgresStore, RunStore, SQLiteStore, StatsQuery
from keel.testing._stats_data import (
    T0,
    GeneratedRun,
    assert_stats_match,
    brute_force,
    load_dataset,
    stats_dataset,
)

URL = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
DAY = 86_400.0


@pytest.fixture(scope="module")
def runs() -> list[GeneratedRun]:
    return stats_dataset(5_000, seed=2026, journal_fraction=0.1)


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"keel_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, schema: str,
                runs: list[GeneratedRun]) -> AsyncIterator[RunStore]:
    made: RunStore = (SQLiteStore(tmp_path / "runs.db") if request.param == "sqlite"
                      else PostgresStore(URL, schema=schema, max_size=8))
    async with made:
        await load_dataset(made, runs, concurrency=8)
        yield made


QUERIES = [
    {},
    {"by": ("tenant", "model")},
    {"by": ("day",), "since": T0 + 2 * DAY, "until": T0 + 9 * DAY},
    {"by": ("agent", "tenant", "model", "day"), "top": 10},
    {"agent": "support", "tenant": "globex", "by": ("model",)},
    {"tenant": "acme' OR '1'='1", "by": ()},
]


async def test_every_figure_equals_the_brute_force_count(
        store: RunStore, runs: list[GeneratedRun]) -> None:
    for kwargs in QUERIES:
        got = await run_stats(store, **kwargs)  # type: ignore[arg-type]
        assert_stats_match(got, brute_force(runs, got.query))
    total = (await run_stats(store, by=())).total
    # the data exercises every figure (30 days from T0, which is not midnight: 31 UTC days)
    assert total.runs == 5_000 and 0 < total.escalated < total.runs
    assert 0 < total.completed < total.finished < total.runs
    assert total.tool_failures > 100 and len(total.error_types) == 5
    assert total.cache_hits > 100 and total.cache_saved_usd > 0
    by_day = await run_stats(store, by="day")
    assert len(by_day.groups) == 31 and sum(g.runs for g in by_day.groups) == 5_000
    # datetimes (naive ones are UTC) and epoch seconds give the same window
    start = datetime.fromtimestamp(T0, UTC) + timedelta(days=3)
    window = await run_stats(store, since=start, until=start + timedelta(days=2))
    assert window == await run_stats(store, since=start.replace(tzinfo=None),
                                     until=T0 + 5 * DAY)
    assert 0 < window.total.runs < 5_000
    # an unknown tenant is an empty result, not an error
    nobody = await run_stats(store, tenant="no-such-tenant", by=("agent", "day"))
    assert nobody.total.runs == 0 and nobody.groups == () and nobody.total.p95_s is None


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"by": "colour"}, "cannot group stats by 'colour'"),
    ({"by": ("day", "day")}, "by= names a key twice"),
    ({"since": "last week"}, "since= must be epoch seconds or a datetime"),
    ({"since": T0, "until": T0 - 1}, "is not before until="),
    ({"tenant": "x" * 201}, "tenant= is 201 characters long"),
    ({"top": 1000}, "top= must be a whole number from 0 to 100"),
])
async def test_bad_arguments_name_the_argument(kwargs: dict[str, object], words: str) -> None:
    async with MemoryStore() as store:
        with pytest.raises(UserError, match=words.replace("(", r"\(")):
            await run_stats(store, **kwargs)  # type: ignore[arg-type]


async def test_a_store_without_its_own_stats_gets_the_generic_answer(
        runs: list[GeneratedRun]) -> None:
    """``RunStore.stats`` (the default a third-party store inherits) pages through
    ``list_runs``, the escalation tasks and the journals; its answer is the same."""
    part = runs[:600]
    async with MemoryStore() as store:
        await load_dataset(store, part)
        for kwargs in QUERIES:
            query = StatsQuery(**kwargs)  # type: ignore[arg-type]
            assert_stats_match(await RunStore.stats(store, query), brute_force(part, query))
