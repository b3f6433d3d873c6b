"""Each gate, on run records written straight into the store (status, error, usage and
timing chosen), so that every metric is checked against known values."""

from __future__ import annotations

from typing import Any

import pytest

from keel.rollout import Gates, Rollout, RolloutError, Versions
from keel.store import MemoryStore, RunRecord
from tests.rollout._agents import agent

NOW = 1_000_000.0


def _rollout(store: MemoryStore, gates: Gates) -> Rollout:
    return Rollout("support", Versions(v1=agent("one"), v2=agent("two")), store=store,
                   current="v1", candidate="v2", steps=(50, 100), window_s=600,
                   step_interval_s=60, ttl_s=0, clock=lambda: NOW, gates=gates)


async def _runs(store: MemoryStore, version: str, n: int, *, status: str = "completed",
                error: str | None = None, cost: float = 0.01, took: float = 1.0,
                at: float = NOW - 10, start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + n):
        run_id = f"{version}-{status}-{i}"
        await store.create_run(RunRecord(
            run_id=run_id, agent="support", status=status,  # type: ignore[arg-type]
            input="hi", created_at=1000.0 + i, updated_at=1000.0 + i + took,
            error=None if error is None else {"type": error, "message": "x"},
            usage={"cost_usd": cost},
            metadata={"rollout": {"name": "support", "version": version, "at": at,
                                  "arm": "candidate" if version == "v2" else "current"}}))
        ids.append(run_id)
    return ids


OFF: dict[str, Any] = {"success_rate_drop": None, "escalation_rate_rise": None,
                       "guard_trips_rise": None, "cost_per_run_ratio": None,
                       "p95_latency_ratio": None, "negative_feedback_rise": None}


@pytest.mark.parametrize(("gate", "bound", "candidate", "metric", "text"), [
    ("success_rate_drop", 0.05, {"status": "failed", "error": "ModelError"}, "success_rate",
     "success_rate: candidate 0.6667 vs current 1 (may drop at most 0.05)"),
    ("guard_trips_rise", 0.02, {"status": "failed", "error": "GuardrailTripped"},
     "guard_trip_rate", "guard_trip_rate: candidate 0.3333 vs current 0"),
    ("escalation_rate_rise", 0.05, {"status": "suspended", "error": "Escalate"},
     "escalation_rate", "escalation_rate: candidate 0.3333 vs current 0"),
    ("cost_per_run_ratio", 1.5, {"cost": 0.1}, "cost_per_run",
     "cost_per_run: candidate 0.04 vs current 0.01 (may be at most x 1.5)"),
    ("p95_latency_ratio", 1.5, {"took": 9.0}, "p95_latency_s",
     "p95_latency_s: candidate 9 vs current 1 (may be at most x 1.5)"),
])
async def test_each_gate_breaks_on_its_metric(gate: str, bound: float,
                                              candidate: dict[str, Any], metric: str,
                                              text: str) -> None:
    store = MemoryStore()
    r = _rollout(store, Gates(**{**OFF, gate: bound, "min_runs": 10}))
    await r.start()
    await _runs(store, "v1", 30)
    await _runs(store, "v2", 20)
    await _runs(store, "v2", 10, start=100, **candidate)
    tick = await r.tick()
    assert [b.metric for b in tick.breaches] == [metric]
    assert text in (tick.state.reason or "")
    assert tick.action == "rolled_back"


