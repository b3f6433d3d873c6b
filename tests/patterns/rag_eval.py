"""The RAG evaluation: keel's labelled set (tests/fixtures/rag, written by
scripts/make_rag_dataset.py), a scripted model that makes the requests, and the figures
computed from what the runs returned.

The scripted model (:func:`reader_model`, a ``FunctionModel``) behaves like a careful but
imperfect reader. For each sub-question the prompt lists (the question itself when there is
one part) it calls ``search_docs`` once (k=5); then it answers each sub-question with the
sentence of its search results closest to it (words shared plus twice the WordLlama
similarity: a reader understands paraphrases; a tie goes to the higher hit; boilerplate such
as "This article explains..." is skipped), citing that chunk's id. For
an unanswerable question it still tries: it answers with the best sentence it found.
Deterministically (by a hash of the question), its first answer has faults a real model
makes: 15% of the questions get a wrong citation (the id of another hit), 10% an
embellishment (a sentence found in no chunk). Sent back by the verifier, it searches again
(k=10) for the sub-questions named as gaps and answers afresh, without those faults and
without the sentences the verifier called off topic.

Figures (answerable = single and multi-part questions):

* **recall@5**: of the facts that answer the questions, the share found in the top 5 of the
  agent's first search for their sub-question (a fact is found when a retrieved chunk
  contains its sentence). Multi-part questions without decomposition: the top 5 of the one
  search for the whole question.
* **citation precision**: of the cited sentences in the final answers, the share whose
  cited chunks contain them (judged by the dataset's text, not by the verifier); and the
  same for the model's drafts (before the verifier removed anything).
* **answer precision / recall**: of the cited sentences, the share that are labelled facts
  of the question; of the labelled facts, the share cited.
* **refusal rate** on unanswerable questions, **false refusals** on answerable ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from keel import Agent, MemoryStore
from keel.core import Message, ModelSettings, ToolSpec
from keel.models import FunctionModel
from keel.patterns import (
    RAG,
    Corpus,
    GroundedAnswer,
    Verifier,
    WordLlamaEmbedder,
    load_documents,
)
from keel.patterns._embed import embed_checked, normalised
from keel.patterns._rag_verify import words
from keel.testing import call

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "rag"
BOILERPLATE = ("This article explains", "It is written for", "Related articles",
               "Still stuck")
_SENT = re.compile(r"(?<=[.!?])\s+|\n+")
_PARTS = re.compile(r"^\d+\. (.+)$", re.M)


@cache
def questions() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((DATA / "questions.json").read_text("utf-8"))
    return data


@cache
def corpus() -> Corpus:
    """The 200 articles, indexed once per process (in memory, WordLlama embeddings)."""
    c = Corpus()
    c.add(load_documents(DATA / "docs"))
    return c


def _norm(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------ the scripted reader

def _json(content: str) -> Any:
    match = re.search(r"\{.*\}", content, re.S)
    try:
        return json.loads(match.group(0)) if match else None
    except ValueError:
        return None


def _sentences(text: str) -> list[str]:
    out = []
    for s in _SENT.split(text):
        s = s.strip()
        if s and not s.startswith(("#", *BOILERPLATE)) and s.endswith((".", "?", "!")):
            out.append(s)
    return out


@cache
def _embedder() -> WordLlamaEmbedder:
    return WordLlamaEmbedder()


def _best(query: str, results: Sequence[dict[str, Any]],
          rejected: frozenset[str] = frozenset()) -> tuple[str, str, int] | None:
    """(sentence, chunk id, hit index) of the sentence closest to the query: words shared,
    plus twice the embedding similarity (a reader understands a paraphrase)."""
    q = set(words(query))
    found = [(s, str(r.get("id")), n) for n, r in enumerate(results)
             for s in _sentences(str(r.get("text", ""))) if _norm(s) not in rejected]
    if not found:
        return None
    rows = normalised(embed_checked(_embedder(), [query, *(s for s, _, _ in found)]))
    sims = rows[1:] @ rows[0]
    scores = [len(q & set(words(s))) + 2 * float(sim) for (s, _, _), sim in zip(
        found, sims, strict=True)]
    return found[max(range(len(found)), key=lambda i: (scores[i], -i))]


def _fault(question: str) -> str:
    h = int(hashlib.sha256(question.encode()).hexdigest(), 16) % 20
    return "miscite" if h < 3 else "embellish" if h < 5 else ""


def _cite(sentence: str, chunk_id: str) -> str:
    return f"{sentence.rstrip('.!?')} [{chunk_id}]."


def reader(messages: list[Message], tools: list[ToolSpec], settings: ModelSettings) -> Any:
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    first, last = users[0], users[-1]
    question_prompt = messages[first].text or ""
    revising = last != first
    parts = _PARTS.findall(question_prompt) or [question_prompt.strip()]
    if revising:
        gaps = re.findall(r"^- ([^\"\n].*)$", messages[last].text or "", re.M)
        wanted = [(g, 10) for g in gaps if g in parts or len(parts) == 1]
    else:
        wanted = [(p, 5) for p in parts]
    done = sum(len(m.tool_calls) for m in messages[last:] if m.role == "assistant")
    if done < len(wanted):
        query, k = wanted[done]
        return call("search_docs", {"query": query, "k": k})
    found: dict[str, list[dict[str, Any]]] = {}
    for m in messages:
        for res in m.tool_results:
            data = _json(res.content)
            if isinstance(data, dict) and isinstance(data.get("results"), list):
                found.setdefault(_norm(str(data.get("query", ""))), []).extend(
                    data["results"])
    fault = "" if revising else _fault(question_prompt)
    rejected = frozenset(_norm(t) for t in re.findall(r'^- "(.+)" \[[^\]]*\]: off topic$',
                                                       messages[last].text or "", re.M))
    out = []
    for p in parts:
        results = found.get(_norm(p), [])
        picked = _best(p, results, rejected)
        if picked is None:
            continue
        sentence, cid, n = picked
        if fault == "miscite" and len(results) > 1:
            cid = str(results[1 if n == 0 else 0]["id"])
        out.append(_cite(sentence, cid))
        if fault == "embellish":
            out.append(_cite("It also works offline on every smartwatch", cid))
    return " ".join(out) or "I could not find anything about this."


def reader_model() -> FunctionModel:
    return FunctionModel(reader, name="test:reader")


# ------------------------------------------------------------------------------ figures

@dataclass(frozen=True, kw_only=True)
class Figures:
    label: str
    recall_at_5: float
    citation_precision: float
    draft_citation_precision: float
    answer_precision: float
    answer_recall: float
    refusal_rate: float
    false_refusal_rate: float
    revised: float
    seconds: float


async def answer_all(flow: RAG, qs: Sequence[dict[str, Any]]) -> list[GroundedAnswer]:
    store = MemoryStore()
    out = []
    for q in qs:
        result = await flow.run(q["question"], store=store)
        out.append(result.output)
    return out


def make_flow(mode: str = "hybrid", *, decompose: bool = True,
              verifier: Verifier | None = None) -> RAG:
    agent = Agent("reader", model=reader_model())
    return RAG("help", agent=agent, corpus=corpus(), mode=mode,  # type: ignore[arg-type]
               decompose=decompose, verifier=verifier)


def _contains(chunk_id: str, sentence: str) -> bool:
    try:
        return _norm(sentence) in _norm(corpus().get(chunk_id).text)
    except KeyError:
        return False


def _precision(pairs: list[tuple[str, tuple[str, ...]]]) -> float:
    if not pairs:
        return 1.0
    ok = sum(any(_contains(cid, s) for cid in ids) for s, ids in pairs)
    return ok / len(pairs)


def figures(label: str, qs: Sequence[dict[str, Any]], answers: Sequence[GroundedAnswer],
            seconds: float) -> Figures:
    from keel.patterns._rag_verify import split_claims
    facts_total = facts_found = facts_cited = 0
    final: list[tuple[str, tuple[str, ...]]] = []
    draft: list[tuple[str, tuple[str, ...]]] = []
    gold_cited = cited_answerable = 0
    refused_unanswerable = unanswerable = refused_answerable = answerable = 0
    for q, a in zip(qs, answers, strict=True):
        final += [(c.sentence, c.chunk_ids) for c in a.citations]
        draft += [(s, ids) for s, ids in split_claims(a.drafts[0]) if ids]
        if q["kind"] == "unanswerable":
            unanswerable += 1
            refused_unanswerable += a.refused
            continue
        answerable += 1
        refused_answerable += a.refused
        first: dict[str, tuple[str, ...]] = {}
        for s in a.searches:
            first.setdefault(_norm(s.query), s.chunk_ids[:5])
        retrieved = [cid for ids in first.values() for cid in ids]
        gold = [_norm(f) for part in q["parts"] for f in part["facts"]]
        cited = {_norm(c.sentence.rstrip(".")) for c in a.citations}
        for fact in gold:
            facts_total += 1
            facts_found += any(_contains(cid, fact) for cid in retrieved)
            facts_cited += fact.rstrip(".") in cited
        cited_answerable += len(a.citations)
        gold_cited += sum(_norm(c.sentence.rstrip(".")) in {g.rstrip(".") for g in gold}
                          for c in a.citations)
    return Figures(
        label=label, recall_at_5=facts_found / facts_total,
        citation_precision=_precision(final), draft_citation_precision=_precision(draft),
        answer_precision=gold_cited / max(cited_answerable, 1),
        answer_recall=facts_cited / facts_total,
        refusal_rate=refused_unanswerable / max(unanswerable, 1),
        false_refusal_rate=refused_answerable / max(answerable, 1),
        revised=sum(a.rounds > 1 for a in answers) / len(answers), seconds=seconds)


def evaluate(label: str, mode: str = "hybrid", *, decompose: bool = True,
             qs: Sequence[dict[str, Any]] | None = None) -> Figures:
    qs = list(qs if qs is not None else questions())
    flow = make_flow(mode, decompose=decompose)
    start = time.perf_counter()
    answers = asyncio.run(answer_all(flow, qs))
    return figures(label, qs, answers, time.perf_counter() - start)


CONFIGS = (("hybrid + decomposition", "hybrid", True), ("bm25 + decomposition", "bm25", True),
           ("embedding + decomposition", "embedding", True),
           ("hybrid, no decomposition", "hybrid", False))


def table(rows: Sequence[Figures]) -> str:
    head = ("| configuration | recall@5 | citation precision (draft → verified) | answer "
            "precision | answer recall | refusals (unanswerable) | false refusals "
            "(answerable) | revised |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for f in rows:
        lines.append(f"| {f.label} | {f.recall_at_5:.3f} | {f.draft_citation_precision:.3f} "
                     f"→ {f.citation_precision:.3f} | {f.answer_precision:.3f} | "
                     f"{f.answer_recall:.3f} | {f.refusal_rate:.3f} | "
                     f"{f.false_refusal_rate:.3f} | {f.revised:.3f} |")
    return "\n".join(lines)
