"""Where personal data and secrets may go: one :class:`DataPolicy` per deployment, with rules per
destination, per agent and per tenant.

A *destination* is a place text leaves to: ``answers`` (what the user is told), ``logs`` (log
lines), ``journal`` (the run's durable record, which the model re-reads on resume), ``exports``
(``keel runs export``, ``keel runs show --json``) and ``packets`` (escalation packets a person
reads). For each destination and each kind of data (see ``PII_KINDS``/``SECRET_KINDS``, or a
group: ``pii``, ``secrets``, ``national_id``) the action is ``allow``, ``mask``, ``hash``
(an HMAC keyed by ``hash_key``, stable across runs, so a person can match a customer without
seeing the value) or ``block``.

Rules are layered, later layers winning kind by kind: the defaults (:data:`DEFAULT_RULES`),
``rules``, ``agents[agent]``, ``tenants[tenant]``. Within a layer, the ``"*"`` destination comes
before a named one, and a group before a kind.

:meth:`DataScope.scrub` is on the hot path (every answer, tool output and log line): text with
nothing that could be personal data or a secret is answered by one cheap gate before any
detector runs. Text with look-alike letters, invisible characters or full-width digits is
folded first (detection runs on the folded text; the original span is replaced), so
``jo\u200bhn@example.com`` does not slip through.
"""

from __future__ import annotations

import bisect
import functools
import logging
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from keel.core import ConfigError, UserError, to_jsonable
from keel.guard._normalize import _BIDI, _CONFUSABLES, _INVISIBLE
from keel.guard._pii import PII_KINDS, Finding
from keel.guard._redaction import _SECRET_KEY, Redactor, SensitiveDataBlocked
from keel.guard._secrets import SECRET_KINDS

if TYPE_CHECKING:
    from keel.store import RunRecord

__all__ = [
    "DATA_ACTIONS",
    "DATA_GROUPS",
    "DEFAULT_RULES",
    "DESTINATIONS",
    "DataPolicy",
    "DataScope",
]

Destination = Literal["answers", "logs", "journal", "exports", "packets"]
DESTINATIONS: tuple[str, ...] = get_args(Destination)
DataAction = Literal["allow", "mask", "hash", "block"]
DATA_ACTIONS: tuple[str, ...] = get_args(DataAction)

#: Groups a rule may name instead of a kind (broadest first; a narrower entry wins).
DATA_GROUPS: dict[str, tuple[str, ...]] = {
    "pii": PII_KINDS,
    "secrets": SECRET_KINDS,
    "national_id": ("us_ssn", "uk_nino", "es_dni"),
}
_ALL_KINDS = frozenset((*PII_KINDS, *SECRET_KINDS))

#: The defaults, the first layer of every policy. Secrets are masked everywhere. Personal data
#: is masked in logs, exports and escalation packets (copies that travel to people and systems
#: that do not need it); card and national-id numbers are masked in answers too (an answer
#: never needs the full number; a card keeps its last four digits). Personal data stays in the
#: journal: the model re-reads the journal on resume and replay, and a tool later in the run
#: may need the value (see docs/security.md, "Personal data and secrets policy").
DEFAULT_RULES: Mapping[str, Mapping[str, str]] = {
    "*": {"secrets": "mask"},
    "answers": {"card": "mask", "national_id": "mask"},
    "logs": {"pii": "mask"},
    "exports": {"pii": "mask"},
    "packets": {"pii": "mask"},
}

Rules = Mapping[str, Mapping[str, str]]
TenantOf = Callable[["RunRecord"], "str | None"]
#: ``scrub(value, record) -> value``: what ``EscalationPolicy(scrub_packet=...)`` takes.
PacketScrubber = Callable[[Any, "RunRecord"], Any]

_MIN_KEY_BYTES = 16
_LONG_INT = 10**8  # integers with at least 9 digits are checked as text (a card as a number)


def tenant_from_metadata(record: RunRecord) -> str | None:
    """The default ``tenant_of``: the run's tenant (``record.tenant``); for a run stored
    without one, ``record.metadata["tenant"]`` when it is a string (how tenants were passed
    before runs carried them)."""
    if record.tenant is not None:
        return record.tenant
    tenant = record.metadata.get("tenant") if isinstance(record.metadata, dict) else None
    return tenant if isinstance(tenant, str) and tenant else None


