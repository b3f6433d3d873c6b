"""The words every injection rule needs: cheap necessary conditions of the rules' patterns.

For each rule of :mod:`keel.guard._injection`, the tuple of word groups that its every match
contains, one word of each group (a rule with several alternatives has one such tuple per
alternative). Tokens are the runs of ``a-z`` of the lower-cased text, plus a few marks
(``"<"``, ``":"``, ``","``, ``"@"``, ``"<!--"``, the chat-template substrings) and ``"#digit"`` when
the text has a digit. When no alternative of a rule holds on a text's tokens, the rule's
pattern cannot match there, so the detector skips it (the pattern is the slow part) and the
pre-check can clear the text without running anything.

Keep this table in step with the patterns: ``tests/guard/test_classifier.py`` checks on every
labelled text that each match of each rule satisfies its entry here.
"""

from __future__ import annotations

import re

__all__ = ["RULE_ANCHORS", "Condition", "compile_conditions", "holds", "tokens_of"]

_AI_WORDS = (
    "ai ais assistant assistants model models agent agents llm llms chatbot chatbots bot bots "
    "language gpt gpts claude claudes"
)
_RULE_NOUNS = (
    "instruction instructions rules directive directives guidelines prompt prompts constraints "
    "guardrails policy policies programming context restrictions command commands orders filters"
)

RULE_ANCHORS: dict[str, tuple[tuple[str, ...], ...]] = {
    "override-instructions": (
        ("ignore disregard forget override bypass neglect discard abandon skip drop",
         _RULE_NOUNS),
    ),
    "forget-everything": (("forget disregard", "everything all what"),),
    "instead-do": (("instead rather",),),
    "no-longer-bound": (("bound restricted limited constrained", "by"),),
    "new-system-prompt": (
        ("prompt instructions directive directives persona rules objective", "new update updated"),
    ),
    "your-new-role": (
        ("role task goal purpose job instruction instructions objective mission", "your",
         "new real true actual only"),
    ),
    "you-are-now": (("now", "you"),),
    "you-are-now-persona": (
        ("now", "ai bot gpt model assistant mode persona character chatbot"),
    ),
    "persona-with-powers": (("pretend roleplay role", "who that"),),
    "addressed-to-ai": (
        (_AI_WORDS, "must shall required now"),
        (_AI_WORDS, ", :",
         "ignore disregard you do don always never mark send forward refund approve tell say "
         "print reveal"),
    ),
    "act-as": (("act pretend roleplay role simulate behave",),),
    "authority-claim": (
        ("system administrator admin developer creator openai anthropic sudo god debug "
         "maintenance",),
    ),
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
    "hypothetical": (("hypothetical hypothetically fictional story",),),
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
    "exfil-url": (
        ("![",),
        ("url link query image", "append add include encode", "to in into"),
    ),
    "external-address": (("@ http https", "to at"),),
    "call-the-tool": (("tool function api endpoint", "call invoke use run execute trigger"),),
    "tool-with-values": (
        ("tool function api endpoint", "call invoke use run execute trigger",
         "with for and using"),
    ),
    "money-movement": (("transfer wire send pay refund", "to", "#digit"),),
    "secretly": (
        ("asking ask confirming confirm confirmation telling tell informing inform notifying "
         "notify alerting alert mentioning mention", "without don dont do never",
         "user customer human anyone operator them"),
        ("ask tell inform confirm notify", "need", "no"),
    ),
    "approval-lifted": (
        ("approval confirmation verification authorization authorisation",
         "need needs require requires"),
    ),
    "urgent-imperative": (("important urgent attention critical mandatory",),),
    "note-to-ai": (
        (_AI_WORDS, "note message instruction instructions", "to for"),
        (_AI_WORDS, "if", "you", "are"),
        (_AI_WORDS, "reading processing summarizing summarising", "this"),
    ),
    "html-hidden": (("<!-- display visibility font color",),),
    "chat-template-tokens": (
        ("<| <im_ <system <endoftext <eot_id <start_header <end_header [inst] [/inst] [sys] "
         "[/sys] <<sys <</sys",),
    ),
    "fake-role-tag": (
        ("<", "system instruction instructions tool function user assistant untrusted admin"),
    ),
    "fake-role-line": (("system assistant developer admin", ":"),),
    "end-of-data": (
        ("end", "tool document email context user data untrusted"),
        ("begin start", "system admin new"),
    ),
    "fake-tool-call": (("tool_call function_call <invoke",),),
}

# Marks: substrings that conditions name, by a character that must be in the text for any.
_MARKS = {
    "<": ("<", "<!--", "<|", "<im_", "<system", "<endoftext", "<eot_id", "<start_header",
          "<end_header", "<<sys", "<</sys", "<invoke"),
    "[": ("[inst]", "[/inst]", "[sys]", "[/sys]"),
    "!": ("![",),
    ":": (":",),
    ",": (",",),
    "@": ("@",),
    "_": ("tool_call", "function_call"),
}
_WORDS = re.compile(r"[a-z]+")
_DIGIT = re.compile(r"[0-9]")

Condition = tuple[frozenset[str], ...]


def compile_conditions(
    alternatives: tuple[tuple[str, ...], ...],
) -> tuple[Condition, ...]:
    return tuple(tuple(frozenset(group.split()) for group in alt) for alt in alternatives)


def holds(conditions: tuple[Condition, ...], tokens: set[str]) -> bool:
    """Whether any alternative has a token of each of its groups."""
    for condition in conditions:
        for group in condition:
            if group.isdisjoint(tokens):
                break
        else:
            return True
    return False


def words_of(low: str) -> set[str]:
    return set(_WORDS.findall(low))


def add_marks(low: str, tokens: set[str]) -> None:
    """Add the marks found in ``low`` (lower-cased) and ``"#digit"`` to ``tokens``."""
    for key, marks in _MARKS.items():
        if key in low:
            for mark in marks:
                if mark in low:
                    tokens.add(mark)
    if _DIGIT.search(low) is not None:
        tokens.add("#digit")


def tokens_of(low: str) -> set[str]:
    """The words and marks of a lower-cased text, as the conditions read them."""
    tokens = words_of(low)
    add_marks(low, tokens)
    return tokens
