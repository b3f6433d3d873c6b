"""Fault injection: seeded, counted, shaped like the failures real models and tools produce."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from keel import ConfigError, ModelError
from keel.core import Message, ResponseDone, TextDelta, ToolContext
from keel.testing import Faults, FaultyModel, ScriptedModel, faulty_tool
from keel.tools import tool

CTX = ToolContext(run_id="r", step_key="a/turn:0/tool:echo#0", agent="a",
                  idempotency_key="r/a/turn:0/tool:echo#0")
HI = [Message.user("hi")]


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@tool
async def echo(text: str) -> str:
    """Echo."""
    return text


def answering(n: int = 200) -> ScriptedModel:
    return ScriptedModel(["fine"] * n, record_requests=False)


async def outcomes(model: FaultyModel, n: int) -> list[str]:
    """What each of ``n`` requests did: 'ok' or the status / kind of the injected error."""
    seen = []
    for _ in range(n):
        try:
            await model.request(HI)
            seen.append("ok")
        except ModelError as exc:
            seen.append(str(exc.status) if exc.status else exc.message.split(" (")[0][:12])
    return seen


async def test_same_seed_same_faults_other_seed_other_faults() -> None:
    def make(seed: int) -> FaultyModel:
        return FaultyModel(answering(), seed=seed, error_rate=0.1, rate_limit_rate=0.1,
                           server_error_rate=0.1, timeout_rate=0.1)

    first, again, other = [await outcomes(make(s), 100) for s in (11, 11, 12)]
    assert first == again
    assert first != other
    assert set(first) >= {"ok", "429"}


async def test_rates_are_honoured_and_counted() -> None:
    model = FaultyModel(answering(2000), seed=3, error_rate=0.1, rate_limit_rate=0.2,
                        server_error_rate=0.1, timeout_rate=0.05)
    seen = await outcomes(model, 2000)
    f = model.faults
    assert f.calls == 2000
    assert f.injected == f.errors + f.rate_limits + f.server_errors + f.timeouts
    assert seen.count("ok") == 2000 - f.injected
    assert seen.count("429") == f.rate_limits
    assert seen.count("500") + seen.count("503") == f.server_errors
    for count, rate in ((f.errors, 0.1), (f.rate_limits, 0.2), (f.server_errors, 0.1),
                        (f.timeouts, 0.05)):
        assert abs(count / 2000 - rate) < 0.03  # a fixed seed: this is deterministic


async def test_injected_model_errors_look_like_the_adapters_errors() -> None:
    limited = FaultyModel(answering(), seed=1, rate_limit_rate=1.0, retry_after=2.5)
    with pytest.raises(ModelError) as info:
        await limited.request(HI)
    e = info.value
    assert (e.status, e.retry_after, e.retryable, e.model) == (429, 2.5, True, "test:scripted")

    server = FaultyModel(answering(), seed=1, server_error_rate=1.0)
    statuses = set()
    for _ in range(30):
        with pytest.raises(ModelError) as info:
            await server.request(HI)
        assert info.value.retryable
        statuses.add(info.value.status)
    assert statuses == {500, 503}

    for kind in ("timeout_rate", "error_rate"):
        m = FaultyModel(answering(), seed=1, **{kind: 1.0})
        with pytest.raises(ModelError) as info:
            await m.request(HI)
        assert info.value.retryable and info.value.status is None


async def test_no_faults_passes_through_and_latency_uses_sleep() -> None:
    sleeps = Sleeps()
    model = FaultyModel(answering(), seed=5, latency=(0.1, 0.3), sleep=sleeps)
    assert model.name == "test:scripted"
    for _ in range(10):
        assert (await model.request(HI)).text == "fine"
    assert len(sleeps.delays) == 10 and all(0.1 <= d <= 0.3 for d in sleeps.delays)
    assert model.faults == Faults(calls=10, delayed=10, delay_s=sum(sleeps.delays))


async def test_streams_fail_before_the_first_event() -> None:
    broken = FaultyModel(answering(), seed=1, timeout_rate=1.0)
    events: list[Any] = []

    async def drain() -> None:
        async for ev in broken.stream(HI):
            events.append(ev)

    with pytest.raises(ModelError):
        await drain()
    assert events == []
    fine = FaultyModel(answering(), seed=1)
    events = [ev async for ev in fine.stream(HI)]
    assert isinstance(events[0], TextDelta) and isinstance(events[-1], ResponseDone)


async def test_faulty_tool_fails_like_a_real_tool() -> None:
    t = faulty_tool(echo, seed=2, error_rate=1.0)
    assert (t.meta, t.parameters, t.name) == (echo.meta, echo.parameters, "echo")
    result = await t.call('{"text": "x"}', CTX)
    assert result.failure is not None
    assert result.failure.error_type == "tool_error"
    assert result.failure.transient == "exception"
    assert "ConnectionError" in result.failure.message

    @tool
    async def down(text: str) -> str:
        """Fails for real."""
        raise ConnectionError("injected fault")

    real = await down.call('{"text": "x"}', CTX)
    assert real.failure is not None
    assert (real.failure.retryable, real.failure.transient) == (
        result.failure.retryable, result.failure.transient)

    permanent = await faulty_tool(echo, seed=2, error_rate=1.0, transient=False).call(
        '{"text": "x"}', CTX)
    assert permanent.failure is not None and permanent.failure.transient is None

    timeout = await faulty_tool(echo, seed=2, timeout_rate=1.0).call('{"text": "x"}', CTX)
    assert timeout.failure is not None and timeout.failure.error_type == "timeout"


async def test_faulty_tool_is_seeded_and_counted() -> None:
    async def run(seed: int) -> tuple[list[bool], Faults]:
        t = faulty_tool(echo, seed=seed, error_rate=0.3, timeout_rate=0.2, latency=(0, 1),
                        sleep=Sleeps())
        seen = [(await t.call('{"text": "x"}', CTX)).is_error for _ in range(200)]
        return seen, t.faults

    (a, fa), (b, fb), (c, _) = await run(4), await run(4), await run(5)
    assert a == b and a != c and fa == fb
    assert fa.calls == 200 and sum(a) == fa.errors + fa.timeouts == fa.injected
    assert 0.4 < fa.injected / 200 < 0.6


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"error_rate": 1.5}, "error_rate"),
    ({"timeout_rate": -0.1}, "timeout_rate"),
    ({"error_rate": 0.6, "timeout_rate": 0.6}, "timeout_rate + error_rate"),
    ({"latency": (2, 1)}, "latency"),
    ({"latency": "slow"}, "latency"),
    ({"retry_after": -1}, "retry_after"),
])
def test_bad_settings_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        FaultyModel(answering(), seed=1, **kwargs)
    assert info.value.field == field
    with pytest.raises(ConfigError) as info:
        faulty_tool(echo, seed=1, crash_point="during")  # type: ignore[arg-type]
    assert info.value.field == "crash_point"


def run_child(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, check=False)


def test_crash_rate_kills_the_process(tmp_path: Path) -> None:
    marker = tmp_path / "effect"
    out = run_child(f"""
        import asyncio
        from keel.core import Message, ToolContext
        from keel.testing import FaultyModel, ScriptedModel, faulty_tool
        from keel.tools import tool

        @tool
        def write(text: str) -> str:
            '''Write.'''
            open({str(marker)!r}, "w").write(text)
            return "written"

        async def main():
            ok = FaultyModel(ScriptedModel(["a"]), seed=1, crash_rate=0.0)
            await ok.request([Message.user("hi")])
            print("survived", flush=True)
            ctx = ToolContext(run_id="r", step_key="k", agent="a", idempotency_key="r/k")
            await faulty_tool(write, seed=1, crash_rate=1.0, crash_point="after").call(
                '{{"text": "done"}}', ctx)
            print("not reached", flush=True)

        asyncio.run(main())
    """, tmp_path)
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert out.stdout.split() == ["survived"]
    assert marker.read_text() == "done"  # the effect happened before the crash


def test_keel_testing_imports_without_pytest() -> None:
    code = ("import sys; sys.modules['pytest'] = None; import keel.testing as t; "
            "print(t.FaultyModel.__name__, t.faulty_tool.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.split() == ["FaultyModel", "faulty_tool"]
