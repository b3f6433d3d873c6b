"""Provider facts (context window, tool support, prices, tokenizer) from one data file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from keel.core import Usage


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelInfo:
    provider: str
    model: str
    context_window: int | None = None
    supports_tools: bool = True
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    priced: bool = False
    #: The request field for the output-token limit (OpenAI reasoning models want
    #: ``max_completion_tokens`` and reject ``max_tokens``).
    max_tokens_param: str = "max_tokens"
    #: The name of the tokenizer that counts this model's tokens (``keel.context`` resolves
    #: it: exact BPE encodings such as ``o200k_base``, or an estimate such as ``estimate``).
    tokenizer: str = "estimate"

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6

    def usage(self, input_tokens: int, output_tokens: int) -> Usage:
        return Usage(requests=1, input_tokens=input_tokens, output_tokens=output_tokens,
                     cost_usd=self.cost(input_tokens, output_tokens))


_OVERRIDES: dict[tuple[str, str], ModelInfo] = {}
#: Top-level keys of providers.json that are not provider tables.
_NOT_PROVIDERS = frozenset({"_comment", "as_of", "default_tokenizer"})


@cache
def _table() -> dict[str, Any]:
    text = resources.files("keel.models").joinpath("providers.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def register_model_info(info: ModelInfo) -> None:
    """Add or override the facts for ``info.provider``/``info.model`` (exact name)."""
    _OVERRIDES[(info.provider, info.model)] = info


def model_info(provider: str, model: str) -> ModelInfo:
    """Facts for a model: an exact override, else the longest matching prefix in the table,
    else an unpriced entry (cost 0.0, ``priced=False``) with the provider's default
    tokenizer. A row without prices is unpriced too (its other facts still hold)."""
    override = _OVERRIDES.get((provider, model))
    if override is not None:
        return override
    data = _table()
    table = data.get(provider) if provider not in _NOT_PROVIDERS else None
    if not isinstance(table, dict):
        table = {}
    default_tokenizer = str(data.get("default_tokenizer", {}).get(provider, "estimate"))
    best = max((k for k in table if model.startswith(k)), key=len, default=None)
    if best is None:
        return ModelInfo(provider=provider, model=model, tokenizer=default_tokenizer)
    row = table[best]
    priced = "input_per_mtok" in row and "output_per_mtok" in row
    return ModelInfo(provider=provider, model=model, context_window=row.get("context_window"),
                     supports_tools=bool(row.get("tools", True)),
                     input_per_mtok=float(row.get("input_per_mtok", 0.0)),
                     output_per_mtok=float(row.get("output_per_mtok", 0.0)), priced=priced,
                     max_tokens_param=str(row.get("max_tokens_param", "max_tokens")),
                     tokenizer=str(row.get("tokenizer", default_tokenizer)))
