"""Searching a corpus: BM25 (``bm25s``, over stemmed words without English stop words) and
cosine similarity of embeddings, fused by reciprocal rank fusion and then re-ranked.

Hybrid search takes the best ``depth`` chunks of each ranking, scores the union by RRF
(``sum 1 / (60 + rank)``), and hands it to the :class:`Reranker`; the default,
:class:`FusedReranker`, orders by a fused lexical-semantic score (BM25 scaled by the best
candidate's, and the cosine, weighted half and half). An LLM or cross-encoder reranker plugs
in at the same seam."""

from __future__ import annotations

import dataclasses
import importlib
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from keel.core import ConfigError, UserError
from keel.patterns._rag_chunk import Chunk

__all__ = ["FusedReranker", "Hit", "Reranker", "SearchIndex", "fresh", "rrf", "words"]

Vectors = npt.NDArray[np.float32]
RRF_K: Final = 60
_WORD: Final = re.compile(r"\w+", re.UNICODE)
_STOP_WORDS: Final = (
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with i me my we our you your he she him her its "
    "do does did has have had am been being what which who whom how")
_STOP: Final = frozenset(_STOP_WORDS.split())
STEM_CACHE_MAX = 500_000
_stemmer_lock = threading.Lock()
_stems: dict[str, str] = {}


def _required(module: str) -> Any:
    """An optional package of the ``rag`` extra, or a UserError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"BM25 search needs {module} from the 'rag' extra: pip install "
                        "'keel-agents[rag]'") from exc


def _stemmer() -> Any:
    return _required("Stemmer").Stemmer("english")


def words(text: str) -> list[str]:
    """The BM25 terms of ``text``: lower-cased words, English stop words dropped, stemmed
    (Snowball English, through PyStemmer)."""
    tokens = _WORD.findall(text.lower())
    stems = _stems
    missing = list(set(tokens).difference(stems))
    if missing:
        with _stemmer_lock:
            stemmed = _stemmer().stemWords(missing)
            if len(_stems) > STEM_CACHE_MAX:  # hostile text must not grow it without bound
                _stems.clear()
            _stems.update((w, "" if w in _STOP else s)
                          for w, s in zip(missing, stemmed, strict=True))
    return [s for w in tokens if (s := stems.get(w, w))]


@dataclass(frozen=True, kw_only=True)
class Hit:
    """One search result: the chunk, the score that ordered the results, and the scores it
    came from (``bm25``, ``embedding`` cosine, ``rrf``, ``fused``, as the mode computed)."""

    chunk: Chunk
    score: float
    scores: Mapping[str, float]


@runtime_checkable
class Reranker(Protocol):
    """Re-orders hybrid search's candidates (more than ``k``; best first afterwards). It may
    drop candidates and must return hits of the given chunks."""

    def rerank(self, query: str, hits: Sequence[Hit]) -> Sequence[Hit]: ...


class FusedReranker:
    """The default reranker (no offline cross-encoder ships with a package): each candidate's
    ``fused`` score is ``lexical_weight * bm25 / best bm25 among the candidates +
    (1 - lexical_weight) * max(cosine, 0)``."""

    def __init__(self, *, lexical_weight: float = 0.5) -> None:
        if not isinstance(lexical_weight, int | float) or not 0.0 <= lexical_weight <= 1.0:
            raise ConfigError("lexical_weight", f"must be between 0 and 1, not "
                              f"{lexical_weight!r}")
        self.lexical_weight = float(lexical_weight)

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        best = max((h.scores.get("bm25", 0.0) for h in hits), default=0.0) or 1.0
        w = self.lexical_weight
        out = []
        for hit in hits:
            fused = (w * hit.scores.get("bm25", 0.0) / best
                     + (1 - w) * max(hit.scores.get("embedding", 0.0), 0.0))
            out.append(Hit(chunk=hit.chunk, score=fused, scores={**hit.scores, "fused": fused}))
        return sorted(out, key=lambda h: -h.score)

    def __repr__(self) -> str:
        return f"FusedReranker(lexical_weight={self.lexical_weight})"


def fresh(chunk: Chunk) -> Chunk:
    """``chunk`` with a metadata dict of its own."""
    return dataclasses.replace(chunk, metadata=dict(chunk.metadata))


def rrf(rankings: Sequence[Sequence[int]]) -> dict[int, float]:
    """Reciprocal rank fusion of rankings (row numbers, best first)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, row in enumerate(ranking):
            fused[row] = fused.get(row, 0.0) + 1.0 / (RRF_K + rank + 1)
    return fused


