"""The retrieval corpus: adding, incremental re-indexing with stable chunk ids, the SQLite
index across processes' reopenings, the three search modes and the reranker seam."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from keel.patterns import (
    Chunk,
    ChunkNotFound,
    Corpus,
    Document,
    FusedReranker,
    Hit,
    IndexReport,
    Reranker,
    WordLlamaEmbedder,
)
from tests.patterns.rag_helpers import HashEmbedder

REFUNDS = """# Refunds

You can get a refund within 30 days of purchase. Items must be unused and in their box.

## Card payments

Card refunds take 5 to 10 business days to appear on your statement.

## Store credit

Store credit is issued immediately and never expires.
"""
SHIPPING = ("Standard shipping takes 3 days. Express shipping arrives the next day.\n\n"
            "We ship worldwide except to a few regions listed on the customs page.")
PASSWORD = ("<html><head><title>Reset</title><script>var secret = 1;</script>"
            "<style>p {color: red}</style></head><body><h1>Password reset</h1>"
            "<p>Click <b>forgot password</b> on the login page and follow the e-mail.</p>"
            "</body></html>")


def docs() -> list[Document]:
    return [Document(id="refunds", text=REFUNDS, kind="markdown", title="Refunds",
                     metadata={"category": "billing"}),
            Document(id="shipping", text=SHIPPING, title="Shipping", source="kb/shipping.txt"),
            Document(id="password", text=PASSWORD, kind="html", title="Password reset")]


@pytest.fixture
def corpus() -> Corpus:
    c = Corpus(embedder=HashEmbedder())
    c.add(docs())
    return c


def test_add_chunks_documents_with_sections_and_metadata(corpus: Corpus) -> None:
    assert corpus.documents() == ["password", "refunds", "shipping"]
    refunds = corpus.chunks("refunds")
    assert [c.metadata["section"] for c in refunds] == [
        "Refunds", "Refunds > Card payments", "Refunds > Store credit"]
    assert [c.position for c in refunds] == [0, 1, 2]
    assert all(c.id.startswith("refunds#") and c.doc_id == "refunds" for c in refunds)
    assert refunds[1].text == "Card refunds take 5 to 10 business days to appear on your statement."
    assert refunds[0].metadata["category"] == "billing"
    assert refunds[0].metadata["kind"] == "markdown"
    shipping = corpus.chunks("shipping")
    assert shipping[0].metadata["source"] == "kb/shipping.txt"
    assert "section" not in shipping[0].metadata
    page = corpus.chunks("password")
    assert page[0].text == "Click forgot password on the login page and follow the e-mail."
    assert page[0].metadata["section"] == "Password reset"
    assert len(corpus) == 5
    assert corpus.get(refunds[1].id) == refunds[1]


@pytest.mark.parametrize("mode", ["hybrid", "bm25", "embedding"])
def test_every_mode_finds_the_passage(corpus: Corpus, mode: str) -> None:
    hits = corpus.search("card refunds business days statement", k=3, mode=mode)  # type: ignore[arg-type]
    assert hits[0].chunk.metadata["section"] == "Refunds > Card payments"
    assert all(isinstance(h, Hit) for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    expected = {"hybrid": {"bm25", "embedding", "rrf", "fused"}, "bm25": {"bm25"},
                "embedding": {"embedding"}}[mode]
    assert set(hits[0].scores) == expected


def test_hybrid_scores_are_the_fused_ones(corpus: Corpus) -> None:
    hits = corpus.search("password login page", k=5)
    best = max(h.scores["bm25"] for h in hits)
    for hit in hits:
        fused = 0.5 * hit.scores["bm25"] / best + 0.5 * max(hit.scores["embedding"], 0.0)
        assert hit.score == pytest.approx(fused)
    assert hits[0].chunk.doc_id == "password"


def test_no_match_is_an_empty_list(corpus: Corpus) -> None:
    for mode in ("hybrid", "bm25", "embedding"):
        assert corpus.search("xyzzy plugh", mode=mode) == []  # type: ignore[arg-type]
    assert Corpus(embedder=HashEmbedder()).search("refund") == []


def test_k_limits_the_hits(corpus: Corpus) -> None:
    assert len(corpus.search("refund shipping password store credit", k=2)) == 2
    assert len(corpus.search("refund shipping password store credit", k=1000)) <= 5


def test_readding_unchanged_documents_keeps_ids_and_embeds_nothing(corpus: Corpus) -> None:
    embedder = corpus.embedder
    assert isinstance(embedder, HashEmbedder)
    before = [c.id for c in corpus.chunks()]
    calls = embedder.calls
    report = corpus.add(docs())
    assert report == IndexReport(unchanged=("refunds", "shipping", "password"))
    assert [c.id for c in corpus.chunks()] == before
    assert embedder.calls == calls


def test_editing_one_section_changes_only_its_chunk(corpus: Corpus) -> None:
    embedder = corpus.embedder
    assert isinstance(embedder, HashEmbedder)
    before = {c.metadata["section"]: c.id for c in corpus.chunks("refunds")}
    calls = embedder.calls
    edited = REFUNDS.replace("5 to 10 business days", "3 to 5 business days")
    report = corpus.add([Document(id="refunds", text=edited, kind="markdown",
                                  title="Refunds", metadata={"category": "billing"}),
                         *docs()[1:]])
    assert report.updated == ("refunds",)
    assert report.unchanged == ("shipping", "password")
    assert report.chunks_embedded == 1
    assert embedder.calls == calls + 1
    after = {c.metadata["section"]: c.id for c in corpus.chunks("refunds")}
    assert after["Refunds"] == before["Refunds"]
    assert after["Refunds > Store credit"] == before["Refunds > Store credit"]
    assert after["Refunds > Card payments"] != before["Refunds > Card payments"]
    with pytest.raises(ChunkNotFound, match="refunds#"):
        corpus.get(before["Refunds > Card payments"])
    assert "3 to 5" in corpus.search("card refund business days", k=1)[0].chunk.text


def test_metadata_only_change_rewrites_without_embedding(corpus: Corpus) -> None:
    doc = docs()[0]
    report = corpus.add([Document(id=doc.id, text=doc.text, kind=doc.kind, title=doc.title,
                                  metadata={"category": "payments"})])
    assert report.updated == ("refunds",) and report.chunks_embedded == 0
    assert {c.metadata["category"] for c in corpus.chunks("refunds")} == {"payments"}


def test_remove(corpus: Corpus) -> None:
    report = corpus.remove(["shipping", "nope"])
    assert report == IndexReport(removed=("shipping",))
    assert corpus.documents() == ["password", "refunds"]
    assert all(h.chunk.doc_id != "shipping" for h in corpus.search("express shipping", k=10))
    assert corpus.remove("password").removed == ("password",)
    assert corpus.remove([]) == IndexReport()


def test_index_file_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "corpus.db"
    with Corpus(path, embedder=HashEmbedder()) as first:
        first.add(docs())
        ids = [c.id for c in first.chunks()]
        hits = [(h.chunk.id, h.score) for h in first.search("card refund days")]
    embedder = HashEmbedder()
    with Corpus(path, embedder=embedder) as second:
        assert [c.id for c in second.chunks()] == ids
        assert [(h.chunk.id, h.score) for h in second.search("card refund days")] == hits
        assert second.add(docs()).unchanged == ("refunds", "shipping", "password")
        assert embedder.calls == 1  # the query only
    with sqlite3.connect(path) as conn:
        meta = dict(conn.execute("SELECT key, value FROM rag_meta").fetchall())
        blob = conn.execute("SELECT vector FROM rag_chunks LIMIT 1").fetchone()[0]
    assert meta == {"schema_version": "1", "embedder": "hash-512", "dimension": "512",
                    "generation": "1"}
    assert len(blob) == 512 * 4


def test_the_index_can_share_the_run_stores_file(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE runs (id TEXT PRIMARY KEY)")
        conn.execute("INSERT INTO runs VALUES ('r1')")
    with Corpus(path, embedder=HashEmbedder()) as corpus:
        corpus.add(docs())
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT id FROM runs").fetchall() == [("r1",)]


def test_default_embedder_is_wordllama_and_understands_paraphrase() -> None:
    corpus = Corpus()
    assert isinstance(corpus.embedder, WordLlamaEmbedder)
    corpus.add(docs())
    hit = corpus.search("I forgot my login credentials", k=1, mode="embedding")[0]
    assert hit.chunk.doc_id == "password"


class Reverse:
    """A reranker that reverses the candidates (to show the seam is used)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        self.seen.append(query)
        return list(reversed(hits))


