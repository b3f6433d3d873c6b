"""The failure-modes benchmark at a tiny size, so it cannot rot: it runs, the report it times
reads every run, and the figures are positive (speed is never asserted)."""

from __future__ import annotations

from bench.bench_failure_modes import measure


async def test_the_benchmark_runs_and_gives_sane_figures() -> None:
    out = await measure(runs=40, rounds=1)
    assert out["runs"] == 40
    assert all(out[k] > 0 for k in ("read_s", "stats_s", "failure_modes_s", "vs_read"))
