"""The shadow report: how the candidate's shadow runs compare with the production runs they
shadowed, read from the run store (nothing is re-run).

For every shadow run in the window (a run whose metadata has ``shadow_of``) and the
production run it names: whether the two answers agree (exact, fuzzy, or any callable),
the cost and latency of each (mean and p95, and the differences), the would-calls by tool,
the reads that were unavailable, and the shadow runs that failed, by error type.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from keel.core import RunNotFound, canonical_json
from keel.evals._errors import EvalError
from keel.evals._shadow_marks import SHADOW_KEY, shadow_metadata
from keel.runtime import using_store
from keel.store import JournalEntry, RunFilter, RunRecord, RunStore

#: ``compare(production_output, shadow_output)`` -> True/False or a value from 0 to 1 (an
#: agreement of at least 0.5 counts as agreeing).
CompareFn = Callable[[Any, Any], Any]
CompareSpec = Literal["exact", "fuzzy"] | CompareFn
#: The similarity from which two answers agree under ``compare="fuzzy"``.
FUZZY_THRESHOLD = 0.8
_PAGE = 1000
_JOURNALS = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class Spread:
    """Mean and p95 (nearest rank) of a measure over the compared pairs."""

    mean: float | None = None
    p95: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ShadowReport:
    """What :func:`shadow_report` found. ``shadow_runs``: shadow runs in the window;
    ``compared``: pairs where both runs completed; ``agreement``: the share of those that
    agree (None when none); ``cost_*`` / ``latency_*``: dollars and seconds per run of
    production and shadow over the compared pairs, and ``*_diff`` the shadow minus
    production (of the means and of the p95s); ``would_calls``: calls of tools with effects
    that the shadow runs did not make, by tool; ``gated``: those of them a guard wanted a
    person to approve (taint: arguments from tool output), refused in the shadow;
    ``unavailable``: reads production had no recorded result for, by tool; ``errors``:
    shadow runs that did not complete, by error type; ``compare_errors``: pairs the
    comparison could not judge (it raised or gave no verdict); ``missing_production``:
    shadow runs whose production run is not in the store; ``approvals_requested``:
    approval requests in shadow runs (0: a shadow never asks)."""

    since: float | None
    until: float | None
    compare: str
    shadow_runs: int
    compared: int
    agreed: int
    agreement: float | None
    cost_production: Spread
    cost_shadow: Spread
    cost_diff: Spread
    latency_production: Spread
    latency_shadow: Spread
    latency_diff: Spread
    would_calls: dict[str, int] = field(default_factory=dict)
    gated: dict[str, int] = field(default_factory=dict)
    unavailable: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    compare_errors: int = 0
    missing_production: int = 0
    approvals_requested: int = 0

    @property
    def would_calls_total(self) -> int:
        return sum(self.would_calls.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "would_calls_total": self.would_calls_total}

    def to_markdown(self) -> str:
        """The report as a Markdown summary."""
        agreement = "-" if self.agreement is None else f"{self.agreement:.1%}"
        lines = ["## Shadow report", "",
                 f"{self.shadow_runs} shadow run(s); {self.compared} compared with production "
                 f"({self.compare}): agreement {agreement} ({self.agreed}/{self.compared}).",
                 "", "| per run | production | shadow | shadow - production |",
                 "|---|---:|---:|---:|"]
        for label, prod, shadow, diff, unit in (
                ("cost, mean", self.cost_production.mean, self.cost_shadow.mean,
                 self.cost_diff.mean, "$"),
                ("cost, p95", self.cost_production.p95, self.cost_shadow.p95,
                 self.cost_diff.p95, "$"),
                ("latency, mean", self.latency_production.mean, self.latency_shadow.mean,
                 self.latency_diff.mean, "s"),
                ("latency, p95", self.latency_production.p95, self.latency_shadow.p95,
                 self.latency_diff.p95, "s")):
            lines.append(f"| {label} | {_fmt(prod, unit)} | {_fmt(shadow, unit)} | "
                         f"{_fmt(diff, unit, signed=True)} |")
        lines += ["", f"Would-calls (tools with effects, never executed): "
                  f"{self.would_calls_total}" + _counts(self.would_calls)]
        if self.gated:
            lines.append(f"Of which a guard wanted approved (refused in the shadow): "
                         f"{sum(self.gated.values())}" + _counts(self.gated))
        if self.unavailable:
            lines.append(f"Reads unavailable (no recorded result): "
                         f"{sum(self.unavailable.values())}" + _counts(self.unavailable))
        if self.errors:
            lines.append(f"Shadow runs that did not complete: {sum(self.errors.values())}"
                         + _counts(self.errors))
        if self.compare_errors:
            lines.append(f"Pairs the comparison could not judge: {self.compare_errors}")
        if self.missing_production:
            lines.append(f"Shadow runs whose production run is gone: "
                         f"{self.missing_production}")
        return "\n".join(lines) + "\n"


async def shadow_report(store: RunStore | str | None, *, since: float | datetime | None = None,
                        until: float | datetime | None = None, compare: CompareSpec = "exact",
                        tenant: str | None = None, limit: int = 100_000) -> ShadowReport:
    """Compare the shadow runs created in ``[since, until)`` (epoch seconds or datetimes;
    default: all) with their production runs, reading ``store`` (a store, a URL, or None for
    the default). ``compare``: ``"exact"`` (equal answers, surrounding whitespace aside),
    ``"fuzzy"`` (similarity of the normalised text of at least 0.8) or a callable
    ``compare(production_output, shadow_output)`` returning True/False or a value from 0 to
    1 (an evals scorer-like function; at least 0.5 agrees). ``tenant`` reads only that
    tenant's runs; ``limit`` bounds how many runs are read."""
    start, end = as_epoch("since", since), as_epoch("until", until)
    if start is not None and end is not None and start >= end:
        raise EvalError(f"since={since!r} is not before until={until!r}; the window is "
                        "[since, until)")
    judge, name = _comparer(compare)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000_000:
        raise EvalError(f"limit={limit!r}: give a whole number of runs to read, >= 1")
    async with using_store(store) as opened:
        shadows, known = await _scan(opened, start, end, tenant, limit)
        journals = await _journals(opened, [r.run_id for r in shadows])
        pairs: list[tuple[RunRecord, RunRecord]] = []
        missing = 0
        for record in shadows:
            prod_id = shadow_metadata(record.metadata)
            assert prod_id is not None
            prod = known.get(prod_id) or await _get(opened, prod_id, tenant)
            if prod is None:
                missing += 1
            else:
                pairs.append((prod, record))
    return _build(shadows, pairs, journals, judge, name, start, end, missing)


