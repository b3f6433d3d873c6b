"""The failure-modes report: the top ways runs failed, escalated or were blocked, read from
the run records and their journals, each with the mitigation keel has in place.

What counts, per run created in the window (``since``; the agent's and tenant's runs when
they are given):

* **failed**: a run whose status is ``failed``, by its error type (``record.error["type"]``)
  and where it failed (the tool, the model, the step), except the kinds below that are a
  block rather than a fault;
* **blocked**: a guard's ``block`` decision (journal ``guard`` results, by guard and place:
  the user's input, a tool's output, a call's arguments, the final answer); an approval
  denied by a reviewer and a call refused by a tool policy (:func:`audit_events_of`, the
  same reading as ``keel audit``); a run stopped by its budget or a spend cap
  (``BudgetExceeded``), an open breaker (``CircuitOpen``), a rate limit (``RateLimited``)
  or a full bulkhead (``BulkheadFull``), and tool calls refused for those reasons;
* **escalated**: each escalation the journal records (its ``trigger``);
* **tool_error**: tool calls that failed and whose error the model saw (timeouts, tool
  errors, bad arguments), by tool and error type (:func:`keel.store.tool_failure`, the same
  reading as ``keel stats``).

A mode's ``count`` is how many times it happened, ``runs`` in how many runs, ``share``
that number over the runs in the window. ``examples`` are up to three run ids, newest first.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from keel.core import UserError
from keel.observe._audit import audit_events_of
from keel.observe._mitigations import mitigation
from keel.store import (
    JournalEntry,
    RunFilter,
    RunRecord,
    RunStore,
    StatsQuery,
    check_id,
    tool_failure,
)

Kind: TypeAlias = Literal["failed", "blocked", "escalated", "tool_error"]
KINDS: tuple[Kind, ...] = ("failed", "blocked", "escalated", "tool_error")
#: The most modes a report lists, and the most runs it reads (newest first).
MAX_MODES = 500
MAX_SCAN = 100_000
_PAGE = 500
_EXAMPLES = 3
_TOOL = re.compile(r"(?:^|/)tool:([^/#]+)#\d+")
#: Run errors that are a block (a limit or a breaker did its job), not a fault.
_BLOCKS = {"CircuitOpen": "breaker open", "RateLimited": "rate limited",
           "BulkheadFull": "bulkhead full"}
#: Tool-call failures counted elsewhere (the guard's, the reviewer's or the escalation's
#: own record) or as a block.
_TOOL_SKIP = frozenset({"guardrail_blocked", "approval_denied", "escalated",
                        "permission_denied"})
_TOOL_BLOCKS = {"circuit_open": "breaker open", "rate_limited": "rate limited",
                "bulkhead_full": "bulkhead full", "budget_exceeded": "budget exceeded"}
_PLACES = {"input": "the user's input", "tool_output": "output of tool",
           "tool_args": "call of tool", "output": "the final answer"}


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureMode:
    """One way runs went wrong, with how often, where, examples and keel's mitigation."""

    kind: Kind
    cause: str
    where: str
    count: int
    runs: int
    share: float
    examples: tuple[str, ...]
    first_seen: float
    last_seen: float
    mitigation: str
    #: How many of its runs each agent version served (``metadata["version"]``, the hash
    #: ``keel.rollout`` rolls out; ``"-"`` for runs that recorded none): during a rollout,
    #: whether a mode is the candidate's.
    versions: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "cause": self.cause, "where": self.where,
                "count": self.count, "runs": self.runs, "share": self.share,
                "examples": list(self.examples), "first_seen": self.first_seen,
                "last_seen": self.last_seen, "mitigation": self.mitigation,
                "versions": dict(self.versions)}


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureReport:
    """What :func:`failure_modes` answers: the runs read, how many of them failed, were
    blocked or escalated (at least once), and the modes, most frequent first."""

    since: float | None
    agent: str | None
    tenant: str | None
    version: str | None
    runs: int
    failed: int
    blocked: int
    escalated: int
    modes: tuple[FailureMode, ...] = ()
    #: False when the window held more than ``scan`` runs: only the newest were read.
    complete: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"since": self.since, "agent": self.agent, "tenant": self.tenant,
                "version": self.version, "runs": self.runs, "failed": self.failed,
                "blocked": self.blocked, "escalated": self.escalated, "complete": self.complete,
                "modes": [m.to_dict() for m in self.modes]}


