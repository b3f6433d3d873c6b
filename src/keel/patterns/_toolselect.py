"""Tool selection: the routing machinery choosing which *tool groups* an agent sees on a
turn. An agent with 60 tools in 8 groups answers better, cheaper and faster when a turn
about an invoice only shows it the billing tools (plus a few it always needs)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from keel.core import ConfigError, Message
from keel.patterns._embed import Embedder
from keel.patterns._routers import EmbeddingRouter
from keel.patterns._routing import (
    Conversation,
    Route,
    RouteDecider,
    RouteDecision,
    RouterInput,
    check_threshold,
    conversation_of,
)
from keel.runtime import Agent, FlowContext, RunResult, Share, check_name
from keel.tools import Tool


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolSelection:
    """The groups chosen for a turn (best first, then the ``always`` groups), their tools,
    and the decision they came from (journaled as a ``tool_select`` step in a run)."""

    groups: tuple[str, ...]
    tools: tuple[Tool, ...]
    decision: RouteDecision
    all_groups: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"groups": list(self.groups), "tools": [t.name for t in self.tools],
                "all_groups": self.all_groups, "decision": self.decision.to_json()}


class ToolSelector:
    """Picks the tool groups relevant to a turn.

    ``tools``: tools whose ``group`` metadata (``@tool(group=...)``) says where they belong,
    and/or ``groups={name: [tools]}``. ``router``: any router whose routes are the group
    names; by default an :class:`EmbeddingRouter` over ``examples={group: [utterances]}``
    plus, for every group, its tools' names and descriptions (so a group needs no examples
    of its own). The decision's route and its alternatives whose score is at least
    ``min_score`` are exposed, ``max_groups`` at most, plus the ``always`` groups. Below
    the router's threshold ``on_low_confidence`` says what the turn sees: ``"all"`` tools
    (the default: nothing is hidden when unsure) or only the ``"always"`` groups.
    """

    def __init__(self, tools: Iterable[Tool] = (), *,
                 groups: Mapping[str, Iterable[Tool]] | None = None,
                 router: RouteDecider | None = None,
                 examples: Mapping[str, Sequence[str]] | None = None,
                 always: Iterable[str] = (), max_groups: int = 2, min_score: float = 0.25,
                 threshold: float = 0.35, embedder: Embedder | None = None,
                 on_low_confidence: Literal["all", "always"] = "all") -> None:
        self.groups: dict[str, list[Tool]] = {}
        seen: set[str] = set()
        for t in tools:
            self._add(t.meta.group if isinstance(t, Tool) else "", t, seen)
        for name, members in (groups or {}).items():
            for t in members:
                self._add(name, t, seen)
        if not self.groups:
            raise ConfigError("tools", "a ToolSelector needs at least one tool")
        self.always = tuple(always)
        for g in self.always:
            if g not in self.groups:
                raise ConfigError("always", f"{g!r} is not a tool group; groups are "
                                  f"{sorted(self.groups)}")
        if isinstance(max_groups, bool) or not isinstance(max_groups, int) or max_groups < 1:
            raise ConfigError("max_groups", f"must be a whole number >= 1, not {max_groups!r}")
        self.max_groups = max_groups
        self.min_score = check_threshold("min_score", min_score)
        if on_low_confidence not in ("all", "always"):
            raise ConfigError("on_low_confidence", f"must be 'all' or 'always', not "
                              f"{on_low_confidence!r}")
        self.on_low_confidence = on_low_confidence
        examples = dict(examples or {})
        unknown = sorted(set(examples) - set(self.groups))
        if unknown:
            raise ConfigError("examples", f"groups {unknown} have no tools")
        if router is None:
            routes = [Route(g, examples=[*examples.get(g, ()), *map(_describe, members)])
                      for g, members in self.groups.items() if g not in self.always]
            if not routes:
                raise ConfigError("always", "every group is in 'always'; nothing to select")
            router = EmbeddingRouter(routes, k=5, threshold=threshold, embedder=embedder)
        else:
            stray = sorted(router.route_names() - set(self.groups))
            if stray:
                raise ConfigError("router", f"its routes {stray} are not tool groups "
                                  f"{sorted(self.groups)}")
        self.router = router

    def _add(self, group: str, t: Tool, seen: set[str]) -> None:
        if not isinstance(t, Tool):
            raise ConfigError("tools", f"{t!r} is not a keel tool; decorate it with @keel.tool")
        check_name("tool group", group)
        if t.name in seen:
            raise ConfigError("tools", f"two tools are named {t.name!r}")
        seen.add(t.name)
        self.groups.setdefault(group, []).append(t)

    @property
    def tools(self) -> list[Tool]:
        return [t for members in self.groups.values() for t in members]

    async def select(self, turn: RouterInput | Conversation) -> ToolSelection:
        """The groups and tools for a turn (a message or a conversation)."""
        decision = await self.router.decide(conversation_of(turn))
        return self.selection(decision)

    def selection(self, decision: RouteDecision) -> ToolSelection:
        if not decision.confident:
            if self.on_low_confidence == "all":
                return ToolSelection(groups=tuple(self.groups), tools=tuple(self.tools),
                                     decision=decision, all_groups=True)
            chosen: list[str] = []
        else:
            chosen = [decision.route] if decision.route else []
            for name, score in decision.alternatives:
                if len(chosen) >= self.max_groups:
                    break
                if score >= self.min_score and name in self.groups and name not in chosen:
                    chosen.append(name)
        chosen += [g for g in self.always if g not in chosen]
        tools = tuple(t for g in chosen for t in self.groups[g])
        return ToolSelection(groups=tuple(chosen), tools=tools, decision=decision)

    async def agent_for(self, turn: RouterInput | Conversation,
                        agent: Agent[Any]) -> Agent[Any]:
        """``agent`` with only the selected tools (outside a run: nothing is journaled)."""
        return agent.clone(tools=(await self.select(turn)).tools)

    async def run_agent(self, ctx: FlowContext, agent: Agent[Any], input: str, *,
                        name: str | None = None, history: Sequence[Message] | None = None,
                        budget: Share = None) -> RunResult[Any]:
        """Inside a flow: select the groups for ``input`` (and ``history``) as a journaled
        ``tool_select`` step ``<path>/<name>.tools``, then run ``agent`` with only those
        tools under ``<path>/<name>``. A resumed or replayed run exposes the same tools."""
        label = check_name("name", name or agent.name)
        turns: list[Message] = [*(history or ()), Message.user(input)]
        conversation = conversation_of(turns)

        async def decide() -> dict[str, Any]:
            return self.selection(await self.router.decide(conversation)).to_json()

        recorded = await ctx.step(f"{label}.tools", decide, kind="tool_select",
                                  input=conversation.to_json())
        by_name = {t.name: t for t in self.tools}
        tools = [by_name[n] for n in recorded["tools"] if n in by_name]
        return await ctx.run_agent(agent.clone(tools=tools), input, name=label,
                                   history=history, budget=budget)


def _describe(t: Tool) -> str:
    words = t.name.replace("_", " ").replace("-", " ")
    return f"{words}: {t.meta.description}" if t.meta.description else words
