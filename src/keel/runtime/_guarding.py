"""The guardrail seam: one hook, four places, journaled decisions.

A guard is any :class:`~keel.runtime.Middleware` that overrides ``check``. The runtime asks
the guards of an agent's stack at four places:

* ``input``: the user's message, before the run record is stored (so a redacted input is
  the only one written, and a blocked one is never written);
* ``tool_args``: a tool call's arguments, before the approval gate and the call;
* ``tool_output``: a tool's output, inside the tool step, before it is journaled and before
  the model sees it;
* ``output``: the final answer, inside the model step, before it is journaled and leaves.

Each guard returns a :class:`GuardDecision` (``None`` means allow). Guards run in the
stack's order: a redaction feeds the next guard its redacted text; the first block or
escalate stops the pipeline; an approve goes on (a later guard may still refuse the call) and
is the decision if none does; adjacent guards marked ``guard_concurrent`` are run together
(they detect; they do not redact). A guard that raises or times out *fails closed*: the
decision is a block whose reason names the guard and the error (a ``UserError``, a guard
misconfigured, is raised as it is).

Every decision that is not "allow" is journaled at ``<guarded step>/guard:<place>``, so
resume and replay reproduce it; the record holds the action, the reason, the guard's name and
its evidence, never the clear text of what was blocked or redacted.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, get_args

from keel.core import ConfigError, Message, UserError, redact, redact_text

if TYPE_CHECKING:
    from keel.runtime._journal import Journal
    from keel.tools import Tool

Place: TypeAlias = Literal["input", "tool_args", "tool_output", "output"]
Action: TypeAlias = Literal["allow", "redact", "block", "escalate", "approve"]
BlockType: TypeAlias = Literal["guardrail_blocked", "permission_denied"]
_BLOCK_TYPES: frozenset[str] = frozenset(get_args(BlockType))
PLACES: frozenset[Place] = frozenset(get_args(Place))
_ACTIONS: frozenset[str] = frozenset(get_args(Action))
#: Journal key suffixes, per place (``<step>/guard:<suffix>``).
KEY_SUFFIX: Mapping[Place, str] = {"input": "input", "tool_args": "args",
                                   "tool_output": "output", "output": "answer"}


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardInput:
    """What a guard checks, and where.

    ``text`` is the user's message (``input``), the call's arguments as JSON text
    (``tool_args``), the tool's output as the model would see it (``tool_output``) or the
    final answer: its text, or the ``final_result`` arguments for a typed output
    (``output``). ``tool`` and ``arguments`` (parsed) are set for the two tool places;
    ``history`` is the conversation so far (instructions, the user's messages, the model's
    turns and every tool result the model has seen)."""

    place: Place
    text: str
    run_id: str
    agent: str
    step_key: str
    tool: Tool | None = None
    arguments: Mapping[str, Any] | None = None
    #: The conversation so far, read-only (the run's own list: do not change or keep it).
    history: Sequence[Message] = ()
    deps: Any = None
    #: The scopes granted to the agent (what a least-privilege policy checks a call against).
    scopes: frozenset[str] = frozenset()
    #: ``await inp.judge(agent, text)``: run ``agent`` on ``text`` as a sub-run of this run
    #: (journaled under ``<step>/guard:<place>/<agent>``, within the run's budget, with the
    #: agent's own retries), for a guard that asks a model; None where there is no run yet
    #: (``input``).
    judge: Judge | None = None
    #: True when ``text`` is the part of a streamed answer received so far (see
    #: ``guard_partial``), not the whole answer.
    partial: bool = False
    #: The run's tenant and user (``run(..., tenant=, user=)``); None when not given.
    tenant: str | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardDecision:
    """A guard's verdict. Build one with :meth:`allow`, :meth:`redact`, :meth:`block`,
    :meth:`escalate` or :meth:`require_approval`.

    ``evidence`` is journaled and shown to reviewers: put in it what explains the decision
    (a rule id, a score, which argument came from which tool output), never the clear text
    of what you block or redact."""

    action: Action
    reason: str = ""
    text: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    guard: str = ""
    #: For a block at ``tool_args``: the observation the model gets (``guardrail_blocked``,
    #: or ``permission_denied`` from :meth:`deny`, a policy's refusal).
    error_type: BlockType = "guardrail_blocked"

    def __post_init__(self) -> None:
        if self.action not in _ACTIONS:
            raise ConfigError("GuardDecision.action", f"{self.action!r} is not one of "
                              f"{', '.join(sorted(_ACTIONS))}")
        if self.action == "redact" and not isinstance(self.text, str):
            raise ConfigError("GuardDecision.text", "a redaction carries the redacted text")
        if self.action not in ("allow", "redact") and not (
                isinstance(self.reason, str) and self.reason.strip()):
            raise ConfigError("GuardDecision.reason", f"a {self.action} decision needs a "
                              "reason (the model, the user or a reviewer reads it)")
        if not isinstance(self.evidence, Mapping):
            raise ConfigError("GuardDecision.evidence", "must be a mapping")
        if self.error_type not in _BLOCK_TYPES:
            raise ConfigError("GuardDecision.error_type", f"{self.error_type!r} is not one of "
                              f"{', '.join(sorted(_BLOCK_TYPES))}")

    @classmethod
    def allow(cls) -> GuardDecision:
        return _ALLOW

    @classmethod
    def note(cls, reason: str, *, evidence: Mapping[str, Any] | None = None) -> GuardDecision:
        """Allow, but journal why and what was seen (an alert sent, a call slowed down)."""
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError("GuardDecision.reason", "a note needs a reason")
        return cls(action="allow", reason=reason, evidence=evidence or {})

    @property
    def journaled(self) -> bool:
        """Whether this decision is written to the journal: all but a plain allow."""
        return self.action != "allow" or bool(self.reason)

    @classmethod
    def redact(cls, text: str, reason: str = "", *,
               evidence: Mapping[str, Any] | None = None) -> GuardDecision:
        return cls(action="redact", text=text, reason=reason, evidence=evidence or {})

    @classmethod
    def block(cls, reason: str, *, evidence: Mapping[str, Any] | None = None) -> GuardDecision:
        return cls(action="block", reason=reason, evidence=evidence or {})

    @classmethod
    def deny(cls, reason: str, *, evidence: Mapping[str, Any] | None = None) -> GuardDecision:
        """A block that is a policy's refusal: the model gets ``permission_denied``."""
        return cls(action="block", reason=reason, evidence=evidence or {},
                   error_type="permission_denied")

    @classmethod
    def escalate(cls, reason: str, *,
                 evidence: Mapping[str, Any] | None = None) -> GuardDecision:
        return cls(action="escalate", reason=reason, evidence=evidence or {})

    @classmethod
    def require_approval(cls, reason: str, *,
                         evidence: Mapping[str, Any] | None = None) -> GuardDecision:
        return cls(action="approve", reason=reason, evidence=evidence or {})

    def to_record(self, place: Place) -> dict[str, Any]:
        """The journal record (no clear text: the redacted text only for ``tool_args``,
        where a resumed run needs the arguments the tool was given)."""
        data: dict[str, Any] = {"place": place, "action": self.action, "reason": self.reason,
                                "guard": self.guard, "evidence": redact(dict(self.evidence))}
        if self.error_type != "guardrail_blocked":
            data["error_type"] = self.error_type
        if self.action == "redact" and place == "tool_args":
            data["text"] = self.text
        return data

    @classmethod
    def from_record(cls, data: Any) -> GuardDecision:
        if not isinstance(data, dict) or data.get("action") not in _ACTIONS:
            return cls.block("the guard's recorded decision is unreadable",
                             evidence={"record": "unreadable"})
        action = data["action"]
        text = data.get("text")
        if action == "redact" and not isinstance(text, str):
            text = ""
        reason = str(data.get("reason") or "")
        if action not in ("allow", "redact") and not reason:
            reason = "(no reason recorded)"
        evidence = data.get("evidence")
        kind = data.get("error_type")
        return cls(action=action, reason=reason, text=text, guard=str(data.get("guard") or ""),
                   evidence=evidence if isinstance(evidence, dict) else {},
                   error_type=kind if kind in _BLOCK_TYPES else "guardrail_blocked")


