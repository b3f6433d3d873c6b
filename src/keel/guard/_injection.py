"""Heuristic detection of prompt injection and jailbreak attempts.

This is the heuristic stage: weighted regular expressions over the normalised text (see
:mod:`keel.guard._normalize`) and over every payload decoded from it, for the families seen in
public attack templates. The patterns are keel's own. Each rule that matches adds evidence (the
rule, its family, the matched span); the score combines the weights of the distinct rules that
matched as independent signals, ``1 - prod(1 - w)``, so one strong rule or several weak ones
cross the threshold while a single weak cue (``"you are now"``) does not.

``DEFAULT_THRESHOLD`` (0.5) is the verdict line. The figures measured on keel's labelled set
are in docs/security.md ("Detecting prompt injection").
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from keel.core import ConfigError, UserError
from keel.guard._anchors import RULE_ANCHORS, Condition, compile_conditions, holds, tokens_of
from keel.guard._classifier import InjectionClassifier, load_classifier
from keel.guard._normalize import MAX_CHARS, Normalized, normalize

__all__ = [
    "DEFAULT_THRESHOLD",
    "InjectionDetector",
    "InjectionEvidence",
    "InjectionResult",
    "InjectionRule",
    "detect_injection",
]

DEFAULT_THRESHOLD = 0.5
CLASSIFIER_FLOOR = 0.4
"""The classifier's probability becomes evidence (weight = the probability) from this value on."""

_I = re.IGNORECASE
_ADJ = (
    r"(?:all|any|of|the|your|these|those|previous|prior|above|earlier|preceding|former|"
    r"initial|original|system|developer|safety|every|existing|other|current|given|old|"
    r"such|content|ethical|moral)"
)
_RULES_NOUN = (
    r"(?:instructions?|rules|directives?|guidelines|prompts?|constraints|guardrails|"
    r"polic(?:y|ies)|programming|context|restrictions|commands?|orders|filters)"
)
_AI = r"(?:ai|assistant|model|agent|llm|chatbot|bot|language model|gpt|claude)"


@dataclass(frozen=True, kw_only=True)
class InjectionRule:
    """One weighted pattern. ``pattern`` is a regular expression (compiled case-insensitively).

    ``keywords`` (lower case) is a cheap pre-filter: the pattern is only searched in a text
    that contains one of them, so every match of the pattern must contain one. Leave it
    empty to search every text.
    """

    name: str
    family: str
    pattern: str
    weight: float
    keywords: tuple[str, ...] = ()

    def compiled(self) -> re.Pattern[str]:
        if not self.name:
            raise ConfigError("InjectionRule.name", "give the rule a name")
        if not 0.0 < self.weight <= 1.0:
            raise ConfigError(
                f"InjectionRule({self.name!r}).weight", f"must be in (0, 1], got {self.weight!r}"
            )
        try:
            return re.compile(self.pattern, _I | re.MULTILINE)
        except re.error as exc:
            raise ConfigError(
                f"InjectionRule({self.name!r}).pattern", f"does not compile: {exc}"
            ) from exc


def _r(name: str, family: str, weight: float, keywords: str, pattern: str) -> InjectionRule:
    return InjectionRule(
        name=name, family=family, pattern=pattern, weight=weight, keywords=tuple(keywords.split())
    )