# ------------------------------------------------------------------------------- the gate

# Any text a detector could act on matches its kind's gate: a shape of the digits for the
# number-like kinds, the detectors' literal hints (on the lower-cased text) for the others. A
# destination's gate joins the gates of the kinds it acts on. Kept in step with the detectors'
# own gates in _pii.py and _secrets.py; tests/guard/test_data_policy.py proves it on random text.
_NUMBERS = r"\d(?:[ ().-]{0,2}\d){5}"
_DIGIT_GATES: dict[str, str] = {
    **dict.fromkeys(("phone", "card", "iban", "us_ssn", "uk_nino", "es_dni"), _NUMBERS),
    "ip_address": r"\d\.\d{1,3}\.\d",
    "postal_address": r"\d[A-Za-z]? [A-Z]",
}
# The secret detectors' literal hints (on the lower-cased text), and the keyword secret's
# shape: a keyword with a separator after it (see _KEYWORD_VALUE in _secrets.py), so that
# "keyboard" or "token ring" alone do not open the gate.
_SECRET_LITERALS = ("://", "-----begin", "eyj", "sk-", "gho_", "ghp_", "ghu_", "ghs_", "ghr_",
                    "github_pat_", "xox", "_live_", "_test_", "aiza", "akia", "asia", "abia",
                    "acca", "aida", "aroa", "aipa", "anpa", "anva", "agpa", "bearer", "aws")
_KEYWORDS = ("pass", "pwd", "secret", "token", "key", "credential")
_KEYWORD_SHAPE = re.compile(r"(?:pass|pwd|secret|token|key|credential)[\w-]{0,20}"
                            r"(?:[\"']?\s*[:=]|\s+(?:is|was|=)\s)")
_HINT_LITERALS: dict[str, tuple[str, ...]] = {
    "email": ("@",), "ip_address": ("::",), **dict.fromkeys(SECRET_KINDS, _SECRET_LITERALS)}
_KEYWORD_KINDS = frozenset(SECRET_KINDS)


@dataclass(frozen=True, slots=True)
class _Gate:
    digits: re.Pattern[str] | None
    literals: tuple[str, ...]  # any of them in the lower-cased text opens the gate
    keywords: bool  # a keyword secret's shape opens it
    colons: bool  # a full IPv6 address: seven colons
    custom: tuple[re.Pattern[str], ...]
    #: ``literals`` grouped for fewer searches (see :func:`_hints`).
    hints: Hints = ()

    @classmethod
    def of(cls, kinds: Iterable[str], custom: tuple[re.Pattern[str], ...]) -> _Gate:
        kinds = set(kinds)
        digits = sorted({_DIGIT_GATES[k] for k in kinds if k in _DIGIT_GATES})
        literals = sorted({lit for k in kinds for lit in _HINT_LITERALS.get(k, ())})
        return cls(digits=re.compile("(?a)" + "|".join(digits)) if digits else None,
                   literals=tuple(literals), keywords=bool(kinds & _KEYWORD_KINDS),
                   colons="ip_address" in kinds, custom=custom, hints=_hints(tuple(literals)))

    def __call__(self, text: str) -> bool:
        """Whether ``text`` may hold something a detector finds (False: certainly not)."""
        if self.digits is not None and self.digits.search(text):
            return True
        if self.literals or self.keywords:
            low = text.lower()
            for guard, words, patterns in self.hints:  # any literal in ``low`` (_hints)
                if guard in low:
                    for word in words:
                        if word in low:
                            return True
                    for pattern in patterns:
                        if pattern.search(low):
                            return True
            if self.keywords and _keyword_shape(low):
                return True
        if self.colons and text.count(":") >= 7:
            return True
        return any(p.search(text) for p in self.custom)


def _keyword_shape(low: str) -> bool:
    """``_KEYWORD_SHAPE.search(low)``, tried only where a keyword starts (every match starts
    with one): a regex search would try every position of the text."""
    for keyword in _KEYWORDS:
        start = low.find(keyword)
        while start != -1:
            if _KEYWORD_SHAPE.match(low, start):
                return True
            start = low.find(keyword, start + 1)
    return False


