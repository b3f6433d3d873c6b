"""``keel stats``: the store's aggregates as a table or JSON, on SQLite and Postgres; read-only
(never creates a store); one-line usage errors; an unknown tenant is an empty result with a
note (exit 0), not an error."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from keel.store import StatsQuery, open_store
from keel.testing._stats_data import (
    GeneratedRun,
    brute_force,
    load_dataset,
    stats_dataset,
)
from tests.cli.conftest import Invoke

PG_URL = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
RUNS = stats_dataset(300, seed=5, journal_fraction=0.3)


def _fill(url: str, runs: list[GeneratedRun]) -> None:
    async def go() -> None:
        async with open_store(url) as store:
            await load_dataset(store, runs)

    asyncio.run(go())


def stats_json(keel: Invoke, url: str, *args: str) -> dict[str, Any]:
    out = keel("stats", "--json", "--store", url, *args)
    assert out.exit_code == 0, out
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def check_figures(keel: Invoke, url: str) -> None:
    data = stats_json(keel, url, "--by", "tenant,model", "--top", "3")
    want = brute_force(RUNS, StatsQuery(by=("tenant", "model"), top=3))
    total = want[()]
    assert data["total"]["runs"] == total["runs"] == 300
    assert data["total"]["p95_s"] == total["p95_s"]
    assert [[r["tool"], r["failures"]] for r in data["total"]["failing_tools"]] == \
        [list(t) for t in total["failing_tools"]]
    groups = {tuple(g["key"].values()): g for g in data["groups"]}
    assert set(groups) == set(want) - {()}
    for key, figures in want.items():
        row = data["total"] if key == () else groups[key]
        for name in ("runs", "completed", "escalated", "p50_s", "p99_s", "input_tokens",
                     "cache_hits"):
            assert row[name] == figures[name], (key, name)
    assert data["notes"] == []
    # the window and the filters go to the store's query
    since, until = "2027-01-17", "2027-01-20T12:00:00Z"
    windowed = stats_json(keel, url, "--since", since, "--until", until, "--agent", "billing",
                          "--by", "day")
    assert windowed["query"]["since"] == 1_800_000_000 - 1_800_000_000 % 86_400 + 2 * 86_400
    query = StatsQuery(agent="billing", since=windowed["query"]["since"],
                       until=windowed["query"]["until"], by=("day",))
    assert windowed["groups"]  # days from 17 to 20 January with billing runs
    assert [g["runs"] for g in windowed["groups"]] == \
        [want_row["runs"] for _, want_row in sorted(brute_force(RUNS, query).items()) if _]
    table = keel("stats", "--store", url, "--by", "agent")
    assert table.exit_code == 0
    for word in ("Run analytics", "billing", "support", "total", "Tool failures", "success",
                 f"Cache hits: {total['cache_hits']:,} model steps"):
        assert word in table.stdout


def test_stats_on_sqlite(keel: Invoke, store: str) -> None:
    _fill(store, RUNS)
    check_figures(keel, store)


@pytest.fixture
def pg_url() -> Iterator[str]:
    schema = f"keel_stats_{uuid.uuid4().hex[:12]}"
    yield f"{PG_URL}?schema={schema}"
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_stats_on_postgres(keel: Invoke, pg_url: str) -> None:
    _fill(pg_url, RUNS)
    check_figures(keel, pg_url)


def test_unknown_tenant_is_an_empty_result_with_a_note(keel: Invoke, store: str) -> None:
    _fill(store, RUNS[:20])
    data = stats_json(keel, store, "--tenant", "nobody")
    assert data["total"]["runs"] == 0 and data["groups"] == []
    assert "no runs of tenant 'nobody'" in data["notes"][0]
    out = keel("stats", "--store", store, "--tenant", "nobody")
    assert out.exit_code == 0 and "no runs of tenant 'nobody'" in out.stdout
    # a known tenant outside the window says so differently
    data = stats_json(keel, store, "--tenant", "acme", "--since", "2030-01-01")
    assert data["total"]["runs"] == 0 and "window or the filters" in data["notes"][0]


def test_never_creates_a_store(keel: Invoke, tmp_path: Path) -> None:
    missing = tmp_path / "nothing" / "runs.db"
    out = keel("stats", "--store", f"sqlite:///{missing}")
    assert out.exit_code == 0 and "no run store" in out.stdout
    assert not missing.exists() and not missing.parent.exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    out = keel("stats", "--store", f"sqlite:///{empty}")
    assert out.exit_code == 2 and "no keel run store" in out.stderr
    assert empty.stat().st_size == 0
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    out = keel("stats", "--store", f"sqlite:///{other}")
    assert out.exit_code == 2
    with sqlite3.connect(other) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    assert tables == ["t"]


@pytest.mark.parametrize(("args", "words"), [
    (["--by", "colour"], "--by 'colour' is not one of: agent, tenant, model, day"),
    (["--by", "day,day"], "names a key twice"),
    (["--since", "yesterday"], "--since 'yesterday' is not a duration"),
    (["--until", "soon"], "--until 'soon' is not a duration"),
    (["--since", "2027-01-02", "--until", "2027-01-01"], "is not before --until"),
    (["--tenant", ""], "tenant= is empty"),
    (["--tenant", "t" * 300], "at most 200"),
    (["--agent", "a\x07b"], "control or unprintable character"),
    (["--top", "101"], "--top"),
])
def test_bad_options_are_one_line_usage_errors(keel: Invoke, store: str, args: list[str],
                                               words: str) -> None:
    _fill(store, RUNS[:5])
    out = keel("stats", "--store", store, *args)
    assert out.exit_code == 2, out
    assert words in out.stderr
    assert len([line for line in out.stderr.splitlines() if line.strip()]) <= 2
    assert "Traceback" not in out.output

