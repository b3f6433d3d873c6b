"""The routers: :class:`RuleRouter` (code rules, exact), :class:`EmbeddingRouter`
(k nearest labelled examples), :class:`LLMRouter` (a model as classifier) and
:class:`HybridRouter` (the first of them that is confident wins).

Every router has ``decide(conversation) -> RouteDecision`` and a ``threshold`` in 0..1; the
decision's confidence is compared with it by the :class:`~keel.patterns.Router` flow, which
applies the low-confidence policy. A router with no opinion returns route None.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydantic

from keel.core import ConfigError, Message, ModelSettings, ToolCallPart, ToolSpec
from keel.models import Model, resolve_model
from keel.patterns._embed import Embedder, Vectors, WordLlamaEmbedder, embed_checked, normalised
from keel.patterns._routing import (
    Conversation,
    Route,
    RouteDecider,
    RouteDecision,
    RouterInput,
    check_routes,
    check_threshold,
    conversation_of,
)
from keel.runtime import Agent, check_name


class _Base:
    kind = "router"
    threshold = 0.5
    #: Whether a decision costs a model request (the Router counts it against the budget).
    costly = False
    _routes: tuple[Route, ...] = ()

    @property
    def routes(self) -> tuple[Route, ...]:
        return self._routes

    def route_names(self) -> frozenset[str]:
        return frozenset(r.name for r in self._routes)

    async def decide(self, conversation: Conversation) -> RouteDecision:
        raise NotImplementedError

    async def classify(self, value: RouterInput) -> RouteDecision:
        """:meth:`decide` on a message or conversation (no low-confidence policy)."""
        return await self.decide(conversation_of(value))


# --------------------------------------------------------------------------------- rules

@dataclass(frozen=True, slots=True)
class Rule:
    """One code rule: when it matches, ``route`` is chosen with confidence 1.0. Give exactly
    one of ``regex`` (searched, case-insensitive unless the pattern says otherwise),
    ``keywords`` (any of them as a whole word or phrase, case-insensitive) or ``when`` (a
    predicate on the message)."""

    route: str
    regex: str | re.Pattern[str] | None = None
    keywords: tuple[str, ...] = ()
    when: Callable[[str], bool] | None = None
    name: str = ""

    def compiled(self, index: int) -> _CompiledRule:
        check_name(f"rule {index} route", self.route)
        given = [self.regex is not None, bool(self.keywords), self.when is not None]
        if sum(given) != 1:
            raise ConfigError(f"rule {index}", "give exactly one of regex=, keywords= or "
                              "when=")
        label = self.name or f"rule {index}"
        if self.regex is not None:
            try:
                pattern = (self.regex if isinstance(self.regex, re.Pattern)
                           else re.compile(self.regex, re.IGNORECASE))
            except re.error as exc:
                raise ConfigError(f"rule {index} regex", str(exc)) from exc
            return _CompiledRule(self.route, label, pattern.search)
        if self.keywords:
            if isinstance(self.keywords, str):
                raise ConfigError(f"rule {index} keywords", "must be a list of words")
            words = [k.strip() for k in self.keywords if isinstance(k, str) and k.strip()]
            if len(words) != len(self.keywords):
                raise ConfigError(f"rule {index} keywords", "every keyword must be text")
            joined = "|".join(re.escape(w) for w in words)
            pattern = re.compile(rf"(?<!\w)(?:{joined})(?!\w)", re.IGNORECASE)
            return _CompiledRule(self.route, label, pattern.search)
        predicate = self.when
        if not callable(predicate):
            raise ConfigError(f"rule {index} when", "must be a function of the message")
        return _CompiledRule(self.route, label, predicate)


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    route: str
    label: str
    test: Callable[[str], Any]


class RuleRouter(_Base):
    """Ordered code rules over the last user message: the first rule that matches wins
    with confidence 1.0; no match is no opinion (route None, confidence 0). Fast and exact:
    use it for the obvious cases (an order number, "unsubscribe", a card number pattern).
    ``routes`` (optional) gives the :class:`Route` objects when the rules are used alone."""

    kind = "rules"

    def __init__(self, rules: Iterable[Rule], *, routes: Iterable[Route] = (),
                 threshold: float = 1.0) -> None:
        rules = list(rules)
        if not rules:
            raise ConfigError("rules", "a RuleRouter needs at least one Rule")
        for i, r in enumerate(rules):
            if not isinstance(r, Rule):
                raise ConfigError(f"rule {i}", f"expected a Rule, got {type(r).__name__}")
        self._rules = [r.compiled(i) for i, r in enumerate(rules)]
        self._routes = tuple(routes)
        if self._routes:
            check_routes(self._routes)
        self.threshold = check_threshold("threshold", threshold)

    def route_names(self) -> frozenset[str]:
        return frozenset(r.route for r in self._rules) | super().route_names()

    def match(self, text: str) -> _CompiledRule | None:
        for rule in self._rules:
            if rule.test(text):
                return rule
        return None

    async def decide(self, conversation: Conversation) -> RouteDecision:
        rule = self.match(conversation.last)
        if rule is None:
            return RouteDecision(route=None, confidence=0.0, router=self.kind,
                                 threshold=self.threshold, reason="no rule matched")
        return RouteDecision(route=rule.route, confidence=1.0, router=self.kind,
                             threshold=self.threshold, reason=f"{rule.label} matched")


# ------------------------------------------------------------------------------ embeddings

class EmbeddingRouter(_Base):
    """k-nearest labelled examples.

    Every route needs examples. The query is embedded (the default embedder is WordLlama,
    offline) and compared by cosine similarity with every example; the ``k`` most similar
    vote for their routes, each vote weighted by its similarity (negative similarities count
    0). The winner is the route with the largest vote.

    **Confidence** = the winner's share of the similarity-weighted vote (0..1): 1.0 when all
    k neighbours agree, about 1/k·(its neighbours) when they are split. The winner's best
    similarity is in the decision's ``reason``. On the shipped dataset (WordLlama, k=7)
    decisions with a share >= 0.6 are right ~87% of the time against ~78% overall, hence
    the default threshold 0.6.

    **Conversation**: with earlier turns, the query vector is ``(1 - context_weight)`` × the
    last user turn's unit vector + ``context_weight`` × the unit mean of the
    ``context_turns`` turns before it (re-normalised), so "and the other one?" routes by what
    came before while a self-contained last message still dominates.
    """

    kind = "embedding"
    threshold = 0.6

    def __init__(self, routes: Iterable[Route], *, k: int = 7, threshold: float = 0.6,
                 embedder: Embedder | None = None, context_weight: float = 0.35,
                 context_turns: int = 3) -> None:
        self._routes = check_routes(routes)
        for r in self._routes:
            if not r.examples:
                raise ConfigError(f"route {r.name!r} examples", "the embedding router needs "
                                  "labelled examples for every route; add examples=[...]")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError("k", f"must be a whole number >= 1, not {k!r}")
        self.k = k
        self.threshold = check_threshold("threshold", threshold)
        self.context_weight = check_threshold("context_weight", context_weight)
        if isinstance(context_turns, bool) or not isinstance(context_turns, int) \
                or context_turns < 0:
            raise ConfigError("context_turns", f"must be a whole number >= 0, not "
                              f"{context_turns!r}")
        self.context_turns = context_turns
        if embedder is not None and not callable(getattr(embedder, "embed", None)):
            raise ConfigError("embedder", "must have embed(texts) -> array")
        self.embedder: Embedder = embedder or WordLlamaEmbedder()
        self._labels = np.array([i for i, r in enumerate(self._routes) for _ in r.examples])
        self._texts = [ex for r in self._routes for ex in r.examples]
        self._matrix: Vectors | None = None

    def index(self) -> Vectors:
        """The examples' unit vectors (embedded on first use, then kept)."""
        if self._matrix is None:
            self._matrix = normalised(embed_checked(self.embedder, self._texts))
        return self._matrix

    def query_vector(self, conversation: Conversation) -> Vectors:
        context = [t.text for t in conversation.context(self.context_turns)]
        texts = [conversation.last, *context]
        vectors = normalised(embed_checked(self.embedder, texts))
        query = vectors[0]
        if context and self.context_weight > 0:
            ctx = vectors[1:].mean(axis=0)
            norm = float(np.linalg.norm(ctx))
            if norm > 0:
                query = (1 - self.context_weight) * query + self.context_weight * ctx / norm
        norm = float(np.linalg.norm(query))
        out: Vectors = (query / norm if norm > 0 else query).astype(np.float32)
        return out

    def scores(self, query: Vectors) -> tuple[Vectors, Vectors]:
        """(per-route vote, per-route best similarity) for a unit query vector."""
        sims = self.index() @ query
        k = min(self.k, sims.shape[0])
        top = np.argpartition(-sims, k - 1)[:k]
        n = len(self._routes)
        votes = np.zeros(n, dtype=np.float32)
        np.add.at(votes, self._labels[top], np.clip(sims[top], 0.0, None))
        best = np.full(n, -1.0, dtype=np.float32)
        np.maximum.at(best, self._labels[top], sims[top])
        return votes, best

    async def decide(self, conversation: Conversation) -> RouteDecision:
        votes, best = self.scores(self.query_vector(conversation))
        total = float(votes.sum())
        if total <= 0:
            return RouteDecision(route=None, confidence=0.0, router=self.kind,
                                 threshold=self.threshold, reason="no similar example")
        shares = votes / total
        order = np.argsort(-shares)
        win = int(order[0])
        confidence = float(shares[win])
        alternatives = tuple((self._routes[int(i)].name, float(shares[int(i)]))
                             for i in order[1:4] if shares[int(i)] > 0)
        return RouteDecision(route=self._routes[win].name, confidence=confidence,
                             router=self.kind, threshold=self.threshold,
                             alternatives=alternatives,
                             reason=f"{self.k}-NN vote share {shares[win]:.2f}, "
                                    f"similarity {best[win]:.2f}")