Hints = tuple[tuple[str, tuple[str, ...], tuple[re.Pattern[str], ...]], ...]
# Characters rare in text, the rarest first: a literal with one is grouped behind the first
# it holds, the others behind "" (always searched) by their first character.
_RARITY = "_-:@/jqxz"


@functools.lru_cache(maxsize=64)
def _hints(literals: tuple[str, ...]) -> Hints:
    """``literals`` as groups of tests, each group behind a character all of its literals
    hold (one search for a character, far cheaper than one for a word, rules the group out),
    each group's literals tested alone, or as one pattern where several share a first
    character (a regex with a literal first character is scanned for it in C). Some literal
    is in a text exactly when some group's character and one of its tests are. Cached: every
    agent's default data guard compiles the same few sets of literals."""
    groups: dict[str, dict[str, list[str]]] = {}
    for word in literals:
        guard = next((c for c in _RARITY if c in word), "")
        groups.setdefault(guard, {}).setdefault(word[0], []).append(word)
    return tuple((guard,
                  tuple(words[0] for _, words in sorted(by_first.items()) if len(words) == 1),
                  tuple(re.compile(_literal_trie(words)) for _, words in sorted(by_first.items())
                        if len(words) > 1))
                 for guard, by_first in sorted(groups.items()))


def _literal_trie(words: Iterable[str]) -> str:
    """A regex matching where any of ``words`` occurs, factored as a trie (the regex engine
    tries alternatives one by one: shared prefixes are then tested once). A word that extends
    another is dropped: where it occurs, the shorter one does too."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for c in word:
            node = node.setdefault(c, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        if "" in node:
            return ""
        alts = [re.escape(c) + build(child) for c, child in sorted(node.items())]
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return build(trie)


# Characters folded away before detection: invisible and bidi controls, tag characters.
_DROP = frozenset(_INVISIBLE + _BIDI)
_DASHES = dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d", "-")
_FOLD_CACHE: dict[str, str] = {}
# What folding changes besides NFKC: invisible and tag characters, dashes, look-alike letters,
# digits of other scripts. Text that is NFKC-normal with none of these folds to itself.
_UNFOLDED = re.compile(
    "[" + "".join(map(re.escape, sorted(_DROP | set(_DASHES) | {chr(c) for c in _CONFUSABLES})))
    + "\U000e0000-\U000e007f]|[^\\D0-9]")


def _fold_char(c: str) -> str:
    folded = _FOLD_CACHE.get(c)
    if folded is None:
        if c in _DROP or "\U000e0000" <= c <= "\U000e007f":
            folded = ""
        elif c in _DASHES:
            folded = _DASHES[c]
        elif ord(c) in _CONFUSABLES:
            folded = _CONFUSABLES[ord(c)]
        elif c.isdecimal():
            folded = str(unicodedata.decimal(c))
        else:
            folded = unicodedata.normalize("NFKC", c)
            if folded.isspace():
                folded = " "
        if len(_FOLD_CACHE) < 4096:
            _FOLD_CACHE[c] = folded
    return folded


_SPECIAL = re.compile(r"\\u[0-9A-Fa-f]{4}|\\[nrtbf\"\\/]|[^\x00-\x7f]+")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "\\": "\\",
            "/": "/"}


class _Folded:
    """``text`` with JSON escapes decoded (a value inside JSON text, as tool arguments are),
    look-alikes folded to ASCII and invisible characters dropped, and the way back: which span
    of the original each folded position came from (worked out only when something is found).
    """

    __slots__ = ("_identity", "_origin", "_positions", "invisible", "text")

    def __init__(self, text: str, *, invisible: str = "") -> None:
        self._positions: list[int] = []  # where each segment starts in the folded text
        self._origin: list[tuple[int, int]] = []  # the original span of each segment
        self._identity: list[bool] = []  # copied as it is (else: one folded char or escape)
        self.invisible = False
        pieces: list[str] = []
        done = kept = 0  # folded length so far; start of the run of text copied as it is

        def add(piece: str, begin: int, finish: int, same: bool) -> None:
            nonlocal done
            pieces.append(piece)
            self._positions.append(done)
            self._origin.append((begin, finish))
            self._identity.append(same)
            done += len(piece)

        for m in _SPECIAL.finditer(text):
            raw = m.group()
            if raw[0] == "\\":
                parts = [(chr(int(raw[2:], 16)) if raw[1] == "u" else _ESCAPES[raw[1]],
                          m.start(), m.end())]
            else:
                parts = [(c, m.start() + i, m.start() + i + 1) for i, c in enumerate(raw)]
            for c, begin, finish in parts:
                folded = c if c.isascii() else _fold_char(c)
                if folded == c and finish - begin == 1:
                    continue  # stays in the run copied as it is
                if not folded and c in _DROP:
                    self.invisible = True
                    folded = invisible
                if begin > kept:
                    add(text[kept:begin], kept, begin, True)
                if folded:
                    add(folded, begin, finish, False)
                kept = finish
        if kept < len(text):
            add(text[kept:], kept, len(text), True)
        self.text = "".join(pieces)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of the folded span ``[start, end)``."""
        first = bisect.bisect_right(self._positions, start) - 1
        last = bisect.bisect_right(self._positions, end - 1) - 1
        begin = self._origin[first][0] + (start - self._positions[first]
                                          if self._identity[first] else 0)
        finish = (self._origin[last][0] + end - self._positions[last]
                  if self._identity[last] else self._origin[last][1])
        return begin, finish


