"""Token-counting throughput (keel.context), against ``len(text)`` in the same process.

The corpus is a deterministic mix of what a conversation holds: prose turns, JSON tool
results, code, and some non-Latin text (about 200 to 4,000 characters a message). Figures are
the best of ``--rounds`` rounds, the configurations taking turns within a round (this
machine is shared; the best round is the least disturbed one). Tokens/s are o200k tokens of
the corpus per second for every row, so rows compare as corpus throughput:

* **len(text)**: the baseline, the cheapest count there is;
* **chars / 4**: ``EstimateTokenizer``;
* **o200k / cl100k exact, cold**: every text new to the tokenizer (its caches emptied before
  each round), the cost of the first count of a message;
* **estimate / claude_estimate, cold**: the scaled estimates over cl100k and o200k;
* **tiktoken alone**: ``encode_ordinary`` without keel's wrapper, to show the wrapper's cost;
* **history policy path**: ``count_message_tokens`` of a conversation that grows by one turn a
  request, each request counting every message again: cold (caches emptied before each
  request) against warm (the default: earlier messages come from the message cache).

    python -m bench.bench_tokens [--messages 2000] [--rounds 5] [--turns 200]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
from collections.abc import Callable, Sequence

from keel.context import (
    BPETokenizer,
    EstimateTokenizer,
    Tokenizer,
    count_message_tokens,
    get_tokenizer,
    known_tokenizers,
    message_tokens,
)
from keel.context._tokenizers import CachingTokenizer
from keel.core import Message, ToolCallPart, ToolResultPart

WORDS = ("order", "shipping", "refund", "customer", "account", "invoice", "delivery", "address",
         "payment", "status", "the", "a", "of", "to", "and", "in", "is", "for", "on", "with",
         "that", "this", "was", "from", "by", "at", "as", "be", "are", "it")
CJK = "言語モデルはトークンを数える。注文は明日発送されます。"
CODE = ("def total(items):\n    return sum(i.price * i.quantity for i in items "
        "if i.status != 'cancelled')\n")


def corpus(n: int, seed: int = 0) -> list[Message]:
    """``n`` messages of mixed kinds, the same for every run."""
    rng = random.Random(seed)
    out: list[Message] = []
    for i in range(n):
        kind = i % 5
        if kind in (0, 1):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 600))) + "."
            out.append(Message.user(text) if kind == 0 else Message.assistant(text))
        elif kind == 2:
            rows = [{"id": rng.randint(1, 10**6), "status": rng.choice(WORDS),
                     "amount": round(rng.random() * 500, 2)} for _ in range(rng.randint(3, 40))]
            out.append(Message(role="tool", parts=(ToolResultPart(
                call_id=f"c{i}", tool_name="lookup", content=json.dumps(rows)),)))
        elif kind == 3:
            out.append(Message(role="assistant", parts=(ToolCallPart(
                call_id=f"c{i}", tool_name="lookup",
                arguments=json.dumps({"query": CODE * rng.randint(1, 6), "n": i})),)))
        else:
            out.append(Message.user(CJK * rng.randint(2, 20) + f" #{i}"))
    return out


def _texts(messages: Sequence[Message]) -> list[str]:
    texts: list[str] = []
    for m in messages:
        for p in m.parts:
            texts.append(getattr(p, "text", None) or getattr(p, "content", None)
                         or getattr(p, "arguments", ""))
    return texts


Case = tuple[str, Callable[[], object], Callable[[], None] | None]


def best(fn: Callable[[], object], rounds: int, before: Callable[[], None] | None = None) -> float:
    """The fastest of ``rounds`` timed calls of ``fn`` (seconds)."""
    return interleaved([("", fn, before)], rounds)[""]


def interleaved(cases: Sequence[Case], rounds: int) -> dict[str, float]:
    """The fastest of ``rounds`` timed calls of each case, the cases taking turns within a
    round, so a burst of outside load lands on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(rounds):
        for name, fn, before in cases:
            if before is not None:
                before()
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(samples) for name, samples in times.items()}


