"""bench/bench_paging.py runs at a tiny size and reports every configuration."""

from __future__ import annotations

from bench import bench_paging


async def test_the_paging_bench_runs_every_configuration() -> None:
    steps = await bench_paging.measure(3, 1)
    assert len(steps) == 5 and all(s > 0 for s in steps.values())
    hooks = await bench_paging.hooks(1, n=50)
    assert len(hooks) == 3 and all(s > 0 for s in hooks.values())
    tokens = await bench_paging.tokens()
    assert tokens["large result as a handle's summary"] < tokens[
        "large result cut at the output limit"] / 10
