"""The retrieval benchmark at a tiny size, so it cannot rot (speed is never asserted)."""

from __future__ import annotations

import pytest
from bench.bench_retrieval import corpus, main, queries

pytestmark = pytest.mark.slow


def test_corpus_and_queries_are_deterministic() -> None:
    docs = corpus(80)
    assert len(docs) == 10
    assert docs == corpus(80)
    assert queries(docs, 5) == queries(docs, 5)


def test_bench_runs(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--chunks", "80", "--queries", "5"])
    out = capsys.readouterr().out
    assert "80 chunks" in out
    for name in ("baseline", "embedding", "bm25", "hybrid", "chunks/s", "reopen"):
        assert name in out
