"""Circuit breakers: the state machine on both stores (fake clocks), fail-fast behaviour for
models and tools, a real Agent, and a RedisBreakerStore shared by separate OS processes.

No test depends on machine speed: time is a fake clock (or Redis's own, only where a test
needs no particular instant), and cross-process tests wait for the child processes to exit.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis

from keel import (
    Agent,
    CircuitOpen,
    ConfigError,
    MemoryStore,
    ModelError,
    StoreError,
    ToolError,
    tool,
)
from keel.core import (
    ApprovalRequired,
    BudgetExceeded,
    Message,
    ModelResponse,
    ModelSettings,
    ToolContext,
)
from keel.models import Model
from keel.reliability import (
    BreakerPolicy,
    BreakerStore,
    CircuitBreaker,
    InMemoryBreakerStore,
    RedisBreakerStore,
)
from keel.reliability._breaker import TOOL_HINT, model_outcome, tool_outcome
from keel.runtime import ModelRequestInput, ToolCallInput
from keel.testing import ScriptedModel, call
from keel.tools import Tool, ToolResult

REDIS_URL = "redis://127.0.0.1:6379/0"
POLICY = BreakerPolicy(failure_threshold=3, window=10.0, cooldown=30.0)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _redis_up() -> bool:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


needs_redis = pytest.mark.skipif(not _redis_up(), reason=f"no Redis at {REDIS_URL}")


def _drop(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis key prefix for one test; its keys are deleted afterwards."""
    p = f"keel:test:breaker:{uuid.uuid4().hex}:"
    yield p
    _drop(p)


@pytest.fixture
async def redis_store(prefix: str) -> AsyncIterator[RedisBreakerStore]:
    store = RedisBreakerStore(REDIS_URL, prefix=prefix)
    yield store
    await store.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[BreakerStore]:
    if request.param == "memory":
        yield InMemoryBreakerStore()
        return
    p = f"keel:test:breaker:{uuid.uuid4().hex}:"
    s = RedisBreakerStore(REDIS_URL, prefix=p)
    try:
        yield s
    finally:
        await s.aclose()
        _drop(p)


# ------------------------------------------------------------------------- helpers


def failing_tool(calls: list[int], *, name: str = "flaky") -> Tool:
    @tool(name=name)
    async def flaky(n: int) -> str:
        """Always fails, like a dependency that is down."""
        calls.append(n)
        raise ConnectionError("upstream is down")

    return flaky


def tool_input(t: Tool, n: int) -> ToolCallInput:
    key = f"a/turn:{n}/tool:{t.meta.name}#0"
    ctx = ToolContext(run_id="r1", step_key=key, agent="a", idempotency_key=f"r1/{key}")
    return ToolCallInput(run_id="r1", step_key=key, agent="a", tool=t,
                         arguments=json.dumps({"n": n}), ctx=ctx)


async def call_tool(inp: ToolCallInput) -> ToolResult:
    return await inp.tool.call(inp.arguments, inp.ctx)


class FailingModel(Model):
    """Raises a fresh copy of ``error`` on every request and counts the requests."""

    def __init__(self, name: str, error: Exception | None = None) -> None:
        self.name = name
        self.error = error
        self.calls = 0

    async def request(self, messages: Any, tools: Any = (),
                      settings: ModelSettings | None = None) -> ModelResponse:
        self.calls += 1
        if self.error is not None:
            if isinstance(self.error, ModelError):
                raise ModelError(self.error.message, status=self.error.status,
                                 retryable=self.error.retryable, model=self.name)
            raise type(self.error)(*self.error.args)
        return await ScriptedModel(["ok"], name=self.name).request(messages, tools, settings)


def model_input(model: Model) -> ModelRequestInput:
    return ModelRequestInput(run_id="r1", step_key="a/turn:0/model", agent="a", model=model,
                             messages=[Message.user("hi")], tools=(), settings=ModelSettings())


async def call_model(inp: ModelRequestInput) -> ModelResponse:
    return await inp.model.request(inp.messages, inp.tools, inp.settings)


# -------------------------------------------------------------------- the state machine


