"""A report's metrics: the aggregates the gate compares, computed once from the cases.

Per scorer: ``<scorer>``, the weighted mean of its values (an errored quality score counts
as 0; an errored measure is left out), and ``<scorer>.pass_rate``, the weighted share of the
cases it scored that passed. Over the cases: ``pass_rate`` (every score passed and no
error), ``error_rate`` (the run failed or was not run), ``cost_usd`` (total), ``steps``
(mean) and ``latency_s`` (mean; volatile). Weights are the cases' ``weight``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keel.evals._results import CaseResult

#: Metrics where lower is better (besides the scorers that say so).
LOWER_IS_BETTER = frozenset({"error_rate", "cost_usd", "steps", "latency_s"})
#: Metrics measured in dollars, seconds or steps: reported, gated only when named.
MEASURES = frozenset({"cost_usd", "steps", "latency_s"})


def _mean(pairs: list[tuple[float, float]]) -> float:
    weight = sum(w for _, w in pairs)
    return round(sum(v * w for v, w in pairs) / weight, 6) if weight else 0.0


def compute_metrics(cases: Sequence[CaseResult],
                    scorers: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The metrics of ``cases`` scored by ``scorers`` (``{name: {"higher_is_better"}}``)."""
    metrics: dict[str, float] = {}
    for name, info in scorers.items():
        quality = bool(info.get("higher_is_better", True))
        values: list[tuple[float, float]] = []
        passes: list[tuple[float, float]] = []
        for c in cases:
            s = c.score(name)
            if s is None:
                continue
            passes.append((1.0 if s.passed else 0.0, c.weight))
            if s.value is not None:
                values.append((s.value, c.weight))
            elif quality:
                values.append((0.0, c.weight))
        if passes:
            metrics[name] = _mean(values) if values else 0.0
            metrics[f"{name}.pass_rate"] = _mean(passes)
    weighted = [(1.0 if c.passed else 0.0, c.weight) for c in cases]
    metrics["pass_rate"] = _mean(weighted)
    metrics["error_rate"] = _mean([(1.0 if c.error else 0.0, c.weight) for c in cases])
    metrics["cost_usd"] = round(sum(c.cost_usd for c in cases), 10)
    metrics["steps"] = round(sum(c.steps for c in cases) / len(cases), 6) if cases else 0.0
    metrics["latency_s"] = round(sum(c.latency_s for c in cases) / len(cases), 6) \
        if cases else 0.0
    return metrics


def lower_is_better(metric: str, scorers: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether a smaller value of ``metric`` is the better one."""
    if metric in LOWER_IS_BETTER:
        return True
    info = scorers.get(metric)
    return info is not None and not info.get("higher_is_better", True)


def is_measure(metric: str, scorers: Mapping[str, Mapping[str, Any]]) -> bool:
    """A cost, latency or step figure (gated only when a threshold names it)."""
    return metric in MEASURES or (metric in scorers
                                  and not scorers[metric].get("higher_is_better", True))
