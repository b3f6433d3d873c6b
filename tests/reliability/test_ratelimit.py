"""Rate limits: requests per interval (aiolimiter in process, Redis across processes) and
model tokens per interval (charged after the response).

Token budgets run on a fake clock whose sleep advances time, so those tests do not depend on
machine speed. In-process request limits follow the event loop's clock (aiolimiter); the
tests that wait use small intervals and assert lower bounds only.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
import redis

from keel import ConfigError, StoreError, tool
from keel.core import (
    Message,
    ModelResponse,
    ModelSettings,
    RateLimited,
    TextPart,
    ToolContext,
    ToolSpec,
    Usage,
)
from keel.models import Model
from keel.reliability import RateLimit, RateLimiter, RedisRateStore
from keel.runtime import MiddlewareStack, ModelRequestInput, ToolCallInput
from keel.tools import Tool

REDIS_URL = "redis://127.0.0.1:6379/0"


class FakeClock:
    """A clock whose sleep advances it instantly, recording every sleep."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0, "a wait must be positive (no busy loop)"
        self.sleeps.append(seconds)
        self.t += seconds


class CountingModel(Model):
    def __init__(self, name: str = "openai:gpt-4o-mini", *, input_tokens: int = 0,
                 output_tokens: int = 0) -> None:
        self.name = name
        self.calls = 0
        self.usage = Usage(requests=1, input_tokens=input_tokens, output_tokens=output_tokens)

    async def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                      settings: ModelSettings | None = None) -> ModelResponse:
        self.calls += 1
        return ModelResponse(parts=(TextPart(text=f"answer {self.calls}"),), usage=self.usage,
                             model=self.name)


def model_input(model: Model, n: int = 0) -> ModelRequestInput:
    return ModelRequestInput(run_id="r1", step_key=f"agent/turn:{n}/model", agent="agent",
                             model=model, messages=[Message.user("hi")], tools=[],
                             settings=ModelSettings())


def make_tool(name: str) -> Tool:
    @tool(name=name)
    async def fn(n: int) -> int:
        """Echo."""
        return n

    return fn


def tool_input(t: Tool, n: int) -> ToolCallInput:
    key = f"agent/tool:{t.meta.name}#{n}"
    ctx = ToolContext(run_id="r1", step_key=key, agent="agent", idempotency_key=f"r1/{key}")
    return ToolCallInput(run_id="r1", step_key=key, agent="agent", tool=t,
                         arguments=json.dumps({"n": n}), ctx=ctx)


# ---------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"requests": 0, "per": 1}, "requests"),
    ({"requests": True, "per": 1}, "requests"),
    ({"requests": 5, "per": 0}, "per"),
    ({"requests": 5, "per": -1.0}, "per"),
    ({"requests": 5, "per": 1, "tokens": 0}, "tokens"),
    ({"per": 1}, "requests"),
])
def test_rate_limit_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        RateLimit(**kwargs)
    assert info.value.field == field


def test_rate_limiter_errors_name_the_field() -> None:
    ok = RateLimit(requests=1, per=1)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"limits": {}, "by": "agent"}, "by"),
        ({"limits": {"x": 5}}, "limits['x']"),
        ({"limits": {"search": RateLimit(tokens=10, per=1)}, "by": "tool"},
         "limits['search'].tokens"),
        ({"limits": {"m": ok}, "max_wait": -1}, "max_wait"),
        ({"limits": {"m": ok}, "store": "redis://x"}, "store"),
    ]
    for kwargs, field in cases:
        limits = kwargs.pop("limits")
        with pytest.raises(ConfigError) as info:
            RateLimiter(limits, **kwargs)
        assert info.value.field == field, kwargs
    for url_kwargs, field in (({"url": "http://127.0.0.1"}, "url"), ({"prefix": ""}, "prefix"),
                              ({"connect_timeout": 0}, "connect_timeout")):
        with pytest.raises(ConfigError) as info:
            RedisRateStore(**url_kwargs)  # type: ignore[arg-type]
        assert info.value.field == field


# -------------------------------------------------------------------- in-process requests


async def test_tool_requests_over_the_limit_are_turned_away_without_waiting() -> None:
    search, other = make_tool("search"), make_tool("other")
    stack = MiddlewareStack([RateLimiter({"search": RateLimit(requests=2, per=60)}, by="tool",
                                         max_wait=0)])
    assert [(await stack.tool_call(tool_input(search, i))).value for i in range(2)] == [0, 1]
    result = await stack.tool_call(tool_input(search, 2))
    assert result.failure is not None
    assert result.failure.error_type == "rate_limited" and result.failure.retryable
    assert "tool 'search'" in result.failure.message
    assert "2 requests per 60s" in result.failure.message
    assert result.failure.hint is not None and "30.0s" in result.failure.hint
    # Other tools have their own (here: no) limit.
    assert [(await stack.tool_call(tool_input(other, i))).value for i in range(5)] == list(
        range(5))


