"""Token counting: how many tokens a text or a model request takes, per model family.

Which tokenizer a model uses is a fact in ``keel/models/providers.json`` (``tokenizer`` per
row, ``default_tokenizer`` per provider), read through :func:`keel.models.model_info`:
exact BPE counts for the OpenAI families keel lists, a calibrated estimate for Anthropic's,
and the generic estimate for anything else, including a model on an OpenAI-compatible local
server (``openai:qwen2.5@http://localhost:11434/v1``) and ids keel cannot parse. The base URL
plays no part: an OpenAI family name behind a gateway (``openai:gpt-4o@https://proxy/v1``)
keeps its exact tokenizer. The names are described in :mod:`._tokenizers`.

A request's count adds what the chat format costs around the content, as OpenAI's cookbook
counts it: 3 tokens per message and 3 priming the reply. How providers render tool specs is
not published, so tool specs are counted from their JSON plus a small per-tool overhead; the
usage the provider reports corrects the rest (:class:`TokenCalibration`).

Counting is cheap on the path the history policy takes (every message of every request):
texts are counted once per tokenizer (a bounded cache keyed by the text), and so are whole
messages, which are frozen values: a message seen in an earlier request costs one hash.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence

from keel.context._calibration import TokenCalibration
from keel.context._tokenizers import (
    CACHE_MAX_CHARS,
    BPETokenizer,
    CachingTokenizer,
    ScaledTokenizer,
    Tokenizer,
    get_tokenizer,
)
from keel.core import Message, TextPart, ToolCallPart, ToolResultPart, ToolSpec, UserError
from keel.models import Model, model_info

#: Tokens a chat message costs beyond its content (role, separators).
MESSAGE_OVERHEAD = 3
#: Tokens that prime the reply, once per request.
REPLY_PRIMING = 3
#: Tokens around one tool call or tool result beyond its texts (call id, JSON framing).
PART_OVERHEAD = 3
#: Tokens around one tool spec beyond its name, description and parameter schema.
TOOL_OVERHEAD = 8
#: Tokens the tool section of a request costs once, when it has tools.
TOOLS_OVERHEAD = 12


def model_names(model: str | Model | None) -> tuple[str, str]:
    """``(provider, model)`` of a model id or Model, leniently: any ``prefix:name[@url]``
    splits (so test models such as ``test:scripted`` find facts registered for them), and
    anything else is ``("", name)``."""
    if model is None:
        return "", ""
    name = model.name if isinstance(model, Model) else model
    if not isinstance(name, str):
        raise UserError(f"a model is a model id str or a Model, got {type(name).__name__}")
    provider, colon, rest = name.partition(":")
    if not colon:
        return "", name.strip()
    return provider.strip().lower(), rest.partition("@")[0].strip()


def _links(model: str | Model | None) -> tuple[str, ...]:
    """The link ids of a model that chains others (``link_names``, as
    ``keel.reliability.FallbackModel`` has); empty for any other model."""
    names = getattr(model, "link_names", None) if isinstance(model, Model) else None
    if isinstance(names, tuple) and names and all(isinstance(n, str) for n in names):
        return names
    return ()


def tokenizer_for(model: str | Model | None) -> Tokenizer:
    """The tokenizer for ``model`` (an id such as ``openai:gpt-4o-mini``, a Model, or None
    for the generic estimate; a fallback chain counts with its primary's). A tokenizer name
    in the provider data that keel does not know is a :class:`ConfigError` naming the known
    ones."""
    links = _links(model)
    if links:
        return tokenizer_for(links[0])
    provider, name = model_names(model)
    if not provider:
        return get_tokenizer("estimate")
    return get_tokenizer(model_info(provider, name).tokenizer)


def _resolve(model: str | Model | None, tokenizer: str | Tokenizer | None) -> Tokenizer:
    if tokenizer is None:
        return tokenizer_for(model)
    if isinstance(tokenizer, str):
        return get_tokenizer(tokenizer)
    return tokenizer


def count_tokens(text: str, model: str | Model | None = None, *,
                 tokenizer: str | Tokenizer | None = None) -> int:
    """Tokens ``text`` takes for ``model`` (or with ``tokenizer``, a name or a tokenizer)."""
    return _resolve(model, tokenizer).count(text)


def _count_parts(message: Message, tokenizer: Tokenizer) -> int:
    total = MESSAGE_OVERHEAD
    for part in message.parts:
        if isinstance(part, TextPart):
            total += tokenizer.count(part.text)
        elif isinstance(part, ToolCallPart):
            total += (tokenizer.count(part.tool_name) + tokenizer.count(part.arguments)
                      + PART_OVERHEAD)
        elif isinstance(part, ToolResultPart):
            total += tokenizer.count(part.content) + PART_OVERHEAD
        else:
            raise UserError(f"cannot count a message part of type {type(part).__name__}")
    return total


def message_tokens(message: Message, tokenizer: Tokenizer) -> int:
    """Tokens one message takes in a request (its parts and the per-message overhead).

    With one of keel's caching tokenizers the count of an equal message is reused."""
    if not isinstance(message, Message):
        raise UserError(f"message_tokens takes a keel Message, got {type(message).__name__}")
    if not isinstance(tokenizer, CachingTokenizer):
        return _count_parts(message, tokenizer)
    cache = tokenizer.message_cache
    try:
        hit = cache.get(message)
    except TypeError:  # a part built with an unhashable field: count it, and fail there
        return _count_parts(message, tokenizer)
    if hit is not None:
        return hit
    count = _count_parts(message, tokenizer)
    size = sum(len(p.text) if isinstance(p, TextPart) else
               len(p.content) if isinstance(p, ToolResultPart) else len(p.arguments)
               for p in message.parts)
    if size <= CACHE_MAX_CHARS:
        cache.put(message, count, size)
    return count


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def bytes_factor(tokenizer: Tokenizer) -> float | None:
    """``f`` such that a text's count is at most ``ceil(utf8_bytes * f)``: 1 for a byte-level
    BPE (every token covers at least one byte), the factor times the base's for a scaled
    estimate; None for a tokenizer keel cannot bound (a registered one)."""
    if isinstance(tokenizer, BPETokenizer):
        return 1.0
    if isinstance(tokenizer, ScaledTokenizer):
        base = bytes_factor(tokenizer.base)
        return None if base is None else base * tokenizer.factor
    return None


def message_bound(message: Message, factor: float) -> int:
    """An upper bound of :func:`message_tokens` with a tokenizer of :func:`bytes_factor`
    ``factor``, from the texts' UTF-8 lengths: no tokenizing. History sends a request that
    fits by this bound without counting it exactly."""
    total = MESSAGE_OVERHEAD
    for part in message.parts:
        if isinstance(part, TextPart):
            texts: tuple[str, ...] = (part.text,)
        elif isinstance(part, ToolCallPart):
            texts = (part.tool_name, part.arguments)
            total += PART_OVERHEAD
        elif isinstance(part, ToolResultPart):
            texts = (part.content,)
            total += PART_OVERHEAD
        else:
            raise UserError(f"cannot count a message part of type {type(part).__name__}")
        for text in texts:
            total += math.ceil(_utf8_len(text) * factor)
    return total


def tool_spec_tokens(spec: ToolSpec, tokenizer: Tokenizer) -> int:
    """Tokens one tool spec takes: its name, description and JSON schema, plus framing."""
    if not isinstance(spec, ToolSpec):
        raise UserError(f"tool specs are keel ToolSpecs, got {type(spec).__name__}")
    schema = json.dumps(spec.parameters, separators=(",", ":"), ensure_ascii=False,
                        default=str)
    return (tokenizer.count(spec.name) + tokenizer.count(spec.description)
            + tokenizer.count(schema) + TOOL_OVERHEAD)


def count_message_tokens(messages: Sequence[Message], model: str | Model | None = None,
                         tools: Sequence[ToolSpec] = (), *,
                         tokenizer: str | Tokenizer | None = None,
                         calibration: TokenCalibration | None = None) -> int:
    """Tokens a request with ``messages`` (and the tool specs ``tools``) takes for ``model``.

    ``tokenizer`` overrides the model's (a name or a tokenizer). With ``calibration`` the
    count is corrected by what that calibration has learned from ``model``'s reported usage
    (:meth:`TokenCalibration.adjust`); without it the count is the tokenizer's alone, the
    same in every process."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Iterable):
        raise UserError(f"count_message_tokens takes a sequence of keel Messages, got "
                        f"{type(messages).__name__}")
    counter = _resolve(model, tokenizer)
    total = REPLY_PRIMING + sum(message_tokens(m, counter) for m in messages)
    if tools:
        total += TOOLS_OVERHEAD + sum(tool_spec_tokens(spec, counter) for spec in tools)
    if calibration is not None and model is not None:
        total = calibration.adjust(model, total)
    return total


def context_window(model: str | Model | None) -> int | None:
    """The model's context window in tokens, from the provider data (None when unknown).

    For a fallback chain it is the smallest known window of its links, so a request that
    fits goes to any of them."""
    links = _links(model)
    if links:
        known = [w for w in map(context_window, links) if w is not None]
        return min(known, default=None)
    provider, name = model_names(model)
    if not provider:
        return None
    return model_info(provider, name).context_window
