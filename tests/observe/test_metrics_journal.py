"""The proof: ``/metrics`` scraped over real HTTP during and after 100 concurrent runs with
injected model and tool faults agrees exactly with what the run store holds (statuses,
model and tool steps, tool failures by error type, retries, tokens, cost and histogram
counts)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import keel
from keel import Retry, RetryPolicy, tool
from keel.core import (
    Message,
    ModelResponse,
    ModelSettings,
    TextPart,
    ToolCallPart,
    ToolSpec,
    Usage,
)
from keel.observe import Metrics, serve_metrics
from keel.store import RunFilter, open_store
from keel.testing import FaultyModel, FunctionModel, faulty_tool

AGENTS = ("billing", "search", "support", "triage")
RUNS_EACH = 25
FAST = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.001, random=random.Random(3))
COST = 0.0625  # a power of two: sums are exact whatever the order


@tool(risk="read")
def lookup(order: int) -> str:
    """Look an order up."""
    return f"order {order}: shipped"


def _script(messages: list[Message], tools: list[ToolSpec], settings: ModelSettings,
            ) -> ModelResponse:
    results = sum(1 for m in messages if m.role == "tool")
    usage = Usage(requests=1, input_tokens=10 + len(messages), output_tokens=3, cost_usd=COST)
    if results < 2:
        call = ToolCallPart(call_id=f"c{results}", tool_name="lookup",
                            arguments=json.dumps({"order": results + 1}))
        return ModelResponse(parts=(call,), model="test:m", usage=usage,
                             finish_reason="tool_calls")
    return ModelResponse(parts=(TextPart(text="done"),), model="test:m", usage=usage)


def _agent(name: str, seed: int, registry: CollectorRegistry) -> keel.Agent[str]:
    model = FaultyModel(FunctionModel(_script, name="test:m"), seed=seed,
                        server_error_rate=0.2, rate_limit_rate=0.1,
                        latency=(0.0, 0.01))
    flaky = faulty_tool(lookup, seed=seed, error_rate=0.25, timeout_rate=0.05)
    return keel.Agent(name, model=model, tools=[flaky],
                      middleware=[Metrics(registry=registry), Retry(FAST)])


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _sum(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
         **labels: str) -> float:
    return sum(v for (n, labs), v in samples.items()
               if n == name and all(dict(labs).get(k) == want for k, want in labels.items()))


async def _journal_figures(store: Any) -> dict[str, Any]:
    runs = []
    for agent in AGENTS:
        runs += await store.list_runs(RunFilter(agent=agent, limit=1000))
    fig: dict[str, Any] = {"status": Counter(), "model_ok": Counter(), "tool_calls": Counter(),
                           "tool_failures": Counter(), "retries": Counter(),
                           "model_failed": Counter(), "input": 0, "output": 0, "cost": 0.0}
    for run in runs:
        fig["status"][(run.agent, run.status)] += 1
        fig["input"] += run.usage.get("input_tokens", 0)
        fig["output"] += run.usage.get("output_tokens", 0)
        fig["cost"] += run.usage.get("cost_usd", 0.0)
        if run.status == "failed" and (run.error or {}).get("step_key", "").endswith("/model"):
            fig["model_failed"][run.agent] += 1
        for e in await store.read_journal(run.run_id):
            if e.phase != "result":
                continue
            if e.kind == "model":
                fig["model_ok"][run.agent] += 1
            elif e.kind == "tool":
                fig["tool_calls"][run.agent] += 1
                failure = e.data.get("failure")
                if failure is not None:
                    fig["tool_failures"][(run.agent, failure["error_type"])] += 1
            elif e.kind == "attempt":
                fig["retries"][(run.agent, "tool" if "/tool:" in e.key else "model")] += 1
    return fig


async def test_metrics_scraped_during_100_faulty_runs_agree_with_the_journal(
        tmp_path: Path) -> None:
    registry = CollectorRegistry()
    server = serve_metrics(0, registry=registry)
    try:
        async with open_store(f"sqlite:///{tmp_path}/runs.db") as store:
            agents = [_agent(name, seed, registry)
                      for seed, name in enumerate(a for a in AGENTS for _ in range(RUNS_EACH))]

            async def one(agent: keel.Agent[str]) -> None:
                with contextlib.suppress(keel.RunError):  # failed runs are in the figures
                    await agent.run("where is my order?", store=store)

            runs = asyncio.gather(*(one(a) for a in agents))
            await asyncio.sleep(0.01)
            during = await asyncio.to_thread(_scrape, server.url)  # mid-run: a valid scrape
            await runs
            after = await asyncio.to_thread(_scrape, server.url)
            fig = await _journal_figures(store)
    finally:
        server.close()

    assert _sum(during, "keel_runs_started_total") <= 100
    assert _sum(after, "keel_runs_started_total") == 100
    statuses: Counter[tuple[str, str]] = fig["status"]
    assert sum(statuses.values()) == 100
    assert {s for _, s in statuses} >= {"completed", "failed"}  # the faults made failures
    for (agent, status), n in statuses.items():
        assert _sum(after, "keel_runs_finished_total", agent=agent, status=status) == n
        assert _sum(after, "keel_run_duration_seconds_count", agent=agent, status=status) == n
    assert _sum(after, "keel_runs_finished_total") == 100
    for agent in AGENTS:
        ok, failed = fig["model_ok"][agent], fig["model_failed"][agent]
        assert _sum(after, "keel_model_requests_total", agent=agent, outcome="ok") == ok
        assert _sum(after, "keel_model_requests_total", agent=agent, outcome="error") == failed
        assert _sum(after, "keel_step_duration_seconds_count", agent=agent,
                    kind="model") == ok + failed
        assert _sum(after, "keel_tool_calls_total", agent=agent) == fig["tool_calls"][agent]
        assert _sum(after, "keel_step_duration_seconds_count", agent=agent,
                    kind="tool") == fig["tool_calls"][agent]
        for kind in ("model", "tool"):
            assert _sum(after, "keel_retries_total", agent=agent,
                        kind=kind) == fig["retries"][(agent, kind)]
    assert sum(fig["retries"].values()) > 0
    assert sum(fig["tool_failures"].values()) > 0
    for (agent, error), n in fig["tool_failures"].items():
        assert _sum(after, "keel_tool_failures_total", agent=agent, error_type=error) == n
    assert _sum(after, "keel_tool_failures_total") == sum(fig["tool_failures"].values())
    assert _sum(after, "keel_tokens_total", direction="input") == fig["input"]
    assert _sum(after, "keel_tokens_total", direction="output") == fig["output"]
    assert _sum(after, "keel_cost_usd_total") == fig["cost"]
    assert _sum(after, "keel_model_latency_seconds_count") == _sum(
        after, "keel_step_duration_seconds_count", kind="model")
