"""Escalation to a human: when a run hands itself over, what the person gets, and the decision.

An :class:`EscalationPolicy` says when a run stops and asks a person: the user asked for one
(``human_requested``), the input is something the agent was not built for (``novel_input``),
the final answer's confidence is too low (``low_confidence``), the agent kept failing
(``repeated_failure``) or ran out of budget (``budget_exhausted``); code (a tool, a router)
may also raise :class:`keel.Escalate` itself. Each check returns the ``Escalate`` signal to
raise, or None.

Like an approval, an escalation is a journal step that waits: the run writes the *packet*
(:func:`build_packet`: the request, what the agent did and found, the evidence, its proposal,
why it escalated, the SLA) as the step's intent, puts an ``escalation``
:class:`~keel.store.HumanTask` and suspends. :func:`resolve_escalation` (``keel escalations
resolve``) writes the person's decision as the step's result, atomically with the task:

* ``answer``: the person's answer becomes the run's output; the run is completed;
* ``resume``: the run wakes and the agent continues, with the person's note as guidance;
* ``dismiss``: the run is closed as ``cancelled`` with the person's comment as the reason.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias, TypeGuard

from keel.core import (
    BudgetExceeded,
    ConfigError,
    Escalate,
    RepeatedFailure,
    TaskConflict,
    UserError,
    dumps,
    redact,
    to_text,
)
from keel.runtime._approvals import decision_seq, owner_of
from keel.runtime._engines import notify_engine
from keel.store import (
    TERMINAL_STATUSES,
    HumanTask,
    JournalEntry,
    RunRecord,
    RunStore,
    required_store,
    resolve_task,
    scoped,
    store_moved,
    who_acted,
)

#: ``scorer(output) -> confidence in [0, 1] | None`` (None: no opinion).
ConfidenceScorer: TypeAlias = Callable[[Any], "float | None"]
#: ``novelty(input_text) -> reason | None``: a reason when the agent was not built for it.
NoveltyCheck: TypeAlias = Callable[[str], "str | None"]
#: ``scrub(value, record) -> value``: rewrites what goes into a packet (the run's input, each
#: journal entry's data, the reason and the proposal) before it is stored (the
#: security layer's personal-data policy makes one: ``keel.guard.DataPolicy.packet_scrubber``).
PacketScrubber: TypeAlias = Callable[[Any, RunRecord], Any]
EscalationAction: TypeAlias = Literal["answer", "resume", "dismiss"]
ESCALATION_ACTIONS: tuple[EscalationAction, ...] = ("answer", "resume", "dismiss")

#: Requests for a person, matched case-insensitively. Each needs a verb or an adjective
#: around the noun, so "my manager", "the agent field" or "human error" do not match.
DEFAULT_HUMAN_PHRASES: tuple[str, ...] = (
    r"\b(talk|speak|chat)\s+(to|with)\s+(a|an|some|your|the)?\s*(real\s+|live\s+|actual\s+)?"
    r"(human|person|people|someone|somebody)\b",
    r"\b(talk|speak|chat)\s+(to|with)\s+(a|an|your|the)\s+(real\s+|live\s+|human\s+)?"
    r"(agent|representative|rep|operator|supervisor|manager)\b",
    r"\b(real|live|actual)\s+(human|person)\b",
    r"\b(human|live)\s+(agent|representative|operator|support)\b",
    r"\b(transfer|connect|put)\s+me\s+(through\s+)?(to|with)\s+(a|an|your|the)\s+"
    r"(human|person|agent|representative|operator|supervisor|manager)\b",
    r"\b(i\s+(want|need|demand)|let\s+me\s+(talk|speak)\s+to|get\s+me)\s+(a|an|your|the)\s+"
    r"(human|manager|supervisor)\b",
)

# Packet limits: what a person reads in five minutes, and what a store row can carry.
PACKET_MAX_BYTES = 20_000
_MAX_EVIDENCE = 6
_LIMITS = {"request": 3000, "summary": 4000, "proposal": 3000, "reason": 1000,
           "content": 2000, "arguments": 600, "line": 240}
_SCALES = (1.0, 0.5, 0.25, 0.1, 0.03)
#: Longest answer, note or comment a person may give (characters).
MAX_DECISION_TEXT = 65_536


@dataclass(frozen=True, kw_only=True)
class EscalationPolicy:
    """When a run hands itself to a person. A policy built with defaults escalates when the
    user asks for a person, on a repeated failure and on an exhausted budget;
    ``min_confidence`` and ``novelty`` switch on the other checks. (An Agent given no policy
    escalates only when the user asks for a person: its failures fail the run, resumable, as
    before.) Packets go to ``queue`` with an SLA of ``sla_seconds`` (None: no deadline).
    ``EscalationPolicy.off()`` switches escalation off (explicitly).

    ``confidence`` scores the final output (0..1, None for no opinion); by default it reads a
    ``confidence`` attribute or key of the output, if it holds a number from 0 to 1.
    ``human_phrases`` are regular expressions (case-insensitive) on the input that mean "let
    me talk to a person".

    ``scrub_packet(value, record)`` rewrites what goes into a packet (the run's input, the
    journal's data, the reason, the proposal) before it is cut to size and stored (the
    journal's intent and the human task carry the same packet), e.g. to mask personal data:
    ``EscalationPolicy(scrub_packet=keel.guard.DataPolicy().packet_scrubber())``. A scrubber
    that fails leaves that value out rather than store it unscrubbed."""

    queue: str = "support"
    sla_seconds: float | None = 4 * 3600.0
    min_confidence: float | None = None
    confidence: ConfidenceScorer | None = None
    human_phrases: tuple[str, ...] = DEFAULT_HUMAN_PHRASES
    novelty: NoveltyCheck | None = None
    on_repeated_failure: bool = True
    on_budget_exhausted: bool = True
    enabled: bool = True
    scrub_packet: PacketScrubber | None = None
    _patterns: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False,
                                                   default=())

    def __post_init__(self) -> None:
        if not isinstance(self.queue, str) or not self.queue.strip():
            raise ConfigError("EscalationPolicy.queue", "must be a non-empty queue name")
        if self.sla_seconds is not None and not (
                _is_number(self.sla_seconds) and self.sla_seconds > 0):
            raise ConfigError("EscalationPolicy.sla_seconds",
                              f"must be > 0 seconds or None, not {self.sla_seconds!r}")
        if self.min_confidence is not None and not (
                _is_number(self.min_confidence) and 0.0 <= self.min_confidence <= 1.0):
            raise ConfigError("EscalationPolicy.min_confidence",
                              f"must be a number from 0 to 1 or None, not "
                              f"{self.min_confidence!r}")
        for name in ("confidence", "novelty", "scrub_packet"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ConfigError(f"EscalationPolicy.{name}", "must be a function or None")
        for name in ("on_repeated_failure", "on_budget_exhausted", "enabled"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"EscalationPolicy.{name}", "must be True or False")
        object.__setattr__(self, "_patterns", _compile(self.human_phrases))
        object.__setattr__(self, "human_phrases", tuple(self.human_phrases))

    @classmethod
    def off(cls) -> EscalationPolicy:
        return cls(enabled=False)

    # ------------------------------------------------------------------------ checks

    def check_input(self, text: str) -> Escalate | None:
        """Before the agent starts: did the user ask for a person, or is this something the
        agent was not built for?"""
        if not self.enabled:
            return None
        if not isinstance(text, str):
            text = dumps(text)
        for pattern in self._patterns:
            found = pattern.search(text)
            if found is not None:
                said = _clip(" ".join(found.group().split()), 80)
                return Escalate(f"the user asked for a person ({said!r})",
                                trigger="human_requested", queue=self.queue)
        if self.novelty is not None:
            reason = self.novelty(text)
            if reason:
                return Escalate(f"the request is outside what this agent handles: {reason}",
                                trigger="novel_input", queue=self.queue)
        return None

    def check_output(self, output: Any) -> Escalate | None:
        """After the final answer: is the agent sure enough to send it? A low score
        escalates with the answer as the proposal for the person to check."""
        if not self.enabled or self.min_confidence is None:
            return None
        if self.confidence is not None:
            score = self.confidence(output)
            if score is not None and not (_is_number(score) and 0.0 <= score <= 1.0):
                raise ConfigError("EscalationPolicy.confidence",
                                  f"the scorer returned {score!r}; it must return a number "
                                  "from 0 to 1, or None for no opinion")
        else:
            score = read_confidence(output)
        if score is None or score >= self.min_confidence:
            return None
        return Escalate(f"confidence {score:.2f} is below the threshold "
                        f"{self.min_confidence:.2f}", trigger="low_confidence",
                        queue=self.queue, proposal=to_text(output, indent=2))

    def from_failure(self, exc: BaseException) -> Escalate | None:
        """A failure a person can rescue: the agent kept failing, or its budget ran out.
        Other failures are None (they fail the run as usual)."""
        if not self.enabled:
            return None
        if isinstance(exc, RepeatedFailure) and self.on_repeated_failure:
            return Escalate(f"the agent kept failing: {exc.message}",
                            trigger="repeated_failure", queue=self.queue)
        if isinstance(exc, BudgetExceeded) and self.on_budget_exhausted:
            return Escalate(f"the run's {exc.limit} budget ran out ({_amount(exc.used)} of "
                            f"{_amount(exc.allowed)} used)",
                            trigger="budget_exhausted", queue=self.queue)
        return None


def _compile(phrases: Any) -> tuple[re.Pattern[str], ...]:
    if isinstance(phrases, str) or not isinstance(phrases, Sequence):
        raise ConfigError("EscalationPolicy.human_phrases",
                          "must be a tuple of regular expressions")
    patterns = []
    for phrase in phrases:
        if not isinstance(phrase, str) or not phrase:
            raise ConfigError("EscalationPolicy.human_phrases",
                              f"{phrase!r} is not a non-empty regular expression")
        try:
            patterns.append(re.compile(phrase, re.IGNORECASE))
        except re.error as exc:
            raise ConfigError("EscalationPolicy.human_phrases",
                              f"{phrase!r} is not a valid regular expression: {exc}") from None
    return tuple(patterns)


def _is_number(value: Any) -> TypeGuard[float]:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _amount(value: float) -> str:
    if not _is_number(value):
        return str(value)
    if float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.4f}".rstrip("0")


def read_confidence(output: Any) -> float | None:
    """The default scorer: a ``confidence`` key or attribute holding a number from 0 to 1
    (anything else is no opinion)."""
    if isinstance(output, Mapping):
        value = output.get("confidence")
    else:
        value = getattr(output, "confidence", None)
    if _is_number(value) and 0.0 <= value <= 1.0:
        return float(value)
    return None


def escalation_id(run_id: str, key: str) -> str:
    """Deterministic, so a packet re-made after a crash keeps its id."""
    digest = hashlib.blake2b(f"{run_id}\x00{key}".encode(), digest_size=6).hexdigest()
    return f"es-{digest}"


# -------------------------------------------------------------------------------- packet


def build_packet(record: RunRecord, entries: Sequence[JournalEntry], exc: Escalate,
                 policy: EscalationPolicy, *, key: str, now: float) -> dict[str, Any]:
    """What a person needs to act within five minutes, built from the run and its journal:
    the request, a summary of what the agent did and found, the tool results as evidence,
    the agent's proposal, why it escalated, and the deadline. Deterministic for the same
    inputs, secrets masked, and under :data:`PACKET_MAX_BYTES` of JSON however long the
    journal (older steps and long values are cut first)."""
    scrub = policy.scrub_packet
    if scrub is not None:  # scrub the sources, so that no value is cut before it is found
        record = replace(record, input=_scrubbed(scrub, record.input, record))
        entries = [replace(e, data=_scrubbed(scrub, e.data, record)) for e in entries]
    facts = _JournalFacts(entries)
    packet: dict[str, Any] = {}
    for scale in _SCALES:
        packet = redact(_packet(record, facts, exc, policy, key=key, now=now, scale=scale))
        packet.update(owner_of(record))
        if scrub is not None:  # what came from elsewhere: the reason, the proposal
            packet.update({k: _scrubbed(scrub, packet[k], record) for k in _CONTENT})
        if packet_size(packet) <= PACKET_MAX_BYTES:
            break
    return packet


_CONTENT = ("request", "reason", "summary", "evidence", "proposal")


def packet_value(policy: EscalationPolicy, value: Any, record: RunRecord) -> Any:
    """``value`` as it may go into a packet of ``policy`` (for what a caller adds to one)."""
    return value if policy.scrub_packet is None else _scrubbed(policy.scrub_packet, value,
                                                                 record)


def _scrubbed(scrub: PacketScrubber, value: Any, record: RunRecord) -> Any:
    """``scrub(value, record)``; if the scrubber fails, a note in place of the value (a person
    still gets the escalation, and reads the run itself)."""
    try:
        return scrub(value, record)
    except Exception as exc:
        return f"[WITHHELD: the packet scrubber failed: {type(exc).__name__}]"


def packet_size(packet: Mapping[str, Any]) -> int:
    """The packet's size as stored (UTF-8 JSON bytes)."""
    return len(dumps(packet).encode())


def _packet(record: RunRecord, facts: _JournalFacts, exc: Escalate, policy: EscalationPolicy,
            *, key: str, now: float, scale: float) -> dict[str, Any]:
    def limit(name: str) -> int:
        return max(40, int(_LIMITS[name] * scale))

    evidence = facts.evidence(limit("content"), limit("arguments"),
                              max(1, round(_MAX_EVIDENCE * min(1.0, scale * 1.5))))
    proposal = exc.proposal if exc.proposal is not None else facts.last_text
    return {
        "escalation_id": exc.escalation_id or escalation_id(record.run_id, key),
        "run_id": record.run_id,
        "agent": record.agent,
        "step_key": key,
        "request": _bounded(record.input, limit("request")),
        "reason": _clip(str(exc.reason), limit("reason")),
        "trigger": exc.trigger,
        "queue": exc.queue or policy.queue,
        "summary": facts.summary(limit("summary"), limit("line"), record.run_id),
        "evidence": evidence,
        "evidence_omitted": facts.tool_results - len(evidence),
        "proposal": None if not proposal else _clip(proposal, limit("proposal")),
        "steps": facts.steps,
        "usage": _usage(record, facts),
        "created_at": now,
        "due_at": None if policy.sla_seconds is None else now + policy.sla_seconds,
    }


class _JournalFacts:
    """What the journal says the agent did: summary lines, tool results, the last text."""

    def __init__(self, entries: Sequence[JournalEntry]) -> None:
        ordered = sorted(entries, key=lambda e: e.seq)
        results = {e.key for e in ordered if e.phase == "result"}
        self.steps = len(results)
        self.last_text = ""
        self._arguments: dict[str, str] = {}
        self._events: list[tuple[str, JournalEntry]] = []
        self._tools: list[JournalEntry] = []
        for e in ordered:
            data = e.data if isinstance(e.data, dict) else {}
            if e.kind == "model" and e.phase == "result":
                self._note_calls(e.key, data)
                text = _model_text(data)
                if text.strip():
                    self.last_text = text.strip()
                self._events.append(("model", e))
            elif e.kind == "tool" and e.phase == "intent":
                if isinstance(data.get("arguments"), str):
                    self._arguments[e.key] = data["arguments"]
                if e.key not in results:
                    self._events.append(("unknown", e))
            elif e.phase == "result":
                if e.kind == "tool":
                    self._tools.append(e)
                self._events.append((e.kind, e))
        self.tool_results = len(self._tools)

    def _note_calls(self, key: str, data: dict[str, Any]) -> None:
        """Remember each tool call's arguments under the key its tool step gets
        (``.../turn:N/model`` calls ``NAME`` -> ``.../turn:N/tool:NAME#I``)."""
        if not key.endswith("/model") and key != "model":
            return
        prefix = key[: -len("model")]
        counts: dict[str, int] = {}
        for part in _parts(data):
            if part.get("type") == "tool_call":
                name = str(part.get("tool_name", ""))
                n = counts.get(name, 0)
                counts[name] = n + 1
                self._arguments.setdefault(f"{prefix}tool:{name}#{n}",
                                           str(part.get("arguments", "")))

    def evidence(self, content_limit: int, args_limit: int, count: int) -> list[dict[str, Any]]:
        """The most recent ``count`` tool results, oldest first."""
        out = []
        for e in self._tools[-count:]:
            data = e.data if isinstance(e.data, dict) else {}
            failure = data.get("failure")
            out.append({
                "step_key": _clip(e.key, 200), "tool": _clip(e.name, 100),
                "arguments": _arguments_value(self._arguments.get(e.key), args_limit),
                "content": _clip(str(data.get("content", "")), content_limit),
                "is_error": isinstance(failure, dict),
            })
        return out

    def summary(self, limit: int, line_limit: int, run_id: str) -> str:
        """What the agent did and found, one line per step; the start and the most recent
        steps when it is too long."""
        lines: list[str] = []
        for kind, e in self._events:
            lines.extend(self._describe(kind, e, line_limit))
        if not lines:
            return "The agent took no steps before it escalated."
        return _fit_lines(lines, limit, run_id)

    def _describe(self, kind: str, e: JournalEntry, width: int) -> list[str]:
        data = e.data if isinstance(e.data, dict) else {}
        where, name = _where(e.key), _clip(e.name, 100)
        if kind == "model":
            out = []
            text = _model_text(data)
            if text.strip():
                out.append(f"{where}: the agent said: {_line(text, width)}")
            out.extend(f"{where}: it called {_clip(str(part.get('tool_name', '?')), 100)} "
                       f"{_line(str(part.get('arguments', '')), width // 2)}"
                       for part in _parts(data) if part.get("type") == "tool_call")
            return out
        if kind == "tool":
            failure = data.get("failure")
            if isinstance(failure, dict):
                return [f"{where}: {name} failed: {failure.get('error_type', 'error')}: "
                        f"{_line(str(failure.get('message', '')), width)}"]
            return [f"{where}: {name} returned: {_line(str(data.get('content', '')), width)}"]
        if kind == "unknown":
            return [f"{where}: {name} started but its outcome was never recorded"]
        if kind == "approval":
            verdict = "approved" if data.get("approved") else "denied"
            comment = str(data.get("comment") or "")
            return [f"{where}: a person {verdict} the {name} call"
                    + (f" ({_line(comment, width // 2)})" if comment else "")]
        if kind == "escalation":
            return [f"{where}: an earlier escalation ({name}) was resolved: "
                    f"{data.get('action', '?')}"]
        return [f"{where}: {_clip(e.kind, 40)} step {name}"]


def _parts(data: dict[str, Any]) -> list[dict[str, Any]]:
    parts = data.get("parts")
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _model_text(data: dict[str, Any]) -> str:
    return "".join(str(p.get("text", "")) for p in _parts(data) if p.get("type") == "text")


def _where(key: str) -> str:
    """``support/turn:3/tool:refund#0`` -> ``turn 3``; other keys as they are."""
    for part in key.split("/"):
        if part.startswith("turn:"):
            return _clip("turn " + part[len("turn:"):], 40)
    return _clip(key, 120)


def _fit_lines(lines: list[str], limit: int, run_id: str) -> str:
    text = "\n".join(lines)
    if len(text) <= limit:
        return text
    head_budget, tail_budget = limit // 4, max(0, limit - limit // 4 - 120)
    head: list[str] = []
    used = 0
    for line in lines:
        if used + len(line) + 1 > head_budget:
            break
        head.append(line)
        used += len(line) + 1
    tail: list[str] = []
    used = 0
    for line in reversed(lines[len(head):]):
        if used + len(line) + 1 > tail_budget:
            break
        tail.append(line)
        used += len(line) + 1
    tail.reverse()
    skipped = len(lines) - len(head) - len(tail)
    gap = (f"… {skipped} more lines not shown (`keel runs show {_clip(run_id, 40)}` has the "
           "whole journal) …")
    return "\n".join([*head, gap, *tail])


def _arguments_value(raw: str | None, limit: int) -> Any:
    """A call's arguments: parsed JSON when short enough, else the clipped text."""
    if raw is None:
        return None
    if len(raw) <= limit:
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return _clip(raw, limit)


def _bounded(value: Any, limit: int) -> Any:
    """A JSON value kept whole when small, else as clipped text."""
    if isinstance(value, str):
        return _clip(value, limit)
    text = dumps(value)
    return value if len(text) <= limit else _clip(text, limit)


def _usage(record: RunRecord, facts: _JournalFacts) -> dict[str, Any]:
    usage = record.usage if isinstance(record.usage, dict) else {}
    kept = {str(k): v for k, v in list(usage.items())[:20] if _is_number(v)}
    return kept or {"steps": facts.steps}


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters]"


