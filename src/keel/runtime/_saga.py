"""Sagas: when a run fails, undo what its tools did, newest first, durably.

A tool that declares ``compensate=`` (:attr:`keel.tools.ToolMeta.compensate`) is a saga step.
When a run fails with a :class:`RunError` other than :class:`Divergence`, or is cancelled
(:class:`RunCancelled`), and the agent has ``compensate_on_failure`` (the default), the
runner calls :func:`compensate` before it records the failure:

1. the plan: every completed (successful) call of a compensable tool, newest first, with its
   arguments and result, is written as the intent of the ``<agent>/saga`` step (nothing is
   written when there is nothing to compensate);
2. each compensation is a journal step ``<agent>/compensate:<original step key>`` with an
   intent record and the idempotency key ``<run id>/<that key>``; a transient failure
   (``ToolFailure.transient`` or a timeout) is retried with exponential backoff, each failed
   attempt journaled as ``<key>/attempt:N``;
3. when every step is compensated, the ``<agent>/saga`` result is written and the run ends
   ``failed`` (or ``cancelled``) with its original error.

Resume: a run whose journal holds the ``<agent>/saga`` intent never goes on with its loop.
``agent.resume(run_id)`` raises the recorded failure at once, which finishes the saga
(recorded compensations are not run again; one with an intent and no result, the process
having stopped in between, is reconciled through the compensating tool's ``reconcile`` hook
or else called again with the same idempotency key: compensations must honour it) and
records the failure again.

A compensation that keeps failing (a permanent failure, or transient ones past
:data:`MAX_ATTEMPTS`) stops the saga there and escalates to a person: an escalation packet
(``trigger="compensation_failed"``) whose ``saga`` field lists what was compensated, what was
not and the error. The run is ``suspended``; ``resume`` retries the saga from where it stopped,
``dismiss`` closes the run (the person undid the rest by hand), see docs/sagas.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from keel.core import (
    Divergence,
    Escalate,
    ModelResponse,
    RunCancelled,
    RunError,
    StoreUnavailable,
    ToolContext,
    UnknownOutcome,
    canonical_json,
)
from keel.runtime._escalation import build_packet, escalation_task, packet_value
from keel.tools import Tool, ToolResult, Toolset

if TYPE_CHECKING:
    from keel.runtime._escalation import EscalationPolicy
    from keel.runtime._journal import Journal
    from keel.store import RunRecord

class SagaAgent(Protocol):
    """What compensation reads of the agent whose run failed."""

    @property
    def name(self) -> str: ...
    @property
    def toolset(self) -> Toolset: ...
    @property
    def scopes(self) -> frozenset[str]: ...
    @property
    def escalation(self) -> EscalationPolicy: ...
    @property
    def compensate_on_failure(self) -> bool: ...


#: Attempts of one compensation (in one execution) before it escalates.
MAX_ATTEMPTS = 4
#: Backoff between attempts: doubles from ``FIRST_DELAY`` up to ``MAX_DELAY`` seconds.
FIRST_DELAY = 0.05
MAX_DELAY = 2.0
#: The escalation trigger of a compensation that keeps failing.
TRIGGER = "compensation_failed"


def saga_key(agent: str) -> str:
    return f"{agent}/saga"


def compensation_key(agent: str, step_key: str) -> str:
    return f"{agent}/compensate:{step_key}"


def applies(agent: Any, journal: Journal, exc: BaseException) -> bool:
    """Whether this failure is compensated: a run error other than a divergence or an
    unknown outcome (both need a person to look first: undoing the other steps would take
    away the choice of resolving the step by hand and resuming) or a store outage (the run did
    not fail; resuming it may pass) with the agent's flag on, or
    any failure of a run whose saga has begun."""
    if journal.recorded(saga_key(agent.name), "intent") is not None:
        return True
    return (agent.compensate_on_failure and isinstance(exc, RunError)
            and not isinstance(exc, Divergence | UnknownOutcome | StoreUnavailable))


def recorded_failure(journal: Journal) -> RunError | None:
    """The failure a resumed run was compensating (from its saga intent), or None."""
    intent = journal.recorded(saga_key(journal.agent), "intent")
    if intent is None:
        return None
    data = intent.data if isinstance(intent.data, dict) else {}
    error = data.get("error") if isinstance(data.get("error"), dict) else {}
    assert isinstance(error, dict)
    kind = RunCancelled if error.get("type") == "RunCancelled" else RunError
    failure = kind(str(error.get("message") or "the run failed"), run_id=journal.run_id,
                   step_key=error.get("step_key"))
    recorded = error.get("type")
    failure.recorded_type = recorded if isinstance(recorded, str) and recorded else None
    return failure


class _Failed(Exception):
    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts


async def compensate(agent: SagaAgent, journal: Journal, record: RunRecord,
                     exc: BaseException, *, deps: Any = None) -> None:
    """Compensate the run's completed compensable steps, newest first (or go on doing so).
    Returns when all are compensated; raises ``Escalate`` when one keeps failing."""
    key = saga_key(agent.name)
    if journal.recorded(key, "result") is not None:
        return
    intent = journal.recorded(key, "intent")
    if intent is None:
        plan = _plan(agent, journal)
        if not plan:
            return
        intent = await journal.write(key, "intent", "saga", "compensate", "",
                                     {"error": _error(exc), "steps": plan})
    data = intent.data if isinstance(intent.data, dict) else {}
    steps: list[dict[str, Any]] = list(data.get("steps") or [])
    await _still_waiting(agent, journal)
    done: list[str] = []
    for step in steps:
        try:
            await _compensate_one(agent, journal, step, deps, record)
        except _Failed as failed:
            await _escalate(agent, journal, record, data, done, step, failed)
        done.append(str(step["key"]))
    await journal.write(key, "result", "saga", "compensate", "", {"compensated": done})


# ------------------------------------------------------------------------------- the plan


def _plan(agent: SagaAgent, journal: Journal) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for entry in journal.entries():
        if entry.phase != "result" or entry.kind != "tool":
            continue
        original = agent.toolset.get(entry.name)
        if original is None or original.meta.compensate is None:
            continue
        data = entry.data if isinstance(entry.data, dict) else {}
        if data.get("failure") is not None:
            continue  # a failed call has nothing to undo
        steps.append({"key": entry.key, "tool": entry.name,
                      "compensation": original.meta.compensate.name,
                      "arguments": _arguments(journal, entry.key, entry.name),
                      "result": data.get("value")})
    steps.reverse()
    return steps


def _arguments(journal: Journal, key: str, name: str) -> dict[str, Any]:
    """The arguments a call ran with: from its intent (as approved), an approval's edit, or
    the model's tool call."""
    intent = journal.recorded(key, "intent")
    if intent is not None and isinstance(intent.data, dict) and "arguments" in intent.data:
        return _parsed(intent.data["arguments"])
    gate = journal.recorded(f"{key}/approval")
    if gate is not None and isinstance(gate.data, dict) and gate.data.get("edited"):
        return _parsed(gate.data.get("arguments"))
    turn, _, tail = key.rpartition("/tool:")
    model = journal.recorded(f"{turn}/model")
    if model is None or not isinstance(model.data, dict):
        return {}
    index = int(tail.rpartition("#")[2] or 0)
    calls = [c for c in ModelResponse.from_dict(model.data).tool_calls if c.tool_name == name]
    return _parsed(calls[index].arguments) if index < len(calls) else {}