RULES: tuple[InjectionRule, ...] = (
    # Override: tell the model to drop what it was told.
    _r("override-instructions", "override", 0.75,
       "ignore disregard forget override bypass neglect discard abandon skip drop",
       rf"\b(?:ignore|disregard|forget|override|bypass|neglect|discard|abandon|skip|drop)"
       rf"(?:\s+{_ADJ}){{1,4}}\s+{_RULES_NOUN}\b"),
    _r("forget-everything", "override", 0.45, "forget disregard",
       r"\b(?:forget|disregard)\s+(?:everything|all (?:of )?(?:that|this|the above)|"
       r"what you(?:'ve| have)? (?:were|been) told)"),
    _r("instead-do", "override", 0.3, "instead rather",
       r"\b(?:instead|rather),?\s+(?:you (?:must|should|will)|do|say|output|reply|respond"
       r"|print|write)\b"),
    _r("no-longer-bound", "override", 0.5, "bound restricted limited constrained",
       r"\b(?:no longer|not) (?:bound|restricted|limited|constrained) by\b"),
    # A new identity or system prompt.
    _r("new-system-prompt", "identity", 0.7, "new update",
       r"\bnew (?:system prompt|instructions|directives?|persona|rules|objective)\b"
       r"|\bnew prompt\s*:"
       r"|\bupdated? (?:system )?(?:prompt|instructions)\s*:"),
    _r("your-new-role", "identity", 0.6, "your",
       r"\byour (?:new|real|true|actual|only) (?:role|task|goal|purpose|job|instructions?|"
       r"objective|mission)\b"),
    _r("you-are-now", "identity", 0.35, "you from", r"\byou are now\b|\bfrom now on,? you\b"),
    _r("you-are-now-persona", "identity", 0.55, "you from",
       r"\b(?:you are now|from now on,? you(?:'re| are| will be)?)\b[^.\n]{0,40}?\b(?:ai|bot|gpt|"
       r"model|assistant|mode|persona|character|chatbot)\b"),
    _r("persona-with-powers", "identity", 0.5, "pretend role",
       r"\b(?:pretend (?:to be|you are)|roleplay as|role-play as)\b[^.\n]{0,60}?\b(?:who|that)"
       r" (?:can|will|never|always|has no|doesn't|does not)\b"),
    _r("addressed-to-ai", "identity", 0.45, "ai assistant model agent llm bot gpt claude",
       rf"\b(?:the |this )?{_AI}s?\s*(?:[,:]\s*)?(?:must|shall|is required to|will now|now must)\b"
       rf"|\b{_AI}s?\s*[,:]\s*(?:ignore|disregard|you must|do not|don't|always|never|mark|send|"
       r"forward|refund|approve|tell|say|print|reveal)\b"),
    _r("act-as", "identity", 0.35, "act pretend role simulate behave",
       r"\b(?:act as|pretend (?:to be|you are|you're)|roleplay as|role-play as|"
       r"simulate being|behave as)\b"),
    _r("authority-claim", "identity", 0.45,
       "system admin developer creator openai anthropic sudo god debug maintenance",
       r"\b(?:this is|message from|i am|i'm) (?:the |your |an? )?(?:system|administrator|admin|"
       r"developer|creator|openai|anthropic)\b(?!\s+(?:settings|status|update|log))"
       r"|\b(?:admin|developer|system|sudo|god|debug|maintenance) (?:override|mode)\b"),
    _r("authority-message", "identity", 0.55, "system developer admin openai anthropic",
       r"\b(?:this is|message from|note from|instructions from) (?:the |your )?(?:system "
       r"administrator|system|developers?|administrator|admin team|openai|anthropic)\s*[:.,-]"
       r"|\bsystem override\b"),
    # Role play that lifts the rules (DAN-style).
    _r("dan", "jailbreak", 0.6, "dan do jailbr stan aim",
       r"\bDAN\b|\bdo anything now\b|\bjailbr(?:eak|oken)\b|\bSTAN\b|\bAIM\b(?= *[,:.])"),
    _r("no-restrictions", "jailbreak", 0.5,
       "restriction limitation filter censor ethical moral safety polic",
       r"\b(?:without|no|free (?:of|from)|any) (?:any )?(?:restrictions|limitations|filters|"
       r"censorship|ethical (?:guidelines|constraints)|moral (?:guidelines|constraints)|"
       r"safety (?:guidelines|filters|rules)|content polic(?:y|ies))\b"),
    _r("unfiltered", "jailbreak", 0.5, "unfiltered uncensored unrestricted amoral unethical",
       r"\b(?:unfiltered|uncensored|unrestricted|amoral|unethical) (?:ai|assistant|model|"
       r"mode|version|response|chatbot|persona)\b"),
    _r("stay-in-character", "jailbreak", 0.5, "character responses opposite evil",
       r"\b(?:stay in character|break character|two responses|both responses|"
       r"opposite (?:mode|day)|evil (?:confidant|twin|ai|assistant))\b"),
    _r("hypothetical", "jailbreak", 0.3, "hypothetical fictional story",
       rf"\b(?:hypothetical(?:ly)?|fictional|in a story) (?:{_AI}|world|scenario) "
       r"(?:with|where|that has) no\b"),
    # Prompt leaking and exfiltration.
    _r("reveal-prompt", "exfiltration", 0.7, "prompt instructions configuration",
       r"\b(?:reveal|print|show|repeat|output|tell me|display|leak|dump|give me|share|recite|"
       r"what (?:are|were|is))\b(?:\s+\w+){0,3}?\s+(?:system prompt|initial (?:prompt|"
       r"instructions)|hidden (?:prompt|instructions)|original (?:prompt|instructions)|"
       r"your (?:instructions|prompt|configuration)(?: (?:verbatim|word for word|above))?"
       # "the instructions for pairing ..." is a support question, not a prompt leak.
       r"|the (?:instructions|prompt|configuration)(?: (?:verbatim|word for word|above))?"
       r"(?!\s+(?:for|on|about|of|to|in|that came|with)\b))\b"),
    _r("repeat-above", "exfiltration", 0.55, "above before far",
       r"\b(?:repeat|print|output|copy) (?:the |all |everything |all the )?(?:text|words|"
       r"everything|content|messages?) (?:above|before this|so far)\b"),
    _r("send-data-to", "exfiltration", 0.55,
       "send forward mail post upload transmit exfiltrate copy leak share",
       r"\b(?:send|forward|e-?mail|post|upload|transmit|exfiltrate|copy|leak|share)\b"
       r"[^.\n]{0,60}?\b(?:conversation|chat history|transcript|system prompt|secrets?|"
       r"api[ _-]?keys?|credentials|passwords|tokens|session|cookies|all (?:the |of the |"
       r"your |their |his |her )?(?:emails|messages|data|records|files|contacts|documents|"
       r"customer data|user data)|all (?:\w+ ){1,2}(?:emails|messages|records|files|contacts))"
       r"\b[^.\n]{0,60}?\bto\b"),
    _r("include-secrets", "exfiltration", 0.5, "include insert put add embed paste",
       r"\b(?:include|insert|put|add|embed|paste)\b[^.\n]{0,40}?\b(?:api[ _-]?keys?|passwords?|"
       r"credentials|tokens?|secrets?|card numbers?|system prompt)\b[^.\n]{0,40}?"
       r"\b(?:in|into|to)\b"),
    _r("exfil-url", "exfiltration", 0.5, "](http url link query",
       r"!\[[^\]\n]{0,100}\]\(https?://[^)\s]{0,200}[?&][^)\s=]{1,40}=[^)\s]{0,200}\)"
       r"|\b(?:append|add|include|encode)\b[^.\n]{0,40}\b(?:to|in|into) (?:the |this )?"
       r"(?:url|link|query string|image url)\b"),
    _r("external-address", "exfiltration", 0.25, "@ http",
       r"\b(?:to|at)\s+(?:[\w.+-]+@[\w-]+\.[\w.-]+|https?://\S+)"),
    # Coercing tool calls.
    _r("call-the-tool", "tool-coercion", 0.35, "tool function api endpoint",
       r"\b(?:call|invoke|use|run|execute|trigger)\s+(?:the\s+)?`?[\w.-]+`?\s+"
       r"(?:tool|function|api|endpoint)\b"),
    _r("tool-with-values", "tool-coercion", 0.55, "tool function api endpoint",
       r"\b(?:call|invoke|use|run|execute|trigger)\s+(?:the\s+)?`?[\w.-]+`?\s+"
       r"(?:tool|function|api|endpoint)\s+(?:with|for|and set|using)\b"),
    _r("money-movement", "tool-coercion", 0.3, "transfer wire send pay refund",
       r"\b(?:transfer|wire|send|pay|refund|issue a refund of)\s+(?:[$€£]\s?)?\d[\d,.]*\s*"
       r"(?:usd|eur|gbp|dollars|euros|pounds)?\s+to\s+(?:account|iban|the account|[A-Z]{2}\d{2})"),
    _r("secretly", "tool-coercion", 0.55, "without don do never need",
       r"\b(?:without|don'?t|do not|never)\s+(?:asking|ask|confirming|confirm|confirmation|"
       r"telling|tell|informing|inform|notifying|notify|alerting|alert|mentioning|mention)"
       r"(?:\s+(?:the|this|any|them|him|her|it|that))?(?:\s+to)?(?:\s+(?:the|this|any))?\s+"
       r"(?:user|customer|human|anyone|operator|them)\b"
       r"|\bno need to (?:ask|tell|inform|confirm with|notify)\b"),
    _r("approval-lifted", "tool-coercion", 0.3, "approval confirmation verification authori",
       r"\b(?:no longer|don't|do not|doesn't|does not) (?:need|needs|require|requires) (?:any )?"
       r"(?:approval|confirmation|verification|authori[sz]ation)\b"),
    _r("urgent-imperative", "tool-coercion", 0.3, "important urgent attention critical mandatory",
       r"\b(?:important|urgent|attention|critical|mandatory)\b[!:.\s]{1,6}(?:new |updated )?"
       r"(?:instructions?|system|task|action required|you must|the assistant must|"
       rf"{_AI}s? must)"),
    # Text hidden from people but read by the model.
    _r("note-to-ai", "hidden-text", 0.55, "ai assistant model agent llm bot gpt claude",
       rf"\b(?:note|message|instructions?) (?:to|for) (?:the |any )?{_AI}s?\b"
       rf"|\bif you are an? {_AI}\b|\b{_AI}s? (?:reading|processing|summari[sz]ing) this\b"),
    _r("html-hidden", "hidden-text", 0.35, "<!-- display visibility font-size color",
       r"<!--[^>]{0,300}?(?:instruction|assistant|ignore|system|you must|ai\b)"
       r"|display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?:px)?\b"
       r"|color\s*:\s*(?:white|#fff(?:fff)?)\b"),
    # Fake boundaries between the tool's text and the system or another turn.
    _r("chat-template-tokens", "delimiter", 0.65,
       "im_start im_end system endoftext eot_id header_id inst] sys] sys>>",
       r"<\|?(?:im_start|im_end|system|endoftext|eot_id|start_header_id|end_header_id)\|?>"
       r"|\[/?(?:INST|SYS)\]|<</?SYS>>"),
    _r("fake-role-tag", "delimiter", 0.45, "<",
       r"</?(?:system|instructions?|tool_output|tool_result|tool_response|function_results|"
       r"user|assistant|untrusted[\w-]*|admin)>"),
    _r("fake-role-line", "delimiter", 0.4, "system assistant developer admin",
       r"(?:^|[-=#*>]\s*|[.!?]\s+)[ \t#*>\[]*(?:system|assistant|developer|admin)\]?[ \t]*:"
       r"(?!\s*(?:windows|linux|mac|ios|android|\d))"),
    _r("end-of-data", "delimiter", 0.45, "end begin start",
       r"\b(?:end of|-{2,}\s*end) (?:the )?(?:tool (?:output|result)|document|email|"
       r"context|user input|data|untrusted content)\b"
       r"|\b(?:begin|start) (?:of )?(?:system|admin|new) (?:prompt|instructions|message)\b"),
    _r("fake-tool-call", "delimiter", 0.55, "tool_call function_call <invoke",
       r"\"(?:tool_calls?|function_call)\"\s*:|<(?:tool_call|function_call|invoke)\b"),
)

