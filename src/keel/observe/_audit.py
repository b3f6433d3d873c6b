"""The audit trail read from one run's journal: every gated, approved, denied and blocked
high-impact call (``keel audit`` lists them; :func:`keel.observe.failure_modes` counts the
denials among them). Nothing else is kept: the journal is the audit trail.

Outcomes:

- ``gated``: a call waited for approval (the approval gate's request, key ``…/approval``);
- ``approved`` / ``denied``: the decision on it, with who decided and their comment;
- ``denied`` also: a call a tool policy refused (a ``permission_denied`` result, by
  ``tool-policy``);
- ``blocked``: a call a guardrail stopped (a ``guardrail_blocked`` result, by ``guardrail``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from keel.store import JournalEntry, RunRecord

AUDIT_OUTCOMES = ("approved", "denied", "blocked", "gated")
_FAILURES = {"permission_denied": ("denied", "tool-policy"),
             "guardrail_blocked": ("blocked", "guardrail"),
             "approval_denied": ("denied", "reviewer")}


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """One row of the audit trail."""

    at: float
    run_id: str
    agent: str
    step_key: str
    tool: str
    outcome: str
    by: str
    reason: str
    approval_id: str | None = None
    arguments: Any = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at_iso"] = datetime.fromtimestamp(self.at, UTC).isoformat()
        return data


def audit_events_of(record: RunRecord, entries: Iterable[JournalEntry]) -> list[AuditEvent]:
    """The audit events in one run's journal, in journal order."""
    entries = list(entries)
    decided = {e.key.removesuffix("/approval") for e in entries
               if e.phase == "result" and e.key.endswith("/approval")}
    ids = {e.key: e.data.get("approval_id") for e in entries
           if e.phase == "intent" and e.kind == "approval" and isinstance(e.data, dict)}
    out: list[AuditEvent] = []
    for e in entries:
        if e.key.endswith("/approval") and e.kind == "approval":
            event = _approval_event(record, e, _str_or_none(ids.get(e.key)))
        elif e.kind == "tool" and e.phase == "result":
            event = _failure_event(record, e, decided)
        else:
            event = None
        if event is not None:
            out.append(event)
    return out


def _approval_event(record: RunRecord, e: JournalEntry,
                    approval_id: str | None) -> AuditEvent | None:
    data = e.data if isinstance(e.data, dict) else {}
    step = e.key.removesuffix("/approval")
    common: dict[str, Any] = {"at": e.created_at, "run_id": record.run_id,
                              "agent": record.agent, "step_key": step, "tool": e.name,
                              "approval_id": approval_id}
    if e.phase == "intent":
        return AuditEvent(**common, outcome="gated", by="approval-policy",
                          reason=str(data.get("reason") or ""),
                          arguments=data.get("arguments"))
    if e.phase == "result":
        approved = bool(data.get("approved"))
        return AuditEvent(**common, outcome="approved" if approved else "denied",
                          by=str(data.get("by") or data.get("decided_by") or "?"),
                          reason=str(data.get("comment") or ""),
                          arguments=data.get("arguments") if approved else None)
    return None


def _failure_event(record: RunRecord, e: JournalEntry, decided: set[str]) -> AuditEvent | None:
    data = e.data if isinstance(e.data, dict) else {}
    failure = data.get("failure")
    if not isinstance(failure, dict):
        return None
    kind = _FAILURES.get(str(failure.get("error_type")))
    if kind is None:
        return None
    if failure.get("error_type") == "approval_denied" and e.key in decided:
        return None  # the decision itself is the event
    outcome, by = kind
    return AuditEvent(at=e.created_at, run_id=record.run_id, agent=record.agent,
                      step_key=e.key, tool=e.name, outcome=outcome, by=by,
                      reason=str(failure.get("message") or ""))


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
