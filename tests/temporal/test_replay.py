"""Temporal's determinism check of the keel.run workflow: recorded histories (committed in
histories/, and fresh ones of runs made here) replay against the workflow code; a changed
workflow fails with a keel error naming the workflow and the event."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import Client

from keel import Divergence, UserError
from keel.temporal import (
    WORKFLOW_NAME,
    RunRequest,
    TemporalWorker,
    WorkflowDivergence,
    history_json,
    replay_histories,
    run,
    workflow_id_for,
)
from tests.temporal import _agents

HISTORIES = sorted(Path(__file__).with_name("histories").glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@workflow.defn(name=WORKFLOW_NAME)
class ChangedWorkflow:
    """keel.run as someone might change it: it reads the status before starting the run."""

    @workflow.run
    async def run(self, request: RunRequest) -> Any:
        await workflow.execute_activity("keel.status", request,
                                        start_to_close_timeout=timedelta(seconds=5))
        return None


def test_three_recorded_histories_are_committed() -> None:
    assert {p.stem for p in HISTORIES} == {"tool_calls", "approval", "budget"}


async def test_the_recorded_histories_replay() -> None:
    assert await replay_histories(_load(p) for p in HISTORIES) == 3


async def test_histories_of_runs_made_now_replay(temporal_client: Client,
                                                 tmp_path: Path) -> None:
    queue = f"keel-test-{uuid.uuid4().hex[:8]}"
    async with TemporalWorker(temporal_client, [_agents.adder()],
                              store=f"sqlite:///{tmp_path}/r.db", task_queue=queue):
        result = await run(temporal_client, "adder", "add", task_queue=queue)
    history = await temporal_client.get_workflow_handle(
        workflow_id_for(result.run_id)).fetch_history()
    assert await replay_histories([history]) == 1
    assert await replay_histories([json.dumps(history_json(history))]) == 1


async def test_a_changed_workflow_fails_replay_naming_the_event() -> None:
    recorded = _load(Path(__file__).with_name("histories") / "tool_calls.json")
    with pytest.raises(WorkflowDivergence) as info:
        await replay_histories([recorded], workflow=ChangedWorkflow)
    err = info.value
    assert isinstance(err, Divergence)
    assert err.recorded["workflow_id"] == "keel-run-history-tool-calls"
    assert isinstance(err.recorded["event_id"], int) and err.recorded["event_id"] > 0
    assert f"event {err.recorded['event_id']}" in err.message
    assert err.recorded["event"] == "activity keel.start"
    assert err.requested["command"] == "activity keel.status"


@pytest.mark.parametrize("bad", ["not json", "[1, 2]", json.dumps({"events": "nope"}), 42])
async def test_malformed_histories_are_user_errors(bad: Any) -> None:
    with pytest.raises(UserError):
        await replay_histories([bad])