# ------------------------------------------------------------------------------------- LLM

class RouteChoice(pydantic.BaseModel):
    """The LLM classifier's structured answer."""

    route: str
    confidence: float = pydantic.Field(ge=0.0, le=1.0)
    clarify: str | None = None


_INSTRUCTIONS = """You route customer requests. Choose the one route that fits the user's \
latest message, reading the earlier turns for context. Answer by calling final_result with \
the route's name, your confidence from 0 to 1, and (only when you cannot tell) a short \
clarifying question in "clarify".

Routes:
{routes}"""


class LLMRouter(_Base):
    """A model as classifier: it sees the routes (names and descriptions, or their first
    examples) and the conversation, and answers ``final_result({route, confidence,
    clarify})``. An answer that is not that (bad JSON, an unknown route, a confidence
    outside 0..1) is no opinion, with the problem in the decision's ``reason``. ``model``:
    a model id, a keel Model, or an Agent (its model and instructions are used). The model
    request goes straight to the model seam (no tools, no agent loop); inside a Router run
    it is part of the journaled ``route`` step, which counts one step of the budget."""

    kind = "llm"
    costly = True

    def __init__(self, model: str | Model | Agent[Any], routes: Iterable[Route], *,
                 threshold: float = 0.5, instructions: str | None = None,
                 settings: ModelSettings | None = None) -> None:
        self._routes = check_routes(routes)
        self.threshold = check_threshold("threshold", threshold)
        extra = ""
        self._api_key: str | None = None
        if isinstance(model, Agent):
            extra = model.instructions
            self._model_ref: str | Model = model.model
            self._api_key = model.config.api_key  # an Agent(api_key=...) lends its key
        elif isinstance(model, str | Model):
            self._model_ref = model
        else:
            raise ConfigError("model", f"expected a model id, a Model or an Agent, got "
                              f"{type(model).__name__}")
        listing = "\n".join(f"- {r.name}: {self._describe(r)}" for r in self._routes)
        self.instructions = (instructions or _INSTRUCTIONS).format(routes=listing)
        if extra:
            self.instructions = f"{extra}\n\n{self.instructions}"
        self.settings = settings or ModelSettings()
        names = [r.name for r in self._routes]
        self.spec = ToolSpec(
            name="final_result", description="Give the routing decision. Call this once.",
            parameters={"type": "object", "properties": {
                "route": {"type": "string", "enum": names},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "clarify": {"type": ["string", "null"]}},
                "required": ["route", "confidence"]})
        self._model: Model | None = model if isinstance(model, Model) else None

    @staticmethod
    def _describe(route: Route) -> str:
        if route.description:
            return route.description
        if route.examples:
            return "e.g. " + "; ".join(repr(e) for e in route.examples[:3])
        return route.name

    def model(self) -> Model:
        if self._model is None:
            self._model = resolve_model(self._model_ref, api_key=self._api_key)
        return self._model

    def messages(self, conversation: Conversation) -> list[Message]:
        lines = [f"{t.role}: {t.text}" for t in conversation.turns]
        prompt = ("Conversation (oldest first):\n" + "\n".join(lines)
                  + f"\n\nRoute the latest user message: {conversation.last}")
        return [Message.system(self.instructions), Message.user(prompt)]

    async def decide(self, conversation: Conversation) -> RouteDecision:
        response = await self.model().request(self.messages(conversation), [self.spec],
                                              self.settings)
        try:
            choice = self.parse(response.parts)
        except ValueError as exc:
            return RouteDecision(route=None, confidence=0.0, router=self.kind,
                                 threshold=self.threshold,
                                 reason=f"malformed classifier answer: {exc}"[:300])
        if choice.route not in self.route_names():
            return RouteDecision(route=None, confidence=0.0, router=self.kind,
                                 threshold=self.threshold,
                                 reason=f"the classifier chose unknown route {choice.route!r}")
        return RouteDecision(route=choice.route, confidence=choice.confidence,
                             router=self.kind, threshold=self.threshold,
                             question=choice.clarify or None, reason="classifier")

    @staticmethod
    def parse(parts: Sequence[Any]) -> RouteChoice:
        """The :class:`RouteChoice` in a model answer (a ``final_result`` call, or JSON
        text); ValueError says what is wrong."""
        raw: str | None = None
        for part in parts:
            if isinstance(part, ToolCallPart) and part.tool_name == "final_result":
                raw = part.arguments
                break
        if raw is None:
            text = "".join(getattr(p, "text", "") for p in parts
                           if not isinstance(p, ToolCallPart)).strip()
            match = re.search(r"\{.*\}", text, re.DOTALL)
            if match is None:
                raise ValueError("no final_result call and no JSON object in the answer")
            raw = match.group(0)
        try:
            data = json.loads(raw)
            return RouteChoice.model_validate(data)
        except (ValueError, pydantic.ValidationError) as exc:
            first = exc.errors()[0]["msg"] if isinstance(exc, pydantic.ValidationError) \
                else str(exc)
            raise ValueError(first) from None


