"""Run analytics: what :meth:`RunStore.stats` answers, and how it is counted.

Definitions (every backend counts the same way; ``keel.testing``'s stats conformance checks
that they agree):

* a run is in the query when ``since <= created_at < until`` (epoch seconds) and its agent
  and tenant match the ones asked for (exactly);
* **success rate**: completed / (completed + failed + cancelled), over the finished runs;
  ``None`` when none finished;
* **escalation rate**: runs with at least one escalation task (raised, whatever became of
  it) / runs;
* **latency**: of the finished runs, ``updated_at - created_at`` in seconds (wall time from
  start to end, including time spent suspended waiting for a person); the percentiles are
  nearest-rank: the value at rank ``ceil(p * n / 100)`` of the sorted durations;
* **tokens and cost**: sums of the run's ``usage`` totals ``input_tokens``,
  ``output_tokens`` and ``cost_usd`` (values that are not numbers are left out, and so is a
  payload whose stored text holds NaN or Infinity: see :data:`UNREADABLE`);
* **tool failures**: journal results of kind ``tool`` whose ``failure`` is set, counted by
  tool name and by ``failure.error_type`` (``"unknown"`` when it has none);
* **cache hits**: journal results of kind ``model`` that a model cache answered
  (``provider_details["cache"] == "hit"``), and the cost they saved
  (``provider_details["cache_saved"]["cost_usd"]``);
* **groups** (``by``): ``agent``, ``tenant``, ``model`` (``metadata["model"]``, the model
  the run was started with) and ``day`` (the UTC day of ``created_at``, ``YYYY-MM-DD``). A
  run without a tenant or model is in the group whose key is ``None``. (An agent's runs also
  record its version, ``metadata["version"]``; it is not a group key: ``keel.rollout``
  compares versions.)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeAlias

from keel.core import UserError
from keel.store._ids import check_id

GroupKey: TypeAlias = Literal["agent", "tenant", "model", "day"]
GROUP_KEYS: tuple[GroupKey, ...] = ("agent", "tenant", "model", "day")
#: The percentiles every row reports (nearest rank).
PERCENTILES: tuple[int, ...] = (50, 95, 99)
FINISHED: tuple[str, ...] = ("completed", "failed", "cancelled")
_DAY = 86_400
_MAX_TOP = 100
#: How a non-finite number (NaN, Infinity) appears in stored JSON text. That text is not
#: standard JSON (Postgres' ``jsonb`` and SQLite's JSON functions refuse it), so a usage,
#: metadata or tool result that holds one is skipped as a whole, on every backend alike
#: (also when the pattern is inside a string: the check reads the text, never parses it).
UNREADABLE: tuple[str, ...] = tuple(f"{lead}{token}" for lead in (": ", ", ", "[")
                                    for token in ("NaN", "Infinity", "-Infinity"))


def readable(value: object) -> bool:
    """Whether the JSON text the stores write for ``value`` holds none of
    :data:`UNREADABLE`."""
    from keel.core import dumps

    text = dumps(value)
    return not any(p in text for p in UNREADABLE)


def as_epoch(name: str, value: object) -> float | None:
    """``value`` (epoch seconds, or a datetime: naive is UTC) as epoch seconds; a
    :class:`~keel.UserError` naming ``name`` for anything else."""
    if value is None:
        return None
    if isinstance(value, datetime):
        when = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return when.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{name}= must be epoch seconds or a datetime, not "
                        f"{type(value).__name__}.")
    if not math.isfinite(value):
        raise UserError(f"{name}= must be a finite time (epoch seconds), not {value!r}.")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsQuery:
    """Which runs :meth:`RunStore.stats` aggregates and how it groups them: runs of
    ``agent`` and ``tenant`` (exact ids; None: all) created in ``[since, until)`` (epoch
    seconds or aware datetimes; a naive datetime is UTC), grouped ``by`` any of
    :data:`GROUP_KEYS` (``()``: the total only), with the ``top`` failing tools and error
    types of each row."""

    agent: str | None = None
    tenant: str | None = None
    since: float | None = None
    until: float | None = None
    by: tuple[GroupKey, ...] = ("agent",)
    top: int = 5

    def __post_init__(self) -> None:

        if self.agent is not None:
            check_id("agent", self.agent)
        if self.tenant is not None:
            check_id("tenant", self.tenant)
        since, until = as_epoch("since", self.since), as_epoch("until", self.until)
        if since is not None and until is not None and since >= until:
            raise UserError(f"since= ({since:g}) is not before until= ({until:g}); the window "
                            "is [since, until).")
        object.__setattr__(self, "since", since)
        object.__setattr__(self, "until", until)
        by = (self.by,) if isinstance(self.by, str) else tuple(self.by)
        for key in by:
            if key not in GROUP_KEYS:
                raise UserError(f"cannot group stats by {str(key)[:40]!r}; use any of "
                                f"{', '.join(GROUP_KEYS)}.")
        if len(set(by)) != len(by):
            raise UserError(f"by= names a key twice ({', '.join(by)}).")
        object.__setattr__(self, "by", by)
        if isinstance(self.top, bool) or not isinstance(self.top, int) \
                or not 0 <= self.top <= _MAX_TOP:
            raise UserError(f"top= must be a whole number from 0 to {_MAX_TOP}, not "
                            f"{self.top!r}.")


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsRow:
    """The figures of one group (or of every run in the query: ``key == {}``)."""

    key: dict[str, str | None] = field(default_factory=dict)
    runs: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    running: int = 0
    suspended: int = 0
    escalated: int = 0
    input_tokens: int | float = 0
    output_tokens: int | float = 0
    cost_usd: float = 0.0
    p50_s: float | None = None
    p95_s: float | None = None
    p99_s: float | None = None
    max_s: float | None = None
    tool_failures: int = 0
    cache_hits: int = 0
    cache_saved_usd: float = 0.0
    failing_tools: tuple[tuple[str, int], ...] = ()
    error_types: tuple[tuple[str, int], ...] = ()

    @property
    def finished(self) -> int:
        return self.completed + self.failed + self.cancelled

    @property
    def success_rate(self) -> float | None:
        return self.completed / self.finished if self.finished else None

    @property
    def escalation_rate(self) -> float | None:
        return self.escalated / self.runs if self.runs else None

    @property
    def cost_per_run(self) -> float | None:
        return self.cost_usd / self.runs if self.runs else None

    @property
    def tokens(self) -> int | float:
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failing_tools"] = [{"tool": t, "failures": n} for t, n in self.failing_tools]
        data["error_types"] = [{"error_type": t, "failures": n} for t, n in self.error_types]
        data.update(finished=self.finished, success_rate=self.success_rate,
                    escalation_rate=self.escalation_rate, cost_per_run=self.cost_per_run,
                    tokens=self.tokens)
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsResult:
    """What :meth:`RunStore.stats` answers: the ``total`` over every run in the query and
    one row per group (sorted by key, ``None`` last)."""

    query: StatsQuery
    total: StatsRow
    groups: tuple[StatsRow, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        q = self.query
        return {"query": {"agent": q.agent, "tenant": q.tenant, "since": q.since,
                          "until": q.until, "by": list(q.by), "top": q.top},
                "total": self.total.to_dict(),
                "groups": [row.to_dict() for row in self.groups]}


# ------------------------------------------------------------------- assembling the rows


def day_of(day_number: int) -> str:
    """The ISO date of a day number (``floor(created_at / 86400)``)."""
    return datetime.fromtimestamp(int(day_number) * _DAY, UTC).strftime("%Y-%m-%d")


def rank(p: int, n: int) -> int:
    """The 1-based nearest rank of percentile ``p`` among ``n`` values: ``ceil(p*n/100)``."""
    return (n * p + 99) // 100


def number(value: object) -> int | float | None:
    """A usage total as stored, or None if it is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _whole(value: Any) -> int | float:
    if value is None:
        return 0
    value = float(value) if not isinstance(value, int) else value
    return int(value) if isinstance(value, float) and value.is_integer() else value


