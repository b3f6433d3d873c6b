"""Retry: exponential backoff with full jitter for transient failures only, on both seams.

No test waits: ``Retry`` gets a fake ``sleep`` that records the delays it was asked for.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from keel import (
    Agent,
    Budget,
    BudgetExceeded,
    CircuitOpen,
    ConfigError,
    Escalate,
    MemoryStore,
    ModelError,
    RetryWithFeedback,
    ToolError,
    tool,
)
from keel.core import Message, ModelResponse, ModelSettings, ToolContext, ToolSpec
from keel.models import Model
from keel.reliability import Retry, RetryPolicy, retryable_tool_failure
from keel.runtime import ModelRequestInput, ToolCallInput
from keel.testing import FaultyModel, FunctionModel, ScriptedModel, call, faulty_tool
from keel.tools import Tool, ToolFailure, ToolResult
from keel.tools._tool import is_transient


class Sleeps:
    """A fake ``asyncio.sleep`` that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(float(seconds))


class Hook:
    """Records ``on_retry(attempt, error, delay)`` calls; can refuse like a spent budget."""

    def __init__(self, refuse_at: int | None = None) -> None:
        self.calls: list[tuple[int, str, float]] = []
        self.refuse_at = refuse_at

    async def __call__(self, attempt: int, error: str, delay: float) -> None:
        if attempt == self.refuse_at:
            raise BudgetExceeded("no room", limit="steps", used=1, allowed=1)
        self.calls.append((attempt, error, delay))


def failing_then(errors: Sequence[BaseException], answer: str = "ok") -> FunctionModel:
    """A model that raises ``errors`` in order, then answers ``answer``."""
    pending = list(errors)

    def fn(messages: list[Message], tools: list[ToolSpec], settings: ModelSettings) -> str:
        if pending:
            raise pending.pop(0)
        return answer

    return FunctionModel(fn)


def overloaded(**kw: Any) -> ModelError:
    return ModelError("HTTP 503 from test", status=503, retryable=True, **kw)


async def call_model(retry: Retry, model: Model, hook: Hook | None = None) -> ModelResponse:
    inp = ModelRequestInput(run_id="r1", step_key="a/turn:0/model", agent="a", model=model,
                            messages=[Message.user("hi")], tools=[], settings=ModelSettings(),
                            on_retry=hook or Hook())

    async def nxt(i: ModelRequestInput) -> ModelResponse:
        return await i.model.request(i.messages, i.tools, i.settings)

    return await retry.wrap_model_request(inp, nxt)


async def call_tool(retry: Retry, t: Tool, arguments: str = "{}",
                    hook: Hook | None = None) -> ToolResult:
    ctx = ToolContext(run_id="r1", step_key="a/turn:0/tool:t#0", agent="a",
                      idempotency_key="r1/a/turn:0/tool:t#0")
    inp = ToolCallInput(run_id="r1", step_key=ctx.step_key, agent="a", tool=t,
                        arguments=arguments, ctx=ctx, on_retry=hook or Hook())

    async def nxt(i: ToolCallInput) -> ToolResult:
        return await i.tool.call(i.arguments, i.ctx)

    return await retry.wrap_tool_call(inp, nxt)


def flaky_tool(exc: BaseException, failures: int, *, risk: str = "read") -> tuple[Tool, list[int]]:
    """A tool that raises ``exc`` ``failures`` times, then returns "done"; records attempts."""
    seen: list[int] = []

    @tool(name="flaky", risk=risk)  # type: ignore[arg-type]
    async def flaky(ctx: ToolContext) -> str:
        """Flaky."""
        seen.append(ctx.attempt)
        if len(seen) <= failures:
            raise exc
        return "done"

    return flaky, seen


# ------------------------------------------------------------------------------- policy


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"max_attempts": 0}, "max_attempts"),
    ({"max_attempts": 2.5}, "max_attempts"),
    ({"max_attempts": True}, "max_attempts"),
    ({"base_delay": -1}, "base_delay"),
    ({"base_delay": "1"}, "base_delay"),
    ({"base_delay": 5, "max_delay": 1}, "max_delay"),
    ({"multiplier": 0.5}, "multiplier"),
    ({"jitter": "equal"}, "jitter"),
    ({"respect_retry_after": "yes"}, "respect_retry_after"),
    ({"max_retry_after": -0.1}, "max_retry_after"),
    ({"random": 42}, "random"),
])
def test_policy_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        RetryPolicy(**kwargs)
    assert info.value.field == field
    assert field in str(info.value)