async def test_within_bounds_nothing_breaks_and_old_or_other_runs_do_not_count() -> None:
    store = MemoryStore()
    r = _rollout(store, Gates(min_runs=10))
    await r.start()
    await _runs(store, "v1", 30)
    await _runs(store, "v2", 30, took=1.2, cost=0.012)  # within 1.5x
    # outside the window, in the future, or of another rollout: never counted
    await _runs(store, "v2", 30, start=200, status="failed", error="ModelError",
                at=NOW - 700)
    await _runs(store, "v2", 30, start=300, status="failed", error="ModelError", at=NOW + 5)
    await store.create_run(RunRecord(run_id="other", agent="support", status="failed",
                                     input="x", created_at=1.0, updated_at=2.0,
                                     metadata={"rollout": {"name": "billing",
                                                           "version": "v2", "at": NOW}}))
    tick = await r.tick()
    assert tick.breaches == () and tick.action == "waiting"
    assert tick.candidate is not None and tick.candidate.runs == 30
    figures = tick.candidate.to_dict()
    assert figures["success_rate"] == 1.0 and figures["p95_latency_s"] == pytest.approx(1.2)


async def test_too_few_runs_never_judge() -> None:
    store = MemoryStore()
    r = _rollout(store, Gates(min_runs=50))
    await r.start()
    await _runs(store, "v1", 100)
    await _runs(store, "v2", 49, status="failed", error="ModelError")
    tick = await r.tick()
    assert tick.breaches == () and tick.state.status == "active"


async def test_an_online_eval_that_returns_nonsense_is_named() -> None:
    store = MemoryStore()
    r = _rollout(store, Gates(**OFF, min_runs=5, online_eval=lambda run: 7.0,
                              online_eval_sample=1.0))
    await r.start()
    await _runs(store, "v1", 10)
    await _runs(store, "v2", 10)
    with pytest.raises(RolloutError, match="score from 0 to 1, or None"):
        await r.tick()
    assert (await r.state(fresh=True)).status == "active"  # nothing changed

    async def judge(run: RunRecord) -> float | None:
        return None if run.run_id.endswith("1") else 0.8

    r2 = _rollout(store, Gates(**OFF, min_runs=5, online_eval=judge, online_eval_sample=1.0))
    tick = await r2.tick()
    assert tick.candidate is not None and tick.candidate.online_eval == pytest.approx(0.8)
    assert tick.breaches == ()


async def test_hostile_keys_in_choose_and_run() -> None:
    from keel import UserError

    store = MemoryStore()
    r = _rollout(store, Gates())
    await r.start()
    assert await r.choose(user="u" * 100_000) in ("v1", "v2")  # any text hashes
    assert await r.choose(user="\x00\n\u202e") in ("v1", "v2")
    with pytest.raises(UserError, match="conversation"):
        await r.choose(conversation="bad\nid")
    with pytest.raises(UserError):
        await r.run("hi", user="u" * 100_000)
    with pytest.raises(UserError, match="input"):
        await r.run("   ", user="u1")
    with pytest.raises(UserError, match="metadata"):
        await r.run("hi", user="u1", metadata={"x": "y" * 20_000})
    assert await store.list_runs() == []  # nothing was stored


async def test_a_paused_rollout_still_rolls_back_on_a_breach() -> None:
    store = MemoryStore()
    r = _rollout(store, Gates(**{**OFF, "success_rate_drop": 0.05, "min_runs": 10}))
    await r.start()
    await r.change("pause", by="ana")
    await _runs(store, "v1", 20)
    await _runs(store, "v2", 20, status="failed", error="ModelError")
    tick = await r.tick()
    assert tick.action == "rolled_back" and tick.state.status == "rolled_back"


async def test_a_single_step_rollout_completes_on_its_first_healthy_tick() -> None:
    store = MemoryStore()
    r = Rollout("support", Versions(v1=agent("one"), v2=agent("two")), store=store,
                current="v1", candidate="v2", steps=(100,), step_interval_s=0, ttl_s=0,
                clock=lambda: NOW, gates=Gates(min_runs=1))
    await r.start()
    await _runs(store, "v1", 3)
    await _runs(store, "v2", 3)
    tick = await r.tick()
    assert (tick.action, tick.state.status, tick.state.percent) == ("advanced", "completed", 100)
    with pytest.raises(RolloutError, match="no step past 100"):
        await r.change("advance")
