"""keel's default middleware: listed in order by keel.defaults(), composed by keel.Agent,
replaceable by type, droppable as a whole, with nothing registered at import time."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

import keel
from keel import (
    Agent,
    BreakerPolicy,
    CircuitBreaker,
    MemoryStore,
    Middleware,
    ModelError,
    Retry,
    RetryPolicy,
)
from keel.context import Paging
from keel.core import Message, ModelResponse, ModelSettings, ToolSpec
from keel.guard import DataGuard, InjectionGuard, LimitsGuard, TaintGuard, UntrustedContent
from keel.observe import Metrics, Tracing
from keel.reliability import Timeout
from keel.testing import FunctionModel, ScriptedModel

#: keel's metrics, then the reliability defaults, in order (metrics outermost: a step's time
#: includes its retries, and each retry is counted through the on_retry hook).
RELIABILITY: list[type[Middleware]] = [Metrics, Retry, CircuitBreaker]
#: keel's context defaults (tool output paging), between the reliability defaults and the guards.
CONTEXT: list[type[Middleware]] = [Paging]
#: keel's default guards, in order, after the reliability defaults.
GUARDS: list[type[Middleware]] = [LimitsGuard, InjectionGuard, DataGuard, TaintGuard,
                                  UntrustedContent]


def types(agent: keel.runtime.Agent[object]) -> list[type[Middleware]]:
    return [type(m) for m in agent.stack.middleware]


def test_defaults_lists_the_default_stack_outermost_first_fresh_each_call() -> None:
    first, second = keel.defaults(), keel.defaults()
    assert [type(m) for m in first] == [Tracing, *RELIABILITY, *CONTEXT, *GUARDS]
    assert all(a is not b for a, b in zip(first, second, strict=True))


def test_an_agent_puts_the_defaults_outside_its_own_middleware() -> None:
    timeout = Timeout(model=5)
    agent = Agent("a", model=ScriptedModel(["x"]), middleware=[timeout])
    assert types(agent) == [Tracing, *RELIABILITY, *CONTEXT, *GUARDS, Timeout]
    assert agent.stack.middleware[-1] is timeout
    other = Agent("b", model=ScriptedModel(["x"]))
    assert other.stack.middleware[3] is not agent.stack.middleware[3]  # one breaker each


def test_a_middleware_of_a_defaults_type_replaces_it_in_its_place() -> None:
    retry = Retry(RetryPolicy(max_attempts=6))
    agent = Agent("a", model=ScriptedModel(["x"]), middleware=[Timeout(model=5), retry])
    # the replacement keeps the default's place: retry outside the breaker, as documented
    assert types(agent) == [Tracing, *RELIABILITY, *CONTEXT, *GUARDS, Timeout]
    assert agent.stack.middleware[2] is retry
    off = CircuitBreaker.off()
    assert Agent("b", model=ScriptedModel(["x"]), middleware=[off]).stack.middleware[3] is off


def test_default_middleware_false_drops_them_all() -> None:
    timeout = Timeout(model=5)
    agent = Agent("a", model=ScriptedModel(["x"]), middleware=[timeout],
                  default_middleware=False)
    assert list(agent.stack.middleware) == [timeout]
    assert list(agent.clone(instructions="x").stack.middleware) == [timeout]


def test_the_runtime_agent_has_no_defaults_of_its_own() -> None:
    agent = keel.runtime.Agent("a", model=ScriptedModel(["x"]))
    assert list(agent.stack.middleware) == []
    assert isinstance(Agent("b", model=ScriptedModel(["x"])), keel.runtime.Agent)


def test_a_subclass_composes_its_own_defaults_and_clones_keep_them() -> None:
    class Quiet(Agent[str]):
        def make_defaults(self) -> Sequence[Middleware]:
            return [*super().make_defaults(), Timeout(model=30)]

    agent = Quiet("a", model=ScriptedModel(["x"]))
    assert types(agent) == [Tracing, *RELIABILITY, *CONTEXT, *GUARDS, Timeout]
    clone = agent.clone(instructions="Be brief.")
    assert type(clone) is Quiet
    assert types(clone) == [Tracing, *RELIABILITY, *CONTEXT, *GUARDS, Timeout]


def flaky(failures: int) -> FunctionModel:
    calls = 0

    def answer(messages: list[Message], tools: list[ToolSpec],
               settings: ModelSettings) -> str | ModelResponse:
        nonlocal calls
        calls += 1
        if calls <= failures:
            raise ModelError("503 from the provider", status=503, retryable=True)
        return "fine"

    return FunctionModel(answer)


async def test_the_replacing_retry_is_the_one_that_runs() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    retry = Retry(RetryPolicy(max_attempts=3, base_delay=0.25, jitter="none"), sleep=sleep)
    model = flaky(2)
    result = await Agent("a", model=model, middleware=[retry]).run("hi", store=MemoryStore())
    assert result.output == "fine"
    assert len(model.requests) == 3
    assert waits == [0.25, 0.5]  # the user's policy, not the default's


async def test_without_defaults_a_transient_failure_is_not_retried() -> None:
    model = flaky(1)
    agent = Agent("a", model=model, default_middleware=False)
    with pytest.raises(ModelError, match="503"):
        await agent.run("hi", store=MemoryStore())
    assert len(model.requests) == 1


async def test_replacements_keep_retry_outside_the_breaker() -> None:
    """An open breaker stops the retries only if retry is outside it: with both replaced,
    the second failure opens the breaker and the third attempt is refused, not sent."""
    model = flaky(10)
    agent = Agent("a", model=model, middleware=[
        CircuitBreaker(BreakerPolicy(failure_threshold=2)),
        Retry(RetryPolicy(max_attempts=5, base_delay=0))])
    with pytest.raises(keel.CircuitOpen):
        await agent.run("hi", store=MemoryStore())
    assert len(model.requests) == 2


def test_register_default_middleware_is_deprecated_but_works_for_one_release() -> None:
    from keel.runtime import _defaults

    with pytest.warns(DeprecationWarning, match="keel.defaults"):
        register = keel.runtime.register_default_middleware
    try:
        with pytest.warns(DeprecationWarning, match="make_defaults"):
            register("extra", lambda: [Timeout(model=9)])
        assert types(Agent("a", model=ScriptedModel(["x"]))) == [
            Tracing, *RELIABILITY, *CONTEXT, *GUARDS, Timeout]
    finally:
        _defaults._LEGACY.clear()
    assert types(Agent("a", model=ScriptedModel(["x"]))) == [Tracing, *RELIABILITY, *CONTEXT,
                                                              *GUARDS]


def test_a_clone_keeps_a_subclass_and_what_it_added() -> None:
    class Tagged(Agent[str]):
        def __init__(self, *args: object, tag: str, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            self.tag = tag

    agent = Tagged("a", model=ScriptedModel(["x"]), tag="blue")
    clone = agent.clone(instructions="Be brief.")
    assert (type(clone), clone.tag, clone.instructions) == (Tagged, "blue", "Be brief.")
    assert clone.stack.middleware[3] is not agent.stack.middleware[3]  # fresh defaults
