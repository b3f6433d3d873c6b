"""bench/bench_cache.py runs at a tiny size and reports every configuration."""

from __future__ import annotations

from pathlib import Path

from bench import bench_cache


async def test_the_cache_bench_runs_every_configuration(tmp_path: Path) -> None:
    hooks = await bench_cache.hook_cost(3, 1, tmp_path)
    assert set(hooks) == {"nothing (Middleware())", "cache miss (memory)",
                          "cache miss (SQLite)", "cache hit (memory)",
                          "latency budget, measuring only", "latency budget, turn_seconds=60"}
    runs = await bench_cache.measure(2, 1, tmp_path)
    assert "off" in runs and "cache miss (Redis)" in runs
    assert all(v > 0 for v in [*hooks.values(), *runs.values()])
    assert bench_cache.table(runs)[2].startswith("| off |")