def test_reranker_seam() -> None:
    reverse = Reverse()
    assert isinstance(reverse, Reranker)
    corpus = Corpus(embedder=HashEmbedder(), reranker=reverse, candidates=10)
    corpus.add(docs())
    plain = Corpus(embedder=HashEmbedder(), reranker=FusedReranker(lexical_weight=1.0))
    plain.add(docs())
    hits = corpus.search("refund", k=2)
    assert reverse.seen == ["refund"]
    assert len(hits) == 2
    assert all("fused" not in h.scores for h in hits)
    assert plain.search("refund", k=1)[0].scores["fused"] == pytest.approx(1.0)


def test_a_reranker_returning_foreign_hits_is_refused() -> None:
    class Liar:
        def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
            fake = Chunk(id="x#1", doc_id="x", text="t", title="", position=0, metadata={})
            return [Hit(chunk=fake, score=1.0, scores={})]

    corpus = Corpus(embedder=HashEmbedder(), reranker=Liar())
    corpus.add(docs())
    with pytest.raises(Exception, match="other than hits"):
        corpus.search("refund")


def test_concurrent_searches_while_adding() -> None:
    corpus = Corpus(embedder=HashEmbedder())
    corpus.add(docs())
    errors: list[BaseException] = []

    def search() -> None:
        try:
            for _ in range(30):
                assert corpus.search("card refund", k=3)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=search) for _ in range(4)]
    for t in threads:
        t.start()
    for n in range(10):
        corpus.add([Document(id=f"extra{n}", text=f"Extra note {n} about gift cards.")])
    for t in threads:
        t.join()
    assert errors == []
    assert len(corpus.documents()) == 13


