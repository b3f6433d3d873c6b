"""The Metrics middleware: what each run, step, stream, approval and breaker leaves in the
registry, the bounds on labels, the human-task gauges from a real store, the /metrics
endpoint on loopback (one process and several) and the bad inputs refused."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import keel
from keel import ApprovalRequired, BreakerPolicy, CircuitBreaker, ConfigError, tool
from keel.core import Message, ModelResponse, ModelSettings, TextPart, ToolCallPart, ToolSpec, Usage
from keel.observe import Metrics, refresh_human_tasks, serve_metrics
from keel.store import open_store
from keel.testing import FunctionModel, ScriptedModel

SRC = str(Path(__file__).resolve().parents[2] / "src")


def value(reg: CollectorRegistry, name: str, **labels: str) -> float:
    total = 0.0
    for family in reg.collect():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def calls(name: str, n: int, *, cost: float = 0.5) -> list[ModelResponse]:
    usage = Usage(requests=1, input_tokens=7, output_tokens=2, cost_usd=cost)
    out = [ModelResponse(parts=(ToolCallPart(call_id=f"c{i}", tool_name=name,
                                             arguments=json.dumps({"n": i})),),
                         usage=usage, finish_reason="tool_calls") for i in range(n)]
    return [*out, ModelResponse(parts=(TextPart(text="All done. Bye."),), usage=usage)]


@tool(risk="read")
def count(n: int) -> str:
    """Count."""
    return str(n)


@tool(risk="irreversible")
def wire(n: int) -> str:
    """Send money."""
    return "sent"


@tool(risk="read")
def broken(n: int) -> str:
    """Always fails."""
    raise ValueError("nope")


async def test_a_run_counts_start_end_steps_tokens_cost_and_tenant(tmp_path: Path) -> None:
    reg = CollectorRegistry()
    metrics = Metrics(registry=reg, tenant_of=lambda start: "acme")
    agent = keel.Agent[str]("clerk", model=ScriptedModel(calls("count", 2)), tools=[count],
                       middleware=[metrics])
    await agent.run("go", store=keel.MemoryStore())
    assert value(reg, "keel_runs_started_total", agent="clerk", tenant="acme") == 1
    assert value(reg, "keel_runs_finished_total", agent="clerk", tenant="acme",
                 status="completed") == 1
    assert value(reg, "keel_step_duration_seconds_count", kind="model") == 3
    assert value(reg, "keel_step_duration_seconds_count", kind="tool") == 2
    assert value(reg, "keel_tool_calls_total", agent="clerk", tool="count") == 2
    assert value(reg, "keel_tokens_total", tenant="acme", direction="input") == 21
    assert value(reg, "keel_tokens_total", tenant="acme", direction="output") == 6
    assert value(reg, "keel_cost_usd_total", agent="clerk", tenant="acme") == 1.5
    assert value(reg, "keel_run_duration_seconds_count", status="completed") == 1


async def test_streaming_records_time_to_first_token_and_plain_requests_do_not() -> None:
    reg = CollectorRegistry()
    agent = keel.Agent[str]("talker", model=ScriptedModel(["Hello there. How can I help?"] * 2),
                       middleware=[Metrics(registry=reg)])
    await agent.run("hi", store=keel.MemoryStore())
    assert value(reg, "keel_time_to_first_token_seconds_count") == 0
    events = [e async for e in agent.stream("hi", store=keel.MemoryStore())]
    assert any(type(e).__name__ == "TextDelta" for e in events)
    assert value(reg, "keel_time_to_first_token_seconds_count") == 1
    assert value(reg, "keel_model_latency_seconds_count") == 2


async def test_tool_failures_by_error_type_and_a_waiting_approval(tmp_path: Path) -> None:
    reg = CollectorRegistry()
    agent = keel.Agent[str]("ops", model=ScriptedModel([*calls("broken", 1)[:1],
                                                   *calls("wire", 1)]),
                       tools=[broken, wire], middleware=[Metrics(registry=reg)])
    async with open_store(f"sqlite:///{tmp_path}/runs.db") as store:
        with pytest.raises(ApprovalRequired):
            await agent.run("go", store=store)
        figures = await refresh_human_tasks(store, registry=reg, now=time.time() + 60)
    assert value(reg, "keel_tool_failures_total", tool="broken", error_type="tool_error") == 1
    assert value(reg, "keel_runs_finished_total", status="awaiting_approval") == 1
    assert figures["approval"]["waiting"] == 1
    assert value(reg, "keel_human_tasks_waiting", kind="approval") == 1
    assert value(reg, "keel_human_tasks_waiting", kind="escalation") == 0
    assert value(reg, "keel_human_task_oldest_age_seconds", kind="approval") >= 60


async def test_the_default_breaker_reports_its_state_to_the_gauge() -> None:
    reg = CollectorRegistry()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=2, cooldown=60))
    agent = keel.Agent[str]("flaky", model=ScriptedModel(calls("broken", 3)), tools=[broken],
                       middleware=[Metrics(registry=reg), breaker,
                                   keel.Retry(keel.RetryPolicy(max_attempts=1))])
    await agent.run("go", store=keel.MemoryStore())
    assert value(reg, "keel_circuit_breaker_state", agent="flaky", breaker="tool:broken") == 2
    assert value(reg, "keel_tool_failures_total", error_type="circuit_open") == 1


async def test_labels_are_bounded_and_hold_no_run_ids() -> None:
    reg = CollectorRegistry()
    metrics = Metrics(registry=reg, max_label_values=2,
                      tenant_of=lambda start: start.run_id)  # a careless tenant_of
    for name in ("a", "b", "c"):
        agent = keel.Agent[str](name, model=ScriptedModel(["ok"]), middleware=[metrics])
        await agent.run("go", store=keel.MemoryStore())
    tenants = {s.labels["tenant"] for f in reg.collect() for s in f.samples
               if s.name == "keel_runs_started_total"}
    agents = {s.labels["agent"] for f in reg.collect() for s in f.samples
              if s.name == "keel_runs_started_total"}
    assert "other" in tenants and len(tenants) <= 3
    assert agents == {"a", "b", "other"}


@pytest.mark.parametrize("kwargs", [{"registry": "default"}, {"tenant_of": "acme"},
                                    {"max_label_values": 0}, {"max_label_values": True}])
def test_bad_metrics_options_are_refused_naming_the_part(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="Metrics"):
        Metrics(**kwargs)


@pytest.mark.parametrize(("port", "host"), [(-1, "127.0.0.1"), (70000, "127.0.0.1"),
                                            ("80", "127.0.0.1"), (0, "not a host"), (0, "")])
def test_bad_metrics_endpoints_are_refused(port: Any, host: Any) -> None:
    with pytest.raises(ConfigError, match="metrics"):
        serve_metrics(port, host)


def test_a_port_in_use_is_a_clear_error() -> None:
    first = serve_metrics(0, registry=CollectorRegistry())
    try:
        with pytest.raises(ConfigError, match="another port"):
            serve_metrics(first.port, registry=CollectorRegistry())
    finally:
        first.close()


def test_the_endpoint_serves_prometheus_text_on_loopback_and_only_metrics() -> None:
    reg = CollectorRegistry()
    Metrics(registry=reg).i.runs_started.labels("x", "").inc()
    server = serve_metrics(0, registry=reg)
    try:
        with urllib.request.urlopen(server.url, timeout=5) as resp:
            body = resp.read().decode()
            assert resp.headers["Content-Type"].startswith("text/plain")
        assert 'keel_runs_started_total{agent="x",tenant=""} 1.0' in body
    finally:
        server.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=2)


_CHILD = """
import asyncio, keel
from keel.testing import ScriptedModel
async def main():
    for i in range({runs}):
        agent = keel.Agent[str]("mp", model=ScriptedModel(["ok"]))
        await agent.run("go", store=keel.MemoryStore())