_ALLOW = GuardDecision(action="allow")
#: ``judge(agent, text) -> RunResult``: see :attr:`GuardInput.judge`.
Judge: TypeAlias = Callable[[Any, str], Awaitable[Any]]
#: How decisions rank inside a concurrent group (the strongest wins).
_RANK = {"allow": 0, "redact": 1, "approve": 2, "escalate": 3, "block": 4}

_Verdict: TypeAlias = "GuardDecision | bool | None"
#: ``fn(inp) -> GuardDecision | True | False | None`` (or an awaitable of one).
GuardFunction: TypeAlias = Callable[[GuardInput], "_Verdict | Awaitable[_Verdict]"]


def guard_name(mw: Any) -> str:
    name = getattr(mw, "name", None)
    return name if isinstance(name, str) and name else type(mw).__name__


def check_places(places: Iterable[str], where: str) -> frozenset[Place]:
    if isinstance(places, str):
        places = (places,)
    chosen = frozenset(places)
    unknown = chosen - PLACES
    if unknown:
        raise ConfigError(where, f"unknown place(s) {', '.join(sorted(unknown))}; the places "
                          f"are {', '.join(sorted(PLACES))}")
    if not chosen:
        raise ConfigError(where, "name at least one place (a guard checking nowhere would "
                          "never run)")
    return chosen  # type: ignore[return-value]