Key: TypeAlias = tuple[Any, ...]


def _sort_key(key: Key) -> tuple[tuple[bool, str], ...]:
    return tuple((k is None, "" if k is None else str(k)) for k in key)


def assemble(query: StatsQuery, counts: Mapping[Key, Sequence[Any]],
             latency: Mapping[Key, Sequence[Any]],
             failures: Iterable[tuple[Key, str, str | None, int]],
             cached: Mapping[Key, Sequence[Any]] | None = None) -> list[StatsRow]:
    """The rows, from the per-group aggregates a backend computed: ``counts[key]`` is
    ``(runs, completed, failed, cancelled, running, suspended, escalated, input_tokens,
    output_tokens, cost_usd)``, ``latency[key]`` ``(p50, p95, p99, max)`` and ``failures``
    ``(key, tool, error_type, count)`` rows, ``cached[key]`` ``(hits, saved_usd)``. A
    ``day`` key component is a day number."""
    tools: dict[Key, Counter[str]] = {}
    errors: dict[Key, Counter[str]] = {}
    for key, tool, error_type, n in failures:
        tools.setdefault(key, Counter())[tool] += int(n)
        errors.setdefault(key, Counter())[error_type or "unknown"] += int(n)
    rows = []
    for key in sorted(counts, key=_sort_key):
        c = counts[key]
        lat = latency.get(key) or (None, None, None, None)
        t, e = tools.get(key, Counter()), errors.get(key, Counter())
        hits, saved = (cached or {}).get(key) or (0, 0.0)
        named: dict[str, str | None] = {
            name: (day_of(v) if name == "day" and v is not None else v)
            for name, v in zip(query.by, key, strict=True)}
        rows.append(StatsRow(
            key=named, runs=int(c[0]), completed=int(c[1] or 0), failed=int(c[2] or 0),
            cancelled=int(c[3] or 0), running=int(c[4] or 0), suspended=int(c[5] or 0),
            escalated=int(c[6] or 0), input_tokens=_whole(c[7]), output_tokens=_whole(c[8]),
            cost_usd=float(c[9] or 0.0),
            p50_s=_float(lat[0]), p95_s=_float(lat[1]), p99_s=_float(lat[2]),
            max_s=_float(lat[3]), tool_failures=sum(t.values()),
            failing_tools=_top(t, query.top), error_types=_top(e, query.top),
            cache_hits=int(hits or 0), cache_saved_usd=float(saved or 0.0)))
    return rows


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _top(counter: Counter[str], n: int) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n])