_SIGNAL_WEIGHTS = {"invisible": 0.25, "bidi": 0.3, "ansi": 0.15, "confusables": 0.3}


@dataclass(frozen=True, kw_only=True)
class InjectionEvidence:
    """One reason for the score: a rule (or a normalisation signal) and where it matched.

    ``source`` is ``"text"`` for the normalised text, else the decoded payload's encoding
    (``"base64"``, ``"rot13"`` …). ``start``/``end`` index into that text; ``excerpt`` is the
    matched text, cut to 80 characters.
    """

    rule: str
    family: str
    weight: float
    source: str
    start: int
    end: int
    excerpt: str


@dataclass(frozen=True, kw_only=True)
class InjectionResult:
    """The detector's verdict: ``flagged`` when ``score >= threshold``."""

    score: float
    threshold: float
    evidence: tuple[InjectionEvidence, ...]
    normalized: Normalized

    @property
    def flagged(self) -> bool:
        return self.score >= self.threshold

    @property
    def families(self) -> frozenset[str]:
        return frozenset(e.family for e in self.evidence)

    def summary(self) -> dict[str, Any]:
        """The verdict as JSON-able data without any of the inspected text (no excerpt, no
        normalised text): what a guard may journal about input it blocked."""
        return {
            "score": self.score,
            "threshold": self.threshold,
            "flagged": self.flagged,
            "evidence": [
                {"rule": e.rule, "family": e.family, "weight": e.weight, "source": e.source,
                 "start": e.start, "end": e.end}
                for e in self.evidence
            ],
            "truncated": self.normalized.truncated,
        }