# ------------------------------------------------------------------------------- one scope


@dataclass(frozen=True, slots=True)
class _Destination:
    redactor: Redactor
    actions: Mapping[str, str]
    secret_fields: bool
    gate: _Gate


class DataScope:
    """A :class:`DataPolicy` resolved for one agent and tenant: what ``scrub`` and
    ``scrub_value`` apply. Get one from :meth:`DataPolicy.scope` (cached)."""

    def __init__(self, agent: str | None, tenant: str | None,
                 destinations: Mapping[str, _Destination | None]) -> None:
        self.agent = agent
        self.tenant = tenant
        self._destinations = dict(destinations)

    def actions(self, destination: str) -> dict[str, str]:
        """The action for every kind at ``destination`` (``allow`` where nothing is done)."""
        compiled = self._get(destination)
        out = dict.fromkeys(sorted(_ALL_KINDS), "allow")
        if compiled is not None:
            out.update(compiled.actions)
        return out

    def _get(self, destination: str) -> _Destination | None:
        try:
            return self._destinations[destination]
        except KeyError:
            raise UserError(f"unknown destination {destination!r}; one of "
                            f"{', '.join(DESTINATIONS)}") from None

    def scrub(self, text: str, destination: str, *, where: str = "") -> str:
        """``text`` as it may go to ``destination``: masked and hashed values replaced.
        Raises :class:`SensitiveDataBlocked` (naming the kind and where, never the value)
        when a kind found is blocked there."""
        compiled = self._get(destination)
        if compiled is None:
            return text
        if not isinstance(text, str):
            raise UserError(f"scrub takes a str, not {type(text).__name__}: use scrub_value "
                            "for dicts, lists and other data")
        return _scrub_text(compiled, text, where or destination)

    def untouched(self, text: str, destination: str) -> bool:
        """True when :meth:`scrub` would certainly return ``text`` as it is, known from the
        cheap gate alone (False: scrub it to know)."""
        compiled = self._get(destination)
        return compiled is None or (isinstance(text, str) and text.isascii()
                                    and "\\" not in text and not compiled.gate(text))

    def scrub_found(self, text: str, destination: str, *, where: str = "") -> tuple[
            str, tuple[str, ...]]:
        """:meth:`scrub`, and the kinds it replaced (sorted, each once), for evidence."""
        compiled = self._get(destination)
        if compiled is None:
            return text, ()
        if not isinstance(text, str):
            raise UserError(f"scrub takes a str, not {type(text).__name__}")
        out, findings = _scrub_found(compiled, text, where or destination)
        return out, tuple(sorted({f.kind for f in findings}))

    def scrub_value(self, value: Any, destination: str, *, where: str = "",
                    withhold: bool = False) -> Any:
        """``value`` with every string in it scrubbed (dicts, lists; tuples become lists; other
        objects are first made plain data), values under keys that name a secret
        (``password``, ``api_key`` ...) replaced whole, and integers of nine digits or more
        checked as text (a card number stored as a number). With ``withhold``, a string
        holding a blocked kind becomes ``[WITHHELD: holds KIND]`` instead of raising."""
        compiled = self._get(destination)
        if compiled is None:
            return value
        return _walk(compiled, value, 0, where or destination, withhold)


