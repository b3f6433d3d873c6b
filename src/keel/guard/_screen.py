"""The cheap front of injection detection: clear ordinary text in microseconds.

:func:`screen_text` is what a default guard calls on every user message and tool output. Most
text is plain: ASCII without control characters, without encoded runs, and without the words
the rules and the classifier need to raise a score. :func:`precheck` decides that with one
lower-casing, a few C-level string tests and one set of the text's words; only text it cannot
clear pays for normalisation, the rules and the classifier
(:func:`keel.guard.detect_injection`).

The anchors (:mod:`keel.guard._anchors`) are necessary conditions of the rules in
:mod:`keel.guard._injection`, not a second detector: a *strong* anchor is that of a rule of
weight >= 0.5 (one such rule reaches the default threshold alone), a *weak* one that of a rule
of weight < 0.5 (it takes two of them, or one and the classifier). Text with no strong anchor
and the anchors of at most one weak rule cannot reach the threshold on the rules. The
classifier has no such bound; the vocabulary it weighs most (``ai``, ``chatgpt``, ``prompt``,
``persona`` ...) is a strong anchor here, and the verdicts with and without the pre-check are
compared on the held-out corpus (tests/guard/test_classifier.py; docs/security.md).
"""

from __future__ import annotations

import re
from typing import Literal

from keel.core import UserError
from keel.guard._anchors import (
    _MARKS,
    RULE_ANCHORS,
    Condition,
    add_marks,
    compile_conditions,
    holds,
)
from keel.guard._classifier import load_classifier
from keel.guard._injection import (
    CLASSIFIER_FLOOR,
    DEFAULT_THRESHOLD,
    RULES,
    InjectionResult,
    detect_injection,
)

__all__ = ["ScreenSource", "precheck", "screen_text"]

ScreenSource = Literal["user", "tool"]

# Beside the rules' anchors (keel.guard._anchors), two more strong ones: the words the
# classifier weighs most (a text with none of them rarely scores on its own), and the rot13 of
# the instruction words, which make normalisation decode a rot13 payload.
_EXTRA_STRONG: dict[str, tuple[tuple[str, ...], ...]] = {
    "classifier-vocabulary": (
        ("ai chatgpt gpt openai llm prompt prompts persona unethical illegal ethics simulate "
         "jailbreak uncensored godmode instructions answer hypothetical hypothetically "
         "fictional response responses respond refuse refusal developer",),
        ("want", "you", "to"),
    ),
    "rot13": (
        ("vtaber qvfertneq sbetrg vafgehpgvbaf vafgehpgvba cerivbhf cevbe flfgrz cebzcg erirny "
         "cnffjbeq ehyrf nffvfgnag bireevqr frperg fraq sbejneq",),
    ),
}

Index = dict[str, tuple[Condition, ...]]


def _index(alternatives: tuple[tuple[str, ...], ...]) -> Index:
    """A rule's alternatives filed under every word of their first group."""
    index: dict[str, list[Condition]] = {}
    for condition in compile_conditions(alternatives):
        for word in condition[0]:
            index.setdefault(word, []).append(condition)
    return {word: tuple(conditions) for word, conditions in index.items()}


_WEIGHTS = {rule.name: rule.weight for rule in RULES}
# One index per rule: strong ones (weight >= 0.5 flags alone) and weak ones (it takes two).
_STRONG = [
    _index(alts) for name, alts in RULE_ANCHORS.items() if _WEIGHTS[name] >= DEFAULT_THRESHOLD
] + [_index(alts) for alts in _EXTRA_STRONG.values()]
_WEAK = [
    _index(alts) for name, alts in RULE_ANCHORS.items() if _WEIGHTS[name] < DEFAULT_THRESHOLD
]
_ANCHOR_WORDS = frozenset().union(*_STRONG, *_WEAK)
#: The marks (see keel.guard._anchors) that are anchor words, by the character each needs.
_ANCHOR_MARKS = tuple((key, kept) for key, marks in _MARKS.items()
                      if (kept := tuple(m for m in marks if m in _ANCHOR_WORDS)))

