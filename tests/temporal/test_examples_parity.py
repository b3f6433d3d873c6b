"""The same agents pass on Temporal as on keel's store: the runnable examples in examples/
(tool use, supervisor, workflow, handoff, reflection, planning, group chat, structured
output, self-correction, marketplace, budget guard), and agents of this suite: tool use
(parallel calls), an approval gate decided through ``keel approvals approve`` and through
the HTTP API, a supervisor with two workers (keel.patterns) and a saga whose compensation
runs when the model fails. Each runs once
directly on an SQLite store and once on Temporal (a TemporalWorker in this process, the keel
store another SQLite file); the outputs, the final statuses and the journals' steps (key,
phase, kind, as a multiset) must be equal, and each tool with an effect ran exactly once.

"An approval decided days later": every worker is stopped while the run waits for its
approval, the decision is made with no worker running, and a new worker resumes and
finishes the run (the dev server cannot skip time, so "days" is the time the test takes).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from keel import ApprovalRequired, RunError, decide_approval, open_store, to_jsonable
from keel.cli import app
from tests.examples.conftest import load_example
from tests.temporal import _proof as proof

pytestmark = pytest.mark.slow  # each case starts a Temporal worker


def _ids(prefix: str) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"{prefix}-{tag}", f"parity-{prefix}-{tag}"  # run id, task queue


async def direct(agent: Any, text: str, url: str, run_id: str) -> tuple[Any, str]:
    """Run ``agent`` on the store at ``url`` in this process: (output or error, status)."""
    async with open_store(url) as store:
        try:
            result = await agent.run(text, store=store, run_id=run_id)
        except ApprovalRequired as waiting:
            for approval_id in waiting.approval_ids:
                await decide_approval(approval_id, store=store, approve=True, by="ana")
            result = await agent.resume(run_id, store=store)
        except RunError as exc:
            return type(exc).__name__, "failed"
    return result.output, "completed"


async def on_temporal(client: Any, agent: Any, text: str, url: str, run_id: str,
                      queue: str) -> tuple[Any, str]:
    from keel.temporal import TemporalWorker, run

    async with TemporalWorker(client, [agent], store=url, task_queue=queue):
        try:
            result = await asyncio.wait_for(
                run(client, agent, text, task_queue=queue, run_id=run_id), 120)
        except RunError as exc:
            return type(exc).__name__, "failed"
    return result.output, "completed"


async def same_on_both(tmp_path: Path, client: Any, make: Any, text: str, prefix: str
                       ) -> tuple[Any, Any]:
    """Run ``make()`` directly and on Temporal; assert the outcomes and journals match."""
    run_id, queue = _ids(prefix)
    here, there = f"sqlite:///{tmp_path / 'direct.db'}", f"sqlite:///{tmp_path / 'temporal.db'}"
    expected = await direct(make(), text, here, run_id)
    got = await on_temporal(client, make(), text, there, run_id, queue)
    assert got == expected
    record_d, journal_d, _ = await proof.read_run(here, run_id)
    record_t, journal_t, _ = await proof.read_run(there, run_id)
    assert record_t.status == record_d.status
    assert proof.step_keys(journal_t) == proof.step_keys(journal_d)
    assert record_t.metadata.get("engine") == "temporal"
    return expected, record_t


ROOT = Path(__file__).resolve().parent.parent.parent
#: examples/*.py that run on their scripted models with no person involved (approval_gate's
#: refund is the approval test's agent below; rag and routing load embedding models)
EXAMPLES = [
    "tool_use", "supervisor", "workflow", "handoff", "reflection", "planning", "group_chat",
    "structured_output", "self_correction", "marketplace", "budget_guard",
]


def _example(name: str, copy: str) -> Any:
    module = load_example(ROOT / "examples" / f"{name}.py",
                          f"_keel_temporal_parity_{name}_{copy}_{uuid.uuid4().hex[:6]}")
    return module, getattr(module, "flow", None) or module.agent


@pytest.mark.parametrize("name", EXAMPLES)
async def test_the_examples_give_the_same_result_and_journal_on_temporal(
        name: str, tmp_path: Path, temporal_client: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each example's agent or flow, loaded twice (one copy per engine), on its own INPUT:
    the same output (as JSON data: a run on Temporal returns the stored output), status and
    journal steps."""
    monkeypatch.delenv("KEEL_MODEL", raising=False)
    run_id, queue = _ids(name.replace("_", "-"))
    here, there = f"sqlite:///{tmp_path / 'direct.db'}", f"sqlite:///{tmp_path / 'temporal.db'}"
    module, target = _example(name, "direct")
    expected = await direct(target, module.INPUT, here, run_id)
    module, target = _example(name, "temporal")
    got = await on_temporal(temporal_client, target, module.INPUT, there, run_id, queue)
    assert (to_jsonable(got[0]), got[1]) == (to_jsonable(expected[0]), expected[1])
    record_d, journal_d, _ = await proof.read_run(here, run_id)
    record_t, journal_t, _ = await proof.read_run(there, run_id)
    assert record_t.status == record_d.status
    assert proof.step_keys(journal_t) == proof.step_keys(journal_d)


async def test_tool_use_is_the_same_on_temporal(tmp_path: Path, temporal_client: Any) -> None:
    (output, status), _ = await same_on_both(tmp_path, temporal_client, proof.weather_agent,
                                             "Which is warmer, Paris or Tokyo?", "weather")
    assert (output, status) == ("Tokyo is warmer than Paris by 6 degrees.", "completed")


async def test_a_supervisor_with_workers_is_the_same_on_temporal(
        tmp_path: Path, temporal_client: Any) -> None:
    (output, status), _ = await same_on_both(tmp_path, temporal_client, proof.desk,
                                             "Heat pump or gas?", "desk")
    assert (output, status) == ("Heat pumps (COP 3) give cheaper heat than gas.", "completed")