def _scrub_text(compiled: _Destination, text: str, where: str) -> str:
    return _scrub_found(compiled, text, where)[0]


def _scrub_found(compiled: _Destination, text: str, where: str) -> tuple[str, list[Finding]]:
    if text.isascii() and "\\" not in text:
        if not compiled.gate(text):
            return text, []
        findings = compiled.redactor.find(text)
    else:
        findings = _find_folded(compiled, text)
    if not findings:
        return text, []
    compiled.redactor._check_blocked(findings, where)
    return compiled.redactor._apply(text, findings), findings


def _find_folded(compiled: _Destination, text: str) -> list[Finding]:
    """Findings in the folded text, at their original spans. Invisible characters are read
    both as nothing (``jo<ZWSP>hn@example.com``) and as a space (``<ZWSP>4111<ZWSP>1111
    ...``, a card split by them); overlapping findings of the two readings are merged."""
    if ("\\" not in text and unicodedata.is_normalized("NFKC", text)
            and not _UNFOLDED.search(text)):  # nothing to fold: the common accented text
        return compiled.redactor.find(text) if compiled.gate(text) else []
    folded = _Folded(text)
    readings = [folded]
    if folded.invisible:
        readings.append(_Folded(text, invisible=" "))
    found: list[Finding] = []
    for reading in readings:
        if not compiled.gate(reading.text):
            continue
        for f in compiled.redactor.find(reading.text):
            start, end = reading.span(f.start, f.end)
            found.append(Finding(kind=f.kind, start=start, end=end, text=f.text,
                                 confidence=f.confidence))
    found.sort(key=lambda f: (f.start, -f.end))
    merged: list[Finding] = []
    for f in found:
        last = merged[-1] if merged else None
        if last is None or f.start >= last.end:
            merged.append(f)
        elif f.end > last.end:  # overlapping: one span over both, named by the longer
            longer = f if f.end - f.start > last.end - last.start else last
            merged[-1] = Finding(kind=longer.kind, start=last.start, end=f.end,
                                 text=longer.text, confidence=longer.confidence)
    return merged


def _walk(compiled: _Destination, value: Any, depth: int, path: str, withhold: bool) -> Any:
    if isinstance(value, str):
        if not withhold:
            return _scrub_text(compiled, value, path)
        try:
            return _scrub_text(compiled, value, path)
        except SensitiveDataBlocked as exc:
            return f"[WITHHELD: holds {', '.join(exc.kinds)}]"
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        if abs(value) < _LONG_INT:
            return value
        text = str(value)
        scrubbed = _walk(compiled, text, depth, path, withhold)
        return value if scrubbed == text else scrubbed
    if depth >= 64:
        return "[TRUNCATED: nested deeper than 64]"
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            sub = f"{path}.{k}"
            if (compiled.secret_fields and isinstance(k, str) and _SECRET_KEY.search(k)
                    and v not in (None, "")):
                out[k] = _secret_field(compiled, v, sub, withhold)
            else:
                out[k] = _walk(compiled, v, depth + 1, sub, withhold)
        return out
    if isinstance(value, list | tuple):
        return [_walk(compiled, v, depth + 1, f"{path}[{i}]", withhold)
                for i, v in enumerate(value)]
    try:
        plain = to_jsonable(value)
    except ValueError:
        return "[UNREDACTABLE: contains itself]"
    return _walk(compiled, plain, depth + 1, path, withhold)


def _secret_field(compiled: _Destination, value: Any, path: str, withhold: bool) -> str:
    try:
        return compiled.redactor._secret_field(value, path)
    except SensitiveDataBlocked:
        if not withhold:
            raise
        return "[WITHHELD: holds secret_field]"


# ------------------------------------------------------------------------------ the policy


