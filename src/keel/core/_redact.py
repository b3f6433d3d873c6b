"""Secret redaction for everything keel writes (logs, the journal).

Two rules: values under keys that name a secret (``api_key``, ``authorization``, ``password``,
``token``, ``secret`` ...) are replaced, and strings that look like provider keys or bearer
tokens are masked wherever they appear.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from keel.core._errors import ConfigError

REDACTED = "[REDACTED]"
#: The shortest value :func:`mask_secret` accepts (shorter ones would mask ordinary text).
MIN_SECRET_CHARS = 8
#: How many registered values are kept (the oldest are forgotten first).
MAX_SECRETS = 4096

_SECRET_KEY = re.compile(
    r"(api[_-]?key|authorization|passw(or)?d|secret|access[_-]?token|refresh[_-]?token|"
    r"auth[_-]?token|^token$|x-api-key|private[_-]?key|client[_-]?secret)",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(
    r"(sk-(ant-|proj-)?[A-Za-z0-9_\-]{16,}"  # OpenAI / Anthropic style keys
    r"|(?<=Bearer )[A-Za-z0-9._\-]{16,}"  # bearer tokens
    r"|gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub tokens
    r"|AKIA[0-9A-Z]{16}"  # AWS access key ids
    r"|xox[abprs]-[A-Za-z0-9\-]{10,})"  # Slack tokens
)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


_HINTS = ("sk-", "Bearer ", "gh", "AKIA", "xox")


class _KnownSecrets:
    """Values keel was told are secret (issued credentials), masked wherever they appear.

    Process-wide on purpose: a value handed to a tool must be masked in every log line and
    journal record written anywhere in the process, whichever task or thread writes it."""

    def __init__(self) -> None:
        self.values: dict[str, None] = {}  # insertion order: the oldest is evicted first
        self.pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        with self._lock:
            if value in self.values:
                return
            self.values[value] = None
            while len(self.values) > MAX_SECRETS:
                del self.values[next(iter(self.values))]
            # Longest first, so a value that contains another is masked whole.
            ordered = sorted(self.values, key=len, reverse=True)
            self.pattern = re.compile("|".join(re.escape(v) for v in ordered))


_KNOWN = _KnownSecrets()


def mask_secret(value: str) -> None:
    """Mask ``value`` wherever keel writes text from now on (logs, the journal, exports,
    escalation packets, what a tool returns to the model when the credential middleware
    wraps it). For issued credentials; values shorter than ``MIN_SECRET_CHARS`` are refused
    (they would mask ordinary text). The most recent ``MAX_SECRETS`` values are kept."""
    if not isinstance(value, str) or len(value) < MIN_SECRET_CHARS:
        raise ConfigError("mask_secret", f"a secret to mask must be text of at least "
                          f"{MIN_SECRET_CHARS} characters")
    _KNOWN.add(value)


def redact_text(text: str) -> str:
    """Mask registered secret values and key- and token-shaped substrings (a cheap
    substring check first)."""
    pattern = _KNOWN.pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for hint in _HINTS:
        if hint in text:
            return _SECRET_VALUE.sub(REDACTED, text)
    return text


def redact(value: Any) -> Any:
    """Return ``value`` with secrets masked (dicts, lists and strings are walked)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_key(k) and v not in (None, "")
                else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value
