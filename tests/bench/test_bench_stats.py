"""bench/bench_stats.py at a tiny size, so it cannot rot (its figures are checked against the
brute-force count inside it), and the 100,000-run store of the proof on SQLite (slow):
every figure of every query equals the brute-force count."""

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


def test_a_store_of_100k_runs_gives_the_brute_force_figures(tmp_path: Path) -> None:
    runs = stats_dataset(100_000, seed=100, journal_fraction=0.1)
    report = asyncio.run(bench_sqlite(runs, 1, tmp_path / "runs.db"))  # checks every query
    assert set(report["queries"]) == set(QUERIES)
