"""The human gates of a run: approval before a tool call, escalation to a person.

Both are journal steps whose *intent* is the request (written and committed before the run
moves on, together with a task in the store's human queue) and whose *result* is the
person's decision, written by ``decide_approval`` / ``resolve_escalation`` from any process.
A resumed run re-executes its code; at a gate it finds the decision in the journal (and
goes on), or the request without a decision (and suspends again, without asking again).
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from keel.core import ApprovalRequired, Escalate, Message, TaskNotFound, UserError
from keel.runtime._approvals import (
    ApprovalContext,
    ApprovalPolicy,
    Review,
    approval_decision,
    approval_request,
    approval_task,
    owner_of,
)
from keel.runtime._guarding import GuardDecision
from keel.runtime._quorum import reviewers_needed
from keel.tools import Tool, ToolResult

_log = logging.getLogger("keel.approvals")

if TYPE_CHECKING:
    from keel.runtime._journal import Journal
    from keel.store import RunRecord


class Gates:
    """Approval and escalation gates for one execution of an agent loop."""

    __slots__ = ("_escalations", "agent", "deps", "journal", "prefix", "record")

    def __init__(self, agent: Any, journal: Journal, record: RunRecord | None, *,
                 prefix: str | None = None, deps: Any = None) -> None:
        self.agent = agent
        self.deps = deps
        self.prefix = prefix or agent.name
        self.journal = journal
        self.record = record
        self._escalations = 0

    # ----------------------------------------------------------------------------- approval

    async def approval(self, key: str, tool: Tool, arguments: str, input_hash: str,
                       history: list[Message],
                       guard: GuardDecision | None = None) -> str | ToolResult | None:
        """Before an unrecorded tool call: None (no approval needed, or approved as asked),
        the approved arguments as JSON text (edited by the reviewer), or a ToolResult to
        record instead of calling (denied). Raises ApprovalRequired while undecided.
        ``guard``: a guard's ``approve`` decision on this call: the call needs approval
        whatever the policy says (its exemptions included), with the guard's evidence in
        the request; with approvals switched off (``ApprovalPolicy.off()``) it is denied
        (fail closed)."""
        gate_key = f"{key}/approval"
        journal = self.journal
        decision = journal.recorded(gate_key, "result")
        if decision is not None:
            return _decided(decision.data)
        asked = journal.recorded(gate_key, "intent")
        if asked is not None:  # asked before a crash or a suspension
            request: dict[str, Any] = asked.data
            if self.agent.approval.reviewer is None or await _queued(journal, request):
                await journal.store.put_task(approval_task(request))  # in case we crashed
                raise _waiting(request)  # in a person's queue: a person decides
        else:
            context: ApprovalContext | None = None
            if guard is not None:
                if not self.agent.approval.enabled:
                    return _guard_denied(guard)
                reason: str | None = f"{guard.reason} (guard {guard.guard})"
            else:
                context = ApprovalContext(
                    run_id=journal.run_id, agent=self.agent.name, step_key=gate_key,
                    deps=self.deps, history=tuple(history),
                    tenant=None if self.record is None else self.record.tenant,
                    user=None if self.record is None else self.record.user)
                reason = self._reason(tool, arguments, context)
            if reason is None:
                return None
            args = _parsed(arguments)
            reviewers = self._reviewers(tool, args, context)
            request = approval_request(
                run_id=journal.run_id, agent=self.agent.name, gate_key=gate_key, tool=tool,
                arguments=args if args is not None else {"_raw": arguments}, reason=reason,
                thought=_last_thought(history), policy=self.agent.approval, now=time.time(),
                evidence=None if guard is None else guard.evidence,
                owner=None if self.record is None else owner_of(self.record),
                reviewers=reviewers)
            await journal.write(gate_key, "intent", "approval", tool.name, input_hash,
                                request, reserve_next=True)
        reviewed = await self._review(request)
        if reviewed is not None:  # decided in process: journaled as a person's decision
            await journal.write(gate_key, "result", "approval", tool.name, input_hash,
                                reviewed)
            return _decided(reviewed)
        await journal.store.put_task(approval_task(request))
        raise _waiting(request)

    async def _review(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """The policy's in-process reviewer's decision record, or None: no reviewer, it left
        the request to a person, or it failed (fail closed: a person decides)."""
        reviewer = self.agent.approval.reviewer
        if reviewer is None or reviewers_needed(request) > 1:  # several people decide
            return None
        try:
            out = reviewer(dict(request))
            if inspect.isawaitable(out):
                out = await out
            if out is None:
                return None
            if not isinstance(out, Review):
                raise UserError(f"a reviewer returns a keel Review or None, not "
                                f"{type(out).__name__}")
            return approval_decision(request, approve=out.approve, by=out.by,
                                     comment=out.comment, edited_args=out.edited_args)
        except Exception as exc:  # a reviewer that cannot decide leaves it to a person
            _log.warning("approval %s: the reviewer could not decide (%s: %s); a person "
                         "decides", request.get("approval_id"), type(exc).__name__, exc,
                         extra={"run_id": request.get("run_id")})
            return None

    def _reviewers(self, tool: Tool, args: dict[str, Any] | None,
                   context: ApprovalContext | None) -> int:
        """How many people must approve (a rule that cannot decide asks for the policy's)."""
        policy: ApprovalPolicy = self.agent.approval
        if args is None or not (policy.rules or policy.reviewers > 1):
            return policy.reviewers
        try:
            return policy.reviewers_for(tool, args, context)
        except Exception:  # the rule failed in _reason too and asked for approval; fail closed
            return max([policy.reviewers, *(r.reviewers for r in policy.rules
                                            if r.tool == tool.meta.name)])

    def _reason(self, tool: Tool, arguments: str, context: ApprovalContext) -> str | None:
        policy = self.agent.approval
        if not policy.enabled and tool.meta.approval is not True:
            return None  # cheap exit: nothing to evaluate
        args = _parsed(arguments)
        if args is None:
            return None  # the tool rejects these arguments itself; nothing would run
        try:
            reason = policy.reason_for(tool, args, context)
        except Exception as exc:  # a rule that cannot decide fails closed
            return f"an approval rule could not decide ({type(exc).__name__}: {exc})"
        return None if reason is None else str(reason)

    # --------------------------------------------------------------------------- escalation

    async def escalate(self, exc: Escalate) -> str:
        """Escalate (or, on resume, find the decision). Returns the reviewer's note when the
        run is to go on; raises ``Escalate`` (with its id) while a person decides."""
        n = self._escalations
        self._escalations += 1
        assert self.record is not None
        return await escalate_at(self.journal, self.record, f"{self.prefix}/escalation#{n}",
                                 exc, self.agent.escalation)


async def escalate_at(journal: Journal, record: RunRecord, key: str, exc: Escalate,
                      policy: Any) -> str:
    """The escalation step ``key``: the reviewer's note once a person let the run go on;
    until then the packet is written (once) and ``Escalate`` (with its id) is raised."""
    from keel.runtime._escalation import build_packet, escalation_task

    resolved = journal.recorded(key, "result")
    if resolved is not None:
        data = resolved.data if isinstance(resolved.data, dict) else {}
        return str(data.get("note") or "")
    asked = journal.recorded(key, "intent")
    if asked is not None:
        await journal.store.put_task(escalation_task(asked.data))
        raise _escalated(asked.data, exc)
    packet = build_packet(record, journal.entries(), exc, policy, key=key, now=time.time())
    await journal.write(key, "intent", "escalation", exc.trigger, "", packet,
                        reserve_next=True)
    await journal.store.put_task(escalation_task(packet))
    raise _escalated(packet, exc)


def _guard_denied(guard: GuardDecision) -> ToolResult:
    return ToolResult.fail(
        "guardrail_blocked", f"{guard.reason} (guard {guard.guard}); this call needs a "
        "person's approval and approvals are switched off for this agent", retryable=False,
        hint="Do not repeat this call. Tell the user it needs a person's approval.")


def _parsed(arguments: str) -> dict[str, Any] | None:
    try:
        args = json.loads(arguments or "{}")
    except (ValueError, RecursionError):  # RecursionError: nested too deeply for json
        return None
    return args if isinstance(args, dict) else None


def _last_thought(history: list[Message]) -> str:
    for message in reversed(history):
        if message.role == "assistant":
            return message.text
    return ""


async def _queued(journal: Journal, request: dict[str, Any]) -> bool:
    """Whether ``request`` already waits in the human queue (put before a suspension); a
    request written just before a crash has no task yet and goes to the reviewer, if any."""
    try:
        await journal.store.get_task(request["approval_id"])
    except TaskNotFound:
        return False
    return True


def _waiting(request: dict[str, Any]) -> ApprovalRequired:
    return ApprovalRequired(
        f"{request['tool']} needs a human's approval ({request['reason']}): `keel approvals "
        f"show {request['approval_id']}`", approval_ids=(request["approval_id"],))


def _escalated(packet: dict[str, Any], exc: Escalate) -> Escalate:
    out = Escalate(str(packet.get("reason", exc.reason)), trigger=exc.trigger,
                   queue=packet.get("queue"), proposal=packet.get("proposal"),
                   escalation_id=packet.get("escalation_id"))
    out.__cause__ = exc.__cause__
    return out


def _decided(data: Any) -> str | ToolResult | None:
    if not isinstance(data, dict):
        return ToolResult.fail("approval_denied", "the approval record is unreadable",
                               retryable=False, hint="Ask the user how to proceed.")
    who = data.get("by") or data.get("decided_by") or "a reviewer"  # decided_by: keel 0.1
    comment = str(data.get("comment") or "").strip()
    if not data.get("approved"):
        return ToolResult.fail(
            "approval_denied", f"{who} denied this call" + (f": {comment}" if comment else ""),
            retryable=False, hint="Do not repeat this call. Follow the reviewer's comment or "
                                  "tell the user what happened.")
    if data.get("edited"):
        return json.dumps(data.get("arguments", {}))
    return None
