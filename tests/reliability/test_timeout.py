"""Timeouts: a per-attempt timeout on model calls (inside Retry, so each attempt gets it), a
ceiling on tool calls, and a sync tool whose late result is discarded.

Waits are tens of milliseconds at most; retries use a fake sleep.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from keel import Agent, ConfigError, MemoryStore, ModelError, tool
from keel.core import Message, ModelSettings, ToolSpec
from keel.reliability import CircuitBreaker, Retry, RetryPolicy, Timeout
from keel.runtime import ModelRequestInput
from keel.testing import FunctionModel, ScriptedModel, call


async def no_sleep(seconds: float) -> None:
    return None


def fast_retry(attempts: int = 3) -> Retry:
    return Retry(RetryPolicy(max_attempts=attempts), sleep=no_sleep)


def hanging_model(calls: list[int], *, answer_on: int | None = None) -> FunctionModel:
    async def fn(messages: list[Message], tools: list[ToolSpec], settings: ModelSettings) -> str:
        calls.append(1)
        if answer_on is not None and len(calls) >= answer_on:
            return "finally"
        await asyncio.Event().wait()  # never set: only the timeout ends it
        return "unreachable"

    return FunctionModel(fn, name="test:hanging")


def request_input(model: FunctionModel) -> ModelRequestInput:
    return ModelRequestInput(run_id="r1", step_key="a/turn:0/model", agent="a", model=model,
                             messages=[Message.user("hi")], tools=[], settings=ModelSettings())


# ------------------------------------------------------------------------------------ config

@pytest.mark.parametrize(("kwargs", "field"), [
    ({"model": 0}, "model"), ({"model": -1.0}, "model"), ({"model": True}, "model"),
    ({"model": "5"}, "model"), ({"tool": 0}, "tool"), ({"tool": "slow"}, "tool")])
def test_config_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Timeout(**kwargs)
    assert info.value.field == field


def test_defaults_and_repr() -> None:
    t = Timeout()
    assert (t.model, t.tool) == (60.0, None)
    assert repr(Timeout(model=None, tool=2)) == "Timeout(model=None, tool=2.0)"


# ------------------------------------------------------------------------------------ models

async def test_a_slow_model_attempt_raises_a_retryable_model_error() -> None:
    calls: list[int] = []
    model = hanging_model(calls)
    mw = Timeout(model=0.01)

    async def nxt(inp: ModelRequestInput) -> Any:
        return await inp.model.request(inp.messages, inp.tools, inp.settings)

    with pytest.raises(ModelError) as info:
        await mw.wrap_model_request(request_input(model), nxt)
    err = info.value
    assert err.retryable is True and err.status is None
    assert "timed out after 0.01 s" in err.message
    assert err.model == "test:hanging" and err.step_key == "a/turn:0/model"


async def test_a_timeout_error_of_the_call_itself_passes_through() -> None:
    async def fn(messages: list[Message], tools: list[ToolSpec], settings: ModelSettings) -> str:
        raise TimeoutError("the socket's own")

    model = FunctionModel(fn)

    async def nxt(inp: ModelRequestInput) -> Any:
        return await inp.model.request(inp.messages, inp.tools, inp.settings)

    with pytest.raises(TimeoutError, match="the socket's own"):
        await Timeout(model=5).wrap_model_request(request_input(model), nxt)


async def test_none_means_no_limit_and_fast_models_are_untouched() -> None:
    store = MemoryStore()
    agent = Agent("a", model=ScriptedModel(["hello"]), middleware=[Timeout(model=None)])
    assert (await agent.run("hi", store=store)).output == "hello"
    agent = Agent("b", model=ScriptedModel(["hello"]), middleware=[Timeout(model=5)])
    assert (await agent.run("hi", store=store)).output == "hello"


async def test_each_retry_attempt_gets_its_own_timeout_and_is_journaled() -> None:
    calls: list[int] = []
    store = MemoryStore()
    agent = Agent("a", model=hanging_model(calls, answer_on=3),
                  middleware=[fast_retry(3), CircuitBreaker.off(), Timeout(model=0.01)])
    result = await agent.run("hi", store=store)
    assert result.output == "finally"
    assert len(calls) == 3  # two attempts timed out, the third answered
    entries = await store.read_journal(result.run_id)
    attempts = [e for e in entries if e.kind == "attempt"]
    assert [e.data["attempt"] for e in attempts] == [1, 2]
    assert all("timed out after 0.01 s" in e.data["error"] for e in attempts)


async def test_every_attempt_timing_out_fails_the_run_with_the_timeout() -> None:
    calls: list[int] = []
    store = MemoryStore()
    agent = Agent("a", model=hanging_model(calls),
                  middleware=[fast_retry(2), CircuitBreaker.off(), Timeout(model=0.01)])
    with pytest.raises(ModelError, match=r"timed out after 0\.01 s") as info:
        await agent.run("hi", store=store)
    assert len(calls) == 2
    record = await store.get_run(info.value.run_id or "")
    assert record.status == "failed"


# ------------------------------------------------------------------------------------- tools

async def test_tool_ceiling_turns_a_slow_tool_into_a_timeout_observation() -> None:
    @tool(timeout=None)
    async def slow() -> str:
        """Never finishes."""
        await asyncio.Event().wait()
        return "late"

    store = MemoryStore()
    agent = Agent("a", model=ScriptedModel([call("slow"), "gave up"]), tools=[slow],
                  middleware=[Retry.off(), Timeout(model=None, tool=0.01)])
    result = await agent.run("hi", store=store)
    assert result.output == "gave up"
    entries = await store.read_journal(result.run_id)
    recorded = next(e for e in entries if e.kind == "tool" and e.phase == "result")
    assert recorded.data["failure"]["error_type"] == "timeout"
    assert "did not finish within 0.01 s" in recorded.data["failure"]["message"]


async def test_a_sync_tool_finishing_after_its_timeout_changes_nothing() -> None:
    release = threading.Event()
    finished = threading.Event()
    effects: list[str] = []

    @tool(timeout=0.02)
    def slow_lookup() -> str:
        """Blocks until released."""
        release.wait(5)
        effects.append("returned")
        finished.set()
        return "LATE RESULT"

    store = MemoryStore()
    agent = Agent("a", model=ScriptedModel([call("slow_lookup"), "sorry, it timed out"]),
                  tools=[slow_lookup], middleware=[Retry.off()])
    result = await agent.run("hi", store=store)
    before = await store.read_journal(result.run_id)
    release.set()  # let the worker thread return its (late) value now
    assert await asyncio.to_thread(finished.wait, 5)
    await asyncio.sleep(0)  # give any (wrongly) scheduled callback a chance to run
    after = await store.read_journal(result.run_id)

    assert effects == ["returned"]
    assert [(e.seq, e.key, e.phase, e.data) for e in after] == \
        [(e.seq, e.key, e.phase, e.data) for e in before]
    recorded = next(e for e in after if e.kind == "tool" and e.phase == "result")
    assert recorded.data["failure"]["error_type"] == "timeout"
    assert "LATE RESULT" not in repr([e.data for e in after])
    assert all("LATE RESULT" not in m.text for m in result.messages)
    tool_parts = [p for m in result.messages if m.role == "tool" for p in m.parts]
    assert len(tool_parts) == 1 and "LATE RESULT" not in repr(tool_parts[0])
    assert result.output == "sorry, it timed out"
