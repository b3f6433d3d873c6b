"""Agentic RAG: an agent searches help articles, answers with chunk-id citations, and a
verifier checks every sentence against the chunks it cites.

The question has two parts, so it is decomposed into two sub-queries that the agent searches
separately. Its first answer adds a sentence no article supports ("paid in cash"); the
verifier sends it back, the revision drops it, and the result holds only supported sentences,
each with its citation. Runs offline on a scripted model and WordLlama embeddings (no LLM is
called):

    python examples/rag.py

Set KEEL_MODEL (e.g. ``KEEL_MODEL=openai:gpt-4o-mini``) to run the agent on a real model.
"""

from __future__ import annotations

import asyncio
import os

from keel import Agent
from keel.patterns import RAG, Corpus, Document
from keel.testing import ScriptedModel, call

ARTICLES = {
    "refunds": ("Refunds", "# Refunds\n\nRefunds for yearly plans are paid within 7 days of "
                "cancellation.\n\nMonthly plans are not refunded; they run to the end of the "
                "month."),
    "sso": ("Single sign-on", "# Single sign-on\n\nSingle sign-on is included in the "
            "Enterprise plan.\n\nAdministrators configure SAML under Security settings."),
    "export": ("Exporting data", "# Exporting data\n\nAdministrators can export all data as "
               "CSV from the Admin Console."),
    "sessions": ("Sessions", "# Sessions\n\nSessions end after 30 minutes without activity."),
}
corpus = Corpus()  # in memory; Corpus(".keel/help.db") keeps the index in a file
corpus.add([Document(id=doc_id, title=title, text=text, kind="markdown")
            for doc_id, (title, text) in ARTICLES.items()])


def cite(doc_id: str) -> str:
    """The id of the (first) chunk of an article: what a citation names."""
    return corpus.chunks(doc_id)[0].id


INPUT = "How long do refunds for yearly plans take, and which plan includes single sign-on?"
REFUNDS = f"Refunds for yearly plans are paid within 7 days of cancellation [{cite('refunds')}]."
SSO = f"Single sign-on is included in the Enterprise plan [{cite('sso')}]."
SCRIPT = [
    call("search_docs", {"query": "How long do refunds for yearly plans take?"}),
    call("search_docs", {"query": "Which plan includes single sign-on?"}),
    f"{REFUNDS} {SSO} Refunds are paid in cash [{cite('refunds')}].",  # one claim too many
    f"{REFUNDS} {SSO}",  # the revision, after the verifier's feedback
]

model = os.environ.get("KEEL_MODEL")
assistant = Agent("assistant", model=model or ScriptedModel(SCRIPT),
                  instructions="You answer questions about the Lumen apps.")
flow = RAG("help", agent=assistant, corpus=corpus)

if __name__ == "__main__":
    answer = asyncio.run(flow.run(INPUT)).output
    print("sub-queries:", *answer.queries, sep="\n  ")
    for claim in answer.removed:
        print(f"removed: {claim.text!r} ({claim.reason})")
    print(f"first draft: {answer.drafts[0]}")
    print(f"rounds: {answer.rounds}, refused: {answer.refused}")
    print(answer.text)