def _parsed(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _error(exc: BaseException) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": str(getattr(exc, "message", exc)),
            "step_key": getattr(exc, "step_key", None)}


# ----------------------------------------------------------------------- one compensation


def _call_arguments(compensation: Tool, step: dict[str, Any]) -> dict[str, Any]:
    """The original arguments the compensation names, and ``result`` if it names that."""
    names = set(compensation.parameters.get("properties", {}))
    original = step.get("arguments") or {}
    args = {k: v for k, v in original.items() if k in names}
    if "result" in names:
        args["result"] = step.get("result")
    return args


async def _compensate_one(agent: SagaAgent, journal: Journal, step: dict[str, Any],
                          deps: Any, record: RunRecord) -> None:
    original = agent.toolset.get(str(step["tool"]))
    comp = original.meta.compensate if original is not None else None
    if comp is None:
        raise _Failed(f"this agent no longer has {step['tool']!r} with a compensation", 0)
    key = compensation_key(agent.name, str(step["key"]))
    args = _call_arguments(comp, step)
    ctx = ToolContext(run_id=journal.run_id, step_key=key, agent=agent.name,
                      idempotency_key=f"{journal.run_id}/{key}", scopes=agent.scopes, deps=deps,
                      tenant=record.tenant, user=record.user)
    before = 0
    while journal.recorded(f"{key}/attempt:{before + 1}") is not None:
        before += 1  # attempts of earlier executions (before an escalation was resolved)

    async def run() -> ToolResult:
        delay = FIRST_DELAY
        last = ""
        for attempt in range(before + 1, before + MAX_ATTEMPTS + 1):
            result = await comp.call(args, replace(ctx, attempt=attempt))
            failure = result.failure
            if failure is None:
                return result
            last = failure.message
            await journal.write(f"{key}/attempt:{attempt}", "result", "attempt", comp.name, "",
                                {"attempt": attempt, "error": failure.message,
                                 "error_type": failure.error_type, "retry_in_s": delay})
            transient = failure.transient is not None or failure.error_type == "timeout"
            if not transient:
                raise _Failed(f"{failure.error_type}: {failure.message}", attempt - before)
            if attempt < before + MAX_ATTEMPTS:
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_DELAY)
        raise _Failed(f"still failing after {MAX_ATTEMPTS} attempts: {last}",
                      MAX_ATTEMPTS)

    async def reconcile() -> Any | None:
        # No hook: the compensation is called again with the same idempotency key.
        if comp.reconcile is None:
            return None
        value = await comp.reconcile(args, ctx)
        return None if value is None else ToolResult.of(value).to_dict()

    await journal.step(
        key, "compensate", comp.name, run, input_hash=_hash(comp.name, args),
        intent={"tool": comp.name, "arguments": args, "compensates": step["key"],
                "idempotency_key": ctx.idempotency_key},
        idempotent=False, reconcile=reconcile, encode=_encode, decode=ToolResult.from_dict,
        budgeted=False, flush_first=True)


