"""Rollout: validation, sticky choice, conversations, the controller and operator actions."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

import keel
from keel import Escalate
from keel.observe import FleetAlert
from keel.rollout import Gates, Rollout, RolloutError, Versions, read_rollout
from keel.store import MemoryStore, RunFilter, RunRecord
from keel.testing import FunctionModel, call
from tests.rollout._agents import agent


def versions() -> Versions:
    return Versions(v1=agent("one", answer="from v1"), v2=agent("two", answer="from v2"))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def rollout(store: MemoryStore, clock: Clock | None = None, **kw: Any) -> Rollout:
    options: dict[str, Any] = {"step_interval_s": 60, "window_s": 600, "ttl_s": 0,
                               "gates": Gates(min_runs=5, p95_latency_ratio=None)}
    options.update(kw)
    return Rollout("support", kw.pop("versions", None) or versions(), store=store,
                   current="v1", candidate="v2", clock=clock or Clock(), **options)


@pytest.mark.parametrize(("kw", "match"), [
    ({"candidate": "v9"}, "unknown version 'v9'"),
    ({"current": "v2"}, "both 'v2'"),
    ({"steps": (10, 1, 100)}, "must increase"),
    ({"steps": (1, 10, 10, 100)}, "must increase"),
    ({"steps": (1, 10, 50)}, "must end at 100"),
    ({"steps": (0, 10, 100)}, "above 0"),
    ({"steps": (1, 150)}, "percentage from 0 to 100"),
    ({"steps": ()}, "list of increasing"),
    ({"steps": "1,10,100"}, "list of increasing"),
    ({"sticky": "session"}, "'user' or 'tenant'"),
    ({"window_s": 0}, "seconds > 0"),
    ({"step_interval_s": -1}, "seconds >= 0"),
    ({"ttl_s": float("inf")}, "seconds >= 0"),
    ({"min_runs": 0}, "min_runs"),
    ({"alert": object()}, "notifier"),
])
def test_bad_rollouts_are_refused_with_the_fix(kw: dict[str, Any], match: str) -> None:
    options: dict[str, Any] = {"store": MemoryStore(), "current": "v1", "candidate": "v2"}
    options.update(kw)
    with pytest.raises(RolloutError, match=match):
        Rollout("support", versions(), **options)


def test_identical_versions_and_bad_names_are_refused() -> None:
    with pytest.raises(RolloutError, match="same agent"):
        Rollout("support", Versions(v1=agent("same"), v2=agent("same")), store=MemoryStore(),
                current="v1", candidate="v2")
    with pytest.raises(RolloutError, match="rollout name"):
        Rollout("sup port", versions(), store=MemoryStore(), current="v1", candidate="v2")
    with pytest.raises(RolloutError, match="RunStore"):
        Rollout("support", versions(), store="memory:", current="v1",  # type: ignore[arg-type]
                candidate="v2")


@pytest.mark.parametrize(("kw", "match"), [
    ({"success_rate_drop": 1.5}, "from 0 to 1"),
    ({"cost_per_run_ratio": 0.5}, "from 1 to 1000"),
    ({"p95_latency_ratio": float("nan")}, "from 1 to 1000"),
    ({"online_eval": "judge"}, "is a function"),
    ({"online_eval_sample": 0}, "above 0"),
    ({"min_runs": 1.5}, "whole number"),
])
def test_bad_gates(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(RolloutError, match=match):
        Gates(**kw)


async def test_choice_is_sticky_cumulative_and_conversations_keep_their_version() -> None:
    store = MemoryStore()
    r = rollout(store, steps=(10, 50, 100))
    state = await r.start()
    assert (state.status, state.percent, state.version) == ("active", 10, 1)
    users = [f"u{i}" for i in range(1000)]
    at10 = {u for u in users if await r.choose(user=u) == "v2"}
    assert 60 < len(at10) < 140
    assert at10 == {u for u in users if await r.choose(user=u) == "v2"}  # sticky
    result = await r.run("hi", user="u-talk", conversation="c1")
    first = result.output
    [run] = await store.list_runs(RunFilter())
    assert run.metadata["rollout"]["name"] == "support"
    assert run.metadata["rollout"]["arm"] in ("current", "candidate")
    assert run.metadata["version"] == r.versions[run.metadata["rollout"]["version"]].version
    await r.change("advance", by="ana")
    at50 = {u for u in users if await r.choose(user=u) == "v2"}
    assert at10 <= at50 and 400 < len(at50) < 600
    # the conversation stays on its version in this worker and in a fresh one (no cache)
    other = rollout(store)
    for worker in (r, other):
        for _ in range(2):
            again = await worker.run("more", user="u-talk", conversation="c1")
            assert again.output == first
    await r.change("rollback", by="ana", reason="bad answers")
    assert {await other.choose(user=u) for u in users} == {"v1"}
    assert (await other.run("still", user="u-talk", conversation="c1")).output == first
    assert await other.choose(conversation="c-new") == "v1"


async def test_start_is_idempotent_and_refuses_a_second_pair() -> None:
    store = MemoryStore()
    a, b = rollout(store), rollout(store)
    first = await a.start()
    assert await b.start() == first  # every worker may start it
    v3 = Versions(v1=agent("one", answer="from v1"), v2=agent("two", answer="from v2"),
                  v3=agent("three"))
    third = Rollout("support", v3, store=store, current="v2", candidate="v3")
    with pytest.raises(RolloutError, match="finish it or roll it back"):
        await third.start()
    await a.change("rollback")
    assert (await a.start()).status == "rolled_back"  # a restart does not undo a rollback
    restarted = await a.start(restart=True)
    assert (restarted.status, restarted.percent, restarted.version) == ("active", 1, 3)
    await a.change("rollback")
    assert (await third.start()).current == "v2"  # a new pair after a finished one


async def test_the_controller_advances_while_healthy_and_completes() -> None:
    store, clock = MemoryStore(), Clock()
    r = rollout(store, clock, steps=(50, 100))
    await r.start()
    tick = await r.tick()
    assert tick.action == "waiting" and tick.candidate is not None
    assert tick.candidate.runs == 0
    for i in range(40):
        await r.run("hi", user=f"u{i}")
    assert (await r.tick()).action == "waiting"  # healthy, but not for step_interval_s
    clock.now += 61
    tick = await r.tick()
    assert tick.action == "advanced" and tick.state.status == "completed"
    assert tick.state.percent == 100 and "healthy for 61s" in (tick.state.reason or "")
    assert (await r.tick()).action == "none"
    assert {await r.choose(user=f"u{i}") for i in range(50)} == {"v2"}
    assert [s.status for s in await r.history()] == ["active", "completed"]


def escalating_agent() -> keel.Agent[str]:
    @keel.tool(risk="read")
    def hand_over() -> str:
        """Hand the conversation to a person."""
        raise Escalate("needs a person")

    return keel.Agent("support", model=FunctionModel(lambda m, t, s: call("hand_over")),
                      instructions="two", tools=[hand_over])


class Alerts:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def notify(self, alert: Any) -> None:
        self.sent.append(alert)
        raise ConnectionError("the webhook is down")  # the rollback must stand anyway


async def test_a_breach_rolls_back_journals_and_alerts() -> None:
    store, clock, alerts = MemoryStore(), Clock(), Alerts()
    bad = Versions(v1=agent("one"), v2=escalating_agent())
    r = Rollout("support", bad, store=store, current="v1", candidate="v2", steps=(50, 100),
                clock=clock, ttl_s=0, window_s=600, step_interval_s=60, alert=alerts,
                gates=Gates(min_runs=5, p95_latency_ratio=None))
    await r.start()
    for i in range(60):
        with contextlib.suppress(Escalate):
            await r.run("help", user=f"u{i}")
    clock.now += 30
    tick = await r.tick()
    assert tick.action == "rolled_back"
    assert [b.metric for b in tick.breaches] == ["escalation_rate"]
    state = await read_rollout(store, "support")
    assert state is not None and (state.status, state.percent) == ("rolled_back", 0)
    assert "escalation_rate: candidate 1 vs current 0 (may rise at most 0.05)" in (
        state.reason or "")
    [alert] = alerts.sent
    assert isinstance(alert, FleetAlert) and alert.rule == "rollout:support"
    assert alert.evidence["candidate"] == "v2"
    history = await r.history()
    assert [(s.status, s.by) for s in history] == [("active", "keel.rollout"),
                                                    ("rolled_back", "keel.rollout")]
    assert {await r.choose(user=f"u{i}") for i in range(100)} == {"v1"}


async def test_feedback_and_online_eval_gates() -> None:
    from keel.store import Feedback

    store, clock = MemoryStore(), Clock()
    scores = {"v1": 0.9, "v2": 0.4}

    def online_eval(run: RunRecord) -> float | None:
        return scores[run.metadata["rollout"]["version"]]

    r = rollout(store, clock, steps=(50, 100),
                gates=Gates(min_runs=5, p95_latency_ratio=None, online_eval=online_eval,
                            online_eval_sample=1.0, negative_feedback_rise=None))
    await r.start()
    for i in range(40):
        await r.run("hi", user=f"u{i}")
    tick = await r.tick()
    assert [b.metric for b in tick.breaches] == ["online_eval"]
    assert tick.action == "rolled_back"
    # negative feedback on the candidate's runs
    store2 = MemoryStore()
    r2 = rollout(store2, Clock(), steps=(50, 100),
                 gates=Gates(min_runs=5, p95_latency_ratio=None))
    await r2.start()
    for i in range(40):
        await r2.run("hi", user=f"u{i}")
    for n, run in enumerate(await store2.list_runs(RunFilter(limit=100))):
        if run.metadata["rollout"]["arm"] == "candidate":
            await store2.put_feedback(Feedback(feedback_id=f"f{n}", run_id=run.run_id,
                                               created_at=0.0, thumbs="down"))
    tick = await r2.tick()
    assert [b.metric for b in tick.breaches] == ["negative_feedback_rate"]


async def test_operator_changes_are_compare_and_set() -> None:
    store = MemoryStore()
    r = rollout(store)
    state = await r.start()
    await r.change("pause", by="ana", reason="holiday", expect_version=state.version)
    with pytest.raises(RolloutError, match="changed it since"):
        await r.change("advance", by="bob", expect_version=state.version)
    with pytest.raises(RolloutError, match="only an active rollout can be paused"):
        await r.change("pause")
    resumed = await r.change("resume", by="ana")
    for _ in range(3):
        resumed = await r.change("advance")
    assert resumed.status == "completed"
    with pytest.raises(RolloutError, match="no step past 100"):
        await r.change("advance")
    with pytest.raises(RolloutError, match="start a new rollout with current='v2'"):
        await r.change("rollback")
    assert [s.status for s in await r.history()] == [
        "active", "paused", "active", "active", "active", "completed"]


async def test_a_conversation_begun_before_the_rollout_stays_on_its_version() -> None:
    store = MemoryStore()
    vs = versions()
    # turns served before the rollout existed: by v1 directly, and by an older agent
    await vs["v1"].run("hi", store=store, user="early", conversation="before")
    await agent("zero").run("hi", store=store, user="old", conversation="older")
    r = rollout(store, steps=(100,))
    await r.start()
    assert await r.choose(user="early", conversation="before") == "v1"
    assert await r.choose(user="old", conversation="older") == "v1"  # the current version
    assert await r.choose(user="early", conversation="new") == "v2"  # 100%: new ones move


async def test_workers_trust_their_state_for_ttl_s_then_read_it_again() -> None:
    import asyncio

    store = MemoryStore()
    cached = rollout(store, steps=(50, 100), ttl_s=3600)
    short = rollout(store, steps=(50, 100), ttl_s=0.2)
    await cached.start()
    await short.state()
    users = [f"u{i}" for i in range(100)]
    assert {await short.choose(user=u) for u in users} == {"v1", "v2"}
    await rollout(store).change("rollback", by="ana")
    # within its TTL a worker still serves the share it read (runs choose without a read)
    assert {await cached.choose(user=u) for u in users} == {"v1", "v2"}
    await asyncio.sleep(0.25)  # the short TTL has passed: the next choice reads again
    assert {await short.choose(user=u) for u in users} == {"v1"}
    assert (await cached.state(fresh=True)).status == "rolled_back"
    assert {await cached.choose(user=u) for u in users} == {"v1"}