class DataPolicy:
    """Rules for personal data and secrets per destination, agent and tenant (see the module
    docstring and docs/security.md).

    ``rules``, each value of ``agents`` and each value of ``tenants`` map a destination (or
    ``"*"`` for all) to ``{kind or group: action}``. ``hash_key`` (bytes or str, at least 16
    bytes) keys the ``hash`` action; ``hash_key_env`` names an environment variable to read it
    from instead (read once, here). A policy that hashes anywhere without a key is refused.
    ``tenant_of(record)`` names a run's tenant where keel has the run's record (escalation
    packets, exports); the default reads ``record.tenant`` (or, for a run without one,
    ``record.metadata["tenant"]``). ``patterns`` adds
    named regular expressions (masked by default, like any kind). Every error names the part.
    """

    def __init__(
        self,
        rules: Rules | None = None,
        *,
        agents: Mapping[str, Rules] | None = None,
        tenants: Mapping[str, Rules] | None = None,
        hash_key: bytes | str | None = None,
        hash_key_env: str | None = None,
        tenant_of: TenantOf | None = None,
        patterns: Mapping[str, str] | None = None,
        min_confidence: float = 0.5,
    ) -> None:
        self._patterns = _check_patterns(patterns or {})
        self._kinds = frozenset((*_ALL_KINDS, *self._patterns))
        defaults = {**DEFAULT_RULES, "*": {**DEFAULT_RULES["*"],
                                           **dict.fromkeys(self._patterns, "mask")}}
        self._base = (_check_rules("DataPolicy.defaults", defaults, self._kinds),
                      _check_rules("DataPolicy.rules", rules or {}, self._kinds))
        self._agents = _check_layers("DataPolicy.agents", agents or {}, self._kinds)
        self._tenants = _check_layers("DataPolicy.tenants", tenants or {}, self._kinds)
        if tenant_of is not None and not callable(tenant_of):
            raise ConfigError("DataPolicy.tenant_of", "must be a function of a RunRecord")
        self.tenant_of: TenantOf = tenant_of or tenant_from_metadata
        self._key = _hash_key(hash_key, hash_key_env, self._hashes())
        if not 0.0 <= min_confidence <= 1.0:
            raise ConfigError("DataPolicy.min_confidence",
                              f"{min_confidence!r} is not between 0 and 1")
        self._min_confidence = min_confidence
        self._scopes: dict[tuple[str | None, str | None], DataScope] = {}
        self.scope()  # build the base scope now: any remaining error shows at construction
        for agent in self._agents:
            self.scope(agent=agent)
        for tenant in self._tenants:
            self.scope(tenant=tenant)

    def _hashes(self) -> list[str]:
        """Where some layer hashes (for the error when no key is given)."""
        return [f"{where}[{dest!r}][{kind!r}]"
                for where, layer in (("rules", self._base[1]), *(
                    (f"agents[{a!r}]", r) for a, r in self._agents.items()), *(
                    (f"tenants[{t!r}]", r) for t, r in self._tenants.items()))
                for dest, kinds in layer.items() for kind, action in kinds.items()
                if action == "hash"]

    def scope(self, *, agent: str | None = None, tenant: str | None = None) -> DataScope:
        """The policy resolved for ``agent`` and ``tenant`` (either may be None; names with no
        rules of their own get the policy-wide rules). Cached."""
        key = (agent if agent in self._agents else None,
               tenant if tenant in self._tenants else None)
        found = self._scopes.get(key)
        if found is None:
            layers = [*self._base]
            if key[0] is not None:
                layers.append(self._agents[key[0]])
            if key[1] is not None:
                layers.append(self._tenants[key[1]])
            found = DataScope(key[0], key[1], {
                dest: self._compile(dest, _resolve(layers, dest)) for dest in DESTINATIONS})
            self._scopes[key] = found
        return found

    def scope_of(self, record: RunRecord) -> DataScope:
        """The scope of a stored run: its agent, and its tenant by ``tenant_of``."""
        try:
            tenant = self.tenant_of(record)
        except Exception as exc:  # a tenant function that fails must not leak: strictest scope
            raise UserError(f"DataPolicy.tenant_of failed for run {record.run_id}: "
                            f"{type(exc).__name__}: {exc}") from exc
        return self.scope(agent=record.agent, tenant=tenant)

    def _compile(self, destination: str, actions: dict[str, str]) -> _Destination | None:
        acting = {k: a for k, a in actions.items() if a != "allow"}
        if not acting:
            return None
        redactor = Redactor(
            acting, kinds=list(acting), hash_key=self._key or None,
            patterns={n: s for n, s in self._patterns.items() if n in acting},
            min_confidence=self._min_confidence)
        custom = tuple(re.compile(s) for n, s in self._patterns.items() if n in acting)
        return _Destination(redactor=redactor, actions=acting,
                            secret_fields="secret_field" in acting,
                            gate=_Gate.of(acting, custom))

    # ------------------------------------------------------------------- convenience

    def scrub(self, text: str, destination: str, *, agent: str | None = None,
              tenant: str | None = None) -> str:
        """``self.scope(agent=..., tenant=...).scrub(text, destination)``."""
        return self.scope(agent=agent, tenant=tenant).scrub(text, destination)

    def scrub_value(self, value: Any, destination: str, *, agent: str | None = None,
                    tenant: str | None = None) -> Any:
        """``self.scope(agent=..., tenant=...).scrub_value(value, destination)``."""
        return self.scope(agent=agent, tenant=tenant).scrub_value(value, destination)

    def log_scrubber(self) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """The hook for :class:`keel.core.JsonFormatter` (``scrub=``) and
        ``configure_json_logging(scrub=...)``: scrubs a log line's fields for ``logs``, with
        the rules of the record's ``agent`` and ``tenant`` fields when it has them. A blocked
        value is withheld (a log line is never refused)."""
        return self._scrub_log_fields

    def _scrub_log_fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        agent, tenant = fields.get("agent"), fields.get("tenant")
        scope = self.scope(agent=agent if isinstance(agent, str) else None,
                           tenant=tenant if isinstance(tenant, str) else None)
        return {k: scope.scrub_value(v, "logs", where=k, withhold=True)
                for k, v in fields.items()}

    def log_filter(self) -> logging.Filter:
        """A :class:`logging.Filter` that scrubs each record's message and ``extra`` fields in
        place (for handlers with formatters of their own); add it to the handler."""
        return _LogFilter(self)

    def packet_scrubber(self) -> PacketScrubber:
        """The hook for ``EscalationPolicy(scrub_packet=...)``: scrubs what goes into a packet
        for ``packets`` with the run's agent and tenant rules; a string holding a blocked kind
        is withheld (the escalation still reaches a person)."""
        return self._scrub_packet

    def _scrub_packet(self, value: Any, record: RunRecord) -> Any:
        return self.scope_of(record).scrub_value(value, "packets", where="packet",
                                                 withhold=True)

    def scrub_export(self, data: dict[str, Any], record: RunRecord) -> dict[str, Any]:
        """An export (``keel.store.export_run``) or a ``--json`` view of ``record`` scrubbed for
        ``exports``: the run's content (input, output, error, metadata, and any field that is
        not an id, a name, a status, a time or the usage) and each journal entry's data.
        Raises :class:`SensitiveDataBlocked` when a blocked kind is in it."""
        scope = self.scope_of(record)
        out = _scrub_fields(scope, data, "export")
        run = out.get("run")
        if isinstance(run, dict):
            out["run"] = _scrub_fields(scope, run, "run")
        journal = out.get("journal")
        if isinstance(journal, list):
            out["journal"] = [
                {**e, "data": scope.scrub_value(e.get("data"), "exports",
                                                where=f"journal[{i}].data")}
                if isinstance(e, dict) else e for i, e in enumerate(journal)]
        return out


