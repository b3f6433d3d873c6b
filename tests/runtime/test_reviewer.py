"""An in-process reviewer decides approval requests as they are made, journaled like a
person's decision, without suspending the run."""

from __future__ import annotations

from typing import Any

import pytest

from keel import Agent, ApprovalRequired, MemoryStore, Review, replay_run, tool
from keel.runtime import ApprovalPolicy
from keel.store import HumanTask, SQLiteStore, TaskFilter
from keel.testing import ScriptedModel, call


def bank() -> tuple[list[Any], Any]:
    effects: list[Any] = []

    @tool(risk="irreversible")
    def wire(amount: int, to: str) -> str:
        """Send money."""
        effects.append(("wire", amount, to))
        return f"sent {amount} to {to}"

    return effects, wire


def agent_with(reviewer: Any, wire: Any, script: list[Any] | None = None) -> Agent[Any]:
    model = ScriptedModel(script or [call("wire", {"amount": 50, "to": "bob"}), "done"],
                          record_requests=True)
    return Agent("pay", model=model, tools=[wire],
                 approval=ApprovalPolicy(reviewer=reviewer))


async def test_an_approving_reviewer_lets_the_run_go_on_and_is_journaled(tmp_path: Any) -> None:
    effects, wire = bank()
    seen: list[dict[str, Any]] = []

    def reviewer(request: dict[str, Any]) -> Review:
        seen.append(request)
        return Review(approve=request["arguments"]["amount"] <= 100, by="policy-engine",
                      comment="small amount")

    agent = agent_with(reviewer, wire)
    store = SQLiteStore(tmp_path / "runs.db")
    result = await agent.run("pay bob 50", store=store)
    assert result.output == "done"
    assert effects == [("wire", 50, "bob")]
    assert seen[0]["tool"] == "wire" and "irreversible" in seen[0]["reason"]
    gate = [e for e in await store.read_journal(result.run_id) if e.key.endswith("/approval")]
    assert [(e.phase, e.kind) for e in gate] == [("intent", "approval"), ("result", "approval")]
    assert gate[1].data["by"] == "policy-engine" and gate[1].data["approved"] is True
    assert await store.list_tasks(TaskFilter(kind="approval")) == []  # nobody's queue
    # Replay reads the decision back: the reviewer is not asked again.
    report = await replay_run(agent, result.run_id, store=store)
    assert report.identical, report.reason
    assert len(seen) == 1
    await store.close()


async def test_a_denying_async_reviewer_reaches_the_model_with_its_comment() -> None:
    effects, wire = bank()

    async def reviewer(request: dict[str, Any]) -> Review:
        return Review(approve=False, by="judge", comment="bob is not a payee")

    agent = agent_with(reviewer, wire, [call("wire", {"amount": 50, "to": "bob"}),
                                        "I could not pay."])
    result = await agent.run("pay bob", store=MemoryStore())
    assert result.output == "I could not pay." and effects == []
    text = agent.resolved_model().requests[-1][-1].parts[0].content  # type: ignore[attr-defined]
    assert "approval_denied" in text and "bob is not a payee" in text and "judge" in text


@pytest.mark.parametrize("answer", [
    None,  # left to a person
    Review(approve=False, by="judge"),  # a denial without a comment is not a decision
    Review(approve=True, by=""),  # nobody decided
    Review(approve=True, by="judge", edited_args={"amount": "lots"}),  # not the schema
    "yes",  # not a Review
    RuntimeError("the policy service is down"),  # raises
])
async def test_a_reviewer_that_does_not_decide_leaves_it_to_a_person(answer: Any) -> None:
    effects, wire = bank()

    def reviewer(request: dict[str, Any]) -> Any:
        if isinstance(answer, Exception):
            raise answer
        return answer

    agent = agent_with(reviewer, wire)
    store = MemoryStore()
    with pytest.raises(ApprovalRequired):
        await agent.run("pay bob 50", store=store)
    assert effects == [], "an undecided call ran"
    [task] = await store.list_tasks(TaskFilter(kind="approval"))
    assert task.status == "open"


async def suspended_for_a_person(wire: Any, store: MemoryStore) -> tuple[str, HumanTask]:
    """A run of the agent without a reviewer, suspended on its approval: (run id, task)."""
    with pytest.raises(ApprovalRequired) as info:
        await agent_with(None, wire).run("pay bob 50", store=store)
    [task] = await store.list_tasks(TaskFilter(kind="approval"))
    return info.value.run_id or "", task


async def test_a_request_in_a_persons_queue_stays_there() -> None:
    effects, wire = bank()
    store = MemoryStore()
    run_id, _ = await suspended_for_a_person(wire, store)
    # The same agent, now with a reviewer: the request a person was asked stays theirs.
    reviewed = agent_with(lambda r: Review(approve=True, by="policy"), wire)
    with pytest.raises(ApprovalRequired):
        await reviewed.resume(run_id, store=store)
    assert effects == []
    [task] = await store.list_tasks(TaskFilter(kind="approval"))
    assert task.status == "open"


async def test_a_request_written_just_before_a_crash_goes_to_the_reviewer() -> None:
    effects, wire = bank()
    store = MemoryStore()
    run_id, task = await suspended_for_a_person(wire, store)
    store._tasks.pop(task.task_id)  # as if the process died between the request and its task
    reviewed = agent_with(lambda r: Review(approve=True, by="policy"), wire)
    result = await reviewed.resume(run_id, store=store)
    assert result.output == "done" and effects == [("wire", 50, "bob")]


def test_a_reviewer_must_be_callable() -> None:
    from keel import ConfigError

    with pytest.raises(ConfigError, match="reviewer"):
        ApprovalPolicy(reviewer="yes")  # type: ignore[arg-type]