def _line(text: str, limit: int) -> str:
    return _clip(" ".join(text.split()), limit)


def escalation_task(packet: Mapping[str, Any]) -> HumanTask:
    """The queue item for a packet (its data is the packet)."""
    return HumanTask(task_id=packet["escalation_id"], run_id=packet["run_id"],
                     kind="escalation", step_key=packet["step_key"], queue=packet["queue"],
                     status="open", created_at=packet["created_at"],
                     due_at=packet.get("due_at"), data=dict(packet))


# ---------------------------------------------------------------------------- decisions


async def claim_escalation(escalation_id: str, who: str, _old: str | None = None, /, *,
                           store: RunStore | None = None,
                           tenant: str | None = None) -> HumanTask:
    """Take an escalation for ``who`` so that colleagues see someone is on it. Raises
    TaskNotFound, and TaskConflict if it is resolved or someone else holds it. With
    ``tenant``, the store's reads and writes are scoped to that tenant's runs: another
    tenant's escalation is TaskNotFound, and is left as it was.
    (``claim_escalation(store, escalation_id, who)`` is the deprecated form.)"""
    (escalation_id, who), given = store_moved("claim_escalation", [escalation_id, who], _old,
                                              store)
    store = required_store("claim_escalation", given)
    task = await _escalation(store, escalation_id, tenant)
    if task.status == "resolved":
        raise TaskConflict(f"escalation {escalation_id} was already resolved by "
                           f"{task.by}; nothing was changed.")
    _check_text("who claims it (--by)", who, required=True, limit=200)
    return await store.claim_task(escalation_id, who.strip(),
                                  **scoped(store.claim_task, tenant))