def check_timeout(timeout: float | None, where: str) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
            or not math.isfinite(timeout) or timeout <= 0:
        raise ConfigError(where, f"must be a positive number of seconds or None, got "
                          f"{timeout!r}")
    return float(timeout)


class Guard(Protocol):
    """What the pipeline reads of a guard (a middleware that overrides ``check``)."""

    guard_places: frozenset[Place]
    guard_timeout: float | None
    guard_concurrent: bool
    guard_partial: bool

    async def check(self, inp: GuardInput) -> GuardDecision | None: ...

    def guard_applies(self, tool: Tool) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Stage:
    """One guard, or several adjacent concurrent ones."""

    guards: tuple[Guard, ...]


class GuardPipeline:
    """The guards of a middleware stack, per place, in order (built once per stack)."""

    __slots__ = ("_filters", "_observers", "_stages")

    def __init__(self, guards: Sequence[Guard],
                 observers: Sequence[Callable[[GuardInput, GuardDecision], None]] = ()) -> None:
        """``guards``: the stack's middleware that override ``check``, outermost first;
        ``observers`` are told each decision that is not a plain allow."""
        self._observers = tuple(observers)
        self._stages: dict[Place, tuple[_Stage, ...]] = {}
        #: Per tool place: each guard's ``guard_applies`` when every guard there declares
        #: one (else the place is asked for every tool).
        self._filters: dict[Place, tuple[Callable[[Tool], bool], ...]] = {}
        for place in PLACES:
            here = [g for g in guards if place in g.guard_places]
            filters = [f for f in map(_applies_test, here) if f is not None]
            if here and len(filters) == len(here):
                self._filters[place] = tuple(filters)
            stages: list[_Stage] = []
            for g in here:
                if g.guard_concurrent and stages and stages[-1].guards[-1].guard_concurrent:
                    stages[-1] = _Stage((*stages[-1].guards, g))
                else:
                    stages.append(_Stage((g,)))
            if stages:
                self._stages[place] = tuple(stages)

    def active(self, place: Place) -> bool:
        return place in self._stages

    def applies(self, place: Place, tool: Tool) -> bool:
        """Whether some guard at ``place`` (a tool place) may act on a call of ``tool``
        (False: every one of them allows it without looking, so the place is skipped)."""
        if place not in self._stages:
            return False
        filters = self._filters.get(place)
        return filters is None or any(map(_applies, filters, (tool,) * len(filters)))

    def partial_ok(self, place: Place) -> bool:
        """Whether every guard at ``place`` can judge part of a text (a streamed answer so
        far); one that cannot (an LLM judge) makes the stream hold the text to the end."""
        return all(g.guard_partial for s in self._stages.get(place, ()) for g in s.guards)

    def names(self, place: Place) -> list[str]:
        return [guard_name(g) for s in self._stages.get(place, ()) for g in s.guards]

    async def decide(self, inp: GuardInput) -> GuardDecision:
        """The pipeline's decision on ``inp``: allow, one redaction (the text after every
        redaction) or the first stopping decision."""
        decision = await self._decide(inp)
        if self._observers and decision is not _ALLOW:
            for observe in self._observers:
                observe(inp, decision)
        return decision

    async def _decide(self, inp: GuardInput) -> GuardDecision:
        stages = self._stages.get(inp.place)
        if not stages:
            return _ALLOW
        text = inp.text
        redactions: list[GuardDecision] = []
        notes: list[GuardDecision] = []
        approval: GuardDecision | None = None
        for stage in stages:
            current = inp if text == inp.text else replace(inp, text=text)
            if len(stage.guards) == 1:
                decision = await _ask(stage.guards[0], current)
            else:
                decision = await _ask_together(stage.guards, current)
            if decision.action == "allow":
                if decision.reason:
                    notes.append(decision)
                continue
            if decision.action == "redact":
                assert decision.text is not None
                text = decision.text
                redactions.append(decision)
                continue
            if decision.action == "approve":  # a later guard may still refuse outright
                approval = approval or decision
                continue
            return decision
        if approval is not None:
            return approval
        if not redactions:
            return notes[0] if notes else _ALLOW
        return GuardDecision(
            action="redact", text=text, guard=redactions[0].guard if len(redactions) == 1
            else ",".join(d.guard for d in redactions),
            reason="; ".join(d.reason for d in redactions if d.reason),
            evidence=redactions[0].evidence if len(redactions) == 1
            else {d.guard: dict(d.evidence) for d in redactions})