def _clear(*tokenizers: object) -> Callable[[], None]:
    def clear() -> None:
        for t in tokenizers:
            if isinstance(t, CachingTokenizer):
                t.text_cache.clear()
                t.message_cache.clear()
            base = getattr(t, "base", None)
            if isinstance(base, CachingTokenizer):
                base.text_cache.clear()
                base.message_cache.clear()
    return clear


def _sum_counts(tokenizer: Tokenizer, texts: list[str]) -> Callable[[], object]:
    return lambda: sum(tokenizer.count(t) for t in texts)


def throughput(messages: list[Message], rounds: int) -> list[tuple[str, float, int]]:
    """(name, seconds for the corpus, o200k tokens in it) per configuration."""
    texts = _texts(messages)
    o200k = get_tokenizer("o200k_base")
    assert isinstance(o200k, BPETokenizer)
    for name in known_tokenizers():
        get_tokenizer(name).count("load the encodings before timing")
    exact_tokens = sum(o200k.count(t) for t in texts)
    encoding = o200k.encoding
    cases: list[Case] = [
        ("len(text) baseline", lambda: sum(len(t) for t in texts), None),
        ("chars / 4", _sum_counts(EstimateTokenizer(), texts), None),
        ("tiktoken alone (o200k)",
         lambda: sum(len(encoding.encode_ordinary(t)) for t in texts), None),
    ]
    for name in ("o200k_base", "cl100k_base", "estimate", "claude_estimate"):
        tokenizer = get_tokenizer(name)
        cases.append((f"{name}, cold", _sum_counts(tokenizer, texts), _clear(tokenizer)))
    cases.append(("o200k_base, warm (repeated texts)", _sum_counts(o200k, texts), None))
    cases.append(("message_tokens o200k, warm",
                  lambda: sum(message_tokens(m, o200k) for m in messages), None))
    best_times = interleaved(cases, rounds)
    return [(name, best_times[name], exact_tokens) for name, _, _ in cases]


def history_path(messages: list[Message], turns: int, rounds: int) -> dict[str, float]:
    """Seconds per request when a conversation grows by one message a request and every
    request counts the whole conversation (the history policy's pattern)."""
    model = "openai:gpt-4o"
    tokenizer = get_tokenizer("o200k_base")
    convo = [Message.system("You are a support agent for an online shop."), *messages[:turns]]

    def grow() -> None:
        for k in range(1, len(convo) + 1):
            count_message_tokens(convo[:k], model)

    def grow_cold() -> None:
        for k in range(1, len(convo) + 1):
            _clear(tokenizer)()
            count_message_tokens(convo[:k], model)

    times = interleaved([("cold", grow_cold, None), ("warm", grow, _clear(tokenizer))], rounds)
    return {name: seconds / len(convo) for name, seconds in times.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--turns", type=int, default=200)
    args = parser.parse_args(argv)
    messages = corpus(args.messages)
    chars = sum(len(t) for t in _texts(messages))
    print(f"corpus: {len(messages)} messages, {chars:,} characters")
    rows = throughput(messages, args.rounds)
    baseline = rows[0][1]
    print(f"{'configuration':38} {'tokens/s':>14} {'messages/s':>12} {'x len()':>9}")
    for name, seconds, tokens in rows:
        print(f"{name:38} {tokens / seconds:14,.0f} {len(messages) / seconds:12,.0f} "
              f"{seconds / baseline:9.1f}")
    per_request = history_path(messages, args.turns, max(1, args.rounds // 2))
    print(f"history policy path ({args.turns + 1}-message conversation, growing by one turn "
          f"a request, o200k): cold {per_request['cold'] * 1e3:.2f} ms/request, "
          f"warm {per_request['warm'] * 1e3:.3f} ms/request "
          f"({per_request['cold'] / per_request['warm']:.0f}x)")


if __name__ == "__main__":
    main()