def _encode(result: ToolResult) -> Any:
    return result.to_dict()


def _hash(name: str, args: dict[str, Any]) -> str:
    raw = f"{name}\x00{canonical_json(args)}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(raw, digest_size=10).hexdigest()


# ----------------------------------------------------------------------------- escalation


def _escalation_key(agent: str, journal: Journal) -> str:
    """The first saga escalation without a person's decision."""
    n = 0
    while journal.recorded(f"{agent}/saga/escalation#{n}") is not None:
        n += 1
    return f"{agent}/saga/escalation#{n}"


async def _still_waiting(agent: SagaAgent, journal: Journal) -> None:
    """A saga escalation asked and not yet decided (the process stopped before suspending):
    suspend again without asking again or retrying."""
    asked = journal.recorded(_escalation_key(agent.name, journal), "intent")
    if asked is not None and isinstance(asked.data, dict):
        await journal.store.put_task(escalation_task(asked.data))
        raise _signal(asked.data)


async def _escalate(agent: SagaAgent, journal: Journal, record: RunRecord,
                    saga: dict[str, Any], done: list[str], step: dict[str, Any],
                    failed: _Failed) -> None:
    steps = [str(s["key"]) for s in saga.get("steps") or []]
    pending = steps[len(done):]
    state = {
        "error": saga.get("error"),
        "compensated": done,
        "not_compensated": pending,
        "failed": {"step": step["key"], "tool": step["tool"],
                   "compensation": step.get("compensation"), "arguments": step.get("arguments"),
                   "error": failed.message, "attempts": failed.attempts},
    }
    reason = (f"compensation {step.get('compensation')} of {step['key']} keeps failing "
              f"({failed.message}); compensated: {', '.join(done) or 'none'}; not compensated: "
              f"{', '.join(pending)}")
    proposal = ("Fix the cause and resume the escalation (the saga goes on from "
                f"{step['key']}), or undo {', '.join(pending)} by hand and dismiss it.")
    key = _escalation_key(agent.name, journal)
    packet = build_packet(record, journal.entries(),
                          Escalate(reason, trigger=TRIGGER, proposal=proposal),
                          agent.escalation, key=key, now=time.time())
    packet["saga"] = packet_value(agent.escalation, state, record)
    await journal.write(key, "intent", "escalation", TRIGGER, "", packet, reserve_next=True)
    await journal.store.put_task(escalation_task(packet))
    raise _signal(packet)


def _signal(packet: dict[str, Any]) -> Escalate:
    return Escalate(str(packet.get("reason", "a compensation keeps failing")), trigger=TRIGGER,
                    queue=packet.get("queue"), proposal=packet.get("proposal"),
                    escalation_id=packet.get("escalation_id"))