async def test_threshold_failures_within_the_window_open_the_breaker(
        store: BreakerStore) -> None:
    clock = FakeClock()
    for i in range(2):
        assert (await store.acquire("k", POLICY, now=clock())).allowed
        assert await store.record("k", POLICY, "failure", now=clock()) == "closed"
        clock.advance(1)
        assert (await store.snapshot("k", POLICY, now=clock())).failures == i + 1
    assert await store.record("k", POLICY, "failure", now=clock()) == "open"
    permit = await store.acquire("k", POLICY, now=clock())
    assert not permit.allowed
    assert permit.state == "open"
    assert permit.retry_in == pytest.approx(30.0)
    snap = await store.snapshot("k", POLICY, now=clock())
    assert snap.state == "open"
    assert snap.retry_in == pytest.approx(30.0)
    # other keys are separate breakers
    assert (await store.acquire("other", POLICY, now=clock())).allowed


async def test_successes_and_neutral_outcomes_do_not_count(store: BreakerStore) -> None:
    clock = FakeClock()
    for _ in range(10):
        assert await store.record("k", POLICY, "success", now=clock()) == "closed"
        assert await store.record("k", POLICY, "neutral", now=clock()) == "closed"
    assert (await store.snapshot("k", POLICY, now=clock())).failures == 0


async def test_the_window_forgets_old_failures(store: BreakerStore) -> None:
    clock = FakeClock()
    await store.record("k", POLICY, "failure", now=clock())
    clock.advance(5)
    await store.record("k", POLICY, "failure", now=clock())
    clock.advance(5)  # the first failure is now exactly `window` old: forgotten
    assert (await store.snapshot("k", POLICY, now=clock())).failures == 1
    assert await store.record("k", POLICY, "failure", now=clock()) == "closed"
    clock.advance(9.9)  # the second is forgotten, the third is not
    assert await store.record("k", POLICY, "failure", now=clock()) == "closed"
    assert await store.record("k", POLICY, "failure", now=clock()) == "open"


async def test_cooldown_then_one_probe_and_a_success_closes(store: BreakerStore) -> None:
    clock = FakeClock()
    for _ in range(3):
        await store.record("k", POLICY, "failure", now=clock())
    clock.advance(29.9)
    permit = await store.acquire("k", POLICY, now=clock())
    assert (permit.allowed, permit.state) == (False, "open")
    assert permit.retry_in == pytest.approx(0.1)
    clock.advance(0.1)
    assert (await store.snapshot("k", POLICY, now=clock())).state == "half_open"
    probe = await store.acquire("k", POLICY, now=clock())
    assert (probe.allowed, probe.state) == (True, "half_open")
    assert probe.probe is not None
    busy = await store.acquire("k", POLICY, now=clock())  # only one trial at a time
    assert (busy.allowed, busy.state, busy.probe) == (False, "half_open", None)
    assert await store.record("k", POLICY, "success", probe=probe.probe, now=clock()) == "closed"
    assert (await store.acquire("k", POLICY, now=clock())).allowed
    snap = await store.snapshot("k", POLICY, now=clock())
    assert (snap.state, snap.failures) == ("closed", 0)  # closing forgets the old failures


async def test_a_failed_probe_reopens_for_a_fresh_cooldown(store: BreakerStore) -> None:
    clock = FakeClock()
    for _ in range(3):
        await store.record("k", POLICY, "failure", now=clock())
    clock.advance(30)
    probe = await store.acquire("k", POLICY, now=clock())
    clock.advance(2)
    assert await store.record("k", POLICY, "failure", probe=probe.probe, now=clock()) == "open"
    permit = await store.acquire("k", POLICY, now=clock())
    assert not permit.allowed
    assert permit.retry_in == pytest.approx(30.0)
    clock.advance(30)
    assert (await store.acquire("k", POLICY, now=clock())).probe is not None


