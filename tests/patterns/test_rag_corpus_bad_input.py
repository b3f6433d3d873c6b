"""Bad input to the corpus: each gets a clear error or a documented fallback, never a crash
or a silently wrong index."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from keel.core import ConfigError, UserError
from keel.patterns import (
    ChunkNotFound,
    Corpus,
    CorpusError,
    Document,
    DocumentError,
    FusedReranker,
    load_document,
    load_documents,
)
from keel.patterns._rag_chunk import chunk_document
from tests.patterns.rag_helpers import HashEmbedder, make_pdf


@pytest.fixture
def corpus() -> Corpus:
    c = Corpus(embedder=HashEmbedder())
    c.add([Document(id="a", text="Refunds take five days."),
           Document(id="b", text="Shipping is free over fifty euros.")])
    return c


# -- files ------------------------------------------------------------------------------------

def test_corrupt_pdf(tmp_path: Path) -> None:
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.4\nthis is not really a pdf\n%%EOF")
    with pytest.raises(DocumentError, match="not a readable PDF") as info:
        load_document(path)
    assert info.value.source == str(path)
    truncated = tmp_path / "cut.pdf"
    truncated.write_bytes(make_pdf(["Some text here."])[:200])
    with pytest.raises(DocumentError, match=r"cut\.pdf"):
        load_document(truncated)


def test_pdf_without_text_is_an_empty_document(tmp_path: Path) -> None:
    path = tmp_path / "scan.pdf"
    path.write_bytes(make_pdf([""]))
    with pytest.raises(DocumentError, match="no text"):
        load_document(path)


def test_empty_and_blank_files(tmp_path: Path) -> None:
    for name, content in (("empty.md", ""), ("blank.txt", " \n\n\t\n"),
                          ("bare.html", "<html><script>x()</script></html>")):
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(DocumentError, match="no text"):
            load_document(path)


def test_unsupported_suffix_binary_and_missing_files(tmp_path: Path) -> None:
    doc = tmp_path / "report.docx"
    doc.write_bytes(b"PK\x03\x04")
    with pytest.raises(DocumentError, match=r"unsupported suffix '\.docx'"):
        load_document(doc)
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x89PNG\x00\x00\x00")
    with pytest.raises(DocumentError, match="binary"):
        load_document(binary)
    with pytest.raises(DocumentError, match="cannot be read"):
        load_document(tmp_path / "missing.md")


def test_file_too_large(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("word " * 1000)
    with pytest.raises(DocumentError, match="5000 bytes is more than the maximum of 100"):
        load_document(path, max_bytes=100)
    assert load_document(path, max_bytes=5000).id == "big"


def test_load_documents_raises_or_skips(tmp_path: Path) -> None:
    (tmp_path / "good.md").write_text("# Good\n\ntext\n")
    (tmp_path / "bad.pdf").write_bytes(b"junk")
    with pytest.raises(DocumentError, match=r"bad\.pdf"):
        load_documents(tmp_path)
    assert [d.id for d in load_documents(tmp_path, errors="skip")] == ["good"]
    with pytest.raises(UserError, match="errors must be"):
        load_documents(tmp_path, errors="ignore")  # type: ignore[arg-type]


def test_two_files_with_one_id(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "faq.md").write_text("one")
    (tmp_path / "b" / "faq.md").write_text("two")
    with pytest.raises(UserError, match="both have the document id 'faq'"):
        load_documents([tmp_path / "a" / "faq.md", tmp_path / "b" / "faq.md"])


# -- documents --------------------------------------------------------------------------------

@pytest.mark.parametrize("bad_id", ["", " padded", "a#b", "x" * 257, "new\nline", "nul\x00",
                                    "rtl\u202eevil", 42, None])
def test_hostile_document_ids(bad_id: Any) -> None:
    with pytest.raises(UserError):
        Document(id=bad_id, text="text")


def test_odd_but_valid_ids_round_trip(tmp_path: Path) -> None:
    ids = ["../../etc/passwd", "'; DROP TABLE rag_chunks; --", "日本語/ページ", "a" * 256,
           "%s %d {0}"]
    with Corpus(tmp_path / "c.db", embedder=HashEmbedder()) as corpus:
        corpus.add([Document(id=i, text=f"Text of document number {n}.")
                    for n, i in enumerate(ids)])
    with Corpus(tmp_path / "c.db", embedder=HashEmbedder()) as corpus:
        assert corpus.documents() == sorted(ids)
        for doc_id in ids:
            assert corpus.get(corpus.chunks(doc_id)[0].id).doc_id == doc_id


@pytest.mark.parametrize(("field", "value"), [
    ("text", b"bytes"), ("kind", "docx"), ("title", 3), ("source", None),
    ("metadata", {"n": 1}), ("metadata", ["a"])])
def test_malformed_document_fields(field: str, value: Any) -> None:
    with pytest.raises(UserError):
        Document(id="d", **{"text": "t", field: value})


def test_empty_document_is_refused_before_anything_is_written(corpus: Corpus) -> None:
    with pytest.raises(DocumentError, match="'empty' has no text"):
        corpus.add([Document(id="c", text="A new document."), Document(id="empty", text=" \n")])
    assert corpus.documents() == ["a", "b"]


def test_document_too_large() -> None:
    corpus = Corpus(embedder=HashEmbedder(), max_document_bytes=1000)
    with pytest.raises(DocumentError, match="2000 bytes, more than the maximum of 1000"):
        corpus.add([Document(id="big", text="é" * 1000)])


def test_add_takes_documents_once(corpus: Corpus) -> None:
    with pytest.raises(UserError, match="takes Documents, got str"):
        corpus.add(["not a document"])  # type: ignore[list-item]
    with pytest.raises(UserError, match=r"same document id twice: \['a'\]"):
        corpus.add([Document(id="a", text="x"), Document(id="a", text="y")])
    assert corpus.add(Document(id="single", text="One document alone.")).added == (  # type: ignore[arg-type]
        "single",)
    with pytest.raises(UserError, match="takes document ids"):
        corpus.remove([1])  # type: ignore[list-item]


# -- queries ----------------------------------------------------------------------------------

@pytest.mark.parametrize("query", ["", "   \n\t", None, b"bytes", 12])
def test_empty_or_non_string_query(corpus: Corpus, query: Any) -> None:
    with pytest.raises(UserError, match="query"):
        corpus.search(query)


def test_oversized_query(corpus: Corpus) -> None:
    with pytest.raises(UserError, match="more than max_query_chars=4000"):
        corpus.search("refund " * 1000)
    assert corpus.search("refund " * 500)  # within the limit, still answered


@pytest.mark.parametrize("k", [0, -1, 1001, 2.5, True, "3"])
def test_bad_k(corpus: Corpus, k: Any) -> None:
    with pytest.raises(UserError, match="k must be"):
        corpus.search("refund", k=k)


def test_bad_mode(corpus: Corpus) -> None:
    with pytest.raises(UserError, match="mode must be one of hybrid, bm25, embedding"):
        corpus.search("refund", mode="sparse")  # type: ignore[arg-type]


def test_query_of_stop_words_and_symbols(corpus: Corpus) -> None:
    assert corpus.search("the and of", mode="bm25") == []
    assert corpus.search("?!.,;", mode="hybrid") == []


def test_get_unknown_or_hostile_chunk_ids(corpus: Corpus) -> None:
    with pytest.raises(ChunkNotFound, match="no chunk 'a#nope'"):
        corpus.get("a#nope")
    with pytest.raises(KeyError):
        corpus.get("x" * 10_000)
    with pytest.raises(UserError, match="chunk id is a string"):
        corpus.get(3)  # type: ignore[arg-type]


# -- configuration ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"chunk_tokens": 8}, {"chunk_tokens": True}, {"overlap_tokens": -1},
    {"chunk_tokens": 64, "overlap_tokens": 32}, {"candidates": 0}, {"max_document_bytes": 0},
    {"max_query_chars": "x"}, {"min_similarity": 1.0}, {"min_similarity": "0.2"},
    {"embedder": object()}, {"reranker": object()}])
def test_bad_configuration(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Corpus(**kwargs)


def test_bad_reranker_weight() -> None:
    with pytest.raises(ConfigError, match="lexical_weight"):
        FusedReranker(lexical_weight=1.5)


# -- the index and the embedder ---------------------------------------------------------------

def test_embedding_dimension_changed_since_indexing(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with Corpus(path, embedder=HashEmbedder(64)) as corpus:
        corpus.add([Document(id="a", text="Refunds take five days.")])
    with Corpus(path, embedder=HashEmbedder(32)) as corpus:
        assert corpus.search("refunds", mode="bm25")  # BM25 needs no embedding
        with pytest.raises(CorpusError, match=r"hash-64 \(64 dimensions\).*hash-32 \(32 "
                                              r"dimensions\); re-index"):
            corpus.search("refunds")
        with pytest.raises(CorpusError, match="re-index"):
            corpus.add([Document(id="b", text="Another document.")])
        assert corpus.documents() == ["a"]


def test_another_embedder_of_the_same_width(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with Corpus(path, embedder=HashEmbedder(64, name="one")) as corpus:
        corpus.add([Document(id="a", text="Refunds take five days.")])
    with Corpus(path, embedder=HashEmbedder(64, name="two")) as corpus, \
            pytest.raises(CorpusError, match="embedded by one-64"):
        corpus.search("refunds")


class BadEmbedder:
    def __init__(self, out: npt.NDArray[np.float32]) -> None:
        self.out = out

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return self.out


def test_embedder_returning_garbage() -> None:
    corpus = Corpus(embedder=BadEmbedder(np.zeros((5, 3), dtype=np.float32)))
    with pytest.raises(UserError, match="one row per text"):
        corpus.add([Document(id="a", text="text")])
    corpus = Corpus(embedder=BadEmbedder(np.full((1, 3), np.nan, dtype=np.float32)))
    with pytest.raises(UserError, match="non-finite"):
        corpus.add([Document(id="a", text="text")])


def test_corrupt_index_file(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(CorpusError, match=r"not a usable keel corpus index.*delete the file"):
        Corpus(path, embedder=HashEmbedder())


def test_foreign_tables_and_newer_schema(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE rag_chunks (id TEXT)")
    with pytest.raises(CorpusError, match="not a usable keel corpus index"):
        Corpus(foreign, embedder=HashEmbedder())
    newer = tmp_path / "newer.db"
    Corpus(newer, embedder=HashEmbedder()).close()
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE rag_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(CorpusError, match="schema version 99"):
        Corpus(newer, embedder=HashEmbedder())


@pytest.mark.parametrize(("sql", "match"), [
    ("UPDATE rag_chunks SET vector = x'0102'", "vector of chunk .* is damaged"),
    ("UPDATE rag_chunks SET metadata = 'not json'", "is damaged"),
    ("UPDATE rag_meta SET value = 'wide' WHERE key = 'dimension'", "dimension 'wide'"),
    ("DELETE FROM rag_meta WHERE key = 'dimension'", "no embedding dimension"),
])
def test_damaged_rows(tmp_path: Path, sql: str, match: str) -> None:
    path = tmp_path / "c.db"
    with Corpus(path, embedder=HashEmbedder()) as corpus:
        corpus.add([Document(id="a", text="Refunds take five days.")])
    with sqlite3.connect(path) as conn:
        conn.execute(sql)
    with pytest.raises(CorpusError, match=match):
        Corpus(path, embedder=HashEmbedder())


def test_unopenable_path(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(CorpusError, match="cannot open the corpus index"):
        Corpus(tmp_path / "a-file" / "c.db", embedder=HashEmbedder())
    with pytest.raises(CorpusError, match="cannot open the corpus index"):
        Corpus(tmp_path, embedder=HashEmbedder())  # a folder


def test_missing_folders_are_created(tmp_path: Path) -> None:
    with Corpus(tmp_path / "new" / "dir" / "c.db", embedder=HashEmbedder()) as corpus:
        corpus.add([Document(id="a", text="Refunds take five days.")])
    assert (tmp_path / "new" / "dir" / "c.db").is_file()


def test_closed_corpus(corpus: Corpus) -> None:
    corpus.close()
    corpus.close()
    for call in (lambda: corpus.search("refund"), corpus.documents,
                 lambda: corpus.add([Document(id="z", text="z")]), lambda: corpus.remove(["a"]),
                 corpus.rebuild):
        with pytest.raises(UserError, match="closed"):
            call()


def test_table_of_another_shape(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE rag_chunks (id TEXT, doc_id TEXT, position INTEGER)")
    with pytest.raises(CorpusError, match="rag_chunks has 3 columns, not 7"):
        Corpus(path, embedder=HashEmbedder())


def test_encrypted_pdf(tmp_path: Path) -> None:
    import pypdf

    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.encrypt("secret", algorithm="RC4-128")
    path = tmp_path / "locked.pdf"
    with path.open("wb") as out:
        writer.write(out)
    with pytest.raises(DocumentError, match="encrypted"):
        load_document(path)


def test_index_damaged_while_open(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    corpus = Corpus(path, embedder=HashEmbedder())
    corpus.add([Document(id="a", text="Refunds take five days.")])
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE rag_chunks")
    with pytest.raises(CorpusError, match=r"failed .*no such table.*re-index"):
        corpus.add([Document(id="b", text="Another document.")])
    corpus.close()


def test_a_failed_write_leaves_the_index_as_it_was() -> None:
    from keel.patterns._rag_index import IndexStorage

    storage = IndexStorage(None)
    doc = Document(id="a", text="text")
    chunk = chunk_document(doc, chunk_tokens=64, overlap_tokens=0, count=len)[0]
    with pytest.raises(KeyError):
        storage.write([(doc, "fp", [chunk])], {}, ())  # no vector for the chunk
    assert storage.documents() == {}
    with pytest.raises(ValueError, match="could not convert"):
        storage.rewrite_vectors({"a#1": "not a vector"})  # type: ignore[dict-item]
    storage.close()


def test_embedder_names() -> None:
    from keel.patterns._rag_corpus import _name

    class Plain:
        def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
            return np.ones((len(texts), 4), dtype=np.float32)

    class Shown(Plain):
        def __repr__(self) -> str:
            return "<Shown>"

    assert _name(Plain()).endswith("Plain")
    assert _name(Shown()) == "<Shown>"
    corpus = Corpus(embedder=Shown())
    corpus.add([Document(id="a", text="text")])
    assert "embedder=<Shown>" in repr(corpus)


def test_the_stem_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.patterns import _rag_search

    monkeypatch.setattr(_rag_search, "STEM_CACHE_MAX", 10)
    _rag_search.words(" ".join(f"hostile{n}" for n in range(50)))
    _rag_search.words("another fresh word")
    assert len(_rag_search._stems) <= 60
