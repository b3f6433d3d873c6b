"""Retrieval (keel.patterns.Corpus): query latency on a 10,000-chunk corpus and indexing
throughput, against a baseline in the same process.

The corpus is synthetic and deterministic: help-article-like documents of eight sections,
each section one chunk of about 120 words drawn from a support vocabulary with a topic of
its own. Queries are 3 to 8 words taken from one section plus common words.

* **baseline**: the brute-force core of embedding search: one matrix-vector product over
  the unit-length vectors and a top-k selection, with the query vector already embedded;
* **embedding / bm25 / hybrid**: ``Corpus.search(query, k=5, mode=...)``, everything
  included (query validation, embedding the query with WordLlama, BM25 scoring, fusion and
  the default fused reranker).

Latencies are per query, p50 and p95 over ``--queries`` queries, the modes taking turns query
by query (this machine is shared). Indexing: documents per second and chunks per second of
``Corpus.add`` into a SQLite file and the first search (chunking, embedding, writing, building
BM25), re-adding the unchanged corpus, changing one document (alone, and with the first search
after it, which rebuilds BM25), and reopening the file until the first search answers
(loading the vectors, rebuilding BM25).

    python -m bench.bench_retrieval [--chunks 10000] [--queries 300]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from keel.patterns import Corpus, Document

TOPICS = ("refund", "shipping", "password", "invoice", "subscription", "warranty", "delivery",
          "account", "coupon", "return", "exchange", "tracking", "payment", "address", "order",
          "gift", "card", "login", "privacy", "battery", "charger", "screen", "size", "colour")
COMMON = ("the", "customer", "can", "within", "days", "please", "contact", "support", "your",
          "after", "before", "item", "we", "will", "if", "not", "and", "to", "of", "for",
          "when", "our", "team", "policy", "request", "email", "app", "store", "online")
SECTIONS = 8


def _section(rng: random.Random, words: Sequence[str]) -> str:
    sentences = []
    for _ in range(10):
        n = rng.randint(8, 16)
        sentence = " ".join(rng.choice(words) if rng.random() < 0.45 else rng.choice(COMMON)
                            for _ in range(n))
        sentences.append(sentence.capitalize() + ".")
    return " ".join(sentences)


def corpus(chunks: int, seed: int = 0) -> list[Document]:
    """Documents of ``SECTIONS`` one-chunk sections, about ``chunks`` chunks in all."""
    rng = random.Random(seed)
    docs = []
    for d in range(max(1, chunks // SECTIONS)):
        topics = rng.sample(TOPICS, 3)
        parts = [f"# {topics[0].title()} help {d}"]
        for s in range(SECTIONS):
            words = [*topics, *rng.sample(TOPICS, 2), f"code{d}x{s}"]
            parts.append(f"## {rng.choice(words).title()} {s}\n\n{_section(rng, words)}")
        docs.append(Document(id=f"kb/{d}", title=f"{topics[0].title()} help {d}",
                             kind="markdown", text="\n\n".join(parts)))
    return docs


def queries(docs: Sequence[Document], n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        doc = rng.choice(docs)
        words = [w for w in doc.text.split() if w.isalpha() and w.lower() not in COMMON]
        picked = rng.sample(words, min(len(words), rng.randint(2, 5)))
        out.append(" ".join([*picked, *rng.sample(COMMON, 2)]).lower() + "?")
    return out


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latencies(corpus_: Corpus, qs: Sequence[str]) -> dict[str, list[float]]:
    """Seconds per query of each mode, the modes taking turns query by query."""
    matrix = corpus_._index.matrix
    vectors = corpus_.embedder.embed(list(qs))
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)

    def baseline(i: int) -> Callable[[], object]:
        def run() -> object:
            scores = matrix @ vectors[i]
            top = np.argpartition(-scores, 5)[:5]
            return top[np.argsort(-scores[top])]
        return run

    cases: dict[str, Callable[[int], Callable[[], object]]] = {
        "baseline (matrix @ vector, top 5)": baseline,
        "embedding": lambda i: lambda: corpus_.search(qs[i], k=5, mode="embedding"),
        "bm25": lambda i: lambda: corpus_.search(qs[i], k=5, mode="bm25"),
        "hybrid": lambda i: lambda: corpus_.search(qs[i], k=5, mode="hybrid"),
    }
    for i in range(min(20, len(qs))):  # warm up: the embedder, the stemmer cache
        for make in cases.values():
            make(i)()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(len(qs)):
        for name, make in cases.items():
            run = make(i)
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    return times


def indexing(docs: list[Document], folder: Path) -> tuple[Corpus, dict[str, float]]:
    path = folder / "corpus.db"
    out: dict[str, float] = {}
    corpus_ = Corpus(path)
    corpus_.embedder.embed(["load the model before timing"])
    t0 = time.perf_counter()
    corpus_.add(docs)
    corpus_.search("refund", mode="bm25")  # BM25 is built on the first search
    out["add"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    corpus_.add(docs)
    out["re-add unchanged"] = time.perf_counter() - t0
    first = docs[0]
    changed = Document(id=first.id, title=first.title, kind=first.kind,
                       text=first.text.replace("help 0", "help zero", 1))
    t0 = time.perf_counter()
    corpus_.add([changed])
    out["change one document"] = time.perf_counter() - t0
    corpus_.search("refund", mode="bm25")
    out["change one document, then search"] = time.perf_counter() - t0
    corpus_.close()
    t0 = time.perf_counter()
    corpus_ = Corpus(path)
    corpus_.search("refund", mode="bm25")
    out["reopen"] = time.perf_counter() - t0
    out["file MB"] = path.stat().st_size / 1e6
    return corpus_, out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args(argv)
    docs = corpus(args.chunks)
    with tempfile.TemporaryDirectory() as folder:
        corpus_, index = indexing(docs, Path(folder))
        n = len(corpus_)
        print(f"corpus: {len(docs)} documents, {n} chunks, index file {index['file MB']:.1f} MB")
        print(f"indexing (Corpus.add into SQLite, WordLlama): {index['add']:.2f} s, "
              f"{len(docs) / index['add']:,.0f} documents/s, {n / index['add']:,.0f} chunks/s")
        print(f"re-add unchanged: {index['re-add unchanged'] * 1e3:.0f} ms; change one "
              f"document: {index['change one document'] * 1e3:.0f} ms (then the first "
              f"search, which rebuilds BM25: "
              f"{index['change one document, then search'] * 1e3:.0f} ms); reopen the file "
              f"and search (vectors loaded, BM25 rebuilt): {index['reopen'] * 1e3:.0f} ms")
        times = latencies(corpus_, queries(docs, args.queries))
        corpus_.close()
    base = percentile(times["baseline (matrix @ vector, top 5)"], 0.95)
    print(f"{'search, k=5':36} {'p50 ms':>8} {'p95 ms':>8} {'p95 x baseline':>15}")
    for name, samples in times.items():
        p95 = percentile(samples, 0.95)
        print(f"{name:36} {statistics.median(samples) * 1e3:8.2f} {p95 * 1e3:8.2f} "
              f"{p95 / base:15.1f}")


if __name__ == "__main__":
    main()
