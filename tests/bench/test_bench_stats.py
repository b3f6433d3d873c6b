"""bench/bench_stats.py at a tiny size, so it cannot rot (its figures are checked against the
brute-force count inside it), and a 20,000-run store on SQLite (slow): every figure of every
query equals the brute-force count.

The queries are exact at any size (counts, sums, nearest-rank percentiles from window
functions; nothing is sampled, paged or cut at a size), so 20,000 runs prove what 100,000 do:
every group of every query holds 21 runs or more (most hold hundreds), the day groups
span the 30 days, and the narrow queries (one tenant over 7 days, one agent over 1 day)
still find their runs by the tenant index. ``python -m bench.bench_stats`` checks the
100,000-run store of the published figures the same way before it times anything."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from bench.bench_stats import QUERIES, bench_sqlite, main

from keel.testing._stats_data import stats_dataset

pytestmark = pytest.mark.slow


def test_bench_stats_runs_at_a_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--runs", "400", "--rounds", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] == 400 and out["journal_entries"] > 0
    for backend in ("sqlite", "postgres"):
        assert set(out[backend]["queries"]) == set(QUERIES)
        assert any("keel_runs_by_tenant" in p or "runs_by_tenant" in p
                   for p in out[backend]["plan"])


def test_a_store_of_20k_runs_gives_the_brute_force_figures(tmp_path: Path) -> None:
    runs = stats_dataset(20_000, seed=100, journal_fraction=0.1)
    report = asyncio.run(bench_sqlite(runs, 1, tmp_path / "runs.db"))  # checks every query
    assert set(report["queries"]) == set(QUERIES)
    assert any("runs_by_tenant" in p for p in report["plan"])
