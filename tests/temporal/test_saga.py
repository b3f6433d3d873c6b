"""Sagas on Temporal: a run that fails undoes its completed compensable calls inside the run,
once its failure is final: a failure Temporal will retry is not compensated yet."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client

from keel import Agent, Message, ModelError, ToolContext, tool
from keel.reliability import Retry
from keel.store import SQLiteStore
from keel.temporal import RetrySpec, TemporalWorker, run
from keel.testing import FunctionModel, call
from tests.temporal._agents import _tool_results

FAST = RetrySpec(initial_interval_s=0.05, max_interval_s=0.1, max_attempts=3)


def _trip(fail: int, *, retryable: bool, log: list[str]) -> Agent[Any]:
    """Book a flight, then answer; the answer's model request fails ``fail`` times."""
    failures: list[int] = []

    def answer(messages: list[Message], tools: Any, settings: Any) -> Any:
        if not _tool_results(messages):
            return call("book", {"who": "ada"})
        if len(failures) < fail:
            failures.append(1)
            return ModelError("the endpoint failed", status=503 if retryable else 400,
                              retryable=retryable)
        return "booked"

    @tool(risk="write")
    def cancel(result: str, ctx: ToolContext) -> str:
        """Cancel a booking."""
        log.append(f"cancel {result}")
        return "cancelled"

    @tool(risk="write", compensate=cancel)
    def book(who: str, ctx: ToolContext) -> str:
        """Book a flight."""
        log.append(f"book {who}")
        return "FL-1"

    return Agent("trip", model=FunctionModel(answer), tools=[book],
                 middleware=[Retry.off()])


async def _run(client: Client, tmp_path: Path, agent: Agent[Any]) -> tuple[Any, Any]:
    queue = f"keel-test-{uuid.uuid4().hex[:8]}"
    run_id = f"trip-{uuid.uuid4().hex[:6]}"
    async with SQLiteStore(tmp_path / "runs.db") as store, \
            TemporalWorker(client, [agent], store=store, task_queue=queue):
        try:
            outcome: Any = await run(client, "trip", "go", task_queue=queue, run_id=run_id,
                                     retry=FAST)
        except ModelError as exc:
            outcome = exc
        return outcome, await store.read_journal(run_id)


async def test_a_final_failure_compensates_inside_the_run(temporal_client: Client,
                                                          tmp_path: Path) -> None:
    log: list[str] = []
    outcome, journal = await _run(temporal_client, tmp_path,
                                  _trip(1, retryable=False, log=log))
    assert isinstance(outcome, ModelError)
    assert log == ["book ada", "cancel FL-1"]
    assert [e.key for e in journal if e.kind == "compensate" and e.phase == "result"] == [
        "trip/compensate:trip/turn:0/tool:book#0"]


async def test_a_failure_temporal_retries_is_not_compensated(temporal_client: Client,
                                                             tmp_path: Path) -> None:
    log: list[str] = []
    outcome, journal = await _run(temporal_client, tmp_path,
                                  _trip(2, retryable=True, log=log))
    assert not isinstance(outcome, Exception) and outcome.output == "booked"
    assert log == ["book ada"]  # retried twice by Temporal, never undone
    assert not any(e.kind == "compensate" for e in journal)


async def test_retries_used_up_compensate_once_at_the_last(temporal_client: Client,
                                                           tmp_path: Path) -> None:
    log: list[str] = []
    outcome, journal = await _run(temporal_client, tmp_path,
                                  _trip(100, retryable=True, log=log))
    assert isinstance(outcome, ModelError)
    assert log == ["book ada", "cancel FL-1"]  # after the last of the attempts only
    assert sum(1 for e in journal if e.kind == "compensate" and e.phase == "result") == 1