def result_of(query: StatsQuery, grouped: list[StatsRow], total: list[StatsRow]
              ) -> StatsResult:
    return StatsResult(query=query, total=total[0] if total else StatsRow(),
                       groups=tuple(grouped) if query.by else ())


# ------------------------------------------------------------------------ in Python


@dataclass(slots=True)
class _Acc:
    counts: list[Any] = field(default_factory=lambda: [0] * 7 + [0, 0, 0.0])
    durations: list[float] = field(default_factory=list)


def compute(query: StatsQuery, runs: Iterable[Any], escalated: set[str],
            failures: Iterable[tuple[str, str, str | None]],
            hits: Iterable[tuple[str, float]] = ()) -> StatsResult:
    """The stats over ``runs`` (RunRecords), in Python: what :class:`~keel.MemoryStore` and
    stores without their own ``stats`` answer. ``escalated`` holds the ids of runs with an
    escalation task, ``failures`` ``(run_id, tool, error_type)`` for each failed tool
    result, ``hits`` ``(run_id, saved_usd)`` for each model step a cache answered."""
    picked = {r.run_id: r for r in runs if _matches(query, r)}
    fails = [(run_id, tool, et) for run_id, tool, et in failures if run_id in picked]
    cached = [(run_id, saved) for run_id, saved in hits if run_id in picked]
    total = _aggregate(query, (), picked, escalated, fails, cached)
    grouped = (_aggregate(query, query.by, picked, escalated, fails, cached) if query.by
               else [])
    return result_of(query, grouped, total)


