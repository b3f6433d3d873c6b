"""Approvals that need several different people (N-of-M): each approval short of the last is
kept, the last (or any denial) decides, the journal keeps every person's decision, and the
rules hold: one person counts once, nobody approves their own request, no edited arguments,
no in-process reviewer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from keel import (
    Agent,
    ApprovalRequired,
    ConfigError,
    MemoryStore,
    RunStore,
    TaskConflict,
    UserError,
    tool,
)
from keel.runtime import ApprovalPolicy, ApprovalRule, Review, decide_approval
from keel.store import SQLiteStore
from keel.testing import ScriptedModel, call


def desk(amount: int, *, policy: ApprovalPolicy | None = None) -> tuple[list[Any], Agent]:
    effects: list[Any] = []

    @tool(risk="write")
    def refund(order: str, amount: int) -> str:
        """Refund an order."""
        effects.append(("refund", order, amount))
        return f"refunded {amount}"

    policy = policy or ApprovalPolicy(rules=(
        ApprovalRule("refund", lambda a: a["amount"] > 100, "refunds over 100"),
        ApprovalRule("refund", lambda a: a["amount"] > 1000, "refunds over 1000",
                     reviewers=2),
    ))
    model = ScriptedModel([call("refund", {"order": "A1", "amount": amount}), "done"])
    return effects, Agent("desk", model=model, tools=[refund], approval=policy)


async def _suspended(agent: Agent, store: RunStore) -> tuple[str, str]:
    with pytest.raises(ApprovalRequired) as info:
        await agent.run("refund A1", store=store, user="cust-1", tenant="acme")
    [approval_id] = info.value.approval_ids
    return info.value.run_id or "", approval_id


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_two_different_people_must_approve(kind: str, tmp_path: Path) -> None:
    store: RunStore = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "r.db")
    effects, agent = desk(5000)
    run_id, approval_id = await _suspended(agent, store)
    task = await store.get_task(approval_id)
    assert task.data["reviewers"] == 2

    partial = await decide_approval(approval_id, store=store, approve=True, by="ana",
                                    comment="checked the order")
    assert partial.status == "open" and [r["by"] for r in partial.data["reviews"]] == ["ana"]
    assert (await store.get_task(approval_id)).status == "open"
    assert (await store.get_run(run_id)).status == "suspended", "one approval of two ran it"
    with pytest.raises(ApprovalRequired):
        await agent.resume(run_id, store=store)
    assert effects == []

    with pytest.raises(TaskConflict, match="ana has already approved"):
        await decide_approval(approval_id, store=store, approve=True, by="ana")
    with pytest.raises(UserError, match="own request"):
        await decide_approval(approval_id, store=store, approve=True, by="cust-1")
    with pytest.raises(UserError, match="edited arguments are refused"):
        await decide_approval(approval_id, store=store, approve=True, by="bob",
                              edited_args={"order": "A1", "amount": 10})
    assert (await store.get_task(approval_id)).status == "open"

    done = await decide_approval(approval_id, store=store, approve=True, by="bob")
    assert done.status == "resolved"
    assert (await agent.resume(run_id, store=store)).output == "done"
    assert effects == [("refund", "A1", 5000)]
    [decision] = [e for e in await store.read_journal(run_id)
                  if e.key.endswith("/approval") and e.phase == "result"]
    assert decision.data["by"] == "bob" and decision.data["approved"] is True
    assert [(r["by"], r["approved"], r["comment"]) for r in decision.data["reviews"]] == [
        ("ana", True, "checked the order"), ("bob", True, "")]
    with pytest.raises(TaskConflict):
        await decide_approval(approval_id, store=store, approve=True, by="carol")
    history = await store.setting_history(f"approval-reviews:{approval_id}")
    assert [s.updated_by for s in history] == ["ana", "bob"]


async def test_a_denial_after_one_approval_decides_and_keeps_both() -> None:
    store = MemoryStore()
    effects, agent = desk(5000)
    run_id, approval_id = await _suspended(agent, store)
    await decide_approval(approval_id, store=store, approve=True, by="ana")
    with pytest.raises(UserError, match="comment"):
        await decide_approval(approval_id, store=store, approve=False, by="bob")
    await decide_approval(approval_id, store=store, approve=False, by="bob",
                          comment="the customer already got a replacement")
    assert (await agent.resume(run_id, store=store)).output == "done"
    assert effects == []
    [decision] = [e for e in await store.read_journal(run_id)
                  if e.key.endswith("/approval") and e.phase == "result"]
    assert decision.data["approved"] is False
    assert [(r["by"], r["approved"]) for r in decision.data["reviews"]] == [
        ("ana", True), ("bob", False)]


async def test_one_reviewer_requests_are_unchanged() -> None:
    store = MemoryStore()
    effects, agent = desk(500)
    run_id, approval_id = await _suspended(agent, store)
    task = await store.get_task(approval_id)
    assert "reviewers" not in task.data
    done = await decide_approval(approval_id, store=store, approve=True, by="cust-1")
    assert done.status == "resolved"  # a one-person request keeps today's rules
    await agent.resume(run_id, store=store)
    assert effects == [("refund", "A1", 500)]


async def test_reviewers_approving_at_once_count_once_each() -> None:
    store = MemoryStore()
    _, agent = desk(5000)
    run_id, approval_id = await _suspended(agent, store)
    await decide_approval(approval_id, store=store, approve=True, by="ana")
    outcomes = await asyncio.gather(
        *(decide_approval(approval_id, store=store, approve=True, by=who)
          for who in ("bob", "carol", "dan")), return_exceptions=True)
    resolved = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(resolved) == 1 and resolved[0].status == "resolved"
    assert all(isinstance(o, TaskConflict) for o in outcomes if isinstance(o, BaseException))
    [decision] = [e for e in await store.read_journal(run_id)
                  if e.key.endswith("/approval") and e.phase == "result"]
    assert len(decision.data["reviews"]) == 2 and decision.data["reviews"][0]["by"] == "ana"


async def test_an_in_process_reviewer_never_decides_a_multi_person_request() -> None:
    asked: list[Any] = []

    def reviewer(request: dict[str, Any]) -> Review:
        asked.append(request)
        return Review(approve=True, by="bot")

    store = MemoryStore()
    effects, agent = desk(5000, policy=ApprovalPolicy(reviewers=2, reviewer=reviewer,
                                                      risks=frozenset({"write"})))
    await _suspended(agent, store)
    assert asked == [] and effects == []


@pytest.mark.parametrize("bad", [0, 11, True, 1.5, "2"])
def test_bad_reviewer_counts_are_refused(bad: Any) -> None:
    with pytest.raises(ConfigError, match="reviewers"):
        ApprovalPolicy(reviewers=bad)
    with pytest.raises(ConfigError, match="reviewers"):
        ApprovalRule("refund", lambda a: True, reviewers=bad)
