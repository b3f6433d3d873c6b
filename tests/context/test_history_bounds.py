"""History's fast path: until a request might not fit, the conversation is measured by upper
bounds from the texts' UTF-8 sizes instead of tokenizing it. The bound must never be below
the exact count, and History must make exactly the same requests as with exact counts."""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from keel.context import (
    History,
    Importance,
    SlidingWindow,
    Summarize,
    TokenBudget,
    get_tokenizer,
    message_tokens,
    register_tokenizer,
)
from keel.context._tokens import bytes_factor, message_bound
from keel.core import Message, TextPart, ToolCallPart, ToolResultPart
from keel.models import ModelInfo, register_model_info
from keel.testing import FunctionModel

TOKENIZERS = ("o200k_base", "cl100k_base", "claude_estimate", "estimate")

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300) | st.sampled_from(
    ["", "   ", "<|endoftext|>", "日本語のテキスト", "🙂" * 20, "a" * 500, "\n\n\t", "x\u0301"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["text", "call", "result"]), texts, texts),
                min_size=1, max_size=4), st.sampled_from(TOKENIZERS))
def test_the_bound_is_never_below_the_exact_count(parts: list[tuple[str, str, str]],
                                                 name: str) -> None:
    built: list[TextPart | ToolCallPart | ToolResultPart] = []
    for i, (kind, a, b) in enumerate(parts):
        if kind == "text":
            built.append(TextPart(text=a))
        elif kind == "call":
            built.append(ToolCallPart(call_id=f"c{i}", tool_name=a or "t", arguments=b))
        else:
            built.append(ToolResultPart(call_id=f"c{i}", tool_name="t", content=a + b))
    message = Message(role="assistant", parts=tuple(built))
    tokenizer = get_tokenizer(name)
    factor = bytes_factor(tokenizer)
    assert factor is not None
    assert message_bound(message, factor) >= message_tokens(message, tokenizer)


@dataclass(frozen=True)
class _Delegating:
    """A registered tokenizer (keel cannot bound it) that counts as o200k does."""

    name: str = "o200k-registered"

    def count(self, text: str) -> int:
        return get_tokenizer("o200k_base").count(text)


register_tokenizer(_Delegating())
for _model, _tokenizer in (("bounds-lazy", "o200k_base"), ("bounds-exact", "o200k-registered")):
    register_model_info(ModelInfo(provider="test", model=_model, context_window=4000,
                                  tokenizer=_tokenizer))


def test_only_keels_own_tokenizers_are_bounded() -> None:
    assert bytes_factor(get_tokenizer("o200k_base")) == 1.0
    assert bytes_factor(get_tokenizer("claude_estimate")) == 1.2
    assert bytes_factor(get_tokenizer("chars")) is None
    assert bytes_factor(get_tokenizer("o200k-registered")) is None


def _conversation(rng: random.Random, turns: int) -> list[Message]:
    out = [Message.system("You check records.")]
    for i in range(turns):
        words = " ".join(rng.choice(["order", "日本", "status", "🙂", "ok", "refund", "A1"])
                         for _ in range(rng.randint(1, 120)))
        if rng.random() < 0.5:
            out += [Message.user(f"question {i}: {words}"), Message.assistant(f"answer {i}")]
        else:
            out += [Message(role="assistant", parts=(ToolCallPart(
                        call_id=f"c{i}", tool_name="look", arguments=f'{{"n": {i}}}'),)),
                    Message(role="tool", parts=(ToolResultPart(
                        call_id=f"c{i}", tool_name="look", content=words),))]
    return out


def test_bounded_and_exact_counting_choose_the_same_requests() -> None:
    rng = random.Random(7)
    seen = {"as it came": 0, "compacted": 0}
    for trial in range(60):
        messages = _conversation(rng, rng.randint(1, 40))
        reserve = rng.choice([100, 500, 1500, 3000])
        policies = ((TokenBudget(reserve=reserve),) if trial % 2 else
                    (Importance(), SlidingWindow(8), TokenBudget(reserve=reserve)))
        lazy, exact = History(*policies), History(*policies)
        for end in range(2, len(messages) + 1, 3):  # a growing conversation, request by request
            got = lazy.select(messages[:end], model="test:bounds-lazy")
            want = exact.select(messages[:end], model="test:bounds-exact")
            assert got == want, (trial, end)
            seen["as it came" if got == messages[:end] else "compacted"] += 1
    assert min(seen.values()) > 20, seen  # both sides of the boundary were exercised


async def test_a_summarising_history_decides_on_exact_counts_too() -> None:
    def summarise(messages: list[Message], tools: object, settings: object) -> str:
        return "the gist"

    rng = random.Random(3)
    messages = _conversation(rng, 60)
    for model in ("test:bounds-lazy", "test:bounds-exact"):
        history = History(Summarize(FunctionModel(summarise), keep_recent=2), TokenBudget())
        out = await history.fit(messages, model=model)
        if model.endswith("lazy"):
            lazy = out
    assert out == lazy
    assert any(m.text.endswith("the gist") for m in out)


async def test_a_well_calibrated_model_is_not_counted_again_far_from_the_window() -> None:
    import keel
    from keel.context import TokenCalibration
    from keel.context._history import CALIBRATION_SAMPLES
    from keel.core import ModelResponse, Usage

    def answer(messages: list[Message], tools: object, settings: object) -> ModelResponse:
        return ModelResponse(parts=(TextPart(text="ok"),), usage=Usage(requests=1,
                                                                        input_tokens=90))

    model = FunctionModel(answer, name="test:bounds-lazy")
    calibration = TokenCalibration()
    for _ in range(CALIBRATION_SAMPLES - 1):
        calibration.observe(model, 100, 90)
    agent = keel.Agent("a", model=model, middleware=[History(calibration=calibration)])
    store = keel.MemoryStore()
    await agent.run("hello there", store=store)
    state = calibration.state(model)
    assert state is not None and state.observations == CALIBRATION_SAMPLES  # learned once more
    await agent.run("hello again", store=store)
    state = calibration.state(model)
    assert state is not None and state.observations == CALIBRATION_SAMPLES  # enough: skipped
