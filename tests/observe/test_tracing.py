"""Tracing: the span trees of real runs, captured with the SDK's in-memory exporter; the
GenAI attributes; content capture and its scrubber; trace context on a tool's HTTP calls
(a real loopback server records the header)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest
from opentelemetry.trace import StatusCode

from keel import (
    Agent,
    Escalate,
    Guardrail,
    MemoryStore,
    ModelError,
    Retry,
    RetryPolicy,
    tool,
)
from keel.observe import TRACE_METADATA, Tracing, inject_trace_headers_async, trace_headers
from keel.patterns import Supervisor
from keel.runtime import FlowContext, GuardDecision, GuardInput, flow
from keel.testing import FunctionModel, ScriptedModel, call

from .conftest import Traces, attrs, parent_of


def _tools(log: list[str]) -> list[Any]:
    async def weather(city: str) -> str:
        """The weather in a city."""
        log.append(city)
        await asyncio.sleep(0)
        return f"sunny in {city}"

    async def clock(zone: str) -> str:
        """The time in a zone."""
        log.append(zone)
        return "12:00"

    return [tool(risk="read")(weather), tool(risk="read")(clock)]


async def test_agent_with_parallel_tools_is_one_trace_with_genai_spans(traces: Traces) -> None:
    log: list[str] = []
    model = ScriptedModel([[call("weather", {"city": "Oslo"}, call_id="c1"),
                            call("clock", {"zone": "CET"}, call_id="c2")], "sunny, noon"])
    agent = Agent("helper", model=model, tools=_tools(log), middleware=[traces.tracing()])
    store = MemoryStore()
    result = await agent.run("weather and time?", store=store)
    assert result.output == "sunny, noon" and sorted(log) == ["CET", "Oslo"]

    root = traces.one("invoke_agent helper")
    assert root.parent is None
    assert attrs(root)["gen_ai.operation.name"] == "invoke_agent"
    assert attrs(root)["gen_ai.agent.name"] == "helper"
    assert attrs(root)["keel.run.id"] == result.run_id
    assert attrs(root)["keel.run.status"] == "completed"
    chats = traces.named("chat scripted")
    assert len(chats) == 2
    for chat in chats:
        a = attrs(chat)
        assert parent_of(chat) == root.context.span_id
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == "test"
        assert a["gen_ai.request.model"] == "scripted"
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert "gen_ai.input.messages" not in a, "content capture must be off by default"
    reasons = sorted(tuple(attrs(c)["gen_ai.response.finish_reasons"]) for c in chats)
    assert reasons == [("stop",), ("tool_calls",)]
    tools = {attrs(s)["gen_ai.tool.name"]: s for s in traces.spans()
             if attrs(s).get("gen_ai.operation.name") == "execute_tool"}
    assert set(tools) == {"weather", "clock"}
    assert attrs(tools["weather"])["gen_ai.tool.call.id"] == "c1"
    assert attrs(tools["clock"])["gen_ai.tool.call.id"] == "c2"
    assert all(parent_of(s) == root.context.span_id for s in tools.values())
    assert "gen_ai.tool.call.arguments" not in attrs(tools["weather"])
    assert {s.context.trace_id for s in traces.spans()} == {root.context.trace_id}
    # the run record holds the run span's context (for a resume to continue the trace)
    stored = (await store.get_run(result.run_id)).metadata[TRACE_METADATA]
    assert stored["traceparent"].startswith(f"00-{root.context.trace_id:032x}-"
                                            f"{root.context.span_id:016x}-")


async def test_no_sdk_means_no_spans_and_nothing_stored() -> None:
    store = MemoryStore()
    agent = Agent("quiet", model=ScriptedModel(["ok"]), middleware=[Tracing()])
    result = await agent.run("hi", store=store)
    assert result.output == "ok"
    assert TRACE_METADATA not in (await store.get_run(result.run_id)).metadata
    assert trace_headers() == {}


async def test_supervisor_with_two_workers_nests_each_worker_under_its_delegation(
        traces: Traces) -> None:
    t = traces.tracing()

    async def lookup(topic: str) -> str:
        """Look a topic up."""
        return f"about {topic}"

    research = Agent("research", model=ScriptedModel([call("lookup", {"topic": "sky"}),
                                                      "the sky is blue"]),
                     tools=[tool(risk="read")(lookup)], middleware=[t])
    writer = Agent("writer", model=ScriptedModel(["once upon a time"]), middleware=[t])
    lead = Agent("lead", model=ScriptedModel([
        [call("ask_research", {"task": "facts"}), call("ask_writer", {"task": "intro"})],
        "report"]), middleware=[t])
    # the supervisor has no middleware of its own: it adopts its agents' tracing
    team = Supervisor("team", lead=lead, workers=[research, writer])
    store = MemoryStore()
    result = await team.run("write a report", store=store)
    assert result.output == "report"

    root = traces.one("invoke_workflow team")
    assert root.parent is None and attrs(root)["gen_ai.workflow.name"] == "team"
    lead_span = traces.one("invoke_agent lead")
    assert parent_of(lead_span) == root.context.span_id
    assert attrs(lead_span)["keel.path"] == "team/lead"
    for worker in ("research", "writer"):
        ask = next(s for s in traces.named(f"execute_tool ask_{worker}"))
        assert parent_of(ask) == lead_span.context.span_id
        sub = traces.one(f"invoke_agent {worker}")
        assert parent_of(sub) == ask.context.span_id, f"{worker} is not under its delegation"
        chats = [s for s in traces.named("chat scripted") if parent_of(s) == sub.context.span_id]
        assert chats and all(attrs(c)["keel.agent"] == worker for c in chats)
    lookup_span = traces.one("execute_tool lookup")
    assert parent_of(lookup_span) == traces.one("invoke_agent research").context.span_id
    assert {s.context.trace_id for s in traces.spans()} == {root.context.trace_id}
    assert TRACE_METADATA in (await store.get_run(result.run_id)).metadata


async def test_a_flow_of_two_agents_is_one_trace_under_the_flows_span(traces: Traces) -> None:
    t = traces.tracing()
    first = Agent("draft", model=ScriptedModel(["a draft"]), middleware=[t])
    second = Agent("edit", model=ScriptedModel(["an edit"]), middleware=[t])

    @flow("pipeline", agents=[first, second])
    async def pipeline(ctx: FlowContext, text: str) -> str:
        drafted = await ctx.run_agent(first, text)
        return (await ctx.run_agent(second, drafted.text)).text

    assert (await pipeline.run("go", store=MemoryStore())).output == "an edit"
    root = traces.one("invoke_workflow pipeline")
    assert root.parent is None
    for name in ("draft", "edit"):
        sub = traces.one(f"invoke_agent {name}")
        assert parent_of(sub) == root.context.span_id
        [chat] = [c for c in traces.named("chat scripted") if attrs(c)["keel.agent"] == name]
        assert parent_of(chat) == sub.context.span_id
    assert {s.context.trace_id for s in traces.spans()} == {root.context.trace_id}


async def test_failed_run_has_error_status_on_the_run_and_the_request(traces: Traces) -> None:
    def broken(messages: Any, tools: Any, settings: Any) -> Any:
        raise ValueError("the model server said no")

    agent = Agent("fails", model=FunctionModel(broken), middleware=[traces.tracing()])
    store = MemoryStore()
    with pytest.raises(ModelError):
        await agent.run("hi", store=store)
    root = traces.one("invoke_agent fails")
    assert root.status.status_code == StatusCode.ERROR
    assert attrs(root)["error.type"] == "ModelError"
    assert attrs(root)["keel.run.status"] == "failed"
    chat = traces.one("chat function")
    assert chat.status.status_code == StatusCode.ERROR
    assert parent_of(chat) == root.context.span_id
    assert any(e.name == "exception" for e in root.events)


async def test_retries_are_events_on_the_step_span(traces: Traces) -> None:
    calls: list[int] = []

    def flaky(messages: Any, tools: Any, settings: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            return ModelError("the server is busy (503)", retryable=True)
        return "fine"

    retry = Retry(RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.001))
    agent = Agent("flaky", model=FunctionModel(flaky), middleware=[traces.tracing(), retry])
    assert (await agent.run("hi", store=MemoryStore())).output == "fine"
    chat = traces.one("chat function")  # one span for the step, its retry an event on it
    [event] = [e for e in chat.events if e.name == "keel.retry"]
    assert event.attributes is not None and event.attributes["keel.attempt"] == 1
    assert chat.status.status_code == StatusCode.UNSET
    assert len(calls) == 2


async def test_content_capture_passes_every_text_through_the_scrubber(traces: Traces) -> None:
    async def note(text: str) -> str:
        """Keep a note."""
        return f"kept {text}"

    model = ScriptedModel([call("note", {"text": "pin 4242"}), "done with 4242"])
    scrub = lambda s: s.replace("4242", "[pin]")  # noqa: E731
    agent = Agent("notes", model=model, tools=[tool(risk="read")(note)],
                  middleware=[traces.tracing(capture_content=True, scrub=scrub)])
    await agent.run("remember pin 4242", store=MemoryStore())
    dumped = json.dumps([attrs(s) for s in traces.spans()])
    assert "4242" not in dumped
    first, second = traces.named("chat scripted")
    sent = json.loads(attrs(first)["gen_ai.input.messages"])
    assert sent[-1]["role"] == "user" and "[pin]" in sent[-1]["parts"][0]["content"]
    answer = json.loads(attrs(second)["gen_ai.output.messages"])
    assert answer[0]["parts"][0]["content"] == "done with [pin]"
    call_span = traces.one("execute_tool note")
    assert "[pin]" in attrs(call_span)["gen_ai.tool.call.arguments"]
    assert "kept" in attrs(call_span)["gen_ai.tool.call.result"]


async def test_captured_history_keeps_the_latest_messages_within_the_cap(
        traces: Traces) -> None:
    big = "x" * 7_000  # near the per-text clip: the eleven turns' messages exceed the cap

    async def echo(text: str) -> str:
        """Echo."""
        return text[:3]

    turns: list[Any] = [call("echo", {"text": f"{i}{big}"}) for i in range(10)] + ["done"]
    agent = Agent("long", model=ScriptedModel(turns), tools=[tool(risk="read")(echo)],
                  middleware=[traces.tracing(capture_content=True)])
    await agent.run("start here", store=MemoryStore())
    last = traces.named("chat scripted")[-1]
    text = attrs(last)["gen_ai.input.messages"]
    assert 40_000 < len(text) <= 64_000
    sent = json.loads(text)
    assert sent[-1]["role"] == "tool"  # the newest message is kept ...
    assert "start here" not in text  # ... and the oldest (the user's) left out
    assert sent[-2]["parts"][0]["name"] == "echo" and "9xxx" in sent[-2]["parts"][0]["arguments"]


async def test_an_escalation_is_a_suspension_event_on_the_run_span(traces: Traces) -> None:
    t = traces.tracing()
    helper = Agent("helper", model=ScriptedModel(["x"]), middleware=[t])

    @flow("desk", agents=[helper])
    async def desk(ctx: FlowContext, text: str) -> str:
        return await ctx.escalate("a person must look at this")

    with pytest.raises(Escalate):
        await desk.run("help", store=MemoryStore())
    root = traces.one("invoke_workflow desk")
    [event] = [e for e in root.events if e.name == "keel.run.suspended"]
    assert event.attributes is not None and event.attributes["keel.wait"] == "escalation"
    assert event.attributes["keel.escalation.id"]
    assert attrs(root)["keel.run.status"] == "suspended"
    assert attrs(root)["gen_ai.conversation.id"] == attrs(root)["keel.run.id"]
    assert root.status.status_code == StatusCode.UNSET, "waiting for a person is no error"


async def test_guard_decisions_are_events_on_the_span_where_they_were_taken(
        traces: Traces) -> None:
    def no_deletes(inp: GuardInput) -> GuardDecision | None:
        if inp.place == "tool_args" and inp.tool is not None and inp.tool.name == "delete":
            return GuardDecision.block("deleting is not allowed here")
        return None

    async def delete(path: str) -> str:
        """Delete a file."""
        raise AssertionError("a blocked call must not run")

    model = ScriptedModel([call("delete", {"path": "/etc"}), "I cannot delete that"])
    agent = Agent("ops", model=model, tools=[tool(delete)],
                  middleware=[traces.tracing(),
                              Guardrail(no_deletes, places="tool_args", name="no_deletes")])
    await agent.run("clean up", store=MemoryStore())
    root = traces.one("invoke_agent ops")
    [event] = [e for e in root.events if e.name == "keel.guard"]
    assert event.attributes is not None
    assert event.attributes["keel.guard.action"] == "block"
    assert event.attributes["keel.guard.place"] == "tool_args"
    assert event.attributes["keel.guard.name"] == "no_deletes"
    assert not traces.named("execute_tool delete"), "a blocked call is not executed"


# ------------------------------------------------------------------ outgoing HTTP calls


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_a_tools_http_calls_carry_the_tool_spans_traceparent(
        traces: Traces, recorder: tuple[str, list[dict[str, str]]]) -> None:
    url, seen = recorder

    async def fetch_async(path: str) -> str:
        """GET a path (async client, keel's event hook)."""
        async with httpx.AsyncClient(
                event_hooks={"request": [inject_trace_headers_async]}) as client:
            return (await client.get(f"{url}/{path}")).text

    def fetch_sync(path: str) -> str:
        """GET a path (a plain sync tool: runs in a worker thread; headers by hand)."""
        with httpx.Client() as client:
            return client.get(f"{url}/{path}", headers=trace_headers()).text

    model = ScriptedModel([call("fetch_async", {"path": "a"}), call("fetch_sync", {"path": "b"}),
                           "fetched"])
    agent = Agent("web", model=model,
                  tools=[tool(risk="read")(fetch_async), tool(risk="read")(fetch_sync)],
                  middleware=[traces.tracing()])
    await agent.run("fetch", store=MemoryStore())
    assert len(seen) == 2
    for name, headers in zip(("fetch_async", "fetch_sync"), seen, strict=True):
        span = traces.one(f"execute_tool {name}")
        assert headers.get("traceparent", "").startswith(
            f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-"), name


async def test_the_run_span_carries_the_tenant_and_a_cache_hit_is_marked(
        traces: Traces) -> None:
    from keel.core import ModelSettings
    from keel.observe import ModelCache

    cache = ModelCache()
    agent = Agent("desk", model=ScriptedModel(["first", "second"]),
                  settings=ModelSettings(temperature=0.0),
                  middleware=[traces.tracing(), cache])
    await agent.run("same question", store=MemoryStore(), tenant="acme", user="ann")
    await agent.run("same question", store=MemoryStore(), tenant="acme", user="ann")
    runs = traces.named("invoke_agent desk")
    assert [(attrs(r)["keel.tenant"], attrs(r)["keel.user"]) for r in runs] == [
        ("acme", "ann"), ("acme", "ann")]
    chats = sorted((s for s in traces.spans() if s.name.startswith("chat ")),
                   key=lambda s: s.start_time or 0)
    assert [attrs(c).get("keel.cache") for c in chats] == ["miss", "hit"]
