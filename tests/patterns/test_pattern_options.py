"""Every pattern takes the same FlowOptions (budget, durability, middleware) and uses them:
GroupChat, Marketplace and Planner no longer lack durability and middleware."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from keel import Agent, Budget, BudgetExceeded, MemoryStore, Middleware, UserError
from keel.core import Message, ModelResponse, ToolCallPart, ToolSpec
from keel.patterns import GroupChat, Marketplace, Plan, Planner
from keel.runtime import Flow, RunEndInput, RunStartInput
from keel.store import JournalEntry
from keel.testing import FunctionModel, ScriptedModel


class Seen(Middleware):
    def __init__(self) -> None:
        self.events: list[str] = []

    async def on_run_start(self, inp: RunStartInput) -> None:
        self.events.append(f"start {inp.agent}")

    async def on_run_end(self, inp: RunEndInput) -> None:
        self.events.append(f"end {inp.agent} {inp.status}")


class CountingStore(MemoryStore):
    """Counts the writes that carry journal records (one per commit)."""

    def __init__(self) -> None:
        super().__init__()
        self.commits = 0

    async def append(self, run_id: str, entries: Sequence[JournalEntry], *,
                     lease: str | None = None) -> None:
        self.commits += 1
        await super().append(run_id, entries, lease=lease)


def chat(**options: Any) -> GroupChat:
    peers = [Agent(n, model=ScriptedModel([f"{n}1", f"{n}2", f"{n}3"])) for n in ("ana", "bo")]
    return GroupChat("chat", peers, max_turns=4, **options)


def market(**options: Any) -> Marketplace:
    def bidder(name: str) -> Agent[Any]:
        def answer(messages: list[Message], tools: list[ToolSpec], settings: Any) -> Any:
            if any(t.name == "final_result" for t in tools):
                args = {"estimate": 1, "confidence": 0.9, "plan": "p"}
                return ModelResponse(parts=(ToolCallPart(
                    call_id="b", tool_name="final_result", arguments=json.dumps(args)),),
                    finish_reason="tool_calls")
            return f"{name} did it"
        return Agent(name, model=FunctionModel(answer))
    return Marketplace("market", [bidder("a"), bidder("b")], **options)


def planner(**options: Any) -> Planner:
    workers = [Agent(n, model=ScriptedModel([f"{n} done"])) for n in ("w1", "w2", "w3")]
    plan = Plan.model_validate({"steps": [
        {"id": "s1", "description": "one", "agent": "w1"},
        {"id": "s2", "description": "two", "agent": "w2", "depends_on": ["s1"]},
        {"id": "s3", "description": "three", "agent": "w3", "depends_on": ["s2"]}]})
    return Planner("plan", plan=plan, workers=workers, on_failure="fail", **options)


PATTERNS: dict[str, Callable[..., Flow[Any]]] = {
    "group_chat": chat, "marketplace": market, "planning": planner}


@pytest.mark.parametrize("make", PATTERNS.values(), ids=PATTERNS.keys())
async def test_a_middleware_given_to_the_pattern_sees_its_run(make: Callable[..., Flow[Any]]
                                                              ) -> None:
    seen = Seen()
    pattern = make(middleware=[seen])
    await pattern.run("go", store=MemoryStore())
    assert seen.events == [f"start {pattern.name}", f"end {pattern.name} completed"]


@pytest.mark.parametrize("make", PATTERNS.values(), ids=PATTERNS.keys())
async def test_the_patterns_durability_decides_how_often_the_journal_commits(
        make: Callable[..., Flow[Any]]) -> None:
    commits: dict[str, int] = {}
    for mode in ("always", "batched"):
        store = CountingStore()
        result = await make(durability=mode).run("go", store=store)
        assert (await store.get_run(result.run_id)).status == "completed"
        commits[mode] = store.commits
    assert commits["batched"] < commits["always"], commits


@pytest.mark.parametrize("make", PATTERNS.values(), ids=PATTERNS.keys())
async def test_the_budget_option_bounds_the_run(make: Callable[..., Flow[Any]]) -> None:
    with pytest.raises(BudgetExceeded):
        await make(budget=Budget(max_steps=1)).run("go", store=MemoryStore())


@pytest.mark.parametrize("make", PATTERNS.values(), ids=PATTERNS.keys())
def test_an_unknown_option_is_a_clear_error(make: Callable[..., Flow[Any]]) -> None:
    with pytest.raises(UserError, match=r"unknown option durabilty= \(did you mean durab"):
        make(durabilty="always")
