"""People in the loop of a run on Temporal: the workflow waits while the run is suspended,
and goes on when a decision arrives (by the keel.decided signal, or by its poll)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from keel.runtime import _engines, decide_approval, resolve_escalation
from keel.store import SQLiteStore
from keel.temporal import TemporalWorker, run_result, start_run, workflow_id_for
from tests.temporal import _agents


async def _wait_for(store: SQLiteStore, run_id: str, status: str) -> None:
    for _ in range(1200):
        try:
            if (await store.get_run(run_id)).status == status:
                return
        except Exception:  # not created yet
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never became {status}")


async def _signals(client: Client, run_id: str) -> int:
    history = await client.get_workflow_handle(workflow_id_for(run_id)).fetch_history()
    return sum(1 for e in history.events
               if e.HasField("workflow_execution_signaled_event_attributes"))


async def test_an_approval_suspends_the_run_and_its_decision_signals_the_workflow(
        temporal_client: Client, tmp_path: Path) -> None:
    queue = f"keel-test-{uuid.uuid4().hex[:8]}"
    _agents.PAYMENTS.clear()
    async with SQLiteStore(tmp_path / "runs.db") as store, \
            TemporalWorker(temporal_client, [_agents.payer()], store=store, task_queue=queue):
        # a poll far in the future: only the signal can wake the workflow in time
        run_id = await start_run(temporal_client, "payer", "pay", task_queue=queue,
                                 poll_s=3600)
        await _wait_for(store, run_id, "suspended")
        assert _agents.PAYMENTS == []
        [task] = await store.list_tasks()
        assert task.run_id == run_id and task.kind == "approval"

        await decide_approval(task.task_id, store=store, approve=True, by="ann")
        result = await asyncio.wait_for(run_result(temporal_client, run_id), 60)
        assert result.output.startswith("done: ") and "paid 40" in result.output
        assert [(40, f"{run_id}/payer/turn:0/tool:pay#0")] == _agents.PAYMENTS
        assert await _signals(temporal_client, run_id) == 1
        # the step that suspended the run told the workflow what it waits for
        history = await temporal_client.get_workflow_handle(
            workflow_id_for(run_id)).fetch_history()
        outcomes = [json.loads(e.activity_task_completed_event_attributes.result.payloads[0]
                               .data) for e in history.events
                    if e.HasField("activity_task_completed_event_attributes")]
        # (its status there may already be running: the decision can beat the step's return)
        assert [o["waiting"] for o in outcomes if o["waiting"]] == [[task.task_id]]
        journal = await store.read_journal(run_id)
    decision = [e for e in journal if e.kind == "approval" and e.phase == "result"]
    assert decision[0].data["by"] == "ann" and decision[0].data["approved"] is True


async def test_without_a_signal_the_workflow_polls(temporal_client: Client, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_engines, "_NOTIFIERS", {})  # no notifier: decisions send nothing
    queue = f"keel-test-{uuid.uuid4().hex[:8]}"
    async with SQLiteStore(tmp_path / "runs.db") as store, \
            TemporalWorker(temporal_client, [_agents.payer()], store=store, task_queue=queue):
        monkeypatch.setattr(_engines, "_NOTIFIERS", {})  # the worker registered one
        run_id = await start_run(temporal_client, "payer", "pay", task_queue=queue, poll_s=0.5)
        await _wait_for(store, run_id, "suspended")
        [task] = await store.list_tasks()
        await decide_approval(task.task_id, store=store, approve=False, by="bob",
                              comment="not today")
        result = await asyncio.wait_for(run_result(temporal_client, run_id), 60)
    assert result.status == "completed" and await _signals(temporal_client, run_id) == 0


async def test_an_escalation_in_a_flow_with_a_sub_agent(temporal_client: Client,
                                                        tmp_path: Path) -> None:
    queue = f"keel-test-{uuid.uuid4().hex[:8]}"
    async with SQLiteStore(tmp_path / "runs.db") as store, \
            TemporalWorker(temporal_client, [_agents.escalating_flow()], store=store,
                           task_queue=queue):
        run_id = await start_run(temporal_client, "triage", "add", task_queue=queue,
                                 poll_s=3600)
        await _wait_for(store, run_id, "suspended")
        [task] = await store.list_tasks()
        assert task.kind == "escalation"
        await resolve_escalation(task.task_id, store=store, by="cy", action="resume",
                                 note="looks right")
        result = await asyncio.wait_for(run_result(temporal_client, run_id), 60)
        journal = await store.read_journal(run_id)
    assert result.output == "sums: 5, 15 / looks right"
    steps = [e.key for e in journal if e.phase == "result" and e.kind in ("model", "tool")]
    assert steps == ["triage/sub/turn:0/model", "triage/sub/turn:0/tool:add#0",
                     "triage/sub/turn:1/model", "triage/sub/turn:1/tool:add#0",
                     "triage/sub/turn:2/model"]


def test_the_server_registers_the_temporal_notifier(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    """The HTTP server's decisions go through decide_approval / resolve_escalation /
    cancel_run like the CLI's; building its app registers keel.temporal by name."""
    pytest.importorskip("fastapi")
    from keel.server import App

    monkeypatch.setattr(_engines, "_NOTIFIERS", {})
    App([_agents.adder()], store=f"sqlite:///{tmp_path}/runs.db").asgi()
    assert _engines._NOTIFIERS == {"temporal": "keel.temporal:notify_decided"}
