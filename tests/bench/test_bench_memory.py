"""The memory benchmark at a tiny size, so it cannot rot (speed is never asserted)."""

from __future__ import annotations

import os

import pytest
from bench.bench_memory import facts, main

pytestmark = pytest.mark.slow

PG_URL = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def test_the_memory_benchmark_gives_latencies_for_both_shapes() -> None:
    out = main(["--items", "200", "--queries", "5", "--postgres", PG_URL])
    for backend in ("sqlite", "postgres"):
        assert out[backend]["items"] == 200
        for shape, per_user in (("users_1", 200), ("users_100", 2)):
            figures = out[backend][shape]
            assert figures["items_per_user"] == per_user
            assert 0 < figures["p50_ms"] <= figures["p95_ms"] and figures["first_ms"] > 0
            assert figures["remember_ms"] > 0
    assert len(set(facts(50))) == 50
