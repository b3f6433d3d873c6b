"""Gates: the bounds a candidate's runs must keep, compared with the current version's runs
over the same window.

Each arm's runs are the runs a rollout served (tagged ``metadata["rollout"]`` with its name
and the version) whose rollout-clock time falls in the window. Per arm:

* **success rate**: completed / finished (completed, failed, cancelled);
* **escalation rate**: runs handed to a person (their record carries an ``Escalate``) / runs;
* **guard trips**: runs stopped by a guardrail (``GuardrailTripped``) / runs;
* **cost per run**: the sum of ``usage.cost_usd`` / runs;
* **p95 latency**: nearest-rank 95th percentile of ``updated_at - created_at`` of the
  finished runs;
* **negative feedback**: runs whose newest feedback is negative (thumbs down or a score
  below 0.5) / runs;
* **online eval**: the mean of ``online_eval(run)`` over a sticky sample of the completed
  runs (a score from 0 to 1; None leaves a run out).

A gate judges only when both arms have at least ``min_runs`` runs in the window (too few
runs say nothing); a bound set to None switches its gate off.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.rollout._errors import RolloutError
from keel.rollout._hashing import in_share
from keel.store import RunRecord, RunStore

#: ``online_eval(run_record) -> score in [0, 1] | None`` (sync or async).
OnlineEval = Callable[[RunRecord], "float | Awaitable[float | None] | None"]
FINISHED = ("completed", "failed", "cancelled")


def _bound(name: str, value: object, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not low <= value <= high:
        raise RolloutError(f"Gates({name}=) is a number from {low:g} to {high:g} (or None to "
                           f"switch that gate off), not {value!r:.60}")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Gates:
    """The bounds a candidate must keep against the current version (None: gate off).

    ``*_drop`` / ``*_rise`` are absolute differences of rates (0.05 = five points);
    ``*_ratio`` are candidate / current (1.5 = half as much again). ``min_runs``: runs each
    arm needs in the window before any gate judges (and before the rollout advances)."""

    success_rate_drop: float | None = 0.05
    escalation_rate_rise: float | None = 0.05
    guard_trips_rise: float | None = 0.02
    cost_per_run_ratio: float | None = 1.5
    p95_latency_ratio: float | None = 1.5
    negative_feedback_rise: float | None = 0.05
    online_eval: OnlineEval | None = None
    online_eval_drop: float = 0.1
    online_eval_sample: float = 0.1
    min_runs: int = 50

    def __post_init__(self) -> None:
        for name in ("success_rate_drop", "escalation_rate_rise", "guard_trips_rise",
                     "negative_feedback_rise"):
            _bound(name, getattr(self, name), 0.0, 1.0)
        for name in ("cost_per_run_ratio", "p95_latency_ratio"):
            _bound(name, getattr(self, name), 1.0, 1000.0)
        _bound("online_eval_drop", self.online_eval_drop, 0.0, 1.0)
        if _bound("online_eval_sample", self.online_eval_sample, 0.0, 1.0) == 0.0:
            raise RolloutError("Gates(online_eval_sample=) must be above 0 (the share of "
                               "completed runs the online eval scores)")
        if self.online_eval is not None and not callable(self.online_eval):
            raise RolloutError("Gates(online_eval=) is a function (run_record) -> score "
                               "from 0 to 1 or None")
        n = self.min_runs
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1_000_000:
            raise RolloutError(f"Gates(min_runs=) is a whole number from 1 to 1,000,000, not "
                               f"{n!r:.40}")


@dataclass(slots=True, kw_only=True)
class ArmStats:
    """What one arm's runs in the window came to."""

    version: str
    runs: int = 0
    finished: int = 0
    completed: int = 0
    escalated: int = 0
    guard_trips: int = 0
    cost: float = 0.0
    latencies: list[float] = field(default_factory=list)
    negative: int = 0
    eval_scores: list[float] = field(default_factory=list)

    def rate(self, part: int) -> float | None:
        return part / self.runs if self.runs else None

    @property
    def success_rate(self) -> float | None:
        return self.completed / self.finished if self.finished else None

    @property
    def cost_per_run(self) -> float | None:
        return self.cost / self.runs if self.runs else None

    @property
    def p95_latency(self) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]

    @property
    def online_eval(self) -> float | None:
        return sum(self.eval_scores) / len(self.eval_scores) if self.eval_scores else None

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "runs": self.runs, "finished": self.finished,
                "success_rate": self.success_rate,
                "escalation_rate": self.rate(self.escalated),
                "guard_trip_rate": self.rate(self.guard_trips),
                "cost_per_run": self.cost_per_run, "p95_latency_s": self.p95_latency,
                "negative_feedback_rate": self.rate(self.negative),
                "online_eval": self.online_eval}


