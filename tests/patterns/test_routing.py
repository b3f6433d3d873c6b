"""Routing: rules, embedding kNN, the LLM classifier, the hybrid, the Router flow's
low-confidence policy, journaled decisions and bad input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from keel import Agent, ConfigError, Escalate, MemoryStore
from keel.core import Message, ModelResponse, ModelSettings, TextPart, ToolSpec
from keel.patterns import (
    Conversation,
    EmbeddingRouter,
    HybridRouter,
    LLMRouter,
    Route,
    Routed,
    RouteDecision,
    Router,
    Rule,
    RuleRouter,
    WordLlamaEmbedder,
    conversation_input,
    route_decisions,
)
from keel.patterns._routing import conversation_of
from keel.runtime import replay_run, resolve_escalation
from keel.testing import FunctionModel, ScriptedModel, call

EXAMPLES = {
    "billing": ["I was charged twice this month", "my invoice shows a wrong amount",
                "please refund the duplicate payment", "why is my bill so high",
                "update the card you charge"],
    "shipping": ["where is my package", "the tracking number does not work",
                 "my order has not arrived yet", "when will my parcel be delivered",
                 "can you ship to Canada"],
    "returns": ["I want to return these shoes", "how do I send an item back",
                "the blender arrived broken and I want my money back",
                "can I exchange this for a bigger size", "print me a return label"],
    "other": ["what are your opening hours", "do you have job openings", "tell me a joke",
              "where is your head office", "hello there"],
}


def _answer(route: str) -> Agent[str]:
    return Agent(route, model=ScriptedModel([f"{route} team here"]))


def _routes(targets: bool = True) -> list[Route]:
    return [Route(name, target=_answer(name) if targets else None, examples=ex)
            for name, ex in EXAMPLES.items()]


class Counting:
    """A fake embedder at the seam: WordLlama underneath, counting calls."""

    def __init__(self) -> None:
        self.inner = WordLlamaEmbedder()
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> Any:
        self.calls += 1
        return self.inner.embed(texts)


class Fixed:
    """A router that always says the same thing (and counts how often it was asked)."""

    kind = "fixed"

    def __init__(self, route: str | None, confidence: float, threshold: float = 0.5,
                 routes: Sequence[Route] = ()) -> None:
        self.route, self.confidence, self.threshold = route, confidence, threshold
        self._routes = tuple(routes)
        self.calls = 0

    @property
    def routes(self) -> tuple[Route, ...]:
        return self._routes

    def route_names(self) -> frozenset[str]:
        return frozenset(r.name for r in self._routes)

    async def decide(self, conversation: Conversation) -> RouteDecision:
        self.calls += 1
        return RouteDecision(route=self.route, confidence=self.confidence, router=self.kind,
                             threshold=self.threshold, alternatives=(("other", 0.1),))


# ----------------------------------------------------------------------------------- rules

async def test_rules_are_exact_ordered_and_whole_word() -> None:
    rules = RuleRouter([
        Rule("billing", keywords=("invoice", "charged twice")),
        Rule("shipping", regex=r"\border\s+#?\d{5}\b"),
        Rule("other", when=lambda text: text.strip().lower() in {"hi", "hello"}),
        Rule("returns", keywords=("order",)),
    ])
    d = await rules.classify("Where is ORDER #12345 and my INVOICE?")
    assert (d.route, d.confidence, d.reason) == ("billing", 1.0, "rule 0 matched")
    assert (await rules.classify("status of order 12345")).route == "shipping"
    assert (await rules.classify("status of order 1234")).route == "returns"
    assert (await rules.classify("Hello")).route == "other"
    miss = await rules.classify("invoices are great")  # whole words only: no match
    assert miss.route is None and miss.confidence == 0.0 and not miss.confident
    # rules read the last user turn, not the context
    assert (await rules.classify(["my invoice", "thanks, and hi"])).route is None


# ------------------------------------------------------------------------------- embedding

@pytest.mark.parametrize(("text", "route"), [
    ("I think you billed me two times", "billing"),
    ("my parcel still hasn't been delivered", "shipping"),
    ("I'd like to send the shoes back for a refund", "returns"),
    ("are you open on sunday", "other"),
])
async def test_embedding_knn_picks_the_route_of_the_nearest_examples(text: str,
                                                                      route: str) -> None:
    router = EmbeddingRouter(_routes(targets=False), k=3, threshold=0.5)
    d = await router.classify(text)
    assert d.route == route, d
    assert 0.0 < d.confidence <= 1.0 and d.router == "embedding"
    assert all(name != route for name, _ in d.alternatives)


async def test_embedding_confidence_is_the_vote_share_of_the_winner() -> None:
    router = EmbeddingRouter(_routes(targets=False), k=5, threshold=0.5)
    sure = await router.classify("where is my package")  # an example itself
    mixed = await router.classify("the package I want to return: where is the label")
    assert sure.confidence > mixed.confidence
    assert sum(s for _, s in mixed.alternatives) + mixed.confidence == pytest.approx(1.0,
                                                                                     abs=1e-5)


async def test_conversation_context_routes_a_follow_up_by_what_came_before() -> None:
    router = EmbeddingRouter(_routes(targets=False), k=5, threshold=0.5,
                             context_weight=0.5)
    follow_up = "and what about the other one?"
    conversation = [
        {"role": "user", "content": "the blender arrived broken, I want to return it"},
        {"role": "assistant", "content": "Sorry! I've started a return for the blender."},
        {"role": "user", "content": follow_up},
    ]
    alone = await router.classify(follow_up)
    in_context = await router.classify(conversation)
    assert in_context.route == "returns"
    assert alone.route != "returns" or alone.confidence < in_context.confidence
    shipping_first = [
        "my parcel hasn't been delivered and tracking is stuck",
        Message.assistant("I've asked the courier about the first parcel."),
        follow_up,
    ]
    assert (await router.classify(shipping_first)).route == "shipping"
    # the flow input form of a conversation decodes to the same turns
    assert conversation_of(conversation_input(conversation)).last == follow_up


# ------------------------------------------------------------------------------ the flow

async def test_a_confident_decision_is_journaled_and_runs_the_route() -> None:
    store = MemoryStore()
    flow = Router("triage", EmbeddingRouter(_routes(), threshold=0.5))
    result = await flow.run("my order has not arrived, where is the parcel", store=store)
    assert isinstance(result.output, Routed)
    assert result.output.route == "shipping" and result.output.output == "shipping team here"
    journal = await store.read_journal(result.run_id)
    route = [e for e in journal if e.kind == "route" and e.phase == "result"]
    assert len(route) == 1 and route[0].key == "triage/route"
    assert route[0].data["route"] == "shipping" and route[0].data["action"] == "route"
    assert route[0].data["confidence"] >= 0.5 and route[0].data["router"] == "embedding"
    assert any(e.key == "triage/shipping/turn:0/model" for e in journal)
    assert (await store.get_run(result.run_id)).metadata == {"pattern": "router"}
    report = await replay_run(flow, result.run_id, store=store)
    assert report.identical, report


async def test_low_confidence_clarifies_without_running_any_route() -> None:
    store = MemoryStore()
    routes = _routes()
    router = Fixed("billing", 0.3, routes=routes)
    flow = Router("triage", router, on_low_confidence="clarify",
                  question="Is this about a payment or a delivery?")
    result = await flow.run("hmm", store=store)
    d = result.output.decision
    assert d.action == "clarify" and d.route is None and d.proposed == "billing"
    assert result.output.text == "Is this about a payment or a delivery?"
    assert result.output.output is None
    assert not [e for e in await store.read_journal(result.run_id) if e.kind == "model"]
    assert (await flow.decide("hmm")).action == "clarify"


async def test_low_confidence_takes_the_fallback_route() -> None:
    store = MemoryStore()
    routes = _routes()
    flow = Router("triage", Fixed("billing", 0.3, routes=routes),
                  on_low_confidence="fallback", fallback="returns")
    result = await flow.run("hmm", store=store)
    assert result.output.decision.action == "fallback"
    assert result.output.route == "returns" and result.output.output == "returns team here"
    default = Router("triage", Fixed("billing", 0.3, routes=routes),
                     on_low_confidence="fallback")
    assert (await default.run("hmm", store=store)).output.route == "other"  # the catch-all


async def test_low_confidence_escalates_and_a_person_picks_the_route() -> None:
    store = MemoryStore()
    routes = _routes()
    router = Fixed("billing", 0.2, routes=routes)
    flow = Router("triage", router, on_low_confidence="escalate", queue="triage-desk")
    with pytest.raises(Escalate) as info:
        await flow.run("something odd happened with my thing", store=store)
    assert info.value.trigger == "low_route_confidence"
    task = await store.get_task(info.value.escalation_id or "")
    assert task.queue == "triage-desk" and task.data["trigger"] == "low_route_confidence"
    assert task.data["proposal"] == "billing" and task.data["step_key"] == (
        "triage/route-escalation")
    await resolve_escalation(task.task_id, store=store, by="ana", action="resume",
                             note="shipping")
    result = await flow.resume(info.value.run_id or "", store=store)
    assert result.output.route == "shipping" and result.output.output == "shipping team here"
    assert result.output.decision.action == "escalate"
    assert router.calls == 1  # resumed from the journal, not decided again
    found = await route_decisions(store, action="escalate")
    assert [f.decision.proposed for f in found] == ["billing"]


async def test_a_decision_naming_no_route_goes_to_the_catch_all() -> None:
    routes = _routes()
    rules = RuleRouter([Rule("billing", keywords=("invoice",))], routes=routes)
    flow = Router("triage", rules, on_low_confidence="fallback")
    result = await flow.run("tell me something nice", store=MemoryStore())
    assert result.output.route == "other" and result.output.output == "other team here"
    assert result.output.decision.proposed is None


async def test_resume_after_a_crash_does_not_decide_again() -> None:
    attempts: list[str] = []

    def flaky(text: str) -> str:
        attempts.append(text)
        if len(attempts) == 1:
            raise RuntimeError("specialist down")
        return f"handled: {text}"

    routes = [Route("billing", target=flaky, examples=["x"]),
              Route("other", examples=["y"])]
    router = Fixed("billing", 0.9, routes=routes)
    flow = Router("triage", router)
    store = MemoryStore()
    with pytest.raises(RuntimeError, match="specialist down"):
        await flow.run("my invoice", store=store, run_id="r1")
    result = await flow.resume("r1", store=store)
    assert result.output.output == "handled: my invoice"
    assert router.calls == 1 and len(attempts) == 2
    report = await replay_run(flow, "r1", store=store)
    assert report.identical and router.calls == 1


async def test_route_decisions_lists_past_decisions_for_finding_misroutes() -> None:
    store = MemoryStore()
    flow = Router("triage", EmbeddingRouter(_routes(), threshold=0.0))
    for text in ("where is my package", "I was charged twice", "hmm, the thing"):
        await flow.run(text, store=store)
    found = await route_decisions(store, agent="triage")
    assert len(found) == 3
    assert {f.input for f in found} == {"where is my package", "I was charged twice",
                                        "hmm, the thing"}
    assert all(f.key == "triage/route" and 0 <= f.decision.confidence <= 1 for f in found)
    weakest = min(found, key=lambda f: f.decision.confidence)
    low = await route_decisions(store, below=weakest.decision.confidence + 1e-9)
    assert [f.run_id for f in low] == [weakest.run_id]


# ------------------------------------------------------------------------------------ LLM

def _llm(answer: Any) -> FunctionModel:
    def fn(messages: list[Message], tools: list[ToolSpec],
           settings: ModelSettings) -> ModelResponse | str:
        assert tools and tools[0].name == "final_result"
        assert "billing" in messages[0].text  # the routes are listed for the model
        if isinstance(answer, str):
            return answer
        return ModelResponse(parts=(call("final_result", answer),))

    return FunctionModel(fn)


async def test_llm_router_reads_the_structured_answer() -> None:
    router = LLMRouter(_llm({"route": "returns", "confidence": 0.8}), _routes(),
                       threshold=0.6)
    d = await router.classify("it's broken")
    assert (d.route, d.confidence, d.router, d.confident) == ("returns", 0.8, "llm", True)
    asks = LLMRouter(_llm({"route": "other", "confidence": 0.2, "clarify": "Which order?"}),
                     _routes())
    d = await asks.classify("it")
    assert d.question == "Which order?" and not d.confident
    as_text = LLMRouter(_llm('Sure: {"route": "billing", "confidence": 0.9}'), _routes())
    assert (await as_text.classify("x")).route == "billing"


@pytest.mark.parametrize(("answer", "why"), [
    ("I think it is billing", "no final_result"),
    ({"route": "billing", "confidence": 1.7}, "less than or equal to 1"),
    ({"route": "billing"}, "Field required"),
    ({"route": "refunds", "confidence": 0.9}, "unknown route 'refunds'"),
])
async def test_a_malformed_llm_answer_is_no_opinion_with_the_reason(answer: Any,
                                                                    why: str) -> None:
    router = LLMRouter(_llm(answer), _routes(), threshold=0.5)
    d = await router.classify("x")
    assert d.route is None and d.confidence == 0.0 and why in d.reason
    flow = Router("triage", router, on_low_confidence="fallback")
    result = await flow.run("x", store=MemoryStore())
    assert result.output.route == "other" and result.output.decision.action == "fallback"


async def test_malformed_raw_tool_arguments_are_handled() -> None:
    def fn(messages: list[Message], tools: list[ToolSpec],
           settings: ModelSettings) -> ModelResponse:
        return ModelResponse(parts=(TextPart(text="ok"),
                                    call("final_result", '{"route": "billing", ')))

    d = await LLMRouter(FunctionModel(fn), _routes()).classify("x")
    assert d.route is None and "malformed" in d.reason


# --------------------------------------------------------------------------------- hybrid

async def test_hybrid_rules_short_circuit_the_embedding_router() -> None:
    embedder = Counting()
    routes = _routes()
    rules = RuleRouter([Rule("billing", keywords=("invoice",))])
    embedding = EmbeddingRouter(routes, embedder=embedder, threshold=0.5)
    llm_calls: list[int] = []

    def fn(messages: list[Message], tools: list[ToolSpec],
           settings: ModelSettings) -> ModelResponse:
        llm_calls.append(1)
        return ModelResponse(parts=(call("final_result", {"route": "other",
                                                          "confidence": 0.9}),))

    hybrid = HybridRouter([rules, embedding, LLMRouter(FunctionModel(fn), routes)])
    d = await hybrid.classify("a question about my invoice")
    assert d.route == "billing" and d.router == "hybrid/rules" and embedder.calls == 0
    assert [t["router"] for t in d.tried] == ["rules"] and not llm_calls
    d = await hybrid.classify("where is my package")
    assert d.route == "shipping" and d.router == "hybrid/embedding" and not llm_calls
    assert [t["router"] for t in d.tried] == ["rules", "embedding"]
    d = await hybrid.classify("blah blah")  # nobody sure before the LLM
    assert [t["router"] for t in d.tried][:2] == ["rules", "embedding"]
    assert d.router in ("hybrid/embedding", "hybrid/llm")


async def test_hybrid_with_nobody_confident_gives_the_best_guess_to_the_policy() -> None:
    routes = _routes()
    weak = Fixed("billing", 0.4, threshold=0.5, routes=routes)
    weaker = Fixed("shipping", 0.2, threshold=0.5, routes=routes)
    hybrid = HybridRouter([weaker, weak])
    d = await hybrid.classify("x")
    assert d.route == "billing" and d.router == "hybrid/fixed" and not d.confident
    flow = Router("triage", hybrid, on_low_confidence="clarify")
    assert (await flow.decide("x")).action == "clarify"


# ------------------------------------------------------------------------------ bad input

def test_bad_routing_definitions_are_rejected_naming_the_part() -> None:
    with pytest.raises(ConfigError, match="route 'shipping' examples"):
        EmbeddingRouter([Route("billing", examples=["a"]), Route("shipping")])
    for bad in (1.5, -0.1, "0.5", True):
        with pytest.raises(ConfigError, match="threshold"):
            EmbeddingRouter(_routes(), threshold=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="threshold"):
            LLMRouter("openai:gpt-4o-mini", _routes(), threshold=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="threshold"):
            RuleRouter([Rule("a", keywords=("x",))], threshold=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="two routes are named 'billing'"):
        EmbeddingRouter([Route("billing", examples=["a"]), Route("billing", examples=["b"])])
    with pytest.raises(ConfigError, match="at least one Route"):
        EmbeddingRouter([])
    with pytest.raises(ConfigError, match="at least one Rule"):
        RuleRouter([])
    with pytest.raises(ConfigError, match="rule 0"):
        RuleRouter([Rule("a")])
    with pytest.raises(ConfigError, match="rule 0 regex"):
        RuleRouter([Rule("a", regex="(")])
    with pytest.raises(ConfigError, match="route name"):
        Route("a/b")
    with pytest.raises(ConfigError, match="examples"):
        Route("a", examples="one string")
    with pytest.raises(ConfigError, match="examples"):
        Route("a", examples=["ok", "  "])
    with pytest.raises(ConfigError, match="target"):
        Route("a", target=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'k'"):
        EmbeddingRouter(_routes(), k=0)


def test_a_router_needs_its_catch_all_and_known_routes() -> None:
    no_other = [r for r in _routes() if r.name != "other"]
    with pytest.raises(ConfigError, match="catch_all"):
        Router("triage", EmbeddingRouter(no_other))
    assert Router("triage", EmbeddingRouter(no_other), catch_all="billing").catch_all == (
        "billing")
    stray = RuleRouter([Rule("refunds", keywords=("refund",))])
    with pytest.raises(ConfigError, match="'refunds'"):
        Router("triage", HybridRouter([stray, EmbeddingRouter(_routes())]))
    with pytest.raises(ConfigError, match="fallback"):
        Router("triage", EmbeddingRouter(_routes()), fallback="nowhere")
    with pytest.raises(ConfigError, match="on_low_confidence"):
        Router("triage", EmbeddingRouter(_routes()),
               on_low_confidence="guess")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="router"):
        Router("triage", object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="routers"):
        HybridRouter([])


# ------------------------------------------------------------------------------- wordllama

def test_wordllama_loads_offline_from_the_installed_package(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # and the conftest blocks non-loopback sockets
    vectors = WordLlamaEmbedder().embed(["my invoice is wrong", "I was billed twice",
                                         "the app crashes on start"])
    assert vectors.shape == (3, 256) and vectors.dtype == np.float32
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > unit[0] @ unit[2]
    assert WordLlamaEmbedder(dim=64).embed(["x"]).shape == (1, 64)
    with pytest.raises(ConfigError, match="dim"):
        WordLlamaEmbedder(dim=100)


async def test_a_route_can_be_a_flow_or_an_async_function() -> None:
    from keel.runtime import flow

    @flow("shipping-desk")
    async def shipping_desk(ctx: Any, input: str) -> str:
        return await ctx.step("lookup", lambda: f"tracked: {input}")

    async def billing(text: str) -> dict[str, str]:
        return {"billing": text}

    routes = [Route("shipping", target=shipping_desk, examples=EXAMPLES["shipping"]),
              Route("billing", target=billing, examples=EXAMPLES["billing"]),
              Route("other", examples=EXAMPLES["other"])]
    rules = RuleRouter([Rule("shipping", keywords=("parcel",)),
                        Rule("billing", keywords=("invoice",))], routes=routes)
    store = MemoryStore()
    desk = Router("triage", rules, on_low_confidence="fallback")
    shipped = await desk.run("my parcel", store=store)
    assert shipped.output.output == "tracked: my parcel"
    assert "triage/shipping/lookup" in [e.key for e in await store.read_journal(
        shipped.run_id)]
    billed = await desk.run("my invoice", store=store)
    assert billed.output.output == {"billing": "my invoice"}
    assert "triage/billing/call" in [e.key for e in await store.read_journal(billed.run_id)]
    nothing = await desk.run("hello", store=store)
    assert nothing.output.route == "other" and nothing.output.output is None


@pytest.mark.slow
def test_loading_wordllama_leaves_the_applications_logging_alone() -> None:
    """wordllama calls logging.basicConfig(INFO) when imported; keel undoes that, or every
    keel.step record would start printing in the user's application."""
    import subprocess
    import sys

    code = ("import logging; from keel.patterns import WordLlamaEmbedder; "
            "WordLlamaEmbedder().embed(['hello']); root = logging.getLogger(); "
            "print(len(root.handlers), root.level)")
    env = {"HF_HUB_OFFLINE": "1", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, env=env)
    assert out.stdout.split() == ["0", "30"], out.stderr
