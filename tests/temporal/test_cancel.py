"""Cancelling a run on Temporal: keel's cancel (``keel runs cancel``, ``cancel_run``) and a
Temporal workflow cancel both end the keel run as cancelled, with the stop journaled."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from keel import Agent, RunCancelled, tool
from keel.runtime import cancel_run
from keel.store import SQLiteStore
from keel.temporal import TemporalWorker, run_result, start_run, workflow_id_for
from keel.testing import ScriptedModel, call
from tests.temporal import _agents
from tests.temporal.test_humans import _wait_for


def _queue() -> str:
    return f"keel-test-{uuid.uuid4().hex[:8]}"


def _slow(started: asyncio.Event) -> Agent[Any]:
    @tool(risk="read")
    async def wait() -> str:
        """Wait for ever."""
        started.set()
        await asyncio.Event().wait()
        return "never"

    return Agent("slow", model=ScriptedModel([call("wait", {}), "done"]), tools=[wait])


async def test_keel_cancel_of_a_suspended_run_ends_its_workflow(temporal_client: Client,
                                                                tmp_path: Path) -> None:
    queue = _queue()
    async with SQLiteStore(tmp_path / "runs.db") as store, \
            TemporalWorker(temporal_client, [_agents.payer()], store=store, task_queue=queue):
        run_id = await start_run(temporal_client, "payer", "pay", task_queue=queue,
                                 poll_s=3600)
        await _wait_for(store, run_id, "suspended")
        assert await cancel_run(run_id, store=store, reason="wrong customer",
                                by="ann") == "cancelled"
        with pytest.raises(RunCancelled, match="wrong customer"):
            await asyncio.wait_for(run_result(temporal_client, run_id), 60)
        record = await store.get_run(run_id)
        journal = await store.read_journal(run_id)
    assert record.status == "cancelled" and _agents.PAYMENTS == []
    assert journal[-1].kind == "cancel" and journal[-1].data == {"reason": "wrong customer",
                                                                 "by": "ann"}


async def test_keel_cancel_of_a_run_inside_a_step(temporal_client: Client,
                                                  tmp_path: Path) -> None:
    queue = _queue()
    started = asyncio.Event()
    async with SQLiteStore(tmp_path / "runs.db") as store, \
            TemporalWorker(temporal_client, [_slow(started)], store=store, task_queue=queue):
        run_id = await start_run(temporal_client, "slow", "go", task_queue=queue)
        await asyncio.wait_for(started.wait(), 60)
        assert await cancel_run(run_id, store=store, reason="too slow",
                                by="bob") == "requested"
        with pytest.raises(RunCancelled):
            await asyncio.wait_for(run_result(temporal_client, run_id), 60)
        record = await store.get_run(run_id)
    assert record.status == "cancelled" and record.error is not None
    assert record.error["type"] == "RunCancelled"


async def test_a_temporal_cancel_cancels_the_keel_run(temporal_client: Client,
                                                      tmp_path: Path) -> None:
    queue = _queue()
    async with SQLiteStore(tmp_path / "runs.db") as store, \
            TemporalWorker(temporal_client, [_agents.payer()], store=store, task_queue=queue):
        run_id = await start_run(temporal_client, "payer", "pay", task_queue=queue,
                                 poll_s=3600)
        await _wait_for(store, run_id, "suspended")
        handle = temporal_client.get_workflow_handle(workflow_id_for(run_id))
        await handle.cancel()
        with pytest.raises(RunCancelled, match="cancelled"):
            await asyncio.wait_for(run_result(temporal_client, run_id), 60)
        record = await store.get_run(run_id)
        journal = await store.read_journal(run_id)
        desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.CANCELED
    assert record.status == "cancelled"
    assert journal[-1].kind == "cancel" and journal[-1].data["by"] == "temporal"


async def test_a_temporal_cancel_stops_a_run_inside_a_step(temporal_client: Client,
                                                           tmp_path: Path) -> None:
    queue = _queue()
    started = asyncio.Event()
    async with SQLiteStore(tmp_path / "runs.db") as store, \
            TemporalWorker(temporal_client, [_slow(started)], store=store, task_queue=queue):
        run_id = await start_run(temporal_client, "slow", "go", task_queue=queue)
        await asyncio.wait_for(started.wait(), 60)
        await temporal_client.get_workflow_handle(workflow_id_for(run_id)).cancel()
        with pytest.raises(RunCancelled):
            await asyncio.wait_for(run_result(temporal_client, run_id), 60)
        await _wait_for(store, run_id, "cancelled")  # the step's worker stops it
        journal = await store.read_journal(run_id)
    assert [e.kind for e in journal if e.phase == "result"][-1] == "cancel"
    assert not any(e.kind == "tool" and e.phase == "result" for e in journal)
