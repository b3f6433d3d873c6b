"""Model id strings -> adapters.

Ids are ``provider:model`` with an optional ``@base_url``:

* ``openai:gpt-4o-mini`` - OpenAI, key from ``OPENAI_API_KEY``
* ``openai:qwen2.5@http://localhost:11434/v1`` - any OpenAI-compatible server (Ollama, vLLM,
  llama.cpp server); a key is optional there, and ``OPENAI_API_KEY`` is never sent to it
  (pass ``api_key=`` if that server needs one)
* ``anthropic:claude-haiku-4-5`` - Anthropic, key from ``ANTHROPIC_API_KEY``
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from keel.core import MissingCredentials, UnknownModel
from keel.models._base import Model

PROVIDERS = ("openai", "anthropic")
_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
_OFFICIAL_HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}


@dataclass(frozen=True, slots=True)
class ModelId:
    provider: str
    model: str
    base_url: str | None = None

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}" + (f"@{self.base_url}" if self.base_url else "")


def parse_model_id(model_id: str) -> ModelId:
    """Split a model id string, or raise :class:`UnknownModel` naming the expected form."""
    if not isinstance(model_id, str) or ":" not in model_id:
        raise UnknownModel(
            f"model id {model_id!r} has no provider prefix. Use 'provider:model', e.g. "
            f"'openai:gpt-4o-mini', 'anthropic:claude-haiku-4-5' or "
            f"'openai:qwen2.5@http://localhost:11434/v1'.")
    provider, _, rest = model_id.partition(":")
    provider = provider.strip().lower()
    if provider not in PROVIDERS:
        raise UnknownModel(
            f"unknown model provider {provider!r} in {model_id!r}. Known providers: "
            f"{', '.join(PROVIDERS)}. For an OpenAI-compatible server (Ollama, vLLM, llama.cpp) "
            f"use 'openai:MODEL@http://HOST:PORT/v1'.")
    model, _, base_url = rest.partition("@")
    model = model.strip()
    if not model:
        raise UnknownModel(f"model id {model_id!r} names no model after {provider + ':'!r}.")
    if base_url and not base_url.startswith(("http://", "https://")):
        raise UnknownModel(
            f"base URL {base_url!r} in {model_id!r} must start with http:// or https://.")
    return ModelId(provider=provider, model=model, base_url=base_url or None)


def resolve_model(model: str | Model, *, api_key: str | None = None,
                  env: Mapping[str, str] | None = None, timeout: float = 60.0) -> Model:
    """Return ``model`` if it is already a :class:`Model`, else build the adapter its id names.

    Raises :class:`UnknownModel` for an id keel cannot resolve and :class:`MissingCredentials`
    when a hosted provider's key is not set.
    """
    if isinstance(model, Model):
        return model
    mid = parse_model_id(model)
    environ = os.environ if env is None else env
    key = api_key
    if key is None and _may_use_env_key(mid):
        key = environ.get(_KEY_ENV[mid.provider])
    if not key:
        if mid.base_url is None:
            raise MissingCredentials(
                f"{mid.provider} model {str(mid)!r} needs an API key: set the "
                f"{_KEY_ENV[mid.provider]} environment variable, or pass the key as "
                f"Agent(..., api_key=...) or resolve_model(..., api_key=...). "
                f"To run without a provider, use keel.testing.ScriptedModel.")
        key = "unused"  # local OpenAI-compatible servers usually ignore the key
    if mid.provider == "openai":
        from keel.models._openai import OpenAIModel

        return OpenAIModel(mid.model, base_url=mid.base_url, api_key=key, timeout=timeout)
    from keel.models._anthropic import AnthropicModel

    return AnthropicModel(mid.model, base_url=mid.base_url, api_key=key, timeout=timeout)


def _may_use_env_key(mid: ModelId) -> bool:
    """The provider's key from the environment goes only to the provider's own host: never to
    a local server, a proxy or a typo in a ``@base_url`` (pass ``api_key=`` for those)."""
    if mid.base_url is None:
        return True
    from urllib.parse import urlsplit

    return urlsplit(mid.base_url).hostname == _OFFICIAL_HOSTS[mid.provider]
