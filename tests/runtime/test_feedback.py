"""``keel.record_feedback`` and ``feedback_summary``: a person's verdict on a run is kept in the
store with the run's tenant, retried calls add nothing, another tenant's run is not found, bad
values are refused naming the fix before the store is touched, and the summary counts each
person's newest verdict once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import keel
from keel import Agent, MemoryStore, RunNotFound, RunStore, UserError
from keel.runtime import FeedbackSummary, feedback_summary
from keel.store import Feedback
from keel.testing import ScriptedModel
from tests._stores import BACKENDS, fresh_store


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    async with fresh_store(request.param, tmp_path, "keel_feedback") as opened:
        yield opened


async def _run(store: RunStore, text: str = "hello", *, tenant: str | None = None,
               answer: str = "hi") -> str:
    agent = Agent("desk", model=ScriptedModel([answer]))
    result = await agent.run(text, store=store, tenant=tenant)
    return result.run_id


async def test_feedback_is_kept_with_the_runs_tenant(store: RunStore) -> None:
    run_id = await _run(store, tenant="acme")
    kept = await keel.record_feedback(run_id, thumbs="down", score=0.2, comment="wrong order",
                                      by="user:7", store=store, metadata={"page": "chat"})
    assert (kept.run_id, kept.thumbs, kept.score, kept.comment, kept.by, kept.tenant) == \
        (run_id, "down", 0.2, "wrong order", "user:7", "acme")
    assert kept.negative
    listed = await store.list_feedback(run_ids=[run_id])
    assert [(f.feedback_id, f.tenant, f.metadata) for f in listed] == \
        [(kept.feedback_id, "acme", {"page": "chat"})]
    assert await store.list_feedback(tenant="other") == []


async def test_a_retried_call_with_the_same_id_adds_nothing(store: RunStore) -> None:
    run_id = await _run(store)
    first = await keel.record_feedback(run_id, thumbs="up", store=store, feedback_id="fb-1")
    again = await keel.record_feedback(run_id, thumbs="down", store=store, feedback_id="fb-1")
    assert again.thumbs == "up" == first.thumbs
    assert len(await store.list_feedback(run_ids=[run_id])) == 1


async def test_unknown_and_foreign_runs_are_not_found(store: RunStore) -> None:
    run_id = await _run(store, tenant="acme")
    with pytest.raises(RunNotFound):
        await keel.record_feedback("no-such-run", thumbs="up", store=store)
    with pytest.raises(RunNotFound):
        await keel.record_feedback(run_id, thumbs="up", store=store, tenant="globex")
    assert await store.list_feedback() == []
    await keel.record_feedback(run_id, thumbs="up", store=store, tenant="acme")
    assert [f.tenant for f in await store.list_feedback()] == ["acme"]


@pytest.mark.parametrize(("kwargs", "fix"), [
    ({}, "thumbs"),
    ({"thumbs": "meh"}, "'up' or 'down'"),
    ({"score": 2}, "0 to 1"),
    ({"score": float("nan")}, "0 to 1"),
    ({"score": True}, "0 to 1"),
    ({"comment": ""}, "needs thumbs"),
    ({"comment": "x" * 10_000}, "at most 4000"),
    ({"comment": 5}, "text"),
    ({"thumbs": "up", "by": ""}, "by= is empty"),
    ({"thumbs": "up", "by": "a" * 500}, "at most 200"),
    ({"thumbs": "up", "feedback_id": "x\n"}, "unprintable"),
    ({"thumbs": "up", "metadata": ["a"]}, "JSON object"),
    ({"thumbs": "up", "metadata": {"x": object()}}, "must be JSON"),
    ({"thumbs": "up", "metadata": {"x": "y" * 20_000}}, "at most 16,384 bytes"),
    ({"thumbs": "up", "tenant": ""}, "tenant= is empty"),
])
async def test_bad_values_are_refused_before_the_store_is_touched(
        kwargs: dict[str, object], fix: str) -> None:
    store = MemoryStore()
    run_id = await _run(store)
    with pytest.raises(UserError, match=fix):
        await keel.record_feedback(run_id, store=store, **kwargs)  # type: ignore[arg-type]
    assert await store.list_feedback() == []


async def test_a_run_id_that_is_not_text_is_refused() -> None:
    with pytest.raises(UserError, match="run_id= must be a string"):
        await keel.record_feedback(123, thumbs="up", store=MemoryStore())  # type: ignore[arg-type]


def test_the_sync_twin_writes_to_a_store_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    agent = Agent("desk", model=ScriptedModel(["hi"]))
    run_id = agent.run_sync("hello", store=url).run_id
    kept = keel.record_feedback_sync(run_id, thumbs="up", store=url, by="ana")

    async def read() -> list[keel.store.Feedback]:
        async with keel.open_store(url) as opened:
            return await opened.list_feedback()

    assert [(f.feedback_id, f.thumbs, f.by) for f in asyncio.run(read())] == \
        [(kept.feedback_id, "up", "ana")]


async def test_the_sync_twin_refuses_a_running_loop() -> None:
    with pytest.raises(UserError, match="await record_feedback"):
        keel.record_feedback_sync("r1", thumbs="up", store=MemoryStore())


async def test_summary_counts_each_persons_newest_verdict(store: RunStore) -> None:
    runs = [await _run(store, tenant="acme") for _ in range(3)]
    other = await _run(store, tenant="globex")
    r1, r2, r3 = runs
    await keel.record_feedback(r1, thumbs="down", by="ana", store=store, feedback_id="f1")
    await keel.record_feedback(r1, thumbs="up", by="ana", store=store, feedback_id="f2")
    await keel.record_feedback(r1, thumbs="down", score=0.1, by="bob", store=store,
                               feedback_id="f3")
    await keel.record_feedback(r2, score=0.9, store=store, feedback_id="f4")
    await keel.record_feedback(r3, comment="slow", by="ana", store=store, feedback_id="f5")
    await keel.record_feedback(other, thumbs="down", store=store, feedback_id="f6")

    summary = await feedback_summary(store, tenant="acme")
    assert summary == FeedbackSummary(records=5, verdicts=4, runs=3, up=1, down=1, scored=2,
                                      mean_score=pytest.approx(0.5), negative=1,
                                      negative_rate=0.25)
    only = await feedback_summary(store, run_ids=[r2, other])
    assert (only.verdicts, only.negative, only.mean_score) == (2, 1, 0.9)
    everything = await feedback_summary(store)
    assert (everything.records, everything.verdicts, everything.negative) == (6, 5, 2)
    later = await feedback_summary(store, since=datetime(2999, 1, 1, tzinfo=UTC))
    assert later == FeedbackSummary()
    assert later.negative_rate is None and later.to_dict()["verdicts"] == 0


async def test_summary_refuses_bad_arguments() -> None:
    store = MemoryStore()
    with pytest.raises(UserError, match="not one string"):
        await feedback_summary(store, run_ids="r1")
    with pytest.raises(UserError, match="since="):
        await feedback_summary(store, since="yesterday")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="needs a RunStore"):
        await feedback_summary("memory:")  # type: ignore[arg-type]


def test_the_default_store_is_where_runs_go(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'default.db'}"
    monkeypatch.setenv("KEEL_STORE", url)
    run_id = Agent("desk", model=ScriptedModel(["hi"])).run_sync("hello").run_id
    kept = keel.record_feedback_sync(run_id, score=0.75)

    async def read() -> list[keel.store.Feedback]:
        async with keel.open_store(url) as opened:
            return await opened.list_feedback(run_ids=[run_id])

    assert [(f.feedback_id, f.score) for f in asyncio.run(read())] == [(kept.feedback_id, 0.75)]


async def test_summary_until_leaves_out_later_feedback() -> None:
    store = MemoryStore()
    run_id = await _run(store)
    for n, thumbs in ((1, "down"), (2, "up")):
        await store.put_feedback(Feedback(feedback_id=f"f{n}", run_id=run_id,
                                          created_at=1000.0 * n, thumbs=thumbs, by="a"))
    before = await feedback_summary(store, until=2000.0)
    assert (before.records, before.down, before.up) == (1, 1, 0)
    with pytest.raises(UserError, match="since="):
        await feedback_summary(store, until="now")  # type: ignore[arg-type]
