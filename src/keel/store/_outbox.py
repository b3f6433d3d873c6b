"""The outbox: run events written in the same transaction as the journal record they report.

A store with its outbox switched on (``open_store(url, outbox=True)``) adds an
:class:`Event` row for each write that is an event (a run started, finished or suspended; a
tool called; an approval requested or decided; an escalation) inside that write's own
transaction, so an event exists exactly when its step does: a crash loses neither, and no
event is published for a step that did not happen. ``keel.events.Relay`` moves the rows to
an event bus and marks them published; delivery is at least once, and the event's ``id`` is
stable, so consumers de-duplicate by it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from keel.core import UserError

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