async def resolve_escalation(escalation_id: str, _old: str | None = None, /, *,
                             store: RunStore | None = None, by: str | None = None,
                             action: str, answer: Any = None, note: str | None = None,
                             comment: str | None = None,
                             resolved_by: str | None = None,
                             tenant: str | None = None) -> HumanTask:
    """Record the decision of ``by`` (who resolves it; audited) on an escalation; see the
    module docstring for what each action does to the run. Refuses, changing nothing: an
    unknown id (TaskNotFound), a resolved escalation or a finished run (TaskConflict), an
    unknown action, a missing answer or dismissal comment, ``resume`` after an exhausted
    budget (UserError). With ``tenant``, every read and write of the store is scoped to that
    tenant's runs (in the store's queries): another tenant's escalation, or one of a run
    without a tenant, is TaskNotFound, as an unknown id. ``resolved_by=`` is the deprecated
    name of ``by=``, and ``resolve_escalation(store, escalation_id, ...)`` the deprecated
    form of the call."""
    (escalation_id,), given = store_moved("resolve_escalation", [escalation_id], _old, store)
    store = required_store("resolve_escalation", given)
    by = who_acted(by, resolved_by, "resolved_by")
    task = await _escalation(store, escalation_id, tenant)
    if task.status == "resolved":
        raise TaskConflict(f"escalation {escalation_id} was already resolved by "
                           f"{task.by}; nothing was changed.")
    _check_text("who resolves it (by= / --by)", by, required=True, limit=200)
    packet: dict[str, Any] = task.data if isinstance(task.data, dict) else {}
    trigger = str(packet.get("trigger") or "requested")
    _check_decision(escalation_id, action, trigger, answer=answer, note=note, comment=comment)
    record = await store.get_run(task.run_id, **scoped(store.get_run, tenant))
    if record.status in TERMINAL_STATUSES:
        raise TaskConflict(f"run {record.run_id} is {record.status}; nothing waits for "
                           f"escalation {escalation_id} any more. Nothing was changed.")
    now = time.time()
    by = by.strip()
    decision = {"action": action, "answer": answer, "note": note, "comment": comment,
                "by": by, "resolved_at": now}
    journal = await store.read_journal(task.run_id, **scoped(store.read_journal, tenant))
    intent = next((e for e in journal if e.key == task.step_key and e.phase == "intent"), None)
    entry = JournalEntry(
        seq=decision_seq(journal, intent), key=task.step_key, phase="result",
        kind="escalation", name=trigger,
        input_hash=intent.input_hash if intent is not None else "", data=decision,
        created_at=now)
    close: RunRecord | None = None
    if action == "answer":
        close = record.with_status("completed", output=answer, error=None, updated_at=now)
    elif action == "dismiss":
        close = record.with_status("cancelled", output=None, updated_at=now, error={
            "type": "EscalationDismissed", "message": comment, "step_key": task.step_key,
            "retryable": False, "by": by})
    done = await resolve_task(store, escalation_id, decision, by=by, entry=entry, close=close,
                              tenant=tenant)
    await notify_engine(store, task.run_id)
    return done