# ---------------------------------------------------------------------------------- hybrid

class HybridRouter(_Base):
    """Routers tried in order (typically rules, then embeddings, then an LLM): the first
    whose decision reaches its own threshold wins, and the later ones are not asked. When
    none is confident, the most confident decision (relative to its threshold) goes to the
    low-confidence policy. The decision's ``router`` is ``hybrid/<member kind>`` and
    ``tried`` lists what each asked member said."""

    kind = "hybrid"

    def __init__(self, routers: Sequence[RouteDecider]) -> None:
        members = list(routers)
        if not members:
            raise ConfigError("routers", "a HybridRouter needs at least one router")
        for i, r in enumerate(members):
            if not callable(getattr(r, "decide", None)):
                raise ConfigError(f"routers[{i}]", f"expected a router, got "
                                  f"{type(r).__name__}")
        self.routers = members
        merged: dict[str, Route] = {}
        for r in members:
            for route in r.routes:
                merged.setdefault(route.name, route)
        self._routes = tuple(merged.values())
        self.threshold = min(r.threshold for r in members)
        self.costly = any(getattr(r, "costly", False) for r in members)

    def route_names(self) -> frozenset[str]:
        names: frozenset[str] = frozenset()
        for r in self.routers:
            names |= r.route_names()
        return names

    async def decide(self, conversation: Conversation) -> RouteDecision:
        tried: list[dict[str, Any]] = []
        best: RouteDecision | None = None
        for router in self.routers:
            d = await router.decide(conversation)
            tried.append({"router": d.router, "route": d.route,
                          "confidence": round(d.confidence, 6)})
            if d.route is not None and d.confidence >= d.threshold:
                return d.but(router=f"hybrid/{d.router}", tried=tuple(tried))
            if d.route is not None and (best is None or d.confidence - d.threshold
                                        > best.confidence - best.threshold):
                best = d
        if best is None:
            last = self.routers[-1]
            return RouteDecision(route=None, confidence=0.0, router="hybrid",
                                 threshold=last.threshold, tried=tuple(tried),
                                 reason="no router had an opinion")
        return best.but(router=f"hybrid/{best.router}", tried=tuple(tried))