@dataclass(frozen=True, slots=True)
class _Event:
    kind: Kind
    cause: str
    where: str
    at: float
    key: str  # the mitigation's key


@dataclass(slots=True)
class _Acc:
    count: int = 0
    runs: list[str] = field(default_factory=list)  # newest first (runs are read so)
    versions: dict[str, int] = field(default_factory=dict)
    first: float = float("inf")
    last: float = 0.0
    key: str = ""


async def failure_modes(store: RunStore, *, since: Any = None, agent: str | None = None,
                        tenant: str | None = None, version: str | None = None,
                        limit: int = 20, scan: int = 20_000) -> FailureReport:
    """The top ways the runs created since ``since`` (epoch seconds or a datetime; None:
    all) failed, were blocked or escalated, from their records and journals. ``agent`` and
    ``tenant`` narrow it to their runs (the tenant in the store's query), ``version`` to the
    runs an agent version served (``metadata["version"]``); ``limit`` modes at
    most, most frequent first; ``scan`` runs at most are read, newest first
    (``complete`` says whether that was all of them). Bad arguments are a ``UserError``
    naming the fix; nothing is written."""
    query = StatsQuery(agent=agent, tenant=tenant, since=since, by=())  # checks them
    if version is not None:
        check_id("version", version)
    for name, value, top in (("limit", limit, MAX_MODES), ("scan", scan, MAX_SCAN)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise UserError(f"{name}= must be a whole number from 1 to {top}, not {value!r}")
    accs: dict[tuple[Kind, str, str], _Acc] = {}
    seen = dict.fromkeys(KINDS, 0)
    runs, complete = 0, True
    async for record, entries in _runs(store, query, scan):
        if record is None:
            complete = False
            break
        served = _version_of(record)
        if version is not None and served != version:
            continue
        runs += 1
        kinds: set[Kind] = set()
        for ev in events_of_run(record, entries):
            acc = accs.setdefault((ev.kind, ev.cause, ev.where), _Acc(key=ev.key))
            acc.count += 1
            acc.first, acc.last = min(acc.first, ev.at), max(acc.last, ev.at)
            if record.run_id not in acc.runs:
                acc.runs.append(record.run_id)
                acc.versions[served] = acc.versions.get(served, 0) + 1
            kinds.add(ev.kind)
        for k in kinds:
            seen[k] += 1
    modes = [FailureMode(kind=kind, cause=cause, where=where, count=a.count,
                         runs=len(a.runs), share=len(a.runs) / runs if runs else 0.0,
                         examples=tuple(a.runs[:_EXAMPLES]), first_seen=a.first,
                         last_seen=a.last, mitigation=mitigation(a.key, cause),
                         versions=a.versions)
             for (kind, cause, where), a in accs.items()]
    modes.sort(key=lambda m: (-m.count, -m.runs, -m.last_seen, m.kind, m.cause, m.where))
    return FailureReport(since=query.since, agent=agent, tenant=tenant, version=version,
                         runs=runs,
                         failed=seen["failed"], blocked=seen["blocked"],
                         escalated=seen["escalated"], modes=tuple(modes[:limit]),
                         complete=complete)


async def _runs(store: RunStore, query: StatsQuery, scan: int
                ) -> AsyncIterator[tuple[RunRecord | None, list[JournalEntry]]]:
    """``(record, journal)`` of each run in the window, newest first; ``(None, [])`` once
    more than ``scan`` were read."""
    offset, read = 0, 0
    while True:
        page = await store.list_runs(RunFilter(agent=query.agent, tenant=query.tenant,
                                               limit=_PAGE, offset=offset))
        picked = [r for r in page if query.since is None or r.created_at >= query.since]
        journals = await store.read_journals([r.run_id for r in picked]) if picked else {}
        for record in picked:
            if read >= scan:
                yield None, []
                return
            read += 1
            yield record, journals.get(record.run_id, [])
        if len(page) < _PAGE or len(picked) < len(page):  # newest first: the rest is older
            return
        offset += _PAGE


def _version_of(record: RunRecord) -> str:
    meta = record.metadata if isinstance(record.metadata, dict) else {}
    served = meta.get("version")
    return served if isinstance(served, str) and served else "-"


def events_of_run(record: RunRecord, entries: Sequence[JournalEntry]) -> list[_Event]:
    """Every failure, block and escalation in one run (its record and its journal)."""
    out: list[_Event] = []
    guard_keys: set[str] = set()
    for e in entries:
        if e.kind == "guard" and e.phase == "result" and isinstance(e.data, dict) \
                and e.data.get("action") == "block":
            guard_keys.add(e.key)
            guard = str(e.data.get("guard") or e.name or "guard")
            out.append(_Event("blocked", f"guard {guard}", _place(e), e.created_at,
                              f"guard:{guard}"))
        elif e.kind == "escalation" and e.phase == "intent" and isinstance(e.data, dict):
            trigger = str(e.data.get("trigger") or "requested")
            out.append(_Event("escalated", f"trigger {trigger}",
                              f"queue {e.data.get('queue') or '-'}", e.created_at,
                              f"escalation:{trigger}"))
        else:
            event = _tool_event(e)
            if event is not None:
                out.append(event)
    for ev in audit_events_of(record, entries):
        if ev.outcome == "denied":
            cause = "permission denied" if ev.by == "tool-policy" else "approval denied"
            out.append(_Event("blocked", cause, f"tool {ev.tool}", ev.at, cause))
    failure = _run_failure(record, entries, guard_keys)
    if failure is not None:
        out.append(failure)
    return out


def _tool_event(e: JournalEntry) -> _Event | None:
    if e.kind != "tool" or not isinstance(e.data, dict) or not e.data.get("failure"):
        return None  # most entries: nothing failed (and no JSON to check)
    found = tool_failure(e)
    if found is None:
        return None
    tool, error_type = found
    error_type = error_type or "unknown"
    if error_type in _TOOL_SKIP:
        return None
    if error_type in _TOOL_BLOCKS:
        cause = _TOOL_BLOCKS[error_type]
        return _Event("blocked", cause, f"tool {tool}", e.created_at, cause)
    return _Event("tool_error", error_type, f"tool {tool}", e.created_at,
                  f"tool_error:{error_type}")


def _run_failure(record: RunRecord, entries: Sequence[JournalEntry],
                 guard_keys: set[str]) -> _Event | None:
    error = record.error if isinstance(record.error, dict) else {}
    if record.status != "failed":
        return None
    kind = str(error.get("type") or "RunError")
    step = error.get("step_key") if isinstance(error.get("step_key"), str) else None
    if kind == "GuardrailTripped" and step in guard_keys:
        return None  # the guard's decision is the event
    where = _where(step, record, entries)
    at = record.updated_at
    if kind == "BudgetExceeded":
        cause = _budget(str(error.get("message") or ""))
        return _Event("blocked", cause, where, at,
                      "spend cap" if cause.startswith("spend cap") else "budget")
    if kind in _BLOCKS:
        return _Event("blocked", _BLOCKS[kind], where, at, _BLOCKS[kind])
    return _Event("failed", kind, where, at, kind)


_BUDGET = re.compile(r"^budget exceeded: (\w+) used")
_CAP = re.compile(r"^spend cap '([^']{1,80})'")


def _budget(message: str) -> str:
    m = _BUDGET.match(message)
    if m:
        return f"budget exceeded ({m.group(1)})"
    m = _CAP.match(message)
    return f"spend cap {m.group(1)}" if m else "budget exceeded"


def _where(step: str | None, record: RunRecord, entries: Iterable[JournalEntry]) -> str:
    """Where a run failed, from its step key: the tool, the model, or the step's name."""
    if not step:
        return "-"
    tool = _TOOL.findall(step)
    if tool:
        return f"tool {tool[-1]}"
    last = step.rsplit("/", 1)[-1].split("#", 1)[0]
    if last == "model":
        names = {e.name for e in entries if e.key.startswith(f"{step}/attempt")}
        meta = record.metadata.get("model") if isinstance(record.metadata, dict) else None
        model = next(iter(sorted(names)), None) or (meta if isinstance(meta, str) else None)
        return f"model {model}" if model else "model"
    if last.startswith("guard:"):
        return _PLACES.get(last.removeprefix("guard:"), last)
    return last or "-"


def _place(e: JournalEntry) -> str:
    place = str(e.data.get("place") or "") if isinstance(e.data, dict) else ""
    text = _PLACES.get(place, place or "-")
    if place in ("tool_output", "tool_args"):
        tool = _TOOL.findall(e.key)
        return f"{text} {tool[-1]}" if tool else text
    return text