async def test_half_open_probes_and_success_threshold(store: BreakerStore) -> None:
    policy = BreakerPolicy(failure_threshold=1, cooldown=5, half_open_probes=2,
                           success_threshold=3)
    clock = FakeClock()
    assert await store.record("k", policy, "failure", now=clock()) == "open"
    clock.advance(5)
    p1 = await store.acquire("k", policy, now=clock())
    p2 = await store.acquire("k", policy, now=clock())
    assert p1.probe and p2.probe and p1.probe != p2.probe
    assert not (await store.acquire("k", policy, now=clock())).allowed
    assert await store.record("k", policy, "success", probe=p1.probe, now=clock()) == "half_open"
    # a neutral outcome (a 4xx, a cancellation) frees the slot without counting
    assert await store.record("k", policy, "neutral", probe=p2.probe, now=clock()) == "half_open"
    p3 = await store.acquire("k", policy, now=clock())
    assert await store.record("k", policy, "success", probe=p3.probe, now=clock()) == "half_open"
    p4 = await store.acquire("k", policy, now=clock())
    assert await store.record("k", policy, "success", probe=p4.probe, now=clock()) == "closed"


async def test_late_and_stale_outcomes_are_ignored(store: BreakerStore) -> None:
    clock = FakeClock()
    for _ in range(3):
        await store.record("k", POLICY, "failure", now=clock())
    clock.advance(10)
    # a call let through before the breaker opened fails late: the cooldown is not extended
    assert await store.record("k", POLICY, "failure", now=clock()) == "open"
    assert (await store.acquire("k", POLICY, now=clock())).retry_in == pytest.approx(20.0)
    clock.advance(20)
    first = await store.acquire("k", POLICY, now=clock())
    assert await store.record("k", POLICY, "failure", probe=first.probe, now=clock()) == "open"
    # the same trial reporting twice, or a success from an ended episode, changes nothing
    assert await store.record("k", POLICY, "success", probe=first.probe, now=clock()) == "open"
    assert await store.record("k", POLICY, "success", now=clock()) == "open"


async def test_a_probe_that_never_reports_frees_its_slot_after_the_cooldown(
        store: BreakerStore) -> None:
    clock = FakeClock()
    for _ in range(3):
        await store.record("k", POLICY, "failure", now=clock())
    clock.advance(30)
    lost = await store.acquire("k", POLICY, now=clock())  # its worker dies: no record
    assert lost.probe is not None
    clock.advance(29)
    assert not (await store.acquire("k", POLICY, now=clock())).allowed
    clock.advance(1)
    again = await store.acquire("k", POLICY, now=clock())
    assert again.probe is not None
    assert await store.record("k", POLICY, "success", probe=again.probe, now=clock()) == "closed"


async def test_reset_forgets_the_breaker(store: BreakerStore) -> None:
    clock = FakeClock()
    for _ in range(3):
        await store.record("k", POLICY, "failure", now=clock())
    await store.reset("k")
    assert (await store.acquire("k", POLICY, now=clock())).allowed


# ------------------------------------------------------------------- what is a failure


@pytest.mark.parametrize(("error", "outcome"), [
    (ModelError("boom", status=500, retryable=True), "failure"),
    (ModelError("bad gateway", status=502, retryable=False), "failure"),
    (ModelError("slow down", status=429, retryable=True), "failure"),
    (ModelError("request timeout", status=408, retryable=True), "failure"),
    (ModelError("timed out", retryable=True), "failure"),  # no status: timeout, connection
    (ModelError("bad request", status=400, retryable=False), "neutral"),
    (ModelError("conflict", status=409, retryable=True), "neutral"),  # the request's doing
    (ModelError("no key", status=401, retryable=False), "neutral"),
    (ModelError("refused to parse", retryable=False), "neutral"),
    (TimeoutError(), "failure"),
    (ConnectionResetError(), "failure"),
    (CircuitOpen("inner breaker"), "neutral"),
    (BudgetExceeded("no room", limit="steps", used=1, allowed=1), "neutral"),
    (ApprovalRequired("wait"), "neutral"),
    (ValueError("a bug"), "neutral"),
    (asyncio.CancelledError(), "neutral"),
])
def test_which_model_errors_count(error: BaseException, outcome: str) -> None:
    assert model_outcome(error) == outcome


