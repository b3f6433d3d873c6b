"""bench/events_bus.py runs at a tiny size on every bus and prints its table."""

from __future__ import annotations

import pytest

from bench import events_bus


async def test_the_events_bench_measures_every_bus() -> None:
    results = await events_bus.run(["memory", "redis", "nats"], 200, 50, 2000.0)
    assert [r.backend for r in results] == ["memory", "redis", "nats"]
    for r in results:
        assert r.unique == 200 and r.delivered >= 200
        assert r.publish_per_s > 0 and 0 < r.p50_ms <= r.p95_ms <= r.p99_ms
    text = events_bus.table(results)
    assert text.count("\n") == 3 and "p99 ms" in text


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(SystemExit, match="unknown backend"):
        events_bus.main(["--events", "10", "--backends", "kafka"])