async def test_model_requests_over_the_limit_raise_rate_limited() -> None:
    model, other = CountingModel(), CountingModel("anthropic:claude-x")
    stack = MiddlewareStack([RateLimiter({model.name: RateLimit(requests=1, per=60)},
                                         max_wait=0)])
    await stack.model_request(model_input(model))
    with pytest.raises(RateLimited) as info:
        await stack.model_request(model_input(model, 1))
    err = info.value
    assert err.retryable and err.limit == model.name and err.retry_after == 60
    assert (err.run_id, err.step_key) == ("r1", "agent/turn:1/model")
    assert "model 'openai:gpt-4o-mini'" in str(err) and "max_wait=0" in str(err)
    assert model.calls == 1  # the refused request never reached the endpoint
    await stack.model_request(model_input(other))
    assert other.calls == 1


async def test_a_request_waits_for_the_limit_then_runs() -> None:
    model = CountingModel()
    stack = MiddlewareStack([RateLimiter({model.name: RateLimit(requests=1, per=0.2)},
                                         max_wait=10)])
    await stack.model_request(model_input(model))
    started = time.monotonic()
    waiting = asyncio.create_task(stack.model_request(model_input(model, 1)))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiting.done() and model.calls == 1  # held by the limiter, not refused
    assert (await waiting).text == "answer 2"
    assert time.monotonic() - started >= 0.15  # one slot frees every 0.2s


async def test_a_wait_longer_than_max_wait_is_refused() -> None:
    model = CountingModel()
    stack = MiddlewareStack([RateLimiter({model.name: RateLimit(requests=1, per=60)},
                                         max_wait=0.01)])
    await stack.model_request(model_input(model))
    with pytest.raises(RateLimited, match=r"longer than max_wait=0\.01s"):
        await stack.model_request(model_input(model, 1))
    assert model.calls == 1


# ------------------------------------------------------------------------- model tokens


async def test_token_budget_is_charged_after_the_call_and_the_next_call_waits() -> None:
    clock = FakeClock()
    model = CountingModel(input_tokens=80, output_tokens=40)  # 120 tokens a call
    limiter = RateLimiter({model.name: RateLimit(tokens=100, per=10)}, clock=clock.now,
                          sleep=clock.sleep)
    stack = MiddlewareStack([limiter])

    await stack.model_request(model_input(model))  # under budget: runs, then charges 120
    assert clock.sleeps == []
    await stack.model_request(model_input(model, 1))
    # 120 charged against 100 per 10s (10 a second): waits until 99 remain, 2.1s.
    assert clock.sleeps == [pytest.approx(2.1)]
    assert model.calls == 2

    # Time passing drains the bucket: 30s later the next call does not wait.
    clock.t += 30
    await stack.model_request(model_input(model, 2))
    assert clock.sleeps == [pytest.approx(2.1)] and model.calls == 3


async def test_token_budget_refuses_when_the_wait_exceeds_max_wait() -> None:
    clock = FakeClock()
    model = CountingModel(input_tokens=500, output_tokens=100)
    stack = MiddlewareStack([RateLimiter({model.name: RateLimit(tokens=100, per=10)},
                                         max_wait=5, clock=clock.now, sleep=clock.sleep)])
    await stack.model_request(model_input(model))  # charges 600: 50s of draining
    with pytest.raises(RateLimited, match="100 tokens per 10s") as info:
        await stack.model_request(model_input(model, 1))
    assert info.value.retry_after == pytest.approx(50.1)
    assert clock.sleeps == [] and model.calls == 1


async def test_requests_and_tokens_together() -> None:
    clock = FakeClock()
    model = CountingModel(input_tokens=10, output_tokens=10)
    stack = MiddlewareStack([RateLimiter(
        {model.name: RateLimit(requests=100, per=60, tokens=1000)}, clock=clock.now,
        sleep=clock.sleep)])
    for i in range(10):
        await stack.model_request(model_input(model, i))
    assert model.calls == 10 and clock.sleeps == []


# ------------------------------------------------------------------------ shared (Redis)


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"keel-test:{uuid.uuid4().hex}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{name}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[RedisRateStore]:
    shared = RedisRateStore(REDIS_URL, prefix)
    yield shared
    await shared.aclose()


