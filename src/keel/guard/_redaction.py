"""Redaction of personal data and secrets with one policy per kind: mask, hash or block.

A :class:`Redactor` is configured once and checked at construction; ``redact_text`` finds
every kind, resolves overlaps deterministically and rewrites the text, ``redact_value`` walks
JSON-like data. Overlaps: a secret beats personal data, then the higher confidence, then the
longer span, then the earlier start, then the kind's name.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args

from keel.core import ConfigError, KeelError, UserError, to_jsonable
from keel.guard._pii import PII_DETECTORS, PII_KINDS, Detector, Finding
from keel.guard._secrets import SECRET_DETECTORS, SECRET_KINDS

Action = Literal["mask", "hash", "block"]
ACTIONS: tuple[str, ...] = get_args(Action)
GROUPS: dict[str, tuple[str, ...]] = {"pii": PII_KINDS, "secrets": SECRET_KINDS}

_SECRET_KEY = re.compile(
    r"(api[_-]?key|authorization|passw(or)?d|secret|access[_-]?token|refresh[_-]?token|"
    r"auth[_-]?token|^token$|x-api-key|private[_-]?key|client[_-]?secret)",
    re.IGNORECASE,
)  # the same key names keel.core.redact replaces


class SensitiveDataBlocked(KeelError):
    """Text or data holds a kind of sensitive data whose policy is ``block``. The message and
    ``kinds`` name what was found and where; the value itself is never included."""

    def __init__(self, kinds: tuple[str, ...], where: str) -> None:
        super().__init__(
            f"blocked: the content holds {', '.join(kinds)} ({where}), which the redaction "
            "policy blocks; remove it or change the policy for that kind")
        self.kinds = kinds


def _normalise(kind: str, text: str) -> str:
    """The form a value is hashed in, so formatting does not change the hash."""
    if kind in ("card", "phone", "us_ssn"):
        return "".join(c for c in text if c.isdigit())
    if kind in ("iban", "uk_nino", "es_dni"):
        return "".join(c for c in text if c.isalnum()).upper()
    if kind in ("email", "ip_address"):
        return text.lower()
    return text


class Redactor:
    """Find and redact personal data and secrets.

    ``policy`` maps a kind (see ``PII_KINDS``/``SECRET_KINDS``, a custom pattern's name) or a
    group (``"pii"``, ``"secrets"``) to ``"mask"``, ``"hash"`` or ``"block"``; a kind's own
    entry beats its group's, and kinds named nowhere get ``default``. ``kinds`` limits which
    detectors run (all by default). ``patterns`` adds named regular expressions.
    ``hash_key`` (required when any policy hashes) keys the HMAC-SHA256 behind ``hash``.
    Findings under ``min_confidence`` are ignored; data nested deeper than ``max_depth`` is
    replaced by a marker rather than walked.
    """

    def __init__(
        self,
        policy: Mapping[str, str] | None = None,
        *,
        default: str = "mask",
        kinds: Iterable[str] | None = None,
        patterns: Mapping[str, str] | None = None,
        hash_key: bytes | str | None = None,
        min_confidence: float = 0.5,
        max_depth: int = 32,
    ) -> None:
        self._detectors: dict[str, Detector] = {**PII_DETECTORS, **SECRET_DETECTORS}
        for name, source in (patterns or {}).items():
            self._detectors[name] = self._custom(name, source)
        known = {*self._detectors, "secret_field"}
        self._secret_kinds = frozenset(SECRET_KINDS)
        if kinds is not None:
            chosen = list(kinds)
            for kind in chosen:
                if kind not in known:
                    raise ConfigError("kinds", f"unknown kind {kind!r}; known: {sorted(known)}")
            if not chosen:
                raise ConfigError("kinds", "empty: it would detect nothing; omit it for all")
            self._detectors = {k: v for k, v in self._detectors.items() if k in chosen}
            known = set(chosen)
        self._default = self._check_action("default", default)
        self._actions = self._resolve(policy or {}, known)
        self._secret_fields = "secret_field" in known
        if "hash" in self._actions.values() and not hash_key:
            hashing = sorted(k for k, a in self._actions.items() if a == "hash")
            raise ConfigError("hash_key", f"required to hash {', '.join(hashing)}: give "
                              "a secret key (bytes or str), the same one for every run")
        self._key = hash_key.encode() if isinstance(hash_key, str) else (hash_key or b"")
        if not 0.0 <= min_confidence <= 1.0:
            raise ConfigError("min_confidence", f"{min_confidence!r} is not between 0 and 1")
        if max_depth < 1:
            raise ConfigError("max_depth", f"{max_depth!r} must be at least 1")
        self._min_confidence = min_confidence
        self._max_depth = max_depth

    @staticmethod
    def _custom(name: str, source: str) -> Detector:
        where = f"patterns[{name!r}]"
        if name in PII_KINDS or name in SECRET_KINDS or name in GROUPS:
            raise ConfigError(where, "the name is a built-in kind or group; choose another")
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name):
            raise ConfigError(where, "a kind name is lower-case letters, digits and _")
        try:
            pattern = re.compile(source)
        except re.error as exc:
            raise ConfigError(where, f"the regular expression does not compile: {exc}") from None
        if pattern.fullmatch(""):
            raise ConfigError(where, "the regular expression matches the empty string")

        def detect(text: str) -> list[Finding]:
            return [Finding(kind=name, start=m.start(), end=m.end(), text=m.group(),
                            confidence=0.9) for m in pattern.finditer(text) if m.end() > m.start()]

        return detect

    @staticmethod
    def _check_action(where: str, action: str) -> str:
        if action not in ACTIONS:
            raise ConfigError(where, f"{action!r} is not one of {', '.join(ACTIONS)}")
        return action

    def _resolve(self, policy: Mapping[str, str], known: set[str]) -> dict[str, str]:
        actions = dict.fromkeys(known, self._default)
        for name in sorted(policy, key=lambda n: n not in GROUPS):  # groups first
            where = f"policy[{name!r}]"
            action = self._check_action(where, policy[name])
            if name in GROUPS:
                for kind in GROUPS[name]:
                    if kind in actions:
                        actions[kind] = action
            elif name in known:
                actions[name] = action
            else:
                raise ConfigError(where, f"unknown kind; known: {sorted(known)} or a group "
                                  f"{sorted(GROUPS)}")
        return actions

    @property
    def actions(self) -> dict[str, str]:
        """The action for every kind this redactor detects."""
        return dict(self._actions)

    # ------------------------------------------------------------------------------ finding

    def find(self, text: str) -> list[Finding]:
        """The findings ``redact_text`` acts on: non-overlapping, ordered by position."""
        found = [f for detect in self._detectors.values() for f in detect(text)
                 if f.confidence >= self._min_confidence]
        found.sort(key=lambda f: (f.kind not in self._secret_kinds, -f.confidence,
                                  f.start - f.end, f.start, f.kind))
        starts: list[int] = []
        kept: list[Finding] = []
        for f in found:
            i = bisect.bisect_right(starts, f.start)
            if i > 0 and kept[i - 1].end > f.start:
                continue  # overlaps the accepted finding that starts before it
            if i < len(kept) and kept[i].start < f.end:
                continue  # overlaps the accepted finding that starts after it
            starts.insert(i, f.start)
            kept.insert(i, f)
        return kept

    # ----------------------------------------------------------------------------- replacing

    def _replacement(self, kind: str, text: str) -> str:
        label = kind.upper()
        if self._actions[kind] == "hash":
            digest = hmac.new(self._key, f"{kind}\0{_normalise(kind, text)}".encode(),
                              hashlib.sha256).hexdigest()
            return f"[{label}:{digest[:12]}]"
        if kind == "card":
            return f"[CARD ****{''.join(c for c in text if c.isdigit())[-4:]}]"
        return f"[{label}]"

    def _check_blocked(self, findings: list[Finding], where: str) -> None:
        blocked = [f for f in findings if self._actions[f.kind] == "block"]
        if blocked:
            kinds = tuple(sorted({f.kind for f in blocked}))
            spans = ", ".join(f"{f.kind} at {f.start}-{f.end}" for f in blocked[:5])
            raise SensitiveDataBlocked(kinds, f"{where}: {spans}" if where else spans)

    def redact_text(self, text: str) -> tuple[str, list[Finding]]:
        """``text`` with every finding replaced, and the findings. Raises
        :class:`SensitiveDataBlocked` if a finding's kind is blocked."""
        if not isinstance(text, str):
            raise UserError(f"redact_text takes a str, not {type(text).__name__}: use "
                            "redact_value for dicts, lists and other data")
        findings = self.find(text)
        self._check_blocked(findings, "")
        return self._apply(text, findings), findings

    def _apply(self, text: str, findings: list[Finding]) -> str:
        if not findings:
            return text
        parts: list[str] = []
        pos = 0
        for f in findings:
            parts.append(text[pos:f.start])
            parts.append(self._replacement(f.kind, f.text))
            pos = f.end
        parts.append(text[pos:])
        return "".join(parts)

    def redact_value(self, value: Any) -> Any:
        """``value`` with sensitive data redacted in every string of dicts, lists and tuples
        (tuples become lists), values under keys that name a secret replaced whole, other
        objects first turned into plain data. Deeper than ``max_depth``: a marker."""
        return self._walk(value, 0, "$")

    def _walk(self, value: Any, depth: int, path: str) -> Any:
        if isinstance(value, str):
            findings = self.find(value)
            self._check_blocked(findings, path)
            return self._apply(value, findings)
        if value is None or isinstance(value, bool | int | float):
            return value
        if depth >= self._max_depth:
            return f"[TRUNCATED: nested deeper than {self._max_depth}]"
        if isinstance(value, dict):
            out: dict[Any, Any] = {}
            for k, v in value.items():
                if (self._secret_fields and isinstance(k, str) and _SECRET_KEY.search(k)
                        and v not in (None, "")):
                    out[k] = self._secret_field(v, f"{path}.{k}")
                else:
                    out[k] = self._walk(v, depth + 1, f"{path}.{k}")
            return out
        if isinstance(value, list | tuple):
            return [self._walk(v, depth + 1, f"{path}[{i}]") for i, v in enumerate(value)]
        try:
            plain = to_jsonable(value)
        except ValueError:
            return "[UNREDACTABLE: contains itself]"
        return self._walk(plain, depth + 1, path)

    def _secret_field(self, value: Any, path: str) -> str:
        text = value if isinstance(value, str) else str(to_jsonable(value))
        finding = Finding(kind="secret_field", start=0, end=len(text), text=text, confidence=1.0)
        self._check_blocked([finding], path)
        return self._replacement("secret_field", text)