@dataclass(frozen=True, slots=True, kw_only=True)
class Breach:
    """A gate the candidate broke: the metric, both arms' values and the bound."""

    metric: str
    candidate: float
    current: float
    bound: float
    rule: str

    def __str__(self) -> str:
        return (f"{self.metric}: candidate {self.candidate:.4g} vs current "
                f"{self.current:.4g} ({self.rule} {self.bound:g})")


def _error_type(run: RunRecord) -> str | None:
    return None if run.error is None else str(run.error.get("type"))


def add_run(arm: ArmStats, run: RunRecord) -> None:
    arm.runs += 1
    kind = _error_type(run)
    if run.status in FINISHED:
        arm.finished += 1
        arm.completed += run.status == "completed"
        arm.latencies.append(max(0.0, run.updated_at - run.created_at))
    arm.escalated += kind == "Escalate"
    arm.guard_trips += kind == "GuardrailTripped"
    cost = run.usage.get("cost_usd") if isinstance(run.usage, dict) else None
    if isinstance(cost, int | float) and not isinstance(cost, bool) and math.isfinite(cost):
        arm.cost += float(cost)


async def add_feedback(store: RunStore, arms: Sequence[tuple[ArmStats, list[RunRecord]]]
                       ) -> None:
    """Count the runs whose newest feedback is negative, per arm."""
    for arm, runs in arms:
        newest: dict[str, bool] = {}
        ids = [r.run_id for r in runs]
        for i in range(0, len(ids), 1000):
            for f in await store.list_feedback(run_ids=ids[i:i + 1000]):
                newest[f.run_id] = f.negative  # oldest first: the newest wins
        arm.negative = sum(newest.values())


async def add_online_eval(gates: Gates, arm: ArmStats, runs: Sequence[RunRecord]) -> None:
    fn = gates.online_eval
    if fn is None:
        return
    for run in runs:
        if run.status != "completed" or \
                not in_share("online-eval", run.run_id, gates.online_eval_sample * 100):
            continue
        score = fn(run)
        if inspect.isawaitable(score):
            score = await score
        if score is None:
            continue
        if isinstance(score, bool) or not isinstance(score, int | float) \
                or not math.isfinite(score) or not 0 <= score <= 1:
            raise RolloutError(f"the online eval returned {score!r:.60} for run {run.run_id}; "
                               "it must return a score from 0 to 1, or None")
        arm.eval_scores.append(float(score))


def _drop(metric: str, cand: float | None, cur: float | None,
          bound: float | None) -> Breach | None:
    if bound is None or cand is None or cur is None or cur - cand <= bound + 1e-12:
        return None
    return Breach(metric=metric, candidate=cand, current=cur, bound=bound,
                  rule="may drop at most")


def _rise(metric: str, cand: float | None, cur: float | None,
          bound: float | None) -> Breach | None:
    if bound is None or cand is None or cur is None or cand - cur <= bound + 1e-12:
        return None
    return Breach(metric=metric, candidate=cand, current=cur, bound=bound,
                  rule="may rise at most")


def _ratio(metric: str, cand: float | None, cur: float | None,
           bound: float | None) -> Breach | None:
    if bound is None or cand is None or cur is None or cur <= 0 or cand / cur <= bound:
        return None
    return Breach(metric=metric, candidate=cand, current=cur, bound=bound,
                  rule="may be at most x")


def judge(gates: Gates, cand: ArmStats, cur: ArmStats) -> list[Breach]:
    """The gates the candidate broke (none when either arm has fewer than ``min_runs``)."""
    if cand.runs < gates.min_runs or cur.runs < gates.min_runs:
        return []
    checks = (
        _drop("success_rate", cand.success_rate, cur.success_rate, gates.success_rate_drop),
        _rise("escalation_rate", cand.rate(cand.escalated), cur.rate(cur.escalated),
              gates.escalation_rate_rise),
        _rise("guard_trip_rate", cand.rate(cand.guard_trips), cur.rate(cur.guard_trips),
              gates.guard_trips_rise),
        _ratio("cost_per_run", cand.cost_per_run, cur.cost_per_run, gates.cost_per_run_ratio),
        _ratio("p95_latency_s", cand.p95_latency, cur.p95_latency, gates.p95_latency_ratio),
        _rise("negative_feedback_rate", cand.rate(cand.negative), cur.rate(cur.negative),
              gates.negative_feedback_rise),
        _drop("online_eval", cand.online_eval, cur.online_eval,
              gates.online_eval_drop if gates.online_eval is not None else None),
    )
    return [b for b in checks if b is not None]
