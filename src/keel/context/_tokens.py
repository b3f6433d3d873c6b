"""Token counting: how many tokens a text or a model request takes, per model family.

This is the interface the context layer builds on. The first version estimates (about four
characters a token, plus a per-message overhead); exact counting for the families in
``keel/models/providers.json`` replaces the estimate behind the same functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from keel.core import Message, TextPart, ToolCallPart, ToolResultPart, ToolSpec
from keel.models import Model, model_info, parse_model_id

#: Tokens a chat message costs beyond its content (role, separators), as the OpenAI
#: cookbook counts them for its chat formats.
MESSAGE_OVERHEAD = 4


class Tokenizer(Protocol):
    """Counts the tokens of a text for one model family."""

    name: str

    def count(self, text: str) -> int: ...


class EstimateTokenizer:
    """A calibrated estimate for models without a shipped tokenizer: characters per token."""

    def __init__(self, chars_per_token: float = 4.0, *, name: str = "estimate") -> None:
        self.name = name
        self.chars_per_token = chars_per_token

    def count(self, text: str) -> int:
        return max(1, round(len(text) / self.chars_per_token)) if text else 0


_ESTIMATE = EstimateTokenizer()


def _names(model: str | Model | None) -> tuple[str, str]:
    if model is None:
        return "", ""
    name = model.name if isinstance(model, Model) else model
    if ":" not in name:
        return "", name
    parsed = parse_model_id(name)
    return parsed.provider, parsed.model


def tokenizer_for(model: str | Model | None) -> Tokenizer:
    """The tokenizer for ``model`` (an id such as ``openai:gpt-4o-mini``, a Model, or None
    for the generic estimate)."""
    return _ESTIMATE


def count_tokens(text: str, model: str | Model | None = None) -> int:
    """Tokens ``text`` takes for ``model``."""
    return tokenizer_for(model).count(text)


def message_tokens(message: Message, tokenizer: Tokenizer) -> int:
    """Tokens one message takes in a request (its parts and the per-message overhead)."""
    total = MESSAGE_OVERHEAD
    for part in message.parts:
        if isinstance(part, TextPart):
            total += tokenizer.count(part.text)
        elif isinstance(part, ToolCallPart):
            total += tokenizer.count(part.tool_name) + tokenizer.count(part.arguments) + 3
        elif isinstance(part, ToolResultPart):
            total += tokenizer.count(part.content) + 3
    return total


def count_message_tokens(messages: Sequence[Message], model: str | Model | None = None,
                         tools: Sequence[ToolSpec] = ()) -> int:
    """Tokens a request with ``messages`` (and the tool specs ``tools``) takes for ``model``."""
    tokenizer = tokenizer_for(model)
    total = 3 + sum(message_tokens(m, tokenizer) for m in messages)
    for spec in tools:
        total += tokenizer.count(spec.name) + tokenizer.count(spec.description) \
            + tokenizer.count(str(spec.parameters)) + 8
    return total


def context_window(model: str | Model | None) -> int | None:
    """The model's context window in tokens, from the provider data (None when unknown)."""
    provider, name = _names(model)
    if not provider:
        return None
    return model_info(provider, name).context_window
