"""The runtime's calls that act on one run or human task (``decide_approval``,
``claim_escalation``, ``resolve_escalation``, ``cancel_run``) take ``tenant=``: scoped to a
tenant, another tenant's task or run (or one stored without a tenant) is TaskNotFound /
RunNotFound with an unknown id's message, and nothing in the store changes. The check is the
store's query (see ``keel.testing.IsolationConformance``); these tests hold the runtime to
passing the tenant on every read and write, on each backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest

from keel import (
    Agent,
    ApprovalRequired,
    Escalate,
    MemoryStore,
    RunNotFound,
    RunStore,
    StoreError,
    TaskNotFound,
    decide_approval,
    tool,
)
from keel.runtime import cancel_run, claim_escalation, resolve_escalation
from keel.store import HumanTask, RunFilter, TaskFilter
from keel.testing import ScriptedModel, call
from tests._stores import BACKENDS, fresh_store

#: Run-id prefix -> tenant (None: a run stored without one).
TENANTS: dict[str, str | None] = {"a": "acme", "g": "globex", "n": None}


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    async with fresh_store(request.param, tmp_path, "keel_isolation") as opened:
        yield opened


def _payer() -> Agent[Any]:
    @tool(risk="irreversible")
    def wire(amount: int) -> str:
        """Send money."""
        return f"sent {amount}"

    return Agent("payer", model=ScriptedModel([call("wire", {"amount": 5}), "paid"]),
                 tools=[wire])


def _checker() -> Agent[Any]:
    @tool
    def check_fraud(order: str) -> str:
        """Check an order."""
        raise Escalate("looks fraudulent")

    return Agent("fraud", model=ScriptedModel([call("check_fraud", {"order": "o1"}), "ok"]),
                 tools=[check_fraud])


async def _world(store: RunStore) -> dict[str, HumanTask]:
    """Per tenant: a run waiting for an approval (``<p>-pay``) and one waiting for an
    escalation (``<p>-esc``). Returns their tasks by run id."""
    for prefix, tenant in TENANTS.items():
        with pytest.raises(ApprovalRequired):
            await _payer().run("pay", store=store, run_id=f"{prefix}-pay", tenant=tenant)
        with pytest.raises(Escalate):
            await _checker().run("check o1", store=store, run_id=f"{prefix}-esc",
                                 tenant=tenant)
    return {t.run_id: t for t in await store.list_tasks(TaskFilter(limit=100))}


async def _snapshot(store: RunStore) -> Any:
    runs = await store.list_runs(RunFilter(limit=100))
    return (runs, {r.run_id: await store.read_journal(r.run_id) for r in runs},
            await store.list_tasks(TaskFilter(limit=100)))


async def _refused(store: RunStore, kind: type[Exception], call: Awaitable[Any], the_id: str,
                   unknown: Awaitable[Any], unknown_id: str) -> None:
    """``call`` raises ``kind`` worded like an unknown id's refusal, and changes nothing."""
    before = await _snapshot(store)
    with pytest.raises(kind) as refused:
        await call
    with pytest.raises(kind) as plain:
        await unknown
    assert str(refused.value) == str(plain.value).replace(repr(unknown_id), repr(the_id))
    assert await _snapshot(store) == before


async def test_decide_approval_refuses_another_tenants_request(store: RunStore) -> None:
    tasks = await _world(store)
    for other in ("g", "n"):
        task_id = tasks[f"{other}-pay"].task_id
        await _refused(store, TaskNotFound, decide_approval(
            task_id, store=store, approve=True, by="mallory", tenant="acme"), task_id,
            decide_approval("ap-000000000000", store=store, approve=True, by="mallory",
                            tenant="acme"), "ap-000000000000")
        # an escalation id of another tenant is not found either (not "an escalation")
        esc_id = tasks[f"{other}-esc"].task_id
        await _refused(store, TaskNotFound, decide_approval(
            esc_id, store=store, approve=True, by="mallory", tenant="acme"), esc_id,
            decide_approval("es-000000000000", store=store, approve=True, by="mallory",
                            tenant="acme"), "es-000000000000")
    mine = tasks["a-pay"].task_id
    done = await decide_approval(mine, store=store, approve=True, by="ann", tenant="acme")
    assert done.status == "resolved" and done.by == "ann"
    assert (await store.get_run("a-pay")).status == "running"
    for other in ("g", "n"):
        assert (await store.get_run(f"{other}-pay")).status == "suspended"
    # unscoped, as before
    await decide_approval(tasks["n-pay"].task_id, store=store, approve=False, comment="no",
                          by="ops")
    assert (await store.get_run("n-pay")).status == "running"