def test_rebuild_after_changing_embedder(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with Corpus(path, embedder=HashEmbedder(64)) as corpus:
        corpus.add(docs())
    with Corpus(path, embedder=HashEmbedder(32)) as corpus:
        assert corpus.rebuild() == 5
        assert corpus.search("card refund", k=1, mode="embedding")
    with Corpus(path, embedder=HashEmbedder(32)) as corpus:
        assert corpus.search("card refund", k=1)[0].chunk.doc_id == "refunds"
    assert Corpus(embedder=HashEmbedder()).rebuild() == 0


def test_repr_and_vectors_are_unit_length(corpus: Corpus) -> None:
    assert "chunks=5" in repr(corpus) and "hash-512" in repr(corpus)
    assert repr(FusedReranker()) == "FusedReranker(lexical_weight=0.5)"
    vectors = corpus._index.matrix
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_changing_a_returned_chunk_does_not_change_the_index(corpus: Corpus) -> None:
    hit = corpus.search("card refund", k=1)[0]
    hit.chunk.metadata["section"] = "tampered"  # type: ignore[index]
    corpus.get(hit.chunk.id).metadata["category"] = "tampered"  # type: ignore[index]
    corpus.chunks()[0].metadata["kind"] = "tampered"  # type: ignore[index]
    assert all("tampered" not in c.metadata.values() for c in corpus.chunks())
    assert corpus.search("card refund", k=1)[0].chunk.metadata["section"] != "tampered"


def test_two_corpora_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    first, second = Corpus(path, embedder=HashEmbedder()), Corpus(path, embedder=HashEmbedder())
    first.add(docs()[:1])
    assert second.documents() == ["refunds"]  # read from the file
    assert len(second) == 0  # the snapshot: stale until refreshed
    assert second.refresh() is True
    assert second.refresh() is False
    assert second.search("card refund", k=1)[0].chunk.doc_id == "refunds"
    first.add(docs()[1:2])
    second.add(docs()[2:])  # a write catches up first
    assert {c.doc_id for c in second.chunks()} == {"refunds", "shipping", "password"}
    first.remove(["password"])  # and so does this one, behind which second wrote
    assert {c.doc_id for c in first.chunks()} == {"refunds", "shipping"}
    second.add(docs()[:1])  # unchanged: catches up all the same
    assert {c.doc_id for c in second.chunks()} == {"refunds", "shipping"}
    first.close()
    second.close()


def test_a_write_racing_another_reloads_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    first, second = Corpus(path, embedder=HashEmbedder()), Corpus(path, embedder=HashEmbedder())
    first.add(docs()[:1])
    second._catch_up = lambda: None  # type: ignore[method-assign]  # as if first wrote just now
    second.add(docs()[1:2])
    assert {c.doc_id for c in second.chunks()} == {"refunds", "shipping"}
    assert second.rebuild() == len(second)
    assert first.refresh() is True
    first.close()
    second.close()


def test_after_incremental_changes_a_reopened_corpus_ranks_alike(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    live = Corpus(path, embedder=HashEmbedder())
    live.add(docs()[1:])
    live.add(docs()[:1])
    live.add([Document(id="zz", text="Gift card refunds go back to the gift card.")])
    live.remove(["shipping"])
    edited = REFUNDS.replace("Store credit is issued", "Store credit is granted")
    live.add([Document(id="refunds", text=edited, kind="markdown", title="Refunds")])
    reopened = Corpus(path, embedder=HashEmbedder())
    assert live.chunks() == reopened.chunks()
    for query in ("card refund", "store credit", "password login", "gift card"):
        for mode in ("hybrid", "bm25", "embedding"):
            assert ([(h.chunk.id, round(h.score, 5)) for h in live.search(query, mode=mode)]  # type: ignore[arg-type]
                    == [(h.chunk.id, round(h.score, 5)) for h in reopened.search(query, mode=mode)])  # type: ignore[arg-type]