def test_policy_defaults() -> None:
    p = RetryPolicy()
    assert (p.max_attempts, p.base_delay, p.max_delay, p.multiplier, p.jitter,
            p.respect_retry_after, p.max_retry_after) == (4, 0.5, 30.0, 2.0, "full", True, 60.0)
    with pytest.raises(ConfigError) as info:
        Retry(policy="fast")  # type: ignore[arg-type]
    assert info.value.field == "policy"


# -------------------------------------------------------------------------------- models


async def test_transient_model_errors_are_retried_with_full_jitter_then_raised() -> None:
    sleeps, hook = Sleeps(), Hook()
    policy = RetryPolicy(max_attempts=4, base_delay=1.0, multiplier=2.0, max_delay=3.0,
                         random=random.Random(1))
    model = failing_then([overloaded() for _ in range(10)])
    with pytest.raises(ModelError) as info:
        await call_model(Retry(policy, sleep=sleeps), model, hook)
    assert len(model.requests) == 4
    assert "gave up after 4 attempts" in info.value.__notes__
    assert [a for a, _, _ in hook.calls] == [1, 2, 3]
    assert all(e == "ModelError: HTTP 503 from test" for _, e, _ in hook.calls)
    assert sleeps.delays == [d for _, _, d in hook.calls]  # the hook is told the real wait
    for n, delay in enumerate(sleeps.delays, start=1):
        assert 0.0 <= delay <= min(3.0, 1.0 * 2.0 ** (n - 1))


async def test_success_after_transient_errors_returns_the_response() -> None:
    sleeps, hook = Sleeps(), Hook()
    errors = [ModelError("429", status=429, retryable=True),
              ModelError("timed out", retryable=True)]
    model = failing_then(errors, "finally")
    response = await call_model(Retry(sleep=sleeps), model, hook)
    assert response.text == "finally"
    assert [(a, e) for a, e, _ in hook.calls] == [(1, "ModelError: 429"),
                                                   (2, "ModelError: timed out")]
    assert len(sleeps.delays) == 2


async def test_full_jitter_spreads_delays_within_the_exponential_bounds() -> None:
    sleeps = Sleeps()
    policy = RetryPolicy(max_attempts=60, base_delay=0.5, multiplier=2.0, max_delay=8.0,
                         random=random.Random(7))
    with pytest.raises(ModelError):
        await call_model(Retry(policy, sleep=sleeps), failing_then([overloaded()] * 60))
    assert len(sleeps.delays) == 59
    bounds = [min(8.0, 0.5 * 2.0 ** n) for n in range(59)]
    assert all(0.0 <= d <= b for d, b in zip(sleeps.delays, bounds, strict=True))
    capped = sleeps.delays[5:]  # bound is max_delay from the 6th retry on
    assert min(capped) < 2.0 < 6.0 < max(capped)  # spread over the whole range, not clustered


async def test_seeded_random_makes_delays_reproducible_and_no_jitter_is_exact() -> None:
    async def delays(policy: RetryPolicy) -> list[float]:
        sleeps = Sleeps()
        with pytest.raises(ModelError):
            await call_model(Retry(policy, sleep=sleeps), failing_then([overloaded()] * 5))
        return sleeps.delays

    seeded = [await delays(RetryPolicy(max_attempts=5, random=random.Random(3)))
              for _ in range(2)]
    assert seeded[0] == seeded[1]
    exact = await delays(RetryPolicy(max_attempts=5, base_delay=1.0, multiplier=10.0,
                                     max_delay=15.0, jitter="none"))
    assert exact == [1.0, 10.0, 15.0, 15.0]


async def test_retry_after_overrides_the_backoff_even_past_max_delay() -> None:
    sleeps, hook = Sleeps(), Hook()
    errors = [ModelError("429", status=429, retry_after=7.0, retryable=True),
              overloaded(retry_after=2.5)]
    policy = RetryPolicy(max_delay=1.0, base_delay=0.5)
    response = await call_model(Retry(policy, sleep=sleeps), failing_then(errors), hook)
    assert response.text == "ok"
    assert sleeps.delays == [7.0, 2.5]
    assert [d for _, _, d in hook.calls] == [7.0, 2.5]


