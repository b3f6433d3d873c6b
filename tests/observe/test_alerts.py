"""Fleet alerts: rules over the metrics of real runs, sent once per rule and window through a
notifier (keel.guard's webhook notifier against a real HTTP server on loopback that is
down, then up), journaled in the log and the alerts counter; bad rules refused."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prometheus_client import CollectorRegistry

import keel
from keel import ConfigError, tool
from keel.core import ModelResponse, TextPart, ToolCallPart, Usage
from keel.guard import WebhookNotifier
from keel.observe import (
    ApprovalsOverdue,
    CostSpike,
    ErrorRateAbove,
    FleetAlert,
    FleetAlerts,
    LatencyAbove,
    Metrics,
    SuccessRateBelow,
    refresh_human_tasks,
)
from keel.observe._alerts import quantile
from keel.store import open_store
from keel.testing import ScriptedModel


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Sink:
    """A notifier that keeps what it was given."""

    def __init__(self) -> None:
        self.got: list[Any] = []

    async def notify(self, alert: Any) -> None:
        self.got.append(alert)


@tool(risk="read")
def lookup(n: int) -> str:
    """Look up."""
    if n < 0:
        raise ValueError("negative")
    return "ok"


@tool(risk="irreversible")
def wire(n: int) -> str:
    """Send money."""
    return "sent"


def answer(cost: float = 0.0) -> ModelResponse:
    return ModelResponse(parts=(TextPart(text="done"),),
                         usage=Usage(requests=1, input_tokens=5, output_tokens=1, cost_usd=cost))


def call(name: str, n: int) -> ModelResponse:
    return ModelResponse(parts=(ToolCallPart(call_id="c", tool_name=name,
                                             arguments=json.dumps({"n": n})),),
                         finish_reason="tool_calls")


async def runs(reg: CollectorRegistry, ok: int, failing: int, *, cost: float = 0.0,
               tool_errors: int = 0) -> None:
    metrics = Metrics(registry=reg)
    agent: keel.Agent[str]
    for _ in range(ok):
        agent = keel.Agent("desk", model=ScriptedModel([answer(cost)]), middleware=[metrics])
        await agent.run("go", store=keel.MemoryStore())
    for _ in range(tool_errors):
        agent = keel.Agent("desk", model=ScriptedModel([call("lookup", -1), answer()]),
                           tools=[lookup], middleware=[metrics])
        await agent.run("go", store=keel.MemoryStore())
    for _ in range(failing):
        agent = keel.Agent("desk", model=ScriptedModel([]), middleware=[metrics])
        with pytest.raises(keel.KeelError):
            await agent.run("go", store=keel.MemoryStore())


async def test_a_low_success_rate_is_sent_once_per_window_and_journaled(
        caplog: pytest.LogCaptureFixture) -> None:
    reg, clock, sink = CollectorRegistry(), Clock(), Sink()
    alerts = FleetAlerts([SuccessRateBelow(name="success", threshold=0.9, minutes=5,
                                           min_runs=10)],
                         notifier=sink, registry=reg, clock=clock)
    assert await alerts.evaluate() == []
    await runs(reg, ok=8, failing=2)  # 80%
    clock.now += 60
    [sent] = await alerts.evaluate()
    assert sent.rule == "success" and sent.value == pytest.approx(0.8)
    clock.now += 60
    assert await alerts.evaluate() == []  # still holds: not sent again in its window
    await alerts.drain(5)
    assert [a.rule for a in sink.got] == ["success"]
    assert [a.rule for a in alerts.sent] == ["success"]
    counted = [s.value for f in reg.collect() for s in f.samples
               if s.name == "keel_alerts_total" and s.labels == {"rule": "success"}]
    assert counted == [1.0]
    clock.now += 6 * 60  # a new window: the failures of the old one are out of it
    await runs(reg, ok=10, failing=0)
    assert await alerts.evaluate() == []
    await runs(reg, ok=5, failing=5)
    clock.now += 6 * 60
    [again] = await alerts.evaluate()
    assert again.value == pytest.approx(0.5)


async def test_too_few_runs_send_nothing() -> None:
    reg, clock = CollectorRegistry(), Clock()
    alerts = FleetAlerts([SuccessRateBelow(name="s", threshold=0.99, minutes=5, min_runs=10)],
                         registry=reg, clock=clock)
    await runs(reg, ok=1, failing=3)
    assert await alerts.evaluate() == []


async def test_error_rate_and_latency_rules() -> None:
    reg, clock = CollectorRegistry(), Clock()
    alerts = FleetAlerts([ErrorRateAbove(name="tools", threshold=0.2, of="tool", minutes=10,
                                         min_calls=4),
                          LatencyAbove(name="slow", seconds=3600, of="run", minutes=10,
                                       min_count=1),
                          LatencyAbove(name="any", seconds=1e-9, of="model", minutes=10,
                                       min_count=1)],
                         registry=reg, clock=clock)
    await runs(reg, ok=0, failing=0, tool_errors=4)
    fired = {a.rule: a for a in await alerts.evaluate()}
    assert set(fired) == {"tools", "any"}  # runs take far less than an hour
    assert fired["tools"].value == 1.0


def test_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.95, buckets) == pytest.approx(0.75)
    assert quantile(0.99, [(1.0, 0.0), (float("inf"), 10.0)]) == 1.0
    assert quantile(0.5, []) is None


async def test_a_cost_spike_against_the_baseline() -> None:
    reg, clock, sink = CollectorRegistry(), Clock(), Sink()
    alerts = FleetAlerts([CostSpike(name="spend", factor=3, minutes=10, baseline_minutes=60)],
                         notifier=sink, registry=reg, clock=clock)
    await alerts.evaluate()
    for _ in range(6):  # an hour of steady spend: $1 per 10 minutes
        await runs(reg, ok=1, failing=0, cost=1.0)
        clock.now += 600
        assert await alerts.evaluate() == []
    await runs(reg, ok=5, failing=0, cost=1.0)  # $5 in the next 10 minutes
    clock.now += 600
    [spike] = await alerts.evaluate()
    assert spike.value == 5.0 and "usual $1" in spike.reason


async def test_approvals_overdue_from_the_store(tmp_path: Path) -> None:
    reg, clock = CollectorRegistry(), Clock()
    alerts = FleetAlerts([ApprovalsOverdue(name="late", minutes=30, older_than_minutes=60)],
                         registry=reg, clock=clock)
    agent: keel.Agent[str] = keel.Agent("ops", model=ScriptedModel([call("wire", 1), answer()]),
                       tools=[wire], middleware=[Metrics(registry=reg)])
    async with open_store(f"sqlite:///{tmp_path}/runs.db") as store:
        with pytest.raises(keel.ApprovalRequired):
            await agent.run("go", store=store)
        await refresh_human_tasks(store, registry=reg, now=time.time() + 30 * 60)
        assert await alerts.evaluate() == []  # waiting half an hour: not yet
        await refresh_human_tasks(store, registry=reg, now=time.time() + 90 * 60)
        [late] = await alerts.evaluate()
    assert late.rule == "late" and late.value >= 90 * 60


class _Hook(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        code = 503 if len(type(self).bodies) <= type(self).fail_first else 200
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def webhook() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"bodies": [], "fail_first": 2})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", handler
    server.shutdown()
    server.server_close()


async def test_a_webhook_that_is_down_is_retried_and_blocks_nothing(
        webhook: tuple[str, type[_Hook]]) -> None:
    url, handler = webhook
    reg, clock = CollectorRegistry(), Clock()
    alerts = FleetAlerts([SuccessRateBelow(name="s", threshold=0.9, minutes=5, min_runs=1)],
                         notifier=WebhookNotifier(url, timeout=5), registry=reg, clock=clock,
                         backoff=0.01)
    await runs(reg, ok=0, failing=1)
    assert len(await alerts.evaluate()) == 1  # returns with the delivery under way
    await alerts.drain(30)
    assert len(handler.bodies) == 3  # two 503s, then taken
    assert handler.bodies[-1]["alert"]["rule"] == "s"
    assert handler.bodies[-1]["alert"]["deviation"] == "fleet:s"
    assert alerts.undelivered == 0


async def test_a_webhook_that_stays_down_is_given_up_on(tmp_path: Path) -> None:
    reg, clock = CollectorRegistry(), Clock()
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    alerts = FleetAlerts([SuccessRateBelow(name="s", threshold=0.9, minutes=5, min_runs=1)],
                         notifier=WebhookNotifier(f"http://127.0.0.1:{port}/x", timeout=1),
                         registry=reg, clock=clock, attempts=3, backoff=0.01)
    await runs(reg, ok=0, failing=1)
    assert len(await alerts.evaluate()) == 1
    assert alerts.undelivered == 0  # not waited for
    await alerts.drain(30)
    assert alerts.undelivered == 1


class Raises:
    def __init__(self) -> None:
        self.calls = 0

    async def notify(self, alert: FleetAlert) -> None:
        self.calls += 1
        raise RuntimeError("notifier broke")


async def test_a_notifier_that_raises_is_retried_then_given_up() -> None:
    reg, clock, notifier = CollectorRegistry(), Clock(), Raises()
    alerts = FleetAlerts([SuccessRateBelow(name="s", threshold=0.9, minutes=5, min_runs=1)],
                         notifier=notifier, registry=reg, clock=clock, attempts=4,
                         backoff=0.001)
    await runs(reg, ok=0, failing=1)
    await alerts.evaluate()
    await alerts.drain(30)
    assert notifier.calls == 4 and alerts.undelivered == 1


@pytest.mark.parametrize("make", [
    lambda: SuccessRateBelow(name="s", threshold=1.5, minutes=5),
    lambda: SuccessRateBelow(name="s", threshold=0.9, minutes=0),
    lambda: SuccessRateBelow(name="s", threshold=0.9, minutes=float("nan")),
    lambda: SuccessRateBelow(name="", threshold=0.9, minutes=5),
    lambda: SuccessRateBelow(name="s", threshold=0.9, minutes=5, min_runs=-1),
    lambda: LatencyAbove(name="l", seconds=-1, minutes=5),
    lambda: LatencyAbove(name="l", seconds=1, q=1.5, minutes=5),
    lambda: LatencyAbove(name="l", seconds=1, of="disk", minutes=5),  # type: ignore[arg-type]
    lambda: ErrorRateAbove(name="e", threshold=-0.1, minutes=5),
    lambda: ErrorRateAbove(name="e", threshold=0.1, of="run", minutes=5),  # type: ignore[arg-type]
    lambda: CostSpike(name="c", factor=0.5, minutes=5),
    lambda: CostSpike(name="c", factor=2, minutes=60, baseline_minutes=10),
    lambda: ApprovalsOverdue(name="a", minutes=5, more_than=-1),
    lambda: ApprovalsOverdue(name="a", minutes=5, kind="review"),  # type: ignore[arg-type]
    lambda: FleetAlerts([SuccessRateBelow(name="x", threshold=0.5, minutes=5),
                         ErrorRateAbove(name="x", threshold=0.5, minutes=5)]),
    lambda: FleetAlerts(["success below 90%"]),  # type: ignore[list-item]
    lambda: FleetAlerts(SuccessRateBelow(name="x", threshold=0.5, minutes=5)),  # type: ignore[arg-type]
    lambda: FleetAlerts([], notifier="http://hook"),  # type: ignore[arg-type]
    lambda: FleetAlerts([], attempts=0),
])
def test_bad_rules_are_refused_at_construction(make: Any) -> None:
    with pytest.raises(ConfigError):
        make()
