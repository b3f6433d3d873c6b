"""Failures of runs on Temporal: keel's retry policy as Temporal's activity retries (a
transient failure is retried, a non-retryable one fails the run once), bad targets, and the
workflow's own budget; each failure lands in keel's store."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from keel import Agent, BudgetExceeded, ConfigError, Message, ModelError, RunError
from keel.reliability import Retry
from keel.store import SQLiteStore
from keel.temporal import RetrySpec, TemporalWorker, retry_spec, run, workflow_id_for
from keel.testing import FunctionModel
from tests.temporal import _agents


def _queue() -> str:
    return f"keel-test-{uuid.uuid4().hex[:8]}"


def _flaky(fail: int, *, retryable: bool) -> Agent[Any]:
    """An agent whose model fails its first ``fail`` requests (in this process)."""
    seen: list[int] = []

    def answer(messages: list[Message], tools: Any, settings: Any) -> Any:
        seen.append(1)
        if len(seen) <= fail:
            return ModelError("the endpoint said 503", status=503 if retryable else 400,
                              retryable=retryable)
        return "fine"

    # keel's own retry off: the retries here are Temporal's
    return Agent("flaky", model=FunctionModel(answer), middleware=[Retry.off()])


async def _attempts(client: Client, run_id: str, activity: str) -> list[int]:
    """The attempt number of each start of ``activity`` in the run's history (a retried
    activity is recorded once, when it ends, with its last attempt)."""
    history = await client.get_workflow_handle(workflow_id_for(run_id)).fetch_history()
    scheduled: dict[int, str] = {}
    out: list[int] = []
    for e in history.events:
        if e.HasField("activity_task_scheduled_event_attributes"):
            scheduled[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
        if e.HasField("activity_task_started_event_attributes"):
            a = e.activity_task_started_event_attributes
            if scheduled.get(a.scheduled_event_id) == activity:
                out.append(a.attempt)
    return out


def test_the_retry_policy_comes_from_keels_defaults() -> None:
    from keel.reliability import RetryPolicy

    spec = retry_spec(RetryPolicy(max_attempts=7, base_delay=0.25, max_delay=9,
                                  multiplier=3))
    assert (spec.max_attempts, spec.initial_interval_s, spec.max_interval_s, spec.backoff) \
        == (7, 0.25, 9, 3)
    assert {"UserError", "Divergence", "UnknownOutcome", "BudgetExceeded"} <= set(
        spec.non_retryable)
    assert retry_spec().max_attempts == RetryPolicy().max_attempts


async def test_a_transient_model_failure_is_retried_by_temporal(temporal_client: Client,
                                                                tmp_path: Path) -> None:
    queue = _queue()
    agent = _flaky(2, retryable=True)
    fast = RetrySpec(initial_interval_s=0.05, max_interval_s=0.1, max_attempts=5)
    async with SQLiteStore(tmp_path / "runs.db") as store, \
            TemporalWorker(temporal_client, [agent], store=store, task_queue=queue):
        result = await run(temporal_client, "flaky", "go", task_queue=queue, retry=fast)
        record = await store.get_run(result.run_id)
        journal = await store.read_journal(result.run_id)
    assert result.output == "fine" and record.status == "completed" and record.error is None
    assert len(agent.model.requests) == 3  # type: ignore[attr-defined]
    assert await _attempts(temporal_client, result.run_id, "keel.advance") == [3]
    assert [e.key for e in journal if e.kind == "model"] == ["flaky/turn:0/model"]


async def test_a_non_retryable_failure_fails_the_run_once(temporal_client: Client,
                                                          tmp_path: Path) -> None:
    queue = _queue()
    agent = _flaky(1, retryable=False)
    async with SQLiteStore(tmp_path / "runs.db") as store, \
            TemporalWorker(temporal_client, [agent], store=store, task_queue=queue):
        with pytest.raises(ModelError) as info:
            await run(temporal_client, "flaky", "go", task_queue=queue, run_id="nr-1")
        record = await store.get_run("nr-1")
    assert info.value.run_id == "nr-1" and "503" in info.value.message
    assert len(agent.model.requests) == 1  # type: ignore[attr-defined]
    assert record.status == "failed" and record.error is not None
    assert record.error["type"] == "ModelError" and "503" in record.error["message"]
    assert await _attempts(temporal_client, "nr-1", "keel.advance") == [1]


async def test_retries_used_up_leave_the_run_failed_with_its_error(temporal_client: Client,
                                                                   tmp_path: Path) -> None:
    queue = _queue()
    agent = _flaky(100, retryable=True)
    fast = RetrySpec(initial_interval_s=0.05, max_interval_s=0.05, max_attempts=2)
    async with SQLiteStore(tmp_path / "runs.db") as store, \
            TemporalWorker(temporal_client, [agent], store=store, task_queue=queue):
        with pytest.raises(ModelError):
            await run(temporal_client, "flaky", "go", task_queue=queue, run_id="ru-1",
                      retry=fast)
        record = await store.get_run("ru-1")
    assert len(agent.model.requests) == 2  # type: ignore[attr-defined]
    assert record.status == "failed" and record.error is not None
    assert record.error["type"] == "ModelError"


async def test_an_unknown_target_fails_the_workflow_once(temporal_client: Client,
                                                         tmp_path: Path) -> None:
    queue = _queue()
    async with TemporalWorker(temporal_client, [_agents.adder()],
                              store=f"sqlite:///{tmp_path}/r.db", task_queue=queue):
        with pytest.raises(ConfigError, match=r"no agent or flow named 'nope'.*adder"):
            await run(temporal_client, "nope", "go", task_queue=queue, run_id="unk-1")
    assert await _attempts(temporal_client, "unk-1", "keel.start") == [1]
    async with SQLiteStore(tmp_path / "r.db") as store:
        assert await store.list_runs() == []  # nothing was written


async def test_the_workflow_budget_stops_the_run(temporal_client: Client,
                                                 tmp_path: Path) -> None:
    queue = _queue()
    _agents.CALLS.clear()
    async with SQLiteStore(tmp_path / "runs.db") as store, \
            TemporalWorker(temporal_client, [_agents.adder()], store=store, task_queue=queue):
        with pytest.raises(RunError) as info:
            await run(temporal_client, "adder", "go", task_queue=queue, run_id="b-1",
                      max_steps=3)
        record = await store.get_run("b-1")
        journal = await store.read_journal("b-1")
    # the keel type, as on keel's own engine (the limit's details stay in the store)
    assert isinstance(info.value, BudgetExceeded) and info.value.run_id == "b-1"
    assert "3 steps" in info.value.message
    assert record.status == "failed" and record.error is not None
    assert record.error["type"] == "BudgetExceeded" and record.usage["steps"] == 3
    assert len(_agents.CALLS) == 1  # model, tool, model: then it stopped
    assert journal[-1].kind == "stop" and journal[-1].data["by"] == "temporal"


def test_the_workflow_budget_rules() -> None:
    from keel.temporal import Outcome, RunRequest
    from keel.temporal._workflow import _over_budget

    def over(usage: dict[str, Any], **limits: Any) -> str | None:
        return _over_budget(RunRequest(run_id="r", target="a", input="x", **limits),
                            Outcome(run_id="r", status="running", usage=usage))

    assert over({"steps": 9}) is None  # no limits: never over
    assert over({"steps": 2}, max_steps=3) is None
    assert "3 steps" in (over({"steps": 3}, max_steps=3) or "")
    assert over({"input_tokens": 60, "output_tokens": 39}, max_tokens=100) is None
    assert "100 tokens" in (over({"input_tokens": 60, "output_tokens": 40}, max_tokens=100)
                            or "")
    assert "$0.5000" in (over({"cost_usd": 0.5}, max_cost_usd=0.5) or "")
    assert over({}, max_steps=1, max_tokens=1, max_cost_usd=0.1) is None  # nothing used yet