# Fields of a run, an export and a --json view that are keel's own (ids, names, numbers);
# every other field is content and is scrubbed (a field added later is scrubbed too).
_STRUCTURE = frozenset({"format", "schema_version", "exported_at", "run_id", "agent", "status",
                        "target", "usage", "created_at", "updated_at", "deadline_at",
                        "lease_owner", "lease_expires_at", "cancel_requested"})


def _scrub_fields(scope: DataScope, run: dict[str, Any], where: str) -> dict[str, Any]:
    return {k: v if k in _STRUCTURE or k in ("run", "journal")
            else scope.scrub_value(v, "exports", where=f"{where}.{k}")
            for k, v in run.items()}


class _LogFilter(logging.Filter):
    def __init__(self, policy: DataPolicy) -> None:
        super().__init__()
        self._policy = policy

    def filter(self, record: logging.LogRecord) -> bool:
        fields = {k: v for k, v in record.__dict__.items()
                  if k not in _LOG_RESERVED and not k.startswith("_")}
        fields["msg"] = record.getMessage()
        if record.exc_info and not record.exc_text:  # the traceback, as formatters show it
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            fields["exc_text"] = record.exc_text
        if record.stack_info:
            fields["stack_info"] = record.stack_info
        for key, value in self._policy._scrub_log_fields(fields).items():
            setattr(record, key, value)
        record.args = None
        return True


