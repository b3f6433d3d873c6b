"""bench/bench_agent_build.py at a tiny size, so it cannot rot (speed is never asserted), and
what its uncached side relies on: emptying the caches makes the next build do the work again."""

from __future__ import annotations

import pytest
from bench.bench_agent_build import build, forget, main

from keel.guard import _data_policy
from keel.tools import _schema_tool


def test_bench_runs_and_prints_both_sides(capsys: pytest.CaptureFixture[str]) -> None:
    out = main(["--agents", "3", "--rounds", "1"])
    assert out["cached_us"] > 0 and out["uncached_us"] > 0
    text = capsys.readouterr().out
    assert "cached" in text and "uncached" in text and "x" in text


def test_forgetting_empties_both_caches_and_a_build_fills_them() -> None:
    build()
    forget()
    assert _schema_tool._check_against_metaschema.cache_info().currsize == 0
    assert _data_policy._hints.cache_info().currsize == 0
    build()
    assert _schema_tool._check_against_metaschema.cache_info().currsize > 0
    assert _data_policy._hints.cache_info().currsize > 0
