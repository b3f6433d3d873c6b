"""Plain ``def`` tools: keel's worker threads by default (the loop goes on while one blocks,
timeouts fire), on the event loop itself when declared ``blocking=False``."""

from __future__ import annotations

import asyncio
import contextvars
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from keel import Agent, MemoryStore, ToolContext, tool
from keel.testing import ScriptedModel, call
from keel.tools._threads import worker_threads


def ctx(key: str = "a/turn:0/tool:x#0") -> ToolContext:
    return ToolContext(run_id="r1", step_key=key, agent="a", idempotency_key=f"r1/{key}")


async def test_the_loop_goes_on_while_a_sync_tool_blocks() -> None:
    release = threading.Event()
    progressed: list[str] = []

    @tool
    def wait_for_release() -> str:
        return "released" if release.wait(10) else "never released"

    async def other_task() -> None:
        await asyncio.sleep(0)
        progressed.append("other task ran")
        release.set()  # only reachable if the loop was not held by the tool

    results = await asyncio.gather(wait_for_release.call("{}", ctx()), other_task())
    assert results[0].content == "released"
    assert progressed == ["other task ran"]


async def test_a_blocking_sync_tool_times_out_and_its_late_result_is_dropped() -> None:
    release = threading.Event()
    finished = threading.Event()

    @tool(timeout=0.05)
    def stuck(n: int) -> str:
        if n == 0:
            release.wait(10)
            finished.set()
            return "late"
        return f"fresh {n}"

    started = time.monotonic()
    late = await stuck.call('{"n": 0}', ctx())
    assert time.monotonic() - started < 5
    assert late.failure is not None and late.failure.error_type == "timeout"
    assert late.failure.retryable is True
    release.set()
    assert await asyncio.to_thread(finished.wait, 10)
    await asyncio.sleep(0.01)  # the late result reaches the loop and is dropped there
    assert (await stuck.call('{"n": 1}', ctx())).content == "fresh 1"


async def test_many_slow_sync_calls_wait_at_once() -> None:
    """Twenty calls that each wait for all twenty to have started: they only finish if
    twenty worker threads run at once (asyncio's default executor has min(32, cpus + 4))."""
    barrier = threading.Barrier(20, timeout=10)

    @tool
    def meet(i: int) -> int:
        barrier.wait()
        return i

    results = await asyncio.gather(*(meet.call({"i": i}, ctx()) for i in range(20)))
    assert [r.value for r in results] == list(range(20))


async def test_context_variables_reach_the_worker_thread() -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    request_id.set("req-7")

    @tool
    def read_var() -> str:
        return request_id.get("unset")

    assert (await read_var.call("{}", ctx())).content == "req-7"


async def test_an_exception_in_the_worker_is_the_calls_failure() -> None:
    @tool
    def broken() -> str:
        raise KeyError("nope")

    result = await broken.call("{}", ctx())
    assert result.failure is not None
    assert "KeyError" in result.failure.message


async def test_stop_iteration_from_a_sync_tool_is_a_failure_not_a_hang() -> None:
    @tool(timeout=5)
    def exhausted() -> str:
        return next(iter([]))

    result = await exhausted.call("{}", ctx())
    assert result.failure is not None and result.failure.error_type == "tool_error"
    assert "StopIteration" in result.failure.message


async def test_a_cancelled_call_leaves_the_worker_usable() -> None:
    release = threading.Event()

    @tool
    def hold(n: int) -> int:
        if n == 0:
            release.wait(10)
        return n

    task = asyncio.ensure_future(hold.call('{"n": 0}', ctx()))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    assert (await hold.call('{"n": 3}', ctx())).value == 3


def test_worker_threads_outlive_each_asyncio_run() -> None:
    @tool
    def plain(i: int) -> int:
        return i

    asyncio.run(plain.call({"i": 1}, ctx()))
    before = worker_threads()
    for i in range(5):
        assert asyncio.run(plain.call({"i": i}, ctx())).value == i
    assert worker_threads() == before  # no new threads per event loop


async def test_a_non_blocking_tool_runs_on_the_event_loop_thread() -> None:
    threads: list[int] = []

    @tool(blocking=False)
    def where(i: int) -> int:
        threads.append(threading.get_ident())
        return i * 2

    assert where.meta.blocking is False
    assert (await where.call({"i": 4}, ctx())).value == 8
    assert threads == [threading.get_ident()]


async def test_a_non_blocking_tool_keeps_failures_and_context() -> None:
    @tool(blocking=False)
    def check(n: int, context: ToolContext) -> str:
        if n < 0:
            raise ValueError("negative")
        return context.idempotency_key

    assert (await check.call({"n": 1}, ctx("k#1"))).content == "r1/k#1"
    failed = await check.call({"n": -1}, ctx())
    assert failed.failure is not None and "negative" in failed.failure.message
    invalid = await check.call({"n": "x"}, ctx())
    assert invalid.failure is not None and invalid.failure.error_type == "invalid_arguments"


def test_blocking_is_the_default_for_def_tools() -> None:
    @tool
    def plain() -> str:
        return "x"

    assert plain.meta.blocking is True


async def test_an_agent_with_a_non_blocking_tool_journals_each_call() -> None:
    seen: list[int] = []

    @tool(blocking=False)
    def add(a: int, b: int) -> int:
        seen.append(threading.get_ident())
        return a + b

    store = MemoryStore()
    agent = Agent("adder", model=ScriptedModel([call("add", {"a": 2, "b": 3}), "five"]),
                  tools=[add])
    result = await agent.run("add", store=store)
    assert result.output == "five"
    assert seen == [threading.get_ident()]
    results = [e for e in await store.read_journal(result.run_id)
               if e.kind == "tool" and e.phase == "result"]
    assert [e.data["value"] for e in results] == [5]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sync_tools_work_in_a_forked_child() -> None:
    script = textwrap.dedent("""
        import asyncio, os, sys
        from keel import ToolContext, tool

        @tool
        def double(i: int) -> int:
            return i * 2

        ctx = ToolContext(run_id="r", step_key="k", agent="a", idempotency_key="r/k")
        assert asyncio.run(double.call({"i": 1}, ctx)).value == 2  # the parent's threads
        pid = os.fork()
        if pid == 0:
            ok = asyncio.run(asyncio.wait_for(double.call({"i": 21}, ctx), 10)).value == 42
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONWARNINGS": "error"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "child 0"
