"""Handoffs: an agent hands the conversation to another agent, or to a person.

Each agent of a :class:`HandoffTeam` gets ``transfer_to_<name>(reason)`` tools for the agents
it may hand to, and ``transfer_to_human(reason)``. A transfer tool raises
:class:`keel.Handoff`: the agent loop journals the call as an ordinary tool step, finishes
the turn's other calls and ends the agent's run with the ``Handoff`` (also when the step is
read back on resume or replay); the team journals the handoff as a ``handoff`` step, and the
target agent continues the conversation with the history a :class:`HistoryFilter` lets through.
Only the first transfer of a turn counts.

Step keys (team ``desk``)::

    desk/hop:0/triage/turn:0/model                  the first agent's run
    desk/hop:0/triage/turn:0/tool:transfer_to_billing#0
    desk/hop:0/handoff                              {"from", "to", "reason", "hop"}
    desk/hop:1/billing/turn:0/model                 the next agent's run
    desk/hop:1/human                                an escalation (to a person)

Loops (A to B to A ...) are stopped: a directed handoff repeated more than ``max_repeats``
times, or more than ``max_handoffs`` handoffs, is escalated to a person (default) or fails
the run with :class:`HandoffLoop`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Unpack

from keel.core import ConfigError, Handoff, Message, RunError, ToolResultPart
from keel.patterns._history_filter import HistoryFilter, answer_calls
from keel.runtime import Agent, Flow, FlowContext, FlowGraph, FlowOptions
from keel.tools import Tool, tool

HUMAN = "human"
_PREFIX = "transfer_to_"
#: Agent names become tool names (``transfer_to_<name>``): letters, digits, '_' and '-'.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,47}$")
OnLoop = Literal["escalate", "fail"]


class HandoffLoop(RunError):
    """The agents of a team kept handing the conversation around (a loop, or more handoffs
    than ``max_handoffs``) and the team is set to fail (``on_loop="fail"``)."""


def _transfer_tool(target: str, about: str) -> Tool:
    def transfer(reason: str) -> None:
        raise Handoff(target, reason)  # the loop records the call, then hands off

    return tool(name=f"{_PREFIX}{target}", description=about, risk="read")(transfer)


def _unanswered(messages: list[Message], transfers: frozenset[str]) -> list[Message]:
    """The handing agent's conversation with the transfer calls of its last turn left
    unanswered (the handoff answers them, not a tool result): the receiving agent gets no
    tool internals of the handoff itself, and the sender, if it goes on, gets them answered
    by what happened."""
    out = list(messages)
    if out and out[-1].role == "tool":
        kept = tuple(p for p in out[-1].parts
                     if not (isinstance(p, ToolResultPart) and p.tool_name in transfers))
        if kept:
            out[-1] = Message(role="tool", parts=kept)
        else:
            out.pop()
    return out


def _about(agent: Agent[Any]) -> str:
    first = agent.instructions.strip().split("\n", 1)[0][:200]
    return (f"Hand the conversation to {agent.name}" + (f" ({first})" if first else "")
            + ". Say why in `reason`; you stop and they continue.")


@dataclass
class _Trail:
    """Handoffs since the run started (or since a person last looked): the loop check."""

    max_handoffs: int
    max_repeats: int
    path: list[str]
    count: int = 0
    pairs: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, source: str, target: str) -> str | None:
        """Record a handoff; a description of the loop when it is one too many."""
        self.count += 1
        n = self.pairs[(source, target)] = self.pairs.get((source, target), 0) + 1
        self.path.append(target)
        route = " -> ".join(self.path)
        if self.count > self.max_handoffs:
            return f"more than {self.max_handoffs} handoffs in a row ({route})"
        if n > self.max_repeats:
            return f"handoff loop: {source} handed to {target} {n} times ({route})"
        return None

    def reset(self, current: str) -> None:
        self.count = 0
        self.pairs.clear()
        self.path = [current]


@dataclass(frozen=True)
class _Moved:
    """A handoff that left an agent's run: where to, why, the conversation, the call."""

    target: str
    reason: str
    messages: list[Message]
    key: str


@dataclass
class _Hop:
    """Who talks next, with what."""

    agent: str
    task: str
    history: list[Message]


