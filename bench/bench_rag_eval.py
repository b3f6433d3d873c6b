"""Agentic RAG on keel's labelled set: retrieval recall@5, citation precision, answer
precision and recall, refusals, for hybrid / BM25-only / embeddings-only search, each with
and without query decomposition.

    python bench/bench_rag_eval.py                # the table on stdout (~30 s)
    python bench/bench_rag_eval.py --update-docs  # and into docs/patterns/rag.md and
                                                  # docs/benchmarks.md (between markers)

The set (tests/fixtures/rag, from scripts/make_rag_dataset.py): 200 help articles and 160
questions (100 single, 30 multi-part, 30 unanswerable). The requests are made by the
scripted reader of tests/patterns/rag_eval.py (which documents how it answers, the faults it
makes, and how each figure is computed) through the real pattern, with every default on
(keel.Agent's middleware, WordLlama embeddings, the default verifier). The figures are the
pattern's and the verifier's on this set, with this reader; a real model reads better than
the reader and makes other mistakes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.patterns import rag_eval

from bench.common import write_doc_section

ROOT = Path(__file__).resolve().parents[1]
MARKERS = ("<!-- rag-eval:start -->", "<!-- rag-eval:end -->")
CONFIGS = [(f"{mode}{' + decomposition' if d else ', no decomposition'}", mode, d)
           for mode in ("hybrid", "bm25", "embedding") for d in (True, False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update-docs", action="store_true",
                        help="write the table into docs/patterns/rag.md and docs/benchmarks.md")
    args = parser.parse_args()
    start = time.perf_counter()
    rag_eval.corpus()
    index_s = time.perf_counter() - start
    rows = [rag_eval.evaluate(label, mode, decompose=d) for label, mode, d in CONFIGS]
    table = rag_eval.table(rows)
    qs = rag_eval.questions()
    per_q = sum(r.seconds for r in rows) / (len(rows) * len(qs)) * 1000
    intro = (f"Measured by `python bench/bench_rag_eval.py` (Python "
             f"{sys.version.split()[0]}): {len(qs)} questions over "
             f"{len(rag_eval.corpus().documents())} articles "
             f"({len(rag_eval.corpus())} chunks, indexed in {index_s:.1f} s), the scripted "
             f"reader of tests/patterns/rag_eval.py, every default on; {per_q:.0f} ms per "
             "question (a whole run: decomposition, searches, verification, revision), "
             "in-memory run store.")
    print(intro + "\n\n" + table)
    if args.update_docs:
        for doc in (ROOT / "docs" / "patterns" / "rag.md", ROOT / "docs" / "benchmarks.md"):
            write_doc_section(doc, MARKERS, intro, table.splitlines())
            print(f"wrote {doc.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
