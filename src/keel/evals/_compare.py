"""A/B: two evaluation reports of the same dataset, compared metric by metric.

Each metric is compared over the cases both reports have (paired by case id): the mean of A,
the mean of B, the difference B - A and a paired bootstrap confidence interval of that
difference. An interval that excludes 0 is a significant change, labelled ``better`` or
``worse`` (lower is better for cost, latency and steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from keel.evals._bootstrap import bootstrap_ci, check_resampling
from keel.evals._errors import EvalError
from keel.evals._results import CaseResult, Report

#: Metrics every comparison has besides the scorers: a case's pass (1 or 0), its cost in
#: dollars, its step count and its latency in seconds.
CASE_METRICS: tuple[str, ...] = ("pass_rate", "cost_usd", "steps", "latency_s")
#: Metrics where a lower value is better (a scorer of that name too).
LOWER_IS_BETTER: frozenset[str] = frozenset({"cost_usd", "cost", "steps", "latency_s",
                                             "latency"})
Verdict = Literal["better", "worse", "no change", "too few cases"]
_CASE_VALUE: dict[str, Callable[[CaseResult], float]] = {
    "pass_rate": lambda c: 1.0 if c.passed else 0.0,
    "cost_usd": lambda c: float(c.cost_usd),
    "steps": lambda c: float(c.steps),
    "latency_s": lambda c: float(c.latency_s),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricDiff:
    """One metric of a :class:`Comparison`: over the ``n`` cases both reports have a value
    for, the means of A and B, ``diff`` (B - A) and its confidence interval
    (``ci_low``, ``ci_high``; None with fewer than 2 cases). ``significant``: the interval
    excludes 0; ``verdict`` says whether B is better or worse than A."""

    name: str
    n: int
    mean_a: float | None
    mean_b: float | None
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    significant: bool
    verdict: Verdict
    lower_is_better: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """A and B compared (see :func:`compare`). ``paired`` cases are in both reports;
    ``only_a`` / ``only_b`` name the cases in one report only (left out of every metric)."""

    a: dict[str, Any]
    b: dict[str, Any]
    dataset: dict[str, Any]
    paired: int
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]
    metrics: tuple[MetricDiff, ...]
    confidence: float
    resamples: int
    seed: int

    def metric(self, name: str) -> MetricDiff:
        """The comparison of metric ``name``; an :class:`EvalError` naming the metrics if it
        is not one."""
        for m in self.metrics:
            if m.name == name:
                return m
        raise EvalError(f"the comparison has no metric {name!r}; it has "
                        f"{', '.join(m.name for m in self.metrics)}")

    @property
    def significant(self) -> tuple[MetricDiff, ...]:
        """The metrics that changed significantly."""
        return tuple(m for m in self.metrics if m.significant)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        """The comparison as a Markdown summary: a table of every metric and a note on the
        cases left out."""
        level = f"{self.confidence:.0%}"
        lines = [f"## A/B: {_subject(self.a)} (A) vs {_subject(self.b)} (B)", "",
                 f"Dataset {self.dataset.get('name', '?')} "
                 f"({str(self.dataset.get('hash', ''))[:12]}), {self.paired} paired cases; "
                 f"{level} paired bootstrap intervals "
                 f"({self.resamples} resamples, seed {self.seed}).", "",
                 f"| metric | n | A | B | B - A | {level} CI | verdict |",
                 "|---|---:|---:|---:|---:|---|---|"]
        for m in self.metrics:
            ci = "-" if m.ci_low is None else f"[{_num(m.ci_low)}, {_num(m.ci_high)}]"
            verdict = f"**{m.verdict}**" if m.significant else m.verdict
            lines.append(f"| {_cell(m.name)} | {m.n} | {_num(m.mean_a)} | {_num(m.mean_b)} | "
                         f"{_num(m.diff, signed=True)} | {ci} | {verdict} |")
        if self.only_a or self.only_b:
            lines += ["", f"Left out: {len(self.only_a)} case(s) only in A "
                      f"({_few(self.only_a)}), {len(self.only_b)} only in B "
                      f"({_few(self.only_b)})."]
        return "\n".join(lines) + "\n"


def compare(a: Report, b: Report, *, metrics: Iterable[str] | None = None,
            resamples: int = 2000, confidence: float = 0.95, seed: int = 0,
            lower_is_better: Iterable[str] = ()) -> Comparison:
    """Compare report ``b`` (the candidate) with report ``a`` (the baseline).

    Metrics: every scorer present in both reports, and ``pass_rate``, ``cost_usd``,
    ``steps`` and ``latency_s`` per case (or only those named in ``metrics``). Each is
    compared over the cases both reports have a value for (paired by case id; means weighted
    by the cases' ``weight`` in A, as the report's own aggregates are), with a paired
    bootstrap interval of the mean difference (``resamples`` resamples at ``confidence``,
    seeded by ``seed``: the same reports always give the same comparison). Lower is better
    for cost, latency and steps, and for the scorers named in ``lower_is_better``.

    Raises :class:`EvalError` for reports of different datasets (naming both), a metric
    that is not in both reports, a report with a case id twice, or resampling settings out
    of range."""
    for name, report in (("a", a), ("b", b)):
        if not isinstance(report, Report):
            raise EvalError(f"compare() takes two evaluation Reports; {name} is a "
                            f"{type(report).__name__} (load one with Report.from_dict)")
    check_resampling(resamples, confidence, seed)
    if a.dataset.get("hash") != b.dataset.get("hash"):
        raise EvalError(f"the reports are of different datasets: A is "
                        f"{_dataset(a)}, B is {_dataset(b)}; evaluate both versions on the "
                        "same dataset file (an edited case changes the hash)")
    lower = LOWER_IS_BETTER | _names(lower_is_better, "lower_is_better")
    cases_a, cases_b = _by_id(a, "A"), _by_id(b, "B")
    chosen = _chosen_metrics(a, b, metrics)
    paired = [cid for cid in cases_a if cid in cases_b]
    diffs = tuple(_metric(name, [(cases_a[c], cases_b[c]) for c in paired], name in lower,
                          resamples=resamples, confidence=confidence, seed=seed)
                  for name in chosen)
    return Comparison(a=dict(a.subject), b=dict(b.subject), dataset=dict(a.dataset),
                      paired=len(paired),
                      only_a=tuple(c for c in cases_a if c not in cases_b),
                      only_b=tuple(c for c in cases_b if c not in cases_a),
                      metrics=diffs, confidence=float(confidence), resamples=resamples,
                      seed=seed)


def _names(given: Iterable[str] | None, what: str) -> frozenset[str]:
    if given is None:
        return frozenset()
    if isinstance(given, str):
        raise EvalError(f"{what}= takes a list of metric names, not one string; write "
                        f"{what}=[{given!r}]")
    names = list(given)
    if not all(isinstance(n, str) and n for n in names):
        raise EvalError(f"{what}= takes metric names (text)")
    return frozenset(names)


def _by_id(report: Report, label: str) -> dict[str, CaseResult]:
    out: dict[str, CaseResult] = {}
    for c in report.cases:
        if c.case_id in out:
            raise EvalError(f"report {label} has case {c.case_id!r} twice; a report holds "
                            "one result per case (make it again with keel eval)")
        w = c.weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) \
                or w <= 0:
            raise EvalError(f"report {label}: case {c.case_id!r} has weight {w!r}; a weight "
                            "is a positive number (make the report again with keel eval)")
        out[c.case_id] = c
    return out


def _scorers(report: Report) -> list[str]:
    seen: dict[str, None] = {}
    for c in report.cases:
        for s in c.scores:
            seen.setdefault(s.name, None)
    return list(seen)


def _chosen_metrics(a: Report, b: Report, metrics: Iterable[str] | None) -> list[str]:
    in_b = set(_scorers(b))
    available = [n for n in _scorers(a) if n in in_b and n not in _CASE_VALUE]
    available += list(CASE_METRICS)
    if metrics is None:
        return available
    wanted = _names(metrics, "metrics")
    missing = sorted(wanted - set(available))
    if missing:
        raise EvalError(f"metric(s) {missing} are not in both reports; the metrics are "
                        f"{', '.join(available)}")
    return [n for n in available if n in wanted]


def _value(case: CaseResult, name: str) -> float | None:
    getter = _CASE_VALUE.get(name)
    if getter is not None:
        value: float | None = getter(case)
    else:
        score = case.score(name)
        value = None if score is None else score.value
    if value is None or isinstance(value, bool) or not math.isfinite(value):
        return None
    return float(value)


def _metric(name: str, pairs: list[tuple[CaseResult, CaseResult]], lower: bool, *,
            resamples: int, confidence: float, seed: int) -> MetricDiff:
    values = [(va, vb, ca.weight) for ca, cb in pairs
              if (va := _value(ca, name)) is not None and (vb := _value(cb, name)) is not None]
    n = len(values)
    if n == 0:
        return MetricDiff(name=name, n=0, mean_a=None, mean_b=None, diff=None, ci_low=None,
                          ci_high=None, significant=False, verdict="too few cases",
                          lower_is_better=lower)
    total = math.fsum(w for _, _, w in values)
    mean_a = math.fsum(va * w for va, _, w in values) / total
    mean_b = math.fsum(vb * w for _, vb, w in values) / total
    diff = mean_b - mean_a
    if n < 2:
        return MetricDiff(name=name, n=n, mean_a=mean_a, mean_b=mean_b, diff=diff,
                          ci_low=None, ci_high=None, significant=False,
                          verdict="too few cases", lower_is_better=lower)
    weights = None if all(w == 1.0 for _, _, w in values) else [w for _, _, w in values]
    low, high = bootstrap_ci([vb - va for va, vb, _ in values], resamples=resamples,
                             confidence=confidence, seed=seed, weights=weights)
    significant = low > 0 or high < 0
    verdict: Verdict = "no change"
    if significant:
        verdict = "better" if (diff < 0) == lower else "worse"
    return MetricDiff(name=name, n=n, mean_a=mean_a, mean_b=mean_b, diff=diff, ci_low=low,
                      ci_high=high, significant=significant, verdict=verdict,
                      lower_is_better=lower)


def _subject(subject: dict[str, Any]) -> str:
    name = str(subject.get("name", "?"))
    version = subject.get("version")
    return _cell(f"{name}@{version}" if version else name)


def _dataset(report: Report) -> str:
    d = report.dataset
    return f"{d.get('name', '?')!s} (hash {str(d.get('hash', '?'))[:12]})"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:80]


def _num(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _few(ids: tuple[str, ...]) -> str:
    shown = ", ".join(_cell(i) for i in ids[:5])
    return shown + (f" and {len(ids) - 5} more" if len(ids) > 5 else "") if ids else "none"
