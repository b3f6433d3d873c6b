"""One typed set of run options for run / resume / run_sync / resume_sync / stream, checked
by type checkers and at run time; an empty prompt is refused before anything is written."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from keel import Agent, DeadlineExceeded, MemoryStore, UserError, flow
from keel.core import RunEvent, RunFinished
from keel.runtime import FlowContext, ResumeOptions, RunOptions
from keel.testing import ScriptedModel


def agent() -> Agent[str]:
    return Agent("helper", model=ScriptedModel(["done"]))


async def stored_runs(store: MemoryStore) -> int:
    return len(await store.list_runs())


def test_the_options_are_typed_dicts_naming_what_each_entry_point_takes() -> None:
    assert set(RunOptions.__optional_keys__) == {
        "store", "run_id", "deps", "target", "on_event", "deadline", "tenant", "user",
        "conversation", "metadata"}
    assert set(ResumeOptions.__optional_keys__) == {"store", "deps", "on_event"}


def test_a_misspelt_option_is_a_clear_user_error_naming_the_option() -> None:
    store = MemoryStore()
    with pytest.raises(UserError, match=r"run_sync\(\) got an unknown option stor= "
                                        r"\(did you mean store=\?\)"):
        agent().run_sync("hi", stor=store)  # type: ignore[call-arg]
    with pytest.raises(UserError, match="unknown option run_idd="):
        agent().run_sync("hi", store=store, run_idd="r1")  # type: ignore[call-arg]
    assert asyncio.run(store.list_runs()) == []


async def test_async_entry_points_check_their_options_before_writing() -> None:
    store = MemoryStore()
    with pytest.raises(UserError, match=r"run\(\) got an unknown option deadlin="):
        await agent().run("hi", store=store, deadlin=5)  # type: ignore[call-arg]
    # run_id, target and deadline belong to a new run, not to a resume
    with pytest.raises(UserError, match=r"resume\(\) got an unknown option deadline="):
        await agent().resume("run-1", store=store, deadline=5)  # type: ignore[call-arg]
    with pytest.raises(UserError, match=r"resume_sync\(\) got an unknown option target="):
        agent().resume_sync("run-1", store=store, target="x")  # type: ignore[call-arg]
    with pytest.raises(UserError, match=r"stream\(\) got an unknown option on_events="):
        async for _ in agent().stream("hi", store=store, on_events=print):  # type: ignore[call-arg]
            pass
    assert await stored_runs(store) == 0


async def test_stream_takes_a_deadline_like_run_and_stores_it_with_the_run() -> None:
    store = MemoryStore()
    before = time.time()
    events = [e async for e in agent().stream("hi", store=store, run_id="s1", deadline=120)]
    assert isinstance(events[-1], RunFinished)
    record = await store.get_run("s1")
    assert record.deadline_at is not None
    assert before + 119 <= record.deadline_at <= time.time() + 121


async def test_stream_refuses_a_deadline_that_has_passed() -> None:
    store = MemoryStore()
    past = datetime.now(UTC) - timedelta(seconds=5)
    with pytest.raises(DeadlineExceeded):
        async for _ in agent().stream("hi", store=store, run_id="late", deadline=past):
            pass
    record = await store.get_run("late")
    assert record.status == "failed"


async def test_stream_hands_each_event_to_on_event_too() -> None:
    seen: list[RunEvent] = []
    yielded = [e async for e in agent().stream("hi", store=MemoryStore(), on_event=seen.append)]
    assert seen == yielded


async def test_stream_resume_refuses_options_of_a_new_run() -> None:
    with pytest.raises(UserError, match="deadline= is for a new run"):
        async for _ in agent().stream(resume="r1", store=MemoryStore(), deadline=5):
            pass


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t "])
async def test_an_empty_prompt_is_refused_before_anything_is_written(prompt: str) -> None:
    store = MemoryStore()
    model = ScriptedModel(["never"])
    a = Agent("helper", model=model)
    with pytest.raises(UserError, match="agent input is empty"):
        await a.run(prompt, store=store)
    with pytest.raises(UserError, match="agent input is empty"):
        async for _ in a.stream(prompt, store=store):
            pass
    assert await stored_runs(store) == 0
    assert model.requests == []  # the model was never called


def test_run_sync_refuses_an_empty_prompt() -> None:
    store = MemoryStore()
    with pytest.raises(UserError, match="input is empty"):
        agent().run_sync("", store=store)
    assert asyncio.run(store.list_runs()) == []


async def test_a_flow_body_decides_what_a_blank_input_means() -> None:
    @flow("echo")
    async def echo(ctx: FlowContext, text: str) -> str:
        return f"[{text}]"

    assert (await echo.run(" ", store=MemoryStore())).output == "[ ]"


async def test_metadata_is_stored_with_the_new_run_and_keels_own_keys_win() -> None:
    store = MemoryStore()
    agent = Agent("meta", model=ScriptedModel(["done"]))
    result = await agent.run("go", store=store, metadata={"event_id": "e-1", "model": "x"})
    record = await store.get_run(result.run_id)
    assert record.metadata["event_id"] == "e-1"
    assert record.metadata["model"] != "x"  # keel's own key is not overwritten


@pytest.mark.parametrize("bad", [
    "not a mapping", {1: "int key"}, {"x": object()}, {"x": float("nan")},
    {"big": "x" * 20_000}])
async def test_bad_metadata_is_a_user_error_and_writes_no_run(bad: object) -> None:
    store = MemoryStore()
    agent = Agent("meta", model=ScriptedModel(["done"]))
    with pytest.raises(UserError, match="metadata="):
        await agent.run("go", store=store, metadata=bad)  # type: ignore[arg-type]
    assert await stored_runs(store) == 0
