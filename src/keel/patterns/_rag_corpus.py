"""The :class:`Corpus`: documents chunked, embedded and indexed in SQLite, searched by BM25,
embeddings or both (docs/patterns/rag.md, "Corpus and retrieval")."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from keel.context import Tokenizer, get_tokenizer
from keel.core import ConfigError, UserError
from keel.patterns._embed import Embedder, WordLlamaEmbedder, embed_checked
from keel.patterns._rag_chunk import Chunk, chunk_document, index_text
from keel.patterns._rag_index import CorpusError, IndexStorage
from keel.patterns._rag_ingest import DEFAULT_MAX_DOCUMENT_BYTES, Document, DocumentError
from keel.patterns._rag_search import (
    FusedReranker,
    Hit,
    Reranker,
    SearchIndex,
    fresh,
    words,
)

__all__ = ["ChunkNotFound", "Corpus", "IndexReport", "SearchMode"]

SearchMode = Literal["hybrid", "bm25", "embedding"]
MODES: Final = ("hybrid", "bm25", "embedding")
MAX_K: Final = 1000
_EMBED_BATCH: Final = 256
Vectors = npt.NDArray[np.float32]


class ChunkNotFound(CorpusError, KeyError):
    """No chunk with that id in the corpus (a KeyError too)."""

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, kw_only=True)
class IndexReport:
    """What :meth:`Corpus.add` or :meth:`Corpus.remove` did, by document id;
    ``chunks_embedded`` counts the chunks whose text was new and had to be embedded."""

    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    chunks_embedded: int = 0


def _name(embedder: Embedder) -> str:
    name = getattr(embedder, "name", None)
    if isinstance(name, str) and name:
        return name
    if type(embedder).__repr__ is not object.__repr__:
        return repr(embedder)
    return f"{type(embedder).__module__}.{type(embedder).__qualname__}"


def _positive(name: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(name, f"must be an integer of at least {low}, not {value!r}")
    return value


class Corpus:
    """A searchable set of documents. ``path`` is the SQLite file of the index (created if
    missing; ``None`` keeps it in memory); ``embedder`` defaults to WordLlama (offline).

    Documents are cut into chunks of about ``chunk_tokens`` tokens (counted with
    ``tokenizer``, keel's estimate by default), consecutive chunks of a section sharing
    about ``overlap_tokens``. :meth:`add` is incremental: an unchanged document is skipped,
    a changed one is re-chunked, and only chunks with new text are embedded.

    Methods are synchronous (CPU-bound; call them from a plain ``def`` tool, which runs in a
    thread). Searches may run from many threads at once; writes are serialised."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 embedder: Embedder | None = None, chunk_tokens: int = 256,
                 overlap_tokens: int = 32, tokenizer: str | Tokenizer = "estimate",
                 reranker: Reranker | None = None, candidates: int = 50,
                 min_similarity: float = 0.2,
                 max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
                 max_query_chars: int = 4000) -> None:
        self.chunk_tokens = _positive("chunk_tokens", chunk_tokens, 16)
        self.overlap_tokens = _positive("overlap_tokens", overlap_tokens, 0)
        if overlap_tokens >= chunk_tokens // 2:
            raise ConfigError("overlap_tokens", f"{overlap_tokens} must be less than half "
                              f"of chunk_tokens ({chunk_tokens})")
        self.candidates = _positive("candidates", candidates)
        self.max_document_bytes = _positive("max_document_bytes", max_document_bytes)
        self.max_query_chars = _positive("max_query_chars", max_query_chars)
        if not isinstance(min_similarity, int | float) or not -1.0 <= min_similarity < 1.0:
            raise ConfigError("min_similarity", f"must be in [-1, 1), not {min_similarity!r}")
        self.min_similarity = float(min_similarity)
        if embedder is not None and not isinstance(embedder, Embedder):
            raise ConfigError("embedder", f"{embedder!r} has no embed(texts) method")
        if reranker is not None and not isinstance(reranker, Reranker):
            raise ConfigError("reranker", f"{reranker!r} has no rerank(query, hits) method")
        self.embedder: Embedder = embedder if embedder is not None else WordLlamaEmbedder()
        self.reranker: Reranker | None = reranker if reranker is not None else FusedReranker()
        self.tokenizer = get_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        self._write = threading.Lock()
        self._storage = IndexStorage(path)
        self._closed = False
        self._checked = 0  # the width the embedder was checked at against the index's
        self._terms: dict[str, list[str]] = {}
        self._generation = self._storage.generation()  # read first: a later write reloads
        self._index = self._build(*self._storage.load(self._stored_dim()))

    # -- the embedder against the index ---------------------------------------------------

    def _stored_dim(self) -> int | None:
        dim = self._storage.meta("dimension")
        try:
            return None if dim is None else int(dim)
        except ValueError as exc:
            raise CorpusError(f"{self._storage.where}: the stored dimension {dim!r} is "
                              "damaged; delete the file and re-index") from exc

    def _embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts``, checking the width (and on first use the embedder's name)
        against the index's."""
        out = embed_checked(self.embedder, texts)
        if self._checked == int(out.shape[1]):  # checked before: no look-up in the file
            return out
        dim, stored = int(out.shape[1]), self._stored_dim()
        name, stored_name = _name(self.embedder), self._storage.meta("embedder")
        if stored is None or (not len(self._index) and not self._checked):
            self._storage.set_meta("dimension", str(dim))
            self._storage.set_meta("embedder", name)
        elif dim != stored or (not self._checked and stored_name not in (None, name)):
            raise CorpusError(
                f"the corpus index {self._storage.where} was embedded by {stored_name} "
                f"({stored} dimensions) but the embedder now is {name} ({dim} "
                "dimensions); re-index: call rebuild(), or delete the file and add the "
                "documents again, or pass the embedder it was built with")
        self._checked = dim
        return out

    def _build(self, chunks: Sequence[Chunk], vectors: Vectors) -> SearchIndex:
        terms = []
        for chunk in chunks:
            cached = self._terms.get(chunk.id)
            if cached is None:
                cached = self._terms[chunk.id] = words(index_text(chunk))
            terms.append(cached)
        live = {c.id for c in chunks}
        for stale in [cid for cid in self._terms if cid not in live]:
            del self._terms[stale]
        return SearchIndex(chunks, terms, vectors)

    # -- writing --------------------------------------------------------------------------

    def _fingerprint(self, doc: Document) -> str:
        key = [doc.text, doc.title, doc.kind, doc.source, sorted(doc.metadata.items()),
               self.chunk_tokens, self.overlap_tokens, repr(self.tokenizer)]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()

    def _chunks(self, doc: Document) -> list[Chunk]:
        size = len(doc.text.encode("utf-8", errors="surrogatepass"))
        if size > self.max_document_bytes:
            raise DocumentError(f"document {doc.id!r} has {size} bytes, more than the "
                                f"maximum of {self.max_document_bytes} (raise "
                                "max_document_bytes, or split the document)", source=doc.id)
        chunks = chunk_document(doc, chunk_tokens=self.chunk_tokens,
                                overlap_tokens=self.overlap_tokens, count=self.tokenizer.count)
        if not chunks:
            raise DocumentError(f"document {doc.id!r} has no text; remove() it instead",
                                source=doc.id)
        return chunks

    def add(self, documents: Iterable[Document]) -> IndexReport:
        """Index ``documents`` (new or changed ones; an unchanged one is left as it is).
        All or nothing: a bad document raises :class:`DocumentError` before anything is
        written."""
        if isinstance(documents, Document):
            documents = [documents]
        docs = list(documents)
        for doc in docs:
            if not isinstance(doc, Document):
                raise UserError(f"Corpus.add takes Documents, got {type(doc).__name__}")
        ids = [d.id for d in docs]
        if len(set(ids)) != len(ids):
            raise UserError("Corpus.add got the same document id twice: "
                            f"{sorted({i for i in ids if ids.count(i) > 1})}")
        with self._write:
            self._check_open()
            self._catch_up()
            stored = self._storage.documents()
            todo = [(d, self._fingerprint(d)) for d in docs]
            changed = [(d, fp, self._chunks(d)) for d, fp in todo
                       if d.id not in stored or stored[d.id].fingerprint != fp]
            embedded = self._store(changed, ())
        written = {d.id for d, _, _ in changed}
        unchanged = tuple(d.id for d, _ in todo if d.id not in written)
        return IndexReport(added=tuple(d.id for d, _, _ in changed if d.id not in stored),
                           updated=tuple(d.id for d, _, _ in changed if d.id in stored),
                           unchanged=unchanged, chunks_embedded=embedded)

    def _store(self, changed: Sequence[tuple[Document, str, Sequence[Chunk]]],
               removed: Sequence[str]) -> int:
        """Write ``changed`` documents (embedding their new chunks) and delete ``removed``;
        the number of chunks embedded."""
        if not changed and not removed:
            return 0
        dim = self._stored_dim()
        known = ({} if dim is None else
                 self._storage.vectors_of([d.id for d, _, _ in changed], dim))
        new = [c for _, _, chunks in changed for c in chunks if c.id not in known]
        vectors = dict(known)
        for start in range(0, len(new), _EMBED_BATCH):
            batch = new[start:start + _EMBED_BATCH]
            for chunk, row in zip(batch, self._embed([index_text(c) for c in batch]),
                                  strict=True):
                vectors[chunk.id] = row
        before = self._storage.write(changed, vectors, removed)
        if before == self._generation:
            self._index = self._rebuilt(changed, vectors, removed)
        else:  # another process wrote since this one last read the file
            self._index = self._build(*self._storage.load(self._stored_dim()))
        self._generation = before + 1
        return len(new)

    def _catch_up(self) -> None:
        """Reload the index if the file changed behind this object (the write lock held)."""
        generation = self._storage.generation()
        if generation != self._generation:
            self._generation = generation
            self._index = self._build(*self._storage.load(self._stored_dim()))

    def refresh(self) -> bool:
        """Reload the index if another process (or another Corpus on the same file) changed
        it since this one last read or wrote it; whether it did. ``add``, ``remove`` and
        ``rebuild`` do this themselves; searches read this object's snapshot."""
        with self._write:
            self._check_open()
            before = self._generation
            self._catch_up()
            return self._generation != before

    def _rebuilt(self, changed: Sequence[tuple[Document, str, Sequence[Chunk]]],
                 vectors: dict[str, Vectors], removed: Sequence[str]) -> SearchIndex:
        """The search index after a write, from the current one and the written chunks (in
        the order :meth:`IndexStorage.load` gives, so a reopened corpus ranks alike)."""
        touched = {*removed, *(d.id for d, _, _ in changed)}
        old = self._index
        keep = [row for row, c in enumerate(old.chunks) if c.doc_id not in touched]
        rows = [(c, old.matrix[row]) for row in keep for c in (old.chunks[row],)]
        rows += [(c, vectors[c.id]) for _, _, chunks in changed for c in chunks]
        rows.sort(key=lambda item: (item[0].doc_id, item[0].position))
        dim = self._stored_dim() or 0
        matrix = (np.vstack([v for _, v in rows]).astype(np.float32, copy=False) if rows
                  else np.zeros((0, dim), dtype=np.float32))
        return self._build([c for c, _ in rows], matrix)

    def remove(self, doc_ids: Iterable[str]) -> IndexReport:
        """Delete the documents ``doc_ids`` and their chunks; ids not in the corpus are
        ignored (the report lists what was removed)."""
        ids = [doc_ids] if isinstance(doc_ids, str) else list(doc_ids)
        for doc_id in ids:
            if not isinstance(doc_id, str):
                raise UserError(f"Corpus.remove takes document ids, got {type(doc_id).__name__}")
        with self._write:
            self._check_open()
            self._catch_up()
            stored = self._storage.documents()
            removed = tuple(dict.fromkeys(i for i in ids if i in stored))
            self._store((), removed)
        return IndexReport(removed=removed)

    def rebuild(self) -> int:
        """Re-embed every chunk with the current embedder (after changing embedders or
        dimensions); returns the number of chunks embedded."""
        with self._write:
            self._check_open()
            self._catch_up()
            chunks = list(self._index.chunks)
            if not chunks:
                return 0
            vectors = embed_checked(self.embedder, [index_text(c) for c in chunks])
            self._storage.set_meta("dimension", str(int(vectors.shape[1])))
            self._storage.set_meta("embedder", _name(self.embedder))
            self._storage.rewrite_vectors({c.id: v for c, v in zip(chunks, vectors,
                                                                   strict=True)})
            self._checked = int(vectors.shape[1])
            self._generation = self._storage.generation()
            self._index = self._build(*self._storage.load(self._stored_dim()))
            return len(chunks)

    # -- reading --------------------------------------------------------------------------

    def search(self, query: str, *, k: int = 5, mode: SearchMode = "hybrid") -> list[Hit]:
        """The ``k`` chunks that best match ``query``, best first; an empty list when
        nothing matches. ``mode``: ``hybrid`` (BM25 and embeddings fused, then re-ranked),
        ``bm25`` or ``embedding``. An empty or oversized query is a :class:`UserError`."""
        if not isinstance(query, str):
            raise UserError(f"a search query must be a string, not {type(query).__name__}")
        if not query.strip():
            raise UserError("the search query is empty; ask for something")
        if len(query) > self.max_query_chars:
            raise UserError(f"the search query has {len(query)} characters, more than "
                            f"max_query_chars={self.max_query_chars}; search for the "
                            "question's key terms instead")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise UserError(f"k must be an integer from 1 to {MAX_K}, not {k!r}")
        if mode not in MODES:
            raise UserError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self._check_open()
        index = self._index
        if not len(index):
            return []
        vector = None if mode == "bm25" else self._embed([query])[0]
        return index.search(query, vector, k=k, mode=mode, depth=max(k, self.candidates),
                            min_similarity=self.min_similarity, reranker=self.reranker)

    def get(self, chunk_id: str) -> Chunk:
        """The chunk with id ``chunk_id``; :class:`ChunkNotFound` (a KeyError) if none."""
        if not isinstance(chunk_id, str):
            raise UserError(f"a chunk id is a string, not {type(chunk_id).__name__}")
        chunk = self._index.by_id.get(chunk_id)
        if chunk is None:
            shown = chunk_id if len(chunk_id) <= 80 else chunk_id[:80] + "..."
            raise ChunkNotFound(f"no chunk {shown!r} in the corpus (chunk ids look like "
                                "'doc-id#0123456789ab'; a changed document has new ids)")
        return fresh(chunk)

    def chunks(self, doc_id: str | None = None) -> list[Chunk]:
        """Every chunk (of the document ``doc_id`` if given), in document and position order."""
        return [fresh(c) for c in self._index.chunks if doc_id is None or c.doc_id == doc_id]

    def documents(self) -> list[str]:
        """The ids of the documents in the corpus, sorted."""
        self._check_open()
        return sorted(self._storage.documents())

    def __len__(self) -> int:
        """The number of chunks."""
        return len(self._index)

    # -- lifetime -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise UserError("the corpus is closed; open a new Corpus on its path")

    def close(self) -> None:
        """Close the index file (idempotent)."""
        with self._write:
            if not self._closed:
                self._closed = True
                self._storage.close()

    def __enter__(self) -> Corpus:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Corpus {self._storage.where} chunks={len(self._index)} "
                f"embedder={_name(self.embedder)}>")
