"""The regression gate: compare a report with a baseline report, metric by metric.

A metric regresses when it got worse by more than its allowed drop: for a metric where
higher is better (a scorer's mean, a pass rate) ``baseline - current > max_drop``; where
lower is better (``error_rate``, cost, latency, steps) ``current - baseline > max_drop``.
Quality metrics are gated by default (``default_max_drop``); cost, latency and step
figures only when ``thresholds`` names them (they move with every prompt change).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.evals._errors import EvalError
from keel.evals._metrics import is_measure, lower_is_better
from keel.evals._results import Report

_EPSILON = 1e-9


def _check_drop(metric: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value < 0:
        raise EvalError(f"the allowed drop of {metric!r} is a number >= 0 (0.02 = two "
                        f"points of a 0-1 metric), not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Gate:
    """How much each metric may get worse than the baseline before the gate fails.
    ``thresholds``: ``{"exact_match": 0.02, "cost_usd": 0.05}``; other quality metrics
    may drop by ``default_max_drop`` (0: any drop fails)."""

    thresholds: Mapping[str, float] = field(default_factory=dict)
    default_max_drop: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.thresholds, Mapping):
            raise EvalError("Gate(thresholds=...) is a mapping {metric: max_drop}")
        checked = {}
        for metric, drop in self.thresholds.items():
            if not isinstance(metric, str) or not metric:
                raise EvalError(f"a gate metric is a name such as 'exact_match', not "
                                f"{metric!r}")
            checked[metric] = _check_drop(metric, drop)
        object.__setattr__(self, "thresholds", checked)
        object.__setattr__(self, "default_max_drop",
                           _check_drop("default_max_drop", self.default_max_drop))


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricCheck:
    """One metric's comparison. ``delta`` is ``current - baseline``; ``allowed`` the drop
    allowed (None: not gated); ``regressed`` / ``improved`` in the metric's direction."""

    metric: str
    baseline: float | None
    current: float | None
    delta: float | None
    allowed: float | None
    lower_is_better: bool
    regressed: bool
    improved: bool
    note: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GateResult:
    """The gate's verdict: ``passed`` when no gated metric regressed."""

    passed: bool
    checks: tuple[MetricCheck, ...]
    baseline: dict[str, Any]

    @property
    def regressions(self) -> tuple[MetricCheck, ...]:
        return tuple(c for c in self.checks if c.regressed)

    def check(self, metric: str) -> MetricCheck | None:
        return next((c for c in self.checks if c.metric == metric), None)


def check_gate(report: Report, baseline: Report, gate: Gate | None = None) -> GateResult:
    """Compare ``report`` with ``baseline`` under ``gate`` (default: no quality metric may
    drop). A baseline of another dataset (its hash differs) is an :class:`EvalError`."""
    gate = gate or Gate()
    if not isinstance(report, Report) or not isinstance(baseline, Report):
        raise EvalError("check_gate(report, baseline) takes two keel.evals.Report")
    mine, theirs = report.dataset, baseline.dataset
    if mine.get("hash") != theirs.get("hash"):
        raise EvalError(
            f"the baseline was made on another dataset ({theirs.get('name')!r}, hash "
            f"{str(theirs.get('hash'))[:12]}) than this report ({mine.get('name')!r}, hash "
            f"{str(mine.get('hash'))[:12]}); make the baseline again on this dataset with "
            f"`keel eval ... --update-baseline`")
    unknown = sorted(set(gate.thresholds) - set(report.metrics) - set(baseline.metrics))
    if unknown:
        raise EvalError(f"the gate names metric(s) {unknown} that neither report has; the "
                        f"metrics are {sorted(report.metrics)}")
    scorers = {**baseline.extra.get("scorers", {}), **report.extra.get("scorers", {})}
    checks = [_compare(metric, baseline.metrics.get(metric), report.metrics.get(metric),
                       gate, scorers)
              for metric in sorted(set(baseline.metrics) | set(report.metrics))]
    return GateResult(passed=not any(c.regressed for c in checks), checks=tuple(checks),
                      baseline={"subject": baseline.subject, "dataset": baseline.dataset})


def _compare(metric: str, old: float | None, new: float | None, gate: Gate,
             scorers: Mapping[str, Any]) -> MetricCheck:
    lower = lower_is_better(metric, scorers)
    allowed: float | None = gate.thresholds.get(metric)
    if allowed is None and not is_measure(metric, scorers):
        allowed = gate.default_max_drop
    if old is None or new is None:
        note = "new metric (not in the baseline)" if old is None else \
            "missing: the baseline has it (a scorer was removed? --update-baseline)"
        return MetricCheck(metric=metric, baseline=old, current=new, delta=None,
                           allowed=allowed, lower_is_better=lower,
                           regressed=new is None and allowed is not None, improved=False,
                           note=note)
    delta = round(new - old, 10)
    worse = delta if lower else -delta
    return MetricCheck(metric=metric, baseline=old, current=new, delta=delta, allowed=allowed,
                       lower_is_better=lower,
                       regressed=allowed is not None and worse > allowed + _EPSILON,
                       improved=worse < -_EPSILON)
