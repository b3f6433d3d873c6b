"""The opt-in semantic cache: a single-turn question close enough to one answered before gets
that answer; the threshold, the numbers rule, multi-turn requests and tool calls are left
alone; the default embedder is the WordLlama shipped in the package."""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from keel import Agent, ConfigError, MemoryStore, ModelResponse, ModelSettings, Usage, replay_run
from keel.core import Message, TextPart
from keel.observe import SemanticCache
from keel.testing import FunctionModel, call


class TableEmbedder:
    """Vectors chosen by the test: each text's vector is looked up by its normalised form."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def embed(self, texts: Sequence[str]) -> Any:
        return np.array([self.table[t] for t in texts], dtype=np.float32)


class Answers:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, messages: list[Message], tools: Any, settings: Any) -> ModelResponse:
        self.calls += 1
        return ModelResponse(parts=(TextPart(text=f"answer {self.calls}"),),
                             usage=Usage(requests=1, input_tokens=8, output_tokens=4,
                                         cost_usd=0.02))


def make(cache: SemanticCache, instructions: str = "") -> tuple[Agent[str], Answers]:
    answers = Answers()
    return Agent("faq", model=FunctionModel(answers, name="test:m"), instructions=instructions,
                 middleware=[cache]), answers


# cos(base, near) = 0.96, cos(base, far) = 0.8
TABLE = {"opening hours": [1.0, 0.0], "hours open": [0.96, 0.28], "closing day": [0.8, 0.6]}


@pytest.mark.parametrize(("threshold", "second", "hit"), [
    (0.95, "Hours open?", True), (0.97, "Hours open?", False),
    (0.95, "Closing day?", False), (0.8, "Closing day?", True),
])
async def test_a_similar_question_is_a_hit_above_the_threshold_only(
        threshold: float, second: str, hit: bool) -> None:
    cache = SemanticCache(threshold, embedder=TableEmbedder(TABLE))
    agent, model = make(cache)
    runs = MemoryStore()
    first = await agent.run("Opening hours?", store=runs)
    again = await agent.run(second, store=runs)
    assert again.output == ("answer 1" if hit else "answer 2")
    assert model.calls == (1 if hit else 2)
    [record] = [e.data for e in await runs.read_journal(again.run_id) if e.kind == "model"]
    details = record["provider_details"]
    assert details["cache"] == ("hit" if hit else "miss") and details["cache_kind"] == "semantic"
    if hit:
        assert record["usage"] == Usage().to_dict() and again.usage == Usage()
        assert details["cache_saved"]["cost_usd"] == 0.02
        report = await replay_run(agent, again.run_id, store=runs)
        assert report.identical, report.reason
    assert first.output == "answer 1"


async def test_with_wordllama_a_rephrased_question_hits_and_another_does_not() -> None:
    cache = SemanticCache(0.95)  # the default embedder, from the installed package
    agent, model = make(cache)
    runs = MemoryStore()
    assert (await agent.run("What are your opening hours?", store=runs)).output == "answer 1"
    assert (await agent.run("what are your OPENING hours!!", store=runs)).output == "answer 1"
    assert (await agent.run("What are the opening hours?", store=runs)).output == "answer 1"
    assert (await agent.run("What are your opening hours on Sunday?", store=runs)).output \
        == "answer 2"
    assert (await agent.run("How do I reset my password?", store=runs)).output == "answer 3"
    assert model.calls == 3


async def test_different_numbers_never_share_an_answer() -> None:
    cache = SemanticCache(0.5, embedder=TableEmbedder({"where is order 42": [1.0, 0.0],
                                                       "where is order 43": [1.0, 0.0]}))
    agent, _model = make(cache)
    runs = MemoryStore()
    await agent.run("Where is order 42?", store=runs)
    assert (await agent.run("Where is order 43?", store=runs)).output == "answer 2"
    assert (await agent.run("where is order 42", store=runs)).output == "answer 1"


async def test_the_context_must_match_exactly() -> None:
    cache = SemanticCache(0.9, embedder=TableEmbedder(TABLE))
    runs = MemoryStore()
    polite, a = make(cache, "Be polite.")
    terse, b = make(cache, "Be terse.")
    await polite.run("Opening hours?", store=runs)
    assert (await terse.run("Opening hours?", store=runs)).output == "answer 1"
    assert b.calls == 1, "other system instructions: another context"
    hot = Agent("faq", model=FunctionModel(a, name="test:m"), middleware=[cache],
                instructions="Be polite.", settings=ModelSettings(temperature=1.0))
    await hot.run("Opening hours?", store=runs)
    assert a.calls == 2, "other settings: another context"


async def test_tenants_are_kept_apart() -> None:
    tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant")
    cache = SemanticCache(0.9, embedder=TableEmbedder(TABLE),
                          tenant_of=lambda inp: tenant.get())
    agent, _model = make(cache)
    runs = MemoryStore()
    tenant.set("acme")
    await agent.run("Opening hours?", store=runs)
    tenant.set("globex")
    assert (await agent.run("Opening hours?", store=runs)).output == "answer 2"
    tenant.set("acme")
    assert (await agent.run("Hours open?", store=runs)).output == "answer 1"


async def test_multi_turn_requests_and_tool_calls_are_left_alone() -> None:
    from keel import tool

    @tool
    def lookup() -> str:
        """Look it up."""
        return "9 to 5"

    calls = {"n": 0}

    def model(messages: list[Message], tools: Any, settings: Any) -> Any:
        calls["n"] += 1
        if messages[-1].role == "user":
            return call("lookup", {})
        return f"open 9 to 5 ({calls['n']})"

    cache = SemanticCache(0.5, embedder=TableEmbedder(TABLE))
    agent = Agent("faq", model=FunctionModel(model, name="test:m"), tools=[lookup],
                  middleware=[cache])
    runs = MemoryStore()
    await agent.run("Opening hours?", store=runs)
    await agent.run("Opening hours?", store=runs)
    assert calls["n"] == 4, "a tool call is not stored; the turn after a tool is multi-turn"
    assert cache.stats == {"hits": 0, "misses": 2, "stored": 0, "skipped": 2}


async def test_entries_expire_and_the_store_is_bounded() -> None:
    now = [0.0]
    cache = SemanticCache(0.9, embedder=TableEmbedder(TABLE), ttl=10, max_entries=1,
                          clock=lambda: now[0])
    agent, _model = make(cache)
    runs = MemoryStore()
    await agent.run("Opening hours?", store=runs)
    now[0] = 11
    assert (await agent.run("Opening hours?", store=runs)).output == "answer 2"
    await agent.run("Closing day?", store=runs)  # pushes the only slot's entry out
    assert (await agent.run("Opening hours?", store=runs)).output == "answer 4"


async def test_long_questions_and_long_answers_are_not_cached() -> None:
    table = {**TABLE, "x " * 10 + "x": [0.0, 1.0]}
    cache = SemanticCache(0.9, embedder=TableEmbedder(table), max_question_chars=20,
                          max_answer_chars=5)
    agent, model = make(cache)
    runs = MemoryStore()
    await agent.run("x " * 30, store=runs)  # too long a question: not even embedded
    await agent.run("Opening hours?", store=runs)  # "answer 2" is longer than 5 characters
    assert (await agent.run("Opening hours?", store=runs)).output == "answer 3"
    assert cache.stats == {"hits": 0, "misses": 2, "stored": 0, "skipped": 1}
    assert model.calls == 3


async def test_a_broken_embedder_is_a_clear_error() -> None:
    class Broken:
        def embed(self, texts: Sequence[str]) -> Any:
            return np.array([[float("nan")]])

    agent, _ = make(SemanticCache(embedder=Broken()))
    with pytest.raises(Exception, match="returned shape"):
        await agent.run("hi", store=MemoryStore())


@pytest.mark.parametrize(("kwargs", "part"), [
    ({"threshold": 0}, "SemanticCache.threshold"), ({"threshold": 1.5},
                                                    "SemanticCache.threshold"),
    ({"threshold": True}, "SemanticCache.threshold"), ({"embedder": "x"}, "SemanticCache.embedder"),
    ({"ttl": -1}, "SemanticCache.ttl"), ({"max_entries": 0}, "SemanticCache.max_entries"),
    ({"max_question_chars": 1.5}, "SemanticCache.max_question_chars"),
    ({"max_answer_chars": 0}, "SemanticCache.max_answer_chars"),
])
def test_bad_configuration_names_the_part(kwargs: dict[str, Any], part: str) -> None:
    with pytest.raises(ConfigError, match=part.replace(".", r"\.")):
        SemanticCache(**kwargs)


class SeededEmbedder:
    """A fixed random vector per text: unrelated texts are far apart, equal texts equal."""

    def __init__(self, width: int = 32) -> None:
        self.width = width

    def embed(self, texts: Sequence[str]) -> Any:
        import zlib

        return np.array([np.random.default_rng(zlib.crc32(t.encode())).normal(size=self.width)
                         for t in texts], dtype=np.float32)


async def test_past_max_entries_the_oldest_go_first_down_to_ninety_percent() -> None:
    cache = SemanticCache(0.99, embedder=SeededEmbedder(), max_entries=20)
    agent, model = make(cache)
    runs = MemoryStore()
    for i in range(21):
        await agent.run(f"question {chr(97 + i)}", store=runs)
    assert cache._size == 18, "21 entries: down to 18 (90% of 20) at once"
    assert (await agent.run("question u", store=runs)).output == "answer 21", "the newest stays"
    assert (await agent.run("question a", store=runs)).output == "answer 22", "the oldest went"
    assert model.calls == 22


async def test_an_embedder_that_changes_width_is_a_clear_error() -> None:
    embedder = SeededEmbedder(32)
    agent, _model = make(SemanticCache(0.9, embedder=embedder))
    runs = MemoryStore()
    await agent.run("first question", store=runs)
    embedder.width = 16
    with pytest.raises(Exception, match="changed width"):
        await agent.run("second question", store=runs)
