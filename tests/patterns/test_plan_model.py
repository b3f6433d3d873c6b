"""Plans are checked when built: the error names the step (and the cycle)."""

from __future__ import annotations

from typing import Any

import pytest

from keel import Agent, ConfigError, tool
from keel.patterns import Plan, PlanDraft, Planner, PlanStep
from keel.patterns._plan import bound_draft, find_cycle, revise
from keel.testing import ScriptedModel


def s(id: str, *after: str, agent: str | None = "w", tool: str | None = None) -> PlanStep:
    return PlanStep(id=id, description=id, depends_on=list(after), agent=agent, tool=tool)


W = Agent("w", model=ScriptedModel(["ok"]))


def test_a_cycle_is_named() -> None:
    cycle = r"plan step a.*dependency cycle: a -> c -> b -> a \(each depends on the next\)"
    with pytest.raises(ConfigError, match=cycle):
        Plan(steps=[s("a", "c"), s("b", "a"), s("c", "b"), s("d")])
    assert find_cycle([s("x"), s("y", "x")]) is None


@pytest.mark.parametrize(("steps", "message"), [
    ([], "'plan'.*has no steps"),
    ([s("a"), s("a")], "plan step a.*used twice"),
    ([s("a", "nope")], "plan step a.*depends on unknown step 'nope'"),
    ([s("a", "a")], "plan step a.*depends on itself"),
    ([s("a/b")], "plan step 'a/b'.*letters, digits"),
    ([s("a", agent=None)], "plan step a.*exactly one of 'agent' or 'tool'"),
    ([s("a", tool="t")], "plan step a.*exactly one of 'agent' or 'tool'"),
])
def test_bad_plans_name_the_part(steps: list[PlanStep], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Plan(steps=steps)


def test_unknown_workers_are_rejected_when_the_planner_is_built() -> None:
    with pytest.raises(ConfigError, match=r"plan step b.*unknown agent 'ghost'; known agents: w"):
        Planner("p", workers=[W], plan=Plan(steps=[s("a"), s("b", agent="ghost")]))
    with pytest.raises(ConfigError, match=r"plan step a.*unknown tool 'zap'"):
        Planner("p", workers=[W], plan=Plan(steps=[s("a", agent=None, tool="zap")]))


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"max_replans": -1}, "max_replans"),
    ({"max_replans": 1.5}, "max_replans"),
    ({"max_step_attempts": 0}, "max_step_attempts"),
    ({"mode": "yolo"}, "mode"),
    ({"on_failure": "pray"}, "on_failure"),
    ({"step_budget": 2.0}, "step_budget"),
    ({"planner": "gpt"}, "planner"),
    ({"workers": [W, W]}, "workers"),
    ({"workers": ["w"]}, "workers"),
])
def test_bad_settings_name_the_setting(kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"planner": Agent("planner", model=ScriptedModel([])),
                            "workers": [W], **kwargs}
    with pytest.raises(ConfigError, match=f"'{field}'"):
        Planner("p", **args)


def test_a_planner_or_a_plan_is_needed_and_refining_needs_a_planner() -> None:
    with pytest.raises(ConfigError, match="'planner'"):
        Planner("p", workers=[W])
    with pytest.raises(ConfigError, match=r"'mode'.*planner"):
        Planner("p", workers=[W], plan=Plan(steps=[s("a")]), mode="plan-and-refine")


def test_tools_that_need_approval_are_refused() -> None:
    @tool(risk="irreversible")
    def wire(amount: int) -> str:
        """Send money."""
        return "sent"

    with pytest.raises(ConfigError, match=r"'tools'.*wire.*approval"):
        Planner("p", plan=Plan(steps=[s("a", agent=None, tool="wire")]), tools=[wire])


def test_a_bound_draft_rejects_unknown_workers_as_validation_errors() -> None:
    draft = bound_draft(["w"], [])
    with pytest.raises(ValueError, match="unknown agent 'x'"):
        draft.model_validate({"steps": [{"id": "a", "description": "d", "agent": "x"}]})
    revision = bound_draft(["w"], [], done=["a"])
    ok = revision.model_validate({"steps": [{"id": "b", "description": "d", "agent": "w",
                                            "depends_on": ["a"]}]})
    assert isinstance(ok, PlanDraft)
    assert revision.model_validate({"steps": []}).steps == []


def test_revise_keeps_completed_steps_and_replaces_the_rest() -> None:
    plan = Plan(steps=[s("a"), s("b", "a"), s("c", "b")])
    plan.steps[0].status, plan.steps[0].result = "complete", "A"
    plan.steps[1].status, plan.steps[1].error = "failed", "no"
    draft = PlanDraft.model_validate({"steps": [
        {"id": "a", "description": "again", "agent": "w"},
        {"id": "d", "description": "d", "agent": "w", "depends_on": ["a"]}]})
    new = revise(plan, draft)
    assert new.version == 1
    assert [(x.id, x.status, x.result) for x in new.steps] == [
        ("a", "complete", "A"), ("b", "failed", None), ("d", "pending", None)]
    assert new.get("a").description == "a"  # the completed step is kept as it was
