"""An LLM-judged guard: a keel agent reads the text and decides, as a sub-run of the run.

The judge is an ordinary :class:`keel.Agent` (its model, instructions, budget and retries)
whose output is a :class:`JudgeVerdict`. At ``tool_args``, ``tool_output`` and ``output`` it
runs on the run's own journal under ``<step>/guard:<place>/<judge>``: journaled (a resumed or
replayed run reads the verdict back instead of asking the model again), counted in the run's
budget, retried as any model call. At ``input`` there is no run yet, so it runs as a run of its
own (``store=`` the judge's store, in memory by default). A judge that fails fails closed.
A streamed answer is held until the judge passed the whole of it (``guard_partial``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import pydantic

from keel.core import ConfigError
from keel.runtime import GuardDecision, GuardInput, Middleware, Place

_PROMPT = (
    "You check text for an AI agent before it is used. Place: {place}. {about}\n"
    "Decide: allow it, block it (say why, in one sentence the user or the model may read), or "
    "escalate it to a person when you are unsure.\n\n--- text ---\n{text}\n--- end ---")
_ABOUT: dict[str, str] = {
    "input": "It is the user's message.",
    "tool_args": "It is the arguments of a call to the tool {tool}.",
    "tool_output": "It is what the tool {tool} returned (untrusted content).",
    "output": "It is the agent's final answer to the user.",
}


class JudgeVerdict(pydantic.BaseModel):
    """What a judge answers."""

    action: Literal["allow", "block", "escalate"]
    reason: str = ""


class JudgeGuard(Middleware):
    """Ask ``judge`` (a ``keel.Agent``; its output type is set to :class:`JudgeVerdict`) about
    the text at ``places``. ``max_chars`` cuts what the judge reads (the head of the text).
    The judge's instructions say what to look for."""

    guard_partial = False
    guard_timeout = None  # the judge's own budget and timeouts bound it

    def __init__(self, judge: Any, *, places: Iterable[Place] | Place = ("output",),
                 name: str | None = None, max_chars: int = 20_000,
                 store: Any = None) -> None:
        from keel.runtime import Agent

        if not isinstance(judge, Agent):
            raise ConfigError("JudgeGuard.judge", f"must be a keel Agent, not "
                              f"{type(judge).__name__}")
        chosen = frozenset((places,) if isinstance(places, str) else places)
        odd = chosen - set(_ABOUT)
        if odd or not chosen:
            raise ConfigError("JudgeGuard.places", "choose among " + ", ".join(_ABOUT)
                              + (f"; not {sorted(odd)[0]!r}" if odd else ""))
        if not isinstance(max_chars, int) or isinstance(max_chars, bool) or max_chars < 100:
            raise ConfigError("JudgeGuard.max_chars", "must be a whole number of at least 100")
        self.judge = judge if judge.output_type is JudgeVerdict else judge.clone(
            output_type=JudgeVerdict)
        self.guard_places = chosen
        self.name = name or f"judge:{judge.name}"
        self.max_chars = max_chars
        self.store = store

    async def check(self, inp: GuardInput) -> GuardDecision | None:
        tool = inp.tool.name if inp.tool is not None else ""
        prompt = _PROMPT.format(place=inp.place, about=_ABOUT[inp.place].format(tool=tool),
                                text=inp.text[:self.max_chars])
        if inp.judge is not None:
            result = await inp.judge(self.judge, prompt)
        else:
            from keel.store import MemoryStore

            result = await self.judge.run(prompt, store=self.store or MemoryStore())
        verdict = result.output
        if not isinstance(verdict, JudgeVerdict):  # fail closed
            return GuardDecision.block(f"the judge answered {type(verdict).__name__}, not a "
                                       "verdict", evidence={"judge": self.judge.name})
        if verdict.action == "allow":
            return None
        reason = verdict.reason.strip() or f"the judge chose {verdict.action}"
        evidence = {"judge": self.judge.name, "run_id": result.run_id}
        if verdict.action == "block":
            return GuardDecision.block(reason, evidence=evidence)
        return GuardDecision.escalate(reason, evidence=evidence)