async def _escalation(store: RunStore, escalation_id: str, tenant: str | None) -> HumanTask:
    task = await store.get_task(escalation_id, **scoped(store.get_task, tenant))
    if task.kind != "escalation":
        raise UserError(f"{escalation_id} is an approval, not an escalation; use `keel "
                        "approvals approve` or `keel approvals deny`.")
    return task


def _check_decision(escalation_id: str, action: str, trigger: str, *, answer: Any,
                    note: str | None, comment: str | None) -> None:
    if action not in ESCALATION_ACTIONS:
        raise UserError(f"unknown action {action!r}; use one of {', '.join(ESCALATION_ACTIONS)}.")
    if action == "answer":
        if answer is None or (isinstance(answer, str) and not answer.strip()):
            raise UserError("an answer is needed: it becomes the run's output (--answer TEXT).")
        _check_size("the answer", answer)
    elif answer is not None:
        raise UserError(f"an answer only goes with the answer action, not {action}.")
    if note is not None:
        if action != "resume":
            raise UserError(f"a note is guidance for a resumed agent; it does not go with "
                            f"{action}.")
        _check_text("the note", note, required=False, limit=MAX_DECISION_TEXT)
    if comment is not None:
        _check_text("the comment", comment, required=False, limit=MAX_DECISION_TEXT)
    if action == "dismiss" and not (comment or "").strip():
        raise UserError("dismissing needs a comment: it is recorded as the reason the run was "
                        "closed (--comment TEXT).")
    if action == "resume" and trigger == "budget_exhausted":
        raise UserError(
            f"escalation {escalation_id} was raised because the run's budget ran out; resuming "
            "it would stop again at once. Answer it (--answer TEXT: the reply becomes the run's "
            "output) or dismiss it (--dismiss --comment TEXT).")


def _check_text(what: str, value: Any, *, required: bool, limit: int) -> None:
    if not isinstance(value, str):
        raise UserError(f"{what} must be text, not {type(value).__name__}.")
    if required and not value.strip():
        raise UserError(f"say {what}; the decision is audited." if what.startswith("who")
                        else f"{what} must not be empty.")
    if len(value) > limit:
        raise UserError(f"{what} is {len(value):,} characters long; at most {limit:,} are "
                        "accepted. Nothing was changed.")


def _check_size(what: str, value: Any) -> None:
    if isinstance(value, str):
        _check_text(what, value, required=True, limit=MAX_DECISION_TEXT)
        return
    try:
        size = len(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError):
        raise UserError(f"{what} must be text or JSON data, not {type(value).__name__}.") from None
    if size > MAX_DECISION_TEXT:
        raise UserError(f"{what} is {size:,} characters of JSON; at most "
                        f"{MAX_DECISION_TEXT:,} are accepted. Nothing was changed.")