async def test_two_limiters_on_one_store_share_the_limit(store: RedisRateStore) -> None:
    model = CountingModel()
    limit = {model.name: RateLimit(requests=3, per=60)}
    workers = [MiddlewareStack([RateLimiter(limit, store=store, max_wait=0)]) for _ in (1, 2)]
    for i in range(3):
        await workers[i % 2].model_request(model_input(model, i))
    for stack in workers:
        with pytest.raises(RateLimited, match="shared through Redis") as info:
            await stack.model_request(model_input(model, 9))
        assert info.value.retry_after is not None and 0 < info.value.retry_after <= 60
    assert model.calls == 3


async def test_shared_limit_waits_for_the_window_to_reopen(store: RedisRateStore) -> None:
    model = CountingModel()
    stack = MiddlewareStack([RateLimiter({model.name: RateLimit(requests=1, per=0.3)},
                                         store=store, max_wait=10)])
    await stack.model_request(model_input(model))
    started = time.monotonic()
    await stack.model_request(model_input(model, 1))
    assert time.monotonic() - started >= 0.2
    assert model.calls == 2


async def test_shared_token_budget(store: RedisRateStore) -> None:
    model = CountingModel(input_tokens=100, output_tokens=20)
    search = make_tool("search")
    stack = MiddlewareStack([RateLimiter({model.name: RateLimit(tokens=100, per=60)},
                                         store=store, max_wait=0)])
    await stack.model_request(model_input(model))  # under budget; charges 120
    with pytest.raises(RateLimited, match="100 tokens per 60s"):
        await stack.model_request(model_input(model, 1))
    assert (await stack.tool_call(tool_input(search, 1))).value == 1  # tools not limited here


_WORKER = textwrap.dedent("""
    import asyncio, json, sys
    from keel.core import Message, ModelResponse, ModelSettings, RateLimited, TextPart
    from keel.models import Model
    from keel.reliability import RateLimit, RateLimiter, RedisRateStore
    from keel.runtime import MiddlewareStack, ModelRequestInput

    class Echo(Model):
        name = "openai:shared"
        async def request(self, messages, tools=(), settings=None):
            return ModelResponse(parts=(TextPart(text="ok"),), model=self.name)

    async def main(url, prefix, attempts):
        store = RedisRateStore(url, prefix)
        stack = MiddlewareStack([RateLimiter({"openai:shared": RateLimit(requests=5, per=60)},
                                             store=store, max_wait=0)])
        allowed = refused = 0
        for i in range(attempts):
            inp = ModelRequestInput(run_id="r", step_key=f"a/turn:{i}/model", agent="a",
                                    model=Echo(), messages=[Message.user("hi")], tools=[],
                                    settings=ModelSettings())
            try:
                await stack.model_request(inp)
                allowed += 1
            except RateLimited:
                refused += 1
        await store.aclose()
        print(json.dumps({"allowed": allowed, "refused": refused}))

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
""")


@pytest.mark.slow
def test_two_processes_share_one_limit(prefix: str) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, REDIS_URL, prefix, "4"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outcomes.append(json.loads(out))
    assert sum(o["allowed"] for o in outcomes) == 5  # 8 attempts, one shared limit of 5
    assert sum(o["refused"] for o in outcomes) == 3


async def test_unreachable_redis_names_the_url() -> None:
    model = CountingModel()
    for url, shown in (("redis://127.0.0.1:1/0", "redis://127.0.0.1:1/0"),
                       ("redis://:hunter2@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0")):
        store = RedisRateStore(url, "keel-test", connect_timeout=2)
        stack = MiddlewareStack([RateLimiter({model.name: RateLimit(requests=1, per=1)},
                                             store=store)])
        try:
            with pytest.raises(StoreError, match="unreachable") as info:
                await stack.model_request(model_input(model))
        finally:
            await store.aclose()
        assert f"rate-limit store at {shown} is unreachable" in str(info.value)
        assert "hunter2" not in str(info.value)
    assert model.calls == 0


def test_a_limiter_survives_consecutive_event_loops() -> None:
    model = CountingModel()
    stack = MiddlewareStack([RateLimiter({model.name: RateLimit(requests=1, per=60)},
                                         max_wait=0)])

    async def twice() -> None:
        await stack.model_request(model_input(model))
        with pytest.raises(RateLimited):
            await stack.model_request(model_input(model, 1))

    asyncio.run(twice())
    # A new loop gets a fresh in-process limiter (no warning about reuse across loops).
    asyncio.run(twice())
    assert model.calls == 2