def _top(scores: npt.NDArray[np.float32], depth: int, floor: float) -> list[int]:
    """Rows of the ``depth`` best scores above ``floor``, best first (ties by row)."""
    eligible = np.flatnonzero(scores > floor)
    if eligible.size > depth:
        part = np.argpartition(-scores[eligible], depth - 1)[:depth]
        eligible = eligible[part]
    order = np.lexsort((eligible, -scores[eligible]))
    return [int(row) for row in eligible[order]]


class SearchIndex:
    """An immutable, searchable snapshot of a corpus: its chunks, BM25 over their index
    texts (built on the first lexical search), and their unit-length vectors. Built once per
    change; read by many threads."""

    def __init__(self, chunks: Sequence[Chunk], terms: Sequence[list[str]],
                 vectors: Vectors) -> None:
        self.chunks = tuple(chunks)
        self.by_id = {c.id: c for c in self.chunks}
        norms = np.linalg.norm(vectors, axis=1, keepdims=True) if len(vectors) else vectors
        self.matrix: Vectors = (vectors / np.where(norms == 0, 1.0, norms)).astype(
            np.float32) if len(vectors) else vectors
        self._terms = terms
        self._bm25: Any = None
        self._building = threading.Lock()

    def _bm25_index(self) -> Any:
        """BM25 over the chunks, built on first use (so a run of adds builds it once)."""
        if self._bm25 is None:
            with self._building:
                if self._bm25 is None:
                    bm25 = _required("bm25s").BM25()
                    bm25.index([t or [""] for t in self._terms], show_progress=False)
                    self._bm25 = bm25
        return self._bm25

    def __len__(self) -> int:
        return len(self.chunks)

    def chunk(self, row: int) -> Chunk:
        """A copy of the chunk at ``row`` that the caller may change without touching the
        index (its metadata is a fresh dict)."""
        return fresh(self.chunks[row])

    def lexical(self, query: str) -> npt.NDArray[np.float32]:
        terms = words(query)
        if not terms or not self.chunks:
            return np.zeros(len(self.chunks), dtype=np.float32)
        return np.asarray(self._bm25_index().get_scores(terms), dtype=np.float32)

    def semantic(self, vector: Vectors) -> npt.NDArray[np.float32]:
        norm = float(np.linalg.norm(vector))
        if norm == 0.0 or not self.chunks:
            return np.zeros(len(self.chunks), dtype=np.float32)
        out: npt.NDArray[np.float32] = self.matrix @ (vector / norm).astype(np.float32)
        return out

    def search(self, query: str, vector: Vectors | None, *, k: int, mode: str, depth: int,
               min_similarity: float, reranker: Reranker | None) -> list[Hit]:
        """The ``k`` best hits for ``query`` (and its embedding ``vector``) in ``mode``."""
        if mode == "bm25":
            lexical = self.lexical(query)
            return [Hit(chunk=self.chunk(r), score=float(lexical[r]),
                        scores={"bm25": float(lexical[r])}) for r in _top(lexical, k, 0.0)]
        assert vector is not None
        semantic = self.semantic(vector)
        if mode == "embedding":
            return [Hit(chunk=self.chunk(r), score=float(semantic[r]),
                        scores={"embedding": float(semantic[r])})
                    for r in _top(semantic, k, min_similarity)]
        lexical = self.lexical(query)
        pool = rrf([_top(lexical, depth, 0.0), _top(semantic, depth, min_similarity)])
        hits = [Hit(chunk=self.chunks[r], score=fused,
                    scores={"bm25": float(lexical[r]), "embedding": float(semantic[r]),
                            "rrf": fused})
                for r, fused in sorted(pool.items(), key=lambda item: (-item[1], item[0]))]
        if reranker is not None and hits:
            hits = _reranked(reranker, query, hits)
        return [dataclasses.replace(h, chunk=fresh(h.chunk)) for h in hits[:k]]


def _reranked(reranker: Reranker, query: str, hits: list[Hit]) -> list[Hit]:
    out = list(reranker.rerank(query, hits))
    known = {h.chunk.id for h in hits}
    if not all(isinstance(h, Hit) and h.chunk.id in known for h in out):
        raise UserError(f"reranker {reranker!r} returned something other than hits of the "
                        "candidates it was given")
    return out
