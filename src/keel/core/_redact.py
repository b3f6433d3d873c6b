"""Secret redaction for everything keel writes (logs, the journal).

Three rules: values under keys that name a secret (``api_key``, ``authorization``,
``password``, ``token``, ``secret`` ...) are replaced, strings that look like provider keys or
bearer tokens are masked wherever they appear, and so are the values registered with
:func:`mask_secret` (the credentials issued to tools).
"""

from __future__ import annotations

import json
import re
import threading
import time
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


#: How long after its expiry a value is still masked (a log written a little later).
EXPIRED_GRACE_S = 3600.0
#: Token-like text: a registered value made only of these characters is found through an
#: index of its first MIN_SECRET_CHARS characters, whatever the number of values.
_TOKEN_RUN = re.compile(rf"[A-Za-z0-9_\-.~+/=]{{{MIN_SECRET_CHARS},}}")


class _KnownSecrets:
    """Values keel was told are secret (issued credentials), masked wherever they appear.

    Process-wide on purpose: a value handed to a tool must be masked in every log line and
    journal record written anywhere in the process, whichever task or thread writes it.

    Token-like values (letters, digits, ``-_.~+/=``) are indexed by their first
    ``MIN_SECRET_CHARS`` characters: masking scans the text's token-like runs once and looks
    their windows up, so its cost does not grow with the number of values (a regex of many
    alternatives, or one substring search per value, does). Other values are searched one by
    one. Readers use the index without the lock: its entries are immutable tuples."""

    def __init__(self) -> None:
        #: value -> when it may be forgotten (None: only when MAX_SECRETS pushes it out);
        #: insertion order, so the oldest is evicted first.
        self.values: dict[str, float | None] = {}
        self.index: dict[str, tuple[str, ...]] = {}
        self.other: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self._adds = 0

    def __bool__(self) -> bool:
        return bool(self.index or self.other)

    def add(self, value: str, until: float | None) -> None:
        with self._lock:
            if value in self.values:
                old = self.values[value]
                self.values[value] = None if old is None or until is None else max(old, until)
                return
            self.values[value] = until
            if _TOKEN_RUN.fullmatch(value):
                key = value[:MIN_SECRET_CHARS]
                # Longest first, so a value that contains another is masked whole.
                self.index[key] = tuple(sorted((*self.index.get(key, ()), value),
                                               key=len, reverse=True))
            else:
                self.other = tuple(sorted((*self.other, value), key=len, reverse=True))
            self._adds += 1
            if self._adds % 256 == 0:
                now = time.time()
                for old_value in [v for v, t in self.values.items() if t is not None and
                                  t < now]:
                    self._forget(old_value)
            while len(self.values) > MAX_SECRETS:
                self._forget(next(iter(self.values)))

    def _forget(self, value: str) -> None:
        del self.values[value]
        key = value[:MIN_SECRET_CHARS]
        if value in self.index.get(key, ()):
            rest = tuple(v for v in self.index[key] if v != value)
            if rest:
                self.index[key] = rest
            else:
                del self.index[key]
        else:
            self.other = tuple(v for v in self.other if v != value)

    def sub(self, text: str) -> str:
        for value in self.other:
            if value in text:
                text = text.replace(value, REDACTED)
        index = self.index
        if not index:
            return text
        spans: list[tuple[int, int]] = []
        for run in _TOKEN_RUN.finditer(text):
            token = run.group()
            if len(token) > 64 and len(index) * 16 < len(token):
                found = _by_key(token, index)  # a long run, few keys: C-speed searches
            else:
                found = _by_window(token, index)
            spans += ((run.start() + b, run.start() + e) for b, e in found)
        if not spans:
            return text
        spans.sort(key=lambda span: (span[0], -span[1]))
        parts: list[str] = []
        at = 0
        for begin, stop in spans:
            if begin < at:
                continue  # inside a span already masked
            parts += (text[at:begin], REDACTED)
            at = stop
        parts.append(text[at:])
        return "".join(parts)


def _by_window(token: str, index: dict[str, tuple[str, ...]]) -> list[tuple[int, int]]:
    """Where registered values start in ``token``: each window looked up in the index."""
    out = []
    i, last = 0, len(token) - MIN_SECRET_CHARS
    while i <= last:
        found = index.get(token[i:i + MIN_SECRET_CHARS])
        hit = next((v for v in found if token.startswith(v, i)), None) if found else None
        if hit is None:
            i += 1
        else:
            out.append((i, i + len(hit)))
            i += len(hit)
    return out


def _by_key(token: str, index: dict[str, tuple[str, ...]]) -> list[tuple[int, int]]:
    """Where registered values start in ``token``: each index key searched for."""
    out = []
    for key in tuple(index):
        at = token.find(key)
        while at >= 0:
            hit = next((v for v in index.get(key, ()) if token.startswith(v, at)), None)
            if hit is not None:
                out.append((at, at + len(hit)))
            at = token.find(key, at + 1)
    return out


_KNOWN = _KnownSecrets()


def mask_secret(value: str, *, expires_at: float | None = None) -> None:
    """Mask ``value`` wherever keel writes text from now on (logs, the journal, exports,
    escalation packets, what a tool returns to the model when the credential middleware
    wraps it). For issued credentials; values shorter than ``MIN_SECRET_CHARS`` are refused
    (they would mask ordinary text). ``expires_at`` (Unix time): the value may be forgotten
    an hour after it; at most ``MAX_SECRETS`` values are kept, the oldest forgotten first."""
    if not isinstance(value, str) or len(value) < MIN_SECRET_CHARS:
        raise ConfigError("mask_secret", f"a secret to mask must be text of at least "
                          f"{MIN_SECRET_CHARS} characters")
    until = None if expires_at is None else expires_at + EXPIRED_GRACE_S
    _KNOWN.add(value, until)
    for escaped in {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}:
        if escaped != value:  # as it reads inside JSON text a tool made itself
            _KNOWN.add(escaped, until)


def redact_text(text: str) -> str:
    """Mask registered secret values and key- and token-shaped substrings (a cheap
    substring check first)."""
    if _KNOWN:
        text = _KNOWN.sub(text)
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


def safe_url(url: str) -> str:
    """``url`` with its password masked (``redis://user:***@host:6379/0``), for messages and
    logs; a URL without a password is returned as it is."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))
