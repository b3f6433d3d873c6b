"""A run that waits for an approval and is resumed by another process stays one trace: the
second process's run span is a child of the first execution's run span, linked to it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from keel import ApprovalRequired
from keel.observe import TRACE_METADATA
from keel.runtime import decide_approval
from keel.store import SQLiteStore, TaskFilter

from .conftest import Traces, attrs

APP = '''
import asyncio, json, sys
from keel import Agent, tool
from keel.observe import Tracing
from keel.testing import ScriptedModel, call


def build(tracing):
    @tool(risk="irreversible")
    def wire(amount: int, to: str) -> str:
        """Send money."""
        return f"sent {amount} to {to}"

    model = ScriptedModel([call("wire", {"amount": 50, "to": "bob"}), "paid"])
    return Agent("pay", model=model, tools=[wire], middleware=[tracing])


async def resume(db, run_id):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    result = await build(Tracing(tracer_provider=provider)).resume(
        run_id, store=f"sqlite:///{db}")
    spans = [{"name": s.name, "trace": s.context.trace_id, "span": s.context.span_id,
              "parent": s.parent.span_id if s.parent else None,
              "links": [[l.context.trace_id, l.context.span_id] for l in s.links],
              "events": [e.name for e in s.events]}
             for s in exporter.get_finished_spans()]
    print(json.dumps({"output": result.output, "spans": spans}))


if __name__ == "__main__":
    asyncio.run(resume(sys.argv[1], sys.argv[2]))
'''


async def test_approval_resumed_in_another_process_continues_the_trace(
        traces: Traces, tmp_path: Path) -> None:
    app = tmp_path / "payapp.py"
    app.write_text(textwrap.dedent(APP))
    sys.path.insert(0, str(tmp_path))
    try:
        import payapp  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    db = tmp_path / "runs.db"
    async with SQLiteStore(db) as store:
        with pytest.raises(ApprovalRequired) as info:
            await payapp.build(traces.tracing()).run("pay bob 50", store=store)
        run_id = info.value.run_id
        assert run_id is not None
        first = traces.one("invoke_agent pay")
        assert attrs(first)["keel.run.status"] == "suspended"
        [wait] = [e for e in first.events if e.name == "keel.run.suspended"]
        assert wait.attributes is not None and wait.attributes["keel.wait"] == "approval"
        assert (await store.get_run(run_id)).metadata[TRACE_METADATA]["traceparent"]
        [task] = await store.list_tasks(TaskFilter(kind="approval"))
        await decide_approval(task.task_id, store=store, approve=True, by="ann")

    env = {k: v for k, v in os.environ.items() if k != "KEEL_STORE"}
    env["PYTHONWARNINGS"] = "error"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(app), str(db), run_id, env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, stderr.decode()
    out = json.loads(stdout.decode().strip().splitlines()[-1])
    assert out["output"] == "paid"
    spans = {s["name"]: s for s in out["spans"]}
    resumed = spans["invoke_agent pay"]
    trace_id, span_id = first.context.trace_id, first.context.span_id
    assert resumed["trace"] == trace_id, "the resumed run started another trace"
    assert resumed["parent"] == span_id
    assert resumed["links"] == [[trace_id, span_id]]
    assert "keel.run.resumed" in resumed["events"]
    # the approved call ran in the second process, inside its run span, in the same trace
    wire = spans["execute_tool wire"]
    assert wire["trace"] == trace_id and wire["parent"] == resumed["span"]
    assert {s["trace"] for s in out["spans"]} == {trace_id}


async def test_a_run_started_untraced_gets_its_trace_stored_by_its_first_traced_resume(
        traces: Traces, tmp_path: Path) -> None:
    from keel import Agent, MemoryStore, tool
    from keel.observe import Tracing
    from keel.testing import ScriptedModel, call

    def build(tracing: Tracing) -> Agent[str]:
        @tool(risk="irreversible")
        def wire(amount: int) -> str:
            """Send money."""
            return f"sent {amount}"

        model = ScriptedModel([call("wire", {"amount": 1}), call("wire", {"amount": 2}),
                               "done"])
        return Agent("pay2", model=model, tools=[wire], middleware=[tracing])

    store = MemoryStore()

    async def approve() -> None:
        [task] = [t for t in await store.list_tasks(TaskFilter(kind="approval"))
                  if t.status == "open"]
        await decide_approval(task.task_id, store=store, approve=True, by="ann")

    with pytest.raises(ApprovalRequired) as info:  # no SDK: nothing traced, nothing stored
        await build(Tracing()).run("pay", store=store)
    run_id = info.value.run_id
    assert run_id is not None
    assert TRACE_METADATA not in (await store.get_run(run_id)).metadata
    await approve()
    with pytest.raises(ApprovalRequired):  # traced from here on; the trace is stored
        await build(traces.tracing()).resume(run_id, store=store)
    first = traces.one("invoke_agent pay2")
    stored = (await store.get_run(run_id)).metadata[TRACE_METADATA]["traceparent"]
    assert stored.startswith(f"00-{first.context.trace_id:032x}-{first.context.span_id:016x}")
    await approve()
    assert (await build(traces.tracing()).resume(run_id, store=store)).output == "done"
    second = [s for s in traces.named("invoke_agent pay2") if s is not first]
    [second_span] = [s for s in second if s.context.span_id != first.context.span_id]
    assert second_span.context.trace_id == first.context.trace_id
    assert second_span.parent is not None
    assert second_span.parent.span_id == first.context.span_id
