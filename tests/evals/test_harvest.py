"""``keel.evals.harvest``: runs of the journal become dataset cases that ``Case.from_dict``
reads back; filters pick exactly the right runs; personal data is masked unless redact=False;
expected outputs come only from runs with positive feedback; behaviour worth keeping fills
``expect``; a conversation's turn carries the conversation's user turns."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import keel
from keel import Agent, ApprovalRequired, Escalate, RunStore, tool
from keel.evals import Case, EvalError, HarvestFilter, harvest
from keel.guard import DataPolicy
from keel.testing import ScriptedModel, call
from tests._stores import BACKENDS, fresh_store

EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"


@dataclass
class Runs:
    liked: str
    disliked: str
    escalated: str
    approval: str
    turn1: str
    turn2: str
    foreign: str
    other_agent: str


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    async with fresh_store(request.param, tmp_path, "keel_harvest") as opened:
        yield opened


async def _answer(store: RunStore, text: str, answer: str, *, agent: str = "desk",
                  tenant: str | None = "acme", conversation: str | None = None,
                  before: tuple[str, ...] = ()) -> str:
    result = await Agent(agent, model=ScriptedModel([*before, answer])).run(
        text, store=store, tenant=tenant, conversation=conversation)
    return result.run_id


async def _escalated(store: RunStore) -> str:
    @tool(risk="read")
    def check_fraud(order: str) -> str:
        """Check an order."""
        raise Escalate("looks fraudulent")

    agent = Agent("fraud", model=ScriptedModel([call("check_fraud", {"order": "o1"}), "ok"]),
                  tools=[check_fraud])
    with pytest.raises(Escalate) as info:
        await agent.run("check order o1", store=store, tenant="acme")
    return info.value.run_id or ""


async def _approval(store: RunStore) -> str:
    @tool(risk="irreversible")
    def wire(amount: int) -> str:
        """Send money."""
        return f"sent {amount}"

    agent = Agent("desk", model=ScriptedModel([call("wire", {"amount": 5}), "done"]),
                  tools=[wire])
    with pytest.raises(ApprovalRequired) as info:
        await agent.run("wire 5 to my landlord", store=store, tenant="acme")
    return info.value.run_id or ""


@pytest.fixture
async def runs(store: RunStore) -> Runs:
    made = Runs(
        liked=await _answer(store, f"Where is my order? Mail me at {EMAIL}", "It ships Monday"),
        disliked=await _answer(store, f"Card {CARD} was charged twice", "Nothing to do"),
        escalated=await _escalated(store),
        approval=await _approval(store),
        turn1=await _answer(store, "hi", "hello", conversation="c1"),
        turn2=await _answer(store, "and order 7?", "order 7 left", conversation="c1",
                              before=("hello",)),
        foreign=await _answer(store, "bonjour", "salut", tenant="globex"),
        other_agent=await _answer(store, "route me", "billing", agent="router"),
    )
    await keel.record_feedback(made.liked, thumbs="up", by="u1", store=store)
    await keel.record_feedback(made.disliked, thumbs="down", by="u2", store=store,
                               comment=f"wrong: write to {EMAIL}")
    await keel.record_feedback(made.escalated, score=0.9, store=store)
    await keel.record_feedback(made.turn2, comment="meh", store=store)
    return made


def _ids(cases: list[Case]) -> set[str]:
    return {c.id for c in cases}


async def test_every_harvested_case_reads_back(store: RunStore, runs: Runs) -> None:
    cases = await harvest(store)
    assert _ids(cases) == set(vars(runs).values())
    for case in cases:
        line = json.dumps(case.to_dict())
        assert Case.from_dict(json.loads(line), source="harvest.jsonl", line=1) == case
        assert case.metadata["source_run"] == case.id


async def test_personal_data_is_masked_by_default(store: RunStore, runs: Runs) -> None:
    text = json.dumps([c.to_dict() for c in await harvest(store)])
    assert EMAIL not in text and CARD not in text and "4111" not in text
    by_id = {c.id: c for c in await harvest(store)}
    assert by_id[runs.liked].input == "Where is my order? Mail me at [EMAIL]"
    assert by_id[runs.disliked].input == "Card [CARD ****1111] was charged twice"
    assert by_id[runs.disliked].metadata["feedback"]["comments"] == ["wrong: write to [EMAIL]"]
    clear = {c.id: c for c in await harvest(store, redact=False)}
    assert clear[runs.liked].input == f"Where is my order? Mail me at {EMAIL}"
    strict = DataPolicy({"exports": {"email": "block"}})
    withheld = {c.id: c for c in await harvest(store, policy=strict)}
    assert EMAIL not in str(withheld[runs.liked].input)


FILTERS: list[tuple[HarvestFilter, set[str]]] = [
    (HarvestFilter(feedback="negative"), {"disliked"}),
    (HarvestFilter(feedback="positive"), {"liked", "escalated"}),
    (HarvestFilter(escalated=True), {"escalated"}),
    (HarvestFilter(approval=True), {"approval"}),
    (HarvestFilter(agent="fraud"), {"escalated"}),
    (HarvestFilter(agent="router"), {"other_agent"}),
    (HarvestFilter(tenant="globex"), {"foreign"}),
    (HarvestFilter(status="suspended"), {"escalated", "approval"}),
    (HarvestFilter(status="completed", escalated=False, approval=False, tenant="acme"),
     {"liked", "disliked", "turn1", "turn2", "other_agent"}),
    (HarvestFilter(since=4102444800.0), set()),
]


async def test_filters_pick_exactly_the_right_runs(store: RunStore, runs: Runs) -> None:
    names = {v: k for k, v in vars(runs).items()}
    for filt, want in FILTERS:
        assert {names[c.id] for c in await harvest(store, filt)} == want, filt


async def test_limit_keeps_the_newest_runs(store: RunStore, runs: Runs) -> None:
    cases = await harvest(store, HarvestFilter(limit=2))
    assert [c.id for c in cases] == [runs.other_agent, runs.foreign]


async def test_what_a_case_holds(store: RunStore, runs: Runs) -> None:
    by_id = {c.id: c for c in await harvest(store)}
    liked, disliked = by_id[runs.liked], by_id[runs.disliked]
    assert liked.expected == "It ships Monday"
    assert liked.tags == ("agent:desk", "status:completed", "feedback:positive")
    assert disliked.expected is None, "a disliked answer is never the reference"
    assert "feedback:negative" in disliked.tags
    escalated = by_id[runs.escalated]
    assert (escalated.expect.escalate, escalated.expected) == (True, None)
    assert "escalated" in escalated.tags
    assert by_id[runs.approval].expect.approval is True
    assert by_id[runs.approval].to_dict()["expect"] == {"approval": True}
    assert by_id[runs.turn2].input == ({"role": "user", "content": "hi"},
                                       {"role": "user", "content": "and order 7?"})
    assert by_id[runs.turn2].turns == ["hi", "and order 7?"]
    assert by_id[runs.turn1].input == "hi"
    assert "feedback" not in by_id[runs.other_agent].metadata


@pytest.mark.parametrize(("kwargs", "fix"), [
    ({"status": "done"}, "not a run status"),
    ({"feedback": "bad"}, "'negative' or 'positive'"),
    ({"escalated": "yes"}, "True, False or None"),
    ({"limit": 0}, "1 to 10,000"),
    ({"limit": 10**6}, "1 to 10,000"),
    ({"since": "yesterday"}, "epoch seconds"),
    ({"tenant": ""}, "tenant= is empty"),
    ({"agent": "a" * 300}, "at most 200"),
])
def test_bad_filters_name_the_fix(kwargs: dict[str, Any], fix: str) -> None:
    with pytest.raises(keel.UserError, match=fix):
        HarvestFilter(**kwargs)


async def test_bad_arguments_name_the_fix(store: RunStore) -> None:
    with pytest.raises(EvalError, match="needs a RunStore"):
        await harvest("memory:")  # type: ignore[arg-type]
    with pytest.raises(EvalError, match="DataPolicy"):
        await harvest(store, policy="strict")  # type: ignore[arg-type]