async def test_a_saga_compensates_the_same_on_temporal(tmp_path: Path,
                                                        temporal_client: Any) -> None:
    proof.BOOKINGS.clear()
    (error, status), _ = await same_on_both(tmp_path, temporal_client, proof.trip_agent,
                                            "Book a room.", "trip")
    assert status == "failed" and error == "ModelError"
    # each run booked once and cancelled that booking once (its compensation)
    assert [b.split(":")[0] for b in proof.BOOKINGS] == ["book", "cancel", "book", "cancel"]


def _approve_with_cli(url: str, approval_id: str) -> str:
    result = CliRunner().invoke(app, ["--store", url, "approvals", "approve", approval_id,
                                      "--by", "ana", "--comment", "carrier lost it"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


async def test_an_approval_gate_decided_with_the_cli_is_the_same_on_temporal(
        tmp_path: Path, temporal_client: Any) -> None:
    from keel.temporal import TemporalWorker, run_result, start_run

    proof.REFUNDS.clear()
    run_id, queue = _ids("refunds")
    here, there = f"sqlite:///{tmp_path / 'direct.db'}", f"sqlite:///{tmp_path / 'temporal.db'}"
    text = "Order A-1042 never arrived; refund me."
    expected = await direct(proof.refund_agent(), text, here, run_id)
    async with TemporalWorker(temporal_client, [proof.refund_agent()], store=there,
                              task_queue=queue):
        await start_run(temporal_client, "refunds", text, task_queue=queue, run_id=run_id)
        task = await proof.wait_for_task(there, run_id)
        assert len(proof.REFUNDS) == 1  # the direct run's refund only, so far
        await asyncio.to_thread(_approve_with_cli, there, task.task_id)
        result = await asyncio.wait_for(run_result(temporal_client, run_id), 120)
    assert (result.output, "completed") == expected
    _, journal_d, _ = await proof.read_run(here, run_id)
    record_t, journal_t, tasks = await proof.read_run(there, run_id)
    assert record_t.status == "completed"
    assert proof.step_keys(journal_t) == proof.step_keys(journal_d)
    assert [(t.status, t.by) for t in tasks] == [("resolved", "ana")]
    # once directly, once on Temporal (inside a keel.advance activity)
    assert [inside for _, inside in proof.REFUNDS] == [False, True]


async def test_an_approval_decided_while_no_worker_runs_resumes_on_a_new_worker(
        tmp_path: Path, temporal_client: Any) -> None:
    from keel.temporal import TemporalWorker, run_result, start_run

    proof.REFUNDS.clear()
    run_id, queue = _ids("later")
    url = f"sqlite:///{tmp_path / 'temporal.db'}"
    async with TemporalWorker(temporal_client, [proof.refund_agent()], store=url,
                              task_queue=queue):
        await start_run(temporal_client, "refunds", "Refund A-1042.", task_queue=queue,
                        run_id=run_id)
        task = await proof.wait_for_task(url, run_id)
    # every worker is gone; the run waits in keel's store and in Temporal
    record, _, _ = await proof.read_run(url, run_id)
    assert record.status == "suspended" and proof.REFUNDS == []
    async with open_store(url) as store:
        await decide_approval(task.task_id, store=store, approve=True, by="ana")
    async with TemporalWorker(temporal_client, [proof.refund_agent()], store=url,
                              task_queue=queue):
        result = await asyncio.wait_for(run_result(temporal_client, run_id), 120)
    assert result.output == "I refunded 249.00 for order A-1042."
    record, _, _ = await proof.read_run(url, run_id)
    assert record.status == "completed"
    assert [(run_id in key, inside) for key, inside in proof.REFUNDS] == [(True, True)]


async def test_an_approval_decided_through_the_http_api_resumes_the_temporal_run(
        tmp_path: Path, temporal_client: Any) -> None:
    """``POST /v1/approvals/{id}/approve`` on a ``keel serve`` app that has the same agent:
    the Temporal worker finishes the run, the server's own worker never claims it."""
    import httpx

    from keel.server import App
    from keel.temporal import TemporalWorker, run_result, start_run
    from tests.server.conftest import ServerThread, make_keys

    proof.REFUNDS.clear()
    run_id, queue = _ids("http")
    db = str(tmp_path / "runs.db")
    url = f"sqlite:///{db}"
    keys = await asyncio.to_thread(make_keys, db, ("acme",))
    server = ServerThread(App([proof.refund_agent()], store=db))
    base = await asyncio.to_thread(server.start)
    try:
        async with TemporalWorker(temporal_client, [proof.refund_agent()], store=url,
                                  task_queue=queue):
            await start_run(temporal_client, "refunds", "Refund A-1042.", task_queue=queue,
                            run_id=run_id, tenant="acme")
            task = await proof.wait_for_task(url, run_id)
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                token = (await http.post("/v1/auth/token", headers={
                    "Authorization": f"Bearer {keys[('acme', 'reviewer')]}"})).json()["token"]
                r = await http.post(f"/v1/approvals/{task.task_id}/approve",
                                    json={"comment": "ok"},
                                    headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 200, r.text
            result = await asyncio.wait_for(run_result(temporal_client, run_id), 120)
    finally:
        await asyncio.to_thread(server.stop)
    assert result.output == "I refunded 249.00 for order A-1042."
    # the refund ran once, inside a Temporal activity (not in the server's worker)
    assert [inside for _, inside in proof.REFUNDS] == [True]
    _, _, tasks = await proof.read_run(url, run_id)
    assert [t.status for t in tasks] == ["resolved"]