async def test_retry_after_beyond_the_cap_is_raised_without_waiting() -> None:
    sleeps, hook = Sleeps(), Hook()
    model = failing_then([ModelError("429", status=429, retry_after=120.0, retryable=True)])
    with pytest.raises(ModelError) as info:
        await call_model(Retry(RetryPolicy(max_retry_after=60.0), sleep=sleeps), model, hook)
    assert info.value.retry_after == 120.0
    assert any("max_retry_after" in n for n in info.value.__notes__)
    assert (len(model.requests), sleeps.delays, hook.calls) == (1, [], [])


async def test_retry_after_can_be_ignored() -> None:
    sleeps = Sleeps()
    model = failing_then([ModelError("429", status=429, retry_after=120.0, retryable=True)])
    policy = RetryPolicy(respect_retry_after=False, base_delay=1.0, jitter="none")
    await call_model(Retry(policy, sleep=sleeps), model)
    assert sleeps.delays == [1.0]


@pytest.mark.parametrize("error", [
    ModelError("HTTP 401: bad key", status=401, retryable=False),
    ModelError("HTTP 400: bad request", status=400, retryable=False),
    CircuitOpen("breaker open"),
    BudgetExceeded("spent", limit="steps", used=3, allowed=3),
    ValueError("a bug"),
], ids=["401", "400", "circuit-open", "budget", "bug"])
async def test_non_retryable_model_errors_are_never_retried(error: Exception) -> None:
    sleeps, hook = Sleeps(), Hook()
    model = failing_then([error, error])
    with pytest.raises(type(error)) as info:
        await call_model(Retry(sleep=sleeps), model, hook)
    assert info.value is error
    assert (len(model.requests), sleeps.delays, hook.calls) == (1, [], [])


async def test_a_refusing_hook_stops_the_retries_with_budget_exceeded() -> None:
    sleeps = Sleeps()
    model = failing_then([overloaded()] * 10)
    with pytest.raises(BudgetExceeded):
        await call_model(Retry(RetryPolicy(max_attempts=10), sleep=sleeps), model,
                         Hook(refuse_at=3))
    assert len(model.requests) == 3
    assert len(sleeps.delays) == 2  # no wait after the refusal


async def test_retry_off_makes_every_call_once() -> None:
    sleeps = Sleeps()
    model = failing_then([overloaded()])
    with pytest.raises(ModelError):
        await call_model(Retry.off(), model)
    assert Retry.off().policy.max_attempts == 1
    assert (len(model.requests), sleeps.delays) == (1, [])
    t, seen = flaky_tool(ConnectionError("reset"), 1)
    result = await call_tool(Retry.off(), t)
    assert result.failure is not None and seen == [1]


# --------------------------------------------------------------------------------- tools


@pytest.mark.parametrize("exc", [ConnectionResetError("reset by peer"), TimeoutError("slow"),
                                 OSError("EAGAIN"), ToolError("busy", retryable=True)],
                         ids=["connection", "timeout", "oserror", "declared"])
async def test_transient_tool_failures_are_retried(exc: Exception) -> None:
    sleeps, hook = Sleeps(), Hook()
    t, seen = flaky_tool(exc, 2)
    result = await call_tool(Retry(RetryPolicy(random=random.Random(0)), sleep=sleeps), t,
                             hook=hook)
    assert result.content == "done" and result.failure is None
    assert seen == [1, 2, 3]  # the tool sees which attempt it is in ctx.attempt
    assert [a for a, _, _ in hook.calls] == [1, 2]
    assert all(0.0 <= d <= 0.5 * 2 ** n for n, d in enumerate(sleeps.delays))
    assert hook.calls[0][1].startswith(("tool_error: ", "timeout: "))


async def test_a_tool_that_keeps_failing_returns_its_last_failure_with_the_count() -> None:
    sleeps, hook = Sleeps(), Hook()
    t, seen = flaky_tool(ConnectionError("refused"), 99)
    result = await call_tool(Retry(RetryPolicy(max_attempts=3), sleep=sleeps), t, hook=hook)
    assert seen == [1, 2, 3]
    assert result.failure is not None
    assert result.failure.error_type == "tool_error"
    assert result.failure.message == ("flaky failed: ConnectionError: refused (gave up after 3 "
                                      "attempts)")
    assert "gave up after 3 attempts" in result.content
    assert hook.calls[0][1] == "tool_error: flaky failed: ConnectionError: refused"