async def test_claim_and_resolve_escalation_refuse_another_tenants(store: RunStore) -> None:
    tasks = await _world(store)
    for other in ("g", "n"):
        esc_id = tasks[f"{other}-esc"].task_id
        await _refused(store, TaskNotFound, claim_escalation(
            esc_id, "mallory", store=store, tenant="acme"), esc_id,
            claim_escalation("es-000000000000", "mallory", store=store, tenant="acme"),
            "es-000000000000")
        for decision in ({"action": "answer", "answer": "refund approved"},
                         {"action": "dismiss", "comment": "spam"}, {"action": "resume"}):
            await _refused(store, TaskNotFound, resolve_escalation(
                esc_id, store=store, by="mallory", tenant="acme", **decision), esc_id,
                resolve_escalation("es-000000000000", store=store, by="mallory",
                                   tenant="acme", **decision), "es-000000000000")
        pay_id = tasks[f"{other}-pay"].task_id
        await _refused(store, TaskNotFound, resolve_escalation(
            pay_id, store=store, by="mallory", action="resume", tenant="acme"), pay_id,
            resolve_escalation("ap-000000000000", store=store, by="mallory", action="resume",
                               tenant="acme"), "ap-000000000000")
    mine = tasks["a-esc"].task_id
    claimed = await claim_escalation(mine, "ann", store=store, tenant="acme")
    assert claimed.claimed_by == "ann"
    done = await resolve_escalation(mine, store=store, by="ann", action="answer",
                                    answer="not fraud", tenant="acme")
    assert done.status == "resolved"
    run = await store.get_run("a-esc")
    assert (run.status, run.output) == ("completed", "not fraud")
    for other in ("g", "n"):
        assert (await store.get_task(tasks[f"{other}-esc"].task_id)).status == "open"
        assert (await store.get_run(f"{other}-esc")).status == "suspended"


async def test_cancel_run_refuses_another_tenants_run(store: RunStore) -> None:
    await _world(store)
    await store.acquire_lease("g-esc", "elsewhere:1:w", 60)  # a live worker on another host
    for run_id in ("g-pay", "g-esc", "n-pay"):
        await _refused(store, RunNotFound, cancel_run(
            run_id, store=store, by="mallory", tenant="acme"), run_id,
            cancel_run("zz-run", store=store, by="mallory", tenant="acme"), "zz-run")
    assert await cancel_run("a-pay", store=store, by="ops", tenant="acme") == "cancelled"
    await store.acquire_lease("a-esc", "elsewhere:1:w", 60)
    assert await cancel_run("a-esc", store=store, by="ops", tenant="acme") == "requested"
    assert (await store.get_run("a-esc")).cancel_requested
    assert not (await store.get_run("g-esc")).cancel_requested
    assert (await store.get_run("g-pay")).status == "suspended"
    assert await cancel_run("g-pay", store=store, by="ops", tenant="globex") == "cancelled"
    assert await cancel_run("n-pay", store=store, by="ops") == "cancelled"  # unscoped


class OldStore(MemoryStore):
    """A store written before keel scoped calls by tenant."""

    async def get_task(self, task_id: str) -> HumanTask:  # type: ignore[override]
        return await super().get_task(task_id)


async def test_a_store_that_cannot_scope_refuses_a_scoped_call() -> None:
    store = OldStore()
    tasks = await _world(store)
    task_id = tasks["a-pay"].task_id
    with pytest.raises(StoreError, match="cannot scope a call to a tenant"):
        await decide_approval(task_id, store=store, approve=True, by="ann", tenant="acme")
    assert (await store.get_task(task_id)).status == "open"
    done = await decide_approval(task_id, store=store, approve=True, by="ann")
    assert done.status == "resolved", "unscoped calls work as before"