@pytest.mark.parametrize(("result", "outcome"), [
    (ToolResult(content="ok"), "success"),
    (ToolResult.fail("timeout", "slow", retryable=True), "failure"),
    (ToolResult.fail("tool_error", "down", retryable=False), "failure"),
    (ToolResult.fail("invalid_arguments", "bad n", retryable=True), "neutral"),
    (ToolResult.fail("invalid_json", "{", retryable=True), "neutral"),
    (ToolResult.fail("approval_denied", "no", retryable=False), "neutral"),
    (ToolResult.fail("permission_denied", "no", retryable=False), "neutral"),
    (ToolResult.fail("circuit_open", "open", retryable=False), "neutral"),
])
def test_which_tool_failures_count(result: ToolResult, outcome: str) -> None:
    assert tool_outcome(result) == outcome


# ---------------------------------------------------------------------- the middleware


async def test_a_tool_that_always_fails_is_called_threshold_times_per_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(POLICY, clock=clock)
    calls: list[int] = []
    flaky = failing_tool(calls)
    results = [await breaker.wrap_tool_call(tool_input(flaky, n), call_tool)
               for n in range(100)]
    assert calls == [0, 1, 2]  # three real calls, then the breaker answers
    assert [r.failure.error_type for r in results[:3] if r.failure] == ["tool_error"] * 3
    fast = results[3].failure
    assert fast is not None
    assert fast.error_type == "circuit_open"
    assert fast.retryable is False
    assert fast.hint == TOOL_HINT
    assert "'flaky'" in fast.message and "30.0s" in fast.message
    assert json.loads(results[3].content)["error"]["error_type"] == "circuit_open"
    assert all(r.failure and r.failure.error_type == "circuit_open" for r in results[3:])
    # after the cooldown: exactly one trial call per cooldown while the tool stays down
    for _ in range(3):
        clock.advance(30)
        for n in range(100, 150):
            await breaker.wrap_tool_call(tool_input(flaky, n), call_tool)
    assert len(calls) == 3 + 3
    assert (await breaker.state("tool:flaky")).state == "open"


async def test_a_tool_that_recovers_closes_its_breaker() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(POLICY, clock=clock)
    down = True
    calls: list[int] = []

    @tool
    async def lookup(n: int) -> int:
        """Fails while the backend is down."""
        calls.append(n)
        if down:
            raise ToolError("backend down")
        return n

    for n in range(5):
        await breaker.wrap_tool_call(tool_input(lookup, n), call_tool)
    assert len(calls) == 3
    down = False
    clock.advance(30)
    ok = await breaker.wrap_tool_call(tool_input(lookup, 7), call_tool)
    assert ok.failure is None and ok.value == 7
    assert (await breaker.state("tool:lookup")).state == "closed"
    for n in range(10):
        assert (await breaker.wrap_tool_call(tool_input(lookup, n), call_tool)).value == n


async def test_validation_failures_do_not_open_a_tool_breaker() -> None:
    breaker = CircuitBreaker(POLICY, clock=FakeClock())
    calls: list[int] = []
    flaky = failing_tool(calls)
    for _ in range(20):
        inp = tool_input(flaky, 0)
        bad = ToolCallInput(run_id=inp.run_id, step_key=inp.step_key, agent=inp.agent,
                            tool=flaky, arguments='{"n": "not a number"}', ctx=inp.ctx)
        result = await breaker.wrap_tool_call(bad, call_tool)
        assert result.failure is not None
        assert result.failure.error_type == "invalid_arguments"
    assert (await breaker.state("tool:flaky")).failures == 0


async def test_one_breaker_per_tool() -> None:
    breaker = CircuitBreaker(POLICY, clock=FakeClock())
    calls_a: list[int] = []
    calls_b: list[int] = []
    a, b = failing_tool(calls_a, name="a"), failing_tool(calls_b, name="b")
    for n in range(5):
        await breaker.wrap_tool_call(tool_input(a, n), call_tool)
    assert len(calls_a) == 3
    await breaker.wrap_tool_call(tool_input(b, 0), call_tool)
    assert calls_b == [0]


