"""Detectors of secrets in text: provider keys and tokens, private keys, JWTs, passwords in URLs
and high-entropy values next to words like password/secret/token.

These are rules of our own rather than ``detect-secrets``' plugins: that package scans files
and git diffs through its own settings, baseline and plugin registry (process-global state),
reports line numbers rather than spans, and would be a new dependency for a dozen regular
expressions. The rules below return spans, so only the secret itself is replaced.

Every rule is a superset of what ``keel.core.redact_text`` masks in logs, so core can later
delegate to this engine.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import math
import re
from collections import Counter

from keel.guard._pii import Detector, Finding, _finding

# kind -> (pattern, confidence, group holding the secret)
_RULES: dict[str, tuple[re.Pattern[str], float, int]] = {
    "anthropic_key": (re.compile(r"(?<![\w-])sk-ant-[A-Za-z0-9_-]{16,}"), 0.99, 0),
    "openai_key": (
        re.compile(r"(?<![\w-])sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{16,}"),
        0.95, 0),
    "aws_access_key_id": (
        re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA|AIPA|ANPA|ANVA|AGPA)"
                   r"[A-Z0-9]{16}(?![A-Za-z0-9])"),
        0.95, 0),
    "aws_secret_key": (
        re.compile(r"(?i:aws)[\w .-]{0,20}?(?i:secret|key)[\w .-]{0,20}?[\"']?\s*[:=]\s*[\"']?"
                   r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"),
        0.95, 1),
    "github_token": (
        re.compile(r"(?<![\w-])(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{22,})"),
        0.99, 0),
    "slack_token": (re.compile(r"(?<![\w-])xox[abposr]-[A-Za-z0-9-]{10,}"), 0.99, 0),
    "stripe_key": (re.compile(r"(?<![\w-])(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"), 0.99, 0),
    "google_api_key": (re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])"), 0.95, 0),
    "bearer_token": (re.compile(r"(?i:\bbearer) ([A-Za-z0-9._~+/-]{16,}=*)"), 0.9, 1),
    "url_password": (
        re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{1,20}://[^\s:/?#@\"'<>]{0,256}:"
                   r"([^\s/?#@\"'<>]{1,256})@"),
        0.95, 1),
}
_HINTS: dict[str, tuple[str, ...]] = {
    "anthropic_key": ("sk-ant-",), "openai_key": ("sk-",),
    "aws_access_key_id": ("AKIA", "ASIA", "ABIA", "ACCA", "AIDA", "AROA", "AIPA", "ANPA",
                          "ANVA", "AGPA"),
    "github_token": ("gh", "github_pat_"), "slack_token": ("xox",),
    "stripe_key": ("_live_", "_test_"), "aws_secret_key": ("aws", "AWS", "Aws"),
    "bearer_token": ("earer", "EARER"), "google_api_key": ("AIza",), "url_password": ("://",),
}

_PEM_BEGIN = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----")
_PEM_END = re.compile(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
_PEM_BODY = re.compile(r"[A-Za-z0-9+/=\s:,-]{0,16384}")
_PEM_MAX = 32768

_JWT = re.compile(r"(?<![\w-])(eyJ[A-Za-z0-9_-]{8,})\.([A-Za-z0-9_-]{4,})\.([A-Za-z0-9_-]*)"
                  r"(?![\w.-])")

_KEYWORDS = ("pass", "pwd", "secret", "token", "key", "credential")
_KEYWORD_VALUE = re.compile(
    r"(?i)(?<![a-z])(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key"
    r"|client[_-]?secret|private[_-]?key|credentials?)[\w-]{0,20}"
    r"(?:[\"']?\s*[:=]\s*|\s+(?:is|was|=)\s+)[\"']?([^\s\"',;<>(){}\[\]]{8,200})"
)


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value``."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


_DOTTED_NAME = re.compile(r"[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)+")


def _looks_random(value: str) -> bool:
    """A secret-like value: letters with digits or with symbols other than ``_-.``, at least 3
    bits of entropy per character, and not a dotted name (``settings.api_key``)."""
    letters = any(c.isalpha() for c in value)
    digits = any(c.isdigit() for c in value)
    symbols = any(not c.isalnum() and c not in "_-." for c in value)
    if not letters or not (digits or symbols) or _DOTTED_NAME.fullmatch(value):
        return False
    return shannon_entropy(value) >= 3.0


def detect_private_key(text: str) -> list[Finding]:
    """PEM private key blocks, from BEGIN to END (or, cut off, the base64 that follows)."""
    if "PRIVATE KEY" not in text:
        return []
    ends = [m.end() for m in _PEM_END.finditer(text)]
    found: list[Finding] = []
    covered = 0
    for m in _PEM_BEGIN.finditer(text):
        if m.start() < covered:
            continue
        i = bisect.bisect_left(ends, m.end())
        if i < len(ends) and ends[i] - m.start() <= _PEM_MAX:
            end = ends[i]
        else:
            body = _PEM_BODY.match(text, m.end())
            end = body.end() if body else m.end()
        found.append(Finding(kind="private_key", start=m.start(), end=end,
                             text=text[m.start():end], confidence=0.99))
        covered = end
    return found


def _b64json(part: str) -> object:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError):
        return None


def detect_jwt(text: str) -> list[Finding]:
    """JSON Web Tokens: three base64url parts whose header decodes to a JSON object with
    ``alg`` or ``typ``."""
    if "eyJ" not in text:
        return []
    found: list[Finding] = []
    for m in _JWT.finditer(text):
        header = _b64json(m.group(1))
        if isinstance(header, dict) and ("alg" in header or "typ" in header):
            found.append(_finding("jwt", m, 0.99))
    return found


def detect_keyword_secret(text: str) -> list[Finding]:
    """Random-looking values (two character classes, entropy >= 3 bits/char) right after a word
    like password, secret, token or api_key."""
    lower = text.lower()
    if not any(word in lower for word in _KEYWORDS):
        return []
    found: list[Finding] = []
    for m in _KEYWORD_VALUE.finditer(text):
        if _looks_random(m.group(1)):
            found.append(_finding("generic_secret", m, 0.7, 1))
    return found


def _rule_detector(kind: str) -> Detector:
    pattern, confidence, group = _RULES[kind]
    hints = _HINTS.get(kind)

    def detect(text: str) -> list[Finding]:
        if hints is not None and not any(h in text for h in hints):
            return []
        return [_finding(kind, m, confidence, group) for m in pattern.finditer(text)]

    detect.__name__ = f"detect_{kind}"
    return detect


SECRET_DETECTORS: dict[str, Detector] = {
    **{kind: _rule_detector(kind) for kind in _RULES},
    "private_key": detect_private_key,
    "jwt": detect_jwt,
    "generic_secret": detect_keyword_secret,
}
SECRET_KINDS: tuple[str, ...] = (*SECRET_DETECTORS, "secret_field")
"""Every secret kind; ``secret_field`` is a value under a key that names a secret
(``password``, ``api_key`` ...) in data walked by :meth:`Redactor.redact_value`."""


def find_secrets(text: str) -> list[Finding]:
    """Every secret finding in ``text`` (possibly overlapping), ordered by position."""
    found: list[Finding] = []
    for detect in SECRET_DETECTORS.values():
        found.extend(detect(text))
    found.sort(key=lambda f: (f.start, -f.end, f.kind))
    return found
