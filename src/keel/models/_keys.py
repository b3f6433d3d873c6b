"""Provider facts the adapters and the resolver share: where a key comes from, what to tell a
user whose key is missing or rejected, and which extra installs a provider's SDK.

Messages here name fixes that exist: the environment variable is only suggested where keel
reads it (the provider's own host); for any other base URL the key must be passed explicitly.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from keel.core import UserError

#: The environment variable keel reads a provider's key from (for its own host only).
KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
#: The host the environment key may be sent to.
OFFICIAL_HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}
#: The import name of each provider's SDK and the package extra that installs it.
SDK_EXTRAS = {"openai": "openai", "anthropic": "anthropic"}

_PASS_KEY = "Agent(..., api_key=...) or keel.resolve_model(..., api_key=...)"


def is_official_host(provider: str, base_url: str | None) -> bool:
    """Whether ``base_url`` is the provider's own API (``None`` is: the SDK's default)."""
    if base_url is None:
        return True
    try:
        host = urlsplit(base_url).hostname
    except ValueError:
        return False
    return host == OFFICIAL_HOSTS[provider]


def key_fix(provider: str, base_url: str | None) -> str:
    """How to give ``provider`` at ``base_url`` a key, as the end of a sentence."""
    env = KEY_ENV[provider]
    if is_official_host(provider, base_url):
        return f"set the {env} environment variable, or pass the key with {_PASS_KEY}"
    return (f"pass the key this server expects with {_PASS_KEY} ({env} is only read for "
            f"{OFFICIAL_HOSTS[provider]}, never sent to another host)")


def require_sdk(provider: str, model_id: str) -> None:
    """Import ``provider``'s SDK, or raise :class:`UserError` naming the extra to install.

    Only a missing SDK is turned into the install hint; any other import failure (a broken
    installation, a bug) propagates unchanged."""
    module = SDK_EXTRAS[provider]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != module:
            raise
        raise UserError(
            f"model {model_id!r} needs the {module!r} package, which is not installed. "
            f"Install it with: pip install 'keel-agents[{SDK_EXTRAS[provider]}]' "
            f"(or pip install {module}).") from exc
