"""A keel run on Temporal end to end: one workflow, one activity per model request or tool
call, the run's record and journal in keel's store."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from temporalio.client import Client

from keel.runtime import decide_approval
from keel.store import SQLiteStore
from keel.temporal import TemporalWorker, run, run_result, start_run, workflow_id_for
from tests.temporal import _agents


def _queue() -> str:
    return f"keel-test-{uuid.uuid4().hex[:8]}"


async def test_a_tool_using_agent_runs_as_a_workflow(temporal_client: Client,
                                                     tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/runs.db"
    queue = _queue()
    _agents.CALLS.clear()
    async with TemporalWorker(temporal_client, [_agents.adder()], store=url, task_queue=queue):
        run_id = await start_run(temporal_client, "adder", "add things", task_queue=queue)
        result = await run_result(temporal_client, run_id)
    assert result.output == "sums: 5, 15" and result.status == "completed"
    assert result.run_id == run_id and result.agent == "adder"
    assert result.steps == 5  # three model requests, two tool calls
    # each tool ran once, with keel's idempotency key (run id + step key)
    assert [(2, 3, f"{run_id}/adder/turn:0/tool:add#0"),
                             (5, 10, f"{run_id}/adder/turn:1/tool:add#0")] == _agents.CALLS
    async with SQLiteStore(f"{tmp_path}/runs.db") as store:
        record = await store.get_run(run_id)
        journal = await store.read_journal(run_id)
    assert record.status == "completed" and record.output == "sums: 5, 15"
    assert record.metadata["engine"] == "temporal"
    assert record.metadata["workflow_id"] == workflow_id_for(run_id)
    assert record.metadata["task_queue"] == queue
    assert [(e.kind, e.key) for e in journal if e.phase == "result"] == [
        ("model", "adder/turn:0/model"), ("tool", "adder/turn:0/tool:add#0"),
        ("model", "adder/turn:1/model"), ("tool", "adder/turn:1/tool:add#0"),
        ("model", "adder/turn:2/model")]
    # Temporal scheduled one activity per new step, after keel.start
    history = await temporal_client.get_workflow_handle(workflow_id_for(run_id)).fetch_history()
    names = [e.activity_task_scheduled_event_attributes.activity_type.name
             for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]
    assert names == ["keel.start"] + ["keel.advance"] * 5


async def test_run_starts_and_waits(temporal_client: Client, tmp_path: Path) -> None:
    queue = _queue()
    agent = _agents.adder()
    async with TemporalWorker(temporal_client, [agent], store=f"sqlite:///{tmp_path}/r.db",
                              task_queue=queue):
        result = await run(temporal_client, agent, "add", task_queue=queue, run_id="fixed-1",
                           tenant="acme", user="ann")
    assert result.run_id == "fixed-1" and result.output == "sums: 5, 15"
    async with SQLiteStore(f"{tmp_path}/r.db") as store:
        record = await store.get_run("fixed-1")
    assert (record.tenant, record.user) == ("acme", "ann")


async def test_a_run_on_temporal_with_a_postgres_store(temporal_client: Client,
                                                       tmp_path: Path) -> None:
    from tests._stores import fresh_store

    queue = _queue()
    async with fresh_store("postgres", tmp_path, "keel_temporal") as store, \
            TemporalWorker(temporal_client, [_agents.payer()], store=store, task_queue=queue):
        run_id = await start_run(temporal_client, "payer", "pay", task_queue=queue,
                                 poll_s=3600)
        for _ in range(1200):
            if (await store.list_tasks()):
                break
            await asyncio.sleep(0.05)
        [task] = await store.list_tasks()
        # a keel fleet worker on the same store never takes the Temporal run
        assert await store.claim_runs("fleet-worker", 60, limit=10) == []
        await decide_approval(task.task_id, store=store, approve=True, by="ann")
        assert await store.claim_runs("fleet-worker", 60, limit=10) == []
        result = await asyncio.wait_for(run_result(temporal_client, run_id), 60)
        record = await store.get_run(run_id)
    assert "paid 40" in result.output and record.status == "completed"
