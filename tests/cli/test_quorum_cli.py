"""N-of-M approvals in `keel approvals`: a request that needs two people shows how far it has
got ("1 of 2 approved (ana)") in the list, the panel and the JSON; a partial approval leaves
it open; the same person approving twice, and the run's own user, are refused (exit 2,
nothing changed)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from keel import Agent, ApprovalRequired, tool
from keel.runtime import ApprovalPolicy, ApprovalRule
from keel.store import open_store
from keel.testing import ScriptedModel, call
from tests.cli.conftest import InvokeResult


@tool(risk="write")
def refund(order: str, amount: int) -> str:
    """Refund an order."""
    return f"refunded {amount}"


def _suspended(url: str, amount: int) -> tuple[str, str]:
    policy = ApprovalPolicy(rules=(
        ApprovalRule("refund", lambda a: a["amount"] > 100, "refunds over 100"),
        ApprovalRule("refund", lambda a: a["amount"] > 1000, "refunds over 1000",
                     reviewers=2)))
    agent = Agent("desk", model=ScriptedModel([call("refund", {"order": "A1",
                                                              "amount": amount}), "done"]),
                  tools=[refund], approval=policy)

    async def go() -> tuple[str, str]:
        async with open_store(url) as store:
            with pytest.raises(ApprovalRequired) as info:
                await agent.run("refund A1", store=store, user="cust-1")
        return info.value.run_id or "", info.value.approval_ids[0]

    return asyncio.run(go())


def _task(url: str, approval_id: str) -> Any:
    async def go() -> Any:
        async with open_store(url) as store:
            return await store.get_task(approval_id)

    return asyncio.run(go())


def test_partial_approvals_show_in_list_show_and_json(keel: Any, store: str) -> None:
    _, big = _suspended(store, 5000)
    _, small = _suspended(store, 500)
    ok: InvokeResult = keel("approvals", "approve", big, "--by", "ana", "--comment", "ok",
                            "--store", store)
    assert ok.exit_code == 0, ok
    assert "1 of 2 approved (ana)" in ok.stdout and "waits for 1 more reviewer" in ok.stdout
    assert _task(store, big).status == "open"

    listed = keel("approvals", "list", "--store", store)
    assert listed.exit_code == 0, listed
    line = next(x for x in listed.stdout.splitlines() if big in x)
    assert "1 of 2 approved (ana)" in line
    assert "approvals" in listed.stdout  # the column's head
    small_line = next(x for x in listed.stdout.splitlines() if small in x)
    assert "approved (" not in small_line  # a one-person request shows no progress

    shown = keel("approvals", "show", big, "--store", store)
    assert "2 different people must approve · 1 of 2 approved (ana)" in shown.stdout

    data = json.loads(keel("approvals", "list", "--json", "--store", store).stdout)
    row = next(r for r in data if r["approval_id"] == big)
    assert row["reviewers"] == 2 and row["progress"] == "1 of 2 approved (ana)"
    assert [(r["by"], r["approved"], r["comment"]) for r in row["reviews"]] == [
        ("ana", True, "ok")]
    other = next(r for r in data if r["approval_id"] == small)
    assert other["reviewers"] == 1 and other["reviews"] == [] and other["progress"] is None

    done = keel("approvals", "approve", big, "--by", "bob", "--store", store)
    assert done.exit_code == 0, done
    task = _task(store, big)
    assert task.status == "resolved"
    assert [r["by"] for r in task.resolution["reviews"]] == ["ana", "bob"]
    shown = json.loads(keel("approvals", "show", big, "--json", "--store", store).stdout)
    assert shown["progress"] == "2 of 2 approved (ana, bob)"


def test_approving_twice_and_self_approval_are_refused(keel: Any, store: str) -> None:
    _, big = _suspended(store, 5000)
    assert keel("approvals", "approve", big, "--by", "ana", "--store", store).exit_code == 0
    twice = keel("approvals", "approve", big, "--by", "ana", "--store", store)
    assert twice.exit_code == 2 and "ana has already approved" in twice.stderr
    own = keel("approvals", "approve", big, "--by", "cust-1", "--store", store)
    assert own.exit_code == 2 and "cannot approve their own request" in own.stderr
    task = _task(store, big)
    assert task.status == "open"
    shown = json.loads(keel("approvals", "show", big, "--json", "--store", store).stdout)
    assert [r["by"] for r in shown["reviews"]] == ["ana"]


def test_a_denial_after_one_approval_lists_both(keel: Any, store: str,
                                                tmp_path: Path) -> None:
    _, big = _suspended(store, 5000)
    assert keel("approvals", "approve", big, "--by", "ana", "--store", store).exit_code == 0
    no = keel("approvals", "deny", big, "--by", "bob", "--comment", "too much",
              "--store", store)
    assert no.exit_code == 0, no
    shown = json.loads(keel("approvals", "show", big, "--json", "--store", store).stdout)
    assert shown["status"] == "resolved"
    assert shown["progress"] == "1 of 2 approved (ana); denied by bob"