async def test_an_open_model_breaker_raises_circuit_open_without_calling() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(POLICY, clock=clock)
    name = "openai:qwen2.5@http://localhost:11434/v1"
    model = FailingModel(name, ModelError("HTTP 503", status=503, retryable=True))
    for _ in range(3):
        with pytest.raises(ModelError):
            await breaker.wrap_model_request(model_input(model), call_model)
    clock.advance(12)
    with pytest.raises(CircuitOpen) as err:
        await breaker.wrap_model_request(model_input(model), call_model)
    assert model.calls == 3
    assert err.value.retryable is True
    assert name in str(err.value)  # the endpoint, base URL included
    assert "18.0s" in str(err.value)  # when it will probe again
    assert (err.value.run_id, err.value.step_key) == ("r1", "a/turn:0/model")
    # another endpoint has its own breaker
    other = FailingModel("openai:gpt-4o-mini")
    assert (await breaker.wrap_model_request(model_input(other), call_model)).text == "ok"
    # the endpoint recovers: one trial after the cooldown closes the breaker
    model.error = None
    clock.advance(18)
    assert (await breaker.wrap_model_request(model_input(model), call_model)).text == "ok"
    assert (await breaker.state(f"model:{name}")).state == "closed"


async def test_request_errors_do_not_open_a_model_breaker() -> None:
    breaker = CircuitBreaker(POLICY, clock=FakeClock())
    model = FailingModel("test:m", ModelError("HTTP 400: bad schema", status=400,
                                              retryable=False))
    for _ in range(10):
        with pytest.raises(ModelError):
            await breaker.wrap_model_request(model_input(model), call_model)
    assert model.calls == 10


async def test_a_cancelled_trial_frees_its_slot() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, cooldown=5), clock=clock)
    model = FailingModel("test:m", ModelError("down", status=500, retryable=True))
    with pytest.raises(ModelError):
        await breaker.wrap_model_request(model_input(model), call_model)
    clock.advance(5)
    started = asyncio.Event()

    async def hang(inp: ModelRequestInput) -> ModelResponse:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    task = asyncio.create_task(breaker.wrap_model_request(model_input(model), hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    model.error = None  # the next trial goes through at once and closes the breaker
    assert (await breaker.wrap_model_request(model_input(model), call_model)).text == "ok"
    assert (await breaker.state("model:test:m")).state == "closed"


async def test_off_lets_every_call_through() -> None:
    breaker = CircuitBreaker.off()
    assert type(breaker) is CircuitBreaker and not breaker.enabled
    assert repr(breaker) == "CircuitBreaker.off()"
    calls: list[int] = []
    flaky = failing_tool(calls)
    for n in range(20):
        await breaker.wrap_tool_call(tool_input(flaky, n), call_tool)
    model = FailingModel("test:m", ModelError("down", status=500, retryable=True))
    for _ in range(20):
        with pytest.raises(ModelError):
            await breaker.wrap_model_request(model_input(model), call_model)
    assert (len(calls), model.calls) == (20, 20)


# ----------------------------------------------------------------------- a real Agent


async def test_agent_sees_the_circuit_open_observation_and_finishes() -> None:
    calls: list[int] = []
    flaky = failing_tool(calls)
    # different arguments each turn, so repeated-failure detection does not stop the run
    script: list[Any] = [call("flaky", {"n": n}) for n in range(6)]
    model = ScriptedModel([*script, "The service is down; I told the user."])
    breaker = CircuitBreaker(POLICY, clock=FakeClock())
    agent = Agent("desk", model=model, tools=[flaky], middleware=[breaker],
                  default_middleware=False)
    store = MemoryStore()
    result = await agent.run("check the order", store=store)
    assert result.output == "The service is down; I told the user."
    assert calls == [0, 1, 2]
    seen = [json.loads(model.requests[turn][-1].tool_results[0].content)["error"]
            for turn in range(1, 7)]
    assert [e["error_type"] for e in seen] == ["tool_error"] * 3 + ["circuit_open"] * 3
    assert seen[3]["hint"] == TOOL_HINT and seen[3]["retryable"] is False
    assert (await store.get_run(result.run_id)).status == "completed"


async def test_agent_runs_fail_fast_with_circuit_open_once_the_endpoint_is_down() -> None:
    model = FailingModel("openai:qwen@http://localhost:9/v1",
                         ModelError("HTTP 502", status=502, retryable=True))
    breaker = CircuitBreaker(POLICY, clock=FakeClock())
    agent = Agent("desk", model=model, middleware=[breaker], default_middleware=False)
    store = MemoryStore()
    for _ in range(3):
        with pytest.raises(ModelError):
            await agent.run("hi", store=store)
    with pytest.raises(CircuitOpen) as err:
        await agent.run("hi", store=store)
    assert model.calls == 3
    assert err.value.step_key == "desk/turn:0/model"
    assert err.value.run_id is not None
    record = await store.get_run(err.value.run_id)
    assert record.status == "failed"
    assert record.error is not None and record.error["type"] == "CircuitOpen"


# -------------------------------------------------------------------- configuration


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"failure_threshold": 0}, "failure_threshold"),
    ({"failure_threshold": 2.5}, "failure_threshold"),
    ({"window": 0}, "window"),
    ({"window": float("inf")}, "window"),
    ({"window": "60"}, "window"),
    ({"cooldown": -1}, "cooldown"),
    ({"cooldown": float("nan")}, "cooldown"),
    ({"half_open_probes": 0}, "half_open_probes"),
    ({"success_threshold": 0}, "success_threshold"),
    ({"success_threshold": True}, "success_threshold"),
])
def test_policy_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        BreakerPolicy(**kwargs)
    assert err.value.field == field
    assert field in str(err.value)