async def test_tool_timeouts_are_retried() -> None:
    sleeps = Sleeps()

    @tool
    async def lookup(q: str) -> str:
        """Look up."""
        return q

    slow = faulty_tool(lookup, seed=1, timeout_rate=1.0)
    result = await call_tool(Retry(RetryPolicy(max_attempts=3), sleep=sleeps), slow,
                             '{"q": "x"}')
    assert result.failure is not None and result.failure.error_type == "timeout"
    assert slow.faults.timeouts == 3 and len(sleeps.delays) == 2


@pytest.mark.parametrize(("exc", "retried"), [
    (ConnectionError("reset"), False),  # the write may have happened: never again
    (TimeoutError("slow"), False),
    (ToolError("not applied", retryable=True), True),  # the author says it did not happen
])
async def test_non_idempotent_tools_are_retried_only_when_the_tool_says_so(
        exc: Exception, retried: bool) -> None:
    sleeps = Sleeps()
    t, seen = flaky_tool(exc, 1, risk="write")
    assert t.meta.idempotent is False
    result = await call_tool(Retry(sleep=sleeps), t)
    assert seen == ([1, 2] if retried else [1])
    assert (result.failure is None) is retried


async def test_non_idempotent_tool_timeouts_are_not_retried() -> None:
    @tool(risk="write")
    async def charge(amount: int) -> str:
        """Charge."""
        return "charged"

    t = faulty_tool(charge, seed=1, timeout_rate=1.0)
    result = await call_tool(Retry(sleep=Sleeps()), t, '{"amount": 1}')
    assert result.failure is not None and t.faults.calls == 1


def _reject(args: Any) -> str:
    return "never"


@tool(validators=[_reject])
async def strict(n: int) -> int:
    """Strict."""
    return n


@pytest.mark.parametrize(("arguments", "error_type"), [
    ("{not json", "invalid_json"),
    ('{"n": "seven"}', "invalid_arguments"),
    ('{"n": 7}', "rejected_arguments"),
])
async def test_validation_failures_are_never_retried(arguments: str, error_type: str) -> None:
    sleeps, hook = Sleeps(), Hook()
    result = await call_tool(Retry(sleep=sleeps), strict, arguments, hook)
    assert result.failure is not None
    assert result.failure.error_type == error_type
    assert result.failure.retryable is True  # the model may fix it; middleware must not retry
    assert (sleeps.delays, hook.calls) == ([], [])


@pytest.mark.parametrize("exc", [ValueError("bad input"), FileNotFoundError("no such file"),
                                 ToolError("refused", retryable=False),
                                 RetryWithFeedback("ask differently")],
                         ids=["value-error", "file-not-found", "tool-error", "feedback"])
async def test_permanent_tool_failures_are_never_retried(exc: Exception) -> None:
    t, seen = flaky_tool(exc, 1)
    result = await call_tool(Retry(sleep=Sleeps()), t)
    assert result.failure is not None and seen == [1]


@pytest.mark.parametrize("error_type", ["unknown_tool", "permission_denied",
                                        "approval_denied", "invalid_arguments"])
def test_retryable_tool_failure_refuses_what_the_model_must_fix(error_type: Any) -> None:
    for transient in (None, "exception", "declared"):
        failure = ToolFailure(error_type=error_type, message="m", retryable=True,
                              transient=transient)  # type: ignore[arg-type]
        assert not retryable_tool_failure(strict, failure)
    assert not retryable_tool_failure(strict, None)


async def test_signals_from_tools_propagate_unretried() -> None:
    t, seen = flaky_tool(Escalate("needs a human"), 5)
    with pytest.raises(Escalate):
        await call_tool(Retry(sleep=Sleeps()), t)
    assert seen == [1]


def test_transient_marker_is_set_precisely_and_round_trips() -> None:
    assert is_transient(ConnectionRefusedError()) and is_transient(OSError("EIO"))
    assert not is_transient(PermissionError()) and not is_transient(ValueError())
    failure = ToolResult.fail("tool_error", "x failed", retryable=False, transient="exception")
    assert ToolResult.from_dict(failure.to_dict()) == failure
    assert "transient" not in failure.content  # the model's observation is unchanged
    plain = ToolResult.fail("tool_error", "x failed", retryable=False)
    assert "transient" not in plain.to_dict()["failure"]
    assert ToolResult.from_dict(plain.to_dict()).failure == plain.failure


