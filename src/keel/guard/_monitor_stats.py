"""What the monitor counts in one run, and how a finished run folds into a baseline.

The same :class:`RunStats` is filled live (by the monitor's hooks) or from a completed run's
journal (:func:`stats_from_journal`), so a baseline learned either way means the same thing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.guard._monitor_state import FoldOp
from keel.store import JournalEntry

#: Keys of a tool's dict result that say how many records it returned.
_COUNT_KEYS = ("count", "total", "row_count", "records_count")
_LIST_KEYS = ("records", "items", "results", "rows", "data")


def record_count(value: Any) -> int:
    """How many records a tool result holds: the length of a list, or of a dict's
    ``records``/``items``/``results``/``rows``/``data`` list, or its ``count``; 1 otherwise
    (0 for None)."""
    if value is None:
        return 0
    if isinstance(value, list):
        return len(value)
    if isinstance(value, dict):
        for key in _COUNT_KEYS:
            n = value.get(key)
            if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                return n
        for key in _LIST_KEYS:
            items = value.get(key)
            if isinstance(items, list):
                return len(items)
    return 1


@dataclass(slots=True)
class ToolStats:
    calls: int = 0
    bytes: int = 0
    records: int = 0
    errors: int = 0
    latency_sum: float = 0.0
    latency_n: int = 0
    recent: deque[float] = field(default_factory=deque)


@dataclass(slots=True)
class RunStats:
    """One run of one agent, as the monitor saw it."""

    agent: str
    scope: str
    tenant: str | None = None
    #: False until a hook that sees the run's deps (a tool call) has looked for the tenant
    deps_seen: bool = False
    cost: float = 0.0
    tools: dict[str, ToolStats] = field(default_factory=dict)
    repeats: dict[str, int] = field(default_factory=dict)
    #: (deviation, tool) pairs already acted on in this run
    acted: set[tuple[str, str]] = field(default_factory=set)
    #: deviations noticed where no action could be taken yet (cost, after a model turn)
    pending: list[Any] = field(default_factory=list)
    #: the evidence of every action taken in this run (shown to an approver)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.acted)

    @property
    def errors(self) -> int:
        return sum(t.errors for t in self.tools.values())

    def tool(self, name: str) -> ToolStats:
        t = self.tools.get(name)
        if t is None:
            t = self.tools[name] = ToolStats()
        return t

    def fold_ops(self) -> list[FoldOp]:
        """This run as additions to a baseline."""
        ops: list[FoldOp] = [("runs", "sum", 1.0), ("cost.sum", "sum", self.cost),
                             ("cost.max", "max", self.cost),
                             ("errors.sum", "sum", float(self.errors)),
                             ("errors.max", "max", float(self.errors))]
        for name, t in self.tools.items():
            p = f"t\t{name}\t"
            ops.append((p + "runs", "sum", 1.0))
            for metric, value in (("calls", t.calls), ("bytes", t.bytes),
                                  ("records", t.records)):
                ops += [(f"{p}{metric}.sum", "sum", float(value)),
                        (f"{p}{metric}.max", "max", float(value))]
            ops += [(p + "lat.sum", "sum", t.latency_sum), (p + "lat.n", "sum", t.latency_n)]
        return ops


def stats_from_journal(agent: str, scope: str, entries: Iterable[JournalEntry]) -> RunStats:
    """A completed run's :class:`RunStats`, read back from its journal (tool results and
    model usage; failed attempts that were retried are not calls)."""
    stats = RunStats(agent=agent, scope=scope)
    for e in entries:
        if e.phase != "result" or not isinstance(e.data, Mapping):
            continue
        if e.kind == "model":
            usage = e.data.get("usage")
            if isinstance(usage, Mapping):
                cost = usage.get("cost_usd")
                if isinstance(cost, int | float) and not isinstance(cost, bool):
                    stats.cost += float(cost)
        elif e.kind == "tool":
            t = stats.tool(e.name)
            t.calls += 1
            content = e.data.get("content")
            t.bytes += len(content) if isinstance(content, str) else 0
            if e.data.get("failure") is not None:
                t.errors += 1
            else:
                t.records += record_count(e.data.get("value"))
            t.latency_sum += e.latency_ms / 1000.0
            t.latency_n += 1
    return stats


__all__ = ["RunStats", "ToolStats", "record_count", "stats_from_journal"]
