"""A Temporal worker that stops while a step runs hands the run back (it stays ``running``,
never cancelled); Temporal retries the step on another worker, which finishes the run from
its journal."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client

from keel import Agent, tool
from keel.store import SQLiteStore
from keel.temporal import RetrySpec, TemporalWorker, run_result, start_run
from keel.testing import ScriptedModel, call
from tests.temporal.test_humans import _wait_for


def _blocking(started: asyncio.Event, release: asyncio.Event,
              calls: list[str]) -> Agent[Any]:
    @tool(risk="read")
    async def fetch() -> str:
        """Fetch, waiting until released."""
        calls.append("fetch")
        started.set()
        await release.wait()
        return "fetched"

    # one process: the second worker's run replays the first model turn from the journal
    return Agent("fetcher", model=ScriptedModel([call("fetch", {}), "answer"]),
                 tools=[fetch])


async def test_a_stopped_worker_hands_the_run_to_the_next(temporal_client: Client,
                                                          tmp_path: Path) -> None:
    queue = f"keel-test-{uuid.uuid4().hex[:8]}"
    started, release, calls = asyncio.Event(), asyncio.Event(), []
    agent = _blocking(started, release, calls)
    fast = RetrySpec(initial_interval_s=0.05, max_interval_s=0.1, max_attempts=5)
    async with SQLiteStore(tmp_path / "runs.db") as store:
        async with TemporalWorker(temporal_client, [agent], store=store, task_queue=queue,
                                  grace_s=0):
            run_id = await start_run(temporal_client, "fetcher", "go", task_queue=queue,
                                     retry=fast, heartbeat_s=2)
            await asyncio.wait_for(started.wait(), 60)
        record = await store.get_run(run_id)
        assert record.status == "running" and record.lease_owner is None  # handed back
        release.set()
        async with TemporalWorker(temporal_client, [agent], store=store, task_queue=queue):
            result = await asyncio.wait_for(run_result(temporal_client, run_id), 60)
        await _wait_for(store, run_id, "completed")
    assert result.output == "answer"
    assert calls == ["fetch", "fetch"]  # a read-only call, run again after the hand-back