# ---------------------------------------------------------------------------- end to end


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def test_agent_run_journals_and_budgets_each_failed_attempt() -> None:
    scripted = ScriptedModel([call("lookup", {"a": 2, "b": 3}), "The sum is 5."])
    errors: list[BaseException] = [overloaded(), ModelError("reset", retryable=True)]

    async def fn(messages: list[Message], tools: list[ToolSpec],
                 settings: ModelSettings) -> ModelResponse:
        if errors:
            raise errors.pop(0)
        return await scripted.request(messages, tools, settings)

    failures = [ConnectionError("reset")]

    @tool
    async def lookup(a: int, b: int) -> int:
        """Add, over a flaky network."""
        if failures:
            raise failures.pop()
        return a + b

    sleeps = Sleeps()
    agent = Agent("calc", model=FunctionModel(fn), tools=[lookup],
                  middleware=[Retry(RetryPolicy(random=random.Random(5)), sleep=sleeps)])
    store = MemoryStore()
    result = await agent.run("2+3?", store=store)
    assert result.output == "The sum is 5."
    entries = await store.read_journal(result.run_id)
    attempts = [e for e in entries if e.kind == "attempt"]
    assert [e.key for e in attempts] == ["calc/turn:0/model/attempt:1",
                                         "calc/turn:0/model/attempt:2",
                                         "calc/turn:0/tool:lookup#0/attempt:1"]
    assert attempts[0].data["error"] == "ModelError: HTTP 503 from test"
    assert attempts[2].data["error"] == "tool_error: lookup failed: ConnectionError: reset"
    assert [e.data["retry_in_s"] for e in attempts] == [round(d, 3) for d in sleeps.delays]
    assert result.steps == 3 + len(attempts)  # two model turns, one tool call, three retries
    record = await store.get_run(result.run_id)
    assert record.status == "completed"


async def test_a_tight_budget_stops_the_retries() -> None:
    sleeps = Sleeps()
    model = failing_then([overloaded() for _ in range(20)])
    agent = Agent("calc", model=model, budget=Budget(max_steps=3),
                  middleware=[Retry(RetryPolicy(max_attempts=20), sleep=sleeps)])
    store = MemoryStore()
    with pytest.raises(BudgetExceeded) as info:
        await agent.run("hi", store=store)
    assert info.value.limit == "steps"
    assert info.value.step_key == "calc/turn:0/model/attempt:4"
    assert len(model.requests) == 4 and len(sleeps.delays) == 3
    runs = await store.list_runs()
    entries = await store.read_journal(runs[0].run_id)
    assert [e.key for e in entries if e.kind == "attempt"] == [
        f"calc/turn:0/model/attempt:{n}" for n in (1, 2, 3)]


async def test_agent_without_retry_fails_on_the_first_transient_error() -> None:
    agent = Agent("calc", model=failing_then([overloaded()]), middleware=[Retry.off()])
    with pytest.raises(ModelError):
        await agent.run("hi", store=MemoryStore())


async def test_a_long_retry_after_on_a_later_attempt_ends_the_retries() -> None:
    sleeps = Sleeps()
    model = failing_then([overloaded(),
                          ModelError("429", status=429, retry_after=90.0, retryable=True)])
    with pytest.raises(ModelError) as info:
        await call_model(Retry(sleep=sleeps), model)
    assert info.value.status == 429 and len(model.requests) == 2 and len(sleeps.delays) == 1


async def test_agent_survives_seeded_model_and_tool_faults() -> None:
    scripted = ScriptedModel([call("add", {"a": 1, "b": 2}), "3"])
    model = FaultyModel(scripted, seed=9, rate_limit_rate=0.3, server_error_rate=0.2,
                        retry_after=1.0)
    flaky_add = faulty_tool(add, seed=9, error_rate=0.5)
    agent = Agent("calc", model=model, tools=[flaky_add],
                  middleware=[Retry(RetryPolicy(max_attempts=10, random=random.Random(9)),
                                    sleep=Sleeps())])
    store = MemoryStore()
    result = await agent.run("1+2?", store=store)
    assert result.output == "3"
    entries = await store.read_journal(result.run_id)
    attempts = [e for e in entries if e.kind == "attempt"]
    assert len(attempts) == model.faults.injected + flaky_add.faults.injected > 0
