"""The outbox: run events written in the same transaction as the journal record they report.

A store with its outbox switched on (``open_store(url, outbox=True)``) adds an
:class:`Event` row for each write that is an event (a run started, finished or suspended; a
tool called; an approval requested or decided; an escalation) inside that write's own
transaction, so an event exists exactly when its step does: a crash loses neither, and no
event is published for a step that did not happen. ``keel.events.Relay`` moves the rows to
an event bus and marks them published; delivery is at least once, and the event's ``id`` is
stable, so consumers de-duplicate by it.

The events (``data`` keys in brackets; every event also carries ``run_id``, ``agent``,
``tenant`` and ``time``):

=======================  ==================================  ===============================
type                     written by                          id
=======================  ==================================  ===============================
run.started              create_run [agent, conversation]    ``<run>:started``
tool.called              a tool step's result entry          ``<run>:<seq>:result``
                         [tool, step_key, ok, error_type,
                         latency_ms]
approval.requested       put_task (approval) [task_id,       ``<task>:requested``
                         step_key, queue, due_at, tool]
run.escalated            put_task (escalation) [task_id,     ``<task>:requested``
                         step_key, queue, due_at, trigger]
run.suspended            suspend_run / a record written as   ``<run>:suspended:<digest of the
                         suspended [waiting_on]              tasks waited on>``
approval.decided         resolve_task [task_id, step_key,    ``<task>:decided``
                         by, approved, edited]
escalation.resolved      resolve_task [task_id, step_key,    ``<task>:decided``
                         by, action]
run.completed / failed   a record written with that status   ``<run>:<status>``
/ cancelled              [status, usage, error_type]
=======================  ==================================  ===============================

Never in an event: tool arguments or output, the run's input or output, comments.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.core import ConfigError, UserError

#: An event type: lower-case words joined by dots, underscores or dashes (``run.completed``,
#: ``order_processed``); a NATS subject token and a Redis field alike.
TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$")
MAX_TYPE_CHARS = 128
MAX_EVENT_ID_CHARS = 256


def check_event_type(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_TYPE_CHARS or \
            not TYPE_PATTERN.match(value):
        raise UserError(f"event type {str(value)[:80]!r} is not valid: use lower-case words "
                        "joined by dots, underscores or dashes (e.g. 'order_processed', "
                        f"'run.completed'), at most {MAX_TYPE_CHARS} characters.")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One event on the bus.

    ``id`` is unique and stable: keel's own run events derive it from the run and the
    journal record (``<run_id>:<seq>:<phase>`` or ``<run_id>:<what>``), so a redelivered or
    re-published event carries the same id and consumers de-duplicate by it. ``type`` is what
    happened (``run.completed``, or an application's ``order_processed``); ``data`` is a JSON
    object; ``time`` is when it was written (epoch seconds). ``run_id``, ``agent`` and
    ``tenant`` say whose run it is for keel's run events (None for an application's own).
    """

    id: str
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    time: float = 0.0
    run_id: str | None = None
    agent: str | None = None
    tenant: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not 0 < len(self.id) <= MAX_EVENT_ID_CHARS:
            raise UserError(f"an event id must be a non-empty string of at most "
                            f"{MAX_EVENT_ID_CHARS} characters, not {str(self.id)[:80]!r}")
        check_event_type(self.type)
        if not isinstance(self.data, dict):
            raise UserError(f"an event's data must be a JSON object (a dict), not "
                            f"{type(self.data).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "data": self.data, "time": self.time,
                "run_id": self.run_id, "agent": self.agent, "tenant": self.tenant}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode()

    @classmethod
    def from_dict(cls, raw: Any) -> Event:
        """An event from its JSON form; anything else is a :class:`keel.UserError` that says
        what is wrong (never a KeyError or a TypeError)."""
        if not isinstance(raw, dict):
            raise UserError(f"an event must be a JSON object, not {type(raw).__name__}")
        unknown = set(raw) - {"id", "type", "data", "time", "run_id", "agent", "tenant"}
        if unknown:
            raise UserError(f"an event has unknown fields: {', '.join(sorted(unknown))[:200]}")
        for name in ("run_id", "agent", "tenant"):
            if raw.get(name) is not None and not isinstance(raw[name], str):
                raise UserError(f"an event's {name} must be a string or null")
        when = raw.get("time", 0.0)
        if isinstance(when, bool) or not isinstance(when, int | float):
            raise UserError("an event's time must be a number (epoch seconds)")
        return cls(id=raw.get("id"), type=raw.get("type"),  # type: ignore[arg-type]
                   data=raw.get("data", {}), time=float(when), run_id=raw.get("run_id"),
                   agent=raw.get("agent"), tenant=raw.get("tenant"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Event:
        try:
            decoded = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"an event is not valid JSON: {exc}") from None
        return cls.from_dict(decoded)


# ------------------------------------------------------------------ the run events, derived
#
# One pure function per kind of store write; every backend calls these and writes what they
# return in the write's own transaction. Event ids are a function of the write's content
# (the run, the journal record, the task), so a write executed again can only produce ids
# already stored: the outbox keeps the first (its event id is unique) and ignores the rest.
# ``agent`` and ``tenant`` are filled in by the backend from the run's row.

#: The event types keel itself writes.
RUN_EVENT_TYPES = ("run.started", "run.completed", "run.failed", "run.cancelled",
                   "run.suspended", "run.escalated", "approval.requested", "approval.decided",
                   "escalation.resolved", "tool.called")
_TERMINAL = frozenset({"completed", "failed", "cancelled"})


def event_id(*parts: object) -> str:
    """``parts`` joined by ``:``; an id longer than :data:`MAX_EVENT_ID_CHARS` (a run or task
    id of a third-party caller may be long) keeps its head and ends in a digest of the
    whole, so it stays deterministic and unique and the write it reports never fails."""
    joined = ":".join(str(p) for p in parts)
    if len(joined) <= MAX_EVENT_ID_CHARS:
        return joined
    digest = hashlib.sha256(joined.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{joined[:MAX_EVENT_ID_CHARS - 34]}~{digest}"


def _of(run: Any) -> dict[str, Any]:
    return {"run_id": run.run_id, "agent": getattr(run, "agent", None),
            "tenant": getattr(run, "tenant", None)}


def run_started(record: Any) -> Event:
    """``create_run``: the run exists."""
    return Event(id=event_id(record.run_id, "started"), type="run.started", time=record.created_at,
                 data={"agent": record.agent, "conversation": record.conversation},
                 **_of(record))


def run_status(record: Any, *, waiting_on: Collection[str] = ()) -> Event | None:
    """A write of ``record`` (``update_run``, ``finish_run``, ``suspend_run``, the ``close``
    of ``resolve_task``): ``run.completed|failed|cancelled`` for a terminal status (its id is
    the run and the status, so a run reports each end once, however often the record is
    written), ``run.suspended`` for ``suspended`` (its id names the tasks it waits for), else
    None."""
    status = record.status
    if status in _TERMINAL:
        error = record.error if isinstance(record.error, dict) else {}
        data: dict[str, Any] = {"status": status, "usage": _small(record.usage)}
        if status != "completed":
            data["error_type"] = error.get("type")
        return Event(id=event_id(record.run_id, status), type=f"run.{status}",
                     time=record.updated_at, data=data, **_of(record))
    if status == "suspended":
        waits = sorted(waiting_on)
        tag = hashlib.sha256("\n".join(waits).encode()).hexdigest()[:16] if waits else "signal"
        return Event(id=event_id(record.run_id, "suspended", tag), type="run.suspended",
                     time=record.updated_at, data={"waiting_on": waits[:20]}, **_of(record))
    return None


def tool_calls(run_id: str, entries: Sequence[Any], *, agent: str | None = None,
               tenant: str | None = None) -> list[Event]:
    """Appended journal entries: one ``tool.called`` per tool result (the tool, the step,
    whether it succeeded and the error type; never its arguments or output)."""
    out: list[Event] = []
    for e in entries:
        if e.kind != "tool" or e.phase != "result":
            continue
        failure = e.data.get("failure") if isinstance(e.data, dict) else None
        error_type = failure.get("error_type") if isinstance(failure, dict) else None
        out.append(Event(
            id=event_id(run_id, e.seq, "result"), type="tool.called", time=e.created_at,
            data={"tool": e.name, "step_key": e.key, "ok": failure is None,
                  "error_type": error_type if isinstance(error_type, str) else None,
                  "latency_ms": e.latency_ms},
            run_id=run_id, agent=agent, tenant=tenant))
    return out


def task_requested(task: Any, *, agent: str | None = None,
                   tenant: str | None = None) -> Event:
    """``put_task`` that stored a task: ``approval.requested`` or ``run.escalated``."""
    request = task.data if isinstance(task.data, dict) else {}
    data: dict[str, Any] = {"task_id": task.task_id, "step_key": task.step_key,
                            "queue": task.queue, "due_at": task.due_at}
    if task.kind == "approval":
        kind, data["tool"] = "approval.requested", _text(request.get("tool"))
    else:
        kind, data["trigger"] = "run.escalated", _text(request.get("trigger"))
    return Event(id=event_id(task.task_id, "requested"), type=kind, time=task.created_at, data=data,
                 run_id=task.run_id, agent=agent, tenant=tenant)


def task_decided(task: Any, resolution: Any, by: str, when: float, *,
                 agent: str | None = None, tenant: str | None = None) -> Event:
    """``resolve_task``: ``approval.decided`` (approved or not, edited or not, by whom) or
    ``escalation.resolved`` (the action, by whom); never the comment or the arguments."""
    decided = resolution if isinstance(resolution, dict) else {}
    data: dict[str, Any] = {"task_id": task.task_id, "step_key": task.step_key, "by": by}
    if task.kind == "approval":
        kind = "approval.decided"
        data["approved"] = decided.get("approved") is True
        data["edited"] = decided.get("edited") is True
    else:
        kind, data["action"] = "escalation.resolved", _text(decided.get("action"))
    return Event(id=event_id(task.task_id, "decided"), type=kind, time=when, data=data,
                 run_id=task.run_id, agent=agent, tenant=tenant)


def _text(value: Any) -> str | None:
    return value[:200] if isinstance(value, str) else None


def _small(usage: Any) -> dict[str, Any]:
    """The run's totals: numbers only."""
    if not isinstance(usage, dict):
        return {}
    return {k: v for k, v in usage.items()
            if isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)}


# ----------------------------------------------------------------- the relay's arguments

MAX_READ = 10_000


def check_read(after: object, limit: object, claim_s: object) -> tuple[int, int, float]:
    """``read_outbox``'s arguments, checked (a ConfigError names the bad one)."""
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise ConfigError("after", f"must be an outbox position (a whole number >= 0), not "
                          f"{str(after)[:40]!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_READ:
        raise ConfigError("limit", f"must be a whole number from 1 to {MAX_READ}, not "
                          f"{str(limit)[:40]!r}")
    if isinstance(claim_s, bool) or not isinstance(claim_s, int | float) or \
            not 0 < claim_s <= 86_400:
        raise ConfigError("claim_s", f"must be a number of seconds from 0 to 86400, not "
                          f"{str(claim_s)[:40]!r}")
    return after, limit, float(claim_s)


def check_positions(positions: object) -> list[int]:
    """``mark_published``'s positions: whole numbers (at most :data:`MAX_READ`)."""
    if isinstance(positions, str | bytes) or not isinstance(positions, Collection):
        raise ConfigError("positions", "must be a collection of outbox positions (ints)")
    if len(positions) > MAX_READ:
        raise ConfigError("positions", f"at most {MAX_READ} positions at once, not "
                          f"{len(positions)}")
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in positions):
        raise ConfigError("positions", "every outbox position is a whole number")
    return sorted(set(positions))


def check_before(before: object) -> float:
    if isinstance(before, bool) or not isinstance(before, int | float) or \
            not math.isfinite(before):
        raise ConfigError("before", f"must be a time in epoch seconds, not "
                          f"{str(before)[:40]!r}")
    return float(before)
