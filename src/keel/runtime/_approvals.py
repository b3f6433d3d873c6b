"""Human approval gates: which tool calls need a person's decision, and recording it.

A gate is a journal step at ``<tool step key>/approval``. When a call needs approval the run
writes the request as that step's *intent* (before anything else happens), puts an
``approval`` :class:`~keel.store.HumanTask` and suspends. ``decide_approval`` (the CLI's
``keel approvals approve/deny``) writes the decision as the step's *result*, and the run,
resumed in any process, reads it from the journal: an approved call runs (with the
arguments as approved, possibly edited), a denied one reaches the model as an observation
carrying the reviewer's comment. A request is written once and decided once.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from keel.core import ConfigError, Message, TaskConflict, ToolResultPart, UserError
from keel.runtime._engines import notify_engine
from keel.runtime._quorum import (
    add_review,
    check_reviewer,
    check_reviewers,
    partial_task,
    review_of,
    reviewers_needed,
    reviews_of,
)
from keel.store import (
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
from keel.tools import Tool


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalContext:
    """The run around a call that may need approval, for callbacks and reviewers that judge
    more than the tool and its arguments: the run and agent, the gate's step key, the run's
    ``deps``, the conversation so far (``history``: the instructions, the user's messages,
    the model's turns and every tool result the model has seen), and whose run it is
    (``tenant``, ``user``)."""

    run_id: str
    agent: str
    step_key: str
    deps: Any
    history: tuple[Message, ...]
    #: The run's tenant and user (``run(..., tenant=, user=)``); None when not given.
    tenant: str | None = None
    user: str | None = None

    def tool_results(self) -> list[ToolResultPart]:
        """The tool results the model has seen so far in this run, oldest first."""
        return [p for m in self.history for p in m.parts if isinstance(p, ToolResultPart)]


#: ``callback(tool, arguments) -> reason | None``, or ``callback(tool, arguments, context)``
#: with an :class:`ApprovalContext`: a reason (str) if the call needs approval.
ApprovalCallback: TypeAlias = Callable[..., str | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Review:
    """An in-process reviewer's decision on an approval request (see
    :attr:`ApprovalPolicy.reviewer`): journaled exactly like a person's decision through
    ``keel approvals``. A denial needs a ``comment`` (the model reads it); ``edited_args``
    approves with other arguments (checked against the tool's schema)."""

    approve: bool
    by: str
    comment: str = ""
    edited_args: dict[str, Any] | None = None


#: ``reviewer(request) -> Review | None`` (sync or async): decides an approval request as it
#: is made, in the run's process (a policy engine, an LLM judge, a test harness); ``None``
#: leaves it to a person. ``request`` is what a person would see (tool, arguments, reason,
#: the agent's reasoning, run id, schema).
Reviewer: TypeAlias = Callable[[dict[str, Any]], "Review | Awaitable[Review | None] | None"]


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """Require approval for calls of ``tool`` whose parsed arguments satisfy ``when``
    (e.g. ``ApprovalRule("refund", lambda a: a["amount"] > 100, "refunds over 100")``).
    ``when`` may take the run's :class:`ApprovalContext` as a second parameter.

    ``exempt=True`` turns the rule around: a matching call needs **no** approval, even from a
    tool whose risk the policy gates (``ApprovalRule("refund", lambda a: a["amount"] <= 20,
    "small refunds", exempt=True)`` lets an ``irreversible`` refund of 20 through). Only a
    tool's own ``@tool(approval=True)`` outranks an exemption."""

    tool: str
    when: Callable[..., bool]
    reason: str = ""
    exempt: bool = False
    #: How many different people must approve a matching call (N-of-M; see
    #: :mod:`keel.runtime._quorum`): ``ApprovalRule("refund", lambda a: a["amount"] > 1000,
    #: "large refunds", reviewers=2)``.
    reviewers: int = 1

    def __post_init__(self) -> None:
        check_reviewers("ApprovalRule.reviewers", self.reviewers)
        if not self.tool:
            raise ConfigError("ApprovalRule.tool", "name the tool the rule applies to")
        if not callable(self.when):
            raise ConfigError("ApprovalRule.when", "must be a predicate on the arguments")
        if not isinstance(self.exempt, bool):
            raise ConfigError("ApprovalRule.exempt", "must be True or False")

    def matches(self, arguments: dict[str, Any], context: ApprovalContext | None) -> bool:
        """``when(arguments)``, or ``when(arguments, context)`` for a predicate that takes the
        run's :class:`ApprovalContext` too."""
        if _takes_context(self.when, 2):
            return bool(self.when(arguments, context))
        return bool(self.when(arguments))


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalPolicy:
    """Which tool calls wait for a human. On by default: every ``irreversible`` tool.

    A call needs approval if its tool says so (``@tool(approval=...)``; ``approval=False``
    exempts it), or its risk is in ``risks``, or a rule matches, or the callback returns a
    reason. Requests go to ``queue`` with an SLA of ``sla_seconds``.
    ``ApprovalPolicy.off()`` switches gates off (explicitly).

    ``reviewer`` decides requests in process as they are made (see :data:`Reviewer`): its
    :class:`Review` is journaled with who decided, and the run goes on without suspending. A
    reviewer that returns None, raises or gives an invalid decision leaves the request to a
    person (fail closed: the call never runs undecided)."""

    risks: frozenset[str] = frozenset({"irreversible"})
    rules: tuple[ApprovalRule, ...] = ()
    callback: ApprovalCallback | None = None
    reviewer: Reviewer | None = None
    queue: str = "approvals"
    sla_seconds: float | None = 24 * 3600.0
    enabled: bool = True
    #: How many different people must approve each gated call (a rule may ask for more).
    reviewers: int = 1

    def __post_init__(self) -> None:
        check_reviewers("ApprovalPolicy.reviewers", self.reviewers)
        object.__setattr__(self, "risks", frozenset(self.risks))
        object.__setattr__(self, "rules", tuple(self.rules))
        unknown = self.risks - {"read", "write", "irreversible"}
        if unknown:
            raise ConfigError("ApprovalPolicy.risks",
                              f"unknown risk {sorted(unknown)}; use read, write, irreversible")
        if not self.queue:
            raise ConfigError("ApprovalPolicy.queue", "must be a non-empty queue name")
        if self.sla_seconds is not None and not self.sla_seconds > 0:
            raise ConfigError("ApprovalPolicy.sla_seconds", "must be > 0 seconds or None")
        if self.reviewer is not None and not callable(self.reviewer):
            raise ConfigError("ApprovalPolicy.reviewer", "must be a function of the request "
                              "returning a Review or None")

    @classmethod
    def off(cls) -> ApprovalPolicy:
        return cls(enabled=False)

    @classmethod
    def build(cls, rules: Iterable[ApprovalRule] = (), **kw: Any) -> ApprovalPolicy:
        return cls(rules=tuple(rules), **kw)

    def reason_for(self, tool: Tool, arguments: dict[str, Any],
                   context: ApprovalContext | None = None) -> str | None:
        """Why this call needs approval, or None if it may run. ``context`` is handed to a
        callback that takes a third parameter."""
        meta = tool.meta
        own = meta.approval
        if own is False:
            return None
        if own is True:  # the tool's own explicit demand holds even with the policy off
            return f"{meta.name} always needs approval"
        if not self.enabled:
            return None
        rules = [r for r in self.rules if r.tool == meta.name]
        if any(r.exempt and r.matches(arguments, context) for r in rules):
            return None  # an explicit exemption for these arguments
        if own is not None and own(arguments):
            return f"{meta.name}: its approval rule matched these arguments"
        if meta.risk in self.risks:
            return f"{meta.name} is {meta.risk}"
        for rule in rules:
            if not rule.exempt and rule.matches(arguments, context):
                return rule.reason or f"{meta.name}: an approval rule matched"
        if self.callback is not None:
            if _takes_context(self.callback):
                return self.callback(tool, arguments, context)
            return self.callback(tool, arguments)
        return None


    def reviewers_for(self, tool: Tool, arguments: dict[str, Any],
                      context: ApprovalContext | None = None) -> int:
        """How many different people must approve this call (asked once it needs approval):
        the policy's ``reviewers``, or more when a matching rule asks for more."""
        n = self.reviewers
        for rule in self.rules:
            if rule.reviewers > n and rule.tool == tool.meta.name and not rule.exempt \
                    and rule.matches(arguments, context):
                n = rule.reviewers
        return n


@functools.lru_cache(maxsize=256)  # asked on every gated call; a signature costs ~10 µs
def _takes_context(fn: Callable[..., Any], position: int = 3) -> bool:
    """Whether a callback takes a context parameter at ``position`` (1-based)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= position or any(p.kind is p.VAR_POSITIONAL for p in params)


def approval_id(run_id: str, gate_key: str) -> str:
    """Deterministic, so a request re-made after a crash keeps its id."""
    digest = hashlib.blake2b(f"{run_id}\x00{gate_key}".encode(), digest_size=6).hexdigest()
    return f"ap-{digest}"


def approval_request(*, run_id: str, agent: str, gate_key: str, tool: Tool,
                     arguments: dict[str, Any], reason: str, thought: str,
                     policy: ApprovalPolicy, now: float,
                     evidence: Mapping[str, Any] | None = None,
                     owner: Mapping[str, str] | None = None,
                     reviewers: int = 1) -> dict[str, Any]:
    """What the reviewer sees (stored as the gate's intent and as the task's data).
    ``evidence``: why a guard asked (e.g. taint: which argument came from which tool
    output), when a guard rather than the policy routed the call here. ``owner``: the run's
    ``tenant`` and ``user``, those that are set."""
    meta = tool.meta
    request = {
        "approval_id": approval_id(run_id, gate_key), "run_id": run_id, "agent": agent,
        "step_key": gate_key, "tool": meta.name, "description": meta.description,
        "risk": meta.risk, "arguments": arguments, "reason": reason,
        "thought": thought[:2000], "schema": tool.parameters,
        "queue": policy.queue, "requested_at": now,
        "due_at": None if policy.sla_seconds is None else now + policy.sla_seconds,
    }
    if evidence:
        request["evidence"] = dict(evidence)
    if owner:
        request.update(owner)
    if reviewers > 1:  # only then: a one-person request is written as it always was
        request["reviewers"] = reviewers
    return request


def owner_of(record: RunRecord) -> dict[str, str]:
    """The run's ``tenant`` and ``user``, those that are set: what an approval request and an
    escalation packet carry so that a queue can be read per tenant."""
    return {k: v for k, v in (("tenant", record.tenant), ("user", record.user))
            if v is not None}


def approval_task(request: Mapping[str, Any]) -> HumanTask:
    return HumanTask(task_id=request["approval_id"], run_id=request["run_id"], kind="approval",
                     step_key=request["step_key"], queue=request["queue"], status="open",
                     created_at=request["requested_at"], due_at=request["due_at"],
                     data=dict(request))


async def decide_approval(approval_id: str, _old: str | None = None, /, *,
                          store: RunStore | None = None, approve: bool,
                          by: str | None = None, comment: str | None = None,
                          edited_args: Any = None,
                          decided_by: str | None = None,
                          tenant: str | None = None) -> HumanTask:
    """Record a decision by ``by`` (who decides; audited); the run becomes runnable
    (``keel resume`` or a worker continues it). Refuses, changing nothing: an unknown id
    (TaskNotFound), a decided request or a run that no longer waits (TaskConflict), a denial
    without a comment, or edited arguments that do not match the tool's schema (UserError
    naming the field). With ``tenant``, every read and write of the store is scoped to that
    tenant's runs (in the store's queries): the approval of another tenant's run, or of a run
    without a tenant, is TaskNotFound, as an unknown id. ``decided_by=`` is the deprecated
    name of ``by=``, and ``decide_approval(store, approval_id, ...)`` the deprecated form of
    the call."""
    (approval_id,), given = store_moved("decide_approval", [approval_id], _old, store)
    store = required_store("decide_approval", given)
    by = who_acted(by, decided_by, "decided_by")
    task = await store.get_task(approval_id, **scoped(store.get_task, tenant))
    if task.kind != "approval":
        raise UserError(f"{approval_id} is an escalation, not an approval; use `keel "
                        "escalations resolve`.")
    if task.status == "resolved":
        raise TaskConflict(f"approval {approval_id} was already decided by "
                           f"{task.by}; nothing was changed.")
    request: dict[str, Any] = task.data
    decision = approval_decision(request, approve=approve, by=by or "", comment=comment,
                                 edited_args=edited_args)
    if reviewers_needed(request) > 1:
        reviews = await reviews_of(store, approval_id)
        check_reviewer(request, decision["by"], decision["edited"], reviews, approve)
        if approve:
            reviews, enough = await add_review(store, task, decision)
            if not enough:
                return partial_task(task, reviews)
        else:
            reviews = [*reviews, review_of(decision)]
        decision["reviews"] = reviews
    now = decision["decided_at"]
    journal = await store.read_journal(task.run_id, **scoped(store.read_journal, tenant))
    intent = next((e for e in journal if e.key == task.step_key and e.phase == "intent"), None)
    entry = JournalEntry(
        seq=decision_seq(journal, intent), key=task.step_key, phase="result",
        kind="approval", name=request.get("tool", "?"),
        input_hash=intent.input_hash if intent is not None else "", data=decision,
        created_at=now)
    done = await resolve_task(store, approval_id, decision, by=by, entry=entry, tenant=tenant)
    await notify_engine(store, task.run_id)
    return done


def approval_decision(request: Mapping[str, Any], *, approve: bool, by: str,
                      comment: str | None, edited_args: Any) -> dict[str, Any]:
    """The decision record of ``request`` (the gate step's result), checked: a denial needs a
    comment, edited arguments only go with approve and must match the tool's schema."""
    if not by:
        raise UserError("say who decides (by= / --by); the decision is audited.")
    if not approve and not (comment or "").strip():
        raise UserError("a denial needs a comment: the model reads it to choose what to do "
                        "instead (--comment TEXT).")
    arguments = request.get("arguments", {})
    edited = edited_args is not None
    if edited:
        if not approve:
            raise UserError("edited arguments only make sense with approve.")
        arguments = check_edited_args(edited_args, request.get("schema") or {},
                                      request.get("tool", "?"))
    return {"approved": approve, "comment": comment or "", "arguments": arguments,
            "edited": edited, "by": by, "decided_at": time.time()}


def decision_seq(journal: list[JournalEntry], intent: JournalEntry | None) -> int:
    """The seq a decision is recorded under: the slot the run kept free right after its
    request (``Journal.write(reserve_next=True)``), so that a run going on meanwhile never
    shares a seq with it; after the journal's end for a request written otherwise."""
    if intent is not None and not any(e.seq == intent.seq + 1 for e in journal):
        return intent.seq + 1
    return max((e.seq for e in journal), default=-1) + 1


def check_edited_args(edited: Any, schema: Mapping[str, Any], tool: str) -> dict[str, Any]:
    if isinstance(edited, str):
        try:
            edited = json.loads(edited)
        except ValueError as exc:
            raise UserError(f"edited arguments are not valid JSON: {exc}") from None
    if not isinstance(edited, dict):
        raise UserError(f"edited arguments must be a JSON object of {tool}'s parameters, got "
                        f"{type(edited).__name__}.")
    import jsonschema

    validator = jsonschema.Draft202012Validator(dict(schema))
    problems = sorted(validator.iter_errors(edited), key=lambda e: list(e.absolute_path))
    if problems:
        detail = "; ".join(f"{'.'.join(str(p) for p in e.absolute_path) or '(arguments)'}: "
                           f"{e.message}" for e in problems[:5])
        raise UserError(f"edited arguments do not match {tool}'s schema: {detail}. Nothing "
                        "was changed.")
    return edited
