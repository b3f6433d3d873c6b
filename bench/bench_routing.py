"""Routing: accuracy on the held-out split and latency per query of each router kind.

    python bench/bench_routing.py          # a markdown table on stdout (< 60 s)

The labelled set is keel's own (``keel.patterns.routing_dataset``: 252 customer-service
utterances over six intents; every 4th utterance of each intent is held out, 60 in all).
The learned routers see only the train split; every figure is on the held-out split.

* **rules**: :data:`RULES`, a handful of regexes for the obvious cases. No match is no
  opinion; for accuracy it counts as the catch-all ``other``.
* **embedding**: ``EmbeddingRouter`` (WordLlama, offline, k=7) over the train split.
* **llm (stand-in)**: ``LLMRouter`` on :func:`keyword_model`, a ``FunctionModel`` that
  classifies by keyword lexicon. It stands in for a real model so that the bench runs
  offline: its accuracy and latency are the stand-in's, not a real LLM's (a real model adds
  a network round trip of 100 ms or more per query).
* **hybrid**: ``HybridRouter([rules, embedding, llm])``, the first confident router wins;
  when none is, the most confident decision (relative to its threshold) is taken.

Latency is per query (``await router.decide(...)``, one query at a time, after a warm-up),
p50 and p95 over repeated passes of the held-out split, with a bare dict lookup of the
query text measured in the same process as the baseline.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keel.core import Message, ModelResponse, ModelSettings, ToolSpec
from keel.patterns import (
    EmbeddingRouter,
    HybridRouter,
    Labelled,
    LLMRouter,
    RouteDecider,
    Rule,
    RuleRouter,
    routes_from,
    routing_dataset,
)
from keel.patterns._routing import conversation_of
from keel.testing import FunctionModel, call

#: Code rules for the obvious cases, first match wins (precise, low coverage).
RULES = [
    Rule("account", regex=r"\b(password|username|verification email|two-factor "
                          r"authentication|(delete|close|reactivate) (my|our) account)\b"),
    Rule("shipping", regex=r"\b(tracking (number|page)|courier|parcel|out for delivery|"
                           r"delivery (date|address|slot|driver))\b"),
    Rule("returns", regex=r"\b(return (label|policy|parcel)|exchange (it|this|a)|send (it )?"
                          r"back|restocking)\b"),
    Rule("billing", regex=r"\b(invoice|charged|billing|billed|statement)\b"),
    Rule("technical", regex=r"\b(error|crash(es|ing)?|firmware|bluetooth|wi-?fi|api)\b"),
]

#: The stand-in classifier's lexicon (word stems per intent).
LEXICON: dict[str, tuple[str, ...]] = {
    "billing": ("charg", "bill", "invoice", "payment", "pay ", "paid", "fee", "price",
                "card", "discount", "coupon", "receipt", "vat", "tax", "dispute", "plan",
                "subscription", "money left", "currency", "installment", "trial"),
    "shipping": ("deliver", "ship", "track", "courier", "parcel", "package", "arriv",
                 "customs", "carrier", "warehouse", "depot", "post", "van", "address",
                 "shipment", "pick up", "overnight", "express"),
    "returns": ("return", "refund", "exchange", "send back", "swap", "money back",
                "replacement", "warranty", "faulty", "broken", "damaged", "restock",
                "store credit", "size"),
    "technical": ("app", "crash", "error", "connect", "wifi", "firmware", "update",
                  "install", "screen", "load", "bluetooth", "pair", "device", "sync",
                  "api", "webhook", "battery", "reset", "setting up", "set up", "upload",
                  "freez", "offline", "not work", "won't", "integration", "boot"),
    "account": ("password", "account", "log in", "login", "sign in", "email", "profile",
                "username", "hacked", "verification", "two-factor", "authenticat",
                "personal data", "privacy", "unsubscribe", "membership", "logged",
                "sign-up", "admin"),
}


def keyword_model() -> FunctionModel:
    """The LLM classifier's offline stand-in: a ``FunctionModel`` that scores the latest
    user message against :data:`LEXICON` and answers ``final_result`` like a model would
    (confidence: the winner's share of the keyword hits; no hit: ``other``, 0.55)."""

    def answer(messages: list[Message], tools: list[ToolSpec],
               settings: ModelSettings) -> ModelResponse:
        prompt = messages[-1].text
        text = prompt.rsplit("Route the latest user message:", 1)[-1].lower()
        hits = {intent: sum(stem in text for stem in stems)
                for intent, stems in LEXICON.items()}
        total = sum(hits.values())
        if total == 0:
            route, confidence = "other", 0.55
        else:
            route = max(hits, key=lambda k: hits[k])
            confidence = hits[route] / total
        return ModelResponse(parts=(call("final_result", {
            "route": route, "confidence": round(confidence, 3)}),), model="test:keywords")

    return FunctionModel(answer, name="test:keywords")


def build_routers(train: Sequence[Labelled]) -> dict[str, RouteDecider]:
    routes = routes_from(train)
    rules = RuleRouter(RULES)
    embedding = EmbeddingRouter(routes, k=7, threshold=0.6)
    llm = LLMRouter(keyword_model(), routes, threshold=0.6)
    return {"rules": rules, "embedding": embedding, "llm (stand-in)": llm,
            "hybrid": HybridRouter([rules, embedding, llm])}


async def predict(router: RouteDecider, text: str, catch_all: str = "other") -> str:
    decision = await router.decide(conversation_of(text))
    return decision.route or catch_all


async def accuracy(router: RouteDecider, rows: Sequence[Labelled]) -> float:
    right = 0
    for row in rows:
        right += await predict(router, row.text) == row.intent
    return right / len(rows)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def latencies(router: RouteDecider, rows: Sequence[Labelled],
                    passes: int = 20) -> list[float]:
    conversations = [conversation_of(r.text) for r in rows]
    for c in conversations[:5]:
        await router.decide(c)  # warm-up: load the embedder, embed the examples
    out: list[float] = []
    for _ in range(passes):
        for c in conversations:
            start = time.perf_counter()
            await router.decide(c)
            out.append(time.perf_counter() - start)
    return out


def baseline(rows: Sequence[Labelled], passes: int = 20) -> list[float]:
    table = {r.text: r.intent for r in rows}
    out: list[float] = []
    for _ in range(passes):
        for r in rows:
            start = time.perf_counter()
            table.get(r.text)
            out.append(time.perf_counter() - start)
    return out


async def measure(passes: int = 20) -> list[dict[str, Any]]:
    train, test = routing_dataset("train"), routing_dataset("test")
    base = statistics.median(baseline(test, passes))
    rows: list[dict[str, Any]] = []
    for name, router in build_routers(train).items():
        times = await latencies(router, test, passes)
        p50 = _percentile(times, 0.5)
        rows.append({"router": name, "accuracy": await accuracy(router, test),
                     "p50_ms": p50 * 1e3, "p95_ms": _percentile(times, 0.95) * 1e3,
                     "x_dict": p50 / base if base > 0 else float("nan")})
    return rows


def table(rows: Sequence[dict[str, Any]], n_train: int, n_test: int) -> str:
    lines = [f"Held-out split: {n_test} utterances (trained on {n_train}), six intents.",
             "",
             "| router | held-out accuracy | p50 ms/query | p95 ms/query | p50 vs dict lookup |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['router']} | {r['accuracy']:.3f} | {r['p50_ms']:.3f} | "
                     f"{r['p95_ms']:.3f} | {r['x_dict']:,.0f}x |")
    return "\n".join(lines)


def main() -> None:
    start = time.perf_counter()
    rows = asyncio.run(measure())
    print(table(rows, len(routing_dataset("train")), len(routing_dataset("test"))))
    print(f"\n(measured in {time.perf_counter() - start:.1f} s; python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