def _matches(q: StatsQuery, r: Any) -> bool:
    return ((q.agent is None or r.agent == q.agent)
            and (q.tenant is None or r.tenant == q.tenant)
            and (q.since is None or r.created_at >= q.since)
            and (q.until is None or r.created_at < q.until))


def group_value(name: str, r: Any) -> Any:
    if name == "day":
        return math.floor(r.created_at / _DAY)
    if name == "model":
        meta = r.metadata if isinstance(r.metadata, dict) and readable(r.metadata) else {}
        model = meta.get("model")
        return model if isinstance(model, str) else None
    return getattr(r, name)


def _aggregate(query: StatsQuery, by: tuple[str, ...], picked: Mapping[str, Any],
               escalated: set[str], fails: list[tuple[str, str, str | None]],
               hits: list[tuple[str, float]]) -> list[StatsRow]:
    accs: dict[Key, _Acc] = {}
    keys: dict[str, Key] = {}
    for r in picked.values():
        key = keys[r.run_id] = tuple(group_value(name, r) for name in by)
        acc = accs.setdefault(key, _Acc())
        c = acc.counts
        c[0] += 1
        if r.status in ("completed", "failed", "cancelled", "running", "suspended"):
            c[1 + ("completed", "failed", "cancelled", "running", "suspended")
              .index(r.status)] += 1
        c[6] += r.run_id in escalated
        usage = r.usage if isinstance(r.usage, dict) and readable(r.usage) else {}
        for i, name in ((7, "input_tokens"), (8, "output_tokens"), (9, "cost_usd")):
            value = number(usage.get(name))
            if value is not None:
                c[i] += value
        if r.status in FINISHED:
            acc.durations.append(r.updated_at - r.created_at)
    latency = {}
    for key, acc in accs.items():
        d = sorted(acc.durations)
        if d:
            latency[key] = (*(d[rank(p, len(d)) - 1] for p in PERCENTILES), d[-1])
    failure_counts = Counter((keys[run_id], tool, et) for run_id, tool, et in fails)
    cached: dict[Key, list[Any]] = {}
    for run_id, saved in hits:
        c = cached.setdefault(keys[run_id], [0, 0.0])
        c[0] += 1
        c[1] += saved
    return assemble(StatsQuery(by=by, top=query.top),  # type: ignore[arg-type]
                    {k: a.counts for k, a in accs.items()}, latency,
                    [(k, t, et, n) for (k, t, et), n in failure_counts.items()], cached)


def tool_failure(entry: Any) -> tuple[str, str | None] | None:
    """``(tool, error_type)`` if the journal entry is a failed tool result, else None."""
    if entry.kind != "tool" or entry.phase != "result" or not isinstance(entry.data, dict) \
            or not readable(entry.data):
        return None
    failure = entry.data.get("failure")
    if not isinstance(failure, dict):
        return None
    et = failure.get("error_type")
    return entry.name, et if isinstance(et, str) else None


def cache_hit(entry: Any) -> float | None:
    """The cost saved (0.0 if not given) if the journal entry is a model step a cache
    answered, else None."""
    if entry.kind != "model" or entry.phase != "result" or not isinstance(entry.data, dict) \
            or not readable(entry.data):
        return None
    details = entry.data.get("provider_details")
    if not isinstance(details, dict) or details.get("cache") != "hit":
        return None
    saved = details.get("cache_saved")
    value = number(saved.get("cost_usd")) if isinstance(saved, dict) else None
    return 0.0 if value is None else float(value)