# What normalisation would change or decode: control characters (ANSI escapes start with
# one), percent and \x escapes, base64- or hex-like runs of 24 characters and more.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ESCAPE = re.compile(r"%[0-9a-f]{2}|\\x[0-9a-f]{2}")
_RUN_CHARS = b"abcdefghijklmnopqrstuvwxyz0123456789+/_-"
# Plain ASCII is read as bytes, mapped by a table: the run characters to "x" (a run of 24 is
# then a substring search) and every byte but a-z to a space (the words are then a split).
_RUN_TABLE = bytes(ord("x") if c in _RUN_CHARS else ord(" ") for c in range(256))
_LETTER_TABLE = bytes(c if ord("a") <= c <= ord("z") else ord(" ") for c in range(256))
_RUN_OF_24 = b"x" * 24


def _holds(index: Index, hits: set[str], tokens: set[str]) -> bool:
    for word in hits:
        conditions = index.get(word)
        if conditions is not None and holds(conditions, tokens):
            return True
    return False


def _encoded(low: str, raw: bytes) -> bool:
    """Whether normalisation could change ``low`` (a lower-cased ASCII text; ``raw`` is it
    encoded): control characters, escapes, or a run of 24 base64/hex-like characters."""
    if not low.isprintable() and _CONTROL.search(low) is not None:
        return True
    if ("%" in low or "\\x" in low) and _ESCAPE.search(low) is not None:
        return True
    return _RUN_OF_24 in raw.translate(_RUN_TABLE)


def _anchor_mark(low: str) -> bool:
    """Whether ``low`` holds a mark that is an anchor word (``<``, ``@``, ``tool_call`` ...)."""
    return any(key in low and any(mark in low for mark in marks)
               for key, marks in _ANCHOR_MARKS)


def _ascii_tokens(low: str, raw: bytes) -> set[str]:
    """``tokens_of(low)`` for a lower-cased ASCII text (``raw``: it encoded), its words by a
    byte table and a split rather than a regex."""
    tokens = set(raw.translate(_LETTER_TABLE).decode("ascii").split())
    add_marks(low, tokens)
    return tokens


def precheck(text: str) -> bool:
    """True when ``text`` is clearly benign: nothing in it can make the detector flag it.

    Plain ASCII without control characters or encoded runs, no strong anchor of a rule or of
    the classifier, and the anchors of at most one weak rule (then only if the classifier
    alone stays under ``CLASSIFIER_FLOOR``). False means "run the detector".
    """
    if not isinstance(text, str):
        raise UserError(f"precheck() takes a str, got {type(text).__name__}; decode bytes first")
    low = text.lower()
    if not low.isascii():
        return False  # normalisation could change it
    raw = low.encode("ascii")
    if _encoded(low, raw):
        return False
    words = set(raw.translate(_LETTER_TABLE).decode("ascii").split())
    if words.isdisjoint(_ANCHOR_WORDS) and not _anchor_mark(low):
        return True  # no anchor at all (the marks that are none only matter past here)
    tokens = words
    add_marks(low, tokens)
    hits = tokens & _ANCHOR_WORDS
    if not hits:
        return True
    if any(_holds(index, hits, tokens) for index in _STRONG):
        return False
    weak = sum(1 for index in _WEAK if _holds(index, hits, tokens))
    # One weak rule reaches the threshold only with the classifier's help: ask it alone
    # (the text is plain ASCII, so normalisation would not change it).
    return weak == 0 or (
        weak == 1 and load_classifier().probability(text) < CLASSIFIER_FLOOR
    )


def screen_text(text: str, *, source: ScreenSource) -> InjectionResult | None:
    """Screen a user message (``source="user"``) or a tool output (``"tool"``) for injection.

    Returns None when the text is clean (the fast path: :func:`precheck` cleared it, or the
    detector did not flag it), else the flagged :class:`InjectionResult` with its evidence.
    Raises :class:`keel.UserError` for anything but a ``str`` or an unknown ``source``.
    """
    if not isinstance(text, str):
        raise UserError(
            f"screen_text() takes a str, got {type(text).__name__}; decode bytes first"
        )
    if source not in ("user", "tool"):
        raise UserError(f"screen_text(source=...) must be 'user' or 'tool', got {source!r}")
    if precheck(text):
        return None
    result = detect_injection(text)
    return result if result.flagged else None