asyncio.run(main())
"""


def test_several_processes_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    directory = tmp_path / "prom"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONPATH": SRC}
    children = [subprocess.Popen([sys.executable, "-c", _CHILD.format(runs=n)], env=env)
                for n in (3, 4)]
    assert [c.wait(timeout=120) for c in children] == [0, 0]
    # the endpoint in a third process (the worker), reading every process's files
    serve = ("import sys,urllib.request\nfrom keel.observe import serve_metrics\n"
             "s = serve_metrics(0)\nsys.stdout.write(urllib.request.urlopen(s.url).read()"
             ".decode())\ns.close()\n")
    out = subprocess.run([sys.executable, "-c", serve], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert 'keel_runs_started_total{agent="mp",tenant=""} 7.0' in out
    assert 'keel_runs_finished_total{agent="mp",status="completed",tenant=""} 7.0' in out


def test_a_missing_multiprocess_directory_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "nope"), "PYTHONPATH": SRC}
    code = ("from keel.observe import serve_metrics\ntry:\n    serve_metrics(0)\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120).stdout
    assert "ConfigError" in out and "PROMETHEUS_MULTIPROC_DIR" in out


async def test_a_model_that_fails_counts_one_error_by_type() -> None:
    reg = CollectorRegistry()

    def fail(messages: list[Message], tools: list[ToolSpec],
             settings: ModelSettings) -> ModelResponse:
        raise keel.ModelError("bad request", status=400, retryable=False)

    agent = keel.Agent[str]("bad", model=FunctionModel(fail), middleware=[Metrics(registry=reg)])
    with pytest.raises(keel.ModelError):
        await agent.run("go", store=keel.MemoryStore())
    assert value(reg, "keel_model_requests_total", outcome="error") == 1
    assert value(reg, "keel_model_failures_total", agent="bad") == 1
    assert value(reg, "keel_runs_finished_total", status="failed") == 1
    await asyncio.sleep(0)


async def test_opentelemetry_metrics_for_those_who_prefer_them() -> None:
    pytest.importorskip("opentelemetry.sdk.metrics")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from keel.observe import use_opentelemetry

    reg = CollectorRegistry()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = Metrics(registry=reg, tenant_of=lambda start: "acme")
    agent = keel.Agent[str]("clerk", model=ScriptedModel(calls("count", 1)), tools=[count],
                            middleware=[metrics])
    await agent.run("go", store=keel.MemoryStore())  # before: Prometheus only
    use_opentelemetry(provider, registry=reg)
    await agent.run("go", store=keel.MemoryStore())
    points: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                points[m.name] = list(m.data.data_points)
    [finished] = points["keel.runs_finished"]
    assert finished.value == 1 and dict(finished.attributes) == {
        "agent": "clerk", "tenant": "acme", "status": "completed"}
    steps = {p.attributes["kind"]: p.count for p in points["keel.step_duration_seconds"]}
    assert steps == {"model": 2, "tool": 1}
    tokens = {p.attributes["direction"]: p.value for p in points["keel.tokens"]}
    assert tokens == {"input": 14, "output": 4}
    # Prometheus keeps counting both runs
    assert value(reg, "keel_runs_finished_total", status="completed") == 2
    provider.shutdown()


@tool(risk="read")
def hand_over(n: int) -> str:
    """Ask for a person."""
    raise keel.Escalate("the customer asked for a person")


HANGING: list[asyncio.Event] = []


@tool(risk="read")
async def hang(n: int) -> str:
    """Never answers."""
    HANGING[-1].set()
    await asyncio.sleep(3600)
    return "late"


async def test_escalated_and_cancelled_runs_match_the_store(tmp_path: Path) -> None:
    reg = CollectorRegistry()
    metrics = Metrics(registry=reg)
    async with open_store(f"sqlite:///{tmp_path}/runs.db") as store:
        agent = keel.Agent[str]("desk", model=ScriptedModel(calls("hand_over", 1)),
                                tools=[hand_over], middleware=[metrics])
        with pytest.raises(keel.Escalate):
            await agent.run("go", store=store)
        slow = keel.Agent[str]("desk", model=ScriptedModel(calls("hang", 1)), tools=[hang],
                               middleware=[metrics])
        HANGING.append(asyncio.Event())
        task = asyncio.create_task(slow.run("go", store=store))
        await HANGING[-1].wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        statuses = sorted((r.status, (r.error or {}).get("type")) for r in
                          await store.list_runs())
        figures = await refresh_human_tasks(store, registry=reg)
    assert statuses == [("cancelled", "CancelledError"), ("suspended", "Escalate")]
    assert value(reg, "keel_runs_finished_total", status="escalated") == 1
    assert value(reg, "keel_runs_finished_total", status="cancelled") == 1
    assert figures["escalation"]["waiting"] == 1
    assert value(reg, "keel_human_tasks_waiting", kind="escalation") == 1


async def test_a_tenant_of_that_raises_does_not_fail_the_run() -> None:
    reg = CollectorRegistry()

    def broken_tenant(start: Any) -> str:
        raise KeyError("tenant")

    agent = keel.Agent[str]("t", model=ScriptedModel(["ok"]),
                            middleware=[Metrics(registry=reg, tenant_of=broken_tenant)])
    result = await agent.run("go", store=keel.MemoryStore())
    assert result.output == "ok"
    assert value(reg, "keel_runs_finished_total", tenant="", status="completed") == 1
