"""Secret redaction for everything keel writes (logs, the journal).

Two rules: values under keys that name a secret (``api_key``, ``authorization``, ``password``,
``token``, ``secret`` ...) are replaced, and strings that look like provider keys or bearer
tokens are masked wherever they appear.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[REDACTED]"

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


def redact_text(text: str) -> str:
    """Mask key- and token-shaped substrings (a cheap substring check first)."""
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
