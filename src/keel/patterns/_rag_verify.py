"""Citation grounding: split an answer into claim sentences with their cited chunk ids, and
check each claim against the text of the chunks it cites and against the question.

A claim is **supported** when

* it cites at least one chunk id, and every id it cites exists (an unknown id is a made-up
  citation: the claim is unsupported, whatever else it says);
* every number in it appears in the cited chunks (a changed figure is the most harmful
  hallucination, and word overlap cannot see it), and so does every name (a capitalised word
  inside the sentence: a claim about "Projects" is not supported by a chunk about "Forms");
* its words are found in the cited chunks: the share of its content words (stop words
  dropped, a light stemming) present in them is at least ``min_lexical``, or at least
  ``min_lexical_paraphrase`` with an embedding similarity to the closest sentence of those
  chunks of at least ``min_similarity`` (a paraphrase);
* and it is **on topic**: it addresses one of the (sub-)questions (``relevance`` below is at
  least ``min_relevance``). A claim that is true to its chunk but answers nothing asked (what
  a model produces when the documents do not cover the question) is removed like an
  unsupported one.

Relevance of a claim to a question: the share of the question's content words found in the
claim, each word weighted by its rarity in the corpus (``weights``, inverse document
frequencies from :func:`term_weights`; a word the corpus never uses weighs most, so "Does it
integrate with Lotus Notes?" is not answered by a sentence about integrations). ``RAG``
computes the weights from a :class:`~keel.patterns.Corpus`. Without weights: the unweighted
share averaged with the embedding similarity of question and claim (the share alone with
``embedder=None``). On keel's labelled set, the default threshold (0.4, with weights) keeps
84% of the claims that answer their question and 9% of those that do not (unweighted with
embeddings: 85% and 33%).

A (sub-)question that no supported claim addresses is a **gap**: the pattern sends
the model back to search for it once.

All checks are deterministic (lexical; the default embedder is WordLlama, offline, and can be
switched off with ``embedder=None``). An LLM judge, when configured on the pattern, replaces
the lexical-and-embedding support verdict (see ``keel.patterns.RAG``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from keel.core import ConfigError, UserError
from keel.patterns._embed import Embedder, embed_checked, normalised

#: A citation: ``[chunk-id]`` or several in one bracket, ``[a#1, b#2]`` / ``[a#1; b#2]``.
_CITE = re.compile(r"\[([^\[\]\n]{1,400})\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
_WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")
_NUMBER = re.compile(r"^[0-9]+(?:[.,][0-9]+)*$")
_BULLET = re.compile(r"^(?:[-*\u2022]|\d{1,3}[.)])\s+")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/#@~+-]{0,199}$")
_STOP_WORDS = """a an the and or but if then of to in on at by for with from as is are was
were be been being it its this that these those there here i you we they he she my your our
their me us them do does did can could should would will shall may might must have has had
not no so than too very what which who whom whose when where why how about into over under
up out any all each every some such also just only own same other more most much many one
get got please tell know want need long often soon happen happens expect possible able way ways
still ever"""
STOP = frozenset(_STOP_WORDS.split())


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """One sentence of an answer: its text without the citation markers, the chunk ids it
    cites, the verdict, and the measures behind it (``lexical``: share of its content words in
    the cited chunks; ``similarity``: embedding similarity to the closest cited sentence;
    ``relevance``: how well it addresses the best-matching question). ``reason`` says why an
    unsupported claim failed (``no citation``, ``unknown chunk id: ...``, ``number not in the
    cited chunks: ...``, ``not supported by the cited chunks``, ``off topic``, or the
    judge's words)."""

    text: str
    citations: tuple[str, ...]
    supported: bool
    lexical: float = 0.0
    similarity: float = 0.0
    relevance: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Verification:
    """Every claim's verdict, and the (sub-)questions no supported claim addresses."""

    claims: tuple[Claim, ...]
    gaps: tuple[str, ...] = ()

    @property
    def supported(self) -> tuple[Claim, ...]:
        return tuple(c for c in self.claims if c.supported)

    @property
    def unsupported(self) -> tuple[Claim, ...]:
        return tuple(c for c in self.claims if not c.supported)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Verification:
        """Back from the plain data a journaled step recorded."""
        claims = tuple(Claim(**{**c, "citations": tuple(c["citations"])})
                       for c in data["claims"])
        return cls(claims=claims, gaps=tuple(data.get("gaps", ())))


def split_claims(answer: str) -> list[tuple[str, tuple[str, ...]]]:
    """The answer's sentences, each with the chunk ids it cites (in order, no repeats). A
    citation standing alone after a sentence ("... done. [a#1]") belongs to that sentence.
    Bracketed text that is not an id stays in the text: an id is a token without spaces, or
    anything with a ``#`` (a :class:`~keel.patterns.Corpus` chunk id ``doc#hash``, whose
    document id may hold spaces). Lines are sentences of their own, without their list
    markers ("- ", "* ", "1. "), so a bulleted answer is checked bullet by bullet."""
    pieces: list[str] = []
    for line in answer.splitlines():
        line = _BULLET.sub("", line.strip())
        pieces += [p.strip() for p in _SENTENCE_END.split(line) if p.strip()]
    out: list[tuple[str, tuple[str, ...]]] = []
    for piece in pieces:
        ids, text = _citations(piece)
        if not text and out:  # only citations: they belong to the sentence before
            prev_text, prev_ids = out[-1]
            out[-1] = (prev_text, tuple(dict.fromkeys((*prev_ids, *ids))))
        elif text or ids:
            out.append((text, ids))
    return out


def _citations(sentence: str) -> tuple[tuple[str, ...], str]:
    ids: list[str] = []

    def take(match: re.Match[str]) -> str:
        inside = match.group(1).strip()
        parts = [p.strip() for p in re.split(r"[,;]", inside)]
        if all(_is_id(p) for p in parts):
            ids.extend(parts)
        elif "#" in inside:  # one id with a comma in its document id
            ids.append(inside)
        else:
            return match.group(0)
        return ""

    text = _CITE.sub(take, sentence)
    text = re.sub(r"\s+([.,;:!?])", r"\1", re.sub(r"\s{2,}", " ", text)).strip()
    return tuple(dict.fromkeys(ids)), text


def _is_id(part: str) -> bool:
    return bool(_ID.match(part)) or ("#" in part and part == part.strip() and bool(part))


def words(text: str) -> list[str]:
    """Content words: lower case, stop words dropped, a light stemming (plural ``s``,
    ``ing``/``ed`` endings) so that "deleted"/"delete" and "events"/"event" match."""
    out = []
    for w in _WORD.findall(text.lower()):
        if w in STOP:
            continue
        if not _NUMBER.match(w):
            w = _stem(w)
        out.append(w)
    return out


def _stem(w: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(w) > len(suffix) + 3 and w.endswith(suffix):
            return w[: -len(suffix)]
    return w


def numbers(text: str) -> set[str]:
    return {w.replace(",", "") for w in _WORD.findall(text.lower()) if _NUMBER.match(w)}


def names(text: str) -> list[str]:
    """Capitalised words that do not start the sentence: names of products, places, people
    (a claim about "Projects" is not supported by a chunk about "Forms")."""
    found = re.findall(r"(?<![.!?]\s)(?<!^)\b([A-Z][A-Za-z0-9]+)", text.strip())
    return list(dict.fromkeys(w for w in found if w.lower() not in STOP))


def _sentences(text: str) -> list[str]:
    return [s for s in (p.strip() for p in re.split(r"(?<=[.!?])\s+|\n+", text)) if s]


@dataclass(frozen=True, slots=True, kw_only=True)
class Verifier:
    """Checks an answer's claims against the chunks they cite (see the module doc for the
    rules). Thresholds are shares in [0, 1]; the defaults were chosen on keel's labelled
    RAG set (docs/patterns/rag.md shows the figures). ``embedder=None`` checks words only."""

    embedder: Embedder | None = None
    min_lexical: float = 0.75
    min_lexical_paraphrase: float = 0.4
    min_similarity: float = 0.8
    min_relevance: float = 0.4
    weights: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        for name in ("min_lexical", "min_lexical_paraphrase", "min_similarity",
                     "min_relevance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    0.0 <= value <= 1.0):
                raise ConfigError(f"Verifier.{name}", f"must be a number in [0, 1], got "
                                  f"{value!r}")
        if self.weights is not None and not isinstance(self.weights, Mapping):
            raise ConfigError("Verifier.weights", "expected a mapping of word to weight "
                              "(term_weights(texts) makes one)")
        if self.embedder is not None and not hasattr(self.embedder, "embed"):
            raise ConfigError("Verifier.embedder", "expected an Embedder (embed(texts))")

    def verify(self, answer: str, chunks: Mapping[str, str],
               questions: Sequence[str]) -> Verification:
        """Verdicts on every claim of ``answer``. ``chunks``: the text of every cited chunk
        id that exists (an id missing here is unknown). ``questions``: the question and its
        sub-questions, for the relevance check and the gaps."""
        if not isinstance(answer, str):
            raise UserError(f"the answer must be a string, got {type(answer).__name__}")
        if not isinstance(chunks, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in chunks.items()):
            raise UserError("chunks must map chunk ids to their text (str to str)")
        if isinstance(questions, str) or not all(isinstance(q, str) for q in questions):
            raise UserError("questions must be a list of strings (the question and its "
                            "sub-questions)")
        claims = [self._claim(text, ids, chunks, questions)
                  for text, ids in split_claims(answer)]
        return Verification(claims=tuple(claims), gaps=self.gaps(claims, questions))

    def gaps(self, claims: Sequence[Claim], questions: Sequence[str]) -> tuple[str, ...]:
        """The questions that no supported claim addresses (all of them when there is only
        one question and nothing supported)."""
        good = [c for c in claims if c.supported]
        return tuple(q for q in questions
                     if not any(self.relevance(q, c.text) >= self.min_relevance
                                for c in good))

    def _coverage(self, part: Sequence[str], whole: set[str]) -> float:
        """The (weighted, when :attr:`weights` are set) share of ``part``'s distinct words
        found in ``whole``; 1.0 for no words."""
        distinct = set(part)
        if not distinct:
            return 1.0
        if self.weights is None:
            return len(distinct & whole) / len(distinct)
        top = max(self.weights.values(), default=1.0)
        w = {word: self.weights.get(word, top) for word in distinct}
        return sum(w[x] for x in distinct & whole) / sum(w.values())

    def relevance(self, question: str, claim: str) -> float:
        """How well ``claim`` addresses ``question`` (see the module doc)."""
        lexical = self._coverage(words(question), set(words(claim)))
        if self.weights is not None or self.embedder is None:
            return round(lexical, 4)
        return round((lexical + max(self._similarity(question, [claim]), 0.0)) / 2, 4)

    def _claim(self, text: str, ids: tuple[str, ...], chunks: Mapping[str, str],
               questions: Sequence[str]) -> Claim:
        if not ids:
            return Claim(text=text, citations=ids, supported=False, reason="no citation")
        unknown = [i for i in ids if i not in chunks]
        if unknown:
            return Claim(text=text, citations=ids, supported=False,
                         reason=f"unknown chunk id: {', '.join(unknown)}")
        evidence = " ".join(chunks[i] for i in ids)
        missing = sorted(numbers(text) - numbers(evidence))
        if missing:
            return Claim(text=text, citations=ids, supported=False,
                         reason=f"number not in the cited chunks: {', '.join(missing)}")
        known = set(_WORD.findall(evidence.lower()))
        unnamed = [n for n in names(text) if n.lower() not in known]
        if unnamed:
            return Claim(text=text, citations=ids, supported=False,
                         reason=f"name not in the cited chunks: {', '.join(unnamed)}")
        lexical = round(self._coverage(words(text), set(words(evidence))), 4)
        similarity = 0.0
        ok = lexical >= self.min_lexical
        if not ok and lexical >= self.min_lexical_paraphrase and self.embedder is not None:
            similarity = round(self._similarity(text, _sentences(evidence)), 4)
            ok = similarity >= self.min_similarity
        if not ok:
            return Claim(text=text, citations=ids, supported=False, lexical=lexical,
                         similarity=similarity, reason="not supported by the cited chunks")
        relevance = max((self.relevance(q, text) for q in questions), default=1.0)
        if relevance < self.min_relevance:
            return Claim(text=text, citations=ids, supported=False, lexical=lexical,
                         similarity=similarity, relevance=relevance, reason="off topic")
        return Claim(text=text, citations=ids, supported=True, lexical=lexical,
                     similarity=similarity, relevance=relevance)

    def _similarity(self, text: str, others: Sequence[str]) -> float:
        """The highest cosine similarity of ``text`` to any of ``others`` (0 for none)."""
        if not others or self.embedder is None:
            return 0.0
        rows = normalised(embed_checked(self.embedder, [text, *others]))
        return float(np.max(rows[1:] @ rows[0]))


def term_weights(texts: Iterable[str]) -> dict[str, float]:
    """Inverse document frequencies of the content words of ``texts`` (one text per chunk):
    ``log((n + 1) / (df + 1)) + 1``; a word in no text gets the highest weight."""
    df: Counter[str] = Counter()
    n = 0
    for text in texts:
        n += 1
        df.update(set(words(text)))
    return {w: math.log((n + 1) / (c + 1)) + 1.0 for w, c in df.items()}