def as_epoch(name: str, value: object) -> float | None:
    """``value`` (epoch seconds, or a datetime: naive is UTC) as epoch seconds."""
    if value is None:
        return None
    if isinstance(value, datetime):
        when = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return when.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EvalError(f"{name}={value!r}: give epoch seconds or a datetime")
    return float(value)


def check_compare(compare: object) -> None:
    """Refuse a ``compare=`` that is not ``"exact"``, ``"fuzzy"`` or a callable."""
    _comparer(compare)


def _comparer(compare: object) -> tuple[CompareFn, str]:
    if compare == "exact":
        return _exact, "exact"
    if compare == "fuzzy":
        return _fuzzy, "fuzzy"
    if callable(compare) and not isinstance(compare, str):
        return compare, getattr(compare, "__name__", type(compare).__name__)
    raise EvalError(f"compare={compare!r}: use 'exact', 'fuzzy' or a function "
                    "compare(production_output, shadow_output) -> bool or 0..1")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return canonical_json(value)
    except (TypeError, ValueError):
        return repr(value)


def _exact(production: Any, shadow: Any) -> bool:
    return _text(production).strip() == _text(shadow).strip()


def _fuzzy(production: Any, shadow: Any) -> bool:
    a = " ".join(_text(production).casefold().split())
    b = " ".join(_text(shadow).casefold().split())
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= FUZZY_THRESHOLD


async def _scan(store: RunStore, start: float | None, end: float | None, tenant: str | None,
                limit: int) -> tuple[list[RunRecord], dict[str, RunRecord]]:
    """The shadow runs in the window (oldest first) and every run read on the way, by id."""
    shadows: list[RunRecord] = []
    known: dict[str, RunRecord] = {}
    offset = 0
    while offset < limit:
        page = await store.list_runs(RunFilter(tenant=tenant, limit=min(_PAGE, limit - offset),
                                               offset=offset))
        for record in page:
            known[record.run_id] = record
            in_window = (start is None or record.created_at >= start) \
                and (end is None or record.created_at < end)
            if in_window and shadow_metadata(record.metadata) is not None:
                shadows.append(record)
        offset += len(page)
        if len(page) < _PAGE or (start is not None and page[-1].created_at < start):
            break
    shadows.reverse()
    return shadows, known


async def _journals(store: RunStore, run_ids: list[str]) -> dict[str, list[JournalEntry]]:
    out: dict[str, list[JournalEntry]] = {}
    for i in range(0, len(run_ids), _JOURNALS):
        out.update(await store.read_journals(run_ids[i:i + _JOURNALS]))
    return out


async def _get(store: RunStore, run_id: str, tenant: str | None) -> RunRecord | None:
    try:
        if tenant is not None and "tenant" in inspect.signature(store.get_run).parameters:
            return await store.get_run(run_id, tenant=tenant)
        return await store.get_run(run_id)
    except RunNotFound:
        return None