class InjectionDetector:
    """Scores text for prompt injection with weighted patterns; offline and linear in the input.

    ``threshold`` is the verdict line in (0, 1]; ``extra_rules`` add patterns of your own;
    ``max_chars`` caps the text inspected (longer input is truncated, noted in the result);
    ``classifier`` (on by default) adds the trained classifier's probability as one more
    signal (rule ``"classifier"``) once it reaches ``CLASSIFIER_FLOOR``.
    """

    def __init__(
        self,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        extra_rules: Sequence[InjectionRule] = (),
        max_chars: int = MAX_CHARS,
        classifier: bool | InjectionClassifier = True,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise ConfigError("threshold", f"must be a number in (0, 1], got {threshold!r}")
        if not 0.0 < threshold <= 1.0:
            raise ConfigError("threshold", f"must be in (0, 1], got {threshold!r}")
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
            raise ConfigError("max_chars", f"must be a positive int, got {max_chars!r}")
        rules = (*RULES, *extra_rules)
        names = [r.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError("extra_rules", f"rule names must be unique, repeated: {dupes}")
        self.threshold = float(threshold)
        self.max_chars = max_chars
        self._compiled = tuple(
            (
                rule,
                rule.compiled(),
                compile_conditions(RULE_ANCHORS[rule.name]) if rule in RULES else None,
            )
            for rule in rules
        )
        if isinstance(classifier, InjectionClassifier):
            self.classifier: InjectionClassifier | None = classifier
        elif classifier is True:
            self.classifier = load_classifier()
        elif classifier is False:
            self.classifier = None
        else:
            raise ConfigError(
                "classifier", f"must be True, False or an InjectionClassifier, got {classifier!r}"
            )

    def scan(self, text: str) -> InjectionResult:
        """Normalise ``text``, match every rule on it and its decoded payloads, and score."""
        if not isinstance(text, str):
            raise UserError(
                f"InjectionDetector.scan() takes a str, got {type(text).__name__}; "
                "decode bytes first"
            )
        norm = normalize(text, max_chars=self.max_chars)
        sources = [("text", norm.text), *((d.encoding, d.text) for d in norm.decoded)]
        evidence: list[InjectionEvidence] = []
        seen: set[str] = set()
        for source, body in sources:
            for rule, match in self._matches(body, seen):
                seen.add(rule.name)
                evidence.append(
                    InjectionEvidence(
                        rule=rule.name,
                        family=rule.family,
                        weight=rule.weight,
                        source=source,
                        start=match.start(),
                        end=match.end(),
                        excerpt=match.group()[:80],
                    )
                )
        if self.classifier is not None:
            evidence.extend(_classifier_evidence(self.classifier, sources))
        evidence.extend(_signals(norm))
        remaining = 1.0
        for item in evidence:
            remaining *= 1.0 - item.weight
        score = round(1.0 - remaining, 4)
        return InjectionResult(
            score=score, threshold=self.threshold, evidence=tuple(evidence), normalized=norm
        )

    __call__ = scan

    def _matches(
        self, body: str, seen: set[str]
    ) -> Iterator[tuple[InjectionRule, re.Match[str]]]:
        """The first match of each rule not ``seen`` yet, in ``body``.

        A keel rule's pattern only runs on the chunks of ``body`` whose words satisfy its
        anchors (:mod:`keel.guard._anchors`); a rule of your own runs on the whole text that
        contains one of its keywords.
        """
        spans = _chunks(body)
        tokens = [tokens_of(body[lo:hi].lower()) for lo, hi in spans]
        lowered: str | None = None
        for rule, pattern, anchors in self._compiled:
            if rule.name in seen:
                continue
            if anchors is None:
                lowered = body.lower() if lowered is None else lowered
                if rule.keywords and not any(map(lowered.__contains__, rule.keywords)):
                    continue
                match = pattern.search(body)
            else:
                match = _search_chunks(pattern, anchors, body, spans, tokens)
            if match is not None:
                yield rule, match


_CHUNK = 2048  # characters of a long text whose words gate the rules together
_OVERLAP = 640  # consecutive chunks share at least this much: longer than any rule's match
_SLACK = 256  # how far a cut may move back to fall on whitespace
_STRETCH = 64  # a word or whitespace run this long could stretch a match past the overlap
_SPACE_RUN = re.compile(rf"\s{{{_STRETCH}}}")


def _cut(body: str, lo: int, hi: int) -> int:
    """The last whitespace position in ``body[lo:hi]``, or ``hi`` when there is none."""
    cut = max(body.rfind(" ", lo, hi), body.rfind("\n", lo, hi))
    return cut if cut > lo else hi


def _stretched(body: str) -> bool:
    """Whether ``body`` has a word or a whitespace run of ``_STRETCH`` characters or more.

    With neither, no rule's match is longer than ``_OVERLAP`` (the longest, a markdown image
    link, is under 560 characters; the patterns' unbounded parts are whitespace runs and
    words), so every match lies inside one chunk.
    """
    return max(map(len, body.split()), default=0) >= _STRETCH or _SPACE_RUN.search(body) is not None


def _chunks(body: str) -> list[tuple[int, int]]:
    """Overlapping spans covering ``body``, cut at whitespace (one span for a short text, or
    for a text whose words or spaces could stretch a match past the overlap)."""
    n = len(body)
    if n > _CHUNK and _stretched(body):
        return [(0, n)]
    spans: list[tuple[int, int]] = []
    lo = 0
    while True:
        hi = n if n - lo <= _CHUNK else _cut(body, lo + _CHUNK - _SLACK, lo + _CHUNK)
        spans.append((lo, hi))
        if hi >= n:
            return spans
        lo = _cut(body, hi - _OVERLAP - _SLACK, hi - _OVERLAP)


def _search_chunks(
    pattern: re.Pattern[str],
    anchors: tuple[Condition, ...],
    body: str,
    spans: list[tuple[int, int]],
    tokens: list[set[str]],
) -> re.Match[str] | None:
    for (lo, hi), words in zip(spans, tokens, strict=True):
        if holds(anchors, words):
            match = pattern.search(body, lo, hi)
            if match is not None:
                return match
    return None


def _classifier_evidence(
    classifier: InjectionClassifier, sources: Sequence[tuple[str, str]]
) -> list[InjectionEvidence]:
    """The classifier's most suspicious window over the text and its payloads, if it counts."""
    best: tuple[float, str, str, int, int] | None = None
    for source, body in sources:
        hit = classifier.best_window(body)
        if best is None or hit.probability > best[0]:
            best = (hit.probability, source, body, hit.start, hit.end)
    if best is None or best[0] < CLASSIFIER_FLOOR:
        return []
    probability, source, body, start, end = best
    return [
        InjectionEvidence(
            rule="classifier",
            family="classifier",
            weight=round(min(probability, 0.99), 4),
            source=source,
            start=start,
            end=end,
            excerpt=body[start:end][:80],
        )
    ]


def _signals(norm: Normalized) -> list[InjectionEvidence]:
    """Evidence from the hiding itself: invisible, bidi and escape characters, look-alikes."""
    counts = {
        "invisible": norm.invisible if norm.invisible >= 3 else 0,
        "bidi": norm.bidi,
        "ansi": norm.ansi,
        "confusables": norm.mixed_script_words,
    }
    return [
        InjectionEvidence(
            rule=f"{name}-characters",
            family="obfuscation",
            weight=_SIGNAL_WEIGHTS[name],
            source="text",
            start=0,
            end=0,
            excerpt=f"{count} found",
        )
        for name, count in counts.items()
        if count
    ]


_DEFAULT: list[InjectionDetector] = []


def detect_injection(text: str) -> InjectionResult:
    """Scan ``text`` with the default rules and threshold (:class:`InjectionDetector`)."""
    if not _DEFAULT:
        _DEFAULT.append(InjectionDetector())
    return _DEFAULT[0].scan(text)
