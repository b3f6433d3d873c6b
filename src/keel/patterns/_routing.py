"""Routing: send each request to the route (an agent, a flow or a function) that fits it.

A :class:`Route` names a destination and, for the learned routers, labelled examples. A
router (:mod:`keel.patterns._routers`: rules, embeddings, an LLM classifier, or a hybrid of
them) turns a message or a whole conversation into a :class:`RouteDecision` with a
confidence. :class:`Router` is the flow that runs it: it journals the decision
(``<router>/route``, kind ``route``), applies the low-confidence policy (ask a clarifying
question, take a fallback route, or escalate to a person) and runs the chosen target under
``<router>/<route>``. :func:`route_decisions` lists the decisions of past runs so that
misroutes can be found.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, Unpack

from keel.core import ConfigError, Message, UserError, to_text
from keel.runtime import Agent, Flow, FlowContext, FlowGraph, FlowOptions, check_name
from keel.store import RunFilter, RunStore

if TYPE_CHECKING:
    pass

Action: TypeAlias = Literal["route", "clarify", "fallback", "escalate"]
ACTIONS: tuple[str, ...] = ("route", "clarify", "fallback", "escalate")
LowConfidence: TypeAlias = Literal["clarify", "fallback", "escalate"]
#: What a router reads: one message, or a conversation (oldest first) of strings (user
#: turns), keel :class:`Message` objects or ``{"role": ..., "content": ...}`` dicts.
RouterInput: TypeAlias = "str | Sequence[str | Message | Mapping[str, Any]]"
Target: TypeAlias = "Agent[Any] | Flow[Any] | Callable[[str], Any] | None"


# ------------------------------------------------------------------------------ conversation

@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    text: str


@dataclass(frozen=True, slots=True)
class Conversation:
    """A router's input, normalised: the turns oldest first. ``last`` is the newest user turn
    (what the chosen route answers); ``context(n)`` the n turns before it."""

    turns: tuple[Turn, ...]

    @property
    def last(self) -> str:
        for turn in reversed(self.turns):
            if turn.role == "user":
                return turn.text
        return self.turns[-1].text if self.turns else ""

    def _last_index(self) -> int:
        for i in range(len(self.turns) - 1, -1, -1):
            if self.turns[i].role == "user":
                return i
        return len(self.turns) - 1

    def context(self, n: int) -> tuple[Turn, ...]:
        """Up to ``n`` turns before the last user turn (newest last)."""
        end = self._last_index()
        return self.turns[max(0, end - n):max(0, end)] if n > 0 else ()

    def history(self) -> list[Message]:
        """The turns before the last user turn, as keel messages (for the route's agent)."""
        out: list[Message] = []
        for turn in self.turns[:max(0, self._last_index())]:
            if turn.role == "assistant":
                out.append(Message.assistant(turn.text))
            elif turn.role == "user":
                out.append(Message.user(turn.text))
        return out

    def to_json(self) -> list[dict[str, str]]:
        return [{"role": t.role, "content": t.text} for t in self.turns]


def conversation_of(value: RouterInput | Conversation) -> Conversation:  # noqa: C901 - one branch per accepted input shape; to split
    """Normalise a router input. A string that is a JSON list of ``{"role", "content"}``
    objects (what :func:`conversation_input` makes) is read as a conversation."""
    if isinstance(value, Conversation):
        return value
    if isinstance(value, str):
        stripped = value.lstrip()
        if stripped.startswith("[{"):
            try:
                decoded = json.loads(value)
            except ValueError:
                decoded = None
            if isinstance(decoded, list) and decoded and all(
                    isinstance(m, dict) and "content" in m for m in decoded):
                return conversation_of(decoded)
        return Conversation((Turn("user", value),))
    if not isinstance(value, Sequence):
        raise UserError(f"a router input is a string or a list of turns, not "
                        f"{type(value).__name__}")
    turns: list[Turn] = []
    for item in value:
        if isinstance(item, str):
            turns.append(Turn("user", item))
        elif isinstance(item, Message):
            if item.role in ("user", "assistant") and item.text:
                turns.append(Turn(item.role, item.text))
        elif isinstance(item, Mapping):
            role, content = item.get("role", "user"), item.get("content", "")
            if not isinstance(content, str):
                raise UserError(f"a conversation turn's content must be text, not "
                                f"{type(content).__name__}")
            if role in ("user", "assistant") and content:
                turns.append(Turn(str(role), content))
        else:
            raise UserError(f"a conversation turn is a string, a Message or a dict, not "
                            f"{type(item).__name__}")
    if not turns:
        raise UserError("the conversation to route has no user or assistant text")
    return Conversation(tuple(turns))


def conversation_input(turns: RouterInput) -> str:
    """A conversation as the string input of a :class:`Router` run (``router.run(...)``
    takes a string): JSON of ``[{"role": ..., "content": ...}, ...]``."""
    return json.dumps(conversation_of(turns).to_json(), ensure_ascii=False)


# ------------------------------------------------------------------------------------ routes

class Route:
    """A destination. ``target``: an :class:`Agent` (run with the last user message, the
    earlier turns as its history), a :class:`Flow`, a function of the message (sync or async,
    returning JSON-able data; its call is journaled), or None (the decision is the output).
    ``examples``: labelled utterances (the embedding router needs them); ``description``:
    what belongs here (the LLM classifier reads it)."""

    __slots__ = ("description", "examples", "name", "target")

    def __init__(self, name: str, *, target: Target = None, examples: Iterable[str] = (),
                 description: str = "") -> None:
        self.name = check_name("route name", name)
        if isinstance(examples, str):
            raise ConfigError(f"route {name!r} examples", "must be a list of strings, not one "
                              "string")
        self.examples: tuple[str, ...] = tuple(examples)
        for ex in self.examples:
            if not isinstance(ex, str) or not ex.strip():
                raise ConfigError(f"route {name!r} examples",
                                  f"every example must be non-empty text, not {ex!r}")
        if not isinstance(description, str):
            raise ConfigError(f"route {name!r} description", "must be a string")
        if target is not None and not isinstance(target, Agent | Flow) and not callable(target):
            raise ConfigError(f"route {name!r} target", "must be an Agent, a Flow, a function "
                              f"or None, not {type(target).__name__}")
        self.target = target
        self.description = description

    def __repr__(self) -> str:
        return f"<Route {self.name} examples={len(self.examples)}>"


def check_routes(routes: Iterable[Route], *, part: str = "routes") -> tuple[Route, ...]:
    """Routes as a tuple: at least one, all :class:`Route`, names unique."""
    if isinstance(routes, Route):
        routes = (routes,)
    out = tuple(routes)
    if not out:
        raise ConfigError(part, "needs at least one Route")
    seen: set[str] = set()
    for r in out:
        if not isinstance(r, Route):
            raise ConfigError(part, f"expected Route objects, got {type(r).__name__}")
        if r.name in seen:
            raise ConfigError(part, f"two routes are named {r.name!r}; route names must be "
                              "unique")
        seen.add(r.name)
    return out


def check_threshold(part: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ConfigError(part, f"must be a number from 0 to 1, not {value!r}")
    return float(value)


# --------------------------------------------------------------------------------- decisions

@dataclass(frozen=True, slots=True, kw_only=True)
class RouteDecision:
    """What a router decided, as journaled.

    ``route``: the route taken (None only before the low-confidence policy, when a router
    had no opinion). ``confidence`` in 0..1, measured against ``threshold``; ``router`` says
    which router decided (``hybrid/embedding`` for a hybrid's member). ``alternatives``: the
    runner-up routes with their scores, best first. ``action``: ``route`` (confident),
    ``fallback`` (low confidence, the fallback route taken), ``clarify`` (low confidence,
    ``question`` is asked instead) or ``escalate`` (low confidence, a person chose).
    ``proposed``: the router's best guess before the policy. ``tried``: the hybrid's
    members in order, with what each said."""

    route: str | None
    confidence: float
    router: str
    threshold: float
    action: Action = "route"
    alternatives: tuple[tuple[str, float], ...] = ()
    proposed: str | None = None
    question: str | None = None
    reason: str = ""
    tried: tuple[dict[str, Any], ...] = field(default=())

    @property
    def confident(self) -> bool:
        return self.route is not None and self.confidence >= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {
            "route": self.route, "confidence": round(self.confidence, 6),
            "router": self.router, "threshold": self.threshold, "action": self.action,
            "alternatives": [[n, round(s, 6)] for n, s in self.alternatives],
            "proposed": self.proposed, "question": self.question, "reason": self.reason,
            "tried": list(self.tried),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RouteDecision:
        return cls(route=data["route"], confidence=float(data["confidence"]),
                   router=data["router"], threshold=float(data["threshold"]),
                   action=data.get("action", "route"),
                   alternatives=tuple((str(n), float(s))
                                      for n, s in data.get("alternatives", ())),
                   proposed=data.get("proposed"), question=data.get("question"),
                   reason=data.get("reason", ""), tried=tuple(data.get("tried", ())))

    def but(self, **changes: Any) -> RouteDecision:
        values = {f: getattr(self, f) for f in self.__dataclass_fields__}
        values.update(changes)
        return RouteDecision(**values)


class RouteDecider(Protocol):
    """What a :class:`Router` runs (every router in ``_routers`` is one): ``decide`` turns a
    conversation into a decision *before* the low-confidence policy."""

    kind: str
    threshold: float

    @property
    def routes(self) -> tuple[Route, ...]: ...

    def route_names(self) -> frozenset[str]: ...

    async def decide(self, conversation: Conversation) -> RouteDecision: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Routed:
    """A :class:`Router` run's output: the decision and what the route's target returned
    (None when the action is ``clarify``: ``decision.question`` is the answer then)."""

    decision: RouteDecision
    output: Any = None

    @property
    def route(self) -> str | None:
        return self.decision.route

    @property
    def text(self) -> str:
        if self.decision.action == "clarify":
            return self.decision.question or ""
        return to_text(self.output)


DEFAULT_QUESTION = ("Sorry, I'm not sure I understood. Could you tell me a bit more about "
                    "what you need help with?")


class Router(Flow[Routed]):
    """A flow that routes each request (pattern ``router``).

    ``router``: a rule, embedding, LLM or hybrid router. ``routes``: the destinations (by
    default the router's own). ``catch_all``: the route for requests that fit nowhere; it
    is **required**: the route named ``"other"`` unless another name is given, and a
    router without it is rejected. It is also where a decision that names no route goes and,
    unless ``fallback`` names another, the fallback route.

    Below the router's threshold ``on_low_confidence`` decides: ``"clarify"`` returns a
    :class:`Routed` whose decision has action ``clarify`` and the ``question`` (the run
    completes; route the user's answer with the conversation); ``"fallback"`` takes the
    ``fallback`` route; ``"escalate"`` suspends the run for a person (trigger
    ``low_route_confidence``, queue ``queue``): the note they resume it with names the
    route (any other note, or none, takes the catch-all).
    """

    kind = "router"

    def __init__(self, name: str, router: RouteDecider, *,
                 routes: Iterable[Route] | None = None, catch_all: str = "other",
                 on_low_confidence: LowConfidence = "clarify", fallback: str | None = None,
                 question: str = DEFAULT_QUESTION, queue: str | None = None,
                 **options: Unpack[FlowOptions]) -> None:
        super().__init__(name, **options)
        if not callable(getattr(router, "decide", None)):
            raise ConfigError("router", f"expected a router (RuleRouter, EmbeddingRouter, "
                              f"LLMRouter, HybridRouter), got {type(router).__name__}")
        self.router = router
        self.routes = check_routes(router.routes if routes is None else routes)
        self._by_name = {r.name: r for r in self.routes}
        unknown = sorted(router.route_names() - set(self._by_name))
        if unknown:
            raise ConfigError("router", f"it can choose routes {unknown} that are not among "
                              f"this router's routes {sorted(self._by_name)}")
        if catch_all not in self._by_name:
            raise ConfigError("catch_all", f"a router needs a catch-all route; {catch_all!r} "
                              f"is not among the routes {sorted(self._by_name)} (add "
                              "Route('other', ...) or pass catch_all=)")
        self.catch_all = catch_all
        if on_low_confidence not in ("clarify", "fallback", "escalate"):
            raise ConfigError("on_low_confidence", "must be 'clarify', 'fallback' or "
                              f"'escalate', not {on_low_confidence!r}")
        self.on_low_confidence: LowConfidence = on_low_confidence
        if fallback is not None and fallback not in self._by_name:
            raise ConfigError("fallback", f"{fallback!r} is not among the routes "
                              f"{sorted(self._by_name)}")
        self.fallback = fallback or catch_all
        if not isinstance(question, str) or not question.strip():
            raise ConfigError("question", "must be a non-empty clarifying question")
        self.question = question
        self.queue = queue

    def agents(self) -> Sequence[Agent[Any]]:
        return [r.target for r in self.routes if isinstance(r.target, Agent)]

    def graph(self, prefix: str | None = None) -> FlowGraph:
        """This router's structure as data (its decision, its routes (the catch-all marked),
        the low-confidence path and what each route runs), each node with the journal keys
        that show a run went through it; ``prefix``: the step key it runs under (default:
        its name). See :func:`keel.runtime.flow_graph`."""
        from keel.patterns._graphs import router_graph

        return router_graph(self, prefix or self.name)

    def prepare(self) -> None:
        super().prepare()
        for r in self.routes:
            if isinstance(r.target, Flow):
                r.target.prepare()

    # ---------------------------------------------------------------------------- deciding

    async def decide(self, value: RouterInput | Conversation) -> RouteDecision:
        """The decision for a message or conversation, low-confidence policy applied,
        outside any run (nothing is journaled). With ``on_low_confidence="escalate"`` the
        decision has action ``escalate`` and route None: a person must choose."""
        raw = await self.router.decide(conversation_of(value))
        return self._settle(raw)

    def _settle(self, raw: RouteDecision) -> RouteDecision:
        proposed = raw.route if raw.route in self._by_name else None
        if raw.route is not None and proposed is None:
            raw = raw.but(reason=(raw.reason + "; " if raw.reason else "")
                          + f"unknown route {raw.route!r}", confidence=0.0)
        if proposed is not None and raw.confidence >= raw.threshold:
            return raw.but(route=proposed, proposed=proposed, action="route")
        base = raw.but(proposed=proposed)
        if self.on_low_confidence == "fallback":
            return base.but(route=self.fallback, action="fallback")
        if self.on_low_confidence == "clarify":
            return base.but(route=None, action="clarify", question=self.question)
        return base.but(route=None, action="escalate")

    # ----------------------------------------------------------------------------- running

    async def body(self, ctx: FlowContext, input: str) -> Routed:
        conversation = conversation_of(input)

        async def decide() -> dict[str, Any]:
            return self._settle(await self.router.decide(conversation)).to_json()

        recorded = await ctx.step("route", decide, kind="route",
                                  input={"router": self.router.kind,
                                         "conversation": conversation.to_json()},
                                  budgeted=bool(getattr(self.router, "costly", False)))
        decision = RouteDecision.from_json(recorded)
        if decision.action == "clarify":
            return Routed(decision=decision)
        if decision.action == "escalate":
            decision = await self._escalated(ctx, decision, conversation)
        route = self._by_name[decision.route or self.catch_all]
        return Routed(decision=decision,
                      output=await self._run_target(ctx, route, conversation))

    async def _escalated(self, ctx: FlowContext, decision: RouteDecision,
                         conversation: Conversation) -> RouteDecision:
        best = decision.proposed or "none"
        note = await ctx.escalate(
            f"route confidence {decision.confidence:.2f} is below {decision.threshold:.2f} "
            f"(best guess: {best}); which route should take: {conversation.last[:200]!r}? "
            f"Resume with one of {sorted(self._by_name)} as the note.",
            name="route-escalation", trigger="low_route_confidence", queue=self.queue,
            proposal=decision.proposed)
        chosen = (note or "").strip()
        route = chosen if chosen in self._by_name else self.catch_all
        return decision.but(route=route, reason=(decision.reason + "; " if decision.reason
                                                 else "") + f"a person chose {route!r}")

    async def _run_target(self, ctx: FlowContext, route: Route,
                          conversation: Conversation) -> Any:
        target = route.target
        if target is None:
            return None
        if isinstance(target, Agent):
            result = await ctx.run_agent(target, conversation.last, name=route.name,
                                         history=conversation.history() or None)
            return result.output
        if isinstance(target, Flow):
            return (await ctx.run_flow(target, conversation.last, name=route.name)).output

        fn = target

        async def call() -> Any:
            out = fn(conversation.last)
            return await out if inspect.isawaitable(out) else out

        return await ctx.step(f"{route.name}/call", call, kind="call",
                              input=conversation.last, budgeted=True)


# ------------------------------------------------------------------------------ finding them

@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionRecord:
    """One journaled routing decision of a past run (see :func:`route_decisions`)."""

    run_id: str
    key: str
    input: Any
    decision: RouteDecision
    created_at: float


async def route_decisions(store: RunStore, *, agent: str | None = None,
                          run_ids: Iterable[str] | None = None, limit: int = 50,
                          below: float | None = None,
                          action: str | None = None) -> list[DecisionRecord]:
    """The routing decisions journaled by past runs, newest run first: of ``run_ids``, or of
    the newest ``limit`` runs (of the flow named ``agent``). ``below`` keeps decisions with
    a confidence under it, ``action`` those with that action: the places to look for
    misroutes. Each record has the run's input, so it can be relabelled and added to a
    route's examples."""
    if action is not None and action not in ACTIONS:
        raise ConfigError("action", f"must be one of {ACTIONS}, not {action!r}")
    if run_ids is None:
        runs = await store.list_runs(RunFilter(agent=agent, limit=limit))
        ids = [r.run_id for r in runs]
    else:
        ids = list(run_ids)
    out: list[DecisionRecord] = []
    for run_id in ids:
        record = await store.get_run(run_id)
        for entry in await store.read_journal(run_id):
            if entry.kind != "route" or entry.phase != "result" or not isinstance(
                    entry.data, dict) or "confidence" not in entry.data:
                continue
            decision = RouteDecision.from_json(entry.data)
            if below is not None and decision.confidence >= below:
                continue
            if action is not None and decision.action != action:
                continue
            out.append(DecisionRecord(run_id=run_id, key=entry.key, input=record.input,
                                      decision=decision, created_at=entry.created_at))
    return out


# ------------------------------------------------------------------------- labelled dataset

@dataclass(frozen=True, slots=True)
class Labelled:
    """One labelled utterance of :func:`routing_dataset`."""

    text: str
    intent: str
    split: Literal["train", "test"]


def routing_dataset(split: Literal["train", "test"] | None = None) -> list[Labelled]:
    """The labelled customer-service utterances shipped with keel (252, six intents:
    billing, shipping, returns, technical, account, other), for training and measuring
    routers. The split is fixed: every 4th utterance of each intent is held out
    (``split="test"``, 60 of them); the rest is ``"train"``."""
    from importlib import resources

    if split not in (None, "train", "test"):
        raise ConfigError("split", f"must be 'train', 'test' or None, not {split!r}")
    text = (resources.files("keel.patterns") / "data" / "routing_intents.jsonl").read_text(
        encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [Labelled(r["text"], r["intent"], r["split"]) for r in rows
            if split is None or r["split"] == split]


def routes_from(dataset: Iterable[Labelled], *,
                targets: Mapping[str, Target] | None = None) -> list[Route]:
    """One :class:`Route` per intent of ``dataset`` with its utterances as examples (in
    order of first appearance), targets from ``targets`` by intent name."""
    grouped: dict[str, list[str]] = {}
    for row in dataset:
        grouped.setdefault(row.intent, []).append(row.text)
    targets = targets or {}
    return [Route(name, target=targets.get(name), examples=texts)
            for name, texts in grouped.items()]
