"""examples/routing.py runs offline and shows what its docstring claims."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from keel import MemoryStore
from keel.runtime import replay_run
from tests.examples.conftest import live_example

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "routing.py"


async def test_the_follow_up_is_routed_to_returns_by_its_context(example: ModuleType) -> None:
    store = MemoryStore()
    result = await example.flow.run(example.INPUT, store=store)
    decision = result.output.decision
    assert decision.route == "returns" and decision.action == "route"
    assert decision.router == "hybrid/embedding" and decision.confidence >= 0.6
    assert result.output.output == example.ANSWERS["returns"]
    entries = await store.read_journal(result.run_id)
    route = [e for e in entries if e.key == "desk/route" and e.phase == "result"]
    assert route and route[0].data["confidence"] == pytest.approx(decision.confidence)
    # the specialist continued the conversation: it saw the earlier turns
    requests = example.routes[2].target.model.requests
    assert any("blender" in m.text for m in requests[0])
    assert (await replay_run(example.flow, result.run_id, store=store)).identical
    # the last message alone is not enough: the desk asks instead of guessing
    alone = await example.flow.decide("and the kettle from the same order?")
    assert alone.action == "clarify" and alone.question


async def test_rules_take_the_obvious_cases_first(example: ModuleType) -> None:
    decision = await example.flow.decide("I forgot my password")
    assert decision.route == "account" and decision.router == "hybrid/rules"
    assert decision.confidence == 1.0


def test_it_follows_keel_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_MODEL", "openai:gpt-4o-mini")
    module = live_example(EXAMPLE)
    assert all(r.target.model == "openai:gpt-4o-mini" for r in module.routes)