def every_tool(self: Any, tool: Tool) -> bool:
    """Whether ``check`` may act on a call of ``tool`` (at ``tool_args`` and
    ``tool_output``). A guard that never acts on some tools says so by overriding
    ``guard_applies``, and a place where no guard applies is skipped without building its
    input. This default: every tool."""
    return True


def _applies(test: Callable[[Tool], bool], tool: Tool) -> bool:
    """``test(tool)``; a test that fails counts as "applies": the guard is asked, and its
    ``check`` decides (a guard that cannot say fails closed, never open)."""
    try:
        return bool(test(tool))
    except Exception:
        return True


def _applies_test(guard: Guard) -> Callable[[Tool], bool] | None:
    """The guard's ``guard_applies`` if it declares one (a middleware that overrides the
    default, which applies to every tool)."""
    test = getattr(guard, "guard_applies", None)
    if test is None or getattr(test, "__func__", None) is every_tool:
        return None
    return test  # type: ignore[no-any-return]


async def _ask(guard: Guard, inp: GuardInput) -> GuardDecision:
    try:
        timeout = guard.guard_timeout
        if timeout is None:
            out = await guard.check(inp)
        else:
            async with asyncio.timeout(timeout):
                out = await guard.check(inp)
        if out is None:
            return _ALLOW  # the common case, before anything else is looked at
    except (asyncio.CancelledError, UserError):
        raise  # cancelled, or the guard is misconfigured: a developer's error, not a verdict
    except TimeoutError:
        name = guard_name(guard)
        return GuardDecision(action="block", guard=name, reason=(
            f"guard {name} did not decide within {guard.guard_timeout:g}s; blocked (a guard "
            "that cannot decide fails closed)"), evidence={"error": "timeout"})
    except Exception as exc:  # a guard that crashes fails closed
        name = guard_name(guard)
        return GuardDecision(action="block", guard=name, reason=(
            f"guard {name} failed ({type(exc).__name__}: {redact_text(str(exc))[:300]}); "
            "blocked (a guard that cannot decide fails closed)"),
            evidence={"error": type(exc).__name__})
    return _normalised(out, guard_name(guard), inp.place)


async def _ask_together(guards: Sequence[Guard], inp: GuardInput) -> GuardDecision:
    decisions: list[GuardDecision] = list(await asyncio.gather(*(_ask(g, inp)
                                                                 for g in guards)))
    strongest = max(decisions, key=lambda d: _RANK[d.action])
    if strongest.action == "redact":
        names = ", ".join(d.guard for d in decisions if d.action == "redact")
        return GuardDecision(action="block", guard=strongest.guard, reason=(
            f"concurrent guards may not redact ({names} did); blocked (fail closed). Run a "
            "redacting guard on its own (guard_concurrent=False)"),
            evidence={"error": "concurrent redaction"})
    return strongest


def _normalised(given: Any, name: str, place: Place) -> GuardDecision:
    out: object = given
    if out is None or out is True:
        return _ALLOW
    if out is False:
        return GuardDecision(action="block", guard=name, reason=f"refused by guard {name}")
    if not isinstance(out, GuardDecision):
        return GuardDecision(action="block", guard=name, reason=(
            f"guard {name} returned {type(out).__name__}, not a GuardDecision, True/False "
            "or None; blocked (fail closed)"), evidence={"error": "bad return"})
    if out.action == "approve" and place != "tool_args":
        out = replace(out, action="escalate")  # only a tool call can wait for an approval
    return out if out.guard else replace(out, guard=name)


async def journal_decision(journal: Journal, key: str, place: Place,
                           decision: GuardDecision) -> None:
    """Write a non-allow decision as the step ``key`` (committed now)."""
    if journal.recorded(key) is not None:
        return
    await journal.write(key, "result", "guard", decision.guard or "guard", "",
                        decision.to_record(place))


def recorded_decision(journal: Journal, key: str) -> GuardDecision | None:
    entry = journal.recorded(key)
    return None if entry is None else GuardDecision.from_record(entry.data)
