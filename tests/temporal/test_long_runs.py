"""A long run continues as a new workflow run when Temporal suggests it (its history nears
the limit): the keel run goes on from its journal, one run and one result."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.store import SQLiteStore
from keel.temporal import TemporalUnavailable, TemporalWorker, connect, run, workflow_id_for
from tests.temporal import _agents
from tests.temporal.conftest import dev_server


@pytest.fixture(scope="module")
def small_history_server() -> Iterator[str]:
    """A dev server that suggests continue-as-new after 20 history events."""
    yield from dev_server("limit.historyCount.suggestContinueAsNew=20")


@pytest.mark.slow  # a second dev server of its own
async def test_a_long_run_continues_as_new(small_history_server: str, tmp_path: Path) -> None:
    client = None
    for _ in range(150):  # the port answering does not yet mean the frontend serves
        try:
            client = await connect(small_history_server)
            break
        except TemporalUnavailable:
            await asyncio.sleep(0.2)
    assert client is not None
    queue = f"keel-test-{uuid.uuid4().hex[:8]}"
    _agents.CALLS.clear()
    async with SQLiteStore(tmp_path / "runs.db") as store, \
            TemporalWorker(client, [_agents.adder()], store=store, task_queue=queue):
        result = await run(client, "adder", "add", task_queue=queue, run_id="long-1")
        record = await store.get_run("long-1")
    assert result.output == "sums: 5, 15" and record.status == "completed"
    assert len(_agents.CALLS) == 2  # each tool once, across workflow runs
    query = f"WorkflowId = '{workflow_id_for('long-1')}'"
    runs = [w async for w in client.list_workflows(query)]
    assert len(runs) >= 2  # it continued as new at least once