def test_middleware_and_store_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        CircuitBreaker({"failure_threshold": 3})  # type: ignore[arg-type]
    assert err.value.field == "policy"
    with pytest.raises(ConfigError) as err:
        CircuitBreaker(store=object())  # type: ignore[arg-type]
    assert err.value.field == "store"
    with pytest.raises(ConfigError) as err:
        RedisBreakerStore("http://127.0.0.1:6379")
    assert err.value.field == "url"
    with pytest.raises(ConfigError) as err:
        RedisBreakerStore(prefix="")
    assert err.value.field == "prefix"
    with pytest.raises(ConfigError) as err:
        RedisBreakerStore(timeout=0)
    assert err.value.field == "timeout"


async def test_unreachable_redis_is_a_clear_error_naming_the_url() -> None:
    store = RedisBreakerStore("redis://:hunter2@127.0.0.1:1/0")
    breaker = CircuitBreaker(store=store)
    calls: list[int] = []
    try:
        with pytest.raises(StoreError) as err:
            await breaker.wrap_tool_call(tool_input(failing_tool(calls), 0), call_tool)
        message = str(err.value)
        assert "redis://:***@127.0.0.1:1/0" in message and "unreachable" in message
        assert "hunter2" not in message and "hunter2" not in repr(store)
        assert calls == []  # no silent fallback: the call did not happen
        with pytest.raises(StoreError, match=r"127\.0\.0\.1:1/0"):
            await store.ping()
    finally:
        await store.aclose()


# ------------------------------------------------------------- Redis across processes

_CHILD = r"""
import asyncio, json, sys
from keel.reliability import BreakerPolicy, RedisBreakerStore

async def main(spec):
    store = RedisBreakerStore(spec["url"], prefix=spec["prefix"])
    policy = BreakerPolicy(**spec["policy"])
    now = spec.get("now")
    out = {}
    try:
        if spec["action"] == "fail":
            states = await asyncio.gather(*(
                store.record(spec["key"], policy, "failure", now=now)
                for _ in range(spec["count"])))
            out["opened"] = states.count("open")
        elif spec["action"] == "acquire":
            permits = await asyncio.gather(*(
                store.acquire(spec["key"], policy, now=now) for _ in range(spec["count"])))
            out["probes"] = sum(1 for p in permits if p.probe)
            out["states"] = sorted({p.state for p in permits})
    finally:
        await store.aclose()
    print(json.dumps(out))

asyncio.run(main(json.loads(sys.argv[1])))
"""