_LOG_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


# ------------------------------------------------------------------------ checking config


def _mapping(where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(where, f"must be a mapping, not {type(value).__name__}")
    for key in value:
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(where, f"keys must be non-empty strings, not {key!r}")
    return value


def _check_patterns(patterns: Any) -> dict[str, str]:
    checked = dict(_mapping("DataPolicy.patterns", patterns))
    for name, source in checked.items():
        if not isinstance(source, str):
            raise ConfigError(f"DataPolicy.patterns[{name!r}]",
                              f"a regular expression string, not {type(source).__name__}")
        if name in DATA_GROUPS:
            raise ConfigError(f"DataPolicy.patterns[{name!r}]", "the name is a group; choose "
                              "another")
    if checked:
        try:  # the redactor checks names and compiles the expressions
            Redactor(patterns=checked)
        except ConfigError as exc:
            problem = str(exc).split(": ", 1)[-1]
            raise ConfigError(f"DataPolicy.{exc.field}", problem) from None
    return checked


def _check_rules(where: str, rules: Any, kinds: frozenset[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for dest, entries in _mapping(where, rules).items():
        part = f"{where}[{dest!r}]"
        if dest != "*" and dest not in DESTINATIONS:
            raise ConfigError(part, f"unknown destination; one of "
                              f"{', '.join(DESTINATIONS)} or '*' for all")
        checked: dict[str, str] = {}
        for name, action in _mapping(part, entries).items():
            if name not in kinds and name not in DATA_GROUPS:
                raise ConfigError(f"{part}[{name!r}]", f"unknown kind or group; groups: "
                                  f"{', '.join(DATA_GROUPS)}; kinds: {', '.join(sorted(kinds))}")
            if action not in DATA_ACTIONS:
                raise ConfigError(f"{part}[{name!r}]",
                                  f"{action!r} is not one of {', '.join(DATA_ACTIONS)}")
            checked[name] = action
        out[dest] = checked
    return out


def _check_layers(where: str, layers: Any, kinds: frozenset[str]) -> dict[str, dict[
        str, dict[str, str]]]:
    return {name: _check_rules(f"{where}[{name!r}]", rules, kinds)
            for name, rules in _mapping(where, layers).items()}


def _resolve(layers: Iterable[Mapping[str, Mapping[str, str]]], dest: str) -> dict[str, str]:
    actions: dict[str, str] = {}
    order = list(DATA_GROUPS)
    for layer in layers:
        for scope in ("*", dest):
            entries = layer.get(scope, {})
            for name in sorted(entries, key=lambda n: order.index(n) if n in order else 99):
                for kind in DATA_GROUPS.get(name, (name,)):
                    actions[kind] = entries[name]
    return actions


def _hash_key(key: bytes | str | None, env: str | None, hashing: list[str]) -> bytes:
    if key is not None and env is not None:
        raise ConfigError("DataPolicy.hash_key", "give hash_key or hash_key_env, not both")
    where = "DataPolicy.hash_key"
    if env is not None:
        if not isinstance(env, str) or not env:
            raise ConfigError("DataPolicy.hash_key_env", "must name an environment variable")
        where = f"DataPolicy.hash_key_env ({env})"
        key = os.environ.get(env) or None
        if key is None and hashing:
            raise ConfigError(where, f"the environment variable {env} is not set or empty; "
                              f"it keys {', '.join(hashing[:3])}")
    if key is None:
        if hashing:
            raise ConfigError("DataPolicy.hash_key", f"required to hash ({', '.join(hashing[:3])}"
                              "): give a secret key, or hash_key_env naming a variable holding "
                              "one; the same key for every run, so hashes match")
        return b""
    if not isinstance(key, bytes | str):
        raise ConfigError(where, f"must be bytes or str, not {type(key).__name__}")
    raw = key.encode() if isinstance(key, str) else key
    if len(raw) < _MIN_KEY_BYTES:
        raise ConfigError(where, f"too short ({len(raw)} bytes): use at least {_MIN_KEY_BYTES} "
                          "random bytes, or a short key is guessed and every hash reversed")
    return raw
