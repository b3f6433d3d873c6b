"""FlowContext: journaled now()/uuid()/random() that resumed and replayed runs read back, and
ctx.step running a plain function off the event loop."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from keel import Escalate, FlowContext, MemoryStore, flow, open_store
from keel.runtime import replay_run, resolve_escalation
from keel.store import TaskFilter
from tests.runtime._clock_child import clock

ROOT = Path(__file__).resolve().parents[2]


class Crash(Exception):
    """A stand-in for the process dying after the values were drawn."""


def _drawing_flow(crash: list[bool], durability: str | None = None) -> Any:
    @flow("draws", durability=durability)
    async def draws(ctx: FlowContext, input: str) -> dict[str, Any]:
        out: dict[str, Any] = {"now": await ctx.now(), "uuid": await ctx.uuid(),
                               "random": await ctx.random(), "now2": await ctx.now()}
        out["sub"] = await ctx.scope("sub").now()
        if crash:
            crash.pop()
            raise Crash("the process died")
        out["after"] = await ctx.random()
        return out

    return draws


async def test_draws_are_journaled_under_the_flows_path_one_key_per_call() -> None:
    store = MemoryStore()
    before = time.time()
    result = await _drawing_flow([]).run("go", store=store, run_id="d1")
    out = result.output
    assert before <= out["now"] <= out["now2"] <= time.time()
    assert uuid.UUID(out["uuid"]).version == 4
    assert 0.0 <= out["random"] < 1.0 and 0.0 <= out["after"] < 1.0
    recorded = {e.key: (e.kind, e.name, e.data) for e in await store.read_journal("d1")}
    assert recorded == {
        "draws/now#0": ("clock", "now", out["now"]),
        "draws/uuid#0": ("uuid", "uuid", out["uuid"]),
        "draws/random#0": ("random", "random", out["random"]),
        "draws/now#1": ("clock", "now", out["now2"]),
        "draws/sub/now#0": ("clock", "now", out["sub"]),
        "draws/random#1": ("random", "random", out["after"]),
    }


@pytest.mark.parametrize("durability", ["always", "balanced"])
async def test_a_run_resumed_after_a_crash_sees_the_recorded_values(
        tmp_path: Path, durability: str) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    draws = _drawing_flow([True], durability)
    with pytest.raises(Crash):
        await draws.run("go", store=url, run_id="c1")
    async with open_store(url) as store:
        first = {e.key: e.data for e in await store.read_journal("c1")}
    assert set(first) == {"draws/now#0", "draws/uuid#0", "draws/random#0", "draws/now#1",
                          "draws/sub/now#0"}
    result = await draws.resume("c1", store=url)
    out = result.output
    assert (out["now"], out["uuid"], out["random"], out["now2"], out["sub"]) == (
        first["draws/now#0"], first["draws/uuid#0"], first["draws/random#0"],
        first["draws/now#1"], first["draws/sub/now#0"])
    async with open_store(url) as store:
        report = await replay_run(draws, "c1", store=store)
    assert report.identical, report


async def test_a_run_resumed_after_sigkill_sees_the_recorded_values(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.runtime._clock_child", url, "k1", cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(child.communicate(), timeout=120)
    assert child.returncode == -9, stderr.decode()
    drawn = json.loads(stdout.decode().strip().splitlines()[-1])
    async with open_store(url) as store:
        assert (await store.get_run("k1")).status == "running"  # died mid-run
    result = await clock.resume("k1", store=url)
    assert {k: result.output[k] for k in drawn} == drawn
    assert result.output["then"] >= drawn["now"]
    async with open_store(url) as store:
        assert (await store.get_run("k1")).status == "completed"
        report = await replay_run(clock, "k1", store=store)
    assert report.identical, report


async def test_two_views_of_one_scope_do_not_reuse_a_key() -> None:
    @flow("views")
    async def views(ctx: FlowContext, input: str) -> list[float]:
        return [await ctx.scope("a").now(), await ctx.scope("a").now()]

    store = MemoryStore()
    result = await views.run("go", store=store)
    keys = [e.key for e in await store.read_journal(result.run_id)]
    assert keys == ["views/a/now#0", "views/a/now#1"]


async def test_a_sync_step_runs_in_a_thread_and_the_loop_keeps_running() -> None:
    started = threading.Event()
    release = threading.Event()
    progressed: list[str] = []

    def blocking() -> bool:  # a plain function that blocks until another task lets it go
        started.set()
        return release.wait(timeout=5)  # False if the loop was stuck behind us

    async def other() -> str:
        await asyncio.to_thread(started.wait, 5)
        progressed.append("other ran while the step blocked")
        release.set()
        return "ok"

    @flow("threads")
    async def threads(ctx: FlowContext, input: str) -> list[Any]:
        return await ctx.gather(ctx.step("slow", blocking), other())

    result = await threads.run("go", store=MemoryStore())
    assert result.output == [True, "ok"]
    assert progressed == ["other ran while the step blocked"]


async def test_where_each_kind_of_step_function_runs() -> None:
    loop_thread = threading.get_ident()
    ran: dict[str, bool] = {}

    def sync_fn() -> str:
        ran["sync"] = threading.get_ident() == loop_thread
        return "s"

    def quick() -> str:
        ran["quick"] = threading.get_ident() == loop_thread
        return "q"

    async def async_fn() -> str:
        ran["async"] = threading.get_ident() == loop_thread
        return "a"

    @flow("where")
    async def where(ctx: FlowContext, input: str) -> list[str]:
        return [await ctx.step("sync", sync_fn), await ctx.step("quick", quick, blocking=False),
                await ctx.step("async", async_fn),
                await ctx.step("lambda_coro", lambda: async_fn())]

    result = await where.run("go", store=MemoryStore())
    assert result.output == ["s", "q", "a", "a"]
    assert ran == {"sync": False, "quick": True, "async": True}


async def test_a_run_suspended_for_a_person_resumes_with_the_recorded_values(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    drawn: list[list[Any]] = []

    @flow("wait")
    async def wait(ctx: FlowContext, input: str) -> list[Any]:
        values = [await ctx.now(), await ctx.uuid(), await ctx.random()]
        drawn.append(values)
        note = await ctx.escalate("a person checks the order first")
        return [*values, note]

    with pytest.raises(Escalate):
        await wait.run("go", store=url, run_id="w1")
    async with open_store(url) as store:
        assert (await store.get_run("w1")).status == "suspended"
        [task] = await store.list_tasks(TaskFilter(run_id="w1"))
        await resolve_escalation(task.task_id, store=store, by="ana", action="resume",
                                 note="checked")
    result = await wait.resume("w1", store=url)
    assert result.output == [*drawn[0], "checked"]
    assert drawn[1] == drawn[0]  # the body ran again and read the recorded values back
    async with open_store(url) as store:
        report = await replay_run(wait, "w1", store=store)
    assert report.identical, report