async def child(prefix: str, action: str, *, count: int = 1, now: float | None = None,
                key: str = "tool:flaky", policy: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = {"url": REDIS_URL, "prefix": prefix, "action": action, "count": count, "now": now,
            "key": key, "policy": policy or {"failure_threshold": 3, "window": 10,
                                              "cooldown": 30}}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, json.dumps(spec),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


@needs_redis
async def test_failures_in_one_process_open_the_breaker_in_another(
        prefix: str, redis_store: RedisBreakerStore) -> None:
    # the child counts with the Redis server's clock, as a real fleet does
    assert (await child(prefix, "fail", count=3)) == {"opened": 1}
    calls: list[int] = []
    breaker = CircuitBreaker(POLICY, store=redis_store)
    result = await breaker.wrap_tool_call(tool_input(failing_tool(calls), 0), call_tool)
    assert calls == []
    assert result.failure is not None and result.failure.error_type == "circuit_open"
    snap = await breaker.state("tool:flaky")
    assert snap.state == "open"
    assert snap.retry_in is not None and 0 < snap.retry_in <= 30


@pytest.mark.slow
@needs_redis
async def test_this_process_opens_the_breaker_for_another(
        prefix: str, redis_store: RedisBreakerStore) -> None:
    clock = FakeClock(5000.0)
    breaker = CircuitBreaker(POLICY, store=redis_store, clock=clock)
    calls: list[int] = []
    for n in range(3):
        await breaker.wrap_tool_call(tool_input(failing_tool(calls), n), call_tool)
    seen = await child(prefix, "acquire", now=5010.0)
    assert seen == {"probes": 0, "states": ["open"]}
    # after the cooldown, the other process gets the trial and this one does not
    assert (await child(prefix, "acquire", now=5030.0)) == {"probes": 1,
                                                             "states": ["half_open"]}
    clock.now = 5030.0
    result = await breaker.wrap_tool_call(tool_input(failing_tool(calls), 9), call_tool)
    assert result.failure is not None and result.failure.error_type == "circuit_open"
    assert "half-open" in result.failure.message
    assert len(calls) == 3


@pytest.mark.slow
@needs_redis
async def test_only_one_trial_across_many_concurrent_workers(
        prefix: str, redis_store: RedisBreakerStore) -> None:
    assert (await child(prefix, "fail", count=3, now=100.0)) == {"opened": 1}
    outs = await asyncio.gather(*(child(prefix, "acquire", count=10, now=131.0)
                                  for _ in range(4)))
    assert sum(o["probes"] for o in outs) == 1
    assert all(o["states"] == ["half_open"] for o in outs)


@pytest.mark.slow
@needs_redis
async def test_concurrent_workers_neither_lose_nor_double_count_failures(
        prefix: str, redis_store: RedisBreakerStore) -> None:
    policy = {"failure_threshold": 41, "window": 60, "cooldown": 30}
    outs = await asyncio.gather(*(child(prefix, "fail", count=10, now=200.0, policy=policy)
                                  for _ in range(4)))
    assert sum(o["opened"] for o in outs) == 0
    snap = await redis_store.snapshot("tool:flaky", BreakerPolicy(**policy), now=200.0)
    assert (snap.state, snap.failures) == ("closed", 40)
    # one more failure, from yet another process, crosses the threshold
    assert (await child(prefix, "fail", count=1, now=201.0, policy=policy)) == {"opened": 1}
    assert (await redis_store.acquire("tool:flaky", BreakerPolicy(**policy),
                                      now=201.0)).state == "open"


async def test_default_breaker_counts_consecutive_failures_only() -> None:
    """A busy endpoint failing now and then stays closed; one failing call after call opens;
    consecutive=False counts every failure in the window."""
    from keel.reliability import BreakerPolicy, InMemoryBreakerStore
    store = InMemoryBreakerStore(clock=lambda: 0.0)
    busy = BreakerPolicy(failure_threshold=3)
    for i in range(300):  # one failure in three, interleaved with successes
        state = await store.record("k", busy, "failure" if i % 3 == 0 else "success", now=i / 10)
        assert state == "closed", f"opened at call {i}"
    for i in range(3):
        state = await store.record("k", busy, "failure", now=40 + i)
    assert state == "open"
    counting = BreakerPolicy(failure_threshold=3, consecutive=False)
    other = InMemoryBreakerStore(clock=lambda: 0.0)
    states = [await other.record("c", counting, o, now=t) for t, o in
              enumerate(["failure", "success", "failure", "success", "failure"])]
    assert states[-1] == "open"
