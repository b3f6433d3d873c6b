"""Where the ReAct loop and the runner ask an agent's guards (see ``_guarding``).

Each place is a small function here, so the loop stays a loop: it calls them at the four
places and acts on what they return. Decisions that are not "allow" are journaled at
``<step>/guard:<place>``; a step whose decision is recorded reuses it (resume, replay).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from keel.core import GuardrailTripped, Message, ModelResponse, TextPart, ToolCallPart
from keel.runtime._guarding import (
    KEY_SUFFIX,
    GuardDecision,
    GuardInput,
    GuardPipeline,
    Judge,
    Place,
    journal_decision,
    recorded_decision,
)
from keel.tools import Tool, ToolResult

if TYPE_CHECKING:
    from keel.runtime._journal import Journal
    from keel.store import RunRecord

FINAL_TOOL = "final_result"


def guard_key(step_key: str, place: Place) -> str:
    return f"{step_key}/guard:{KEY_SUFFIX[place]}"


@dataclass(frozen=True, slots=True)
class ScreenedInput:
    """A new run's input after the ``input`` guards: the text to store and run on, and the
    decision to journal once the run exists (None: allowed)."""

    text: str
    decision: GuardDecision | None


async def screen_input(guards: GuardPipeline, *, run_id: str, agent: str, text: str,
                       tenant: str | None = None, user: str | None = None) -> ScreenedInput:
    """The ``input`` guards on a new run's input, before anything is stored. A blocked input
    is stored as a placeholder naming the guard, never in clear text."""
    if not guards.active("input"):
        return ScreenedInput(text, None)
    decision = await guards.decide(GuardInput(
        place="input", text=text, run_id=run_id, agent=agent, step_key=f"{agent}/input",
        tenant=tenant, user=user))
    if decision.action == "allow":
        return ScreenedInput(text, decision if decision.journaled else None)
    if decision.action == "redact":
        assert decision.text is not None
        return ScreenedInput(decision.text or "[redacted]", decision)
    if decision.action == "block":
        return ScreenedInput(f"[input withheld: blocked by guard {decision.guard}]", decision)
    return ScreenedInput(text, decision)  # escalate: a person reads it with the run


async def record_input(journal: Journal, agent: str, screened: ScreenedInput) -> None:
    """Journal the input decision of a new run (its first record); a block fails the run."""
    decision = screened.decision
    if decision is None:
        return
    key = guard_key(f"{agent}/input", "input")
    await journal_decision(journal, key, "input", decision)
    if decision.action == "block":
        raise blocked(decision, journal.run_id, key, "the user's input")


def input_escalation(journal: Journal, prefix: str) -> GuardDecision | None:
    """An ``escalate`` decision recorded on this run's input, if any."""
    decision = recorded_decision(journal, guard_key(f"{prefix}/input", "input"))
    if decision is not None and decision.action == "escalate":
        return decision
    return None


def blocked(decision: GuardDecision, run_id: str, key: str, what: str) -> GuardrailTripped:
    return GuardrailTripped(f"guard {decision.guard} blocked {what}: {decision.reason}",
                            run_id=run_id, step_key=key)


