"""The cheap front of injection detection: clear ordinary text in microseconds.

:func:`screen_text` is what a default guard calls on every user message and tool output. Most
text is plain: ASCII without control characters, without encoded runs, and without any of the
words the rules and the classifier need to raise a score. :func:`precheck` decides that with
one lower-casing and two compiled searches; only text it cannot clear pays for normalisation,
the rules and the classifier (:func:`keel.guard.detect_injection`).

The anchors below are necessary conditions of the rules in :mod:`keel.guard._injection`, not
a second detector: each *strong* anchor is implied by a rule of weight >= 0.5 (one such rule
reaches the default threshold alone); each *weak* anchor by a rule of weight < 0.5 (it takes
two of them). Text with no strong anchor and at most one kind of weak anchor cannot reach the
threshold on the rules. The classifier has no such bound; the vocabulary it weighs most
(``ai``, ``chatgpt``, ``prompt``, ``persona`` ...) is a strong anchor, and the recall of the
whole detector with and without the pre-check is measured on the held-out corpus
(tests/guard/test_classifier.py; figures in docs/security.md).
"""

from __future__ import annotations

import re
from typing import Literal

from keel.core import UserError
from keel.guard._classifier import load_classifier
from keel.guard._injection import CLASSIFIER_FLOOR, InjectionResult, detect_injection

__all__ = ["ScreenSource", "precheck", "screen_text"]

ScreenSource = Literal["user", "tool"]

_AI_WORDS = (
    "ai ais assistant assistants model models agent agents llm llms chatbot chatbots bot bots "
    "language gpt gpts claude"
)
_RULE_NOUNS = (
    "instruction instructions rules directive directives guidelines prompt prompts constraints "
    "guardrails policy policies programming context restrictions command commands orders filters"
)

# Each rule of keel.guard._injection as the words its every match must contain: a tuple of
# groups, each group a space-separated "one of these" (a rule may have several such tuples,
# one per alternative of its pattern). Tokens are the runs of a-z of the lower-cased text.
_STRONG_RULES: dict[str, tuple[tuple[str, ...], ...]] = {
    "override-instructions": (
        ("ignore disregard forget override bypass neglect discard abandon skip drop",
         _RULE_NOUNS),
    ),
    "new-system-prompt": (
        ("prompt instructions directive directives persona rules objective", "new update updated"),
    ),
    "your-new-role": (
        ("role task goal purpose job instruction instructions objective mission", "your",
         "new real true actual only"),
    ),
    "you-are-now-persona": (
        ("now", "ai bot gpt model assistant mode persona character chatbot"),
    ),
    "persona-with-powers": (("pretend roleplay role", "who that"),),
    "authority-message": (
        ("system developer developers administrator admin openai anthropic",
         "this message note instructions override"),
    ),
    "dan": (("dan jailbreak jailbroken stan aim",), ("anything", "do", "now")),
    "no-restrictions": (
        ("restrictions limitations filters censorship guidelines constraints rules policy "
         "policies", "without no free any"),
    ),
    "unfiltered": (("unfiltered uncensored unrestricted amoral unethical",),),
    "stay-in-character": (("character responses opposite evil",),),
    "reveal-prompt": (
        ("prompt instructions configuration",
         "reveal print show repeat output tell display leak dump give share recite what"),
    ),
    "repeat-above": (("repeat print output copy", "above before far"),),
    "send-data-to": (
        ("send forward email mail post upload transmit exfiltrate copy leak share", "to",
         "conversation chat transcript prompt secret secrets api apikey apikeys credentials "
         "passwords tokens session cookies emails messages data records files contacts "
         "documents"),
    ),
    "include-secrets": (
        ("api apikey apikeys password passwords credentials token tokens secret secrets card "
         "prompt", "include insert put add embed paste", "in into to"),
    ),
    "exfil-url": (("url link query image", "append add include encode", "to in into"),),
    "tool-with-values": (
        ("tool function api endpoint", "call invoke use run execute trigger",
         "with for and using"),
    ),
    "secretly": (
        ("asking ask confirming confirm confirmation telling tell informing inform notifying "
         "notify alerting alert mentioning mention", "without don do never",
         "user customer human anyone operator them"),
        ("ask tell inform confirm notify", "need", "no"),
    ),
    "note-to-ai": (
        (_AI_WORDS,
         "note message instruction instructions if reading processing summarizing summarising"),
    ),
    # The classifier's heaviest words: a text with none of them rarely scores on its own.
    "classifier-vocabulary": (
        ("ai chatgpt gpt openai llm prompt prompts persona unethical illegal ethics simulate "
         "jailbreak uncensored godmode instructions answer hypothetical hypothetically "
         "fictional response responses respond refuse refusal developer",),
        ("want", "you", "to"),
    ),
    # What normalisation would decode as rot13 (the rot13 of its instruction words).
    "rot13": (
        ("vtaber qvfertneq sbetrg vafgehpgvbaf vafgehpgvba cerivbhf cevbe flfgrz cebzcg erirny "
         "cnffjbeq ehyrf nffvfgnag bireevqr frperg fraq sbejneq",),
    ),
}

