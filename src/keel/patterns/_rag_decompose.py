"""Query decomposition: a multi-part question becomes sub-queries retrieved separately.

Two ways, both journaled by the pattern (a resumed or replayed run gets the recorded
sub-queries back, whatever the code or the model would say now):

* a model, when ``RAG(decomposer=Agent(..., output_type=SubQueries))`` is given: it returns
  the sub-questions (one, the question itself, for a simple question);
* otherwise :func:`split_question`, a heuristic: the question is split at question marks
  ("...? Also, ...?"), then at ", and " / "; " / " and also " where what follows starts like
  a question (how, what, which, can, is ...), e.g. "How long is the link valid, and which
  plan includes SSO?". A bare comma is not a joint ("The app fails, how do I fix it?" is one
  question), so "A, B, and C?" gives two parts, "A, B" and "C". A question it cannot split
  stays whole, which is always safe: the agent searches with the whole question.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from keel.core import UserError

#: Words a sub-question starts with (after the joint is removed).
_QUESTION_TEXT = """how what which when where who whom whose why is are was were
can could do does did should would will may might has have"""
_QUESTION_WORDS = frozenset(_QUESTION_TEXT.split())
#: "in which", "for how long", "on what" start a question too.
_PREPOSITIONS = frozenset(("in", "on", "at", "for", "from", "to", "by", "with"))
_JOINTS = re.compile(r"(,\s*and\s+(?:also\s+)?|;\s*(?:and\s+)?|\s+and\s+also\s+)", re.I)
_LEAD = re.compile(r"^(?:also|and|then|plus|besides)[,:]?\s+", re.I)
#: At most this many sub-queries (a longer list is a sign the split went wrong).
MAX_PARTS = 5


class SubQueries(BaseModel):
    """A decomposer model's output: the sub-questions of the user's question, each answerable
    on its own (the question itself when it has one part)."""

    queries: list[str] = Field(min_length=1, max_length=MAX_PARTS,
                               description="self-contained sub-questions, in order")


def split_question(question: str) -> list[str]:
    """The heuristic decomposition (see the module doc): at least one sub-query, at most
    :data:`MAX_PARTS`; each stripped of leading joints ("Also, ..."). Blank: none."""
    if not isinstance(question, str):
        raise UserError(f"the question must be a string, got {type(question).__name__}")
    text = " ".join(question.split())
    parts: list[str] = []
    for sentence in re.split(r"(?<=\?)\s+", text):
        parts.extend(_split_joints(_LEAD.sub("", sentence)))
    cleaned = [_tidy(p) for p in parts]
    cleaned = [p for p in cleaned if p]
    if len(cleaned) > MAX_PARTS or not cleaned:
        return [text] if text else []
    return list(dict.fromkeys(cleaned))


def _split_joints(sentence: str) -> list[str]:
    pieces = _JOINTS.split(sentence)  # text, joint, text, joint, ...
    out = [pieces[0]]
    for joint, piece in zip(pieces[1::2], pieces[2::2], strict=True):
        head = piece.lower().split(maxsplit=2)[:2]
        if head and (head[0] in _QUESTION_WORDS or (
                len(head) == 2 and head[0] in _PREPOSITIONS and head[1] in _QUESTION_WORDS)):
            out.append(piece)
        else:  # "... for Mail, and why ..." splits; "cats, dogs and birds" does not
            out[-1] = f"{out[-1]}{joint}{piece}"
    return out


def _tidy(part: str) -> str:
    part = _LEAD.sub("", part.strip()).strip(" ,;")
    if not part:
        return ""
    part = part[0].upper() + part[1:]
    return part if part.endswith(("?", ".", "!")) else f"{part}?"


def decomposition_prompt(question: str) -> str:
    return ("Split the user's question into the separate sub-questions it asks, each "
            "self-contained (repeat the product or subject in each) so it can be searched on "
            "its own. A question with one part stays as it is. Do not answer it.\n\n"
            f"Question: {question}")
