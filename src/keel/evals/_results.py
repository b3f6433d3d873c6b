"""What an evaluation produces: a score per scorer per case, and the report over a dataset.

A report's JSON (``Report.to_dict``) is the baseline format of the CI gate. Everything in it
is deterministic for a scripted model except what :data:`VOLATILE` names (run ids, wall-clock
latencies, the time it was made, the evaluation's id); ``Report.comparable()`` leaves those
out, so two runs of an unchanged agent on an unchanged dataset compare equal.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from keel.evals._errors import EvalError

#: The report format's name and version, written into every report.
REPORT_FORMAT = "keel.eval/1"
#: Report fields that differ between two runs of the same evaluation.
VOLATILE = frozenset({"run_ids", "latency_s", "created_at", "duration_s", "eval_id"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Score:
    """One scorer's verdict on one case. ``value`` is the measurement (0 to 1 for quality
    scorers; dollars, seconds or steps for cost, latency and step count); ``passed`` is
    whether it met ``threshold``. A scorer that raised gives ``value=None``, ``passed=False``
    and the error in ``error`` (the evaluation goes on)."""

    name: str
    value: float | None
    passed: bool
    threshold: float | None = None
    detail: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CaseResult:
    """One case's outcome: the run(s) that served it and every score."""

    case_id: str
    input: Any
    output: Any
    status: str
    scores: tuple[Score, ...]
    run_ids: tuple[str, ...] = ()
    tool_calls: tuple[dict[str, Any], ...] = ()
    cost_usd: float = 0.0
    latency_s: float = 0.0
    steps: int = 0
    tags: tuple[str, ...] = ()
    weight: float = 1.0
    error: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(s.passed for s in self.scores)

    def score(self, name: str) -> Score | None:
        return next((s for s in self.scores if s.name == name), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """An evaluation of ``subject`` (``{"name", "version"}``) over a dataset (``{"name",
    "hash", "cases"}``). ``metrics`` are the aggregates the gate compares: per scorer the
    weighted mean value (``<scorer>``) and pass rate (``<scorer>.pass_rate``), and
    ``pass_rate`` (cases with every score passed), ``error_rate``, ``cost_usd`` (total),
    ``steps`` (mean)."""

    subject: dict[str, Any]
    dataset: dict[str, Any]
    cases: tuple[CaseResult, ...]
    metrics: dict[str, float]
    created_at: float = 0.0
    duration_s: float = 0.0
    format: str = REPORT_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def case_values(self, metric: str) -> dict[str, float]:
        """Each case's value of scorer ``metric`` (cases where it errored are left out)."""
        out = {}
        for c in self.cases:
            s = c.score(metric)
            if s is not None and s.value is not None and math.isfinite(s.value):
                out[c.case_id] = s.value
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def comparable(self) -> dict[str, Any]:
        """The report without its volatile fields (see :data:`VOLATILE`)."""
        stripped: dict[str, Any] = _strip(self.to_dict())
        return stripped

    @classmethod
    def from_dict(cls, raw: object) -> Report:
        if not isinstance(raw, dict) or raw.get("format") != REPORT_FORMAT:
            raise EvalError(f"not a keel evaluation report (format {REPORT_FORMAT!r}); make "
                            f"one with `keel eval ... --report FILE`")
        try:
            cases = tuple(
                CaseResult(**{**c, "scores": tuple(Score(**s) for s in c["scores"]),
                              "run_ids": tuple(c.get("run_ids", ())),
                              "tool_calls": tuple(c.get("tool_calls", ())),
                              "tags": tuple(c.get("tags", ()))})
                for c in raw["cases"])
            return cls(**{**raw, "cases": cases})
        except (KeyError, TypeError) as exc:
            raise EvalError(f"the evaluation report is damaged ({exc}); make it again with "
                            f"`keel eval ... --report FILE`") from None


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list | tuple):
        return [_strip(v) for v in value]
    return value