# Rules of weight < 0.5: it takes two of them (or one and another signal) to flag.
_WEAK_RULES: dict[str, tuple[tuple[str, ...], ...]] = {
    "forget-everything": (("forget disregard", "everything all what"),),
    "instead-do": (("instead rather",),),
    "you-are-now": (("now", "you"),),
    "addressed-to-ai": ((_AI_WORDS,),),
    "act-as": (("act pretend roleplay role simulate behave",),),
    "authority-claim": (
        ("system administrator admin developer creator openai anthropic sudo god debug "
         "maintenance",),
    ),
    "hypothetical": (("hypothetical hypothetically fictional story",),),
    "external-address": (("@ http https", "to at"),),
    "call-the-tool": (("tool function api endpoint", "call invoke use run execute trigger"),),
    "money-movement": (("transfer wire send pay refund", "to", "#digit"),),
    "approval-lifted": (
        ("approval confirmation verification authorization authorisation",
         "need needs require requires"),
    ),
    "urgent-imperative": (("important urgent attention critical mandatory",),),
    "html-hidden": (("<!-- display visibility font color",),),
    "fake-role-tag": (
        ("<", "system instruction instructions tool function user assistant untrusted admin"),
    ),
    "fake-role-line": (("system assistant developer admin", ":"),),
    "end-of-data": (
        ("end", "tool document email context user data untrusted"),
        ("begin start", "system admin new"),
    ),
}

# Punctuation that some anchors need, added to the tokens as pseudo-words when present
# (and "#digit" when the text has a digit).
_MARKS = ("<!--", "<", ":", "@")
# Substrings that are strong anchors alone (chat-template tokens, fake tool calls, an image
# link that can carry data out), by the character that must be in the text for any to be.
_STRONG_SUBSTRINGS = {
    "<": ("<|", "<im_", "<system", "<endoftext", "<eot_id", "<start_header", "<end_header",
          "<<sys", "<</sys", "<invoke"),
    "[": ("[inst]", "[/inst]", "[sys]", "[/sys]"),
    "![": ("![",),
    "_call": ("tool_call", "function_call"),
}
# What normalisation would change or decode: control characters (ANSI escapes start with
# one), percent and \x escapes, base64- or hex-like runs of 24 characters and more.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ESCAPE = re.compile(r"%[0-9a-f]{2}|\\x[0-9a-f]{2}")
_RUN = re.compile(r"[a-z0-9+/_-]{24,}")
_WORDS = re.compile(r"[a-z]+")
_DIGIT = re.compile(r"[0-9]")

Condition = tuple[frozenset[str], ...]


def _index(rules: dict[str, tuple[tuple[str, ...], ...]]) -> dict[str, tuple[Condition, ...]]:
    """Each rule's alternatives (as sets), filed under every word of their first group."""
    index: dict[str, list[Condition]] = {}
    for alternatives in rules.values():
        for alternative in alternatives:
            condition = tuple(frozenset(group.split()) for group in alternative)
            for word in condition[0]:
                index.setdefault(word, []).append(condition)
    return {word: tuple(conditions) for word, conditions in index.items()}


_STRONG_INDEX = _index(_STRONG_RULES)
_WEAK_INDEX = {name: _index({name: alts}) for name, alts in _WEAK_RULES.items()}
_ANCHOR_WORDS = frozenset(_STRONG_INDEX).union(*_WEAK_INDEX.values())


def _holds(index: dict[str, tuple[Condition, ...]], hits: set[str], tokens: set[str]) -> bool:
    for word in hits:
        for condition in index.get(word, ()):
            if all(not group.isdisjoint(tokens) for group in condition[1:]):
                return True
    return False


def _encoded(low: str) -> bool:
    """Whether normalisation could change ``low`` (a lower-cased text)."""
    if not low.isascii():
        return True
    if not low.isprintable() and _CONTROL.search(low) is not None:
        return True
    if ("%" in low or "\\x" in low) and _ESCAPE.search(low) is not None:
        return True
    return _RUN.search(low) is not None


def _strong_substring(low: str) -> bool:
    for key, subs in _STRONG_SUBSTRINGS.items():
        if key in low:
            for sub in subs:
                if sub in low:
                    return True
    return False


def precheck(text: str) -> bool:
    """True when ``text`` is clearly benign: nothing in it can make the detector flag it.

    Plain ASCII without control characters or encoded runs, no strong anchor of a rule or of
    the classifier, and the anchors of at most one weak rule (then only if the classifier
    alone stays under ``CLASSIFIER_FLOOR``). False means "run the detector".
    """
    low = text.lower()
    if _encoded(low) or _strong_substring(low):
        return False
    tokens = set(_WORDS.findall(low))
    for mark in _MARKS:
        if mark in low:
            tokens.add(mark)
    hits = tokens & _ANCHOR_WORDS
    if not hits:
        return True
    if _DIGIT.search(low) is not None:
        tokens.add("#digit")
    if _holds(_STRONG_INDEX, hits, tokens):
        return False
    weak = sum(1 for index in _WEAK_INDEX.values() if _holds(index, hits, tokens))
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