def _build(shadows: list[RunRecord], pairs: list[tuple[RunRecord, RunRecord]],
           journals: dict[str, list[JournalEntry]], judge: CompareFn, name: str,
           start: float | None, end: float | None, missing: int) -> ShadowReport:
    would: Counter[str] = Counter()
    gated: Counter[str] = Counter()
    unavailable: Counter[str] = Counter()
    approvals = 0
    for entries in journals.values():
        approvals += sum(1 for e in entries if e.kind == "approval" and e.phase == "intent")
        for tool, what in _tool_outcomes(entries):
            if what in ("would_call", "gated"):
                would[tool] += 1
            if what == "gated":
                gated[tool] += 1
            elif what == "unavailable":
                unavailable[tool] += 1
    errors = Counter(_error_type(r) for r in shadows if r.status != "completed")
    agreed = compared = compare_errors = 0
    costs: list[tuple[float, float]] = []
    latencies: list[tuple[float, float]] = []
    for prod, shadow in pairs:
        if prod.status != "completed" or shadow.status != "completed":
            continue
        verdict = _judge(judge, prod.output, shadow.output)
        if verdict is None:
            compare_errors += 1
        else:
            compared += 1
            agreed += verdict
        costs.append((_cost(prod), _cost(shadow)))
        latencies.append((prod.updated_at - prod.created_at,
                          shadow.updated_at - shadow.created_at))
    return ShadowReport(
        since=start, until=end, compare=name, shadow_runs=len(shadows), compared=compared,
        agreed=agreed, agreement=agreed / compared if compared else None,
        cost_production=_spread(p for p, _ in costs), cost_shadow=_spread(s for _, s in costs),
        cost_diff=_diff(costs), latency_production=_spread(p for p, _ in latencies),
        latency_shadow=_spread(s for _, s in latencies), latency_diff=_diff(latencies),
        would_calls=dict(sorted(would.items())), gated=dict(sorted(gated.items())),
        unavailable=dict(sorted(unavailable.items())),
        errors=dict(sorted(errors.items())), compare_errors=compare_errors,
        missing_production=missing, approvals_requested=approvals)


def _tool_outcomes(entries: list[JournalEntry]) -> list[tuple[str, str]]:
    """(tool, what the shadow did instead) for each tool result of a shadow run's journal
    that was not a plain call: ``would_call``, ``unavailable``, or ``gated`` (a guard asked
    for a person's approval, which a shadow run never requests: the call was refused)."""
    gated_steps = {e.key.rsplit("/guard:", 1)[0] for e in entries
                   if e.kind == "guard" and isinstance(e.data, dict)
                   and e.data.get("place") == "tool_args" and e.data.get("action") == "approve"}
    out: list[tuple[str, str]] = []
    for e in entries:
        if e.kind != "tool" or e.phase != "result" or not isinstance(e.data, dict):
            continue
        value = e.data.get("value")
        marker = value.get(SHADOW_KEY) if isinstance(value, dict) else None
        if marker in ("would_call", "unavailable"):
            out.append((e.name, str(marker)))
        elif e.key in gated_steps and e.data.get("failure") is not None:
            out.append((e.name, "gated"))
    return out


def _judge(judge: CompareFn, production: Any, shadow: Any) -> int | None:
    """1 (agree), 0 (disagree) or None (the comparison raised or gave no verdict)."""
    try:
        value = judge(production, shadow)
    except Exception:  # a comparison that fails is counted, the report goes on
        return None
    value = getattr(value, "value", value)  # a Score-like object
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= 1:
        return int(value >= 0.5)
    return None


def _error_type(record: RunRecord) -> str:
    if record.status == "cancelled":
        return "cancelled"
    error = record.error or {}
    return str(error.get("type") or record.status)


def _cost(record: RunRecord) -> float:
    value = record.usage.get("cost_usd") if isinstance(record.usage, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return 0.0


def _spread(values: Iterable[float]) -> Spread:
    data = sorted(values)
    if not data:
        return Spread()
    rank = max(1, math.ceil(0.95 * len(data)))
    return Spread(mean=math.fsum(data) / len(data), p95=data[rank - 1])


def _diff(pairs: list[tuple[float, float]]) -> Spread:
    prod, shadow = _spread(p for p, _ in pairs), _spread(s for _, s in pairs)
    if prod.mean is None or shadow.mean is None or prod.p95 is None or shadow.p95 is None:
        return Spread()
    return Spread(mean=shadow.mean - prod.mean, p95=shadow.p95 - prod.p95)


def _fmt(value: float | None, unit: str, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    sign = "+" if signed else ""
    if unit == "$":
        return f"${value:{sign},.6f}"
    return f"{value:{sign}.3f}s"


def _counts(counts: dict[str, int]) -> str:
    if not counts:
        return ""
    return " (" + ", ".join(f"{k}: {v}" for k, v in counts.items()) + ")"
