"""Routing accuracy on keel's labelled set (held-out split), and finding misroutes in the
journal. The figures are in docs/patterns/routing.md (bench/bench_routing.py prints them).

The LLM router here runs on ``bench_routing.keyword_model``, a FunctionModel stand-in: its
accuracy is the stand-in's, not a real model's."""

from __future__ import annotations

from collections import Counter

import pytest
from bench.bench_routing import accuracy, build_routers

from keel import MemoryStore
from keel.patterns import EmbeddingRouter, Router, route_decisions, routes_from, routing_dataset


def test_the_labelled_set_is_big_varied_and_split_deterministically() -> None:
    rows = routing_dataset()
    assert len(rows) >= 240
    per_intent = Counter(r.intent for r in rows)
    assert set(per_intent) == {"billing", "shipping", "returns", "technical", "account",
                               "other"}
    assert min(per_intent.values()) >= 40
    assert len({r.text.lower() for r in rows}) == len(rows)  # no duplicates
    test = routing_dataset("test")
    assert len(test) == 60 and len(routing_dataset("train")) == len(rows) - 60
    for intent in per_intent:
        mine = [r for r in rows if r.intent == intent]
        assert [r.split for r in mine] == ["test" if i % 4 == 3 else "train"
                                           for i in range(len(mine))]


@pytest.fixture(scope="module")
def scores() -> dict[str, float]:
    import asyncio

    routers = build_routers(routing_dataset("train"))
    test = routing_dataset("test")

    async def all_scores() -> dict[str, float]:
        return {name: await accuracy(r, test) for name, r in routers.items()}

    return asyncio.run(all_scores())


def test_embedding_router_accuracy_on_the_held_out_split(scores: dict[str, float]) -> None:
    assert scores["embedding"] >= 0.73  # measured 0.783


def test_hybrid_is_at_least_as_accurate_as_the_best_single_router(
        scores: dict[str, float]) -> None:
    best_single = max(v for k, v in scores.items() if k != "hybrid")
    assert scores["hybrid"] >= best_single, scores
    assert scores["hybrid"] >= 0.78  # measured 0.833
    assert scores["rules"] < scores["embedding"]  # rules are precise, not broad


async def test_misroutes_are_found_from_the_journaled_decisions() -> None:
    train, test = routing_dataset("train"), routing_dataset("test")
    flow = Router("intents", EmbeddingRouter(routes_from(train)), on_low_confidence="fallback")
    store = MemoryStore()
    for row in test:
        await flow.run(row.text, store=store)
    decisions = await route_decisions(store, agent="intents", limit=100)
    assert len(decisions) == len(test)
    label = {r.text: r.intent for r in test}
    misroutes = [d for d in decisions if d.decision.route != label[d.input]]
    # every misroute is found with its input, and the weak ones are the likely misroutes
    proposed_right = sum(d.decision.proposed == label[d.input] for d in decisions)
    assert proposed_right / len(test) >= 0.73
    assert misroutes
    low = await route_decisions(store, agent="intents", limit=100, below=0.6)
    assert {d.run_id for d in low} == {d.run_id for d in decisions
                                       if d.decision.action == "fallback"}
    wrong_rate_low = sum(d.decision.proposed != label[d.input] for d in low) / len(low)
    sure = [d for d in decisions if d.decision.action == "route"]
    wrong_rate_sure = sum(d.decision.route != label[d.input] for d in sure) / len(sure)
    assert wrong_rate_low > wrong_rate_sure
