"""bench/bench_history.py runs at a tiny size and reports every configuration."""

from __future__ import annotations

from bench import bench_history


async def test_the_history_bench_runs_every_configuration() -> None:
    best = await bench_history.measure(2, 30, 1)
    assert set(best) == set(bench_history.CONFIGS)
    assert all(set(f) == {"short", "long", "short_own", "long_own"} for f in best.values())
    assert "vs off" in bench_history.report(best, 2, 30)
