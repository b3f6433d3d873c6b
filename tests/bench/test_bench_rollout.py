"""bench/bench_rollout.py at a tiny size, so it cannot rot (speed is never asserted): it
runs, prints its three comparisons, and the "off" side really has no version."""

from __future__ import annotations

import pytest
from bench.bench_rollout import _VersionOff, build, main


def test_bench_rollout_runs_at_a_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    out = main(["--builds", "4", "--runs", "4"])
    assert set(out) == {"build", "run", "rollout"}
    assert all(a > 0 and b > 0 for a, b in out.values())
    printed = capsys.readouterr().out
    assert "Rollout.run vs agent.run" in printed and "x" in printed
    with _VersionOff():
        assert build().version == "off"
    assert len(build().version) == 16
