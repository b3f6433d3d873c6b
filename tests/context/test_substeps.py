"""The runtime's seam for journaled sub-work under a step (ModelRequestInput.steps): a
middleware's own model call or sub-agent runs once, and a resumed run reads it back."""

from __future__ import annotations

from typing import Any

import pytest

import keel
from keel import MemoryStore, UserError
from keel.runtime import Middleware, ModelNext, ModelRequestInput, SubSteps
from keel.testing import FunctionModel, ScriptedModel


class Notes(Middleware):
    """Asks a helper agent about each request, as a sub-run under the model step."""

    def __init__(self, helper: Any) -> None:
        self.helper = helper
        self.notes: list[str] = []

    async def wrap_model_request(self, inp: ModelRequestInput,
                                 next: ModelNext) -> keel.ModelResponse:
        assert inp.steps is not None
        result = await inp.steps.run_agent("note", self.helper, "say something")
        self.notes.append(result.output)
        value = await inp.steps.step("count", _three, kind="note", input_hash="h")
        assert value == 3
        return await next(inp)


async def _three() -> int:
    return 3


async def test_a_middlewares_sub_agent_and_step_are_journaled_under_the_step() -> None:
    helper = keel.Agent("helper", model=ScriptedModel(["noted"]), default_middleware=False)
    notes = Notes(helper)
    agent = keel.Agent("a", model=FunctionModel(lambda m, t, s: "done"), middleware=[notes])
    store = MemoryStore()
    result = await agent.run("hi", store=store)
    assert notes.notes == ["noted"]
    keys = [e.key for e in await store.read_journal(result.run_id)]
    assert "a/turn:0/model/note/helper/turn:0/model" in keys
    assert "a/turn:0/model/count" in keys
    report = await keel.replay_run(agent, result.run_id, store=store)
    assert report.identical
    from keel.runtime import Budget, BudgetTracker, Journal

    journal = Journal(store, result.run_id, "a", await store.read_journal(result.run_id),
                      BudgetTracker(Budget()))
    steps = SubSteps(journal=journal, key="a/turn:1/model", prefix="a")
    assert [e.key for e in steps.earlier("note")] == ["a/turn:0/model/count"]
    assert steps.earlier("model") == []  # neither the loop's own steps nor nested agents'


async def test_run_agent_needs_a_run_record() -> None:
    from keel.runtime import Budget, BudgetTracker, Journal

    journal = Journal(MemoryStore(), "r", "a", [], BudgetTracker(Budget()))
    steps = SubSteps(journal=journal, key="a/turn:0/model", prefix="a")
    with pytest.raises(UserError, match="no run record"):
        await steps.run_agent("x", keel.Agent("h", model=ScriptedModel(["y"])), "t")
    assert steps.earlier("summary") == []