class Screens:
    """The tool and answer places for one execution of an agent loop."""

    __slots__ = ("agent", "deps", "guards", "journal", "record", "scopes", "tenant", "user")

    def __init__(self, guards: GuardPipeline, journal: Journal, agent: str, deps: Any,
                 record: RunRecord | None = None,
                 scopes: frozenset[str] = frozenset()) -> None:
        self.scopes = scopes
        self.guards = guards
        self.journal = journal
        self.agent = agent
        self.deps = deps
        self.record = record
        self.tenant = None if record is None else record.tenant
        self.user = None if record is None else record.user

    def judge(self, key: str, place: Place) -> Judge | None:
        """Runs a judge agent as a sub-run of this run under ``<key>/guard:<place>/<agent>``
        (journaled, within the run's budget), or None without a run record."""
        record = self.record
        if record is None:
            return None

        async def run(agent: Any, text: str) -> Any:
            from keel.runtime._substeps import run_sub_agent

            return await run_sub_agent(self.journal, f"{guard_key(key, place)}/{agent.name}",
                                       agent, text, deps=self.deps, record=record)

        return run

    # ----------------------------------------------------------------------- tool arguments

    async def tool_args(self, key: str, tool: Tool, arguments: str,
                        history: list[Message]) -> GuardDecision | None:
        """The decision on an unrecorded call's arguments (recorded or made now), or None."""
        gkey = guard_key(key, "tool_args")
        recorded = recorded_decision(self.journal, gkey)
        if recorded is not None:
            return recorded
        if not self.guards.applies("tool_args", tool) or \
                self.journal.recorded(f"{key}/approval", "intent") is not None:
            return None  # decided before a suspension: the gate has the request
        decision = await self.guards.decide(GuardInput(
            place="tool_args", text=arguments, run_id=self.journal.run_id, agent=self.agent,
            step_key=key, tool=tool, arguments=_parsed(arguments), history=history,
            deps=self.deps, tenant=self.tenant, user=self.user,
            judge=self.judge(key, "tool_args"), scopes=self.scopes))
        if not decision.journaled:
            return None
        await journal_decision(self.journal, gkey, "tool_args", decision)
        return None if decision.action == "allow" else decision

    # -------------------------------------------------------------------------- tool output

    async def tool_output(self, key: str, tool: Tool, arguments: str, result: ToolResult,
                          history: list[Message]) -> ToolResult:
        """``result`` as the guards let the model (and the journal) see it."""
        if result.failure is not None or result.handoff is not None \
                or not self.guards.applies("tool_output", tool):
            return result  # keel's own observation, not the tool's content; or no guard
        decision = await self.guards.decide(GuardInput(
            place="tool_output", text=result.content, run_id=self.journal.run_id,
            agent=self.agent, step_key=key, tool=tool, arguments=_parsed(arguments),
            history=history, deps=self.deps, tenant=self.tenant, user=self.user,
            judge=self.judge(key, "tool_output")))
        if not decision.journaled:
            return result
        await journal_decision(self.journal, guard_key(key, "tool_output"), "tool_output",
                               decision)
        if decision.action == "allow":
            return result
        if decision.action == "redact":
            assert decision.text is not None
            return replace(result, content=decision.text, value=decision.text)
        if decision.action == "block":
            return ToolResult.fail(
                "guardrail_blocked", f"the output of {tool.name} was withheld by guard "
                f"{decision.guard}: {decision.reason}", retryable=False,
                hint="Do not repeat this call for the same content; go on without it or tell "
                     "the user what happened.")
        return ToolResult.fail("escalated", f"guard {decision.guard}: {decision.reason}",
                               retryable=False, hint="A human takes over from here.")

    # ------------------------------------------------------------------------- final answer

    async def answer(self, key: str, response: ModelResponse, history: list[Message],
                     typed: bool) -> ModelResponse:
        """A final answer as the guards let it be journaled and leave; a response that is not
        a final answer (it calls tools) passes untouched."""
        calls = response.tool_calls
        final = next((c for c in calls if c.tool_name == FINAL_TOOL), None) if typed else None
        if calls and final is None:
            return response
        text = final.arguments if final is not None else response.text
        decision = await self.guards.decide(GuardInput(
            place="output", text=text, run_id=self.journal.run_id, agent=self.agent,
            step_key=key, history=history, deps=self.deps, tenant=self.tenant,
            user=self.user, judge=self.judge(key, "output")))
        if not decision.journaled:
            return response
        gkey = guard_key(key, "output")
        await journal_decision(self.journal, gkey, "output", decision)
        if decision.action == "allow":
            return response
        if decision.action == "block":
            raise blocked(decision, self.journal.run_id, gkey, "the final answer")
        new = decision.text if decision.action == "redact" else (
            f"[answer withheld for review: {decision.reason}]")
        assert new is not None
        return _with_answer(response, final, new)

    def chunk_screen(self, key: str,
                     history: list[Message]) -> Callable[[str], Awaitable[str | None]]:
        """For streaming: the text so far as the ``output`` guards would let it be shown
        (redacted), or None to withhold it. Not journaled: the final answer's decision is."""
        async def screen(text: str) -> str | None:
            decision = await self.guards.decide(GuardInput(
                place="output", text=text, run_id=self.journal.run_id, agent=self.agent,
                step_key=key, history=history, deps=self.deps, partial=True,
                tenant=self.tenant, user=self.user))
            if decision.action == "allow":
                return text
            return decision.text if decision.action == "redact" else None

        return screen


def answer_escalation(journal: Journal, key: str) -> GuardDecision | None:
    """An ``escalate`` decision recorded on the answer of model step ``key``, if any."""
    decision = recorded_decision(journal, guard_key(key, "output"))
    if decision is not None and decision.action == "escalate":
        return decision
    return None


def _with_answer(response: ModelResponse, final: ToolCallPart | None,
                 text: str) -> ModelResponse:
    if final is not None:
        parts = tuple(replace(p, arguments=text) if p is final else p for p in response.parts)
    else:
        parts = (*(p for p in response.parts if not isinstance(p, TextPart)), TextPart(text=text))
    return replace(response, parts=parts)


@functools.lru_cache(maxsize=256)
def _parsed(arguments: str) -> dict[str, Any] | None:
    """The call's arguments, parsed once for every guard of the call (read-only)."""
    try:
        value = json.loads(arguments or "{}")
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
