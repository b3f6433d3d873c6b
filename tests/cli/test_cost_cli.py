"""`keel cost`: spend by tenant/agent and window from stored runs' usage (SQL on SQLite and
Postgres), the monthly estimate at a volume checked against a brute-force sum, and one-line
usage errors; the store is only read."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from keel.store import RunRecord, RunStore, open_store
from tests.cli.conftest import InvokeResult

Keel = Callable[..., InvokeResult]
PG_URL = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
DAY1 = datetime(2026, 12, 6, 10, tzinfo=UTC).timestamp()
DAY2 = datetime(2026, 12, 7, 9, tzinfo=UTC).timestamp()

# (tenant, agent, created_at, cost, tokens)
RUNS = [("acme", "helper", DAY1, 0.010, 100), ("acme", "helper", DAY1 + 60, 0.030, 300),
        ("acme", "writer", DAY2, 0.020, 200), ("globex", "helper", DAY2, 0.100, 1000),
        (None, "helper", DAY2 + 5, 0.001, 10)]


async def _fill(store: RunStore, tag: str = "") -> None:
    for i, (tenant, agent, at, cost, tokens) in enumerate(RUNS):
        await store.create_run(RunRecord(
            run_id=f"r{tag}{i}", agent=agent + tag, status="completed", input="q",
            created_at=at, updated_at=at, tenant=None if tenant is None else tenant + tag,
            usage={"requests": 1, "input_tokens": tokens - 1, "output_tokens": 1,
                   "cost_usd": cost}))
    await store.close()


def test_spend_by_tenant_and_agent_per_day(keel: Keel, store: str, tmp_path: Path) -> None:
    asyncio.run(_fill(open_store(store)))
    r = keel("--store", store, "cost", "--json")
    assert r.exit_code == 0, r
    rows = {(x["window"], x["tenant"]): x for x in json.loads(r.stdout)}
    assert rows[("2026-12-06", "acme")]["cost_usd"] == pytest.approx(0.04)
    assert rows[("2026-12-06", "acme")]["runs"] == 2
    assert rows[("2026-12-07", "acme")]["tokens"] == 200
    assert rows[("2026-12-07", "-")]["cost_usd"] == pytest.approx(0.001)
    by_agent = json.loads(keel("--store", store, "cost", "--by", "agent", "--window", "month",
                               "--json").stdout)
    assert {x["agent"]: x["cost_usd"] for x in by_agent} == pytest.approx(
        {"helper": 0.141, "writer": 0.02})
    table = keel("--store", store, "cost", "--tenant", "globex").stdout
    assert "globex" in table and "acme" not in table


def test_monthly_estimate_from_history(keel: Keel, store: str) -> None:
    asyncio.run(_fill(open_store(store)))
    r = keel("--store", store, "cost", "--estimate", "10000/day", "--json")
    assert r.exit_code == 0, r
    got = json.loads(r.stdout)
    costs = sorted(c for *_, c, _ in RUNS)
    mean = sum(costs) / len(costs)
    assert got["mean_cost_per_run_usd"] == pytest.approx(mean)
    assert got["p95_cost_per_run_usd"] == pytest.approx(costs[-1])  # 5 runs: the top one
    assert got["monthly_usd_mean"] == pytest.approx(mean * 10000 * 30.4375)
    acme = json.loads(keel("--store", store, "cost", "--estimate", "100/hour", "--tenant",
                           "acme", "--json").stdout)
    assert acme["runs"] == 3 and acme["mean_cost_per_run_usd"] == pytest.approx(0.02)
    text = keel("--store", store, "cost", "--estimate", "10000/day").stdout
    assert "a month (mean)" in text


@pytest.mark.parametrize(("args", "part"), [
    (["--estimate", "lots"], "--estimate"), (["--estimate", "10/week"], "--estimate"),
    (["--by", "user"], "--by"), (["--window", "year"], "--window"),
])
def test_usage_errors_are_one_line(keel: Keel, store: str, args: list[str], part: str) -> None:
    r = keel("--store", store, "cost", *args)
    assert r.exit_code == 2
    assert part in r.stderr and len(r.stderr.strip().splitlines()) == 2  # problem, help


def test_no_history_and_unreadable_stores_are_clear_errors(keel: Keel, tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    r = keel("--store", str(missing), "cost")
    assert r.exit_code == 2 and "cannot open" in r.output
    assert not missing.exists()  # read-only: nothing created
    r = keel("--store", "memory:", "cost")
    assert r.exit_code == 2 and "keeps nothing" in r.output
    empty = f"sqlite:///{tmp_path / 'runs.db'}"
    async def create() -> None:
        s = open_store(empty)
        await s.list_runs()
        await s.close()

    asyncio.run(create())
    r = keel("--store", empty, "cost", "--estimate", "10/day")
    assert r.exit_code == 2 and "no runs match" in r.output


def _pg_up() -> bool:
    try:
        import psycopg

        psycopg.connect(PG_URL, connect_timeout=2).close()
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _pg_up(), reason=f"no Postgres at {PG_URL}")
def test_spend_on_postgres(keel: Keel) -> None:
    tag = uuid.uuid4().hex[:8]

    async def fill() -> None:
        await _fill(open_store(PG_URL), tag)

    asyncio.run(fill())
    r = keel("--store", PG_URL, "cost", "--tenant", f"acme{tag}", "--json")
    assert r.exit_code == 0, r
    rows = {x["window"]: x["cost_usd"] for x in json.loads(r.stdout)}
    assert rows == pytest.approx({"2026-12-06": 0.04, "2026-12-07": 0.02})
    est = json.loads(keel("--store", PG_URL, "cost", "--agent", f"helper{tag}", "--estimate",
                          "1000/month", "--json").stdout)
    assert est["runs"] == 4 and est["p95_cost_per_run_usd"] == pytest.approx(0.1)