class HandoffTeam(Flow[Any]):
    """Agents that hand the conversation to each other (and to a person).

    ``agents``: the team (names are unique, usable in tool names, and not ``human``).
    ``start``: who talks first (default: the first agent). ``routes``: who may hand to whom
    (``{"triage": ["billing", "tech"]}``; default: everyone to everyone else; an agent missing
    from a given mapping hands to nobody). ``history``: what travels with a handoff (default
    :meth:`HistoryFilter.conversation`: no tool internals). ``human``: give every agent
    ``transfer_to_human`` (an escalation with trigger ``handoff`` to ``human_queue``; once
    resolved with ``resume`` the same agent goes on with the person's note).
    ``max_handoffs`` / ``max_repeats``: the loop limits; ``on_loop``: ``"escalate"`` to a
    person (default) or ``"fail"`` with :class:`HandoffLoop`. The output is the final output of
    whichever agent answers.
    """

    kind = "handoff"

    def __init__(self, name: str, *, agents: Sequence[Agent[Any]], start: str | None = None,
                 routes: Mapping[str, Iterable[str]] | None = None,
                 history: HistoryFilter | None = None, human: bool = True,
                 human_queue: str | None = None, max_handoffs: int = 10, max_repeats: int = 2,
                 on_loop: OnLoop = "escalate", **options: Unpack[FlowOptions]) -> None:
        super().__init__(name, **options)
        team = _team(agents)
        self.start = next(iter(team)) if start is None else start
        if self.start not in team:
            raise ConfigError("start", f"{start!r} is not in the team ({', '.join(team)})")
        graph = _routes(team, routes)
        if history is not None and not isinstance(history, HistoryFilter):
            raise ConfigError("history", f"expected a HistoryFilter, got "
                              f"{type(history).__name__}")
        self.history = history or HistoryFilter.conversation()
        for part, value in (("max_handoffs", max_handoffs), ("max_repeats", max_repeats)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(part, f"must be a whole number >= 1, not {value!r}")
        if on_loop not in ("escalate", "fail"):
            raise ConfigError("on_loop", f"must be 'escalate' or 'fail', not {on_loop!r}")
        self.human = bool(human)
        self.human_queue = human_queue
        self.max_handoffs = max_handoffs
        self.max_repeats = max_repeats
        self.on_loop: OnLoop = on_loop
        self.routes = graph
        self.members = {n: self._equip(a, graph[n], team) for n, a in team.items()}
        self._transfers = frozenset([*(f"{_PREFIX}{n}" for n in team), f"{_PREFIX}{HUMAN}"])

    def _equip(self, agent: Agent[Any], targets: list[str],
               team: dict[str, Agent[Any]]) -> Agent[Any]:
        tools = [_transfer_tool(t, _about(team[t])) for t in targets]
        if self.human:
            tools.append(_transfer_tool(HUMAN, "Hand the conversation to a person (a human "
                                        "agent). Say why in `reason`."))
        clash = [t.name for t in tools if t.name in agent.toolset]
        if clash:
            raise ConfigError(f"agents[{agent.name!r}].tools", f"{', '.join(clash)} is "
                              "reserved for handoffs; rename that tool")
        return agent.clone(tools=[*agent.toolset, *tools])

    def agents(self) -> Sequence[Agent[Any]]:
        return list(self.members.values())

    def graph(self, prefix: str | None = None) -> FlowGraph:
        """This handoffteam's structure as data (its agents with their tools, who may hand
        to whom, and the person), each node with the journal keys that show a run went
        through it; ``prefix``: the step key it runs under (default: its name). See
        :func:`keel.runtime.flow_graph`."""
        from keel.patterns._graphs import handoff_graph

        return handoff_graph(self, prefix or self.name, _PREFIX, HUMAN)

    # ---------------------------------------------------------------------------- the run

    async def body(self, ctx: FlowContext, input: str) -> Any:
        trail = _Trail(self.max_handoffs, self.max_repeats, [self.start])
        hop = _Hop(self.start, input, [])
        n = 0
        while True:
            try:
                result = await ctx.scope(f"hop:{n}").run_agent(
                    self.members[hop.agent], hop.task, name=hop.agent, history=hop.history)
                return result.output
            except Handoff as handoff:
                moved = _Moved(handoff.target, handoff.reason,
                               _unanswered(handoff.messages, self._transfers),
                               handoff.step_key or "")
            allowed = [*self.routes[hop.agent], *([HUMAN] if self.human else [])]
            if moved.target not in allowed:
                raise RunError(f"{hop.agent} handed the conversation to {moved.target!r}, "
                               f"which it may not hand to (it may: {', '.join(allowed) or 'none'})",
                               run_id=ctx.run_id, step_key=moved.key or None)
            record = {"from": hop.agent, "to": moved.target, "reason": moved.reason, "hop": n,
                      "call": moved.key}
            await ctx.step(f"hop:{n}/handoff", _const(record), kind="handoff", input=record,
                           blocking=False)
            hop = await self._next(ctx, n, hop.agent, moved, trail)
            n += 1

    async def _next(self, ctx: FlowContext, n: int, source: str, moved: _Moved,
                    trail: _Trail) -> _Hop:
        """Where the conversation goes after hop ``n`` asked to hand it to ``moved.target``."""
        if moved.target == HUMAN:
            note = await ctx.escalate(f"{source} handed the conversation to a person: "
                                      f"{moved.reason or '(no reason given)'}",
                                      name=f"hop:{n}/human", trigger="handoff",
                                      queue=self.human_queue)
            trail.reset(source)
            own = answer_calls(moved.messages, "A person took the conversation over.")
            return _Hop(source, f"[A person took the conversation over and says: "
                                f"{note.strip() or '(no note)'}]", own)
        loop = trail.add(source, moved.target)
        if loop is not None:
            if self.on_loop == "fail":
                raise HandoffLoop(f"{loop}; raise max_handoffs / max_repeats or fix the "
                                  "agents' instructions", run_id=ctx.run_id,
                                  step_key=ctx.key(f"hop:{n}/handoff"))
            note = await ctx.escalate(loop, name=f"hop:{n}/loop", trigger="handoff_loop",
                                      queue=self.human_queue)
            trail.reset(source)
            own = answer_calls(moved.messages, f"Not handed over: {loop}.")
            return _Hop(source, f"[Your handoff to {moved.target} was stopped ({loop}). A "
                                f"person reviewed the conversation and says: "
                                f"{note.strip() or '(no note)'}]", own)
        packet = self.history.packet_text(moved.messages)
        brief = (f"[{source} handed this conversation to you. Reason: "
                 f"{moved.reason or '(none given)'}]")
        if packet is not None:
            brief += f"\n{packet}"
        target = self.members[moved.target].config.model
        return _Hop(moved.target, brief, self.history.apply(moved.messages, model=target))


def _const(value: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    return lambda: value


def _team(agents: Sequence[Agent[Any]]) -> dict[str, Agent[Any]]:
    if isinstance(agents, Agent | str) or not isinstance(agents, Sequence) or not agents:
        raise ConfigError("agents", "expected a non-empty list of Agents")
    team: dict[str, Agent[Any]] = {}
    for i, agent in enumerate(agents):
        if not isinstance(agent, Agent):
            raise ConfigError(f"agents[{i}]", f"expected an Agent, got {type(agent).__name__}")
        name = agent.name
        if not _NAME.match(name):
            raise ConfigError(f"agents[{i}].name", f"{name!r} must start with a letter and "
                              "hold only letters, digits, '_' and '-' (up to 48): it becomes "
                              f"the tool name {_PREFIX}{name}")
        if name == HUMAN:
            raise ConfigError(f"agents[{i}].name", f"{HUMAN!r} is reserved for the handoff "
                              "to a person")
        if name in team:
            raise ConfigError(f"agents[{i}].name", f"two agents are named {name!r}")
        team[name] = agent
    return team


def _routes(team: dict[str, Agent[Any]],
            routes: Mapping[str, Iterable[str]] | None) -> dict[str, list[str]]:
    if routes is None:
        return {n: [t for t in team if t != n] for n in team}
    if not isinstance(routes, Mapping):
        raise ConfigError("routes", "expected a mapping {agent: [agents it may hand to]}")
    graph: dict[str, list[str]] = {n: [] for n in team}
    for source, targets in routes.items():
        if source not in team:
            raise ConfigError(f"routes[{source!r}]", f"{source!r} is not in the team "
                              f"({', '.join(team)})")
        if isinstance(targets, str):
            raise ConfigError(f"routes[{source!r}]", "expected a list of agent names")
        for target in targets:
            if target not in team:
                raise ConfigError(f"routes[{source!r}]", f"{target!r} is not in the team "
                                  f"({', '.join(team)})")
            if target == source:
                raise ConfigError(f"routes[{source!r}]", "an agent cannot hand to itself")
            if target not in graph[source]:
                graph[source].append(target)
    return graph
