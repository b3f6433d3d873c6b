"""bench/bench_step_allowance.py runs at a tiny size and reports every mode."""

from __future__ import annotations

from bench import bench_step_allowance


async def test_the_step_allowance_bench_runs_every_mode() -> None:
    figures = await bench_step_allowance.measure(2, 1)
    assert list(figures) == list(bench_step_allowance.MODES)
    assert all(f["ms_per_run"] > 0 for f in figures.values())
    assert figures["off"]["ratio"] == 1.0
    # a 5-step run, one new step per execution (the last one completes the run)
    assert figures["step at a time"]["executions"] == 5
    assert figures["off"]["executions"] == figures["on, never reached"]["executions"] == 1
