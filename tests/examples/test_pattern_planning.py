"""examples/planning.py runs offline and shows what its docstring claims."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from keel import MemoryStore
from keel.patterns import Plan
from keel.runtime import replay_run
from tests.examples.conftest import live_example

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "planning.py"


async def test_the_plan_runs_with_a_retried_tool_step_and_a_written_answer(
        example: ModuleType) -> None:
    store = MemoryStore()
    result = await example.flow.run(example.INPUT, store=store)
    assert result.output.startswith("About 1541 EUR")
    assert example._calls == ["JPY", "JPY"]  # failed once, retried once
    entries = await store.read_journal(result.run_id)
    plans = [e for e in entries if e.kind == "plan"]
    final = Plan.model_validate(plans[-1].data)
    assert [(s.id, s.status, s.attempts) for s in final.steps] == [
        ("flights", "complete", 1), ("hotels", "complete", 1), ("rate", "complete", 2),
        ("total", "complete", 1)]
    assert final.get("rate").result == 0.0062
    wave = plans[1].data["steps"]  # flights, hotels and rate started together
    assert [s["status"] for s in wave] == ["in_progress"] * 3 + ["pending"]
    outcomes = [e.key for e in entries if e.kind == "plan_step"]
    assert "trip/step.rate.v0.1/outcome" in outcomes
    assert outcomes[-1] == "trip/step.total.v0.1/outcome"
    assert "rates service unavailable" in str(
        next(e.data for e in entries if e.key == "trip/step.rate.v0.1/outcome"))
    report = await replay_run(example.flow, result.run_id, store=store)
    assert report.identical, report


def test_with_keel_model_every_agent_uses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_MODEL", "openai:gpt-4o-mini")
    module = live_example(EXAMPLE)
    assert {a.model for a in module.flow.agents()} == {"openai:gpt-4o-mini"}
