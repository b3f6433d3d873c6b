"""examples/rag.py: two sub-queries searched, the invented sentence sent back and dropped."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from keel import MemoryStore
from keel.runtime import replay_run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rag.py"


async def test_the_answer_keeps_only_supported_sentences(example: ModuleType) -> None:
    store = MemoryStore()
    result = await example.flow.run(example.INPUT, store=store)
    out = result.output
    assert out.queries == ("How long do refunds for yearly plans take?",
                           "Which plan includes single sign-on?")
    assert [s.query for s in out.searches] == list(out.queries)
    assert out.text == f"{example.REFUNDS} {example.SSO}"
    assert [c.chunk_ids for c in out.citations] == [(example.cite("refunds"),),
                                                    (example.cite("sso"),)]
    assert [(c.text, c.reason) for c in out.removed] == []
    assert out.rounds == 2 and not out.refused
    assert "Refunds are paid in cash" in out.drafts[0]
    verdicts = [e.data for e in await store.read_journal(result.run_id)
                if e.kind == "verify" and e.phase == "result"]
    assert verdicts[0]["claims"][2]["reason"] == "not supported by the cited chunks"
    assert (await replay_run(example.flow, result.run_id, store=store)).identical
