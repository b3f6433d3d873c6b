"""Bad input to keel.temporal gets a clear keel error and changes nothing: an unreachable
server, malformed and oversized arguments, a run id that is taken, a bad worker setup."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from keel import ConfigError, RunNotFound, UserError
from keel.store import RunRecord, SQLiteStore
from keel.temporal import (
    MAX_INPUT_CHARS,
    WORKFLOW_NAME,
    RetrySpec,
    RunRequest,
    TemporalUnavailable,
    TemporalWorker,
    connect,
    run,
    run_result,
    start_run,
)
from tests.temporal import _agents


async def test_connect_to_nothing_is_temporal_unavailable() -> None:
    with pytest.raises(TemporalUnavailable, match=r"127\.0\.0\.1:9"):
        await connect("127.0.0.1:9", timeout_s=2)


@pytest.mark.parametrize("address", ["", "   ", None, 7233, "x" * 600])
async def test_connect_refuses_a_malformed_address(address: Any) -> None:
    with pytest.raises(ConfigError):
        await connect(address)


async def test_start_and_result_on_a_server_that_went_away() -> None:
    lazy = await Client.connect("127.0.0.1:9", lazy=True)  # never connected
    with pytest.raises(TemporalUnavailable):
        await start_run(lazy, "adder", "hi")
    with pytest.raises(TemporalUnavailable):
        await run_result(lazy, "r-1")


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"run_id": "has space"}, UserError),
    ({"run_id": "-leading"}, UserError),
    ({"run_id": "x" * 200}, UserError),
    ({"run_id": 12}, UserError),
    ({"run_id": "ok\x00nul"}, UserError),
    ({"tenant": "bad\ntenant"}, UserError),
    ({"user": ""}, UserError),
    ({"user": "u" * 1000}, UserError),
    ({"max_steps": 0}, ConfigError),
    ({"max_steps": 2.5}, ConfigError),
    ({"max_cost_usd": -1}, ConfigError),
    ({"max_tokens": True}, ConfigError),
    ({"poll_s": 0}, ConfigError),
    ({"poll_s": float("nan")}, ConfigError),
    ({"step_timeout_s": "10"}, ConfigError),
    ({"task_queue": ""}, ConfigError),
    ({"task_queue": 5}, ConfigError),
])
async def test_start_run_refuses_malformed_options(temporal_client: Client,
                                                   kwargs: dict[str, Any],
                                                   error: type[Exception]) -> None:
    with pytest.raises(error):
        await start_run(temporal_client, "adder", "hi", **kwargs)


@pytest.mark.parametrize(("target", "text"), [
    (None, "hi"), ("", "hi"), (42, "hi"), ("bad\x07name", "hi"), ("x" * 300, "hi"),
    ("adder", None), ("adder", b"bytes"), ("adder", "x" * (MAX_INPUT_CHARS + 1)),
])
async def test_start_run_refuses_a_bad_target_or_input(temporal_client: Client, target: Any,
                                                       text: Any) -> None:
    with pytest.raises(UserError):
        await start_run(temporal_client, target, text)


async def test_a_taken_run_id_is_refused(temporal_client: Client, tmp_path: Path) -> None:
    queue = f"keel-test-{uuid.uuid4().hex[:8]}"
    run_id = f"taken-{uuid.uuid4().hex[:6]}"
    async with SQLiteStore(tmp_path / "runs.db") as store, \
            TemporalWorker(temporal_client, [_agents.adder()], store=store, task_queue=queue):
        assert (await run(temporal_client, "adder", "add", task_queue=queue,
                          run_id=run_id)).output == "sums: 5, 15"
        with pytest.raises(UserError, match="already taken"):
            await start_run(temporal_client, "adder", "again", task_queue=queue,
                            run_id=run_id)
        # a run id the store already has (a run not started on Temporal)
        await store.create_run(RunRecord(run_id="local-run", agent="adder",
                                         status="completed", input="x", created_at=1.0,
                                         updated_at=1.0, metadata={"mine": True}))
        with pytest.raises(UserError, match="already exists in the run store"):
            await run(temporal_client, "adder", "add", task_queue=queue, run_id="local-run")
        kept = await store.get_run("local-run")
        assert kept.metadata == {"mine": True} and kept.status == "completed"


async def test_the_result_of_an_unknown_run(temporal_client: Client) -> None:
    with pytest.raises(RunNotFound):
        await run_result(temporal_client, f"never-{uuid.uuid4().hex[:6]}")
    with pytest.raises(UserError):
        await run_result(temporal_client, "no spaces allowed")


def test_a_worker_refuses_a_bad_setup(temporal_address: str) -> None:
    client: Any = object()
    with pytest.raises(ConfigError):
        TemporalWorker(client, [])
    with pytest.raises(ConfigError):
        TemporalWorker(client, ["not an agent"])
    with pytest.raises(ConfigError, match="named 'adder'"):
        TemporalWorker(client, [_agents.adder(), _agents.adder()])
    with pytest.raises(ConfigError):
        TemporalWorker(client, [_agents.adder()], task_queue="")
    with pytest.raises(ConfigError):
        TemporalWorker(client, [_agents.adder()], max_concurrent_activities=0)


@pytest.mark.parametrize("request_", [
    RunRequest(run_id="bad id", target="adder", input="x"),
    RunRequest(run_id="ok-1", target="adder", input="x" * (MAX_INPUT_CHARS + 1)),
    RunRequest(run_id="ok-2", target="adder", input="x", tenant="a\x00b"),
    RunRequest(run_id="ok-3", target="adder", input="x", max_steps=-5),
    RunRequest(run_id="ok-4", target="adder", input="x",
               retry=RetrySpec(max_attempts=-1)),
])
async def test_a_workflow_started_around_start_run_is_checked_too(
        temporal_client: Client, tmp_path: Path, request_: RunRequest) -> None:
    """Any client may start a keel.run workflow: keel.start checks what arrives, the
    workflow fails once (a UserError or ConfigError) and nothing is written."""
    queue = f"keel-test-{uuid.uuid4().hex[:8]}"
    workflow_id = f"raw-{uuid.uuid4().hex[:8]}"
    async with SQLiteStore(tmp_path / "runs.db") as store, \
            TemporalWorker(temporal_client, [_agents.adder()], store=store, task_queue=queue):
        handle = await temporal_client.start_workflow(WORKFLOW_NAME, request_, id=workflow_id,
                                                      task_queue=queue)
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
        assert await store.list_runs() == []
    cause = info.value.cause.cause  # the workflow failed of its keel.start activity
    assert isinstance(cause, ApplicationError) and cause.non_retryable
    assert cause.type in ("UserError", "ConfigError")
